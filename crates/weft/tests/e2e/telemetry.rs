//! Traces across every hop, per-invocation reports, logs by trace, and
//! what invocations cost: through the real binary and real components.

use std::time::Duration;

use serde_json::Value;

use crate::support::{App, Server, deploy, get, record, records, send};

const APP: &str = r#"
[app]
name = "traced"

[function.front]
source = "PROBE"
publish = ["queue:orders"]
allowed_hosts = ["127.0.0.1:*"]
memory = "32MB"

[function.worker]
source = "PROBE"
publish = ["bus:main"]

[function.hop]
source = "PROBE"

[function.last]
source = "PROBE"

[queue.orders]

[[trigger]]
queue = "orders"
function = "worker"

[bus.main]

[rule.relay]
bus = "main"
pattern = '{"source": ["probe"]}'
[[rule.relay.target]]
function = "hop"
input = '"forward/last/json"'

[[route]]
path = "/{*rest}"
function = "front"
"#;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// The spans of a trace, flat, from its tree.
fn flatten(node: &Value, out: &mut Vec<Value>) {
    let mut span = node.clone();
    span.as_object_mut().unwrap().remove("children");
    out.push(span);
    for child in node["children"].as_array().into_iter().flatten() {
        flatten(child, out);
    }
}

async fn trace(server: &Server, id: &str) -> (Value, Vec<Value>) {
    let r = get(&format!("{}/v1/traces/{id}", server.admin)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let tree = r.json();
    let mut spans = Vec::new();
    for root in tree["roots"].as_array().unwrap() {
        flatten(root, &mut spans);
    }
    (tree, spans)
}

fn named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span `{name}` in {spans:#?}"))
}

fn child_of(child: &Value, parent: &Value) {
    assert_eq!(
        child["parent_span_id"], parent["span_id"],
        "`{}` is not a child of `{}`",
        child["name"], parent["name"]
    );
}

/// Starts the chain (route -> queue -> bus -> rule -> forward) in the
/// client's trace; the route invocation's request id.
async fn start_chain(server: &Server, headers: &[(&str, &str)]) -> String {
    let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let mut all = vec![("traceparent", traceparent.as_str())];
    all.extend_from_slice(headers);
    let r = send(
        &crate::support::client(),
        "GET",
        &format!("{}/send/orders?put/main", server.public),
        "",
        &all,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    r.headers["weft-request-id"].to_str().unwrap().to_string()
}

/// The spans of trace `id`, flat, once one is named `name` (or as they
/// are after 5 s); a trace not yet known reads as no spans.
async fn spans_once(server: &Server, id: &str, name: &str) -> Vec<Value> {
    let mut spans = Vec::new();
    for _ in 0..100 {
        let r = get(&format!("{}/v1/traces/{id}", server.admin)).await;
        if r.status == 200 {
            spans.clear();
            for root in r.json()["roots"].as_array().unwrap() {
                flatten(root, &mut spans);
            }
            if spans.iter().any(|s| s["name"] == name) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    spans
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_holds_a_request_and_every_hop_it_set_off() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let front_id = start_chain(&server, &[("tracestate", "congo=t61rcWkgMzE")]).await;

    // The chain ends when `last` has run: route -> queue -> bus -> rule -> forward.
    let last = &records(&server, "function=last&limit=1", 1).await[0];
    assert_eq!(last["trigger"], "forward");
    let mut spans = Vec::new();
    for _ in 0..100 {
        let (tree, all) = trace(&server, &front_id).await;
        assert_eq!(tree["trace_id"], TRACE, "the client's trace is honoured");
        spans = all;
        if spans.len() >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(spans.iter().all(|s| s["trace_id"] == TRACE), "{spans:#?}");
    let front = named(&spans, "front");
    assert_eq!(front["parent_span_id"], CLIENT_SPAN, "a child of the client's span");
    assert_eq!(front["kind"], "server");
    assert_eq!(front["attributes"]["faas.trigger"], "http");
    assert_eq!(front["attributes"]["faas.invocation_id"], front_id.as_str());
    assert_eq!(front["attributes"]["faas.name"], "front");
    assert_eq!(front["attributes"]["faas.version"], "1");
    assert_eq!(front["attributes"]["faas.coldstart"], true);
    let send_span = named(&spans, "send orders");
    assert_eq!(send_span["kind"], "producer");
    assert_eq!(send_span["attributes"]["messaging.destination.name"], "orders");
    child_of(send_span, front);
    let wait = named(&spans, "wait orders");
    assert_eq!(wait["kind"], "consumer");
    child_of(wait, send_span);
    let worker = named(&spans, "worker");
    assert_eq!(worker["attributes"]["faas.trigger"], "pubsub");
    child_of(worker, wait);
    let put = named(&spans, "put main");
    child_of(put, worker);
    let hop = named(&spans, "hop");
    let hop_wait = spans
        .iter()
        .find(|s| s["kind"] == "consumer" && s["name"].as_str().unwrap().starts_with("wait rule:relay"))
        .unwrap_or_else(|| panic!("no wait of the rule's hidden queue in {spans:#?}"));
    child_of(hop_wait, put);
    child_of(hop, hop_wait);
    let last = named(&spans, "last");
    child_of(last, hop);
    let forward = &last["events"][0];
    assert_eq!(forward["name"], "forward");
    assert_eq!(forward["attributes"]["weft.forward.from"], "hop");

    // The same tree from any hop's request id, or the trace id.
    let (by_trace, _) = trace(&server, TRACE).await;
    let (by_last, _) = trace(&server, last["request_id"].as_str().unwrap()).await;
    assert_eq!(by_trace, by_last);

    // The waterfall names every hop, in order under their parents.
    let out = server.cli(&["trace", &front_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&format!("trace {TRACE}  ")), "{text}");
    let order: Vec<usize> = [
        "front [server]",
        "send orders",
        "wait orders",
        "worker [consumer]",
        "put main",
        "hop [consumer]",
        "last [server]",
        "* forward",
    ]
    .iter()
    .map(|name| text.find(name).unwrap_or_else(|| panic!("no `{name}` in\n{text}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "out of order:\n{text}");

    // Every invocation's lines, by trace, with its trace id and version.
    let out = server.cli(&["logs", "--trace", TRACE, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reports: Vec<&str> = lines
        .iter()
        .filter(|l| l["stream"] == "platform")
        .map(|l| l["function"].as_str().unwrap())
        .collect();
    for f in ["front", "worker", "hop", "last"] {
        assert!(reports.contains(&f), "no REPORT of {f} in {lines:#?}");
    }
    assert!(
        lines.iter().all(|l| l["trace_id"] == TRACE && l["version"] == 1),
        "{lines:#?}"
    );
    let bad = server.cli(&["logs", "--trace", "not-a-trace"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a trace id"));
}

/// `weft` with `TRACEPARENT` set, as a script inside a traced job runs it.
fn cli_in_trace(server: &Server, traceparent: &str, args: &[&str]) -> std::process::Output {
    crate::support::weft()
        .args(args)
        .env("WEFT_SERVER", &server.admin)
        .env("TRACEPARENT", traceparent)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_sends_and_puts_join_the_callers_trace() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    // A message sent by the CLI: its send, the worker, the bus put and the
    // rule's target are all in the caller's trace.
    let out = cli_in_trace(
        &server,
        &traceparent,
        &["queue", "send", "orders", "--data", "put/main"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    records(&server, "function=last&limit=1", 1).await;
    let spans = spans_once(&server, TRACE, "last").await;
    let send_span = named(&spans, "send orders");
    assert_eq!(send_span["parent_span_id"], CLIENT_SPAN, "{spans:#?}");
    child_of(named(&spans, "wait orders"), send_span);
    child_of(named(&spans, "put main"), named(&spans, "worker"));
    assert!(spans.iter().all(|s| s["trace_id"] == TRACE), "{spans:#?}");

    // An event put through the admin API with a `traceparent` header.
    let other = "0af7651916cd43dd8448eb211c80319c";
    let entry = r#"{"Entries":[{"Source":"probe","DetailType":"relay","Detail":"{}","EventBusName":"main"}]}"#;
    let r = send(
        &crate::support::client(),
        "POST",
        &format!("{}/v1/events/put", server.admin),
        entry,
        &[("traceparent", &format!("00-{other}-b7ad6b7169203331-01"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let spans = spans_once(&server, other, "last").await;
    let put = named(&spans, "put main");
    assert_eq!(put["parent_span_id"], "b7ad6b7169203331", "{spans:#?}");
    child_of(named(&spans, "last"), named(&spans, "hop"));

    // A TRACEPARENT that is not one is refused, naming the variable.
    let out = cli_in_trace(&server, "00-xyz", &["queue", "send", "orders", "--data", "x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TRACEPARENT `00-xyz` is not a W3C traceparent"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_see_their_span_and_their_calls_carry_it() {
    let app = App::new(APP);
    let server = Server::start(&app);
    // The function's `traceparent` is its own span, in the client's trace.
    let client = crate::support::client();
    let parent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let r = send(
        &client,
        "GET",
        &format!("{}/traceparent", server.public),
        "",
        &[("traceparent", &parent)],
    )
    .await;
    let seen = r.body.clone();
    let id = r.headers["weft-request-id"].to_str().unwrap().to_string();
    let rec = record(&server, &id).await;
    assert_eq!(seen, format!("00-{TRACE}-{}-01", rec["span_id"].as_str().unwrap()));
    assert_eq!(rec["parent_span_id"], CLIENT_SPAN);

    // A malformed traceparent starts a trace instead of failing.
    for bad in [
        "00-xyz",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        &"0".repeat(5000),
    ] {
        let r = send(
            &client,
            "GET",
            &format!("{}/traceparent", server.public),
            "",
            &[("traceparent", bad)],
        )
        .await;
        assert_eq!(r.status, 200);
        let rec = record(&server, r.headers["weft-request-id"].to_str().unwrap()).await;
        let trace_id = rec["trace_id"].as_str().unwrap();
        assert_eq!(trace_id.len(), 32);
        assert_ne!(trace_id, TRACE);
        assert_eq!(rec["parent_span_id"], Value::Null);
        assert_eq!(r.body, format!("00-{trace_id}-{}-01", rec["span_id"].as_str().unwrap()));
    }

    // An in-process call: the callee is a child of the caller.
    let r = send(
        &client,
        "GET",
        &format!("{}/call/last/traceparent", server.public),
        "",
        &[("traceparent", &parent)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let caller = record(&server, r.headers["weft-request-id"].to_str().unwrap()).await;
    let callee = &records(&server, "function=last&limit=1", 1).await[0];
    assert_eq!(callee["trace_id"], TRACE);
    assert_eq!(callee["parent_span_id"], caller["span_id"]);
    assert!(
        r.body
            .contains(&format!("00-{TRACE}-{}-01", callee["span_id"].as_str().unwrap())),
        "{}",
        r.body
    );

    // An outgoing request to an allowed host carries the caller's span.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await;
        String::from_utf8_lossy(&head).to_ascii_lowercase()
    });
    let r = send(
        &client,
        "GET",
        &format!("{}/fetch?url=http://127.0.0.1:{port}/", server.public),
        "",
        &[("traceparent", &parent)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let head = tokio::time::timeout(Duration::from_secs(10), got)
        .await
        .unwrap()
        .unwrap();
    let fetcher = record(&server, r.headers["weft-request-id"].to_str().unwrap()).await;
    assert!(
        head.contains(&format!(
            "traceparent: 00-{TRACE}-{}-01",
            fetcher["span_id"].as_str().unwrap()
        )),
        "{head}"
    );

    let r = get(&format!("{}/v1/traces/nothing-here", server.admin)).await;
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("no trace `nothing-here`")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_and_cost_match_the_records_exactly() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let mut ids = Vec::new();
    for path in ["/sleep/30", "/alloc/8", "/sleep/5", "/call/last/hello/x"] {
        let r = get(&format!("{}{path}", server.public)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        ids.push(r.headers["weft-request-id"].to_str().unwrap().to_string());
    }
    for (n, id) in ids.iter().enumerate() {
        let rec = record(&server, id).await;
        let (duration, billed) = (rec["duration_us"].as_u64().unwrap(), rec["billed_ms"].as_u64().unwrap());
        assert_eq!(billed, duration.div_ceil(1000).max(1), "{rec}");
        let memory = rec["memory_bytes"].as_u64().unwrap();
        let peak = rec["peak_memory_bytes"].as_u64().unwrap();
        assert_eq!(memory, 32 << 20, "front's `memory`");
        if n == 0 {
            assert!(
                rec["init_us"].as_u64().is_some(),
                "a cold start has its init time: {rec}"
            );
        }
        if n == 1 {
            assert!(peak >= 8 << 20, "{rec}");
            assert!(rec["init_us"].is_null(), "a warm start has none: {rec}");
        }
        // Its REPORT line, in Lambda's shape.
        let logs = get(&format!("{}/v1/logs?request_id={id}", server.admin)).await.json();
        let report = logs["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["stream"] == "platform")
            .unwrap_or_else(|| panic!("no REPORT for {id}: {logs}"));
        let mut expected = format!(
            "REPORT RequestId: {id}\tDuration: {:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
            duration as f64 / 1000.0,
            memory >> 20,
            peak.div_ceil(1 << 20)
        );
        if let Some(init) = rec["init_us"].as_u64() {
            expected.push_str(&format!("\tInit Duration: {:.2} ms", init as f64 / 1000.0));
        }
        assert_eq!(report["line"], expected.as_str());
    }
    // The call made a record of `last`'s too: cost counts every record.
    let all = records(&server, "limit=100", ids.len() + 1).await;
    let mut by_function: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    for rec in &all {
        let n = |k: &str| rec[k].as_u64().unwrap();
        if rec["function"] == "last" {
            assert_eq!(n("memory_bytes"), 128 << 20, "the default `memory`");
        }
        let entry = by_function
            .entry(rec["function"].as_str().unwrap().to_string())
            .or_default();
        entry.0 += 1;
        entry.1 += n("billed_ms") * n("memory_bytes").div_ceil(1024);
        entry.2 += n("billed_ms") * n("peak_memory_bytes").div_ceil(1024);
    }

    let out = server.cli(&[
        "cost",
        "--json",
        "--per-request",
        "0.000001",
        "--per-gb-second",
        "0.00002",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cost: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cost["prices"]["label"], "given prices");
    let rows = cost["rows"].as_array().unwrap();
    assert_eq!(rows.len(), by_function.len(), "{cost:#}");
    for row in rows {
        let (requests, configured, measured) = by_function[row["key"].as_str().unwrap()];
        assert_eq!(row["requests"], requests);
        assert_eq!(row["configured_kib_ms"], configured);
        assert_eq!(row["measured_kib_ms"], measured);
        let gbs = configured as f64 / (1024.0 * 1024.0 * 1000.0);
        assert_eq!(row["gb_seconds"]["configured"].as_f64().unwrap(), gbs);
        let price = requests as f64 * 0.000001 + gbs * 0.00002;
        assert!(
            (row["cost"]["configured"].as_f64().unwrap() - price).abs() < 1e-15,
            "{row}"
        );
        assert!(row["gb_seconds"]["measured"].as_f64().unwrap() < gbs);
    }
    assert_eq!(cost["total"]["requests"], all.len());

    // The default prices are Lambda's, labelled; the table prints both ways of counting.
    let out = server.cli(&["cost", "--by", "trigger"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("AWS Lambda public x86 on-demand prices"), "{text}");
    assert!(
        text.contains("GB-s configured") && text.contains("GB-s measured"),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("http ")), "{text}");

    // A price table in the manifest replaces the default; a flag still wins.
    app.write(&format!(
        "{APP}\n[pricing]\nlabel = \"rack 4\"\ncurrency = \"EUR\"\nper_request = 0.000002\nper_gb_second = 0.00004\n"
    ));
    let out = deploy(&app, &server);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cost = get(&format!("{}/v1/cost", server.admin)).await.json();
    assert_eq!(cost["prices"]["label"], "rack 4");
    assert_eq!(cost["prices"]["currency"], "EUR");
    let gbs = cost["total"]["gb_seconds"]["configured"].as_f64().unwrap();
    let price = all.len() as f64 * 0.000002 + gbs * 0.00004;
    assert!(
        (cost["total"]["cost"]["configured"].as_f64().unwrap() - price).abs() < 1e-15,
        "{cost}"
    );
    let cost = get(&format!("{}/v1/cost?per_request=0", server.admin)).await.json();
    assert_eq!(cost["prices"]["per_request"], 0.0);
    assert_eq!(cost["prices"]["per_gb_second"], 0.00004);

    // Bad questions get clear answers.
    let bad = server.cli(&["cost", "--by", "week"]);
    assert!(!bad.status.success());
    for (query, says) in [
        ("since=soon", "query parameter `since`"),
        ("by=week", "`week` is not a way to group cost"),
        ("per_gb_second=-1", "must be a price of 0 or more"),
        ("since_us=abc", "must be a whole number"),
    ] {
        let r = get(&format!("{}/v1/cost?{query}", server.admin)).await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap().contains(says),
            "{query}: {}",
            r.body
        );
    }
}

const METERED: &str = r#"
[app]
name = "metered"

[function.probe]
source = "PROBE"
publish = ["bus:main", "queue:jobs"]

[queue.jobs]
backoff = "100ms"
max_receives = 1
dead_letter = "jobs-dlq"

[queue.jobs-dlq]

[queue.idle]

[[trigger]]
queue = "jobs"
function = "probe"

[bus.main]

[rule.relay]
bus = "main"
pattern = '{"source": ["probe"]}'
[[rule.relay.target]]
queue = "idle"

[schedule.tick]
expression = "rate(1 second)"
function = "probe"

[[route]]
path = "/{*rest}"
function = "probe"
"#;

/// One sample: family, its type, sample name, labels, value.
type Sample = (String, String, String, std::collections::BTreeMap<String, String>, f64);

/// `/metrics` read by the Prometheus project's own parser (Python's
/// `prometheus_client`, which `scripts/setup` installs): every sample as
/// (family, type, sample name, labels, value).
fn parse_metrics(text: &str) -> Vec<Sample> {
    use std::io::Write;
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([family.name, family.type, s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("Debian's python3 (scripts/setup installs python3-prometheus-client)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_read_with_the_prometheus_parser() {
    let app = App::new(METERED);
    let server = Server::start(&app);
    for path in ["/hello/a", "/hello/b", "/trap", "/alloc/4", "/send/jobs?fail"] {
        let r = get(&format!("{}{path}", server.public)).await;
        assert!(r.status < 600, "{}", r.body);
    }
    let client = crate::support::client();
    let entry = r#"{"Entries":[{"Source":"probe","DetailType":"tick","Detail":"{}"}]}"#;
    for _ in 0..2 {
        let r = send(&client, "POST", &format!("{}/put/main", server.public), entry, &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // The failing job is dead-lettered, and the schedule fires.
    let mut samples = Vec::new();
    for _ in 0..100 {
        let r = get(&format!("{}/metrics", server.admin)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
        samples = parse_metrics(&r.body);
        let has = |name: &str| samples.iter().any(|s| s.2 == name);
        let fired = samples
            .iter()
            .any(|s| s.2 == "faas_invocations_total" && s.3.get("trigger").map(String::as_str) == Some("event"));
        if has("weft_queue_dead_lettered_total") && has("weft_schedule_fires_total") && fired {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let value = |sample: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .find(|s| s.2 == sample && labels.iter().all(|(k, v)| s.3.get(*k).map(String::as_str) == Some(*v)))
            .map(|s| s.4)
            .unwrap_or_else(|| panic!("no {sample} {labels:?} in {samples:#?}"))
    };
    let kind = |family: &str| -> &str {
        samples
            .iter()
            .find(|s| s.0 == family)
            .map(|s| s.1.as_str())
            .unwrap_or_else(|| panic!("no family {family}"))
    };
    assert_eq!(kind("faas_invocations"), "counter");
    let http = [("function", "probe"), ("trigger", "http"), ("outcome", "success")];
    assert!(value("faas_invocations_total", &http) >= 4.0);
    assert_eq!(
        value("faas_invocations_total", &[("trigger", "http"), ("outcome", "trap")]),
        1.0
    );
    assert_eq!(value("faas_errors_total", &[("outcome", "trap")]), 1.0);
    assert_eq!(kind("faas_invoke_duration_seconds"), "histogram");
    let count = value(
        "faas_invoke_duration_seconds_count",
        &[("function", "probe"), ("trigger", "http")],
    );
    assert_eq!(
        count,
        value(
            "faas_invoke_duration_seconds_bucket",
            &[("trigger", "http"), ("le", "+Inf")]
        )
    );
    assert!(value("faas_mem_usage_bytes_bucket", &[("le", "+Inf")]) >= count);
    assert!(value("faas_mem_usage_bytes_sum", &[]) >= 4.0 * 1048576.0);
    assert_eq!(value("faas_coldstarts_total", &[("function", "probe")]), 1.0);
    assert_eq!(kind("faas_init_duration_seconds"), "histogram");
    assert!(
        value("faas_invocations_total", &[("trigger", "event")]) >= 1.0,
        "fires run as async invocations"
    );
    assert!(
        value(
            "weft_schedule_fires_total",
            &[("schedule", "tick"), ("outcome", "delivered")]
        ) >= 1.0
    );
    assert_eq!(value("weft_queue_dead_lettered_total", &[("queue", "jobs")]), 1.0);
    assert_eq!(
        value("weft_queue_messages", &[("queue", "jobs-dlq"), ("state", "visible")]),
        1.0
    );
    assert_eq!(
        value("weft_queue_messages", &[("queue", "idle"), ("state", "visible")]),
        2.0
    );
    assert!(value("weft_queue_oldest_message_age_seconds", &[("queue", "idle")]) > 0.0);
    assert_eq!(
        value("weft_queue_oldest_message_age_seconds", &[("queue", "jobs")]),
        0.0
    );
    assert_eq!(
        value("weft_bus_events_matched_total", &[("bus", "main"), ("rule", "relay")]),
        2.0
    );
    assert_eq!(
        value("weft_bus_events_failed_total", &[("bus", "main"), ("rule", "relay")]),
        0.0
    );
    assert!(value("weft_instance_slots", &[]) > 0.0);
    assert!(value("weft_invocation_slots", &[]) > 0.0);
    assert!(value("weft_instances_in_use", &[]) >= 0.0);
    assert!(value("weft_store_commit_seconds_count", &[]) >= 1.0);
    assert!(value("weft_store_commit_operations_count", &[]) >= 1.0);
    assert_eq!(value("weft_connections_shed_total", &[("listener", "app")]), 0.0);
    assert_eq!(value("weft_telemetry_shed_total", &[("kind", "records")]), 0.0);
}

type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>>;

/// A real OTLP receiver on loopback, speaking both transports: every span
/// of every `ExportTraceServiceRequest` posted to `/v1/traces`
/// (HTTP/protobuf) or sent to the gRPC export call (HTTP/2, with gRPC's
/// framing and status trailers), decoded, with the resource's
/// `service.name` and the transport (`http` or `grpc`). With `tls`, it
/// serves HTTPS only, with ALPN `h2` and `http/1.1`.
struct Collector {
    url: String,
    spans: Received,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn collector() -> Collector {
    collector_with(None).await
}

/// What one request to the collector carried, decoded, or why not.
fn received(
    path: &str,
    content_type: &str,
    body: bytes::Bytes,
) -> Result<
    (
        &'static str,
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
    ),
    String,
> {
    use prost::Message;
    let decode = |b: &[u8]| {
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(b)
            .map_err(|e| e.to_string())
    };
    match (path, content_type) {
        ("/v1/traces", "application/x-protobuf") => Ok(("http", decode(&body)?)),
        (weft_telemetry::otlp::GRPC_EXPORT, "application/grpc") => {
            let (head, message) = body.split_at_checked(5).ok_or("a gRPC frame has 5 bytes of header")?;
            let length = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
            if head[0] != 0 || length != message.len() {
                return Err(format!(
                    "not one uncompressed gRPC message: {head:?}, {} bytes",
                    message.len()
                ));
            }
            Ok(("grpc", decode(message)?))
        }
        _ => Err(format!("nothing is served at {path} as {content_type}")),
    }
}

async fn collector_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Collector {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr().unwrap());
    let spans: Received = Default::default();
    let seen = spans.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (seen, tls) = (seen.clone(), tls.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let path = request.uri().path().to_string();
                        let content_type = request.headers()["content-type"].to_str().unwrap().to_string();
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let got = received(&path, &content_type, body);
                        let (status, grpc) = match got {
                            Ok((transport, export)) => {
                                for rs in export.resource_spans {
                                    let service = rs
                                        .resource
                                        .iter()
                                        .flat_map(|r| r.attributes.iter())
                                        .find(|a| a.key == "service.name")
                                        .and_then(|a| a.value.as_ref()?.value.as_ref())
                                        .map(|v| format!("{transport} {v:?}"))
                                        .unwrap_or_default();
                                    for ss in rs.scope_spans {
                                        for s in ss.spans {
                                            seen.lock().unwrap().push((service.clone(), s));
                                        }
                                    }
                                }
                                (200, "0")
                            }
                            Err(why) => {
                                eprintln!("collector: {why}");
                                (400, "3")
                            }
                        };
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static(grpc));
                        let body = http_body_util::Full::new(bytes::Bytes::new())
                            .map_err(|never| match never {})
                            .with_trailers(async move { Some(Ok::<_, std::convert::Infallible>(trailers)) });
                        let mut response = hyper::Response::new(body);
                        if content_type != "application/grpc" {
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let server = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                match tls {
                    None => {
                        let _ = server
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    }
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = server
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        }
                    }
                }
            });
        }
    });
    Collector { url, spans, task }
}

/// A certificate for `127.0.0.1`, made now: the acceptor that serves it,
/// and the PEM file that verifies it.
fn self_signed(dir: &std::path::Path) -> (tokio_rustls::TlsAcceptor, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = dir.join("collector.pem");
    std::fs::write(&pem, cert.pem()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)), pem)
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_collectors_over_grpc_and_https() {
    let app = App::new(APP);
    let (acceptor, pem) = self_signed(&app.dir);
    let plain = collector().await;
    let secure = collector_with(Some(acceptor)).await;
    let pem = pem.to_str().unwrap();
    for (otel, protocol, transport) in [
        (&plain, "grpc", "grpc"),
        (&secure, "grpc", "grpc"),
        (&secure, "http/protobuf", "http"),
    ] {
        otel.spans.lock().unwrap().clear();
        let data = app.dir.join(format!("data-{protocol}-{}", &otel.url[..5]));
        let server = Server::start_with_env(
            &app,
            &data,
            &["--otlp-endpoint", &otel.url],
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", pem),
            ],
        );
        let r = get(&format!("{}/hello/x", server.public)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let id = r.headers["weft-request-id"].to_str().unwrap().to_string();
        let mut got = Vec::new();
        for _ in 0..200 {
            got = otel.spans.lock().unwrap().clone();
            if !got.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let front = got
            .iter()
            .find(|(_, s)| s.name == "front")
            .unwrap_or_else(|| panic!("{protocol} to {}: the collector got {got:?}", otel.url));
        assert!(front.0.starts_with(&format!("{transport} ")), "{protocol}: {}", front.0);
        let invocation = front
            .1
            .attributes
            .iter()
            .find(|a| a.key == "faas.invocation_id")
            .unwrap();
        assert_eq!(
            format!("{:?}", invocation.value.as_ref().unwrap().value),
            format!("Some(StringValue({id:?}))")
        );
        let metrics = get(&format!("{}/metrics", server.admin)).await.body;
        assert!(
            metrics
                .lines()
                .any(|l| l == "weft_spans_dropped_total{reason=\"export_failed\"} 0"),
            "{protocol}: {metrics}"
        );
    }

    // A collector whose certificate is not trusted gets nothing: the
    // system's roots do not know it, and the failure is counted.
    let server = Server::start_with(&app, &app.dir.join("data-untrusted"), &["--otlp-endpoint", &secure.url]);
    secure.spans.lock().unwrap().clear();
    assert_eq!(get(&format!("{}/hello/x", server.public)).await.status, 200);
    let mut failed = false;
    for _ in 0..100 {
        let text = get(&format!("{}/metrics", server.admin)).await.body;
        failed = text
            .lines()
            .any(|l| l.starts_with("weft_spans_dropped_total{reason=\"export_failed\"} ") && !l.ends_with(" 0"));
        if failed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed, "an untrusted collector's export fails and is counted");
    assert!(secure.spans.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_a_real_otlp_collector() {
    let otel = collector().await;
    let app = App::new(APP);
    let server = Server::start_with(&app, &app.dir.join("data"), &["--otlp-endpoint", &otel.url]);
    start_chain(&server, &[]).await;
    // Spans leave in batches, about 200 ms after they end.
    let mut got = Vec::new();
    for _ in 0..200 {
        got = otel.spans.lock().unwrap().clone();
        if got.iter().any(|(_, s)| s.name == "last") && got.len() >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trace: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&TRACE[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let find = |name: &str| {
        got.iter().map(|(_, s)| s).find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "the collector got no span `{name}`: {:?}",
                got.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
            )
        })
    };
    for (service, s) in &got {
        assert_eq!(s.trace_id, trace, "{}", s.name);
        assert!(service.contains("\"traced\""), "service.name is the app's: {service}");
    }
    let (front, send_span, wait, worker, put, hop, last) = (
        find("front"),
        find("send orders"),
        find("wait orders"),
        find("worker"),
        find("put main"),
        find("hop"),
        find("last"),
    );
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    assert_eq!(front.kind, SpanKind::Server as i32);
    assert_eq!(send_span.kind, SpanKind::Producer as i32);
    assert_eq!(wait.kind, SpanKind::Consumer as i32);
    assert_eq!(send_span.parent_span_id, front.span_id);
    assert_eq!(wait.parent_span_id, send_span.span_id);
    assert_eq!(worker.parent_span_id, wait.span_id);
    assert_eq!(put.parent_span_id, worker.span_id);
    assert_eq!(last.parent_span_id, hop.span_id);
    assert!(last.events.iter().any(|e| e.name == "forward"));
    assert!(front.end_time_unix_nano > front.start_time_unix_nano);
    let trigger = front.attributes.iter().find(|a| a.key == "faas.trigger").unwrap();
    assert_eq!(
        format!("{:?}", trigger.value.as_ref().unwrap().value),
        "Some(StringValue(\"http\"))"
    );

    let metrics = get(&format!("{}/metrics", server.admin)).await.body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("weft_spans_exported_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_collector_slows_and_fails_nothing() {
    // Nothing listens here: every export fails, and requests do not care.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = App::new(APP);
    let endpoint = format!("http://127.0.0.1:{port}");
    let server = Server::start_with(&app, &app.dir.join("data"), &["--otlp-endpoint", &endpoint]);
    for _ in 0..20 {
        let r = get(&format!("{}/hello/x", server.public)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let mut dropped = 0.0;
    for _ in 0..100 {
        let text = get(&format!("{}/metrics", server.admin)).await.body;
        dropped = text
            .lines()
            .find_map(|l| l.strip_prefix("weft_spans_dropped_total{reason=\"export_failed\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if dropped >= 20.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped >= 20.0, "failed exports are counted, got {dropped}");

    // A bad endpoint stops the start with what to give.
    let out = crate::support::weft()
        .args([
            "up",
            app.dir.to_str().unwrap(),
            "--no-build",
            "--otlp-endpoint",
            "ftp://collector:4318",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("it must start with http:// or https://"), "{err}");
}
