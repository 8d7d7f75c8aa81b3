//! The admin API: JSON over HTTP, for the CLI and for tools.
//!
//! It is bound to 127.0.0.1 by default. `docs/admin-api.yaml` describes
//! every operation (OpenAPI 3).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use weft_store::{Digest, LogQuery, RecordQuery};

use crate::body::{self, Body};
use crate::node::{Call, Node, Trigger};

/// Largest component upload.
const MAX_ARTIFACT: usize = 256 << 20;
/// Largest JSON request.
const MAX_JSON: usize = 16 << 20;

/// Handles one admin API request.
pub async fn handle(node: Arc<Node>, request: hyper::Request<Incoming>) -> hyper::Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = parse_query(request.uri().query().unwrap_or(""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["v1", "health"]) => body::json(200, &json!({ "status": "ok" })),
        ("GET", ["v1", "app"]) => app(&node),
        ("POST", ["v1", "functions", name, "invoke"]) => invoke(&node, name, request).await,
        ("GET", ["v1", "invocations"]) => invocations(&node, &query).await,
        ("GET", ["v1", "invocations", id]) => invocation(&node, id).await,
        ("GET", ["v1", "logs"]) => logs(&node, &query).await,
        ("GET" | "HEAD", ["v1", "artifacts", digest]) => match Digest::try_from(digest.to_string())
        {
            Ok(d) if node.artifacts.contains(&d) => body::json(200, &json!({ "digest": d })),
            Ok(d) => body::error(404, &format!("artifact {d} is not stored"), None),
            Err(e) => body::error(400, &e, None),
        },
        ("PUT", ["v1", "artifacts", digest]) => put_artifact(&node, digest, request).await,
        ("POST", ["v1", "deployments"]) => deploy(&node, request).await,
        _ => body::error(
            404,
            &format!("no admin operation {method} {path}; see docs/admin-api.yaml"),
            None,
        ),
    }
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                k.to_string(),
                crate::node::percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

fn number(
    query: &HashMap<String, String>,
    key: &str,
    default: i64,
) -> Result<i64, hyper::Response<Body>> {
    match query.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            body::error(
                400,
                &format!("query parameter `{key}` must be a whole number, got `{v}`"),
                None,
            )
        }),
    }
}

async fn read_body(
    request: hyper::Request<Incoming>,
    limit: usize,
) -> Result<Bytes, hyper::Response<Body>> {
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(body::error(
            413,
            &format!("the request body could not be read (limit {limit} bytes): {e}"),
            None,
        )),
    }
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    request: hyper::Request<Incoming>,
) -> Result<T, hyper::Response<Body>> {
    let bytes = read_body(request, MAX_JSON).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        body::error(
            400,
            &format!("the request body is not the expected JSON: {e}"),
            None,
        )
    })
}

fn app(node: &Node) -> hyper::Response<Body> {
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
    body::json(
        200,
        &json!({ "app": d.app, "functions": functions, "routes": routes }),
    )
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
}

async fn invoke(
    node: &Arc<Node>,
    name: &str,
    request: hyper::Request<Incoming>,
) -> hyper::Response<Body> {
    let Some(function) = node.deployment().functions.get(name).cloned() else {
        return body::error(404, &format!("no function `{name}` is deployed"), None);
    };
    let input: InvokeRequest = match read_json(request).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let method = input.method.as_deref().unwrap_or("POST");
    let path = input.path.as_deref().unwrap_or("/");
    if !path.starts_with('/') {
        return body::error(
            400,
            &format!("`path` must start with `/`, got `{path}`"),
            None,
        );
    }
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "localhost");
    for (k, v) in &input.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let payload = Bytes::from(input.body.unwrap_or_default());
    let request = match builder.body(body::full(payload)) {
        Ok(r) => r,
        Err(e) => {
            return body::error(
                400,
                &format!("the invoke request is not valid HTTP: {e}"),
                None,
            );
        }
    };
    let handled = node
        .invoke(
            &function,
            request,
            Call {
                trigger: Trigger::Invoke,
                params: &[],
                parent: None,
                depth: 0,
            },
        )
        .await;
    let (parts, response_body) = handled.response.into_parts();
    let bytes = match response_body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => Bytes::from(format!("[the response body failed midway: {e}]")),
    };
    let record = handled.record.await.ok();
    let headers: HashMap<&str, String> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    body::json(
        200,
        &json!({
            "request_id": handled.request_id,
            "status": parts.status.as_u16(),
            "headers": headers,
            "body": String::from_utf8_lossy(&bytes),
            "record": record,
        }),
    )
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, hyper::Response<Body>> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| body::error(500, &format!("the query failed: {e}"), None))
}

async fn invocations(node: &Arc<Node>, query: &HashMap<String, String>) -> hyper::Response<Body> {
    let limit = match number(query, "limit", 20) {
        Ok(n) => n.clamp(1, 10_000) as usize,
        Err(r) => return r,
    };
    let q = RecordQuery {
        function: query.get("function").cloned(),
        limit,
    };
    let node = node.clone();
    match blocking(move || node.store.records(&q)).await {
        Ok(Ok(records)) => body::json(200, &json!({ "invocations": records })),
        Ok(Err(e)) => body::error(500, &e.to_string(), None),
        Err(r) => r,
    }
}

async fn invocation(node: &Arc<Node>, id: &str) -> hyper::Response<Body> {
    let (node, id) = (node.clone(), id.to_string());
    match blocking(move || node.store.record_by_id(&id).map(|r| (r, id))).await {
        Ok(Ok((Some(r), _))) => body::json(200, &json!(r)),
        Ok(Ok((None, id))) => {
            body::error(404, &format!("no invocation with request id `{id}`"), None)
        }
        Ok(Err(e)) => body::error(500, &e.to_string(), None),
        Err(r) => r,
    }
}

async fn logs(node: &Arc<Node>, query: &HashMap<String, String>) -> hyper::Response<Body> {
    let (after, limit) = match (number(query, "after", 0), number(query, "limit", 1000)) {
        (Ok(a), Ok(l)) => (a, l.clamp(1, 10_000) as usize),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let q = LogQuery {
        function: query.get("function").cloned(),
        request_id: query.get("request_id").cloned(),
        after,
        limit,
    };
    let node = node.clone();
    match blocking(move || node.store.log_lines(&q)).await {
        Ok(Ok(lines)) => {
            let next = lines.last().map_or(after, |l| l.seq);
            body::json(200, &json!({ "lines": lines, "next": next }))
        }
        Ok(Err(e)) => body::error(500, &e.to_string(), None),
        Err(r) => r,
    }
}

async fn put_artifact(
    node: &Arc<Node>,
    digest: &str,
    request: hyper::Request<Incoming>,
) -> hyper::Response<Body> {
    let expected = match Digest::try_from(digest.to_string()) {
        Ok(d) => d,
        Err(e) => return body::error(400, &e, None),
    };
    let bytes = match read_body(request, MAX_ARTIFACT).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let node = node.clone();
    match blocking(move || node.artifacts.put(&bytes, Some(&expected))).await {
        Ok(Ok(d)) => body::json(201, &json!({ "digest": d })),
        Ok(Err(e @ weft_store::ArtifactError::Mismatch { .. })) => {
            body::error(400, &e.to_string(), None)
        }
        Ok(Err(e)) => body::error(507, &e.to_string(), None),
        Err(r) => r,
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

async fn deploy(node: &Arc<Node>, request: hyper::Request<Incoming>) -> hyper::Response<Body> {
    let input: DeployRequest = match read_json(request).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    match node
        .deploy(&input.manifest, &input.file, &input.artifacts)
        .await
    {
        Ok(report) => body::json(200, &json!(report)),
        Err(e) => body::json(e.status(), &json!({ "error": e.to_string() })),
    }
}
