//! Accepts HTTP/1.1 connections and hands each request to a handler,
//! within bounds: a connection has [`Limits::header_timeout`] to send a
//! request's headers (hyper also applies it to the wait for the next
//! request on a kept-alive connection), and is closed after
//! [`Limits::idle_timeout`] with no request running or with a response
//! whose body has not moved (a client that stopped reading); a listener
//! holds at most [`Limits::max_connections`] connections, and answers 503
//! to those past the cap.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use weft_node::Body;

/// How long the 503 to a connection past the cap may take to write.
const SHED_WRITE: Duration = Duration::from_secs(1);
/// Connections past the cap being answered 503 at once; past this many,
/// further ones are closed without an answer.
const MAX_REFUSING: usize = 256;

/// The bounds of one listener's connections.
#[derive(Debug, Clone)]
pub struct Limits {
    /// From the end of the previous response (or the connection's start)
    /// to the end of a request's headers.
    pub header_timeout: Duration,
    /// A connection with no request running, or whose response body has
    /// not moved, is closed after this long.
    pub idle_timeout: Duration,
    /// Connections open at once; past it, new ones get a 503 and are closed.
    pub max_connections: usize,
    /// How long requests in flight may take to finish once shutdown begins.
    pub drain: Duration,
    /// Counts what the limits refused.
    pub counters: Arc<Counters>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 8192,
            drain: Duration::from_secs(30),
            counters: Arc::default(),
        }
    }
}

/// What a listener's limits refused, for metrics and logs.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections answered 503 (or, past [`MAX_REFUSING`] at once,
    /// closed at once) because the listener was full.
    pub shed: AtomicU64,
    /// Connections being answered 503 now.
    refusing: AtomicUsize,
    /// Connections closed for sitting idle (or never finishing their headers).
    pub idle_closed: AtomicU64,
}

/// Serves `handler` on `listener` until `shutdown` resolves; then stops
/// accepting, lets requests in flight finish (closing idle keep-alive
/// connections), and returns when they have, or after [`Limits::drain`].
pub async fn serve<H, F>(listener: TcpListener, handler: Arc<H>, limits: Limits, shutdown: impl Future<Output = ()>)
where
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, _) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and similar: back off, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(open) = Open::claim(&limits) else {
            let shed = limits.counters.shed.fetch_add(1, Ordering::Relaxed) + 1;
            if shed.is_power_of_two() {
                tracing::warn!(
                    "{shed} connections refused so far: the listener holds its maximum of {}",
                    limits.max_connections
                );
            }
            let counters = limits.counters.clone();
            if counters.refusing.fetch_add(1, Ordering::AcqRel) < MAX_REFUSING {
                tokio::spawn(async move {
                    refuse(stream).await;
                    counters.refusing.fetch_sub(1, Ordering::AcqRel);
                });
            } else {
                counters.refusing.fetch_sub(1, Ordering::AcqRel);
                drop(stream);
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let handler = handler.clone();
        let seen = activity.clone();
        let service = hyper::service::service_fn(move |req| {
            let request = Request::begin(seen.clone());
            let fut = handler(req);
            async move {
                // The request runs until its response body is sent.
                let response = fut.await.map(|body| Guarded::new(body, request).boxed_unsync());
                Ok::<_, Infallible>(response)
            }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let (idle, counters) = (limits.idle_timeout, limits.counters.clone());
        tokio::spawn(async move {
            let _open = open;
            tokio::pin!(conn);
            loop {
                let wait = activity.idle_for().map_or(idle, |for_| idle.saturating_sub(for_));
                tokio::select! {
                    ended = &mut conn => {
                        if let Err(e) = ended {
                            tracing::debug!("connection ended: {e}");
                        }
                        return;
                    }
                    () = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {
                        if activity.idle_for().is_some_and(|for_| for_ >= idle) {
                            // Dropping the connection closes the socket.
                            counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    let drain = limits.drain;
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still running after {drain:?} of shutdown were cut");
    }
}

/// One open connection, counted against the listener's cap until dropped.
struct Open(Arc<Counters>);

impl Open {
    fn claim(limits: &Limits) -> Option<Open> {
        let counters = &limits.counters;
        let mut now = counters.open.load(Ordering::Relaxed);
        loop {
            if now >= limits.max_connections {
                return None;
            }
            match counters
                .open
                .compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(Open(counters.clone())),
                Err(seen) => now = seen,
            }
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers a connection past the cap with a 503, and closes it. The
/// request's head is read first (within [`SHED_WRITE`], up to 16 KiB), so
/// the client sees an answer to its request rather than an unasked one.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str =
        r#"{"error":"the server holds as many connections as it allows; retry shortly, or reuse a connection"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(SHED_WRITE, async {
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// What a connection is doing: how many requests run on it, how many of
/// those are sending their response body, and when it last made progress.
struct Activity {
    start: Instant,
    running: AtomicUsize,
    streaming: AtomicUsize,
    /// Microseconds from `start` to the end of the last request, or to the
    /// last frame of a response body being sent.
    progress_us: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            running: AtomicUsize::new(0),
            streaming: AtomicUsize::new(0),
            progress_us: AtomicU64::new(0),
        }
    }

    fn mark(&self) {
        self.progress_us
            .store(self.start.elapsed().as_micros() as u64, Ordering::Release);
    }

    /// How long the connection has gone without progress, if it counts as
    /// idle: no request running, or only responses whose bodies wait to be
    /// sent. A handler still working (bounded by its function's timeout)
    /// is never idle.
    fn idle_for(&self) -> Option<Duration> {
        if self.running.load(Ordering::Acquire) > self.streaming.load(Ordering::Acquire) {
            return None;
        }
        let since = Duration::from_micros(self.progress_us.load(Ordering::Acquire));
        Some(self.start.elapsed().saturating_sub(since))
    }
}

/// A request running on a connection, from its headers to its response.
struct Request(Arc<Activity>);

impl Request {
    fn begin(activity: Arc<Activity>) -> Request {
        activity.running.fetch_add(1, Ordering::AcqRel);
        Request(activity)
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        self.0.mark();
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its request's place on the connection until
/// it is sent (or dropped), and marks progress with every frame.
struct Guarded {
    body: Body,
    request: Request,
}

impl Guarded {
    fn new(body: Body, request: Request) -> Guarded {
        request.0.streaming.fetch_add(1, Ordering::AcqRel);
        request.0.mark();
        Guarded { body, request }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.request.0.streaming.fetch_sub(1, Ordering::AcqRel);
    }
}

impl hyper::body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = weft_runtime::HttpError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if polled.is_ready() {
            self.request.0.mark();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves `handler` on `addr` with one single-threaded runtime per thread,
/// each accepting on its own `SO_REUSEPORT` socket: the kernel spreads
/// connections over the threads, and a request's tasks (connection,
/// invocation, body) stay on one core instead of waking each other across
/// cores. The threads share `limits` (one connection cap for the address).
/// Returns the bound address once every thread listens; the threads end
/// when `stop` turns true.
pub fn serve_per_core<H, F>(
    addr: std::net::SocketAddr,
    threads: usize,
    handler: Arc<H>,
    limits: Limits,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<(std::net::SocketAddr, Vec<std::thread::JoinHandle<()>>)>
where
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let mut bound = addr;
    let mut handles = Vec::new();
    for i in 0..threads.max(1) {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (handler, mut stop, limits) = (handler.clone(), stop.clone(), limits.clone());
        let handle = std::thread::Builder::new()
            .name(format!("weft-gateway-{i}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match reuseport_listener(bound) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(listener.local_addr());
                    serve(listener, handler, limits, async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                });
            })?;
        bound = ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("a gateway thread ended before listening"))??;
        handles.push(handle);
    }
    Ok((bound, handles))
}

fn reuseport_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
