use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{App, Server, client, get, probe_lines, send, text};

const APP: &str = r#"
[app]
name = "queues"

[function.probe]
source = "PROBE"

[function.sender]
source = "PROBE"
publish = ["queue:manual"]

[queue.jobs]
visibility_timeout = "5s"
backoff = "100ms"
max_receives = 2
dead_letter = "jobs-dlq"

[queue.jobs-dlq]

[queue.batches]
backoff = "100ms"
max_receives = 2
dead_letter = "jobs-dlq"

[queue.manual]
visibility_timeout = "30s"

[queue.orders]
fifo = true
dead_letter = "orders-dlq"

[queue.orders-dlq]
fifo = true

[topic.notices]

[[subscription]]
topic = "notices"
queue = "manual"

[bus.audit]
archive = "1d"

[rule.to-manual]
bus = "audit"
pattern = '{"source": ["test"]}'
[[rule.to-manual.target]]
queue = "manual"

[[trigger]]
queue = "jobs"
function = "probe"

[[trigger]]
queue = "batches"
function = "probe"
batch = 10
"#;

/// Waits until `done` holds for the probe's log lines.
async fn wait_for_logs(server: &Server, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let started = Instant::now();
    loop {
        let lines = probe_lines(server).await;
        if done(&lines) {
            return lines;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}; logs: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stats(server: &Server, queue: &str) -> Value {
    get(&format!("{}/v1/queues/{queue}", server.admin)).await.json()["stats"].clone()
}

async fn wait_for_stats(server: &Server, queue: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let s = stats(server, queue).await;
        if done(&s) {
            return s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting on {queue}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_reach_the_function_as_cloudevents_and_poison_goes_to_the_dead_letter_queue() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let out = server.cli(&["queue", "send", "jobs", "--data", "hello", "--id", "m-hello"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("sent message m-hello"),
        "{}",
        text(&out.stdout)
    );
    for body in ["fail", "one", "two"] {
        assert!(server.cli(&["queue", "send", "jobs", "--data", body]).status.success());
    }
    let lines = wait_for_logs(&server, "deliveries", |l| {
        l.iter().any(|x| x == "event m-hello receives 1 body hello")
            && l.iter().any(|x| x.ends_with("receives 1 body two"))
            && l.iter().filter(|x| x.ends_with("body fail")).count() == 2
    })
    .await;
    assert!(
        lines.iter().any(|x| x.ends_with("receives 2 body fail")),
        "the poison message was retried: {lines:#?}"
    );

    // After max_receives (2) the poison message waits in the dead-letter queue, with its error.
    wait_for_stats(&server, "jobs-dlq", |s| s["visible"] == 1).await;
    let jobs = wait_for_stats(&server, "jobs", |s| s["visible"] == 0 && s["in_flight"] == 0).await;
    assert_eq!(jobs["delayed"], 0);
    let out = server.cli(&["queue", "peek", "jobs-dlq"]);
    let peek = text(&out.stdout);
    assert!(peek.contains("receives 2"), "{peek}");
    assert!(
        peek.contains("last error: the function answered 500: failing on purpose"),
        "{peek}"
    );
    assert!(peek.contains("\n  fail\n"), "{peek}");
    // Each good message was delivered exactly once.
    assert_eq!(lines.iter().filter(|x| x.ends_with("body one")).count(), 1);

    // Every delivery left a record with trigger `queue`.
    let records = crate::support::records(&server, "function=probe&limit=100", 5).await;
    assert!(records.iter().all(|r| r["trigger"] == "queue"));

    let out = server.cli(&["queue", "redrive", "jobs-dlq"]);
    assert_eq!(text(&out.stdout), "moved 1 message(s) back to their source queue\n");
    wait_for_logs(&server, "the redriven message", |l| {
        l.iter().filter(|x| x.ends_with("receives 1 body fail")).count() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_retries_only_the_items_the_function_reports() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let messages = json!({ "messages": [{ "body": "a", "id": "b-a" }, { "body": "fail", "id": "b-fail" }, { "body": "c", "id": "b-c" }] });
    let r = send(
        &client(),
        "POST",
        &format!("{}/v1/queues/batches/messages", server.admin),
        &messages.to_string(),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let lines = wait_for_logs(&server, "the retry", |l| {
        l.iter().any(|x| x == "event b-fail receives 2 body fail")
    })
    .await;
    assert!(lines.iter().any(|x| x.starts_with("batch of ")), "{lines:#?}");
    assert_eq!(
        lines.iter().filter(|x| x.starts_with("event b-a ")).count(),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        lines.iter().filter(|x| x.starts_with("event b-c ")).count(),
        1,
        "{lines:#?}"
    );
    wait_for_stats(&server, "jobs-dlq", |s| s["visible"] == 1).await;
    let dlq = get(&format!("{}/v1/queues/jobs-dlq/messages", server.admin))
        .await
        .json();
    assert_eq!(
        dlq["messages"][0]["last_error"],
        "the function reported it failed (batchItemFailures)"
    );
    assert_eq!(dlq["messages"][0]["attributes"]["dead-letter-source"], "batches");
}

#[tokio::test(flavor = "multi_thread")]
async fn receive_hides_messages_until_acknowledged_or_the_visibility_timeout() {
    let app = App::new(APP);
    let server = Server::start(&app);
    for body in ["first", "second"] {
        assert!(
            server
                .cli(&["queue", "send", "manual", "--data", body])
                .status
                .success()
        );
    }
    let out = server.cli(&["queue", "receive", "manual", "--max", "2", "--visibility", "1s"]);
    let received = text(&out.stdout);
    let receipts: Vec<String> = received
        .lines()
        .filter_map(|l| l.strip_prefix("receipt "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(receipts.len(), 2, "{received}");
    assert_eq!(
        text(&server.cli(&["queue", "receive", "manual"]).stdout),
        "no messages to receive\n"
    );
    let out = server.cli(&["queue", "ack", "manual", &receipts[0]]);
    assert_eq!(text(&out.stdout), "acknowledged 1\n");

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let again = text(&server.cli(&["queue", "receive", "manual", "--max", "5"]).stdout);
    assert!(again.contains("receives 2") && again.contains("  second"), "{again}");
    assert!(!again.contains("first"), "an acknowledged message is gone: {again}");
    // The lapsed lease's receipt no longer acknowledges anything.
    let out = server.cli(&["queue", "ack", "manual", &receipts[1]]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("1 receipt(s) were stale"));

    let out = server.cli(&["queue", "ack", "manual", "not-a-receipt"]);
    assert!(
        text(&out.stderr).contains("`not-a-receipt` is not a receipt"),
        "{}",
        text(&out.stderr)
    );
    let out = server.cli(&["queue", "send", "nope", "--data", "x"]);
    assert!(text(&out.stderr).contains("no queue `nope` is deployed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn fifo_queues_need_groups_and_drop_duplicates() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let out = server.cli(&["queue", "send", "orders", "--data", "x"]);
    assert!(
        text(&out.stderr).contains("queue `orders` is FIFO, so every message needs a `group`"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        server
            .cli(&["queue", "send", "orders", "--data", "a1", "--group", "a", "--id", "1"])
            .status
            .success()
    );
    let out = server.cli(&[
        "queue", "send", "orders", "--data", "a1 again", "--group", "a", "--id", "1",
    ]);
    assert!(
        text(&out.stdout).starts_with("duplicate of message 1"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        server
            .cli(&["queue", "send", "orders", "--data", "a2", "--group", "a", "--id", "2"])
            .status
            .success()
    );
    assert!(
        server
            .cli(&["queue", "send", "orders", "--data", "b1", "--group", "b", "--id", "3"])
            .status
            .success()
    );
    let first = text(&server.cli(&["queue", "receive", "orders", "--max", "10"]).stdout);
    assert!(
        first.contains("  a1\n") && first.contains("  b1\n") && !first.contains("a2"),
        "{first}"
    );
    assert_eq!(
        text(&server.cli(&["queue", "receive", "orders", "--max", "10"]).stdout),
        "no messages to receive\n"
    );

    let r = send(
        &client(),
        "POST",
        &format!("{}/v1/queues/orders/messages", server.admin),
        r#"{"messages":[{"bdy":"x"}]}"#,
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("unknown field `bdy`"),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_accepted_is_lost_when_the_server_is_killed() {
    let app = App::new(APP);
    let data = app.dir.join("data");
    let server = Server::start_with_data(&app, &data);
    let c = client();
    let url = format!("{}/v1/queues/manual/messages", server.admin);
    let mut sends = Vec::new();
    for batch in 0..100 {
        let (c, url) = (c.clone(), url.clone());
        sends.push(tokio::spawn(async move {
            let messages: Vec<Value> = (0..100)
                .map(|i| json!({ "body": format!("m{}", batch * 100 + i), "id": format!("m{}", batch * 100 + i) }))
                .collect();
            send(&c, "POST", &url, &json!({ "messages": messages }).to_string(), &[]).await
        }));
    }
    let mut accepted = HashSet::new();
    for s in sends {
        let r = s.await.unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        for m in r.json()["messages"].as_array().unwrap() {
            accepted.insert(m["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(accepted.len(), 10_000);
    // 500 are in flight (received, not acknowledged) when the server dies.
    let receive = format!("{}/v1/queues/manual/receive", server.admin);
    let mut in_flight = HashSet::new();
    for _ in 0..5 {
        let r = send(&c, "POST", &receive, r#"{"max":100,"visibility":"1s"}"#, &[])
            .await
            .json();
        for m in r["messages"].as_array().unwrap() {
            in_flight.insert(m["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(in_flight.len(), 500);
    drop(server); // SIGKILL

    let server = Server::start_with_data(&app, &data);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (receive, ack) = (
        format!("{}/v1/queues/manual/receive", server.admin),
        format!("{}/v1/queues/manual/ack", server.admin),
    );
    let mut delivered = HashSet::new();
    loop {
        let r = send(&c, "POST", &receive, r#"{"max":100,"visibility":"60s"}"#, &[])
            .await
            .json();
        let messages = r["messages"].as_array().unwrap().clone();
        if messages.is_empty() {
            break;
        }
        let mut receipts = Vec::new();
        for m in &messages {
            let id = m["id"].as_str().unwrap().to_string();
            let expected = if in_flight.contains(&id) { 2 } else { 1 };
            assert_eq!(m["receive_count"], expected, "receive count of {id}");
            receipts.push(m["receipt"].clone());
            delivered.insert(id);
        }
        let r = send(&c, "POST", &ack, &json!({ "receipts": receipts }).to_string(), &[])
            .await
            .json();
        assert_eq!(r["acknowledged"].as_u64(), Some(messages.len() as u64));
    }
    assert_eq!(
        delivered, accepted,
        "every accepted message is delivered after the crash"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_send_to_the_queues_they_are_granted() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let invoke = |path: &str| json!({ "method": "GET", "path": path }).to_string();
    let url = format!("{}/v1/functions/sender/invoke", server.admin);
    let r = send(
        &client(),
        "POST",
        &url,
        &invoke("/send/manual?hello-from-a-function"),
        &[],
    )
    .await
    .json();
    assert_eq!(r["status"], 202, "{r}");
    let answer: Value = r["body"]
        .as_str()
        .unwrap()
        .strip_prefix("queue answered 202: ")
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(answer["duplicate"], false, "{r}");
    let peek = text(&server.cli(&["queue", "peek", "manual"]).stdout);
    assert!(peek.contains("  hello-from-a-function\n"), "{peek}");

    let r = send(&client(), "POST", &url, &invoke("/send/jobs?not-granted"), &[])
        .await
        .json();
    assert_eq!(r["status"], 502);
    let expected = "function `sender` may not send to queue `jobs`: add \"queue:jobs\" to `publish` in [function.sender] of weft.toml";
    assert!(r["body"].as_str().unwrap().contains(expected), "{r}");
    assert_eq!(stats(&server, "jobs").await["visible"], 0);
}

/// Mounts a small tmpfs at `dir`; unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_path_buf()))
        } else {
            Err(text(&out.stderr))
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_answers_503_and_loses_nothing_accepted() {
    let app = App::new(APP);
    let data = app.dir.join("data");
    // The data directory is a small filesystem of its own, filled up below.
    let tmpfs = match Tmpfs::mount(&data, "48m") {
        Ok(t) => t,
        Err(e) => panic!("this test mounts a tmpfs and needs root (CAP_SYS_ADMIN): mount failed: {e}"),
    };
    let server = Server::start_with_data(&app, &data);
    let c = client();
    let url = format!("{}/v1/queues/manual/messages", server.admin);
    let batch = |n: usize| {
        let messages: Vec<Value> = (0..100)
            .map(|i| json!({ "body": format!("{n}-{i}-{}", "x".repeat(200)), "id": format!("{n}-{i}") }))
            .collect();
        json!({ "messages": messages }).to_string()
    };
    let mut accepted = HashSet::new();
    let mut accept = |r: &crate::support::Response| {
        for m in r.json()["messages"].as_array().unwrap() {
            accepted.insert(m["id"].as_str().unwrap().to_string());
        }
    };
    let r = send(&c, "POST", &url, &batch(0), &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    accept(&r);

    // Fill the filesystem.
    let filler = data.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut refused = None;
    for n in 1..200 {
        let r = send(&c, "POST", &url, &batch(n), &[]).await;
        match r.status {
            201 => accept(&r),
            503 => {
                refused = Some(r.json()["error"].as_str().unwrap().to_string());
                break;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    let refused = refused.expect("a full disk refuses new messages");
    assert!(refused.starts_with("storage unavailable"), "{refused}");
    // The CloudEvents ingress refuses too, and keeps nothing.
    let event = [
        ("ce-specversion", "1.0"),
        ("ce-id", "full-1"),
        ("ce-source", "test"),
        ("ce-type", "t"),
    ];
    let r = send(&c, "POST", &format!("{}/events/notices", server.public), "x", &event).await;
    assert_eq!(r.status, 503, "{}", r.body);
    // So does a bus: the entry fails as retryable, and neither its archive
    // copy nor its rule's copy is kept.
    let entry =
        json!({ "Entries": [{ "Source": "test", "DetailType": "t", "Detail": "{}", "EventBusName": "audit" }] });
    let r = send(
        &c,
        "POST",
        &format!("{}/events/put", server.public),
        &entry.to_string(),
        &[],
    )
    .await;
    assert_eq!(r.json()["Entries"][0]["ErrorCode"], "InternalFailure", "{}", r.body);

    // Space again: sends succeed, and everything accepted is still there.
    std::fs::remove_file(&filler).unwrap();
    let r = send(&c, "POST", &url, &batch(1000), &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    accept(&r);
    let receive = format!("{}/v1/queues/manual/receive", server.admin);
    let mut delivered = HashSet::new();
    loop {
        let r = send(&c, "POST", &receive, r#"{"max":100,"visibility":"60s"}"#, &[])
            .await
            .json();
        let messages = r["messages"].as_array().unwrap().clone();
        if messages.is_empty() {
            break;
        }
        delivered.extend(messages.iter().map(|m| m["id"].as_str().unwrap().to_string()));
    }
    assert_eq!(delivered, accepted);
    let buses = get(&format!("{}/v1/buses", server.admin)).await.json();
    let audit = buses["buses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "audit")
        .unwrap()
        .clone();
    assert_eq!(audit["archived"], 0, "the refused put left nothing in the archive");
    drop(server);
    drop(tmpfs);
}
