//! The app's public HTTP front: matches each request to a route and runs
//! the route's function.
//!
//! Route parameters reach the function as `weft-param-NAME` headers (the
//! catch-all `{*rest}` too, without the `*`), next to `weft-request-id` and
//! `weft-function`. The request's method, path and query are passed
//! unchanged.

use std::sync::Arc;

use hyper::body::Incoming;
use weft_manifest::Method;

use crate::body::{self, Body};
use crate::node::{Call, Node, Trigger};

/// Handles one request to the app.
pub async fn handle(node: Arc<Node>, request: hyper::Request<Incoming>) -> hyper::Response<Body> {
    let deployment = node.deployment();
    let path = request.uri().path().to_string();
    if let Some(topic) = path.strip_prefix(crate::ingress::PREFIX) {
        return crate::ingress::handle(node.clone(), topic, request).await;
    }
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
    let Some(function) = deployment.functions.get(found.value) else {
        return body::error(
            500,
            &format!(
                "route {} names function `{}`, which is not deployed",
                found.route, found.value
            ),
            None,
        );
    };
    let call = Call {
        trigger: Trigger::Http,
        params: &found.params,
        parent: None,
        depth: 0,
        trusted: &[],
    };
    node.invoke_following(function, request, call).await.response
}
