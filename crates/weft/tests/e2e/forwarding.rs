use crate::support::{App, Server, get};

const APP: &str = r#"
[app]
name = "forwarding"

[function.front]
source = "PROBE"

[function.back]
source = "PROBE"

[[route]]
path = "/{*rest}"
function = "front"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_forward_hands_the_request_on_and_filters_the_answer() {
    let app = App::new(APP);
    let server = Server::start(&app);
    // front forwards to back at /json; back's JSON answer is filtered.
    let r = get(&format!("{}/forward/back/json?body.order", server.public)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "7"), "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    assert!(!r.headers.contains_key("weft-forward"));

    let r = get(&format!("{}/forward/back/json", server.public)).await;
    let answer = r.json();
    assert_eq!(answer["method"], "POST");
    assert_eq!(
        answer["body"]["from"], "forwarder",
        "the forwarding function's body is the next one's request"
    );

    // The hops are linked, and the forwarding instance was gone before the next one started.
    let back = crate::support::records(&server, "function=back&limit=1", 1).await;
    let back = &back[0];
    assert_eq!(back["trigger"], "forward");
    let front = crate::support::record(&server, back["parent_request_id"].as_str().unwrap()).await;
    assert_eq!(front["function"], "front");
    let front_end = front["start_us"].as_i64().unwrap() + front["duration_us"].as_i64().unwrap();
    assert!(
        front_end <= back["start_us"].as_i64().unwrap(),
        "front held its instance while back ran: {front} {back}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_forwards_fail_with_clear_errors() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let r = get(&format!("{}/forward/nobody/json", server.public)).await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.json()["error"],
        "function `front` forwarded to `nobody`, which is not a function of this app"
    );

    // front forwards to itself at the same path, again and again.
    let r = get(&format!("{}/{}json", server.public, "forward/front/".repeat(17))).await;
    assert_eq!(r.status, 508, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("forwarded more than 16 times"),
        "{}",
        r.body
    );

    let r = get(&format!("{}/forward/back/json?body.[", server.public)).await;
    assert_eq!(r.status, 502);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("function `front` forwarded with an invalid weft-forward-filter `body.[`"),
        "{}",
        r.body
    );
}
