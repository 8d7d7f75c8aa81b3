//! Request policy: checks that every request to the app (its routes and
//! the event ingress) passes before anything runs. Each policy is one
//! [`Policy`]; the gateway applies the [`Policies`] in order, and the
//! first refusal is the answer. Authentication, rate limits and CORS are
//! policies of the same shape.

use std::sync::Arc;

use weft_node::body::{self, Body};

/// Why a policy refused a request: the status and the message of the
/// error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    /// The answer the client gets, in the shape of every weft error.
    pub fn response(&self) -> hyper::Response<Body> {
        body::error(self.status, &self.message, None)
    }
}

/// One check of a request's head.
pub trait Policy: Send + Sync + 'static {
    fn check(&self, request: &http::request::Parts) -> Result<(), Refusal>;
}

/// The policies of the app's front, applied in order.
#[derive(Clone)]
pub struct Policies(Arc<Vec<Box<dyn Policy>>>);

impl Policies {
    pub fn new(policies: Vec<Box<dyn Policy>>) -> Policies {
        Policies(Arc::new(policies))
    }

    /// The first refusal, if any policy refuses.
    pub fn check(&self, request: &http::request::Parts) -> Result<(), Refusal> {
        self.0.iter().try_for_each(|p| p.check(request))
    }
}

impl Default for Policies {
    /// The body cap at its default.
    fn default() -> Policies {
        Policies::new(vec![Box::new(BodyLimit::default())])
    }
}

/// Refuses a request whose declared body is larger than `max` bytes with
/// a 413 that says the limit. (A body sent without a length streams to the
/// function, which reads it within its own memory limit.)
pub struct BodyLimit {
    pub max: u64,
}

/// As Lambda's limit for a synchronous request.
pub const DEFAULT_MAX_BODY: u64 = 6 << 20;

impl Default for BodyLimit {
    fn default() -> BodyLimit {
        BodyLimit { max: DEFAULT_MAX_BODY }
    }
}

impl Policy for BodyLimit {
    fn check(&self, request: &http::request::Parts) -> Result<(), Refusal> {
        let Some(length) = request.headers.get(http::header::CONTENT_LENGTH) else {
            return Ok(());
        };
        match length.to_str().ok().and_then(|l| l.trim().parse::<u64>().ok()) {
            Some(n) if n <= self.max => Ok(()),
            Some(n) => Err(Refusal {
                status: 413,
                message: format!(
                    "the request body is {n} bytes; this server takes at most {} bytes",
                    self.max
                ),
            }),
            None => Err(Refusal {
                status: 400,
                message: "the content-length header is not a number of bytes".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(length: Option<&str>) -> http::request::Parts {
        let mut builder = http::Request::builder().uri("/");
        if let Some(l) = length {
            builder = builder.header(http::header::CONTENT_LENGTH, l);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_body_limit_refuses_what_is_declared_larger() {
        let limit = BodyLimit { max: 10 };
        assert!(limit.check(&parts(None)).is_ok());
        assert!(limit.check(&parts(Some("10"))).is_ok());
        assert_eq!(limit.check(&parts(Some("11"))).unwrap_err().status, 413);
        assert_eq!(limit.check(&parts(Some("ten"))).unwrap_err().status, 400);
        let all = Policies::new(vec![Box::new(BodyLimit { max: 100 }), Box::new(limit)]);
        assert_eq!(all.check(&parts(Some("50"))).unwrap_err().status, 413);
    }
}
