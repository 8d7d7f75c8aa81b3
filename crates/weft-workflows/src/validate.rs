//! The checks across states that Step Functions runs before it accepts a
//! definition, on the model [`crate::definition`] reads.
//!
//! Each scope is checked on its own: the top-level states, every Parallel
//! branch and every Map's `ItemProcessor`. In a scope:
//! - `StartAt`, every `Next`, every choice rule's `Next`, `Default` and every
//!   catcher's `Next` name a state of the same scope (a transition never
//!   enters or leaves a branch);
//! - every state is reachable from `StartAt`, and some reachable state
//!   ends the scope (Succeed, Fail, or `"End": true`); these two are
//!   checked once every name of the scope resolves, since a state that
//!   looks cut off may be the one a misspelt `Next` meant.
//!
//! Across the whole definition, state names are unique, and in every
//! `Retry` and `Catch`, `States.ALL` stands alone and last, and each error
//! name that starts with `States.` is one the runtime raises.
//!
//! In every JSONPath state, the paths and payload templates read as
//! [`crate::path`] reads them: `InputPath`, `OutputPath`, `ItemsPath` and
//! the `...Path` settings are paths; `ResultPath`, a catcher's too, is a
//! reference path into the input; `Parameters`, `ResultSelector`,
//! `ItemSelector` and `BatchInput` are templates whose paths and intrinsic
//! calls parse; a Choice rule's `Variable` and `...Path` operands are
//! paths; a Fail state's `ErrorPath` and `CausePath` are a path or an
//! intrinsic call. A variable (`$name`) is taken as written: what it holds
//! is known only when the state runs.
//!
//! What this module must not know: how a definition's JSON is read (the
//! field-by-field checks are [`crate::definition`]'s) and how states run.

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::Value;

use crate::definition::{
    self, Condition, DataPath, Diagnostic, Operand, QueryLanguage, Relation, Setting, State, StateKind, StateMachine,
    Test, Transition, child, closest, index,
};
use crate::jsonata::{self, Expressions};
use crate::{intrinsics, path, variables};

/// The error names Step Functions itself raises; no other name may start
/// with `States.`.
pub const PREDEFINED_ERRORS: [&str; 17] = [
    "States.ALL",
    "States.DataLimitExceeded",
    "States.ExceedToleratedFailureThreshold",
    "States.HeartbeatTimeout",
    "States.Http.Socket",
    "States.IntrinsicFailure",
    "States.ItemReaderFailed",
    "States.NoChoiceMatched",
    "States.ParameterPathFailure",
    "States.Permissions",
    "States.ResultPathMatchFailure",
    "States.ResultWriterFailed",
    "States.Runtime",
    "States.TaskFailed",
    "States.Timeout",
    "States.QueryEvaluationError",
    "States.BranchFailed",
];

/// Reads a definition and checks it across states: [`definition::parse`],
/// then [`validate`] when it reads without mistakes.
///
/// ```
/// let definition = serde_json::json!({
///     "StartAt": "CheckOrder",
///     "States": {
///         "CheckOrder": {"Type": "Pass", "Next": "ChargeCard"},
///         "ChargeCart": {"Type": "Succeed"}
///     }
/// });
/// let errors = weft_workflows::validate::load(&definition).unwrap_err();
/// assert_eq!(
///     errors[0].to_string(),
///     r#"States.CheckOrder.Next: no state named "ChargeCard"; did you mean "ChargeCart"?"#
/// );
/// ```
pub fn load(definition: &Value) -> Result<StateMachine, Vec<Diagnostic>> {
    let mut machine = definition::parse(definition)?;
    let (mistakes, expressions) = checked(&machine);
    if mistakes.is_empty() {
        machine.expressions = expressions;
        Ok(machine)
    } else {
        Err(mistakes)
    }
}

/// Every mistake across the states of `machine`; empty when it may run.
pub fn validate(machine: &StateMachine) -> Vec<Diagnostic> {
    checked(machine).0
}

/// The mistakes, and the definition's JSONata expressions compiled.
fn checked(machine: &StateMachine) -> (Vec<Diagnostic>, Expressions) {
    let mut check = Check::default();
    check.names(&machine.states);
    check.scope("", &machine.start_at, &machine.states, &HashSet::new());
    let (expressions, mistakes) = Expressions::compile(check.sources.iter().map(|(_, source)| *source));
    for (i, mistake) in mistakes {
        if let Some((at, _)) = check.sources.get(i) {
            check.out.push(Diagnostic::new(at.clone(), mistake));
        }
    }
    (check.out, expressions)
}

#[derive(Default)]
struct Check<'a> {
    out: Vec<Diagnostic>,
    /// Every state of the definition by name: where it is first defined.
    everywhere: HashMap<&'a str, &'a str>,
    /// Every JSONata expression, with where it is written.
    sources: Vec<(String, &'a str)>,
}

impl<'a> Check<'a> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.out.push(Diagnostic::new(path, message));
    }

    /// Collects every state name of the definition, and reports a name
    /// defined twice.
    fn names(&mut self, states: &'a [State]) {
        for state in states {
            match self.everywhere.get(state.name.as_str()) {
                Some(first) => {
                    let message = format!(
                        "a state named \"{}\" is already defined at {first}; state names must be unique in the whole definition, across branches too: rename one",
                        state.name
                    );
                    self.error(state.location.clone(), message);
                }
                None => {
                    self.everywhere.insert(&state.name, &state.location);
                }
            }
            for (_, _, inner) in scopes(state) {
                self.names(inner);
            }
        }
    }

    /// The checks of one scope, `prefix` being where its `StartAt` and
    /// `States` are; then those of the scopes inside it.
    /// `outer` holds the variables the scopes around this one assign.
    fn scope(&mut self, prefix: &str, start_at: &str, states: &'a [State], outer: &HashSet<String>) {
        let names: Vec<&str> = states.iter().map(|s| s.name.as_str()).collect();
        // Until every name resolves, what is reachable is not known: a
        // state that looks cut off may be the one a misspelt Next meant.
        let mut resolved = names.contains(&start_at);
        if !resolved {
            self.missing(prefix, child(prefix, "StartAt"), start_at, &names);
        }
        for state in states {
            for (path, target) in targets(state) {
                if !names.contains(&target) {
                    self.missing(prefix, path, target, &names);
                    resolved = false;
                }
            }
            self.error_names(state);
            self.paths(state);
            self.expressions(state);
        }
        let mut assigned = outer.clone();
        for state in states {
            for (at, name) in assigns(state) {
                if let Err(e) = variables::check_name(&name) {
                    self.error(at, e);
                } else if outer.contains(&name) {
                    self.error(
                        at,
                        format!(
                            "${name} is assigned outside this Parallel branch or Map iteration; a branch reads the variables around it but may not assign them: give this one another name, or pass the value out through the branch's output"
                        ),
                    );
                } else {
                    assigned.insert(name);
                }
            }
        }
        if resolved {
            let reached = reachable(start_at, states);
            for state in states.iter().filter(|s| !reached.contains(s.name.as_str())) {
                self.error(
                    state.location.clone(),
                    format!("unreachable from StartAt \"{start_at}\"; remove it or point a Next at it"),
                );
            }
            let ends = states
                .iter()
                .any(|s| reached.contains(s.name.as_str()) && s.is_terminal());
            if !ends {
                self.error(
                    child(prefix, "States"),
                    format!(
                        "no state reachable from StartAt \"{start_at}\" ends {}, so it would never finish; give one \"End\": true, or go to a Succeed or Fail state",
                        if prefix.is_empty() { "the execution" } else { "this branch" }
                    ),
                );
            }
        }
        for state in states {
            for (location, start_at, inner) in scopes(state) {
                self.scope(location, start_at, inner, &assigned);
            }
        }
    }

    /// A transition (or `StartAt`) at `path` names `target`, which the
    /// scope at `prefix` has not.
    fn missing(&mut self, prefix: &str, path: String, target: &str, names: &[&str]) {
        let message = if let Some(elsewhere) = self.everywhere.get(target) {
            let inside = prefix.is_empty() || elsewhere.starts_with(&format!("{prefix}."));
            let fix = if inside {
                "go to the Parallel or Map state that holds it instead"
            } else {
                "end this branch with \"End\": true, and go on from the Parallel or Map state that holds it"
            };
            format!(
                "no state named \"{target}\" in this scope; \"{target}\" is at {elsewhere}, and a transition never enters or leaves a Parallel branch or a Map's ItemProcessor: {fix}"
            )
        } else if let Some(near) = closest(target, names.iter().copied()) {
            format!("no state named \"{target}\"; did you mean \"{near}\"?")
        } else {
            let shown: Vec<String> = names.iter().take(10).map(|n| format!("\"{n}\"")).collect();
            format!(
                "no state named \"{target}\"; add it, or name one of {}{}",
                shown.join(", "),
                if names.len() > 10 { ", ..." } else { "" }
            )
        };
        self.error(path, message);
    }

    /// Every JSONata expression of a JSONata state, kept to be compiled,
    /// and checked to read `$states.result` and `$states.errorOutput` only
    /// where they are: after the work, and in a catcher.
    fn expressions(&mut self, state: &'a State) {
        if !state.is_jsonata() {
            return;
        }
        let at = |field: &str| child(&state.location, field);
        let works = matches!(
            state.kind,
            StateKind::Task(_) | StateKind::Parallel(_) | StateKind::Map(_)
        );
        // (where, the value, whether $states.result is there, whether $states.errorOutput is)
        let mut fields: Vec<(String, &'a Value, bool, bool)> = Vec::new();
        if let Some(v) = &state.arguments {
            fields.push((at("Arguments"), v, false, false));
        }
        if let Some(v) = &state.output {
            fields.push((at("Output"), v, works, false));
        }
        if let Some(v) = &state.assign {
            fields.push((at("Assign"), v, works, false));
        }
        let catch = at("Catch");
        for (i, catcher) in state.catch().iter().enumerate() {
            let here = index(&catch, i);
            if let Some(v) = &catcher.output {
                fields.push((child(&here, "Output"), v, false, true));
            }
            if let Some(v) = &catcher.assign {
                fields.push((child(&here, "Assign"), v, false, true));
            }
        }
        // Settings written as one expression.
        let mut settings: Vec<(String, &'a str)> = Vec::new();
        let mut setting = |field: String, source: Option<&'a str>| {
            if let Some(source) = source {
                settings.push((field, source));
            }
        };
        match &state.kind {
            StateKind::Task(task) => {
                setting(at("TimeoutSeconds"), expression(task.timeout_seconds.as_ref()));
                setting(at("HeartbeatSeconds"), expression(task.heartbeat_seconds.as_ref()));
            }
            StateKind::Wait(wait) => match &wait.until {
                definition::WaitFor::Seconds(s) => setting(at("Seconds"), expression(Some(s))),
                definition::WaitFor::Timestamp(t) => setting(at("Timestamp"), expression(Some(t))),
            },
            StateKind::Fail(fail) => {
                setting(at("Error"), expression(fail.error.as_ref()));
                setting(at("Cause"), expression(fail.cause.as_ref()));
            }
            StateKind::Choice(choice) => {
                let choices = at("Choices");
                for (i, rule) in choice.choices.iter().enumerate() {
                    let here = index(&choices, i);
                    if let Condition::Jsonata(source) = &rule.condition {
                        setting(child(&here, "Condition"), Some(source));
                    }
                    if let Some(v) = &rule.output {
                        fields.push((child(&here, "Output"), v, false, false));
                    }
                    if let Some(v) = &rule.assign {
                        fields.push((child(&here, "Assign"), v, false, false));
                    }
                }
            }
            StateKind::Map(map) => {
                match &map.items {
                    Some(Setting::Jsonata(source)) => setting(at("Items"), Some(source)),
                    Some(Setting::Fixed(items)) => {
                        for (i, item) in items.iter().enumerate() {
                            fields.push((index(&at("Items"), i), item, false, false));
                        }
                    }
                    _ => {}
                }
                if let Some(v) = &map.item_selector {
                    fields.push((at(map.item_selector_field), v, false, false));
                }
                setting(at("MaxConcurrency"), expression(map.max_concurrency.as_ref()));
                setting(
                    at("ToleratedFailurePercentage"),
                    expression(map.tolerated_failure_percentage.as_ref()),
                );
                setting(
                    at("ToleratedFailureCount"),
                    expression(map.tolerated_failure_count.as_ref()),
                );
                if let Some(batcher) = &map.item_batcher {
                    let batcher_at = at("ItemBatcher");
                    setting(
                        child(&batcher_at, "MaxItemsPerBatch"),
                        expression(batcher.max_items_per_batch.as_ref()),
                    );
                    setting(
                        child(&batcher_at, "MaxInputBytesPerBatch"),
                        expression(batcher.max_input_bytes_per_batch.as_ref()),
                    );
                    if let Some(v) = &batcher.batch_input {
                        fields.push((child(&batcher_at, "BatchInput"), v, false, false));
                    }
                }
            }
            StateKind::Pass(_) | StateKind::Succeed | StateKind::Parallel(_) => {}
        }
        let mut found: Vec<(String, &'a str, bool, bool)> = settings
            .into_iter()
            .map(|(at, source)| (at, source, false, false))
            .collect();
        for (at, value, result, error) in fields {
            let mut halves = Vec::new();
            jsonata::halves(value, at.clone(), &mut halves);
            for half in halves {
                self.error(
                    half,
                    "is not a whole JSONata expression: one is a string that starts with \"{%\" and ends with \"%}\" with an expression between, and any other string is copied as written; complete it or remove the delimiters",
                );
            }
            let mut inside = Vec::new();
            jsonata::sources(value, at, &mut inside);
            found.extend(inside.into_iter().map(|(at, source)| (at, source, result, error)));
        }
        for (at, source, result, error) in found {
            if !result && source.contains("$states.result") {
                let why = if error {
                    "a catcher has the error ($states.errorOutput), not a result"
                } else {
                    "$states.result is there only in the Output and Assign of a Task, Parallel or Map state, once its work is done"
                };
                self.error(
                    at.clone(),
                    format!("reads $states.result, which this field does not have: {why}"),
                );
            }
            if !error && source.contains("$states.errorOutput") {
                self.error(
                    at.clone(),
                    "reads $states.errorOutput, which only a catcher's Output and Assign have",
                );
            }
            self.sources.push((at, source));
        }
    }

    /// `States.ALL` alone and last, and only predefined `States.` names, in
    /// the state's `Retry` and `Catch`.
    fn error_names(&mut self, state: &State) {
        let retry: Vec<&[String]> = state.retry().iter().map(|r| r.error_equals.as_slice()).collect();
        let catch: Vec<&[String]> = state.catch().iter().map(|c| c.error_equals.as_slice()).collect();
        self.handlers(&child(&state.location, "Retry"), "retrier", &retry);
        self.handlers(&child(&state.location, "Catch"), "catcher", &catch);
    }

    fn handlers(&mut self, path: &str, what: &str, lists: &[&[String]]) {
        for (i, names) in lists.iter().enumerate() {
            let at = index(path, i);
            let error_equals = child(&at, "ErrorEquals");
            for (j, name) in names.iter().enumerate() {
                if name.starts_with("States.") && !PREDEFINED_ERRORS.contains(&name.as_str()) {
                    let message = match closest(name, PREDEFINED_ERRORS) {
                        Some(near) => format!("\"{name}\" is not a predefined error; did you mean \"{near}\"?"),
                        None => format!(
                            "\"{name}\" is not a predefined error, and names that start with \"States.\" are kept for the errors the runtime raises; name your own errors without that prefix"
                        ),
                    };
                    self.error(index(&error_equals, j), message);
                }
            }
            if names.iter().any(|n| n == "States.ALL") {
                if names.len() > 1 {
                    self.error(
                        error_equals.clone(),
                        format!(
                            "States.ALL matches every error, so it stands alone in ErrorEquals; remove the other names, or give them a {what} of their own before this one"
                        ),
                    );
                }
                if i + 1 != lists.len() {
                    self.error(
                        at,
                        format!(
                            "States.ALL must be in the last {what}, or the ones after it are never used; move this {what} to the end"
                        ),
                    );
                }
            }
        }
    }
}

impl Check<'_> {
    /// The syntax of every path, template and intrinsic call of a JSONPath
    /// state.
    fn paths(&mut self, state: &State) {
        if state.query_language != QueryLanguage::JsonPath {
            return;
        }
        let at = |field: &str| child(&state.location, field);
        for (field, value) in [("InputPath", &state.input_path), ("OutputPath", &state.output_path)] {
            if let Some(DataPath::Path(p)) = value {
                self.path(at(field), p);
            }
        }
        if let Some(DataPath::Path(p)) = &state.result_path {
            self.reference_path(at("ResultPath"), p);
        }
        for (field, template) in [
            ("Parameters", &state.parameters),
            ("ResultSelector", &state.result_selector),
        ] {
            if let Some(template) = template {
                self.template(&at(field), template);
            }
        }
        let catch = at("Catch");
        for (i, catcher) in state.catch().iter().enumerate() {
            if let Some(DataPath::Path(p)) = &catcher.result_path {
                self.reference_path(child(&index(&catch, i), "ResultPath"), p);
            }
        }
        // Every Assign is a template.
        for (field, assign) in assign_fields(state) {
            self.template(&field, assign);
        }
        match &state.kind {
            StateKind::Task(task) => {
                self.setting(at("TimeoutSecondsPath"), task.timeout_seconds.as_ref());
                self.setting(at("HeartbeatSecondsPath"), task.heartbeat_seconds.as_ref());
            }
            StateKind::Wait(wait) => match &wait.until {
                definition::WaitFor::Seconds(s) => self.setting(at("SecondsPath"), Some(s)),
                definition::WaitFor::Timestamp(t) => self.setting(at("TimestampPath"), Some(t)),
            },
            StateKind::Map(map) => {
                self.setting(at("ItemsPath"), map.items.as_ref());
                self.setting(at("MaxConcurrencyPath"), map.max_concurrency.as_ref());
                self.setting(
                    at("ToleratedFailurePercentagePath"),
                    map.tolerated_failure_percentage.as_ref(),
                );
                self.setting(at("ToleratedFailureCountPath"), map.tolerated_failure_count.as_ref());
                if let Some(selector) = &map.item_selector {
                    self.template(&at(map.item_selector_field), selector);
                }
                if let Some(batcher) = &map.item_batcher {
                    let batcher_at = at("ItemBatcher");
                    self.setting(
                        child(&batcher_at, "MaxItemsPerBatchPath"),
                        batcher.max_items_per_batch.as_ref(),
                    );
                    self.setting(
                        child(&batcher_at, "MaxInputBytesPerBatchPath"),
                        batcher.max_input_bytes_per_batch.as_ref(),
                    );
                    if let Some(batch_input) = &batcher.batch_input {
                        self.template(&child(&batcher_at, "BatchInput"), batch_input);
                    }
                }
            }
            StateKind::Choice(choice) => {
                let choices = at("Choices");
                for (i, rule) in choice.choices.iter().enumerate() {
                    self.condition(&index(&choices, i), &rule.condition);
                }
            }
            StateKind::Fail(fail) => {
                for (field, setting) in [("ErrorPath", &fail.error), ("CausePath", &fail.cause)] {
                    if let Some(Setting::Path(text)) = setting {
                        self.path_or_call(at(field), field, text);
                    }
                }
            }
            StateKind::Pass(_) | StateKind::Succeed | StateKind::Parallel(_) => {}
        }
    }

    /// The `Variable` and the `...Path` operand of a rule at `at`, and
    /// those of the rules inside it.
    fn condition(&mut self, at: &str, condition: &Condition) {
        match condition {
            Condition::And(rules) | Condition::Or(rules) => {
                let combinator = if matches!(condition, Condition::And(_)) {
                    "And"
                } else {
                    "Or"
                };
                let list = child(at, combinator);
                for (i, rule) in rules.iter().enumerate() {
                    self.condition(&index(&list, i), rule);
                }
            }
            Condition::Not(rule) => self.condition(&child(at, "Not"), rule),
            Condition::Test { variable, test } => {
                self.path(child(at, "Variable"), variable);
                let operand = match test {
                    Test::String(relation, Operand::Path(p)) => Some(("String", Some(*relation), p)),
                    Test::Numeric(relation, Operand::Path(p)) => Some(("Numeric", Some(*relation), p)),
                    Test::Timestamp(relation, Operand::Path(p)) => Some(("Timestamp", Some(*relation), p)),
                    Test::Boolean(Operand::Path(p)) => Some(("Boolean", None, p)),
                    _ => None,
                };
                if let Some((family, relation, p)) = operand {
                    let relation = relation.map_or("Equals", relation_name);
                    self.path(child(at, &format!("{family}{relation}Path")), p);
                }
            }
            Condition::Jsonata(_) => {}
        }
    }

    /// A `...Path` setting read from the input when the state runs.
    fn setting<T>(&mut self, at: String, setting: Option<&Setting<T>>) {
        if let Some(Setting::Path(p)) = setting {
            self.path(at, p);
        }
    }

    fn path(&mut self, at: String, text: &str) {
        // The parser's reasons already say how to write the path.
        if let Err(e) = path::check_path(text) {
            self.error(at, e);
        }
    }

    fn reference_path(&mut self, at: String, text: &str) {
        if let Err(e) = path::check_reference_path(text) {
            let fix = if e.starts_with("invalid path") {
                "; ResultPath names where the result goes in the input, e.g. \"$.result\", or is null to keep the input as it is"
            } else {
                ""
            };
            self.error(at, format!("{e}{fix}"));
        }
    }

    /// A payload template at `field`, e.g. `States.Charge.Parameters`; a
    /// mistake in it is shown at the field inside, `States.Charge.Parameters.amount.$`.
    fn template(&mut self, field: &str, template: &Value) {
        if let Err((inside, reason)) = path::check_template(template) {
            let at = match inside.as_str() {
                "" => field.to_string(),
                i if i.starts_with('[') => format!("{field}{i}"),
                i => format!("{field}.{i}"),
            };
            self.error(at, reason);
        }
    }

    /// `ErrorPath` or `CausePath`: a path, or an intrinsic function call.
    fn path_or_call(&mut self, at: String, field: &str, text: &str) {
        let written = field.trim_end_matches("Path");
        if text.trim_start().starts_with("States.") {
            if let Err(e) = intrinsics::parse(text) {
                self.error(at, e.to_string());
            }
        } else if text.starts_with('$') {
            self.path(at, text);
        } else {
            self.error(
                at,
                format!(
                    "{text:?} is neither a path (starting with '$') nor an intrinsic function call (starting with 'States.'); to give the {} as it is, write \"{written}\" instead of \"{field}\"",
                    written.to_lowercase()
                ),
            );
        }
    }
}

/// The expression of a setting written as one.
fn expression<T>(setting: Option<&Setting<T>>) -> Option<&str> {
    match setting {
        Some(Setting::Jsonata(source)) => Some(source),
        _ => None,
    }
}

/// A state's `Assign` fields (its own, its Choice rules', its catchers'),
/// each with where it is written.
fn assign_fields(state: &State) -> Vec<(String, &Value)> {
    let mut fields = vec![(child(&state.location, "Assign"), state.assign.as_ref())];
    if let StateKind::Choice(choice) = &state.kind {
        let choices = child(&state.location, "Choices");
        for (i, rule) in choice.choices.iter().enumerate() {
            fields.push((child(&index(&choices, i), "Assign"), rule.assign.as_ref()));
        }
    }
    let catch = child(&state.location, "Catch");
    for (i, catcher) in state.catch().iter().enumerate() {
        fields.push((child(&index(&catch, i), "Assign"), catcher.assign.as_ref()));
    }
    fields
        .into_iter()
        .filter_map(|(at, assign)| Some((at, assign?)))
        .collect()
}

/// The variables a state assigns, each with where it is written; a
/// JSONPath name without its `.$`.
fn assigns(state: &State) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (at, assign) in assign_fields(state) {
        for key in assign.as_object().into_iter().flat_map(|o| o.keys()) {
            let name = match state.query_language {
                QueryLanguage::JsonPath => key.strip_suffix(".$").unwrap_or(key),
                QueryLanguage::Jsonata => key,
            };
            found.push((child(&at, key), name.to_string()));
        }
    }
    found
}

/// How an operator name writes `relation`: `Equals`, `LessThanEquals`, ...
fn relation_name(relation: Relation) -> &'static str {
    match relation {
        Relation::Equals => "Equals",
        Relation::LessThan => "LessThan",
        Relation::GreaterThan => "GreaterThan",
        Relation::LessThanEquals => "LessThanEquals",
        Relation::GreaterThanEquals => "GreaterThanEquals",
    }
}

/// The states a state may go to, each with the path of the field naming it.
fn targets(state: &State) -> Vec<(String, &str)> {
    let mut targets = Vec::new();
    if let StateKind::Choice(choice) = &state.kind {
        let choices = child(&state.location, "Choices");
        for (i, rule) in choice.choices.iter().enumerate() {
            targets.push((child(&index(&choices, i), "Next"), rule.next.as_str()));
        }
        if let Some(default) = &choice.default {
            targets.push((child(&state.location, "Default"), default.as_str()));
        }
    }
    if let Some(Transition::Next(next)) = state.transition() {
        targets.push((child(&state.location, "Next"), next.as_str()));
    }
    let catch = child(&state.location, "Catch");
    for (i, catcher) in state.catch().iter().enumerate() {
        targets.push((child(&index(&catch, i), "Next"), catcher.next.as_str()));
    }
    targets
}

/// The scopes inside a state, its Parallel branches or its Map's
/// processor: where each is, its `StartAt` and its states.
fn scopes(state: &State) -> Vec<(&str, &str, &[State])> {
    match &state.kind {
        StateKind::Parallel(parallel) => parallel
            .branches
            .iter()
            .map(|b| (b.location.as_str(), b.start_at.as_str(), b.states.as_slice()))
            .collect(),
        StateKind::Map(map) => {
            let processor = &map.processor;
            vec![(
                processor.location.as_str(),
                processor.start_at.as_str(),
                processor.states.as_slice(),
            )]
        }
        _ => Vec::new(),
    }
}

/// The names of the states reachable from `start_at` by any transition.
fn reachable<'a>(start_at: &'a str, states: &'a [State]) -> HashSet<&'a str> {
    let by_name: HashMap<&str, &State> = states.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut reached = HashSet::from([start_at]);
    let mut queue = VecDeque::from([start_at]);
    while let Some(name) = queue.pop_front() {
        let Some(state) = by_name.get(name) else {
            continue;
        };
        for (_, target) in targets(state) {
            if by_name.contains_key(target) && reached.insert(target) {
                queue.push_back(target);
            }
        }
    }
    reached
}
