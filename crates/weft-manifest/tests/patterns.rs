//! Every case in `tests/patterns/*.json`: a pattern, and either an event
//! with the expected outcome, or (a part of) the error the pattern must be
//! refused with. The cases follow EventBridge's documented matching rules;
//! each file holds one operator or behaviour.
//!
//! Each case is checked twice: by the pattern alone, and by a
//! [`PatternSet`] holding the patterns of every case at once, so the
//! compiled index must find the right pattern among all the others.

use std::path::PathBuf;

use serde_json::Value;
use weft_manifest::pattern::{Pattern, PatternSet};

struct Case {
    name: String,
    pattern: Value,
    expect: Result<(Value, bool), String>,
}

fn cases() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/patterns");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/patterns exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let list: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (n, case) in list.into_iter().enumerate() {
            let expect = match &case["error"] {
                Value::String(want) => Err(want.clone()),
                _ => Ok((
                    case["event"].clone(),
                    case["match"]
                        .as_bool()
                        .unwrap_or_else(|| panic!("{stem}#{n} has neither `match` nor `error`")),
                )),
            };
            out.push(Case {
                name: format!("{stem}#{n}"),
                pattern: case["pattern"].clone(),
                expect,
            });
        }
    }
    out
}

#[test]
fn patterns_match_as_eventbridge_documents() {
    let cases = cases();
    assert!(cases.len() > 120, "only {} cases found", cases.len());
    for operator in [
        "cidr",
        "numeric",
        "anything-but",
        "wildcard",
        "exists",
        "$or",
        "equals-ignore-case",
    ] {
        assert!(
            cases.iter().any(|c| c.pattern.to_string().contains(operator)),
            "no case covers `{operator}`"
        );
    }
    let mut failures = Vec::new();
    let mut valid = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let text = case.pattern.to_string();
        match (&case.expect, Pattern::parse(&text)) {
            (Err(want), Ok(_)) => failures.push(format!(
                "{} {text}: accepted, expected error containing `{want}`",
                case.name
            )),
            (Err(want), Err(got)) if !got.contains(want.as_str()) => {
                failures.push(format!("{} {text}: error `{got}` lacks `{want}`", case.name))
            }
            (Err(_), Err(_)) => {}
            (Ok(_), Err(e)) => failures.push(format!("{} {text}: refused: {e}", case.name)),
            (Ok((event, want)), Ok(p)) => {
                if p.matches(event) != *want {
                    failures.push(format!("{} {text} on {event}: expected match = {want}", case.name));
                }
                valid.push((p, i));
            }
        }
    }
    let set = PatternSet::new(valid.iter().cloned());
    for (_, i) in &valid {
        let case = &cases[*i];
        let Ok((event, want)) = &case.expect else { continue };
        let found = set.matching(event).contains(&i);
        if found != *want {
            failures.push(format!(
                "{} {} on {event}: the compiled set says match = {found}",
                case.name, case.pattern
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The compiled set agrees with each pattern alone on every event of
/// every case, not only the event written for that pattern.
#[test]
fn the_compiled_set_agrees_with_each_pattern_on_every_event() {
    let cases = cases();
    let patterns: Vec<(Pattern, usize)> = cases
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Pattern::from_value(&c.pattern).ok().map(|p| (p, i)))
        .collect();
    let set = PatternSet::new(patterns.iter().cloned());
    assert_eq!(set.len(), patterns.len());
    let mut checked = 0;
    for case in &cases {
        let Ok((event, _)) = &case.expect else { continue };
        let mut want: Vec<&usize> = patterns
            .iter()
            .filter(|(p, _)| p.matches(event))
            .map(|(_, i)| i)
            .collect();
        want.sort();
        let got = set.matching(event);
        assert_eq!(got, want, "on the event of {}: {event}", case.name);
        checked += 1;
    }
    assert!(checked > 100);
}
