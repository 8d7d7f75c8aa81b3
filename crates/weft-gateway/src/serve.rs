//! Accepts HTTP/1.1 connections and hands each request to a handler.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Body;

/// How long requests in flight may take to finish once shutdown begins.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `handler` on `listener` until `shutdown` resolves; then stops
/// accepting, lets requests in flight finish (closing idle keep-alive
/// connections), and returns when they have, or after 10 seconds.
pub async fn serve<H, F>(listener: TcpListener, handler: Arc<H>, shutdown: impl Future<Output = ()>)
where
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let fut = handler(req);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still running after {DRAIN:?} of shutdown were cut");
    }
}

/// Serves `handler` on `addr` with one single-threaded runtime per thread,
/// each accepting on its own `SO_REUSEPORT` socket: the kernel spreads
/// connections over the threads, and a request's tasks (connection,
/// invocation, body) stay on one core instead of waking each other across
/// cores. Returns the bound address once every thread listens; the threads
/// end when `stop` turns true.
pub fn serve_per_core<H, F>(
    addr: std::net::SocketAddr,
    threads: usize,
    handler: Arc<H>,
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
        let (handler, mut stop) = (handler.clone(), stop.clone());
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
                    serve(listener, handler, async move {
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
