//! Schedules: fire a function (as an asynchronous invocation) or a queue.
//!
//! Each fire is claimed before it is delivered, by a compare-and-set of the
//! schedule's last fire time in the key-value store (bucket `schedules`):
//! whoever moves it from the previous fire to this one delivers, anyone
//! else skips. So a fire happens at most once, across restarts and across
//! nodes sharing the storage. Fires missed while weft was down are skipped,
//! or fired once, as the schedule's `missed` says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use weft_manifest::{Destination, Missed, Schedule};
use weft_store::durable::StorageError;

use crate::node::Node;

const BUCKET: &str = "schedules";
/// The longest single sleep: later fires are re-planned after it, so clock
/// changes are noticed.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Starts this deploy's schedules; those of the previous deploy stop with
/// its trigger generation.
pub(crate) fn restart(node: &Arc<Node>, schedules: &[Schedule]) {
    let generation = *node.trigger_generation.borrow();
    for schedule in schedules {
        let (node, schedule) = (node.clone(), schedule.clone());
        let changes = node.trigger_generation.subscribe();
        tokio::spawn(async move { run(node, schedule, generation, changes).await });
    }
}

/// The last fire time (ms) and the key's revision.
async fn last_fire(node: &Node, name: &str) -> Result<Option<(i64, u64)>, StorageError> {
    let entry = node.storage.get(BUCKET, name).await?;
    Ok(entry.and_then(|e| {
        let text = String::from_utf8(e.value).ok()?;
        Some((text.parse().ok()?, e.revision))
    }))
}

/// Moves the last fire time to `at`, if nobody else did first.
async fn claim(node: &Node, name: &str, seen: Option<(i64, u64)>, at: Timestamp) -> Result<bool, StorageError> {
    let value = at.as_millisecond().to_string().into_bytes();
    let claimed = match seen {
        Some((_, revision)) => node.storage.update(BUCKET, name, value, revision).await,
        None => node.storage.create(BUCKET, name, value).await,
    };
    match claimed {
        Ok(_) => Ok(true),
        Err(StorageError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn run(node: Arc<Node>, schedule: Schedule, generation: u64, mut changes: tokio::sync::watch::Receiver<u64>) {
    let tz = TimeZone::get(&schedule.timezone).unwrap_or(TimeZone::UTC);
    let mut starting = true;
    loop {
        if *changes.borrow() != generation {
            return;
        }
        let seen = match last_fire(&node, &schedule.name).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("schedule `{}`: {e}", schedule.name);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let now = Timestamp::now();
        let last = seen.and_then(|(ms, _)| Timestamp::from_millisecond(ms).ok());
        if std::mem::take(&mut starting)
            && let Some(last) = last
            && let Some(latest) = latest_missed(&schedule, last, now, &tz)
        {
            // Fires were due while weft was down.
            let fire = schedule.missed == Missed::FireOnce;
            match claim(&node, &schedule.name, seen, latest).await {
                Ok(true) if fire => deliver(&node, &schedule, latest).await,
                Ok(_) => {}
                Err(e) => tracing::warn!("schedule `{}`: {e}", schedule.name),
            }
            continue;
        }
        let from = last.filter(|l| *l > now).unwrap_or(now);
        let Some(next) = schedule.expression.next_after(from, &tz) else {
            tracing::warn!(
                "schedule `{}` ({}) never fires again",
                schedule.name,
                schedule.expression_text
            );
            return;
        };
        let wait = Duration::from_millis((next.as_millisecond() - now.as_millisecond()).max(0) as u64);
        tokio::select! {
            () = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
            _ = changes.changed() => return,
        }
        if wait > MAX_SLEEP {
            continue;
        }
        match claim(&node, &schedule.name, seen, next).await {
            Ok(true) => deliver(&node, &schedule, next).await,
            Ok(false) => {}
            Err(e) => tracing::warn!("schedule `{}` could not claim its fire at {next}: {e}", schedule.name),
        }
    }
}

/// The latest fire time after `last` and not after `now`, if any.
fn latest_missed(schedule: &Schedule, last: Timestamp, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    let mut latest = None;
    let mut at = last;
    for _ in 0..100_000 {
        match schedule.expression.next_after(at, tz) {
            Some(next) if next <= now => {
                latest = Some(next);
                at = next;
            }
            _ => break,
        }
    }
    latest
}

async fn deliver(node: &Arc<Node>, schedule: &Schedule, at: Timestamp) {
    let time = weft_events::cloudevents::rfc3339(at.as_microsecond());
    let json = serde_json::from_str::<serde_json::Value>(&schedule.payload).is_ok();
    let content_type = if json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let result = match &schedule.target {
        Destination::Function(f) => {
            // The fire reaches the function as a CloudEvent in binary mode.
            let headers = BTreeMap::from([
                ("content-type".to_string(), content_type.to_string()),
                ("ce-specversion".to_string(), "1.0".to_string()),
                (
                    "ce-id".to_string(),
                    format!("{}@{}", schedule.name, at.as_millisecond()),
                ),
                ("ce-source".to_string(), format!("/weft/schedules/{}", schedule.name)),
                ("ce-type".to_string(), "weft.schedule.fired".to_string()),
                ("ce-time".to_string(), time.clone()),
            ]);
            node.invoke_async(f, "POST", "/", headers, schedule.payload.clone())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Destination::Topic(t) => {
            let event = weft_events::CloudEvent {
                id: format!("{}@{}", schedule.name, at.as_millisecond()),
                source: format!("/weft/schedules/{}", schedule.name),
                event_type: "weft.schedule.fired".to_string(),
                time: Some(time.clone()),
                content_type: Some(content_type.to_string()),
                data: schedule.payload.clone().into_bytes(),
                extensions: Default::default(),
            };
            node.topics
                .publish(&node.queues, t, vec![event])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Destination::Bus(b) => {
            // As an EventBridge scheduled rule: a "Scheduled Event" whose
            // detail is the payload (checked to be a JSON object).
            let event = weft_events::bus::BusEvent {
                id: format!("{}@{}", schedule.name, at.as_millisecond()),
                source: format!("/weft/schedules/{}", schedule.name),
                detail_type: "Scheduled Event".to_string(),
                time: time.clone(),
                resources: vec![format!("/weft/schedules/{}", schedule.name)],
                detail: serde_json::from_str(&schedule.payload).unwrap_or_else(|_| serde_json::json!({})),
                extensions: Default::default(),
            };
            node.buses
                .put(&node.queues, &node.topics, b, vec![event])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Destination::Queue(q) => {
            let message = weft_events::Outgoing {
                id: Some(format!("{}@{}", schedule.name, at.as_millisecond())),
                body: schedule.payload.clone().into_bytes(),
                content_type: Some(content_type.to_string()),
                event_type: Some("weft.schedule.fired".to_string()),
                ..Default::default()
            };
            node.queues
                .send(q, vec![message])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    if let Err(e) = result {
        tracing::warn!(
            "schedule `{}` fired at {time} but could not deliver: {e}",
            schedule.name
        );
    }
}
