use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{App, Server, client, get, send};

const APP: &str = r#"
[app]
name = "topics"

[function.probe]
source = "PROBE"

[function.publisher]
source = "PROBE"
publish = ["topic:orders"]

[queue.audit]
[queue.big]
[queue.sub-dlq]

[topic.orders]

[[subscription]]
topic = "orders"
function = "probe"
filter = '{"type": ["order.placed"]}'
max_receives = 2
backoff = "100ms"
dead_letter = "sub-dlq"

[[subscription]]
topic = "orders"
queue = "audit"

[[subscription]]
topic = "orders"
queue = "big"
filter = '{"data": {"amount": [{"numeric": [">", 100]}]}}'
"#;

async fn visible(server: &Server, queue: &str) -> u64 {
    get(&format!("{}/v1/queues/{queue}", server.admin)).await.json()["stats"]["visible"]
        .as_u64()
        .unwrap()
}

async fn post(server: &Server, content_type: &str, body: &str, headers: &[(&str, &str)]) -> crate::support::Response {
    let mut all = vec![("content-type", content_type)];
    all.extend_from_slice(headers);
    send(
        &client(),
        "POST",
        &format!("{}/events/orders", server.public),
        body,
        &all,
    )
    .await
}

fn binary(id: &'static str, event_type: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("ce-specversion", "1.0"),
        ("ce-id", id),
        ("ce-source", "shop"),
        ("ce-type", event_type),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn events_fan_out_to_matching_subscriptions_in_every_content_mode() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let r = post(
        &server,
        "application/json",
        r#"{"amount":150}"#,
        &binary("e1", "order.placed"),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["accepted"], 1);
    let structured =
        json!({ "specversion": "1.0", "id": "e2", "source": "shop", "type": "order.paid", "data": { "amount": 50 } });
    let r = post(&server, "application/cloudevents+json", &structured.to_string(), &[]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let batch = json!([
        { "specversion": "1.0", "id": "e3", "source": "shop", "type": "order.placed", "data": { "amount": 500 } },
        { "specversion": "1.0", "id": "e4", "source": "shop", "type": "order.shipped", "data_base64": "aGk=" }
    ]);
    let r = post(&server, "application/cloudevents-batch+json", &batch.to_string(), &[]).await;
    assert_eq!((r.status, r.json()["accepted"].as_u64()), (202, Some(2)), "{}", r.body);
    // Published again: acknowledged, not stored twice.
    let r = post(
        &server,
        "application/json",
        r#"{"amount":150}"#,
        &binary("e1", "order.placed"),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["duplicates"].as_u64()),
        (202, Some(1)),
        "{}",
        r.body
    );

    assert_eq!(
        visible(&server, "audit").await,
        4,
        "every event reaches the unfiltered subscription once"
    );
    assert_eq!(visible(&server, "big").await, 2, "amount > 100: e1 and e3");
    let audit = get(&format!("{}/v1/queues/audit/messages?limit=10", server.admin))
        .await
        .json();
    let first = &audit["messages"][0];
    assert_eq!(
        (first["id"].as_str(), first["attributes"]["source"].as_str()),
        (Some("e1"), Some("shop"))
    );
    assert_eq!(first["attributes"]["type"], "order.placed");
    assert_eq!(audit["messages"][3]["body"], "hi", "data_base64 is decoded");

    // The function subscription got the two order.placed events, as CloudEvents.
    let started = Instant::now();
    loop {
        let logs = get(&format!("{}/v1/logs?function=probe", server.admin)).await.json();
        let lines: Vec<String> = logs["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["line"].as_str().unwrap().to_string())
            .collect();
        if lines.iter().any(|l| l == r#"event e1 receives 1 body {"amount":150}"#)
            && lines.iter().any(|l| l.starts_with("event e3 "))
        {
            assert!(
                !lines
                    .iter()
                    .any(|l| l.starts_with("event e2 ") || l.starts_with("event e4 ")),
                "{lines:?}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "deliveries missing: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_events_get_400s_that_name_the_attribute() {
    let app = App::new(APP);
    let server = Server::start(&app);
    /// Content type, body, headers, and the text the error must contain.
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("application/json", "{}".into(), vec![("ce-specversion", "1.0"), ("ce-id", "x"), ("ce-source", "s")], "required attribute `type` is missing"),
        ("application/json", "{}".into(), vec![("ce-specversion", "0.3"), ("ce-id", "x"), ("ce-source", "s"), ("ce-type", "t")], "attribute `specversion` is `0.3`"),
        ("application/json", "{}".into(), [binary("x", "t"), vec![("ce-time", "yesterday")]].concat(), "attribute `time`"),
        ("application/cloudevents+json", "not json".into(), vec![], "the body is not JSON"),
        (
            "application/cloudevents-batch+json",
            json!([{ "specversion": "1.0", "id": "a", "source": "s", "type": "t" }, { "specversion": "1.0", "source": "s", "type": "t" }]).to_string(),
            vec![],
            "event #2: required attribute `id` is missing",
        ),
        ("application/cloudevents-batch+json", "[]".into(), vec![], "a batch is a non-empty JSON array"),
    ];
    for (content_type, body, headers, want) in cases {
        let r = post(&server, content_type, &body, &headers).await;
        assert_eq!(r.status, 400, "{want}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(want), "expected `{want}` in `{error}`");
    }
    assert_eq!(
        visible(&server, "audit").await,
        0,
        "nothing of a refused request is kept"
    );
    let r = send(
        &client(),
        "POST",
        &format!("{}/events/nope", server.public),
        "{}",
        &binary("x", "t"),
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_publish_to_the_topics_they_are_granted() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let invoke = |function: &str, path: &str| {
        let url = format!("{}/v1/functions/{function}/invoke", server.admin);
        let body = json!({ "method": "GET", "path": path }).to_string();
        async move { send(&client(), "POST", &url, &body, &[]).await.json() }
    };
    let r: Value = invoke("publisher", "/publish/orders?hello").await;
    assert_eq!(r["status"], 202, "{r}");
    let audit = get(&format!("{}/v1/queues/audit/messages", server.admin)).await.json();
    assert_eq!(
        audit["messages"][0]["attributes"]["source"],
        "/weft/functions/publisher"
    );
    assert_eq!(audit["messages"][0]["body"], "hello");
    let r: Value = invoke("probe", "/publish/orders?sneaky").await;
    assert_eq!(r["status"], 502);
    assert!(
        r["body"]
            .as_str()
            .unwrap()
            .contains("function `probe` may not publish to topic `orders`: add \"topic:orders\""),
        "{r}"
    );
}

/// A loopback HTTP endpoint recording each request's `ce-id` and
/// `ce-source`; it answers 500 to ids starting with `fail`.
async fn endpoint() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(|v| v.trim().to_string()))
                        .unwrap_or_default()
                };
                let (id, source) = (header("ce-id"), header("ce-source"));
                let status = if id.starts_with("fail") {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                record.lock().unwrap().push((id, source));
                let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, seen, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn http_subscriptions_get_cloudevents_with_retries_and_dead_letters() {
    let (addr, seen, task) = endpoint().await;
    let app = App::new(&format!(
        r#"
[app]
name = "hooks"

[queue.hook-dlq]

[topic.orders]

[[subscription]]
topic = "orders"
url = "http://{addr}/hook"
max_receives = 2
backoff = "100ms"
dead_letter = "hook-dlq"
"#
    ));
    let server = Server::start(&app);
    for id in ["ok-1", "fail-1"] {
        let headers = [
            ("ce-specversion", "1.0"),
            ("ce-id", id),
            ("ce-source", "shop"),
            ("ce-type", "order.placed"),
        ];
        let r = send(
            &client(),
            "POST",
            &format!("{}/events/orders", server.public),
            "{}",
            &headers,
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let started = Instant::now();
    let dlq = loop {
        let dlq = get(&format!("{}/v1/queues/hook-dlq/messages", server.admin))
            .await
            .json();
        if dlq["messages"].as_array().is_some_and(|m| !m.is_empty()) {
            break dlq;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing reached the dead-letter queue: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dlq["messages"][0]["id"], "fail-1");
    assert_eq!(
        dlq["messages"][0]["last_error"],
        format!("http://{addr}/hook answered 500")
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.iter().filter(|(id, _)| id == "ok-1").count(), 1, "{seen:?}");
    assert_eq!(seen.iter().filter(|(id, _)| id == "fail-1").count(), 2, "{seen:?}");
    assert!(seen.iter().all(|(_, source)| source == "shop"), "{seen:?}");
    task.abort();
}
