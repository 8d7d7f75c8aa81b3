//! Each file of `tests/cases/runs/` holds the executions of one feature: a
//! JSON array of
//! `{"name", "definition", "input", "mocks": {FUNCTION: MOCK}, "expect"}`,
//! where `expect` is `{"status": "SUCCEEDED", "output": ...}` or
//! `{"status": "FAILED", "error": ..., "cause": "substring"}`, and may add
//! `"sleeps": [seconds, ...]` (the delays before retries, in order),
//! `"calls": {FUNCTION: [payload, ...]}` (what each mock received, in
//! order) and `"took": seconds` (how long the execution ran by the clock).
//! In a mock, `{"Repeat": TEXT, "Times": N}` stands for TEXT N times, so a
//! large answer need not be written out.
//!
//! Mocks are those of `weft workflows run` (`weft_workflows::local`).
//! Time is tokio's, paused: waits, delays and backoff take no real time.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use weft_workflows::execution::{Identity, run};
use weft_workflows::local::{Local, Mock};
use weft_workflows::validate::load;

#[tokio::test(start_paused = true)]
async fn executions_end_as_step_functions_ends_them() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/runs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/cases/runs exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut cases = 0;
    for file in &files {
        let file_name = file.file_name().unwrap_or_default().to_string_lossy().to_string();
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file_name}: {e}"));
        let list: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file_name}: {e}"));
        for case in &list {
            cases += 1;
            let name = case["name"].as_str().unwrap_or("(no name)");
            if let Some(failure) = check(case).await {
                failures.push(format!("{file_name} / {name}: {failure}"));
            }
        }
    }
    assert!(cases >= 40, "expected the whole table of executions, found {cases}");
    assert!(
        failures.is_empty(),
        "{} of {cases} executions failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

async fn check(case: &Value) -> Option<String> {
    let machine = match load(&case["definition"]) {
        Ok(m) => m,
        Err(mistakes) => {
            let shown: Vec<String> = mistakes.iter().map(ToString::to_string).collect();
            return Some(format!("the definition does not load: {}", shown.join("; ")));
        }
    };
    let mut mocks = HashMap::new();
    for (function, mock) in case["mocks"].as_object().into_iter().flatten() {
        match Mock::from_json(&expand(mock)) {
            Ok(m) => mocks.insert(function.clone(), m),
            Err(e) => return Some(format!("mock {function}: {e}")),
        };
    }
    let epoch: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("a timestamp");
    let effects = Local::new(mocks).starting_at(epoch).seeded(7);
    let identity = Identity {
        id: "weft:execution:test:run-1".into(),
        name: "run-1".into(),
        machine: "test".into(),
        started: None,
    };
    let input = case.get("input").cloned().unwrap_or_else(|| json!({}));
    let started = tokio::time::Instant::now();
    let finished = run(&machine, identity, input, &effects).await;
    let took = started.elapsed();
    let got = finished.outcome.to_json();
    let expect = &case["expect"];
    let mut wrong = Vec::new();
    if got["status"] != expect["status"] {
        wrong.push(format!(
            "status {} (error {}, cause {}), expected {}",
            got["status"], got["error"], got["cause"], expect["status"]
        ));
    }
    if let Some(output) = expect.get("output")
        && got["output"] != *output
    {
        wrong.push(format!("output {}, expected {output}", got["output"]));
    }
    if let Some(error) = expect.get("error")
        && got["error"] != *error
    {
        wrong.push(format!(
            "error {} (cause {}), expected {error}",
            got["error"], got["cause"]
        ));
    }
    if let Some(cause) = expect.get("cause").and_then(Value::as_str)
        && !got["cause"].as_str().is_some_and(|c| c.contains(cause))
    {
        wrong.push(format!("cause {}, expected it to contain {cause:?}", got["cause"]));
    }
    if let Some(sleeps) = expect.get("sleeps") {
        let slept: Vec<f64> = effects.sleeps().iter().map(Duration::as_secs_f64).collect();
        let want: Vec<f64> = sleeps
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .collect();
        let close = slept.len() == want.len() && slept.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6);
        if !close {
            wrong.push(format!("slept {slept:?} before retries, expected {want:?}"));
        }
    }
    if let Some(calls) = expect.get("calls").and_then(Value::as_object) {
        let made = effects.calls();
        for (function, payloads) in calls {
            let got: Vec<&Value> = made
                .iter()
                .filter(|c| &c.function == function)
                .map(|c| &c.payload)
                .collect();
            let want: Vec<&Value> = payloads.as_array().into_iter().flatten().collect();
            if got != want {
                wrong.push(format!("{function} received {got:?}, expected {want:?}"));
            }
        }
    }
    if let Some(seconds) = expect.get("took").and_then(Value::as_f64)
        && (took.as_secs_f64() - seconds).abs() > 0.01
    {
        wrong.push(format!(
            "took {:.3}s by the clock, expected {seconds}s",
            took.as_secs_f64()
        ));
    }
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

/// A mock with its `{"Repeat": TEXT, "Times": N}` written out.
fn expand(value: &Value) -> Value {
    match value {
        Value::Object(o) => {
            if let (Some(Value::String(text)), Some(times), 2) =
                (o.get("Repeat"), o.get("Times").and_then(Value::as_u64), o.len())
            {
                return Value::String(text.repeat(times as usize));
            }
            Value::Object(o.iter().map(|(k, v)| (k.clone(), expand(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(expand).collect()),
        other => other.clone(),
    }
}
