//! Object buckets (`[bucket.NAME]`): boto3, the AWS SDK for Python,
//! drives the S3 listener with signed requests (uploads, multipart,
//! ranges, listings, copies, conditions, deletes, bad signatures and bad
//! bodies); functions reach their granted buckets at
//! `BUCKET.s3.weft.internal`; every created and removed object reaches a
//! queue as S3's records and a bus as EventBridge's S3 events. Run on the
//! embedded storage and on a real NATS JetStream.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_jetstream::testing::NatsServer;

use crate::support::{App, Server, client, get, repo_root, send, text};

const APP: &str = r#"
[app]
name = "files"

[function.probe]
source = "PROBE"
buckets = ["uploads"]

[function.stranger]
source = "PROBE"

[[route]]
path = "/probe/{*rest}"
function = "probe"

[[route]]
path = "/stranger/{*rest}"
function = "stranger"

[bucket.uploads]
max_object = "64MiB"

[[bucket.uploads.notify]]
events = ["ObjectCreated:*"]
prefix = "docs/"
queue = "created"

[[bucket.uploads.notify]]
events = ["ObjectCreated:*", "ObjectRemoved:*"]
prefix = "big/"
bus = "files"

[bucket.archive]

[queue.created]
[queue.big-events]

[bus.files]

[rule.big-created]
bus = "files"
pattern = '{"source": ["aws.s3"], "detail-type": ["Object Created"], "detail": {"bucket": {"name": ["uploads"]}}}'
[[rule.big-created.target]]
queue = "big-events"
"#;

/// Debian's Python with boto3 in it, from `scripts/setup`.
fn python() -> PathBuf {
    repo_root().join("target/tools/python/bin/python")
}

/// The access key of the S3 listener, from `weft s3 credentials --env`.
fn credentials(server: &Server) -> (String, String) {
    let out = server.cli(&["s3", "credentials", "--env"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let value = |name: &str| {
        shown
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("no {name} in {shown}"))
            .to_string()
    };
    (value("AWS_ACCESS_KEY_ID"), value("AWS_SECRET_ACCESS_KEY"))
}

/// Runs `s3_client.py` against the server: what boto3 saw.
fn boto3(server: &Server) -> Value {
    let (id, secret) = credentials(server);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/s3_client.py");
    let out = Command::new(python())
        .arg(script)
        .arg(server.s3.as_ref().expect("an S3 listener"))
        .args([&id, &secret])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "boto3 failed:\n{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

/// The bodies in `queue`, as JSON, once there are `n` (or 20 s pass).
async fn queued(server: &Server, queue: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let peeked = get(&format!("{}/v1/queues/{queue}/messages?limit=100", server.admin))
            .await
            .json();
        let bodies: Vec<Value> = peeked["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| serde_json::from_str(m["body"].as_str().unwrap()).unwrap())
            .collect();
        if bodies.len() >= n || Instant::now() > deadline {
            return bodies;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sdk_functions_and_events(server: &Server, data: &Path) {
    let r = boto3(server);
    assert_eq!(r["head"]["size"], 12, "{r}");
    assert_eq!(r["head"]["type"], "text/plain");
    assert_eq!(r["head"]["meta"], serde_json::json!({"owner": "ana"}));
    let md5 = format!("\"{:x}\"", md5_of(b"hello, world"));
    assert_eq!(r["head"]["etag"], md5.as_str(), "the ETag is the data's MD5");
    assert_eq!(
        r["range"],
        serde_json::json!({"status": 206, "body": "world", "content_range": "bytes 7-11/12"})
    );
    assert_eq!(r["suffix_range"], "world");
    assert_eq!(
        r["multipart"],
        serde_json::json!({"same": true, "size": 12 << 20, "etag_ok": true, "part2": 5 << 20})
    );
    assert_eq!(r["parts_listed"], serde_json::json!([1000]));
    assert_eq!(r["aborted_upload"], "NoSuchUpload");
    assert_eq!(r["aborted_object"], "404");
    assert_eq!(r["too_small"], "EntityTooSmall");
    assert_eq!(
        r["list"],
        serde_json::json!({"keys": ["list/c", "list/d"], "prefixes": ["list/a/", "list/b/"], "pages": 2})
    );
    assert_eq!(
        r["list_all"],
        serde_json::json!(["list/a/1", "list/a/2", "list/b/1", "list/c", "list/d"])
    );
    assert_eq!(r["copy"], "hello, world");
    assert_eq!(r["not_modified"], "304");
    assert_eq!(r["precondition"], "PreconditionFailed");
    assert_eq!(r["no_key"], "NoSuchKey");
    assert_eq!(r["no_bucket"], "NoSuchBucket");
    assert_eq!(r["bad_range"], "InvalidRange");
    assert_eq!(r["create_bucket"], "AccessDenied");
    assert_eq!(r["buckets"], serde_json::json!(["archive", "uploads"]));
    assert_eq!(r["bad_md5"], "BadDigest");
    assert_eq!(
        r["bad_md5_kept"], "404",
        "a body with a wrong Content-MD5 keeps nothing"
    );
    assert_eq!(r["dotted"], "inside");
    assert_eq!(r["absolute"], "inside too");
    assert_eq!(r["after_delete"], "404");
    assert_eq!(r["deleted"], serde_json::json!(["list/a/1", "list/a/2"]));
    assert_eq!(r["bad_signature"], "SignatureDoesNotMatch");
    assert_eq!(r["unknown_key"], "InvalidAccessKeyId");
    assert_eq!(r["presigned"], "hello, world");
    assert_eq!(r["presigned_tampered"], 403);
    assert_eq!(
        r["short_kept"], "404",
        "a body shorter than its Content-Length keeps nothing"
    );
    // A completion raced by a second one, or by an abort: one of them
    // wins, the loser is told so, and what is stored is whole or absent.
    for race in r["raced"].as_array().unwrap() {
        let outcomes = race["outcomes"].as_array().unwrap();
        let completed = outcomes[0].is_null() || (race["rival"] == "complete" && outcomes[1].is_null());
        for o in outcomes.iter().filter(|o| !o.is_null()) {
            assert!(
                ["NoSuchUpload", "OperationAborted"].contains(&o.as_str().unwrap()),
                "{race}"
            );
        }
        if race["rival"] == "complete" {
            assert!(completed, "one completion wins: {race}");
        } else {
            assert!(
                !(outcomes[0].is_null() && outcomes[1].is_null()),
                "complete and abort cannot both win: {race}"
            );
        }
        let expected = if completed { "whole" } else { "NoSuchKey" };
        assert_eq!(race["stored"], expected, "{race}");
    }
    assert_eq!(
        r["read_while_overwritten"], true,
        "a download under way finishes with the old data"
    );
    assert_eq!(r["read_after_overwrite"], "new");
    assert_eq!(
        r["tampered_delete"], "XAmzContentSHA256Mismatch",
        "a body that is not the one signed is refused"
    );
    assert_eq!(
        r["tampered_delete_kept"],
        serde_json::Value::Null,
        "and deletes nothing"
    );

    // Keys that look like paths stay inside the data directory.
    for outside in [
        data.join("../escape.txt"),
        data.join("../../escape.txt"),
        PathBuf::from("/abs/olute.txt"),
    ] {
        assert!(!outside.exists(), "{} was written", outside.display());
    }

    // Unsigned requests are refused, and say how to sign.
    let s3 = server.s3.clone().unwrap();
    let r = send(&client(), "GET", &format!("{s3}/uploads"), "", &[]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("<Code>AccessDenied</Code>"), "{}", r.body);
    assert!(r.body.contains("weft s3 credentials"), "{}", r.body);

    // A granted function reads and writes at BUCKET.s3.weft.internal.
    let url = |f: &str, rest: &str| format!("{}/{f}/object/{rest}", server.public);
    let r = send(
        &client(),
        "POST",
        &url("probe", "PUT/uploads/docs/from-function.txt"),
        "from a function",
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = send(
        &client(),
        "GET",
        &url("probe", "GET/uploads/docs/from-function.txt"),
        "",
        &[],
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "from a function"));
    let r = send(
        &client(),
        "GET",
        &url("probe", "GET/uploads/?list-type=2&prefix=docs/"),
        "",
        &[],
    )
    .await;
    assert!(r.body.contains("<Key>docs/from-function.txt</Key>"), "{}", r.body);
    let r = send(&client(), "GET", &url("probe", "GET/archive/x"), "", &[]).await;
    assert_eq!(r.status, 403, "a bucket the function was not granted: {}", r.body);
    assert!(
        r.body.contains("buckets = [&quot;archive&quot;]"),
        "the refusal names the grant: {}",
        r.body
    );
    let r = send(
        &client(),
        "GET",
        &url("stranger", "GET/uploads/docs/from-function.txt"),
        "",
        &[],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("[function.stranger]"), "{}", r.body);

    // docs/ creations reach the queue as S3 records, one per message, in
    // the order they were made: the put, the copy, the function's put.
    let created = queued(server, "created", 3).await;
    let names: Vec<(&str, &str)> = created
        .iter()
        .map(|b| {
            let r = &b["Records"][0];
            (
                r["eventName"].as_str().unwrap(),
                r["s3"]["object"]["key"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("ObjectCreated:Put", "docs/hello+world.txt"),
            ("ObjectCreated:Copy", "docs/copy.txt"),
            ("ObjectCreated:Put", "docs/from-function.txt"),
        ],
        "{created:?}"
    );
    let first = &created[0]["Records"][0]["s3"];
    assert_eq!(first["bucket"]["name"], "uploads");
    assert_eq!(first["object"]["size"], 12);
    assert_eq!(format!("\"{}\"", first["object"]["eTag"].as_str().unwrap()), md5);

    // big/ creations reach the bus as EventBridge's S3 events, and a rule
    // written for S3 routes them.
    let routed = queued(server, "big-events", 1).await;
    let multipart = routed
        .iter()
        .find(|e| e["detail"]["object"]["key"] == "big/file.bin")
        .unwrap_or_else(|| panic!("{routed:?}"));
    assert_eq!(multipart["source"], "aws.s3");
    assert_eq!(multipart["detail-type"], "Object Created");
    assert_eq!(multipart["detail"]["reason"], "CompleteMultipartUpload");
    assert_eq!(multipart["detail"]["object"]["size"], 12 << 20);
    assert!(
        !routed.iter().any(|e| e["detail"]["object"]["key"] == "big/aborted.bin"),
        "an aborted upload makes no event: {routed:?}"
    );
}

fn md5_of(data: &[u8]) -> u128 {
    use md5::Digest;
    u128::from_be_bytes(md5::Md5::digest(data).into())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aws_sdk_and_functions_use_buckets_and_their_events_flow() {
    let app = App::new(APP);
    let data = app.dir.join("data");
    let server = Server::start_with(&app, &data, &["--s3-listen", "127.0.0.1:0"]);
    sdk_functions_and_events(&server, &data).await;
    // The bytes are files under the data directory, named by weft.
    let blobs = data.join("events.blobs/buploads");
    assert!(std::fs::read_dir(&blobs).unwrap().count() > 0, "{}", blobs.display());
}

/// The server's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// A 1 GiB object goes in and out whole while the server's memory stays
/// within a few chunks of where it started.
#[tokio::test(flavor = "multi_thread")]
async fn a_one_gib_object_streams_through_in_bounded_memory() {
    // The test's app caps objects at 64 MiB; this one takes the default.
    let app = App::new(&APP.replace("max_object = \"64MiB\"", ""));
    let data = app.dir.join("data");
    let server = Server::start_with(&app, &data, &["--s3-listen", "127.0.0.1:0"]);
    let (id, secret) = credentials(&server);
    let before = rss(server.pid());
    let pid = server.pid();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/s3_large.py");
    let out = Command::new(python())
        .arg(script)
        .arg(server.s3.as_ref().unwrap())
        .args([&id, &secret, &(1u64 << 30).to_string()])
        .output()
        .expect("python runs");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["put_status"], 200, "{r}");
    assert_eq!(r["etag_ok"], true, "{r}");
    assert_eq!(
        (r["get_status"].as_u64(), r["length"].as_u64()),
        (Some(200), Some(1 << 30)),
        "{r}"
    );
    assert_eq!(r["same"], true, "{r}");
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "the server grew by {} MiB moving a 1 GiB object ({r})",
        grown >> 20
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn buckets_behave_the_same_on_jetstream() {
    let nats = NatsServer::start();
    let app = App::new(APP);
    let data = app.dir.join("data");
    let server = Server::start_with(&app, &data, &["--nats", &nats.url(), "--s3-listen", "127.0.0.1:0"]);
    sdk_functions_and_events(&server, &data).await;
}
