//! Triggers (`[[trigger]]`) and every other drain of a queue: workers
//! deliver a queue's messages to a function as CloudEvents (or to the URL
//! of a topic's HTTP subscription), and acknowledge or retry them by its
//! answer. Other capabilities add drains for their hidden queues to the
//! deploy ([`crate::capability::Deploy::drains`]); this one runs them all.
//!
//! Each drain runs `concurrency` workers. A worker receives up to
//! `batch` messages (hidden for the queue's visibility timeout), invokes
//! the function with them (binary mode for `batch = 1`, else the batched
//! mode), and then:
//! - a 2xx answer acknowledges them, except those the function lists in a
//!   partial batch response, which are retried;
//! - any other answer, a trap or a timeout retries them all after the
//!   queue's backoff (doubling), or sends them to the dead-letter queue
//!   once `max_receives` is reached.
//!
//! If weft stops mid-delivery, the messages reappear when their visibility
//! timeout ends: delivery is at least once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use weft_manifest::Target;
use weft_store::Trigger;
use weft_store::durable::Message;

use crate::call::Call;
use crate::capability::{BoxFuture, Capability, Deploy, Drain, Encoding, Staged, Stop, Workers};
use crate::node::Node;

/// How often an idle worker looks again for messages whose delay or retry
/// backoff has passed (new messages wake it at once).
const POLL: Duration = Duration::from_millis(200);
/// The most of a function's answer read to find a partial batch response.
const MAX_ANSWER: usize = 1 << 20;

pub struct Triggers;

impl Capability<Node> for Triggers {
    fn name(&self) -> &'static str {
        "triggers"
    }

    fn plan<'a>(
        &'a self,
        _node: &'a Arc<Node>,
        deploy: &'a mut Deploy,
    ) -> BoxFuture<'a, Result<Box<dyn Staged<Node>>, String>> {
        Box::pin(async move {
            let triggers = deploy.manifest.triggers.clone();
            deploy.drains.extend(triggers.iter().map(|t| Drain {
                queue: t.queue.clone(),
                target: Target::Function(t.function.clone()),
                batch: t.batch,
                concurrency: t.concurrency,
                encoding: Encoding::CloudEvents,
            }));
            deploy.diff_manifest("trigger", |m| {
                m.triggers
                    .iter()
                    .map(|t| (format!("{} -> {}", t.queue, t.function), t.clone()))
                    .collect()
            });
            Ok(Box::new(Draining) as Box<dyn Staged<Node>>)
        })
    }
}

/// Starts a deploy's drains: every trigger's, and those of the hidden
/// queues other capabilities added.
struct Draining;

impl Staged<Node> for Draining {
    fn start(&self, node: &Arc<Node>, deploy: &Deploy, workers: &Workers) {
        for drain in &deploy.drains {
            for _ in 0..drain.concurrency.max(1) {
                let (node, drain) = (node.clone(), drain.clone());
                workers.spawn(move |stop| worker(node, drain, stop));
            }
        }
    }
}

async fn worker(node: Arc<Node>, drain: Drain, mut stop: Stop) {
    let waker = node.queues.waker(&drain.queue);
    loop {
        if stop.is_stopped() {
            return;
        }
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let messages = match node.queues.receive(&drain.queue, drain.batch as usize, None).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("deliveries from {}: cannot receive: {e}", drain.queue);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.stopped() => return,
                }
                continue;
            }
        };
        if messages.is_empty() {
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(POLL) => {}
                () = stop.stopped() => return,
            }
            continue;
        }
        let delivered = match (&drain.target, &drain.encoding) {
            (Target::Url(u), _) => deliver_url(&node, &drain.queue, u, &messages[0]).await,
            (Target::Function(f), _) => deliver(&node, &drain, f, &messages).await,
            (other @ Target::Workflow(_), _) | (other, Encoding::Changes { .. } | Encoding::Objects { .. }) => {
                deliver_each(&node, &drain.queue, other, &drain.encoding, &messages).await
            }
            (other, Encoding::CloudEvents) => {
                let why = format!("events from a queue are not delivered to {other}");
                for m in &messages {
                    if let Err(e) = node.queues.failed(&drain.queue, m, &why).await {
                        tracing::warn!("deliveries from {}: {e}", drain.queue);
                    }
                }
                Ok(())
            }
        };
        if let Err(e) = delivered {
            // The messages stay leased and come back after the visibility timeout.
            tracing::warn!("deliveries from {}: {e}", drain.queue);
        }
    }
}

async fn deliver(
    node: &Arc<Node>,
    drain: &Drain,
    function_name: &str,
    messages: &[Message],
) -> Result<(), weft_events::QueueError> {
    let queue = drain.queue.as_str();
    let Some(function) = node.deployment().functions.get(function_name).cloned() else {
        for m in messages {
            node.queues
                .failed(queue, m, &format!("function `{function_name}` is not deployed"))
                .await?;
        }
        return Ok(());
    };
    let mut request = hyper::Request::builder()
        .method("POST")
        .uri("/")
        .header(http::header::HOST, "localhost");
    let body = match &drain.encoding {
        Encoding::Changes { .. } | Encoding::Objects { .. } => match change_records(&drain.encoding, messages) {
            Ok(body) => {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
                body
            }
            Err(why) => return fail_all(node, queue, messages, &why).await,
        },
        Encoding::CloudEvents if drain.batch == 1 => {
            let (headers, body) = weft_events::cloudevents::binary(queue, &messages[0]);
            for (k, v) in headers {
                request = request.header(k, v);
            }
            body
        }
        Encoding::CloudEvents => {
            request = request.header(http::header::CONTENT_TYPE, weft_events::cloudevents::BATCH_CONTENT_TYPE);
            weft_events::cloudevents::batch(queue, messages)
        }
    };
    let request = match request.body(crate::body::full(body)) {
        Ok(r) => r,
        Err(e) => {
            for m in messages {
                node.queues
                    .failed(queue, m, &format!("the message cannot be sent as HTTP: {e}"))
                    .await?;
            }
            return Ok(());
        }
    };
    let call = Call {
        trace: node.received(queue, messages),
        ..Call::new(Trigger::Queue)
    };
    let handled = node.invoke_following(&function, request, call).await;
    let status = handled.response.status();
    let answer = match Limited::new(handled.response.into_body(), MAX_ANSWER).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(format!("the function's answer failed midway: {e}")),
    };
    let outcome = match answer {
        Ok(body) if status.is_success() => weft_events::cloudevents::failed_items(&body)
            .map_err(|shape| format!("invalid partial batch response: {shape}")),
        Ok(body) => Err(failure_text(handled.record.await.ok(), status.as_u16(), &body)),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(failed_ids) => {
            let mut failed_ids = failed_ids.unwrap_or_default();
            // A bucket's records are named by their sequencer.
            if let Encoding::Objects { .. } = drain.encoding {
                for id in &mut failed_ids {
                    if let Some(change) = weft_events::objects::change_id(id) {
                        *id = change;
                    }
                }
            }
            let (failed, done): (Vec<&Message>, Vec<&Message>) =
                messages.iter().partition(|m| failed_ids.contains(&m.id));
            let receipts: Vec<_> = done.iter().map(|m| m.receipt()).collect();
            node.queues.ack(queue, &receipts).await?;
            for m in failed {
                node.queues
                    .failed(queue, m, "the function reported it failed (batchItemFailures)")
                    .await?;
            }
        }
        Err(error) => {
            for m in messages {
                node.queues.failed(queue, m, &error).await?;
            }
        }
    }
    Ok(())
}

async fn fail_all(
    node: &Arc<Node>,
    queue: &str,
    messages: &[Message],
    why: &str,
) -> Result<(), weft_events::QueueError> {
    for m in messages {
        node.queues.failed(queue, m, why).await?;
    }
    Ok(())
}

/// A function's request body for a batch of a store's or bucket's changes.
fn change_records(encoding: &Encoding, messages: &[Message]) -> Result<Vec<u8>, String> {
    match encoding {
        Encoding::Objects { app, bucket } => weft_events::objects::records(app, bucket, messages),
        Encoding::Changes { app, store } => weft_events::kv::records(app, store, messages),
        Encoding::CloudEvents => Err("events are not changes".into()),
    }
}

/// A message as the event its target is given: a store's or a bucket's
/// change as its record, an event (for a workflow) as itself.
fn change_event(
    queue: &str,
    encoding: &Encoding,
    target: &Target,
    m: &Message,
) -> Result<weft_events::CloudEvent, String> {
    match encoding {
        Encoding::Objects { app, bucket } => {
            weft_events::objects::event(app, bucket, m, matches!(target, Target::Bus(_)))
        }
        Encoding::Changes { app, store } => weft_events::kv::event(app, store, m),
        Encoding::CloudEvents => Ok(weft_events::cloudevents::event(queue, m)),
    }
}

/// Sends each message, as the event its encoding makes of it, to a queue,
/// topic, bus or workflow through the node's delivery path, in order.
async fn deliver_each(
    node: &Arc<Node>,
    queue: &str,
    target: &Target,
    encoding: &Encoding,
    messages: &[Message],
) -> Result<(), weft_events::QueueError> {
    for m in messages {
        let outcome = match change_event(queue, encoding, target, m) {
            Ok(mut event) => {
                if let Some(waited) = node.received(queue, std::slice::from_ref(m)).parent {
                    weft_events::trace::set_extensions(&mut event.extensions, &waited);
                }
                node.deliver(target, event).await.map_err(|e| e.to_string())
            }
            Err(why) => Err(why),
        };
        match outcome {
            Ok(()) => {
                node.queues.ack(queue, &[m.receipt()]).await?;
            }
            Err(why) => node.queues.failed(queue, m, &why).await?,
        }
    }
    Ok(())
}

fn failure_text(record: Option<weft_store::InvocationRecord>, status: u16, body: &Bytes) -> String {
    if let Some(error) = record.and_then(|r| r.error) {
        return error;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]).trim().to_string();
    if text.is_empty() {
        format!("the function answered {status}")
    } else {
        format!("the function answered {status}: {text}")
    }
}

/// How long an HTTP subscriber has to answer.
const URL_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one message to an HTTP subscription as a binary-mode CloudEvent.
async fn deliver_url(
    node: &Arc<Node>,
    queue: &str,
    url: &str,
    message: &Message,
) -> Result<(), weft_events::QueueError> {
    let (headers, body) = weft_events::cloudevents::binary(queue, message);
    let mut request = hyper::Request::builder().method("POST").uri(url);
    // The subscriber continues the trace from the message's wait.
    if let Some(waited) = node.received(queue, std::slice::from_ref(message)).parent {
        request = request.header(crate::telemetry::TRACEPARENT, waited.traceparent());
    }
    for (k, v) in headers {
        // The hidden queue's name says nothing to the subscriber.
        if k != "ce-weftqueue" {
            request = request.header(k, v);
        }
    }
    let outcome = match request.body(crate::body::full(body)) {
        Err(e) => Err(format!("the event cannot be sent as HTTP: {e}")),
        Ok(request) => match tokio::time::timeout(URL_TIMEOUT, weft_runtime::send_direct(request, None)).await {
            Err(_) => Err(format!("{url} did not answer within {URL_TIMEOUT:?}")),
            Ok(Err(e)) => Err(format!("{url} could not be reached: {e}")),
            Ok(Ok(response)) if response.status().is_success() => {
                // Read the answer so the connection can be reused.
                let _ = Limited::new(response.into_body(), MAX_ANSWER).collect().await;
                Ok(())
            }
            Ok(Ok(response)) => Err(format!("{url} answered {}", response.status().as_u16())),
        },
    };
    match outcome {
        Ok(()) => node.queues.ack(queue, &[message.receipt()]).await.map(|_| ()),
        Err(error) => node.queues.failed(queue, message, &error).await,
    }
}
