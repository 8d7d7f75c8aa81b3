//! Schedules (`[schedule.NAME]`): cron and rate expressions that fire a
//! target (a function, as an asynchronous invocation, a queue, a topic or
//! a bus) through the node's one delivery path.
//!
//! Each fire is claimed before it is delivered, by a compare-and-set of the
//! schedule's last fire time in the key-value store (bucket `schedules`):
//! whoever moves it from the previous fire to this one delivers, anyone
//! else skips. So a fire happens at most once, across restarts and across
//! nodes sharing the storage. Fires missed while weft was down are skipped,
//! or fired once, as the schedule's `missed` says.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use weft_manifest::{Missed, Schedule, TargetKind};
use weft_store::durable::StorageError;
use weft_telemetry::SpanKind;

use crate::capability::{BoxFuture, Capability, Deploy, Staged, Stop, Workers};
use crate::node::Node;

const BUCKET: &str = "schedules";
/// The longest single sleep: later fires are re-planned after it, so clock
/// changes are noticed.
const MAX_SLEEP: Duration = Duration::from_secs(60);

pub struct Schedules;

impl Capability<Node> for Schedules {
    fn name(&self) -> &'static str {
        "schedules"
    }

    fn plan<'a>(
        &'a self,
        _node: &'a Arc<Node>,
        deploy: &'a mut Deploy,
    ) -> BoxFuture<'a, Result<Box<dyn Staged<Node>>, String>> {
        Box::pin(async move {
            deploy.diff_manifest("schedule", |m| {
                m.schedules.iter().map(|s| (s.name.clone(), s.clone())).collect()
            });
            Ok(Box::new(Running) as Box<dyn Staged<Node>>)
        })
    }
}

/// Starts this deploy's schedules; the previous deploy's stop with its workers.
struct Running;

impl Staged<Node> for Running {
    fn start(&self, node: &Arc<Node>, deploy: &Deploy, workers: &Workers) {
        for schedule in &deploy.manifest.schedules {
            let (node, schedule) = (node.clone(), schedule.clone());
            workers.spawn(move |stop| run(node, schedule, stop));
        }
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

async fn run(node: Arc<Node>, schedule: Schedule, mut stop: Stop) {
    let tz = TimeZone::get(&schedule.timezone).unwrap_or(TimeZone::UTC);
    let mut starting = true;
    loop {
        if stop.is_stopped() {
            return;
        }
        let seen = match last_fire(&node, &schedule.name).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("schedule `{}`: {e}", schedule.name);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.stopped() => return,
                }
                continue;
            }
        };
        let now = Timestamp::now();
        let last = seen.and_then(|(ms, _)| Timestamp::from_millisecond(ms).ok());
        let missed = match (std::mem::take(&mut starting), last) {
            (true, Some(last)) => {
                // Up to 100,000 steps of the expression: blocking work.
                let (s, tz) = (schedule.clone(), tz.clone());
                tokio::task::spawn_blocking(move || latest_missed(&s, last, now, &tz))
                    .await
                    .ok()
                    .flatten()
            }
            _ => None,
        };
        if let Some(latest) = missed {
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
            () = stop.stopped() => return,
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

/// Sends one fire to the schedule's target: a CloudEvent of type
/// `weft.schedule.fired` whose data is the payload, or, on a bus, an
/// EventBridge "Scheduled Event" whose `detail` is the payload.
async fn deliver(node: &Arc<Node>, schedule: &Schedule, at: Timestamp) {
    let time = weft_events::cloudevents::rfc3339(at.as_microsecond());
    let json = serde_json::from_str::<serde_json::Value>(&schedule.payload).is_ok();
    let source = format!("/weft/schedules/{}", schedule.name);
    let mut event = weft_events::CloudEvent {
        id: format!("{}@{}", schedule.name, at.as_millisecond()),
        source: source.clone(),
        event_type: "weft.schedule.fired".to_string(),
        time: Some(time.clone()),
        content_type: Some(
            if json {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            }
            .to_string(),
        ),
        data: schedule.payload.clone().into_bytes(),
        extensions: Default::default(),
    };
    if schedule.target.kind() == TargetKind::Bus {
        event.event_type = "Scheduled Event".to_string();
        event.extensions.insert("subject".into(), source);
    }
    // Each fire starts a trace; its target continues it.
    let span = node
        .start_span(format!("fire {}", schedule.name), SpanKind::Producer, None)
        .map(|s| {
            s.with("weft.schedule", schedule.name.as_str())
                .with("weft.fire_time", time.as_str())
        });
    if let Some(span) = &span {
        weft_events::trace::set_extensions(&mut event.extensions, &span.context);
    }
    let delivered = node.deliver(&schedule.target, event).await;
    if let Err(e) = &delivered {
        tracing::warn!(
            "schedule `{}` fired at {time} but could not deliver: {e}",
            schedule.name
        );
    }
    let outcome = if delivered.is_ok() { "delivered" } else { "failed" };
    node.metrics.count(
        "weft_schedule_fires_total",
        "Schedule fires, by schedule and whether the target took them.",
        &weft_telemetry::metrics::labels(&[("schedule", &schedule.name), ("outcome", outcome)]),
        1,
    );
    if let Some(span) = span {
        span.end(node, delivered.err().map(|e| e.to_string()));
    }
}
