//! Deployed workflows on the real binary: a standard order workflow that
//! calls three functions and compensates when the card is declined, that
//! survives SIGKILL during a Wait and during a Task and resumes with the
//! right history; an express workflow behind a route; a bus rule starting
//! an execution; and the mistakes a deploy, a start or a stop refuses.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{App, Server, client, deploy, function_lines, get, send, text};

const APP: &str = r#"
[app]
name = "shop"

[function.reserve]
source = "PROBE"

[function.charge]
source = "PROBE"

[function.ship]
source = "PROBE"

[function.release]
source = "PROBE"

[workflow.order]
definition = "order.asl.json"

[workflow.quote]
definition = "quote.asl.yaml"
type = "express"

[workflow.fanout]
definition = "fanout.asl.json"

[function.approver]
source = "PROBE"
publish = ["workflow:approval"]

[queue.approvals]

[workflow.approval]
definition = "approval.asl.json"

[workflow.parent]
definition = "parent.asl.json"

[[route]]
method = "POST"
path = "/quote"
workflow = "quote"

[rule.orders]
pattern = '{"source": ["shop"]}'

[[rule.orders.target]]
workflow = "order"
input_path = "$.detail"
"#;

/// Reserve, wait `pause` seconds, charge (the card says how), ship; a
/// declined card releases the stock and fails the order. Reserve keeps who
/// reserved in a variable, and Ship, written in JSONata, reads it.
fn order() -> Value {
    json!({
        "StartAt": "Reserve",
        "States": {
            "Reserve": {
                "Type": "Task", "Resource": "function:reserve",
                "Parameters": { "step": "reserve", "order.$": "$.order" },
                "ResultSelector": { "by.$": "$.function" }, "ResultPath": "$.reserved",
                "Assign": { "reservedBy.$": "$.function" }, "Next": "Pause"
            },
            "Pause": { "Type": "Wait", "SecondsPath": "$.pause", "Next": "Charge" },
            "Charge": {
                "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": { "FunctionName": "charge", "Payload": { "step.$": "$.card", "ms.$": "$.charge_ms", "error": "CardDeclined" } },
                "ResultSelector": { "by.$": "$.Payload.function" }, "ResultPath": "$.charged",
                "Catch": [ { "ErrorEquals": ["CardDeclined"], "ResultPath": "$.failure", "Next": "Release" } ],
                "Next": "Ship"
            },
            "Ship": {
                "Type": "Task", "QueryLanguage": "JSONata", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:ship",
                "Arguments": { "step": "ship", "for": "{% $reservedBy %}" },
                "Output": "{% $merge([$states.input, {'shipped': {'state': $states.result.state}, 'reservedBy': $states.result.input.for}]) %}",
                "End": true
            },
            "Release": {
                "Type": "Task", "Resource": "function:release", "Parameters": { "step": "release" },
                "ResultPath": null, "Next": "Declined"
            },
            "Declined": { "Type": "Fail", "Error": "Order.Declined", "Cause": "the card was declined" }
        }
    })
}

/// An express workflow written in YAML, as Step Functions also reads.
const QUOTE: &str = r#"
Comment: Prices the items, then counts them.
StartAt: Price
States:
  Price:
    Type: Task
    Resource: function:charge
    Parameters:
      step: price
      items.$: $.items
    ResultSelector:
      by.$: $.function
      items.$: $.input.items
    Next: Total
  Total:
    Type: Pass
    Parameters:
      by.$: $.by
      count.$: States.ArrayLength($.items)
    End: true
"#;

/// Ships each item, at most 8 at once.
fn fanout() -> Value {
    json!({
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 8,
                "ItemSelector": { "step": "sleep", "ms": 5, "item.$": "$$.Map.Item.Value" },
                "ItemProcessor": { "StartAt": "Ship", "States": {
                    "Ship": { "Type": "Task", "Resource": "function:ship", "OutputPath": "$.input.item", "End": true }
                } },
                "End": true
            }
        }
    })
}

/// A function asked to approve with a task token, then a person, through
/// a queue.
fn approval() -> Value {
    json!({
        "StartAt": "Ask",
        "States": {
            "Ask": {
                "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                "Parameters": { "FunctionName.$": "$.approver", "Payload": {
                    "step": "callback", "token.$": "$$.Task.Token", "workflow": "approval", "answer.$": "$.answer" } },
                "ResultPath": "$.approved", "Next": "Person"
            },
            "Person": {
                "Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": { "QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/approvals",
                    "MessageBody": { "token.$": "$$.Task.Token", "order.$": "$.order" } },
                "HeartbeatSecondsPath": "$.heartbeat", "ResultPath": "$.person",
                "Catch": [ { "ErrorEquals": ["States.HeartbeatTimeout"], "ResultPath": "$.timeout", "Next": "Linger" } ],
                "End": true
            },
            "Linger": { "Type": "Wait", "SecondsPath": "$.linger", "Next": "TimedOut" },
            "TimedOut": { "Type": "Fail", "Error": "Approval.TimedOut", "CausePath": "$.timeout.Cause" }
        }
    })
}

/// Starts the order workflow three ways: waiting for its output as JSON,
/// not waiting, and waiting for one that fails.
fn parent() -> Value {
    json!({
        "StartAt": "Child",
        "States": {
            "Child": {
                "Type": "Task", "Resource": "arn:aws:states:::states:startExecution.sync:2",
                "Parameters": { "StateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:order", "Input.$": "$.order_input" },
                "ResultSelector": { "status.$": "$.Status", "shipped.$": "$.Output.shipped" }, "ResultPath": "$.child", "Next": "Fire"
            },
            "Fire": {
                "Type": "Task", "Resource": "arn:aws:states:::states:startExecution",
                "Parameters": { "StateMachineArn": "order", "Name.$": "$.fire_name",
                    "Input": { "order": 9, "pause": 0, "card": "ok", "charge_ms": 0 } },
                "ResultPath": "$.fired", "Next": "Declined"
            },
            "Declined": {
                "Type": "Task", "Resource": "arn:aws:states:::states:startExecution.sync",
                "Parameters": { "StateMachineArn": "order", "Input": "{\"order\": 8, \"pause\": 0, \"card\": \"fail\", \"charge_ms\": 0}" },
                "Catch": [ { "ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.declined", "Next": "Done" } ],
                "End": true
            },
            "Done": { "Type": "Pass", "End": true }
        }
    })
}

fn app() -> App {
    let app = App::new(APP);
    std::fs::write(app.dir.join("parent.asl.json"), parent().to_string()).unwrap();
    std::fs::write(app.dir.join("approval.asl.json"), approval().to_string()).unwrap();
    std::fs::write(app.dir.join("fanout.asl.json"), fanout().to_string()).unwrap();
    std::fs::write(app.dir.join("order.asl.json"), order().to_string()).unwrap();
    std::fs::write(app.dir.join("quote.asl.yaml"), QUOTE).unwrap();
    app
}

fn input(pause: u64, card: &str, charge_ms: u64) -> Value {
    json!({ "order": 7, "pause": pause, "card": card, "charge_ms": charge_ms })
}

async fn start(server: &Server, name: &str, input: &Value) -> (u16, Value) {
    let body = json!({ "name": name, "input": input }).to_string();
    let url = format!("{}/v1/workflows/order/executions", server.admin);
    let r = send(&client(), "POST", &url, &body, &[("content-type", "application/json")]).await;
    (r.status, r.json())
}

async fn describe(server: &Server, id: &str) -> Value {
    get(&format!("{}/v1/executions/{id}", server.admin)).await.json()
}

/// The whole history, page by page.
async fn history(server: &Server, id: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let h = get(&format!("{}/v1/executions/{id}/history?after={after}", server.admin))
            .await
            .json();
        events.extend(h["events"].as_array().cloned().unwrap_or_default());
        match h["next"].as_u64() {
            Some(next) => after = next,
            None => return events,
        }
    }
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect()
}

/// Waits until the execution's status is not RUNNING.
async fn ended(server: &Server, id: &str) -> Value {
    for _ in 0..400 {
        let view = describe(server, id).await;
        if view["status"] != "RUNNING" {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("execution {id} is still running: {}", describe(server, id).await);
}

/// Waits until the execution's history has an event of `kind`.
async fn reached(server: &Server, id: &str, kind: &str, name: &str) {
    for _ in 0..400 {
        let events = history(server, id).await;
        if events.iter().any(|e| {
            e["type"] == kind
                && e.as_object()
                    .unwrap()
                    .values()
                    .any(|v| v.get("name").and_then(Value::as_str) == Some(name))
        }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "execution {id} never reached {kind} {name}: {:?}",
        types(&history(server, id).await)
    );
}

/// How many times function `f` ran a step (its `step F STATE` lines).
async fn steps(server: &Server, f: &str) -> usize {
    function_lines(server, f)
        .await
        .iter()
        .filter(|l| l.starts_with("step "))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_calls_three_functions_and_compensates_a_declined_card() {
    let app = app();
    let server = Server::start(&app);

    let (status, started) = start(&server, "o-1", &input(0, "ok", 0)).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["status"], "RUNNING");
    let done = ended(&server, "order:o-1").await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["output"]["reserved"], json!({"by": "reserve"}));
    assert_eq!(done["output"]["charged"], json!({"by": "charge"}));
    assert_eq!(done["output"]["shipped"], json!({"state": "Ship#1"}));
    assert_eq!(done["output"]["reservedBy"], "reserve", "{done}");
    let events = history(&server, "order:o-1").await;
    let reserved = events
        .iter()
        .find(|e| e["type"] == "TaskStateExited" && e["stateExitedEventDetails"]["name"] == "Reserve")
        .expect("Reserve exited");
    assert_eq!(
        reserved["stateExitedEventDetails"]["assignedVariables"],
        json!({"reservedBy": "\"reserve\""}),
        "{reserved}"
    );
    assert_eq!(types(&events).first(), Some(&"ExecutionStarted"));
    assert_eq!(types(&events).last(), Some(&"ExecutionSucceeded"));
    assert_eq!(types(&events).iter().filter(|t| **t == "TaskScheduled").count(), 3);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["id"], json!(i + 1), "{e}");
        assert!(e["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    }

    // A declined card is caught: the stock is released, the order fails.
    let (status, _) = start(&server, "o-2", &input(0, "fail", 0)).await;
    assert_eq!(status, 201);
    let done = ended(&server, "order:o-2").await;
    assert_eq!(
        (done["status"].as_str(), done["error"].as_str(), done["cause"].as_str()),
        (Some("FAILED"), Some("Order.Declined"), Some("the card was declined")),
        "{done}"
    );
    assert_eq!(steps(&server, "release").await, 1);
    let events = history(&server, "order:o-2").await;
    assert!(types(&events).contains(&"TaskFailed"), "{:?}", types(&events));

    // The CLI sees the same.
    let out = server.cli(&["workflows", "describe", "order:o-2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Order.Declined"), "{}", text(&out.stdout));
    let out = server.cli(&["workflows", "list", "order", "--status", "SUCCEEDED"]);
    assert_eq!(text(&out.stdout).lines().count(), 1, "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("order:o-1"));
    let out = server.cli(&["workflows", "history", "order:o-1"]);
    assert!(text(&out.stdout).contains("TaskScheduled"), "{}", text(&out.stdout));

    // A name is used once: an ended execution keeps it, as on Step
    // Functions; while one runs, the same start is the same execution.
    let (status, again) = start(&server, "o-1", &input(0, "ok", 0)).await;
    assert_eq!(status, 409, "{again}");
    assert!(
        again["error"]
            .as_str()
            .unwrap()
            .contains("exists already and has ended"),
        "{again}"
    );
    let (status, refused) = start(&server, "o-1", &input(0, "fail", 0)).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("with another input"),
        "{refused}"
    );
    let (status, _) = start(&server, "slow", &input(30, "ok", 0)).await;
    assert_eq!(status, 201);
    let (status, same) = start(&server, "slow", &input(30, "ok", 0)).await;
    assert_eq!((status, same["status"].as_str()), (200, Some("RUNNING")), "{same}");

    // An express workflow behind a route answers with its output.
    let quote = send(
        &client(),
        "POST",
        &format!("{}/quote", server.public),
        r#"{"items": [1, 2, 3]}"#,
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(quote.status, 200, "{}", quote.body);
    assert_eq!(quote.json(), json!({"by": "charge", "count": 3}));
    let bad = send(&client(), "POST", &format!("{}/quote", server.public), "{not json", &[]).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let out = server.cli(&["workflows", "start", "quote", "--input", r#"{"items": []}"#]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (view["status"].as_str(), &view["output"]),
        (Some("SUCCEEDED"), &json!({"by": "charge", "count": 0}))
    );

    // A bus rule starts an execution with the event's detail as input.
    let entry =
        json!({ "Entries": [ { "Source": "shop", "DetailType": "order", "Detail": input(0, "ok", 0).to_string() } ] });
    let put = send(
        &client(),
        "POST",
        &format!("{}/events/put", server.public),
        &entry.to_string(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let mut from_bus = None;
    for _ in 0..200 {
        let list = get(&format!(
            "{}/v1/workflows/order/executions?status=SUCCEEDED",
            server.admin
        ))
        .await
        .json();
        from_bus = list["executions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| !e["name"].as_str().unwrap().starts_with("o-"))
            .cloned();
        if from_bus.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let from_bus = from_bus.expect("the rule started an execution");
    let done = describe(&server, from_bus["id"].as_str().unwrap()).await;
    assert_eq!(done["input"], input(0, "ok", 0), "{done}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standard_execution_killed_during_a_wait_or_a_task_resumes_with_its_history() {
    let app = app();
    let data = app.dir.join("data");
    let server = Server::start_with_data(&app, &data);
    // One waits 10 s; one's charge takes 3 s.
    assert_eq!(start(&server, "waits", &input(10, "ok", 0)).await.0, 201);
    assert_eq!(start(&server, "charges", &input(0, "sleep", 3000)).await.0, 201);
    reached(&server, "order:waits", "WaitStateEntered", "Pause").await;
    reached(&server, "order:charges", "TaskStateEntered", "Charge").await;
    drop(server); // SIGKILL
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted_us = jiff::Timestamp::now().as_microsecond();

    let server = Server::start_with_data(&app, &data);
    for id in ["order:waits", "order:charges"] {
        let done = ended(&server, id).await;
        assert_eq!(done["status"], "SUCCEEDED", "{id}: {done}");
        assert_eq!(done["output"]["shipped"], json!({"state": "Ship#1"}), "{id}");
        // The variable Reserve assigned before the kill is there after it:
        // a resumed run assigns again from the journal.
        assert_eq!(done["output"]["reservedBy"], "reserve", "{id}: {done}");
        let events = history(&server, id).await;
        let kinds = types(&events);
        for once in [
            "ExecutionStarted",
            "WaitStateEntered",
            "WaitStateExited",
            "ExecutionSucceeded",
        ] {
            assert_eq!(
                kinds.iter().filter(|k| **k == once).count(),
                1,
                "{id}: {once} in {kinds:?}"
            );
        }
        assert_eq!(
            kinds.iter().filter(|k| **k == "TaskScheduled").count(),
            3,
            "{id}: {kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == "TaskSucceeded").count(),
            3,
            "{id}: {kinds:?}"
        );
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["id"], json!(i + 1), "{id}: {e}");
        }
    }
    // Each Reserve finished before the kill: its result was journalled,
    // so it never ran again (no invocation of it since the restart).
    let list = get(&format!("{}/v1/invocations?function=reserve&limit=100", server.admin))
        .await
        .json();
    let again = list["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["start_us"].as_i64().unwrap() > restarted_us)
        .count();
    assert_eq!(again, 0, "{list}");
    // The Wait ended at its first deadline: 10 s after it began, not 10 s
    // after the restart (which came at least 2 s later).
    let events = history(&server, "order:waits").await;
    let at = |kind: &str| {
        let e = events.iter().find(|e| e["type"] == kind).unwrap();
        e["timestamp"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap()
    };
    let waited = at("WaitStateExited")
        .duration_since(at("WaitStateEntered"))
        .as_secs_f64();
    assert!((9.9..11.5).contains(&waited), "the wait took {waited} s");
}

#[tokio::test(flavor = "multi_thread")]
async fn mistakes_in_workflows_are_refused_with_where_and_how_to_fix() {
    let app = app();
    let server = Server::start(&app);

    // Starts: an unknown workflow, a bad name, input too large, bad JSON.
    let url = |w: &str| format!("{}/v1/workflows/{w}/executions", server.admin);
    let post = |u: String, body: String| async move {
        send(&client(), "POST", &u, &body, &[("content-type", "application/json")]).await
    };
    let r = post(url("nope"), "{}".into()).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = post(url("order"), json!({"name": "has space"}).to_string()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("white space"), "{}", r.body);
    let r = post(url("order"), json!({"name": "a/b"}).to_string()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let big = "x".repeat(300 * 1024);
    let r = post(url("order"), json!({"input": {"big": big}}).to_string()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("262144"), "{}", r.body);
    let r = post(url("order"), "{\"input\": ".into()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = get(&format!("{}/v1/executions/order:none", server.admin)).await;
    assert_eq!(r.status, 404);
    let r = get(&format!("{}/v1/executions/order:none/history", server.admin)).await;
    assert_eq!(r.status, 404);
    let r = get(&format!("{}/v1/workflows/order/executions?status=DONE", server.admin)).await;
    assert_eq!(r.status, 400, "{}", r.body);

    // A running execution stops, ABORTED, with the event at its end.
    assert_eq!(start(&server, "long", &input(60, "ok", 0)).await.0, 201);
    reached(&server, "order:long", "WaitStateEntered", "Pause").await;
    let out = server.cli(&["workflows", "stop", "order:long", "--error", "Ops.Cancelled"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view = describe(&server, "order:long").await;
    assert_eq!(
        (view["status"].as_str(), view["error"].as_str()),
        (Some("ABORTED"), Some("Ops.Cancelled"))
    );
    assert_eq!(
        types(&history(&server, "order:long").await).last(),
        Some(&"ExecutionAborted")
    );

    // Deploys: a broken definition, a Task naming an undeclared function.
    let good = order().to_string();
    std::fs::write(
        app.dir.join("order.asl.json"),
        good.replace("\"Next\":\"Ship\"", "\"Next\":\"Shp\""),
    )
    .unwrap();
    let out = deploy(&app, &server);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains(r#"States.Charge.Next: no state named "Shp"; did you mean "Ship"?"#),
        "{said}"
    );
    std::fs::write(
        app.dir.join("order.asl.json"),
        good.replace("function:release", "function:relase"),
    )
    .unwrap();
    let out = deploy(&app, &server);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("names function `relase`, which is not declared"),
        "{said}"
    );
    // Nothing changed: the deployed order workflow still runs.
    std::fs::write(app.dir.join("order.asl.json"), &good).unwrap();
    assert_eq!(start(&server, "after", &input(0, "ok", 0)).await.0, 201);
    assert_eq!(ended(&server, "order:after").await["status"], "SUCCEEDED");

    // An express route's body that never ends is cut off, not waited for.
    let started = std::time::Instant::now();
    let mut socket = tokio::net::TcpStream::connect(server.public.trim_start_matches("http://"))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    socket
        .write_all(b"POST /quote HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"items\":")
        .await
        .unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(30), socket.read(&mut answer))
        .await
        .expect("an answer before the connection's own timeouts")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());

    // A route may answer only with an express workflow.
    app.write(&APP.replace("workflow = \"quote\"", "workflow = \"order\""));
    let out = deploy(&app, &server);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("which is a standard workflow"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_map_over_a_thousand_items_runs_at_most_max_concurrency_at_once() {
    let app = app();
    let server = Server::start(&app);
    let items: Vec<u64> = (0..1000).collect();
    let url = format!("{}/v1/workflows/fanout/executions", server.admin);
    let body = json!({ "name": "thousand", "input": { "items": items } }).to_string();
    let r = send(&client(), "POST", &url, &body, &[("content-type", "application/json")]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut done = Value::Null;
    for _ in 0..1200 {
        done = describe(&server, "fanout:thousand").await;
        if done["status"] != "RUNNING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done["status"], "SUCCEEDED", "{}", done["error"]);
    assert_eq!(done["output"], json!(items), "each item's output, in the items' order");

    // From the invocation records: a thousand calls, never more than
    // eight at once.
    let list = get(&format!("{}/v1/invocations?function=ship&limit=2000", server.admin))
        .await
        .json();
    let records = list["invocations"].as_array().unwrap();
    assert_eq!(records.len(), 1000);
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for r in records {
        assert_eq!(r["trigger"], "workflow");
        let start = r["start_us"].as_i64().unwrap();
        edges.push((start, 1));
        edges.push((start + r["duration_us"].as_i64().unwrap(), -1));
    }
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    assert!((2..=8).contains(&most), "{most} ran at once");
    let events = history(&server, "fanout:thousand").await;
    assert_eq!(types(&events).iter().filter(|t| **t == "TaskSucceeded").count(), 1000);
    // The history comes in pages of at most 1,000 events.
    let url = format!("{}/v1/executions/fanout:thousand/history", server.admin);
    let first = get(&url).await.json();
    assert_eq!(first["events"].as_array().unwrap().len(), 1000);
    assert_eq!(first["next"], 1000);
    let some = get(&format!("{url}?after=2&limit=5")).await.json();
    let ids: Vec<&Value> = some["events"].as_array().unwrap().iter().map(|e| &e["id"]).collect();
    assert_eq!(
        ids,
        [3, 4, 5, 6, 7].map(Value::from).iter().collect::<Vec<_>>(),
        "{some}"
    );
    let last = get(&format!("{url}?after={}", events.len() - 1)).await.json();
    assert_eq!(last["events"].as_array().unwrap().len(), 1);
    assert!(last.get("next").is_none(), "{last}");
    for bad in ["limit=0", "limit=1001", "after=-1", "limit=many"] {
        let r = get(&format!("{url}?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
}

/// The task tokens waiting in the `approvals` queue, by order.
async fn waiting_tokens(server: &Server, order: u64) -> Option<String> {
    let peek = get(&format!("{}/v1/queues/approvals/messages?limit=100", server.admin))
        .await
        .json();
    peek["messages"].as_array()?.iter().find_map(|m| {
        let body: Value = serde_json::from_str(m["body"].as_str()?).ok()?;
        (body["order"] == order)
            .then(|| body["token"].as_str().map(str::to_string))
            .flatten()
    })
}

async fn token_for(server: &Server, order: u64) -> String {
    for _ in 0..200 {
        if let Some(token) = waiting_tokens(server, order).await {
            return token;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no task token for order {order} reached the queue");
}

async fn start_approval(server: &Server, name: &str, input: Value) {
    let url = format!("{}/v1/workflows/approval/executions", server.admin);
    let body = json!({ "name": name, "input": input }).to_string();
    let r = send(&client(), "POST", &url, &body, &[("content-type", "application/json")]).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn task_tokens_are_answered_by_a_function_and_from_the_cli() {
    let app = app();
    let server = Server::start(&app);
    let asked = |order: u64, approver: &str, answer: &str, heartbeat: u64| json!({ "order": order, "approver": approver, "answer": answer, "heartbeat": heartbeat });

    // The function answers its token; a person answers the queue's.
    start_approval(&server, "a-1", asked(1, "approver", "success", 30)).await;
    let token = token_for(&server, 1).await;
    let out = server.cli(&["workflows", "task-heartbeat", &token]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = server.cli(&["workflows", "task-success", &token, "--output", r#"{"ok": true}"#]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let done = ended(&server, "approval:a-1").await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["output"]["approved"], json!({"approved": true, "by": "approver"}));
    assert_eq!(done["output"]["person"], json!({"ok": true}));
    // A token answered once is answered.
    let out = server.cli(&["workflows", "task-success", &token]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("has ended"), "{}", text(&out.stderr));

    // Forged and altered tokens are refused, and change nothing.
    start_approval(&server, "a-2", asked(2, "approver", "success", 30)).await;
    let token = token_for(&server, 2).await;
    let (head, _) = token.rsplit_once('.').unwrap();
    for forged in [
        "not-a-token".to_string(),
        format!("{head}.AAAAAAAAAAAAAAAAAAAAAA"),
        format!("{token}x"),
    ] {
        let out = server.cli(&["workflows", "task-success", &forged]);
        assert!(!out.status.success(), "{forged}");
        assert!(
            text(&out.stderr).contains("not one this app gave out"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(describe(&server, "approval:a-2").await["status"], "RUNNING");
    let out = server.cli(&[
        "workflows",
        "task-failure",
        &token,
        "--error",
        "Person.Said.No",
        "--cause",
        "too dear",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let done = ended(&server, "approval:a-2").await;
    assert_eq!(
        (done["status"].as_str(), done["error"].as_str(), done["cause"].as_str()),
        (Some("FAILED"), Some("Person.Said.No"), Some("too dear"))
    );

    // Redriven, the person is asked again; the function's answer is kept.
    let out = server.cli(&["workflows", "redrive", "approval:a-2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "approval:a-2 RUNNING");
    let out = server.cli(&["workflows", "redrive", "approval:a-2"]);
    assert!(!out.status.success(), "a running execution is not redriven");
    let mut asked_again = 0;
    for _ in 0..200 {
        let peek = get(&format!("{}/v1/queues/approvals/messages?limit=100", server.admin))
            .await
            .json();
        asked_again = peek["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["body"].as_str().unwrap().contains(&token))
            .count();
        if asked_again == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(asked_again, 2, "the queue was given the token again");
    let out = server.cli(&[
        "workflows",
        "task-success",
        &token,
        "--output",
        r#"{"ok": "second time"}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let done = ended(&server, "approval:a-2").await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["redriveCount"], 1);
    assert_eq!(done["output"]["person"], json!({"ok": "second time"}));
    let kinds = types(&history(&server, "approval:a-2").await)
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    let at = |k: &str| {
        kinds
            .iter()
            .position(|t| t == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert!(
        at("ExecutionFailed") < at("ExecutionRedriven") && at("ExecutionRedriven") < at("ExecutionSucceeded"),
        "{kinds:?}"
    );
    assert_eq!(
        steps(&server, "approver").await,
        2,
        "the function ran for a-1 and a-2, not again for the redrive"
    );

    // The function says no: the task fails with its error.
    start_approval(&server, "a-3", asked(3, "approver", "failure", 30)).await;
    let done = ended(&server, "approval:a-3").await;
    assert_eq!(
        (done["status"].as_str(), done["error"].as_str()),
        (Some("FAILED"), Some("Approval.Denied")),
        "{done}"
    );

    // A function without the grant cannot answer: its call is refused.
    start_approval(&server, "a-4", asked(4, "reserve", "success", 30)).await;
    let done = ended(&server, "approval:a-4").await;
    assert_eq!(done["error"], "CallbackRefused", "{done}");
    assert!(done["cause"].as_str().unwrap().contains("workflow:approval"), "{done}");

    // Nobody answers within HeartbeatSeconds: States.HeartbeatTimeout,
    // caught; an answer that comes after it, while the execution goes on,
    // is refused.
    let mut lingering = asked(5, "approver", "success", 1);
    lingering["linger"] = json!(3);
    start_approval(&server, "a-5", lingering).await;
    let token = token_for(&server, 5).await;
    reached(&server, "approval:a-5", "WaitStateEntered", "Linger").await;
    let out = server.cli(&["workflows", "task-success", &token]);
    assert!(!out.status.success(), "a timed-out task's token is refused");
    assert!(text(&out.stderr).contains("timed out"), "{}", text(&out.stderr));
    let done = ended(&server, "approval:a-5").await;
    assert_eq!(done["error"], "Approval.TimedOut", "{done}");
    assert!(done["cause"].as_str().unwrap().contains("HeartbeatSeconds"), "{done}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_starts_another_and_waits_for_it_or_not() {
    let app = app();
    let server = Server::start(&app);
    let url = format!("{}/v1/workflows/parent/executions", server.admin);
    let body = json!({ "name": "p-1", "input": { "order_input": input(0, "ok", 0), "fire_name": "fired-1" } });
    let r = send(
        &client(),
        "POST",
        &url,
        &body.to_string(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let done = ended(&server, "parent:p-1").await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let output = &done["output"];
    assert_eq!(
        output["child"],
        json!({ "status": "SUCCEEDED", "shipped": { "state": "Ship#1" } })
    );
    assert_eq!(
        output["fired"]["ExecutionArn"], "weft:execution:order:fired-1",
        "{output}"
    );
    assert_eq!(ended(&server, "order:fired-1").await["status"], "SUCCEEDED");
    let declined = &output["declined"];
    assert_eq!(declined["Error"], "States.TaskFailed", "{output}");
    let cause: Value = serde_json::from_str(declined["Cause"].as_str().unwrap()).unwrap();
    assert_eq!(
        (cause["Status"].as_str(), cause["Error"].as_str()),
        (Some("FAILED"), Some("Order.Declined")),
        "{cause}"
    );
    assert!(
        cause["Input"].is_string(),
        ".sync gives the child's input as text: {cause}"
    );
    // The child that waited was named after the parent and its step.
    let children = get(&format!("{}/v1/workflows/order/executions", server.admin))
        .await
        .json();
    let names: Vec<&str> = children["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("p-1-Child-1-")), "{names:?}");
}

/// A span of a trace tree by name, searched depth first.
fn find_span<'a>(node: &'a Value, name: &str) -> Option<&'a Value> {
    if node["name"] == name {
        return Some(node);
    }
    node["children"].as_array()?.iter().find_map(|c| find_span(c, name))
}

#[tokio::test(flavor = "multi_thread")]
async fn each_step_of_an_execution_is_a_span_of_its_trace() {
    let app = app();
    let server = Server::start(&app);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let url = format!("{}/v1/workflows/order/executions", server.admin);
    let body = json!({ "name": "traced", "input": input(1, "ok", 0) }).to_string();
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let r = send(
        &client(),
        "POST",
        &url,
        &body,
        &[("content-type", "application/json"), ("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(ended(&server, "order:traced").await["status"], "SUCCEEDED");
    let mut execution = None;
    for _ in 0..200 {
        let r = get(&format!("{}/v1/traces/{trace}", server.admin)).await;
        if r.status == 200 {
            let tree = r.json();
            execution = tree["roots"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|root| find_span(root, "execute order"))
                .cloned();
            if execution.is_some() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let execution = execution.expect("the execution's span is in the trace the start request named");
    let steps: Vec<&str> = execution["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for step in ["Reserve", "Pause", "Charge", "Ship"] {
        assert!(steps.contains(&step), "{step} in {steps:?}");
    }
    // A task's function runs inside the task's span.
    let reserve = find_span(&execution, "Reserve").unwrap();
    let invoked = reserve["children"].as_array().map_or(0, Vec::len);
    assert_eq!(invoked, 1, "{reserve}");
}
