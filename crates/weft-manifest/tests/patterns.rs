//! Every case in `patterns.json`: a pattern, and either an event with the
//! expected outcome, or the error the pattern must be refused with. The
//! cases follow EventBridge's documented matching rules.

use serde_json::Value;
use weft_manifest::pattern::Pattern;

#[test]
fn patterns_match_as_eventbridge_documents() {
    let cases: Vec<Value> = serde_json::from_str(include_str!("patterns.json")).expect("patterns.json is JSON");
    assert!(cases.len() > 40);
    let mut failures = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let text = case["pattern"].to_string();
        let parsed = Pattern::parse(&text);
        match (&case["error"], parsed) {
            (Value::String(want), Ok(_)) => {
                failures.push(format!("#{n} {text}: accepted, expected error containing `{want}`"))
            }
            (Value::String(want), Err(got)) if !got.contains(want.as_str()) => {
                failures.push(format!("#{n} {text}: error `{got}` lacks `{want}`"))
            }
            (Value::String(_), Err(_)) => {}
            (_, Err(e)) => failures.push(format!("#{n} {text}: refused: {e}")),
            (_, Ok(p)) => {
                let want = case["match"].as_bool().expect("a case has `match` or `error`");
                if p.matches(&case["event"]) != want {
                    failures.push(format!("#{n} {text} on {}: expected match = {want}", case["event"]));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
