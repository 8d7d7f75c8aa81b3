//! Workflows: express transitions per second on one core, a chain of 100
//! Pass states run by the interpreter in process (no functions, no
//! storage), many executions one after another on a single-threaded
//! runtime. The bar (1,000,000/s) and Step Functions' default quota
//! (5,000 transitions/s per account) are the anchors; there is no other
//! ASL interpreter to run beside it here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_workflows::execution::{Identity, Outcome, run_with};
use weft_workflows::local::Local;

/// States in the chain.
const CHAIN: usize = 100;

fn chain() -> Value {
    let mut states = serde_json::Map::new();
    for i in 0..CHAIN {
        let mut state = json!({ "Type": "Pass" });
        if i + 1 < CHAIN {
            state["Next"] = json!(format!("S{}", i + 1));
        } else {
            state["End"] = json!(true);
        }
        states.insert(format!("S{i}"), state);
    }
    json!({ "StartAt": "S0", "States": states })
}

pub fn report(seconds: Duration) -> anyhow::Result<String> {
    let machine = weft_workflows::validate::load(&chain())
        .map_err(|m| anyhow::anyhow!("the benchmark's chain does not load: {m:?}"))?;
    let input = json!({ "order": 7, "items": [1, 2, 3] });
    // A thread of its own with a single-threaded runtime: one core.
    let one_core = std::thread::spawn(move || -> anyhow::Result<(u64, Duration)> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let effects = Local::new(HashMap::new());
            let started = Instant::now();
            let mut executions = 0u64;
            while started.elapsed() < seconds {
                let identity = Identity {
                    id: format!("weft:execution:bench:{executions}"),
                    name: executions.to_string(),
                    machine: "bench".into(),
                };
                // Express executions keep no history, as on Step Functions.
                let finished = run_with(&machine, identity, input.clone(), &effects, false).await;
                anyhow::ensure!(
                    matches!(finished.outcome, Outcome::Succeeded(_)),
                    "the chain failed: {:?}",
                    finished.outcome
                );
                executions += 1;
            }
            Ok((executions, started.elapsed()))
        })
    });
    let (executions, took) = one_core
        .join()
        .map_err(|_| anyhow::anyhow!("the workflow benchmark's thread panicked"))??;
    let transitions = executions as f64 * CHAIN as f64 / took.as_secs_f64();
    Ok(format!(
        "A chain of {CHAIN} Pass states, executions one after another on one thread, express (no history kept); {executions} executions in {:.1}s.\n\n| | transitions/s | ÷ bar (1,000,000/s) | ÷ Step Functions' default quota (5,000/s) |\n| --- | ---: | ---: | ---: |\n| express, in process | {transitions:.0} | {:.2} | {:.0} |\n",
        took.as_secs_f64(),
        transitions / 1e6,
        transitions / 5000.0
    ))
}
