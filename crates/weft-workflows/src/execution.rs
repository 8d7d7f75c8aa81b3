//! The interpreter: runs one execution of a state machine, state by state,
//! with input and output processing, `Retry` and `Catch`, and `Parallel`
//! and `Map` branches run side by side.
//!
//! It knows no function runtime, no clock and no storage: what an
//! execution does to the world (run a task, wait, sleep before a retry,
//! read the time) goes through [`Effects`]. A test gives it a virtual
//! clock and canned task answers; `weft workflows run` gives it mocks; a
//! node gives it functions and durable timers. Every effect carries the
//! [`Step`] it belongs to, a name that is the same each time the same
//! definition runs on the same input, so a journal can answer an effect it
//! already recorded instead of running it again.
//!
//! The execution's history, in Step Functions' event shapes
//! (`ExecutionStarted`, `TaskStateEntered`, `TaskScheduled`, ...), is kept
//! as it goes and returned with the outcome.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Map as JsonMap, Value, json};

use crate::choice;
use crate::definition::{
    Branch, Catcher, DataPath, ItemBatcher, QueryLanguage, Retrier, Setting, State, StateKind, StateMachine,
    Transition, WaitFor,
};
use crate::path::{self, Path, ReferencePath, Template};

/// The largest input or output a state may have, as on Step Functions.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// The most history events an execution may have, as on Step Functions.
pub const MAX_HISTORY: usize = 25_000;

/// How an execution, or a part of one, failed: an error name that `Retry`
/// and `Catch` match, and a cause for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error: String,
    pub cause: Option<String>,
}

impl Failure {
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> Failure {
        Failure {
            error: error.into(),
            cause: Some(cause.into()),
        }
    }

    /// `States.Runtime`: the definition asked for something the data cannot
    /// give (a path that matches nothing, a value of the wrong type). No
    /// `Retry` or `Catch` handles it.
    pub fn runtime(cause: impl Into<String>) -> Failure {
        Failure::new("States.Runtime", cause)
    }

    fn of_path(e: &path::PathError) -> Failure {
        Failure::new(e.error_name(), e.to_string())
    }

    /// The error output a `Catch` passes on.
    fn output(&self) -> Value {
        json!({ "Error": self.error, "Cause": self.cause.clone().unwrap_or_default() })
    }
}

/// Which effect of which state: `StateName#visit` within each enclosing
/// branch, e.g. `Fan#1/0/Charge#2` (the second visit of `Charge` in branch
/// 0 of the first visit of `Fan`), then the attempt for a retried task.
pub type Step = String;

/// What an execution does outside itself.
#[async_trait::async_trait]
pub trait Effects: Send + Sync {
    /// Runs a Task state's `resource` on `input`: its result, or how it
    /// failed (`States.TaskFailed`, `States.Timeout`,
    /// `States.HeartbeatTimeout`, or the task's own error name).
    async fn task(&self, step: &Step, resource: &str, input: Value, limits: TaskLimits) -> Result<Value, Failure>;

    /// The task token of a `.waitForTaskToken` Task's attempt
    /// (`$$.Task.Token`): the same each time the step is run.
    fn task_token(&self, step: &Step) -> String {
        format!("weft-task-token:{step}")
    }

    /// Returns once the time is `until` (a Wait state).
    async fn wait_until(&self, step: &Step, until: jiff::Timestamp);

    /// Returns after `delay` (before a retry).
    async fn sleep(&self, step: &Step, delay: Duration);

    /// The time now.
    fn now(&self) -> jiff::Timestamp;

    /// A random number in `0.0..1.0`, for `JitterStrategy: FULL`.
    fn random(&self, step: &Step) -> f64;

    /// Whether these effects keep the history themselves: then each
    /// event goes to [`Effects::event`] as it happens, and the
    /// [`Finished`] history is empty.
    fn keeps_history(&self) -> bool {
        false
    }

    /// One history event, as it happens (only if [`Effects::keeps_history`]).
    fn event(&self, event: Value) {
        let _ = event;
    }
}

/// A Task's limits, as its state gives them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskLimits {
    /// `TimeoutSeconds` (the interpreter enforces it too).
    pub timeout: Option<Duration>,
    /// `HeartbeatSeconds`: the longest a `.waitForTaskToken` task may go
    /// without `SendTaskHeartbeat`.
    pub heartbeat: Option<Duration>,
}

/// Who the execution is, for the context object `$$`.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The execution's ARN-like id.
    pub id: String,
    /// Its name (unique per state machine).
    pub name: String,
    /// The state machine's name.
    pub machine: String,
    /// When it started, for an execution that is resumed; a new one
    /// starts at the effects' `now`.
    pub started: Option<jiff::Timestamp>,
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    Failed(Failure),
}

impl Outcome {
    /// What `weft workflows run` prints: `{"status": "SUCCEEDED", "output": ...}`
    /// or `{"status": "FAILED", "error": ..., "cause": ...}`.
    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Succeeded(output) => json!({ "status": "SUCCEEDED", "output": output }),
            Outcome::Failed(f) => json!({ "status": "FAILED", "error": f.error, "cause": f.cause }),
        }
    }
}

/// A finished execution: how it ended and what happened on the way.
#[derive(Debug, Clone)]
pub struct Finished {
    pub outcome: Outcome,
    pub history: Vec<Value>,
}

/// Runs one execution of `machine` on `input` to its end, keeping its
/// history.
pub async fn run(machine: &StateMachine, identity: Identity, input: Value, effects: &dyn Effects) -> Finished {
    run_with(machine, identity, input, effects, true).await
}

/// [`run`], keeping the history only if `keep_history`: an express
/// execution keeps none, as on Step Functions.
pub async fn run_with(
    machine: &StateMachine,
    identity: Identity,
    input: Value,
    effects: &dyn Effects,
    keep_history: bool,
) -> Finished {
    let started = identity.started.unwrap_or_else(|| effects.now());
    let execution = Execution {
        keep_history,
        identity,
        input: input.clone(),
        started,
        effects,
        history: Mutex::new(Vec::new()),
        events: AtomicUsize::new(0),
    };
    execution.record("ExecutionStarted", || json!({ "input": input.to_string() }), None);
    let scope = Scope {
        start_at: &machine.start_at,
        states: &machine.states,
    };
    let ran = if size_of(&input) > MAX_PAYLOAD {
        Err(too_large("the execution's input"))
    } else {
        let run = execution.run_scope(scope, input, String::new(), None);
        match machine.timeout_seconds {
            Some(seconds) => execution.within(Duration::from_secs(seconds), run).await,
            None => run.await,
        }
    };
    let outcome = match ran {
        Ok(output) => {
            execution.record("ExecutionSucceeded", || json!({ "output": output.to_string() }), None);
            Outcome::Succeeded(output)
        }
        Err(failure) => {
            execution.record(
                "ExecutionFailed",
                || json!({ "error": failure.error, "cause": failure.cause }),
                None,
            );
            Outcome::Failed(failure)
        }
    };
    let history = execution.history.into_inner().unwrap_or_else(|p| p.into_inner());
    Finished { outcome, history }
}

fn too_large(what: &str) -> Failure {
    Failure::new(
        "States.DataLimitExceeded",
        format!("{what} is larger than {MAX_PAYLOAD} bytes, the most a state may pass on"),
    )
}

/// The bytes `value` takes as JSON, counted without writing them anywhere.
fn size_of(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// The history event of entering `state`: `TaskStateEntered`, ...
fn entered_event(state: &State) -> &'static str {
    match &state.kind {
        StateKind::Pass(_) => "PassStateEntered",
        StateKind::Task(_) => "TaskStateEntered",
        StateKind::Choice(_) => "ChoiceStateEntered",
        StateKind::Wait(_) => "WaitStateEntered",
        StateKind::Succeed => "SucceedStateEntered",
        StateKind::Fail(_) => "FailStateEntered",
        StateKind::Parallel(_) => "ParallelStateEntered",
        StateKind::Map(_) => "MapStateEntered",
    }
}

/// The history event of leaving `state`: `TaskStateExited`, ...
fn exited_event(state: &State) -> &'static str {
    match &state.kind {
        StateKind::Pass(_) => "PassStateExited",
        StateKind::Task(_) => "TaskStateExited",
        StateKind::Choice(_) => "ChoiceStateExited",
        StateKind::Wait(_) => "WaitStateExited",
        StateKind::Succeed => "SucceedStateExited",
        StateKind::Fail(_) => "FailStateExited",
        StateKind::Parallel(_) => "ParallelStateExited",
        StateKind::Map(_) => "MapStateExited",
    }
}

/// The states of a machine or a branch.
#[derive(Clone, Copy)]
struct Scope<'m> {
    start_at: &'m str,
    states: &'m [State],
}

impl<'m> Scope<'m> {
    fn of(branch: &'m Branch) -> Scope<'m> {
        Scope {
            start_at: &branch.start_at,
            states: &branch.states,
        }
    }

    fn state(&self, name: &str) -> Option<&'m State> {
        self.states.iter().find(|s| s.name == name)
    }
}

struct Execution<'a> {
    keep_history: bool,
    identity: Identity,
    input: Value,
    started: jiff::Timestamp,
    effects: &'a dyn Effects,
    history: Mutex<Vec<Value>>,
    /// Events so far, kept or not.
    events: AtomicUsize,
}

/// Where a state runs: inside a Map iteration, its item.
#[derive(Clone)]
struct Item {
    index: usize,
    value: Value,
}

impl<'a> Execution<'a> {
    /// Adds an event to the history (its details made only if it is
    /// kept); false once the history is full.
    /// Events are counted whether or not they are kept, so an express
    /// execution that loops is stopped at the same bound.
    fn record(&self, kind: &str, details: impl FnOnce() -> Value, previous: Option<u64>) -> bool {
        if self.events.fetch_add(1, Ordering::Relaxed) >= MAX_HISTORY {
            return false;
        }
        if !self.keep_history {
            return true;
        }
        let details = details();
        let key = details_key(kind);
        let event = |id: u64| {
            json!({
                "id": id,
                "previousEventId": previous.unwrap_or(id.saturating_sub(1)),
                "timestamp": self.effects.now().to_string(),
                "type": kind,
                key: details,
            })
        };
        if self.effects.keeps_history() {
            // The effects number the events they keep.
            self.effects.event(event(0));
            return true;
        }
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let id = history.len() as u64 + 1;
        history.push(event(id));
        true
    }

    fn history_full(&self) -> bool {
        self.events.load(Ordering::Relaxed) > MAX_HISTORY
    }

    /// Runs `work`, failing with `States.Timeout` if it takes longer than
    /// `limit` by the effects' clock.
    async fn within<T>(
        &self,
        limit: Duration,
        work: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let deadline = self.started.checked_add(limit).unwrap_or(self.started);
        let step: Step = "execution-timeout".into();
        // Biased: a journal that answers both at once (a resumed
        // execution) must give the work's answer, as the first run did.
        tokio::select! {
            biased;
            done = work => done,
            () = self.effects.wait_until(&step, deadline) => Err(Failure::new(
                "States.Timeout",
                format!("the execution ran longer than its TimeoutSeconds ({}s)", limit.as_secs()),
            )),
        }
    }

    /// The context object `$$` for a state (null for a state that never
    /// reads it).
    fn context(&self, state: &State, entered: jiff::Timestamp, retries: u64, item: Option<&Item>) -> Value {
        if !state.reads_context {
            return Value::Null;
        }
        let mut context = json!({
            "Execution": {
                "Id": self.identity.id,
                "Input": self.input,
                "Name": self.identity.name,
                "StartTime": self.started.to_string(),
            },
            "State": {
                "EnteredTime": entered.to_string(),
                "Name": state.name,
                "RetryCount": retries,
            },
            "StateMachine": {
                "Id": format!("weft:workflow:{}", self.identity.machine),
                "Name": self.identity.machine,
            },
        });
        if let Some(item) = item {
            context["Map"] = json!({ "Item": { "Index": item.index, "Value": item.value } });
        }
        context
    }

    /// Runs a scope from its `StartAt` to a terminal state: its output.
    fn run_scope<'s>(
        &'s self,
        scope: Scope<'s>,
        input: Value,
        prefix: String,
        item: Option<Item>,
    ) -> BoxFuture<'s, Result<Value, Failure>> {
        Box::pin(async move {
            let mut visits: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
            let mut name = scope.start_at;
            let mut input = input;
            loop {
                let Some(state) = scope.state(name) else {
                    return Err(Failure::runtime(format!("no state named {name:?}")));
                };
                // Only the states with effects need a step name, which
                // counts their visits.
                let step = match &state.kind {
                    StateKind::Pass(_) | StateKind::Choice(_) | StateKind::Succeed | StateKind::Fail(_) => {
                        String::new()
                    }
                    _ => {
                        let visit = visits.entry(&state.name).or_default();
                        *visit += 1;
                        format!("{prefix}{}#{visit}", state.name)
                    }
                };
                let entered = self.record(
                    entered_event(state),
                    || json!({ "name": state.name, "input": input.to_string() }),
                    None,
                );
                if !entered || self.history_full() {
                    return Err(Failure::new(
                        "States.Runtime",
                        format!("the execution's history reached {MAX_HISTORY} events, the most it may have"),
                    ));
                }
                if state.query_language == QueryLanguage::Jsonata {
                    return Err(Failure::runtime(format!(
                        "state {:?} is written in JSONata, which this interpreter does not run yet; write it in JSONPath",
                        state.name
                    )));
                }
                let (next, output) = self.run_state(state, input, &step, item.as_ref()).await?;
                if size_of(&output) > MAX_PAYLOAD {
                    return Err(too_large(&format!("the output of state {:?}", state.name)));
                }
                self.record(
                    exited_event(state),
                    || json!({ "name": state.name, "output": output.to_string() }),
                    None,
                );
                match next {
                    Some(next) => {
                        name = scope
                            .state(&next)
                            .map(|s| s.name.as_str())
                            .ok_or_else(|| Failure::runtime(format!("no state named {next:?}")))?;
                        input = output;
                    }
                    None => return Ok(output),
                }
            }
        })
    }

    /// Runs one state on `raw` (its input): where to go next (none at the
    /// end of the scope) and its output.
    async fn run_state(
        &self,
        state: &State,
        raw: Value,
        step: &Step,
        item: Option<&Item>,
    ) -> Result<(Option<String>, Value), Failure> {
        let entered = self.effects.now();
        let context = self.context(state, entered, 0, item);
        // The raw input is kept beside the effective one only where a
        // ResultPath (the state's or a catcher's) merges into it; else the
        // input is moved, not copied.
        let keeps_raw = state.result_path.is_some() || state.catch().iter().any(|c| c.result_path.is_some());
        let (raw, effective) = match &state.input_path {
            None if !keeps_raw => (Value::Null, raw),
            path => {
                let effective = select(path.as_ref(), &raw, &context)?;
                (raw, effective)
            }
        };
        match &state.kind {
            StateKind::Pass(pass) => {
                let result = match (&pass.result, &state.parameters) {
                    (Some(result), _) => result.clone(),
                    (None, Some(parameters)) => template(parameters, &effective, &context)?,
                    (None, None) => effective,
                };
                let output = self.finish(state, raw, result, &context)?;
                Ok((next_of(&pass.transition), output))
            }
            StateKind::Succeed => Ok((None, select(state.output_path.as_ref(), &effective, &context)?)),
            StateKind::Fail(fail) => {
                let error = setting_text(fail.error.as_ref(), &effective, &context)?;
                let cause = setting_text(fail.cause.as_ref(), &effective, &context)?;
                Err(Failure {
                    error: error.unwrap_or_else(|| "States.Fail".into()),
                    cause,
                })
            }
            StateKind::Choice(c) => {
                for rule in &c.choices {
                    if choice::holds(&rule.condition, &effective, &context)? {
                        return Ok((
                            Some(rule.next.clone()),
                            select(state.output_path.as_ref(), &effective, &context)?,
                        ));
                    }
                }
                match &c.default {
                    Some(default) => Ok((
                        Some(default.clone()),
                        select(state.output_path.as_ref(), &effective, &context)?,
                    )),
                    None => Err(Failure::new(
                        "States.NoChoiceMatched",
                        format!(
                            "no Choices rule of state {:?} matched, and it has no Default",
                            state.name
                        ),
                    )),
                }
            }
            StateKind::Wait(wait) => {
                let until = match &wait.until {
                    WaitFor::Seconds(seconds) => {
                        let seconds = setting_number(seconds, &effective, &context, "Seconds")?;
                        entered
                            .checked_add(Duration::from_secs(seconds))
                            .map_err(|_| Failure::runtime("the Wait's Seconds go past the last time there is"))?
                    }
                    WaitFor::Timestamp(at) => setting_timestamp(at, &effective, &context)?,
                };
                self.effects.wait_until(step, until).await;
                Ok((
                    next_of(&wait.transition),
                    select(state.output_path.as_ref(), &effective, &context)?,
                ))
            }
            // The states that do work retry it and catch its failures alike.
            StateKind::Task(_) | StateKind::Parallel(_) | StateKind::Map(_) => {
                let transition = state.transition().unwrap_or(&Transition::End);
                let (retry, catch) = (state.retry(), state.catch());
                self.with_retries(state, step, &raw, &effective, entered, item, retry, catch, transition)
                    .await
            }
        }
    }

    /// One attempt at a Task, Parallel or Map state: its output.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        state: &State,
        raw: &Value,
        effective: &Value,
        entered: jiff::Timestamp,
        item: Option<&Item>,
        retries: u64,
        attempt_step: Step,
    ) -> Result<Value, Failure> {
        let raw = raw.clone();
        match &state.kind {
            StateKind::Task(task) => {
                let mut context = self.context(state, entered, retries, item);
                if task.resource.ends_with(".waitForTaskToken")
                    && let Some(map) = context.as_object_mut()
                {
                    map.insert(
                        "Task".into(),
                        json!({ "Token": self.effects.task_token(&attempt_step) }),
                    );
                }
                let input = match &state.parameters {
                    Some(parameters) => template(parameters, effective, &context)?,
                    None => effective.clone(),
                };
                // Step Functions checks a task's input once Parameters are
                // applied, and its result before ResultSelector trims it.
                if size_of(&input) > MAX_PAYLOAD {
                    return Err(too_large(&format!("the input of task {:?}", state.name)));
                }
                let seconds = |setting: Option<&Setting<u64>>, name: &str| -> Result<Option<Duration>, Failure> {
                    setting
                        .map(|s| setting_number(s, effective, &context, name).map(Duration::from_secs))
                        .transpose()
                };
                let timeout = seconds(task.timeout_seconds.as_ref(), "TimeoutSeconds")?;
                let heartbeat = seconds(task.heartbeat_seconds.as_ref(), "HeartbeatSeconds")?;
                let limits = TaskLimits { timeout, heartbeat };
                self.record(
                    "TaskScheduled",
                    || json!({ "resource": task.resource, "parameters": input.to_string() }),
                    None,
                );
                let answer = match timeout {
                    Some(limit) => {
                        let deadline = self.effects.now().checked_add(limit).unwrap_or(entered);
                        let timer: Step = format!("{attempt_step}/timeout");
                        tokio::select! {
                            biased;
                            done = self.effects.task(&attempt_step, &task.resource, input, limits) => done,
                            () = self.effects.wait_until(&timer, deadline) => Err(Failure::new(
                                "States.Timeout",
                                format!("the task ran longer than its TimeoutSeconds ({}s)", limit.as_secs()),
                            )),
                        }
                    }
                    None => self.effects.task(&attempt_step, &task.resource, input, limits).await,
                };
                match &answer {
                    Ok(result) => self.record("TaskSucceeded", || json!({ "output": result.to_string() }), None),
                    Err(f) if matches!(f.error.as_str(), "States.Timeout" | "States.HeartbeatTimeout") => {
                        self.record("TaskTimedOut", || json!({ "error": f.error, "cause": f.cause }), None)
                    }
                    Err(f) => self.record("TaskFailed", || json!({ "error": f.error, "cause": f.cause }), None),
                };
                let result = answer?;
                if size_of(&result) > MAX_PAYLOAD {
                    return Err(too_large(&format!("the result of task {:?}", state.name)));
                }
                self.finish(state, raw, result, &context)
            }
            StateKind::Parallel(parallel) => {
                let context = self.context(state, entered, retries, item);
                let input = match &state.parameters {
                    Some(parameters) => template(parameters, effective, &context)?,
                    None => effective.clone(),
                };
                let branches = parallel.branches.iter().enumerate().map(|(i, branch)| {
                    self.run_scope(
                        Scope::of(branch),
                        input.clone(),
                        format!("{attempt_step}/{i}/"),
                        item.cloned(),
                    )
                });
                let results = futures_util::future::try_join_all(branches).await?;
                let result = Value::Array(results);
                self.finish(state, raw, result, &context)
            }
            StateKind::Map(map) => {
                let context = self.context(state, entered, retries, item);
                let items = match &map.items {
                    Some(Setting::Fixed(items)) => items.clone(),
                    Some(Setting::Path(p)) => match select_path(p, effective, &context)? {
                        Value::Array(items) => items,
                        other => {
                            return Err(Failure::runtime(format!(
                                "the Map's ItemsPath {p} names {}, not an array",
                                kind_of(&other)
                            )));
                        }
                    },
                    Some(Setting::Jsonata(_)) => return Err(Failure::runtime("JSONata Items in a JSONPath state")),
                    None => match &effective {
                        Value::Array(items) => items.clone(),
                        other => {
                            return Err(Failure::runtime(format!(
                                "the Map's input is {}, not an array; name the array with ItemsPath",
                                kind_of(other)
                            )));
                        }
                    },
                };
                let selector = map.item_selector.as_ref().or(state.parameters.as_ref());
                let mut inputs = Vec::with_capacity(items.len());
                for (index, value) in items.into_iter().enumerate() {
                    let item = Item { index, value };
                    let input = match selector {
                        Some(selector) => {
                            let context = self.context(state, entered, retries, Some(&item));
                            template(selector, effective, &context)?
                        }
                        None => item.value.clone(),
                    };
                    inputs.push((item, input));
                }
                let inputs = match &map.item_batcher {
                    Some(batcher) => batch(inputs, batcher, effective, &context)?,
                    None => inputs,
                };
                let at_once = match &map.max_concurrency {
                    Some(m) => setting_number(m, effective, &context, "MaxConcurrency")?,
                    None => 0,
                };
                let total = inputs.len();
                let processor = Scope::of(&map.processor);
                // Made up front (none starts before it is polled), so the
                // stream below holds futures, not closures that make them.
                let iterations: Vec<BoxFuture<'_, (usize, Result<Value, Failure>)>> = inputs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (item, input))| {
                        let prefix = format!("{attempt_step}/{}/", item.index);
                        let iteration = self.run_scope(processor, input, prefix, Some(item));
                        Box::pin(async move { (i, iteration.await) }) as BoxFuture<'_, _>
                    })
                    .collect();
                let limit = if at_once == 0 { total.max(1) } else { at_once as usize };
                use futures_util::StreamExt;
                let tolerated_count = match &map.tolerated_failure_count {
                    Some(c) => Some(setting_number(c, effective, &context, "ToleratedFailureCount")?),
                    None => None,
                };
                let tolerated_percentage = match &map.tolerated_failure_percentage {
                    Some(Setting::Fixed(p)) => Some(*p),
                    Some(Setting::Path(p)) => Some(select_path(p, effective, &context)?.as_f64().ok_or_else(|| {
                        Failure::runtime(format!("ToleratedFailurePercentagePath {p} is not a number"))
                    })?),
                    Some(Setting::Jsonata(_)) => return Err(Failure::runtime("JSONata in a JSONPath state")),
                    None => None,
                };
                let tolerant = tolerated_count.is_some() || tolerated_percentage.is_some();
                let mut results: Vec<Option<Value>> = vec![None; total];
                let mut failures = 0u64;
                let mut running = futures_util::stream::iter(iterations).buffer_unordered(limit);
                while let Some((i, done)) = running.next().await {
                    match done {
                        Ok(output) => results[i] = Some(output),
                        Err(failure) => {
                            if !tolerant || failure.error == "States.Runtime" {
                                return Err(failure);
                            }
                            failures += 1;
                            results[i] = Some(failure.output());
                            let over_count = tolerated_count.is_none_or(|c| failures > c);
                            let over_share =
                                tolerated_percentage.is_none_or(|p| (failures as f64) * 100.0 / (total as f64) > p);
                            if over_count && over_share {
                                return Err(Failure::new(
                                    "States.ExceedToleratedFailureThreshold",
                                    format!("{failures} of {total} iterations failed, more than the Map tolerates"),
                                ));
                            }
                        }
                    }
                }
                let result = Value::Array(results.into_iter().map(|r| r.unwrap_or(Value::Null)).collect());
                self.finish(state, raw, result, &context)
            }
            _ => Err(Failure::runtime(format!("state {:?} has nothing to retry", state.name))),
        }
    }

    /// `ResultSelector`, `ResultPath`, then `OutputPath`: a state's output
    /// from its raw input and its result.
    fn finish(&self, state: &State, raw: Value, result: Value, context: &Value) -> Result<Value, Failure> {
        let result = match &state.result_selector {
            Some(selector) => template(selector, &result, context)?,
            None => result,
        };
        let merged = merge(state.result_path.as_ref(), raw, result)?;
        match &state.output_path {
            None => Ok(merged),
            path => select(path.as_ref(), &merged, context),
        }
    }

    /// Runs `attempt` until it succeeds, retrying as the state's `Retry`
    /// says; a failure left over goes to the first `Catch` that matches it.
    #[allow(clippy::too_many_arguments)]
    async fn with_retries(
        &self,
        state: &State,
        step: &Step,
        raw: &Value,
        effective: &Value,
        entered: jiff::Timestamp,
        item: Option<&Item>,
        retry: &[Retrier],
        catch: &[Catcher],
        transition: &Transition,
    ) -> Result<(Option<String>, Value), Failure> {
        let mut used = vec![0u64; retry.len()];
        let mut retries = 0u64;
        let failure = loop {
            let attempt_step = if retries == 0 {
                step.clone()
            } else {
                format!("{step}.{retries}")
            };
            match self
                .attempt(state, raw, effective, entered, item, retries, attempt_step)
                .await
            {
                Ok(output) => return Ok((next_of(transition), output)),
                Err(failure) => {
                    let Some(i) = retry.iter().position(|r| matches(&r.error_equals, &failure.error)) else {
                        break failure;
                    };
                    let r = &retry[i];
                    if used[i] >= r.max_attempts {
                        break failure;
                    }
                    let mut delay =
                        r.interval_seconds as f64 * r.backoff_rate.powi(used[i].min(i32::MAX as u64) as i32);
                    if let Some(max) = r.max_delay_seconds {
                        delay = delay.min(max as f64);
                    }
                    if r.jitter == crate::definition::Jitter::Full {
                        delay *= self.effects.random(step);
                    }
                    used[i] += 1;
                    retries += 1;
                    let wait = format!("{step}.{retries}/backoff");
                    self.effects
                        .sleep(&wait, Duration::from_secs_f64(delay.clamp(0.0, 1e9)))
                        .await;
                }
            }
        };
        for catcher in catch {
            if matches(&catcher.error_equals, &failure.error) {
                let output = merge(catcher.result_path.as_ref(), raw.clone(), failure.output())?;
                self.record(
                    exited_event(state),
                    || json!({ "name": state.name, "output": output.to_string(), "caught": failure.error }),
                    None,
                );
                return Ok((Some(catcher.next.clone()), output));
            }
        }
        Err(failure)
    }
}

/// Where a Step Functions event keeps its details, by its type.
fn details_key(kind: &str) -> String {
    let mut key = String::with_capacity(kind.len() + 12);
    let mut chars = kind.chars();
    if let Some(first) = chars.next() {
        key.push(first.to_ascii_lowercase());
    }
    key.extend(chars);
    key.push_str("EventDetails");
    key
}

/// Whether `names` (an `ErrorEquals`) matches `error`. `States.ALL`
/// matches every error but `States.Runtime` and
/// `States.DataLimitExceeded`, which end the execution;
/// `States.TaskFailed` matches every error but those and `States.Timeout`.
pub fn matches(names: &[String], error: &str) -> bool {
    let terminal = matches!(error, "States.Runtime" | "States.DataLimitExceeded");
    names.iter().any(|name| match name.as_str() {
        "States.ALL" => !terminal,
        "States.TaskFailed" => !terminal && !matches!(error, "States.Timeout" | "States.HeartbeatTimeout"),
        // A missed heartbeat is a timeout too, as Step Functions counts it.
        "States.Timeout" => matches!(error, "States.Timeout" | "States.HeartbeatTimeout"),
        name => name == error,
    })
}

fn next_of(transition: &Transition) -> Option<String> {
    match transition {
        Transition::Next(next) => Some(next.clone()),
        Transition::End => None,
    }
}

/// `InputPath` or `OutputPath`: the whole value when absent, `{}` when null.
fn select(path: Option<&DataPath>, value: &Value, context: &Value) -> Result<Value, Failure> {
    match path {
        None => Ok(value.clone()),
        Some(DataPath::Discard) => Ok(Value::Object(JsonMap::new())),
        Some(DataPath::Path(p)) => select_path(p, value, context),
    }
}

fn select_path(path: &str, value: &Value, context: &Value) -> Result<Value, Failure> {
    Path::parse(path)
        .and_then(|p| p.select(value, context))
        .map_err(|e| Failure::of_path(&e))
}

/// `ResultPath`: the result placed in the raw input (absent: the result
/// replaces it; null: the input is kept).
fn merge(result_path: Option<&DataPath>, raw: Value, result: Value) -> Result<Value, Failure> {
    match result_path {
        None => Ok(result),
        Some(DataPath::Discard) => Ok(raw),
        Some(DataPath::Path(p)) => {
            let reference = ReferencePath::parse(p).map_err(|e| Failure::of_path(&e))?;
            path::merge(raw, Some(&reference), result).map_err(|e| Failure::of_path(&e))
        }
    }
}

fn template(template: &Value, input: &Value, context: &Value) -> Result<Value, Failure> {
    Template::parse(template)
        .map_err(|e| Failure::runtime(e.to_string()))?
        .apply(input, context)
        .map_err(|e| Failure::of_path(&e))
}

fn setting_number(setting: &Setting<u64>, input: &Value, context: &Value, field: &str) -> Result<u64, Failure> {
    match setting {
        Setting::Fixed(n) => Ok(*n),
        Setting::Path(p) => {
            let value = select_path(p, input, context)?;
            value
                .as_u64()
                .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .ok_or_else(|| {
                    Failure::runtime(format!(
                        "{field}Path {p} names {}, not a non-negative number",
                        kind_of(&value)
                    ))
                })
        }
        Setting::Jsonata(_) => Err(Failure::runtime(format!("a JSONata {field} in a JSONPath state"))),
    }
}

fn setting_timestamp(
    setting: &Setting<jiff::Timestamp>,
    input: &Value,
    context: &Value,
) -> Result<jiff::Timestamp, Failure> {
    match setting {
        Setting::Fixed(t) => Ok(*t),
        Setting::Path(p) => {
            let value = select_path(p, input, context)?;
            value
                .as_str()
                .and_then(choice::timestamp)
                .ok_or_else(|| Failure::runtime(format!("TimestampPath {p} names {value}, not an RFC 3339 timestamp")))
        }
        Setting::Jsonata(_) => Err(Failure::runtime("a JSONata Timestamp in a JSONPath state")),
    }
}

fn setting_text(setting: Option<&Setting<String>>, input: &Value, context: &Value) -> Result<Option<String>, Failure> {
    match setting {
        None => Ok(None),
        Some(Setting::Fixed(t)) => Ok(Some(t.clone())),
        Some(Setting::Path(p)) => {
            // ErrorPath and CausePath may also be an intrinsic function.
            let value = if p.starts_with("States.") {
                crate::intrinsics::parse(p)
                    .and_then(|call| call.eval(input, context))
                    .map_err(|e| Failure::new(e.error_name(), e.to_string()))?
            } else {
                select_path(p, input, context)?
            };
            Ok(Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            }))
        }
        Some(Setting::Jsonata(_)) => Err(Failure::runtime("a JSONata Error or Cause in a JSONPath state")),
    }
}

/// `ItemBatcher`: items gathered into batches `{"Items": [...]}` (with
/// `BatchInput` beside them), by count and by size.
fn batch(
    inputs: Vec<(Item, Value)>,
    batcher: &ItemBatcher,
    input: &Value,
    context: &Value,
) -> Result<Vec<(Item, Value)>, Failure> {
    let per_batch = match &batcher.max_items_per_batch {
        Some(s) => setting_number(s, input, context, "MaxItemsPerBatch")?.max(1) as usize,
        None => usize::MAX,
    };
    let max_bytes = match &batcher.max_input_bytes_per_batch {
        Some(s) => setting_number(s, input, context, "MaxInputBytesPerBatch")? as usize,
        None => MAX_PAYLOAD,
    };
    let batch_input = match &batcher.batch_input {
        Some(template_value) => Some(template(template_value, input, context)?),
        None => None,
    };
    let mut batches: Vec<Vec<Value>> = Vec::new();
    let mut bytes = 0usize;
    for (_, value) in inputs {
        let size = size_of(&value);
        let full = batches
            .last()
            .is_none_or(|b| b.len() >= per_batch || (bytes + size > max_bytes && !b.is_empty()));
        if full {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(last) = batches.last_mut() {
            last.push(value);
        }
    }
    Ok(batches
        .into_iter()
        .enumerate()
        .map(|(index, items)| {
            let mut value = json!({ "Items": items });
            if let Some(b) = &batch_input {
                value["BatchInput"] = b.clone();
            }
            (
                Item {
                    index,
                    value: value.clone(),
                },
                value,
            )
        })
        .collect())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An execution that loops forever is stopped at the history bound,
    /// whether it keeps its history or not.
    #[tokio::test]
    async fn an_endless_loop_ends_at_the_history_bound() {
        let definition = json!({"StartAt": "Again", "States": {
            "Again": {"Type": "Pass", "Next": "Check"},
            "Check": {"Type": "Choice", "Choices": [{"Variable": "$.go", "BooleanEquals": true, "Next": "Again"}], "Default": "Done"},
            "Done": {"Type": "Succeed"}}});
        let machine = crate::validate::load(&definition).expect("the loop loads");
        let effects = crate::local::Local::new(Default::default());
        for keep_history in [true, false] {
            let identity = Identity {
                id: "weft:execution:loop:1".into(),
                name: "1".into(),
                machine: "loop".into(),
                started: None,
            };
            let finished = run_with(&machine, identity, json!({"go": true}), &effects, keep_history).await;
            let Outcome::Failed(failure) = finished.outcome else {
                panic!("the loop ended: {:?}", finished.outcome);
            };
            assert_eq!(failure.error, "States.Runtime");
            assert!(failure.cause.unwrap_or_default().contains("25000 events"));
            assert!(finished.history.len() <= MAX_HISTORY);
        }
    }

    #[test]
    fn error_names_match_as_step_functions_matches_them() {
        let all = ["States.ALL".to_string()];
        assert!(matches(&all, "Payment.Declined"));
        assert!(matches(&all, "States.Timeout"));
        assert!(!matches(&all, "States.Runtime"));
        let failed = ["States.TaskFailed".to_string()];
        assert!(matches(&failed, "Payment.Declined"));
        assert!(!matches(&failed, "States.Timeout"));
        assert!(matches(&["Payment.Declined".to_string()], "Payment.Declined"));
        assert!(!matches(&["Payment".to_string()], "Payment.Declined"));
    }
}
