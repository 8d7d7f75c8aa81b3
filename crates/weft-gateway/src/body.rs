//! The one response body type every part of the node returns.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// A streaming body: a function's output, or a small buffer made here.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, weft_runtime::HttpError>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A JSON response.
pub(crate) fn json(status: u16, value: &serde_json::Value) -> hyper::Response<Body> {
    let mut response = hyper::Response::new(full(value.to_string()));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// An error response in the shape every weft error has:
/// `{"error": "...", "request_id": "..."}`.
pub(crate) fn error(status: u16, message: &str, request_id: Option<&str>) -> hyper::Response<Body> {
    let mut value = serde_json::json!({ "error": message });
    if let Some(id) = request_id {
        value["request_id"] = serde_json::Value::from(id);
    }
    json(status, &value)
}
