//! Asynchronous invocations, as Lambda's `Event` invocation type.
//!
//! An async invoke is appended (durably) to the function's own stream,
//! `async:FUNCTION`, and answered 202 with its invocation id. A worker per
//! function runs it; a failed attempt (non-2xx, trap, timeout) is retried
//! after the function's `backoff`, doubling, up to `retries` more times and
//! while the event is younger than `max_event_age`. The result goes to the
//! `on_success` or `on_failure` destination in Lambda's destination record
//! shape, with the invocation record added.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use weft_manifest::{Target, TargetKind};
use weft_store::Trigger;
use weft_store::durable::{Message, NewMessage, StorageError};

use crate::call::Call;
use crate::capability::{BoxFuture, Capability, DeliveryError, Deploy, Staged, Stop, Workers};
use crate::node::Node;

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

/// How an asynchronous invocation ended, as Lambda's destination records
/// name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Condition::Success => "Success",
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

/// Asynchronous invocation: a durable stream and a worker per function.
#[derive(Default)]
pub struct AsyncInvocations {
    /// The functions whose worker runs, in the deploy's workers of this id.
    running: Mutex<(u64, HashSet<String>)>,
    /// Whether appends by other nodes start workers here.
    listening: std::sync::OnceLock<()>,
}

impl Capability<Node> for AsyncInvocations {
    fn name(&self) -> &'static str {
        "async"
    }

    fn plan<'a>(
        &'a self,
        _node: &'a Arc<Node>,
        _deploy: &'a mut Deploy,
    ) -> BoxFuture<'a, Result<Box<dyn Staged<Node>>, String>> {
        Box::pin(async { Ok(Box::new(Resume) as Box<dyn Staged<Node>>) })
    }

    fn delivers(&self) -> Option<TargetKind> {
        Some(TargetKind::Function)
    }

    /// The event reaches the function as an asynchronous invocation: a
    /// CloudEvent in binary mode, `POST /`.
    fn deliver<'a>(
        &'a self,
        node: &'a Arc<Node>,
        name: &'a str,
        event: weft_events::CloudEvent,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let parent = weft_events::trace::of_extensions(&event.extensions);
            let mut headers = BTreeMap::from([
                ("ce-specversion".to_string(), "1.0".to_string()),
                ("ce-id".to_string(), event.id),
                ("ce-source".to_string(), event.source),
                ("ce-type".to_string(), event.event_type),
            ]);
            if let Some(time) = event.time {
                headers.insert("ce-time".into(), time);
            }
            if let Some(ct) = event.content_type {
                headers.insert("content-type".into(), ct);
            }
            for (k, v) in event.extensions {
                headers.insert(format!("ce-{k}"), v);
            }
            let body = String::from_utf8(event.data)
                .map_err(|_| DeliveryError::Refused("an asynchronous invocation's body must be text".into()))?;
            node.invoke_async(name, "POST", "/", headers, body, parent.as_ref())
                .await?;
            Ok(())
        })
    }
}

/// After a deploy (and so after a restart): resume the functions that have
/// async events waiting.
struct Resume;

impl Staged<Node> for Resume {
    fn start(&self, node: &Arc<Node>, deploy: &Deploy, workers: &Workers) {
        // An invocation accepted by another node sharing the storage starts
        // this node's worker too, so any node may run it.
        if let Some(asyncs) = node.capability::<AsyncInvocations>() {
            asyncs.listening.get_or_init(|| {
                let weak = Arc::downgrade(node);
                node.storage.on_append(Arc::new(move |stream: &str| {
                    if let (Some(node), Some(function)) = (weak.upgrade(), stream.strip_prefix("async:")) {
                        node.ensure_async_worker(function);
                    }
                }));
            });
        }
        let names: Vec<String> = deploy.manifest.functions.iter().map(|f| f.name.clone()).collect();
        let node = node.clone();
        workers.spawn(move |_| async move {
            for f in names {
                match node.storage.stats(&stream(&f)).await {
                    Ok(s) if s.visible + s.in_flight + s.delayed > 0 => node.ensure_async_worker(&f),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("cannot check async events of `{f}`: {e}"),
                }
            }
        });
    }
}

impl Node {
    /// Accepts an asynchronous invocation; durable when this returns. It
    /// is stored in a producer span, child of `parent`, whose context it
    /// keeps (its `traceparent` attribute) for the invocation that runs it.
    pub async fn invoke_async(
        self: &Arc<Self>,
        function: &str,
        method: &str,
        path: &str,
        headers: BTreeMap<String, String>,
        body: String,
        parent: Option<&weft_telemetry::SpanContext>,
    ) -> Result<String, StorageError> {
        let id = self.new_request_id();
        let event = Event {
            method: method.into(),
            path: path.into(),
            headers,
            body,
            accepted_us: weft_store::now_us(),
        };
        let body = serde_json::to_vec(&event).map_err(|e| StorageError::Other(e.to_string()))?;
        let message_id = id.clone();
        self.produce("async", function, parent, |trace| async move {
            let mut message = NewMessage {
                id: message_id,
                body,
                ..Default::default()
            };
            if let Some(trace) = &trace {
                weft_events::trace::store(&mut message.attributes, trace);
            }
            self.storage
                .append(&stream(function), vec![message], Duration::ZERO)
                .await
        })
        .await?;
        self.ensure_async_worker(function);
        self.queues.waker(&stream(function)).notify_waiters();
        Ok(id)
    }

    /// Starts the function's async worker in the current deploy's workers,
    /// unless it runs there already.
    fn ensure_async_worker(self: &Arc<Self>, function: &str) {
        let Some(asyncs) = self.capability::<AsyncInvocations>() else {
            return;
        };
        let workers = self.workers.load_full();
        let mut running = asyncs.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.0 != workers.id() {
            *running = (workers.id(), HashSet::new());
        }
        if running.1.insert(function.to_string()) {
            let (node, function) = (self.clone(), function.to_string());
            workers.spawn(move |stop| worker(node, function, stop));
        }
    }
}

async fn worker(node: Arc<Node>, function: String, mut stop: Stop) {
    let waker = node.queues.waker(&stream(&function));
    loop {
        if stop.is_stopped() {
            return;
        }
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Some(deployed) = node.deployment().functions.get(&function).cloned() else {
            // Removed by this deploy: its events wait for a deploy that
            // brings it back.
            return;
        };
        // Hidden long enough that a running attempt is not started twice.
        let visibility = deployed.spec.timeout + Duration::from_secs(30);
        let leased = match node.storage.lease(&stream(&function), 1, visibility, false).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("async events of `{function}`: {e}");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.stopped() => return,
                }
                continue;
            }
        };
        let Some(message) = leased.into_iter().next() else {
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(POLL) => {}
                () = stop.stopped() => return,
            }
            continue;
        };
        if let Err(e) = attempt(&node, &deployed, &message).await {
            // The event stays leased and is tried again after its visibility timeout.
            tracing::warn!("async event {} of `{function}`: {e}", message.id);
        }
    }
}

async fn attempt(
    node: &Arc<Node>,
    deployed: &Arc<crate::deployment::Deployed>,
    message: &Message,
) -> Result<(), StorageError> {
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
    let age = Duration::from_micros(weft_store::now_us().saturating_sub(event.accepted_us).max(0) as u64);
    if config.retry.max_age.is_some_and(|max| age > max) {
        let outcome = Outcome::without_answer(Condition::EventAgeExceeded, None);
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
            let outcome = Outcome::without_answer(Condition::RetriesExhausted, error);
            finish(node, deployed, message, &event, &config.on_failure, outcome).await?;
            return node.storage.ack(&stream, &[message.receipt()]).await.map(|_| ());
        }
    };
    let call = Call {
        trusted: &[("weft-invocation-id", message.id.as_str())],
        trace: node.received(&stream, std::slice::from_ref(message)),
        ..Call::new(Trigger::Event)
    };
    let handled = node.invoke(deployed, request, call).await;
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
            condition: Condition::Success,
            status: Some(status),
            error: None,
            response: response_text,
            record: record_json,
            span: handled.span.clone(),
        };
        finish(node, deployed, message, &event, &config.on_success, outcome).await?;
        return node.storage.ack(&stream, &[message.receipt()]).await.map(|_| ());
    }
    if message.receive_count < config.retry.max_attempts {
        let delay = config.retry.delay(message.receive_count);
        node.storage.release(&stream, message.receipt(), delay, error).await?;
        return Ok(());
    }
    let outcome = Outcome {
        condition: Condition::RetriesExhausted,
        status: Some(status),
        error,
        response: response_text,
        record: record_json,
        span: handled.span.clone(),
    };
    finish(node, deployed, message, &event, &config.on_failure, outcome).await?;
    node.storage.ack(&stream, &[message.receipt()]).await.map(|_| ())
}

struct Outcome {
    condition: Condition,
    status: Option<u16>,
    error: Option<String>,
    response: Option<String>,
    record: Option<Value>,
    /// The attempt's span, which the destination record continues.
    span: Option<weft_telemetry::SpanContext>,
}

impl Outcome {
    fn without_answer(condition: Condition, error: Option<String>) -> Outcome {
        Outcome {
            condition,
            status: None,
            error,
            response: None,
            record: None,
            span: None,
        }
    }
}

/// A body as JSON when it is JSON, else as a string.
fn payload(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::from(text))
}

/// Sends the destination record, if there is a destination, through the
/// node's one delivery path. If the destination cannot take it, the event
/// stays leased and the whole attempt comes back after its visibility
/// timeout, so no record is lost.
async fn finish(
    node: &Arc<Node>,
    deployed: &Arc<crate::deployment::Deployed>,
    message: &Message,
    event: &Event,
    destination: &Option<Target>,
    outcome: Outcome,
) -> Result<(), StorageError> {
    let condition = outcome.condition.as_str();
    let Some(destination) = destination else {
        if outcome.condition != Condition::Success {
            tracing::warn!(
                "async event {} of `{}` failed for good ({condition}): {:?}",
                message.id,
                deployed.name,
                outcome.error
            );
        }
        return Ok(());
    };
    let body = json!({
        "version": "1.0",
        "timestamp": weft_events::cloudevents::now(),
        "requestContext": {
            "requestId": message.id,
            "function": deployed.name,
            "version": deployed.version,
            "condition": condition,
            "approximateInvokeCount": message.receive_count,
        },
        "requestPayload": payload(&event.body),
        "responseContext": { "statusCode": outcome.status, "functionError": outcome.error },
        "responsePayload": outcome.response.as_deref().map(payload),
        "record": outcome.record,
    });
    let source = format!("/weft/functions/{}", deployed.name);
    let mut record = weft_events::CloudEvent {
        id: format!("{}/{condition}", message.id),
        source: source.clone(),
        event_type: format!("weft.async.{condition}"),
        time: Some(weft_events::cloudevents::now()),
        content_type: Some("application/json".into()),
        data: body.to_string().into_bytes(),
        extensions: Default::default(),
    };
    // The record continues the attempt's trace (or, when nothing ran,
    // the trace the invocation was accepted in).
    if let Some(trace) = outcome.span.clone().or_else(|| weft_events::trace::of_message(message)) {
        weft_events::trace::set_extensions(&mut record.extensions, &trace);
    }
    if destination.kind() == TargetKind::Bus {
        // As Lambda's EventBridge destination, so rules written for it match.
        let result = if outcome.condition == Condition::Success {
            "Success"
        } else {
            "Failure"
        };
        record.source = "lambda".into();
        record.event_type = format!("Lambda Function Invocation Result - {result}");
        record.extensions.insert("subject".into(), source);
    }
    node.deliver(destination, record).await.map_err(|e| {
        StorageError::Other(format!(
            "its destination {destination} did not take the {condition} record: {e}"
        ))
    })
}
