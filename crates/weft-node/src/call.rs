//! Who calls a function, and what the call hands back.

use tokio::sync::oneshot;
use weft_store::{InvocationRecord, Trigger};

use crate::body::Body;

/// Who is calling, for one invocation.
pub struct Call<'a> {
    pub trigger: Trigger,
    pub params: &'a [(&'a str, &'a str)],
    pub parent: Option<&'a str>,
    pub depth: u32,
    /// `weft-*` headers weft itself sets (clients' are removed).
    pub trusted: &'a [(&'a str, &'a str)],
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
        }
    }
}

/// A handled invocation: the response to send, and the record once it exists.
pub struct Handled {
    pub response: hyper::Response<Body>,
    pub request_id: String,
    pub record: oneshot::Receiver<InvocationRecord>,
}
