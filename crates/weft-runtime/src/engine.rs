//! The engine, its configuration, and preparing components to run.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::cache::{ArtifactCache, Source};
use crate::host::{self, Host};

/// How the runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are kept.
    pub cache_dir: PathBuf,
    /// Instances that may run at once; more invocations wait for a slot.
    pub max_instances: u32,
    /// The largest memory any one instance may have.
    pub max_memory: u64,
    /// How often the epoch ticker fires: the granularity of deadlines and of
    /// yielding a long-running guest to other work.
    pub epoch_tick: Duration,
    /// Bytes of each linear memory kept resident (reset with memset rather
    /// than returned to the kernel) when an instance ends, where the kernel
    /// can report which pages were dirtied (PAGEMAP_SCAN).
    pub keep_resident: usize,
}

impl RuntimeConfig {
    pub fn new(cache_dir: PathBuf) -> Self {
        RuntimeConfig {
            cache_dir,
            max_instances: 1000,
            max_memory: 4 << 30,
            epoch_tick: Duration::from_millis(2),
            keep_resident: 4 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot use the compiled-artifact cache at {path}: {source}")]
    Cache { path: String, source: std::io::Error },
}

/// Why a component cannot be deployed. The message is shown to the user
/// who deployed it.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error("the component cannot be linked: {0}. weft provides {provided}", provided = host::PROVIDED)]
    Link(String),
    #[error("the component does not export wasi:http/incoming-handler: {0}. Build it for the wasi:http/proxy world")]
    NotProxy(String),
}

/// Per-function limits, applied to every invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory: u64,
    pub timeout: Duration,
}

/// A function ready to run: compiled, linked and pre-instantiated, with its
/// limits and configuration. Cheap to invoke many times at once.
pub struct FunctionImage {
    pub(crate) pre: ProxyPre<Host>,
    pub limits: Limits,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) warm: AtomicBool,
    /// Where the compiled code came from when this image was prepared.
    pub compiled_from: &'static str,
    /// Time spent compiling or loading.
    pub prepare_time: Duration,
}

impl FunctionImage {
    /// Whether no invocation has run on this image yet.
    pub fn is_cold(&self) -> bool {
        !self.warm.load(Ordering::Relaxed)
    }
}

/// The WebAssembly engine and everything shared by all invocations.
pub struct Runtime {
    pub(crate) engine: Engine,
    linker: Linker<Host>,
    cache: ArtifactCache,
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// How many top-level invocations may run at once (`slots` when idle).
    slot_count: usize,
    /// The pooling allocator's instance slots.
    pool: u32,
    /// Instances alive now, nested ones included.
    pub(crate) live: Arc<std::sync::atomic::AtomicUsize>,
    ticker: Arc<AtomicBool>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let engine_err = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
        // PAGEMAP_SCAN (Linux 6.7+) lets a large `keep_resident` cost only
        // what a request dirtied; without it, keep little resident, since
        // wasmtime would then memset all of it after every instance.
        let engine = Engine::new(&engine_config(&config, true))
            .or_else(|_| Engine::new(&engine_config(&config, false)))
            .map_err(engine_err)?;

        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(engine_err)?;

        let cache = ArtifactCache::open(&engine, &config.cache_dir).map_err(|source| RuntimeError::Cache {
            path: config.cache_dir.display().to_string(),
            source,
        })?;

        // One ticker per engine: every tick, each running guest reaches its
        // epoch deadline, yields to the scheduler, and is stopped if its own
        // deadline has passed.
        let ticker = Arc::new(AtomicBool::new(true));
        let (running, ticking) = (ticker.clone(), engine.clone());
        std::thread::Builder::new()
            .name("weft-epoch".into())
            .spawn(move || {
                while running.load(Ordering::Relaxed) {
                    std::thread::sleep(config.epoch_tick);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch ticker: {e}")))?;

        // Half the pool serves top-level invocations; the rest is headroom
        // for the in-process calls they make, so callers waiting on callees
        // cannot take every slot.
        let slot_count = (config.max_instances as usize / 2).max(1);
        let slots = Arc::new(tokio::sync::Semaphore::new(slot_count));
        Ok(Runtime {
            engine,
            linker,
            cache,
            slots,
            slot_count,
            pool: config.max_instances,
            live: Arc::default(),
            ticker,
        })
    }

    /// Instances alive now, and the pool's instance slots.
    pub fn instances(&self) -> (usize, u32) {
        (self.live.load(Ordering::Relaxed), self.pool)
    }

    /// Top-level invocations running now, and how many may run at once.
    pub fn invocation_slots(&self) -> (usize, usize) {
        (
            self.slot_count - self.slots.available_permits().min(self.slot_count),
            self.slot_count,
        )
    }

    /// Compiles (or loads from cache) and pre-instantiates a component.
    /// `digest` is the SHA-256 of `bytes`, as hex.
    pub fn prepare(
        &self,
        digest: &str,
        bytes: &[u8],
        limits: Limits,
        env: Vec<(String, String)>,
    ) -> Result<FunctionImage, PrepareError> {
        let started = Instant::now();
        let (component, source) = self
            .cache
            .component(&self.engine, digest, bytes)
            .map_err(|e| PrepareError::Invalid(root_message(&e)))?;
        let pre = self.pre_instantiate(&component)?;
        Ok(FunctionImage {
            pre,
            limits,
            env,
            warm: AtomicBool::new(false),
            compiled_from: match source {
                Source::Memory => "memory",
                Source::Disk => "cache",
                Source::Compiled => "compiled",
            },
            prepare_time: started.elapsed(),
        })
    }

    fn pre_instantiate(&self, component: &Component) -> Result<ProxyPre<Host>, PrepareError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| PrepareError::Link(root_message(&e)))?;
        ProxyPre::new(pre).map_err(|e| PrepareError::NotProxy(root_message(&e)))
    }

    /// Drops compiled components that no deployed function uses.
    pub fn forget_unused(&self, in_use: &dyn Fn(&str) -> bool) {
        self.cache.retain(in_use);
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.store(false, Ordering::Relaxed);
    }
}

fn engine_config(config: &RuntimeConfig, pagemap_scan: bool) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    let n = config.max_instances;
    pool.total_component_instances(n)
        .total_core_instances(n * 4)
        .total_memories(n * 2)
        .total_tables(n * 4)
        .total_stacks(n)
        .max_memory_size(config.max_memory as usize)
        // Resetting memory between instances is the main per-request cost.
        // With PAGEMAP_SCAN only the pages an instance really dirtied are
        // reset, by memset, up to `keep_resident`; they stay mapped, so the
        // next instance takes no page faults and no madvise (and so no
        // cross-core TLB shootdown) is needed.
        .pagemap_scan(if pagemap_scan { Enabled::Yes } else { Enabled::No })
        .linear_memory_keep_resident(if pagemap_scan { config.keep_resident } else { 64 * 1024 })
        .table_keep_resident(64 * 1024)
        // What does go back to the kernel goes in batches.
        .decommit_batch_size(32);
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    wasm
}

/// The error and its causes on one line, without wasmtime's backtrace.
pub(crate) fn root_message(e: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.dedup();
    parts.retain(|p| !p.starts_with("error while executing at wasm backtrace"));
    parts.join(": ")
}
