//! Key-value stores: durable sets and gets through weft's storage
//! interface (embedded provider, group commit) with 1 and 64 concurrent
//! clients, against Redis with `appendfsync always` doing the same
//! operations, and SQLite alone (one connection, a transaction per set);
//! then, through the gateway, a function that reads one key and answers,
//! against the hello function in the same run.
//!
//! Every set writes a 100-byte value to one of 10,000 keys and waits until
//! it is durable; every get reads one of those keys.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use weft_store::durable::{Embedded, Storage, Write};

use crate::durable::{Redis, percentile};
use crate::load;
use crate::procs::Server;

const KEYS: usize = 10_000;
const VALUE: [u8; 100] = [b'v'; 100];
const CLIENTS: [usize; 2] = [1, 64];
const BUCKET: &str = "kv:bench";
/// Rounds of the function figure, hello and the key read in turn.
const ROUNDS: usize = 5;

/// What one run measured.
struct Ops {
    per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Runs of each operation and client count.
type Runs = Vec<((Op, usize), anyhow::Result<Ops>)>;

fn key(i: usize) -> String {
    format!("key-{}", i % KEYS)
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Set,
    Get,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Set => "durable sets",
            Op::Get => "gets",
        }
    }
}

/// `clients` tasks doing `op` on the storage for `duration`.
async fn storage_run(storage: Arc<dyn Storage>, op: Op, clients: usize, duration: Duration) -> anyhow::Result<Ops> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (storage, stop) = (storage.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c * 7919;
            while !stop.load(Ordering::Relaxed) {
                let k = key(i);
                let sent = Instant::now();
                match op {
                    Op::Set => {
                        storage.set(BUCKET, &k, VALUE.to_vec(), &Write::default()).await?;
                    }
                    Op::Get => {
                        storage.get(BUCKET, &k).await?;
                    }
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1e6);
                i += 1;
                // A get from the embedded store can finish without waiting;
                // the other clients (and the timer) need their turn.
                tokio::task::yield_now().await;
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(finish(latencies, started.elapsed()))
}

fn finish(mut latencies: Vec<f64>, elapsed: Duration) -> Ops {
    Ops {
        per_s: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(&mut latencies, 0.5),
        p99_us: percentile(&mut latencies, 0.99),
    }
}

/// `clients` threads doing `op` on Redis for `duration`.
fn redis_run(redis: &Redis, op: Op, clients: usize, duration: Duration) -> anyhow::Result<Ops> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut threads = Vec::new();
    for c in 0..clients {
        let stop = stop.clone();
        let mut conn = redis.connect()?;
        threads.push(std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
            let mut latencies = Vec::new();
            let mut i = c * 7919;
            while !stop.load(Ordering::Relaxed) {
                let k = key(i);
                let sent = Instant::now();
                match op {
                    Op::Set => conn.call(&[b"SET", k.as_bytes(), &VALUE])?,
                    Op::Get => conn.call(&[b"GET", k.as_bytes()])?,
                };
                latencies.push(sent.elapsed().as_secs_f64() * 1e6);
                i += 1;
            }
            Ok(latencies)
        }));
    }
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in threads {
        latencies.extend(t.join().map_err(|_| anyhow::anyhow!("a Redis client panicked"))??);
    }
    Ok(finish(latencies, started.elapsed()))
}

/// SQLite alone: one connection in WAL mode with `synchronous = FULL`, a
/// transaction (and its fsync) per set, a prepared select per get.
fn sqlite_run(path: &Path, op: Op, duration: Duration) -> anyhow::Result<Ops> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")?;
    if op == Op::Get {
        let tx = conn.unchecked_transaction()?;
        for i in 0..KEYS {
            tx.execute(
                "INSERT OR REPLACE INTO kv VALUES (?1, ?2)",
                rusqlite::params![key(i), &VALUE[..]],
            )?;
        }
        tx.commit()?;
    }
    let mut set = conn.prepare("INSERT OR REPLACE INTO kv VALUES (?1, ?2)")?;
    let mut get = conn.prepare("SELECT value FROM kv WHERE key = ?1")?;
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut i = 0;
    while started.elapsed() < duration {
        let k = key(i);
        let sent = Instant::now();
        match op {
            Op::Set => {
                set.execute(rusqlite::params![k, &VALUE[..]])?;
            }
            Op::Get => {
                let _: Vec<u8> = get.query_row([k], |r| r.get(0))?;
            }
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1e6);
        i += 1;
    }
    Ok(finish(latencies, started.elapsed()))
}

fn row(label: &str, clients: &str, run: &anyhow::Result<Ops>) -> String {
    match run {
        Ok(r) => format!(
            "| {label} | {clients} | {:.0} | {:.0} | {:.0} |\n",
            r.per_s, r.p50_us, r.p99_us
        ),
        Err(e) => format!("| {label} | {clients} | failed: {e} | | |\n"),
    }
}

/// Sends one request to `addr`; its status.
async fn request(addr: SocketAddr, method: &str, path: &str, body: &'static [u8]) -> anyhow::Result<u16> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "localhost")
        .body(Full::new(Bytes::from_static(body)))?;
    let response = send.send_request(request).await?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok(status)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub async fn report(
    weft: &Path,
    hello: &Path,
    kv_wasi: &Path,
    scratch: &Path,
    seconds: Duration,
    connections: usize,
) -> anyhow::Result<String> {
    let dir = scratch.join("kv");
    std::fs::create_dir_all(&dir)?;
    let mut out = format!(
        "Each set writes a 100-byte value to one of {KEYS} keys and waits until it is durable (fsynced); each get reads one. {}s per run.\n\n\
         | system | clients | ops/s | p50 µs | p99 µs |\n| --- | ---: | ---: | ---: | ---: |\n",
        seconds.as_secs()
    );
    let storage: Arc<dyn Storage> = Arc::new(Embedded::open(&dir.join("weft.db"))?);
    let mut weft_runs = Vec::new();
    for op in [Op::Set, Op::Get] {
        for clients in CLIENTS {
            let run = storage_run(storage.clone(), op, clients, seconds).await;
            out.push_str(&row(
                &format!("weft storage, {}", op.name()),
                &clients.to_string(),
                &run,
            ));
            weft_runs.push(((op, clients), run));
        }
    }
    drop(storage);
    let sqlite_dir = dir.clone();
    let sqlite = tokio::task::spawn_blocking(move || {
        [Op::Set, Op::Get].map(|op| sqlite_run(&sqlite_dir.join(format!("alone-{}.db", op.name())), op, seconds))
    })
    .await?;
    for (op, run) in [Op::Set, Op::Get].iter().zip(&sqlite) {
        out.push_str(&row(&format!("SQLite alone, {}", op.name()), "1", run));
    }
    std::fs::create_dir_all(dir.join("redis"))?;
    let redis_dir = dir.join("redis");
    let redis = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<Runs>> {
        let Some(server) = Redis::start(&redis_dir)? else {
            return Ok(None);
        };
        let mut runs = Vec::new();
        for op in [Op::Set, Op::Get] {
            for clients in CLIENTS {
                runs.push(((op, clients), redis_run(&server, op, clients, seconds)));
            }
        }
        Ok(Some(runs))
    })
    .await??;
    match &redis {
        Some(runs) => {
            for ((op, clients), run) in runs {
                out.push_str(&row(
                    &format!("Redis, appendfsync always, {}", op.name()),
                    &clients.to_string(),
                    run,
                ));
            }
        }
        None => out.push_str("| Redis | | skipped: redis-server not found | | |\n"),
    }
    if let Some(runs) = &redis {
        out.push('\n');
        for ((op, clients), weft_run) in &weft_runs {
            let redis_run = runs.iter().find(|(k, _)| k == &(*op, *clients)).map(|(_, r)| r);
            if let (Ok(w), Some(Ok(r))) = (weft_run, redis_run) {
                let bar = match (op, clients) {
                    (Op::Set, 64) => " (bar: at least 1.0)",
                    (Op::Get, 64) => " (bar: at least 1.0)",
                    _ => "",
                };
                out.push_str(&format!(
                    "- weft ÷ Redis, {} with {clients} client{}: **{:.2}**{bar}\n",
                    op.name(),
                    if *clients == 1 { "" } else { "s" },
                    w.per_s / r.per_s
                ));
            }
        }
    }

    // Through the gateway: a function reading one key, against hello.
    let app = dir.join("app");
    std::fs::create_dir_all(&app)?;
    std::fs::write(
        app.join("weft.toml"),
        format!(
            "[app]\nname = \"kv-bench\"\n\n[function.hello]\nsource = \"{}\"\nenv = {{ GREETING = \"Hello\" }}\n\n[function.reader]\nsource = \"{}\"\nkv = [\"bench\"]\n\n[kv.bench]\n\n[[route]]\npath = \"/\"\nfunction = \"hello\"\n\n[[route]]\npath = \"/kv/{{*op}}\"\nfunction = \"reader\"\n",
            hello.canonicalize()?.display(),
            kv_wasi.canonicalize()?.display()
        ),
    )?;
    let server = Server::weft(weft, &app, &dir.join("app-data"))?;
    let status = request(
        server.addr,
        "PUT",
        "/kv/set?store=bench&key=k",
        b"a value of some bytes",
    )
    .await?;
    anyhow::ensure!(status == 204, "setting the benchmark's key answered {status}");
    // The reader is a bigger component than hello: opening the store
    // without reading shows what the component costs by itself.
    let paths = ["/", "/kv/open?store=bench", "/kv/get?store=bench&key=k"];
    let warmup = Duration::from_secs(1);
    let mut ratios = Vec::new();
    let mut opened = Vec::new();
    let mut best: [Option<load::Load>; 3] = [None, None, None];
    for _ in 0..ROUNDS {
        let mut rps = [0.0; 3];
        for (i, path) in paths.iter().enumerate() {
            let run = load::run(server.addr, path, connections, warmup, seconds).await?;
            rps[i] = run.rps();
            if best[i].as_ref().is_none_or(|b| run.rps() > b.rps()) {
                best[i] = Some(run);
            }
        }
        ratios.push(rps[2] / rps[0]);
        opened.push(rps[2] / rps[1]);
    }
    out.push_str(&format!(
        "\nA function that reads one key and answers it, against hello, through the gateway: {connections} connections, {}s per round, {ROUNDS} rounds in turn; the best round of each, and the median of each round's ratio.\n\n| function | requests/s | p50 µs | p99 µs | errors |\n| --- | ---: | ---: | ---: | ---: |\n",
        seconds.as_secs()
    ));
    for (label, run) in [
        "hello",
        "the reader, opening the store only",
        "the reader, reading a key",
    ]
    .iter()
    .zip(&best)
    {
        let run = run.as_ref().ok_or_else(|| anyhow::anyhow!("no run"))?;
        out.push_str(&format!(
            "| {label} | {:.0} | {:.0} | {:.0} | {} |\n",
            run.rps(),
            run.percentile(0.5),
            run.percentile(0.99),
            run.errors
        ));
    }
    out.push_str(&format!(
        "\n- reads a key ÷ hello, requests/s: **{:.2}** (bar: at least 0.8)\n- reads a key ÷ the same component opening the store only: {:.2}\n",
        median(ratios),
        median(opened)
    ));
    Ok(out)
}
