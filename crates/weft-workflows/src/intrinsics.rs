//! The intrinsic functions of the Amazon States Language (`States.Format`,
//! `States.Array`, `States.Hash` and the other fifteen), as the `.$` fields
//! of payload templates call them.
//!
//! [`parse`] reads a call once and checks what can be checked without data:
//! the function's name, the number of arguments, and the literal arguments'
//! types and values. [`Call::eval`] runs it against a state's input and the
//! context object. An error says which function failed and why, and which
//! ASL error Step Functions raises for it ([`IntrinsicError::error_name`]).
//!
//! ```
//! use serde_json::json;
//! use weft_workflows::intrinsics;
//! use weft_workflows::path::Env;
//!
//! let call = intrinsics::parse("States.Format('Hello, {}!', $.name)")?;
//! let greeting = call.eval(&json!({"name": "Ada"}), &Env::of(&json!({})))?;
//! assert_eq!(greeting, json!("Hello, Ada!"));
//! # Ok::<(), weft_workflows::intrinsics::IntrinsicError>(())
//! ```
//!
//! # Syntax
//!
//! A call is a function name, then arguments in parentheses separated by
//! commas. An argument is a string in single quotes, a number, `true`,
//! `false`, `null`, a path (`$.name`, `$$.Execution.Id`), or another call;
//! calls nest at most ten deep. In a string, `\'`, `\{`, `\}` and `\\`
//! stand for `'`, `{`, `}` and `\`, and any other backslash is an error. In
//! the template of `States.Format`, `{}` is a placeholder unless a brace of
//! it is escaped.
//!
//! Where Step Functions wants an integer, a number with a fraction is
//! rounded to the nearest integer, halves away from zero.
//!
//! This module knows nothing of states or templates; path arguments are
//! read with [`crate::path::Path`].

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use rand::Rng;
use serde_json::{Number, Value};
use sha2::Digest as _;

use crate::path::{Env, Path, PathError, describe, plural, same_json};

/// Where the functions that draw random values (`States.UUID`,
/// `States.MathRandom`, JSONata's `$uuid` and `$random`) draw them: a
/// sequence from a seed (SplitMix64, written here so that no library's
/// change of generator changes it), so that a workflow run again on its
/// journal after a crash draws what it drew the first time.
#[derive(Debug)]
pub struct Draws {
    seed: u64,
    drawn: std::sync::atomic::AtomicU64,
}

impl Draws {
    pub fn new(seed: u64) -> Draws {
        Draws {
            seed,
            drawn: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The next number of the sequence (SplitMix64).
    pub fn next(&self) -> u64 {
        let n = self.drawn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut z = self
            .seed
            .wrapping_add(n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `start..end` (`start < end`).
    pub fn between(&self, start: i64, end: i64) -> i64 {
        let width = (i128::from(end) - i128::from(start)).max(1) as u128;
        (i128::from(start) + (u128::from(self.next()) % width) as i128) as i64
    }

    /// A number in `0.0..1.0`.
    pub fn fraction(&self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A version 4 UUID.
    pub fn uuid(&self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next().to_le_bytes());
        uuid_v4(bytes)
    }
}

/// How deep intrinsic function calls can nest inside one another.
const MAX_NESTING: usize = 10;

/// The most elements `States.ArrayRange` makes.
const MAX_RANGE: i128 = 1000;

/// The longest string, in characters, that `States.Base64Encode`,
/// `States.Base64Decode` and `States.Hash` take.
const MAX_TEXT: usize = 10_000;

/// The algorithms `States.Hash` knows, by the names it takes.
const HASH_ALGORITHMS: [&str; 5] = ["MD5", "SHA-1", "SHA-256", "SHA-384", "SHA-512"];

/// Why an intrinsic function call could not be read or run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IntrinsicError {
    /// The text is not a well-formed call.
    #[error("invalid intrinsic function call {text:?}: {reason} (at character {at})")]
    Syntax {
        text: String,
        /// 1-based character position of the problem.
        at: usize,
        reason: String,
    },
    /// The function can't take these arguments: too many or too few, or one
    /// of the wrong type or out of its range.
    #[error("{function}: {reason}")]
    Arguments { function: &'static str, reason: String },
    /// The arguments were right, but the function could not produce a value
    /// from them (text that isn't JSON or Base64, an index outside the
    /// array).
    #[error("{function}: {reason}")]
    Failed { function: &'static str, reason: String },
    /// A path argument could not be read.
    #[error("{function}, argument {position}: {source}")]
    Path {
        function: &'static str,
        position: usize,
        source: Box<PathError>,
    },
}

impl IntrinsicError {
    /// The ASL error name Step Functions raises for this failure:
    /// `States.IntrinsicFailure`, or `States.Runtime` for a path argument
    /// that matches nothing.
    pub fn error_name(&self) -> &'static str {
        match self {
            IntrinsicError::Path { source, .. } => source.error_name(),
            IntrinsicError::Syntax { .. } | IntrinsicError::Arguments { .. } | IntrinsicError::Failed { .. } => {
                "States.IntrinsicFailure"
            }
        }
    }
}

/// An intrinsic function of ASL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    Format,
    StringToJson,
    JsonToString,
    Array,
    ArrayPartition,
    ArrayContains,
    ArrayRange,
    ArrayGetItem,
    ArrayLength,
    ArrayUnique,
    Base64Encode,
    Base64Decode,
    Hash,
    JsonMerge,
    MathRandom,
    MathAdd,
    StringSplit,
    Uuid,
}

impl Function {
    /// Every intrinsic function.
    pub const ALL: [Function; 18] = [
        Function::Format,
        Function::StringToJson,
        Function::JsonToString,
        Function::Array,
        Function::ArrayPartition,
        Function::ArrayContains,
        Function::ArrayRange,
        Function::ArrayGetItem,
        Function::ArrayLength,
        Function::ArrayUnique,
        Function::Base64Encode,
        Function::Base64Decode,
        Function::Hash,
        Function::JsonMerge,
        Function::MathRandom,
        Function::MathAdd,
        Function::StringSplit,
        Function::Uuid,
    ];

    /// The name a definition calls it by, such as `States.Format`.
    pub fn name(self) -> &'static str {
        match self {
            Function::Format => "States.Format",
            Function::StringToJson => "States.StringToJson",
            Function::JsonToString => "States.JsonToString",
            Function::Array => "States.Array",
            Function::ArrayPartition => "States.ArrayPartition",
            Function::ArrayContains => "States.ArrayContains",
            Function::ArrayRange => "States.ArrayRange",
            Function::ArrayGetItem => "States.ArrayGetItem",
            Function::ArrayLength => "States.ArrayLength",
            Function::ArrayUnique => "States.ArrayUnique",
            Function::Base64Encode => "States.Base64Encode",
            Function::Base64Decode => "States.Base64Decode",
            Function::Hash => "States.Hash",
            Function::JsonMerge => "States.JsonMerge",
            Function::MathRandom => "States.MathRandom",
            Function::MathAdd => "States.MathAdd",
            Function::StringSplit => "States.StringSplit",
            Function::Uuid => "States.UUID",
        }
    }

    /// The function a definition calls by `name`.
    pub fn from_name(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    fn signature(self) -> &'static Signature {
        match self {
            Function::Format => &FORMAT,
            Function::StringToJson => &STRING_TO_JSON,
            Function::JsonToString => &JSON_TO_STRING,
            Function::Array => &ARRAY,
            Function::ArrayPartition => &ARRAY_PARTITION,
            Function::ArrayContains => &ARRAY_CONTAINS,
            Function::ArrayRange => &ARRAY_RANGE,
            Function::ArrayGetItem => &ARRAY_GET_ITEM,
            Function::ArrayLength | Function::ArrayUnique => &ONE_ARRAY,
            Function::Base64Encode => &BASE64_ENCODE,
            Function::Base64Decode => &BASE64_DECODE,
            Function::Hash => &HASH,
            Function::JsonMerge => &JSON_MERGE,
            Function::MathRandom => &MATH_RANDOM,
            Function::MathAdd => &MATH_ADD,
            Function::StringSplit => &STRING_SPLIT,
            Function::Uuid => &UUID,
        }
    }
}

/// The arguments a function takes.
struct Signature {
    params: &'static [Param],
    /// How many of `params` must be given.
    required: usize,
    /// What any number of further arguments must be, if the function takes
    /// them.
    rest: Option<Param>,
}

#[derive(Clone, Copy)]
struct Param {
    name: &'static str,
    kind: Kind,
    /// A further check of the value, once its kind is right: `Err` says
    /// what it must be, as in "must be at least 1, but it is 0".
    rule: Option<Rule>,
}

/// A check of an argument's value: `Err` says what it must be.
type Rule = fn(&Value) -> Result<(), String>;

const fn param(name: &'static str, kind: Kind) -> Param {
    Param { name, kind, rule: None }
}

const fn ruled(name: &'static str, kind: Kind, rule: Rule) -> Param {
    Param {
        name,
        kind,
        rule: Some(rule),
    }
}

const fn fixed(params: &'static [Param]) -> Signature {
    Signature {
        params,
        required: params.len(),
        rest: None,
    }
}

const FORMAT: Signature = Signature {
    params: &[param("template", Kind::String)],
    required: 1,
    rest: Some(param("value", Kind::Any)),
};
const STRING_TO_JSON: Signature = fixed(&[param("JSON text", Kind::String)]);
const JSON_TO_STRING: Signature = fixed(&[param("value", Kind::Any)]);
const ARRAY: Signature = Signature {
    params: &[],
    required: 0,
    rest: Some(param("element", Kind::Any)),
};
const ARRAY_PARTITION: Signature = fixed(&[
    param("array", Kind::Array),
    ruled("chunk size", Kind::Integer, positive),
]);
const ARRAY_CONTAINS: Signature = fixed(&[param("array", Kind::Array), param("value", Kind::Any)]);
const ARRAY_RANGE: Signature = fixed(&[
    param("first element", Kind::Integer),
    param("last element", Kind::Integer),
    ruled("step", Kind::Integer, non_zero),
]);
const ARRAY_GET_ITEM: Signature = fixed(&[param("array", Kind::Array), ruled("index", Kind::Integer, not_negative)]);
const ONE_ARRAY: Signature = fixed(&[param("array", Kind::Array)]);
const BASE64_ENCODE: Signature = fixed(&[ruled("text", Kind::String, short_text)]);
const BASE64_DECODE: Signature = fixed(&[ruled("Base64 text", Kind::String, short_text)]);
const HASH: Signature = fixed(&[
    ruled("data", Kind::Any, short_text),
    ruled("algorithm", Kind::String, hash_algorithm),
]);
const JSON_MERGE: Signature = fixed(&[
    param("first object", Kind::Object),
    param("second object", Kind::Object),
    ruled("deep merge flag", Kind::Boolean, shallow),
]);
const MATH_RANDOM: Signature = Signature {
    params: &[
        param("start", Kind::Integer),
        param("end", Kind::Integer),
        param("seed", Kind::Integer),
    ],
    required: 2,
    rest: None,
};
const MATH_ADD: Signature = fixed(&[
    ruled("first number", Kind::Integer, int32),
    ruled("second number", Kind::Integer, int32),
]);
const STRING_SPLIT: Signature = fixed(&[param("text", Kind::String), param("delimiters", Kind::String)]);
const UUID: Signature = fixed(&[]);

impl Signature {
    fn param(&self, index: usize) -> Option<Param> {
        self.params.get(index).copied().or(self.rest)
    }

    fn check_count(&self, function: Function, given: usize) -> Result<(), IntrinsicError> {
        let fits = given >= self.required && (self.rest.is_some() || given <= self.params.len());
        if fits {
            return Ok(());
        }
        let names: Vec<&str> = self.params.iter().map(|p| p.name).collect();
        let takes = match (self.rest, self.params.len()) {
            (Some(rest), 0) => format!("any number of arguments ({}s)", rest.name),
            (Some(rest), _) => format!(
                "at least {} argument{} ({}, then any number of {}s)",
                self.required,
                plural(self.required),
                names.join(", "),
                rest.name
            ),
            (None, 0) => "no arguments".to_owned(),
            (None, n) if n == self.required => {
                format!("{n} argument{} ({})", plural(n), names.join(", "))
            }
            (None, n) => format!(
                "{} to {n} arguments ({}, the last {} optional)",
                self.required,
                names.join(", "),
                n - self.required
            ),
        };
        Err(IntrinsicError::Arguments {
            function: function.name(),
            reason: format!("takes {takes}, but was given {given}"),
        })
    }
}

/// The kinds of JSON value a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Any,
    String,
    /// A number, rounded to the nearest integer.
    Integer,
    Array,
    Object,
    Boolean,
}

impl Kind {
    fn admits(self, value: &Value) -> bool {
        match self {
            Kind::Any => true,
            Kind::String => value.is_string(),
            Kind::Integer => integer(value).is_some(),
            Kind::Array => value.is_array(),
            Kind::Object => value.is_object(),
            Kind::Boolean => value.is_boolean(),
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Any => "a value",
            Kind::String => "a string",
            Kind::Integer => "an integer",
            Kind::Array => "an array",
            Kind::Object => "an object",
            Kind::Boolean => "a boolean",
        }
    }
}

/// The integer a number stands for, rounded; `None` for anything else.
fn integer(value: &Value) -> Option<i64> {
    let number = value.as_number()?;
    if let Some(exact) = number.as_i64() {
        return Some(exact);
    }
    let rounded = number.as_f64()?.round();
    // i64::MAX as f64 rounds up to 2^63, which is out of range.
    (rounded.is_finite() && rounded >= i64::MIN as f64 && rounded < i64::MAX as f64).then_some(rounded as i64)
}

fn positive(value: &Value) -> Result<(), String> {
    match integer(value) {
        Some(n) if n >= 1 => Ok(()),
        _ => Err(format!("must be at least 1, but it is {value}")),
    }
}

fn non_zero(value: &Value) -> Result<(), String> {
    match integer(value) {
        Some(0) | None => Err(format!("must not be 0, but it is {value}")),
        Some(_) => Ok(()),
    }
}

fn not_negative(value: &Value) -> Result<(), String> {
    match integer(value) {
        Some(n) if n >= 0 => Ok(()),
        _ => Err(format!("must be 0 or more, but it is {value}")),
    }
}

fn int32(value: &Value) -> Result<(), String> {
    match integer(value) {
        Some(n) if i32::try_from(n).is_ok() => Ok(()),
        _ => Err(format!(
            "must be between {} and {}, but it is {value}",
            i32::MIN,
            i32::MAX
        )),
    }
}

fn short_text(value: &Value) -> Result<(), String> {
    let length = match value {
        Value::String(text) => text.chars().count(),
        other => other.to_string().chars().count(),
    };
    if length <= MAX_TEXT {
        Ok(())
    } else {
        Err(format!("must be at most 10,000 characters long, but it is {length}"))
    }
}

fn hash_algorithm(value: &Value) -> Result<(), String> {
    match value.as_str() {
        Some(name) if HASH_ALGORITHMS.contains(&name) => Ok(()),
        _ => Err(format!(
            "must be one of {}, but it is {value}",
            HASH_ALGORITHMS.join(", ")
        )),
    }
}

fn shallow(value: &Value) -> Result<(), String> {
    if value == &Value::Bool(false) {
        Ok(())
    } else {
        Err("must be false: only shallow merging is supported, as in Step Functions".to_owned())
    }
}

fn check_argument(function: Function, index: usize, value: &Value) -> Result<(), IntrinsicError> {
    let Some(param) = function.signature().param(index) else {
        return Ok(());
    };
    let problem = if !param.kind.admits(value) {
        Some(format!(
            "must be {}, but it is {}",
            param.kind.expected(),
            describe(value)
        ))
    } else {
        param.rule.and_then(|rule| rule(value).err())
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(IntrinsicError::Arguments {
            function: function.name(),
            reason: format!("the {} (argument {}) {problem}", param.name, index + 1),
        }),
    }
}

/// A parsed intrinsic function call.
#[derive(Debug, Clone)]
pub struct Call {
    function: Function,
    args: Vec<Arg>,
}

#[derive(Debug, Clone)]
enum Arg {
    /// A number, `true`, `false` or `null`.
    Literal(Value),
    /// A string literal, with where its unescaped `{}` placeholders start
    /// (byte offsets into the text).
    Text {
        text: String,
        slots: Vec<usize>,
    },
    Path(Path),
    Call(Box<Call>),
}

impl Arg {
    fn literal(&self) -> Option<Value> {
        match self {
            Arg::Literal(value) => Some(value.clone()),
            Arg::Text { text, .. } => Some(Value::String(text.clone())),
            Arg::Path(_) | Arg::Call(_) => None,
        }
    }
}

impl Call {
    /// The function called.
    pub fn function(&self) -> Function {
        self.function
    }

    /// Runs the call: path arguments are read from `input` (`$`), the
    /// context object (`$$`) and the variables (`$name`) of `env`, nested
    /// calls are run first.
    pub fn eval(&self, input: &Value, env: &Env<'_>) -> Result<Value, IntrinsicError> {
        let function = self.function;
        let mut values = Vec::with_capacity(self.args.len());
        for (index, arg) in self.args.iter().enumerate() {
            let value = match arg {
                Arg::Literal(value) => value.clone(),
                Arg::Text { text, .. } => Value::String(text.clone()),
                Arg::Path(path) => path.select(input, env).map_err(|error| IntrinsicError::Path {
                    function: function.name(),
                    position: index + 1,
                    source: Box::new(error),
                })?,
                Arg::Call(call) => call.eval(input, env)?,
            };
            check_argument(function, index, &value)?;
            values.push(value);
        }
        function.signature().check_count(function, values.len())?;
        let slots = match self.args.first() {
            Some(Arg::Text { slots, .. }) => Some(slots.as_slice()),
            _ => None,
        };
        run(function, &values, slots, env.draws)
    }

    /// The checks that need no data, made once the call is parsed.
    fn check_literals(&self) -> Result<(), IntrinsicError> {
        let function = self.function;
        function.signature().check_count(function, self.args.len())?;
        for (index, arg) in self.args.iter().enumerate() {
            if let Some(value) = arg.literal() {
                check_argument(function, index, &value)?;
            }
        }
        if let (Function::Format, Some(Arg::Text { slots, .. })) = (function, self.args.first()) {
            check_placeholders(slots.len(), self.args.len() - 1)?;
        }
        if function == Function::MathRandom
            && let [Arg::Literal(start), Arg::Literal(end), ..] = self.args.as_slice()
        {
            check_random_range(integer(start), integer(end))?;
        }
        if function == Function::ArrayRange
            && let [Arg::Literal(first), Arg::Literal(last), Arg::Literal(step)] = self.args.as_slice()
        {
            range_len(integer(first), integer(last), integer(step))?;
        }
        Ok(())
    }
}

fn check_placeholders(placeholders: usize, values: usize) -> Result<(), IntrinsicError> {
    if placeholders == values {
        return Ok(());
    }
    Err(IntrinsicError::Arguments {
        function: Function::Format.name(),
        reason: format!(
            "the template has {placeholders} placeholder{} '{{}}' but {values} value{} {} it; \
             pass one value for each '{{}}' (write \\{{ and \\}} for literal braces)",
            plural(placeholders),
            plural(values),
            if values == 1 { "follows" } else { "follow" },
        ),
    })
}

fn check_random_range(start: Option<i64>, end: Option<i64>) -> Result<(), IntrinsicError> {
    match (start, end) {
        (Some(start), Some(end)) if start >= end => Err(IntrinsicError::Arguments {
            function: Function::MathRandom.name(),
            reason: format!(
                "the start ({start}) must be less than the end ({end}): the start is \
                 included and the end is not"
            ),
        }),
        _ => Ok(()),
    }
}

/// How many elements `States.ArrayRange` makes; an error past 1000.
fn range_len(first: Option<i64>, last: Option<i64>, step: Option<i64>) -> Result<i128, IntrinsicError> {
    let (Some(first), Some(last), Some(step)) = (first, last, step) else {
        return Ok(0);
    };
    let (first, last, step) = (i128::from(first), i128::from(last), i128::from(step));
    let len = if step == 0 || (step > 0 && first > last) || (step < 0 && first < last) {
        0
    } else {
        (last - first) / step + 1
    };
    if len > MAX_RANGE {
        return Err(IntrinsicError::Arguments {
            function: Function::ArrayRange.name(),
            reason: format!(
                "the range from {first} to {last} by {step} has {len} elements, but an array \
                 made by it can have at most 1000; use a larger step or a shorter range"
            ),
        });
    }
    Ok(len)
}

static NULL: Value = Value::Null;

/// The evaluated argument at `index`; the signature was checked, so it is
/// there unless the function made it optional.
fn at(values: &[Value], index: usize) -> &Value {
    values.get(index).unwrap_or(&NULL)
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn int(value: &Value) -> i64 {
    integer(value).unwrap_or_default()
}

fn run(
    function: Function,
    values: &[Value],
    slots: Option<&[usize]>,
    draws: Option<&Draws>,
) -> Result<Value, IntrinsicError> {
    let failed = |reason: String| IntrinsicError::Failed {
        function: function.name(),
        reason,
    };
    let empty = Vec::new();
    let array = |index: usize| at(values, index).as_array().unwrap_or(&empty);
    match function {
        Function::Format => format(text(at(values, 0)), slots, values.get(1..).unwrap_or_default()),
        Function::StringToJson => serde_json::from_str(text(at(values, 0)))
            .map_err(|error| failed(format!("the argument is not JSON text: {error}"))),
        Function::JsonToString => serde_json::to_string(at(values, 0))
            .map(Value::String)
            .map_err(|error| failed(error.to_string())),
        Function::Array => Ok(Value::Array(values.to_vec())),
        Function::ArrayPartition => {
            let size = usize::try_from(int(at(values, 1))).unwrap_or(usize::MAX).max(1);
            Ok(Value::Array(
                array(0)
                    .chunks(size)
                    .map(|chunk| Value::Array(chunk.to_vec()))
                    .collect(),
            ))
        }
        Function::ArrayContains => {
            let wanted = at(values, 1);
            Ok(Value::Bool(array(0).iter().any(|item| same_json(item, wanted))))
        }
        Function::ArrayRange => {
            let (first, last, step) = (int(at(values, 0)), int(at(values, 1)), int(at(values, 2)));
            let len = range_len(Some(first), Some(last), Some(step))?;
            let items = (0..len)
                .filter_map(|i| i64::try_from(i128::from(first) + i * i128::from(step)).ok())
                .map(Value::from)
                .collect();
            Ok(Value::Array(items))
        }
        Function::ArrayGetItem => {
            let items = array(0);
            let index = int(at(values, 1));
            usize::try_from(index)
                .ok()
                .and_then(|i| items.get(i))
                .cloned()
                .ok_or_else(|| {
                    failed(format!(
                        "the index {index} is outside the array, which has {} element{}",
                        items.len(),
                        plural(items.len())
                    ))
                })
        }
        Function::ArrayLength => Ok(Value::from(array(0).len())),
        Function::ArrayUnique => {
            let mut unique: Vec<Value> = Vec::new();
            for item in array(0) {
                if !unique.iter().any(|seen| same_json(seen, item)) {
                    unique.push(item.clone());
                }
            }
            Ok(Value::Array(unique))
        }
        Function::Base64Encode => Ok(Value::String(STANDARD.encode(text(at(values, 0))))),
        Function::Base64Decode => {
            let lenient = GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
            );
            let bytes = lenient
                .decode(text(at(values, 0)))
                .map_err(|error| failed(format!("the argument is not Base64: {error}")))?;
            String::from_utf8(bytes)
                .map(Value::String)
                .map_err(|_| failed("the decoded bytes are not UTF-8 text, which a JSON string needs".to_owned()))
        }
        Function::Hash => {
            let data = match at(values, 0) {
                Value::String(data) => data.clone(),
                other => other.to_string(),
            };
            hash(&data, text(at(values, 1))).map(Value::String).map_err(failed)
        }
        Function::JsonMerge => {
            let mut merged = at(values, 0).as_object().cloned().unwrap_or_default();
            if let Some(second) = at(values, 1).as_object() {
                for (key, value) in second {
                    merged.insert(key.clone(), value.clone());
                }
            }
            Ok(Value::Object(merged))
        }
        Function::MathRandom => {
            let (start, end) = (int(at(values, 0)), int(at(values, 1)));
            check_random_range(Some(start), Some(end))?;
            let n = match (values.get(2), draws) {
                (Some(seed), _) => Draws::new(int(seed) as u64).between(start, end),
                (None, Some(draws)) => draws.between(start, end),
                (None, None) => rand::thread_rng().gen_range(start..end),
            };
            Ok(Value::from(n))
        }
        Function::MathAdd => Ok(Value::from(int(at(values, 0)) + int(at(values, 1)))),
        Function::StringSplit => {
            let delimiters = text(at(values, 1));
            Ok(Value::Array(
                text(at(values, 0))
                    .split(|c| delimiters.contains(c))
                    .filter(|part| !part.is_empty())
                    .map(|part| Value::String(part.to_owned()))
                    .collect(),
            ))
        }
        Function::Uuid => Ok(Value::String(match draws {
            Some(draws) => draws.uuid(),
            None => uuid_v4(rand::thread_rng().r#gen()),
        })),
    }
}

/// `States.Format`: the template with each `{}` replaced by the next value.
/// `slots` are the placeholders of a literal template; a template read from
/// a path has no escapes, and every `{}` in it is one.
fn format(template: &str, slots: Option<&[usize]>, values: &[Value]) -> Result<Value, IntrinsicError> {
    let found: Vec<usize>;
    let slots = match slots {
        Some(slots) => slots,
        None => {
            found = template.match_indices("{}").map(|(i, _)| i).collect();
            &found
        }
    };
    check_placeholders(slots.len(), values.len())?;
    let mut out = String::with_capacity(template.len());
    let mut copied = 0;
    for (&slot, value) in slots.iter().zip(values) {
        out.push_str(template.get(copied..slot).unwrap_or_default());
        match value {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
        copied = slot + 2;
    }
    out.push_str(template.get(copied..).unwrap_or_default());
    Ok(Value::String(out))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// The hex digest of `data` by `algorithm` (`MD5`, `SHA-1`, `SHA-256`,
/// `SHA-384` or `SHA-512`), for `States.Hash` and JSONata's `$hash`.
pub fn hash(data: &str, algorithm: &str) -> Result<String, String> {
    let digest = match algorithm {
        "MD5" => md5::Md5::digest(data.as_bytes()).to_vec(),
        "SHA-1" => sha1::Sha1::digest(data.as_bytes()).to_vec(),
        "SHA-256" => sha2::Sha256::digest(data.as_bytes()).to_vec(),
        "SHA-384" => sha2::Sha384::digest(data.as_bytes()).to_vec(),
        "SHA-512" => sha2::Sha512::digest(data.as_bytes()).to_vec(),
        other => {
            return Err(format!(
                "unknown algorithm {other:?}; use one of {}",
                HASH_ALGORITHMS.join(", ")
            ));
        }
    };
    Ok(hex(&digest))
}

/// A version 4 UUID from 16 random bytes: version 4 in the 13th hex digit,
/// the RFC 4122 variant in the 17th.
fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let digits = hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &digits[0..8],
        &digits[8..12],
        &digits[12..16],
        &digits[16..20],
        &digits[20..32]
    )
}

/// Parses an intrinsic function call such as
/// `States.Format('Hello, {}!', $.name)`.
pub fn parse(text: &str) -> Result<Call, IntrinsicError> {
    let mut parser = Parser {
        text,
        chars: text.chars().collect(),
        pos: 0,
        depth: 0,
    };
    parser.skip_ws();
    let call = parser.call()?;
    parser.skip_ws();
    if let Some(c) = parser.peek() {
        return Err(parser.error(
            parser.pos,
            format!(
                "unexpected '{c}' after the closing ')' of {}; a field holds a single call",
                call.function.name()
            ),
        ));
    }
    Ok(call)
}

struct Parser<'t> {
    text: &'t str,
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '_'
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn error(&self, at: usize, reason: impl Into<String>) -> IntrinsicError {
        IntrinsicError::Syntax {
            text: self.text.to_owned(),
            at: at + 1,
            reason: reason.into(),
        }
    }

    fn slice(&self, from: usize) -> String {
        self.chars[from..self.pos].iter().collect()
    }

    fn call(&mut self) -> Result<Call, IntrinsicError> {
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        let name = self.slice(start);
        if name.is_empty() {
            return Err(self.error(
                start,
                "expected an intrinsic function call, such as States.Format('{}', $.name)",
            ));
        }
        let Some(function) = Function::from_name(&name) else {
            let known: Vec<&str> = Function::ALL.iter().map(|f| f.name()).collect();
            return Err(self.error(
                start,
                format!(
                    "unknown intrinsic function '{name}'; the intrinsic functions are {}",
                    known.join(", ")
                ),
            ));
        };
        self.skip_ws();
        if self.bump() != Some('(') {
            return Err(self.error(
                self.pos.saturating_sub(1),
                format!("expected '(' after {name}, as in {name}(...)"),
            ));
        }
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error(start, format!("intrinsic functions nest at most {MAX_NESTING} deep")));
        }
        let mut args = Vec::new();
        self.skip_ws();
        if self.peek() == Some(')') {
            self.bump();
        } else {
            loop {
                args.push(self.argument(function, args.len() + 1)?);
                self.skip_ws();
                match self.bump() {
                    Some(',') => {}
                    Some(')') => break,
                    Some(c) => {
                        return Err(self.error(
                            self.pos - 1,
                            format!(
                                "{name}, after argument {}: expected ',' or ')', found '{c}'",
                                args.len()
                            ),
                        ));
                    }
                    None => {
                        return Err(self.error(self.pos, format!("{name}: the argument list is not closed; add ')'")));
                    }
                }
            }
        }
        self.depth -= 1;
        let call = Call { function, args };
        call.check_literals()?;
        Ok(call)
    }

    fn argument(&mut self, function: Function, position: usize) -> Result<Arg, IntrinsicError> {
        self.skip_ws();
        let at = self.pos;
        let name = function.name();
        match self.peek() {
            None => Err(self.error(
                at,
                format!("{name}, argument {position}: expected an argument, but the text ends"),
            )),
            Some('\'') => self.string(function, position),
            Some('$') => self.path(function, position),
            Some(c) if c == '-' || c.is_ascii_digit() => {
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
                {
                    self.pos += 1;
                }
                let text = self.slice(at);
                serde_json::from_str::<Number>(&text)
                    .map(|n| Arg::Literal(Value::Number(n)))
                    .map_err(|_| self.error(at, format!("{name}, argument {position}: '{text}' is not a number")))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                while self.peek().is_some_and(is_name_char) {
                    self.pos += 1;
                }
                let word = self.slice(at);
                let literal = match word.as_str() {
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    "null" => Some(Value::Null),
                    _ => None,
                };
                match literal {
                    Some(value) => Ok(Arg::Literal(value)),
                    None => {
                        self.pos = at;
                        Ok(Arg::Call(Box::new(self.call()?)))
                    }
                }
            }
            Some('"') => Err(self.error(
                at,
                format!(
                    "{name}, argument {position}: strings in intrinsic functions are written \
                     in single quotes, as in 'text'"
                ),
            )),
            Some(',' | ')') => Err(self.error(
                at,
                format!("{name}, argument {position}: expected an argument before it"),
            )),
            Some(c) => Err(self.error(
                at,
                format!(
                    "{name}, argument {position}: unexpected '{c}'; an argument is a string in \
                     single quotes, a number, true, false, null, a path such as $.name, or \
                     another intrinsic function call"
                ),
            )),
        }
    }

    /// A string in single quotes; the opening quote is next.
    fn string(&mut self, function: Function, position: usize) -> Result<Arg, IntrinsicError> {
        let open = self.pos;
        let name = function.name();
        self.bump();
        let mut text = String::new();
        let mut slots = Vec::new();
        loop {
            match self.bump() {
                None => {
                    return Err(self.error(
                        open,
                        format!("{name}, argument {position}: the string is not closed; end it with '"),
                    ));
                }
                Some('\'') => break,
                Some('\\') => match self.bump() {
                    Some(c @ ('\'' | '{' | '}' | '\\')) => text.push(c),
                    Some(c) => {
                        return Err(self.error(
                            self.pos - 2,
                            format!(
                                "{name}, argument {position}: '\\{c}' is not an escape; the \
                                 escapes are \\', \\{{, \\}} and \\\\ (for a backslash)"
                            ),
                        ));
                    }
                    None => {
                        return Err(self.error(
                            self.pos - 1,
                            format!("{name}, argument {position}: the string ends in a lone '\\'"),
                        ));
                    }
                },
                Some('{') if self.peek() == Some('}') => {
                    self.bump();
                    slots.push(text.len());
                    text.push_str("{}");
                }
                Some(c) => text.push(c),
            }
        }
        Ok(Arg::Text { text, slots })
    }

    /// A path argument: up to a ',', ')' or space outside brackets.
    fn path(&mut self, function: Function, position: usize) -> Result<Arg, IntrinsicError> {
        let start = self.pos;
        let mut depth = 0usize;
        let mut quote: Option<char> = None;
        while let Some(c) = self.peek() {
            if let Some(open) = quote {
                if c == '\\' {
                    self.bump();
                } else if c == open {
                    quote = None;
                }
                self.bump();
                continue;
            }
            match c {
                '\\' => {
                    self.bump();
                }
                '[' | '(' => depth += 1,
                ']' | ')' if depth > 0 => depth -= 1,
                ',' | ')' if depth == 0 => break,
                '\'' | '"' if depth > 0 => quote = Some(c),
                c if c.is_whitespace() && depth == 0 => break,
                _ => {}
            }
            self.bump();
        }
        let text = self.slice(start);
        Path::parse(&text).map(Arg::Path).map_err(|error| {
            let name = function.name();
            match error {
                PathError::Syntax { at, reason, .. } => self.error(
                    start + at.saturating_sub(1),
                    format!("{name}, argument {position}: the path '{text}' is invalid: {reason}"),
                ),
                other => self.error(start, format!("{name}, argument {position}: {other}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_is_found_by_its_name() {
        for function in Function::ALL {
            assert_eq!(Function::from_name(function.name()), Some(function));
        }
        assert_eq!(Function::from_name("States.Nope"), None);
    }

    #[test]
    fn uuids_carry_version_and_variant() {
        assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
        assert_eq!(uuid_v4([0xff; 16]), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    }

    #[test]
    fn integers_round_to_nearest() {
        assert_eq!(integer(&serde_json::json!(2.5)), Some(3));
        assert_eq!(integer(&serde_json::json!(-2.5)), Some(-3));
        assert_eq!(integer(&serde_json::json!(1.2)), Some(1));
        assert_eq!(integer(&serde_json::json!(1e300)), None);
        assert_eq!(integer(&serde_json::json!("1")), None);
    }
}
