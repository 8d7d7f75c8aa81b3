use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{App, Server, client, get, send, text};

const APP: &str = r#"
[app]
name = "asyncs"

[function.probe]
source = "PROBE"

[function.probe.async]
retries = 1
backoff = "100ms"
on_success = "queue:results"
on_failure = "queue:failures"

[queue.results]

[queue.failures]
"#;

/// The body of the one message `queue` receives, as JSON.
async fn destination_record(server: &Server, queue: &str) -> Value {
    let started = Instant::now();
    loop {
        let r = send(
            &client(),
            "POST",
            &format!("{}/v1/queues/{queue}/receive", server.admin),
            "{}",
            &[],
        )
        .await
        .json();
        if let Some(m) = r["messages"].as_array().and_then(|m| m.first()) {
            return serde_json::from_str(m["body"].as_str().unwrap()).unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "nothing reached {queue}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_async_invocation_answers_202_and_its_result_reaches_on_success() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let out = server.cli(&[
        "invoke",
        "probe",
        "--async",
        "--method",
        "GET",
        "--path",
        "/env/MISSING",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", text(&out.stderr));
    let id = stdout
        .trim()
        .strip_prefix("accepted: invocation ")
        .expect("an invocation id")
        .to_string();
    // /env/MISSING answers 404: a function's own status is not a success.
    let failure = destination_record(&server, "failures").await;
    assert_eq!(failure["requestContext"]["requestId"], id.as_str());
    assert_eq!(failure["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(failure["requestContext"]["approximateInvokeCount"], 2);
    assert_eq!(failure["responseContext"]["statusCode"], 404);

    let body = json!({ "method": "POST", "path": "/echo", "body": "{\"order\":7}", "type": "event" });
    let r = send(
        &client(),
        "POST",
        &format!("{}/v1/functions/probe/invoke", server.admin),
        &body.to_string(),
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let success = destination_record(&server, "results").await;
    assert_eq!(success["requestContext"]["condition"], "Success");
    assert_eq!(success["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(success["requestPayload"]["order"], 7);
    assert!(
        success["responsePayload"]
            .as_str()
            .unwrap()
            .contains("body={\"order\":7}"),
        "{success}"
    );
    assert_eq!(success["record"]["trigger"], "event");
    assert_eq!(success["record"]["outcome"], "success");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_async_invocation_is_retried_then_sent_to_on_failure() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let out = server.cli(&["invoke", "probe", "--async", "--path", "/trap"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let failure = destination_record(&server, "failures").await;
    assert_eq!(failure["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(failure["requestContext"]["approximateInvokeCount"], 2);
    let error = failure["responseContext"]["functionError"].as_str().unwrap();
    assert!(
        error.contains("the function panicked: probe was told to trap"),
        "{error}"
    );
    assert_eq!(failure["record"]["outcome"], "trap");
    let records = get(&format!("{}/v1/invocations?function=probe", server.admin))
        .await
        .json();
    let tries = records["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"] == "event")
        .count();
    assert_eq!(tries, 2, "one attempt and one retry: {records}");

    let bad = json!({ "path": "/", "type": "later" });
    let r = send(
        &client(),
        "POST",
        &format!("{}/v1/functions/probe/invoke", server.admin),
        &bad.to_string(),
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        "`type` must be `request_response` or `event`, got `later`"
    );
}
