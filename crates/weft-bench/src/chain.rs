//! Chains of calls, A→B→C…: a function that calls the next and waits
//! (blocking), a function that forwards to the next (forward), and bare
//! hyper services calling each other over loopback.
//!
//! Depth counts hand-offs: depth 1 is A→B. weft runs the probe component
//! (`tests/fixtures/probe`): `/call/probe/…` calls the next hop through
//! `probe.weft.internal` and waits for it; `/forward/probe/…` forwards. The
//! instance time held per request is the sum of the durations of every
//! invocation record a request left.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::load;
use crate::procs::Server;

/// The hyper baseline: `/hop/N` calls `/hop/N-1` on itself; `/hop/0` answers.
pub async fn serve_hyper_chain(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let me = listener.local_addr()?;
    println!("listening on http://{me}");
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let client = client.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let client = client.clone();
                async move {
                    let n: u32 = req.uri().path().trim_start_matches("/hop/").parse().unwrap_or(0);
                    let body = if n == 0 {
                        Bytes::from_static(b"Hello, world!\n")
                    } else {
                        let next = format!("http://{me}/hop/{}", n - 1)
                            .parse::<http::Uri>()
                            .expect("a valid URI");
                        match client.get(next).await {
                            Ok(r) => r.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default(),
                            Err(_) => Bytes::from_static(b"error"),
                        }
                    };
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(body)))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Sum of record durations (µs) of invocations that started at or after `since_us`.
async fn held_us(admin: SocketAddr, since_us: i64) -> anyhow::Result<(u64, usize)> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let records = crate::procs::get_json(admin, "/v1/invocations?limit=10000").await?;
    let list = records["invocations"].as_array().cloned().unwrap_or_default();
    let mine: Vec<_> = list
        .iter()
        .filter(|r| r["start_us"].as_i64().unwrap_or(0) >= since_us)
        .collect();
    Ok((
        mine.iter().map(|r| r["duration_us"].as_u64().unwrap_or(0)).sum(),
        mine.len(),
    ))
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

pub async fn report(weft: &Path, probe: &Path, scratch: &Path, seconds: Duration) -> anyhow::Result<String> {
    let app = scratch.join("chain");
    std::fs::create_dir_all(&app)?;
    let probe = probe
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("the probe component {}: {e}", probe.display()))?;
    std::fs::write(
        app.join("weft.toml"),
        format!(
            "[app]\nname = \"chain\"\n\n[function.probe]\nsource = \"{}\"\n\n[[route]]\npath = \"/{{*rest}}\"\nfunction = \"probe\"\n",
            probe.display()
        ),
    )?;
    let weft_server = Server::weft(weft, &app, &app.join("data"))?;
    let admin = weft_server
        .admin
        .ok_or_else(|| anyhow::anyhow!("weft printed no admin address"))?;
    let hyper_server = Server::hyper_chain()?;
    let warmup = Duration::from_millis(500);
    let mut out = String::from(
        "| design | depth | p50 µs, 1 at a time | p99 µs | requests/s, 16 connections | instance time held per request |\n| --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut p50s = std::collections::HashMap::new();
    for depth in [1usize, 3, 10] {
        let designs = [
            (
                "blocking (weft)",
                weft_server.addr,
                format!("/{}json", "call/probe/".repeat(depth)),
                true,
            ),
            (
                "forward (weft)",
                weft_server.addr,
                format!("/{}json", "forward/probe/".repeat(depth)),
                true,
            ),
            ("bare hyper", hyper_server.addr, format!("/hop/{depth}"), false),
        ];
        for (name, addr, path, records) in designs {
            let one = load::run(addr, &path, 1, warmup, seconds).await?;
            let many = load::run(addr, &path, 16, warmup, seconds).await?;
            let held = if records {
                // A separate, short sequential run, so every record fits in one query.
                let since = now_us();
                let sample = load::run(addr, &path, 1, Duration::ZERO, Duration::from_millis(300)).await?;
                let (sum, _) = held_us(admin, since).await?;
                format!("{:.0} µs", sum as f64 / sample.requests.max(1) as f64)
            } else {
                "–".to_string()
            };
            p50s.insert((name, depth), one.percentile(0.5));
            out.push_str(&format!(
                "| {name} | {depth} | {:.0} | {:.0} | {:.0} | {held} |\n",
                one.percentile(0.5),
                one.percentile(0.99),
                many.rps()
            ));
        }
    }
    out.push_str("\nPer-hop cost, (p50 at depth 10 − p50 at depth 1) ÷ 9:\n\n");
    for name in ["blocking (weft)", "forward (weft)", "bare hyper"] {
        let per_hop = (p50s[&(name, 10)] - p50s[&(name, 1)]) / 9.0;
        out.push_str(&format!("- {name}: **{per_hop:.0} µs** per hop\n"));
    }
    out.push_str("\nBar: per-hop overhead under 20 µs; with forward, the forwarding functions' held time near zero.\n");
    drop(weft_server);
    Ok(out)
}
