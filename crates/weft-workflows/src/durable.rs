//! Durable executions: effects that journal what an execution did, so a
//! run cut off at any point (a crash, a stopped node) can be run again
//! from the start and arrive where the first run was, without running a
//! journalled task twice.
//!
//! [`Durable`] wraps the live effects. Each effect is answered from the
//! journal when its step is there (a task's result, a timer's deadline, a
//! random draw); otherwise it is written to the journal first (a timer),
//! or right after it happens (a task's result). History events go to the
//! journal too; an event a resumed run makes again is recognised by its
//! content and not kept twice, so the history reads as one run.
//!
//! What reaches the journal before what (through [`Journal::append`], in
//! order):
//! - the events since the last write, before any task starts and before
//!   any timer is waited on;
//! - a task's result with the next write of its execution, or on its own
//!   within [`WRITE_BEHIND`] (2 ms) of its answer if none comes sooner;
//! - a timer's deadline, before it is waited on, so a Wait resumed after a
//!   crash ends when it would have;
//! - the last events, when the driver calls [`Durable::finish`].
//!
//! So a task runs at least once, and exactly once if its result was
//! journalled; a Wait ends at its deadline however often the execution is
//! resumed. A write that fails stops the execution where it is
//! ([`Durable::broken`]): it is resumed later from its journal.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::execution::{Effects, Failure, Step};

/// How long a task's result may wait to be written with what follows it.
pub const WRITE_BEHIND: Duration = Duration::from_millis(2);

/// One entry of an execution's journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "lowercase")]
pub enum Entry {
    /// A history event (without its id, which is its place).
    Event { event: Value },
    /// A task's result, or how it failed.
    Task {
        step: Step,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
    /// A timer's deadline, in milliseconds since the epoch.
    Timer { step: Step, at_ms: i64 },
    /// A random draw.
    Random { step: Step, value: f64 },
    /// The execution was redriven: the failed tasks and the task timeouts
    /// before this run again; what succeeded is kept.
    Redrive { count: u32 },
}

/// Where a durable execution's journal is written.
#[async_trait::async_trait]
pub trait Journal: Send + Sync {
    /// Appends `entries`, in order, durably when it returns.
    async fn append(&self, entries: Vec<Entry>) -> Result<(), String>;
}

/// What the journal already holds, as answers.
#[derive(Default)]
struct Past {
    tasks: HashMap<Step, Result<Value, Failure>>,
    timers: HashMap<Step, i64>,
    randoms: HashMap<Step, f64>,
    /// Journalled events not yet made again, by their content's hash.
    events: HashMap<u64, usize>,
}

/// Effects that journal an execution, answering what is journalled.
pub struct Durable<'a> {
    live: &'a dyn Effects,
    journal: Arc<dyn Journal>,
    past: Mutex<Past>,
    /// Entries not written yet.
    pending: Arc<Mutex<Vec<Entry>>>,
    /// Serializes writes, so entries reach the journal in order; held by
    /// a write until it has finished, even if its effect was dropped.
    writing: Arc<tokio::sync::Mutex<()>>,
    broken: Arc<tokio::sync::watch::Sender<Option<String>>>,
    /// A write-behind is due: results pushed meanwhile go with it.
    behind: Arc<std::sync::atomic::AtomicBool>,
}

/// The history events of a journal, numbered as Step Functions numbers
/// them (`id` from 1, `previousEventId` the one before).
pub fn history(entries: &[Entry]) -> Vec<Value> {
    let mut out = Vec::new();
    for entry in entries {
        if let Entry::Event { event } = entry {
            let id = out.len() as u64 + 1;
            let mut numbered = serde_json::Map::new();
            numbered.insert("id".into(), id.into());
            numbered.insert("previousEventId".into(), (id - 1).into());
            if let Some(map) = event.as_object() {
                numbered.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            out.push(Value::Object(numbered));
        }
    }
    out
}

/// An event's content, without what differs between runs.
fn event_hash(event: &Value) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    if let Some(map) = event.as_object() {
        let mut fields: Vec<(&String, &Value)> = map
            .iter()
            .filter(|(key, _)| !matches!(key.as_str(), "id" | "previousEventId" | "timestamp"))
            .collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        for (key, value) in fields {
            key.hash(&mut hasher);
            value.to_string().hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// An event as the journal keeps it: without its numbers.
fn unnumbered(mut event: Value) -> Value {
    if let Some(map) = event.as_object_mut() {
        map.shift_remove("id");
        map.shift_remove("previousEventId");
    }
    event
}

impl<'a> Durable<'a> {
    /// Effects over `live` that write to `journal`, which already holds `past`.
    pub fn new(live: &'a dyn Effects, journal: Arc<dyn Journal>, past: Vec<Entry>) -> Durable<'a> {
        let mut known = Past::default();
        for entry in past {
            match entry {
                Entry::Event { event } => *known.events.entry(event_hash(&event)).or_default() += 1,
                Entry::Task {
                    step,
                    output,
                    error,
                    cause,
                } => {
                    let answer = match error {
                        Some(error) => Err(Failure { error, cause }),
                        None => Ok(output.unwrap_or(Value::Null)),
                    };
                    known.tasks.insert(step, answer);
                }
                Entry::Timer { step, at_ms } => {
                    known.timers.insert(step, at_ms);
                }
                Entry::Random { step, value } => {
                    known.randoms.insert(step, value);
                }
                Entry::Redrive { .. } => {
                    known.tasks.retain(|_, answer| answer.is_ok());
                    known.timers.retain(|step, _| !step.ends_with("/timeout"));
                }
            }
        }
        Durable {
            live,
            journal,
            past: Mutex::new(known),
            pending: Arc::new(Mutex::new(Vec::new())),
            writing: Arc::new(tokio::sync::Mutex::new(())),
            broken: Arc::new(tokio::sync::watch::channel(None).0),
            behind: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Resolves, with why, once a journal write has failed: the execution
    /// cannot go on durably and should be dropped, to be resumed later.
    pub async fn broken(&self) -> String {
        let mut seen = self.broken.subscribe();
        let why = seen
            .wait_for(Option::is_some)
            .await
            .map(|why| why.clone().unwrap_or_default());
        match why {
            Ok(why) => why,
            Err(_) => std::future::pending().await,
        }
    }

    /// Writes what is pending (the last events), once the run is over.
    pub async fn finish(&self) -> Result<(), String> {
        self.write(Vec::new()).await
    }

    /// Writes the pending entries and then `more`. The write runs to its
    /// end on a task of its own, even if the effect waiting for it is
    /// dropped (a timeout won, a sibling branch failed), so what it took
    /// from the pending entries is never lost half-way; a failure marks
    /// the execution broken, and every write after it fails too.
    async fn write(&self, more: Vec<Entry>) -> Result<(), String> {
        let written = tokio::spawn(self.flush(more));
        written
            .await
            .unwrap_or_else(|e| Err(format!("the journal write stopped: {e}")))
    }

    /// A write of what is pending, that owns all it needs
    /// (so it may run on after the effect that asked for it).
    fn flush(&self, more: Vec<Entry>) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        let (writing, pending) = (self.writing.clone(), self.pending.clone());
        let (journal, broken) = (self.journal.clone(), self.broken.clone());
        async move {
            let _in_order = writing.lock_owned().await;
            if let Some(why) = broken.borrow().clone() {
                return Err(why);
            }
            let mut entries = std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
            entries.extend(more);
            if entries.is_empty() {
                return Ok(());
            }
            let result = journal.append(entries).await;
            if let Err(why) = &result {
                broken.send_replace(Some(why.clone()));
            }
            result
        }
    }

    /// [`Durable::write`] for an effect: one that cannot be journalled
    /// never goes on (the driver sees [`Durable::broken`] and drops the run).
    async fn journal_or_stop(&self, more: Vec<Entry>) {
        if self.write(more).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn push(&self, entry: Entry) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
    }

    /// The deadline journalled for `step`, or `at`, journalled now.
    async fn deadline(&self, step: &Step, at: jiff::Timestamp) -> jiff::Timestamp {
        let known = self
            .past
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .timers
            .get(step)
            .copied();
        match known.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()) {
            Some(at) => at,
            None => {
                let entry = Entry::Timer {
                    step: step.clone(),
                    at_ms: at.as_millisecond(),
                };
                self.journal_or_stop(vec![entry]).await;
                at
            }
        }
    }
}

#[async_trait::async_trait]
impl Effects for Durable<'_> {
    async fn task(
        &self,
        step: &Step,
        resource: &str,
        input: Value,
        limits: crate::execution::TaskLimits,
    ) -> Result<Value, Failure> {
        let known = self.past.lock().unwrap_or_else(|p| p.into_inner()).tasks.remove(step);
        if let Some(answer) = known {
            return answer;
        }
        // A task whose TimeoutSeconds ran out in an earlier run timed out:
        // its timer (in the same select) answers, not a new call.
        let timeout = format!("{step}/timeout");
        let timed_out = self
            .past
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .timers
            .get(&timeout)
            .copied();
        if timed_out.is_some_and(|at| at <= self.live.now().as_millisecond()) {
            return std::future::pending().await;
        }
        self.journal_or_stop(Vec::new()).await;
        let answer = self.live.task(step, resource, input, limits).await;
        let entry = match &answer {
            Ok(output) => Entry::Task {
                step: step.clone(),
                output: Some(output.clone()),
                error: None,
                cause: None,
            },
            Err(f) => Entry::Task {
                step: step.clone(),
                output: None,
                error: Some(f.error.clone()),
                cause: f.cause.clone(),
            },
        };
        // The result goes with the next write of the execution (the next
        // task's events, a timer), or on its own within WRITE_BEHIND.
        self.push(entry);
        if !self.behind.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let (later, behind) = (self.flush(Vec::new()), self.behind.clone());
            tokio::spawn(async move {
                tokio::time::sleep(WRITE_BEHIND).await;
                // Results pushed from now on need a write-behind of their own.
                behind.store(false, std::sync::atomic::Ordering::Release);
                let _ = later.await;
            });
        }
        answer
    }

    async fn wait_until(&self, step: &Step, until: jiff::Timestamp) {
        let at = self.deadline(step, until).await;
        self.live.wait_until(step, at).await;
    }

    async fn sleep(&self, step: &Step, delay: Duration) {
        let until = self.live.now().checked_add(delay).unwrap_or_else(|_| self.live.now());
        let at = self.deadline(step, until).await;
        self.live.wait_until(step, at).await;
    }

    fn now(&self) -> jiff::Timestamp {
        self.live.now()
    }

    fn task_token(&self, step: &Step) -> String {
        self.live.task_token(step)
    }

    fn random(&self, step: &Step) -> f64 {
        let known = self
            .past
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .randoms
            .get(step)
            .copied();
        known.unwrap_or_else(|| {
            let value = self.live.random(step);
            self.push(Entry::Random {
                step: step.clone(),
                value,
            });
            value
        })
    }

    fn keeps_history(&self) -> bool {
        true
    }

    fn task_timed_out(&self, step: &Step) {
        self.live.task_timed_out(step);
    }

    fn event(&self, event: Value) {
        {
            let mut past = self.past.lock().unwrap_or_else(|p| p.into_inner());
            // Only a resumed run makes events again; a new one hashes none.
            if !past.events.is_empty() {
                let hash = event_hash(&event);
                if let Some(n) = past.events.get_mut(&hash) {
                    // Made again by a resumed run: journalled already.
                    *n -= 1;
                    if *n == 0 {
                        past.events.remove(&hash);
                    }
                    return;
                }
            }
        }
        self.push(Entry::Event {
            event: unnumbered(event),
        });
    }
}
