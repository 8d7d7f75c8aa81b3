//! Where an event goes: one [`Target`] for every "send this there" of the
//! manifest (publish grants, async destinations, schedule, rule and
//! subscription targets, the targets of stores' and buckets' changes).
//!
//! Each place that names a target allows only some kinds; the checker says
//! which. A new kind is one new variant here and one entry in
//! [`TargetKind::ALL`].

use std::fmt;

/// A function, queue, topic, bus, workflow or URL that events are sent to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Function(String),
    Queue(String),
    Topic(String),
    Bus(String),
    /// A workflow: each event starts an execution, with the event as input.
    Workflow(String),
    /// An HTTP(S) endpoint, sent each event as a CloudEvent in binary mode.
    Url(String),
}

/// What a [`Target`] is, without its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    Function,
    Queue,
    Topic,
    Bus,
    Workflow,
    Url,
}

impl TargetKind {
    /// Every kind, in the order messages list them.
    pub const ALL: [TargetKind; 6] = [
        TargetKind::Function,
        TargetKind::Queue,
        TargetKind::Topic,
        TargetKind::Bus,
        TargetKind::Workflow,
        TargetKind::Url,
    ];

    /// The word the manifest uses: `function`, `queue`, `topic`, `bus`,
    /// `workflow`, `url`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Function => "function",
            TargetKind::Queue => "queue",
            TargetKind::Topic => "topic",
            TargetKind::Bus => "bus",
            TargetKind::Workflow => "workflow",
            TargetKind::Url => "url",
        }
    }

    /// The kind the manifest word names.
    pub fn parse(word: &str) -> Option<TargetKind> {
        TargetKind::ALL.into_iter().find(|k| k.as_str() == word)
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Target {
    pub fn new(kind: TargetKind, name: impl Into<String>) -> Target {
        let name = name.into();
        match kind {
            TargetKind::Function => Target::Function(name),
            TargetKind::Queue => Target::Queue(name),
            TargetKind::Topic => Target::Topic(name),
            TargetKind::Bus => Target::Bus(name),
            TargetKind::Workflow => Target::Workflow(name),
            TargetKind::Url => Target::Url(name),
        }
    }

    /// `KIND:NAME`, as `publish` entries and async destinations write it;
    /// `None` for an unknown kind or an empty name.
    pub fn parse(text: &str) -> Option<Target> {
        let (kind, name) = text.split_once(':')?;
        let kind = TargetKind::parse(kind)?;
        (!name.is_empty()).then(|| Target::new(kind, name))
    }

    pub fn kind(&self) -> TargetKind {
        match self {
            Target::Function(_) => TargetKind::Function,
            Target::Queue(_) => TargetKind::Queue,
            Target::Topic(_) => TargetKind::Topic,
            Target::Bus(_) => TargetKind::Bus,
            Target::Workflow(_) => TargetKind::Workflow,
            Target::Url(_) => TargetKind::Url,
        }
    }

    /// The name of the function, queue, topic, bus or workflow, or the URL.
    pub fn name(&self) -> &str {
        match self {
            Target::Function(n)
            | Target::Queue(n)
            | Target::Topic(n)
            | Target::Bus(n)
            | Target::Workflow(n)
            | Target::Url(n) => n,
        }
    }
}

impl fmt::Display for Target {
    /// `KIND:NAME`, e.g. `queue:jobs` or `url:https://example.com/hook`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_kind_and_name() {
        for kind in TargetKind::ALL {
            let target = Target::new(kind, "x");
            assert_eq!(target.kind(), kind);
            assert_eq!(target.name(), "x");
            assert_eq!(Target::parse(&target.to_string()), Some(target));
        }
        assert_eq!(
            Target::parse("url:https://example.com/hook"),
            Some(Target::Url("https://example.com/hook".into()))
        );
        assert_eq!(Target::Queue("jobs".into()).to_string(), "queue:jobs");
        for bad in ["jobs", "lambda:x", "queue:", ":jobs"] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
    }
}
