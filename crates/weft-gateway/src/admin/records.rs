//! Admin operations on what invocations left: their records and the lines
//! functions wrote.

use std::sync::Arc;

use http::Method;
use serde_json::json;
use weft_node::Node;
use weft_node::capability::{AdminReply, AdminRequest, AdminRoute, admin_route};
use weft_store::{LogQuery, RecordQuery};

type Reply = Result<AdminReply, AdminReply>;

pub(super) fn routes() -> Vec<AdminRoute<Node>> {
    vec![
        admin_route(Method::GET, "/v1/invocations", |node, r| async move {
            invocations(&node, &r).await
        }),
        admin_route(Method::GET, "/v1/invocations/{id}", |node, r| async move {
            invocation(&node, &r).await
        }),
        admin_route(Method::GET, "/v1/logs", |node, r| async move { logs(&node, &r).await }),
    ]
}

async fn invocations(node: &Arc<Node>, request: &AdminRequest) -> Reply {
    let limit = request.number("limit", 20)?.clamp(1, 10_000) as usize;
    let q = RecordQuery {
        function: request.query.get("function").cloned(),
        limit,
    };
    let node = node.clone();
    let records = blocking(move || node.store.records(&q)).await?;
    Ok(AdminReply::ok(json!({ "invocations": records })))
}

/// One record: this node's, or (with a shared storage) another node's.
async fn invocation(node: &Arc<Node>, request: &AdminRequest) -> Reply {
    let id = request.param("id");
    let (local, wanted) = (node.clone(), id.to_string());
    if let Some(r) = blocking(move || local.store.record_by_id(&wanted)).await? {
        return Ok(AdminReply::ok(json!(r)));
    }
    if super::peers::fans_out(node, request) {
        let path = format!(
            "/v1/invocations/{}?from=peer",
            percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
        );
        if let Some(r) = super::peers::ask_others(node, &path).await.into_iter().next() {
            return Ok(AdminReply::ok(r));
        }
    }
    Err(AdminReply::error(
        404,
        format!("no invocation with request id `{id}` (records appear when the instance ends)"),
    ))
}

async fn logs(node: &Arc<Node>, request: &AdminRequest) -> Reply {
    let after = request.number("after", 0)?;
    let limit = request.number("limit", 1000)?.clamp(1, 10_000) as usize;
    let since_us = since_us(request)?;
    let q = LogQuery {
        function: request.query.get("function").cloned(),
        request_id: request.query.get("request_id").cloned(),
        trace_id: request.query.get("trace_id").cloned(),
        since_us,
        after,
        limit,
    };
    let local = node.clone();
    let lines = blocking(move || local.store.log_lines(&q)).await?;
    let next = lines.last().map_or(after, |l| l.seq);
    let mut lines: Vec<serde_json::Value> = lines.into_iter().map(|l| json!(l)).collect();
    // One request's (or trace's) lines are on the nodes that ran it:
    // with a shared storage, ask the others too. (Paging with `after` is
    // per node, so other queries stay local.)
    let asked = [
        ("request_id", request.query.get("request_id")),
        ("trace_id", request.query.get("trace_id")),
    ]
    .into_iter()
    .find_map(|(key, v)| v.map(|v| (key, v)));
    if let Some((key, id)) = asked
        && super::peers::fans_out(node, request)
    {
        let encode = |v: &str| percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string();
        let mut path = format!("/v1/logs?{key}={}&limit={limit}", encode(id));
        if let Some(since) = since_us {
            path.push_str(&format!("&since_us={since}"));
        }
        if let Some(f) = request.query.get("function") {
            path.push_str(&format!("&function={}", encode(f)));
        }
        for answer in super::peers::ask_others(node, &path).await {
            if let Some(more) = answer["lines"].as_array() {
                lines.extend(more.iter().cloned());
            }
        }
    }
    Ok(AdminReply::ok(json!({ "lines": lines, "next": next })))
}

/// The time a query starts from: `since_us` (microseconds since the
/// epoch) if given, else `since` (a duration back from now), else none.
pub(super) fn since_us(request: &AdminRequest) -> Result<Option<i64>, AdminReply> {
    if request.query.contains_key("since_us") {
        return request.number("since_us", 0).map(Some);
    }
    let Some(text) = request.query.get("since") else {
        return Ok(None);
    };
    let back = weft_manifest::parse_duration(text)
        .map_err(|why| AdminReply::error(400, format!("query parameter `since`: {why} (say `10m`, `1h`, `2d`)")))?;
    Ok(Some(weft_store::us_before_now(back)))
}

/// Runs a store query off the async threads.
pub(super) async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, AdminReply> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(AdminReply::error(500, e.to_string())),
        Err(e) => Err(AdminReply::error(500, format!("the query failed: {e}"))),
    }
}
