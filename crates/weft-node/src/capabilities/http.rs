//! What the internal addresses of capabilities share: reading a
//! function's POST within the message limit, answering it, and filling in
//! the CloudEvents attributes a function left out.

use http_body_util::BodyExt;
use weft_runtime::{HttpError, WasiBody};

use crate::node::Node;

/// The largest message or event a function may send (as on SQS).
pub const MAX_MESSAGE: usize = 256 * 1024;

pub(crate) type Answer = Result<http::Response<WasiBody>, HttpError>;

/// Fills in the CloudEvents attributes a function left out: `specversion`
/// 1.0, a new `id`, `source` `/weft/functions/NAME`, `type` `weft.function.event`.
pub(crate) fn default_ce_headers(headers: &mut http::HeaderMap, node: &Node, caller: &str) {
    let defaults = [
        ("ce-specversion", "1.0".to_string()),
        ("ce-id", node.new_request_id()),
        ("ce-source", format!("/weft/functions/{caller}")),
        ("ce-type", "weft.function.event".to_string()),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(name)
            && let Ok(v) = http::HeaderValue::from_str(&value)
        {
            headers.insert(name, v);
        }
    }
}

/// weft's answer to a function's send or publish.
pub(crate) fn reply(status: u16, value: serde_json::Value) -> Answer {
    Ok(crate::body::json(status, &value))
}

/// weft's answer to a send or publish that stored something: `status`
/// with what it returned, or the error with the error's own status.
pub(crate) fn answer<T: serde::Serialize>(status: u16, result: Result<T, weft_events::QueueError>) -> Answer {
    match result {
        Ok(value) => reply(status, serde_json::json!(value)),
        Err(e) => reply(e.status(), serde_json::json!({ "error": e.to_string() })),
    }
}

/// The parts and body of a POST of at most [`MAX_MESSAGE`] bytes of `item`,
/// or the answer refusing it.
pub(crate) async fn read_post(
    request: http::Request<WasiBody>,
    refuse_method: String,
    item: &str,
) -> Result<(http::request::Parts, bytes::Bytes), Answer> {
    if request.method() != http::Method::POST {
        return Err(reply(405, serde_json::json!({ "error": refuse_method })));
    }
    let (parts, body) = request.into_parts();
    match http_body_util::Limited::new(body, MAX_MESSAGE).collect().await {
        Ok(c) => Ok((parts, c.to_bytes())),
        Err(_) => Err(reply(
            413,
            serde_json::json!({ "error": format!("{item} is at most {MAX_MESSAGE} bytes") }),
        )),
    }
}
