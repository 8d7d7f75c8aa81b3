//! The admin API: JSON over HTTP, for the CLI and for tools.
//!
//! It is bound to 127.0.0.1 by default. `docs/admin-api.yaml` describes
//! every operation (OpenAPI 3). Every error answer is
//! `{"error": "what is wrong and how to fix it"}`.
//!
//! The node's own resources each have a module here (`functions`,
//! `records`, `deploys`); every capability adds its operations
//! ([`weft_node::Capability::admin_routes`]), and this module serves them
//! all through one route table, reading each body within the route's
//! limit and decoding path and query parameters.

mod deploys;
mod functions;
mod peers;
mod records;
mod telemetry;

pub use functions::Listeners;

use std::collections::HashMap;
use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use weft_node::Node;
use weft_node::body::{self, Body};
use weft_node::capability::{AdminReply, AdminRequest, AdminRoute};

/// How long the admin API waits for a request's body (a 256 MiB artifact
/// over a slow link included).
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The admin API of one node.
pub struct Admin {
    node: Arc<Node>,
    routes: matchit::Router<Vec<AdminRoute<Node>>>,
    listeners: Listeners,
}

impl Admin {
    /// The admin API: the node's own operations and every capability's.
    /// `/v1/health` shows the connection counts of `listeners`.
    pub fn new(node: Arc<Node>, listeners: Listeners) -> Result<Arc<Admin>, String> {
        let mut all = Vec::new();
        all.extend(functions::routes(listeners.clone()));
        all.extend(records::routes());
        all.extend(telemetry::routes());
        all.extend(peers::routes());
        all.extend(deploys::routes());
        for capability in node.capabilities() {
            all.extend(capability.admin_routes());
        }
        let mut by_path: Vec<(&'static str, Vec<AdminRoute<Node>>)> = Vec::new();
        for route in all {
            match by_path.iter_mut().find(|(p, _)| *p == route.path) {
                Some((_, list)) => list.push(route),
                None => by_path.push((route.path, vec![route])),
            }
        }
        let mut routes = matchit::Router::new();
        for (path, list) in by_path {
            routes
                .insert(path, list)
                .map_err(|e| format!("admin route {path}: {e}"))?;
        }
        Ok(Arc::new(Admin {
            node,
            routes,
            listeners,
        }))
    }

    /// Handles one admin API request.
    pub async fn handle(self: Arc<Self>, request: hyper::Request<Incoming>) -> hyper::Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let not_found = || {
            body::error(
                404,
                &format!("no admin operation {method} {path}; see docs/admin-api.yaml"),
                None,
            )
        };
        if path == "/metrics" && method == http::Method::GET {
            return telemetry::metrics(&self.node, &self.listeners).await;
        }
        let Ok(found) = self.routes.at(&path) else {
            return not_found();
        };
        let Some(route) = found.value.iter().find(|r| r.method == method) else {
            return not_found();
        };
        // Path segments are matched first, then decoded, so a name may hold
        // an encoded `/` (the hidden queue of a URL subscription) or `#`.
        // A segment whose escapes are not UTF-8 names nothing: refused, so
        // that it cannot stand for its own undecoded text.
        let mut params: HashMap<String, String> = HashMap::new();
        for (k, v) in found.params.iter() {
            match percent_encoding::percent_decode_str(v).decode_utf8() {
                Ok(decoded) => params.insert(k.to_string(), decoded.into_owned()),
                Err(_) => {
                    let message =
                        format!("the path segment `{v}` decodes to bytes that are not UTF-8; encode names as UTF-8");
                    return body::error(400, &message, None);
                }
            };
        }
        let query = parse_query(request.uri().query().unwrap_or(""));
        let max = route.max_body;
        let (parts, incoming) = request.into_parts();
        let read = tokio::time::timeout(READ_TIMEOUT, Limited::new(incoming, max).collect());
        let body = match read.await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Err(_) => {
                let message = format!("the request body did not arrive within {READ_TIMEOUT:?}; send it at once");
                return body::error(408, &message, None);
            }
            Ok(Err(e)) => {
                return body::error(
                    413,
                    &format!("the request body could not be read (limit {max} bytes): {e}"),
                    None,
                );
            }
        };
        let request = AdminRequest {
            params,
            query,
            headers: parts.headers,
            body,
        };
        let reply = (route.handler)(self.node.clone(), request).await;
        answer(reply)
    }
}

fn answer(reply: AdminReply) -> hyper::Response<Body> {
    body::json(reply.status, &reply.body)
}

/// The query's parameters, decoded as HTML forms encode them (`+` is a
/// space).
fn parse_query(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}
