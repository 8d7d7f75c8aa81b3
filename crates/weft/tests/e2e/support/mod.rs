//! Helpers for end-to-end tests: build the test component, write an app,
//! start the real `weft` binary on free ports, and talk HTTP to it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A component of `tests/fixtures/DIR`, built once per test binary: the
/// release build's `FILE.wasm`.
fn fixture_wasm(built: &'static OnceLock<PathBuf>, dir: &str, file: &str) -> PathBuf {
    built
        .get_or_init(|| {
            let dir = repo_root().join("tests/fixtures").join(dir);
            let status = Command::new("cargo")
                .args(["build", "--quiet", "--target", "wasm32-wasip2", "--release"])
                .current_dir(&dir)
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the {file} component failed");
            dir.join(format!("target/wasm32-wasip2/release/{file}.wasm"))
        })
        .clone()
}

/// The probe component (tests/fixtures/probe).
pub fn probe_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    fixture_wasm(&BUILT, "probe", "probe")
}

/// The key-value component built with wasi:keyvalue's own bindings
/// (tests/fixtures/kv-wasi).
pub fn kv_wasi_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    fixture_wasm(&BUILT, "kv-wasi", "kv_wasi")
}

/// The key-value component built with the Spin SDK (tests/fixtures/kv-spin).
pub fn kv_spin_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    fixture_wasm(&BUILT, "kv-spin", "kv_spin")
}

/// A temporary app directory; removed on drop.
pub struct App {
    pub dir: PathBuf,
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl App {
    /// Writes `manifest` (with `PROBE`, `KV_WASI` and `KV_SPIN` replaced by
    /// the paths of those components).
    pub fn new(manifest: &str) -> App {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weft-e2e-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let app = App { dir };
        app.write(manifest);
        app
    }

    pub fn write(&self, manifest: &str) {
        let mut text = manifest.replace("PROBE", &probe_wasm().display().to_string());
        if text.contains("KV_WASI") {
            text = text.replace("KV_WASI", &kv_wasi_wasm().display().to_string());
        }
        if text.contains("KV_SPIN") {
            text = text.replace("KV_SPIN", &kv_spin_wasm().display().to_string());
        }
        std::fs::write(self.dir.join("weft.toml"), text).unwrap();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `weft up`; killed on drop.
pub struct Server {
    child: Child,
    pub public: String,
    pub admin: String,
    /// The S3 listener, when the app has buckets.
    pub s3: Option<String>,
    pub stdout: Vec<String>,
}

/// A command's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn weft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weft"))
}

impl Server {
    pub fn start(app: &App) -> Server {
        Server::start_with_data(app, &app.dir.join("data"))
    }

    pub fn start_with_data(app: &App, data: &Path) -> Server {
        Server::start_with(app, data, &[])
    }

    /// `weft up` with `extra` arguments (limits, say).
    pub fn start_with(app: &App, data: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(app, data, extra, &[])
    }

    /// `weft up` with `extra` arguments and environment variables.
    pub fn start_with_env(app: &App, data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = weft()
            .envs(env.iter().copied())
            .arg("up")
            .arg(&app.dir)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--no-build",
                "--data",
            ])
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weft starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut public, mut admin, mut s3, mut seen) = (None, None, None, Vec::new());
        while public.is_none() || admin.is_none() {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        public = Some(a.to_string());
                    }
                    if let Some(a) = line.strip_prefix("admin API on ") {
                        admin = Some(a.to_string());
                    }
                    if let Some(a) = line.strip_prefix("S3 API on ") {
                        s3 = a.split(' ').next().map(str::to_string);
                    }
                    seen.push(line);
                }
                _ => {
                    let mut err = String::new();
                    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                    panic!("weft up ended before listening.\nstdout: {seen:?}\nstderr: {err}");
                }
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            public: public.unwrap(),
            admin: admin.unwrap(),
            s3,
            stdout: seen,
        }
    }

    /// Stops the server as Ctrl-C would.
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) {
        self.interrupt();
        let _ = self.child.wait();
    }

    /// Sends the server Ctrl-C's signal, without waiting for it to stop.
    pub fn interrupt(&self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits up to `within` for the server to exit; its exit status, or
    /// `None` if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        weft()
            .args(args)
            .env("WEFT_SERVER", &self.admin)
            .output()
            .expect("weft runs")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http()
}

pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut builder = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(60), client.request(request))
        .await
        .expect("answer within 60 s")
        .expect("request succeeds");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `weft deploy APP_DIR --no-build` against `server`.
pub fn deploy(app: &App, server: &Server) -> std::process::Output {
    weft()
        .arg("deploy")
        .arg(&app.dir)
        .args(["--no-build", "--server", &server.admin])
        .output()
        .unwrap()
}

pub async fn get(url: &str) -> Response {
    send(&client(), "GET", url, "", &[]).await
}

/// An invocation's record. Records are written when the instance ends,
/// which can be just after the response reaches the client: poll briefly.
pub async fn record(server: &Server, request_id: &str) -> serde_json::Value {
    for _ in 0..100 {
        let r = get(&format!("{}/v1/invocations/{request_id}", server.admin)).await;
        if r.status == 200 {
            return r.json();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no record for {request_id}");
}

/// The newest records matching `query` once there are at least `n`.
pub async fn records(server: &Server, query: &str, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        let r = get(&format!("{}/v1/invocations?{query}", server.admin)).await.json();
        let list = r["invocations"].as_array().cloned().unwrap_or_default();
        if list.len() >= n {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} records for {query}");
}

/// Every line the `probe` function has written on `server` so far (not
/// weft's own `platform` lines about its invocations).
pub async fn probe_lines(server: &Server) -> Vec<String> {
    function_lines(server, "probe").await
}

/// Every line function `f` has written on `server` so far (its stdout and
/// stderr, not weft's `REPORT` lines).
pub async fn function_lines(server: &Server, f: &str) -> Vec<String> {
    let logs = get(&format!("{}/v1/logs?function={f}&limit=10000", server.admin))
        .await
        .json();
    logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["stream"] != "platform")
        .map(|l| l["line"].as_str().unwrap().to_string())
        .collect()
}
