//! The data-driven cases of JSONPath, payload templates, `ResultPath` and
//! the intrinsic functions.
//!
//! Every `*.json` file under `tests/cases/paths/` and
//! `tests/cases/intrinsics/` is an array of cases. A case has a `name`, an
//! optional `input` and `context` (both `{}` when absent), optional
//! `variables` (an object of them by name), and one subject:
//!
//! - `"path": "$.a"`: the path selected from the input, and `"definite"`
//!   (optional) whether the path is definite;
//! - `"result_path": "$.a"` or `null`, with `"result"`: the input merged
//!   with the result;
//! - `"template": {...}`: the payload the template builds;
//! - `"call": "States.Array(1)"`: the intrinsic function call's value;
//! - `"check": {"path" | "reference_path" | "template": ...}`: the
//!   validator's check, which succeeds unless the case expects an error.
//!
//! What is expected: `"expect"` (the value), or `"error"` (text the
//! message contains) and/or `"error_name"` (the ASL error), with
//! `"location"` for a template check; or `"shape"` for values that are
//! random: `{"uuid": true}`, `{"integer_in": [start, end]}` (end excluded),
//! `{"each_integer_in": [start, end]}`, `{"all_equal": true}`,
//! `{"distinct": true}`, checked `"repeat"` times (once when absent).

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

use serde_json::{Value, json};
use weft_workflows::intrinsics;
use weft_workflows::path::{
    Env, Path, ReferencePath, apply_template, check_path, check_reference_path, check_template, merge,
};

const KEYS: [&str; 17] = [
    "name",
    "input",
    "context",
    "variables",
    "path",
    "definite",
    "result_path",
    "result",
    "template",
    "call",
    "check",
    "expect",
    "error",
    "error_name",
    "location",
    "shape",
    "repeat",
];

#[test]
fn path_cases() {
    run_cases("paths");
}

#[test]
fn intrinsic_cases() {
    run_cases("intrinsics");
}

fn run_cases(folder: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cases")
        .join(folder);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no case files in {}", dir.display());

    let mut failures = Vec::new();
    let mut count = 0;
    for file in &files {
        let file_name = file.file_name().unwrap_or_default().to_string_lossy();
        let text = fs::read_to_string(file).expect("a readable case file");
        let cases: Vec<Value> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file_name} is not a JSON array of cases: {e}"));
        let mut names = HashSet::new();
        for case in &cases {
            count += 1;
            let name = case["name"].as_str().unwrap_or("<no name>");
            if !names.insert(name.to_owned()) {
                failures.push(format!("{file_name}: {name}: the name is used twice"));
            }
            if let Err(why) = run_case(case) {
                failures.push(format!("{file_name}: {name}: {why}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases in {folder} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What a case's subject produced: a value, or an error's message, ASL
/// error name and (for template checks) location.
struct Failure {
    message: String,
    name: Option<String>,
    location: Option<String>,
}

fn run_case(case: &Value) -> Result<(), String> {
    let fields = case.as_object().ok_or("a case must be an object")?;
    if let Some(key) = fields.keys().find(|key| !KEYS.contains(&key.as_str())) {
        return Err(format!("unknown key {key:?}"));
    }
    if !case["name"].is_string() {
        return Err("a case needs a \"name\"".into());
    }
    let input = case.get("input").cloned().unwrap_or_else(|| json!({}));
    let context = case.get("context").cloned().unwrap_or_else(|| json!({}));
    let repeat = case.get("repeat").and_then(Value::as_u64).unwrap_or(1);
    for _ in 0..repeat {
        let outcome = evaluate(case, &input, &context)?;
        judge(case, outcome)?;
    }
    Ok(())
}

fn evaluate(case: &Value, input: &Value, context: &Value) -> Result<Result<Value, Failure>, String> {
    let variables = case
        .get("variables")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let env = Env {
        context,
        variables: &variables,
        draws: None,
    };
    let path_failure = |e: weft_workflows::path::PathError| Failure {
        message: e.to_string(),
        name: Some(e.error_name().to_owned()),
        location: None,
    };
    if let Some(text) = case.get("path") {
        let text = text.as_str().ok_or("\"path\" must be a string")?;
        let path = match Path::parse(text) {
            Ok(path) => path,
            Err(e) => return Ok(Err(path_failure(e))),
        };
        if let Some(definite) = case.get("definite")
            && Some(path.is_definite()) != definite.as_bool()
        {
            return Err(format!("is_definite() is {}", path.is_definite()));
        }
        return Ok(path.select(input, &env).map_err(path_failure));
    }
    if let Some(text) = case.get("result_path") {
        let result = case.get("result").cloned().ok_or("\"result_path\" needs \"result\"")?;
        let path = match text {
            Value::Null => None,
            Value::String(text) => match ReferencePath::parse(text) {
                Ok(path) => Some(path),
                Err(e) => return Ok(Err(path_failure(e))),
            },
            _ => return Err("\"result_path\" must be a string or null".into()),
        };
        return Ok(merge(input.clone(), path.as_ref(), result).map_err(path_failure));
    }
    if let Some(template) = case.get("template") {
        return Ok(apply_template(template, input, &env).map_err(path_failure));
    }
    if let Some(text) = case.get("call") {
        let text = text.as_str().ok_or("\"call\" must be a string")?;
        let outcome = intrinsics::parse(text).and_then(|call| call.eval(input, &env));
        return Ok(outcome.map_err(|e| Failure {
            message: e.to_string(),
            name: Some(e.error_name().to_owned()),
            location: None,
        }));
    }
    if let Some(check) = case.get("check") {
        let message = |message: String| Failure {
            message,
            name: None,
            location: None,
        };
        let outcome = match (check.get("path"), check.get("reference_path"), check.get("template")) {
            (Some(Value::String(text)), None, None) => check_path(text).map_err(message),
            (None, Some(Value::String(text)), None) => check_reference_path(text).map_err(message),
            (None, None, Some(template)) => check_template(template).map_err(|(location, message)| Failure {
                message,
                name: None,
                location: Some(location),
            }),
            _ => return Err("\"check\" holds one of \"path\", \"reference_path\", \"template\"".into()),
        };
        return Ok(outcome.map(|()| Value::Null));
    }
    Err("a case needs \"path\", \"result_path\", \"template\", \"call\" or \"check\"".into())
}

fn judge(case: &Value, outcome: Result<Value, Failure>) -> Result<(), String> {
    let wants_error = ["error", "error_name", "location"]
        .iter()
        .any(|key| case.get(*key).is_some());
    match outcome {
        Ok(value) => {
            if wants_error {
                return Err(format!("expected an error, got {value}"));
            }
            if let Some(expected) = case.get("expect")
                && &value != expected
            {
                return Err(format!("expected {expected}, got {value}"));
            }
            if let Some(shape) = case.get("shape") {
                check_shape(shape, &value)?;
            }
            if case.get("expect").is_none() && case.get("shape").is_none() && case.get("check").is_none() {
                return Err("the case expects nothing".into());
            }
            Ok(())
        }
        Err(failure) => {
            if !wants_error {
                return Err(format!("unexpected error: {}", failure.message));
            }
            if let Some(text) = case.get("error").and_then(Value::as_str)
                && !failure.message.contains(text)
            {
                return Err(format!("the error {:?} doesn't contain {text:?}", failure.message));
            }
            if let Some(name) = case.get("error_name").and_then(Value::as_str)
                && failure.name.as_deref() != Some(name)
            {
                return Err(format!(
                    "expected the error {name}, got {:?} ({})",
                    failure.name, failure.message
                ));
            }
            if let Some(location) = case.get("location").and_then(Value::as_str)
                && failure.location.as_deref() != Some(location)
            {
                return Err(format!(
                    "expected the location {location:?}, got {:?} ({})",
                    failure.location, failure.message
                ));
            }
            Ok(())
        }
    }
}

fn check_shape(shape: &Value, value: &Value) -> Result<(), String> {
    let shape = shape.as_object().ok_or("\"shape\" must be an object")?;
    for (check, argument) in shape {
        match check.as_str() {
            "uuid" => is_uuid_v4(value)?,
            "integer_in" => integer_in(argument, value)?,
            "each_integer_in" => {
                let items = value.as_array().ok_or(format!("{value} is not an array"))?;
                items.iter().try_for_each(|item| integer_in(argument, item))?;
            }
            "all_equal" => {
                let items = value.as_array().ok_or(format!("{value} is not an array"))?;
                if items.windows(2).any(|pair| pair[0] != pair[1]) {
                    return Err(format!("the elements of {value} differ"));
                }
            }
            "distinct" => {
                let items = value.as_array().ok_or(format!("{value} is not an array"))?;
                let unique: HashSet<String> = items.iter().map(Value::to_string).collect();
                if unique.len() != items.len() {
                    return Err(format!("{value} repeats an element"));
                }
            }
            other => return Err(format!("unknown shape check {other:?}")),
        }
    }
    Ok(())
}

fn is_uuid_v4(value: &Value) -> Result<(), String> {
    let text = value.as_str().ok_or(format!("{value} is not a string"))?;
    let groups: Vec<&str> = text.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let hex = |g: &&str| g.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
    let version = text.chars().nth(14);
    let variant = text.chars().nth(19);
    if lengths == [8, 4, 4, 4, 12]
        && groups.iter().all(hex)
        && version == Some('4')
        && variant.is_some_and(|c| "89ab".contains(c))
    {
        Ok(())
    } else {
        Err(format!("{text:?} is not a lowercase version 4 UUID"))
    }
}

fn integer_in(range: &Value, value: &Value) -> Result<(), String> {
    let bounds = range.as_array().ok_or("a range is [start, end]")?;
    let (Some(start), Some(end)) = (
        bounds.first().and_then(Value::as_i64),
        bounds.get(1).and_then(Value::as_i64),
    ) else {
        return Err("a range is [start, end]".into());
    };
    match value.as_i64() {
        Some(n) if (start..end).contains(&n) => Ok(()),
        _ => Err(format!("{value} is not an integer in [{start}, {end})")),
    }
}
