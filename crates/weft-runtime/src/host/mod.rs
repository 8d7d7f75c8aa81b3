//! The host side of one invocation: [`Host`], the data of its store, and
//! the linker setup that gives every component the same imports.
//!
//! A `Host` is built for each invocation from its [`InvocationContext`]
//! and dropped with the instance; nothing in it outlives the request.
//!
//! Every function has the base of WASI 0.2 (wasi:cli, wasi:clocks,
//! wasi:random, wasi:io, wasi:filesystem, wasi:sockets), set up here.
//! Each further interface a function may be granted is one module below,
//! and every such module has the same three parts:
//!
//! - a **policy**: a public trait the embedder implements to decide what
//!   the function's calls do (which hosts it reaches, which values it
//!   reads). The runtime decides nothing itself; the policy comes with each
//!   invocation as one field of the `InvocationContext`.
//! - its **state**: `State`, one field of [`Host`], built by
//!   `State::new(&InvocationContext)` and dropped with the instance.
//! - its **linker hook**: `add_to_linker`, which adds the interface to the
//!   `Linker<Host>`; [`add_to_linker`] calls each once.
//!
//! | module       | interface                                   | policy                            |
//! |--------------|---------------------------------------------|-----------------------------------|
//! | [`http`]     | wasi:http (outgoing)                        | [`Outbound`](http::Outbound)      |
//! | [`keyvalue`] | wasi:keyvalue, fermyon:spin/key-value       | [`Stores`](keyvalue::Stores)      |
//!
//! An interface's host traits are implemented on a view of `Host` that
//! borrows its own `State` and the shared resource table, as
//! `impl WasiHttpView for Host` does in [`http`]. Modules know nothing of
//! one another, nor of manifests, routes or storage: what a grant means is
//! up to the embedder's policy.
//!
//! # Adding an interface
//!
//! For wasi:config, say, backed by a `Config` policy that returns the
//! function's variables:
//!
//! 1. one file, `host/config.rs`: `pub trait Config`, `pub(crate) struct
//!    State` with `State::new(&InvocationContext)`, `pub(crate) fn
//!    add_to_linker`, and the view of `Host` its host traits need;
//! 2. one field in [`Host`], `config: config::State`, and its
//!    `config::State::new(ctx)` in [`Host::new`];
//! 3. one line in [`add_to_linker`], `config::add_to_linker(linker)?`,
//!    with the interface's name added to [`PROVIDED`] beside it.
//!
//! The policy reaches the runtime as a field of the `InvocationContext`,
//! `config: Arc<dyn Config>`, next to `outbound`, with `Config` re-exported
//! from the crate root. That field has no default, on purpose: every
//! embedder must say what the function is granted.

pub(crate) mod http;
pub(crate) mod keyvalue;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::engine::FunctionImage;
use crate::invoke::InvocationContext;
use crate::logs::OutputCapture;
use crate::meter::MemoryMeter;

/// The data of one invocation's store.
pub(crate) struct Host {
    wasi: WasiCtx,
    /// The resources of every interface, in one table as WASI expects.
    table: ResourceTable,
    pub(crate) meter: MemoryMeter,
    http: http::State,
    kv: keyvalue::State,
}

impl Host {
    /// The host of one invocation of `image`, writing its stdout and stderr
    /// to `output`.
    pub(crate) fn new(image: &FunctionImage, output: &OutputCapture, ctx: &InvocationContext) -> Host {
        let mut wasi = WasiCtx::builder();
        wasi.envs(&image.env).stdout(output.stream(0)).stderr(output.stream(1));
        Host {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            meter: MemoryMeter::new(image.limits.memory),
            http: http::State::new(ctx),
            kv: keyvalue::State::new(ctx, output.stream(1)),
        }
    }
}

/// What [`add_to_linker`] provides, named to a user whose component imports
/// something else. An interface added there is named here too.
pub(crate) const PROVIDED: &str = "WASI 0.2 (wasi:cli, wasi:clocks, wasi:random, wasi:io, wasi:filesystem, \
     wasi:sockets), wasi:http, wasi:keyvalue@0.2.0-draft2 and fermyon:spin/key-value@2.0.0";

/// Adds every interface a component may import to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    http::add_to_linker(linker)?;
    keyvalue::add_to_linker(linker)?;
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
