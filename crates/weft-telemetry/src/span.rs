//! Spans as weft keeps them, and a trace as the tree of its spans.
//!
//! An invocation's span is its record (the record holds its ids, events
//! and links), so invocations cost no second write; the other hops
//! (sends, publishes, puts, the time a message waited, schedule fires)
//! are spans of their own.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::SpanContext;

/// What a span stands for, as OpenTelemetry names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }

    pub fn parse(text: &str) -> Option<SpanKind> {
        [
            SpanKind::Internal,
            SpanKind::Server,
            SpanKind::Client,
            SpanKind::Producer,
            SpanKind::Consumer,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// Something that happened at one moment of a span (a retry, a forward).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanEvent {
    pub name: String,
    pub time_us: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Value>,
}

impl SpanEvent {
    pub fn new(name: &str, time_us: i64) -> SpanEvent {
        SpanEvent {
            name: name.to_string(),
            time_us,
            attributes: BTreeMap::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> SpanEvent {
        self.attributes.insert(key.to_string(), value.into());
        self
    }
}

/// A span this one is linked to rather than a child of (the messages of
/// a batch other than the first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub trace_id: String,
    pub span_id: String,
}

impl From<&SpanContext> for Link {
    fn from(c: &SpanContext) -> Link {
        Link {
            trace_id: c.trace_hex(),
            span_id: c.span_hex(),
        }
    }
}

/// One finished span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    #[serde(default)]
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    /// Microseconds since the Unix epoch.
    pub start_us: i64,
    pub duration_us: u64,
    /// Set when the span failed, with why.
    #[serde(default)]
    pub error: Option<String>,
    /// The invocation it belongs to, if any.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The function it ran or was sent by, if any.
    #[serde(default)]
    pub function: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<SpanEvent>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    /// Whether the trace is sampled (exported); every span is kept locally.
    #[serde(default = "yes")]
    pub sampled: bool,
}

fn yes() -> bool {
    true
}

impl Span {
    /// A span at `context`, child of `parent`, starting at `start_us`.
    pub fn new(
        context: &SpanContext,
        parent: Option<&SpanContext>,
        name: String,
        kind: SpanKind,
        start_us: i64,
    ) -> Span {
        Span {
            trace_id: context.trace_hex(),
            span_id: context.span_hex(),
            parent_span_id: parent
                .filter(|p| p.trace_id == context.trace_id)
                .map(SpanContext::span_hex),
            name,
            kind,
            start_us,
            duration_us: 0,
            error: None,
            request_id: None,
            function: None,
            attributes: BTreeMap::new(),
            events: Vec::new(),
            links: Vec::new(),
            sampled: context.sampled(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Span {
        self.attributes.insert(key.to_string(), value.into());
        self
    }

    pub fn end_us(&self) -> i64 {
        self.start_us + self.duration_us as i64
    }
}

/// How deep a trace's tree goes; deeper spans start trees of their own.
pub const MAX_DEPTH: usize = 256;

/// One span and the spans under it, in start order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanNode {
    #[serde(flatten)]
    pub span: Span,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<SpanNode>,
}

/// A trace as a tree: the spans whose parent is not in it are its roots
/// (a trace that came in with a parent elsewhere has that parent missing).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    pub trace_id: String,
    pub start_us: i64,
    pub duration_us: u64,
    pub spans: usize,
    pub roots: Vec<SpanNode>,
}

impl Trace {
    /// Builds the tree of `spans`, all of trace `trace_id`; a span seen
    /// twice (from two nodes) is kept once.
    pub fn build(trace_id: &str, mut spans: Vec<Span>) -> Trace {
        spans.sort_by(|a, b| (a.start_us, &a.span_id).cmp(&(b.start_us, &b.span_id)));
        spans.dedup_by(|a, b| a.span_id == b.span_id);
        let start_us = spans.iter().map(|s| s.start_us).min().unwrap_or(0);
        let end_us = spans.iter().map(Span::end_us).max().unwrap_or(start_us);
        let count = spans.len();
        let ids: std::collections::HashSet<String> = spans.iter().map(|s| s.span_id.clone()).collect();
        let mut children: HashMap<String, Vec<Span>> = HashMap::new();
        let mut roots = Vec::new();
        for span in spans {
            match span
                .parent_span_id
                .clone()
                .filter(|p| ids.contains(p) && *p != span.span_id)
            {
                Some(parent) => children.entry(parent).or_default().push(span),
                None => roots.push(span),
            }
        }
        // The tree is at most MAX_DEPTH deep, so walking it cannot exhaust
        // a stack; spans deeper than that, or in a cycle (only from forged
        // data), become roots of their own rather than vanish.
        fn attach(span: Span, children: &mut HashMap<String, Vec<Span>>, depth: usize) -> SpanNode {
            let under = if depth >= MAX_DEPTH {
                Vec::new()
            } else {
                children.remove(&span.span_id).unwrap_or_default()
            };
            SpanNode {
                children: under.into_iter().map(|c| attach(c, children, depth + 1)).collect(),
                span,
            }
        }
        let mut roots: Vec<SpanNode> = roots.into_iter().map(|r| attach(r, &mut children, 0)).collect();
        // The earliest left first, so a cut chain goes on in one tree.
        let mut left: Vec<(i64, String)> = children
            .iter()
            .map(|(parent, under)| (under.iter().map(|s| s.start_us).min().unwrap_or(0), parent.clone()))
            .collect();
        left.sort();
        for (_, parent) in left {
            for orphan in children.remove(&parent).unwrap_or_default() {
                roots.push(attach(orphan, &mut children, 0));
            }
        }
        roots.sort_by(|a, b| (a.span.start_us, &a.span.span_id).cmp(&(b.span.start_us, &b.span.span_id)));
        Trace {
            trace_id: trace_id.to_string(),
            start_us,
            duration_us: (end_us - start_us).max(0) as u64,
            spans: count,
            roots,
        }
    }

    /// Every span, depth first, with its depth.
    pub fn walk(&self) -> Vec<(usize, &Span)> {
        fn visit<'a>(node: &'a SpanNode, depth: usize, out: &mut Vec<(usize, &'a Span)>) {
            out.push((depth, &node.span));
            for c in &node.children {
                visit(c, depth + 1, out);
            }
        }
        let mut out = Vec::new();
        for r in &self.roots {
            visit(r, 0, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A span with the ids given (not ones a context would make).
    fn span(id: &str, parent: Option<&str>, start: i64) -> Span {
        let mut s = Span::new(&SpanContext::root(), None, id.into(), SpanKind::Internal, start);
        s.span_id = id.into();
        s.parent_span_id = parent.map(str::to_string);
        s.duration_us = 10;
        s
    }

    #[test]
    fn builds_the_tree_in_start_order() {
        let spans = vec![
            span("c", Some("a"), 30),
            span("a", Some("elsewhere"), 0),
            span("b", Some("a"), 20),
            span("d", Some("b"), 25),
            span("b", Some("a"), 20),
        ];
        let trace = Trace::build("t", spans);
        assert_eq!(trace.spans, 4);
        assert_eq!(trace.duration_us, 40);
        let order: Vec<(usize, &str)> = trace.walk().iter().map(|(d, s)| (*d, s.span_id.as_str())).collect();
        assert_eq!(order, [(0, "a"), (1, "b"), (2, "d"), (1, "c")]);
    }

    #[test]
    fn a_forged_cycle_and_a_deep_chain_keep_every_span() {
        let trace = Trace::build("t", vec![span("a", Some("b"), 0), span("b", Some("a"), 1)]);
        let mut ids: Vec<&str> = trace.walk().iter().map(|(_, s)| s.span_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "b"]);
        let chain: Vec<Span> = (0..600)
            .map(|i| {
                let parent = (i > 0).then(|| format!("s{}", i - 1));
                span(&format!("s{i}"), parent.as_deref(), i)
            })
            .collect();
        let trace = Trace::build("t", chain);
        let walked = trace.walk();
        assert_eq!(walked.len(), 600);
        assert!(walked.iter().all(|(depth, _)| *depth <= MAX_DEPTH));
        assert_eq!(trace.roots.len(), 3);
    }

    #[test]
    fn a_parent_in_another_trace_is_no_parent() {
        let root = SpanContext::root();
        let other = SpanContext::root();
        let s = Span::new(&root.child(), Some(&other), "x".into(), SpanKind::Server, 0);
        assert_eq!(s.parent_span_id, None);
        let s = Span::new(&root.child(), Some(&root), "x".into(), SpanKind::Server, 0);
        assert_eq!(s.parent_span_id, Some(root.span_hex()));
    }
}
