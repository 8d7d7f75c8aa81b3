//! Durable queue throughput against the disk's fsync rate and Redis
//! Streams, and weft's queue on NATS JetStream (one server, and a
//! three-server cluster at three replicas) against raw JetStream doing
//! the same with the same client library.
//!
//! The same loop runs on each: producers send one message at a time and
//! wait for it to be durable (their latency is the acknowledgement
//! latency); consumers receive up to 100 at a time and acknowledge them.
//! Throughput counts messages accepted and then delivered and
//! acknowledged within the measured window.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weft_events::{Outgoing, Queues};
use weft_manifest::Queue;
use weft_store::durable::{Embedded, Storage};

pub const PRODUCERS: usize = 64;
pub const CONSUMERS: usize = 2;

/// fsyncs per second of a 4 KiB write in `dir`, and the mean latency in µs.
pub fn fsync_rate(dir: &Path, for_how_long: Duration) -> anyhow::Result<(f64, f64)> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fsync-probe");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let block = vec![7u8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < for_how_long {
        file.write_all_at(&block, 0)?;
        file.sync_data()?;
        n += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    Ok((n as f64 / secs, secs * 1e6 / n as f64))
}

pub struct Run {
    pub delivered_per_s: f64,
    pub ack_p50_us: f64,
    pub ack_p99_us: f64,
}

pub(crate) fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * q) as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// weft's queue on the embedded provider.
pub async fn weft(dir: &Path, duration: Duration) -> anyhow::Result<Run> {
    std::fs::create_dir_all(dir)?;
    let storage: Arc<dyn Storage> = Arc::new(Embedded::open(&dir.join("events.db"))?);
    queue(vec![storage], duration).await
}

/// weft's queue on `nodes` (each a node's storage: one connection to a
/// shared JetStream, say): the producers and consumers above, spread
/// over them in turn, each node with its own consumers.
pub async fn queue(nodes: Vec<Arc<dyn Storage>>, duration: Duration) -> anyhow::Result<Run> {
    let all: Vec<Arc<Queues>> = nodes.into_iter().map(|s| Arc::new(bench_queues(s))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut producers = Vec::new();
    for i in 0..PRODUCERS {
        let (queues, stop) = (all[i % all.len()].clone(), stop.clone());
        producers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let message = Outgoing {
                    body: BODY.to_vec(),
                    ..Default::default()
                };
                queues.send("bench", vec![message]).await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1e6);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut consumers = Vec::new();
    for i in 0..CONSUMERS * all.len() {
        let (queues, stop, delivered) = (all[i % all.len()].clone(), stop.clone(), delivered.clone());
        consumers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let messages = queues.receive("bench", 100, None).await?;
                if messages.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let receipts: Vec<_> = messages.iter().map(|m| m.receipt()).collect();
                let n = queues.ack("bench", &receipts).await?;
                delivered.fetch_add(n as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    finish(duration, started, stop, delivered, producers, consumers).await
}

/// One node's queues, with the benchmark's queue.
fn bench_queues(storage: Arc<dyn Storage>) -> Queues {
    let queues = Queues::new(storage);
    queues.configure(&[Queue {
        name: "bench".into(),
        visibility_timeout: Duration::from_secs(60),
        retry: weft_manifest::Retry {
            max_attempts: 5,
            backoff: Duration::from_secs(1),
            max_age: None,
        },
        dead_letter: None,
        delay: Duration::ZERO,
        retention: Duration::from_secs(86_400),
        fifo: false,
    }]);
    queues
}

/// The message every run sends.
const BODY: &[u8] = b"{\"order\":42}";

type Producer = tokio::task::JoinHandle<anyhow::Result<Vec<f64>>>;
type Consumer = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Lets a run go for `duration`, stops it, and sums it up.
async fn finish(
    duration: Duration,
    started: Instant,
    stop: Arc<AtomicBool>,
    delivered: Arc<AtomicU64>,
    producers: Vec<Producer>,
    consumers: Vec<Consumer>,
) -> anyhow::Result<Run> {
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    for p in producers {
        latencies.extend(p.await??);
    }
    for c in consumers {
        c.await??;
    }
    Ok(Run {
        delivered_per_s: delivered.load(Ordering::Relaxed) as f64 / elapsed,
        ack_p50_us: percentile(&mut latencies, 0.5),
        ack_p99_us: percentile(&mut latencies, 0.99),
    })
}

/// Raw JetStream, the same loop with the same client library: producers
/// publish and wait for the server's acknowledgement; consumers pull up
/// to 100 from one durable consumer (explicit acks, as weft's) and
/// acknowledge each, waiting for the server's confirmation.
pub async fn raw_jetstream(url: &str, replicas: usize, duration: Duration) -> anyhow::Result<Run> {
    use async_nats::jetstream::{self, consumer, stream};
    use futures_util::StreamExt;
    let servers: Vec<async_nats::ServerAddr> = url.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let client = async_nats::connect(servers).await?;
    let js = jetstream::new(client.clone());
    let s = js
        .get_or_create_stream(stream::Config {
            name: "RAW".into(),
            subjects: vec!["raw".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            num_replicas: replicas,
            ..Default::default()
        })
        .await?;
    let pull: consumer::PullConsumer = s
        .get_or_create_consumer(
            "raw",
            consumer::pull::Config {
                durable_name: Some("raw".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: 65_536,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut producers: Vec<Producer> = Vec::new();
    for _ in 0..PRODUCERS {
        let (js, stop) = (js.clone(), stop.clone());
        producers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                js.publish("raw", bytes::Bytes::from_static(BODY)).await?.await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1e6);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut consumers: Vec<Consumer> = Vec::new();
    for _ in 0..CONSUMERS {
        let (pull, stop, delivered, client) = (pull.clone(), stop.clone(), delivered.clone(), client.clone());
        consumers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut batch = pull
                    .fetch()
                    .max_messages(100)
                    .messages()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let mut replies = Vec::new();
                while let Some(m) = batch.next().await {
                    let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
                    if let Some(reply) = m.reply.clone() {
                        replies.push(reply);
                    }
                }
                if replies.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let acks = replies
                    .into_iter()
                    .map(|r| client.request(r, bytes::Bytes::from_static(b"+ACK")));
                let n = futures_util::future::join_all(acks)
                    .await
                    .into_iter()
                    .filter(|a| a.is_ok())
                    .count();
                delivered.fetch_add(n as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    finish(duration, started, stop, delivered, producers, consumers).await
}

/// weft's queue on JetStream through `nodes` connections (nodes, as far
/// as the durable path goes), with the prefix `bench`.
async fn weft_on(url: &str, replicas: usize, nodes: usize, duration: Duration) -> anyhow::Result<Run> {
    let mut storages: Vec<Arc<dyn Storage>> = Vec::new();
    for n in 0..nodes {
        let options = weft_jetstream::Options {
            replicas,
            name: format!("bench-node-{n}"),
            ..weft_jetstream::Options::new(url)
        };
        storages.push(
            weft_jetstream::JetStream::connect(options)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
    }
    queue(storages, duration).await
}

/// weft on JetStream and raw JetStream, on one server and on a
/// three-server cluster at three replicas, each on fresh servers.
async fn jetstream_runs(duration: Duration) -> Vec<(String, anyhow::Result<Run>)> {
    use weft_jetstream::testing::{Cluster, NatsServer};
    let mut runs = Vec::new();
    for replicas in [1, 3] {
        for raw in [true, false] {
            let (servers, url): (Box<dyn std::any::Any>, String) = if replicas == 1 {
                let s = NatsServer::start();
                let url = s.url();
                (Box::new(s), url)
            } else {
                let c = Cluster::start(3);
                let url = c.urls();
                (Box::new(c), url)
            };
            let label = format!(
                "{} on JetStream, R{replicas}{}",
                if raw {
                    "raw JetStream (async-nats)"
                } else {
                    "weft queue"
                },
                if replicas == 1 {
                    ", one server"
                } else {
                    ", three-server cluster"
                }
            );
            let run = async {
                let ready = Instant::now() + Duration::from_secs(60);
                loop {
                    let attempt = if raw {
                        raw_jetstream(&url, replicas, duration).await
                    } else {
                        weft_on(&url, replicas, 1, duration).await
                    };
                    // A new cluster takes some seconds to elect its leaders.
                    match attempt {
                        Err(e) if Instant::now() < ready => {
                            eprintln!("{label}: not ready ({e}); retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        other => return other,
                    }
                }
            }
            .await;
            runs.push((label, run));
            drop(servers);
        }
    }
    // Nodes 1, 2 and 3 on one server (each a connection with its own
    // producers' share and consumers).
    for nodes in [1, 2, 3] {
        let server = NatsServer::start();
        let run = weft_on(&server.url(), 1, nodes, duration).await;
        runs.push((format!("weft queue on JetStream, R1, {nodes} node(s)"), run));
    }
    runs
}

/// A minimal RESP client: enough for XADD, XREADGROUP, XACK, SET and GET.
pub(crate) struct Resp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

#[derive(Debug)]
pub(crate) enum Value {
    Text,
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

impl Resp {
    fn connect(port: u16) -> anyhow::Result<Resp> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        Ok(Resp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    pub(crate) fn call(&mut self, args: &[&[u8]]) -> anyhow::Result<Value> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out)?;
        self.read()
    }

    fn read(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let line = line.trim_end();
        let (kind, rest) = line.split_at(1.min(line.len()));
        Ok(match kind {
            "+" => Value::Text,
            "-" => anyhow::bail!("redis: {rest}"),
            ":" => Value::Int(rest.parse()?),
            "$" => {
                let n: i64 = rest.parse()?;
                if n < 0 {
                    Value::Bulk(None)
                } else {
                    let mut buf = vec![0; n as usize + 2];
                    std::io::Read::read_exact(&mut self.reader, &mut buf)?;
                    buf.truncate(n as usize);
                    Value::Bulk(Some(buf))
                }
            }
            "*" => {
                let n: i64 = rest.parse()?;
                if n < 0 {
                    Value::Array(None)
                } else {
                    Value::Array(Some((0..n).map(|_| self.read()).collect::<anyhow::Result<_>>()?))
                }
            }
            _ => anyhow::bail!("redis: unexpected reply `{line}`"),
        })
    }
}

/// Entry ids in an XREADGROUP reply.
fn entry_ids(reply: Value) -> Vec<Vec<u8>> {
    let Value::Array(Some(streams)) = reply else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for stream in streams {
        let Value::Array(Some(mut parts)) = stream else {
            continue;
        };
        let Some(Value::Array(Some(entries))) = parts.pop() else {
            continue;
        };
        for entry in entries {
            if let Value::Array(Some(mut fields)) = entry
                && !fields.is_empty()
                && let Value::Bulk(Some(id)) = fields.remove(0)
            {
                ids.push(id);
            }
        }
    }
    ids
}

/// A redis-server with `appendfsync always` (every write fsynced before
/// its answer) on a free loopback port, its files in `dir`; killed on drop.
pub(crate) struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    /// Starts one, or `None` without redis-server.
    pub(crate) fn start(dir: &Path) -> anyhow::Result<Option<Redis>> {
        let Ok(path) = which("redis-server") else {
            return Ok(None);
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = std::process::Command::new(path)
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .spawn()?;
        Ok(Some(Redis { child, port }))
    }

    /// A connection, once the server answers (within 10 s).
    pub(crate) fn connect(&self) -> anyhow::Result<Resp> {
        let started = Instant::now();
        loop {
            match Resp::connect(self.port) {
                Ok(c) => return Ok(c),
                Err(_) if started.elapsed() < Duration::from_secs(10) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Redis Streams with `appendfsync always`, same loop, or `None` without redis-server.
pub fn redis(dir: &Path, duration: Duration) -> anyhow::Result<Option<Run>> {
    let Some(server) = Redis::start(dir)? else {
        return Ok(None);
    };
    let port = server.port;
    let result = (|| {
        let mut admin = server.connect()?;
        admin.call(&[b"XGROUP", b"CREATE", b"bench", b"g", b"$", b"MKSTREAM"])?;
        let stop = Arc::new(AtomicBool::new(false));
        let delivered = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut producers = Vec::new();
        for _ in 0..PRODUCERS {
            let stop = stop.clone();
            producers.push(std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
                let mut c = Resp::connect(port)?;
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    c.call(&[b"XADD", b"bench", b"*", b"body", b"{\"order\":42}"])?;
                    latencies.push(sent.elapsed().as_secs_f64() * 1e6);
                }
                Ok(latencies)
            }));
        }
        let mut consumers = Vec::new();
        for n in 0..CONSUMERS {
            let (stop, delivered) = (stop.clone(), delivered.clone());
            consumers.push(std::thread::spawn(move || -> anyhow::Result<()> {
                let mut c = Resp::connect(port)?;
                let name = format!("c{n}");
                while !stop.load(Ordering::Relaxed) {
                    let reply = c.call(&[
                        b"XREADGROUP",
                        b"GROUP",
                        b"g",
                        name.as_bytes(),
                        b"COUNT",
                        b"100",
                        b"BLOCK",
                        b"10",
                        b"STREAMS",
                        b"bench",
                        b">",
                    ])?;
                    let ids = entry_ids(reply);
                    if ids.is_empty() {
                        continue;
                    }
                    let mut args: Vec<&[u8]> = vec![b"XACK", b"bench", b"g"];
                    args.extend(ids.iter().map(Vec::as_slice));
                    if let Value::Int(n) = c.call(&args)? {
                        delivered.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                Ok(())
            }));
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let mut latencies = Vec::new();
        for p in producers {
            latencies.extend(p.join().map_err(|_| anyhow::anyhow!("producer panicked"))??);
        }
        for c in consumers {
            c.join().map_err(|_| anyhow::anyhow!("consumer panicked"))??;
        }
        Ok(Run {
            delivered_per_s: delivered.load(Ordering::Relaxed) as f64 / elapsed,
            ack_p50_us: percentile(&mut latencies, 0.5),
            ack_p99_us: percentile(&mut latencies, 0.99),
        })
    })();
    drop(server);
    result.map(Some)
}

fn which(program: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("{program} not found"))
}

/// The report section.
pub async fn report(scratch: &Path, duration: Duration) -> anyhow::Result<String> {
    let dir = scratch.join("durable");
    std::fs::create_dir_all(&dir)?;
    let (fsyncs, fsync_us) = fsync_rate(&dir, Duration::from_secs(2))?;
    let weft = weft(&dir.join("weft"), duration).await;
    std::fs::create_dir_all(dir.join("redis"))?;
    let redis_dir = dir.join("redis");
    let redis = tokio::task::spawn_blocking(move || redis(&redis_dir, duration)).await?;
    let weft = weft?;
    let mut out = format!(
        "{PRODUCERS} producers sending one message at a time and waiting until it is durable; {CONSUMERS} consumers receiving up to 100 and acknowledging them; {}s.\n\n\
         | system | delivered/s | ack p50 µs | ack p99 µs |\n| --- | ---: | ---: | ---: |\n\
         | disk: 4 KiB write + fdatasync | {fsyncs:.0} fsyncs/s | {fsync_us:.0} (mean) | |\n\
         | weft queue (embedded, group commit) | {:.0} | {:.0} | {:.0} |\n",
        duration.as_secs(),
        weft.delivered_per_s,
        weft.ack_p50_us,
        weft.ack_p99_us
    );
    match &redis {
        Ok(Some(r)) => out.push_str(&format!(
            "| Redis Streams, appendfsync always | {:.0} | {:.0} | {:.0} |\n",
            r.delivered_per_s, r.ack_p50_us, r.ack_p99_us
        )),
        Ok(None) => out.push_str("| Redis Streams | skipped: redis-server not found | | |\n"),
        Err(e) => out.push_str(&format!("| Redis Streams | failed: {e} | | |\n")),
    }
    out.push_str(&format!(
        "\n- weft delivered/s ÷ fsyncs/s: **{:.1}** (bar: at least 50)\n- weft ack p99 ÷ one fsync: **{:.1}** (bar: under 3)\n",
        weft.delivered_per_s / fsyncs,
        weft.ack_p99_us / fsync_us
    ));
    if let Ok(Some(r)) = &redis {
        out.push_str(&format!(
            "- weft / Redis Streams, delivered/s: {:.2}\n",
            weft.delivered_per_s / r.delivered_per_s
        ));
    }
    let runs = jetstream_runs(duration).await;
    out.push_str("\nOn NATS JetStream (Debian's nats-server, on this machine), the same loop:\n\n| system | delivered/s | ack p50 µs | ack p99 µs |\n| --- | ---: | ---: | ---: |\n");
    for (label, run) in &runs {
        match run {
            Ok(r) => out.push_str(&format!(
                "| {label} | {:.0} | {:.0} | {:.0} |\n",
                r.delivered_per_s, r.ack_p50_us, r.ack_p99_us
            )),
            Err(e) => out.push_str(&format!("| {label} | failed: {e} | | |\n")),
        }
    }
    out.push('\n');
    for pair in runs[..4.min(runs.len())].chunks(2) {
        if let [(raw_label, Ok(raw)), (_, Ok(w))] = pair {
            out.push_str(&format!(
                "- {}: weft ÷ raw, delivered/s **{:.2}** (bar: at least 0.5); ack p99 ÷ raw p99 **{:.2}** (bar: under 3)\n",
                raw_label.trim_start_matches("raw JetStream (async-nats) on "),
                w.delivered_per_s / raw.delivered_per_s,
                w.ack_p99_us / raw.ack_p99_us
            ));
        }
    }
    if let (Some((_, Ok(w1))), Ok(Some(r))) = (runs.get(1), &redis) {
        out.push_str(&format!(
            "- weft on JetStream R1 / weft embedded: {:.2}; / Redis Streams: {:.2}\n",
            w1.delivered_per_s / weft.delivered_per_s,
            w1.delivered_per_s / r.delivered_per_s
        ));
    }
    Ok(out)
}
