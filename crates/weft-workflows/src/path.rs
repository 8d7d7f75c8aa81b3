//! JSONPath as the Amazon States Language uses it.
//!
//! A state reads data with *paths* (`InputPath`, `OutputPath`, `ItemsPath`,
//! a Choice rule's `Variable`, the `*Path` operands of comparisons, and the
//! values of template fields whose names end in `.$`), writes its result
//! into its input with a *reference path* (`ResultPath`), and reshapes data
//! with *payload templates* (`Parameters`, `ResultSelector`,
//! `ItemSelector`). This module implements those three and knows nothing
//! about states: which field a path came from, and how a failure is raised,
//! is the interpreter's business. Each error says which ASL error
//! Step Functions raises for it ([`PathError::error_name`]).
//!
//! ```
//! use serde_json::json;
//! use weft_workflows::path::{merge, Env, Path, ReferencePath};
//!
//! let input = json!({"order": {"items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 0}]}});
//! let wanted = Path::parse("$.order.items[?(@.qty > 0)].sku")?;
//! assert_eq!(wanted.select(&input, &Env::of(&json!({})))?, json!(["a"]));
//!
//! let total = ReferencePath::parse("$.order.total")?;
//! let output = merge(input, Some(&total), json!(12))?;
//! assert_eq!(output["order"]["total"], json!(12));
//! # Ok::<(), weft_workflows::path::PathError>(())
//! ```
//!
//! # The dialect
//!
//! A path starts with `$` (the input), `$$` (the context object) or
//! `$name` (a variable, set by an earlier state's `Assign`) and continues
//! with any of: `.name` and `['name']` (a field; in a dot name a
//! backslash takes the next character as it is, so `$.a\.b` names the field
//! `a.b`), `[2]` and `[-1]` (an element, counted from the end when
//! negative), `.*` and `[*]` (every element or field value), `[1:3]` and
//! `[::2]` (a slice), `[0,2]` and `['a','b']` (a union), `..name` (that
//! name at any depth), and `[?(...)]` (a filter over the elements of an
//! array or the values of an object).
//!
//! A filter compares `@` paths (the element being tested), `$`/`$$` paths
//! and literals (numbers, strings in single or double quotes, `true`,
//! `false`, `null`) with `==`, `!=`, `<`, `<=`, `>`, `>=`, and combines the
//! comparisons with `&&`, `||`, `!` and parentheses. A path on its own, as in
//! `[?(@.isbn)]`, tests that the field exists. Numbers compare as numbers,
//! strings by code point; `<` and its kin are false between other kinds of
//! values, and every comparison with a path that matches nothing is false.
//!
//! A path made only of names and indexes is *definite*: it yields one value,
//! and it is an error when it matches nothing. Any other path yields the
//! array of what it matches, `[]` when that is nothing, as a union of names
//! does too.

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Number, Value};

use crate::intrinsics::{self, Call, IntrinsicError};

/// Why a path, a reference path or a payload template could not be read or
/// applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PathError {
    /// The text is not a path.
    #[error("invalid path {path:?}: {reason} (at character {at})")]
    Syntax {
        path: String,
        /// 1-based character position of the problem.
        at: usize,
        reason: String,
    },
    /// The text is a path, but not one that names a single node.
    #[error("{path:?} is not a reference path: {reason}")]
    NotReference { path: String, reason: String },
    /// A definite path matched nothing.
    #[error("the path {path:?} matches nothing in the {root}")]
    NotFound { path: String, root: &'static str },
    /// A path reads a variable that no state has assigned where it runs.
    #[error("the path {path:?} reads the variable ${name}, which no earlier state in its scope assigned")]
    Unassigned { path: String, name: String },
    /// `ResultPath` could not place the result into the input.
    #[error("ResultPath {path:?} can't be applied to the input: {reason}")]
    ResultPath { path: String, reason: String },
    /// The payload template itself is malformed.
    #[error("invalid payload template: {0}")]
    Template(#[from] TemplateError),
    /// A `.$` field of a payload template failed.
    #[error("field {field:?}: {source}")]
    Field { field: String, source: Box<PathError> },
    /// An intrinsic function call failed.
    #[error(transparent)]
    Intrinsic(#[from] IntrinsicError),
}

impl PathError {
    /// The ASL error name Step Functions raises for this failure.
    ///
    /// A path that matches nothing is `States.Runtime`; a `ResultPath` that
    /// doesn't fit the input is `States.ResultPathMatchFailure`, which a
    /// Catcher can handle; intrinsic functions name their own.
    pub fn error_name(&self) -> &'static str {
        match self {
            PathError::ResultPath { .. } => "States.ResultPathMatchFailure",
            PathError::Field { source, .. } => source.error_name(),
            PathError::Intrinsic(error) => error.error_name(),
            PathError::Syntax { .. }
            | PathError::NotReference { .. }
            | PathError::NotFound { .. }
            | PathError::Unassigned { .. }
            | PathError::Template(_) => "States.Runtime",
        }
    }
}

/// A mistake in a payload template, at a location inside it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct TemplateError {
    /// Where inside the template, as field names joined by `.` and array
    /// indexes in brackets (`foo.bar.$`, `items[2].id.$`). The caller puts
    /// the template's own field name in front (`Parameters.foo.$`).
    pub location: String,
    /// What is wrong, and how to fix it.
    pub reason: String,
}

/// A JSONPath over a state's input (`$`), the context object (`$$`) or a
/// variable (`$name`).
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    text: String,
    root: Root,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Root {
    Input,
    Context,
    Variable(String),
}

impl Root {
    fn noun(&self) -> &'static str {
        match self {
            Root::Input => "input",
            Root::Context => "context object",
            Root::Variable(_) => "variable",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    /// Selects among the children of each node.
    Child(Selector),
    /// Selects among the children of each node and of all its descendants.
    Descendants(Selector),
}

#[derive(Debug, Clone, PartialEq)]
enum Selector {
    Name(String),
    Index(i64),
    Wildcard,
    Slice(Slice),
    /// Names, indexes and slices.
    Union(Vec<Selector>),
    Filter(Box<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Slice {
    start: Option<i64>,
    end: Option<i64>,
    step: i64,
}

#[derive(Debug, Clone, PartialEq)]
enum Filter {
    Or(Box<Filter>, Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Exists(Operand),
    Compare(Operand, Comparison, Operand),
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// `@` followed by names and indexes.
    Current(Vec<Segment>),
    /// `$` or `$$` followed by names and indexes.
    Root(Root, Vec<Segment>),
    Literal(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The workflow's variables, as a path reads them (`$name`).
pub trait Variables: Sync {
    /// The value of the variable `name` (without its `$`), if it is set.
    fn variable(&self, name: &str) -> Option<&Value>;

    /// Calls `f` with each variable that is set, once per name.
    fn each(&self, f: &mut dyn FnMut(&str, &Value));
}

/// No variables: what a path sees outside a running workflow.
impl Variables for () {
    fn variable(&self, _: &str) -> Option<&Value> {
        None
    }

    fn each(&self, _: &mut dyn FnMut(&str, &Value)) {}
}

impl Variables for Map<String, Value> {
    fn variable(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }

    fn each(&self, f: &mut dyn FnMut(&str, &Value)) {
        for (name, value) in self {
            f(name, value);
        }
    }
}

/// What a path reads besides the input: the context object (`$$`), the
/// variables (`$name`), and where the intrinsic functions that draw
/// random values (`States.UUID`, `States.MathRandom`) draw them.
#[derive(Clone, Copy)]
pub struct Env<'v> {
    pub context: &'v Value,
    pub variables: &'v dyn Variables,
    /// `None`: from the system's generator.
    pub draws: Option<&'v intrinsics::Draws>,
}

impl<'v> Env<'v> {
    /// The context object alone: no variables, random values from the
    /// system's generator.
    pub fn of(context: &'v Value) -> Env<'v> {
        Env {
            context,
            variables: &(),
            draws: None,
        }
    }
}

/// The documents a path can start from.
struct Roots<'v> {
    input: &'v Value,
    env: Env<'v>,
}

impl<'v> Roots<'v> {
    fn get(&self, root: &Root) -> Option<&'v Value> {
        match root {
            Root::Input => Some(self.input),
            Root::Context => Some(self.env.context),
            Root::Variable(name) => self.env.variables.variable(name),
        }
    }
}

impl Path {
    /// Parses a path such as `$.orders[0].id`, `$$.Execution.Id` or
    /// `$..book[?(@.price < 10)].title`.
    pub fn parse(text: &str) -> Result<Path, PathError> {
        let mut parser = Parser::new(text);
        let (root, segments) = parser.path()?;
        Ok(Path {
            text: text.to_owned(),
            root,
            segments,
        })
    }

    /// The text the path was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the path names at most one node (names and indexes only), so
    /// that it yields a value rather than an array of matches.
    pub fn is_definite(&self) -> bool {
        is_singular(&self.segments)
    }

    /// Whether the path reads the context object (`$$`).
    pub fn is_context(&self) -> bool {
        self.root == Root::Context
    }

    /// The variable the path reads (`order` for `$order.id`), if it reads one.
    pub fn variable(&self) -> Option<&str> {
        match &self.root {
            Root::Variable(name) => Some(name),
            _ => None,
        }
    }

    /// Every node the path matches, in document order; empty when none
    /// does, or when it reads a variable that is not set.
    pub fn matches<'v>(&self, input: &'v Value, env: &Env<'v>) -> Vec<&'v Value> {
        let roots = Roots { input, env: *env };
        match roots.get(&self.root) {
            Some(start) => walk(&self.segments, start, &roots),
            None => Vec::new(),
        }
    }

    /// The value the path yields: for a definite path the node it names (an
    /// error when there is none), for any other path the array of its
    /// matches. A variable that is not set is an error either way.
    pub fn select(&self, input: &Value, env: &Env<'_>) -> Result<Value, PathError> {
        if let Root::Variable(name) = &self.root
            && env.variables.variable(name).is_none()
        {
            return Err(PathError::Unassigned {
                path: self.text.clone(),
                name: name.clone(),
            });
        }
        let found = self.matches(input, env);
        if !self.is_definite() {
            return Ok(Value::Array(found.into_iter().cloned().collect()));
        }
        match found.first() {
            Some(value) => Ok((*value).clone()),
            None => Err(PathError::NotFound {
                path: self.text.clone(),
                root: self.root.noun(),
            }),
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A path that names exactly one node: `ResultPath`, and a Choice rule's
/// `Variable`.
///
/// It may read the context object (`$$`), but [`merge`] refuses to write
/// there.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferencePath {
    path: Path,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
}

impl ReferencePath {
    /// Parses a path made only of names and indexes, such as `$.a.b[0]`.
    pub fn parse(text: &str) -> Result<ReferencePath, PathError> {
        let path = Path::parse(text)?;
        let mut steps = Vec::with_capacity(path.segments.len());
        for segment in &path.segments {
            match segment {
                Segment::Child(Selector::Name(name)) => steps.push(Step::Field(name.clone())),
                Segment::Child(Selector::Index(index)) => steps.push(Step::Index(*index)),
                _ => {
                    return Err(PathError::NotReference {
                        path: text.to_owned(),
                        reason: "a reference path names exactly one node, so it can use only \
                                 names and indexes, not wildcards, slices, unions, filters or '..'"
                            .to_owned(),
                    });
                }
            }
        }
        Ok(ReferencePath { path, steps })
    }

    /// The text the path was parsed from.
    pub fn as_str(&self) -> &str {
        self.path.as_str()
    }

    /// Whether the path names a node of the context object (`$$`).
    pub fn is_context(&self) -> bool {
        self.path.is_context()
    }

    /// The same path, for reading.
    pub fn as_path(&self) -> &Path {
        &self.path
    }

    /// The node the path names; an error when there is none.
    pub fn select(&self, input: &Value, env: &Env<'_>) -> Result<Value, PathError> {
        self.path.select(input, env)
    }
}

impl fmt::Display for ReferencePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Combines a state's raw input with its result as `ResultPath` says.
///
/// `None` (`"ResultPath": null`) discards the result and keeps the input;
/// `$` replaces the input by the result; any other path sets the node it
/// names, replacing what was there and creating the objects on the way that
/// don't exist yet. An index sets an element that exists, counted from the
/// end when negative. Anything else is an error: setting a field of a
/// value that is not an object, an index of a value that is not an array or
/// past its end, or a node of the context object.
pub fn merge(input: Value, result_path: Option<&ReferencePath>, result: Value) -> Result<Value, PathError> {
    let Some(path) = result_path else {
        return Ok(input);
    };
    if path.is_context() {
        return Err(PathError::ResultPath {
            path: path.as_str().to_owned(),
            reason: "it starts with '$$', but the context object can't be written; \
                     write into the input with a path starting with '$'"
                .to_owned(),
        });
    }
    if let Some(name) = path.as_path().variable() {
        return Err(PathError::ResultPath {
            path: path.as_str().to_owned(),
            reason: format!(
                "it names the variable ${name}, but ResultPath writes into the input; set \
                 variables with \"Assign\""
            ),
        });
    }
    let mut output = input;
    let mut at = String::from("$");
    put(&mut output, &path.steps, result, &mut at).map_err(|reason| PathError::ResultPath {
        path: path.as_str().to_owned(),
        reason,
    })?;
    Ok(output)
}

/// Sets the node `steps` names below `node`; `at` is the path to `node`, for
/// messages.
fn put(node: &mut Value, steps: &[Step], result: Value, at: &mut String) -> Result<(), String> {
    let Some((step, rest)) = steps.split_first() else {
        *node = result;
        return Ok(());
    };
    match step {
        Step::Field(name) => {
            let Value::Object(fields) = node else {
                return Err(format!(
                    "'{at}' is {}, not an object, so it has no field '{name}' to set",
                    describe(node)
                ));
            };
            if !fields.contains_key(name) {
                match rest.first() {
                    None => {
                        fields.insert(name.clone(), result);
                        return Ok(());
                    }
                    Some(Step::Field(_)) => {
                        fields.insert(name.clone(), Value::Object(Map::new()));
                    }
                    Some(Step::Index(index)) => {
                        return Err(format!(
                            "'{at}{}' doesn't exist, so there is no element [{index}] to set in it",
                            step_text(step)
                        ));
                    }
                }
            }
            at.push_str(&step_text(step));
            match fields.get_mut(name) {
                Some(child) => put(child, rest, result, at),
                None => Err(format!("'{at}' disappeared while it was being set")),
            }
        }
        Step::Index(index) => {
            let Value::Array(items) = node else {
                return Err(format!(
                    "'{at}' is {}, not an array, so it has no element [{index}] to set",
                    describe(node)
                ));
            };
            let len = items.len();
            let Some(position) = resolve_index(*index, len) else {
                return Err(format!(
                    "'{at}' has {len} element{}, so there is no element [{index}] to set; \
                     ResultPath can replace an element but not append one",
                    plural(len)
                ));
            };
            at.push_str(&step_text(step));
            match items.get_mut(position) {
                Some(child) => put(child, rest, result, at),
                None => Err(format!("'{at}' disappeared while it was being set")),
            }
        }
    }
}

fn step_text(step: &Step) -> String {
    match step {
        Step::Field(name) if !name.is_empty() && !name.chars().any(|c| ends_name(c, true)) => {
            format!(".{name}")
        }
        Step::Field(name) => format!("['{}']", name.replace('\\', "\\\\").replace('\'', "\\'")),
        Step::Index(index) => format!("[{index}]"),
    }
}

/// A payload template parsed once and applied to many inputs: the value of
/// `Parameters`, `ResultSelector`, `ItemSelector` or a Task's `Parameters`.
///
/// The template is copied as it is, except that a field whose name ends in
/// `.$` is renamed without the suffix and gets the value of its path (`$`
/// for the input, `$$` for the context object) or of its intrinsic function
/// call (`States.…`). Objects and arrays are processed at any depth. That
/// a state's `Parameters` must be an object is the validator's rule, not
/// this type's: any JSON value is a template.
#[derive(Debug, Clone)]
pub struct Template {
    root: Node,
}

#[derive(Debug, Clone)]
enum Node {
    /// A subtree with no `.$` field in it, copied as it is.
    Copy(Value),
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
    Path {
        field: String,
        path: Path,
    },
    Call {
        field: String,
        call: Box<Call>,
    },
}

impl Template {
    /// Reads a template, parsing every path and intrinsic call in it.
    pub fn parse(template: &Value) -> Result<Template, TemplateError> {
        Ok(Template {
            root: compile(template, "")?,
        })
    }

    /// The payload for one input, context object and set of variables.
    pub fn apply(&self, input: &Value, env: &Env<'_>) -> Result<Value, PathError> {
        self.root.apply(input, env)
    }
}

fn compile(template: &Value, at: &str) -> Result<Node, TemplateError> {
    match template {
        Value::Object(fields) => {
            let mut nodes = Vec::with_capacity(fields.len());
            let mut names = HashSet::with_capacity(fields.len());
            let mut copy = true;
            for (key, value) in fields {
                let here = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                let (name, node) = match key.strip_suffix(".$") {
                    Some(name) => (name, compile_expression(value, &here)?),
                    None => (key.as_str(), compile(value, &here)?),
                };
                copy &= matches!(node, Node::Copy(_));
                if !names.insert(name) {
                    return Err(TemplateError {
                        location: here,
                        reason: format!(
                            "two fields are named '{name}' once '.$' is dropped from the \
                             name; keep one of them"
                        ),
                    });
                }
                nodes.push((name.to_owned(), node));
            }
            Ok(if copy {
                Node::Copy(template.clone())
            } else {
                Node::Object(nodes)
            })
        }
        Value::Array(items) => {
            let nodes = items
                .iter()
                .enumerate()
                .map(|(index, item)| compile(item, &format!("{at}[{index}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if nodes.iter().all(|node| matches!(node, Node::Copy(_))) {
                Node::Copy(template.clone())
            } else {
                Node::Array(nodes)
            })
        }
        other => Ok(Node::Copy(other.clone())),
    }
}

fn compile_expression(value: &Value, field: &str) -> Result<Node, TemplateError> {
    let fail = |reason: String| TemplateError {
        location: field.to_owned(),
        reason,
    };
    let Value::String(text) = value else {
        return Err(fail(format!(
            "a field whose name ends in '.$' takes a path or an intrinsic function call, \
             written as a string, but this one is {}; to pass the value as it is, drop '.$' \
             from the name",
            describe(value)
        )));
    };
    if text.starts_with('$') {
        let path = Path::parse(text).map_err(|error| fail(error.to_string()))?;
        return Ok(Node::Path {
            field: field.to_owned(),
            path,
        });
    }
    if !text.trim_start().starts_with("States.") {
        return Err(fail(format!(
            "{text:?} is neither a path (starting with '$') nor an intrinsic function call \
             (like States.Format('{{}}', $.name)); to pass the text as it is, drop '.$' from \
             the name"
        )));
    }
    let call = intrinsics::parse(text).map_err(|error| fail(error.to_string()))?;
    Ok(Node::Call {
        field: field.to_owned(),
        call: Box::new(call),
    })
}

impl Node {
    fn apply(&self, input: &Value, env: &Env<'_>) -> Result<Value, PathError> {
        match self {
            Node::Copy(value) => Ok(value.clone()),
            Node::Object(fields) => {
                let mut out = Map::with_capacity(fields.len());
                for (name, node) in fields {
                    out.insert(name.clone(), node.apply(input, env)?);
                }
                Ok(Value::Object(out))
            }
            Node::Array(items) => items
                .iter()
                .map(|node| node.apply(input, env))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Node::Path { field, path } => path.select(input, env).map_err(|error| PathError::Field {
                field: field.clone(),
                source: Box::new(error),
            }),
            Node::Call { field, call } => call.eval(input, env).map_err(|error| PathError::Field {
                field: field.clone(),
                source: Box::new(PathError::Intrinsic(error)),
            }),
        }
    }
}

/// Builds a payload from a template (see [`Template`]); parse the template
/// once with [`Template::parse`] when it is applied often.
pub fn apply_template(template: &Value, input: &Value, env: &Env<'_>) -> Result<Value, PathError> {
    Template::parse(template)?.apply(input, env)
}

/// Checks that `text` is a path, for the definition's validator.
pub fn check_path(text: &str) -> Result<(), String> {
    Path::parse(text).map(drop).map_err(|error| error.to_string())
}

/// Checks that `text` can be a `ResultPath`: a reference path into the
/// input. (A Choice rule's `Variable`, which may read `$$`, is checked with
/// [`check_path`] or [`ReferencePath::parse`].)
pub fn check_reference_path(text: &str) -> Result<(), String> {
    let path = ReferencePath::parse(text).map_err(|error| error.to_string())?;
    if path.is_context() {
        return Err(format!(
            "{text:?} starts with '$$', but a result can't be written into the context \
             object; use a path into the input, starting with '$'"
        ));
    }
    if let Some(name) = path.as_path().variable() {
        return Err(format!(
            "{text:?} names the variable ${name}, but ResultPath writes into the input; \
             set variables with \"Assign\" and use a path into the input here, starting with '$.'"
        ));
    }
    Ok(())
}

/// Checks a payload template without applying it, for the definition's
/// validator: the error is the location inside the template (see
/// [`TemplateError::location`]) and what is wrong there.
pub fn check_template(template: &Value) -> Result<(), (String, String)> {
    Template::parse(template)
        .map(drop)
        .map_err(|error| (error.location, error.reason))
}

// ---------------------------------------------------------------------------
// Evaluation

fn is_singular(segments: &[Segment]) -> bool {
    segments.iter().all(|segment| {
        matches!(
            segment,
            Segment::Child(Selector::Name(_)) | Segment::Child(Selector::Index(_))
        )
    })
}

fn walk<'v>(segments: &[Segment], start: &'v Value, roots: &Roots<'v>) -> Vec<&'v Value> {
    let mut nodes = vec![start];
    for segment in segments {
        let mut next = Vec::new();
        for node in nodes {
            match segment {
                Segment::Child(selector) => select_children(selector, node, roots, &mut next),
                Segment::Descendants(selector) => {
                    let mut family = Vec::new();
                    descend(node, &mut family);
                    for member in family {
                        select_children(selector, member, roots, &mut next);
                    }
                }
            }
        }
        nodes = next;
    }
    nodes
}

/// Follows names and indexes from `start`.
fn follow<'v>(segments: &[Segment], start: &'v Value) -> Option<&'v Value> {
    let mut node = start;
    for segment in segments {
        node = match segment {
            Segment::Child(Selector::Name(name)) => node.as_object()?.get(name)?,
            Segment::Child(Selector::Index(index)) => {
                let items = node.as_array()?;
                items.get(resolve_index(*index, items.len())?)?
            }
            _ => return None,
        };
    }
    Some(node)
}

/// The node itself and everything below it, in document order.
fn descend<'v>(node: &'v Value, out: &mut Vec<&'v Value>) {
    out.push(node);
    match node {
        Value::Array(items) => items.iter().for_each(|item| descend(item, out)),
        Value::Object(fields) => fields.values().for_each(|value| descend(value, out)),
        _ => {}
    }
}

fn select_children<'v>(selector: &Selector, node: &'v Value, roots: &Roots<'v>, out: &mut Vec<&'v Value>) {
    match selector {
        Selector::Name(name) => {
            if let Some(value) = node.as_object().and_then(|fields| fields.get(name)) {
                out.push(value);
            }
        }
        Selector::Index(index) => {
            if let Some(items) = node.as_array()
                && let Some(item) = resolve_index(*index, items.len()).and_then(|i| items.get(i))
            {
                out.push(item);
            }
        }
        Selector::Wildcard => match node {
            Value::Array(items) => out.extend(items.iter()),
            Value::Object(fields) => out.extend(fields.values()),
            _ => {}
        },
        Selector::Slice(slice) => {
            if let Some(items) = node.as_array() {
                out.extend(slice.indices(items.len()).into_iter().filter_map(|i| items.get(i)));
            }
        }
        Selector::Union(selectors) => {
            for selector in selectors {
                select_children(selector, node, roots, out);
            }
        }
        Selector::Filter(filter) => match node {
            Value::Array(items) => out.extend(items.iter().filter(|item| filter.test(item, roots))),
            Value::Object(fields) => out.extend(fields.values().filter(|value| filter.test(value, roots))),
            _ => {}
        },
    }
}

/// The position of `index` in an array of `len` elements, counting from the
/// end when it is negative.
fn resolve_index(index: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let position = if index < 0 { len + index } else { index };
    if (0..len).contains(&position) {
        usize::try_from(position).ok()
    } else {
        None
    }
}

impl Slice {
    /// The positions the slice selects in an array of `len` elements, as
    /// Python slices them.
    fn indices(&self, len: usize) -> Vec<usize> {
        let Ok(len) = i64::try_from(len) else {
            return Vec::new();
        };
        let normalize = |bound: i64| if bound < 0 { len.saturating_add(bound) } else { bound };
        let mut positions = Vec::new();
        if self.step > 0 {
            let lower = normalize(self.start.unwrap_or(0)).clamp(0, len);
            let upper = normalize(self.end.unwrap_or(len)).clamp(0, len);
            let mut i = lower;
            while i < upper {
                positions.extend(usize::try_from(i).ok());
                i = i.saturating_add(self.step);
            }
        } else {
            let upper = self.start.map_or(len - 1, normalize).clamp(-1, len - 1);
            let lower = self.end.map_or(-1, normalize).clamp(-1, len - 1);
            let mut i = upper;
            while i > lower {
                positions.extend(usize::try_from(i).ok());
                i = i.saturating_add(self.step);
            }
        }
        positions
    }
}

impl Filter {
    fn test(&self, current: &Value, roots: &Roots<'_>) -> bool {
        match self {
            Filter::Or(left, right) => left.test(current, roots) || right.test(current, roots),
            Filter::And(left, right) => left.test(current, roots) && right.test(current, roots),
            Filter::Not(inner) => !inner.test(current, roots),
            Filter::Exists(operand) => operand.value(current, roots).is_some(),
            Filter::Compare(left, comparison, right) => {
                match (left.value(current, roots), right.value(current, roots)) {
                    (Some(left), Some(right)) => comparison.holds(left, right),
                    _ => false,
                }
            }
        }
    }
}

impl Operand {
    fn value<'a>(&'a self, current: &'a Value, roots: &Roots<'a>) -> Option<&'a Value> {
        match self {
            Operand::Current(segments) => follow(segments, current),
            Operand::Root(root, segments) => follow(segments, roots.get(root)?),
            Operand::Literal(value) => Some(value),
        }
    }
}

impl Comparison {
    fn holds(self, left: &Value, right: &Value) -> bool {
        use std::cmp::Ordering;
        let order = match (left, right) {
            (Value::Number(a), Value::Number(b)) => a.as_f64().zip(b.as_f64()).and_then(|(a, b)| a.partial_cmp(&b)),
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            _ => None,
        };
        match self {
            Comparison::Eq => same_json(left, right),
            Comparison::Ne => !same_json(left, right),
            Comparison::Lt => order == Some(Ordering::Less),
            Comparison::Le => matches!(order, Some(Ordering::Less | Ordering::Equal)),
            Comparison::Gt => order == Some(Ordering::Greater),
            Comparison::Ge => matches!(order, Some(Ordering::Greater | Ordering::Equal)),
        }
    }
}

/// JSON equality, with numbers equal when their values are (`1 == 1.0`).
pub(crate) fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => same_number(a, b),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_json(a, b)),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, value)| b.get(key).is_some_and(|other| same_json(value, other)))
        }
        _ => a == b,
    }
}

fn same_number(a: &Number, b: &Number) -> bool {
    if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
        return a == b;
    }
    a.as_f64() == b.as_f64()
}

/// A short description of a value for messages: `the number 5`, `an array
/// of 3 elements`.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() > 40 => {
            let head: String = s.chars().take(40).collect();
            format!("the string {head:?}…")
        }
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(items) => format!("an array of {} element{}", items.len(), plural(items.len())),
        Value::Object(_) => "an object".to_owned(),
    }
}

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

// ---------------------------------------------------------------------------
// Parsing

/// Whether `c` ends a name written after a dot. In a filter, names also end
/// at `&`, so that `@.a&&@.b` reads as two paths.
fn ends_name(c: char, in_filter: bool) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '.' | '['
                | ']'
                | '('
                | ')'
                | '\''
                | '"'
                | ','
                | ':'
                | '?'
                | '@'
                | '$'
                | '*'
                | '='
                | '!'
                | '<'
                | '>'
                | '|'
                | '\\'
        )
        || (in_filter && c == '&')
}

struct Parser<'t> {
    text: &'t str,
    chars: Vec<char>,
    pos: usize,
}

impl<'t> Parser<'t> {
    fn new(text: &'t str) -> Self {
        Parser {
            text,
            chars: text.chars().collect(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_str(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        if self.chars.len() >= self.pos + n && self.chars[self.pos..self.pos + n].iter().copied().eq(s.chars()) {
            self.pos += n;
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn error(&self, at: usize, reason: impl Into<String>) -> PathError {
        PathError::Syntax {
            path: self.text.to_owned(),
            at: at + 1,
            reason: reason.into(),
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            Some(c) => format!("found '{c}'"),
            None => "the path ends".to_owned(),
        }
    }

    /// A whole path: a root, segments, and nothing after them.
    fn path(&mut self) -> Result<(Root, Vec<Segment>), PathError> {
        if !self.eat('$') {
            let reason = if self.text.is_empty() {
                "a path can't be empty; '$' is the whole input".to_owned()
            } else {
                format!(
                    "a path starts with '$' (the input) or '$$' (the context object), as in \
                     '$.{}'",
                    self.text.trim_start_matches('.')
                )
            };
            return Err(self.error(0, reason));
        }
        let root = self.root();
        if let Some(c) = self.peek()
            && !ends_name(c, false)
        {
            return Err(self.error(
                self.pos,
                "after '$' comes '.', '[' or the end of the path; a field of the input is \
                 written '$.name', and a variable '$name'",
            ));
        }
        let segments = self.segments(false)?;
        if let Some(c) = self.peek() {
            return Err(self.error(
                self.pos,
                format!(
                    "unexpected '{c}'; after a name comes '.', '[' or the end of the path \
                     (write a name with spaces or punctuation in brackets, like $['my name'])"
                ),
            ));
        }
        Ok((root, segments))
    }

    /// What follows a path's first `$`: another `$` (the context object),
    /// a variable's name, or neither (the input).
    fn root(&mut self) -> Root {
        if self.eat('$') {
            return Root::Context;
        }
        match self.peek() {
            Some(c) if c.is_alphabetic() || c == '_' => {
                let mut name = String::new();
                while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_') {
                    name.push(c);
                    self.bump();
                }
                Root::Variable(name)
            }
            _ => Root::Input,
        }
    }

    fn segments(&mut self, in_filter: bool) -> Result<Vec<Segment>, PathError> {
        let mut segments = Vec::new();
        loop {
            match self.peek() {
                Some('.') => {
                    self.bump();
                    if self.eat('.') {
                        let selector = match self.peek() {
                            Some('[') => {
                                self.bump();
                                self.bracket()?
                            }
                            Some('*') => {
                                self.bump();
                                Selector::Wildcard
                            }
                            _ => Selector::Name(self.name(in_filter)?),
                        };
                        segments.push(Segment::Descendants(selector));
                    } else if self.eat('*') {
                        segments.push(Segment::Child(Selector::Wildcard));
                    } else {
                        segments.push(Segment::Child(Selector::Name(self.name(in_filter)?)));
                    }
                }
                Some('[') => {
                    self.bump();
                    segments.push(Segment::Child(self.bracket()?));
                }
                _ => return Ok(segments),
            }
        }
    }

    /// A name after a dot; a backslash takes the next character as it is.
    fn name(&mut self, in_filter: bool) -> Result<String, PathError> {
        let start = self.pos;
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c == '\\' {
                self.bump();
                match self.bump() {
                    Some(escaped) => name.push(escaped),
                    None => {
                        return Err(self.error(self.pos - 1, "a '\\' at the end of the path escapes nothing"));
                    }
                }
                continue;
            }
            if ends_name(c, in_filter) {
                break;
            }
            name.push(c);
            self.bump();
        }
        if name.is_empty() {
            return Err(self.error(start, format!("expected a name or '*' after '.', but {}", self.found())));
        }
        Ok(name)
    }

    /// What is inside `[` `]`; the `[` is already read.
    fn bracket(&mut self) -> Result<Selector, PathError> {
        let open = self.pos - 1;
        self.skip_ws();
        let selector = match self.peek() {
            Some('?') => {
                self.bump();
                Selector::Filter(Box::new(self.filter_or()?))
            }
            Some('*') => {
                self.bump();
                Selector::Wildcard
            }
            _ => {
                let first = self.union_item()?;
                self.skip_ws();
                if self.peek() == Some(',') {
                    let mut items = vec![first];
                    while self.eat(',') {
                        self.skip_ws();
                        items.push(self.union_item()?);
                        self.skip_ws();
                    }
                    Selector::Union(items)
                } else {
                    first
                }
            }
        };
        self.skip_ws();
        if !self.eat(']') {
            let reason = match self.peek() {
                None => "the '[' is not closed; add ']'".to_owned(),
                Some(c) => format!("expected ']' to close the '[' at character {}, found '{c}'", open + 1),
            };
            return Err(self.error(self.pos, reason));
        }
        Ok(selector)
    }

    fn union_item(&mut self) -> Result<Selector, PathError> {
        match self.peek() {
            Some(quote @ ('\'' | '"')) => Ok(Selector::Name(self.quoted(quote)?)),
            Some(c) if c == '-' || c == ':' || c.is_ascii_digit() => self.index_or_slice(),
            _ => Err(self.error(
                self.pos,
                format!(
                    "expected a quoted name, an index, a slice, '*' or a filter '?(...)' inside \
                     '[', but {}",
                    self.found()
                ),
            )),
        }
    }

    fn index_or_slice(&mut self) -> Result<Selector, PathError> {
        let at = self.pos;
        let start = self.integer()?;
        self.skip_ws();
        if !self.eat(':') {
            return match start {
                Some(index) => Ok(Selector::Index(index)),
                None => Err(self.error(at, "expected an index")),
            };
        }
        self.skip_ws();
        let end = self.integer()?;
        self.skip_ws();
        let step_at = self.pos;
        let step = if self.eat(':') {
            self.skip_ws();
            self.integer()?.unwrap_or(1)
        } else {
            1
        };
        if step == 0 {
            return Err(self.error(step_at, "a slice's step can't be 0"));
        }
        Ok(Selector::Slice(Slice { start, end, step }))
    }

    /// An optional integer, with an optional minus sign.
    fn integer(&mut self) -> Result<Option<i64>, PathError> {
        let start = self.pos;
        let negative = self.eat('-');
        let digits_start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == digits_start {
            if negative {
                return Err(self.error(self.pos, "expected digits after '-'"));
            }
            return Ok(None);
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        text.parse::<i64>()
            .map(Some)
            .map_err(|_| self.error(start, format!("the index {text} is too large")))
    }

    /// A string in single or double quotes, with JSON's escapes.
    fn quoted(&mut self, quote: char) -> Result<String, PathError> {
        let open = self.pos;
        self.bump();
        let mut text = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(self.error(open, format!("the quoted name is not closed; end it with {quote}")));
                }
                Some(c) if c == quote => return Ok(text),
                Some('\\') => {
                    let escaped = match self.bump() {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('u') => self.unicode_escape()?,
                        Some(c) => c,
                        None => {
                            return Err(self.error(open, format!("the quoted name is not closed; end it with {quote}")));
                        }
                    };
                    text.push(escaped);
                }
                Some(c) => text.push(c),
            }
        }
    }

    fn unicode_escape(&mut self) -> Result<char, PathError> {
        let at = self.pos;
        let hex: String = self.chars.iter().skip(self.pos).take(4).collect();
        let code = (hex.len() == 4)
            .then(|| u32::from_str_radix(&hex, 16).ok())
            .flatten()
            .and_then(char::from_u32);
        match code {
            Some(c) => {
                self.pos += 4;
                Ok(c)
            }
            None => Err(self.error(at, "'\\u' takes four hex digits of a Unicode scalar value")),
        }
    }

    fn filter_or(&mut self) -> Result<Filter, PathError> {
        let mut left = self.filter_and()?;
        loop {
            self.skip_ws();
            if !self.eat_str("||") {
                return Ok(left);
            }
            let right = self.filter_and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
    }

    fn filter_and(&mut self) -> Result<Filter, PathError> {
        let mut left = self.filter_unary()?;
        loop {
            self.skip_ws();
            if !self.eat_str("&&") {
                return Ok(left);
            }
            let right = self.filter_unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
    }

    fn filter_unary(&mut self) -> Result<Filter, PathError> {
        self.skip_ws();
        if self.peek() == Some('!') && self.peek_at(1) != Some('=') {
            self.bump();
            return Ok(Filter::Not(Box::new(self.filter_unary()?)));
        }
        if self.eat('(') {
            let inner = self.filter_or()?;
            self.skip_ws();
            if !self.eat(')') {
                return Err(self.error(self.pos, format!("expected ')' in the filter, but {}", self.found())));
            }
            return Ok(inner);
        }
        let at = self.pos;
        let left = self.operand()?;
        self.skip_ws();
        match self.comparison()? {
            Some(comparison) => {
                self.skip_ws();
                let right = self.operand()?;
                Ok(Filter::Compare(left, comparison, right))
            }
            None => match left {
                Operand::Literal(_) => Err(self.error(
                    at,
                    "a literal on its own is not a condition; compare it, as in @.x == 1",
                )),
                path => Ok(Filter::Exists(path)),
            },
        }
    }

    fn comparison(&mut self) -> Result<Option<Comparison>, PathError> {
        let at = self.pos;
        if self.eat_str("=~") {
            return Err(self.error(at, "regular expressions (=~) are not supported in filters"));
        }
        let comparison = if self.eat_str("==") {
            Comparison::Eq
        } else if self.eat_str("!=") {
            Comparison::Ne
        } else if self.eat_str("<=") {
            Comparison::Le
        } else if self.eat_str(">=") {
            Comparison::Ge
        } else if self.eat('<') {
            Comparison::Lt
        } else if self.eat('>') {
            Comparison::Gt
        } else if self.peek() == Some('=') {
            return Err(self.error(at, "a single '=' is not a comparison; write '=='"));
        } else {
            return Ok(None);
        };
        Ok(Some(comparison))
    }

    fn operand(&mut self) -> Result<Operand, PathError> {
        let at = self.pos;
        match self.peek() {
            Some('@') => {
                self.bump();
                let segments = self.segments(true)?;
                self.singular(at, &segments)?;
                Ok(Operand::Current(segments))
            }
            Some('$') => {
                self.bump();
                let root = self.root();
                let segments = self.segments(true)?;
                self.singular(at, &segments)?;
                Ok(Operand::Root(root, segments))
            }
            Some(quote @ ('\'' | '"')) => Ok(Operand::Literal(Value::String(self.quoted(quote)?))),
            Some(c) if c == '-' || c.is_ascii_digit() => {
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
                {
                    self.pos += 1;
                }
                let text: String = self.chars[at..self.pos].iter().collect();
                serde_json::from_str::<Number>(&text)
                    .map(|n| Operand::Literal(Value::Number(n)))
                    .map_err(|_| self.error(at, format!("'{text}' is not a number")))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
                    self.pos += 1;
                }
                let word: String = self.chars[at..self.pos].iter().collect();
                match word.as_str() {
                    "true" => Ok(Operand::Literal(Value::Bool(true))),
                    "false" => Ok(Operand::Literal(Value::Bool(false))),
                    "null" => Ok(Operand::Literal(Value::Null)),
                    _ => Err(self.error(
                        at,
                        format!(
                            "'{word}' is not a value; write a field of the element as @.{word}, \
                             or text in quotes as '{word}'"
                        ),
                    )),
                }
            }
            _ => Err(self.error(
                at,
                format!(
                    "expected a value in the filter (@.field, $.field, a number, a quoted \
                     string, true, false or null), but {}",
                    self.found()
                ),
            )),
        }
    }

    fn singular(&self, at: usize, segments: &[Segment]) -> Result<(), PathError> {
        if is_singular(segments) {
            Ok(())
        } else {
            Err(self.error(
                at,
                "inside a filter, a path names one value: names and indexes only, no \
                 wildcards, slices, unions, filters or '..'",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slices_count_like_python() {
        let slice = |start, end, step| Slice { start, end, step };
        assert_eq!(slice(None, None, 1).indices(4), vec![0, 1, 2, 3]);
        assert_eq!(slice(Some(-3), None, 1).indices(4), vec![1, 2, 3]);
        assert_eq!(slice(Some(1), Some(100), 2).indices(6), vec![1, 3, 5]);
        assert_eq!(slice(None, None, -1).indices(3), vec![2, 1, 0]);
        assert_eq!(slice(Some(5), Some(1), -2).indices(6), vec![5, 3]);
        assert!(slice(Some(3), Some(1), 1).indices(6).is_empty());
        assert!(slice(None, None, 1).indices(0).is_empty());
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(same_json(&json!(1), &json!(1.0)));
        assert!(same_json(&json!({"a": [1, 2]}), &json!({"a": [1.0, 2]})));
        assert!(!same_json(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!same_json(&json!("1"), &json!(1)));
    }

    #[test]
    fn step_text_brackets_names_with_punctuation() {
        assert_eq!(step_text(&Step::Field("a".into())), ".a");
        assert_eq!(step_text(&Step::Field("a b".into())), "['a b']");
        assert_eq!(step_text(&Step::Field("it's".into())), "['it\\'s']");
        assert_eq!(step_text(&Step::Index(-1)), "[-1]");
    }
}
