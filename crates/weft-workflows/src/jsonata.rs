//! JSONata as the Amazon States Language uses it: the `"{% ... %}"`
//! strings of a state whose `QueryLanguage` is `JSONata`.
//!
//! The language itself is the `jlens-core` crate's (JSONata 2.x, every
//! operator and built-in function). This module adds what Step Functions
//! adds around it:
//!
//! - an expression sees `$states` (`input`, `context`, and after the work
//!   of the state `result` or, in a catcher, `errorOutput`) and the
//!   workflow's variables as `$name`;
//! - the functions Step Functions provides: `$partition`, `$range`,
//!   `$hash`, `$random`, `$uuid` and `$parse`; `$eval` is refused, as
//!   there;
//! - a field's value is a template: a string that is wholly `{% ... %}`
//!   is replaced by what its expression yields, at any depth of objects
//!   and arrays, and everything else is copied.
//!
//! An evaluation is bounded ([`MAX_TIME`], and the sizes of what it
//! builds), and what it draws at random comes from the seed the
//! interpreter derives from the execution and the state, so a workflow run
//! again on its journal after a crash draws what it drew the first time.
//! `$now()` is the time the state was entered, which such a run reads
//! anew.
//!
//! Every expression of a definition is compiled once, when the definition
//! is loaded ([`Expressions`]); a mistake in one is reported at its field
//! then, not when a state first runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use jlens_core::{Bindings, Expression, HostFunction, Node, NodeKind, Options};
use serde_json::{Map, Value};

use crate::execution::Failure;
use crate::intrinsics::Draws;
use crate::path::Variables;

/// The longest a state's expressions may run, all together (and again
/// those of its Output and Assign once its work is done): past it the state
/// fails with `States.QueryEvaluationError`. The evaluation runs on the
/// node's thread, so this also bounds how long it holds one.
pub const MAX_TIME: Duration = Duration::from_secs(1);

/// The largest string, array (in items) and result (in bytes of JSON) an
/// evaluation may build.
const MAX_STRING: usize = 16 * 1024 * 1024;
const MAX_ARRAY: usize = 1024 * 1024;
const MAX_RESULT: usize = 16 * 1024 * 1024;

/// The error a JSONata expression that fails raises, as on Step Functions.
pub const EVALUATION_ERROR: &str = "States.QueryEvaluationError";

/// The expression of a `"{% ... %}"` string, without its delimiters; `None`
/// when the string is not one.
pub fn expression(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("{%")?.strip_suffix("%}")?.trim();
    (!inner.is_empty()).then_some(inner)
}

/// One compiled expression, with the `$names` it reads.
#[derive(Debug)]
struct Compiled {
    expression: Expression,
    names: Vec<String>,
}

/// Every JSONata expression of a definition, compiled once.
#[derive(Clone, Default)]
pub struct Expressions {
    compiled: Arc<HashMap<String, Arc<Compiled>>>,
}

impl std::fmt::Debug for Expressions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expressions({} compiled)", self.compiled.len())
    }
}

/// Compared by which expressions they hold: the same sources compile alike.
impl PartialEq for Expressions {
    fn eq(&self, other: &Expressions) -> bool {
        self.compiled.len() == other.compiled.len() && self.compiled.keys().all(|k| other.compiled.contains_key(k))
    }
}

impl Expressions {
    /// Compiles `sources`; the error of each that is not a valid
    /// expression is given with its index.
    pub fn compile<'s>(sources: impl IntoIterator<Item = &'s str>) -> (Expressions, Vec<(usize, String)>) {
        let mut compiled = HashMap::new();
        let mut mistakes = Vec::new();
        for (i, source) in sources.into_iter().enumerate() {
            if compiled.contains_key(source) {
                continue;
            }
            match compile(source) {
                Ok(c) => {
                    compiled.insert(source.to_string(), Arc::new(c));
                }
                Err(e) => mistakes.push((i, e)),
            }
        }
        (
            Expressions {
                compiled: Arc::new(compiled),
            },
            mistakes,
        )
    }

    fn get(&self, source: &str) -> Result<Arc<Compiled>, String> {
        match self.compiled.get(source) {
            Some(c) => Ok(c.clone()),
            // A definition that was parsed but not loaded: compiled now.
            None => compile(source).map(Arc::new),
        }
    }
}

fn compile(source: &str) -> Result<Compiled, String> {
    let expression = Expression::compile(source).map_err(|e| {
        let at = e.position().map(|p| format!(" at character {p}")).unwrap_or_default();
        format!("not a valid JSONata expression: {}{at} ({})", e.message(), e.code())
    })?;
    let mut names = Vec::new();
    expression.ast().root.walk(&mut |node| {
        if let NodeKind::Variable { name } = &node.kind
            && !name.is_empty()
            && !names.contains(name)
        {
            names.push(name.clone());
        }
    });
    if names.iter().any(|n| n == "eval") {
        return Err("uses $eval, which Step Functions' JSONata does not have; to read JSON text, use $parse".into());
    }
    reads_no_document(&expression.ast().root)?;
    Ok(Compiled { expression, names })
}

/// An expression has no input document: at its top level it reads the
/// state's data through `$states`, never through `$`, `$$` or a bare
/// field name (which may appear inside predicates and functions).
fn reads_no_document(node: &Node) -> Result<(), String> {
    let fix = "read the state's input as $states.input, e.g. $states.input.total";
    match &node.kind {
        NodeKind::Name { name } => Err(format!(
            "reads the field {name:?} of no document: an expression has no input of its own; {fix}"
        )),
        NodeKind::Variable { name } if name.is_empty() || name == "$" => Err(format!(
            "reads ${name}, but an expression has no input of its own; {fix}"
        )),
        NodeKind::Wildcard | NodeKind::Descendant => Err(format!("starts with a wildcard over no document; {fix}")),
        NodeKind::Path { steps, .. } => steps.first().map_or(Ok(()), reads_no_document),
        NodeKind::Binary { lhs, rhs, .. } | NodeKind::Fallback { lhs, rhs, .. } => {
            reads_no_document(lhs)?;
            reads_no_document(rhs)
        }
        NodeKind::Negate { expr } => reads_no_document(expr),
        NodeKind::Bind { rhs, .. } => reads_no_document(rhs),
        NodeKind::Apply { lhs, .. } => reads_no_document(lhs),
        NodeKind::Condition {
            condition,
            then,
            otherwise,
        } => {
            reads_no_document(condition)?;
            reads_no_document(then)?;
            otherwise.as_deref().map_or(Ok(()), reads_no_document)
        }
        NodeKind::Block { exprs, .. } | NodeKind::Array { items: exprs } => {
            exprs.iter().try_for_each(reads_no_document)
        }
        NodeKind::Function { args, .. } | NodeKind::Partial { args, .. } => args.iter().try_for_each(reads_no_document),
        NodeKind::Object { pairs } => pairs.iter().try_for_each(|(_, v)| reads_no_document(v)),
        _ => Ok(()),
    }
}

/// What a state's expressions see: `$states` and the variables, the time
/// and the seed of their random draws, and the time they must be done by.
pub struct Env<'a> {
    /// `$states.input`: the state's input.
    pub input: &'a Value,
    /// `$states.context`: the context object (`null` for a state that
    /// never reads it).
    pub context: &'a Value,
    /// `$states.result`: the work's result, once there is one.
    pub result: Option<&'a Value>,
    /// `$states.errorOutput`: in a catcher, the error caught.
    pub error_output: Option<&'a Value>,
    pub variables: &'a dyn Variables,
    /// What `$now()` and `$millis()` give: when the state was entered.
    pub now: jiff::Timestamp,
    /// Where `$random()` and `$uuid()` draw from.
    seed: u64,
    /// When this state's expressions must be done, all together.
    deadline: Instant,
    draws: OnceLock<Arc<Draws>>,
    /// The bindings made so far, and the variables in them.
    bound: Mutex<Option<(Arc<Bindings>, Vec<String>)>>,
}

impl<'a> Env<'a> {
    pub fn new(
        input: &'a Value,
        context: &'a Value,
        variables: &'a dyn Variables,
        now: jiff::Timestamp,
        seed: u64,
        deadline: Instant,
    ) -> Env<'a> {
        Env {
            input,
            context,
            result: None,
            error_output: None,
            variables,
            now,
            seed,
            deadline,
            draws: OnceLock::new(),
            bound: Mutex::new(None),
        }
    }

    /// The same once the work has given `result`: the state's Output and
    /// Assign, with a time bound and draws of their own.
    pub fn with_result<'r>(&'r self, result: &'r Value) -> Env<'r> {
        let mut env = self.after(0x5be0_cd19_137e_2179);
        env.result = Some(result);
        env
    }

    /// The same in a catcher of `error_output`.
    pub fn with_error<'r>(&'r self, error_output: &'r Value) -> Env<'r> {
        let mut env = self.after(0x1f83_d9ab_fb41_bd6b);
        env.error_output = Some(error_output);
        env
    }

    fn after(&self, phase: u64) -> Env<'_> {
        Env::new(
            self.input,
            self.context,
            self.variables,
            self.now,
            self.seed ^ phase,
            Instant::now() + MAX_TIME,
        )
    }

    fn draws(&self) -> Arc<Draws> {
        self.draws.get_or_init(|| Arc::new(Draws::new(self.seed))).clone()
    }

    /// `$states`, the functions Step Functions adds, and the variables
    /// `names` names that are set (with those bound before): made once,
    /// and again only when an expression names a variable not yet bound.
    fn bindings(&self, names: &[String]) -> Arc<Bindings> {
        let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        let wanted = |name: &String| {
            name != "states" && (DRAWING.contains(&name.as_str()) || self.variables.variable(name).is_some())
        };
        if let Some((bindings, have)) = &*bound
            && names.iter().filter(|n| wanted(n)).all(|n| have.contains(n))
        {
            return bindings.clone();
        }
        let mut have = bound.take().map(|(_, have)| have).unwrap_or_default();
        for name in names.iter().filter(|n| wanted(n)) {
            if !have.contains(name) {
                have.push(name.clone());
            }
        }
        let mut states = Map::new();
        states.insert("input".into(), self.input.clone());
        states.insert("context".into(), self.context.clone());
        if let Some(result) = self.result {
            states.insert("result".into(), result.clone());
        }
        if let Some(error) = self.error_output {
            states.insert("errorOutput".into(), error.clone());
        }
        let mut bindings = fixed().clone();
        if have.iter().any(|n| DRAWING.contains(&n.as_str())) {
            bindings = drawing(bindings, self.draws());
        }
        for name in &have {
            if let Some(value) = self.variables.variable(name) {
                bindings = bindings.var(name.clone(), value.clone());
            }
        }
        let bindings = Arc::new(bindings.var("states", Value::Object(states)));
        *bound = Some((bindings.clone(), have));
        bindings
    }

    /// What the expression `source` yields; `None` for JSONata's
    /// *undefined*. `field` names where it is written, for the error.
    pub fn eval(&self, expressions: &Expressions, source: &str, field: &str) -> Result<Option<Value>, Failure> {
        let compiled = expressions
            .get(source)
            .map_err(|e| Failure::new(EVALUATION_ERROR, format!("{field}: {e}")))?;
        let too_long = || {
            Failure::new(
                EVALUATION_ERROR,
                format!(
                    "{field}: the state's expressions ran longer than {} ms, the most they may",
                    MAX_TIME.as_millis()
                ),
            )
        };
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(too_long());
        }
        let options = Options::new()
            .timeout(left)
            .now(self.now.as_millisecond())
            .seed(self.draws().next())
            .max_string_length(MAX_STRING)
            .max_array_length(MAX_ARRAY)
            .max_result_size(MAX_RESULT);
        let bindings = self.bindings(&compiled.names);
        compiled
            .expression
            // No input document: an expression reads its state's data
            // through $states, as on Step Functions.
            .evaluate_with(None, &bindings, &options)
            .map_err(|e| match e.code() {
                "D1012" => too_long(),
                _ => Failure::new(EVALUATION_ERROR, format!("{field}: {} ({})", e.message(), e.code())),
            })
    }

    /// A field's value with each `"{% ... %}"` string in it replaced by
    /// what its expression yields, at any depth. JSON has no *undefined*,
    /// so an expression that yields nothing is an error, wherever it is.
    pub fn value(&self, expressions: &Expressions, template: &Value, field: &str) -> Result<Value, Failure> {
        match template {
            Value::String(text) => match expression(text) {
                Some(source) => self.eval(expressions, source, field)?.ok_or_else(|| {
                    Failure::new(
                        EVALUATION_ERROR,
                        format!("{field}: the expression {source:?} yields nothing (JSONata's undefined)"),
                    )
                }),
                None => Ok(template.clone()),
            },
            Value::Object(fields) => {
                let mut out = Map::with_capacity(fields.len());
                for (key, value) in fields {
                    let inner = crate::definition::child(field, key);
                    out.insert(key.clone(), self.value(expressions, value, &inner)?);
                }
                Ok(Value::Object(out))
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.value(expressions, item, &format!("{field}[{i}]"))?);
                }
                Ok(Value::Array(out))
            }
            other => Ok(other.clone()),
        }
    }
}

/// Every `"{% ... %}"` string in `value`, with where it is below `field`.
pub fn sources<'v>(value: &'v Value, field: String, out: &mut Vec<(String, &'v str)>) {
    strings(value, field, &mut |at, text| {
        if let Some(source) = expression(text) {
            out.push((at, source));
        }
    });
}

/// Where in `value` below `field` a string looks like a JSONata
/// expression but is not one: it starts with `{%` or ends with `%}` but not
/// both, or has nothing between them.
pub fn halves(value: &Value, field: String, out: &mut Vec<String>) {
    strings(value, field, &mut |at, text| {
        if (text.starts_with("{%") || text.ends_with("%}")) && expression(text).is_none() {
            out.push(at);
        }
    });
}

/// Calls `f` with every string in `value` (not keys), and where it is.
fn strings<'v>(value: &'v Value, field: String, f: &mut dyn FnMut(String, &'v str)) {
    match value {
        Value::String(text) => f(field, text),
        Value::Object(fields) => {
            for (key, v) in fields {
                strings(v, crate::definition::child(&field, key), f);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                strings(v, format!("{field}[{i}]"), f);
            }
        }
        _ => {}
    }
}

fn failed(function: &str, reason: String) -> jlens_core::Error {
    jlens_core::Error::new("D3137").with("message", format!("${function}: {reason}"))
}

/// The functions Step Functions adds to JSONata that draw nothing: made
/// once.
fn fixed() -> &'static Bindings {
    static FIXED: OnceLock<Bindings> = OnceLock::new();
    FIXED.get_or_init(|| {
        let mut bindings = Bindings::new();
        for (name, function) in fixed_functions() {
            match function {
                Ok(f) => bindings = bindings.function(name, f),
                // The signatures are fixed; one that does not parse is
                // left out rather than taking the evaluation down.
                Err(_) => continue,
            }
        }
        bindings
    })
}

/// The names of the functions that draw at random, bound per state.
const DRAWING: [&str; 2] = ["random", "uuid"];

fn fixed_functions() -> [(&'static str, jlens_core::Result<HostFunction>); 4] {
    let partition = HostFunction::with_signature("<an:a>", move |args, _| {
        let items = args[0].as_ref().and_then(Value::as_array).cloned().unwrap_or_default();
        let size = args[1].as_ref().and_then(Value::as_f64).unwrap_or(0.0);
        if size < 1.0 || size.fract() != 0.0 {
            return Err(failed(
                "partition",
                format!("the size must be a whole number of at least 1, found {size}"),
            ));
        }
        let chunks = items.chunks(size as usize).map(|c| Value::Array(c.to_vec())).collect();
        Ok(Some(Value::Array(chunks)))
    });
    let range = HostFunction::with_signature("<nnn:a>", move |args, _| {
        let number = |i: usize| args[i].as_ref().and_then(Value::as_f64).unwrap_or(0.0);
        let (start, end, step) = (number(0), number(1), number(2));
        // Whole numbers that f64 holds exactly, so the arithmetic below
        // neither rounds nor overflows.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if [start, end, step].iter().any(|n| n.fract() != 0.0 || n.abs() > EXACT) || step == 0.0 {
            return Err(failed(
                "range",
                "start, end and step must be whole numbers of at most 2^53, and step not 0".into(),
            ));
        }
        let count = ((end - start) / step).floor() + 1.0;
        if count > 1000.0 {
            return Err(failed(
                "range",
                format!("it would make {count} numbers, more than 1000"),
            ));
        }
        let items = (0..count.max(0.0) as u64)
            .map(|i| Value::from(start as i64 + (i as i64) * step as i64))
            .collect();
        Ok(Some(Value::Array(items)))
    });
    let hash = HostFunction::with_signature("<ss:s>", move |args, _| {
        let data = args[0].as_ref().and_then(Value::as_str).unwrap_or_default();
        let algorithm = args[1].as_ref().and_then(Value::as_str).unwrap_or_default();
        crate::intrinsics::hash(data, algorithm)
            .map(|h| Some(Value::String(h)))
            .map_err(|e| failed("hash", e))
    });
    let parse = HostFunction::with_signature("<s:x>", move |args, _| {
        let text = args[0].as_ref().and_then(Value::as_str).unwrap_or_default();
        serde_json::from_str::<Value>(text)
            .map(Some)
            .map_err(|e| failed("parse", format!("the text is not JSON: {e}")))
    });
    [
        ("partition", partition),
        ("range", range),
        ("hash", hash),
        ("parse", parse),
    ]
}

/// `$random` and `$uuid`, drawing from `draws`.
fn drawing(bindings: Bindings, draws: Arc<Draws>) -> Bindings {
    let random_draws = draws.clone();
    let random = HostFunction::with_signature("<n?:n>", move |args, _| {
        let seed = match args.first().and_then(Option::as_ref) {
            Some(seed) => match seed.as_f64() {
                Some(n) if n.fract() == 0.0 => n as i64 as u64,
                _ => {
                    return Err(failed(
                        "random",
                        format!("the seed must be a whole number, found {seed}"),
                    ));
                }
            },
            None => random_draws.next(),
        };
        Ok(Some(Value::from(Draws::new(seed).fraction())))
    });
    let uuid = HostFunction::with_signature("<:s>", move |_, _| Ok(Some(Value::String(draws.uuid()))));
    let mut bindings = bindings;
    for (name, function) in [("random", random), ("uuid", uuid)] {
        if let Ok(f) = function {
            bindings = bindings.function(name, f);
        }
    }
    bindings
}
