//! Admin operations on telemetry: a trace as a tree of its hops, and what
//! the app's invocations cost.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;
use serde_json::{Value, json};
use weft_node::Node;
use weft_node::capability::{AdminReply, AdminRequest, AdminRoute, admin_route};
use weft_store::{UsageBy, UsageQuery};
use weft_telemetry::{Prices, Span, Trace, Usage};

use super::records::{blocking, since_us};

type Reply = Result<AdminReply, AdminReply>;

pub(super) fn routes() -> Vec<AdminRoute<Node>> {
    vec![
        admin_route(Method::GET, "/v1/traces/{id}", |node, r| async move {
            trace(&node, &r).await
        }),
        admin_route(Method::GET, "/v1/cost", |node, r| async move { cost(&node, &r).await }),
    ]
}

/// `GET /metrics`: the node's metrics and its listeners' connection
/// counts, in the Prometheus text format.
pub(super) async fn metrics(node: &Node, listeners: &super::Listeners) -> hyper::Response<weft_node::Body> {
    for (name, counters) in listeners {
        let l = weft_telemetry::metrics::labels(&[("listener", name)]);
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed) as f64;
        node.metrics.set_total(
            "weft_connections_shed_total",
            "Connections refused with a 503 because the listener was full (requests shed under overload).",
            &l,
            load(&counters.shed),
        );
        node.metrics.set(
            "weft_connections_open",
            "Connections open now.",
            &l,
            counters.open.load(std::sync::atomic::Ordering::Relaxed) as f64,
        );
    }
    let text = node.metrics().await;
    let mut response = hyper::Response::new(weft_node::body::full(text));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// A trace by its id or by the request id of any invocation in it, as a
/// tree; with a shared storage, with the spans the other nodes hold.
/// `spans=flat` answers the spans as a list instead (what nodes ask
/// each other for).
async fn trace(node: &Arc<Node>, request: &AdminRequest) -> Reply {
    let id = request.param("id").to_string();
    if id.is_empty() || id.len() > 256 {
        return Err(AdminReply::error(
            400,
            "name a trace id or a request id of 1 to 256 characters",
        ));
    }
    let (local, wanted) = (node.clone(), id.clone());
    let found = blocking(move || local.store.trace(&wanted)).await?;
    let (mut trace_id, mut spans) = found.unwrap_or_default();
    if super::peers::fans_out(node, request) {
        // Every node is asked by trace id, so that each answers all it
        // holds of the trace and not only the invocation asked for: when
        // only a request id is known here, the node that ran it says
        // which trace it is in first.
        if trace_id.is_empty()
            && let Some((t, _)) = ask_spans(node, &id).await.into_iter().next()
        {
            trace_id = t;
        }
        if !trace_id.is_empty() {
            for (t, more) in ask_spans(node, &trace_id).await {
                if t == trace_id {
                    spans.extend(more.into_iter().filter(|s| s.trace_id == trace_id));
                }
            }
        }
        spans.truncate(4 * weft_store::MAX_TRACE_SPANS);
    }
    if spans.is_empty() {
        return Err(AdminReply::error(
            404,
            format!("no trace `{id}`: name a trace id (32 hex digits) or the request id of an invocation in it"),
        ));
    }
    if request.query.get("spans").is_some_and(|v| v == "flat") {
        return Ok(AdminReply::ok(json!({ "trace_id": trace_id, "spans": spans })));
    }
    Ok(AdminReply::ok(json!(Trace::build(&trace_id, spans))))
}

/// The other nodes' trace id and spans for `id`, from each that has any.
async fn ask_spans(node: &Arc<Node>, id: &str) -> Vec<(String, Vec<Span>)> {
    let path = format!(
        "/v1/traces/{}?spans=flat",
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
    );
    super::peers::ask_others(node, &path)
        .await
        .into_iter()
        .filter_map(|answer| {
            let trace_id = answer["trace_id"].as_str()?.to_string();
            let spans = serde_json::from_value::<Vec<Span>>(answer["spans"].clone()).ok()?;
            Some((trace_id, spans))
        })
        .collect()
}

/// Requests, GB-seconds (by configured and by measured memory) and their
/// price, grouped by function, day or trigger, since a time.
async fn cost(node: &Arc<Node>, request: &AdminRequest) -> Reply {
    let since_us = match since_us(request)? {
        Some(t) => t,
        None => weft_store::us_before_now(std::time::Duration::from_secs(86_400)),
    };
    let by: UsageBy = match request.query.get("by") {
        Some(b) => b.parse().map_err(|why: String| AdminReply::error(400, why))?,
        None => UsageBy::Function,
    };
    let prices = prices(node, request)?;
    let query = UsageQuery {
        since_us,
        function: request.query.get("function").cloned(),
        by,
    };
    let local = node.clone();
    let rows = blocking(move || local.store.usage(&query)).await?;
    let mut merged: BTreeMap<String, Usage> = rows.into_iter().collect();
    if super::peers::fans_out(node, request) {
        let mut path = format!("/v1/cost?since_us={since_us}&by={}", by.as_str());
        if let Some(f) = request.query.get("function") {
            path.push_str("&function=");
            path.extend(percent_encoding::utf8_percent_encode(
                f,
                percent_encoding::NON_ALPHANUMERIC,
            ));
        }
        for answer in super::peers::ask_others(node, &path).await {
            for row in answer["rows"].as_array().into_iter().flatten() {
                if let (Some(key), Ok(usage)) = (row["key"].as_str(), serde_json::from_value::<Usage>(row.clone())) {
                    merged.entry(key.to_string()).or_default().add(&usage);
                }
            }
        }
    }
    let mut total = Usage::default();
    let rows: Vec<Value> = merged
        .iter()
        .map(|(key, usage)| {
            total.add(usage);
            row(Some(key), usage, &prices)
        })
        .collect();
    Ok(AdminReply::ok(json!({
        "since_us": since_us,
        "by": by.as_str(),
        "prices": prices,
        "rows": rows,
        "total": row(None, &total, &prices),
    })))
}

/// The price table: the deployed manifest's `[pricing]`, else Lambda's
/// public x86 prices; a price the request names overrides either.
fn prices(node: &Node, request: &AdminRequest) -> Result<Prices, AdminReply> {
    let mut prices = match node.deployment().manifest.as_ref().and_then(|m| m.pricing.as_ref()) {
        Some(p) => Prices {
            label: p.label.clone(),
            currency: p.currency.clone(),
            per_request: p.per_request,
            per_gb_second: p.per_gb_second,
        },
        None => Prices::lambda_x86(),
    };
    let price = |key: &str| -> Result<Option<f64>, AdminReply> {
        match request.query.get(key) {
            None => Ok(None),
            Some(v) => match v.parse::<f64>() {
                Ok(p) if p.is_finite() && p >= 0.0 => Ok(Some(p)),
                _ => Err(AdminReply::error(
                    400,
                    format!("query parameter `{key}` must be a price of 0 or more, like 0.0000166667; got `{v}`"),
                )),
            },
        }
    };
    let (per_request, per_gb_second) = (price("per_request")?, price("per_gb_second")?);
    if per_request.is_some() || per_gb_second.is_some() {
        prices.label = "given prices".into();
        prices.per_request = per_request.unwrap_or(prices.per_request);
        prices.per_gb_second = per_gb_second.unwrap_or(prices.per_gb_second);
    }
    if let Some(label) = request.query.get("label") {
        prices.label = label.chars().take(200).collect();
    }
    if let Some(currency) = request.query.get("currency") {
        prices.currency = currency.chars().take(16).collect();
    }
    Ok(prices)
}

fn row(key: Option<&str>, usage: &Usage, prices: &Prices) -> Value {
    let (configured, measured) = usage.price(prices);
    let mut row = json!({
        "requests": usage.requests,
        "billed_ms": usage.billed_ms,
        "configured_kib_ms": usage.configured_kib_ms,
        "measured_kib_ms": usage.measured_kib_ms,
        "gb_seconds": { "configured": usage.configured_gb_seconds(), "measured": usage.measured_gb_seconds() },
        "cost": { "configured": configured, "measured": measured },
    });
    if let Some(key) = key {
        row["key"] = key.into();
    }
    row
}
