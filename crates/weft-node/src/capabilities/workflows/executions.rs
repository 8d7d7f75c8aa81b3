//! Standard executions, kept in the storage interface so they survive the
//! node: what each is (its record), who runs it (the running index), and
//! what it did (its journal, read back to resume it).
//!
//! Four key-value buckets:
//! - `workflow-executions`: `WORKFLOW:NAME` → [`Record`] (status, input,
//!   output or error, the definition it runs);
//! - `workflow-running`: `WORKFLOW:NAME` → the node running it, for every
//!   execution not yet ended. A node resumes an entry whose node is gone
//!   (any other node, on storage that is not shared) by moving it to itself
//!   with one compare-and-set, so one node resumes it;
//! - `workflow-journal`: `WORKFLOW:NAME/SEQ` → entries of the journal
//!   (`weft_workflows::durable::Entry`), in chunks written once each;
//! - `workflow-definitions`: definition digest → its text, so a resumed
//!   execution runs the definition it started with, whatever was deployed
//!   since.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use weft_store::durable::{Storage, StorageError};
use weft_telemetry::SpanContext;
use weft_workflows::definition::StateMachine;
use weft_workflows::durable::{Durable, Entry, Journal};
use weft_workflows::execution::{Identity, Outcome};

use super::effects::Live;
use crate::capability::Stop;
use crate::node::Node;

pub(super) const EXECUTIONS: &str = "workflow-executions";
pub(super) const RUNNING: &str = "workflow-running";
pub(super) const JOURNAL: &str = "workflow-journal";
pub(super) const DEFINITIONS: &str = "workflow-definitions";

/// How an execution stands, in Step Functions' words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Running,
    Succeeded,
    Failed,
    Aborted,
}

impl Status {
    pub fn parse(text: &str) -> Option<Status> {
        serde_json::from_value(Value::String(text.to_string())).ok()
    }
}

/// One execution, as `workflow-executions` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub workflow: String,
    pub name: String,
    pub status: Status,
    pub input: Value,
    /// The digest of the definition it runs.
    pub definition: String,
    pub started_ms: i64,
    /// How many times it was redriven.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redrives: u32,
    /// Its span (W3C `traceparent`) and the span it continues, when
    /// tracing is on: every step's span is a child of its span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

impl Record {
    pub fn id(&self) -> String {
        format!("{}:{}", self.workflow, self.name)
    }

    /// As `describe` shows it (Step Functions' DescribeExecution fields).
    pub fn view(&self) -> Value {
        let time = |ms: i64| jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).ok();
        let mut view = json!({
            "executionArn": format!("weft:execution:{}", self.id()),
            "id": self.id(),
            "stateMachine": self.workflow,
            "name": self.name,
            "status": self.status,
            "startDate": time(self.started_ms),
            "input": self.input,
        });
        if let Some(stopped) = self.stopped_ms {
            view["stopDate"] = json!(time(stopped));
        }
        if self.redrives > 0 {
            view["redriveCount"] = json!(self.redrives);
        }
        if let Some(output) = &self.output {
            view["output"] = output.clone();
        }
        if let Some(error) = &self.error {
            view["error"] = json!(error);
            view["cause"] = json!(self.cause);
        }
        view
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Who runs an execution, as `workflow-running` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Owner {
    pub node: String,
    pub since_ms: i64,
}

impl Owner {
    pub fn this(node: &Node) -> Vec<u8> {
        let owner = Owner {
            node: node.node_id().to_string(),
            since_ms: jiff::Timestamp::now().as_millisecond(),
        };
        serde_json::to_vec(&owner).unwrap_or_default()
    }
}

/// Step Functions' rule for execution names: 1 to 80 characters, none of
/// them white space, a control character, or one of `<>{}[]?*"#%\^|~`$&,;:/`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > 80 {
        return Err(format!("the execution name {name:?} must be 1 to 80 characters long"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "<>{}[]?*\"#%\\^|~`$&,;:/".contains(*c))
    {
        return Err(format!(
            "the execution name {name:?} holds {c:?}; names may not hold white space, control characters or any of <>{{}}[]?*\"#%\\^|~`$&,;:/"
        ));
    }
    Ok(())
}

/// A name for an execution an event starts: its id, with what names may
/// not hold replaced, so a delivery made again finds the same execution.
pub fn name_of_event(id: &str) -> String {
    let name: String = id
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() || "<>{}[]?*\"#%\\^|~`$&,;:/".contains(c) {
                '-'
            } else {
                c
            }
        })
        .collect();
    let name: String = name.chars().take(80).collect();
    if name.is_empty() { "event".into() } else { name }
}

pub(super) async fn record(node: &Node, id: &str) -> Result<Option<(Record, u64)>, StorageError> {
    let Some(entry) = node.storage.get(EXECUTIONS, id).await? else {
        return Ok(None);
    };
    match serde_json::from_slice::<Record>(&entry.value) {
        Ok(record) => Ok(Some((record, entry.revision))),
        Err(e) => {
            tracing::warn!("execution {id}: its record is unreadable: {e}");
            Ok(None)
        }
    }
}

/// Moves a running execution's record to `status`, unless it ended
/// already: the record as it is after, and whether this call ended it
/// (one compare-and-set decides between a driver and a stop).
pub(super) async fn end(
    node: &Node,
    id: &str,
    status: Status,
    output: Option<Value>,
    error: Option<(String, Option<String>)>,
) -> Result<Option<(Record, bool)>, StorageError> {
    for _ in 0..10 {
        let Some((mut record, revision)) = record(node, id).await? else {
            return Ok(None);
        };
        if record.status != Status::Running {
            return Ok(Some((record, false)));
        }
        record.status = status;
        record.stopped_ms = Some(jiff::Timestamp::now().as_millisecond());
        record.output = output.clone();
        if let Some((e, cause)) = &error {
            record.error = Some(e.clone());
            record.cause = cause.clone();
        }
        let value = serde_json::to_vec(&record).unwrap_or_default();
        match node.storage.update(EXECUTIONS, id, value, revision).await {
            Ok(_) => {
                node.storage.delete(RUNNING, id).await?;
                return Ok(Some((record, true)));
            }
            Err(StorageError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StorageError::Unavailable(format!(
        "execution {id}: its record kept changing"
    )))
}

/// The journal of an execution as its history shows it, for a record
/// whose status is `status`: an ended execution's journal is read again
/// (for up to 2 s) until it has the end the record says, which its driver
/// writes just after it ends the record.
pub async fn history(storage: &Arc<dyn Storage>, id: &str, status: Status) -> Result<Vec<Entry>, StorageError> {
    for _ in 0..100 {
        let (_, entries) = Chunks::open(storage, id).await?;
        let entries = shown(entries, status);
        if status == Status::Running || has_end(&entries) {
            return Ok(entries);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(shown(Chunks::open(storage, id).await?.1, status))
}

/// Whether the journal has an end since its last redrive.
fn has_end(entries: &[Entry]) -> bool {
    entries
        .iter()
        .rev()
        .take_while(|e| !matches!(e, Entry::Redrive { .. }))
        .any(|e| matches!(e, Entry::Event { event } if is_end(event["type"].as_str().unwrap_or_default())))
}

fn is_end(kind: &str) -> bool {
    matches!(kind, "ExecutionSucceeded" | "ExecutionFailed" | "ExecutionAborted")
}

/// The journal's entries as the history shows them for `status`: of the
/// ends a run wrote since the last redrive, only the one the record says.
pub fn shown(mut entries: Vec<Entry>, status: Status) -> Vec<Entry> {
    let kept = match status {
        Status::Running => return entries,
        Status::Succeeded => "ExecutionSucceeded",
        Status::Failed => "ExecutionFailed",
        Status::Aborted => "ExecutionAborted",
    };
    let since = entries
        .iter()
        .rposition(|e| matches!(e, Entry::Redrive { .. }))
        .map_or(0, |i| i + 1);
    let mut at = 0;
    entries.retain(|entry| {
        at += 1;
        let kind = match entry {
            Entry::Event { event } => event["type"].as_str().unwrap_or_default(),
            _ => return true,
        };
        at <= since || !is_end(kind) || kind == kept
    });
    entries
}

/// The journal of one execution, in chunks `ID/SEQ` of `workflow-journal`.
pub struct Chunks {
    storage: Arc<dyn Storage>,
    id: String,
    next: AtomicU64,
}

impl Chunks {
    fn key(&self, seq: u64) -> String {
        format!("{}/{seq:010}", self.id)
    }

    /// Reads the journal of execution `id`; the chunks written next go
    /// after it.
    pub async fn open(storage: &Arc<dyn Storage>, id: &str) -> Result<(Chunks, Vec<Entry>), StorageError> {
        let keys = storage.keys(JOURNAL, &format!("{id}/")).await?;
        let mut entries = Vec::new();
        let mut next = 0;
        for key in keys {
            let Some(seq) = key.rsplit('/').next().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            next = next.max(seq + 1);
            let Some(chunk) = storage.get(JOURNAL, &key).await? else {
                continue;
            };
            match serde_json::from_slice::<Vec<Entry>>(&chunk.value) {
                Ok(read) => entries.extend(read),
                Err(e) => tracing::warn!("execution {id}: journal chunk {key} is unreadable: {e}"),
            }
        }
        let chunks = Chunks {
            storage: storage.clone(),
            id: id.to_string(),
            next: AtomicU64::new(next),
        };
        Ok((chunks, entries))
    }

    async fn write(&self, entries: &[Entry]) -> Result<(), String> {
        let value = serde_json::to_vec(entries).map_err(|e| e.to_string())?;
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        match self.storage.create(JOURNAL, &self.key(seq), value).await {
            Ok(_) => Ok(()),
            // Another node wrote this chunk: it runs the execution now.
            Err(StorageError::Conflict { .. }) => Err(format!(
                "execution {}: another node wrote its journal; it runs there now",
                self.id
            )),
            Err(e) => Err(format!("execution {}: its journal could not be written: {e}", self.id)),
        }
    }
}

#[async_trait::async_trait]
impl Journal for Chunks {
    async fn append(&self, entries: Vec<Entry>) -> Result<(), String> {
        // Chunks stay well inside what one value may hold.
        let limit = (self.storage.max_value() / 2).max(64 * 1024);
        let mut chunk = Vec::new();
        let mut size = 0;
        for entry in entries {
            let len = serde_json::to_string(&entry).map_or(0, |t| t.len());
            if !chunk.is_empty() && size + len > limit {
                self.write(&std::mem::take(&mut chunk)).await?;
                size = 0;
            }
            size += len;
            chunk.push(entry);
        }
        if !chunk.is_empty() {
            self.write(&chunk).await?;
        }
        Ok(())
    }
}

/// Runs a standard execution from its journal to its end, unless `stop`
/// (the node stops) or `abort` (it was stopped) comes first, or its
/// journal cannot be written; then it stays running in the storage, to
/// be resumed.
pub(super) async fn drive(
    node: Arc<Node>,
    workflows: Arc<super::Workflows>,
    record: Record,
    machine: Arc<StateMachine>,
    mut abort: tokio::sync::watch::Receiver<bool>,
    mut stop: Stop,
) {
    let id = record.id();
    let (journal, past) = match Chunks::open(&node.storage, &id).await {
        Ok(opened) => opened,
        Err(e) => {
            tracing::warn!("execution {id} cannot be run now, its journal is unreadable: {e}");
            return;
        }
    };
    let token_key = match workflows.tokens.key(&node.storage).await {
        Ok(key) => key,
        Err(e) => {
            tracing::warn!("execution {id} cannot be run now, the task-token key is unreadable: {e}");
            return;
        }
    };
    let live = Live {
        node: node.clone(),
        execution: id.clone(),
        workflow: record.workflow.clone(),
        express: false,
        workflows,
        token_key,
        redrives: record.redrives,
        trace: record.trace.as_deref().and_then(|t| SpanContext::parse(t, None)),
    };
    let durable = Durable::new(&live, Arc::new(journal), past);
    let identity = Identity {
        id: format!("weft:execution:{id}"),
        name: record.name.clone(),
        machine: record.workflow.clone(),
        started: jiff::Timestamp::from_millisecond(record.started_ms).ok(),
    };
    let run = weft_workflows::execution::run_with(&machine, identity, record.input.clone(), &durable, true);
    let outcome = tokio::select! {
        finished = run => Some(finished.outcome),
        why = durable.broken() => {
            tracing::warn!("{why}; it is resumed later");
            None
        }
        () = stop.stopped() => None,
        _ = abort.wait_for(|a| *a) => None,
    };
    let Some(outcome) = outcome else { return };
    // The record decides: a stop that ended it first keeps its ABORTED,
    // and this run's last events are not written after its own. They are
    // written once the record says the execution ended, off the path of
    // whoever waits for that; a reader of the history waits for them
    // (`history`).
    let ended = match outcome {
        Outcome::Succeeded(output) => end(&node, &id, Status::Succeeded, Some(output), None).await,
        Outcome::Failed(f) => end(&node, &id, Status::Failed, None, Some((f.error, f.cause))).await,
    };
    match ended {
        Ok(Some((ended, true))) => {
            super::execution_span(&node, &ended);
            if let Err(why) = durable.finish().await {
                tracing::warn!("execution {id} ended, but its history's last events were not written: {why}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("execution {id} ended, but its record could not say so: {e}; it is resumed later"),
    }
}

/// Appends one chunk after whatever the journal holds (an execution
/// stopped from outside its driver).
pub(super) async fn append_after(node: &Arc<Node>, id: &str, entries: Vec<Entry>) -> Result<(), String> {
    for _ in 0..10 {
        let (chunks, _) = Chunks::open(&node.storage, id).await.map_err(|e| e.to_string())?;
        match chunks.append(entries.clone()).await {
            Ok(()) => return Ok(()),
            Err(_) => continue,
        }
    }
    Err(format!("execution {id}: its journal kept growing while it was stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> Entry {
        Entry::Event {
            event: json!({ "type": kind }),
        }
    }

    fn kinds(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match e {
                Entry::Event { event } => event["type"].as_str().unwrap_or_default().to_string(),
                Entry::Redrive { .. } => "redrive".into(),
                _ => "other".into(),
            })
            .collect()
    }

    /// A run that ended after a stop ended the record shows the stop's end;
    /// the ends before a redrive stay.
    #[test]
    fn the_history_shows_the_end_the_record_says() {
        let journal = vec![
            event("ExecutionStarted"),
            event("ExecutionFailed"),
            Entry::Redrive { count: 1 },
            event("ExecutionRedriven"),
            event("ExecutionSucceeded"),
            event("ExecutionAborted"),
        ];
        assert_eq!(
            kinds(&shown(journal.clone(), Status::Aborted)),
            [
                "ExecutionStarted",
                "ExecutionFailed",
                "redrive",
                "ExecutionRedriven",
                "ExecutionAborted"
            ]
        );
        assert_eq!(
            kinds(&shown(journal.clone(), Status::Succeeded)),
            [
                "ExecutionStarted",
                "ExecutionFailed",
                "redrive",
                "ExecutionRedriven",
                "ExecutionSucceeded"
            ]
        );
        assert_eq!(shown(journal.clone(), Status::Running).len(), journal.len());
        // An end before the last redrive is not this run's end.
        assert!(has_end(&journal));
        assert!(!has_end(&journal[..4]));
        assert!(has_end(&journal[..2]));
    }
}
