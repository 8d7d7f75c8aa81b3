//! The admin API: JSON over HTTP, for the CLI and for tools.
//!
//! It is bound to 127.0.0.1 by default. `docs/admin-api.yaml` describes
//! every operation (OpenAPI 3). Every error answer is
//! `{"error": "what is wrong and how to fix it"}`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use weft_store::{ArtifactError, Digest, LogQuery, RecordQuery};

use crate::body::{self, Body};
use crate::node::{Call, Node, Trigger};

/// Largest component upload.
const MAX_ARTIFACT: usize = 256 << 20;
/// Largest JSON request.
const MAX_JSON: usize = 16 << 20;

/// An admin request that cannot be served.
struct Refusal {
    status: u16,
    message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

type Reply = Result<hyper::Response<Body>, Refusal>;

fn ok(value: Value) -> Reply {
    Ok(body::json(200, &value))
}

/// Handles one admin API request.
pub async fn handle(node: Arc<Node>, request: hyper::Request<Incoming>) -> hyper::Response<Body> {
    route(node, request)
        .await
        .unwrap_or_else(|r| body::error(r.status, &r.message, None))
}

async fn route(node: Arc<Node>, request: hyper::Request<Incoming>) -> Reply {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = parse_query(request.uri().query().unwrap_or(""));
    // Split first, then decode, so a name may hold an encoded `/` (the
    // hidden queue of a URL subscription) or `#`.
    let decoded: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(crate::node::percent_decode)
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["v1", "health"]) => ok(json!({ "status": "ok" })),
        ("GET", ["v1", "app"]) => ok(app(&node)),
        ("POST", ["v1", "functions", name, "invoke"]) => invoke(&node, name, request).await,
        ("GET", ["v1", "invocations"]) => invocations(&node, &query).await,
        ("GET", ["v1", "invocations", id]) => invocation(&node, id).await,
        ("GET", ["v1", "logs"]) => logs(&node, &query).await,
        ("GET" | "HEAD", ["v1", "artifacts", digest]) => {
            let d = digest_of(digest)?;
            if !node.artifacts.contains(&d) {
                return Err(refuse(404, format!("artifact {d} is not stored")));
            }
            ok(json!({ "digest": d }))
        }
        ("PUT", ["v1", "artifacts", digest]) => put_artifact(&node, digest, request).await,
        ("POST", ["v1", "deployments"]) => deploy(&node, request).await,
        ("POST", ["v1", "events", "test-pattern"]) => test_pattern(request).await,
        ("POST", ["v1", "events", "put"]) => {
            let body = read_body(request, MAX_JSON).await?;
            let (status, answer) = crate::ingress::put_events(&node, &body, None).await;
            Ok(body::json(status, &answer))
        }
        ("GET", ["v1", "buses"]) => buses(&node).await,
        ("POST", ["v1", "buses", bus, "replay"]) => replay(&node, bus, request).await,
        ("GET", ["v1", "queues"]) => queues(&node).await,
        ("GET", ["v1", "queues", q]) => queue_stats(&node, q).await,
        ("POST", ["v1", "queues", q, "messages"]) => send(&node, q, request).await,
        ("GET", ["v1", "queues", q, "messages"]) => peek(&node, q, &query).await,
        ("POST", ["v1", "queues", q, "receive"]) => receive(&node, q, request).await,
        ("POST", ["v1", "queues", q, "ack"]) => ack(&node, q, request).await,
        ("POST", ["v1", "queues", q, "redrive"]) => redrive(&node, q).await,
        _ => Err(refuse(
            404,
            format!("no admin operation {method} {path}; see docs/admin-api.yaml"),
        )),
    }
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), crate::node::percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

fn number(query: &HashMap<String, String>, key: &str, default: i64) -> Result<i64, Refusal> {
    match query.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            refuse(
                400,
                format!("query parameter `{key}` must be a whole number, got `{v}`"),
            )
        }),
    }
}

fn digest_of(text: &str) -> Result<Digest, Refusal> {
    Digest::try_from(text.to_string()).map_err(|e| refuse(400, e))
}

async fn read_body(request: hyper::Request<Incoming>, limit: usize) -> Result<Bytes, Refusal> {
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(refuse(
            413,
            format!("the request body could not be read (limit {limit} bytes): {e}"),
        )),
    }
}

async fn read_json<T: for<'de> Deserialize<'de>>(request: hyper::Request<Incoming>) -> Result<T, Refusal> {
    let bytes = read_body(request, MAX_JSON).await?;
    serde_json::from_slice(&bytes).map_err(|e| refuse(400, format!("the request body is not the expected JSON: {e}")))
}

/// Runs a store query off the async threads.
async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Refusal> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(refuse(500, e.to_string())),
        Err(e) => Err(refuse(500, format!("the query failed: {e}"))),
    }
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
        .map(|(m, p, f)| json!({ "method": m.map_or("ANY", |m| m.as_str()), "path": p.as_str(), "function": f }))
        .collect();
    json!({ "app": d.app, "functions": functions, "routes": routes })
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
    /// `request_response` (the default): wait for the answer; `event`:
    /// accept it durably, answer 202, and run it in the background.
    #[serde(default, rename = "type")]
    invocation_type: Option<String>,
}

async fn invoke(node: &Arc<Node>, name: &str, request: hyper::Request<Incoming>) -> Reply {
    let function = node
        .deployment()
        .functions
        .get(name)
        .cloned()
        .ok_or_else(|| refuse(404, format!("no function `{name}` is deployed")))?;
    let input: InvokeRequest = read_json(request).await?;
    let method = input.method.as_deref().unwrap_or("POST");
    let path = input.path.as_deref().unwrap_or("/");
    if !path.starts_with('/') {
        return Err(refuse(400, format!("`path` must start with `/`, got `{path}`")));
    }
    match input.invocation_type.as_deref() {
        None | Some("request_response") => {}
        Some("event") => {
            // Check now what would make the stored request unusable later.
            if http::Method::from_bytes(method.as_bytes()).is_err() || path.parse::<http::Uri>().is_err() {
                return Err(refuse(
                    400,
                    format!("`{method} {path}` is not a valid HTTP method and path"),
                ));
            }
            let headers = input.headers.into_iter().collect();
            let id = node
                .invoke_async(name, method, path, headers, input.body.unwrap_or_default())
                .await
                .map_err(|e| {
                    refuse(
                        if matches!(e, weft_store::durable::StorageError::Unavailable(_)) {
                            503
                        } else {
                            500
                        },
                        e.to_string(),
                    )
                })?;
            return Ok(body::json(202, &json!({ "invocation_id": id })));
        }
        Some(other) => {
            return Err(refuse(
                400,
                format!("`type` must be `request_response` or `event`, got `{other}`"),
            ));
        }
    }
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "localhost");
    for (k, v) in &input.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = builder
        .body(body::full(input.body.unwrap_or_default()))
        .map_err(|e| refuse(400, format!("the invoke request is not valid HTTP: {e}")))?;
    let call = Call {
        trigger: Trigger::Invoke,
        params: &[],
        parent: None,
        depth: 0,
        trusted: &[],
    };
    let handled = node.invoke_following(&function, request, call).await;
    let (parts, response_body) = handled.response.into_parts();
    let bytes = match response_body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => Bytes::from(format!("[the response body failed midway: {e}]")),
    };
    let record = handled.record.await.ok();
    let headers: HashMap<&str, String> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    ok(json!({
        "request_id": handled.request_id,
        "status": parts.status.as_u16(),
        "headers": headers,
        "body": String::from_utf8_lossy(&bytes),
        "record": record,
    }))
}

async fn invocations(node: &Arc<Node>, query: &HashMap<String, String>) -> Reply {
    let limit = number(query, "limit", 20)?.clamp(1, 10_000) as usize;
    let q = RecordQuery {
        function: query.get("function").cloned(),
        limit,
    };
    let node = node.clone();
    let records = blocking(move || node.store.records(&q)).await?;
    ok(json!({ "invocations": records }))
}

async fn invocation(node: &Arc<Node>, id: &str) -> Reply {
    let (node, wanted) = (node.clone(), id.to_string());
    match blocking(move || node.store.record_by_id(&wanted)).await? {
        Some(r) => ok(json!(r)),
        None => Err(refuse(
            404,
            format!("no invocation with request id `{id}` (records appear when the instance ends)"),
        )),
    }
}

async fn logs(node: &Arc<Node>, query: &HashMap<String, String>) -> Reply {
    let after = number(query, "after", 0)?;
    let limit = number(query, "limit", 1000)?.clamp(1, 10_000) as usize;
    let q = LogQuery {
        function: query.get("function").cloned(),
        request_id: query.get("request_id").cloned(),
        after,
        limit,
    };
    let node = node.clone();
    let lines = blocking(move || node.store.log_lines(&q)).await?;
    let next = lines.last().map_or(after, |l| l.seq);
    ok(json!({ "lines": lines, "next": next }))
}

async fn put_artifact(node: &Arc<Node>, digest: &str, request: hyper::Request<Incoming>) -> Reply {
    let expected = digest_of(digest)?;
    let bytes = read_body(request, MAX_ARTIFACT).await?;
    let node = node.clone();
    match tokio::task::spawn_blocking(move || node.artifacts.put(&bytes, Some(&expected))).await {
        Ok(Ok(d)) => Ok(body::json(201, &json!({ "digest": d }))),
        Ok(Err(e @ ArtifactError::Mismatch { .. })) => Err(refuse(400, e.to_string())),
        Ok(Err(e)) => Err(refuse(507, e.to_string())),
        Err(e) => Err(refuse(500, format!("storing the artifact failed: {e}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    manifest: String,
    #[serde(default = "default_file")]
    file: String,
    artifacts: HashMap<String, Digest>,
}

fn default_file() -> String {
    "weft.toml".into()
}

async fn deploy(node: &Arc<Node>, request: hyper::Request<Incoming>) -> Reply {
    let input: DeployRequest = read_json(request).await?;
    let report = node
        .deploy(&input.manifest, &input.file, &input.artifacts)
        .await
        .map_err(|e| refuse(e.status(), e.to_string()))?;
    ok(json!(report))
}

impl From<weft_events::QueueError> for Refusal {
    fn from(e: weft_events::QueueError) -> Refusal {
        refuse(e.status(), e.to_string())
    }
}

fn duration_field(text: Option<&str>, field: &str) -> Result<Option<std::time::Duration>, Refusal> {
    text.map(|t| {
        weft_manifest::parse_duration(t)
            .map_err(|why| refuse(400, format!("`{field}` is not a duration: {why}; write e.g. \"30s\"")))
    })
    .transpose()
}

fn message_view(m: &weft_store::durable::Message) -> Value {
    json!({
        "receipt": m.receipt().to_string(),
        "id": m.id,
        "seq": m.seq,
        "group": m.group,
        "body": String::from_utf8_lossy(&m.body),
        "attributes": m.attributes,
        "receive_count": m.receive_count,
        "last_error": m.last_error,
        "sent": weft_events::cloudevents::rfc3339(m.appended_us),
    })
}

async fn queues(node: &Arc<Node>) -> Reply {
    let mut list = Vec::new();
    for name in node.queues.names() {
        let q = node.queues.get(&name)?;
        let stats = node.queues.stats(&name).await?;
        list.push(json!({ "name": name, "fifo": q.fifo, "dead_letter": q.dead_letter, "stats": stats }));
    }
    ok(json!({ "queues": list }))
}

async fn queue_stats(node: &Arc<Node>, name: &str) -> Reply {
    let q = node.queues.get(name)?;
    let stats = node.queues.stats(name).await?;
    ok(json!({
        "name": q.name,
        "fifo": q.fifo,
        "dead_letter": q.dead_letter,
        "max_receives": q.max_receives,
        "visibility_timeout": weft_manifest::format_duration(q.visibility_timeout),
        "delay": weft_manifest::format_duration(q.delay),
        "retention": weft_manifest::format_duration(q.retention),
        "backoff": weft_manifest::format_duration(q.backoff),
        "stats": stats,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendMessage {
    body: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    delay: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default, rename = "type")]
    event_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    messages: Vec<SendMessage>,
}

async fn send(node: &Arc<Node>, queue: &str, request: hyper::Request<Incoming>) -> Reply {
    let input: SendRequest = read_json(request).await?;
    if input.messages.is_empty() || input.messages.len() > 1000 {
        return Err(refuse(400, "send 1 to 1000 messages at a time in `messages`"));
    }
    let mut outgoing = Vec::with_capacity(input.messages.len());
    for (n, m) in input.messages.into_iter().enumerate() {
        let delay = duration_field(m.delay.as_deref(), &format!("messages[{n}].delay"))?;
        outgoing.push(weft_events::Outgoing {
            id: m.id,
            group: m.group,
            body: m.body.into_bytes(),
            content_type: m.content_type,
            event_type: m.event_type,
            delay,
            ..Default::default()
        });
    }
    let sent = node.queues.send(queue, outgoing).await?;
    Ok(body::json(201, &json!({ "messages": sent })))
}

async fn peek(node: &Arc<Node>, queue: &str, query: &HashMap<String, String>) -> Reply {
    let limit = number(query, "limit", 10)?.clamp(1, 1000) as usize;
    let messages = node.queues.peek(queue, limit).await?;
    ok(json!({ "messages": messages.iter().map(message_view).collect::<Vec<_>>() }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReceiveRequest {
    #[serde(default)]
    max: Option<usize>,
    #[serde(default)]
    visibility: Option<String>,
}

async fn receive(node: &Arc<Node>, queue: &str, request: hyper::Request<Incoming>) -> Reply {
    let input: ReceiveRequest = read_json(request).await?;
    let max = input.max.unwrap_or(1);
    if !(1..=100).contains(&max) {
        return Err(refuse(400, format!("`max` must be from 1 to 100, got {max}")));
    }
    let visibility = duration_field(input.visibility.as_deref(), "visibility")?;
    let messages = node.queues.receive(queue, max, visibility).await?;
    ok(json!({ "messages": messages.iter().map(message_view).collect::<Vec<_>>() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    receipts: Vec<String>,
}

async fn ack(node: &Arc<Node>, queue: &str, request: hyper::Request<Incoming>) -> Reply {
    let input: AckRequest = read_json(request).await?;
    let receipts = input
        .receipts
        .iter()
        .map(|r| r.parse::<weft_store::durable::Receipt>().map_err(|e| refuse(400, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let acknowledged = node.queues.ack(queue, &receipts).await?;
    ok(json!({ "acknowledged": acknowledged, "stale": receipts.len() - acknowledged }))
}

async fn redrive(node: &Arc<Node>, queue: &str) -> Reply {
    let moved = node.queues.redrive(queue).await?;
    ok(json!({ "moved": moved }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestPattern {
    /// The pattern as JSON, or as a string holding JSON.
    pattern: Value,
    event: Value,
}

/// Tests an event pattern against an event, as EventBridge's TestEventPattern.
async fn test_pattern(request: hyper::Request<Incoming>) -> Reply {
    let input: TestPattern = read_json(request).await?;
    let text = match &input.pattern {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let pattern =
        weft_manifest::pattern::Pattern::parse(&text).map_err(|why| refuse(400, format!("invalid pattern: {why}")))?;
    if !input.event.is_object() {
        return Err(refuse(400, "invalid event: an event is a JSON object"));
    }
    ok(json!({ "result": if pattern.matches(&input.event) { "match" } else { "no match" } }))
}

/// The deployed buses: archive settings and size, and their rules.
async fn buses(node: &Arc<Node>) -> Reply {
    let deployment = node.deployment();
    let rules = deployment
        .manifest
        .as_ref()
        .map(|m| m.rules.as_slice())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (name, archive) in node.buses.list() {
        let (archived, oldest_us) = match archive {
            Some(_) => node.buses.archive_stats(&name).await?,
            None => (0, None),
        };
        let rules: Vec<Value> = rules
            .iter()
            .filter(|r| r.bus == name)
            .map(|r| {
                json!({
                    "name": r.name,
                    "enabled": r.enabled,
                    "pattern": serde_json::from_str::<Value>(&r.pattern_text).unwrap_or(Value::Null),
                    "targets": r.targets.iter().map(|t| t.kind.to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        out.push(json!({
            "name": name,
            "archive": archive.map(weft_manifest::format_duration),
            "archived": archived,
            "oldest": oldest_us.map(weft_events::cloudevents::rfc3339),
            "rules": rules,
        }));
    }
    ok(json!({ "buses": out }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    /// RFC 3339: events the bus received at or after this time...
    from: String,
    /// ...and before this one.
    to: String,
    /// Only this rule; all of the bus's rules when absent.
    rule: Option<String>,
    /// Set as `replay-name` in each replayed event.
    name: Option<String>,
}

/// Sends archived events of a time window through the bus's rules again.
async fn replay(node: &Arc<Node>, bus: &str, request: hyper::Request<Incoming>) -> Reply {
    let input: Replay = read_json(request).await?;
    let time = |field: &str, text: &str| -> Result<i64, Refusal> {
        text.parse::<jiff::Timestamp>()
            .map(|t| t.as_microsecond())
            .map_err(|_| {
                refuse(
                    400,
                    format!("`{field}` is `{text}`, not an RFC 3339 time like 2026-11-23T10:00:00Z"),
                )
            })
    };
    let (from, to) = (time("from", &input.from)?, time("to", &input.to)?);
    if from >= to {
        return Err(refuse(400, "`from` must be before `to`"));
    }
    let name = input
        .name
        .unwrap_or_else(|| format!("replay-{}", node.new_request_id()));
    let replayed = node
        .buses
        .replay(&node.queues, &node.topics, bus, from, to, input.rule.as_deref(), &name)
        .await?;
    ok(json!(replayed))
}
