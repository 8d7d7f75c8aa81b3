//! Several weft nodes on one NATS JetStream (`weft up --nats`): real
//! nats-server processes, real weft processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weft_jetstream::testing::NatsServer;

use crate::support::{App, Server, client, get, probe_lines, send, text, weft};

const APP: &str = r#"
[app]
name = "cluster"

[function.probe]
source = "PROBE"

[[route]]
method = "GET"
path = "/hello/{name}"
function = "probe"

[[route]]
method = "GET"
path = "/log"
function = "probe"

[queue.jobs]
visibility_timeout = "5s"
backoff = "100ms"

[[trigger]]
queue = "jobs"
function = "probe"

[topic.notices]

[[subscription]]
topic = "notices"
function = "probe"
"#;

fn node(app: &App, nats: &NatsServer, n: usize) -> Server {
    Server::start_with(
        app,
        &app.dir.join(format!("data-{n}")),
        &["--nats", &nats.url(), "--nats-prefix", "e2e"],
    )
}

/// The probe's delivery lines on one node: `event ID receives N body B`.
async fn deliveries(server: &Server) -> Vec<String> {
    let mut lines = probe_lines(server).await;
    lines.retain(|l| l.starts_with("event "));
    lines
}

/// Waits until the nodes together have delivered `n` events; returns how
/// many times each body was delivered, and each node's share.
async fn wait_for_deliveries(nodes: &[&Server], n: usize) -> (HashMap<String, usize>, Vec<usize>) {
    let started = Instant::now();
    loop {
        let mut bodies = HashMap::new();
        let mut shares = Vec::new();
        for node in nodes {
            let lines = deliveries(node).await;
            shares.push(lines.len());
            for line in lines {
                let body = line.rsplit(" body ").next().unwrap_or_default().to_string();
                *bodies.entry(body).or_insert(0) += 1;
            }
        }
        if shares.iter().sum::<usize>() >= n {
            return (bodies, shares);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {shares:?} of {n} deliveries: {bodies:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_a_queue_each_message_delivered_once() {
    let nats = NatsServer::start();
    let app = App::new(APP);
    let a = node(&app, &nats, 1);
    let b = node(&app, &nats, 2);
    assert!(
        a.stdout.iter().any(|l| l.contains("storage: NATS JetStream at")),
        "{:?}",
        a.stdout
    );
    const N: usize = 40;
    for i in 0..N {
        // Sent through both nodes' admin APIs in turn.
        let via = if i % 2 == 0 { &a } else { &b };
        let out = via.cli(&["queue", "send", "jobs", "--data", &format!("m{i}")]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let (bodies, shares) = wait_for_deliveries(&[&a, &b], N).await;
    // Settle, then check that nothing came twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (bodies_after, _) = wait_for_deliveries(&[&a, &b], N).await;
    assert_eq!(bodies, bodies_after, "deliveries went on after all were made");
    for i in 0..N {
        assert_eq!(bodies.get(&format!("m{i}")), Some(&1), "m{i}: {bodies:?} ({shares:?})");
    }
    let stats = get(&format!("{}/v1/queues/jobs", b.admin)).await.json()["stats"].clone();
    assert_eq!(
        (stats["visible"].as_u64(), stats["in_flight"].as_u64()),
        (Some(0), Some(0)),
        "{stats}"
    );
}

/// Publishes a CloudEvent (binary mode) to the `notices` topic.
async fn notice(server: &Server, body: &str) -> crate::support::Response {
    let headers = [
        ("ce-specversion", "1.0"),
        ("ce-id", body),
        ("ce-source", "e2e"),
        ("ce-type", "notice"),
        ("content-type", "text/plain"),
    ];
    send(
        &client(),
        "POST",
        &format!("{}/events/notices", server.public),
        body,
        &headers,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn without_nats_sends_answer_503_routes_keep_working_and_weft_reconnects() {
    let mut nats = NatsServer::start();
    let app = App::new(APP);
    let a = node(&app, &nats, 1);
    let hello = format!("{}/hello/ada", a.public);
    assert_eq!(get(&hello).await.status, 200);

    nats.kill();
    // The client notices the dropped connection within a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let down = notice(&a, "x").await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(down.body.contains("NATS"), "{}", down.body);
    let r = get(&hello).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "hello, ada"),
        "a route needs no durable part"
    );

    nats.resume();
    let started = Instant::now();
    loop {
        let r = notice(&a, "back").await;
        if r.status < 300 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "weft did not reconnect: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (bodies, _) = wait_for_deliveries(&[&a], 1).await;
    assert_eq!(bodies.get("back"), Some(&1), "{bodies:?}");
}

#[test]
fn a_bad_nats_server_stops_the_start_with_the_fix() {
    let app = App::new(APP);
    let nowhere = format!("nats://127.0.0.1:{}", weft_jetstream::testing::free_port());
    let plain = NatsServer::start_without_jetstream();
    for (url, expected) in [
        (nowhere.as_str(), "cannot reach NATS"),
        (&plain.url(), "nats-server -js"),
        ("nats://[::1", "is not a NATS URL"),
    ] {
        let out = weft()
            .args([
                "up",
                "--no-build",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--nats",
                url,
            ])
            .arg(&app.dir)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains(expected), "--nats {url}: {err}");
    }
    let out = weft()
        .args(["up", "--no-build", "--nats-token", "x"])
        .arg(&app.dir)
        .env_remove("WEFT_NATS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--nats"), "{}", text(&out.stderr));
}

/// A webhook receiver on loopback: every delivery's `ce-id` and receive count.
struct Hook {
    url: String,
    got: Arc<Mutex<Vec<(String, u32)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hook() -> Hook {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let seen = got.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let header = |name: &str| {
                            request
                                .headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string()
                        };
                        let count = header("ce-weftreceivecount").parse().unwrap_or(0);
                        seen.lock().unwrap().push((header("ce-id"), count));
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::new(),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Hook { url, got, task }
}

/// Publishes event `id` to the `orders` topic through `public`.
async fn order(public: &str, id: &str) -> u16 {
    let (url, id) = (format!("{public}/events/orders"), id.to_string());
    // A killed node refuses connections, on which `send` panics: see that
    // it listens first, and ask in a task that counts a panic as no answer.
    let address = public.trim_start_matches("http://");
    if tokio::net::TcpStream::connect(address).await.is_err() {
        return 0;
    }
    let request = tokio::spawn(async move {
        let headers = [
            ("ce-specversion", "1.0"),
            ("ce-id", id.as_str()),
            ("ce-source", "e2e"),
            ("ce-type", "order"),
            ("content-type", "text/plain"),
        ];
        send(&client(), "POST", &url, &id, &headers).await.status
    });
    request.await.unwrap_or(0)
}

/// Waits until `done` holds for the live nodes `weft nodes` lists through `via`.
async fn wait_for_nodes(via: &Server, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let started = Instant::now();
    loop {
        let answer = get(&format!("{}/v1/nodes", via.admin)).await.json();
        let nodes = answer["nodes"].as_array().cloned().unwrap_or_default();
        if done(&nodes) {
            return nodes;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "nodes: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every accepted event reached the hook; each id's deliveries carry
/// rising receive counts; nothing arrived that was not sent.
async fn wait_for_hook(hook: &Hook, accepted: &[String], sent: usize, within: Duration) {
    let started = Instant::now();
    loop {
        let got = hook.got.lock().unwrap().clone();
        let mut by_id: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, count) in got {
            by_id.entry(id).or_default().push(count);
        }
        if accepted.iter().all(|id| by_id.contains_key(id)) {
            for (id, counts) in &by_id {
                let n: usize = id.trim_start_matches('e').parse().unwrap_or(usize::MAX);
                assert!(n < sent, "`{id}` was never sent");
                // A lease held by a killed node counts as a receive that
                // reached no one, so counts may skip; they never fall. A
                // NATS server killed while it led a consumer can leave
                // the new leader without the last delivery it made, which
                // it then makes again with the same count.
                assert!(
                    counts[0] >= 1 && counts.windows(2).all(|w| w[0] <= w[1]) && counts.len() <= 3,
                    "receive counts of {id}: {counts:?}"
                );
            }
            return;
        }
        let missing: Vec<&String> = accepted.iter().filter(|id| !by_id.contains_key(*id)).collect();
        assert!(
            started.elapsed() < within,
            "{} accepted events never arrived: {missing:?}",
            missing.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_to_one_node_reaches_every_node_and_records_are_found_from_any() {
    let nats = NatsServer::start();
    let app = App::new(APP);
    let nodes: Vec<Server> = (0..3).map(|n| node(&app, &nats, n)).collect();
    let listed = wait_for_nodes(&nodes[0], |n| n.len() == 3).await;
    assert_eq!(listed.len(), 3, "{listed:?}");

    // A new route, deployed through the second node only.
    app.write(&format!(
        "{APP}\n[[route]]\nmethod = \"GET\"\npath = \"/new/{{name}}\"\nfunction = \"probe\"\n"
    ));
    let started = Instant::now();
    let out = weft()
        .args(["deploy", "--no-build", "--server", &nodes[1].admin])
        .arg(&app.dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let revision = get(&format!("{}/v1/app", nodes[1].admin)).await.json()["revision"].clone();
    for n in &nodes {
        loop {
            let here = get(&format!("{}/v1/app", n.admin)).await.json();
            if here["revision"] == revision && get(&format!("{}/new/x", n.public)).await.status == 200 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{} runs {here}", n.admin);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!("every node ran the deploy {:?} after it was made", started.elapsed());
    let out = nodes[2].cli(&["app"]);
    assert!(
        text(&out.stdout).contains(&format!("shared deployment revision {revision}")),
        "{}",
        text(&out.stdout)
    );

    // A request served by the first node, looked up through the third.
    let r = get(&format!("{}/log", nodes[0].public)).await;
    let id = r.headers["weft-request-id"].to_str().unwrap().to_string();
    let started = Instant::now();
    loop {
        let record = get(&format!("{}/v1/invocations/{id}", nodes[2].admin)).await;
        if record.status == 200 {
            assert_eq!(record.json()["function"], "probe");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{}", record.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = nodes[2].cli(&["logs", "--request", &id]);
    let logs = text(&logs.stdout);
    assert!(
        logs.contains("stdout line from probe") && logs.contains("stderr line from probe"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_one_killed_with_sigkill_lose_no_accepted_event() {
    let nats = NatsServer::start();
    let hook = hook().await;
    let app = App::new(&format!(
        "{APP}\n[topic.orders]\n\n[[subscription]]\ntopic = \"orders\"\nurl = \"{}\"\n",
        hook.url
    ));
    let mut nodes: Vec<Option<Server>> = (0..3).map(|n| Some(node(&app, &nats, n))).collect();
    wait_for_nodes(nodes[0].as_ref().unwrap(), |n| n.len() == 3).await;
    let publics: Vec<String> = nodes.iter().map(|n| n.as_ref().unwrap().public.clone()).collect();

    const SENT: usize = 300;
    let mut accepted = Vec::new();
    let mut refused_by_live = Vec::new();
    for i in 0..SENT {
        if i == SENT / 3 {
            // SIGKILL, mid-load.
            nodes[2] = None;
        }
        let via = i % 3;
        let status = order(&publics[via], &format!("e{i}")).await;
        if (200..300).contains(&status) {
            accepted.push(format!("e{i}"));
        } else if via != 2 || i < SENT / 3 {
            refused_by_live.push((i, status));
        }
        if i % 30 == 0 {
            let hello = get(&format!("{}/hello/x", publics[i % 2])).await;
            assert_eq!(hello.status, 200, "a live node stopped answering");
        }
    }
    assert!(refused_by_live.is_empty(), "live nodes refused {refused_by_live:?}");
    assert!(accepted.len() >= SENT * 2 / 3, "{} accepted", accepted.len());
    // Deliveries the killed node held come back when their leases lapse
    // (a URL subscription's lease is 60 s).
    wait_for_hook(&hook, &accepted, SENT, Duration::from_secs(120)).await;
    let listed = wait_for_nodes(nodes[0].as_ref().unwrap(), |n| n.len() == 2).await;
    assert_eq!(listed.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_fires_once_per_time_across_three_nodes() {
    let nats = NatsServer::start();
    let hook = hook().await;
    let app = App::new(&format!(
        "{APP}\n[topic.ticks]\n\n[[subscription]]\ntopic = \"ticks\"\nurl = \"{}\"\n\n[schedule.tick]\nexpression = \"rate(1 second)\"\ntopic = \"ticks\"\npayload = '{{\"tick\":true}}'\n",
        hook.url
    ));
    let nodes: Vec<Server> = (0..3).map(|n| node(&app, &nats, n)).collect();
    wait_for_nodes(&nodes[0], |n| n.len() == 3).await;
    let started = Instant::now();
    while hook.got.lock().unwrap().len() < 6 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            hook.got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = hook.got.lock().unwrap().clone();
    let mut ids: Vec<&String> = got.iter().map(|(id, _)| id).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "a fire time fired twice: {got:?}");
    assert!(ids.iter().all(|id| id.starts_with("tick@")), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_cluster_losing_a_server_keeps_weft_accepting_and_loses_nothing() {
    let mut cluster = weft_jetstream::testing::Cluster::start(3);
    let hook = hook().await;
    let app = App::new(&format!(
        "{APP}\n[topic.orders]\n\n[[subscription]]\ntopic = \"orders\"\nurl = \"{}\"\n",
        hook.url
    ));
    // A new cluster elects its JetStream leader some seconds after it starts.
    let urls = cluster.urls();
    let data = app.dir.join("data-r3");
    let args = ["--nats", urls.as_str(), "--nats-prefix", "r3", "--nats-replicas", "3"];
    let started = Instant::now();
    let node = loop {
        let attempt = std::panic::catch_unwind(|| Server::start_with(&app, &data, &args));
        match attempt {
            Ok(server) => break server,
            Err(_) if started.elapsed() < Duration::from_secs(60) => std::thread::sleep(Duration::from_secs(1)),
            Err(_) => panic!("weft never started on the cluster"),
        }
    };

    const SENT: usize = 200;
    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut accepted_after = 0;
    for i in 0..SENT {
        if i == SENT / 4 {
            // One of the three servers, killed; the others elect new leaders.
            cluster.servers[0].kill();
        }
        let id = format!("e{i}");
        // Retried, as a client would, while the cluster elects.
        let mut tries = 0;
        loop {
            let status = order(&node.public, &id).await;
            if (200..300).contains(&status) {
                accepted.push(id.clone());
                if i > SENT / 4 {
                    accepted_after += 1;
                }
                break;
            }
            assert_eq!(status, 503, "{id}: only 503 while the cluster elects");
            refused += 1;
            tries += 1;
            assert!(tries < 300, "{id}: weft stopped accepting after the server was killed");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(accepted_after > 0);
    println!(
        "{} accepted, {refused} answers of 503 while the cluster elected",
        accepted.len()
    );
    wait_for_hook(&hook, &accepted, SENT, Duration::from_secs(120)).await;
}

/// A JSONata workflow that notes its name in a variable, waits 4 s, then
/// calls the probe with it.
const SLOW: &str = r#"{"QueryLanguage": "JSONata", "StartAt": "Mark", "States": {
  "Mark": {"Type": "Pass", "Assign": {"started": "{% $states.context.Execution.Name %}"}, "Next": "Pause"},
  "Pause": {"Type": "Wait", "Seconds": 4, "Next": "Call"},
  "Call": {"Type": "Task", "Resource": "function:probe", "Arguments": {"step": "call", "who": "{% $started %}"},
           "Output": {"who": "{% $states.result.input.who %}"}, "End": true}}}"#;

/// A standard execution whose node is killed (SIGKILL) during its Wait is
/// taken over by the other node once the first is gone, and ends there,
/// its variable assigned again from the journal and its Wait not waited
/// again from the start.
#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_whose_node_dies_is_resumed_by_another() {
    let nats = NatsServer::start();
    let app = App::new(&format!("{APP}\n[workflow.slow]\ndefinition = \"slow.asl.json\"\n"));
    std::fs::write(app.dir.join("slow.asl.json"), SLOW).unwrap();
    let first = node(&app, &nats, 0);
    let second = node(&app, &nats, 1);
    wait_for_nodes(&first, |n| n.len() == 2).await;

    let url = format!("{}/v1/workflows/slow/executions", first.admin);
    let body = serde_json::json!({ "name": "s-1", "input": {} }).to_string();
    let r = send(&client(), "POST", &url, &body, &[("content-type", "application/json")]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let history = |server: &Server| format!("{}/v1/executions/slow:s-1/history", server.admin);
    let started = Instant::now();
    loop {
        let events = get(&history(&first)).await.json();
        if events["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["type"] == "WaitStateEntered"))
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never waited: {events}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed = Instant::now();
    drop(first); // SIGKILL

    let done = loop {
        let record = get(&format!("{}/v1/executions/slow:s-1", second.admin)).await.json();
        if record["status"] != "RUNNING" {
            break record;
        }
        // Gone after 6 s unseen, looked for every 5 s: well within 30 s.
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "not resumed by the other node within 30 s: {record}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["output"], serde_json::json!({"who": "s-1"}), "{done}");
    let events = get(&history(&second)).await.json();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    for once in [
        "ExecutionStarted",
        "WaitStateEntered",
        "WaitStateExited",
        "ExecutionSucceeded",
    ] {
        assert_eq!(kinds.iter().filter(|k| **k == once).count(), 1, "{once} in {kinds:?}");
    }
}
