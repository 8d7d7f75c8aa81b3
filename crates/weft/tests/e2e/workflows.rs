//! `weft workflows run`: a Step Functions definition (examples/workflows)
//! run in process with mocked functions, on the real binary: the outcome
//! is one JSON object on stdout, exit 0 whether the execution succeeded or
//! failed; an invalid definition or argument exits 2 and says why.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::support::{repo_root, text, weft};

fn example(file: &str) -> PathBuf {
    repo_root().join("examples/workflows").join(file)
}

/// Runs the order workflow with `charge` mocked by `mocks/CHARGE.json`.
fn order(charge: &str) -> (Value, std::process::Output) {
    let mock = |f: &str, file: &str| format!("{f}=@{}", example(&format!("mocks/{file}.json")).display());
    let out = weft()
        .args(["workflows", "run", "--definition"])
        .arg(example("order.asl.json"))
        .arg("--input")
        .arg(format!("@{}", example("order-input.json").display()))
        .args(["--mock", &mock("reserve", "reserve")])
        .args(["--mock", &mock("charge", charge)])
        .args(["--mock", &mock("ship", "ship")])
        .args(["--mock", &mock("release", "release")])
        .output()
        .expect("weft runs");
    let outcome = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    (outcome, out)
}

#[test]
fn a_definition_runs_with_mocked_functions() {
    let (outcome, out) = order("charge");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(outcome, json!({"status": "SUCCEEDED", "output": {"tracking": "t-1"}}));

    // A busy card is retried, then charged.
    let (outcome, _) = order("charge-busy");
    assert_eq!(outcome["status"], "SUCCEEDED", "{outcome}");

    // A declined card is caught: the stock is released, and the order fails
    // with the cause the card gave.
    let (outcome, out) = order("charge-declined");
    assert!(
        out.status.success(),
        "a failed execution still exits 0: {}",
        text(&out.stderr)
    );
    assert_eq!(
        outcome,
        json!({"status": "FAILED", "error": "Order.Failed", "cause": "insufficient funds"})
    );
}

#[test]
fn an_invalid_definition_or_argument_exits_2_and_says_why() {
    let dir = tempfile_dir();
    let definition = std::fs::read_to_string(example("order.asl.json")).unwrap();
    let bad = dir.join("bad.asl.json");
    std::fs::write(&bad, definition.replace("\"Next\": \"Ship\"", "\"Next\": \"Shp\"")).unwrap();
    let out = weft()
        .args(["workflows", "run", "--definition"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing ran: {}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(r#"States.Charge.Next: no state named "Shp"; did you mean "Ship"?"#),
        "{stderr}"
    );

    let not_json = dir.join("not.json");
    std::fs::write(&not_json, "StartAt: A").unwrap();
    for args in [
        vec!["--definition".to_string(), not_json.display().to_string()],
        vec!["--definition".into(), dir.join("missing.json").display().to_string()],
        vec![
            "--definition".into(),
            example("order.asl.json").display().to_string(),
            "--mock".into(),
            "reserve".into(),
        ],
        vec![
            "--definition".into(),
            example("order.asl.json").display().to_string(),
            "--input".into(),
            "{not json".into(),
        ],
        vec![
            "--definition".into(),
            example("order.asl.json").display().to_string(),
            "--mock".into(),
            r#"charge={"Return": 1, "Throw": {"Error": "E"}}"#.into(),
        ],
    ] {
        let out = weft().args(["workflows", "run"]).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).starts_with("error: "),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-workflows-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
