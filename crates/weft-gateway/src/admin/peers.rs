//! Admin operations across the nodes that share one storage: the list of
//! live nodes, and asking the others for what only they hold (invocation
//! records and log lines stay on the node that ran the invocation, so the
//! request path never waits on a network write for them).
//!
//! A question to the others carries `local=1`, so that it goes one hop.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use weft_node::Node;
use weft_node::capability::{AdminReply, AdminRequest, AdminRoute, admin_route};

/// How long a peer may take to answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest answer read from a peer.
const PEER_ANSWER: usize = 16 * 1024 * 1024;

pub(super) fn routes() -> Vec<AdminRoute<Node>> {
    vec![admin_route(Method::GET, "/v1/nodes", |node: Arc<Node>, _| async move {
        let nodes = node
            .nodes()
            .await
            .map_err(|e| AdminReply::error(503, format!("cannot list the nodes: {e}")))?;
        Ok(AdminReply::ok(json!({ "this": node.node_id(), "nodes": nodes })))
    })]
}

/// Whether a request may be passed on to the other nodes.
pub(super) fn fans_out(node: &Node, request: &AdminRequest) -> bool {
    node.storage.is_shared() && request.query.get("local").is_none_or(|v| v != "1")
}

/// Asks every other live node `GET PATH_AND_QUERY` (which must hold a
/// query, to which `local=1` is added); returns the JSON of each that
/// answered 200, in no order. A node that fails or is slow is skipped.
pub(super) async fn ask_others(node: &Arc<Node>, path_and_query: &str) -> Vec<Value> {
    let Ok(nodes) = node.nodes().await else {
        return Vec::new();
    };
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let asks = nodes
        .into_iter()
        .filter(|n| n.id != node.node_id())
        .filter_map(|n| n.admin)
        .map(|admin| {
            let client = client.clone();
            let uri = format!("{admin}{path_and_query}&local=1");
            async move {
                let uri: http::Uri = uri.parse().ok()?;
                let answer = tokio::time::timeout(PEER_TIMEOUT, async {
                    let response = client.get(uri).await.ok()?;
                    if response.status() != 200 {
                        return None;
                    }
                    let body = Limited::new(response.into_body(), PEER_ANSWER).collect().await.ok()?;
                    serde_json::from_slice::<Value>(&body.to_bytes()).ok()
                })
                .await;
                answer.ok().flatten()
            }
        });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}
