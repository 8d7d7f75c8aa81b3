//! Asynchronous invocations, as Lambda's `Event` invocation type.
//!
//! An async invoke is appended (durably) to the function's own stream,
//! `async:FUNCTION`, and answered 202 with its invocation id. A worker per
//! function runs it; a failed attempt (non-2xx, trap, timeout) is retried
//! after the function's `backoff`, doubling, up to `retries` more times and
//! while the event is younger than `max_event_age`. The result goes to the
//! `on_success` or `on_failure` destination in Lambda's destination record
//! shape, with the invocation record added.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use weft_manifest::Destination;
use weft_store::durable::{Message, NewMessage, StorageError};

use crate::node::{Call, Node, Trigger};

/// How often an idle worker looks for events whose retry backoff has passed.
const POLL: Duration = Duration::from_millis(200);
/// The most of a response kept for the destination record.
const MAX_RESPONSE: usize = 256 * 1024;

fn stream(function: &str) -> String {
    format!("async:{function}")
}

/// A request waiting to be run.
#[derive(Serialize, Deserialize)]
struct Event {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
    accepted_us: i64,
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Node {
    /// Accepts an asynchronous invocation; durable when this returns.
    pub async fn invoke_async(
        self: &Arc<Self>,
        function: &str,
        method: &str,
        path: &str,
        headers: BTreeMap<String, String>,
        body: String,
    ) -> Result<String, StorageError> {
        let id = self.new_request_id();
        let event = Event {
            method: method.into(),
            path: path.into(),
            headers,
            body,
            accepted_us: now_us(),
        };
        let message = NewMessage {
            id: id.clone(),
            body: serde_json::to_vec(&event).map_err(|e| StorageError::Other(e.to_string()))?,
            ..Default::default()
        };
        self.storage
            .append(&stream(function), vec![message], Duration::ZERO)
            .await?;
        self.ensure_async_worker(function);
        self.queues.waker(&stream(function)).notify_waiters();
        Ok(id)
    }

    /// Starts the function's async worker unless it runs already.
    pub(crate) fn ensure_async_worker(self: &Arc<Self>, function: &str) {
        let mut running = self.async_workers.lock().unwrap_or_else(|p| p.into_inner());
        if running.insert(function.to_string()) {
            let (node, function) = (self.clone(), function.to_string());
            tokio::spawn(async move { worker(node, function).await });
        }
    }

    /// After a restart: resume functions that have async events waiting.
    pub(crate) async fn resume_async(self: &Arc<Self>, functions: &[String]) {
        for f in functions {
            match self.storage.stats(&stream(f)).await {
                Ok(s) if s.visible + s.in_flight + s.delayed > 0 => self.ensure_async_worker(f),
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot check async events of `{f}`: {e}"),
            }
        }
    }
}

async fn worker(node: Arc<Node>, function: String) {
    let waker = node.queues.waker(&stream(&function));
    loop {
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Some(deployed) = node.deployment().functions.get(&function).cloned() else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        // Hidden long enough that a running attempt is not started twice.
        let visibility = deployed.spec.timeout + Duration::from_secs(30);
        let leased = match node.storage.lease(&stream(&function), 1, visibility, false).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("async events of `{function}`: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(message) = leased.into_iter().next() else {
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(POLL) => {}
            }
            continue;
        };
        if let Err(e) = attempt(&node, &deployed, &message).await {
            // The event stays leased and is tried again after its visibility timeout.
            tracing::warn!("async event {} of `{function}`: {e}", message.id);
        }
    }
}

async fn attempt(node: &Arc<Node>, deployed: &Arc<crate::Deployed>, message: &Message) -> Result<(), StorageError> {
    let config = &deployed.spec.async_invoke;
    let stream = stream(&deployed.name);
    let event: Event = match serde_json::from_slice(&message.body) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("dropping unreadable async event {}: {e}", message.id);
            node.storage.ack(&stream, &[message.receipt()]).await?;
            return Ok(());
        }
    };
    let age = Duration::from_micros(now_us().saturating_sub(event.accepted_us).max(0) as u64);
    if age > config.max_event_age {
        let outcome = Outcome {
            condition: "EventAgeExceeded",
            status: None,
            error: None,
            response: None,
            record: None,
        };
        finish(node, deployed, message, &event, &config.on_failure, outcome).await?;
        return node.storage.ack(&stream, &[message.receipt()]).await.map(|_| ());
    }

    let mut request = hyper::Request::builder()
        .method(event.method.as_str())
        .uri(event.path.as_str())
        .header(http::header::HOST, "localhost");
    for (k, v) in &event.headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let request = match request.body(crate::body::full(event.body.clone())) {
        Ok(r) => r,
        Err(e) => {
            let error = Some(format!("the stored request is not valid HTTP: {e}"));
            let outcome = Outcome {
                condition: "RetriesExhausted",
                status: None,
                error,
                response: None,
                record: None,
            };
            finish(node, deployed, message, &event, &config.on_failure, outcome).await?;
            return node.storage.ack(&stream, &[message.receipt()]).await.map(|_| ());
        }
    };
    let handled = node
        .invoke(
            deployed,
            request,
            Call {
                trigger: Trigger::Event,
                params: &[],
                parent: None,
                depth: 0,
                trusted: &[("weft-invocation-id", message.id.as_str())],
            },
        )
        .await;
    let status = handled.response.status().as_u16();
    let response = Limited::new(handled.response.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map(|c| c.to_bytes());
    let record = handled.record.await.ok();
    let succeeded = (200..300).contains(&status)
        && response.is_ok()
        && record
            .as_ref()
            .is_some_and(|r| r.outcome == weft_store::Outcome::Success);
    let response_text = response.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).ok();
    let error = record.as_ref().and_then(|r| r.error.clone()).or_else(|| {
        (!succeeded).then(|| {
            format!(
                "the function answered {status}: {}",
                response_text.clone().unwrap_or_default()
            )
        })
    });
    let record_json = record.map(|r| json!(r));
    if succeeded {
        let outcome = Outcome {
            condition: "Success",
            status: Some(status),
            error: None,
            response: response_text,
            record: record_json,
        };
        finish(node, deployed, message, &event, &config.on_success, outcome).await?;
        return node.storage.ack(&stream, &[message.receipt()]).await.map(|_| ());
    }
    if message.receive_count <= config.retries {
        let exponent = message.receive_count.saturating_sub(1).min(16);
        let delay = config.backoff.saturating_mul(1 << exponent);
        node.storage.release(&stream, message.receipt(), delay, error).await?;
        return Ok(());
    }
    let outcome = Outcome {
        condition: "RetriesExhausted",
        status: Some(status),
        error,
        response: response_text,
        record: record_json,
    };
    finish(node, deployed, message, &event, &config.on_failure, outcome).await?;
    node.storage.ack(&stream, &[message.receipt()]).await.map(|_| ())
}

struct Outcome {
    condition: &'static str,
    status: Option<u16>,
    error: Option<String>,
    response: Option<String>,
    record: Option<Value>,
}

/// A body as JSON when it is JSON, else as a string.
fn payload(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::from(text))
}

/// Sends the destination record, if there is a destination.
async fn finish(
    node: &Arc<Node>,
    deployed: &Arc<crate::Deployed>,
    message: &Message,
    event: &Event,
    destination: &Option<Destination>,
    outcome: Outcome,
) -> Result<(), StorageError> {
    let Some(destination) = destination else {
        if outcome.condition != "Success" {
            tracing::warn!(
                "async event {} of `{}` failed for good ({}): {:?}",
                message.id,
                deployed.name,
                outcome.condition,
                outcome.error
            );
        }
        return Ok(());
    };
    let body = json!({
        "version": "1.0",
        "timestamp": weft_events::cloudevents::rfc3339(now_us()),
        "requestContext": {
            "requestId": message.id,
            "function": deployed.name,
            "version": deployed.version,
            "condition": outcome.condition,
            "approximateInvokeCount": message.receive_count,
        },
        "requestPayload": payload(&event.body),
        "responseContext": { "statusCode": outcome.status, "functionError": outcome.error },
        "responsePayload": outcome.response.as_deref().map(payload),
        "record": outcome.record,
    })
    .to_string();
    match destination {
        Destination::Queue(q) => {
            let message = weft_events::Outgoing {
                body: body.into_bytes(),
                content_type: Some("application/json".into()),
                event_type: Some(format!("weft.async.{}", outcome.condition)),
                ..Default::default()
            };
            node.queues
                .send(q, vec![message])
                .await
                .map_err(|e| StorageError::Other(e.to_string()))?;
        }
        Destination::Function(f) => {
            let headers = BTreeMap::from([("content-type".to_string(), "application/json".to_string())]);
            node.invoke_async(f, "POST", "/", headers, body).await?;
        }
        Destination::Topic(t) => {
            let event = weft_events::CloudEvent {
                id: format!("{}/{}", message.id, outcome.condition),
                source: format!("/weft/functions/{}", deployed.name),
                event_type: format!("weft.async.{}", outcome.condition),
                time: None,
                content_type: Some("application/json".into()),
                data: body.into_bytes(),
                extensions: Default::default(),
            };
            node.topics
                .publish(&node.queues, t, vec![event])
                .await
                .map_err(|e| StorageError::Other(e.to_string()))?;
        }
        Destination::Bus(b) => {
            // As Lambda's EventBridge destination, so rules written for it match.
            let result = if outcome.condition == "Success" {
                "Success"
            } else {
                "Failure"
            };
            let event = weft_events::bus::BusEvent {
                id: format!("{}/{}", message.id, outcome.condition),
                source: "lambda".into(),
                detail_type: format!("Lambda Function Invocation Result - {result}"),
                time: weft_events::cloudevents::now(),
                resources: vec![format!("/weft/functions/{}", deployed.name)],
                detail: serde_json::from_str(&body).unwrap_or_default(),
                extensions: Default::default(),
            };
            node.buses
                .put(&node.queues, &node.topics, b, vec![event])
                .await
                .map_err(|e| StorageError::Other(e.to_string()))?;
        }
    }
    Ok(())
}
