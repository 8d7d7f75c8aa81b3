//! What a function gets from the host of its invocation, seen from the
//! function: its environment, its memory limit, and outgoing HTTP decided
//! by the embedder's `Outbound`. Runs the probe component
//! (`tests/fixtures/probe`) in a real `Runtime`, without a node.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use weft_runtime::{
    Answer, Exit, HttpError, InvocationContext, Limits, Outbound, OutboundFuture, RequestOptions, Runtime,
    RuntimeConfig, WasiBody,
};

/// The probe component, built once per test binary into its own target
/// directory (not the one this test was built in, which another build may
/// hold locked).
fn probe() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/probe");
        let target = dir.join("target");
        let status = Command::new("cargo")
            .args(["build", "--quiet", "--target", "wasm32-wasip2", "--release"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(&dir)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the probe component failed");
        std::fs::read(target.join("wasm32-wasip2/release/probe.wasm")).expect("the probe component was built")
    })
}

/// One small runtime for every test, so the probe is compiled once; its
/// artifact cache is in cargo's directory for test files.
struct Fixture {
    runtime: Runtime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("weft-runtime-host-cache");
        let mut config = RuntimeConfig::new(cache);
        config.max_instances = 4;
        config.max_memory = 256 << 20;
        let runtime = Runtime::new(config).expect("the runtime starts");
        Fixture { runtime }
    })
}

impl Fixture {
    /// Runs the probe once at `path` and returns the exit, the status and
    /// the body it answered.
    async fn run(
        &self,
        path: &str,
        memory: u64,
        env: Vec<(String, String)>,
        outbound: Arc<dyn Outbound>,
    ) -> (Exit, u16, String) {
        let bytes = probe();
        let digest: String = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(bytes))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let limits = Limits {
            memory,
            timeout: Duration::from_secs(10),
        };
        let image = Arc::new(
            self.runtime
                .prepare(&digest, bytes, limits, env)
                .expect("the probe links"),
        );
        let request = http::Request::get(path)
            .header(http::header::HOST, "probe")
            .body(Empty::<Bytes>::new().map_err(|never| -> HttpError { match never {} }))
            .expect("a valid request");
        let ctx = InvocationContext {
            request_id: "test".into(),
            outbound,
            stores: Arc::new(NoStores),
            nested: false,
            on_complete: None,
        };
        let invocation = self.runtime.invoke(image, request, ctx).await;
        let (status, body) = match invocation.answer {
            Answer::Response(response) => {
                let status = response.status().as_u16();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("the body streams")
                    .to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
            Answer::Refused(code) => panic!("the probe refused with {code}"),
            Answer::Nothing => (0, String::new()),
        };
        let completion = invocation.completion.await.expect("the invocation completes");
        (completion.exit, status, body)
    }
}

/// Answers every request in-process with 418 and remembers what it saw.
#[derive(Default)]
struct Teapot {
    seen: Mutex<Vec<String>>,
}

impl Outbound for Teapot {
    fn send(&self, request: http::Request<WasiBody>, _options: Option<RequestOptions>) -> OutboundFuture {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(format!("{} {}", request.method(), request.uri()));
        }
        Box::pin(async {
            let body = Full::new(Bytes::from_static(b"brewed by the policy"))
                .map_err(|never| -> HttpError { match never {} })
                .boxed_unsync();
            Ok(http::Response::builder()
                .status(418)
                .body(body)
                .expect("a valid response"))
        })
    }
}

struct Deny;

impl Outbound for Deny {
    fn send(&self, _request: http::Request<WasiBody>, _options: Option<RequestOptions>) -> OutboundFuture {
        Box::pin(async { Err(HttpError::HttpRequestDenied) })
    }
}

#[tokio::test]
async fn outgoing_requests_go_to_the_invocations_outbound() {
    let teapot = Arc::new(Teapot::default());
    let (exit, status, body) = fixture()
        .run(
            "/fetch?url=http://upstream.test/tea",
            64 << 20,
            Vec::new(),
            teapot.clone(),
        )
        .await;
    assert_eq!(exit, Exit::Returned);
    assert_eq!(
        (status, body.as_str()),
        (200, "upstream status 418: brewed by the policy")
    );
    let seen = teapot.seen.lock().expect("not poisoned").clone();
    assert_eq!(seen, ["GET http://upstream.test/tea"]);
}

#[tokio::test]
async fn a_request_the_outbound_denies_fails_inside_the_function() {
    let (exit, status, body) = fixture()
        .run("/fetch?url=http://upstream.test/", 64 << 20, Vec::new(), Arc::new(Deny))
        .await;
    assert_eq!(exit, Exit::Returned);
    assert_eq!(
        (status, body.as_str()),
        (502, "outbound request failed: ErrorCode::HttpRequestDenied")
    );
}

#[tokio::test]
async fn a_function_reads_the_environment_it_was_prepared_with() {
    let env = vec![("GREETING".to_string(), "hello from the image".to_string())];
    let (exit, status, body) = fixture().run("/env/GREETING", 64 << 20, env, Arc::new(Deny)).await;
    assert_eq!(exit, Exit::Returned);
    assert_eq!((status, body.as_str()), (200, "hello from the image"));
}

#[tokio::test]
async fn a_function_past_its_memory_limit_ends_with_that_limit() {
    let (exit, _status, _body) = fixture().run("/alloc/64", 32 << 20, Vec::new(), Arc::new(Deny)).await;
    assert_eq!(exit, Exit::MemoryLimit { limit: 32 << 20 });
}

/// Opens no stores: this program grants none.
struct NoStores;

impl weft_runtime::Stores for NoStores {
    fn open(&self, name: &str) -> Result<Arc<dyn weft_runtime::Store>, weft_runtime::StoreError> {
        Err(weft_runtime::StoreError::NoSuchStore(format!(
            "no store `{name}` exists here"
        )))
    }
}
