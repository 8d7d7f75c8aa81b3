//! Object buckets (`[bucket.NAME]`): objects of any size behind the S3
//! REST API, for functions at `http://BUCKET.s3.weft.internal/KEY` and
//! for clients outside on the S3 listener (`--s3-listen`, path style,
//! Signature Version 4), with S3's event notifications.
//!
//! An object is two things in the storage: its bytes, as blobs
//! ([`weft_store::durable::Blobs`]: written as they arrive, durable when
//! finished, never held whole), and its head
//! ([`weft_events::objects::Head`]), a key-value entry of the bucket
//! `bucket:NAME` that says which blobs hold it. Writing the head is what
//! makes the object visible, and that one write carries its change to
//! each matching notification's hidden queue, so the event is written
//! with the object. A body cut short, a wrong digest or a crash leaves at
//! most a blob nothing refers to, which the hourly sweep removes.
//!
//! Multipart uploads keep their state in `uploads:NAME`: the upload under
//! its id, each part under `ID/NUMBER`. Completing writes one head that
//! lists the parts' blobs in order; no data is copied.
//!
//! `s3.rs` serves the operations; `body.rs` is what flows in and out.

mod body;
mod s3;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use serde_json::{Value, json};
use weft_manifest::{Bucket as BucketSpec, CHANGE_RETENTION, Target};
use weft_runtime::{OutboundFuture, WasiBody};
use weft_store::durable::{Expect, StorageError, Write};

use super::held::Held;
use crate::capability::{
    AdminReply, AdminRoute, BoxFuture, Capability, Change, Deploy, Drain, Encoding, Internal, Staged, admin_route,
};
use crate::deployment::Deployed;
use crate::node::Node;

pub use s3::Style;

/// Changes per delivery to a queue, topic or bus target.
const EVENT_BATCH: u32 = 10;
/// Blobs younger than this may still be about to get their head.
const SWEEP_AGE: Duration = Duration::from_secs(3600);
/// Housekeeping passes (about a minute apart) between sweeps.
const SWEEP_EVERY: u64 = 60;
/// Where the S3 access keys are kept, for every node.
const KEYS_BUCKET: &str = "weft:s3";
const KEYS_KEY: &str = "credentials";

/// One deployed bucket: its settings and where its changes go.
#[derive(Debug)]
pub struct Settings {
    pub spec: BucketSpec,
    /// The key-value bucket of its heads.
    pub heads: String,
    /// The key-value bucket of its multipart uploads.
    pub uploads: String,
    /// Each notification's storage stream, beside its filter.
    pub notify: Vec<(weft_manifest::Notify, String)>,
}

impl Settings {
    /// The streams a change of `key` made by `event` goes to.
    pub fn changes(&self, event: &str, key: &str) -> Vec<String> {
        self.notify
            .iter()
            .filter(|(n, _)| n.matches(event, key))
            .map(|(_, stream)| stream.clone())
            .collect()
    }

    /// The storage bucket of its blobs.
    pub fn blobs(&self) -> &str {
        &self.spec.name
    }
}

/// The access key clients outside sign their requests with.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl weft_s3::sigv4::Keys for Credentials {
    fn secret(&self, access_key_id: &str) -> Option<weft_s3::sigv4::Secret> {
        (access_key_id == self.access_key_id).then(|| weft_s3::sigv4::Secret(self.secret_access_key.clone()))
    }
}

/// The buckets of the running deployment, by name, and the access key.
#[derive(Default)]
pub struct Buckets {
    current: ArcSwap<HashMap<String, Arc<Settings>>>,
    credentials: ArcSwapOption<Credentials>,
    sweeps: std::sync::atomic::AtomicU64,
    /// Blobs that objects overwritten or deleted no longer use, oldest
    /// first, kept for [`RETIRE_GRACE`] so reads already under way finish.
    retired: std::sync::Mutex<std::collections::VecDeque<Retired>>,
}

/// The blobs an object at `key` used before it was overwritten or deleted.
struct Retired {
    bucket: String,
    key: String,
    blobs: Vec<String>,
    /// The upload the object was completed from, if any.
    upload: Option<String>,
    at: std::time::Instant,
}

/// How long a retired blob stays readable: a GET that began before the
/// object was overwritten reads to its end within this time.
const RETIRE_GRACE: Duration = Duration::from_secs(15 * 60);
/// Retired objects kept in memory at most; past this (or after a
/// restart) the hourly sweep removes their blobs.
const MAX_RETIRED: usize = 100_000;

impl Buckets {
    /// The deployed bucket `name`.
    pub fn settings(&self, name: &str) -> Option<Arc<Settings>> {
        self.current.load().get(name).cloned()
    }

    /// The deployed buckets' names, sorted.
    pub fn names(&self) -> Vec<String> {
        sorted_names(&self.current.load())
    }

    /// Notes that `old`, the object at `key`, was replaced by `new` (or
    /// deleted): its blobs that `new` does not use are removed once
    /// [`RETIRE_GRACE`] has passed and nothing names them again.
    fn retire(
        &self,
        b: &Settings,
        key: &str,
        old: &weft_events::objects::Head,
        new: Option<&weft_events::objects::Head>,
    ) {
        let blobs: Vec<String> = old
            .blobs
            .iter()
            .filter(|(id, _)| new.is_none_or(|n| !n.blobs.iter().any(|(kept, _)| kept == id)))
            .map(|(id, _)| id.clone())
            .collect();
        if blobs.is_empty() {
            return;
        }
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        if retired.len() >= MAX_RETIRED {
            tracing::debug!(
                "bucket `{}`: many objects replaced at once; the sweep removes their blobs",
                b.spec.name
            );
            return;
        }
        retired.push_back(Retired {
            bucket: b.spec.name.clone(),
            key: key.to_string(),
            blobs,
            upload: old.upload.clone(),
            at: std::time::Instant::now(),
        });
    }

    /// The retired objects whose grace has passed, taken off the list.
    fn due(&self) -> Vec<Retired> {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        while retired.front().is_some_and(|r| r.at.elapsed() >= RETIRE_GRACE) {
            due.extend(retired.pop_front());
        }
        due
    }

    /// Blob ids still within their grace, which the sweep leaves alone.
    fn in_grace(&self) -> HashSet<String> {
        let retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        retired.iter().flat_map(|r| r.blobs.iter().cloned()).collect()
    }

    /// The access key, made (once, for every node of the storage) the
    /// first time it is asked for.
    pub async fn credentials(&self, node: &Node) -> Result<Arc<Credentials>, StorageError> {
        if let Some(c) = self.credentials.load_full() {
            return Ok(c);
        }
        let stored = match node.storage.get(KEYS_BUCKET, KEYS_KEY).await? {
            Some(entry) => entry.value,
            None => {
                let made = Credentials {
                    access_key_id: format!("WEFT{}", random_text(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
                    secret_access_key: random_text(
                        40,
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                    ),
                };
                let value = serde_json::to_vec(&made).unwrap_or_default();
                let write = Write {
                    expect: Expect::Absent,
                    ..Write::default()
                };
                match node.storage.set(KEYS_BUCKET, KEYS_KEY, value.clone(), &write).await {
                    Ok(_) => value,
                    // Another node made them first.
                    Err(StorageError::Conflict { .. }) => node
                        .storage
                        .get(KEYS_BUCKET, KEYS_KEY)
                        .await?
                        .map(|e| e.value)
                        .unwrap_or_default(),
                    Err(e) => return Err(e),
                }
            }
        };
        let credentials: Credentials = serde_json::from_slice(&stored)
            .map_err(|e| StorageError::Other(format!("the stored S3 access key is not readable: {e}")))?;
        let credentials = Arc::new(credentials);
        self.credentials.store(Some(credentials.clone()));
        Ok(credentials)
    }

    /// Serves one request of a client outside, on the S3 listener: checks
    /// its signature, then serves it in path style.
    pub async fn serve_signed(
        &self,
        node: &Arc<Node>,
        request: http::Request<WasiBody>,
    ) -> http::Response<crate::body::Body> {
        s3::serve_signed(self, node, request).await
    }
}

fn sorted_names(buckets: &HashMap<String, Arc<Settings>>) -> Vec<String> {
    let mut names: Vec<String> = buckets.keys().cloned().collect();
    names.sort();
    names
}

/// Removes the blobs of `r` that nothing names: not the object now at
/// its key, nor an upload still open that it was completed from.
async fn remove_retired(node: &Node, settings: &Settings, r: &Retired) -> Result<usize, StorageError> {
    if let Some(upload) = &r.upload
        && node.storage.get(&settings.uploads, upload).await?.is_some()
    {
        return Ok(0);
    }
    let used: HashSet<String> = match node.storage.get(&settings.heads, &r.key).await? {
        Some(entry) => weft_events::objects::Head::from_json(&entry.value)
            .map_err(StorageError::Other)?
            .blobs
            .into_iter()
            .map(|(id, _)| id)
            .collect(),
        None => HashSet::new(),
    };
    let mut removed = 0;
    for id in r.blobs.iter().filter(|id| !used.contains(*id)) {
        if node.storage.remove_blob(settings.blobs(), id).await? {
            removed += 1;
        }
    }
    Ok(removed)
}

fn random_text(len: usize, alphabet: &[u8]) -> String {
    (0..len)
        .map(|_| alphabet[rand::random::<usize>() % alphabet.len()] as char)
        .collect()
}

impl Capability<Node> for Buckets {
    fn name(&self) -> &'static str {
        "buckets"
    }

    fn plan<'a>(
        &'a self,
        node: &'a Arc<Node>,
        deploy: &'a mut Deploy,
    ) -> BoxFuture<'a, Result<Box<dyn Staged<Node>>, String>> {
        Box::pin(async move {
            let mut buckets = HashMap::new();
            for spec in &deploy.manifest.buckets {
                let heads = heads(&spec.name);
                let mut taken = HashSet::new();
                let mut notify = Vec::new();
                for n in &spec.notify {
                    let mut hidden = weft_events::Hidden::new(
                        &deploy.manifest,
                        &heads,
                        &n.target,
                        n.retry,
                        n.dead_letter.clone(),
                        CHANGE_RETENTION,
                        &mut taken,
                    );
                    // Each key's events are delivered in order.
                    hidden.queue.fifo = true;
                    notify.push((n.clone(), weft_events::stream_of(&hidden.queue.name)));
                    deploy.drains.push(Drain {
                        queue: hidden.queue.name.clone(),
                        target: n.target.clone(),
                        batch: match n.target {
                            Target::Function(_) => n.batch,
                            _ => EVENT_BATCH,
                        },
                        concurrency: n.concurrency,
                        encoding: Encoding::Objects {
                            app: deploy.manifest.app.clone(),
                            bucket: spec.name.clone(),
                        },
                    });
                    deploy.queues.push(hidden.queue);
                }
                let settings = Settings {
                    spec: spec.clone(),
                    uploads: format!("uploads:{}", spec.name),
                    heads,
                    notify,
                };
                buckets.insert(spec.name.clone(), Arc::new(settings));
            }
            deploy.diff_manifest("bucket", |m| {
                m.buckets.iter().map(|b| (b.name.clone(), b.clone())).collect()
            });
            let removed = HELD.weigh_removed(node, deploy).await?;
            Ok(Box::new(Staging {
                buckets: Arc::new(buckets),
                removed,
            }) as Box<dyn Staged<Node>>)
        })
    }

    fn internal(&self) -> Option<Internal> {
        Some(Internal {
            suffix: "s3",
            grant: None,
            verb: "use",
        })
    }

    fn call(
        &self,
        node: &Arc<Node>,
        caller: &Arc<Deployed>,
        name: &str,
        request: http::Request<WasiBody>,
    ) -> OutboundFuture {
        let (node, caller, bucket) = (node.clone(), caller.clone(), name.to_string());
        Box::pin(async move {
            let Some(buckets) = node.capability::<Buckets>() else {
                return Ok(crate::body::error(503, "weft is stopping", None));
            };
            Ok(s3::serve_function(buckets, &node, &caller, &bucket, request).await)
        })
    }

    fn housekeeping<'a>(&'a self, node: &'a Arc<Node>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let current = self.current.load_full();
            for r in self.due() {
                let Some(settings) = current.get(&r.bucket) else {
                    continue;
                };
                if let Err(e) = remove_retired(node, settings, &r).await {
                    tracing::warn!(
                        "bucket `{}`: cannot remove the old blobs of `{}`, left to the sweep: {e}",
                        r.bucket,
                        r.key
                    );
                }
            }
            for settings in current.values().filter(|s| !s.notify.is_empty()) {
                // On a provider that copies changes after the write, a
                // node cut off midway left some uncopied.
                if let Err(e) = node.storage.catch_up(&settings.heads, &[]).await {
                    tracing::warn!("bucket `{}`: cannot catch up on its events: {e}", settings.spec.name);
                }
            }
            let pass = self.sweeps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !pass.is_multiple_of(SWEEP_EVERY) {
                return;
            }
            let in_grace = self.in_grace();
            for settings in current.values() {
                match sweep(node, settings, &in_grace).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("bucket `{}`: removed {n} blobs no object refers to", settings.spec.name),
                    Err(e) => tracing::warn!("cannot sweep bucket `{}`: {e}", settings.spec.name),
                }
            }
        })
    }

    fn admin_routes(&self) -> Vec<AdminRoute<Node>> {
        use http::Method;
        vec![
            admin_route(
                Method::GET,
                "/v1/buckets",
                |node, _| async move { Ok(list_buckets(&node)) },
            ),
            admin_route(Method::GET, "/v1/s3/credentials", |node: Arc<Node>, _| async move {
                let Some(buckets) = node.capability::<Buckets>() else {
                    return Err(AdminReply::error(404, "this node serves no buckets"));
                };
                let c = buckets
                    .credentials(&node)
                    .await
                    .map_err(|e| AdminReply::error(503, format!("cannot read the S3 access key: {e}")))?;
                Ok(AdminReply::ok(json!({
                    "access_key_id": c.access_key_id,
                    "secret_access_key": c.secret_access_key,
                    "region": s3::REGION,
                })))
            }),
        ]
    }
}

/// The key-value bucket of bucket `name`'s heads.
fn heads(name: &str) -> String {
    format!("bucket:{name}")
}

/// Removing a bucket that holds objects is a loss.
const HELD: Held = Held {
    kind: "bucket",
    noun: "bucket",
    items: "objects",
    storage: heads,
};

/// A planned deploy's buckets.
struct Staging {
    buckets: Arc<HashMap<String, Arc<Settings>>>,
    removed: Vec<String>,
}

impl Staged<Node> for Staging {
    fn losses<'a>(&'a self, node: &'a Arc<Node>) -> BoxFuture<'a, Vec<Change>> {
        Box::pin(HELD.losses(node, &self.removed))
    }

    /// Writes go to the new deploy's notification queues once they exist.
    fn route(&self, node: &Arc<Node>, _deploy: &Deploy) {
        if let Some(b) = node.capability::<Buckets>() {
            b.current.store(self.buckets.clone());
        }
    }
}

/// Removes the blobs of a bucket older than [`SWEEP_AGE`] that no head
/// and no part of an upload refers to, and that are not `in_grace`: what
/// cut-off writes left, and what retired objects left past a restart.
/// A record it cannot read stops it: its blobs might be in use.
async fn sweep(node: &Node, settings: &Settings, in_grace: &HashSet<String>) -> Result<usize, StorageError> {
    let before = SystemTime::now() - SWEEP_AGE;
    let mut removed = node.storage.sweep_unfinished(settings.blobs(), before).await?;
    let candidates = node.storage.list_blobs(settings.blobs(), before).await?;
    if candidates.is_empty() {
        return Ok(removed);
    }
    let mut used = HashSet::new();
    // Uploads before heads: completing an upload writes its head before
    // it drops its parts, so a blob moving from one to the other is seen.
    for (store, head) in [(&settings.uploads, false), (&settings.heads, true)] {
        let mut after: Option<String> = None;
        loop {
            let keys = node.storage.list(store, "", after.as_deref(), 1000).await?;
            for key in &keys {
                let Some(entry) = node.storage.get(store, key).await? else {
                    continue;
                };
                if head {
                    let h = weft_events::objects::Head::from_json(&entry.value).map_err(StorageError::Other)?;
                    used.extend(h.blobs.into_iter().map(|(id, _)| id));
                } else if key.contains('/') {
                    let part = serde_json::from_slice::<s3::Part>(&entry.value)
                        .map_err(|e| StorageError::Other(format!("part {key} is not readable: {e}")))?;
                    used.insert(part.blob);
                }
            }
            if keys.len() < 1000 {
                break;
            }
            after = keys.last().cloned();
        }
    }
    for id in candidates
        .iter()
        .filter(|id| !used.contains(*id) && !in_grace.contains(*id))
    {
        if node.storage.remove_blob(settings.blobs(), id).await? {
            removed += 1;
        }
    }
    Ok(removed)
}

fn list_buckets(node: &Arc<Node>) -> AdminReply {
    let Some(b) = node.capability::<Buckets>() else {
        return AdminReply::ok(json!({ "buckets": [] }));
    };
    let current = b.current.load();
    let buckets: Vec<Value> = sorted_names(&current)
        .iter()
        .map(|n| {
            let s = &current[n].spec;
            json!({
                "name": s.name,
                "max_object": s.max_object,
                "notify": s.notify.iter().map(|t| t.target.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    AdminReply::ok(json!({ "buckets": buckets }))
}
