//! Servers run as child processes, and the benchmarks that need them
//! restarted or loaded with many functions.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    /// What the server printed before it was ready.
    pub banner: Vec<String>,
}

impl Server {
    /// The CPU time all the server's threads have used, from
    /// `/proc/PID/task/*/schedstat` (nanoseconds on a CPU); `None` off Linux.
    pub fn cpu(&self) -> Option<Duration> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id())).ok()?;
        let ns: u64 = tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        Some(Duration::from_nanos(ns))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn hyper() -> anyhow::Result<Server> {
        let exe = std::env::current_exe()?;
        let child = Command::new(exe)
            .args(["hyper-hello", "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()?;
        Server::from_banner(child, Duration::from_secs(10))
    }

    /// The OTLP receiver the telemetry benchmark exports to.
    pub fn otlp_sink() -> anyhow::Result<Server> {
        let exe = std::env::current_exe()?;
        let child = Command::new(exe)
            .args(["otlp-sink", "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()?;
        Server::from_banner(child, Duration::from_secs(10))
    }

    pub fn hyper_chain() -> anyhow::Result<Server> {
        let exe = std::env::current_exe()?;
        let child = Command::new(exe)
            .args(["hyper-chain", "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()?;
        Server::from_banner(child, Duration::from_secs(10))
    }

    pub fn weft(weft: &Path, app: &Path, data: &Path) -> anyhow::Result<Server> {
        Server::weft_with(weft, app, data, &[])
    }

    /// `weft up` with `extra` arguments.
    pub fn weft_with(weft: &Path, app: &Path, data: &Path, extra: &[&str]) -> anyhow::Result<Server> {
        let child = Command::new(weft)
            .arg("up")
            .arg(app)
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
            .spawn()
            .context("starting weft")?;
        Server::from_banner(child, Duration::from_secs(3600))
    }

    pub fn wasmtime(wasmtime: &Path, component: &Path) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = Command::new(wasmtime)
            .args(["serve", "-Scli", "--addr", &addr.to_string()])
            .arg(component)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting wasmtime serve")?;
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            if started.elapsed() > Duration::from_secs(60) {
                bail!("wasmtime serve did not start listening on {addr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Server {
            child,
            addr,
            admin: None,
            banner: Vec::new(),
        })
    }

    /// Reads stdout until `listening on http://ADDR` (and, for weft, the admin line).
    fn from_banner(mut child: Child, limit: Duration) -> anyhow::Result<Server> {
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    // Keep draining so the child never blocks on a full pipe.
                    continue;
                }
            }
        });
        let (mut addr, mut admin, mut banner) = (None, None, Vec::new());
        let deadline = Instant::now() + limit;
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .context("server did not start")?;
            if let Some(a) = line.strip_prefix("listening on http://") {
                addr = Some(a.parse()?);
            }
            if let Some(a) = line.strip_prefix("admin API on http://") {
                admin = Some(a.parse()?);
            }
            banner.push(line);
            let is_weft = banner.iter().any(|l| l.starts_with("app `"));
            if addr.is_some() && (admin.is_some() || !is_weft) {
                break;
            }
        }
        std::thread::spawn(move || for _ in rx {});
        Ok(Server {
            child,
            addr: addr.context("no address")?,
            admin,
            banner,
        })
    }

    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")?;
        Ok(kb * 1024)
    }
}

pub(crate) async fn get_json(addr: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, "bench")
        .body(Empty::<Bytes>::new())?;
    let body = sender
        .send_request(request)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

/// Restarts weft on a data directory whose compiled-artifact cache is warm,
/// and times the first request on an open connection, then warm ones.
pub async fn cold_start(weft: &Path, app: &Path, data: &Path) -> anyhow::Result<String> {
    // The first start compiles and fills the cache; the second is measured.
    drop(Server::weft(weft, app, data)?);
    let server = Server::weft(weft, app, data)?;
    let prepared = server
        .banner
        .iter()
        .find(|l| l.contains("function hello"))
        .cloned()
        .unwrap_or_default();
    let stream = tokio::net::TcpStream::connect(server.addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut times = Vec::new();
    for _ in 0..201 {
        sender.ready().await?;
        let request = http::Request::get("/")
            .header(http::header::HOST, "bench")
            .body(Empty::<Bytes>::new())?;
        let sent = Instant::now();
        let response = sender.send_request(request).await?;
        response.into_body().collect().await?;
        times.push(sent.elapsed().as_secs_f64() * 1e6);
    }
    let first = times[0];
    let mut warm = times[1..].to_vec();
    warm.sort_by(f64::total_cmp);
    let warm_p50 = warm[warm.len() / 2];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let admin = server.admin.context("no admin address")?;
    let records = get_json(admin, "/v1/invocations?limit=1000").await?;
    let list = records["invocations"].as_array().cloned().unwrap_or_default();
    let cold_record = list.iter().find(|r| r["cold"] == true).cloned().unwrap_or_default();
    Ok(format!(
        "- deploy on restart: `{}`\n- first request after the deploy, client-side: **{:.0} µs** (bar: under 1 ms); the function's own record: {} µs, cold = {}\n- warm requests on the same connection, p50: {:.0} µs",
        prepared.trim(),
        first,
        cold_record["duration_us"],
        cold_record["cold"],
        warm_p50
    ))
}

/// A copy of `bytes` with a custom section appended, so every function has
/// its own digest and is compiled and kept separately.
fn variant(bytes: &[u8], n: usize) -> Vec<u8> {
    let name = b"weft-bench-variant";
    let payload = (n as u64).to_le_bytes();
    let mut content = Vec::new();
    leb128(&mut content, name.len() as u64);
    content.extend_from_slice(name);
    content.extend_from_slice(&payload);
    let mut out = bytes.to_vec();
    out.push(0);
    leb128(&mut out, content.len() as u64);
    out.extend_from_slice(&content);
    out
}

fn leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn many_app(dir: &Path, component: &[u8], n: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("wasm"))?;
    let mut manifest = String::from("[app]\nname = \"many\"\n\n");
    for i in 0..n {
        std::fs::write(dir.join(format!("wasm/f{i}.wasm")), variant(component, i))?;
        manifest.push_str(&format!("[function.f{i}]\nsource = \"wasm/f{i}.wasm\"\n\n"));
    }
    manifest.push_str("[[route]]\npath = \"/\"\nfunction = \"f0\"\n");
    std::fs::write(dir.join("weft.toml"), manifest)?;
    Ok(())
}

/// RSS of an idle weft with 1 and with `n` deployed functions, each with
/// its own component; and the restart time with `n` from the cache.
pub async fn rss_with_functions(weft: &Path, component: &Path, scratch: &Path, n: usize) -> anyhow::Result<String> {
    let bytes = std::fs::read(component)?;
    let (one, many) = (scratch.join("one"), scratch.join("many"));
    many_app(&one, &bytes, 1)?;
    many_app(&many, &bytes, n)?;

    let idle = Duration::from_secs(2);
    // The baseline, like the last row, starts from a warm cache: compiling
    // leaves allocator memory behind that says nothing about idle functions.
    drop(Server::weft(weft, &one, &one.join("data"))?);
    let server = Server::weft(weft, &one, &one.join("data"))?;
    tokio::time::sleep(idle).await;
    let rss_one = server.rss_bytes()?;
    drop(server);

    let started = Instant::now();
    let server = Server::weft(weft, &many, &many.join("data"))?;
    let first_start = started.elapsed();
    tokio::time::sleep(idle).await;
    let rss_many = server.rss_bytes()?;
    drop(server);

    let started = Instant::now();
    let server = Server::weft(weft, &many, &many.join("data"))?;
    let cached_start = started.elapsed();
    tokio::time::sleep(idle).await;
    let rss_cached = server.rss_bytes()?;
    drop(server);

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let per = |total: u64| (total.saturating_sub(rss_one)) as f64 / (n - 1) as f64 / 1024.0;
    Ok(format!(
        "Each function has its own component (the hello component plus a distinct custom section), so none share compiled code.\n\n\
         | deployed | start | idle RSS | per extra function |\n| --- | ---: | ---: | ---: |\n\
         | 1 function, restart from the cache | | {:.1} MiB | |\n\
         | {n} functions, compiling each | {:.1} s | {:.1} MiB | {:.0} KiB |\n\
         | {n} functions, restart from the cache | {:.1} s | {:.1} MiB | {:.0} KiB |\n\n\
         Bar: under 1 MB per idle deployed function; 1,000 functions on one node.",
        mib(rss_one),
        first_start.as_secs_f64(),
        mib(rss_many),
        per(rss_many),
        cached_start.as_secs_f64(),
        mib(rss_cached),
        per(rss_cached)
    ))
}
