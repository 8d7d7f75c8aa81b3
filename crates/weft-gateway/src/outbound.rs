//! Where a function's outbound HTTP goes: to another function of the app
//! in-process (`http://NAME.weft.internal/...`), to a host its manifest
//! allows, or nowhere, with an error that says which grant is missing.

use std::sync::{Arc, Mutex, Weak};

use http_body_util::BodyExt;
use weft_manifest::GrantKind;
use weft_runtime::{HttpError, Outbound, OutboundFuture, RequestOptions, WasiBody, send_direct};

use crate::deploy::Deployed;
use crate::node::{Call, Node, Trigger};

/// Hosts ending in this reach the app's own functions: `http://NAME.weft.internal/PATH`.
pub const INTERNAL_SUFFIX: &str = ".weft.internal";
/// Hosts ending in this reach the app's queues: `POST http://NAME.queue.weft.internal/`.
pub const QUEUE_SUFFIX: &str = ".queue.weft.internal";
/// Hosts ending in this reach the app's topics: `POST http://NAME.topic.weft.internal/`.
pub const TOPIC_SUFFIX: &str = ".topic.weft.internal";
/// Hosts ending in this reach the app's buses: `POST http://NAME.bus.weft.internal/`.
pub const BUS_SUFFIX: &str = ".bus.weft.internal";
/// The largest message a function may send (as on SQS).
const MAX_MESSAGE: usize = 256 * 1024;

/// How deep in-process calls may nest before weft stops them as a loop.
pub const MAX_CALL_DEPTH: u32 = 16;

/// The outbound policy of one invocation.
pub(crate) struct FunctionOutbound {
    node: Weak<Node>,
    caller: Arc<Deployed>,
    request_id: String,
    depth: u32,
    denials: Mutex<Vec<String>>,
}

impl FunctionOutbound {
    pub(crate) fn new(node: &Arc<Node>, caller: &Arc<Deployed>, request_id: &str, depth: u32) -> Self {
        FunctionOutbound {
            node: Arc::downgrade(node),
            caller: caller.clone(),
            request_id: request_id.to_string(),
            depth,
            denials: Mutex::new(Vec::new()),
        }
    }

    /// The refusals this invocation met, as log lines.
    pub(crate) fn take_denials(&self) -> Vec<String> {
        std::mem::take(&mut *self.denials.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn deny(&self, message: String) -> OutboundFuture {
        self.denials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("[weft] {message}"));
        Box::pin(async move { Err(HttpError::InternalError(Some(message))) })
    }
}

impl FunctionOutbound {
    /// Sends the request's body as one message to `queue`, if granted.
    /// Headers: `weft-message-id` (deduplication), `weft-message-group`
    /// (FIFO), `weft-message-delay` (`10s`), `ce-type`, `content-type`.
    fn send_to_queue(&self, queue: &str, request: http::Request<WasiBody>) -> OutboundFuture {
        let node = match self.granted(GrantKind::Queue, queue, "send to") {
            Ok(node) => node,
            Err(refused) => return refused,
        };
        let queue = queue.to_string();
        Box::pin(async move {
            let refuse_method = format!("send messages to queue `{queue}` with POST");
            let (parts, body) = match read_post(request, refuse_method, "a message").await {
                Ok(read) => read,
                Err(answer) => return answer,
            };
            let header = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let delay = match header("weft-message-delay")
                .map(|d| weft_manifest::parse_duration(&d))
                .transpose()
            {
                Ok(d) => d,
                Err(why) => {
                    return reply(
                        400,
                        serde_json::json!({ "error": format!("weft-message-delay: {why}") }),
                    );
                }
            };
            let message = weft_events::Outgoing {
                id: header("weft-message-id"),
                group: header("weft-message-group"),
                body: body.to_vec(),
                content_type: header("content-type"),
                event_type: header("ce-type"),
                delay,
                ..Default::default()
            };
            match node.queues.send(&queue, vec![message]).await {
                Ok(mut sent) => reply(202, serde_json::json!(sent.remove(0))),
                Err(e) => reply(e.status(), serde_json::json!({ "error": e.to_string() })),
            }
        })
    }

    /// Publishes the request as one CloudEvent in binary mode to `topic`,
    /// if granted. `ce-id` defaults to a new id, `ce-source` to
    /// `/weft/functions/NAME`, `ce-type` to `weft.function.event`.
    fn publish_to_topic(&self, topic: &str, request: http::Request<WasiBody>) -> OutboundFuture {
        let node = match self.granted(GrantKind::Topic, topic, "publish to") {
            Ok(node) => node,
            Err(refused) => return refused,
        };
        let (caller, topic) = (self.caller.name.clone(), topic.to_string());
        Box::pin(async move {
            let refuse_method = format!("publish to topic `{topic}` with POST");
            let (mut parts, body) = match read_post(request, refuse_method, "an event").await {
                Ok(read) => read,
                Err(answer) => return answer,
            };
            default_ce_headers(&mut parts.headers, &node, &caller);
            let event = match crate::ingress::from_headers(&parts.headers, body) {
                Ok(e) => e,
                Err(why) => return reply(400, serde_json::json!({ "error": why })),
            };
            match node.topics.publish(&node.queues, &topic, vec![event]).await {
                Ok(mut published) => reply(202, serde_json::json!(published.remove(0))),
                Err(e) => reply(e.status(), serde_json::json!({ "error": e.to_string() })),
            }
        })
    }

    /// Puts events on `bus`, if granted: a PutEvents request (entries
    /// without `EventBusName` go to this bus), or, when the request has
    /// `ce-*` headers or a CloudEvents content type, CloudEvents (`ce-id`,
    /// `ce-source` and `ce-type` default as for topics).
    fn put_on_bus(&self, bus: &str, request: http::Request<WasiBody>) -> OutboundFuture {
        let node = match self.granted(GrantKind::Bus, bus, "put events on") {
            Ok(node) => node,
            Err(refused) => return refused,
        };
        let (caller, bus) = (self.caller.name.clone(), bus.to_string());
        Box::pin(async move {
            let refuse_method = format!("put events on bus `{bus}` with POST");
            let (mut parts, body) = match read_post(request, refuse_method, "a request").await {
                Ok(read) => read,
                Err(answer) => return answer,
            };
            let media = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            let cloudevents = media.starts_with("application/cloudevents")
                || parts.headers.keys().any(|k| k.as_str().starts_with("ce-"));
            if !cloudevents {
                let (status, answer) = crate::ingress::put_events(&node, &body, Some(&bus)).await;
                return reply(status, answer);
            }
            if !media.starts_with("application/cloudevents") {
                default_ce_headers(&mut parts.headers, &node, &caller);
            }
            let events = crate::ingress::cloudevents_of(&parts.headers, body).and_then(|events| {
                events
                    .into_iter()
                    .map(weft_events::bus::BusEvent::from_cloudevent)
                    .collect()
            });
            let events = match events {
                Ok(e) => e,
                Err(why) => return reply(400, serde_json::json!({ "error": why })),
            };
            match node.buses.put(&node.queues, &node.topics, &bus, events).await {
                Ok(put) => reply(202, serde_json::json!({ "accepted": put.len(), "events": put })),
                Err(e) => reply(e.status(), serde_json::json!({ "error": e.to_string() })),
            }
        })
    }

    /// The node, if the caller's `publish` grants `kind:name`; else the
    /// refusal, naming the entry to add.
    fn granted(&self, kind: GrantKind, name: &str, verb: &str) -> Result<Arc<Node>, OutboundFuture> {
        let caller = &self.caller.name;
        let what = match kind {
            GrantKind::Queue => "queue",
            GrantKind::Topic => "topic",
            GrantKind::Bus => "bus",
        };
        if !self
            .caller
            .spec
            .publish
            .iter()
            .any(|g| g.kind == kind && g.name == name)
        {
            return Err(self.deny(format!(
                "function `{caller}` may not {verb} {what} `{name}`: add \"{what}:{name}\" to `publish` in [function.{caller}] of weft.toml"
            )));
        }
        self.node
            .upgrade()
            .ok_or_else(|| self.deny("the node is shutting down".into()))
    }
}

type Answer = Result<http::Response<WasiBody>, HttpError>;

/// Fills in the CloudEvents attributes a function left out: `specversion`
/// 1.0, a new `id`, `source` `/weft/functions/NAME`, `type` `weft.function.event`.
fn default_ce_headers(headers: &mut http::HeaderMap, node: &Node, caller: &str) {
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
fn reply(status: u16, value: serde_json::Value) -> Answer {
    Ok(crate::body::json(status, &value))
}

/// The parts and body of a POST of at most [`MAX_MESSAGE`] bytes of `item`,
/// or the answer refusing it.
async fn read_post(
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

impl Outbound for FunctionOutbound {
    fn send(&self, request: http::Request<WasiBody>, options: Option<RequestOptions>) -> OutboundFuture {
        let uri = request.uri();
        let Some(host) = uri.host().map(str::to_ascii_lowercase) else {
            return self.deny("outbound request without a host".into());
        };
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let default_port = if https { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        let caller = &self.caller.name;

        if let Some(queue) = host.strip_suffix(QUEUE_SUFFIX) {
            return self.send_to_queue(queue, request);
        }
        if let Some(topic) = host.strip_suffix(TOPIC_SUFFIX) {
            return self.publish_to_topic(topic, request);
        }
        if let Some(bus) = host.strip_suffix(BUS_SUFFIX) {
            return self.put_on_bus(bus, request);
        }
        if let Some(target) = host.strip_suffix(INTERNAL_SUFFIX) {
            let Some(node) = self.node.upgrade() else {
                return self.deny("the node is shutting down".into());
            };
            if self.depth + 1 >= MAX_CALL_DEPTH {
                return self.deny(format!(
                    "call from `{caller}` to `{target}` refused: in-process calls are nested {MAX_CALL_DEPTH} deep; is there a loop?"
                ));
            }
            let Some(function) = node.deployment().functions.get(target).cloned() else {
                let deployment = node.deployment();
                let mut known: Vec<&str> = deployment.functions.keys().map(String::as_str).collect();
                known.sort();
                return self.deny(format!(
                    "`{host}` names no function of this app; internal addresses are http://FUNCTION{INTERNAL_SUFFIX}/PATH with FUNCTION one of: {}",
                    known.join(", ")
                ));
            };
            let parent = self.request_id.clone();
            let depth = self.depth + 1;
            return Box::pin(async move {
                let call = Call {
                    trigger: Trigger::Internal,
                    params: &[],
                    parent: Some(&parent),
                    depth,
                    trusted: &[],
                };
                let handled = node.invoke_following(&function, request, call).await;
                Ok(handled.response)
            });
        }

        let allowed = self
            .caller
            .spec
            .allowed_hosts
            .iter()
            .any(|p| p.allows(&host, port, port == default_port));
        if !allowed {
            let entry = if port == default_port {
                host.clone()
            } else {
                format!("{host}:{port}")
            };
            return self.deny(format!(
                "outbound HTTP to `{entry}` is not allowed for function `{caller}`: add \"{entry}\" to `allowed_hosts` in [function.{caller}] of weft.toml"
            ));
        }
        send_direct(request, options)
    }
}
