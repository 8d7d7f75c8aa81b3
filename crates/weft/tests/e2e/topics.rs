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
