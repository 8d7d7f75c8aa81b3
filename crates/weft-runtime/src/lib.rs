//! Runs `wasi:http/proxy` components, one fresh, isolated instance per
//! invocation.
//!
//! The [`Runtime`] owns one wasmtime engine (pooling allocator,
//! copy-on-write memory images, epoch interruption with a single ticker
//! thread) and the compiled-artifact cache. [`Runtime::prepare`] turns
//! component bytes into a [`FunctionImage`]: compiled, or read back from the
//! cache, and pre-instantiated, so that an invocation only has to create a
//! store and instantiate. [`Runtime::invoke`] runs one request against an
//! image under its memory limit and deadline and reports how it ended.
//!
//! Policy comes in from outside: what a function may reach over HTTP is
//! decided by the [`Outbound`] the caller passes with each invocation. Each
//! interface a function may be granted is one module under `host/`, with
//! its policy trait, its per-invocation state and its linker hook; the
//! `host` module's docs say how to add one. This crate knows nothing of
//! manifests, routes or storage.

mod cache;
mod engine;
mod host;
mod invoke;
mod logs;
mod meter;

pub use engine::{FunctionImage, Limits, PrepareError, Runtime, RuntimeConfig, RuntimeError};
pub use host::http::{Outbound, OutboundFuture, send_direct};
pub use host::keyvalue::{Store, StoreError, Stores};
pub use invoke::{Answer, Completion, Exit, Invocation, InvocationContext, OnComplete};
pub use logs::OutputLine;
pub use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
pub use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};
