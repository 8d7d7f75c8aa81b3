//! A state machine's definition, read from its JSON into a typed model.
//!
//! [`parse`] takes the definition as JSON (a YAML definition is converted to
//! JSON by the caller) and returns a [`StateMachine`], or every mistake it
//! found as [`Diagnostic`]s, each at its path inside the definition and
//! saying how to fix it:
//!
//! ```text
//! States.CheckOrder.Retry[0].MaxAttempts: must be a non-negative integer, found "3"; write it without quotes
//! States.A.Nxt: unknown field; did you mean "Next"?
//! States.A.InputPath: JSONPath field in a JSONata state; use "Arguments" with $states.input instead
//! ```
//!
//! The reading is done by hand rather than derived, so that each field is
//! checked where it stands: its type, its range, whether the state's type
//! and query language allow it, and which fields go together.
//!
//! What this module must not know: the syntax of paths (kept here as the
//! strings written; [`crate::path`] parses them), JSONata expressions (kept
//! as the text between `{%` and `%}`; [`crate::validate`] compiles them
//! into [`StateMachine::expressions`]), the checks that span several states
//! (targets, reachability, error names: [`crate::validate`]), and how any
//! state runs.

use std::ops::RangeInclusive;

use serde_json::{Map as Object, Value};

/// One mistake in a definition: where it is, what is wrong, and how to fix it.
///
/// Shown as `PATH: MESSAGE`, e.g.
/// `States.CheckOrder.Next: no state named "ChargeCard"; did you mean "ChargeCart"?`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Diagnostic {
    /// The field names and indexes that lead from the top of the definition
    /// to the mistake, e.g. `States.CheckOrder.Retry[0].MaxAttempts`.
    /// A name with `.`, `[`, `]` or `"` in it is written `["a.b"]`.
    pub path: String,
    /// What is wrong, then how to fix it.
    pub message: String,
}

impl Diagnostic {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The language a state's expressions are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueryLanguage {
    /// Paths (`$.order.id`), payload templates with `.$` keys, intrinsic
    /// functions; the default.
    #[default]
    JsonPath,
    /// JSONata expressions written as `"{% ... %}"` strings.
    Jsonata,
}

impl QueryLanguage {
    /// The name as a definition writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryLanguage::JsonPath => "JSONPath",
            QueryLanguage::Jsonata => "JSONata",
        }
    }

    fn other(self) -> QueryLanguage {
        match self {
            QueryLanguage::JsonPath => QueryLanguage::Jsonata,
            QueryLanguage::Jsonata => QueryLanguage::JsonPath,
        }
    }
}

/// A whole definition.
#[derive(Debug, Clone, PartialEq)]
pub struct StateMachine {
    pub comment: Option<String>,
    /// `Version`, as written (ASL's own default is "1.0").
    pub version: Option<String>,
    /// The longest an execution may run; past it the execution fails with
    /// `States.Timeout`. `None`: no limit of its own.
    pub timeout_seconds: Option<u64>,
    /// The top-level `QueryLanguage`, which states inherit.
    pub query_language: QueryLanguage,
    pub start_at: String,
    /// The top-level states, in the order written.
    pub states: Vec<State>,
    /// Where each top-level state is in `states`, by name.
    pub index: StateIndex,
    /// Every JSONata expression of the definition, compiled (by
    /// [`crate::validate::load`]; empty after [`parse`] alone).
    pub expressions: crate::jsonata::Expressions,
}

impl StateMachine {
    /// The top-level state called `name`.
    pub fn state(&self, name: &str) -> Option<&State> {
        self.index.find(&self.states, name)
    }
}

/// Where each state of a scope is in its list, by name: a transition finds
/// its state in one lookup, however many states the scope has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateIndex(rustc_hash::FxHashMap<String, usize>);

impl StateIndex {
    pub fn of(states: &[State]) -> StateIndex {
        StateIndex(states.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect())
    }

    /// The state of `states` called `name`.
    pub fn find<'s>(&self, states: &'s [State], name: &str) -> Option<&'s State> {
        states.get(*self.0.get(name)?)
    }
}

/// The states a Parallel state runs as one of its branches, or a Map state
/// runs for each item: a scope of its own, which no transition enters or
/// leaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    /// Where the branch is in the definition, e.g. `States.Fan.Branches[1]`.
    pub location: String,
    pub comment: Option<String>,
    pub start_at: String,
    pub states: Vec<State>,
    /// Where each state is in `states`, by name.
    pub index: StateIndex,
}

impl Branch {
    /// The state of this branch called `name`.
    pub fn state(&self, name: &str) -> Option<&State> {
        self.index.find(&self.states, name)
    }
}

/// One state, with the fields every state type may have; what is particular
/// to its type is in [`State::kind`].
///
/// Fields its type or query language does not have are `None`: a JSONPath
/// state never has `arguments` or `output`, a JSONata state never has
/// `input_path`, `parameters`, `result_selector`, `result_path` or
/// `output_path`.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub name: String,
    /// Where the state is in the definition, e.g. `States.Fan.Branches[0].States.Charge`.
    pub location: String,
    pub comment: Option<String>,
    /// The state's own `QueryLanguage`, or the one it inherits.
    pub query_language: QueryLanguage,
    /// `InputPath`; `None` means `$`, the whole input.
    pub input_path: Option<DataPath>,
    /// `Parameters`, a payload template (Task, Parallel, Pass). A Map's
    /// `Parameters` is read as its [`Map::item_selector`].
    pub parameters: Option<Value>,
    /// `ResultSelector`, a payload template (Task, Parallel, Map).
    pub result_selector: Option<Value>,
    /// `ResultPath`; `None` means `$`, the result replaces the input.
    pub result_path: Option<DataPath>,
    /// `OutputPath`; `None` means `$`.
    pub output_path: Option<DataPath>,
    /// `Arguments` (JSONata Task and Parallel): an object, or a `{% %}` string.
    pub arguments: Option<Value>,
    /// `Output` (JSONata): any JSON, its `{% %}` strings evaluated.
    pub output: Option<Value>,
    /// `Assign`: the variables this state sets, an object (in JSONPath its
    /// keys may end in `.$`).
    pub assign: Option<Value>,
    pub kind: StateKind,
    /// Whether any of its text names the context object (`$$`): the
    /// interpreter builds the context only for the states that read it.
    pub reads_context: bool,
}

impl State {
    /// Whether the state is written in JSONata.
    pub fn is_jsonata(&self) -> bool {
        self.query_language == QueryLanguage::Jsonata
    }

    /// The state's `Type` as written: `Pass`, `Task`, `Choice`, ...
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            StateKind::Pass(_) => "Pass",
            StateKind::Task(_) => "Task",
            StateKind::Choice(_) => "Choice",
            StateKind::Wait(_) => "Wait",
            StateKind::Succeed => "Succeed",
            StateKind::Fail(_) => "Fail",
            StateKind::Parallel(_) => "Parallel",
            StateKind::Map(_) => "Map",
        }
    }

    /// `Next` or `End`, for the types that have them (not Choice, Succeed, Fail).
    pub fn transition(&self) -> Option<&Transition> {
        match &self.kind {
            StateKind::Pass(s) => Some(&s.transition),
            StateKind::Task(s) => Some(&s.transition),
            StateKind::Wait(s) => Some(&s.transition),
            StateKind::Parallel(s) => Some(&s.transition),
            StateKind::Map(s) => Some(&s.transition),
            StateKind::Choice(_) | StateKind::Succeed | StateKind::Fail(_) => None,
        }
    }

    /// Whether finishing this state ends its scope: Succeed, Fail, or `"End": true`.
    pub fn is_terminal(&self) -> bool {
        matches!(self.kind, StateKind::Succeed | StateKind::Fail(_)) || self.transition() == Some(&Transition::End)
    }

    /// `Retry`, for the types that have it (Task, Parallel, Map).
    pub fn retry(&self) -> &[Retrier] {
        match &self.kind {
            StateKind::Task(s) => &s.retry,
            StateKind::Parallel(s) => &s.retry,
            StateKind::Map(s) => &s.retry,
            _ => &[],
        }
    }

    /// `Catch`, for the types that have it (Task, Parallel, Map).
    pub fn catch(&self) -> &[Catcher] {
        match &self.kind {
            StateKind::Task(s) => &s.catch,
            StateKind::Parallel(s) => &s.catch,
            StateKind::Map(s) => &s.catch,
            _ => &[],
        }
    }
}

/// A path field that may also be `null`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataPath {
    /// The path as written, e.g. `$.order`.
    Path(String),
    /// `null`: the input (`InputPath`, `OutputPath`) becomes `{}`, or the
    /// result is dropped and the input passed on (`ResultPath`).
    Discard,
}

/// Where a state goes when it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// `Next`: the state of the same scope to run next.
    Next(String),
    /// `"End": true`: the scope ends with this state's output.
    End,
}

/// A value that is written in the definition, or found when the state runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Setting<T> {
    /// Written in the definition.
    Fixed(T),
    /// A JSONPath field's `...Path` variant: the path (or, for `ErrorPath`
    /// and `CausePath`, the intrinsic function) that yields the value.
    Path(String),
    /// A JSONata expression, without its `{%` and `%}`.
    Jsonata(String),
}

/// What a state does, by its `Type`.
#[derive(Debug, Clone, PartialEq)]
pub enum StateKind {
    Pass(Pass),
    Task(Task),
    Choice(Choice),
    Wait(Wait),
    Succeed,
    Fail(Fail),
    Parallel(Parallel),
    /// Boxed: a Map has many more fields than the other types.
    Map(Box<Map>),
}

/// `"Type": "Pass"`: passes its input on, or `Result` (JSONPath), or `Output`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pass {
    pub transition: Transition,
    /// `Result` (JSONPath): the value to pass on instead of the input.
    pub result: Option<Value>,
}

/// `"Type": "Task"`: calls what `Resource` names.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub transition: Transition,
    /// What the task calls, as written.
    pub resource: String,
    /// `TimeoutSeconds` or `TimeoutSecondsPath`: past it the task fails with
    /// `States.Timeout`.
    pub timeout_seconds: Option<Setting<u64>>,
    /// `HeartbeatSeconds` or `HeartbeatSecondsPath`: the longest the task may
    /// go without a heartbeat before it fails with `States.HeartbeatTimeout`.
    pub heartbeat_seconds: Option<Setting<u64>>,
    pub retry: Vec<Retrier>,
    pub catch: Vec<Catcher>,
}

/// `"Type": "Choice"`: goes to the `Next` of the first rule that matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// At least one.
    pub choices: Vec<ChoiceRule>,
    /// Where to go when no rule matches; without it the state fails with
    /// `States.NoChoiceMatched`.
    pub default: Option<String>,
}

/// A rule of `Choices`: where to go when its condition holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceRule {
    pub condition: Condition,
    pub next: String,
    pub comment: Option<String>,
    /// `Assign`: variables set when this rule is taken.
    pub assign: Option<Value>,
    /// `Output` (JSONata): the state's output when this rule is taken.
    pub output: Option<Value>,
}

/// What a choice rule tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// JSONata `Condition`: the expression, without its `{%` and `%}`.
    Jsonata(String),
    /// `And`: every condition holds (at least one).
    And(Vec<Condition>),
    /// `Or`: at least one condition holds (at least one).
    Or(Vec<Condition>),
    /// `Not`: the condition does not hold.
    Not(Box<Condition>),
    /// `Variable` and one comparison operator (JSONPath).
    Test {
        /// The path (or `$variable`) to the value tested.
        variable: String,
        test: Test,
    },
}

/// A comparison operator and what it compares to: `StringEquals`,
/// `NumericLessThanPath`, `IsPresent`, ...
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// `String{Equals,LessThan,...}` and their `...Path` forms.
    String(Relation, Operand<String>),
    /// `Numeric{Equals,LessThan,...}` and their `...Path` forms.
    Numeric(Relation, Operand<f64>),
    /// `BooleanEquals`, `BooleanEqualsPath`.
    Boolean(Operand<bool>),
    /// `Timestamp{Equals,LessThan,...}` and their `...Path` forms.
    Timestamp(Relation, Operand<jiff::Timestamp>),
    /// `StringMatches`: a pattern where `*` matches any text (`\*` a star).
    StringMatches(String),
    IsNull(bool),
    IsPresent(bool),
    IsNumeric(bool),
    IsString(bool),
    IsBoolean(bool),
    IsTimestamp(bool),
}

/// How a comparison relates the variable to its operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Equals,
    LessThan,
    GreaterThan,
    LessThanEquals,
    GreaterThanEquals,
}

/// What a comparison compares the variable to.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand<T> {
    /// A value written in the rule (`StringEquals`).
    Literal(T),
    /// The path of a value in the input (`StringEqualsPath`).
    Path(String),
}

/// `"Type": "Wait"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    pub transition: Transition,
    pub until: WaitFor,
}

/// How long a Wait state waits.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitFor {
    /// `Seconds` or `SecondsPath`: from 0 to 99999999 seconds.
    Seconds(Setting<u64>),
    /// `Timestamp` or `TimestampPath`: until this time.
    Timestamp(Setting<jiff::Timestamp>),
}

/// `"Type": "Fail"`: ends the execution with an error.
#[derive(Debug, Clone, PartialEq)]
pub struct Fail {
    /// `Error` or `ErrorPath` (a path or an intrinsic function).
    pub error: Option<Setting<String>>,
    /// `Cause` or `CausePath` (a path or an intrinsic function).
    pub cause: Option<Setting<String>>,
}

/// `"Type": "Parallel"`: runs every branch on the same input.
#[derive(Debug, Clone, PartialEq)]
pub struct Parallel {
    pub transition: Transition,
    /// At least one.
    pub branches: Vec<Branch>,
    pub retry: Vec<Retrier>,
    pub catch: Vec<Catcher>,
}

/// `"Type": "Map"`: runs [`Map::processor`] for each item of an array.
#[derive(Debug, Clone, PartialEq)]
pub struct Map {
    pub transition: Transition,
    /// `ItemProcessor`, or the older `Iterator`.
    pub processor: Branch,
    /// `ItemProcessor.ProcessorConfig`; `Inline` when not written.
    pub mode: ProcessorMode,
    /// `ItemsPath` (JSONPath, as [`Setting::Path`]) or `Items` (JSONata: an
    /// array or an expression); `None`: the input is the array.
    pub items: Option<Setting<Vec<Value>>>,
    /// `ItemSelector` (or the older `Parameters`): each iteration's input.
    pub item_selector: Option<Value>,
    /// The field [`Map::item_selector`] was written as: `ItemSelector`, or
    /// `Parameters`; where a mistake in it is shown.
    pub item_selector_field: &'static str,
    /// `MaxConcurrency`(`Path`): iterations at once; 0 or `None` is no limit.
    pub max_concurrency: Option<Setting<u64>>,
    /// `ToleratedFailurePercentage`(`Path`): from 0 to 100.
    pub tolerated_failure_percentage: Option<Setting<f64>>,
    /// `ToleratedFailureCount`(`Path`).
    pub tolerated_failure_count: Option<Setting<u64>>,
    pub item_batcher: Option<ItemBatcher>,
    /// `Label`, up to 40 characters.
    pub label: Option<String>,
    pub retry: Vec<Retrier>,
    pub catch: Vec<Catcher>,
}

/// How a Map state runs its iterations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessorMode {
    /// `INLINE`, the default: iterations are part of the execution.
    Inline,
    /// `DISTRIBUTED`: in Step Functions each iteration is a child execution
    /// of this type. weft reads its items from the state's input as in
    /// `INLINE` mode (it refuses `ItemReader` and `ResultWriter`).
    Distributed(ExecutionType),
}

/// A distributed Map's child executions: `STANDARD` or `EXPRESS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionType {
    Standard,
    Express,
}

/// `ItemBatcher`: iterations get batches of items instead of single items.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemBatcher {
    /// `MaxItemsPerBatch`(`Path`): at least 1.
    pub max_items_per_batch: Option<Setting<u64>>,
    /// `MaxInputBytesPerBatch`(`Path`): from 1 to 262144 (256 KiB).
    pub max_input_bytes_per_batch: Option<Setting<u64>>,
    /// `BatchInput`: JSON added to every batch.
    pub batch_input: Option<Value>,
}

/// A retrier of `Retry`: how the state is tried again after the errors it names.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrier {
    pub error_equals: Vec<String>,
    /// The wait before the first retry (default 1).
    pub interval_seconds: u64,
    /// Retries at most, 0 for none (default 3).
    pub max_attempts: u64,
    /// What each wait is multiplied by for the next one (default 2.0).
    pub backoff_rate: f64,
    /// The longest any wait grows to.
    pub max_delay_seconds: Option<u64>,
    /// `JitterStrategy` (default `NONE`).
    pub jitter: Jitter,
    pub comment: Option<String>,
}

/// A retrier's `JitterStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// `FULL`: each wait is a random time up to the computed one.
    Full,
    /// `NONE`: each wait is the computed one.
    None,
}

/// A catcher of `Catch`: where to go after the errors it names, once retries
/// are spent.
#[derive(Debug, Clone, PartialEq)]
pub struct Catcher {
    pub error_equals: Vec<String>,
    pub next: String,
    /// `ResultPath` (JSONPath): where the error output goes in the input.
    pub result_path: Option<DataPath>,
    /// `Output` (JSONata).
    pub output: Option<Value>,
    pub assign: Option<Value>,
    pub comment: Option<String>,
}

/// Whether a definition file is YAML (`.yaml`, `.yml`), else JSON.
pub fn is_yaml(file: &str) -> bool {
    file.ends_with(".yaml") || file.ends_with(".yml")
}

/// A definition file's bytes as the JSON document it is: JSON as it is,
/// YAML read into the same document (Step Functions accepts both).
pub fn document(bytes: &[u8], yaml: bool) -> Result<Value, String> {
    let read = match yaml {
        true => serde_yaml_ng::from_slice::<Value>(bytes).map_err(|e| format!("not YAML ({e})")),
        false => serde_json::from_slice::<Value>(bytes).map_err(|e| format!("not JSON ({e})")),
    }?;
    match read {
        Value::Object(_) => Ok(read),
        _ => Err("not an object; an Amazon States Language definition is an object with StartAt and States".into()),
    }
}

/// Reads a definition into a [`StateMachine`], or returns every mistake found.
///
/// This checks each field where it stands; the checks across states
/// (targets, reachability, error names) are [`crate::validate::validate`],
/// and [`crate::validate::load`] runs both.
///
/// ```
/// let definition = serde_json::json!({
///     "StartAt": "Hello",
///     "States": {"Hello": {"Type": "Pass", "Result": "hi", "Nxt": "Bye"}}
/// });
/// let errors = weft_workflows::definition::parse(&definition).unwrap_err();
/// assert_eq!(errors[0].to_string(), r#"States.Hello.Nxt: unknown field; did you mean "Next"?"#);
/// ```
pub fn parse(definition: &Value) -> Result<StateMachine, Vec<Diagnostic>> {
    let mut reader = Reader::default();
    let machine = reader.machine(definition);
    match machine {
        Some(machine) if reader.out.is_empty() => Ok(machine),
        _ if reader.out.is_empty() => Err(vec![Diagnostic::new(
            TOP,
            "could not be read, though no mistake was found; please report this definition",
        )]),
        _ => Err(reader.out),
    }
}

/// The path shown for a mistake in the definition as a whole.
const TOP: &str = "(definition)";

/// The longest state name.
pub const MAX_STATE_NAME: usize = 80;

/// The largest value of `MaxAttempts`, `IntervalSeconds`, `TimeoutSeconds`,
/// `HeartbeatSeconds` and a Wait's `Seconds`.
const MAX_SECONDS: u64 = 99_999_999;

/// `MaxDelaySeconds` must be less than a year and a day.
const MAX_DELAY_SECONDS: u64 = 31_622_400;

/// The largest `MaxInputBytesPerBatch`: 256 KiB.
const MAX_BATCH_BYTES: u64 = 262_144;

/// The longest Map `Label`.
const MAX_LABEL: usize = 40;

const STATE_TYPES: &str = "Pass, Task, Choice, Wait, Succeed, Fail, Parallel or Map";

/// A state's `Type`, for the tables of which fields each type has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pass,
    Task,
    Choice,
    Wait,
    Succeed,
    Fail,
    Parallel,
    Map,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::Pass,
        Kind::Task,
        Kind::Choice,
        Kind::Wait,
        Kind::Succeed,
        Kind::Fail,
        Kind::Parallel,
        Kind::Map,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Pass => "Pass",
            Kind::Task => "Task",
            Kind::Choice => "Choice",
            Kind::Wait => "Wait",
            Kind::Succeed => "Succeed",
            Kind::Fail => "Fail",
            Kind::Parallel => "Parallel",
            Kind::Map => "Map",
        }
    }

    fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn has_transition(self) -> bool {
        matches!(self, Kind::Pass | Kind::Task | Kind::Wait | Kind::Parallel | Kind::Map)
    }
}

/// The fields a state of `kind` has in `language`.
fn state_fields(kind: Kind, language: QueryLanguage) -> Vec<&'static str> {
    use Kind::*;
    let jsonpath = language == QueryLanguage::JsonPath;
    let mut fields = vec!["Type", "Comment", "QueryLanguage"];
    if kind.has_transition() {
        fields.extend(["Next", "End"]);
    }
    if kind != Fail {
        if jsonpath {
            fields.extend(["InputPath", "OutputPath"]);
        } else {
            fields.push("Output");
        }
    }
    if !matches!(kind, Succeed | Fail) {
        fields.push("Assign");
    }
    if jsonpath && matches!(kind, Pass | Task | Parallel | Map) {
        fields.extend(["Parameters", "ResultPath"]);
    }
    if jsonpath && matches!(kind, Task | Parallel | Map) {
        fields.push("ResultSelector");
    }
    if !jsonpath && matches!(kind, Task | Parallel) {
        fields.push("Arguments");
    }
    if matches!(kind, Task | Parallel | Map) {
        fields.extend(["Retry", "Catch"]);
    }
    match kind {
        Pass if jsonpath => fields.push("Result"),
        Pass => {}
        Task => {
            fields.extend(["Resource", "TimeoutSeconds", "HeartbeatSeconds", "Credentials"]);
            if jsonpath {
                fields.extend(["TimeoutSecondsPath", "HeartbeatSecondsPath"]);
            }
        }
        Choice => fields.extend(["Choices", "Default"]),
        Wait => {
            fields.extend(["Seconds", "Timestamp"]);
            if jsonpath {
                fields.extend(["SecondsPath", "TimestampPath"]);
            }
        }
        Succeed => {}
        Fail => {
            fields.extend(["Error", "Cause"]);
            if jsonpath {
                fields.extend(["ErrorPath", "CausePath"]);
            }
        }
        Parallel => fields.push("Branches"),
        Map => {
            fields.extend([
                "ItemProcessor",
                "Iterator",
                "ItemSelector",
                "MaxConcurrency",
                "ToleratedFailurePercentage",
                "ToleratedFailureCount",
                "ItemBatcher",
                "ItemReader",
                "ResultWriter",
                "Label",
            ]);
            if jsonpath {
                fields.extend([
                    "ItemsPath",
                    "MaxConcurrencyPath",
                    "ToleratedFailurePercentagePath",
                    "ToleratedFailureCountPath",
                ]);
            } else {
                fields.push("Items");
            }
        }
    }
    fields
}

const TOP_FIELDS: [&str; 6] = [
    "Comment",
    "StartAt",
    "States",
    "Version",
    "TimeoutSeconds",
    "QueryLanguage",
];
const BRANCH_FIELDS: [&str; 3] = ["Comment", "StartAt", "States"];
const PROCESSOR_FIELDS: [&str; 4] = ["Comment", "StartAt", "States", "ProcessorConfig"];
const RETRIER_FIELDS: [&str; 7] = [
    "ErrorEquals",
    "IntervalSeconds",
    "MaxAttempts",
    "BackoffRate",
    "MaxDelaySeconds",
    "JitterStrategy",
    "Comment",
];
const CATCHER_ONLY: [&str; 4] = ["Next", "ResultPath", "Output", "Assign"];

fn catcher_fields(language: QueryLanguage) -> Vec<&'static str> {
    match language {
        QueryLanguage::JsonPath => vec!["ErrorEquals", "Next", "ResultPath", "Assign", "Comment"],
        QueryLanguage::Jsonata => vec!["ErrorEquals", "Next", "Output", "Assign", "Comment"],
    }
}

/// How a comparison operator reads its value.
#[derive(Debug, Clone, Copy)]
enum Operator {
    String(Relation),
    StringPath(Relation),
    Numeric(Relation),
    NumericPath(Relation),
    Boolean,
    BooleanPath,
    Timestamp(Relation),
    TimestampPath(Relation),
    Matches,
    IsNull,
    IsPresent,
    IsNumeric,
    IsString,
    IsBoolean,
    IsTimestamp,
}

const OPERATORS: [(&str, Operator); 39] = {
    use Operator::*;
    use Relation::*;
    [
        ("StringEquals", String(Equals)),
        ("StringEqualsPath", StringPath(Equals)),
        ("StringLessThan", String(LessThan)),
        ("StringLessThanPath", StringPath(LessThan)),
        ("StringGreaterThan", String(GreaterThan)),
        ("StringGreaterThanPath", StringPath(GreaterThan)),
        ("StringLessThanEquals", String(LessThanEquals)),
        ("StringLessThanEqualsPath", StringPath(LessThanEquals)),
        ("StringGreaterThanEquals", String(GreaterThanEquals)),
        ("StringGreaterThanEqualsPath", StringPath(GreaterThanEquals)),
        ("StringMatches", Matches),
        ("NumericEquals", Numeric(Equals)),
        ("NumericEqualsPath", NumericPath(Equals)),
        ("NumericLessThan", Numeric(LessThan)),
        ("NumericLessThanPath", NumericPath(LessThan)),
        ("NumericGreaterThan", Numeric(GreaterThan)),
        ("NumericGreaterThanPath", NumericPath(GreaterThan)),
        ("NumericLessThanEquals", Numeric(LessThanEquals)),
        ("NumericLessThanEqualsPath", NumericPath(LessThanEquals)),
        ("NumericGreaterThanEquals", Numeric(GreaterThanEquals)),
        ("NumericGreaterThanEqualsPath", NumericPath(GreaterThanEquals)),
        ("BooleanEquals", Boolean),
        ("BooleanEqualsPath", BooleanPath),
        ("TimestampEquals", Timestamp(Equals)),
        ("TimestampEqualsPath", TimestampPath(Equals)),
        ("TimestampLessThan", Timestamp(LessThan)),
        ("TimestampLessThanPath", TimestampPath(LessThan)),
        ("TimestampGreaterThan", Timestamp(GreaterThan)),
        ("TimestampGreaterThanPath", TimestampPath(GreaterThan)),
        ("TimestampLessThanEquals", Timestamp(LessThanEquals)),
        ("TimestampLessThanEqualsPath", TimestampPath(LessThanEquals)),
        ("TimestampGreaterThanEquals", Timestamp(GreaterThanEquals)),
        ("TimestampGreaterThanEqualsPath", TimestampPath(GreaterThanEquals)),
        ("IsNull", IsNull),
        ("IsPresent", IsPresent),
        ("IsNumeric", IsNumeric),
        ("IsString", IsString),
        ("IsBoolean", IsBoolean),
        ("IsTimestamp", IsTimestamp),
    ]
};

/// The fields of a choice rule: one directly in `Choices` (`nested` false)
/// or one inside `And`, `Or` or `Not`.
fn rule_fields(language: QueryLanguage, nested: bool) -> Vec<&'static str> {
    let mut fields = vec!["Comment"];
    if !nested {
        fields.extend(["Next", "Assign"]);
    }
    match language {
        QueryLanguage::JsonPath => {
            fields.extend(["Variable", "And", "Or", "Not"]);
            fields.extend(OPERATORS.iter().map(|(name, _)| *name));
        }
        QueryLanguage::Jsonata => {
            fields.push("Condition");
            if !nested {
                fields.push("Output");
            }
        }
    }
    fields
}

/// The object a field was found in, for the message about a field it does
/// not allow.
#[derive(Debug, Clone, Copy)]
enum Place {
    Top,
    Branch,
    Processor,
    Iterator,
    State(Kind, QueryLanguage),
    Retrier,
    Catcher(QueryLanguage),
    Rule { language: QueryLanguage, nested: bool },
    ProcessorConfig,
    ItemBatcher(QueryLanguage),
}

/// An object of the definition, with the fields its place allows.
///
/// [`Fields::get`] sees only allowed fields: any other was reported once,
/// when the object was opened, and is not read again.
struct Fields<'a> {
    object: &'a Object<String, Value>,
    path: String,
    allowed: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        if self.allowed.contains(&key) {
            self.object.get(key)
        } else {
            None
        }
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn at(&self, key: &str) -> String {
        child(&self.path, key)
    }
}

/// What a JSONata state may write instead of a numeric or text field.
const OR_JSONATA: &str = " or a JSONata expression \"{% ... %}\"";

#[derive(Default)]
struct Reader {
    out: Vec<Diagnostic>,
    /// The top-level `QueryLanguage`: a JSONata definition has no JSONPath state.
    top_language: QueryLanguage,
}

impl Reader {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.out.push(Diagnostic::new(path, message));
    }

    fn machine(&mut self, definition: &Value) -> Option<StateMachine> {
        let Some(object) = definition.as_object() else {
            self.error(
                TOP,
                format!(
                    "must be a JSON object with \"StartAt\" and \"States\", found {}",
                    found(definition)
                ),
            );
            return None;
        };
        let f = self.open_object(object, String::new(), TOP_FIELDS.to_vec(), Place::Top);
        let language = match f.get("QueryLanguage") {
            Some(v) => self.query_language(v, &f.at("QueryLanguage")).unwrap_or_default(),
            None => QueryLanguage::JsonPath,
        };
        self.top_language = language;
        let comment = self.string(&f, "Comment");
        let version = self.string(&f, "Version");
        let timeout_seconds = f
            .get("TimeoutSeconds")
            .and_then(|v| self.whole(v, &f.at("TimeoutSeconds"), 1..=MAX_SECONDS, ""));
        let (start_at, states) = self.scope(&f, language);
        Some(StateMachine {
            comment,
            version,
            timeout_seconds,
            query_language: language,
            start_at: start_at?,
            index: states.as_deref().map(StateIndex::of).unwrap_or_default(),
            states: states?,
            expressions: Default::default(),
        })
    }

    /// `StartAt` and `States` of the top level or a branch.
    fn scope(&mut self, f: &Fields<'_>, language: QueryLanguage) -> (Option<String>, Option<Vec<State>>) {
        let start_at = self.required_name(
            f,
            "StartAt",
            "name the state to run first, e.g. \"StartAt\": \"FirstState\"",
        );
        let states = match f.get("States") {
            None => {
                self.error(
                    f.at("States"),
                    "missing; add the states as an object by name, e.g. \"States\": {\"FirstState\": {\"Type\": \"Pass\", \"End\": true}}",
                );
                None
            }
            Some(Value::Object(states)) if states.is_empty() => {
                self.error(
                    f.at("States"),
                    "has no states; add at least one, e.g. {\"FirstState\": {\"Type\": \"Pass\", \"End\": true}}",
                );
                None
            }
            Some(Value::Object(states)) => {
                let states_path = f.at("States");
                let mut read = Vec::with_capacity(states.len());
                let mut complete = true;
                for (name, state) in states {
                    match self.state(name, state, child(&states_path, name), language) {
                        Some(state) => read.push(state),
                        None => complete = false,
                    }
                }
                complete.then_some(read)
            }
            Some(other) => {
                self.error(
                    f.at("States"),
                    format!(
                        "must be an object of states by name, found {}; write e.g. {{\"FirstState\": {{\"Type\": \"Pass\", \"End\": true}}}}",
                        found(other)
                    ),
                );
                None
            }
        };
        (start_at, states)
    }

    fn state(&mut self, name: &str, value: &Value, location: String, inherited: QueryLanguage) -> Option<State> {
        let length = name.chars().count();
        if length == 0 {
            self.error(location.clone(), "a state name cannot be empty; give the state a name");
        } else if length > MAX_STATE_NAME {
            self.error(
                location.clone(),
                format!("state names are at most {MAX_STATE_NAME} characters, and this one has {length}; shorten it"),
            );
        }
        let Some(object) = value.as_object() else {
            self.error(
                location,
                format!(
                    "must be an object with a \"Type\", found {}; write e.g. {{\"Type\": \"Pass\", \"End\": true}}",
                    found(value)
                ),
            );
            return None;
        };
        let kind = match object.get("Type") {
            None => {
                match object.keys().find(|key| closest(key, ["Type"]).is_some()) {
                    Some(key) => self.error(child(&location, key), "unknown field; did you mean \"Type\"?"),
                    None => self.error(
                        child(&location, "Type"),
                        format!("missing; add \"Type\": {STATE_TYPES}"),
                    ),
                }
                return None;
            }
            Some(Value::String(written)) => match Kind::from_name(written) {
                Some(kind) => kind,
                None => {
                    let names = Kind::ALL.map(Kind::name);
                    let message = match closest(written, names) {
                        Some(near) => format!(
                            "{} is not a state type; did you mean \"{near}\"?",
                            found(&Value::String(written.clone()))
                        ),
                        None => format!(
                            "{} is not a state type; write {STATE_TYPES}",
                            found(&Value::String(written.clone()))
                        ),
                    };
                    self.error(child(&location, "Type"), message);
                    return None;
                }
            },
            Some(other) => {
                self.error(
                    child(&location, "Type"),
                    format!(
                        "must be the name of a state type, {STATE_TYPES}, found {}",
                        found(other)
                    ),
                );
                return None;
            }
        };
        let language = match object.get("QueryLanguage") {
            Some(v) => {
                let at = child(&location, "QueryLanguage");
                match self.query_language(v, &at) {
                    Some(QueryLanguage::JsonPath) if self.top_language == QueryLanguage::Jsonata => {
                        self.error(
                            at,
                            "the definition's QueryLanguage is JSONata, and a JSONata state machine has no JSONPath states; write this state in JSONata, or make the top level JSONPath and set \"QueryLanguage\": \"JSONata\" on each JSONata state",
                        );
                        inherited
                    }
                    Some(language) => language,
                    None => inherited,
                }
            }
            None => inherited,
        };
        let f = self.open_object(
            object,
            location.clone(),
            state_fields(kind, language),
            Place::State(kind, language),
        );

        let comment = self.string(&f, "Comment");
        let input_path = self.data_path(&f, "InputPath");
        let output_path = self.data_path(&f, "OutputPath");
        let result_path = self.data_path(&f, "ResultPath");
        // A Map's Parameters is the older name of its ItemSelector.
        let parameters = if kind == Kind::Map {
            None
        } else {
            self.template(&f, "Parameters", language)
        };
        let result_selector = self.template(&f, "ResultSelector", language);
        let arguments = self.template(&f, "Arguments", language);
        let output = f.get("Output").cloned();
        let assign = self.object(&f, "Assign", "an object of variables by name, e.g. {\"total\": 0}");

        let kind = match kind {
            Kind::Pass => self.pass(&f).map(StateKind::Pass),
            Kind::Task => self.task(&f, language).map(StateKind::Task),
            Kind::Choice => self.choice(&f, language).map(StateKind::Choice),
            Kind::Wait => self.wait(&f, language).map(StateKind::Wait),
            Kind::Succeed => Some(StateKind::Succeed),
            Kind::Fail => self.fail(&f, language).map(StateKind::Fail),
            Kind::Parallel => self.parallel(&f, language).map(StateKind::Parallel),
            Kind::Map => self.map(&f, language).map(|map| StateKind::Map(Box::new(map))),
        };
        let reads_context = mentions_context(&Value::Object(object.clone()));
        Some(State {
            reads_context,
            name: name.to_string(),
            location,
            comment,
            query_language: language,
            input_path,
            parameters,
            result_selector,
            result_path,
            output_path,
            arguments,
            output,
            assign,
            kind: kind?,
        })
    }

    fn pass(&mut self, f: &Fields<'_>) -> Option<Pass> {
        let transition = self.transition(f);
        let result = f.get("Result").cloned();
        Some(Pass {
            transition: transition?,
            result,
        })
    }

    fn task(&mut self, f: &Fields<'_>, language: QueryLanguage) -> Option<Task> {
        let transition = self.transition(f);
        let resource = self.required_name(
            f,
            "Resource",
            "add \"Resource\" naming what the task calls, e.g. \"Resource\": \"arn:aws:lambda:us-east-1:123456789012:function:charge\"",
        );
        if f.has("Credentials") {
            self.error(
                f.at("Credentials"),
                "not supported: weft runs a task with the app's own grants and assumes no other role; remove it",
            );
        }
        let timeout_seconds = self.whole_setting(f, "TimeoutSeconds", "TimeoutSecondsPath", language, 1..=MAX_SECONDS);
        let heartbeat_seconds =
            self.whole_setting(f, "HeartbeatSeconds", "HeartbeatSecondsPath", language, 1..=MAX_SECONDS);
        if let (Some(Setting::Fixed(timeout)), Some(Setting::Fixed(heartbeat))) = (&timeout_seconds, &heartbeat_seconds)
            && heartbeat >= timeout
        {
            self.error(
                f.at("HeartbeatSeconds"),
                format!(
                    "must be less than TimeoutSeconds ({timeout}), found {heartbeat}; lower it, or raise TimeoutSeconds"
                ),
            );
        }
        let retry = self.retry(f);
        let catch = self.catch(f, language);
        Some(Task {
            transition: transition?,
            resource: resource?,
            timeout_seconds,
            heartbeat_seconds,
            retry,
            catch,
        })
    }

    fn choice(&mut self, f: &Fields<'_>, language: QueryLanguage) -> Option<Choice> {
        let default = self.name(f, "Default");
        let example = match language {
            QueryLanguage::JsonPath => {
                "[{\"Variable\": \"$.total\", \"NumericGreaterThan\": 100, \"Next\": \"Review\"}]"
            }
            QueryLanguage::Jsonata => "[{\"Condition\": \"{% $states.input.total > 100 %}\", \"Next\": \"Review\"}]",
        };
        let choices = match f.get("Choices") {
            None => {
                self.error(
                    f.at("Choices"),
                    format!("missing; add the rules to choose by, e.g. \"Choices\": {example}"),
                );
                None
            }
            Some(Value::Array(rules)) if rules.is_empty() => {
                self.error(
                    f.at("Choices"),
                    format!("has no rules; add at least one, e.g. {example}"),
                );
                None
            }
            Some(Value::Array(rules)) => {
                let at = f.at("Choices");
                let read: Vec<Option<ChoiceRule>> = rules
                    .iter()
                    .enumerate()
                    .map(|(i, rule)| self.choice_rule(rule, index(&at, i), language))
                    .collect();
                read.into_iter().collect()
            }
            Some(other) => {
                self.error(
                    f.at("Choices"),
                    format!(
                        "must be an array of choice rules, found {}; write e.g. {example}",
                        found(other)
                    ),
                );
                None
            }
        };
        Some(Choice {
            choices: choices?,
            default,
        })
    }

    fn choice_rule(&mut self, value: &Value, path: String, language: QueryLanguage) -> Option<ChoiceRule> {
        let f = self.open(
            value,
            path,
            "a choice rule with a \"Next\"",
            rule_fields(language, false),
            Place::Rule {
                language,
                nested: false,
            },
        )?;
        let next = self.required_name(
            &f,
            "Next",
            "name the state to go to when this rule matches, e.g. \"Next\": \"Approve\"",
        );
        let comment = self.string(&f, "Comment");
        let assign = self.object(&f, "Assign", "an object of variables by name, e.g. {\"total\": 0}");
        let output = f.get("Output").cloned();
        let condition = self.condition(&f, language);
        Some(ChoiceRule {
            condition: condition?,
            next: next?,
            comment,
            assign,
            output,
        })
    }

    /// A rule inside `And`, `Or` or `Not` (JSONPath only).
    fn nested_rule(&mut self, value: &Value, path: String) -> Option<Condition> {
        let language = QueryLanguage::JsonPath;
        let f = self.open(
            value,
            path,
            "a choice rule",
            rule_fields(language, true),
            Place::Rule { language, nested: true },
        )?;
        self.string(&f, "Comment");
        self.condition(&f, language)
    }

    fn condition(&mut self, f: &Fields<'_>, language: QueryLanguage) -> Option<Condition> {
        if language == QueryLanguage::Jsonata {
            return match f.get("Condition") {
                None => {
                    self.error(
                        f.at("Condition"),
                        "missing; add the test, e.g. \"Condition\": \"{% $states.input.total > 100 %}\"",
                    );
                    None
                }
                // A literal true or false is the expression that yields it.
                Some(Value::Bool(b)) => Some(Condition::Jsonata(b.to_string())),
                Some(v) => match v.as_str().and_then(jsonata) {
                    Some(expression) => Some(Condition::Jsonata(expression)),
                    None => {
                        self.error(
                            f.at("Condition"),
                            format!(
                                "must be true, false or a JSONata expression that yields one, found {}; write e.g. \"{{% $states.input.total > 100 %}}\"",
                                found(v)
                            ),
                        );
                        None
                    }
                },
            };
        }

        let logic: Vec<&str> = ["And", "Or", "Not"].into_iter().filter(|k| f.has(k)).collect();
        let operators: Vec<(&str, Operator)> = OPERATORS.into_iter().filter(|(name, _)| f.has(name)).collect();
        let variable = f.get("Variable");
        if logic.len() > 1 {
            self.error(
                f.path.clone(),
                format!(
                    "has both \"{}\" and \"{}\"; a rule combines its rules one way: nest one inside the other",
                    logic[0], logic[1]
                ),
            );
            return None;
        }
        if let Some(&combinator) = logic.first() {
            if variable.is_some() || !operators.is_empty() {
                let test = if variable.is_some() { "Variable" } else { operators[0].0 };
                self.error(
                    f.path.clone(),
                    format!(
                        "has both \"{combinator}\" and \"{test}\"; a rule either combines rules or tests a Variable: move the test into a rule of its own inside \"{combinator}\""
                    ),
                );
                return None;
            }
            return self.combination(f, combinator);
        }
        match (variable, operators.as_slice()) {
            (None, []) => {
                self.error(
                    f.path.clone(),
                    "has no test; add \"Variable\" with a comparison, e.g. \"Variable\": \"$.total\", \"NumericGreaterThan\": 100, or combine rules with \"And\", \"Or\" or \"Not\"",
                );
                None
            }
            (None, [(name, _), ..]) => {
                self.error(
                    f.at(name),
                    "needs a \"Variable\" to compare; add the path of the value, e.g. \"Variable\": \"$.total\"",
                );
                None
            }
            (Some(_), []) => {
                self.error(
                    f.at("Variable"),
                    "has no comparison; add one, e.g. \"StringEquals\": \"paid\", \"NumericGreaterThan\": 100 or \"IsPresent\": true",
                );
                None
            }
            (Some(variable), [(name, operator)]) => {
                let variable = self.path_string(variable, &f.at("Variable"));
                let test = f.get(name).and_then(|v| self.test(v, &f.at(name), *operator));
                Some(Condition::Test {
                    variable: variable?,
                    test: test?,
                })
            }
            (Some(_), [first, second, ..]) => {
                self.error(
                    f.path.clone(),
                    format!(
                        "has both \"{}\" and \"{}\"; a rule makes one comparison: combine several with \"And\" or \"Or\"",
                        first.0, second.0
                    ),
                );
                None
            }
        }
    }

    fn combination(&mut self, f: &Fields<'_>, combinator: &str) -> Option<Condition> {
        let at = f.at(combinator);
        let value = f.get(combinator)?;
        if combinator == "Not" {
            if !value.is_object() {
                self.error(
                    at,
                    format!(
                        "must be one choice rule, found {}; write e.g. {{\"Variable\": \"$.paid\", \"BooleanEquals\": true}}",
                        found(value)
                    ),
                );
                return None;
            }
            return self.nested_rule(value, at).map(|c| Condition::Not(Box::new(c)));
        }
        match value {
            Value::Array(rules) if rules.is_empty() => {
                self.error(
                    at,
                    "has no rules; add at least one, e.g. [{\"Variable\": \"$.paid\", \"BooleanEquals\": true}]",
                );
                None
            }
            Value::Array(rules) => {
                let read: Vec<Option<Condition>> = rules
                    .iter()
                    .enumerate()
                    .map(|(i, rule)| self.nested_rule(rule, index(&at, i)))
                    .collect();
                let rules: Vec<Condition> = read.into_iter().collect::<Option<_>>()?;
                Some(if combinator == "And" {
                    Condition::And(rules)
                } else {
                    Condition::Or(rules)
                })
            }
            other => {
                self.error(
                    at,
                    format!(
                        "must be an array of choice rules, found {}; write e.g. [{{\"Variable\": \"$.paid\", \"BooleanEquals\": true}}]",
                        found(other)
                    ),
                );
                None
            }
        }
    }

    fn test(&mut self, value: &Value, path: &str, operator: Operator) -> Option<Test> {
        use Operator as O;
        let test = match operator {
            O::String(relation) => Test::String(relation, Operand::Literal(self.text(value, path, "a string")?)),
            O::StringPath(relation) => Test::String(relation, Operand::Path(self.path_string(value, path)?)),
            O::Numeric(relation) => Test::Numeric(relation, Operand::Literal(self.number(value, path, "a number")?)),
            O::NumericPath(relation) => Test::Numeric(relation, Operand::Path(self.path_string(value, path)?)),
            O::Boolean => Test::Boolean(Operand::Literal(self.boolean(value, path)?)),
            O::BooleanPath => Test::Boolean(Operand::Path(self.path_string(value, path)?)),
            O::Timestamp(relation) => Test::Timestamp(relation, Operand::Literal(self.timestamp(value, path, "")?)),
            O::TimestampPath(relation) => Test::Timestamp(relation, Operand::Path(self.path_string(value, path)?)),
            O::Matches => Test::StringMatches(self.text(value, path, "a string pattern such as \"*.csv\"")?),
            O::IsNull => Test::IsNull(self.boolean(value, path)?),
            O::IsPresent => Test::IsPresent(self.boolean(value, path)?),
            O::IsNumeric => Test::IsNumeric(self.boolean(value, path)?),
            O::IsString => Test::IsString(self.boolean(value, path)?),
            O::IsBoolean => Test::IsBoolean(self.boolean(value, path)?),
            O::IsTimestamp => Test::IsTimestamp(self.boolean(value, path)?),
        };
        Some(test)
    }

    fn wait(&mut self, f: &Fields<'_>, language: QueryLanguage) -> Option<Wait> {
        let transition = self.transition(f);
        let written: Vec<&str> = ["Seconds", "Timestamp", "SecondsPath", "TimestampPath"]
            .into_iter()
            .filter(|k| f.has(k))
            .collect();
        let until = match written.as_slice() {
            [] => {
                let fields = match language {
                    QueryLanguage::JsonPath => "\"Seconds\", \"Timestamp\", \"SecondsPath\" or \"TimestampPath\"",
                    QueryLanguage::Jsonata => "\"Seconds\" or \"Timestamp\"",
                };
                self.error(
                    f.path.clone(),
                    format!("has nothing to wait for; add one of {fields}, e.g. \"Seconds\": 10"),
                );
                None
            }
            ["Seconds" | "SecondsPath"] => self
                .whole_setting(f, "Seconds", "SecondsPath", language, 0..=MAX_SECONDS)
                .map(WaitFor::Seconds),
            [_] => self
                .setting(f, "Timestamp", Some("TimestampPath"), language, |r, v, at, or| {
                    r.timestamp(v, at, or)
                })
                .map(WaitFor::Timestamp),
            [first, second, ..] => {
                self.error(
                    f.path.clone(),
                    format!("has both \"{first}\" and \"{second}\"; a Wait state waits for one of them: keep one"),
                );
                None
            }
        };
        Some(Wait {
            transition: transition?,
            until: until?,
        })
    }

    fn fail(&mut self, f: &Fields<'_>, language: QueryLanguage) -> Option<Fail> {
        let error = self.text_setting(f, "Error", "ErrorPath", language);
        let cause = self.text_setting(f, "Cause", "CausePath", language);
        Some(Fail { error, cause })
    }

    fn parallel(&mut self, f: &Fields<'_>, language: QueryLanguage) -> Option<Parallel> {
        let transition = self.transition(f);
        let example = "[{\"StartAt\": \"Ship\", \"States\": {\"Ship\": {\"Type\": \"Pass\", \"End\": true}}}]";
        let branches = match f.get("Branches") {
            None => {
                self.error(
                    f.at("Branches"),
                    format!("missing; add the branches to run at once, e.g. \"Branches\": {example}"),
                );
                None
            }
            Some(Value::Array(branches)) if branches.is_empty() => {
                self.error(
                    f.at("Branches"),
                    format!("has no branches; add at least one, e.g. {example}"),
                );
                None
            }
            Some(Value::Array(branches)) => {
                let at = f.at("Branches");
                let read: Vec<Option<Branch>> = branches
                    .iter()
                    .enumerate()
                    .map(|(i, branch)| {
                        self.branch(branch, index(&at, i), language, Place::Branch)
                            .map(|(b, _)| b)
                    })
                    .collect();
                read.into_iter().collect()
            }
            Some(other) => {
                self.error(
                    f.at("Branches"),
                    format!(
                        "must be an array of branches, found {}; write e.g. {example}",
                        found(other)
                    ),
                );
                None
            }
        };
        let retry = self.retry(f);
        let catch = self.catch(f, language);
        Some(Parallel {
            transition: transition?,
            branches: branches?,
            retry,
            catch,
        })
    }

    fn map(&mut self, f: &Fields<'_>, language: QueryLanguage) -> Option<Map> {
        let transition = self.transition(f);
        let processor = match (f.get("ItemProcessor"), f.get("Iterator")) {
            (Some(_), Some(_)) => {
                self.error(
                    f.at("Iterator"),
                    "Iterator is the older name of ItemProcessor, and this state has both; remove Iterator",
                );
                None
            }
            (Some(v), None) => self.branch(v, f.at("ItemProcessor"), language, Place::Processor),
            (None, Some(v)) => self.branch(v, f.at("Iterator"), language, Place::Iterator),
            (None, None) => {
                self.error(
                    f.at("ItemProcessor"),
                    "missing; add the states to run for each item, e.g. \"ItemProcessor\": {\"StartAt\": \"Ship\", \"States\": {\"Ship\": {\"Type\": \"Pass\", \"End\": true}}}",
                );
                None
            }
        };
        let items = match language {
            QueryLanguage::JsonPath => f
                .get("ItemsPath")
                .and_then(|v| self.path_string(v, &f.at("ItemsPath")))
                .map(Setting::Path),
            QueryLanguage::Jsonata => f.get("Items").and_then(|v| match v {
                Value::Array(items) => Some(Setting::Fixed(items.clone())),
                Value::String(s) if jsonata(s).is_some() => jsonata(s).map(Setting::Jsonata),
                other => {
                    self.error(
                        f.at("Items"),
                        format!(
                            "must be an array or a JSONata expression that yields one, found {}; write e.g. \"{{% $states.input.orders %}}\"",
                            found(other)
                        ),
                    );
                    None
                }
            }),
        };
        let item_selector_field = if f.has("Parameters") {
            "Parameters"
        } else {
            "ItemSelector"
        };
        let item_selector = if f.has("ItemSelector") && f.has("Parameters") {
            self.error(
                f.at("Parameters"),
                "Parameters is the older name of ItemSelector, and this state has both; remove Parameters",
            );
            None
        } else if f.has("Parameters") {
            self.template(f, "Parameters", language)
        } else {
            self.template(f, "ItemSelector", language)
        };
        let max_concurrency = self.whole_setting(f, "MaxConcurrency", "MaxConcurrencyPath", language, 0..=u64::MAX);
        let tolerated_failure_percentage = self.setting(
            f,
            "ToleratedFailurePercentage",
            path_variant(language, "ToleratedFailurePercentagePath"),
            language,
            |r, v, at, or| r.percentage(v, at, or),
        );
        let tolerated_failure_count = self.whole_setting(
            f,
            "ToleratedFailureCount",
            "ToleratedFailureCountPath",
            language,
            0..=u64::MAX,
        );
        let item_batcher = f
            .get("ItemBatcher")
            .and_then(|v| self.item_batcher(v, f.at("ItemBatcher"), language));
        if f.has("ItemReader") {
            let instead = match language {
                QueryLanguage::JsonPath => "pass the items in the state's input and point \"ItemsPath\" at them",
                QueryLanguage::Jsonata => "pass the items in the state's input and select them with \"Items\"",
            };
            self.error(
                f.at("ItemReader"),
                format!("not supported: weft does not read a Map's items from S3 objects; {instead}"),
            );
        }
        if f.has("ResultWriter") {
            self.error(
                f.at("ResultWriter"),
                "not supported: weft does not write a Map's results to S3; remove it, and the results become the Map state's result",
            );
        }
        let label = match f.get("Label") {
            Some(v) => self.text(v, &f.at("Label"), "a string").and_then(|label| {
                let length = label.chars().count();
                if length == 0 || length > MAX_LABEL {
                    self.error(
                        f.at("Label"),
                        format!("must be 1 to {MAX_LABEL} characters, and this one has {length}; shorten it"),
                    );
                    None
                } else {
                    Some(label)
                }
            }),
            None => None,
        };
        let retry = self.retry(f);
        let catch = self.catch(f, language);
        let (processor, mode) = processor?;
        Some(Map {
            transition: transition?,
            processor,
            mode,
            items,
            item_selector,
            item_selector_field,
            max_concurrency,
            tolerated_failure_percentage,
            tolerated_failure_count,
            item_batcher,
            label,
            retry,
            catch,
        })
    }

    /// A Parallel branch or a Map's `ItemProcessor` (or `Iterator`), with
    /// the processor's mode (`Inline` for a branch).
    fn branch(
        &mut self,
        value: &Value,
        path: String,
        language: QueryLanguage,
        place: Place,
    ) -> Option<(Branch, ProcessorMode)> {
        let allowed = match place {
            Place::Processor => PROCESSOR_FIELDS.to_vec(),
            _ => BRANCH_FIELDS.to_vec(),
        };
        let f = self.open(value, path, "an object with \"StartAt\" and \"States\"", allowed, place)?;
        let comment = self.string(&f, "Comment");
        let mode = match f.get("ProcessorConfig") {
            Some(v) => self.processor_mode(v, f.at("ProcessorConfig")),
            None => Some(ProcessorMode::Inline),
        };
        let (start_at, states) = self.scope(&f, language);
        let states = states?;
        let branch = Branch {
            location: f.path.clone(),
            comment,
            start_at: start_at?,
            index: StateIndex::of(&states),
            states,
        };
        Some((branch, mode?))
    }

    fn processor_mode(&mut self, value: &Value, path: String) -> Option<ProcessorMode> {
        let f = self.open(
            value,
            path,
            "an object such as {\"Mode\": \"INLINE\"}",
            vec!["Mode", "ExecutionType"],
            Place::ProcessorConfig,
        )?;
        let distributed = match f.get("Mode") {
            None => false,
            Some(v) => self.word(v, &f.at("Mode"), &["INLINE", "DISTRIBUTED"])? == "DISTRIBUTED",
        };
        let execution_type = match f.get("ExecutionType") {
            None => None,
            Some(v) => match self.word(v, &f.at("ExecutionType"), &["STANDARD", "EXPRESS"])? {
                "EXPRESS" => Some(ExecutionType::Express),
                _ => Some(ExecutionType::Standard),
            },
        };
        match (distributed, execution_type) {
            (false, None) => Some(ProcessorMode::Inline),
            (false, Some(_)) => {
                self.error(
                    f.at("ExecutionType"),
                    "only a DISTRIBUTED Map has an ExecutionType (its iterations are child executions); remove it, or set \"Mode\": \"DISTRIBUTED\"",
                );
                None
            }
            (true, Some(execution_type)) => Some(ProcessorMode::Distributed(execution_type)),
            (true, None) => {
                self.error(
                    f.at("ExecutionType"),
                    "missing; a DISTRIBUTED Map says how its child executions run: \"ExecutionType\": \"STANDARD\" or \"EXPRESS\"",
                );
                None
            }
        }
    }

    fn item_batcher(&mut self, value: &Value, path: String, language: QueryLanguage) -> Option<ItemBatcher> {
        let mut allowed = vec!["MaxItemsPerBatch", "MaxInputBytesPerBatch", "BatchInput"];
        if language == QueryLanguage::JsonPath {
            allowed.extend(["MaxItemsPerBatchPath", "MaxInputBytesPerBatchPath"]);
        }
        let f = self.open(
            value,
            path,
            "an object such as {\"MaxItemsPerBatch\": 10}",
            allowed,
            Place::ItemBatcher(language),
        )?;
        let max_items_per_batch =
            self.whole_setting(&f, "MaxItemsPerBatch", "MaxItemsPerBatchPath", language, 1..=u64::MAX);
        let max_input_bytes_per_batch = self.whole_setting(
            &f,
            "MaxInputBytesPerBatch",
            "MaxInputBytesPerBatchPath",
            language,
            1..=MAX_BATCH_BYTES,
        );
        let batch_input = self.template(&f, "BatchInput", language);
        let limits = [
            "MaxItemsPerBatch",
            "MaxItemsPerBatchPath",
            "MaxInputBytesPerBatch",
            "MaxInputBytesPerBatchPath",
        ];
        if !limits.iter().any(|k| f.has(k)) {
            self.error(
                f.path.clone(),
                "sets no batch size; add \"MaxItemsPerBatch\" (items per batch) or \"MaxInputBytesPerBatch\" (bytes per batch), or both",
            );
        }
        Some(ItemBatcher {
            max_items_per_batch,
            max_input_bytes_per_batch,
            batch_input,
        })
    }

    fn retry(&mut self, f: &Fields<'_>) -> Vec<Retrier> {
        let Some(value) = f.get("Retry") else {
            return Vec::new();
        };
        let at = f.at("Retry");
        let Some(retriers) = value.as_array() else {
            self.error(
                at,
                format!(
                    "must be an array of retriers, found {}; write e.g. [{{\"ErrorEquals\": [\"States.Timeout\"], \"MaxAttempts\": 2}}]",
                    found(value)
                ),
            );
            return Vec::new();
        };
        retriers
            .iter()
            .enumerate()
            .filter_map(|(i, retrier)| self.retrier(retrier, index(&at, i)))
            .collect()
    }

    fn retrier(&mut self, value: &Value, path: String) -> Option<Retrier> {
        let f = self.open(
            value,
            path,
            "an object such as {\"ErrorEquals\": [\"States.Timeout\"], \"MaxAttempts\": 2}",
            RETRIER_FIELDS.to_vec(),
            Place::Retrier,
        )?;
        let error_equals = self.error_equals(&f);
        let interval_seconds = match f.get("IntervalSeconds") {
            Some(v) => self.whole(v, &f.at("IntervalSeconds"), 1..=MAX_SECONDS, ""),
            None => Some(1),
        };
        let max_attempts = match f.get("MaxAttempts") {
            Some(v) => self.whole(v, &f.at("MaxAttempts"), 0..=MAX_SECONDS, ""),
            None => Some(3),
        };
        let backoff_rate = match f.get("BackoffRate") {
            Some(v) => self.number(v, &f.at("BackoffRate"), "a number").and_then(|rate| {
                if rate < 1.0 {
                    self.error(
                        f.at("BackoffRate"),
                        format!(
                            "must be at least 1.0, found {}; 1.0 waits IntervalSeconds each time, 2.0 doubles the wait",
                            found(v)
                        ),
                    );
                    None
                } else {
                    Some(rate)
                }
            }),
            None => Some(2.0),
        };
        let max_delay_seconds = f
            .get("MaxDelaySeconds")
            .and_then(|v| self.whole(v, &f.at("MaxDelaySeconds"), 1..=MAX_DELAY_SECONDS, ""));
        let jitter = match f.get("JitterStrategy") {
            None => Some(Jitter::None),
            Some(v) => self
                .word(v, &f.at("JitterStrategy"), &["FULL", "NONE"])
                .map(|w| match w {
                    "FULL" => Jitter::Full,
                    _ => Jitter::None,
                }),
        };
        let comment = self.string(&f, "Comment");
        Some(Retrier {
            error_equals: error_equals?,
            interval_seconds: interval_seconds?,
            max_attempts: max_attempts?,
            backoff_rate: backoff_rate?,
            max_delay_seconds,
            jitter: jitter?,
            comment,
        })
    }

    fn catch(&mut self, f: &Fields<'_>, language: QueryLanguage) -> Vec<Catcher> {
        let Some(value) = f.get("Catch") else {
            return Vec::new();
        };
        let at = f.at("Catch");
        let Some(catchers) = value.as_array() else {
            self.error(
                at,
                format!(
                    "must be an array of catchers, found {}; write e.g. [{{\"ErrorEquals\": [\"States.ALL\"], \"Next\": \"Recover\"}}]",
                    found(value)
                ),
            );
            return Vec::new();
        };
        catchers
            .iter()
            .enumerate()
            .filter_map(|(i, catcher)| self.catcher(catcher, index(&at, i), language))
            .collect()
    }

    fn catcher(&mut self, value: &Value, path: String, language: QueryLanguage) -> Option<Catcher> {
        let f = self.open(
            value,
            path,
            "an object such as {\"ErrorEquals\": [\"States.ALL\"], \"Next\": \"Recover\"}",
            catcher_fields(language),
            Place::Catcher(language),
        )?;
        let error_equals = self.error_equals(&f);
        let next = self.required_name(
            &f,
            "Next",
            "name the state to go to after these errors, e.g. \"Next\": \"Recover\"",
        );
        let result_path = self.data_path(&f, "ResultPath");
        let output = f.get("Output").cloned();
        let assign = self.object(&f, "Assign", "an object of variables by name, e.g. {\"failed\": true}");
        let comment = self.string(&f, "Comment");
        Some(Catcher {
            error_equals: error_equals?,
            next: next?,
            result_path,
            output,
            assign,
            comment,
        })
    }

    fn error_equals(&mut self, f: &Fields<'_>) -> Option<Vec<String>> {
        let at = f.at("ErrorEquals");
        match f.get("ErrorEquals") {
            None => {
                self.error(
                    at,
                    "missing; name the errors this handles, e.g. \"ErrorEquals\": [\"States.TaskFailed\"], or [\"States.ALL\"] for every error",
                );
                None
            }
            Some(Value::Array(names)) if names.is_empty() => {
                self.error(
                    at,
                    "names no error; add at least one, e.g. [\"States.TaskFailed\"], or [\"States.ALL\"] for every error",
                );
                None
            }
            Some(Value::Array(names)) => {
                let read: Vec<Option<String>> = names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        let path = index(&at, i);
                        let name = self.text(name, &path, "an error name")?;
                        if name.is_empty() {
                            self.error(
                                path,
                                "an error name cannot be empty; write the name, e.g. \"States.Timeout\"",
                            );
                            return None;
                        }
                        Some(name)
                    })
                    .collect();
                read.into_iter().collect()
            }
            Some(other) => {
                self.error(
                    at,
                    format!(
                        "must be an array of error names, found {}; write e.g. [\"States.TaskFailed\"]",
                        found(other)
                    ),
                );
                None
            }
        }
    }

    /// `Next` or `End`, on a state whose type has them.
    fn transition(&mut self, f: &Fields<'_>) -> Option<Transition> {
        let next = f.get("Next");
        let end = f.get("End");
        match (next, end) {
            (Some(_), Some(_)) => {
                self.error(
                    f.at("End"),
                    "a state has \"Next\" or \"End\", not both; keep \"Next\" to go on, or \"End\" to finish here",
                );
                None
            }
            (Some(_), None) => self.name(f, "Next").map(Transition::Next),
            (None, Some(Value::Bool(true))) => Some(Transition::End),
            (None, Some(Value::Bool(false))) => {
                self.error(
                    f.at("End"),
                    "\"End\": false does not end the state, and it has no \"Next\"; write \"End\": true, or replace it with \"Next\": \"NAME\"",
                );
                None
            }
            (None, Some(other)) => {
                self.error(
                    f.at("End"),
                    format!("must be true, found {}; write \"End\": true", found(other)),
                );
                None
            }
            (None, None) => {
                self.error(
                    f.path.clone(),
                    "has neither \"Next\" nor \"End\"; add \"Next\": \"NAME\" to go on to another state, or \"End\": true to finish here",
                );
                None
            }
        }
    }

    /// Opens an object, reporting every field its place does not allow.
    fn open<'a>(
        &mut self,
        value: &'a Value,
        path: String,
        what: &str,
        allowed: Vec<&'static str>,
        place: Place,
    ) -> Option<Fields<'a>> {
        match value.as_object() {
            Some(object) => Some(self.open_object(object, path, allowed, place)),
            None => {
                self.error(path, format!("must be {what}, found {}", found(value)));
                None
            }
        }
    }

    fn open_object<'a>(
        &mut self,
        object: &'a Object<String, Value>,
        path: String,
        allowed: Vec<&'static str>,
        place: Place,
    ) -> Fields<'a> {
        for key in object.keys() {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let message = misplaced(key, place).unwrap_or_else(|| unknown(key, &allowed));
            self.error(child(&path, key), message);
        }
        Fields { object, path, allowed }
    }

    fn query_language(&mut self, value: &Value, path: &str) -> Option<QueryLanguage> {
        match self.word(value, path, &["JSONPath", "JSONata"])? {
            "JSONata" => Some(QueryLanguage::Jsonata),
            _ => Some(QueryLanguage::JsonPath),
        }
    }

    /// One of `words`, written exactly.
    fn word(&mut self, value: &Value, path: &str, words: &[&'static str]) -> Option<&'static str> {
        let choices = words
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" or ");
        let Some(written) = value.as_str() else {
            self.error(path, format!("must be {choices}, found {}", found(value)));
            return None;
        };
        if let Some(word) = words.iter().find(|w| **w == written) {
            return Some(word);
        }
        let message = match words.iter().find(|w| w.eq_ignore_ascii_case(written)) {
            Some(word) => format!("must be {choices}, found {}; write \"{word}\"", found(value)),
            None => format!("must be {choices}, found {}", found(value)),
        };
        self.error(path, message);
        None
    }

    /// An optional string field.
    fn string(&mut self, f: &Fields<'_>, key: &str) -> Option<String> {
        let value = f.get(key)?;
        self.text(value, &f.at(key), "a string")
    }

    /// An optional state name (`Next`, `Default`): a non-empty string.
    fn name(&mut self, f: &Fields<'_>, key: &str) -> Option<String> {
        self.non_empty(f, key, "name a state")
    }

    fn non_empty(&mut self, f: &Fields<'_>, key: &str, fix: &str) -> Option<String> {
        let text = self.string(f, key)?;
        if text.is_empty() {
            self.error(f.at(key), format!("cannot be empty; {fix}"));
            return None;
        }
        Some(text)
    }

    /// A required state name (or, for `Resource`, what a task calls), with
    /// how to add it when missing.
    fn required_name(&mut self, f: &Fields<'_>, key: &str, help: &str) -> Option<String> {
        if !f.has(key) {
            self.error(f.at(key), format!("missing; {help}"));
            return None;
        }
        let fix = if key == "Resource" {
            "name what the task calls"
        } else {
            "name a state"
        };
        self.non_empty(f, key, fix)
    }

    fn text(&mut self, value: &Value, path: &str, what: &str) -> Option<String> {
        match value.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.error(path, format!("must be {what}, found {}", found(value)));
                None
            }
        }
    }

    fn boolean(&mut self, value: &Value, path: &str) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s == "true" || s == "false" => {
                self.error(
                    path,
                    format!("must be true or false, found \"{s}\"; write it without quotes"),
                );
                None
            }
            other => {
                self.error(path, format!("must be true or false, found {}", found(other)));
                None
            }
        }
    }

    fn number(&mut self, value: &Value, path: &str, what: &str) -> Option<f64> {
        match value.as_f64() {
            Some(n) if value.is_number() => Some(n),
            _ => {
                self.error(
                    path,
                    format!("must be {what}, found {}{}", found(value), unquote_hint(value)),
                );
                None
            }
        }
    }

    /// A whole number in `range`; `or` names what else a JSONata state may write.
    fn whole(&mut self, value: &Value, path: &str, range: RangeInclusive<u64>, or: &str) -> Option<u64> {
        let (min, max) = (*range.start(), *range.end());
        let expected = match min {
            0 => "a non-negative integer",
            1 => "a positive integer",
            _ => "an integer",
        };
        match value.as_u64() {
            Some(n) if range.contains(&n) => Some(n),
            Some(n) if n < min => {
                self.error(path, format!("must be {expected}{or}, found {n}"));
                None
            }
            Some(n) => {
                self.error(path, format!("must be at most {max}, found {n}"));
                None
            }
            None => {
                self.error(
                    path,
                    format!("must be {expected}{or}, found {}{}", found(value), unquote_hint(value)),
                );
                None
            }
        }
    }

    fn percentage(&mut self, value: &Value, path: &str, or: &str) -> Option<f64> {
        let what = format!("a number from 0 to 100{or}");
        let n = self.number(value, path, &what)?;
        if !(0.0..=100.0).contains(&n) {
            self.error(path, format!("must be from 0 to 100, found {}", found(value)));
            return None;
        }
        Some(n)
    }

    fn timestamp(&mut self, value: &Value, path: &str, or: &str) -> Option<jiff::Timestamp> {
        let example = "\"2026-03-14T01:59:00Z\"";
        let Some(written) = value.as_str() else {
            self.error(
                path,
                format!("must be a timestamp such as {example}{or}, found {}", found(value)),
            );
            return None;
        };
        let parsed = if written.contains(['t', 'z', ' ']) {
            None
        } else {
            written.parse::<jiff::Timestamp>().ok()
        };
        if parsed.is_none() {
            self.error(
                path,
                format!(
                    "{} is not a timestamp; write an RFC 3339 date and time with an uppercase T and a Z or an offset, e.g. {example}{}",
                    found(value),
                    if or.is_empty() { "" } else { ", or a JSONata expression \"{% ... %}\"" }
                ),
            );
        }
        parsed
    }

    /// A path field: a string, whose syntax [`crate::path`] checks.
    fn path_string(&mut self, value: &Value, path: &str) -> Option<String> {
        self.text(value, path, "a path string such as \"$.order.total\"")
    }

    /// `InputPath`, `OutputPath`, `ResultPath`: a path, or `null`.
    fn data_path(&mut self, f: &Fields<'_>, key: &str) -> Option<DataPath> {
        match f.get(key)? {
            Value::Null => Some(DataPath::Discard),
            Value::String(s) => Some(DataPath::Path(s.clone())),
            other => {
                self.error(
                    f.at(key),
                    format!(
                        "must be a path such as \"$.order\", or null to discard, found {}",
                        found(other)
                    ),
                );
                None
            }
        }
    }

    /// An optional object field.
    fn object(&mut self, f: &Fields<'_>, key: &str, what: &str) -> Option<Value> {
        let value = f.get(key)?;
        if value.is_object() {
            Some(value.clone())
        } else {
            self.error(f.at(key), format!("must be {what}, found {}", found(value)));
            None
        }
    }

    /// A payload template (`Parameters`, `ResultSelector`, `ItemSelector`,
    /// `BatchInput`) or JSONata `Arguments`: an object, or in JSONata also
    /// a `{% %}` string.
    fn template(&mut self, f: &Fields<'_>, key: &str, language: QueryLanguage) -> Option<Value> {
        let value = f.get(key)?;
        match value {
            Value::Object(_) => Some(value.clone()),
            Value::String(s) if language == QueryLanguage::Jsonata && jsonata(s).is_some() => Some(value.clone()),
            other => {
                let what = match language {
                    QueryLanguage::JsonPath => "an object, e.g. {\"id.$\": \"$.order.id\"}",
                    QueryLanguage::Jsonata => {
                        "an object or a JSONata expression, e.g. {\"id\": \"{% $states.input.order.id %}\"}"
                    }
                };
                self.error(f.at(key), format!("must be {what}, found {}", found(other)));
                None
            }
        }
    }

    /// A field that a JSONPath state may also give as `path_key`, and a
    /// JSONata state as a `{% %}` expression; `fixed` reads a written value.
    fn setting<T>(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        path_key: Option<&str>,
        language: QueryLanguage,
        fixed: impl FnOnce(&mut Reader, &Value, &str, &str) -> Option<T>,
    ) -> Option<Setting<T>> {
        let written = f.get(key);
        let by_path = path_key.and_then(|k| f.get(k).map(|v| (k, v)));
        match (written, by_path) {
            (Some(_), Some((path_key, _))) => {
                self.error(
                    f.path.clone(),
                    format!("has both \"{key}\" and \"{path_key}\"; keep one"),
                );
                None
            }
            (Some(value), None) => {
                if language == QueryLanguage::Jsonata
                    && let Some(expression) = value.as_str().and_then(jsonata)
                {
                    return Some(Setting::Jsonata(expression));
                }
                let or = if language == QueryLanguage::Jsonata {
                    OR_JSONATA
                } else {
                    ""
                };
                fixed(self, value, &f.at(key), or).map(Setting::Fixed)
            }
            (None, Some((path_key, value))) => self.path_string(value, &f.at(path_key)).map(Setting::Path),
            (None, None) => None,
        }
    }

    fn whole_setting(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        path_key: &'static str,
        language: QueryLanguage,
        range: RangeInclusive<u64>,
    ) -> Option<Setting<u64>> {
        self.setting(f, key, path_variant(language, path_key), language, |r, v, at, or| {
            r.whole(v, at, range, or)
        })
    }

    /// `Error`/`ErrorPath` and `Cause`/`CausePath` of a Fail state.
    fn text_setting(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        path_key: &'static str,
        language: QueryLanguage,
    ) -> Option<Setting<String>> {
        self.setting(f, key, path_variant(language, path_key), language, |r, v, at, or| {
            let text = r.text(v, at, &format!("a string{or}"))?;
            if !or.is_empty() && text.starts_with("{%") != text.ends_with("%}") {
                r.error(
                    at,
                    format!(
                        "{} is half a JSONata expression; write it whole, as \"{{% expression %}}\"",
                        found(v)
                    ),
                );
                return None;
            }
            Some(text)
        })
    }
}

/// The `...Path` variant of a field, which only JSONPath states have.
fn path_variant(language: QueryLanguage, path_key: &'static str) -> Option<&'static str> {
    (language == QueryLanguage::JsonPath).then_some(path_key)
}

/// The expression of a JSONata field: the text between `{%` and `%}`.
fn jsonata(text: &str) -> Option<String> {
    crate::jsonata::expression(text).map(str::to_string)
}

/// Why a field its place does not allow is there, and what to write
/// instead; `None` when the field is unknown everywhere.
fn misplaced(key: &str, place: Place) -> Option<String> {
    match place {
        Place::State(kind, language) => misplaced_in_state(key, kind, language),
        Place::Top => match key {
            "Type" | "Next" | "End" | "Resource" => Some(
                "the top level of a definition is a state machine, not a state; put the states in \"States\" and name the first in \"StartAt\"".to_string(),
            ),
            _ => None,
        },
        Place::Branch | Place::Processor | Place::Iterator => match key {
            "QueryLanguage" => Some(
                "a branch's states take their QueryLanguage from the Parallel or Map state; set it there, or on each state".to_string(),
            ),
            "TimeoutSeconds" | "Version" => Some(format!("only the top level of a definition has {key}; move it there")),
            "ProcessorConfig" if matches!(place, Place::Iterator) => Some(
                "Iterator is the older name of ItemProcessor and has no ProcessorConfig; rename Iterator to ItemProcessor".to_string(),
            ),
            "ProcessorConfig" => Some("only a Map's ItemProcessor has a ProcessorConfig; remove it".to_string()),
            _ => None,
        },
        Place::Retrier => CATCHER_ONLY.contains(&key).then(|| {
            format!(
                "a retrier runs the state again and has no {key}; to go on to another state after an error, add a catcher to \"Catch\""
            )
        }),
        Place::Catcher(language) => {
            if RETRIER_FIELDS.contains(&key) {
                return Some(format!(
                    "a catcher does not retry and has no {key}; put it in a retrier of the state's \"Retry\""
                ));
            }
            match (key, language) {
                ("ResultPath", QueryLanguage::Jsonata) => Some(
                    "JSONPath field in a JSONata state; use \"Output\" with $states.errorOutput instead".to_string(),
                ),
                ("Output", QueryLanguage::JsonPath) => Some(format!(
                    "JSONata field in a JSONPath state; use \"ResultPath\" instead{SET_JSONATA}"
                )),
                _ => None,
            }
        }
        Place::Rule { language, nested } => {
            if nested && matches!(key, "Next" | "Assign") {
                return Some(format!(
                    "only a rule directly in \"Choices\" has {key}; the rules inside \"And\", \"Or\" and \"Not\" only test: move it to the outer rule"
                ));
            }
            match language {
                QueryLanguage::Jsonata
                    if matches!(key, "Variable" | "And" | "Or" | "Not") || OPERATORS.iter().any(|(n, _)| *n == key) =>
                {
                    Some(
                        "JSONPath field in a JSONata state; write the test as a \"Condition\" instead, e.g. \"Condition\": \"{% $states.input.total > 100 %}\"".to_string(),
                    )
                }
                QueryLanguage::JsonPath if key == "Condition" => Some(format!(
                    "JSONata field in a JSONPath state; use \"Variable\" with a comparison such as \"NumericGreaterThan\" instead{SET_JSONATA}"
                )),
                QueryLanguage::JsonPath if key == "Output" => Some(format!(
                    "JSONata field in a JSONPath state; shape the Choice state's output with \"OutputPath\" instead{SET_JSONATA}"
                )),
                _ => None,
            }
        }
        Place::ProcessorConfig => None,
        Place::ItemBatcher(language) => match (key, language) {
            ("MaxItemsPerBatchPath" | "MaxInputBytesPerBatchPath", QueryLanguage::Jsonata) => {
                Some(jsonata_fix(key, Kind::Map))
            }
            _ => None,
        },
    }
}

const SET_JSONATA: &str = ", or set \"QueryLanguage\": \"JSONata\" on the state";

fn misplaced_in_state(key: &str, kind: Kind, language: QueryLanguage) -> Option<String> {
    if matches!(key, "Next" | "End") {
        let why = match kind {
            Kind::Choice => Some(
                "a Choice state has no Next or End of its own: each rule in \"Choices\" names its \"Next\", and \"Default\" names where to go when none matches; remove it",
            ),
            Kind::Succeed => Some("a Succeed state always ends its scope; remove it"),
            Kind::Fail => Some("a Fail state always ends the execution with an error; remove it"),
            _ => None,
        };
        if let Some(why) = why {
            return Some(why.to_string());
        }
    }
    if state_fields(kind, language.other()).contains(&key) {
        return Some(match language {
            QueryLanguage::Jsonata => jsonata_fix(key, kind),
            QueryLanguage::JsonPath => jsonpath_fix(key, kind),
        });
    }
    let owners: Vec<&str> = Kind::ALL
        .into_iter()
        .filter(|other| {
            *other != kind
                && (state_fields(*other, QueryLanguage::JsonPath).contains(&key)
                    || state_fields(*other, QueryLanguage::Jsonata).contains(&key))
        })
        .map(Kind::name)
        .collect();
    if owners.is_empty() {
        return None;
    }
    Some(format!(
        "not a field of {} {} state ({} states have it); remove it",
        article(kind.name()),
        kind.name(),
        list(&owners)
    ))
}

/// What a JSONata state writes instead of the JSONPath field `key`.
fn jsonata_fix(key: &str, kind: Kind) -> String {
    let instead = match key {
        "InputPath" => match kind {
            Kind::Task | Kind::Parallel => "use \"Arguments\" with $states.input instead".to_string(),
            Kind::Map => "use \"Items\" with $states.input instead".to_string(),
            _ => "use \"Output\" with $states.input instead".to_string(),
        },
        "Parameters" => match kind {
            Kind::Map => "use \"ItemSelector\" instead".to_string(),
            Kind::Pass => "use \"Output\" instead".to_string(),
            _ => "use \"Arguments\" instead".to_string(),
        },
        "ResultSelector" => "use \"Output\" with $states.result instead".to_string(),
        "ResultPath" => "use \"Output\" (or \"Assign\") with $states.input and $states.result instead".to_string(),
        "OutputPath" | "Result" => "use \"Output\" instead".to_string(),
        "ItemsPath" => "use \"Items\" instead, e.g. \"Items\": \"{% $states.input.orders %}\"".to_string(),
        _ => match key.strip_suffix("Path") {
            Some(base) => format!(
                "use \"{base}\" with a JSONata expression instead, e.g. \"{base}\": \"{{% $states.input.{} %}}\"",
                lower_first(base)
            ),
            None => "remove it".to_string(),
        },
    };
    format!("JSONPath field in a JSONata state; {instead}")
}

/// What a JSONPath state writes instead of the JSONata field `key`.
fn jsonpath_fix(key: &str, kind: Kind) -> String {
    let instead = match (key, kind) {
        ("Arguments", _) => "use \"Parameters\" instead",
        ("Items", _) => "use \"ItemsPath\" instead",
        ("Output", Kind::Task | Kind::Parallel | Kind::Map) => {
            "use \"ResultSelector\", \"ResultPath\" and \"OutputPath\" instead"
        }
        ("Output", Kind::Pass) => "use \"Result\" or \"Parameters\" instead",
        ("Output", _) => "use \"OutputPath\" instead",
        _ => "remove it",
    };
    format!("JSONata field in a JSONPath state; {instead}{SET_JSONATA}")
}

/// The message for a field no place knows, suggesting a close one.
fn unknown(key: &str, allowed: &[&'static str]) -> String {
    match closest(key, allowed.iter().copied()) {
        Some(near) => format!("unknown field; did you mean \"{near}\"?"),
        None if allowed.len() <= 16 => format!("unknown field; remove it (the fields here are {})", allowed.join(", ")),
        None => "unknown field; remove it".to_string(),
    }
}

/// The candidate closest to `word`, if it is close enough to be what was meant.
pub(crate) fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|candidate| *candidate != word)
        .map(|candidate| (distance(word, candidate), candidate))
        .filter(|(d, candidate)| {
            let length = candidate.chars().count();
            *d < length && *d <= 2.max(length / 3)
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| candidate)
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`;
/// a change of case alone counts as one edit.
fn distance(a: &str, b: &str) -> usize {
    if a.to_lowercase() == b.to_lowercase() {
        return 1;
    }
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

/// The path of field `key` of the object at `parent`.
pub(crate) fn child(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && !key.contains(['.', '[', ']', '"']) && key.trim() == key;
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{}]", Value::String(key.to_string())),
    }
}

/// The path of item `i` of the array at `parent`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// A value as a message shows what was found: strings quoted (and cut
/// short), containers by kind.
fn found(value: &Value) -> String {
    match value {
        Value::String(s) if s.chars().count() > 40 => {
            let mut short: String = s.chars().take(37).collect();
            short.push_str("...");
            Value::String(short).to_string()
        }
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
        other => other.to_string(),
    }
}

/// A hint for a number written as a string.
fn unquote_hint(value: &Value) -> &'static str {
    match value {
        Value::String(s) if s.trim().parse::<f64>().is_ok() => "; write it without quotes",
        _ => "",
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    }
}

/// `a`, `a and b`, `a, b and c`.
fn list(items: &[&str]) -> String {
    let mut text = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            text.push_str(if i + 1 == items.len() { " and " } else { ", " });
        }
        text.push_str(item);
    }
    text
}

fn lower_first(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Whether a string anywhere in `value` (keys included) may read the
/// context object: contains `$$`, or (in JSONata) `$states` other than
/// `$states.input`, `$states.result` or `$states.errorOutput`.
fn mentions_context(value: &Value) -> bool {
    let reads = |s: &str| {
        s.contains("$$")
            || s.match_indices("$states").any(|(at, _)| {
                let rest = &s[at + "$states".len()..];
                !(rest.starts_with(".input") || rest.starts_with(".result") || rest.starts_with(".errorOutput"))
            })
    };
    match value {
        Value::String(s) => reads(s),
        Value::Array(items) => items.iter().any(mentions_context),
        Value::Object(fields) => fields.iter().any(|(k, v)| k.contains("$$") || mentions_context(v)),
        _ => false,
    }
}
