//! `weft workflows`: state machines in Amazon States Language.
//!
//! `run` runs a definition in this process without deploying it, as Step
//! Functions Local and TestState do: its functions answered by mocks, its
//! waits and retries timed for real. It prints one JSON object, the
//! outcome, and exits 0 whether the execution succeeded or failed; it exits
//! 2 when the definition, the input or a mock cannot be used, saying why on
//! stderr.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;
use weft_workflows::execution::{self, Identity};
use weft_workflows::local::{Local, Mock};

/// A usage mistake: said on stderr, exit 2.
fn refuse(why: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {why}");
    ExitCode::from(2)
}

/// JSON given as `@FILE`, as a path to a file, or inline.
fn json_argument(what: &str, text: &str) -> Result<Value, String> {
    let from_file = |path: &Path| -> Result<Value, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{what} {} is not JSON: {e}", path.display()))
    };
    if let Some(path) = text.strip_prefix('@') {
        return from_file(Path::new(path));
    }
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(_) if Path::new(text).is_file() => from_file(Path::new(text)),
        Err(e) => Err(format!(
            "{what} {text:?} is neither JSON nor a file: {e}; pass JSON, or @FILE for a file"
        )),
    }
}

/// `weft workflows run`.
pub async fn run(definition: &Path, input: Option<&str>, mocks: &[String], name: Option<&str>) -> ExitCode {
    let text = match std::fs::read(definition) {
        Ok(t) => t,
        Err(e) => return refuse(format!("cannot read the definition {}: {e}", definition.display())),
    };
    let yaml = weft_workflows::definition::is_yaml(&definition.display().to_string());
    let document = match weft_workflows::definition::document(&text, yaml) {
        Ok(v) => v,
        Err(why) => return refuse(format!("the definition {} is {why}", definition.display())),
    };
    let machine = match weft_workflows::validate::load(&document) {
        Ok(m) => m,
        Err(mistakes) => {
            for m in &mistakes {
                eprintln!("error: {}: {m}", definition.display());
            }
            eprintln!(
                "{} mistake{} in the definition; nothing ran",
                mistakes.len(),
                if mistakes.len() == 1 { "" } else { "s" }
            );
            return ExitCode::from(2);
        }
    };
    let input = match input.map(|i| json_argument("the input", i)).transpose() {
        Ok(v) => v.unwrap_or_else(|| Value::Object(Default::default())),
        Err(e) => return refuse(e),
    };
    let mut mocked = HashMap::new();
    for m in mocks {
        let Some((function, answer)) = m.split_once('=').filter(|(f, _)| !f.is_empty()) else {
            return refuse(format!("--mock {m:?}: write FUNCTION=@FILE or FUNCTION=JSON"));
        };
        let answer = match json_argument(&format!("the mock of {function}"), answer) {
            Ok(v) => v,
            Err(e) => return refuse(e),
        };
        match Mock::from_json(&answer) {
            Ok(mock) => mocked.insert(function.to_string(), mock),
            Err(e) => return refuse(format!("--mock {function}: {e}")),
        };
    }
    let machine_name = definition
        .file_stem()
        .and_then(|s| s.to_str())
        .map(|s| s.trim_end_matches(".asl").to_string())
        .unwrap_or_else(|| "local".into());
    let execution = name.map_or_else(
        || format!("run-{}", jiff::Timestamp::now().as_millisecond()),
        str::to_string,
    );
    let identity = Identity {
        id: format!("weft:execution:{machine_name}:{execution}"),
        name: execution,
        machine: machine_name,
        started: None,
    };
    let effects = Local::new(mocked);
    let finished = execution::run(&machine, identity, input, &effects).await;
    println!("{}", finished.outcome.to_json());
    ExitCode::SUCCESS
}

/// `weft workflows start|list|describe|history|stop`, through the admin API.
pub async fn remote(command: crate::WorkflowsCommand) -> anyhow::Result<ExitCode> {
    use crate::WorkflowsCommand as W;
    use crate::client::{Client, encode, error_text};
    let answer = |(status, answer): (u16, Value)| -> anyhow::Result<Value> {
        if status >= 300 {
            anyhow::bail!("{}", error_text(&answer));
        }
        Ok(answer)
    };
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    match command {
        W::Run { .. } => anyhow::bail!("`weft workflows run` runs in this process and needs no server"),
        W::Start {
            workflow,
            input,
            name,
            server,
        } => {
            let input = match input.map(|i| json_argument("the input", &i)).transpose() {
                Ok(v) => v.unwrap_or_else(|| Value::Object(Default::default())),
                Err(e) => return Ok(refuse(e)),
            };
            let client = Client::new(&server)?;
            let body = serde_json::json!({ "input": input, "name": name });
            let view = answer(
                client
                    .post_json(&format!("/v1/workflows/{}/executions", encode(&workflow)), &body)
                    .await?,
            )?;
            match view["status"].as_str() {
                Some("RUNNING") => println!("{}", view["id"].as_str().unwrap_or_default()),
                _ => println!("{}", pretty(&view)),
            }
            Ok(if view["status"] == "FAILED" {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        W::List {
            workflow,
            status,
            server,
        } => {
            let client = Client::new(&server)?;
            let mut path = format!("/v1/workflows/{}/executions", encode(&workflow));
            if let Some(status) = status {
                path.push_str(&format!("?status={}", encode(&status)));
            }
            let list = answer(client.get(&path).await?)?;
            for e in list["executions"].as_array().into_iter().flatten() {
                println!(
                    "{:<10} {:<30} {}",
                    e["status"].as_str().unwrap_or_default(),
                    e["startDate"].as_str().unwrap_or_default(),
                    e["id"].as_str().unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        W::Describe { execution, server } => {
            let client = Client::new(&server)?;
            let view = answer(client.get(&format!("/v1/executions/{}", encode(&execution))).await?)?;
            println!("{}", pretty(&view));
            Ok(ExitCode::SUCCESS)
        }
        W::History {
            execution,
            json,
            server,
        } => {
            let client = Client::new(&server)?;
            // Page by page, each up to 1,000 events.
            let mut events = Vec::new();
            let mut after = 0;
            loop {
                let page = answer(
                    client
                        .get(&format!("/v1/executions/{}/history?after={after}", encode(&execution)))
                        .await?,
                )?;
                events.extend(page["events"].as_array().cloned().unwrap_or_default());
                match page["next"].as_u64() {
                    Some(next) if next > after => after = next,
                    _ => break,
                }
            }
            if json {
                println!("{}", pretty(&Value::Array(events)));
                return Ok(ExitCode::SUCCESS);
            }
            for e in &events {
                let name = e
                    .as_object()
                    .and_then(|m| m.values().find_map(|v| v.get("name").and_then(Value::as_str)))
                    .unwrap_or_default();
                println!(
                    "{:>5}  {:<30} {:<26} {name}",
                    e["id"],
                    e["timestamp"].as_str().unwrap_or_default(),
                    e["type"].as_str().unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        W::TaskSuccess { token, output, server } => {
            let output = match output.map(|o| json_argument("the output", &o)).transpose() {
                Ok(v) => v.unwrap_or(Value::Null),
                Err(e) => return Ok(refuse(e)),
            };
            let body = serde_json::json!({ "taskToken": token, "output": output });
            answer(Client::new(&server)?.post_json("/v1/tasks/success", &body).await?)?;
            Ok(ExitCode::SUCCESS)
        }
        W::TaskFailure {
            token,
            error,
            cause,
            server,
        } => {
            let body = serde_json::json!({ "taskToken": token, "error": error, "cause": cause });
            answer(Client::new(&server)?.post_json("/v1/tasks/failure", &body).await?)?;
            Ok(ExitCode::SUCCESS)
        }
        W::Redrive { execution, server } => {
            let client = Client::new(&server)?;
            let path = format!("/v1/executions/{}/redrive", encode(&execution));
            let view = answer(client.post_json(&path, &serde_json::json!({})).await?)?;
            println!(
                "{} {}",
                view["id"].as_str().unwrap_or_default(),
                view["status"].as_str().unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        W::TaskHeartbeat { token, server } => {
            let body = serde_json::json!({ "taskToken": token });
            answer(Client::new(&server)?.post_json("/v1/tasks/heartbeat", &body).await?)?;
            Ok(ExitCode::SUCCESS)
        }
        W::Stop {
            execution,
            error,
            cause,
            server,
        } => {
            let client = Client::new(&server)?;
            let body = serde_json::json!({ "error": error, "cause": cause });
            let view = answer(
                client
                    .post_json(&format!("/v1/executions/{}/stop", encode(&execution)), &body)
                    .await?,
            )?;
            println!(
                "{} {}",
                view["id"].as_str().unwrap_or_default(),
                view["status"].as_str().unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
