//! Key-value stores (`[kv.NAME]`): components built with wasi:keyvalue's
//! bindings and with the Spin SDK share them; grants and limits hold; each
//! store's changes reach a function, a queue and a bus as DynamoDB Streams
//! records, each key's in order; times to live end in a REMOVE. The
//! behaviour tests run on the embedded storage and on a real NATS
//! JetStream.

use std::time::{Duration, Instant};

use serde_json::Value;
use weft_jetstream::testing::NatsServer;

use crate::support::{App, Server, client, deploy, function_lines as lines, get, send, text};

const APP: &str = r#"
[app]
name = "state"

[function.w]
source = "KV_WASI"
kv = ["carts", "small", "sessions"]

[function.s]
source = "KV_SPIN"
kv = ["carts"]

[function.probe]
source = "PROBE"

[[route]]
path = "/w/{*op}"
function = "w"

[[route]]
path = "/s/{*op}"
function = "s"

[kv.carts]
changes = true

[[kv.carts.target]]
queue = "cart-changes"

[[kv.carts.target]]
bus = "audit"

[[trigger]]
kv = "carts"
function = "probe"
batch = 10

[kv.small]
max_value = "8B"
max_key = "4B"

[kv.locked]

[kv.sessions]
ttl = "1s"
changes = true

[[kv.sessions.target]]
queue = "session-changes"

[queue.cart-changes]
[queue.session-changes]
[queue.removals]

[bus.audit]

[rule.removals]
bus = "audit"
pattern = '{"source": ["weft.kv"], "detail-type": ["KV Stream Record"], "detail": {"eventName": ["REMOVE"]}}'
[[rule.removals.target]]
queue = "removals"
"#;

/// Runs operation `op` of function `f` (`w` or `s`): its status and body.
async fn op(server: &Server, method: &str, f: &str, path_and_query: &str, body: &str) -> (u16, String) {
    let r = send(
        &client(),
        method,
        &format!("{}/{f}/{path_and_query}", server.public),
        body,
        &[],
    )
    .await;
    (r.status, r.body)
}

/// The bodies in `queue`, as JSON, once `done` holds of them (or 20 s pass).
async fn queued(server: &Server, queue: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
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
        if done(&bodies) || Instant::now() > deadline {
            return bodies;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The probe's `record ...` lines once `done` holds of them (or 20 s pass).
async fn records(server: &Server, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen: Vec<String> = lines(server, "probe")
            .await
            .into_iter()
            .filter(|l| l.starts_with("record "))
            .collect();
        if done(&seen) || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Both kinds of component read and write the same stores, through every
/// operation their interfaces have; grants and limits hold.
async fn components_share_stores(server: &Server) {
    assert_eq!(
        op(server, "PUT", "w", "set?store=carts&key=c1", r#"{"total": 3}"#)
            .await
            .0,
        204
    );
    assert_eq!(
        op(server, "GET", "s", "get?store=carts&key=c1", "").await,
        (200, r#"{"total": 3}"#.into()),
        "a Spin component reads what a wasi:keyvalue one wrote"
    );
    assert_eq!(op(server, "PUT", "s", "set?store=carts&key=c2", "two").await.0, 204);
    assert_eq!(
        op(server, "GET", "w", "get?store=carts&key=c2", "").await,
        (200, "two".into())
    );
    assert_eq!(op(server, "GET", "w", "get?store=carts&key=none", "").await.0, 404);
    assert_eq!(op(server, "GET", "s", "get?store=carts&key=none", "").await.0, 404);
    assert_eq!(op(server, "GET", "w", "exists?store=carts&key=c2", "").await.1, "true");
    assert_eq!(
        op(server, "GET", "s", "exists?store=carts&key=none", "").await.1,
        "false"
    );
    assert_eq!(op(server, "GET", "w", "keys?store=carts", "").await.1, "c1\nc2\n");
    assert_eq!(op(server, "GET", "s", "keys?store=carts", "").await.1, "c1\nc2\n");

    // Atomics: increment, and compare-and-swap that loses to a write between.
    assert_eq!(
        op(server, "POST", "w", "increment?store=carts&key=n&by=5", "").await.1,
        "5"
    );
    assert_eq!(
        op(server, "POST", "w", "increment?store=carts&key=n&by=-2", "").await.1,
        "3"
    );
    let (status, body) = op(server, "POST", "w", "increment?store=carts&key=c2", "").await;
    assert_eq!(status, 500);
    assert!(body.contains("not a whole number"), "{body}");
    assert_eq!(
        op(server, "POST", "w", "cas?store=carts&key=n&expect=3", "10").await,
        (200, "swapped".into())
    );
    assert_eq!(op(server, "GET", "s", "get?store=carts&key=n", "").await.1, "10");
    assert_eq!(
        op(server, "POST", "w", "cas?store=carts&key=n&expect=3", "11").await,
        (409, "mismatch: 10".into())
    );
    assert_eq!(
        op(server, "POST", "w", "cas?store=carts&key=fresh", "new").await,
        (200, "swapped".into()),
        "a swap of an absent key creates it"
    );
    assert_eq!(
        op(server, "POST", "w", "cas-race?store=carts&key=n", "12").await,
        (409, "cas-failed".into())
    );
    assert_eq!(op(server, "GET", "w", "get?store=carts&key=n", "").await.1, "intruder");

    // Batches.
    assert_eq!(
        op(server, "POST", "w", "set-many?store=carts", r#"{"a": "1", "b": "2"}"#)
            .await
            .0,
        204
    );
    let (_, many) = op(server, "GET", "w", "get-many?store=carts&keys=a,b,zz", "").await;
    assert_eq!(
        serde_json::from_str::<Value>(&many).unwrap(),
        serde_json::json!({"a": "1", "b": "2", "zz": null})
    );
    assert_eq!(
        op(server, "POST", "w", "delete-many?store=carts&keys=a,b", "").await.0,
        204
    );
    assert_eq!(op(server, "GET", "s", "get?store=carts&key=a", "").await.0, 404);
    assert_eq!(
        op(server, "DELETE", "s", "delete?store=carts&key=fresh", "").await.0,
        204
    );
    assert_eq!(
        op(server, "GET", "w", "exists?store=carts&key=fresh", "").await.1,
        "false"
    );

    // Grants: a store not granted, or not declared, is access-denied, and the
    // function's log says what to add.
    for (f, store) in [("w", "locked"), ("s", "small"), ("w", "ghost")] {
        assert_eq!(
            op(server, "GET", f, &format!("open?store={store}"), "").await,
            (500, "access-denied".into()),
            "{f} opening {store}"
        );
    }
    let logged = lines(server, "w").await;
    assert!(
        logged
            .iter()
            .any(|l| l.contains("cannot open store `locked`") && l.contains(r#"add `kv = ["locked"]` to [function.w]"#)),
        "{logged:?}"
    );

    // Limits, each named in its error.
    let (status, body) = op(server, "PUT", "w", "set?store=small&key=k", "123456789").await;
    assert_eq!(status, 500);
    assert!(body.contains("max_value of 8 bytes"), "{body}");
    let (status, body) = op(server, "PUT", "w", "set?store=small&key=abcde", "1").await;
    assert_eq!(status, 500);
    assert!(body.contains("max_key of 4 bytes"), "{body}");
    assert_eq!(
        op(server, "PUT", "w", "set?store=small&key=abcd", "12345678").await.0,
        204
    );
}

/// Every change of `carts` reaches the trigger's function, a queue and (its
/// removals) a bus's rule, as DynamoDB Streams records, each key's in
/// order; an expired time to live is a REMOVE with DynamoDB's TTL identity.
async fn changes_are_delivered_in_order(server: &Server) {
    for value in ["1", "2", "3"] {
        assert_eq!(op(server, "PUT", "w", "set?store=carts&key=k", value).await.0, 204);
    }
    assert_eq!(op(server, "DELETE", "s", "delete?store=carts&key=k", "").await.0, 204);
    assert_eq!(op(server, "PUT", "s", "set?store=carts&key=bad", "fail").await.0, 204);

    let expected = [
        "INSERT k - -> 1",
        "MODIFY k 1 -> 2",
        "MODIFY k 2 -> 3",
        "REMOVE k 3 -> -",
    ];
    // `record SEQ NAME KEY OLD -> NEW`: key `k`'s, without the sequence.
    let of_k = |seen: &[String]| -> Vec<String> {
        seen.iter()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .filter(|w| w.len() > 3 && w[3] == "k")
            .map(|w| w[2..].join(" "))
            .collect()
    };
    let seen = records(server, |s| {
        of_k(s).len() >= 4 && s.iter().filter(|l| l.contains(" bad ")).count() >= 2
    })
    .await;
    assert_eq!(of_k(&seen), expected, "{seen:?}");
    let sequence: Vec<&str> = seen
        .iter()
        .filter(|l| l.split(' ').nth(3) == Some("k"))
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert!(sequence.windows(2).all(|w| w[0] < w[1]), "{sequence:?}");
    assert!(
        seen.iter().filter(|l| l.contains("INSERT bad - -> fail")).count() >= 2,
        "a record the function reports failed is delivered again: {seen:?}"
    );

    // The queue target gets one record per change.
    let bodies = queued(server, "cart-changes", |b| {
        b.iter().filter(|r| r["dynamodb"]["Keys"]["key"]["S"] == "k").count() >= 4
    })
    .await;
    let names: Vec<&str> = bodies
        .iter()
        .filter(|r| r["dynamodb"]["Keys"]["key"]["S"] == "k")
        .map(|r| r["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["INSERT", "MODIFY", "MODIFY", "REMOVE"], "{bodies:?}");
    let modify = bodies
        .iter()
        .find(|r| r["eventName"] == "MODIFY" && r["dynamodb"]["Keys"]["key"]["S"] == "k")
        .unwrap();
    assert_eq!(modify["dynamodb"]["OldImage"]["value"]["S"], "1");
    assert_eq!(modify["dynamodb"]["NewImage"]["value"]["S"], "2");
    assert_eq!(modify["dynamodb"]["StreamViewType"], "NEW_AND_OLD_IMAGES");
    assert_eq!(
        modify["eventSourceARN"],
        "arn:weft:kv:local:state:table/carts/stream/changes"
    );

    // The bus's rule picked out the removal.
    let of_key = |e: &&Value| e["detail"]["dynamodb"]["Keys"]["key"]["S"] == "k";
    let removals = queued(server, "removals", |b| b.iter().any(|e| of_key(&e))).await;
    assert!(
        removals.iter().all(|e| e["detail"]["eventName"] == "REMOVE"),
        "{removals:?}"
    );
    let removal: Vec<&Value> = removals.iter().filter(of_key).collect();
    assert_eq!(removal.len(), 1, "{removals:?}");
    assert_eq!(removal[0]["source"], "weft.kv");
    assert_eq!(removal[0]["detail-type"], "KV Stream Record");
    assert_eq!(removal[0]["resources"], serde_json::json!(["carts"]));
    assert_eq!(removal[0]["detail"]["dynamodb"]["OldImage"]["value"]["S"], "3");

    // A time to live ends in a REMOVE made by the expiry.
    assert_eq!(op(server, "PUT", "w", "set?store=sessions&key=s1", "on").await.0, 204);
    assert_eq!(op(server, "GET", "w", "get?store=sessions&key=s1", "").await.1, "on");
    let sessions = queued(server, "session-changes", |b| b.len() >= 2).await;
    let names: Vec<&str> = sessions.iter().map(|r| r["eventName"].as_str().unwrap()).collect();
    assert_eq!(names, ["INSERT", "REMOVE"], "{sessions:?}");
    assert_eq!(sessions[1]["userIdentity"]["principalId"], "dynamodb.amazonaws.com");
    assert_eq!(op(server, "GET", "w", "get?store=sessions&key=s1", "").await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn wasi_keyvalue_and_spin_components_share_stores_and_their_changes_flow() {
    let app = App::new(APP);
    let server = Server::start(&app);
    components_share_stores(&server).await;
    changes_are_delivered_in_order(&server).await;
    // A record that keeps failing holds back only its own key's changes.
    assert_eq!(
        op(&server, "PUT", "w", "set?store=carts&key=after", "later").await.0,
        204
    );
    let seen = records(&server, |s| s.iter().any(|l| l.contains("INSERT after - -> later"))).await;
    assert!(
        seen.iter().any(|l| l.contains("INSERT after - -> later")),
        "a change after a failing one, of another key, is delivered: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stores_and_their_changes_behave_the_same_on_jetstream() {
    let nats = NatsServer::start();
    let app = App::new(APP);
    let server = Server::start_with(&app, &app.dir.join("data"), &["--nats", &nats.url()]);
    // A stock server takes messages of 1 MB: a store that names no
    // max_value gets the largest a change (old and new value) fits in.
    let stores = get(&format!("{}/v1/kv", server.admin)).await.json();
    let carts = stores["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "carts")
        .unwrap()
        .clone();
    assert_eq!(carts["max_value"], (1_048_576 - 8192) / 2, "{stores}");
    components_share_stores(&server).await;
    changes_are_delivered_in_order(&server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_and_admin_api_read_and_write_stores_and_refuse_bad_input() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let ok = |args: &[&str]| {
        let out = server.cli(args);
        assert!(out.status.success(), "weft {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let fails = |args: &[&str]| {
        let out = server.cli(args);
        assert!(
            !out.status.success(),
            "weft {args:?} should fail: {}",
            text(&out.stdout)
        );
        text(&out.stderr)
    };
    assert!(ok(&["kv", "set", "carts", "order/1", "paid"]).starts_with("set carts/order/1 (revision"));
    ok(&["kv", "set", "carts", "order/2", "open"]);
    ok(&["kv", "set", "carts", "../../etc/passwd", "just a key"]);
    ok(&["kv", "set", "carts", "other", "x"]);
    assert_eq!(ok(&["kv", "get", "carts", "order/1"]), "paid");
    assert_eq!(ok(&["kv", "get", "carts", "../../etc/passwd"]), "just a key");
    assert_eq!(ok(&["kv", "list", "carts", "--prefix", "order/"]), "order/1\norder/2\n");
    assert_eq!(ok(&["kv", "list", "carts"]).lines().count(), 4);
    assert!(ok(&["kv", "delete", "carts", "order/2"]).contains("deleted carts/order/2"));
    assert!(ok(&["kv", "delete", "carts", "order/2"]).contains("had no key"));
    assert!(fails(&["kv", "get", "carts", "order/2"]).contains("store `carts` has no key `order/2`"));

    // A value with its own time to live, read and then gone.
    ok(&["kv", "set", "carts", "brief", "soon gone", "--ttl", "1s"]);
    assert_eq!(ok(&["kv", "get", "carts", "brief"]), "soon gone");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(fails(&["kv", "get", "carts", "brief"]).contains("has no key"));

    // Bad input, each with what to do.
    assert!(fails(&["kv", "set", "carts", "k", "v", "--ttl", "soon"]).contains("not a duration"));
    assert!(fails(&["kv", "get", "nope", "k"]).contains("no store `nope` is deployed"));
    assert!(fails(&["kv", "set", "carts", "", "v"]).contains("a key cannot be empty"));
    assert!(fails(&["kv", "set", "small", "k", "123456789"]).contains("max_value of 8 bytes"));
    assert!(fails(&["kv", "set", "small", "longkey", "1"]).contains("max_key of 4 bytes"));
    let admin = &server.admin;
    let bad_limit = get(&format!("{admin}/v1/kv/carts/keys?limit=0")).await;
    assert_eq!(bad_limit.status, 400, "{}", bad_limit.body);
    assert_eq!(get(&format!("{admin}/v1/kv/carts/keys?limit=x")).await.status, 400);
    let ttl = send(
        &client(),
        "PUT",
        &format!("{admin}/v1/kv/carts/keys/k?ttl=0s"),
        "v",
        &[],
    )
    .await;
    assert_eq!(ttl.status, 400, "{}", ttl.body);
    let not_utf8 = send(&client(), "PUT", &format!("{admin}/v1/kv/carts/keys/%FF%FE"), "v", &[]).await;
    assert_eq!(not_utf8.status, 400, "{}", not_utf8.body);
    assert!(not_utf8.body.contains("not UTF-8"), "{}", not_utf8.body);
    let dotted = send(&client(), "GET", &format!("{admin}/v1/kv/..%2Fcarts/keys/x"), "", &[]).await;
    assert_eq!(dotted.status, 404, "{}", dotted.body);

    // Bytes that are not UTF-8 go through the admin API as base64, and the
    // CLI prints them as they are.
    let body = http_body_util::Full::new(bytes::Bytes::from_static(&[0xff, 0x00, 0x01]));
    let request = http::Request::put(format!("{admin}/v1/kv/carts/keys/raw"))
        .body(body)
        .unwrap();
    let response = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http()
        .request(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let entry = get(&format!("{admin}/v1/kv/carts/keys/raw")).await.json();
    assert_eq!(
        (entry["encoding"].as_str(), entry["value"].as_str()),
        (Some("base64"), Some("/wAB"))
    );
    assert_eq!(server.cli(&["kv", "get", "carts", "raw"]).stdout, [0xff, 0x00, 0x01]);
    let stores = get(&format!("{admin}/v1/kv")).await.json();
    let names: Vec<&str> = stores["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["carts", "locked", "sessions", "small"]);

    // A listing longer than a page: the CLI follows the cursor; the admin
    // API's page says where the next begins, and the last page says none.
    // 32 at a time: the admin API takes 256 connections at most.
    let http = client();
    let put = |i: usize| {
        let (url, http) = (format!("{admin}/v1/kv/carts/keys/page%2F{i:04}"), http.clone());
        async move { send(&http, "PUT", &url, "x", &[]).await.status }
    };
    use futures_util::StreamExt;
    let statuses: Vec<u16> = futures_util::stream::iter(0..1001)
        .map(put)
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(ok(&["kv", "list", "carts", "--prefix", "page/"]).lines().count(), 1001);
    let first = get(&format!("{admin}/v1/kv/carts/keys?prefix=page%2F")).await.json();
    assert_eq!(first["keys"].as_array().unwrap().len(), 1000);
    assert_eq!(first["next"], "page/0999");
    let last = get(&format!("{admin}/v1/kv/carts/keys?prefix=page%2F&after=page%2F0999"))
        .await
        .json();
    assert_eq!(last["keys"], serde_json::json!(["page/1000"]));
    assert_eq!(last["next"], Value::Null);

    // Removing a store that holds keys is a loss the deploy refuses unasked.
    let without = APP
        .replace("[kv.carts]\nchanges = true", "")
        .replace("[[kv.carts.target]]\nqueue = \"cart-changes\"", "")
        .replace("[[kv.carts.target]]\nbus = \"audit\"", "")
        .replace("[[trigger]]\nkv = \"carts\"\nfunction = \"probe\"\nbatch = 10", "")
        .replace(
            "kv = [\"carts\", \"small\", \"sessions\"]",
            "kv = [\"small\", \"sessions\"]",
        )
        .replace("kv = [\"carts\"]", "");
    app.write(&without);
    let refused = deploy(&app, &server);
    assert!(!refused.status.success(), "{}", text(&refused.stdout));
    let why = text(&refused.stderr);
    assert!(why.contains("carts") && why.contains("--allow-loss"), "{why}");
    assert_eq!(
        ok(&["kv", "get", "carts", "order/1"]),
        "paid",
        "a refused deploy changes nothing"
    );
}
