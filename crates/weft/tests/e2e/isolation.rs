use std::time::{Duration, Instant};

use crate::support::{App, Server, get, record};

const APP: &str = r#"
[app]
name = "isolation"

[function.probe]
source = "PROBE"
memory = "16MB"
timeout = "2s"

[function.open]
source = "PROBE"
allowed_hosts = ["127.0.0.1:*"]

[[route]]
path = "/{*rest}"
function = "probe"

[[route]]
path = "/hello/{name}"
function = "probe"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_fails_alone_with_the_request_id() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let r = get(&format!("{}/trap", server.public)).await;
    assert_eq!(r.status, 500);
    let body = r.json();
    let message = body["error"].as_str().unwrap();
    assert!(
        message.starts_with("function `probe` trapped: the function panicked: probe was told to trap"),
        "{message}"
    );
    let id = body["request_id"].as_str().unwrap();
    assert_eq!(r.headers["weft-request-id"], id);
    let rec = record(&server, id).await;
    assert_eq!(
        (rec["outcome"].as_str(), rec["status"].as_u64()),
        (Some("trap"), Some(500))
    );

    let r = get(&format!("{}/hello/again", server.public)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "hello, again"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_loop_is_stopped_at_the_timeout() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let started = Instant::now();
    let r = get(&format!("{}/loop", server.public)).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    let body = r.json();
    assert_eq!(
        body["error"],
        "function `probe` timed out after 2s (its `timeout` in weft.toml)"
    );
    assert!(
        took >= Duration::from_secs(2),
        "stopped after {took:?}, before the timeout"
    );
    let rec = record(&server, body["request_id"].as_str().unwrap()).await;
    assert_eq!(rec["outcome"], "timeout");
    assert_eq!(get(&format!("{}/hello/x", server.public)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_past_the_limit_fails_naming_the_limit() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let r = get(&format!("{}/alloc/64", server.public)).await;
    assert_eq!(r.status, 500);
    let body = r.json();
    assert_eq!(
        body["error"],
        "function `probe` exceeded its memory limit of 16MB (raise `memory` in [function.probe] of weft.toml)"
    );
    let rec = record(&server, body["request_id"].as_str().unwrap()).await;
    assert_eq!(rec["outcome"], "memory_limit");

    let r = get(&format!("{}/alloc/4", server.public)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rec = record(&server, r.headers["weft-request-id"].to_str().unwrap()).await;
    let peak = rec["peak_memory_bytes"].as_u64().unwrap();
    assert!((4 << 20..=16 << 20).contains(&peak), "peak memory {peak}");
}

/// A real HTTP server on loopback for functions to call.
async fn upstream() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream")
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_http_reaches_only_allowed_hosts() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let (addr, task) = upstream().await;

    let r = get(&format!("{}/fetch?url=http://{addr}/", server.public)).await;
    assert_eq!(r.status, 502, "{}", r.body);
    let port = addr.rsplit(':').next().unwrap();
    let expected = format!(
        "outbound HTTP to `127.0.0.1:{port}` is not allowed for function `probe`: add \"127.0.0.1:{port}\" to `allowed_hosts` in [function.probe] of weft.toml"
    );
    assert!(r.body.contains(&expected), "{}", r.body);

    // The refusal is also in the function's log, tagged with the request.
    let id = r.headers["weft-request-id"].to_str().unwrap();
    let logs = get(&format!("{}/v1/logs?request_id={id}", server.admin)).await.json();
    assert!(logs["lines"][0]["line"].as_str().unwrap().contains(&expected), "{logs}");

    // `open` allows 127.0.0.1 on any port; call it through the admin API.
    let invoke = serde_json::json!({ "method": "GET", "path": format!("/fetch?url=http://{addr}/") });
    let url = format!("{}/v1/functions/open/invoke", server.admin);
    let r = crate::support::send(&crate::support::client(), "POST", &url, &invoke.to_string(), &[])
        .await
        .json();
    assert_eq!(
        (r["status"].as_u64(), r["body"].as_str()),
        (Some(200), Some("upstream status 200: upstream"))
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn others_answer_while_one_function_loops() {
    let app = App::new(APP.replace("timeout = \"2s\"", "timeout = \"20s\"").as_str());
    let server = Server::start(&app);
    let looping = tokio::spawn({
        let url = format!("{}/loop", server.public);
        async move { (get(&url).await, Instant::now()) }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let client = crate::support::client();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (client, url) = (client.clone(), format!("{}/hello/n{i}", server.public));
        tasks.push(tokio::spawn(async move {
            crate::support::send(&client, "GET", &url, "", &[]).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        assert_eq!((r.status, r.body), (200, format!("hello, n{i}")));
    }
    let all_answered = Instant::now();
    let (r, loop_ended) = looping.await.unwrap();
    assert_eq!(r.status, 504);
    assert!(
        all_answered < loop_ended,
        "the 200 requests had to wait for the looping one"
    );
}
