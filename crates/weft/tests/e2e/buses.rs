use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{App, Server, client, get, probe_lines, send};

const APP: &str = r#"
[app]
name = "buses"

[function.probe]
source = "PROBE"

[function.producer]
source = "PROBE"
publish = ["bus:orders"]

[function.flaky]
source = "PROBE"

[function.flaky.async]
retries = 0
on_failure = "bus:orders"

[queue.audit]
[queue.shaped]
[queue.failed]
[queue.eu-audit]
[queue.notice-copies]
[queue.async-failures]
[queue.off-copies]

[topic.notices]

[[subscription]]
topic = "notices"
queue = "notice-copies"

[bus.orders]
archive = "1d"

[bus.eu]

[rule.all-orders]
bus = "orders"
pattern = '{"source": ["shop"]}'
[[rule.all-orders.target]]
queue = "audit"

[rule.big]
bus = "orders"
pattern = '{"source": ["shop"], "detail-type": ["OrderPlaced"], "detail": {"amount": [{"numeric": [">", 100]}]}}'
[[rule.big.target]]
function = "probe"
[[rule.big.target]]
queue = "shaped"
input_paths = { amount = "$.detail.amount", id = "$.id" }
input_template = '{"order": <id>, "amount": <amount>, "rule": "<aws.events.rule-name>"}'
[[rule.big.target]]
bus = "eu"

[rule.poison]
bus = "orders"
pattern = '{"detail-type": ["Poison"]}'
[[rule.poison.target]]
function = "probe"
input_template = "fail"
retries = 1
backoff = "100ms"
dead_letter = "failed"

[rule.eu-copy]
bus = "eu"
pattern = '{"detail": {"region": [{"prefix": "eu-"}]}}'
[[rule.eu-copy.target]]
queue = "eu-audit"
input_path = "$.detail"

[rule.off]
bus = "orders"
enabled = false
pattern = '{"source": ["shop"]}'
[[rule.off.target]]
queue = "off-copies"

[rule.lambda-failures]
bus = "orders"
pattern = '{"source": ["lambda"], "detail-type": ["Lambda Function Invocation Result - Failure"]}'
[[rule.lambda-failures.target]]
queue = "async-failures"
input_path = "$.detail.requestContext"

[rule.from-tools]
pattern = '{"source": [{"prefix": "tools."}]}'
[[rule.from-tools.target]]
topic = "notices"
"#;

async fn messages(server: &Server, queue: &str) -> Vec<Value> {
    get(&format!("{}/v1/queues/{queue}/messages?limit=100", server.admin))
        .await
        .json()["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until `queue` holds `n` messages; returns them.
async fn wait_for(server: &Server, queue: &str, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let list = messages(server, queue).await;
        if list.len() >= n {
            assert_eq!(list.len(), n, "{queue}: {list:?}");
            return list;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{queue} has {} of {n}: {list:?}",
            list.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn put(server: &Server, entries: Value) -> Value {
    let r = send(
        &client(),
        "POST",
        &format!("{}/events/put", server.public),
        &json!({ "Entries": entries }).to_string(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn order(amount: u32, region: &str) -> Value {
    json!({
        "Source": "shop",
        "DetailType": "OrderPlaced",
        "Detail": json!({ "amount": amount, "region": region }).to_string(),
        "EventBusName": "orders",
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_route_put_events_by_content_to_every_kind_of_target() {
    let app = App::new(APP);
    let check = crate::support::weft().arg("check").arg(&app.dir).output().unwrap();
    assert!(
        crate::support::text(&check.stdout)
            .contains("events: 7 queue(s), 1 topic(s), 1 subscription(s), 7 rule(s); 3 bus(es)"),
        "{}",
        crate::support::text(&check.stdout)
    );
    let server = Server::start(&app);
    let answer = put(
        &server,
        json!([
            order(150, "eu-west"),
            order(50, "us-east"),
            { "Source": "shop", "Detail": "{}", "EventBusName": "orders" },
            { "Source": "shop", "DetailType": "OrderPlaced", "Detail": "[1, 2]", "EventBusName": "orders" },
            { "Source": "shop", "DetailType": "OrderPlaced", "Detail": "{}", "EventBusName": "nope" },
        ]),
    )
    .await;
    assert_eq!(answer["FailedEntryCount"], 3, "{answer}");
    let entries = answer["Entries"].as_array().unwrap();
    let big_id = entries[0]["EventId"]
        .as_str()
        .expect("the first entry is put")
        .to_string();
    assert!(entries[1]["EventId"].is_string());
    assert_eq!(entries[2]["ErrorCode"], "InvalidArgument");
    assert!(
        entries[2]["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("`DetailType` is required")
    );
    assert_eq!(entries[3]["ErrorCode"], "MalformedDetail");
    assert_eq!(entries[4]["ErrorCode"], "InvalidArgument");
    assert!(entries[4]["ErrorMessage"].as_str().unwrap().contains("no bus `nope`"));

    // A queue target gets the whole envelope, for both orders.
    let audit = wait_for(&server, "audit", 2).await;
    let envelope: Value = serde_json::from_str(audit[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(envelope["id"], big_id.as_str());
    assert_eq!(envelope["detail-type"], "OrderPlaced");
    assert_eq!(envelope["account"], "000000000000");
    assert_eq!(envelope["detail"], json!({ "amount": 150, "region": "eu-west" }));
    assert_eq!(audit[0]["attributes"]["type"], "OrderPlaced");
    // The input transformer reshapes the big one.
    let shaped = wait_for(&server, "shaped", 1).await;
    let body: Value = serde_json::from_str(shaped[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({ "order": big_id, "amount": 150, "rule": "big" }));
    // The bus target passes it to `eu`, whose rule keeps only the detail.
    let eu = wait_for(&server, "eu-audit", 1).await;
    let detail: Value = serde_json::from_str(eu[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(detail, json!({ "amount": 150, "region": "eu-west" }));
    // The function target got the envelope as a CloudEvent.
    let started = Instant::now();
    let prefix = format!("event {big_id}/big/1 receives 1 body ");
    let line = loop {
        if let Some(line) = probe_lines(&server).await.into_iter().find(|l| l.starts_with(&prefix)) {
            break line;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the function target was not called"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let delivered: Value = serde_json::from_str(&line[prefix.len()..]).unwrap();
    assert_eq!(delivered["detail"]["amount"], 150);

    // CloudEvents into the default bus: a rule sends them on to a topic.
    let ce = |id: &'static str, data: &'static str| {
        let headers = vec![
            ("ce-specversion", "1.0"),
            ("ce-id", id),
            ("ce-source", "tools.cli"),
            ("ce-type", "Notice"),
            ("content-type", "application/json"),
        ];
        let url = format!("{}/events/bus/default", server.public);
        async move { send(&client(), "POST", &url, data, &headers).await }
    };
    let r = ce("n1", r#"{"text": "hi"}"#).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["events"][0]["rules"], 1);
    let copies = wait_for(&server, "notice-copies", 1).await;
    let notice: Value = serde_json::from_str(copies[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (notice["source"].as_str(), notice["detail"]["text"].as_str()),
        (Some("tools.cli"), Some("hi"))
    );
    // The same event again (a producer's retry): acknowledged, nothing stored twice.
    let r = ce("n1", r#"{"text": "hi"}"#).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["events"][0]["deliveries"], 0, "{}", r.body);
    let r = ce("n2", "[1]").await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("must be a JSON object"),
        "{}",
        r.body
    );
    let r = send(
        &client(),
        "POST",
        &format!("{}/events/bus/nope", server.public),
        "{}",
        &[],
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("no bus `nope`"), "{}", r.body);
    let r = send(
        &client(),
        "POST",
        &format!("{}/events/put", server.public),
        "{\"Entries\": []}",
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("1 to 10 entries"), "{}", r.body);
    assert_eq!(
        messages(&server, "notice-copies").await.len(),
        1,
        "neither repeated nor refused events are kept"
    );
    assert!(
        messages(&server, "off-copies").await.is_empty(),
        "a disabled rule does nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_function_target_retries_then_dead_letters() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let answer = put(
        &server,
        json!([{ "Source": "shop", "DetailType": "Poison", "Detail": "{}", "EventBusName": "orders" }]),
    )
    .await;
    let id = answer["Entries"][0]["EventId"].as_str().unwrap().to_string();
    let failed = wait_for(&server, "failed", 1).await;
    assert_eq!(
        failed[0]["attributes"]["dead-letter-source"],
        "rule:poison#function:probe"
    );
    assert_eq!(failed[0]["body"], "fail", "the transformed input is what failed");
    // The hidden queue is an ordinary queue to the CLI, by its full name.
    let out = server.cli(&["queue", "stats", "rule:poison#function:probe"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = probe_lines(&server).await;
    let tries: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with(&format!("event {id}/poison/1 ")))
        .collect();
    assert_eq!(tries.len(), 2, "retries = 1 means two tries: {lines:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_archive_replays_a_window_to_one_rule_or_all() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let out = server.cli(&[
        "events",
        "put",
        "--bus",
        "orders",
        "--source",
        "shop",
        "--detail-type",
        "OrderPlaced",
        "--detail",
        r#"{"amount": 5}"#,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("put event "));
    put(&server, json!([order(7, "us-east")])).await;
    wait_for(&server, "audit", 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let between = weft_events::cloudevents::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    put(&server, json!([order(500, "eu-north")])).await;
    wait_for(&server, "audit", 3).await;

    // The first two again, to one rule only.
    let out = server.cli(&[
        "events",
        "replay",
        "--bus",
        "orders",
        "--from",
        "2020-01-01T00:00:00Z",
        "--to",
        &between,
        "--rule",
        "all-orders",
        "--name",
        "again",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("replay again: 2 archived event(s)"), "{stdout}");
    let audit = wait_for(&server, "audit", 5).await;
    let replayed: Vec<Value> = audit[3..]
        .iter()
        .map(|m| serde_json::from_str(m["body"].as_str().unwrap()).unwrap())
        .collect();
    assert!(replayed.iter().all(|e| e["replay-name"] == "again"), "{replayed:?}");
    assert_eq!(replayed[0]["detail"]["amount"], 5);
    assert!(messages(&server, "shaped").await.len() == 1, "only the chosen rule ran");

    // Everything since `between`, to every rule: the big order reaches `big` again.
    let r = send(
        &client(),
        "POST",
        &format!("{}/v1/buses/orders/replay", server.admin),
        &json!({ "from": between, "to": "2100-01-01T00:00:00Z" }).to_string(),
        &[],
    )
    .await;
    assert_eq!((r.status, r.json()["events"].as_u64()), (200, Some(1)), "{}", r.body);
    wait_for(&server, "shaped", 2).await;
    wait_for(&server, "audit", 6).await;

    // Bad replays say what to fix.
    for (bus, body, want) in [
        (
            "eu",
            json!({ "from": between, "to": between }),
            "`from` must be before `to`",
        ),
        (
            "eu",
            json!({ "from": "2020-01-01T00:00:00Z", "to": between }),
            "keeps no archive",
        ),
        (
            "orders",
            json!({ "from": "yesterday", "to": between }),
            "not an RFC 3339 time",
        ),
        (
            "orders",
            json!({ "from": "2020-01-01T00:00:00Z", "to": between, "rule": "nope" }),
            "no enabled rule `nope`",
        ),
    ] {
        let r = send(
            &client(),
            "POST",
            &format!("{}/v1/buses/{bus}/replay", server.admin),
            &body.to_string(),
            &[],
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains(want), "expected `{want}` in {}", r.body);
    }
    // Replayed events are not archived again.
    let out = server.cli(&["events", "buses"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("orders (archive 1d, 3 event(s) kept)"), "{listing}");
    assert!(listing.contains("rule big: "), "{listing}");
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_put_events_on_the_buses_they_are_granted() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let invoke = |path: &str, body: Value| {
        let url = format!("{}/v1/functions/producer/invoke", server.admin);
        let request = json!({ "method": "POST", "path": path, "body": body.to_string() });
        async move { send(&client(), "POST", &url, &request.to_string(), &[]).await.json() }
    };
    let answer = invoke(
        "/put/orders",
        json!({ "Entries": [{ "Source": "shop", "DetailType": "X", "Detail": "{}" }] }),
    )
    .await;
    assert_eq!(answer["status"], 200, "{answer}");
    let put: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(put["FailedEntryCount"], 0, "{put}");
    wait_for(&server, "audit", 1).await;
    let answer = invoke("/put/eu", json!({ "Entries": [] })).await;
    assert_eq!(answer["status"], 502, "{answer}");
    assert!(
        answer["body"]
            .as_str()
            .unwrap()
            .contains(r#"add \"bus:eu\" to `publish`"#)
            || answer["body"]
                .as_str()
                .unwrap()
                .contains(r#"add "bus:eu" to `publish`"#),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_async_destination_puts_the_result_on_a_bus() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let r = send(
        &client(),
        "POST",
        &format!("{}/v1/functions/flaky/invoke", server.admin),
        &json!({ "type": "event", "path": "/trap" }).to_string(),
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let failures = wait_for(&server, "async-failures", 1).await;
    let context: Value = serde_json::from_str(failures[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(context["condition"], "RetriesExhausted", "{context}");
    assert_eq!(context["function"], "flaky");
    assert_eq!(failures[0]["attributes"]["source"], "lambda");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_puts_scheduled_events_on_a_bus() {
    let app = App::new(
        r#"
[app]
name = "ticks"

[queue.ticks]

[schedule.tick]
expression = "rate(1 second)"
bus = "default"
payload = '{"kind": "tick"}'

[rule.ticks]
pattern = '{"detail-type": ["Scheduled Event"], "detail": {"kind": ["tick"]}}'
[[rule.ticks.target]]
queue = "ticks"
"#,
    );
    let server = Server::start(&app);
    let started = Instant::now();
    let ticks = loop {
        let list = messages(&server, "ticks").await;
        if !list.is_empty() {
            break list;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no scheduled event arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let event: Value = serde_json::from_str(ticks[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(event["source"], "/weft/schedules/tick");
    assert_eq!(event["detail"], json!({ "kind": "tick" }));
}

/// A manifest whose one rule sends to `function`, through a hidden queue
/// named after it: each redeploy below swaps the queue the rule fills.
fn swapping(function: &str) -> String {
    format!(
        r#"
[app]
name = "swap"

[function.one]
source = "PROBE"

[function.two]
source = "PROBE"

[rule.r]
pattern = '{{"source": ["load"]}}'
[[rule.r.target]]
function = "{function}"
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn redeploying_rules_under_load_fails_no_put() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let app = App::new(&swapping("one"));
    let server = Server::start(&app);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, url) = (stop.clone(), format!("{}/events/put", server.public));
        workers.push(tokio::spawn(async move {
            let c = client();
            let entry = json!({ "Entries": [{ "Source": "load", "DetailType": "t", "Detail": "{}" }] }).to_string();
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                answers.push(send(&c, "POST", &url, &entry, &[]).await.json());
            }
            answers
        }));
    }
    for function in ["two", "one", "two", "one"] {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.write(&swapping(function));
        // The puts keep running on the other worker threads meanwhile.
        let out = tokio::task::block_in_place(|| crate::support::deploy(&app, &server));
        assert!(out.status.success(), "{}", crate::support::text(&out.stderr));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for w in workers {
        answers.extend(w.await.unwrap());
    }
    let failed: Vec<&Value> = answers.iter().filter(|a| a["FailedEntryCount"] != 0).collect();
    assert!(answers.len() > 50, "only {} puts ran", answers.len());
    assert!(
        failed.is_empty(),
        "{} of {} puts failed: {:?}",
        failed.len(),
        answers.len(),
        failed.first()
    );
}
