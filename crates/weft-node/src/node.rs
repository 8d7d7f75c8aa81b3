//! One weft node: the deployed app, the runtime, the store, the
//! capabilities, and what happens around every invocation (ids, headers,
//! records, logs).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use weft_runtime::Runtime;
use weft_store::durable::Storage;
use weft_store::{Artifacts, Store};

use crate::capability::{Capability, Workers};
use crate::deployment::Deployment;

/// Settings of a node.
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// Print a line per request (the CLI turns this on in a terminal).
    pub print_requests: bool,
    /// How long invocation records and function logs are kept.
    pub retention: std::time::Duration,
    /// Trace every invocation and hop (W3C trace context, spans kept in
    /// the store). On unless turned off.
    pub tracing: bool,
    /// Where to export spans over OTLP too, if anywhere. An empty
    /// `instance` is filled with the node's id.
    pub otlp: Option<weft_telemetry::otlp::OtlpConfig>,
}

/// What a node knows of the nodes it shares its storage with (the
/// behaviour is in `cluster.rs`).
#[derive(Default)]
pub(crate) struct Peers {
    /// This node's id, unique among the nodes sharing the storage.
    pub id: String,
    /// The revision of the shared deployment this node runs (0: none).
    pub applied: AtomicU64,
    /// Artifacts already copied to the shared storage.
    pub published: std::sync::Mutex<std::collections::HashSet<weft_store::Digest>>,
    /// Where this node serves the app and the admin API, once it does.
    pub addresses: std::sync::RwLock<Option<(String, String)>>,
}

/// The running node. Shared by the gateway, the admin API and in-process calls.
pub struct Node {
    pub runtime: Runtime,
    pub store: Store,
    pub artifacts: Artifacts,
    /// The durable parts: queues, topics, buses, schedules' state.
    pub storage: Arc<dyn Storage>,
    pub queues: weft_events::Queues,
    pub topics: weft_events::Topics,
    pub buses: weft_events::bus::Buses,
    /// Every capability, in registration order.
    pub(crate) capabilities: Vec<Arc<dyn Capability<Node>>>,
    /// The workers of the current deploy; replaced (and the old ones
    /// stopped) by every deploy.
    pub(crate) workers: ArcSwap<Workers>,
    /// Node-wide workers: housekeeping.
    pub(crate) background: Workers,
    pub(crate) current: ArcSwap<Deployment>,
    pub(crate) deploying: tokio::sync::Mutex<()>,
    /// Invocations running now, and a wake-up for each that ends.
    pub(crate) running: AtomicUsize,
    pub(crate) ended: tokio::sync::Notify,
    ids: RequestIds,
    pub(crate) print_requests: bool,
    pub(crate) tracing: bool,
    /// Counters and histograms, rendered by [`Node::metrics`].
    pub metrics: weft_telemetry::metrics::Registry,
    /// Spans go here too when an OTLP endpoint is configured.
    pub(crate) exporter: Option<weft_telemetry::otlp::Exporter>,
    pub(crate) peers: Peers,
}

/// How often capabilities' housekeeping runs.
const HOUSEKEEPING: Duration = Duration::from_secs(60);

/// A node id: the host name, the process and the start time, so that it
/// repeats neither across machines nor across restarts.
fn node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{}-{:x}", std::process::id(), weft_store::now_us() & 0xff_ffff)
}

impl Node {
    /// Opens a node on `storage` (the durable parts) with its records,
    /// artifacts and compiled cache in `config.data_dir`, and `capabilities`
    /// plugged in (in weft, [`crate::capabilities::all`]). Call it inside a
    /// tokio runtime: it starts the capabilities' housekeeping.
    pub fn open(
        config: NodeConfig,
        storage: Arc<dyn Storage>,
        capabilities: Vec<Arc<dyn Capability<Node>>>,
    ) -> Result<Arc<Node>, String> {
        let data = &config.data_dir;
        std::fs::create_dir_all(data)
            .map_err(|e| format!("cannot create the data directory {}: {e}", data.display()))?;
        let store = Store::open_with_retention(&data.join("weft.db"), config.retention).map_err(|e| e.to_string())?;
        let artifacts = Artifacts::open(&data.join("artifacts")).map_err(|e| e.to_string())?;
        let runtime =
            Runtime::new(weft_runtime::RuntimeConfig::new(data.join("compiled"))).map_err(|e| e.to_string())?;
        let id = node_id();
        let exporter = config.otlp.map(|mut otlp| {
            if otlp.instance.is_empty() {
                otlp.instance = id.clone();
            }
            weft_telemetry::otlp::Exporter::start(otlp)
        });
        let node = Arc::new(Node {
            runtime,
            store,
            artifacts,
            queues: weft_events::Queues::new(storage.clone()),
            topics: weft_events::Topics::default(),
            buses: weft_events::bus::Buses::new(storage.clone()),
            storage,
            capabilities,
            workers: ArcSwap::from_pointee(Workers::default()),
            background: Workers::default(),
            current: ArcSwap::from_pointee(Deployment::default()),
            deploying: tokio::sync::Mutex::new(()),
            running: AtomicUsize::new(0),
            ended: tokio::sync::Notify::new(),
            ids: RequestIds::new(),
            print_requests: config.print_requests,
            tracing: config.tracing,
            metrics: Default::default(),
            exporter,
            peers: Peers { id, ..Peers::default() },
        });
        let weak = Arc::downgrade(&node);
        node.background.spawn(move |mut stop| async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(HOUSEKEEPING) => {}
                    () = stop.stopped() => return,
                }
                let Some(node) = weak.upgrade() else { return };
                for capability in &node.capabilities {
                    capability.housekeeping(&node).await;
                }
            }
        });
        Ok(node)
    }

    /// The registered capabilities, in order.
    pub fn capabilities(&self) -> &[Arc<dyn Capability<Node>>] {
        &self.capabilities
    }

    /// The registered capability of type `C`.
    pub fn capability<C: Capability<Node>>(&self) -> Option<&C> {
        self.capabilities.iter().find_map(|c| {
            let any: &dyn std::any::Any = c.as_ref();
            any.downcast_ref::<C>()
        })
    }

    /// Stops the node in order: every worker (deliveries, schedules,
    /// housekeeping) stops taking new work and is waited for; then the
    /// invocations still running finish (up to `within`); then the
    /// records and logs they left are written.
    pub async fn shutdown(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        // A deploy still running finishes first, and none starts after.
        let _no_more_deploys = self.deploying.lock().await;
        self.workers.load_full().stop(within).await;
        self.background.stop(within).await;
        loop {
            let ended = self.ended.notified();
            if self.running.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                let n = self.running.load(Ordering::Acquire);
                tracing::warn!("{n} invocations still running after {within:?} of shutdown were cut");
                break;
            }
        }
        if let Some(exporter) = &self.exporter {
            exporter.flush(Duration::from_secs(5).min(within)).await;
        }
        self.store.close();
    }

    /// How many invocations are running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// A new, unique request (or invocation) id.
    pub fn new_request_id(&self) -> String {
        self.ids.next()
    }

    /// The app as deployed now.
    pub fn deployment(&self) -> Arc<Deployment> {
        self.current.load_full()
    }
}

/// Request ids: unique per node run and sortable by time of issue.
struct RequestIds {
    prefix: String,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        RequestIds {
            prefix: format!("{:012x}{:04x}", now & 0xffff_ffff_ffff, std::process::id() & 0xffff),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:08x}", self.prefix)
    }
}
