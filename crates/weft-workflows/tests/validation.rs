//! Each file of `tests/cases/definitions/` holds the cases of one feature:
//! a JSON array of
//! `{"name": ..., "definition": {...}, "valid": true}` (the definition
//! loads) or
//! `{"name": ..., "definition": {...}, "errors": ["...", ...]}` (loading it
//! reports exactly as many mistakes as `errors` has, each shown as
//! `PATH: MESSAGE` and containing its own one of the expected texts).
//!
//! Every case of every file runs, and all that fail are reported together.

use std::path::Path;

use serde_json::Value;
use weft_workflows::validate::load;

#[test]
fn definitions_load_or_report_their_mistakes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/definitions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/cases/definitions exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 11,
        "expected a file of cases per feature, found {}",
        files.len()
    );

    let mut failures = Vec::new();
    let mut cases = 0;
    for file in &files {
        let file_name = file.file_name().unwrap_or_default().to_string_lossy().to_string();
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file_name}: {e}"));
        let list: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file_name}: {e}"));
        let mut names = std::collections::HashSet::new();
        for case in &list {
            cases += 1;
            let name = case["name"].as_str().unwrap_or("(no name)");
            let label = format!("{file_name} / {name}");
            if !names.insert(name) {
                failures.push(format!("{label}: two cases have this name"));
            }
            if let Some(failure) = run(case) {
                failures.push(format!("{label}: {failure}"));
            }
        }
    }
    assert!(cases >= 100, "expected the whole table of cases, found {cases}");
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// What is wrong with one case's outcome, if anything.
fn run(case: &Value) -> Option<String> {
    let got = load(&case["definition"]);
    match (case.get("valid"), case.get("errors")) {
        (Some(Value::Bool(true)), None) => match got {
            Ok(_) => None,
            Err(mistakes) => Some(format!("expected it to load, got:\n  {}", lines(&mistakes))),
        },
        (None, Some(Value::Array(expected))) if !expected.is_empty() => {
            let expected: Vec<&str> = expected.iter().filter_map(Value::as_str).collect();
            let got: Vec<String> = match got {
                Ok(_) => Vec::new(),
                Err(mistakes) => mistakes.iter().map(ToString::to_string).collect(),
            };
            if expected.len() == got.len() && matches_each(&expected, &got) {
                return None;
            }
            let got = if got.is_empty() {
                "none: it loads".to_string()
            } else {
                format!("{}:\n  {}", got.len(), got.join("\n  "))
            };
            Some(format!(
                "expected {} mistake(s) containing:\n  {}\ngot {got}",
                expected.len(),
                expected.join("\n  "),
            ))
        }
        _ => Some("a case has \"valid\": true or a non-empty \"errors\" array".to_string()),
    }
}

/// Whether each expected text can be given a mistake of its own that contains it.
fn matches_each(expected: &[&str], got: &[String]) -> bool {
    // Augmenting paths: small tables, and one vague text never steals the
    // only mistake a precise one matches.
    fn assign(e: usize, expected: &[&str], got: &[String], seen: &mut [bool], owner: &mut [Option<usize>]) -> bool {
        for g in 0..got.len() {
            if seen[g] || !got[g].contains(expected[e]) {
                continue;
            }
            seen[g] = true;
            if owner[g].is_none_or(|other| assign(other, expected, got, seen, owner)) {
                owner[g] = Some(e);
                return true;
            }
        }
        false
    }
    let mut owner = vec![None; got.len()];
    (0..expected.len()).all(|e| assign(e, expected, got, &mut vec![false; got.len()], &mut owner))
}

fn lines(mistakes: &[weft_workflows::definition::Diagnostic]) -> String {
    mistakes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[test]
fn a_definition_reads_into_the_model_the_interpreter_runs() {
    use weft_workflows::definition::*;
    let definition = serde_json::json!({
        "Comment": "orders",
        "TimeoutSeconds": 3600,
        "StartAt": "Charge",
        "States": {
            "Charge": {
                "Type": "Task",
                "Resource": "charge",
                "TimeoutSecondsPath": "$.timeout",
                "Retry": [{"ErrorEquals": ["States.Timeout"]}],
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": null, "Next": "Failed"}],
                "Next": "Route"
            },
            "Route": {
                "Type": "Choice",
                "Choices": [{
                    "And": [
                        {"Variable": "$.total", "NumericGreaterThanEquals": 100},
                        {"Not": {"Variable": "$.vip", "BooleanEqualsPath": "$.flags.vip"}}
                    ],
                    "Next": "Ship"
                }],
                "Default": "Ship"
            },
            "Ship": {
                "Type": "Map",
                "QueryLanguage": "JSONata",
                "Items": "{% $states.input.lines %}",
                "ItemProcessor": {"StartAt": "Pack", "States": {"Pack": {"Type": "Wait", "Seconds": 1, "End": true}}},
                "End": true
            },
            "Failed": {"Type": "Fail", "ErrorPath": "$.Error"}
        }
    });
    let machine = load(&definition).expect("the definition loads");
    assert_eq!(machine.timeout_seconds, Some(3600));
    assert_eq!(machine.query_language, QueryLanguage::JsonPath);
    let charge = machine.state("Charge").expect("Charge");
    let StateKind::Task(task) = &charge.kind else {
        panic!("Charge is a Task")
    };
    assert_eq!(task.timeout_seconds, Some(Setting::Path("$.timeout".into())));
    assert_eq!(
        (
            task.retry[0].interval_seconds,
            task.retry[0].max_attempts,
            task.retry[0].backoff_rate
        ),
        (1, 3, 2.0),
        "a retrier's defaults"
    );
    assert_eq!(task.retry[0].jitter, Jitter::None);
    assert_eq!(task.catch[0].result_path, Some(DataPath::Discard));
    assert_eq!(task.transition, Transition::Next("Route".into()));

    let StateKind::Choice(choice) = &machine.state("Route").expect("Route").kind else {
        panic!("Route is a Choice")
    };
    assert_eq!(
        choice.choices[0].condition,
        Condition::And(vec![
            Condition::Test {
                variable: "$.total".into(),
                test: Test::Numeric(Relation::GreaterThanEquals, Operand::Literal(100.0)),
            },
            Condition::Not(Box::new(Condition::Test {
                variable: "$.vip".into(),
                test: Test::Boolean(Operand::Path("$.flags.vip".into())),
            })),
        ])
    );

    let ship = machine.state("Ship").expect("Ship");
    assert_eq!(ship.query_language, QueryLanguage::Jsonata);
    let StateKind::Map(map) = &ship.kind else {
        panic!("Ship is a Map")
    };
    assert_eq!(map.items, Some(Setting::Jsonata("$states.input.lines".into())));
    assert_eq!(map.mode, ProcessorMode::Inline);
    assert_eq!(map.processor.location, "States.Ship.ItemProcessor");
    let pack = map.processor.state("Pack").expect("Pack");
    assert_eq!(
        pack.query_language,
        QueryLanguage::Jsonata,
        "inherited from the Map state"
    );
    assert_eq!(pack.location, "States.Ship.ItemProcessor.States.Pack");
    assert!(pack.is_terminal());

    let StateKind::Fail(fail) = &machine.state("Failed").expect("Failed").kind else {
        panic!("Failed is a Fail")
    };
    assert_eq!(fail.error, Some(Setting::Path("$.Error".into())));
    assert_eq!(fail.cause, None);
}

#[test]
fn a_definition_in_yaml_is_the_same_as_in_json() {
    use weft_workflows::definition::{document, is_yaml};
    let yaml = "StartAt: A\nStates:\n  A:\n    Type: Pass\n    Result: {x: 1}\n    End: true\n";
    let json = r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "Result": {"x": 1}, "End": true}}}"#;
    assert!(is_yaml("order.asl.yaml") && is_yaml("a.yml") && !is_yaml("order.asl.json"));
    let from_yaml = document(yaml.as_bytes(), true).unwrap();
    assert_eq!(from_yaml, document(json.as_bytes(), false).unwrap());
    assert_eq!(
        weft_workflows::validate::load(&from_yaml).unwrap(),
        weft_workflows::validate::load(&document(json.as_bytes(), false).unwrap()).unwrap()
    );
    // Mistakes are found at the same paths.
    let bad = document(yaml.replace("End: true", "Nxt: B").as_bytes(), true).unwrap();
    let mistakes = weft_workflows::validate::load(&bad).unwrap_err();
    assert!(
        mistakes[0].to_string().starts_with("States.A.Nxt: unknown field"),
        "{}",
        mistakes[0]
    );
    for (text, is_yaml, said) in [
        ("StartAt: [", true, "not YAML"),
        ("{\"StartAt\": ", false, "not JSON"),
        ("- a\n- b\n", true, "not an object"),
    ] {
        let why = document(text.as_bytes(), is_yaml).unwrap_err();
        assert!(why.starts_with(said), "{why}");
    }
}
