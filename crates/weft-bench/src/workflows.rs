//! Workflows: express transitions per second on one core, a chain of 100
//! Pass states run by the interpreter in process (no functions, no
//! storage), many executions one after another on a single-threaded
//! runtime; the same chain again in JSONata, each state evaluating an
//! expression and assigning a variable. The bar (1,000,000/s) and Step
//! Functions' default quota (5,000 transitions/s per account) are the
//! anchors; there is no other ASL interpreter to run beside it here.

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

/// The chain in JSONata: each state counts in a variable and outputs an
/// expression of its input.
fn jsonata_chain() -> Value {
    let mut definition = chain();
    for (i, state) in definition["States"]
        .as_object_mut()
        .into_iter()
        .flatten()
        .map(|(_, s)| s)
        .enumerate()
    {
        state["Assign"] = if i == 0 {
            json!({ "n": 0 })
        } else {
            json!({ "n": "{% $n + 1 %}" })
        };
        state["Output"] = json!({ "order": "{% $states.input.order %}", "items": "{% $states.input.items %}" });
    }
    definition["QueryLanguage"] = json!("JSONata");
    definition
}

pub fn report(seconds: Duration) -> anyhow::Result<String> {
    let jsonpath = transitions(chain(), seconds)?;
    let jsonata = transitions(jsonata_chain(), seconds)?;
    let row = |name: &str, (executions, took, per_second): (u64, Duration, f64)| {
        format!(
            "| {name} | {executions} in {:.1}s | {per_second:.0} | {:.2} | {:.0} |\n",
            took.as_secs_f64(),
            per_second / 1e6,
            per_second / 5000.0
        )
    };
    Ok(format!(
        "A chain of {CHAIN} Pass states, executions one after another on one thread, express (no history kept); in JSONata each state also evaluates two expressions and assigns a variable.\n\n| | executions | transitions/s | ÷ bar (1,000,000/s) | ÷ Step Functions' default quota (5,000/s) |\n| --- | ---: | ---: | ---: | ---: |\n{}{}",
        row("express, JSONPath, in process", jsonpath),
        row("express, JSONata, in process", jsonata),
    ))
}

/// Runs `definition` as express executions for `seconds` on one thread:
/// the executions, the time, and the transitions per second.
fn transitions(definition: Value, seconds: Duration) -> anyhow::Result<(u64, Duration, f64)> {
    let machine = weft_workflows::validate::load(&definition)
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
                    started: None,
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
    Ok((executions, took, executions as f64 * CHAIN as f64 / took.as_secs_f64()))
}

/// Tasks in each standard execution.
const TASKS: usize = 10;
/// Standard executions at once.
const AT_ONCE: usize = 2000;

/// A chain of `TASKS` Task states.
fn tasks() -> Value {
    let mut states = serde_json::Map::new();
    for i in 0..TASKS {
        let mut state = json!({ "Type": "Task", "Resource": "function:step", "ResultPath": format!("$.r{i}") });
        if i + 1 < TASKS {
            state["Next"] = json!(format!("T{}", i + 1));
        } else {
            state["End"] = json!(true);
        }
        states.insert(format!("T{i}"), state);
    }
    json!({ "StartAt": "T0", "States": states })
}

/// Tasks answered at once, in process: what is measured is the journal.
struct Answering;

#[async_trait::async_trait]
impl weft_workflows::execution::Effects for Answering {
    async fn task(
        &self,
        _step: &weft_workflows::execution::Step,
        _resource: &str,
        _input: Value,
        _timeout: weft_workflows::execution::TaskLimits,
    ) -> Result<Value, weft_workflows::execution::Failure> {
        Ok(json!({ "ok": true }))
    }

    async fn wait_until(&self, _step: &weft_workflows::execution::Step, until: jiff::Timestamp) {
        let left = until.as_millisecond() - jiff::Timestamp::now().as_millisecond();
        tokio::time::sleep(Duration::from_millis(left.max(0) as u64)).await;
    }

    async fn sleep(&self, _step: &weft_workflows::execution::Step, delay: Duration) {
        tokio::time::sleep(delay).await;
    }

    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }

    fn random(&self, _step: &weft_workflows::execution::Step) -> f64 {
        0.5
    }
}

/// Standard executions journalled on the embedded provider, many at once,
/// each a chain of Tasks answered in process; beside the disk's fsync rate.
pub async fn standard(scratch: &std::path::Path, seconds: Duration) -> anyhow::Result<String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use weft_node::capabilities::workflows::executions::Chunks;
    use weft_store::durable::{Embedded, Storage};
    use weft_workflows::durable::Durable;

    let dir = scratch.join("workflows");
    std::fs::create_dir_all(&dir)?;
    let (fsyncs, _) = crate::durable::fsync_rate(&dir, Duration::from_secs(2))?;
    let storage: Arc<dyn Storage> = Arc::new(Embedded::open(&dir.join("journal.db"))?);
    let machine = Arc::new(
        weft_workflows::validate::load(&tasks())
            .map_err(|m| anyhow::anyhow!("the benchmark's chain does not load: {m:?}"))?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..AT_ONCE {
        let (storage, machine, stop, done, next) = (
            storage.clone(),
            machine.clone(),
            stop.clone(),
            done.clone(),
            next.clone(),
        );
        workers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let id = format!("bench:e{n}");
                let (journal, past) = Chunks::open(&storage, &id).await?;
                let durable = Durable::new(&Answering, Arc::new(journal), past);
                let identity = Identity {
                    id: format!("weft:execution:{id}"),
                    name: format!("e{n}"),
                    machine: "bench".into(),
                    started: None,
                };
                let finished = run_with(&machine, identity, json!({ "order": n }), &durable, true).await;
                durable.finish().await.map_err(|e| anyhow::anyhow!(e))?;
                anyhow::ensure!(
                    matches!(finished.outcome, Outcome::Succeeded(_)),
                    "the chain failed: {:?}",
                    finished.outcome
                );
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    tokio::time::sleep(seconds).await;
    stop.store(true, Ordering::Relaxed);
    let took = started.elapsed();
    while let Some(joined) = workers.join_next().await {
        joined??;
    }
    let executions = done.load(Ordering::Relaxed);
    let transitions = executions as f64 * TASKS as f64 / took.as_secs_f64();
    let bar = (10.0 * fsyncs).max(100_000.0);
    Ok(format!(
        "{AT_ONCE} standard executions at once, each a chain of {TASKS} Task states answered in process, journalled on the embedded provider (a journal write before each task, holding its events and the previous task's result, and one at the end; group commit; an execution's record and running-index writes are not included); {executions} executions in {:.1}s. The disk here does {fsyncs:.0} fsyncs/s.\n\n| | transitions/s | ÷ fsync rate | ÷ bar ({bar:.0}/s) | ÷ Step Functions' default quota (5,000/s) |\n| --- | ---: | ---: | ---: | ---: |\n| standard, journalled | {transitions:.0} | {:.1} | {:.2} | {:.1} |\n",
        took.as_secs_f64(),
        transitions / fsyncs,
        transitions / bar,
        transitions / 5000.0
    ))
}

/// How often the latency benchmark asks whether an execution has ended.
const POLL: Duration = Duration::from_micros(250);

/// One request on an open HTTP/1 connection: status and body.
async fn request(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, bytes::Bytes)> {
    use http_body_util::BodyExt;
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "bench")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

async fn connect(
    addr: std::net::SocketAddr,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A standard workflow of three Tasks over three hello functions, start to
/// end, against one blocking function calling the same three in turn, in
/// the same run; one at a time.
pub async fn latency(
    weft: &std::path::Path,
    hello: &std::path::Path,
    probe: &std::path::Path,
    scratch: &std::path::Path,
    seconds: Duration,
) -> anyhow::Result<String> {
    let app = scratch.join("three-tasks");
    std::fs::create_dir_all(&app)?;
    let (hello, probe) = (hello.canonicalize()?, probe.canonicalize()?);
    let mut manifest = String::from("[app]\nname = \"three\"\n\n");
    for f in ["one", "two", "three"] {
        manifest.push_str(&format!("[function.{f}]\nsource = \"{}\"\n\n", hello.display()));
    }
    manifest.push_str(&format!(
        "[function.chain]\nsource = \"{}\"\n\n[[route]]\npath = \"/{{*rest}}\"\nfunction = \"chain\"\n\n[workflow.three]\ndefinition = \"three.asl.json\"\n",
        probe.display()
    ));
    std::fs::write(app.join("weft.toml"), manifest)?;
    let definition = json!({
        "StartAt": "One",
        "States": {
            "One": { "Type": "Task", "Resource": "function:one", "ResultPath": "$.one", "Next": "Two" },
            "Two": { "Type": "Task", "Resource": "function:two", "ResultPath": "$.two", "Next": "Three" },
            "Three": { "Type": "Task", "Resource": "function:three", "ResultPath": "$.three", "End": true }
        }
    });
    std::fs::write(app.join("three.asl.json"), definition.to_string())?;
    let data = app.join("data");
    let (fsyncs, fsync_us) = crate::durable::fsync_rate(&app, Duration::from_secs(1))?;
    let server = crate::procs::Server::weft(weft, &app, &data)?;
    let admin = server
        .admin
        .ok_or_else(|| anyhow::anyhow!("weft printed no admin address"))?;
    let mut to_app = connect(server.addr).await?;
    let mut to_admin = connect(admin).await?;
    let mut poller = connect(admin).await?;

    let mut chained = Vec::new();
    let mut workflow = Vec::new();
    let until = Instant::now() + seconds;
    let mut n = 0u64;
    // Warm both paths, then take turns, so both see the same machine.
    while Instant::now() < until || chained.len() < 20 {
        let started = Instant::now();
        let (status, body) = request(&mut to_app, "POST", "/calls/one/two/three", "{}").await?;
        anyhow::ensure!(status == 200, "the blocking chain answered {status}: {body:?}");
        chained.push(started.elapsed().as_secs_f64() * 1e6);

        n += 1;
        let started = Instant::now();
        let body = json!({ "name": format!("run-{n}"), "input": { "n": n } }).to_string();
        let (status, answer) = request(&mut to_admin, "POST", "/v1/workflows/three/executions", &body).await?;
        anyhow::ensure!(status == 201, "starting an execution answered {status}: {answer:?}");
        let path = format!("/v1/executions/three:run-{n}");
        loop {
            let (_, view) = request(&mut poller, "GET", &path, "").await?;
            let view: Value = serde_json::from_slice(&view)?;
            match view["status"].as_str() {
                Some("RUNNING") => tokio::time::sleep(POLL).await,
                Some("SUCCEEDED") => break,
                other => anyhow::bail!("the execution ended {other:?}: {view}"),
            }
        }
        workflow.push(started.elapsed().as_secs_f64() * 1e6);
    }
    // The first few are warm-up.
    let (chained, workflow) = (&mut chained[5..], &mut workflow[5..]);
    let (c50, w50) = (
        crate::durable::percentile(chained, 0.5),
        crate::durable::percentile(workflow, 0.5),
    );
    let (c99, w99) = (
        crate::durable::percentile(chained, 0.99),
        crate::durable::percentile(workflow, 0.99),
    );
    // The writes a three-task execution waits for: the running index and
    // the record at its start, one before each task, the last result and
    // events, the record and the index at its end.
    let writes = 2 + 3 + 1 + 2;
    let added = w50 - c50;
    let allowed = 1000.0 + writes as f64 * fsync_us;
    drop(server);
    Ok(format!(
        "One at a time, {} of each, taking turns. The workflow is timed from the start request to the first poll (every {} µs) that sees it SUCCEEDED. The disk here does {fsyncs:.0} fsyncs/s ({fsync_us:.0} µs each); a three-task execution waits on {writes} durable writes.\n\n| | p50 µs | p99 µs |\n| --- | ---: | ---: |\n| one function calling three in turn | {c50:.0} | {c99:.0} |\n| standard workflow, three tasks | {w50:.0} | {w99:.0} |\n\nThe workflow adds **{added:.0} µs** at p50; the bar is 1 ms plus its {writes} fsyncs, {allowed:.0} µs: ratio {:.2}.\n",
        chained.len(),
        POLL.as_micros(),
        added / allowed
    ))
}
