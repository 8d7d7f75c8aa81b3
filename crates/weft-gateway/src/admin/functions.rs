//! Admin operations on functions: health, what is deployed, and invoking
//! a function (waiting for its answer, or as an asynchronous invocation).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Value, json};
use weft_node::capability::{AdminReply, AdminRequest, AdminRoute, admin_route};
use weft_node::{Call, Node, Trigger};

use crate::serve::Counters;

/// The most of a function's answer `invoke` shows, as Lambda's limit on
/// a synchronous response; the rest is cut and the answer says so.
pub const MAX_INVOKE_RESPONSE: usize = 6 << 20;

type Reply = Result<AdminReply, AdminReply>;

/// The listeners whose connection counts `/v1/health` shows, by name.
pub type Listeners = Vec<(&'static str, Arc<Counters>)>;

pub(super) fn routes(listeners: Listeners) -> Vec<AdminRoute<Node>> {
    let listeners = Arc::new(listeners);
    vec![
        admin_route(Method::GET, "/v1/health", move |node: Arc<Node>, _| {
            let listeners = listeners.clone();
            async move { Ok(AdminReply::ok(health(&node, &listeners))) }
        }),
        admin_route(Method::GET, "/v1/app", |node, _| async move {
            Ok(AdminReply::ok(app(&node)))
        }),
        admin_route(Method::POST, "/v1/functions/{name}/invoke", |node, r| async move {
            invoke(&node, &r).await
        }),
    ]
}

/// That the node answers, and what its bounds have refused so far.
fn health(node: &Node, listeners: &Listeners) -> Value {
    let connections: serde_json::Map<String, Value> = listeners
        .iter()
        .map(|(name, c)| {
            let count = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let open = c.open.load(Ordering::Relaxed);
            let counts = json!({ "open": open, "shed": count(&c.shed), "idle_closed": count(&c.idle_closed) });
            (name.to_string(), counts)
        })
        .collect();
    let shed = node.store.shed();
    json!({
        "status": "ok",
        "connections": connections,
        "shed": { "records": shed.records, "log_lines": shed.log_lines },
        "invocations_running": node.running(),
    })
}

fn app(node: &Node) -> Value {
    let d = node.deployment();
    let mut functions: Vec<Value> = d
        .functions
        .values()
        .map(|f| {
            json!({
                "name": f.name,
                "version": f.version,
                "digest": f.digest,
                "memory": f.spec.memory.bytes(),
                "timeout_ms": f.spec.timeout.as_millis() as u64,
                "allowed_hosts": f.spec.allowed_hosts.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    functions.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let routes: Vec<Value> = d
        .routes
        .entries()
        .map(|(m, p, to)| {
            let mut route = json!({ "method": m.map_or("ANY", |m| m.as_str()), "path": p.as_str() });
            route[to.kind().as_str()] = json!(to.name());
            route
        })
        .collect();
    json!({
        "app": d.app,
        "node": node.node_id(),
        "revision": node.revision(),
        "functions": functions,
        "routes": routes,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvokeRequest {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default, rename = "type")]
    invocation_type: Option<String>,
}

/// How `invoke` runs the function, as Lambda's invocation types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InvocationType {
    /// Wait for the answer (the default).
    RequestResponse,
    /// Accept it durably, answer 202, and run it in the background.
    Event,
}

impl InvocationType {
    fn parse(text: Option<&str>) -> Result<InvocationType, AdminReply> {
        match text {
            None | Some("request_response") => Ok(InvocationType::RequestResponse),
            Some("event") => Ok(InvocationType::Event),
            Some(other) => Err(AdminReply::error(
                400,
                format!("`type` must be `request_response` or `event`, got `{other}`"),
            )),
        }
    }
}

async fn invoke(node: &Arc<Node>, request: &AdminRequest) -> Reply {
    let name = request.param("name");
    let function = node
        .deployment()
        .functions
        .get(name)
        .cloned()
        .ok_or_else(|| AdminReply::error(404, format!("no function `{name}` is deployed")))?;
    let input: InvokeRequest = request.json()?;
    let method = input.method.as_deref().unwrap_or("POST");
    let path = input.path.as_deref().unwrap_or("/");
    if !path.starts_with('/') {
        return Err(AdminReply::error(
            400,
            format!("`path` must start with `/`, got `{path}`"),
        ));
    }
    // A header the invoke request gives the function, by any case.
    let header = |n: &str| {
        input
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    if InvocationType::parse(input.invocation_type.as_deref())? == InvocationType::Event {
        // Check now what would make the stored request unusable later.
        if http::Method::from_bytes(method.as_bytes()).is_err() || path.parse::<http::Uri>().is_err() {
            return Err(AdminReply::error(
                400,
                format!("`{method} {path}` is not a valid HTTP method and path"),
            ));
        }
        for (name, value) in &input.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() || http::HeaderValue::from_str(value).is_err() {
                return Err(AdminReply::error(
                    400,
                    format!(
                        "header `{name}: {value}` is not a valid HTTP header; names are tokens, values visible text"
                    ),
                ));
            }
        }
        // A `traceparent` among the headers is the trace the invocation
        // joins; else the admin request's own.
        let parent = header("traceparent")
            .and_then(|t| weft_telemetry::SpanContext::parse(t, header("tracestate")))
            .or_else(|| request.trace());
        let headers = input.headers.into_iter().collect();
        let id = node
            .invoke_async(
                name,
                method,
                path,
                headers,
                input.body.unwrap_or_default(),
                parent.as_ref(),
            )
            .await
            .map_err(|e| {
                let status = match e {
                    weft_store::durable::StorageError::Unavailable(_) => 503,
                    _ => 500,
                };
                AdminReply::error(status, e.to_string())
            })?;
        return Ok(AdminReply::with_status(202, json!({ "invocation_id": id })));
    }
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "localhost");
    if header("traceparent").is_none() {
        // The admin request's own trace, as for an async invocation.
        for name in ["traceparent", "tracestate"] {
            if let Some(v) = request.headers.get(name).filter(|_| header(name).is_none()) {
                builder = builder.header(name, v);
            }
        }
    }
    for (k, v) in &input.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = builder
        .body(weft_node::body::full(input.body.unwrap_or_default()))
        .map_err(|e| AdminReply::error(400, format!("the invoke request is not valid HTTP: {e}")))?;
    let handled = node
        .invoke_following(&function, request, Call::new(Trigger::Invoke))
        .await;
    let (parts, response_body) = handled.response.into_parts();
    let (bytes, truncated) = read_capped(response_body, MAX_INVOKE_RESPONSE).await;
    let record = handled.record.await.ok();
    let headers: HashMap<&str, String> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let mut answer = json!({
        "request_id": handled.request_id,
        "status": parts.status.as_u16(),
        "headers": headers,
        "body": String::from_utf8_lossy(&bytes),
        "record": record,
    });
    if truncated {
        answer["truncated"] = json!(format!("the answer was cut at {MAX_INVOKE_RESPONSE} bytes"));
    }
    Ok(AdminReply::ok(answer))
}

/// Reads up to `max` bytes of a body; says whether there was more, which
/// is dropped unread. A body that fails midway keeps what came and a note.
async fn read_capped(mut body: weft_node::Body, max: usize) -> (Bytes, bool) {
    let mut out = bytes::BytesMut::new();
    loop {
        let left = max - out.len();
        match body.frame().await {
            None => return (out.freeze(), false),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                if data.len() > left {
                    out.extend_from_slice(&data[..left]);
                    return (out.freeze(), true);
                }
                out.extend_from_slice(&data);
            }
            Some(Err(e)) => {
                out.extend_from_slice(format!("[the response body failed midway: {e}]").as_bytes());
                return (out.freeze(), false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_is_read_up_to_its_cap() {
        let (small, cut) = read_capped(weft_node::body::full("hello"), 10).await;
        assert_eq!((small.as_ref(), cut), (&b"hello"[..], false));
        let (big, cut) = read_capped(weft_node::body::full(vec![7u8; 25]), 10).await;
        assert_eq!((big.len(), cut), (10, true));
        let (exact, cut) = read_capped(weft_node::body::full(vec![7u8; 10]), 10).await;
        assert_eq!((exact.len(), cut), (10, false));
    }
}
