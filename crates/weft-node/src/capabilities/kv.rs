//! Key-value stores (`[kv.NAME]`): what functions open through
//! `wasi:keyvalue` and Spin's key-value API, the admin API's `/v1/kv`,
//! and each store's change stream.
//!
//! A store is the storage bucket `kv:NAME`. A function opens only the
//! stores its `kv` grant names. Every write is one durable write of the
//! storage interface; with `changes = true` it carries the change to the
//! hidden queue of each of the store's targets in that same write
//! (`weft_store::durable::Write::changes`). Those queues are FIFO by key,
//! so each key's changes arrive in order, and the triggers' drains send
//! them on as DynamoDB Streams records (`weft_events::kv`): in batches to
//! functions, one event each to queues, topics and buses.
//!
//! Times to live end in a removal, with its change, made by this
//! capability's expiry worker: within about a second in a store with a
//! `ttl`, within a minute for a value given its own in another store
//! (reads stop seeing the value at once).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use weft_manifest::{CHANGE_RETENTION, Store as StoreSpec, Target};
use weft_runtime::{Store, StoreError, Stores};
use weft_store::durable::{Expect, StorageError, Write};

use super::held::Held;
use crate::capability::{
    AdminReply, AdminRequest, AdminRoute, BoxFuture, Capability, Change, Deploy, Drain, Encoding, Staged, Stop,
    Workers, admin_route,
};
use crate::deployment::Deployed;
use crate::node::Node;

/// How often the store worker runs: expiry in stores with a `ttl`, and
/// the storage's catch-up of changes in stores with `changes`.
const TICK: Duration = Duration::from_secs(1);
/// Ticks between expiry passes in stores without a `ttl` (where only
/// values set with their own time to live expire).
const RARE_EXPIRY: u64 = 60;
/// Changes per delivery to a queue, topic or bus target.
const EVENT_BATCH: u32 = 10;
/// The most a batch of records sent to a function may hold, about: two
/// images per record (Lambda's payload limit is 6 MB).
const MAX_BATCH_BYTES: u64 = 6 << 20;
/// Compare-and-sets an `increment` may lose to other writers before it
/// gives up.
const MAX_RACES: u32 = 64;
/// Keys removed per store per expiry pass.
const EXPIRE_BATCH: usize = 1000;
/// Keys per page of a listing.
pub const PAGE: usize = 1000;
/// The longest time to live a set may give (as the manifest's `ttl`).
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// The storage bucket of store `name`.
pub fn bucket(name: &str) -> String {
    format!("kv:{name}")
}

/// One deployed store: its settings and the streams its changes go to.
#[derive(Debug)]
pub struct Settings {
    pub spec: StoreSpec,
    /// `max_value`, or the default this storage can keep.
    pub max_value: u64,
    pub bucket: String,
    /// The storage streams of its targets' hidden queues.
    pub changes: Vec<String>,
}

/// The stores of the running deployment, by name.
#[derive(Default)]
pub struct Kv {
    current: ArcSwap<HashMap<String, Arc<Settings>>>,
}

impl Kv {
    /// The deployed store `name`.
    pub fn settings(&self, name: &str) -> Option<Arc<Settings>> {
        self.current.load().get(name).cloned()
    }
}

impl Capability<Node> for Kv {
    fn name(&self) -> &'static str {
        "kv"
    }

    fn plan<'a>(
        &'a self,
        node: &'a Arc<Node>,
        deploy: &'a mut Deploy,
    ) -> BoxFuture<'a, Result<Box<dyn Staged<Node>>, String>> {
        Box::pin(async move {
            let largest = node.storage.max_value() as u64;
            let mut stores = HashMap::new();
            for spec in &deploy.manifest.stores {
                // A change carries the old value beside the new one.
                let copies = if spec.changes { 2 } else { 1 };
                let max_value = match spec.max_value {
                    Some(given) if given * copies > largest => {
                        return Err(format!(
                            "store `{}` takes values of up to {given} bytes{}, but this storage keeps at most \
                             {largest} bytes in one write; lower `max_value` in [kv.{}], or raise the NATS \
                             server's max_payload",
                            spec.name,
                            if spec.changes {
                                " (twice that with its changes)"
                            } else {
                                ""
                            },
                            spec.name
                        ));
                    }
                    Some(given) => given,
                    None => weft_manifest::DEFAULT_MAX_VALUE.min(largest / copies),
                };
                let owner = bucket(&spec.name);
                let mut taken = HashSet::new();
                let mut changes = Vec::new();
                for t in &spec.targets {
                    let mut hidden = weft_events::Hidden::new(
                        &deploy.manifest,
                        &owner,
                        &t.target,
                        t.retry,
                        t.dead_letter.clone(),
                        CHANGE_RETENTION,
                        &mut taken,
                    );
                    // Each key's changes are delivered in order.
                    hidden.queue.fifo = true;
                    changes.push(weft_events::stream_of(&hidden.queue.name));
                    let batch = match t.target {
                        Target::Function(_) => t.batch.min((MAX_BATCH_BYTES / (2 * max_value)).max(1) as u32),
                        _ => EVENT_BATCH,
                    };
                    deploy.drains.push(Drain {
                        queue: hidden.queue.name.clone(),
                        target: t.target.clone(),
                        batch,
                        concurrency: t.concurrency,
                        encoding: Encoding::Changes {
                            app: deploy.manifest.app.clone(),
                            store: spec.name.clone(),
                        },
                    });
                    deploy.queues.push(hidden.queue);
                }
                let settings = Settings {
                    spec: spec.clone(),
                    max_value,
                    bucket: owner,
                    changes,
                };
                stores.insert(spec.name.clone(), Arc::new(settings));
            }
            deploy.diff_manifest("kv", |m| m.stores.iter().map(|s| (s.name.clone(), s.clone())).collect());
            let removed = HELD.weigh_removed(node, deploy).await?;
            Ok(Box::new(Staging {
                stores: Arc::new(stores),
                removed,
            }) as Box<dyn Staged<Node>>)
        })
    }

    fn stores(&self, node: &Arc<Node>, function: &Arc<Deployed>) -> Option<Arc<dyn Stores>> {
        Some(Arc::new(FunctionStores {
            node: Arc::downgrade(node),
            function: function.clone(),
        }))
    }

    fn admin_routes(&self) -> Vec<AdminRoute<Node>> {
        use http::Method;
        vec![
            admin_route(Method::GET, "/v1/kv", |node, _| async move { Ok(list_stores(&node)) }),
            admin_route(Method::GET, "/v1/kv/{store}/keys", |node, r| async move {
                keys(&node, &r).await
            }),
            admin_route(Method::GET, "/v1/kv/{store}/keys/{key}", |node, r| async move {
                get(&node, &r).await
            }),
            admin_route(Method::PUT, "/v1/kv/{store}/keys/{key}", |node, r| async move {
                set(&node, &r).await
            })
            .with_max_body(weft_manifest::MAX_VALUE as usize),
            admin_route(Method::DELETE, "/v1/kv/{store}/keys/{key}", |node, r| async move {
                delete(&node, &r).await
            }),
        ]
    }
}

/// Removing a store that holds keys is a loss.
const HELD: Held = Held {
    kind: "kv",
    noun: "store",
    items: "keys",
    storage: bucket,
};

/// A planned deploy's stores.
struct Staging {
    stores: Arc<HashMap<String, Arc<Settings>>>,
    removed: Vec<String>,
}

impl Staged<Node> for Staging {
    fn losses<'a>(&'a self, node: &'a Arc<Node>) -> BoxFuture<'a, Vec<Change>> {
        Box::pin(HELD.losses(node, &self.removed))
    }

    /// Writes go to the new deploy's change queues once they exist.
    fn route(&self, node: &Arc<Node>, _deploy: &Deploy) {
        if let Some(kv) = node.capability::<Kv>() {
            kv.current.store(self.stores.clone());
        }
    }

    fn start(&self, node: &Arc<Node>, _deploy: &Deploy, workers: &Workers) {
        if self.stores.is_empty() {
            return;
        }
        let (node, stores) = (node.clone(), self.stores.clone());
        workers.spawn(move |stop| tend(node, stores, stop));
    }
}

/// Each [`TICK`]: finishes the changes that writes cut off midway left
/// uncopied, and removes expired keys with their changes (every tick in a
/// store with a `ttl`, every [`RARE_EXPIRY`] ticks in the others).
async fn tend(node: Arc<Node>, stores: Arc<HashMap<String, Arc<Settings>>>, mut stop: Stop) {
    for tick in 1u64.. {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = stop.stopped() => return,
        }
        for s in stores.values() {
            if s.spec.changes
                && let Err(e) = node.storage.catch_up(&s.bucket, &s.changes).await
            {
                tracing::warn!("cannot catch up on the changes of store `{}`: {e}", s.spec.name);
            }
            if s.spec.ttl.is_none() && tick % RARE_EXPIRY != 0 {
                continue;
            }
            if let Err(e) = node.storage.expire_keys(&s.bucket, &s.changes, EXPIRE_BATCH).await {
                tracing::warn!("cannot remove the expired keys of store `{}`: {e}", s.spec.name);
            }
        }
    }
}

/// The stores one invocation of `function` may open: those its grant names.
struct FunctionStores {
    node: std::sync::Weak<Node>,
    function: Arc<Deployed>,
}

impl Stores for FunctionStores {
    fn open(&self, name: &str) -> Result<Arc<dyn Store>, StoreError> {
        let f = &self.function.name;
        if !self.function.spec.kv.iter().any(|k| k == name) {
            return Err(StoreError::AccessDenied(format!(
                "function `{f}` may not open store `{name}`: add `kv = [\"{name}\"]` to [function.{f}] in weft.toml"
            )));
        }
        let node = self
            .node
            .upgrade()
            .ok_or_else(|| StoreError::Other("weft is stopping".into()))?;
        let Some(settings) = node.capability::<Kv>().and_then(|kv| kv.settings(name)) else {
            return Err(StoreError::NoSuchStore(format!("store `{name}` is not deployed")));
        };
        Ok(Arc::new(Handle {
            storage: node.storage.clone(),
            settings,
        }))
    }
}

/// One open store: checks each operation against the store's limits, then
/// runs it on the storage.
pub struct Handle {
    storage: Arc<dyn weft_store::durable::Storage>,
    settings: Arc<Settings>,
}

fn other(e: StorageError) -> StoreError {
    match e {
        StorageError::Unavailable(_) => StoreError::Unavailable(e.to_string()),
        e => StoreError::Other(e.to_string()),
    }
}

impl Handle {
    fn check_key(&self, key: &str) -> Result<(), StoreError> {
        let spec = &self.settings.spec;
        if key.is_empty() {
            return Err(StoreError::Invalid("a key cannot be empty".into()));
        }
        if key.len() as u64 > spec.max_key {
            return Err(StoreError::Invalid(format!(
                "the key is {} bytes, over the max_key of {} bytes of store `{}`",
                key.len(),
                spec.max_key,
                spec.name
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), StoreError> {
        let max = self.settings.max_value;
        if value.len() as u64 > max {
            return Err(StoreError::Invalid(format!(
                "the value is {} bytes, over the max_value of {max} bytes of store `{}`",
                value.len(),
                self.settings.spec.name
            )));
        }
        Ok(())
    }

    fn write(&self, expect: Expect, ttl: Option<Duration>) -> Write {
        Write {
            expect,
            ttl: ttl.or(self.settings.spec.ttl),
            changes: self.settings.changes.clone(),
        }
    }

    /// Sets `key`, with `ttl` in place of the store's; returns the revision.
    pub async fn set_with(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<u64, StoreError> {
        self.check_key(key)?;
        self.check_value(&value)?;
        let write = self.write(Expect::Anything, ttl);
        let bucket = &self.settings.bucket;
        Ok(self
            .storage
            .set(bucket, key, value, &write)
            .await
            .map_err(other)?
            .revision)
    }

    /// The entry of `key`, with its revision and expiry.
    pub async fn entry(&self, key: &str) -> Result<Option<weft_store::durable::Entry>, StoreError> {
        self.check_key(key)?;
        self.storage.get(&self.settings.bucket, key).await.map_err(other)
    }

    /// Removes `key`; whether it was there.
    pub async fn remove(&self, key: &str) -> Result<bool, StoreError> {
        self.check_key(key)?;
        let write = self.write(Expect::Anything, None);
        Ok(self
            .storage
            .remove(&self.settings.bucket, key, &write)
            .await
            .map_err(other)?
            .is_some())
    }

    /// A page of keys starting with `prefix`, after `after`.
    pub async fn page(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
        self.storage
            .list(&self.settings.bucket, prefix, after, limit)
            .await
            .map_err(other)
    }
}

#[async_trait::async_trait]
impl Store for Handle {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entry(key).await?.map(|e| e.value))
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.set_with(key, value, None).await.map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.remove(key).await.map(|_| ())
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.entry(key).await?.is_some())
    }

    async fn keys(&self, cursor: Option<&str>) -> Result<(Vec<String>, Option<String>), StoreError> {
        let keys = self.page("", cursor, PAGE).await?;
        let next = (keys.len() == PAGE).then(|| keys.last().cloned()).flatten();
        Ok((keys, next))
    }

    async fn read(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        Ok(self.entry(key).await?.map(|e| (e.value, e.revision)))
    }

    async fn swap(&self, key: &str, value: Vec<u8>, revision: Option<u64>) -> Result<bool, StoreError> {
        self.check_key(key)?;
        self.check_value(&value)?;
        let expect = revision.map_or(Expect::Absent, Expect::Revision);
        let write = self.write(expect, None);
        match self.storage.set(&self.settings.bucket, key, value, &write).await {
            Ok(_) => Ok(true),
            Err(StorageError::Conflict { .. }) => Ok(false),
            Err(e) => Err(other(e)),
        }
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        // Compare-and-set until no other write came between.
        for race in 0..MAX_RACES {
            if race > 0 {
                tokio::time::sleep(Duration::from_millis(u64::from(race))).await;
            }
            let read = self.read(key).await?;
            let current = match &read {
                None => 0,
                Some((value, _)) => std::str::from_utf8(value)
                    .ok()
                    .and_then(|t| t.trim().parse::<i64>().ok())
                    .ok_or_else(|| {
                        StoreError::Invalid(format!(
                            "the value of `{key}` is not a whole number, so it cannot be incremented"
                        ))
                    })?,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| StoreError::Invalid(format!("incrementing `{key}` by {delta} overflows")))?;
            let revision = read.map(|(_, r)| r);
            if self.swap(key, next.to_string().into_bytes(), revision).await? {
                return Ok(next);
            }
        }
        Err(StoreError::Unavailable(format!(
            "`{key}` changed under {MAX_RACES} increments in a row; try again"
        )))
    }
}

/// The admin API's handle on a deployed store.
fn handle(node: &Arc<Node>, name: &str) -> Result<Handle, AdminReply> {
    let settings = node
        .capability::<Kv>()
        .and_then(|kv| kv.settings(name))
        .ok_or_else(|| AdminReply::error(404, format!("no store `{name}` is deployed")))?;
    Ok(Handle {
        storage: node.storage.clone(),
        settings,
    })
}

fn refused(e: StoreError) -> AdminReply {
    match e {
        StoreError::AccessDenied(why) => AdminReply::error(403, why),
        StoreError::NoSuchStore(why) => AdminReply::error(404, why),
        StoreError::Invalid(why) => AdminReply::error(400, why),
        StoreError::Unavailable(why) => AdminReply::error(503, why),
        StoreError::Other(why) => AdminReply::error(500, why),
    }
}

fn list_stores(node: &Arc<Node>) -> AdminReply {
    let Some(kv) = node.capability::<Kv>() else {
        return AdminReply::ok(json!({ "stores": [] }));
    };
    let current = kv.current.load();
    let mut names: Vec<&String> = current.keys().collect();
    names.sort();
    let stores: Vec<Value> = names
        .into_iter()
        .map(|n| {
            let s = &current[n].spec;
            json!({
                "name": s.name,
                "max_value": current[n].max_value,
                "max_key": s.max_key,
                "ttl_seconds": s.ttl.map(|t| t.as_secs_f64()),
                "changes": s.changes,
                "targets": s.targets.iter().map(|t| t.target.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    AdminReply::ok(json!({ "stores": stores }))
}

async fn keys(node: &Arc<Node>, r: &AdminRequest) -> Result<AdminReply, AdminReply> {
    let store = handle(node, r.param("store"))?;
    let limit = r.number("limit", PAGE as i64)?;
    if !(1..=PAGE as i64).contains(&limit) {
        return Err(AdminReply::error(
            400,
            format!("query parameter `limit` must be from 1 to {PAGE}, got {limit}"),
        ));
    }
    let prefix = r.query.get("prefix").map_or("", String::as_str);
    let after = r.query.get("after").map(String::as_str);
    let keys = store.page(prefix, after, limit as usize).await.map_err(refused)?;
    let next = (keys.len() == limit as usize).then(|| keys.last().cloned()).flatten();
    Ok(AdminReply::ok(json!({ "keys": keys, "next": next })))
}

async fn get(node: &Arc<Node>, r: &AdminRequest) -> Result<AdminReply, AdminReply> {
    use base64::Engine;
    let store = handle(node, r.param("store"))?;
    let key = r.param("key");
    let Some(entry) = store.entry(key).await.map_err(refused)? else {
        return Err(AdminReply::error(
            404,
            format!("store `{}` has no key `{key}`", r.param("store")),
        ));
    };
    let (value, encoding) = match String::from_utf8(entry.value) {
        Ok(text) => (text, "utf-8"),
        Err(e) => (
            base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
            "base64",
        ),
    };
    Ok(AdminReply::ok(json!({
        "key": key,
        "value": value,
        "encoding": encoding,
        "revision": entry.revision,
        "expires_us": entry.expires_us,
    })))
}

async fn set(node: &Arc<Node>, r: &AdminRequest) -> Result<AdminReply, AdminReply> {
    let store = handle(node, r.param("store"))?;
    let ttl = match r.query.get("ttl") {
        None => None,
        Some(text) => match weft_manifest::parse_duration(text) {
            Ok(d) if d >= Duration::from_secs(1) && d <= MAX_TTL => Some(d),
            Ok(_) => return Err(AdminReply::error(400, "`ttl` must be from 1s to 366d")),
            Err(why) => {
                return Err(AdminReply::error(
                    400,
                    format!("`ttl` is not a duration: {why}; write e.g. ttl=30s or ttl=24h"),
                ));
            }
        },
    };
    let revision = store
        .set_with(r.param("key"), r.body.to_vec(), ttl)
        .await
        .map_err(refused)?;
    Ok(AdminReply::ok(json!({ "revision": revision })))
}

async fn delete(node: &Arc<Node>, r: &AdminRequest) -> Result<AdminReply, AdminReply> {
    let store = handle(node, r.param("store"))?;
    let deleted = store.remove(r.param("key")).await.map_err(refused)?;
    Ok(AdminReply::ok(json!({ "deleted": deleted })))
}
