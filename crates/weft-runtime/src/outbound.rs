//! Outbound HTTP from a function goes through an [`Outbound`] chosen by the
//! embedder, which decides whether and where each request goes.

use std::future::Future;
use std::pin::Pin;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The result of sending one outbound request.
pub type OutboundFuture = Pin<Box<dyn Future<Output = Result<http::Response<WasiBody>, Error>> + Send>>;

/// Decides what happens to a function's outbound HTTP requests: deny them,
/// send them over the network, or answer them in-process.
pub trait Outbound: Send + Sync + 'static {
    fn send(&self, request: http::Request<WasiBody>, options: Option<RequestOptions>) -> OutboundFuture;
}

/// Sends a request over the network with wasmtime's HTTP client.
pub fn send_direct(request: http::Request<WasiBody>, options: Option<RequestOptions>) -> OutboundFuture {
    Box::pin(async move {
        let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
        // The connection task must keep running while the body is read.
        tokio::spawn(async move {
            let _ = io.await;
        });
        Ok(response.map(BodyExt::boxed_unsync))
    })
}

/// The wasi-http hooks of one invocation.
pub(crate) struct Hooks {
    pub(crate) outbound: std::sync::Arc<dyn Outbound>,
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                )>,
            > + Send,
    > {
        let send = self.outbound.send(request, options);
        Box::new(async move {
            let response = send.await?;
            Ok((
                response,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}
