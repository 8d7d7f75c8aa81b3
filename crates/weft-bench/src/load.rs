//! A closed-loop HTTP/1.1 load generator: C keep-alive connections, each
//! sending the next request as soon as the last answer is read.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Load {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Latencies in microseconds, sorted.
    pub latencies: Vec<u32>,
}

impl Load {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i] as f64
    }
}

/// Runs `connections` loops against `addr` `path` for `duration`, after a
/// warm-up of `warmup` whose requests are not counted.
pub async fn run(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Load> {
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let path = path.to_string();
        tasks.push(tokio::spawn(async move { connection(addr, &path, start, end).await }));
    }
    let mut total = Load {
        requests: 0,
        errors: 0,
        seconds: duration.as_secs_f64(),
        latencies: Vec::new(),
    };
    for t in tasks {
        let (ok, errors, lat) = t.await??;
        total.requests += ok;
        total.errors += errors;
        total.latencies.extend(lat);
    }
    total.latencies.sort_unstable();
    Ok(total)
}

async fn connection(
    addr: SocketAddr,
    path: &str,
    start: Instant,
    end: Instant,
) -> anyhow::Result<(u64, u64, Vec<u32>)> {
    let (mut ok, mut errors, mut latencies) = (0u64, 0u64, Vec::with_capacity(1 << 16));
    let mut sender = connect(addr).await?;
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let request = http::Request::get(path)
            .header(http::header::HOST, "bench")
            .body(Empty::<Bytes>::new())?;
        let result = async {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok(status.is_success() && !body.is_empty())
        }
        .await;
        let done = Instant::now();
        if sent >= start {
            match result {
                Ok(true) => {
                    ok += 1;
                    latencies.push((done - sent).as_micros().min(u32::MAX as u128) as u32);
                }
                _ => errors += 1,
            }
        }
        if result.is_err() {
            sender = connect(addr).await?;
        }
    }
    Ok((ok, errors, latencies))
}

async fn connect(addr: SocketAddr) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}
