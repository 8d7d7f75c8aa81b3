//! The one response body type every part of the node returns.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// A streaming body: a function's output, or a small buffer made here.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, weft_runtime::HttpError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// A JSON response.
pub fn json(status: u16, value: &serde_json::Value) -> hyper::Response<Body> {
    let mut response = hyper::Response::new(full(value.to_string()));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// An error response in the shape every weft error has:
/// `{"error": "...", "request_id": "..."}`, with the `weft-request-id`
/// header when there is an invocation.
pub fn error(status: u16, message: &str, request_id: Option<&str>) -> hyper::Response<Body> {
    let mut value = serde_json::json!({ "error": message });
    let Some(id) = request_id else {
        return json(status, &value);
    };
    value["request_id"] = serde_json::Value::from(id);
    let mut response = json(status, &value);
    if let Ok(v) = http::HeaderValue::from_str(id) {
        response
            .headers_mut()
            .insert(http::HeaderName::from_static("weft-request-id"), v);
    }
    response
}

/// Most functions write a small body and finish at once. Collecting it
/// (up to [`COALESCE_BYTES`], for at most [`COALESCE_WAIT`]) lets the
/// response go out with a `content-length` in one write, instead of
/// headers, chunks and a terminator in several; a body that is larger or
/// still being written streams as it comes, its collected start first.
pub const COALESCE_BYTES: usize = 64 * 1024;
pub const COALESCE_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

pub async fn coalesce(response: hyper::Response<Body>) -> hyper::Response<Body> {
    if response.headers().contains_key(http::header::CONTENT_LENGTH) {
        return response;
    }
    let (mut parts, mut rest) = response.into_parts();
    let mut collected = bytes::BytesMut::new();
    // On the gateway's single-threaded runtime the function has usually
    // finished writing by the time its answer is read: take what is ready
    // without a timer, and arm one only if the body is still coming.
    let mut deadline = None;
    loop {
        let frame = match ready_frame(&mut rest).await {
            Some(frame) => frame,
            None => {
                let timer = deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(COALESCE_WAIT)));
                tokio::select! {
                    frame = rest.frame() => frame,
                    () = timer => break,
                }
            }
        };
        match frame {
            None => {
                parts
                    .headers
                    .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(collected.len()));
                return hyper::Response::from_parts(parts, full(collected.freeze()));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    collected.extend_from_slice(&data);
                    if collected.len() >= COALESCE_BYTES {
                        break;
                    }
                }
                Err(trailers) => {
                    let pending = Some(Ok(trailers));
                    let prefixed = Prefixed {
                        prefix: Some(collected.freeze()),
                        pending,
                        rest,
                    };
                    return hyper::Response::from_parts(parts, prefixed.boxed_unsync());
                }
            },
            Some(Err(e)) => {
                let prefixed = Prefixed {
                    prefix: Some(collected.freeze()),
                    pending: Some(Err(e)),
                    rest,
                };
                return hyper::Response::from_parts(parts, prefixed.boxed_unsync());
            }
        }
    }
    let prefixed = Prefixed {
        prefix: Some(collected.freeze()),
        pending: None,
        rest,
    };
    hyper::Response::from_parts(parts, prefixed.boxed_unsync())
}

type Frame = Option<Result<hyper::body::Frame<Bytes>, weft_runtime::HttpError>>;

/// The body's next frame if it is ready now, without waiting.
async fn ready_frame(body: &mut Body) -> Option<Frame> {
    std::future::poll_fn(
        |cx| match hyper::body::Body::poll_frame(std::pin::Pin::new(&mut *body), cx) {
            std::task::Poll::Ready(frame) => std::task::Poll::Ready(Some(frame)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        },
    )
    .await
}

/// A body whose first bytes (and possibly trailers) were already read.
struct Prefixed {
    prefix: Option<Bytes>,
    /// Trailers, or the error the body failed with, after the prefix.
    pending: Option<Result<hyper::body::Frame<Bytes>, weft_runtime::HttpError>>,
    rest: Body,
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = weft_runtime::HttpError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if let Some(prefix) = self.prefix.take().filter(|p| !p.is_empty()) {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(prefix))));
        }
        if let Some(frame) = self.pending.take() {
            return std::task::Poll::Ready(Some(frame));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }
}
