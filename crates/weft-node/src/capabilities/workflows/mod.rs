//! Workflows (`[workflow.NAME]`): Amazon States Language state machines
//! that orchestrate the app's functions, queues, topics and buses.
//!
//! A deploy reads each workflow's definition from its artifact
//! (`workflow:NAME`, uploaded by the CLI), validates it as Step Functions
//! does and checks that what its Tasks name is declared; a definition that
//! fails refuses the deploy. Executions run on the interpreter of
//! `weft_workflows` with the effects of `effects.rs`:
//! - **standard** executions are journalled in the storage (`executions.rs`)
//!   and resumed, after a crash or a restart, by whichever node finds them
//!   without a live owner (every node looks every 5 s, so on shared
//!   storage a node that dies leaves its executions to the others);
//! - **express** executions run in memory and answer with their result
//!   (a `[[route]]` with `workflow`, `weft workflows start`).
//!
//! An event sent to `workflow:NAME` (a bus rule, a schedule, an async
//! destination, a store's or a bucket's change) starts an execution with
//! the event's data as its input, named after the event's id, so a
//! delivery made again starts nothing new.

mod effects;
pub mod executions;
pub mod tokens;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde_json::{Value, json};
use weft_manifest::{TargetKind, WorkflowKind};
use weft_store::durable::StorageError;
use weft_workflows::definition::StateMachine;
use weft_workflows::durable::Entry;
use weft_workflows::execution::{Identity, MAX_PAYLOAD, Outcome};

use self::effects::Live;
use self::executions::{DEFINITIONS, EXECUTIONS, Owner, RUNNING, Record, Status};
use super::http::{read_post, reply};
use crate::capability::{
    AdminReply, AdminRequest, AdminRoute, BoxFuture, Capability, DeliveryError, Deploy, Internal, Staged, Workers,
    admin_route,
};
use crate::node::Node;
use weft_runtime::{OutboundFuture, WasiBody};
use weft_telemetry::{SpanContext, SpanKind};

/// One deployed workflow.
pub struct Machine {
    pub name: String,
    pub kind: WorkflowKind,
    /// The definition's file, as the manifest names it.
    pub file: String,
    /// The digest of its definition.
    pub digest: String,
    pub text: Arc<Vec<u8>>,
    pub machine: Arc<StateMachine>,
}

#[derive(Default)]
pub struct Workflows {
    machines: ArcSwap<HashMap<String, Arc<Machine>>>,
    /// The executions running on this node, each with its abort signal.
    running: Mutex<HashMap<String, tokio::sync::watch::Sender<bool>>>,
    /// Whether this process has looked for executions to resume.
    resumed: AtomicBool,
    /// Definitions known to be in the storage, and definitions read back
    /// from it (for executions of earlier deploys), by digest.
    stored: Mutex<HashSet<String>>,
    parsed: Mutex<HashMap<String, Arc<StateMachine>>>,
    tokens: tokens::Tokens,
}

/// A start's answer: the execution's view, and whether this start made it
/// (not a repeated start of one that runs).
pub struct Started {
    pub view: Value,
    pub new: bool,
}

/// Why an execution did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no workflow `{0}` is deployed")]
    NoSuchWorkflow(String),
    #[error("{0}")]
    BadInput(String),
    /// Step Functions' `ExecutionAlreadyExists`: the name is taken by an
    /// execution that has ended, or runs with another input.
    #[error("an execution named `{name}` exists already{}; choose another name", if *.same_input { " and has ended" } else { " with another input" })]
    Exists { name: String, same_input: bool },
    /// Another start of this name is under way (or was cut off): retry.
    #[error("an execution named `{0}` is being started; try again shortly")]
    Starting(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl StartError {
    pub fn status(&self) -> u16 {
        match self {
            StartError::NoSuchWorkflow(_) => 404,
            StartError::BadInput(_) => 400,
            StartError::Exists { .. } => 409,
            StartError::Starting(_) | StartError::Storage(_) => 503,
        }
    }
}

/// A workflow's definition read, validated, and checked against the app:
/// what its Tasks name must be declared in `manifest`.
pub fn check(bytes: &[u8], manifest: &weft_manifest::Manifest) -> Result<StateMachine, Vec<String>> {
    let machine = load(bytes)?;
    let mistakes: Vec<String> = weft_workflows::resource::references(&machine)
        .into_iter()
        .filter(|(kind, name, _)| !declared(manifest, kind, name))
        .map(|(kind, name, location)| {
            format!("{location}: names {kind} `{name}`, which is not declared in this app; declare [{kind}.{name}] or fix the name")
        })
        .collect();
    if mistakes.is_empty() {
        Ok(machine)
    } else {
        Err(mistakes)
    }
}

/// A definition's bytes read and validated: the machine, or the mistakes.
pub fn load(bytes: &[u8]) -> Result<StateMachine, Vec<String>> {
    let document: Value = serde_json::from_slice(bytes).map_err(|e| {
        vec![format!(
            "not JSON ({e}); an Amazon States Language definition is a JSON object"
        )]
    })?;
    weft_workflows::validate::load(&document).map_err(|mistakes| mistakes.iter().map(|m| m.to_string()).collect())
}

/// Whether `manifest` declares the `kind` named `name` a definition names.
fn declared(manifest: &weft_manifest::Manifest, kind: &str, name: &str) -> bool {
    match kind {
        "function" => manifest.function(name).is_some(),
        "queue" => manifest.queue(name).is_some(),
        "topic" => manifest.topics.iter().any(|t| t.name == name),
        "bus" => manifest.all_buses().iter().any(|b| b.name == name),
        "workflow" => manifest.workflow(name).is_some(),
        _ => false,
    }
}

impl Workflows {
    /// The deployed workflow `name`.
    pub fn machine(&self, name: &str) -> Option<Arc<Machine>> {
        self.machines.load().get(name).cloned()
    }

    /// Plans every workflow of a deploy: each definition read from its
    /// artifact, validated, and checked against the manifest.
    fn machines_of(&self, node: &Node, deploy: &Deploy) -> Result<HashMap<String, Arc<Machine>>, String> {
        let mut machines = HashMap::new();
        let mut mistakes = Vec::new();
        for w in &deploy.manifest.workflows {
            let at = format!("workflow `{}` ({})", w.name, w.definition);
            let key = format!("workflow:{}", w.name);
            let Some(digest) = deploy.artifacts.get(&key) else {
                mistakes.push(format!(
                    "{at}: no definition was given for it (artifact `{key}`); `weft deploy` uploads it"
                ));
                continue;
            };
            let bytes = match node.artifacts.get(digest) {
                Ok(b) => b,
                Err(_) => {
                    mistakes.push(format!(
                        "{at}: its definition {digest} is not stored: upload it with PUT /v1/artifacts/{digest} first"
                    ));
                    continue;
                }
            };
            let machine = match check(&bytes, &deploy.manifest) {
                Ok(m) => m,
                Err(found) => {
                    mistakes.extend(found.into_iter().map(|m| format!("{at}: {m}")));
                    continue;
                }
            };
            if w.kind == WorkflowKind::Express {
                for (resource, location) in weft_workflows::resource::resources(&machine) {
                    if resource.ends_with(".waitForTaskToken") || resource.contains(".sync") {
                        mistakes.push(format!(
                            "{at}: {location}: an express workflow cannot wait ({resource}), as on Step Functions; make the workflow `type = \"standard\"` or call without waiting"
                        ));
                    }
                }
            }
            machines.insert(
                w.name.clone(),
                Arc::new(Machine {
                    name: w.name.clone(),
                    kind: w.kind,
                    file: w.definition.clone(),
                    digest: digest.to_string(),
                    text: Arc::new(bytes),
                    machine: Arc::new(machine),
                }),
            );
        }
        if mistakes.is_empty() {
            Ok(machines)
        } else {
            Err(format!(
                "{} mistake(s) in the workflows:\n  {}",
                mistakes.len(),
                mistakes.join("\n  ")
            ))
        }
    }

    /// Keeps a definition in the storage, once, so its executions can be
    /// resumed after it is deployed no more.
    async fn store_definition(&self, node: &Node, machine: &Machine) -> Result<(), StorageError> {
        if self
            .stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&machine.digest)
        {
            return Ok(());
        }
        match node
            .storage
            .create(DEFINITIONS, &machine.digest, machine.text.to_vec())
            .await
        {
            Ok(_) | Err(StorageError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        self.stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(machine.digest.clone());
        Ok(())
    }

    /// The definition with `digest`: deployed now, read before, or read
    /// from the storage.
    async fn definition(&self, node: &Node, digest: &str) -> Result<Arc<StateMachine>, String> {
        if let Some(m) = self.machines.load().values().find(|m| m.digest == digest) {
            return Ok(m.machine.clone());
        }
        if let Some(m) = self.parsed.lock().unwrap_or_else(|p| p.into_inner()).get(digest) {
            return Ok(m.clone());
        }
        let bytes = node
            .storage
            .get(DEFINITIONS, digest)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("its definition {digest} is not in the storage"))?
            .value;
        let machine = Arc::new(load(&bytes).map_err(|m| m.join("; "))?);
        self.parsed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.to_string(), machine.clone());
        Ok(machine)
    }

    /// Claims `id` for this node: false if it runs here already. Its abort
    /// signal is kept until the driver [`Workflows::spawn`] starts ends.
    fn claim(&self, id: &str) -> Option<tokio::sync::watch::Receiver<bool>> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.contains_key(id) {
            return None;
        }
        let (abort, aborted) = tokio::sync::watch::channel(false);
        running.insert(id.to_string(), abort);
        Some(aborted)
    }

    fn unclaim(&self, id: &str) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Runs claimed `record` on this node until it ends (or the node stops).
    fn spawn(
        self: &Arc<Self>,
        node: &Arc<Node>,
        record: Record,
        machine: Arc<StateMachine>,
        aborted: tokio::sync::watch::Receiver<bool>,
    ) {
        let id = record.id();
        let (node, workflows) = (node.clone(), self.clone());
        node.clone().background.spawn(move |stop| async move {
            executions::drive(node, workflows.clone(), record, machine, aborted, stop).await;
            workflows.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
    }

    /// Starts a standard execution of `machine`; an express one runs to
    /// its end first.
    pub async fn start(
        self: &Arc<Self>,
        node: &Arc<Node>,
        workflow: &str,
        name: Option<String>,
        input: Value,
        parent: Option<&SpanContext>,
    ) -> Result<Started, StartError> {
        let machine = self
            .machine(workflow)
            .ok_or_else(|| StartError::NoSuchWorkflow(workflow.to_string()))?;
        let size = serde_json::to_vec(&input).map_or(usize::MAX, |b| b.len());
        if size > MAX_PAYLOAD {
            return Err(StartError::BadInput(format!(
                "the input is {size} bytes, more than the {MAX_PAYLOAD} an execution may take"
            )));
        }
        let name = name.unwrap_or_else(|| node.new_request_id());
        executions::check_name(&name).map_err(StartError::BadInput)?;
        if machine.kind == WorkflowKind::Express {
            let (_, ended) = express(node, &machine, &name, input, parent).await;
            return Ok(Started {
                view: ended.view(),
                new: true,
            });
        }
        self.store_definition(node, &machine).await?;
        let record = Record {
            workflow: workflow.to_string(),
            name: name.clone(),
            status: Status::Running,
            input,
            definition: machine.digest.clone(),
            started_ms: jiff::Timestamp::now().as_millisecond(),
            redrives: 0,
            trace: node.tracing.then(|| SpanContext::child_of(parent).traceparent()),
            trace_parent: parent.map(SpanContext::traceparent),
            stopped_ms: None,
            output: None,
            error: None,
            cause: None,
        };
        let id = record.id();
        // Claimed here first, so a resume pass does not take it meanwhile.
        let Some(aborted) = self.claim(&id) else {
            return self
                .existing(node, &id, &record.input)
                .await
                .map(|view| Started { view, new: false });
        };
        match self.create(node, &record).await {
            Ok(()) => {
                let view = record.view();
                self.spawn(node, record, machine.machine.clone(), aborted);
                Ok(Started { view, new: true })
            }
            Err(e) => {
                self.unclaim(&id);
                match e {
                    StartError::Exists { .. } => self
                        .existing(node, &id, &record.input)
                        .await
                        .map(|view| Started { view, new: false }),
                    e => Err(e),
                }
            }
        }
    }

    /// The running index entry, then the record: an execution is never in
    /// the storage without the entry that gets it resumed.
    async fn create(&self, node: &Node, record: &Record) -> Result<(), StartError> {
        let id = record.id();
        let taken = || StartError::Exists {
            name: record.name.clone(),
            same_input: false,
        };
        match node.storage.create(RUNNING, &id, Owner::this(node)).await {
            Ok(_) => {}
            Err(StorageError::Conflict { .. }) => return Err(taken()),
            Err(e) => return Err(e.into()),
        }
        let value = serde_json::to_vec(record).unwrap_or_default();
        match node.storage.create(EXECUTIONS, &id, value).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // Ours, made just now: an ended execution holds the name.
                let _ = node.storage.delete(RUNNING, &id).await;
                Err(match e {
                    StorageError::Conflict { .. } => taken(),
                    e => e.into(),
                })
            }
        }
    }

    /// What a start of a name in use answers: the same execution if it
    /// runs with this input (as Step Functions answers), else
    /// `ExecutionAlreadyExists`; a start cut off before its record is a
    /// start under way.
    async fn existing(&self, node: &Node, id: &str, input: &Value) -> Result<Value, StartError> {
        let name = id.split_once(':').map_or(id, |(_, n)| n).to_string();
        match executions::record(node, id).await? {
            Some((existing, _)) if existing.input == *input && existing.status == Status::Running => {
                Ok(existing.view())
            }
            Some((existing, _)) => Err(StartError::Exists {
                name,
                same_input: existing.input == *input,
            }),
            None => Err(StartError::Starting(name)),
        }
    }

    /// Resumes the executions whose owner is gone: every other owner, on
    /// storage this node does not share; on shared storage, owners that
    /// are no longer among the live nodes.
    async fn resume(self: &Arc<Self>, node: &Arc<Node>) -> Result<usize, StorageError> {
        let keys = node.storage.keys(RUNNING, "").await?;
        if keys.is_empty() {
            return Ok(0);
        }
        let live: HashSet<String> = match node.storage.is_shared() {
            true => node.nodes().await?.into_iter().map(|n| n.id).collect(),
            false => HashSet::from([node.node_id().to_string()]),
        };
        let mut resumed = 0;
        for id in keys {
            // Ours and running, or being started: nothing to do.
            let Some(aborted) = self.claim(&id) else {
                continue;
            };
            match self.take_over(node, &id, &live).await {
                Ok(Some((record, machine))) => {
                    tracing::info!("resuming execution {id}");
                    self.spawn(node, record, machine, aborted);
                    resumed += 1;
                }
                Ok(None) => self.unclaim(&id),
                Err(e) => {
                    self.unclaim(&id);
                    return Err(e);
                }
            }
        }
        Ok(resumed)
    }

    /// Moves a claimed execution whose owner is gone (or is this node, not
    /// running it: a run that stopped on a storage error) to this node:
    /// its record and definition, if it is to run.
    async fn take_over(
        &self,
        node: &Arc<Node>,
        id: &str,
        live: &HashSet<String>,
    ) -> Result<Option<(Record, Arc<StateMachine>)>, StorageError> {
        let Some(entry) = node.storage.get(RUNNING, id).await? else {
            return Ok(None);
        };
        let owner = serde_json::from_slice::<Owner>(&entry.value)
            .map(|o| o.node)
            .unwrap_or_default();
        if owner != node.node_id() && live.contains(&owner) {
            return Ok(None);
        }
        match node
            .storage
            .update(RUNNING, id, Owner::this(node), entry.revision)
            .await
        {
            Ok(_) => {}
            Err(StorageError::Conflict { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        let record = match executions::record(node, id).await? {
            Some((record, _)) if record.status == Status::Running => record,
            // Ended, or never made (a start cut off): nothing to run.
            _ => {
                node.storage.delete(RUNNING, id).await?;
                return Ok(None);
            }
        };
        match self.definition(node, &record.definition).await {
            Ok(machine) => Ok(Some((record, machine))),
            Err(why) => {
                tracing::warn!("execution {id} cannot be resumed now: {why}");
                Ok(None)
            }
        }
    }

    /// Runs a failed or stopped standard execution again from where it
    /// ended, as Step Functions' RedriveExecution: what succeeded is kept,
    /// the tasks that failed run again, an answer a task token waits for
    /// is asked again.
    pub async fn redrive(self: &Arc<Self>, node: &Arc<Node>, id: &str) -> Result<Record, AdminReply> {
        let Some((record, revision)) = executions::record(node, id).await.map_err(storage_reply)? else {
            return Err(AdminReply::error(404, format!("no execution `{id}`")));
        };
        if !matches!(record.status, Status::Failed | Status::Aborted) {
            return Err(AdminReply::error(
                409,
                format!(
                    "execution `{id}` is {:?}; only a FAILED or ABORTED one is redriven",
                    record.status
                ),
            ));
        }
        let machine = self
            .definition(node, &record.definition)
            .await
            .map_err(|why| AdminReply::error(503, format!("execution `{id}` cannot be redriven: {why}")))?;
        let Some(aborted) = self.claim(id) else {
            return Err(AdminReply::error(409, format!("execution `{id}` runs already")));
        };
        let redriven = async {
            let count = record.redrives + 1;
            // The journal says so first: a redrive cut off here leaves the
            // execution as it was, and a later one marks it again.
            let event = json!({
                "timestamp": jiff::Timestamp::now().to_string(),
                "type": "ExecutionRedriven",
                "executionRedrivenEventDetails": { "redriveCount": count },
            });
            executions::append_after(node, id, vec![Entry::Redrive { count }, Entry::Event { event }])
                .await
                .map_err(|e| AdminReply::error(503, e))?;
            self.tokens
                .forget_unanswered(&node.storage, id)
                .await
                .map_err(storage_reply)?;
            match node.storage.create(RUNNING, id, Owner::this(node)).await {
                Ok(_) | Err(StorageError::Conflict { .. }) => {}
                Err(e) => return Err(storage_reply(e)),
            }
            let mut again = record.clone();
            again.status = Status::Running;
            again.redrives = count;
            again.stopped_ms = None;
            again.output = None;
            again.error = None;
            again.cause = None;
            let value = serde_json::to_vec(&again).unwrap_or_default();
            match node.storage.update(EXECUTIONS, id, value, revision).await {
                Ok(_) => Ok(again),
                Err(StorageError::Conflict { .. }) => Err(AdminReply::error(
                    409,
                    format!("execution `{id}` changed while it was redriven; try again"),
                )),
                Err(e) => Err(storage_reply(e)),
            }
        };
        match redriven.await {
            Ok(again) => {
                self.spawn(node, again.clone(), machine, aborted);
                Ok(again)
            }
            Err(e) => {
                self.unclaim(id);
                Err(e)
            }
        }
    }

    /// Stops a running execution: `ABORTED`, with an `ExecutionAborted`
    /// event at the end of its history.
    pub async fn stop(
        &self,
        node: &Arc<Node>,
        id: &str,
        error: Option<String>,
        cause: Option<String>,
    ) -> Result<Record, AdminReply> {
        let Some((record, _)) = executions::record(node, id).await.map_err(storage_reply)? else {
            return Err(AdminReply::error(404, format!("no execution `{id}`")));
        };
        if record.status != Status::Running {
            return Ok(record);
        }
        // The record decides between this stop and the run ending: only
        // the one that ends it writes the history's last event.
        let details = json!({ "error": error, "cause": cause });
        let ended = executions::end(node, id, Status::Aborted, None, error.map(|e| (e, cause)))
            .await
            .map_err(storage_reply)?;
        let Some((record, won)) = ended else {
            return Err(AdminReply::error(404, format!("no execution `{id}`")));
        };
        if won {
            if let Some(abort) = self.running.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
                abort.send_replace(true);
            }
            let event = json!({
                "timestamp": jiff::Timestamp::now().to_string(),
                "type": "ExecutionAborted",
                "executionAbortedEventDetails": details,
            });
            if let Err(e) = executions::append_after(node, id, vec![Entry::Event { event }]).await {
                tracing::warn!("execution {id} was stopped, but its history's last event was not written: {e}");
            }
        }
        Ok(record)
    }
}

fn storage_reply(e: StorageError) -> AdminReply {
    AdminReply::error(503, e.to_string())
}

/// The span of a whole execution, from its start to its end, kept once it
/// has ended (its steps' spans are its children).
fn execution_span(node: &Node, record: &Record) {
    let Some(context) = record.trace.as_deref().and_then(|t| SpanContext::parse(t, None)) else {
        return;
    };
    let parent = record.trace_parent.as_deref().and_then(|t| SpanContext::parse(t, None));
    let name = format!("execute {}", record.workflow);
    let mut span = weft_telemetry::Span::new(
        &context,
        parent.as_ref(),
        name,
        SpanKind::Internal,
        record.started_ms.saturating_mul(1000),
    );
    let stopped = record
        .stopped_ms
        .unwrap_or_else(|| jiff::Timestamp::now().as_millisecond());
    span.duration_us = (stopped.saturating_sub(record.started_ms).max(0) as u64).saturating_mul(1000);
    span.error = record.error.clone();
    span.attributes.insert("weft.workflow".into(), json!(record.workflow));
    span.attributes
        .insert("weft.workflow.execution".into(), json!(record.id()));
    span.attributes
        .insert("weft.workflow.status".into(), json!(record.status));
    node.keep_spans(vec![span]);
}

/// Runs an express execution of `machine` to its end, in memory: how it
/// ended, and its record as `describe` would show it (kept nowhere).
pub async fn express(
    node: &Arc<Node>,
    machine: &Machine,
    name: &str,
    input: Value,
    parent: Option<&SpanContext>,
) -> (Outcome, Record) {
    let started = jiff::Timestamp::now().as_millisecond();
    let outcome = match shared(node) {
        Some(workflows) => run_express(node, workflows, machine, name, input.clone(), parent).await,
        None => (
            Outcome::Failed(weft_workflows::execution::Failure::runtime("workflows are not running")),
            None,
        ),
    };
    let (outcome, trace) = outcome;
    let (status, output, error, cause) = match &outcome {
        Outcome::Succeeded(output) => (Status::Succeeded, Some(output.clone()), None, None),
        Outcome::Failed(f) => (Status::Failed, None, Some(f.error.clone()), f.cause.clone()),
    };
    let record = Record {
        workflow: machine.name.clone(),
        name: name.to_string(),
        status,
        input,
        definition: machine.digest.clone(),
        started_ms: started,
        redrives: 0,
        trace: trace.as_ref().map(SpanContext::traceparent),
        trace_parent: parent.map(SpanContext::traceparent),
        stopped_ms: Some(jiff::Timestamp::now().as_millisecond()),
        output,
        error,
        cause,
    };
    execution_span(node, &record);
    (outcome, record)
}

/// The run of an express execution: how it ended, and its span.
async fn run_express(
    node: &Arc<Node>,
    workflows: Arc<Workflows>,
    machine: &Machine,
    name: &str,
    input: Value,
    parent: Option<&SpanContext>,
) -> (Outcome, Option<SpanContext>) {
    let id = format!("{}:{name}", machine.name);
    let live = Live {
        node: node.clone(),
        execution: id.clone(),
        workflow: machine.name.clone(),
        express: true,
        workflows,
        // Express executions give out no task tokens.
        token_key: Arc::new(Vec::new()),
        redrives: 0,
        trace: node.tracing.then(|| SpanContext::child_of(parent)),
    };
    let identity = Identity {
        id: format!("weft:execution:{id}"),
        name: name.to_string(),
        machine: machine.name.clone(),
        started: None,
    };
    let outcome = weft_workflows::execution::run_with(&machine.machine, identity, input, &live, false)
        .await
        .outcome;
    (outcome, live.trace)
}

/// How long an express route waits for its request's body.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Answers a request to a route whose target is an express workflow: the
/// request's JSON body is the input (none is `{}`); the output is the
/// answer (200), a failure a 500 with its `error` and `cause`.
pub async fn answer<B>(
    node: &Arc<Node>,
    workflow: &str,
    request: hyper::Request<B>,
) -> hyper::Response<crate::body::Body>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(machine) = node.capability::<Workflows>().and_then(|w| w.machine(workflow)) else {
        return crate::body::error(500, &format!("no workflow `{workflow}` is deployed"), None);
    };
    let headers = request.headers().clone();
    // A body sent slowly, or never finished, does not hold the connection.
    let read = Limited::new(request.into_body(), MAX_PAYLOAD).collect();
    let body = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return crate::body::error(
                413,
                &format!("the body is larger than {MAX_PAYLOAD} bytes, the most a workflow's input may be"),
                None,
            );
        }
        Err(_) => {
            return crate::body::error(
                408,
                &format!("the body did not arrive within {}s", BODY_TIMEOUT.as_secs()),
                None,
            );
        }
    };
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return crate::body::error(
                    400,
                    &format!("the body is not JSON ({e}); workflow `{workflow}` takes JSON"),
                    None,
                );
            }
        }
    };
    let name = node.new_request_id();
    let parent = crate::telemetry::incoming(&headers);
    let mut response = match express(node, &machine, &name, input, parent.as_ref()).await.0 {
        Outcome::Succeeded(output) => crate::body::json(200, &output),
        Outcome::Failed(f) => crate::body::json(500, &json!({ "error": f.error, "cause": f.cause })),
    };
    if let Ok(v) = http::HeaderValue::from_str(&format!("{workflow}:{name}")) {
        response.headers_mut().insert("weft-workflow-execution", v);
    }
    response
}

/// The input an event starts an execution with: its data as JSON, or as
/// a JSON string if it is not JSON.
fn input_of(event: &weft_events::CloudEvent) -> Value {
    if event.data.is_empty() {
        return json!({});
    }
    serde_json::from_slice(&event.data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&event.data).into_owned()))
}

/// How often a node looks for executions to resume: those whose node is
/// gone (once unseen for `cluster::GONE_AFTER`), and its own that it
/// dropped when their journal could not be written.
const RESUME_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// This deploy's workflows, put in place when it starts.
struct Deployed {
    machines: HashMap<String, Arc<Machine>>,
}

impl Staged<Node> for Deployed {
    fn start(&self, node: &Arc<Node>, _deploy: &Deploy, _workers: &Workers) {
        let Some(this) = shared(node) else {
            return;
        };
        this.machines.store(Arc::new(self.machines.clone()));
        if !this.resumed.swap(true, Ordering::SeqCst) {
            let node = node.clone();
            node.clone().background.spawn(move |mut stop| async move {
                loop {
                    if let Err(e) = this.resume(&node).await {
                        tracing::warn!("looking for workflow executions to resume failed: {e}");
                    }
                    // Again and again: on storage shared with other nodes,
                    // one that dies leaves its executions to the others,
                    // and a run whose journal could not be written was
                    // dropped here, to be resumed.
                    tokio::select! {
                        () = stop.stopped() => return,
                        () = tokio::time::sleep(RESUME_EVERY) => {}
                    }
                }
            });
        }
    }
}

/// The registered [`Workflows`] as an `Arc`, to spawn executions from it.
fn shared(node: &Node) -> Option<Arc<Workflows>> {
    node.capabilities().iter().find_map(|c| {
        let any: Arc<dyn std::any::Any + Send + Sync> = c.clone();
        any.downcast::<Workflows>().ok()
    })
}

impl Capability<Node> for Workflows {
    fn name(&self) -> &'static str {
        "workflows"
    }

    fn plan<'a>(
        &'a self,
        node: &'a Arc<Node>,
        deploy: &'a mut Deploy,
    ) -> BoxFuture<'a, Result<Box<dyn Staged<Node>>, String>> {
        Box::pin(async move {
            let machines = self.machines_of(node, deploy)?;
            let shape = |m: &Machine| (m.kind, m.digest.clone());
            let before: Vec<(String, (WorkflowKind, String))> = self
                .machines
                .load()
                .values()
                .map(|m| (m.name.clone(), shape(m)))
                .collect();
            let after: Vec<(String, (WorkflowKind, String))> =
                machines.values().map(|m| (m.name.clone(), shape(m))).collect();
            let (mut before, mut after) = (before, after);
            before.sort_by(|a, b| a.0.cmp(&b.0));
            after.sort_by(|a, b| a.0.cmp(&b.0));
            deploy.diff("workflow", &before, &after);
            Ok(Box::new(Deployed { machines }) as Box<dyn Staged<Node>>)
        })
    }

    fn delivers(&self) -> Option<TargetKind> {
        Some(TargetKind::Workflow)
    }

    /// `http://WORKFLOW.workflow.weft.internal/`, for a function granted
    /// `workflow:WORKFLOW`: Step Functions' `StartExecution`,
    /// `SendTaskSuccess`, `SendTaskFailure` and `SendTaskHeartbeat`.
    fn internal(&self) -> Option<Internal> {
        Some(Internal {
            suffix: "workflow",
            grant: Some(TargetKind::Workflow),
            verb: "call",
        })
    }

    fn call(
        &self,
        node: &Arc<Node>,
        _caller: &Arc<crate::deployment::Deployed>,
        name: &str,
        request: http::Request<WasiBody>,
    ) -> OutboundFuture {
        let (node, workflow) = (node.clone(), name.to_string());
        Box::pin(async move {
            let refuse = format!("call workflow `{workflow}` with POST");
            let (parts, body) = match read_post(request, refuse, "a request").await {
                Ok(read) => read,
                Err(answer) => return answer,
            };
            let target = parts
                .headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .map(|t| t.trim_start_matches("AWSStepFunctions.").to_string())
                .unwrap_or_else(|| parts.uri.path().trim_matches('/').to_string());
            let (status, answer) = internal_call(&node, &workflow, &target, &body).await;
            reply(status, answer)
        })
    }

    /// Starts an execution with the event's data as input, named after the
    /// event; an express one runs in the background.
    fn deliver<'a>(
        &'a self,
        node: &'a Arc<Node>,
        name: &'a str,
        event: weft_events::CloudEvent,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let Some(workflows) = shared(node) else {
                return Err(DeliveryError::NoTarget("workflows are not running".into()));
            };
            let Some(machine) = workflows.machine(name) else {
                return Err(DeliveryError::NoTarget(format!("no workflow `{name}` is deployed")));
            };
            let input = input_of(&event);
            let execution = executions::name_of_event(&event.id);
            let parent = weft_events::trace::of_extensions(&event.extensions);
            if machine.kind == WorkflowKind::Express {
                let node = node.clone();
                node.clone().background.spawn(move |_| async move {
                    if let (Outcome::Failed(f), _) = express(&node, &machine, &execution, input, parent.as_ref()).await
                    {
                        tracing::warn!("express execution {}:{execution} failed: {}", machine.name, f.error);
                    }
                });
                return Ok(());
            }
            match workflows
                .start(node, name, Some(execution), input, parent.as_ref())
                .await
            {
                // A delivery made again finds the execution it started.
                Ok(_) | Err(StartError::Exists { same_input: true, .. }) => Ok(()),
                Err(StartError::Storage(e)) => Err(DeliveryError::Storage(e)),
                Err(e) => Err(DeliveryError::Refused(e.to_string())),
            }
        })
    }

    fn admin_routes(&self) -> Vec<AdminRoute<Node>> {
        use http::Method;
        vec![
            admin_route(
                Method::GET,
                "/v1/workflows",
                |node, _| async move { list_workflows(&node) },
            ),
            admin_route(
                Method::POST,
                "/v1/workflows/{workflow}/executions",
                |node, r| async move { start(&node, &r).await },
            ),
            admin_route(
                Method::GET,
                "/v1/workflows/{workflow}/executions",
                |node, r| async move { list_executions(&node, &r).await },
            ),
            admin_route(Method::GET, "/v1/executions/{execution}", |node, r| async move {
                describe(&node, r.param("execution")).await
            }),
            admin_route(
                Method::GET,
                "/v1/executions/{execution}/history",
                |node, r| async move { history(&node, &r).await },
            ),
            admin_route(Method::POST, "/v1/executions/{execution}/stop", |node, r| async move {
                stop(&node, &r).await
            }),
            admin_route(
                Method::POST,
                "/v1/executions/{execution}/redrive",
                |node, r| async move {
                    let workflows = workflows_of(&node)?;
                    let record = workflows.redrive(&node, execution_id(r.param("execution"))).await?;
                    Ok(AdminReply::ok(record.view()))
                },
            ),
            admin_route(Method::POST, "/v1/tasks/{action}", |node, r| async move {
                let action = match r.param("action") {
                    "success" => "SendTaskSuccess",
                    "failure" => "SendTaskFailure",
                    "heartbeat" => "SendTaskHeartbeat",
                    other => {
                        return Err(AdminReply::error(
                            404,
                            format!("no task operation `{other}`: use success, failure or heartbeat"),
                        ));
                    }
                };
                let (status, answer) = answer_token(&node, None, action, &r.body).await;
                Ok(AdminReply::with_status(status, answer))
            }),
        ]
    }
}

type Reply = Result<AdminReply, AdminReply>;

/// A JSON value that Step Functions' API sends as a string of JSON
/// (`output`, `input`), or JSON itself.
fn json_field(value: Option<&Value>) -> Result<Option<Value>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => serde_json::from_str(text)
            .map(Some)
            .map_err(|e| format!("is a string that is not JSON ({e})")),
        Some(other) => Ok(Some(other.clone())),
    }
}

/// `SendTaskSuccess`, `SendTaskFailure` or `SendTaskHeartbeat` with a body
/// of Step Functions' shape; `only` limits the token to one workflow's
/// executions (a function's internal address).
async fn answer_token(node: &Arc<Node>, only: Option<&str>, action: &str, body: &[u8]) -> (u16, Value) {
    let refuse = |status: u16, code: &str, message: String| (status, json!({ "error": message, "code": code }));
    let Some(workflows) = shared(node) else {
        return refuse(503, "ServiceUnavailable", "workflows are not running".into());
    };
    let body: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return refuse(
                400,
                "InvalidRequest",
                format!("{action} takes a JSON object with taskToken"),
            );
        }
    };
    let Some(token) = body.get("taskToken").and_then(Value::as_str) else {
        return refuse(
            400,
            "InvalidRequest",
            format!("{action} needs taskToken, the task's $$.Task.Token"),
        );
    };
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_string);
    let answer = match action {
        "SendTaskSuccess" => match json_field(body.get("output")) {
            Ok(output) => tokens::Answer::Success(output.unwrap_or(Value::Null)),
            Err(why) => return refuse(400, "InvalidOutput", format!("output {why}")),
        },
        "SendTaskFailure" => tokens::Answer::Failure {
            error: text("error"),
            cause: text("cause"),
        },
        _ => tokens::Answer::Heartbeat,
    };
    if let Some(only) = only {
        // The token must be for an execution of the workflow called.
        let prefix = format!("{only}:");
        let named = token
            .split('.')
            .next()
            .and_then(|p| base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, p).ok())
            .is_some_and(|e| e.starts_with(prefix.as_bytes()));
        if !named {
            return refuse(
                403,
                "AccessDenied",
                format!(
                    "the task token is not one of workflow `{only}`; call the address of the workflow that gave it out"
                ),
            );
        }
    }
    match workflows.tokens.answer(node, token, answer).await {
        Ok(_) => (200, json!({})),
        Err(refused) => refuse(refused.status, refused.code, refused.message),
    }
}

/// What a function asks at `WORKFLOW.workflow.weft.internal`.
async fn internal_call(node: &Arc<Node>, workflow: &str, action: &str, body: &[u8]) -> (u16, Value) {
    match action {
        "SendTaskSuccess" | "SendTaskFailure" | "SendTaskHeartbeat" => {
            answer_token(node, Some(workflow), action, body).await
        }
        "StartExecution" => {
            let Some(workflows) = shared(node) else {
                return (503, json!({ "error": "workflows are not running" }));
            };
            let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let input = match json_field(body.get("input")) {
                Ok(input) => input.unwrap_or_else(|| json!({})),
                Err(why) => return (400, json!({ "error": format!("input {why}") })),
            };
            let name = body.get("name").and_then(Value::as_str).map(str::to_string);
            match workflows.start(node, workflow, name, input, None).await {
                Ok(Started { view, .. }) => (
                    200,
                    json!({ "executionArn": view["executionArn"], "startDate": view["startDate"] }),
                ),
                Err(e) => (e.status(), json!({ "error": e.to_string() })),
            }
        }
        other => (
            400,
            json!({ "error": format!("`{other}` is not an operation here: use StartExecution, SendTaskSuccess, SendTaskFailure or SendTaskHeartbeat, as X-Amz-Target or the path") }),
        ),
    }
}

fn workflows_of(node: &Node) -> Result<Arc<Workflows>, AdminReply> {
    shared(node).ok_or_else(|| AdminReply::error(503, "workflows are not running"))
}

/// `WORKFLOW:NAME`, also accepted as `weft:execution:WORKFLOW:NAME`.
fn execution_id(text: &str) -> &str {
    text.strip_prefix("weft:execution:").unwrap_or(text)
}

fn list_workflows(node: &Node) -> Reply {
    let workflows = workflows_of(node)?;
    let mut list: Vec<Value> = workflows
        .machines
        .load()
        .values()
        .map(|m| {
            json!({
                "name": m.name,
                "type": m.kind.as_str(),
                "definition": m.file,
                "digest": m.digest,
                "states": m.machine.states.len(),
            })
        })
        .collect();
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(AdminReply::ok(json!({ "workflows": list })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
}

async fn start(node: &Arc<Node>, request: &AdminRequest) -> Reply {
    let workflows = workflows_of(node)?;
    let body: StartRequest = request.json()?;
    let workflow = request.param("workflow");
    match workflows
        .start(
            node,
            workflow,
            body.name,
            body.input.unwrap_or_else(|| json!({})),
            request.trace().as_ref(),
        )
        .await
    {
        Ok(Started { view, new }) => Ok(AdminReply::with_status(
            if new && view["status"] == "RUNNING" { 201 } else { 200 },
            view,
        )),
        Err(e) => Err(AdminReply::error(e.status(), e.to_string())),
    }
}

async fn list_executions(node: &Arc<Node>, request: &AdminRequest) -> Reply {
    let workflow = request.param("workflow");
    let status = match request.query.get("status") {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            AdminReply::error(
                400,
                format!("status `{s}` is not one of RUNNING, SUCCEEDED, FAILED, ABORTED"),
            )
        })?),
    };
    let limit = request.number("limit", 100)?.clamp(1, 1000) as usize;
    let keys = node
        .storage
        .keys(EXECUTIONS, &format!("{workflow}:"))
        .await
        .map_err(storage_reply)?;
    let mut found = Vec::new();
    for key in keys {
        if let Some((record, _)) = executions::record(node, &key).await.map_err(storage_reply)?
            && status.is_none_or(|s| s == record.status)
        {
            found.push(record);
        }
    }
    // Newest first, as Step Functions lists them.
    found.sort_by_key(|r| std::cmp::Reverse(r.started_ms));
    found.truncate(limit);
    let list: Vec<Value> = found
        .iter()
        .map(|r| {
            let mut v = r.view();
            if let Some(map) = v.as_object_mut() {
                map.remove("input");
                map.remove("output");
            }
            v
        })
        .collect();
    Ok(AdminReply::ok(json!({ "executions": list })))
}

async fn describe(node: &Arc<Node>, id: &str) -> Reply {
    let id = execution_id(id);
    match executions::record(node, id).await.map_err(storage_reply)? {
        Some((record, _)) => Ok(AdminReply::ok(record.view())),
        None => Err(AdminReply::error(404, format!("no execution `{id}`"))),
    }
}

/// The most events one page of a history holds, as on Step Functions.
const HISTORY_PAGE: i64 = 1000;

/// A page of an execution's history: `limit` events (at most 1,000, the
/// default) after the event `after` (0, the default: from the first), and
/// `next`, the `after` of the next page, when there is one.
async fn history(node: &Arc<Node>, request: &AdminRequest) -> Reply {
    let limit = request.number("limit", HISTORY_PAGE)?;
    if !(1..=HISTORY_PAGE).contains(&limit) {
        return Err(AdminReply::error(
            400,
            format!("limit must be from 1 to {HISTORY_PAGE}, found {limit}; follow `next` for more"),
        ));
    }
    let after = request.number("after", 0)?;
    if after < 0 {
        return Err(AdminReply::error(
            400,
            format!("after is an event id, 0 or more, found {after}"),
        ));
    }
    let id = execution_id(request.param("execution"));
    let Some((record, _)) = executions::record(node, id).await.map_err(storage_reply)? else {
        return Err(AdminReply::error(404, format!("no execution `{id}`")));
    };
    let entries = executions::history(&node.storage, id, record.status)
        .await
        .map_err(storage_reply)?;
    let events = weft_workflows::durable::history(&entries);
    let total = events.len();
    // Event ids are their places, from 1.
    let from = usize::try_from(after).unwrap_or(usize::MAX).min(total);
    let page: Vec<Value> = events.into_iter().skip(from).take(limit as usize).collect();
    let until = from + page.len();
    let mut answer = json!({ "events": page });
    if until < total {
        answer["next"] = json!(until);
    }
    Ok(AdminReply::ok(answer))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StopRequest {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    cause: Option<String>,
}

async fn stop(node: &Arc<Node>, request: &AdminRequest) -> Reply {
    let workflows = workflows_of(node)?;
    let body: StopRequest = request.json()?;
    let record = workflows
        .stop(node, execution_id(request.param("execution")), body.error, body.cause)
        .await?;
    Ok(AdminReply::ok(record.view()))
}
