//! Topics (`[topic.NAME]`, `[[subscription]]`): publish once, deliver to
//! every matching subscription. The fan-out is `weft_events::Topics`; this
//! module plugs it into the node: a deploy compiles the filters and adds
//! the hidden queues (and their drains) of function and URL
//! subscriptions, functions publish with
//! `POST http://TOPIC.topic.weft.internal/`, and events are delivered to
//! topic targets.

use std::sync::Arc;

use serde_json::json;
use weft_manifest::TargetKind;
use weft_runtime::{OutboundFuture, WasiBody};

use super::http::{answer, default_ce_headers, read_post, reply};
use super::routing::Routing;
use crate::capability::{BoxFuture, Capability, DeliveryError, Deploy, Internal, Staged};
use crate::deployment::Deployed;
use crate::node::Node;

pub struct Topics;

impl Capability<Node> for Topics {
    fn name(&self) -> &'static str {
        "topics"
    }

    fn plan<'a>(
        &'a self,
        _node: &'a Arc<Node>,
        deploy: &'a mut Deploy,
    ) -> BoxFuture<'a, Result<Box<dyn Staged<Node>>, String>> {
        Box::pin(async move {
            let (plan, routing) = weft_events::Topics::plan(&deploy.manifest);
            deploy.add_hidden(plan.hidden);
            deploy.diff_manifest("topic", |m| m.topics.iter().map(|t| (t.name.clone(), ())).collect());
            deploy.diff_manifest("subscription", |m| {
                m.subscriptions
                    .iter()
                    .map(|s| (format!("{} -> {}", s.topic, s.target), s.clone()))
                    .collect()
            });
            Ok(Box::new(Routing::new(routing, |node, r| node.topics.install(r))) as Box<dyn Staged<Node>>)
        })
    }

    fn internal(&self) -> Option<Internal> {
        Some(Internal {
            suffix: "topic",
            grant: Some(TargetKind::Topic),
            verb: "publish to",
        })
    }

    /// Publishes the request as one CloudEvent in binary mode. `ce-id`
    /// defaults to a new id, `ce-source` to `/weft/functions/NAME`,
    /// `ce-type` to `weft.function.event`.
    fn call(
        &self,
        node: &Arc<Node>,
        caller: &Arc<Deployed>,
        name: &str,
        request: http::Request<WasiBody>,
    ) -> OutboundFuture {
        let (node, caller, topic) = (node.clone(), caller.name.clone(), name.to_string());
        Box::pin(async move {
            let refuse_method = format!("publish to topic `{topic}` with POST");
            let (mut parts, body) = match read_post(request, refuse_method, "an event").await {
                Ok(read) => read,
                Err(answer) => return answer,
            };
            default_ce_headers(&mut parts.headers, &node, &caller);
            let event = match weft_events::cloudevents::from_binary(&parts.headers, body) {
                Ok(e) => e,
                Err(why) => return reply(400, json!({ "error": why })),
            };
            let parent = crate::telemetry::incoming(&parts.headers);
            let published = publish(&node, &topic, vec![event], parent).await;
            answer(202, published.map(|mut published| published.remove(0)))
        })
    }

    fn delivers(&self) -> Option<TargetKind> {
        Some(TargetKind::Topic)
    }

    fn deliver<'a>(
        &'a self,
        node: &'a Arc<Node>,
        name: &'a str,
        event: weft_events::CloudEvent,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            publish(node, name, vec![event], None).await?;
            Ok(())
        })
    }
}

/// Publishes `events` to `topic` in a producer span, child of `parent`
/// (the request's trace), else of the first event's `traceparent`
/// extension. Every copy keeps the span's context.
pub async fn publish(
    node: &Node,
    topic: &str,
    mut events: Vec<weft_events::CloudEvent>,
    parent: Option<weft_telemetry::SpanContext>,
) -> Result<Vec<weft_events::Published>, weft_events::QueueError> {
    let parent = parent.or_else(|| {
        events
            .first()
            .and_then(|e| weft_events::trace::of_extensions(&e.extensions))
    });
    node.produce("topic", topic, parent.as_ref(), |trace| async move {
        if let Some(trace) = &trace {
            for event in &mut events {
                weft_events::trace::set_extensions(&mut event.extensions, trace);
            }
        }
        node.topics.publish(&node.queues, topic, events).await
    })
    .await
}
