//! One weft node: the deployed app, the runtime, the store, the
//! capabilities, and what happens around every invocation (ids, headers,
//! records, logs).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use tokio::sync::oneshot;
use weft_runtime::{Answer, Exit, InvocationContext, Runtime};
use weft_store::durable::Storage;
use weft_store::{Artifacts, InvocationRecord, LogLine, Outcome, Store, Trigger};

use crate::body::{self, Body};
use crate::capability::{Capability, Workers};
use crate::deploy::{Deployed, Deployment};
use crate::outbound::FunctionOutbound;

/// Settings of a node.
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// Print a line per request (the CLI turns this on in a terminal).
    pub print_requests: bool,
    /// How long invocation records and function logs are kept.
    pub retention: std::time::Duration,
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
    pub(crate) capabilities: Vec<Arc<dyn Capability>>,
    /// The workers of the current deploy; replaced (and the old ones
    /// stopped) by every deploy.
    pub(crate) workers: ArcSwap<Workers>,
    /// Node-wide workers: housekeeping.
    background: Workers,
    pub(crate) current: ArcSwap<Deployment>,
    pub(crate) deploying: tokio::sync::Mutex<()>,
    /// Invocations running now, and a wake-up for each that ends.
    running: AtomicUsize,
    ended: tokio::sync::Notify,
    ids: RequestIds,
    print_requests: bool,
}

/// How often capabilities' housekeeping runs.
const HOUSEKEEPING: Duration = Duration::from_secs(60);

/// Who is calling, for one invocation.
pub struct Call<'a> {
    pub trigger: Trigger,
    pub params: &'a [(&'a str, &'a str)],
    pub parent: Option<&'a str>,
    pub depth: u32,
    /// `weft-*` headers weft itself sets (clients' are removed).
    pub trusted: &'a [(&'a str, &'a str)],
}

impl<'a> Call<'a> {
    /// A call with nothing but its trigger.
    pub fn new(trigger: Trigger) -> Call<'a> {
        Call {
            trigger,
            params: &[],
            parent: None,
            depth: 0,
            trusted: &[],
        }
    }
}

/// A handled invocation: the response to send, and the record once it exists.
pub struct Handled {
    pub response: hyper::Response<Body>,
    pub request_id: String,
    pub record: oneshot::Receiver<InvocationRecord>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("weft-request-id");

impl Node {
    /// Opens a node on `storage` (the durable parts) with its records,
    /// artifacts and compiled cache in `config.data_dir`. Call it inside a
    /// tokio runtime: it starts the capabilities' housekeeping.
    pub fn open(config: NodeConfig, storage: Arc<dyn Storage>) -> Result<Arc<Node>, String> {
        let data = &config.data_dir;
        std::fs::create_dir_all(data)
            .map_err(|e| format!("cannot create the data directory {}: {e}", data.display()))?;
        let store = Store::open_with_retention(&data.join("weft.db"), config.retention).map_err(|e| e.to_string())?;
        let artifacts = Artifacts::open(&data.join("artifacts")).map_err(|e| e.to_string())?;
        let runtime =
            Runtime::new(weft_runtime::RuntimeConfig::new(data.join("compiled"))).map_err(|e| e.to_string())?;
        let node = Arc::new(Node {
            runtime,
            store,
            artifacts,
            queues: weft_events::Queues::new(storage.clone()),
            topics: weft_events::Topics::default(),
            buses: weft_events::bus::Buses::new(storage.clone()),
            storage,
            capabilities: crate::capabilities::all(),
            workers: ArcSwap::from_pointee(Workers::default()),
            background: Workers::default(),
            current: ArcSwap::from_pointee(Deployment::default()),
            deploying: tokio::sync::Mutex::new(()),
            running: AtomicUsize::new(0),
            ended: tokio::sync::Notify::new(),
            ids: RequestIds::new(),
            print_requests: config.print_requests,
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
    pub fn capabilities(&self) -> &[Arc<dyn Capability>] {
        &self.capabilities
    }

    /// The registered capability of type `C`.
    pub fn capability<C: Capability>(&self) -> Option<&C> {
        self.capabilities
            .iter()
            .find_map(|c| {
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

    /// Runs `function` for `request`, records the invocation, and returns
    /// the response (streaming) as soon as the function answers.
    pub async fn invoke<B>(
        self: &Arc<Self>,
        function: &Arc<Deployed>,
        mut request: hyper::Request<B>,
        call: Call<'_>,
    ) -> Handled
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<weft_runtime::HttpError>,
    {
        let request_id = self.ids.next();
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        prepare_headers(request.headers_mut(), &request_id, &function.name, call.params);
        for (name, value) in call.trusted {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                request.headers_mut().insert(n, v);
            }
        }
        let outbound = Arc::new(FunctionOutbound::new(self, function, &request_id, call.depth));
        let (record_tx, record_rx) = oneshot::channel();
        let base = RecordBase {
            request_id: request_id.clone(),
            function: function.clone(),
            trigger: call.trigger,
            parent: call.parent.map(str::to_string),
            outbound: outbound.clone(),
        };
        // The record is written on the invocation's own task when the
        // instance is gone: no task of our own waits for it.
        let node = Arc::downgrade(self);
        self.running.fetch_add(1, Ordering::AcqRel);
        let running = Running(node.clone());
        let on_complete = Box::new(move |completion: &weft_runtime::Completion| {
            if let Some(node) = node.upgrade() {
                // Only the admin API's invoke waits for the record.
                if let Some(record) = node.finish(base, completion, !record_tx.is_closed()) {
                    let _ = record_tx.send(record);
                }
            }
            drop(running);
        });
        let ctx = InvocationContext {
            request_id: request_id.clone(),
            outbound,
            nested: call.trigger == Trigger::Internal,
            on_complete: Some(on_complete),
        };
        let invocation = self.runtime.invoke(function.image.clone(), request, ctx).await;

        let (response, status) = match invocation.answer {
            Answer::Response(mut response) => {
                if let Ok(v) = HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert(REQUEST_ID, v);
                }
                let status = response.status().as_u16();
                (body::coalesce(response).await, status)
            }
            Answer::Refused(code) => {
                let message = format!("function `{}` answered with error {code}", function.name);
                (body::error(500, &message, Some(&request_id)), 500)
            }
            Answer::Nothing => {
                // The function ended without answering: wait for how, so the
                // caller learns why.
                let (status, message) = match invocation.completion.await {
                    Ok(c) => failure(&function.name, &c.exit),
                    Err(_) => (500, "the invocation was lost".to_string()),
                };
                (body::error(status, &message, Some(&request_id)), status)
            }
        };
        self.print(&method, &path, &function.name, status, started);
        Handled {
            response,
            request_id,
            record: record_rx,
        }
    }

    /// Writes the record and the function's output for a finished
    /// invocation, and returns the record if `wanted`.
    fn finish(
        &self,
        base: RecordBase,
        completion: &weft_runtime::Completion,
        wanted: bool,
    ) -> Option<InvocationRecord> {
        let name = &base.function.name;
        let (outcome, error) = match &completion.exit {
            Exit::Returned => (Outcome::Success, None),
            Exit::Trap(m) => (Outcome::Trap, Some(m.clone())),
            Exit::Timeout(_) => (Outcome::Timeout, Some(failure(name, &completion.exit).1)),
            Exit::MemoryLimit { .. } => (Outcome::MemoryLimit, Some(failure(name, &completion.exit).1)),
            Exit::Failed(m) => (Outcome::Failed, Some(m.clone())),
        };
        // A function that answered and then failed (say, trapped while
        // streaming) still answered with its status.
        let status = completion.status.unwrap_or_else(|| failure(name, &completion.exit).0);
        let line = |stream: &str, time_us: i64, line: String| LogLine {
            seq: 0,
            request_id: base.request_id.clone(),
            function: name.clone(),
            stream: stream.into(),
            time_us,
            line,
        };
        let mut lines: Vec<LogLine> = base
            .outbound
            .take_denials()
            .into_iter()
            .map(|l| line("stderr", completion.start_us, l))
            .collect();
        lines.extend(
            completion
                .output
                .iter()
                .map(|o| line(o.stream, o.time_us, o.line.clone())),
        );
        self.store.logs(lines);
        let record = InvocationRecord {
            request_id: base.request_id,
            function: name.clone(),
            version: base.function.version,
            trigger: base.trigger,
            start_us: completion.start_us,
            duration_us: completion.duration.as_micros() as u64,
            cold: completion.cold,
            peak_memory_bytes: completion.peak_memory,
            outcome,
            status,
            error,
            parent_request_id: base.parent,
        };
        if wanted {
            self.store.record(record.clone());
            return Some(record);
        }
        self.store.record(record);
        None
    }

    fn print(&self, method: &http::Method, path: &str, function: &str, status: u16, started: Instant) {
        if self.print_requests {
            println!("{method} {path} -> {function} {status} in {:.2?}", started.elapsed());
        }
    }
}

/// Counts one invocation as running until it is dropped (its record
/// written, or its completion lost).
struct Running(std::sync::Weak<Node>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(node) = self.0.upgrade() {
            node.running.fetch_sub(1, Ordering::AcqRel);
            node.ended.notify_waiters();
        }
    }
}

struct RecordBase {
    request_id: String,
    function: Arc<Deployed>,
    trigger: Trigger,
    parent: Option<String>,
    outbound: Arc<FunctionOutbound>,
}

/// Status and message for an invocation that ended without answering.
fn failure(function: &str, exit: &Exit) -> (u16, String) {
    match exit {
        Exit::Returned => (
            500,
            format!("function `{function}` returned without setting a response"),
        ),
        Exit::Trap(m) => (500, format!("function `{function}` trapped: {m}")),
        Exit::Timeout(t) => (
            504,
            format!("function `{function}` timed out after {t:?} (its `timeout` in weft.toml)"),
        ),
        Exit::MemoryLimit { limit } => (
            500,
            format!(
                "function `{function}` exceeded its memory limit of {} (raise `memory` in [function.{function}] of weft.toml)",
                weft_manifest::ByteSize(*limit)
            ),
        ),
        Exit::Failed(m) => (500, format!("function `{function}` could not run: {m}")),
    }
}

/// Removes `weft-*` headers a client sent (they are weft's to set), then
/// adds the request id, the function name and the route parameters.
fn prepare_headers(headers: &mut http::HeaderMap, request_id: &str, function: &str, params: &[(&str, &str)]) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("weft-"))
        .cloned()
        .collect();
    for k in spoofed {
        headers.remove(k);
    }
    if !headers.contains_key(http::header::HOST) {
        headers.insert(http::header::HOST, HeaderValue::from_static("localhost"));
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(function) {
        headers.insert(HeaderName::from_static("weft-function"), v);
    }
    for (name, value) in params {
        let header = HeaderName::from_bytes(format!("weft-param-{}", name.to_ascii_lowercase()).as_bytes());
        let value = HeaderValue::from_str(&percent_decode(value));
        if let (Ok(h), Ok(v)) = (header, value) {
            headers.insert(h, v);
        }
    }
}

/// Decodes `%XX` escapes in a path parameter; invalid escapes stay as written.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_weft_s_to_set() {
        let mut h = http::HeaderMap::new();
        h.insert("weft-param-id", HeaderValue::from_static("spoofed"));
        h.insert("weft-request-id", HeaderValue::from_static("spoofed"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        prepare_headers(&mut h, "r1", "users", &[("id", "a%20b"), ("rest", "x/y")]);
        assert_eq!(h["weft-param-id"], "a b");
        assert_eq!(h["weft-param-rest"], "x/y");
        assert_eq!(h["weft-request-id"], "r1");
        assert_eq!(h["weft-function"], "users");
        assert_eq!(h["accept"], "*/*");
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
