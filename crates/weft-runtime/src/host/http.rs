//! Outgoing HTTP (`wasi:http/outgoing-handler`, with the `wasi:http/types`
//! that incoming requests share).
//!
//! - Policy: [`Outbound`], which the embedder implements to deny each
//!   request, send it over the network ([`send_direct`]) or answer it
//!   in-process. It arrives as [`InvocationContext::outbound`].
//! - State: [`State`], the wasi-http context and the hooks that hand every
//!   request to the invocation's `Outbound`.
//! - Linker hook: [`add_to_linker`].
//!
//! This module does not know which hosts a function may reach, nor what
//! any host name means: that is all the `Outbound`'s.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http_body_util::BodyExt;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::Host;
use crate::invoke::InvocationContext;

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

/// The wasi:http state of one invocation.
pub(crate) struct State {
    ctx: WasiHttpCtx,
    hooks: Hooks,
}

impl State {
    pub(crate) fn new(ctx: &InvocationContext) -> State {
        State {
            ctx: WasiHttpCtx::new(),
            hooks: Hooks {
                outbound: ctx.outbound.clone(),
            },
        }
    }
}

/// Adds `wasi:http/outgoing-handler` and `wasi:http/types` to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.hooks,
        }
    }
}

/// The wasi-http hooks of one invocation: every outgoing request goes to
/// its `Outbound`.
struct Hooks {
    outbound: Arc<dyn Outbound>,
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
