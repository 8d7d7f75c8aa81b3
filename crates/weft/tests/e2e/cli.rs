use std::time::Duration;

use crate::support::{App, Server, get, text, weft};

const APP: &str = r#"
[app]
name = "cli"

[function.probe]
source = "PROBE"

[[route]]
path = "/{*rest}"
function = "probe"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn invoke_prints_the_response_and_the_record() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let out = server.cli(&[
        "invoke",
        "probe",
        "--data",
        r#"{"order":42}"#,
        "--header",
        "X-Trace: t1",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", text(&out.stderr));
    assert!(stdout.starts_with("HTTP 200\nmethod=POST\npath=/\n"), "{stdout}");
    assert!(stdout.contains("body={\"order\":42}"), "{stdout}");
    assert!(stdout.contains("function  probe v1\n"), "{stdout}");
    assert!(stdout.contains("trigger   invoke\n"), "{stdout}");
    assert!(stdout.contains("outcome   success (status 200)\n"), "{stdout}");

    let out = server.cli(&["invoke", "probe", "--path", "/trap"]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("outcome   trap (status 500)"), "{stdout}");

    let out = server.cli(&["invoke", "nope"]);
    assert!(text(&out.stderr).contains("no function `nope` is deployed"));
    let out = server.cli(&["invoke", "probe", "--header", "no-colon"]);
    assert!(text(&out.stderr).contains("--header `no-colon` is not `Name: value`"));
    let out = weft()
        .args(["invoke", "probe", "--server", "ftp://x"])
        .output()
        .unwrap();
    assert!(text(&out.stderr).contains("is not an http://HOST:PORT URL"));
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_show_each_line_with_its_request_id() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let mut follow = weft()
        .args(["logs", "probe", "--follow"])
        .env("WEFT_SERVER", &server.admin)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let r = get(&format!("{}/log", server.public)).await;
    let id = r.headers["weft-request-id"].to_str().unwrap().to_string();

    let out = server.cli(&["logs", "probe"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("{id} probe stdout: stdout line from probe")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{id} probe stderr: stderr line from probe")),
        "{stdout}"
    );

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let _ = follow.kill();
    let followed = text(&follow.wait_with_output().unwrap().stdout);
    assert!(
        followed.contains(&format!("{id} probe stdout: stdout line from probe")),
        "{followed}"
    );
}

#[test]
fn up_reports_manifest_mistakes_with_their_place() {
    let app = App::new("[app]\nname = \"x\"\n\n[function.f]\nsource = \"PROBE\"\ntimeout = 30\n");
    let out = weft()
        .arg("up")
        .arg(&app.dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: `timeout` in [function.f] must be a string, found integer"),
        "{stderr}"
    );
    assert!(stderr.contains("weft.toml:6:11"), "{stderr}");

    let app = App::new("[app]\nname = \"x\"\n\n[function.f]\nsource = \"missing.wasm\"\n");
    let out = weft().arg("check").arg(&app.dir).output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("function `f`: source file"), "{stderr}");
    assert!(stderr.contains("weft.toml:5:10"), "{stderr}");
}

#[test]
fn new_scaffolds_an_app_that_checks() {
    let dir = std::env::temp_dir().join(format!("weft-new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = weft().args(["new", "my-shop", "--path"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest = std::fs::read_to_string(dir.join("weft.toml")).unwrap();
    assert!(manifest.contains("source = \"target/wasm32-wasip2/release/my_shop.wasm\""));
    assert!(dir.join("src/lib.rs").is_file() && dir.join("Cargo.toml").is_file());
    let out = weft().arg("check").arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("app `my-shop` with 1 function(s) and 1 route(s) is valid"));

    let out = weft().args(["new", "My Shop"]).output().unwrap();
    assert!(text(&out.stderr).contains("app name `My Shop` must start with a lowercase letter"));
    let out = weft().args(["new", "again", "--path"]).arg(&dir).output().unwrap();
    assert!(text(&out.stderr).contains("already exists"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn test_pattern_answers_like_eventbridge_test_event_pattern() {
    let dir = std::env::temp_dir().join(format!("weft-test-pattern-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let event = r#"{"id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2", "account": "123456789012", "time": "2026-11-23T10:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-1"], "detail": {"instance-id": "i-1", "state": "running"}}"#;
    std::fs::write(dir.join("event.json"), event).unwrap();
    let run = |pattern: &str| {
        std::fs::write(dir.join("pattern.json"), pattern).unwrap();
        let out = weft()
            .args(["events", "test-pattern", "--pattern"])
            .arg(dir.join("pattern.json"))
            .arg("--event")
            .arg(dir.join("event.json"))
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout))
    };
    assert_eq!(
        run(r#"{"source": ["aws.ec2"], "detail": {"state": ["running"]}}"#),
        (Some(0), "match\n".into())
    );
    assert_eq!(
        run(r#"{"source": ["aws.ec2"], "detail": {"state": ["stopped"]}}"#),
        (Some(1), "no match\n".into())
    );
    let (code, out) = run(r#"{"source": "aws.ec2"}"#);
    assert_eq!(code, Some(2));
    assert!(
        out.starts_with("invalid pattern: at `source`: values must be in a list"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_tests_patterns_too() {
    let app = App::new(APP);
    let server = Server::start(&app);
    let url = format!("{}/v1/events/test-pattern", server.admin);
    let c = crate::support::client();
    let body = r#"{"pattern": {"detail-type": [{"prefix": "Order"}]}, "event": {"detail-type": "Order Placed"}}"#;
    let r = crate::support::send(&c, "POST", &url, body, &[]).await;
    assert_eq!((r.status, r.json()["result"].as_str()), (200, Some("match")));
    let r = crate::support::send(&c, "POST", &url, r#"{"pattern": "{\"a\": 1}", "event": {}}"#, &[]).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid pattern: at `a`")
    );
}
