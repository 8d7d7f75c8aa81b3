//! What telemetry costs: HTTP requests/s and the chain's per-hop figure
//! with tracing off (`--no-traces`), with spans kept locally (the
//! default), and with spans also exported over OTLP to a local receiver,
//! in one run. Each configuration is its own `weft up`, loaded in turn,
//! [`ROUNDS`] times, keeping each one's best round (a 2-core machine is
//! noisy), and the server's CPU per request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::load;
use crate::procs::Server;

/// A receiver that reads each export whole and answers 200, as a
/// collector's OTLP/HTTP receiver does.
pub async fn serve_sink(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async {
                let _ = request.into_body().collect().await;
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

const MODES: [&str; 3] = ["off", "local spans", "OTLP export"];
/// Rounds per configuration, interleaved, so a noisy moment of a shared
/// machine hits every configuration alike.
const ROUNDS: usize = 5;
/// Rounds of the chain's per-hop figures.
const CHAIN_ROUNDS: usize = 7;

fn start(weft: &Path, app: &Path, data: &Path, mode: &str, sink: &str) -> anyhow::Result<Server> {
    let extra: Vec<&str> = match mode {
        "off" => vec!["--no-traces"],
        "OTLP export" => vec!["--otlp-endpoint", sink],
        _ => vec![],
    };
    Server::weft_with(weft, app, data, &extra)
}

pub async fn report(
    weft: &Path,
    app: &Path,
    probe: &Path,
    scratch: &Path,
    seconds: Duration,
    connections: usize,
) -> anyhow::Result<String> {
    let sink = Server::otlp_sink()?;
    let sink_url = format!("http://{}", sink.addr);
    let warmup = Duration::from_secs(1);
    let mut out = String::new();

    // HTTP: the hello app.
    let servers: Vec<Server> = MODES
        .iter()
        .map(|m| start(weft, app, &scratch.join(format!("telemetry-{m}")), m, &sink_url))
        .collect::<anyhow::Result<_>>()?;
    let mut best: Vec<Option<load::Load>> = vec![None, None, None];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); 3];
    // Each round's requests/s of local spans and of export over off's.
    let mut ratios: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _round in 0..ROUNDS {
        let mut rps = [0.0; 3];
        for (i, server) in servers.iter().enumerate() {
            let (run, used) = measured(server, "/", connections, warmup, seconds).await?;
            cpu[i].extend(used);
            rps[i] = run.rps();
            if best[i].as_ref().is_none_or(|b| run.rps() > b.rps()) {
                best[i] = Some(run);
            }
        }
        ratios[0].push(rps[1] / rps[0]);
        ratios[1].push(rps[2] / rps[0]);
    }
    let exported = spans_exported(servers[2].admin).await.unwrap_or(0.0);
    drop(servers);
    out.push_str(&format!(
        "Hello through the gateway, {connections} connections, {}s per round, {ROUNDS} rounds, each loading the three servers in turn: the best round's requests/s and latency, and the server's CPU per request (all its threads, median of the rounds).\n\n",
        seconds.as_secs()
    ));
    out.push_str(
        "| telemetry | requests/s | p50 µs | p99 µs | CPU µs/request | errors |\n| --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let cpu: Vec<f64> = cpu.into_iter().map(median).collect();
    for ((mode, run), cpu) in MODES.iter().zip(&best).zip(&cpu) {
        let run = run.as_ref().ok_or_else(|| anyhow::anyhow!("no run"))?;
        out.push_str(&format!(
            "| {mode} | {:.0} | {:.0} | {:.0} | {cpu:.1} | {} |\n",
            run.rps(),
            run.percentile(0.5),
            run.percentile(0.99),
            run.errors
        ));
    }
    let [local, export] = ratios.map(median);
    out.push_str(&format!(
        "\nRatios are the medians of each round's ratio (so a slow moment of the machine cancels out):\n\n- local spans / off, requests/s: **{local:.2}** (bar: at least 0.95); CPU per request: {:.2}×\n- OTLP export / off, requests/s: **{export:.2}** (bar: at least 0.9); CPU per request: {:.2}×; spans exported: {exported:.0}\n",
        cpu[1] / cpu[0],
        cpu[2] / cpu[0],
    ));

    // Chains: the per-hop figure, off against on.
    let chain = scratch.join("telemetry-chain");
    std::fs::create_dir_all(&chain)?;
    let probe = probe.canonicalize()?;
    std::fs::write(
        chain.join("weft.toml"),
        format!(
            "[app]\nname = \"chain\"\n\n[function.probe]\nsource = \"{}\"\n\n[[route]]\npath = \"/{{*rest}}\"\nfunction = \"probe\"\n",
            probe.display()
        ),
    )?;
    let servers: Vec<Server> = MODES[..2]
        .iter()
        .map(|m| start(weft, &chain, &chain.join(format!("data-{m}")), m, &sink_url))
        .collect::<anyhow::Result<_>>()?;
    out.push_str(&format!("\nPer-hop cost of a chain, one request at a time: (p50 at depth 10 − p50 at depth 1) ÷ 9, and the server's CPU per hop (the same difference of CPU per request). Each of {CHAIN_ROUNDS} rounds measures both servers at each depth in turn; the figures are the medians over the rounds, and the rises the medians of each round's difference, so that a slow moment of the machine cancels out:\n\n| design | off µs/hop | local spans µs/hop | rise µs | off CPU µs/hop | local spans CPU µs/hop | CPU rise µs |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"));
    let round = Duration::from_secs(1).min(seconds);
    let settle = Duration::from_millis(200);
    for (design, hop) in [("blocking", "call/probe/"), ("forward", "forward/probe/")] {
        let mut rounds: Vec<Round> = Vec::new();
        for _ in 0..CHAIN_ROUNDS {
            let mut one = [(0.0, 0.0); 2];
            let mut ten = [(0.0, 0.0); 2];
            for (depth, into) in [(1, &mut one), (10, &mut ten)] {
                let path = format!("/{}json", hop.repeat(depth));
                for (i, server) in servers.iter().enumerate() {
                    let (run, cpu) = measured(server, &path, 1, settle, round).await?;
                    into[i] = (run.percentile(0.5), cpu.unwrap_or(f64::NAN));
                }
            }
            let per_hop = |i: usize| ((ten[i].0 - one[i].0) / 9.0, (ten[i].1 - one[i].1) / 9.0);
            let (off, on) = (per_hop(0), per_hop(1));
            rounds.push(Round {
                latency: [off.0, on.0],
                cpu: [off.1, on.1],
            });
        }
        let pick = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        out.push_str(&format!(
            "| {design} | {:.1} | {:.1} | **{:.1}** | {:.1} | {:.1} | **{:.1}** |\n",
            pick(&|r| r.latency[0]),
            pick(&|r| r.latency[1]),
            pick(&|r| r.latency[1] - r.latency[0]),
            pick(&|r| r.cpu[0]),
            pick(&|r| r.cpu[1]),
            pick(&|r| r.cpu[1] - r.cpu[0]),
        ));
    }
    out.push_str("\nBar: the per-hop figure rises by under 3 µs with spans kept.\n");
    drop(servers);
    drop(sink);
    Ok(out)
}

/// One round of a chain's figures: per hop, off and with spans kept.
struct Round {
    latency: [f64; 2],
    cpu: [f64; 2],
}

/// A load run on `server`, and the server's CPU per request over it (the
/// warm-up's requests counted at the measured rate).
async fn measured(
    server: &Server,
    path: &str,
    connections: usize,
    warmup: Duration,
    seconds: Duration,
) -> anyhow::Result<(load::Load, Option<f64>)> {
    let before = server.cpu();
    let run = load::run(server.addr, path, connections, warmup, seconds).await?;
    let cpu = match (before, server.cpu()) {
        (Some(a), Some(b)) => {
            let requests = run.rps() * (seconds + warmup).as_secs_f64();
            Some((b - a).as_secs_f64() * 1e6 / requests.max(1.0))
        }
        _ => None,
    };
    Ok((run, cpu))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `weft_spans_exported_total` from a server's `/metrics`.
async fn spans_exported(admin: Option<SocketAddr>) -> Option<f64> {
    let admin = admin?;
    let stream = tokio::net::TcpStream::connect(admin).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    let request = hyper::Request::get("/metrics")
        .header(http::header::HOST, "localhost")
        .body(http_body_util::Empty::<Bytes>::new())
        .ok()?;
    let body = send
        .send_request(request)
        .await
        .ok()?
        .into_body()
        .collect()
        .await
        .ok()?
        .to_bytes();
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("weft_spans_exported_total ")?.trim().parse().ok())
}
