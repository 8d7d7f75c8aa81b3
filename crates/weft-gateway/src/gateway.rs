//! The app's public HTTP front: applies the request policies, then sends
//! `/events/...` to the ingress and matches everything else to a route
//! and runs the route's function, or its express workflow.
//!
//! Route parameters reach the function as `weft-param-NAME` headers (the
//! catch-all `{*rest}` too, without the `*`), next to `weft-request-id` and
//! `weft-function`. The request's method, path and query are passed
//! unchanged.

use std::sync::Arc;

use hyper::body::Incoming;
use weft_manifest::{Method, Target};
use weft_node::body::{self, Body};
use weft_node::{Call, Node, Trigger};

use crate::policy::Policies;

/// The app's front: the node and the policies every request passes.
pub struct Gateway {
    pub node: Arc<Node>,
    pub policies: Policies,
}

impl Gateway {
    pub fn new(node: Arc<Node>, policies: Policies) -> Arc<Gateway> {
        Arc::new(Gateway { node, policies })
    }

    /// Handles one request to the app.
    pub async fn handle(self: Arc<Self>, request: hyper::Request<Incoming>) -> hyper::Response<Body> {
        let (parts, incoming) = request.into_parts();
        if let Err(refused) = self.policies.check(&parts) {
            return refused.response();
        }
        let request = hyper::Request::from_parts(parts, incoming);
        let node = &self.node;
        let path = request.uri().path().to_string();
        if let Some(rest) = path.strip_prefix(crate::ingress::PREFIX) {
            return crate::ingress::handle(node.clone(), rest, request).await;
        }
        let deployment = node.deployment();
        let method = request.method().as_str().to_string();
        let Some(found) = deployment.routes.lookup(&method, &path) else {
            let allowed: Vec<&str> = Method::ALL
                .iter()
                .filter(|m| deployment.routes.lookup(m.as_str(), &path).is_some())
                .map(|m| m.as_str())
                .collect();
            if allowed.is_empty() {
                return body::error(404, &format!("no route matches {method} {path}"), None);
            }
            let mut response = body::error(
                405,
                &format!(
                    "{method} is not routed for {path}; routed methods: {}",
                    allowed.join(", ")
                ),
                None,
            );
            if let Ok(v) = http::HeaderValue::from_str(&allowed.join(", ")) {
                response.headers_mut().insert(http::header::ALLOW, v);
            }
            return response;
        };
        let name = match found.value {
            Target::Function(name) => name,
            Target::Workflow(workflow) => {
                return weft_node::capabilities::workflows::answer(node, workflow, request).await;
            }
            other => {
                return body::error(
                    500,
                    &format!("route {} names {other}, which answers no requests", found.route),
                    None,
                );
            }
        };
        let Some(function) = deployment.functions.get(name) else {
            return body::error(
                500,
                &format!("route {} names function `{name}`, which is not deployed", found.route),
                None,
            );
        };
        let call = Call {
            params: &found.params,
            ..Call::new(Trigger::Http)
        };
        node.invoke_following(function, request, call).await.response
    }
}
