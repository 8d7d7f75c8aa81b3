//! The event bus (`[bus.NAME]`, `[rule.NAME]`): EventBridge rules route
//! events by content. Matching, targets, archives and replay are
//! `weft_events::bus::Buses`; this module plugs them into the node: a
//! deploy compiles the rules and adds the hidden queues (and drains) of
//! function targets, functions put with `POST http://BUS.bus.weft.internal/`,
//! events are delivered to bus targets, archives expire, and the admin API
//! has PutEvents, pattern tests, the bus list and replays.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use weft_events::bus::{BusEvent, EntryError};
use weft_manifest::TargetKind;
use weft_runtime::{OutboundFuture, WasiBody};
use weft_telemetry::SpanContext;

use super::http::{default_ce_headers, read_post, reply};
use super::routing::Routing;
use crate::capability::{
    AdminReply, AdminRequest, AdminRoute, BoxFuture, Capability, DeliveryError, Deploy, Internal, Staged, admin_route,
};
use crate::deployment::Deployed;
use crate::node::Node;

pub struct Bus;

impl Capability<Node> for Bus {
    fn name(&self) -> &'static str {
        "bus"
    }

    fn plan<'a>(
        &'a self,
        _node: &'a Arc<Node>,
        deploy: &'a mut Deploy,
    ) -> BoxFuture<'a, Result<Box<dyn Staged<Node>>, String>> {
        Box::pin(async move {
            let (plan, routing) = weft_events::bus::Buses::plan(&deploy.manifest);
            deploy.add_hidden(plan.hidden);
            deploy.diff_manifest("bus", |m| {
                m.all_buses().into_iter().map(|b| (b.name.clone(), b)).collect()
            });
            deploy.diff_manifest("rule", |m| {
                m.rules.iter().map(|r| (r.name.clone(), r.clone())).collect()
            });
            Ok(Box::new(Routing::new(routing, |node, r| node.buses.install(r))) as Box<dyn Staged<Node>>)
        })
    }

    fn internal(&self) -> Option<Internal> {
        Some(Internal {
            suffix: "bus",
            grant: Some(TargetKind::Bus),
            verb: "put events on",
        })
    }

    /// Puts events on the bus: a PutEvents request (entries without
    /// `EventBusName` go to this bus), or, when the request has `ce-*`
    /// headers or a CloudEvents content type, CloudEvents (`ce-id`,
    /// `ce-source` and `ce-type` default as for topics).
    fn call(
        &self,
        node: &Arc<Node>,
        caller: &Arc<Deployed>,
        name: &str,
        request: http::Request<WasiBody>,
    ) -> OutboundFuture {
        let (node, caller, bus) = (node.clone(), caller.name.clone(), name.to_string());
        Box::pin(async move {
            let refuse_method = format!("put events on bus `{bus}` with POST");
            let (mut parts, body) = match read_post(request, refuse_method, "a request").await {
                Ok(read) => read,
                Err(answer) => return answer,
            };
            let parent = crate::telemetry::incoming(&parts.headers);
            if !weft_events::cloudevents::is_cloudevents(&parts.headers) {
                let (status, answer) = put_events(&node, &body, Some(&bus), parent.as_ref()).await;
                return reply(status, answer);
            }
            default_ce_headers(&mut parts.headers, &node, &caller);
            let (status, answer) = match weft_events::cloudevents::decode(&parts.headers, body) {
                Ok(events) => put_cloudevents(&node, &bus, events, parent).await,
                Err(why) => (400, json!({ "error": why })),
            };
            reply(status, answer)
        })
    }

    fn delivers(&self) -> Option<TargetKind> {
        Some(TargetKind::Bus)
    }

    /// The event as EventBridge sees a CloudEvent: `type` is
    /// `detail-type`, `data` (a JSON object) is `detail`.
    fn deliver<'a>(
        &'a self,
        node: &'a Arc<Node>,
        name: &'a str,
        event: weft_events::CloudEvent,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let mut event = event;
            // The trace goes on in the put's span, not in the envelope.
            let parent = weft_events::trace::take_extensions(&mut event.extensions);
            let event = BusEvent::from_cloudevent(event).map_err(DeliveryError::Refused)?;
            put(node, name, vec![event], parent.as_ref()).await?;
            Ok(())
        })
    }

    fn housekeeping<'a>(&'a self, node: &'a Arc<Node>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = node.buses.expire().await {
                tracing::warn!("expiring archived bus events failed: {e}");
            }
        })
    }

    fn admin_routes(&self) -> Vec<AdminRoute<Node>> {
        use http::Method;
        vec![
            admin_route(Method::POST, "/v1/events/put", |node, r| async move {
                let (status, answer) = put_events(&node, &r.body, None, r.trace().as_ref()).await;
                Ok(AdminReply::with_status(status, answer))
            }),
            admin_route(Method::POST, "/v1/events/test-pattern", |_, r| async move {
                test_pattern(&r)
            }),
            admin_route(Method::GET, "/v1/buses", |node, _| async move { buses(&node).await }),
            admin_route(Method::POST, "/v1/buses/{bus}/replay", |node, r| async move {
                replay(&node, &r).await
            }),
        ]
    }
}

/// Puts `events` on `bus` in a producer span, child of `parent`.
async fn put(
    node: &Node,
    bus: &str,
    events: Vec<BusEvent>,
    parent: Option<&SpanContext>,
) -> Result<Vec<weft_events::bus::Put>, weft_events::QueueError> {
    node.produce("bus", bus, parent, |trace| async move {
        node.buses
            .put(&node.queues, &node.topics, bus, events, trace.as_ref())
            .await
    })
    .await
}

/// CloudEvents put on `bus` (from the ingress or a function): answers the
/// status and `{"accepted", "events"}`, or `{"error"}` for an event whose
/// data is not a JSON object or a put that failed. The put is a child of
/// `parent` (the request's trace), else of the first event's
/// `traceparent` extension.
pub async fn put_cloudevents(
    node: &Node,
    bus: &str,
    events: Vec<weft_events::CloudEvent>,
    parent: Option<SpanContext>,
) -> (u16, Value) {
    let parent = parent.or_else(|| {
        events
            .first()
            .and_then(|e| weft_events::trace::of_extensions(&e.extensions))
    });
    let events: Result<Vec<BusEvent>, String> = events.into_iter().map(BusEvent::from_cloudevent).collect();
    let events = match events {
        Ok(e) => e,
        Err(why) => return (400, json!({ "error": why })),
    };
    match put(node, bus, events, parent.as_ref()).await {
        Ok(put) => (202, json!({ "accepted": put.len(), "events": put })),
        Err(e) => (e.status(), json!({ "error": e.to_string() })),
    }
}

/// A PutEvents request: answers the status and EventBridge's response
/// shape, `{"FailedEntryCount", "Entries": [{"EventId"} or {"ErrorCode",
/// "ErrorMessage"}]}`, one result per entry in order. With `only_bus`
/// (a function's grant), entries for other buses are refused. Each bus's
/// put is a child of `parent`.
pub async fn put_events(
    node: &Node,
    body: &[u8],
    only_bus: Option<&str>,
    parent: Option<&SpanContext>,
) -> (u16, Value) {
    let default_bus = only_bus.unwrap_or(weft_manifest::DEFAULT_BUS);
    let entries = match weft_events::bus::put_entries(body, default_bus, || node.queues.new_id()) {
        Ok(e) => e,
        Err(why) => return (400, json!({ "error": why })),
    };
    // The valid entries of each bus go in one put: one write for the lot.
    // Until then their results are `None`.
    let mut by_bus: BTreeMap<String, Vec<(usize, BusEvent)>> = BTreeMap::new();
    let mut results: Vec<Option<Result<String, EntryError>>> = entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| match entry {
            Err(e) => Some(Err(e)),
            Ok((bus, _)) if only_bus.is_some_and(|only| only != bus) => Some(Err(EntryError {
                code: "AccessDeniedException",
                message: format!(
                    "this address puts events on bus `{}` only; use http://{bus}.bus.weft.internal/ with \"bus:{bus}\" in `publish`",
                    only_bus.unwrap_or_default()
                ),
            })),
            Ok((bus, event)) => {
                by_bus.entry(bus).or_default().push((i, event));
                None
            }
        })
        .collect();
    for (bus, list) in by_bus {
        let (places, events): (Vec<usize>, Vec<BusEvent>) = list.into_iter().unzip();
        let outcome = put(node, &bus, events, parent).await;
        for (n, i) in places.into_iter().enumerate() {
            results[i] = Some(match &outcome {
                Ok(put) => Ok(put[n].id.clone()),
                Err(weft_events::QueueError::NoSuchBus(b)) => Err(EntryError {
                    code: "InvalidArgument",
                    message: format!("no bus `{b}` is deployed; declare [bus.{b}] in weft.toml"),
                }),
                Err(e) => Err(EntryError {
                    code: "InternalFailure",
                    message: e.to_string(),
                }),
            });
        }
    }
    let results: Vec<Result<String, EntryError>> = results.into_iter().flatten().collect();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let entries: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(id) => json!({ "EventId": id }),
            Err(e) => json!(e),
        })
        .collect();
    (200, json!({ "FailedEntryCount": failed, "Entries": entries }))
}

type Reply = Result<AdminReply, AdminReply>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestPattern {
    /// The pattern as JSON, or as a string holding JSON.
    pattern: Value,
    event: Value,
}

/// Tests an event pattern against an event, as EventBridge's TestEventPattern.
fn test_pattern(request: &AdminRequest) -> Reply {
    let input: TestPattern = request.json()?;
    let text = match &input.pattern {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let pattern = weft_manifest::pattern::Pattern::parse(&text)
        .map_err(|why| AdminReply::error(400, format!("invalid pattern: {why}")))?;
    if !input.event.is_object() {
        return Err(AdminReply::error(400, "invalid event: an event is a JSON object"));
    }
    Ok(AdminReply::ok(
        json!({ "result": if pattern.matches(&input.event) { "match" } else { "no match" } }),
    ))
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
                    "targets": r.targets.iter().map(|t| t.target.to_string()).collect::<Vec<_>>(),
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
    Ok(AdminReply::ok(json!({ "buses": out })))
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
async fn replay(node: &Arc<Node>, request: &AdminRequest) -> Reply {
    let input: Replay = request.json()?;
    let time = |field: &str, text: &str| -> Result<i64, AdminReply> {
        text.parse::<jiff::Timestamp>()
            .map(|t| t.as_microsecond())
            .map_err(|_| {
                AdminReply::error(
                    400,
                    format!("`{field}` is `{text}`, not an RFC 3339 time like 2026-11-23T10:00:00Z"),
                )
            })
    };
    let (from, to) = (time("from", &input.from)?, time("to", &input.to)?);
    if from >= to {
        return Err(AdminReply::error(400, "`from` must be before `to`"));
    }
    let name = input
        .name
        .unwrap_or_else(|| format!("replay-{}", node.new_request_id()));
    let replayed = node
        .buses
        .replay(
            &node.queues,
            &node.topics,
            request.param("bus"),
            from,
            to,
            input.rule.as_deref(),
            &name,
        )
        .await?;
    Ok(AdminReply::ok(json!(replayed)))
}
