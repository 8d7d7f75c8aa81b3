//! Trigger workers: deliver a queue's messages to a function as
//! CloudEvents, and acknowledge or retry them by its answer.
//!
//! Each `[[trigger]]` runs `concurrency` workers. A worker receives up to
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
use weft_manifest::Trigger as TriggerSpec;
use weft_store::durable::Message;

use crate::node::{Call, Node, Trigger};

/// How often an idle worker looks again for messages whose delay or retry
/// backoff has passed (new messages wake it at once).
const POLL: Duration = Duration::from_millis(200);
/// The most of a function's answer read to find a partial batch response.
const MAX_ANSWER: usize = 1 << 20;

/// Where a worker delivers a queue's messages.
#[derive(Clone)]
enum Target {
    Function(String),
    /// A topic's HTTP subscription.
    Url(String),
}

#[derive(Clone)]
struct Delivery {
    queue: String,
    target: Target,
    batch: u32,
}

/// Stops the workers of the previous deploy and starts this one's: the
/// triggers', and one per URL subscription (`(queue, url)`).
pub(crate) fn restart(node: &Arc<Node>, triggers: &[TriggerSpec], urls: &[(String, String)]) {
    node.trigger_generation.send_modify(|g| *g += 1);
    let generation = *node.trigger_generation.borrow();
    let mut deliveries = Vec::new();
    for t in triggers {
        let d = Delivery {
            queue: t.queue.clone(),
            target: Target::Function(t.function.clone()),
            batch: t.batch,
        };
        deliveries.extend(std::iter::repeat_n(d, t.concurrency as usize));
    }
    for (queue, url) in urls {
        deliveries.push(Delivery {
            queue: queue.clone(),
            target: Target::Url(url.clone()),
            batch: 1,
        });
    }
    for d in deliveries {
        let node = node.clone();
        let changes = node.trigger_generation.subscribe();
        tokio::spawn(async move { worker(node, d, generation, changes).await });
    }
}

async fn worker(node: Arc<Node>, trigger: Delivery, generation: u64, mut changes: tokio::sync::watch::Receiver<u64>) {
    let waker = node.queues.waker(&trigger.queue);
    loop {
        if *changes.borrow() != generation {
            return;
        }
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let messages = match node.queues.receive(&trigger.queue, trigger.batch as usize, None).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("deliveries from {}: cannot receive: {e}", trigger.queue);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(POLL) => {}
                _ = changes.changed() => {}
            }
            continue;
        }
        let delivered = match &trigger.target {
            Target::Function(f) => deliver(&node, &trigger.queue, f, trigger.batch, &messages).await,
            Target::Url(u) => deliver_url(&node, &trigger.queue, u, &messages[0]).await,
        };
        if let Err(e) = delivered {
            // The messages stay leased and come back after the visibility timeout.
            tracing::warn!("deliveries from {}: {e}", trigger.queue);
        }
    }
}

async fn deliver(
    node: &Arc<Node>,
    queue: &str,
    function_name: &str,
    batch: u32,
    messages: &[Message],
) -> Result<(), weft_events::QueueError> {
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
    let body = if batch == 1 {
        let (headers, body) = weft_events::cloudevents::binary(queue, &messages[0]);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        body
    } else {
        request = request.header(http::header::CONTENT_TYPE, weft_events::cloudevents::BATCH_CONTENT_TYPE);
        weft_events::cloudevents::batch(queue, messages)
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
    let handled = node
        .invoke(
            &function,
            request,
            Call {
                trigger: Trigger::Queue,
                params: &[],
                parent: None,
                depth: 0,
                trusted: &[],
            },
        )
        .await;
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
            let failed_ids = failed_ids.unwrap_or_default();
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
