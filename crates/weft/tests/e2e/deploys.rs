use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{App, Server, deploy, get};

fn manifest(version: &str) -> String {
    format!(
        r#"
[app]
name = "deploys"

[function.probe]
source = "PROBE"
env = {{ VERSION = "{version}" }}

[function.steady]
source = "PROBE"

[[route]]
path = "/{{*rest}}"
function = "probe"
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redeploy_under_load_fails_no_request() {
    let app = App::new(&manifest("a"));
    let server = Server::start(&app);
    let stop = Arc::new(AtomicBool::new(false));
    let client = crate::support::client();
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (stop, client, url) = (stop.clone(), client.clone(), format!("{}/sleep/20", server.public));
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = crate::support::send(&client, "GET", &url, "", &[]).await;
                seen.push((r.status, r.body));
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    app.write(&manifest("b"));
    // The requests keep running on the other worker threads meanwhile.
    let out = tokio::task::block_in_place(|| deploy(&app, &server));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "deploy failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("function probe v2: updated"), "{stdout}");
    assert!(stdout.contains("function steady v1: unchanged"), "{stdout}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);

    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let failed: Vec<_> = all.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        all.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(
        all.iter().any(|(_, b)| b == "a") && all.iter().any(|(_, b)| b == "b"),
        "both versions served"
    );
    assert!(all.iter().all(|(_, b)| b == "a" || b == "b"));
    let r = get(&format!("{}/sleep/0", server.public)).await;
    assert_eq!(r.body, "b");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_component_is_rejected_and_the_old_version_keeps_serving() {
    let app = App::new(&manifest("a"));
    let server = Server::start(&app);
    std::fs::write(app.dir.join("broken.wasm"), b"\0asm this is not a component").unwrap();
    app.write(&manifest("a").replacen("source = \"PROBE\"", "source = \"broken.wasm\"", 1));
    let out = deploy(&app, &server);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("the deploy was rejected and nothing changed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("function `probe`: not a valid WebAssembly component"),
        "{stderr}"
    );

    let r = get(&format!("{}/sleep/0", server.public)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "a"));
    let app_state = get(&format!("{}/v1/app", server.admin)).await.json();
    assert_eq!(app_state["functions"][0]["version"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_checks_every_deploy_itself() {
    let app = App::new(&manifest("a"));
    let server = Server::start(&app);
    let client = crate::support::client();
    let url = format!("{}/v1/deployments", server.admin);
    let bad = serde_json::json!({
        "manifest": "[app]\nname = \"x\"\n[function.f]\nsource = \"f.wasm\"\nmemory = \"lots\"\n",
        "artifacts": { "f": "0".repeat(64) }
    });
    let r = crate::support::send(&client, "POST", &url, &bad.to_string(), &[]).await;
    assert_eq!(r.status, 400);
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("--> weft.toml:5:10"), "{error}");
    assert!(error.contains("`memory` in [function.f] is not a size"), "{error}");

    let r = crate::support::send(&client, "POST", &url, "{not json", &[]).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("the request body is not the expected JSON")
    );

    let good_manifest = "[app]\nname = \"x\"\n[function.f]\nsource = \"f.wasm\"\n";
    let missing = serde_json::json!({ "manifest": good_manifest, "artifacts": { "f": "0".repeat(64) } });
    let r = crate::support::send(&client, "POST", &url, &missing.to_string(), &[]).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("is not stored: upload it with PUT /v1/artifacts/")
    );

    let r = crate::support::send(
        &client,
        "PUT",
        &format!("{}/v1/artifacts/{}", server.admin, "0".repeat(64)),
        "bytes",
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("the uploaded bytes hash to")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_reads_compiled_code_from_the_cache() {
    let app = App::new(&manifest("a"));
    let data = app.dir.join("data");
    let first = Server::start_with_data(&app, &data);
    assert!(
        first.stdout.iter().any(|l| l.contains("function probe v1 (compiled,")),
        "{:?}",
        first.stdout
    );
    // The second function has the same component: compiled once, shared.
    assert!(
        first.stdout.iter().any(|l| l.contains("function steady v1 (memory,")),
        "{:?}",
        first.stdout
    );
    first.stop();
    let second = Server::start_with_data(&app, &data);
    assert!(
        second.stdout.iter().any(|l| l.contains("function probe v1 (cache,")),
        "{:?}",
        second.stdout
    );
    let r = get(&format!("{}/sleep/0", second.public)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "a"));
    let rec = crate::support::record(&second, r.headers["weft-request-id"].to_str().unwrap()).await;
    assert_eq!(rec["cold"], true, "the first request after a deploy is cold");
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_the_server_lets_requests_in_flight_finish() {
    let app = App::new(&manifest("a"));
    let server = Server::start(&app);
    let url = format!("{}/sleep/1500", server.public);
    let in_flight = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stopped = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        server.stop();
        started.elapsed()
    });
    let r = in_flight.await.unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "a"),
        "the request in flight was answered"
    );
    let took = stopped.await.unwrap();
    assert!(
        took < Duration::from_secs(10),
        "the server stopped once the request finished ({took:?})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_shows_every_change_and_a_deploy_refuses_to_lose_messages() {
    let with_queue = r#"
[app]
name = "plans"

[function.probe]
source = "PROBE"

[queue.jobs]

[[route]]
path = "/{*rest}"
function = "probe"
"#;
    let app = App::new(with_queue);
    let server = Server::start(&app);
    let sent = server.cli(&["queue", "send", "jobs", "--data", "waiting"]);
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));

    // Drop the queue, add a topic and a route.
    app.write(
        r#"
[app]
name = "plans"

[function.probe]
source = "PROBE"

[topic.orders]

[[route]]
path = "/{*rest}"
function = "probe"

[[route]]
method = "GET"
path = "/health"
function = "probe"
"#,
    );
    let plan = server.cli(&["plan", app.dir.to_str().unwrap(), "--no-build"]);
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.status.success(),
        "{shown} {}",
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(shown.contains("nothing was changed"), "{shown}");
    assert!(shown.contains("+ topic orders"), "{shown}");
    assert!(shown.contains("+ route GET /health"), "{shown}");
    assert!(
        shown.contains("- queue jobs  (loses data: 1 message would be left undelivered)"),
        "{shown}"
    );
    // The plan changed nothing: the queue still takes messages.
    let stats = server.cli(&["queue", "stats", "jobs"]);
    assert!(stats.status.success(), "{}", String::from_utf8_lossy(&stats.stderr));

    let refused = deploy(&app, &server);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a lossy deploy went ahead");
    assert!(
        why.contains("queue `jobs`: 1 message would be left undelivered"),
        "{why}"
    );
    assert!(why.contains("--allow-loss"), "{why}");
    let still = server.cli(&["queue", "stats", "jobs"]);
    assert!(still.status.success(), "the refused deploy removed the queue");

    let forced = weft_deploy(&app, &server, &["--allow-loss"]);
    let shown = String::from_utf8_lossy(&forced.stdout);
    assert!(
        forced.status.success(),
        "{shown} {}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(shown.contains("- queue jobs"), "{shown}");
    assert!(shown.contains("+ topic orders"), "{shown}");
    let gone = server.cli(&["queue", "stats", "jobs"]);
    assert!(!gone.status.success(), "the queue is still there after --allow-loss");

    // The same manifest again changes nothing.
    let again = server.cli(&["plan", app.dir.to_str().unwrap(), "--no-build"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("no changes"));
}

fn weft_deploy(app: &App, server: &Server, extra: &[&str]) -> std::process::Output {
    crate::support::weft()
        .arg("deploy")
        .arg(&app.dir)
        .args(["--no-build", "--server", &server.admin])
        .args(extra)
        .output()
        .unwrap()
}
