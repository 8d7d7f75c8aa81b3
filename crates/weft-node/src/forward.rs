//! Forwarding: a function ends by handing the request on.
//!
//! A function that only passes another function's answer on (or trims it)
//! need not wait for it. It answers with a forward directive instead:
//!
//! - `weft-forward: NEXT`: the function that answers the caller;
//! - `weft-forward-path: /path` (optional; default: the original path);
//! - `weft-forward-filter: EXPRESSION` (optional): a JMESPath expression
//!   applied to NEXT's JSON answer before it reaches the caller.
//!
//! Its body becomes NEXT's request body (`POST`, with its `content-type`).
//! weft reads that body, waits until the forwarding instance is gone, and
//! only then runs NEXT: the forwarding function holds no instance and no
//! memory while NEXT runs. Forwards chain; a chain longer than
//! [`MAX_FORWARDS`] is cut with a 508. Each hop's record has trigger
//! `forward` and the previous hop's request id as its parent.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderName;
use http_body_util::{BodyExt, Limited};

use crate::body::{self, Body};
use crate::call::{Call, Handled, Traced};
use crate::deployment::Deployed;
use crate::node::Node;
use weft_store::Trigger;
use weft_telemetry::SpanEvent;

/// The most hops one request may be forwarded.
pub const MAX_FORWARDS: u32 = 16;
/// The largest body a forward carries.
const MAX_PAYLOAD: usize = 6 << 20;

const FORWARD: HeaderName = HeaderName::from_static("weft-forward");
const FORWARD_PATH: HeaderName = HeaderName::from_static("weft-forward-path");
const FORWARD_FILTER: HeaderName = HeaderName::from_static("weft-forward-filter");

impl Node {
    /// Invokes `function` and follows the forwards it (and the functions it
    /// forwards to) answer with.
    pub async fn invoke_following<B>(
        self: &Arc<Self>,
        function: &Arc<Deployed>,
        request: hyper::Request<B>,
        call: Call<'_>,
    ) -> Handled
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<weft_runtime::HttpError>,
    {
        let original_path = request
            .uri()
            .path_and_query()
            .map_or("/".to_string(), |p| p.to_string());
        let depth = call.depth;
        let mut handled = self.invoke(function, request, call).await;
        let mut from = function.name.clone();
        let mut filters: Vec<(String, jmespath::Expression<'static>)> = Vec::new();
        let mut hops = 0;
        while let Some(next) = handled
            .response
            .headers()
            .get(&FORWARD)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
        {
            hops += 1;
            let fail = |status: u16, message: String, handled: Handled| Handled {
                response: body::error(status, &message, Some(&handled.request_id)),
                ..handled
            };
            if hops > MAX_FORWARDS {
                let message = format!(
                    "the request was forwarded more than {MAX_FORWARDS} times (last by `{from}` to `{next}`); is there a loop?"
                );
                return fail(508, message, handled);
            }
            let headers = handled.response.headers().clone();
            let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            if let Some(text) = header(&FORWARD_FILTER) {
                match jmespath::compile(&text) {
                    Ok(expression) => filters.push((from.clone(), expression)),
                    Err(e) => {
                        return fail(
                            502,
                            format!("function `{from}` forwarded with an invalid weft-forward-filter `{text}`: {e}"),
                            handled,
                        );
                    }
                }
            }
            let Some(target) = self.deployment().functions.get(&next).cloned() else {
                return fail(
                    502,
                    format!("function `{from}` forwarded to `{next}`, which is not a function of this app"),
                    handled,
                );
            };
            let path = header(&FORWARD_PATH).unwrap_or_else(|| original_path.clone());
            let payload = match Limited::new(
                std::mem::replace(handled.response.body_mut(), body::full(Bytes::new())),
                MAX_PAYLOAD,
            )
            .collect()
            .await
            {
                Ok(c) => c.to_bytes(),
                Err(e) => {
                    return fail(
                        502,
                        format!("function `{from}` forwarded, but its body could not be read: {e}"),
                        handled,
                    );
                }
            };
            let parent = handled.request_id.clone();
            let previous_span = handled.span.clone();
            // The forwarding instance is gone once its record exists.
            let _ = handled.record.await;
            let mut next_request = hyper::Request::builder()
                .method("POST")
                .uri(path.as_str())
                .header(http::header::HOST, "localhost");
            if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
                next_request = next_request.header(http::header::CONTENT_TYPE, ct);
            }
            let next_request = match next_request.body(body::full(payload)) {
                Ok(r) => r,
                Err(e) => {
                    let response = body::error(
                        502,
                        &format!("function `{from}` forwarded to an invalid path `{path}`: {e}"),
                        Some(&parent),
                    );
                    let (_, record) = tokio::sync::oneshot::channel();
                    return Handled {
                        response,
                        request_id: parent,
                        record,
                        span: previous_span,
                    };
                }
            };
            // The next hop is a child of the one that forwarded, with an
            // event that says so.
            let forwarded = SpanEvent::new("forward", weft_store::now_us())
                .with("weft.forward.from", from.as_str())
                .with("weft.forward.from_request_id", parent.as_str())
                .with("weft.forward.path", path.as_str());
            let call = Call {
                trigger: Trigger::Forward,
                params: &[],
                parent: Some(&parent),
                depth: depth + hops,
                trusted: &[],
                trace: Traced {
                    parent: previous_span,
                    links: Vec::new(),
                    events: vec![forwarded],
                },
            };
            handled = self.invoke(&target, next_request, call).await;
            from = next;
        }
        if filters.is_empty() {
            return handled;
        }
        apply_filters(handled, filters).await
    }
}

/// Applies the filters of every hop, the innermost forward's first.
async fn apply_filters(mut handled: Handled, filters: Vec<(String, jmespath::Expression<'static>)>) -> Handled {
    if !handled.response.status().is_success() {
        return handled;
    }
    let body: Body = std::mem::replace(handled.response.body_mut(), body::full(Bytes::new()));
    let bytes = match Limited::new(body, MAX_PAYLOAD).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            handled.response = body::error(
                502,
                &format!("the forwarded answer could not be read: {e}"),
                Some(&handled.request_id),
            );
            return handled;
        }
    };
    let mut value = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => v,
        Err(_) => {
            let (by, _) = &filters[filters.len() - 1];
            let message = format!("function `{by}` asked to filter the answer, but the answer is not JSON");
            handled.response = body::error(502, &message, Some(&handled.request_id));
            return handled;
        }
    };
    for (by, expression) in filters.iter().rev() {
        match expression.search(&value) {
            Ok(result) => value = serde_json::to_value(&*result).unwrap_or(serde_json::Value::Null),
            Err(e) => {
                handled.response = body::error(
                    502,
                    &format!("the filter of function `{by}` failed: {e}"),
                    Some(&handled.request_id),
                );
                return handled;
            }
        }
    }
    let text = value.to_string();
    let headers = handled.response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(text.len()));
    *handled.response.body_mut() = body::full(text);
    handled
}
