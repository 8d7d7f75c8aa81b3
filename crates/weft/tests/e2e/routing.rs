use crate::support::{App, Server, client, get, send};

const APP: &str = r#"
[app]
name = "routes"

[function.probe]
source = "PROBE"

[function.other]
source = "PROBE"
env = { ROLE = "other" }

[[route]]
method = "GET"
path = "/hello/{name}"
function = "probe"

[[route]]
path = "/users/{id}/files/{*rest}"
function = "probe"

[[route]]
method = "GET"
path = "/call/{target}/{*rest}"
function = "probe"

[[route]]
method = "GET"
path = "/env/{key}"
function = "other"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn routes_pass_parameters_as_headers() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let r = get(&format!("{}/hello/ada%20lovelace", server.public)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "hello, ada lovelace"));
    assert!(r.headers.contains_key("weft-request-id"));

    let r = send(
        &client(),
        "POST",
        &format!("{}/users/7/files/a/b.txt?x=1", server.public),
        "payload",
        &[("weft-param-id", "spoofed")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("method=POST\n"), "{}", r.body);
    assert!(r.body.contains("path=/users/7/files/a/b.txt?x=1\n"), "{}", r.body);
    assert!(
        r.body.contains("weft-param-id=7\n"),
        "client-sent weft-* headers are replaced: {}",
        r.body
    );
    assert!(r.body.contains("weft-param-rest=a/b.txt\n"), "{}", r.body);
    assert!(r.body.contains("weft-function=probe\n"), "{}", r.body);
    assert!(r.body.ends_with("body=payload"), "{}", r.body);

    let r = get(&format!("{}/env/ROLE", server.public)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "other"));
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_paths_and_methods_get_clear_errors() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let r = get(&format!("{}/nowhere", server.public)).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no route matches GET /nowhere");
    let r = send(&client(), "DELETE", &format!("{}/hello/x", server.public), "", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET");
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_call_each_other_in_process() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let r = get(&format!("{}/call/other/env/ROLE", server.public)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "other answered 200: other"));
    let caller_id = r.headers["weft-request-id"].to_str().unwrap().to_string();

    // The callee's record links back to the caller.
    let records = crate::support::records(&server, "function=other", 1).await;
    let callee = &records[0];
    assert_eq!(callee["trigger"], "internal");
    assert_eq!(callee["parent_request_id"], caller_id.as_str());

    let r = get(&format!("{}/call/missing/x", server.public)).await;
    assert_eq!(r.status, 502);
    assert!(
        r.body.contains("`missing.weft.internal` names no function of this app"),
        "{}",
        r.body
    );
    assert!(r.body.contains("one of: other, probe"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_loop_is_cut_at_the_maximum_depth() {
    let app = App::new(APP);
    let server = Server::start(&app);
    // probe calls itself through /call/probe/call/probe/... deeper than allowed.
    let deep = "call/probe/".repeat(20);
    let r = get(&format!("{}/{deep}hello/x", server.public)).await;
    assert!(r.body.contains("nested 16 deep; is there a loop?"), "{}", r.body);
}
