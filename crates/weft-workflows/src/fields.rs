//! What a state's fields yield when it runs, in its query language: paths,
//! payload templates and intrinsic functions in JSONPath, `{% %}`
//! expressions in JSONata, and in both the variables of its scope.
//!
//! The interpreter ([`crate::execution`]) decides what to evaluate when;
//! a [`Fields`] evaluates it, against the state's input, its context
//! object and the variables as they were when the state was entered, and
//! turns a mistake in the data into the error Step Functions raises for it
//! (`States.Runtime` for a path, `States.QueryEvaluationError` for an
//! expression), naming the state and the field.

use std::ops::RangeInclusive;
use std::time::Instant;

use serde_json::{Map, Value};

use crate::choice;
use crate::definition::{Condition, DataPath, Setting, State};
use crate::execution::Failure;
use crate::intrinsics::Draws;
use crate::jsonata::{self, EVALUATION_ERROR, Expressions};
use crate::path::{self, Env, Path, Template, Variables};

/// Where an evaluation that failed is told, for the history
/// (`EvaluationFailed`).
pub trait Witness: Sync {
    fn evaluation_failed(&self, state: &str, failure: &Failure);
}

/// A state's fields, ready to be evaluated.
pub struct Fields<'d> {
    pub state: &'d State,
    /// What the state's data processing reads: in JSONPath the effective
    /// input (after `InputPath`), in JSONata the input (`$states.input`).
    pub input: &'d Value,
    pub context: &'d Value,
    pub variables: &'d dyn Variables,
    expressions: &'d Expressions,
    /// Where the intrinsic functions draw.
    draws: Draws,
    seed: u64,
    /// When the state's JSONata expressions must be done (JSONata only).
    deadline: Option<Instant>,
    /// JSONata's view: `$states` and the variables (JSONata states only).
    jsonata: Option<jsonata::Env<'d>>,
    witness: &'d dyn Witness,
}

impl<'d> Fields<'d> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        state: &'d State,
        input: &'d Value,
        context: &'d Value,
        variables: &'d dyn Variables,
        expressions: &'d Expressions,
        seed: u64,
        deadline: Option<Instant>,
        entered: jiff::Timestamp,
        witness: &'d dyn Witness,
    ) -> Fields<'d> {
        let jsonata = state.is_jsonata().then(|| {
            let deadline = deadline.unwrap_or_else(|| Instant::now() + jsonata::MAX_TIME);
            jsonata::Env::new(input, context, variables, entered, seed, deadline)
        });
        Fields {
            state,
            input,
            context,
            variables,
            expressions,
            draws: Draws::new(seed),
            seed,
            deadline,
            jsonata,
            witness,
        }
    }

    /// When the state's expressions must be done: a Map's items share it.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The same fields once the work has given `result` (`$states.result`).
    pub fn with_result<'r>(&'r self, result: &'r Value) -> Fields<'r> {
        Fields {
            jsonata: self.jsonata.as_ref().map(|env| env.with_result(result)),
            ..self.reborrow()
        }
    }

    /// The same fields in a catcher of `error_output` (`$states.errorOutput`).
    pub fn with_error<'r>(&'r self, error_output: &'r Value) -> Fields<'r> {
        Fields {
            jsonata: self.jsonata.as_ref().map(|env| env.with_error(error_output)),
            ..self.reborrow()
        }
    }

    fn reborrow(&self) -> Fields<'_> {
        Fields {
            state: self.state,
            input: self.input,
            context: self.context,
            variables: self.variables,
            expressions: self.expressions,
            draws: Draws::new(!self.seed),
            seed: !self.seed,
            deadline: self.deadline,
            jsonata: None,
            witness: self.witness,
        }
    }

    /// What paths read: the context object, the variables, and the draws
    /// of the intrinsic functions.
    pub fn env(&self) -> Env<'_> {
        Env {
            context: self.context,
            variables: self.variables,
            draws: Some(&self.draws),
        }
    }

    fn jsonata(&self) -> Result<&jsonata::Env<'d>, Failure> {
        self.jsonata.as_ref().ok_or_else(|| {
            Failure::runtime(format!(
                "state {:?}: a JSONata field reached the JSONPath evaluator",
                self.state.name
            ))
        })
    }

    /// A JSONata failure: told to the witness, and named after the state.
    pub fn failed(&self, failure: Failure) -> Failure {
        let failure = Failure {
            error: failure.error,
            cause: failure.cause.map(|c| format!("state {:?}, {c}", self.state.name)),
        };
        self.witness.evaluation_failed(&self.state.name, &failure);
        failure
    }

    /// What the expression `source`, written at `field`, yields (JSONata).
    pub fn eval(&self, source: &str, field: &str) -> Result<Value, Failure> {
        let env = self.jsonata()?;
        match env.eval(self.expressions, source, field) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(self.failed(Failure::new(
                EVALUATION_ERROR,
                format!("field {field}: the expression {source:?} yields nothing (JSONata's undefined)"),
            ))),
            Err(e) => Err(self.failed(prefixed(e))),
        }
    }

    /// A JSONata template at `field`: its `{% %}` strings evaluated.
    pub fn value(&self, template: &Value, field: &str) -> Result<Value, Failure> {
        let env = self.jsonata()?;
        env.value(self.expressions, template, field)
            .map_err(|e| self.failed(prefixed(e)))
    }

    /// A JSONPath payload template applied to `input`.
    pub fn template(&self, template: &Value, input: &Value) -> Result<Value, Failure> {
        self::template(template, input, &self.env())
    }

    /// `InputPath` or `OutputPath` applied to `value`: the whole value when
    /// absent, `{}` when null.
    pub fn select(&self, path: Option<&DataPath>, value: &Value) -> Result<Value, Failure> {
        select(path, value, &self.env())
    }

    /// The value a JSONPath path names.
    pub fn path(&self, path: &str, value: &Value) -> Result<Value, Failure> {
        select_path(path, value, &self.env())
    }

    /// A state's output in JSONata: its `Output` if it has one, else
    /// `default`.
    pub fn output(&self, output: Option<&Value>, default: impl FnOnce() -> Value) -> Result<Value, Failure> {
        match output {
            Some(output) => self.value(output, "Output"),
            None => Ok(default()),
        }
    }

    /// The output of a state that passes its input on (Choice, Wait,
    /// Succeed): in JSONata `output` (the state's, or its Choice rule's)
    /// if there is one, else the input; in JSONPath the input through the
    /// state's `OutputPath`.
    pub fn passed_on(&self, output: Option<&Value>) -> Result<Value, Failure> {
        if self.state.is_jsonata() {
            self.output(output, || self.input.clone())
        } else {
            self.select(self.state.output_path.as_ref(), self.input)
        }
    }

    /// What `assign` sets: in JSONPath a payload template over `subject`
    /// (the state's result, its input, or the error caught), in JSONata
    /// its expressions. `None` when there is no `Assign`.
    pub fn assign(&self, assign: Option<&Value>, subject: &Value) -> Result<Option<Map<String, Value>>, Failure> {
        let Some(assign) = assign else {
            return Ok(None);
        };
        let assigned = if self.state.is_jsonata() {
            self.value(assign, "Assign")?
        } else {
            self.template(assign, subject)?
        };
        match assigned {
            Value::Object(map) => Ok(Some(map)),
            other => Err(Failure::runtime(format!(
                "state {:?}: Assign gave {}, not an object of variables",
                self.state.name,
                kind_of(&other)
            ))),
        }
    }

    /// Whether the condition of Choice rule `rule` holds.
    pub fn condition(&self, condition: &Condition, rule: usize) -> Result<bool, Failure> {
        match condition {
            Condition::Jsonata(source) => {
                let field = || format!("Choices[{rule}].Condition");
                match self.eval(source, &field())? {
                    Value::Bool(b) => Ok(b),
                    other => Err(self.failed(Failure::new(
                        EVALUATION_ERROR,
                        format!(
                            "field {}: the condition yields {}, not true or false",
                            field(),
                            kind_of(&other)
                        ),
                    ))),
                }
            }
            _ => choice::holds(condition, self.input, &self.env()),
        }
    }

    /// A whole number a setting gives, in `range`.
    pub fn number(&self, setting: &Setting<u64>, field: &str, range: RangeInclusive<u64>) -> Result<u64, Failure> {
        match setting {
            Setting::Fixed(n) => Ok(*n),
            Setting::Path(p) => {
                let value = self.path(p, self.input)?;
                // A path's number is cut to a whole one, as it always was.
                let cut = value
                    .as_u64()
                    .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64));
                cut.ok_or_else(|| {
                    Failure::runtime(format!(
                        "{field}Path {p} names {}, not a non-negative number",
                        kind_of(&value)
                    ))
                })
            }
            Setting::Jsonata(source) => {
                let value = self.eval(source, field)?;
                match whole(&value).filter(|n| range.contains(n)) {
                    Some(n) => Ok(n),
                    None => Err(self.failed(Failure::new(
                        EVALUATION_ERROR,
                        format!(
                            "field {field}: the expression yields {value}, not a whole number from {} to {}",
                            range.start(),
                            range.end()
                        ),
                    ))),
                }
            }
        }
    }

    /// A percentage (0 to 100) a setting gives.
    pub fn percentage(&self, setting: &Setting<f64>, field: &str) -> Result<f64, Failure> {
        match setting {
            Setting::Fixed(p) => Ok(*p),
            Setting::Path(p) => self
                .path(p, self.input)?
                .as_f64()
                .ok_or_else(|| Failure::runtime(format!("{field}Path {p} is not a number"))),
            Setting::Jsonata(source) => {
                let value = self.eval(source, field)?;
                match value.as_f64().filter(|p| (0.0..=100.0).contains(p)) {
                    Some(p) => Ok(p),
                    None => Err(self.failed(Failure::new(
                        EVALUATION_ERROR,
                        format!("field {field}: the expression yields {value}, not a percentage from 0 to 100"),
                    ))),
                }
            }
        }
    }

    /// A Wait state's `Timestamp`.
    pub fn timestamp(&self, setting: &Setting<jiff::Timestamp>) -> Result<jiff::Timestamp, Failure> {
        match setting {
            Setting::Fixed(t) => Ok(*t),
            Setting::Path(p) => {
                let value = self.path(p, self.input)?;
                value.as_str().and_then(choice::timestamp).ok_or_else(|| {
                    Failure::runtime(format!("TimestampPath {p} names {value}, not an RFC 3339 timestamp"))
                })
            }
            Setting::Jsonata(source) => {
                let value = self.eval(source, "Timestamp")?;
                match value.as_str().and_then(choice::timestamp) {
                    Some(t) => Ok(t),
                    None => Err(self.failed(Failure::new(
                        EVALUATION_ERROR,
                        format!("field Timestamp: the expression yields {value}, not an RFC 3339 timestamp such as \"2026-01-01T00:00:00Z\""),
                    ))),
                }
            }
        }
    }

    /// A Fail state's `Error` or `Cause`.
    pub fn text(&self, setting: Option<&Setting<String>>, field: &str) -> Result<Option<String>, Failure> {
        match setting {
            None => Ok(None),
            Some(Setting::Fixed(t)) => Ok(Some(t.clone())),
            Some(Setting::Path(p)) => {
                // ErrorPath and CausePath may also be an intrinsic function.
                let value = if p.starts_with("States.") {
                    crate::intrinsics::parse(p)
                        .and_then(|call| call.eval(self.input, &self.env()))
                        .map_err(|e| Failure::new(e.error_name(), e.to_string()))?
                } else {
                    self.path(p, self.input)?
                };
                Ok(Some(match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                }))
            }
            Some(Setting::Jsonata(source)) => match self.eval(source, field)? {
                Value::String(s) => Ok(Some(s)),
                other => Err(self.failed(Failure::new(
                    EVALUATION_ERROR,
                    format!("field {field}: the expression yields {}, not a string", kind_of(&other)),
                ))),
            },
        }
    }
}

/// A JSONata failure's cause, with "field" in front of the field it names.
fn prefixed(failure: Failure) -> Failure {
    Failure {
        error: failure.error,
        cause: failure.cause.map(|c| format!("field {c}")),
    }
}

fn whole(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            .map(|f| f as u64)
    })
}

/// A JSONPath payload template applied to `input`.
pub fn template(template: &Value, input: &Value, env: &Env<'_>) -> Result<Value, Failure> {
    Template::parse(template)
        .map_err(|e| Failure::runtime(e.to_string()))?
        .apply(input, env)
        .map_err(|e| Failure::new(e.error_name(), e.to_string()))
}

/// `InputPath` or `OutputPath`: the whole value when absent, `{}` when null.
pub fn select(path: Option<&DataPath>, value: &Value, env: &Env<'_>) -> Result<Value, Failure> {
    match path {
        None => Ok(value.clone()),
        Some(DataPath::Discard) => Ok(Value::Object(Map::new())),
        Some(DataPath::Path(p)) => select_path(p, value, env),
    }
}

fn select_path(path: &str, value: &Value, env: &Env<'_>) -> Result<Value, Failure> {
    Path::parse(path)
        .and_then(|p| p.select(value, env))
        .map_err(|e| Failure::new(e.error_name(), e.to_string()))
}

/// `ResultPath`: the result placed in the raw input (absent: the result
/// replaces it; null: the input is kept).
pub fn merge(result_path: Option<&DataPath>, raw: Value, result: Value) -> Result<Value, Failure> {
    match result_path {
        None => Ok(result),
        Some(DataPath::Discard) => Ok(raw),
        Some(DataPath::Path(p)) => {
            let reference = path::ReferencePath::parse(p).map_err(|e| Failure::new(e.error_name(), e.to_string()))?;
            path::merge(raw, Some(&reference), result).map_err(|e| Failure::new(e.error_name(), e.to_string()))
        }
    }
}

pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
