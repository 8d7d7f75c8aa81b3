//! The interpreter: runs one execution of a state machine, state by state,
//! with input and output processing in JSONPath or JSONata (through
//! [`crate::fields`]), the variables each state assigns, `Retry` and
//! `Catch`, and `Parallel` and `Map` branches run side by side.
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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::{Map as JsonMap, Value, json};

use crate::definition::{
    Branch, ItemBatcher, Setting, State, StateIndex, StateKind, StateMachine, Transition, WaitFor,
};
use crate::fields::{self, Fields, Witness, kind_of};
use crate::intrinsics::Draws;
use crate::jsonata::{self, Expressions};
use crate::path::Env;
use crate::variables::Frame;

/// The largest input or output a state may have, as on Step Functions.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// The most history events an execution may have, as on Step Functions.
pub const MAX_HISTORY: usize = 25_000;
/// The longest a Wait may wait and a Task may run, in seconds.
const MAX_WAIT_SECONDS: u64 = 99_999_999;

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

    /// The task of `step` ran out of its `TimeoutSeconds` and was given up:
    /// an answer to its task token that comes now is refused.
    fn task_timed_out(&self, step: &Step) {
        let _ = step;
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
    let id_seed = fnv(0xcbf2_9ce4_8422_2325, identity.id.as_bytes());
    let execution = Execution {
        keep_history,
        identity,
        input: input.clone(),
        started,
        effects,
        expressions: machine.expressions.clone(),
        id_seed,
        variable_bytes: AtomicUsize::new(0),
        history: Mutex::new(Vec::new()),
        events: AtomicUsize::new(0),
    };
    execution.record("ExecutionStarted", || json!({ "input": input.to_string() }), None);
    let scope = Scope {
        start_at: &machine.start_at,
        states: &machine.states,
        index: &machine.index,
    };
    let ran = if size_of(&input) > MAX_PAYLOAD {
        Err(too_large("the execution's input"))
    } else {
        let run = execution.run_scope(scope, input, String::new(), None, None);
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
pub(crate) fn size_of(value: &Value) -> usize {
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
    index: &'m StateIndex,
}

impl<'m> Scope<'m> {
    fn of(branch: &'m Branch) -> Scope<'m> {
        Scope {
            start_at: &branch.start_at,
            states: &branch.states,
            index: &branch.index,
        }
    }

    fn state(&self, name: &str) -> Option<&'m State> {
        self.index.find(self.states, name)
    }
}

struct Execution<'a> {
    keep_history: bool,
    identity: Identity,
    input: Value,
    started: jiff::Timestamp,
    effects: &'a dyn Effects,
    /// The definition's JSONata expressions, compiled.
    expressions: Expressions,
    /// The seed of every draw, made of the execution's id.
    id_seed: u64,
    /// The bytes all the execution's variables hold.
    variable_bytes: AtomicUsize,
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

    /// A seed for the random draws of one state's run, from its scope's
    /// seed: the same each time the execution is run on its journal,
    /// different for every state run.
    fn seed(scope: u64, state: &str, turn: u64) -> u64 {
        fnv(fnv(scope, state.as_bytes()), &turn.to_le_bytes())
    }

    /// Runs a scope from its `StartAt` to a terminal state: its output.
    /// `outer` holds the variables of the scopes around it, which its
    /// states read but do not assign.
    fn run_scope<'s>(
        &'s self,
        scope: Scope<'s>,
        input: Value,
        prefix: String,
        item: Option<Item>,
        outer: Option<Arc<Frame>>,
    ) -> BoxFuture<'s, Result<Value, Failure>> {
        Box::pin(async move {
            let mut visits: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
            let mut variables = Arc::new(Frame::within(outer));
            // What this scope's variables hold counts toward the
            // execution's bound until the scope ends, however it ends.
            let mut held = Held {
                total: &self.variable_bytes,
                bytes: 0,
            };
            let scope_seed = fnv(self.id_seed, prefix.as_bytes());
            let mut turn = 0u64;
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
                turn += 1;
                let on = On {
                    step: &step,
                    item: item.as_ref(),
                    variables: &variables,
                    seed: Self::seed(scope_seed, &state.name, turn),
                };
                let ran = self.run_state(state, input, &on).await?;
                if size_of(&ran.output) > MAX_PAYLOAD {
                    return Err(too_large(&format!("the output of state {:?}", state.name)));
                }
                let assigned = match ran.assigned {
                    Some(assigned) if !assigned.is_empty() => {
                        let shown: JsonMap<String, Value> = if self.keep_history {
                            assigned
                                .iter()
                                .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
                                .collect()
                        } else {
                            JsonMap::new()
                        };
                        let frame = Arc::make_mut(&mut variables);
                        frame.assign(&state.name, assigned, held.total)?;
                        held.bytes = frame.own_bytes();
                        Some(shown)
                    }
                    _ => None,
                };
                self.record(
                    exited_event(state),
                    || {
                        let mut details = json!({ "name": state.name, "output": ran.output.to_string() });
                        if let Some(error) = &ran.caught {
                            details["caught"] = json!(error);
                        }
                        if let Some(shown) = assigned {
                            details["assignedVariables"] = Value::Object(shown);
                            details["assignedVariablesDetails"] = json!({ "truncated": false });
                        }
                        details
                    },
                    None,
                );
                match ran.next {
                    Some(next) => {
                        name = scope
                            .state(&next)
                            .map(|s| s.name.as_str())
                            .ok_or_else(|| Failure::runtime(format!("no state named {next:?}")))?;
                        input = ran.output;
                    }
                    None => return Ok(ran.output),
                }
            }
        })
    }

    /// The fields of `state` for one run (or attempt) of it, drawing at
    /// random from `seed`, its expressions to be done by `deadline`.
    #[allow(clippy::too_many_arguments)]
    fn fields<'f>(
        &'f self,
        state: &'f State,
        input: &'f Value,
        context: &'f Value,
        on: &'f On<'_>,
        entered: jiff::Timestamp,
        seed: u64,
        deadline: Option<Instant>,
    ) -> Fields<'f> {
        Fields::new(
            state,
            input,
            context,
            &**on.variables,
            &self.expressions,
            seed,
            deadline,
            entered,
            self,
        )
    }

    /// A Pass state, which moves its input on rather than copying it where
    /// nothing reshapes it.
    #[allow(clippy::too_many_arguments)]
    fn pass(
        &self,
        state: &State,
        pass: &crate::definition::Pass,
        raw: Value,
        effective: Option<Value>,
        context: &Value,
        on: &On<'_>,
        entered: jiff::Timestamp,
    ) -> Result<Ran, Failure> {
        let next = next_of(&pass.transition);
        let deadline = jsonata_deadline(state);
        let Some(effective) = effective else {
            // JSONata: the input is the raw one.
            let (output, assigned) = {
                let f = self.fields(state, &raw, context, on, entered, on.seed, deadline);
                let output = state.output.as_ref().map(|o| f.value(o, "Output")).transpose()?;
                (output, f.assign(state.assign.as_ref(), &Value::Null)?)
            };
            return Ok(Ran::new(next, output.unwrap_or(raw), assigned));
        };
        let (result, assigned) = {
            let f = self.fields(state, &effective, context, on, entered, on.seed, deadline);
            let result = match (&pass.result, &state.parameters) {
                (Some(result), _) => Some(result.clone()),
                (None, Some(parameters)) => Some(f.template(parameters, &effective)?),
                (None, None) => None,
            };
            let assigned = f.assign(state.assign.as_ref(), result.as_ref().unwrap_or(&effective))?;
            (result, assigned)
        };
        let env = Env {
            context,
            variables: &**on.variables,
            draws: None,
        };
        let output = finish(state, raw, result.unwrap_or(effective), &env)?;
        Ok(Ran::new(next, output, assigned))
    }

    /// Runs one state on `raw` (its input): where to go next (none at the
    /// end of the scope), its output and what it assigns.
    async fn run_state(&self, state: &State, raw: Value, on: &On<'_>) -> Result<Ran, Failure> {
        let entered = self.effects.now();
        let context = self.context(state, entered, 0, on.item);
        let jsonata = state.is_jsonata();
        // The raw input is kept beside the effective one only where a
        // ResultPath (the state's or a catcher's) merges into it; else the
        // input is moved, not copied. A JSONata state has no InputPath: its
        // input is both.
        let keeps_raw = state.result_path.is_some() || state.catch().iter().any(|c| c.result_path.is_some());
        let (raw, effective) = match &state.input_path {
            _ if jsonata => (raw, None),
            None if !keeps_raw => (Value::Null, Some(raw)),
            path => {
                // Paths draw nothing.
                let env = Env {
                    context: &context,
                    variables: &**on.variables,
                    draws: None,
                };
                let effective = fields::select(path.as_ref(), &raw, &env)?;
                (raw, Some(effective))
            }
        };
        if let StateKind::Pass(pass) = &state.kind {
            return self.pass(state, pass, raw, effective, &context, on, entered);
        }
        let effective = effective.as_ref().unwrap_or(&raw);
        let deadline = jsonata_deadline(state);
        let f = self.fields(state, effective, &context, on, entered, on.seed, deadline);
        match &state.kind {
            StateKind::Pass(_) => Err(Failure::runtime("a Pass state reached the wrong arm")),
            StateKind::Succeed => {
                let output = f.passed_on(state.output.as_ref())?;
                Ok(Ran::new(None, output, None))
            }
            StateKind::Fail(fail) => {
                let error = f.text(fail.error.as_ref(), "Error")?;
                let cause = f.text(fail.cause.as_ref(), "Cause")?;
                Err(Failure {
                    error: error.unwrap_or_else(|| "States.Fail".into()),
                    cause,
                })
            }
            StateKind::Choice(c) => {
                for (i, rule) in c.choices.iter().enumerate() {
                    if f.condition(&rule.condition, i)? {
                        let output = f.passed_on(rule.output.as_ref())?;
                        let assigned = f.assign(rule.assign.as_ref(), effective)?;
                        return Ok(Ran::new(Some(rule.next.clone()), output, assigned));
                    }
                }
                match &c.default {
                    Some(default) => {
                        let output = f.passed_on(state.output.as_ref())?;
                        let assigned = f.assign(state.assign.as_ref(), effective)?;
                        Ok(Ran::new(Some(default.clone()), output, assigned))
                    }
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
                        let seconds = f.number(seconds, "Seconds", 0..=MAX_WAIT_SECONDS)?;
                        entered
                            .checked_add(Duration::from_secs(seconds))
                            .map_err(|_| Failure::runtime("the Wait's Seconds go past the last time there is"))?
                    }
                    WaitFor::Timestamp(at) => f.timestamp(at)?,
                };
                self.effects.wait_until(on.step, until).await;
                let output = f.passed_on(state.output.as_ref())?;
                let assigned = f.assign(state.assign.as_ref(), effective)?;
                Ok(Ran::new(next_of(&wait.transition), output, assigned))
            }
            // The states that do work retry it and catch its failures alike.
            StateKind::Task(_) | StateKind::Parallel(_) | StateKind::Map(_) => {
                let transition = state.transition().unwrap_or(&Transition::End);
                self.with_retries(state, &raw, effective, entered, on, transition).await
            }
        }
    }

    /// One attempt at a Task, Parallel or Map state: its output, and what
    /// it assigns.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        state: &State,
        raw: &Value,
        effective: &Value,
        entered: jiff::Timestamp,
        on: &On<'_>,
        retries: u64,
        attempt_step: Step,
    ) -> Result<(Value, Option<JsonMap<String, Value>>), Failure> {
        let jsonata = state.is_jsonata();
        let mut context = self.context(state, entered, retries, on.item);
        if let StateKind::Task(task) = &state.kind
            && task.resource.ends_with(".waitForTaskToken")
            && let Some(map) = context.as_object_mut()
        {
            map.insert(
                "Task".into(),
                json!({ "Token": self.effects.task_token(&attempt_step) }),
            );
        }
        // Each attempt draws its own values, and has its own time.
        let seed = Draws::new(on.seed ^ retries).next();
        let deadline = jsonata_deadline(state);
        let f = self.fields(state, effective, &context, on, entered, seed, deadline);
        // What the work takes: Parameters (JSONPath) or Arguments (JSONata).
        let work_input = || -> Result<Value, Failure> {
            match (jsonata, &state.parameters, &state.arguments) {
                (false, Some(parameters), _) => f.template(parameters, effective),
                (true, _, Some(arguments)) => f.value(arguments, "Arguments"),
                _ => Ok(effective.clone()),
            }
        };
        let result = match &state.kind {
            StateKind::Task(task) => {
                let input = work_input()?;
                // Step Functions checks a task's input once Parameters are
                // applied, and its result before ResultSelector trims it.
                if size_of(&input) > MAX_PAYLOAD {
                    return Err(too_large(&format!("the input of task {:?}", state.name)));
                }
                let seconds = |setting: Option<&Setting<u64>>, name: &str| -> Result<Option<Duration>, Failure> {
                    setting
                        .map(|s| f.number(s, name, 1..=MAX_WAIT_SECONDS).map(Duration::from_secs))
                        .transpose()
                };
                let timeout = seconds(task.timeout_seconds.as_ref(), "TimeoutSeconds")?;
                let heartbeat = seconds(task.heartbeat_seconds.as_ref(), "HeartbeatSeconds")?;
                if let (Some(timeout), Some(heartbeat)) = (timeout, heartbeat)
                    && heartbeat >= timeout
                {
                    let why = format!(
                        "state {:?}: HeartbeatSeconds ({}) must be less than TimeoutSeconds ({})",
                        state.name,
                        heartbeat.as_secs(),
                        timeout.as_secs()
                    );
                    return Err(if jsonata {
                        f.failed(Failure::new(jsonata::EVALUATION_ERROR, why))
                    } else {
                        Failure::runtime(why)
                    });
                }
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
                            () = self.effects.wait_until(&timer, deadline) => {
                                self.effects.task_timed_out(&attempt_step);
                                Err(Failure::new(
                                    "States.Timeout",
                                    format!("the task ran longer than its TimeoutSeconds ({}s)", limit.as_secs()),
                                ))
                            }
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
                result
            }
            StateKind::Parallel(parallel) => {
                let input = work_input()?;
                let branches = parallel.branches.iter().enumerate().map(|(i, branch)| {
                    self.run_scope(
                        Scope::of(branch),
                        input.clone(),
                        format!("{attempt_step}/{i}/"),
                        on.item.cloned(),
                        Some(on.variables.clone()),
                    )
                });
                Value::Array(futures_util::future::try_join_all(branches).await?)
            }
            StateKind::Map(map) => {
                self.map(state, map, &f, effective, entered, on, retries, &attempt_step, seed)
                    .await?
            }
            _ => return Err(Failure::runtime(format!("state {:?} has nothing to retry", state.name))),
        };
        // The raw result is what a JSONPath Assign reads, before
        // ResultSelector; JSONata's Output and Assign read $states.result.
        if jsonata {
            let done = f.with_result(&result);
            let assigned = done.assign(state.assign.as_ref(), &Value::Null)?;
            let output = done.output(state.output.as_ref(), || result.clone())?;
            Ok((output, assigned))
        } else {
            let assigned = f.assign(state.assign.as_ref(), &result)?;
            Ok((finish(state, raw.clone(), result, &f.env())?, assigned))
        }
    }

    /// A Map state's iterations, each on its item: the array of their
    /// outputs (a failed one's error output, where failures are tolerated).
    #[allow(clippy::too_many_arguments)]
    async fn map(
        &self,
        state: &State,
        map: &crate::definition::Map,
        f: &Fields<'_>,
        effective: &Value,
        entered: jiff::Timestamp,
        on: &On<'_>,
        retries: u64,
        attempt_step: &Step,
        seed: u64,
    ) -> Result<Value, Failure> {
        let items = match &map.items {
            Some(Setting::Fixed(items)) if state.is_jsonata() => {
                match f.value(&Value::Array(items.clone()), "Items")? {
                    Value::Array(items) => items,
                    _ => Vec::new(),
                }
            }
            Some(Setting::Fixed(items)) => items.clone(),
            Some(Setting::Path(p)) => match f.path(p, effective)? {
                Value::Array(items) => items,
                other => {
                    return Err(Failure::runtime(format!(
                        "the Map's ItemsPath {p} names {}, not an array",
                        kind_of(&other)
                    )));
                }
            },
            Some(Setting::Jsonata(source)) => match f.eval(source, "Items")? {
                Value::Array(items) => items,
                other => {
                    return Err(f.failed(Failure::new(
                        jsonata::EVALUATION_ERROR,
                        format!("field Items: the expression yields {}, not an array", kind_of(&other)),
                    )));
                }
            },
            None => match effective {
                Value::Array(items) => items.clone(),
                other => {
                    let fix = if state.is_jsonata() {
                        "select the array with Items"
                    } else {
                        "name the array with ItemsPath"
                    };
                    return Err(Failure::runtime(format!(
                        "the Map's input is {}, not an array; {fix}",
                        kind_of(other)
                    )));
                }
            },
        };
        // Items come from the input (256 KiB at most) in JSONPath; an
        // expression could make many more.
        if items.iter().map(size_of).sum::<usize>() + items.len() + 1 > MAX_PAYLOAD {
            return Err(too_large(&format!("the items of Map state {:?}", state.name)));
        }
        let selector = map.item_selector.as_ref().or(state.parameters.as_ref());
        let mut inputs = Vec::with_capacity(items.len());
        for (index, value) in items.into_iter().enumerate() {
            let item = Item { index, value };
            let input = match selector {
                Some(selector) => {
                    let context = self.context(state, entered, retries, Some(&item));
                    // The items draw in turn from the attempt's draws, so
                    // that no two draw the same.
                    let item_seed = Draws::new(seed ^ index as u64).next();
                    let per_item = self.fields(state, effective, &context, on, entered, item_seed, f.deadline());
                    if state.is_jsonata() {
                        per_item.value(selector, "ItemSelector")?
                    } else {
                        per_item.template(selector, effective)?
                    }
                }
                None => item.value.clone(),
            };
            inputs.push((item, input));
        }
        let inputs = match &map.item_batcher {
            Some(batcher) => batch(inputs, batcher, effective, f)?,
            None => inputs,
        };
        let at_once = match &map.max_concurrency {
            Some(m) => f.number(m, "MaxConcurrency", 0..=u64::MAX)?,
            None => 0,
        };
        let total = inputs.len();
        let processor = Scope::of(&map.processor);
        // A distributed Map's iterations are executions of their own, which
        // see none of the variables around the Map, as on Step Functions.
        let outer = match map.mode {
            crate::definition::ProcessorMode::Inline => Some(on.variables.clone()),
            crate::definition::ProcessorMode::Distributed(_) => None,
        };
        // Made up front (none starts before it is polled), so the
        // stream below holds futures, not closures that make them.
        let iterations: Vec<BoxFuture<'_, (usize, Result<Value, Failure>)>> = inputs
            .into_iter()
            .enumerate()
            .map(|(i, (item, input))| {
                let prefix = format!("{attempt_step}/{}/", item.index);
                let iteration = self.run_scope(processor, input, prefix, Some(item), outer.clone());
                Box::pin(async move { (i, iteration.await) }) as BoxFuture<'_, _>
            })
            .collect();
        let limit = if at_once == 0 { total.max(1) } else { at_once as usize };
        use futures_util::StreamExt;
        let tolerated_count = match &map.tolerated_failure_count {
            Some(c) => Some(f.number(c, "ToleratedFailureCount", 0..=u64::MAX)?),
            None => None,
        };
        let tolerated_percentage = match &map.tolerated_failure_percentage {
            Some(p) => Some(f.percentage(p, "ToleratedFailurePercentage")?),
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
        Ok(Value::Array(
            results.into_iter().map(|r| r.unwrap_or(Value::Null)).collect(),
        ))
    }

    /// Runs `attempt` until it succeeds, retrying as the state's `Retry`
    /// says; a failure left over goes to the first `Catch` that matches it.
    async fn with_retries(
        &self,
        state: &State,
        raw: &Value,
        effective: &Value,
        entered: jiff::Timestamp,
        on: &On<'_>,
        transition: &Transition,
    ) -> Result<Ran, Failure> {
        let (retry, catch) = (state.retry(), state.catch());
        let step = on.step;
        let mut used = vec![0u64; retry.len()];
        let mut retries = 0u64;
        let failure = loop {
            let attempt_step = if retries == 0 {
                step.clone()
            } else {
                format!("{step}.{retries}")
            };
            match self
                .attempt(state, raw, effective, entered, on, retries, attempt_step)
                .await
            {
                Ok((output, assigned)) => return Ok(Ran::new(next_of(transition), output, assigned)),
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
        let Some(catcher) = catch.iter().find(|c| matches(&c.error_equals, &failure.error)) else {
            return Err(failure);
        };
        // A catcher's Output and Assign (or ResultPath) replace the
        // state's own: its Assign is not made.
        let error_output = failure.output();
        let context = self.context(state, entered, retries, on.item);
        let deadline = jsonata_deadline(state);
        let f = self.fields(state, effective, &context, on, entered, !on.seed, deadline);
        let (output, assigned) = if state.is_jsonata() {
            let caught = f.with_error(&error_output);
            let assigned = caught.assign(catcher.assign.as_ref(), &Value::Null)?;
            (
                caught.output(catcher.output.as_ref(), || error_output.clone())?,
                assigned,
            )
        } else {
            let assigned = f.assign(catcher.assign.as_ref(), &error_output)?;
            (
                fields::merge(catcher.result_path.as_ref(), raw.clone(), error_output)?,
                assigned,
            )
        };
        Ok(Ran {
            next: Some(catcher.next.clone()),
            output,
            assigned,
            caught: Some(failure.error),
        })
    }
}

impl Witness for Execution<'_> {
    fn evaluation_failed(&self, state: &str, failure: &Failure) {
        self.record(
            "EvaluationFailed",
            || json!({ "state": state, "error": failure.error, "cause": failure.cause }),
            None,
        );
    }
}

/// A scope's share of the bytes an execution's variables hold, given back
/// when the scope ends.
struct Held<'e> {
    total: &'e AtomicUsize,
    bytes: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Where a state runs: its step, its Map item, the variables of its scope
/// and the seed of its draws.
struct On<'o> {
    step: &'o Step,
    item: Option<&'o Item>,
    variables: &'o Arc<Frame>,
    seed: u64,
}

/// What running a state gave.
struct Ran {
    /// The state to go to; `None` at the end of the scope.
    next: Option<String>,
    output: Value,
    /// The variables its `Assign` (or its catcher's, or its Choice rule's) sets.
    assigned: Option<JsonMap<String, Value>>,
    /// The error a catcher caught, if one did.
    caught: Option<String>,
}

impl Ran {
    fn new(next: Option<String>, output: Value, assigned: Option<JsonMap<String, Value>>) -> Ran {
        Ran {
            next,
            output,
            assigned,
            caught: None,
        }
    }
}

/// Where a Step Functions event keeps its details, by its type: every
/// state's entry and exit in `stateEnteredEventDetails` and
/// `stateExitedEventDetails`, other events in their own (`TaskScheduled`
/// in `taskScheduledEventDetails`).
fn details_key(kind: &str) -> String {
    if kind.ends_with("StateEntered") {
        return "stateEnteredEventDetails".into();
    }
    if kind.ends_with("StateExited") {
        return "stateExitedEventDetails".into();
    }
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

/// `ResultSelector`, `ResultPath`, then `OutputPath` (JSONPath): a state's
/// output from its raw input and its result.
fn finish(state: &State, raw: Value, result: Value, env: &Env<'_>) -> Result<Value, Failure> {
    let result = match &state.result_selector {
        Some(selector) => fields::template(selector, &result, env)?,
        None => result,
    };
    let merged = fields::merge(state.result_path.as_ref(), raw, result)?;
    match &state.output_path {
        None => Ok(merged),
        path => fields::select(path.as_ref(), &merged, env),
    }
}

/// When a JSONata state's expressions must be done, from now; `None` for
/// a JSONPath state, which has none (and reads no clock for it).
fn jsonata_deadline(state: &State) -> Option<Instant> {
    state.is_jsonata().then(|| Instant::now() + jsonata::MAX_TIME)
}

/// FNV-1a over `bytes`, from `hash`: stable across builds, unlike the
/// standard library's hasher, so a journal replayed by a newer weft draws
/// the same.
fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.wrapping_mul(0x0100_0000_01b3)
}

/// `ItemBatcher`: items gathered into batches `{"Items": [...]}` (with
/// `BatchInput` beside them), by count and by size.
fn batch(
    inputs: Vec<(Item, Value)>,
    batcher: &ItemBatcher,
    input: &Value,
    f: &Fields<'_>,
) -> Result<Vec<(Item, Value)>, Failure> {
    let per_batch = match &batcher.max_items_per_batch {
        Some(s) => f.number(s, "MaxItemsPerBatch", 1..=u64::MAX)?.max(1) as usize,
        None => usize::MAX,
    };
    let max_bytes = match &batcher.max_input_bytes_per_batch {
        Some(s) => f.number(s, "MaxInputBytesPerBatch", 1..=MAX_PAYLOAD as u64)? as usize,
        None => MAX_PAYLOAD,
    };
    let batch_input = match &batcher.batch_input {
        Some(template) if f.state.is_jsonata() => Some(f.value(template, "ItemBatcher.BatchInput")?),
        Some(template) => Some(f.template(template, input)?),
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

    /// What a state draws at random (States.UUID, States.MathRandom,
    /// $uuid, $random) is the same each time the same execution runs, as
    /// when it is run again on its journal after a crash, and differs
    /// between executions.
    #[tokio::test]
    async fn random_draws_repeat_for_the_same_execution_only() {
        let definition = json!({"StartAt": "Draw", "States": {
            "Draw": {"Type": "Pass", "Parameters": {"u.$": "States.UUID()", "r.$": "States.MathRandom(1, 1000000000)"}, "Next": "Again"},
            "Again": {"Type": "Pass", "QueryLanguage": "JSONata",
                "Output": {"u": "{% $states.input.u %}", "r": "{% $states.input.r %}", "v": "{% $uuid() %}", "x": "{% $random() %}"}, "End": true}}});
        let machine = crate::validate::load(&definition).expect("the definition loads");
        let effects = crate::local::Local::new(Default::default());
        let output = |id: &str| {
            let identity = Identity {
                id: id.into(),
                name: "n".into(),
                machine: "draws".into(),
                started: None,
            };
            let machine = &machine;
            let effects = &effects;
            async move {
                match run(machine, identity, json!({}), effects).await.outcome {
                    Outcome::Succeeded(output) => output,
                    Outcome::Failed(f) => panic!("the execution failed: {f:?}"),
                }
            }
        };
        let first = output("weft:execution:draws:a").await;
        assert_eq!(first, output("weft:execution:draws:a").await);
        let other = output("weft:execution:draws:b").await;
        for field in ["u", "r", "v", "x"] {
            assert_ne!(first[field], other[field], "{field} differs between executions");
        }
        assert_ne!(first["u"], first["v"], "two draws of one execution differ");
    }

    /// A state's exit shows what it assigned; a JSONata expression that
    /// fails is an EvaluationFailed event naming the state, before the
    /// execution fails.
    #[tokio::test]
    async fn the_history_shows_assignments_and_failed_evaluations() {
        let definition = json!({"QueryLanguage": "JSONata", "StartAt": "Set", "States": {
            "Set": {"Type": "Pass", "Assign": {"n": 2, "who": "ada"}, "Next": "Use"},
            "Use": {"Type": "Pass", "Output": "{% $n + $who %}", "End": true}}});
        let machine = crate::validate::load(&definition).expect("the definition loads");
        let effects = crate::local::Local::new(Default::default());
        let identity = Identity {
            id: "weft:execution:h:1".into(),
            name: "1".into(),
            machine: "h".into(),
            started: None,
        };
        let finished = run(&machine, identity, json!({}), &effects).await;
        let Outcome::Failed(failure) = &finished.outcome else {
            panic!("the execution succeeded: {:?}", finished.outcome);
        };
        assert_eq!(failure.error, jsonata::EVALUATION_ERROR);
        let set = finished
            .history
            .iter()
            .find(|e| e["type"] == "PassStateExited")
            .expect("Set exited");
        assert_eq!(
            set["stateExitedEventDetails"]["assignedVariables"],
            json!({"n": "2", "who": "\"ada\""})
        );
        let kinds: Vec<&str> = finished.history.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(
            kinds[kinds.len() - 2..],
            ["EvaluationFailed", "ExecutionFailed"],
            "{kinds:?}"
        );
        let failed = &finished.history[kinds.len() - 2]["evaluationFailedEventDetails"];
        assert_eq!(failed["state"], "Use");
        assert!(
            failed["cause"].as_str().is_some_and(|c| c.contains("field Output")),
            "{failed}"
        );
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
