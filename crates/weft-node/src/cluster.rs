//! Nodes that share one storage (JetStream, `weft up --nats`) agree
//! through it on two things, and on nothing else: which deployment runs,
//! and which nodes are alive. The storage does the agreeing; this module
//! only reads and writes.
//!
//! - **The deployment.** A deploy on any node ([`Node::deploy_everywhere`])
//!   first copies its components to the `artifacts` object bucket, deploys
//!   here, then writes the manifest and the artifact digests to the
//!   `cluster` bucket's `deployment` key. Every node reads that key every
//!   [`FOLLOW`]; one at a newer revision than it runs is fetched (missing
//!   components from the object bucket), deployed here (losses were
//!   checked where it was deployed), and marked as run.
//! - **Membership.** Every node writes `node/ID` in the same bucket every
//!   [`HEARTBEAT`]: its addresses, the revision it runs, and the time. A
//!   node unseen for [`GONE_AFTER`] is not listed, and its entry is removed
//!   after [`FORGET_AFTER`]. Its leased messages come back by themselves
//!   when their leases lapse.
//!
//! Without a shared storage a node is its own cluster: nothing is written,
//! and [`Node::nodes`] lists only itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_store::Digest;
use weft_store::durable::StorageError;

use crate::deploy::{DeployError, DeployReport};
use crate::node::Node;

const BUCKET: &str = "cluster";
const DEPLOYMENT: &str = "deployment";
const ARTIFACTS: &str = "artifacts";
/// How often a node checks for a newer shared deployment.
pub const FOLLOW: Duration = Duration::from_secs(1);
/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node unseen this long is not listed.
pub const GONE_AFTER: Duration = Duration::from_secs(6);
/// A node unseen this long has its entry removed.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The deployment every node runs.
#[derive(Serialize, Deserialize)]
struct Shared {
    manifest: String,
    file: String,
    artifacts: HashMap<String, Digest>,
    /// The node it was deployed on.
    node: String,
    at_us: i64,
}

/// One live node, as `weft nodes` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub id: String,
    /// `http://ADDR` of the app's routes, once it serves them.
    pub app: Option<String>,
    /// `http://ADDR` of its admin API.
    pub admin: Option<String>,
    /// The app it runs, and the revision of the shared deployment (0: its own).
    pub app_name: String,
    pub revision: u64,
    pub seen_us: i64,
}

fn shared_error(e: StorageError) -> DeployError {
    DeployError::Unshared(format!(
        "the deploy could not reach the storage the other nodes share ({e}); nothing was changed on them"
    ))
}

impl Node {
    /// This node's id among the nodes sharing its storage.
    pub fn node_id(&self) -> &str {
        &self.peers.id
    }

    /// The revision of the shared deployment this node runs (0 when it
    /// runs its own, or shares no storage).
    pub fn revision(&self) -> u64 {
        self.peers.applied.load(Ordering::Relaxed)
    }

    /// Where this node serves (for `weft nodes` and for peers' fan-out).
    pub fn set_addresses(&self, app: String, admin: String) {
        *self.peers.addresses.write().unwrap_or_else(|p| p.into_inner()) = Some((app, admin));
    }

    /// Deploys here and, when the storage is shared, to every node sharing
    /// it: their next check (within [`FOLLOW`]) finds it.
    pub async fn deploy_everywhere(
        self: &Arc<Self>,
        text: &str,
        file: &str,
        artifacts: &HashMap<String, Digest>,
        allow_loss: bool,
    ) -> Result<DeployReport, DeployError> {
        if !self.storage.is_shared() {
            return self.deploy(text, file, artifacts, allow_loss).await;
        }
        self.publish_artifacts(artifacts).await?;
        let report = self.deploy(text, file, artifacts, allow_loss).await?;
        let shared = Shared {
            manifest: text.to_string(),
            file: file.to_string(),
            artifacts: artifacts.clone(),
            node: self.peers.id.clone(),
            at_us: weft_store::now_us(),
        };
        let value = serde_json::to_vec(&shared).map_err(|e| DeployError::Store(e.to_string()))?;
        let revision = self
            .storage
            .put(BUCKET, DEPLOYMENT, value)
            .await
            .map_err(|e| DeployError::Unshared(format!("deployed on this node only: the other nodes could not be told ({e}); deploy again when the shared storage is back")))?;
        self.peers.applied.store(revision, Ordering::Relaxed);
        Ok(report)
    }

    /// Copies components the shared storage lacks to its object bucket.
    async fn publish_artifacts(&self, artifacts: &HashMap<String, Digest>) -> Result<(), DeployError> {
        for digest in artifacts.values() {
            let done = self
                .peers
                .published
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(digest);
            if done || !self.artifacts.contains(digest) {
                continue;
            }
            let bytes = self
                .artifacts
                .get(digest)
                .map_err(|e| DeployError::Store(e.to_string()))?;
            self.storage
                .put_object(ARTIFACTS, digest.as_str(), bytes)
                .await
                .map_err(shared_error)?;
            self.peers
                .published
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(digest.clone());
        }
        Ok(())
    }

    /// Starts the heartbeat and the following of the shared deployment
    /// (nothing without a shared storage). Call it once, after the node's
    /// first deploy.
    pub fn join(self: &Arc<Self>) {
        if !self.storage.is_shared() {
            return;
        }
        let weak = Arc::downgrade(self);
        self.background.spawn(move |mut stop| async move {
            let mut beat = tokio::time::interval(HEARTBEAT);
            let mut follow = tokio::time::interval(FOLLOW);
            loop {
                tokio::select! {
                    _ = beat.tick() => {
                        let Some(node) = weak.upgrade() else { return };
                        if let Err(e) = node.heartbeat().await {
                            tracing::warn!("heartbeat not written: {e}");
                        }
                    }
                    _ = follow.tick() => {
                        let Some(node) = weak.upgrade() else { return };
                        node.follow().await;
                    }
                    () = stop.stopped() => return,
                }
            }
        });
    }

    fn info(&self) -> NodeInfo {
        let addresses = self.peers.addresses.read().unwrap_or_else(|p| p.into_inner()).clone();
        NodeInfo {
            id: self.peers.id.clone(),
            app: addresses.as_ref().map(|a| a.0.clone()),
            admin: addresses.map(|a| a.1),
            app_name: self.deployment().app.clone(),
            revision: self.revision(),
            seen_us: weft_store::now_us(),
        }
    }

    async fn heartbeat(&self) -> Result<(), StorageError> {
        let value = serde_json::to_vec(&self.info()).map_err(|e| StorageError::Other(e.to_string()))?;
        self.storage
            .put(BUCKET, &format!("node/{}", self.peers.id), value)
            .await
            .map(|_| ())
    }

    /// Runs the shared deployment if it is newer than the one here.
    async fn follow(self: &Arc<Self>) {
        let entry = match self.storage.get(BUCKET, DEPLOYMENT).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("cannot read the shared deployment: {e}");
                return;
            }
        };
        if entry.revision <= self.revision() {
            return;
        }
        let shared: Shared = match serde_json::from_slice(&entry.value) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("the shared deployment (revision {}) is unreadable: {e}", entry.revision);
                self.peers.applied.store(entry.revision, Ordering::Relaxed);
                return;
            }
        };
        for digest in shared.artifacts.values() {
            if self.artifacts.contains(digest) {
                continue;
            }
            match self.storage.get_object(ARTIFACTS, digest.as_str()).await {
                Ok(Some(bytes)) => {
                    if let Err(e) = self.artifacts.put(&bytes, Some(digest)) {
                        tracing::error!("the shared component {digest} is not stored here: {e}");
                        return;
                    }
                }
                Ok(None) => {
                    tracing::error!("the shared deployment names component {digest}, which the shared storage lacks");
                    self.peers.applied.store(entry.revision, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    tracing::warn!("cannot fetch component {digest}: {e}");
                    return;
                }
            }
        }
        // Losses were checked on the node it was deployed on; the queues
        // are the same ones here.
        match self
            .deploy(&shared.manifest, &shared.file, &shared.artifacts, true)
            .await
        {
            Ok(report) => tracing::info!(
                "running the deployment of `{}` from node {} (revision {})",
                report.app,
                shared.node,
                entry.revision
            ),
            Err(e) => tracing::error!("the deployment from node {} does not run here: {e}", shared.node),
        }
        self.peers.applied.store(entry.revision, Ordering::Relaxed);
    }

    /// The live nodes sharing this node's storage, this one included, by id.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, StorageError> {
        if !self.storage.is_shared() {
            return Ok(vec![self.info()]);
        }
        let now = weft_store::now_us();
        let mut live = Vec::new();
        for key in self.storage.keys(BUCKET, "node/").await? {
            let Some(entry) = self.storage.get(BUCKET, &key).await? else {
                continue;
            };
            let Ok(info) = serde_json::from_slice::<NodeInfo>(&entry.value) else {
                continue;
            };
            let age = Duration::from_micros(now.saturating_sub(info.seen_us).max(0) as u64);
            if age > FORGET_AFTER {
                let _ = self.storage.delete(BUCKET, &key).await;
            } else if age <= GONE_AFTER || info.id == self.peers.id {
                live.push(info);
            }
        }
        if !live.iter().any(|n| n.id == self.peers.id) {
            live.push(self.info());
        }
        live.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
    }
}
