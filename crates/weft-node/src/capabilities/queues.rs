//! Queues (`[queue.NAME]`): SQS-like durable queues. Their behaviour is
//! `weft_events::Queues`; this module plugs them into the node: every
//! queue a deploy needs (declared and hidden) exists before anything
//! routes to it and goes once nothing does, a removed queue that still
//! holds messages is a loss the plan reports, functions send with
//! `POST http://QUEUE.queue.weft.internal/`, events are delivered to
//! queue targets, old messages expire, and `/v1/queues` operates them.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use weft_manifest::TargetKind;
use weft_runtime::{OutboundFuture, WasiBody};

use super::http::{answer, read_post, reply};
use crate::capability::{
    Action, AdminReply, AdminRequest, AdminRoute, BoxFuture, Capability, Change, DeliveryError, Deploy, Internal,
    Staged, admin_route,
};
use crate::deployment::Deployed;
use crate::node::Node;

pub struct Queues;

impl Capability<Node> for Queues {
    fn name(&self) -> &'static str {
        "queues"
    }

    fn plan<'a>(
        &'a self,
        node: &'a Arc<Node>,
        deploy: &'a mut Deploy,
    ) -> BoxFuture<'a, Result<Box<dyn Staged<Node>>, String>> {
        Box::pin(async move {
            let mut all = deploy.manifest.queues.clone();
            all.extend(std::mem::take(&mut deploy.queues));
            deploy.queues = all;
            let before: Vec<(String, weft_manifest::Queue)> = node
                .queues
                .names()
                .into_iter()
                .filter_map(|n| node.queues.get(&n).ok().map(|q| (n, q)))
                .collect();
            let after: Vec<(String, weft_manifest::Queue)> =
                deploy.queues.iter().map(|q| (q.name.clone(), q.clone())).collect();
            let first = deploy.changes.len();
            deploy.diff("queue", &before, &after);
            let declared: Vec<String> = deploy
                .previous
                .as_ref()
                .map(|m| m.queues.iter().map(|q| q.name.clone()).collect())
                .unwrap_or_default();
            let mut removed = Vec::new();
            for change in &mut deploy.changes[first..] {
                if change.action == Action::Removed {
                    let is_declared = declared.contains(&change.name);
                    weigh(node, change, is_declared).await?;
                    if is_declared {
                        removed.push(change.name.clone());
                    }
                }
            }
            Ok(Box::new(Staging { removed }) as Box<dyn Staged<Node>>)
        })
    }

    fn internal(&self) -> Option<Internal> {
        Some(Internal {
            suffix: "queue",
            grant: Some(TargetKind::Queue),
            verb: "send to",
        })
    }

    /// Sends the request's body as one message, answering 202 with
    /// `{"id", "seq", "duplicate"}` once it is on disk. Headers:
    /// `weft-message-id` (deduplication), `weft-message-group` (FIFO),
    /// `weft-message-delay` (`10s`), `ce-type`, `content-type`.
    fn call(
        &self,
        node: &Arc<Node>,
        _caller: &Arc<Deployed>,
        name: &str,
        request: http::Request<WasiBody>,
    ) -> OutboundFuture {
        let (node, queue) = (node.clone(), name.to_string());
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
                Err(why) => return reply(400, json!({ "error": format!("weft-message-delay: {why}") })),
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
            let parent = crate::telemetry::incoming(&parts.headers);
            let sent = send_traced(&node, &queue, vec![message], parent.as_ref()).await;
            answer(202, sent.map(|mut sent| sent.remove(0)))
        })
    }

    fn delivers(&self) -> Option<TargetKind> {
        Some(TargetKind::Queue)
    }

    /// The event's data is the message; its id deduplicates it.
    fn deliver<'a>(
        &'a self,
        node: &'a Arc<Node>,
        name: &'a str,
        event: weft_events::CloudEvent,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let parent = weft_events::trace::of_extensions(&event.extensions);
            let message = weft_events::Outgoing {
                id: Some(event.id),
                body: event.data,
                content_type: event.content_type,
                event_type: Some(event.event_type),
                ..Default::default()
            };
            send_traced(node, name, vec![message], parent.as_ref()).await?;
            Ok(())
        })
    }

    fn housekeeping<'a>(&'a self, node: &'a Arc<Node>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = node.queues.expire().await {
                tracing::warn!("expiring old queue messages failed: {e}");
            }
        })
    }

    fn admin_routes(&self) -> Vec<AdminRoute<Node>> {
        use http::Method;
        vec![
            admin_route(Method::GET, "/v1/queues", |node, _| async move { list(&node).await }),
            admin_route(Method::GET, "/v1/queues/{queue}", |node, r| async move {
                stats(&node, r.param("queue")).await
            }),
            admin_route(Method::POST, "/v1/queues/{queue}/messages", |node, r| async move {
                send(&node, &r).await
            }),
            admin_route(Method::GET, "/v1/queues/{queue}/messages", |node, r| async move {
                peek(&node, &r).await
            }),
            admin_route(Method::POST, "/v1/queues/{queue}/receive", |node, r| async move {
                receive(&node, &r).await
            }),
            admin_route(Method::POST, "/v1/queues/{queue}/ack", |node, r| async move {
                ack(&node, &r).await
            }),
            admin_route(
                Method::POST,
                "/v1/queues/{queue}/redrive",
                |node: Arc<Node>, r| async move {
                    let moved = node.queues.redrive(r.param("queue")).await?;
                    Ok(AdminReply::ok(json!({ "moved": moved })))
                },
            ),
        ]
    }
}

/// Says what removing queue `change.name` leaves behind: for a declared
/// queue that holds messages, a loss; for a hidden one, a note (its events
/// are kept for a deploy that brings its target back).
async fn weigh(node: &Node, change: &mut Change, declared: bool) -> Result<(), String> {
    let stats = node.queues.stats(&change.name).await.map_err(|e| {
        format!(
            "cannot count the messages of queue `{}`: {e}; try the deploy again",
            change.name
        )
    })?;
    let waiting = stats.visible + stats.in_flight + stats.delayed;
    if waiting == 0 {
        return Ok(());
    }
    let plural = if waiting == 1 { "" } else { "s" };
    if declared {
        change.loss = Some(format!("{waiting} message{plural} would be left undelivered"));
    } else {
        change.note = Some(format!(
            "{waiting} event{plural} wait for a deploy that brings this target back"
        ));
    }
    Ok(())
}

/// The deploy steps of queues: the declared queues it removes, to count
/// again just before the swap.
struct Staging {
    removed: Vec<String>,
}

impl Staged<Node> for Staging {
    fn losses<'a>(&'a self, node: &'a Arc<Node>) -> BoxFuture<'a, Vec<Change>> {
        Box::pin(async move {
            let mut losses = Vec::new();
            for name in &self.removed {
                let mut change = Change::new("queue", name, Action::Removed);
                if let Err(why) = weigh(node, &mut change, true).await {
                    change.loss = Some(why);
                }
                if change.loss.is_some() {
                    losses.push(change);
                }
            }
            losses
        })
    }

    /// Every queue the deploy needs exists before routing sends to it.
    fn install(&self, node: &Arc<Node>, deploy: &Deploy) {
        node.queues.add(&deploy.queues);
    }

    /// Queues only the previous deploy used go (their messages stay stored).
    fn retire(&self, node: &Arc<Node>, deploy: &Deploy) {
        node.queues.configure(&deploy.queues);
    }
}

type Reply = Result<AdminReply, AdminReply>;

fn duration_field(text: Option<&str>, field: &str) -> Result<Option<std::time::Duration>, AdminReply> {
    text.map(|t| {
        weft_manifest::parse_duration(t)
            .map_err(|why| AdminReply::error(400, format!("`{field}` is not a duration: {why}; write e.g. \"30s\"")))
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

async fn list(node: &Arc<Node>) -> Reply {
    let mut list = Vec::new();
    for name in node.queues.names() {
        let q = node.queues.get(&name)?;
        let stats = node.queues.stats(&name).await?;
        list.push(json!({ "name": name, "fifo": q.fifo, "dead_letter": q.dead_letter, "stats": stats }));
    }
    Ok(AdminReply::ok(json!({ "queues": list })))
}

async fn stats(node: &Arc<Node>, name: &str) -> Reply {
    let q = node.queues.get(name)?;
    let stats = node.queues.stats(name).await?;
    Ok(AdminReply::ok(json!({
        "name": q.name,
        "fifo": q.fifo,
        "dead_letter": q.dead_letter,
        "max_receives": q.retry.max_attempts,
        "visibility_timeout": weft_manifest::format_duration(q.visibility_timeout),
        "delay": weft_manifest::format_duration(q.delay),
        "retention": weft_manifest::format_duration(q.retention),
        "backoff": weft_manifest::format_duration(q.retry.backoff),
        "stats": stats,
    })))
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

async fn send(node: &Arc<Node>, request: &AdminRequest) -> Reply {
    let input: SendRequest = request.json()?;
    if input.messages.is_empty() || input.messages.len() > 1000 {
        return Err(AdminReply::error(
            400,
            "send 1 to 1000 messages at a time in `messages`",
        ));
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
    let sent = send_traced(node, request.param("queue"), outgoing, request.trace().as_ref()).await?;
    Ok(AdminReply::with_status(201, json!({ "messages": sent })))
}

/// Sends `messages` to `queue` in a producer span, child of `parent`;
/// every message keeps the span's context.
async fn send_traced(
    node: &Node,
    queue: &str,
    mut messages: Vec<weft_events::Outgoing>,
    parent: Option<&weft_telemetry::SpanContext>,
) -> Result<Vec<weft_events::Sent>, weft_events::QueueError> {
    node.produce("queue", queue, parent, |trace| async move {
        for m in &mut messages {
            m.trace.clone_from(&trace);
        }
        node.queues.send(queue, messages).await
    })
    .await
}

async fn peek(node: &Arc<Node>, request: &AdminRequest) -> Reply {
    let limit = request.number("limit", 10)?.clamp(1, 1000) as usize;
    let messages = node.queues.peek(request.param("queue"), limit).await?;
    Ok(AdminReply::ok(
        json!({ "messages": messages.iter().map(message_view).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReceiveRequest {
    #[serde(default)]
    max: Option<usize>,
    #[serde(default)]
    visibility: Option<String>,
}

async fn receive(node: &Arc<Node>, request: &AdminRequest) -> Reply {
    let input: ReceiveRequest = request.json()?;
    let max = input.max.unwrap_or(1);
    if !(1..=100).contains(&max) {
        return Err(AdminReply::error(
            400,
            format!("`max` must be from 1 to 100, got {max}"),
        ));
    }
    let visibility = duration_field(input.visibility.as_deref(), "visibility")?;
    let messages = node.queues.receive(request.param("queue"), max, visibility).await?;
    Ok(AdminReply::ok(
        json!({ "messages": messages.iter().map(message_view).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    receipts: Vec<String>,
}

async fn ack(node: &Arc<Node>, request: &AdminRequest) -> Reply {
    let input: AckRequest = request.json()?;
    let receipts = input
        .receipts
        .iter()
        .map(|r| {
            r.parse::<weft_store::durable::Receipt>()
                .map_err(|e| AdminReply::error(400, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let acknowledged = node.queues.ack(request.param("queue"), &receipts).await?;
    Ok(AdminReply::ok(
        json!({ "acknowledged": acknowledged, "stale": receipts.len() - acknowledged }),
    ))
}
