//! The node's side of tracing: which span an invocation continues, the
//! spans of the hops that are not invocations (sends, publishes, puts,
//! schedule fires), and the time a message waited before its delivery.
//!
//! How hops relate, following the OpenTelemetry messaging conventions:
//! storing a message is a `producer` span, child of whatever stored it;
//! the message keeps that span's context (`traceparent`). Its delivery
//! starts with a `consumer` span for the time it waited (from the append
//! to the lease), child of the producer span; the invocation that
//! handles it is a child of that wait. A batch's invocation is a child of
//! its first message's wait and links to the others', so one trace holds
//! a request and everything it set off, however late it runs.

use std::time::Instant;

use http::{HeaderName, HeaderValue};
use weft_store::durable::Message;
use weft_telemetry::{Link, Span, SpanContext, SpanEvent, SpanKind};

use crate::call::Traced;
use crate::node::Node;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The trace context a request came with, if any and it reads.
pub fn incoming(headers: &http::HeaderMap) -> Option<SpanContext> {
    let parent = headers.get(&TRACEPARENT)?.to_str().ok()?;
    let state = headers.get(&TRACESTATE).and_then(|v| v.to_str().ok());
    SpanContext::parse(parent, state)
}

/// Sets a request's `traceparent` (and `tracestate`) to `context`.
pub fn set_headers(headers: &mut http::HeaderMap, context: &SpanContext) {
    if let Ok(v) = HeaderValue::from_bytes(&context.traceparent_bytes()) {
        headers.insert(TRACEPARENT, v);
    }
    match context.state.as_deref().map(HeaderValue::from_str) {
        Some(Ok(v)) => {
            headers.insert(TRACESTATE, v);
        }
        _ => {
            headers.remove(TRACESTATE);
        }
    }
}

/// A span being timed: a hop that is not an invocation.
pub struct Timed {
    pub context: SpanContext,
    span: Span,
    started: Instant,
}

impl Timed {
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Timed {
        self.span.attributes.insert(key.to_string(), value.into());
        self
    }

    /// Ends the span (failed, if `error`) and keeps it.
    pub fn end(mut self, node: &Node, error: Option<String>) {
        self.span.duration_us = self.started.elapsed().as_micros() as u64;
        self.span.error = error;
        node.keep_spans(vec![self.span]);
    }
}

impl Node {
    /// Starts a span for `name`, child of `parent` (or the first of a new
    /// trace); none when tracing is off.
    pub fn start_span(&self, name: String, kind: SpanKind, parent: Option<&SpanContext>) -> Option<Timed> {
        if !self.tracing {
            return None;
        }
        let context = SpanContext::child_of(parent);
        let span = Span::new(&context, parent, name, kind, weft_store::now_us());
        Some(Timed {
            context,
            span,
            started: Instant::now(),
        })
    }

    /// A producer span for storing messages in `destination` (`queue`,
    /// `topic`, `bus` or `async`), by the OpenTelemetry messaging
    /// conventions: named `send NAME`, `publish NAME` or `put NAME`.
    pub fn producing(&self, kind: &str, name: &str, parent: Option<&SpanContext>) -> Option<Timed> {
        let operation = match kind {
            "topic" => "publish",
            "bus" => "put",
            _ => "send",
        };
        Some(
            self.start_span(format!("{operation} {name}"), SpanKind::Producer, parent)?
                .with("messaging.system", "weft")
                .with("messaging.operation.type", "send")
                .with("messaging.operation.name", operation)
                .with("messaging.destination.name", name)
                .with("weft.destination.kind", kind),
        )
    }

    /// Runs `store`, which stores messages in the `kind` destination
    /// `name`, inside a producer span child of `parent`, and hands it the
    /// span's context to keep with them.
    pub async fn produce<T, E, F>(
        &self,
        kind: &str,
        name: &str,
        parent: Option<&SpanContext>,
        store: impl FnOnce(Option<SpanContext>) -> F,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: Future<Output = Result<T, E>>,
    {
        let span = self.producing(kind, name, parent);
        let result = store(span.as_ref().map(|s| s.context.clone())).await;
        if let Some(span) = span {
            span.end(self, result.as_ref().err().map(ToString::to_string));
        }
        result
    }

    /// Where the invocation that handles leased `messages` of `stream`
    /// sits in its trace: for each message stored with a context, a span
    /// for the time it waited (child of that context); the invocation is
    /// a child of the first wait and links to the others. A message
    /// delivered again adds a `retry` event with its attempt and last error.
    pub fn received(&self, stream: &str, messages: &[Message]) -> Traced {
        let mut traced = Traced::default();
        if !self.tracing {
            return traced;
        }
        let now = weft_store::now_us();
        let mut spans = Vec::new();
        for m in messages {
            if m.receive_count > 1 {
                let mut retry = SpanEvent::new("retry", now)
                    .with("weft.attempt", m.receive_count)
                    .with("messaging.message.id", m.id.as_str());
                if let Some(error) = &m.last_error {
                    retry = retry.with("weft.previous_error", error.as_str());
                }
                traced.events.push(retry);
            }
            let Some(stored) = weft_events::trace::of_message(m) else {
                continue;
            };
            let waited = stored.child();
            let mut span = Span::new(
                &waited,
                Some(&stored),
                format!("wait {stream}"),
                SpanKind::Consumer,
                m.appended_us,
            )
            .with("messaging.system", "weft")
            .with("messaging.operation.type", "receive")
            .with("messaging.destination.name", stream)
            .with("messaging.message.id", m.id.as_str())
            .with("weft.receive_count", m.receive_count);
            span.duration_us = (now - m.appended_us).max(0) as u64;
            spans.push(span);
            match traced.parent {
                None => traced.parent = Some(waited),
                Some(_) => traced.links.push(Link::from(&waited)),
            }
        }
        self.keep_spans(spans);
        traced
    }

    /// Keeps finished spans: in the store, for the records' retention,
    /// and offered for export when an OTLP endpoint is configured.
    pub(crate) fn keep_spans(&self, spans: Vec<Span>) {
        if let Some(exporter) = &self.exporter {
            exporter.offer(&spans);
        }
        self.store.spans(spans);
    }

    /// Offers an invocation's span for export, if its trace is sampled and
    /// an OTLP endpoint is configured.
    pub(crate) fn export_invocation(&self, record: &weft_store::InvocationRecord, flags: Option<u8>) {
        if let (Some(exporter), Some(flags)) = (&self.exporter, flags)
            && flags & 1 == 1
            && let Some(span) = record.otlp_span(flags)
        {
            exporter.offer_encoded(span);
        }
    }
}
