//! Who calls a function, and what the call hands back.

use tokio::sync::oneshot;
use weft_store::{InvocationRecord, Trigger};
use weft_telemetry::{Link, SpanContext, SpanEvent};

use crate::body::Body;

/// Who is calling, for one invocation.
pub struct Call<'a> {
    pub trigger: Trigger,
    pub params: &'a [(&'a str, &'a str)],
    pub parent: Option<&'a str>,
    pub depth: u32,
    /// `weft-*` headers weft itself sets (clients' are removed).
    pub trusted: &'a [(&'a str, &'a str)],
    /// Where it sits in its trace, when weft knows better than the
    /// request's `traceparent` (a message's wait, a forward).
    pub trace: Traced,
}

impl<'a> Call<'a> {
    /// A call with nothing but its trigger.
    pub fn new(trigger: Trigger) -> Call<'a> {
        Call {
            trigger,
            params: &[],
            parent: None,
            depth: 0,
            trusted: &[],
            trace: Traced::default(),
        }
    }
}

/// The parent span of an invocation, the spans it links to, and what
/// happened before it started (a retry, a forward).
#[derive(Debug, Clone, Default)]
pub struct Traced {
    pub parent: Option<SpanContext>,
    pub links: Vec<Link>,
    pub events: Vec<SpanEvent>,
}

/// A handled invocation: the response to send, and the record once it exists.
pub struct Handled {
    pub response: hyper::Response<Body>,
    pub request_id: String,
    pub record: oneshot::Receiver<InvocationRecord>,
    /// The invocation's span, unless tracing is off.
    pub span: Option<SpanContext>,
}
