//! What telemetry costs: HTTP requests/s and the chain's per-hop figure
//! with tracing off (`--no-traces`), with spans kept locally (the
//! default), and with spans also exported over OTLP to a local receiver,
//! in one run. Each configuration is its own `weft up`, loaded in turn,
//! twice, keeping each one's best round (a 2-core machine is noisy).

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
    for _round in 0..2 {
        for (i, server) in servers.iter().enumerate() {
            let run = load::run(server.addr, "/", connections, warmup, seconds).await?;
            if best[i].as_ref().is_none_or(|b| run.rps() > b.rps()) {
                best[i] = Some(run);
            }
        }
    }
    let exported = spans_exported(servers[2].admin).await.unwrap_or(0.0);
    drop(servers);
    out.push_str(&format!(
        "Hello through the gateway, {connections} connections, {}s per round, best of 2 rounds each.\n\n",
        seconds.as_secs()
    ));
    out.push_str("| telemetry | requests/s | p50 µs | p99 µs | errors |\n| --- | ---: | ---: | ---: | ---: |\n");
    for (mode, run) in MODES.iter().zip(&best) {
        let run = run.as_ref().ok_or_else(|| anyhow::anyhow!("no run"))?;
        out.push_str(&format!(
            "| {mode} | {:.0} | {:.0} | {:.0} | {} |\n",
            run.rps(),
            run.percentile(0.5),
            run.percentile(0.99),
            run.errors
        ));
    }
    let rps = |i: usize| best[i].as_ref().map_or(0.0, load::Load::rps);
    out.push_str(&format!(
        "\n- local spans / off, requests/s: **{:.2}** (bar: at least 0.95)\n- OTLP export / off, requests/s: **{:.2}** (bar: at least 0.9); spans exported: {exported:.0}\n",
        rps(1) / rps(0),
        rps(2) / rps(0)
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
    out.push_str("\nPer-hop cost of a chain, one request at a time, (p50 at depth 10 − p50 at depth 1) ÷ 9, best of 2 rounds:\n\n| design | off µs/hop | local spans µs/hop | rise µs |\n| --- | ---: | ---: | ---: |\n");
    let round = Duration::from_secs(2).min(seconds);
    for (design, hop) in [("blocking", "call/probe/"), ("forward", "forward/probe/")] {
        let mut per_hop = [f64::MAX; 2];
        for _ in 0..2 {
            for (i, server) in servers.iter().enumerate() {
                let one = load::run(
                    server.addr,
                    &format!("/{hop}json"),
                    1,
                    Duration::from_millis(300),
                    round,
                )
                .await?;
                let ten = load::run(
                    server.addr,
                    &format!("/{}json", hop.repeat(10)),
                    1,
                    Duration::from_millis(300),
                    round,
                )
                .await?;
                per_hop[i] = per_hop[i].min((ten.percentile(0.5) - one.percentile(0.5)) / 9.0);
            }
        }
        out.push_str(&format!(
            "| {design} | {:.1} | {:.1} | **{:.1}** |\n",
            per_hop[0],
            per_hop[1],
            per_hop[1] - per_hop[0]
        ));
    }
    out.push_str("\nBar: the per-hop figure rises by under 3 µs with spans kept.\n");
    drop(servers);
    drop(sink);
    Ok(out)
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
