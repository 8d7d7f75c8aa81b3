//! The one shape every capability has.
//!
//! A capability (triggers, async invocation, schedules, queues, topics, the
//! bus, and the ones to come) is one module that implements [`Capability`]
//! and is registered once, in [`crate::capabilities::all`]. The node's
//! deploys, outbound dispatch, delivery path, housekeeping and the admin
//! API loop over the registered capabilities and name none of them.
//!
//! A deploy runs in phases, each over every capability in registration
//! order:
//! 1. **plan** ([`Capability::plan`]): check the new manifest against what
//!    runs, say what would change and what would be lost, and add the
//!    queues and drains the capability needs to the [`Deploy`]. Nothing
//!    changes; `weft plan` stops here.
//! 2. the changed functions are compiled; then the losses are counted
//!    again ([`Staged::losses`]), since messages may have arrived since;
//! 3. **install** ([`Staged::install`]): make what the new deploy sends to
//!    exist (queues), before anything routes to it;
//! 4. **route** ([`Staged::route`]): install the routing that sends to it;
//! 5. the node swaps the new deployment in;
//! 6. **start** ([`Staged::start`]): start this deploy's workers; the
//!    previous deploy's workers are told to stop, and finish what they
//!    hold in the background;
//! 7. **retire** ([`Staged::retire`]): drop what only the old deploy used.
//!
//! This module must not know any particular capability, nor the node:
//! the node is the type parameter `N` (in weft always `crate::Node`), so
//! the node can hold its capabilities without the two modules depending on
//! each other.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use weft_manifest::{Manifest, Queue, TargetKind};
use weft_runtime::{OutboundFuture, WasiBody};

use crate::deployment::Deployed;

/// A boxed future, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One module of the node: its deploy steps, its workers, its internal
/// address, what it delivers, its housekeeping and its admin routes.
pub trait Capability<N>: std::any::Any + Send + Sync {
    /// Its name, in plans and logs: `queues`, `topics`, ...
    fn name(&self) -> &'static str;

    /// Checks a deploy of `deploy.manifest` against what runs now, records
    /// its changes in `deploy`, and returns what to do if it goes ahead.
    /// Changes nothing.
    fn plan<'a>(
        &'a self,
        node: &'a Arc<N>,
        deploy: &'a mut Deploy,
    ) -> BoxFuture<'a, Result<Box<dyn Staged<N>>, String>>;

    /// The manifest section it owns, if it brings its own (`[counter.NAME]`).
    fn section(&self) -> Option<&dyn weft_manifest::Section> {
        None
    }

    /// The `NAME.SUFFIX.weft.internal` addresses it answers for functions.
    fn internal(&self) -> Option<Internal> {
        None
    }

    /// Handles a (granted) request from `caller` to `name` at its
    /// internal address.
    fn call(
        &self,
        node: &Arc<N>,
        caller: &Arc<Deployed>,
        name: &str,
        request: http::Request<WasiBody>,
    ) -> OutboundFuture {
        let _ = (node, caller, request);
        let message = format!("`{name}` has no internal address");
        Box::pin(async move { Err(weft_runtime::HttpError::InternalError(Some(message))) })
    }

    /// The kind of [`weft_manifest::Target`] it delivers events to.
    fn delivers(&self) -> Option<TargetKind> {
        None
    }

    /// Delivers one event to `name`, durably when this returns.
    fn deliver<'a>(
        &'a self,
        node: &'a Arc<N>,
        name: &'a str,
        event: weft_events::CloudEvent,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let _ = (node, event);
        Box::pin(async move {
            Err(DeliveryError::NoTarget(format!(
                "{} cannot deliver to `{name}`",
                self.name()
            )))
        })
    }

    /// The key-value stores an invocation of `function` may open
    /// (`wasi:keyvalue`), if this capability keeps them.
    fn stores(&self, node: &Arc<N>, function: &Arc<Deployed>) -> Option<Arc<dyn weft_runtime::Stores>> {
        let _ = (node, function);
        None
    }

    /// Periodic work (expiring old messages, say), run about once a minute.
    fn housekeeping<'a>(&'a self, node: &'a Arc<N>) -> BoxFuture<'a, ()> {
        let _ = node;
        Box::pin(async {})
    }

    /// Its admin API operations.
    fn admin_routes(&self) -> Vec<AdminRoute<N>> {
        Vec::new()
    }
}

/// What a capability does once a planned deploy goes ahead.
pub trait Staged<N>: Send + Sync {
    /// Before the new deployment is swapped in: make what it sends to exist.
    fn install(&self, node: &Arc<N>, deploy: &Deploy) {
        let _ = (node, deploy);
    }

    /// Before the swap, once every capability has installed: route to
    /// what was installed (topic and bus routing).
    fn route(&self, node: &Arc<N>, deploy: &Deploy) {
        let _ = (node, deploy);
    }

    /// Just before installing, after the functions are compiled: what the
    /// deploy would lose now (messages may have arrived since the plan).
    fn losses<'a>(&'a self, node: &'a Arc<N>) -> BoxFuture<'a, Vec<Change>> {
        let _ = node;
        Box::pin(async { Vec::new() })
    }

    /// After the swap: start this deploy's workers.
    fn start(&self, node: &Arc<N>, deploy: &Deploy, workers: &Workers) {
        let _ = (node, deploy, workers);
    }

    /// After the swap: drop what only the previous deploy used.
    fn retire(&self, node: &Arc<N>, deploy: &Deploy) {
        let _ = (node, deploy);
    }
}

/// Internal addresses: `http://NAME.SUFFIX.weft.internal/`.
#[derive(Debug, Clone, Copy)]
pub struct Internal {
    /// `queue` for `NAME.queue.weft.internal`.
    pub suffix: &'static str,
    /// The `publish` entry kind a caller needs (`queue:NAME`), if any.
    pub grant: Option<TargetKind>,
    /// What a refusal says the caller may not do: `send to`.
    pub verb: &'static str,
}

/// One deploy as it is planned: the manifest, what every capability will
/// need, and what would change.
pub struct Deploy {
    pub manifest: Manifest,
    /// The manifest deployed now, if any.
    pub previous: Option<Manifest>,
    /// Every queue the deploy needs: declared ones and the hidden queues
    /// capabilities add for their function and URL targets.
    pub queues: Vec<Queue>,
    /// Deliveries from queues to functions or URLs.
    pub drains: Vec<Drain>,
    /// What would change, in the order found.
    pub changes: Vec<Change>,
    /// The artifacts the deploy names, by name: each function's component
    /// (by the function's name) and each workflow's definition
    /// (`workflow:NAME`).
    pub artifacts: HashMap<String, weft_store::Digest>,
}

impl Deploy {
    pub fn new(manifest: Manifest, previous: Option<Manifest>) -> Deploy {
        Deploy {
            manifest,
            previous,
            queues: Vec::new(),
            drains: Vec::new(),
            changes: Vec::new(),
            artifacts: HashMap::new(),
        }
    }

    /// Records the added, changed and removed items of one kind, by name,
    /// between the previous manifest's and this one's.
    /// Items with the same name are told apart by their order: the
    /// second is `NAME#2`, and so on.
    pub fn diff<T: PartialEq>(&mut self, kind: &'static str, before: &[(String, T)], after: &[(String, T)]) {
        let (before, after) = (numbered(before), numbered(after));
        let old: HashMap<&str, &T> = before.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let new: HashMap<&str, &T> = after.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        for (name, item) in &after {
            let action = match old.get(name.as_str()) {
                None => Action::Added,
                Some(was) if *was != *item => Action::Changed,
                Some(_) => continue,
            };
            self.changes.push(Change::new(kind, name, action));
        }
        for (name, _) in &before {
            if !new.contains_key(name.as_str()) {
                self.changes.push(Change::new(kind, name, Action::Removed));
            }
        }
    }

    /// Adds hidden queues, each with the drain that delivers from it, one
    /// message at a time.
    pub fn add_hidden(&mut self, hidden: Vec<weft_events::Hidden>) {
        for h in hidden {
            self.drains.push(Drain {
                queue: h.queue.name.clone(),
                target: h.target,
                batch: 1,
                concurrency: h.concurrency,
                encoding: Encoding::CloudEvents,
            });
            self.queues.push(h.queue);
        }
    }

    /// Records the changes of one kind of manifest item, listed by `items`
    /// (name, value) in the previous manifest and this one.
    pub fn diff_manifest<T: PartialEq>(&mut self, kind: &'static str, items: impl Fn(&Manifest) -> Vec<(String, T)>) {
        let before = self.previous.as_ref().map(&items).unwrap_or_default();
        let after = items(&self.manifest);
        self.diff(kind, &before, &after);
    }

    /// The changes that would lose data.
    pub fn losses(&self) -> Vec<&Change> {
        self.changes.iter().filter(|c| c.loss.is_some()).collect()
    }
}

/// Names made unique by their place: the second `x` is `x#2`.
fn numbered<T>(items: &[(String, T)]) -> Vec<(String, &T)> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    items
        .iter()
        .map(|(name, item)| {
            let n = seen.entry(name.as_str()).or_default();
            *n += 1;
            let key = if *n == 1 { name.clone() } else { format!("{name}#{n}") };
            (key, item)
        })
        .collect()
}

/// A queue drained by a worker that delivers to a function or a URL (or,
/// for messages that are not events themselves, to any target).
#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    pub queue: String,
    /// A function or a URL; a queue, topic or bus with [`Encoding::Changes`].
    pub target: weft_manifest::Target,
    /// Messages per delivery.
    pub batch: u32,
    /// Deliveries at once.
    pub concurrency: u32,
    /// What the messages are, and so how they are sent.
    pub encoding: Encoding,
}

/// What a drained queue's messages are.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Encoding {
    /// Events, sent as CloudEvents (one in binary mode, more batched).
    #[default]
    CloudEvents,
    /// A key-value store's changes, sent as DynamoDB Streams records
    /// (`weft_events::kv`).
    Changes { app: String, store: String },
    /// An object bucket's changes, sent as S3 event notifications
    /// (`weft_events::objects`).
    Objects { app: String, bucket: String },
}

/// One change a deploy makes.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Change {
    /// `function`, `route`, `queue`, `topic`, `subscription`, `bus`, `rule`, `schedule`, ...
    pub kind: String,
    pub name: String,
    pub action: Action,
    /// What would be lost, if anything: a deploy with a loss is refused
    /// unless it is allowed to lose data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<String>,
    /// What the change leaves behind without losing it, to say so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Change {
    pub fn new(kind: &str, name: &str, action: Action) -> Change {
        Change {
            kind: kind.to_string(),
            name: name.to_string(),
            action,
            loss: None,
            note: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Added,
    Changed,
    Removed,
}

impl Action {
    pub fn sign(self) -> char {
        match self {
            Action::Added => '+',
            Action::Changed => '~',
            Action::Removed => '-',
        }
    }
}

/// Why an event could not be delivered to a target.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{0}")]
    NoTarget(String),
    #[error("the event cannot go there: {0}")]
    Refused(String),
    #[error(transparent)]
    Queue(#[from] weft_events::QueueError),
    #[error(transparent)]
    Storage(#[from] weft_store::durable::StorageError),
}

/// The workers of one deploy (or of the node): spawned tasks that stop
/// together, and can be waited for.
pub struct Workers {
    id: u64,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Mutex<tokio::task::JoinSet<()>>,
}

impl Default for Workers {
    fn default() -> Self {
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Workers {
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            stop: tokio::sync::watch::channel(false).0,
            tasks: Mutex::new(tokio::task::JoinSet::new()),
        }
    }
}

/// Tells a worker when to stop.
#[derive(Clone)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    /// Resolves once the worker should stop.
    pub async fn stopped(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

impl Workers {
    /// Unique among the workers of one process: which deploy's these are.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Runs `work` until it returns; it is told through its [`Stop`] when
    /// these workers stop.
    pub fn spawn<F, Fut>(&self, work: F)
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = Stop(self.stop.subscribe());
        let fut = work(stop);
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        // Finished tasks are reaped here, so the set holds only live ones.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(fut);
    }

    /// Tells every worker to stop, and waits up to `within` for them.
    pub async fn stop(&self, within: Duration) {
        let _ = self.stop.send(true);
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::warn!("workers still running {within:?} after being told to stop were cut");
            tasks.abort_all();
        }
    }

    pub fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }
}

/// One admin API operation of a capability.
pub struct AdminRoute<N> {
    pub method: http::Method,
    /// `/v1/queues/{queue}/messages`: `{name}` matches one path segment,
    /// which reaches the handler percent-decoded.
    pub path: &'static str,
    /// The largest request body it reads.
    pub max_body: usize,
    pub handler: AdminHandler<N>,
}

/// The largest admin request body, unless a route says otherwise.
pub const MAX_ADMIN_BODY: usize = 16 << 20;

impl<N> AdminRoute<N> {
    /// The same route, reading bodies of up to `max` bytes.
    pub fn with_max_body(self, max: usize) -> AdminRoute<N> {
        AdminRoute { max_body: max, ..self }
    }
}

pub type AdminHandler<N> = Arc<dyn Fn(Arc<N>, AdminRequest) -> BoxFuture<'static, AdminReply> + Send + Sync>;

/// An admin request, read and decoded.
pub struct AdminRequest {
    /// The path parameters, by name, percent-decoded.
    pub params: HashMap<String, String>,
    /// The query parameters, percent-decoded.
    pub query: HashMap<String, String>,
    /// The request's headers: a `traceparent` among them is the trace
    /// what the request sends or puts joins.
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl AdminRequest {
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).map_or("", String::as_str)
    }

    /// The trace the request's `traceparent` (and `tracestate`) names, if any.
    pub fn trace(&self) -> Option<weft_telemetry::SpanContext> {
        crate::telemetry::incoming(&self.headers)
    }

    /// The body as JSON of type `T`; an empty body reads as `{}`.
    pub fn json<T: for<'de> serde::Deserialize<'de>>(&self) -> Result<T, AdminReply> {
        let body: &[u8] = if self.body.is_empty() { b"{}" } else { &self.body };
        serde_json::from_slice(body)
            .map_err(|e| AdminReply::error(400, format!("the request body is not the expected JSON: {e}")))
    }

    /// A whole-number query parameter, or `default`.
    pub fn number(&self, key: &str, default: i64) -> Result<i64, AdminReply> {
        match self.query.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                AdminReply::error(
                    400,
                    format!("query parameter `{key}` must be a whole number, got `{v}`"),
                )
            }),
        }
    }
}

/// An admin answer: a status and a JSON body (`{"error"}` for errors).
#[derive(Debug)]
pub struct AdminReply {
    pub status: u16,
    pub body: Value,
}

impl AdminReply {
    pub fn ok(body: Value) -> AdminReply {
        AdminReply { status: 200, body }
    }

    pub fn with_status(status: u16, body: Value) -> AdminReply {
        AdminReply { status, body }
    }

    pub fn error(status: u16, message: impl Into<String>) -> AdminReply {
        AdminReply {
            status,
            body: serde_json::json!({ "error": message.into() }),
        }
    }
}

impl From<weft_events::QueueError> for AdminReply {
    fn from(e: weft_events::QueueError) -> AdminReply {
        AdminReply::error(e.status(), e.to_string())
    }
}

/// Builds an [`AdminRoute`] from an async function of the node and request.
pub fn admin_route<N, F, Fut>(method: http::Method, path: &'static str, handler: F) -> AdminRoute<N>
where
    N: Send + Sync + 'static,
    F: Fn(Arc<N>, AdminRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<AdminReply, AdminReply>> + Send + 'static,
{
    let handler = Arc::new(handler);
    AdminRoute {
        method,
        path,
        max_body: MAX_ADMIN_BODY,
        handler: Arc::new(move |node, request| {
            let handler = handler.clone();
            Box::pin(async move { handler(node, request).await.unwrap_or_else(|e| e) })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: &str) -> Manifest {
        Manifest::parse(&format!("[app]\nname = \"a\"\n{extra}"), "weft.toml").unwrap()
    }

    #[test]
    fn a_diff_names_what_is_added_changed_and_removed() {
        let before = manifest("[queue.kept]\n[queue.changed]\n[queue.gone]\n");
        let after = manifest("[queue.kept]\n[queue.changed]\ndelay = \"5s\"\n[queue.new]\n");
        let mut deploy = Deploy::new(after, Some(before));
        deploy.diff_manifest("queue", |m| {
            m.queues.iter().map(|q| (q.name.clone(), q.clone())).collect()
        });
        let seen: Vec<(char, &str)> = deploy
            .changes
            .iter()
            .map(|c| (c.action.sign(), c.name.as_str()))
            .collect();
        assert_eq!(seen, [('~', "changed"), ('+', "new"), ('-', "gone")]);
        assert!(deploy.losses().is_empty());
        deploy.changes[2].loss = Some("3 messages would be left undelivered".into());
        assert_eq!(deploy.losses().len(), 1);

        let mut twice = Deploy::new(manifest(""), None);
        let same = vec![("s".to_string(), 1), ("s".to_string(), 2)];
        twice.diff("subscription", &same, &same);
        assert!(twice.changes.is_empty(), "{:?}", twice.changes);
        twice.diff("subscription", &same, &same[..1]);
        assert_eq!(twice.changes, [Change::new("subscription", "s#2", Action::Removed)]);

        let mut first = Deploy::new(manifest("[queue.q]\n"), None);
        first.diff_manifest("queue", |m| m.queues.iter().map(|q| (q.name.clone(), ())).collect());
        assert_eq!(first.changes, [Change::new("queue", "q", Action::Added)]);
    }

    #[tokio::test]
    async fn workers_stop_together_and_are_waited_for() {
        let workers = Workers::default();
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..3 {
            let done = done.clone();
            workers.spawn(move |mut stop| async move {
                stop.stopped().await;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        assert!(!workers.is_stopped());
        workers.stop(Duration::from_secs(5)).await;
        assert!(workers.is_stopped());
        assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 3);

        // One that ignores its stop is cut when the wait runs out.
        let stubborn = Workers::default();
        stubborn.spawn(|_| std::future::pending::<()>());
        let started = tokio::time::Instant::now();
        stubborn.stop(Duration::from_millis(50)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_ne!(Workers::default().id(), stubborn.id());
    }
}
