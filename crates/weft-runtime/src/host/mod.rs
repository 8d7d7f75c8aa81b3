//! The host side of one invocation: [`Host`], the data of its store, and
//! the linker setup that gives every component the same imports.
//!
//! A `Host` is built for each invocation from its [`InvocationContext`]
//! and dropped with the instance; nothing in it outlives the request.

use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::engine::FunctionImage;
use crate::invoke::InvocationContext;
use crate::logs::OutputCapture;
use crate::meter::MemoryMeter;
use crate::outbound::Hooks;

/// The data of one invocation's store.
pub(crate) struct Host {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: Hooks,
    /// The resources of every interface, in one table as WASI expects.
    table: ResourceTable,
    pub(crate) meter: MemoryMeter,
}

impl Host {
    /// The host of one invocation of `image`, writing its stdout and stderr
    /// to `output`.
    pub(crate) fn new(image: &FunctionImage, output: &OutputCapture, ctx: &InvocationContext) -> Host {
        let mut wasi = WasiCtx::builder();
        wasi.envs(&image.env).stdout(output.stream(0)).stderr(output.stream(1));
        Host {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: Hooks {
                outbound: ctx.outbound.clone(),
            },
            table: ResourceTable::new(),
            meter: MemoryMeter::new(image.limits.memory),
        }
    }
}

/// Adds every interface a component may import to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    Ok(())
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}
