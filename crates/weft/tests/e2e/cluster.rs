//! Several weft nodes on one NATS JetStream (`weft up --nats`): real
//! nats-server processes, real weft processes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use weft_jetstream::testing::NatsServer;

use crate::support::{App, Server, client, get, send, text, weft};

const APP: &str = r#"
[app]
name = "cluster"

[function.probe]
source = "PROBE"

[[route]]
method = "GET"
path = "/hello/{name}"
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
    let logs = get(&format!("{}/v1/logs?function=probe&limit=10000", server.admin))
        .await
        .json();
    logs["lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .filter_map(|l| l["line"].as_str())
                .filter(|l| l.starts_with("event "))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
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
