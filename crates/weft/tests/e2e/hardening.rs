//! What weft does with clients that misbehave, and how it stops: half-open
//! and idle connections are closed, a full listener answers 503, input
//! that once crashed the server gets a 400, and a shutdown lets running
//! invocations finish and keeps their records.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{App, Server, get, record, send};

const APP: &str = r#"
[app]
name = "hardening"

[function.probe]
source = "PROBE"

[topic.orders]

[[route]]
path = "/hello/{name}"
function = "probe"

[[route]]
path = "/{*rest}"
function = "probe"
"#;

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// Waits until the peer closes `stream` (EOF or reset); false if it is
/// still open at `deadline`.
async fn closed_by(stream: &mut TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn half_open_connections_are_closed_and_others_still_answer() {
    let app = App::new(APP);
    let data = app.dir.join("data");
    let server = Server::start_with(&app, &data, &["--header-timeout", "2s", "--idle-timeout", "30s"]);
    let target = addr(&server.public);
    let mut half_open = Vec::new();
    for _ in 0..2000 {
        let mut stream = TcpStream::connect(&target).await.expect("connects");
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nhost: weft\r\nx-half: ")
            .await
            .expect("writes half a request");
        half_open.push(stream);
    }
    let started = Instant::now();
    let answer = get(&format!("{}/hello/world", server.public)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, "hello, world");

    // Closed within the header timeout (2 s), with slack for a loaded machine.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut still_open = 0;
    for stream in &mut half_open {
        if !closed_by(stream, deadline).await {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open,
        0,
        "half-open connections still open after {:?}",
        started.elapsed()
    );
    let again = get(&format!("{}/hello/again", server.public)).await;
    assert_eq!(again.body, "hello, again");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = App::new(APP);
    let data = app.dir.join("data");
    // Headers may take 30 s, so only the idle timeout can close it this soon.
    let server = Server::start_with(&app, &data, &["--idle-timeout", "1s", "--header-timeout", "30s"]);
    let mut stream = TcpStream::connect(addr(&server.public)).await.unwrap();
    stream
        .write_all(b"GET /hello/idle HTTP/1.1\r\nhost: weft\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    assert!(
        closed_by(&mut stream, deadline).await,
        "the idle connection stayed open"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_listener_answers_503_and_recovers() {
    let app = App::new(APP);
    let data = app.dir.join("data");
    let server = Server::start_with(&app, &data, &["--max-connections", "4", "--header-timeout", "30s"]);
    let target = addr(&server.public);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&target).await.unwrap());
    }
    // Let the server accept them all before the next one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = TcpStream::connect(&target).await.unwrap();
    let _ = extra.write_all(b"GET /hello/x HTTP/1.1\r\nhost: weft\r\n\r\n").await;
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), extra.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry"), "{answer}");
    drop(held);
    // Once the held connections are gone, requests are served again.
    let mut last = None;
    for _ in 0..50 {
        let r = send(
            &crate::support::client(),
            "GET",
            &format!("{}/hello/back", server.public),
            "",
            &[],
        )
        .await;
        if r.status == 200 {
            last = None;
            break;
        }
        last = Some((r.status, r.body));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        last, None,
        "the server did not serve again after the connections closed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_base64_in_a_cloudevent_is_a_400_that_names_it() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let url = format!("{}/events/orders", server.public);
    for bad in ["====", "a", "not base64!", "AAEC/w="] {
        let event = serde_json::json!({
            "specversion": "1.0", "id": "e1", "source": "/test", "type": "t", "data_base64": bad,
        });
        let r = send(
            &crate::support::client(),
            "POST",
            &url,
            &event.to_string(),
            &[("content-type", "application/cloudevents+json")],
        )
        .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap().contains("`data_base64`"),
            "{}",
            r.body
        );
    }
    let batch = serde_json::json!([
        {"specversion": "1.0", "id": "e2", "source": "/test", "type": "t", "data_base64": "aGk="},
        {"specversion": "1.0", "id": "e3", "source": "/test", "type": "t", "data_base64": "===="},
    ]);
    let r = send(
        &crate::support::client(),
        "POST",
        &url,
        &batch.to_string(),
        &[("content-type", "application/cloudevents-batch+json")],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("event #2"), "{}", r.body);
    // Nothing of the refused batch was kept, and the server still serves.
    let good =
        serde_json::json!({"specversion": "1.0", "id": "e2", "source": "/test", "type": "t", "data_base64": "aGk="});
    let r = send(
        &crate::support::client(),
        "POST",
        &url,
        &good.to_string(),
        &[("content-type", "application/cloudevents+json")],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["duplicates"], 0, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declared_body_over_the_limit_is_refused_before_the_function_runs() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let mut stream = TcpStream::connect(addr(&server.public)).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: weft\r\ncontent-length: 999999999999\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("at most 6291456 bytes"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_running_invocations_finish_and_keeps_their_records() {
    let app = App::new(APP);
    let data = app.dir.join("data");
    let mut server = Server::start_with(&app, &data, &[]);
    let url = format!("{}/sleep/1500", server.public);
    let running = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stopping = Instant::now();
    server.interrupt();
    let answer = running.await.unwrap();
    assert_eq!(answer.status, 200, "the running request was cut: {}", answer.body);
    let request_id = answer.headers["weft-request-id"].to_str().unwrap().to_string();
    let status = tokio::task::block_in_place(|| server.wait_exit(Duration::from_secs(20)))
        .expect("weft stops after its work is done");
    assert!(status.success(), "{status:?}");
    // Workers (trigger deliveries, schedules, housekeeping) did not hold it up.
    assert!(stopping.elapsed() < Duration::from_secs(15), "{:?}", stopping.elapsed());

    let again = Server::start_with(&app, &data, &[]);
    let kept = record(&again, &request_id).await;
    assert_eq!(kept["outcome"], "success");
    assert_eq!(kept["trigger"], "http");
}

#[test]
fn bounds_out_of_range_are_refused_with_the_range() {
    for (flag, value, says) in [
        ("--shutdown-timeout", "1h", "at most 15m"),
        ("--header-timeout", "10ms", "from 100ms to 1h"),
        ("--idle-timeout", "forever", "--idle-timeout"),
        ("--max-connections", "0", "--max-connections"),
    ] {
        let out = crate::support::weft().args(["up", ".", flag, value]).output().unwrap();
        let err = crate::support::text(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was taken");
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}
