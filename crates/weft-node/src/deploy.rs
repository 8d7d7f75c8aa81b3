//! Deploying an app: check the manifest, plan with every capability,
//! prepare every changed function, and switch to the new set in one step,
//! or change nothing.
//!
//! A plan ([`Node::plan`]) says what a deploy would change and what it
//! would lose, and changes nothing. A deploy refuses to lose data (a
//! removed queue that still holds messages) unless it is allowed to.
//!
//! Requests already running keep the [`Deployed`] they started with (an
//! `Arc`), so they finish on the old version while new requests get the new
//! one. A function whose component and settings are unchanged keeps its
//! version and its prepared image.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use weft_manifest::{Diagnostics, Manifest, RouteTable};
use weft_runtime::{FunctionImage, Limits};
use weft_store::Digest;

use crate::capability::{Action, Change, Deploy, Staged, Workers};
use crate::deployment::{Deployed, Deployment};
use crate::node::Node;

/// What a deploy did (or a plan would do) to one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionAction {
    Created,
    Updated,
    Unchanged,
}

/// One function in a deploy report.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FunctionChange {
    pub function: String,
    /// The version it runs as; for a plan, the version it runs as now
    /// (0 for a new function).
    pub version: u64,
    pub change: FunctionAction,
    pub digest: String,
    /// `compiled`, `cache` or `memory`, for prepared functions.
    pub compiled_from: Option<String>,
    pub prepare_ms: Option<f64>,
}

/// What a deploy did, or what a plan says it would do.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DeployReport {
    pub app: String,
    pub functions: Vec<FunctionChange>,
    pub removed: Vec<String>,
    /// Everything that changes, from every capability.
    pub changes: Vec<Change>,
    /// True for a plan: nothing was changed.
    #[serde(default)]
    pub planned: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Manifest(Diagnostics),
    #[error("function `{function}`: {message}")]
    Artifact { function: String, message: String },
    #[error("the deploy was rejected and nothing changed:\n{}", .0.iter().map(|(f, e)| format!("  function `{f}`: {e}")).collect::<Vec<_>>().join("\n"))]
    Rejected(Vec<(String, String)>),
    #[error("the deploy was refused and nothing changed: {0}")]
    Refused(String),
    #[error("the deploy would lose data, so nothing changed:\n{}\nmove or drain what is there first, or deploy again with --allow-loss", .0.iter().map(|c| format!("  {} {} `{}`: {}", c.action.sign(), c.kind, c.name, c.loss.as_deref().unwrap_or_default())).collect::<Vec<_>>().join("\n"))]
    Loss(Vec<Change>),
    #[error("the store failed: {0}")]
    Store(String),
    /// Deployed on this node, but the other nodes sharing its storage
    /// could not be told (the shared storage is unreachable).
    #[error("{0}")]
    Unshared(String),
}

impl DeployError {
    pub fn status(&self) -> u16 {
        match self {
            DeployError::Manifest(_) | DeployError::Artifact { .. } => 400,
            DeployError::Rejected(_) | DeployError::Refused(_) => 422,
            DeployError::Loss(_) => 409,
            DeployError::Store(_) => 500,
            DeployError::Unshared(_) => 503,
        }
    }
}

fn config_of(f: &weft_manifest::Function) -> String {
    serde_json::json!({
        "memory": f.memory.bytes(),
        "timeout_ms": f.timeout.as_millis() as u64,
        "env": f.env,
        "allowed_hosts": f.allowed_hosts.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
        "publish": f.publish.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
        "async": {
            "retries": f.async_invoke.retry.retries(),
            "max_event_age_ms": f.async_invoke.retry.max_age.map(|a| a.as_millis() as u64),
            "backoff_ms": f.async_invoke.retry.backoff.as_millis() as u64,
            "on_success": f.async_invoke.on_success.as_ref().map(|d| d.to_string()),
            "on_failure": f.async_invoke.on_failure.as_ref().map(|d| d.to_string()),
        },
    })
    .to_string()
}

/// One function of a planned deploy.
struct FunctionPlan {
    spec: weft_manifest::Function,
    digest: Digest,
    config: String,
    /// The function as deployed now, if it stays as it is.
    reuse: Option<Arc<Deployed>>,
}

/// A deploy, planned by every capability, not yet applied.
struct Planned {
    deploy: Deploy,
    functions: Vec<FunctionPlan>,
    staged: Vec<Box<dyn Staged<Node>>>,
    report: DeployReport,
}

/// How long a deploy lets the previous deploy's workers finish what they
/// are doing, in the background.
const RETIRE: Duration = Duration::from_secs(15 * 60);

impl Node {
    /// Says what deploying manifest `text` with these artifacts would
    /// change, and changes nothing.
    pub async fn plan(
        self: &Arc<Self>,
        text: &str,
        file: &str,
        artifacts: &HashMap<String, Digest>,
    ) -> Result<DeployReport, DeployError> {
        let manifest = self.parse(text, file)?;
        let _one_at_a_time = self.deploying.lock().await;
        let mut planned = self.plan_of(manifest, artifacts, false).await?;
        planned.report.planned = true;
        Ok(planned.report)
    }

    /// Deploys manifest `text` with each function's component given by the
    /// digest of an artifact already in the store. Refuses to lose data
    /// unless `allow_loss`.
    pub async fn deploy(
        self: &Arc<Self>,
        text: &str,
        file: &str,
        artifacts: &HashMap<String, Digest>,
        allow_loss: bool,
    ) -> Result<DeployReport, DeployError> {
        let manifest = self.parse(text, file)?;
        let _one_at_a_time = self.deploying.lock().await;
        let planned = self.plan_of(manifest, artifacts, true).await?;
        // Refused before anything is compiled; `apply` counts again after.
        let losses: Vec<Change> = planned.deploy.losses().into_iter().cloned().collect();
        if !losses.is_empty() && !allow_loss {
            return Err(DeployError::Loss(losses));
        }
        self.apply(planned, allow_loss).await
    }

    /// Parses a manifest with the sections the capabilities bring.
    fn parse(&self, text: &str, file: &str) -> Result<Manifest, DeployError> {
        let sections: Vec<&dyn weft_manifest::Section> = self.capabilities.iter().filter_map(|c| c.section()).collect();
        Manifest::parse_with(text, file, &sections).map_err(DeployError::Manifest)
    }

    async fn plan_of(
        self: &Arc<Self>,
        manifest: Manifest,
        artifacts: &HashMap<String, Digest>,
        need_artifacts: bool,
    ) -> Result<Planned, DeployError> {
        let current = self.deployment();
        let mut functions = Vec::new();
        let mut report = DeployReport {
            app: manifest.app.clone(),
            functions: Vec::new(),
            removed: Vec::new(),
            changes: Vec::new(),
            planned: false,
        };
        for spec in &manifest.functions {
            let digest = artifacts
                .get(&spec.name)
                .cloned()
                .ok_or_else(|| DeployError::Artifact {
                    function: spec.name.clone(),
                    message: "no component was given for it: build it and upload its artifact".into(),
                })?;
            if need_artifacts && !self.artifacts.contains(&digest) {
                return Err(DeployError::Artifact {
                    function: spec.name.clone(),
                    message: format!(
                        "artifact {digest} is not stored: upload it with PUT /v1/artifacts/{digest} first"
                    ),
                });
            }
            let config = config_of(spec);
            let now = current.functions.get(&spec.name);
            let reuse = now.filter(|d| d.digest == digest && d.config == config).cloned();
            let change = match (now, &reuse) {
                (None, _) => FunctionAction::Created,
                (Some(_), None) => FunctionAction::Updated,
                (Some(_), Some(_)) => FunctionAction::Unchanged,
            };
            report.functions.push(FunctionChange {
                function: spec.name.clone(),
                version: now.map_or(0, |d| d.version),
                change,
                digest: digest.to_string(),
                compiled_from: None,
                prepare_ms: None,
            });
            functions.push(FunctionPlan {
                spec: spec.clone(),
                digest,
                config,
                reuse,
            });
        }
        report.removed = current
            .functions
            .keys()
            .filter(|k| manifest.function(k).is_none())
            .cloned()
            .collect();
        report.removed.sort();

        let mut deploy = Deploy::new(manifest, current.manifest.clone());
        deploy.artifacts = artifacts.clone();
        for f in &report.functions {
            let action = match f.change {
                FunctionAction::Created => Action::Added,
                FunctionAction::Updated => Action::Changed,
                FunctionAction::Unchanged => continue,
            };
            deploy.changes.push(Change::new("function", &f.function, action));
        }
        for name in &report.removed {
            deploy.changes.push(Change::new("function", name, Action::Removed));
        }
        deploy.diff_manifest("route", |m| {
            m.routes
                .iter()
                .map(|r| {
                    let method = r.method.map_or("ANY", |m| m.as_str());
                    (format!("{method} {}", r.path.as_str()), r.to.to_string())
                })
                .collect()
        });

        let mut staged = Vec::new();
        for capability in self.capabilities.clone() {
            let step = capability
                .plan(self, &mut deploy)
                .await
                .map_err(|why| DeployError::Refused(format!("{}: {why}", capability.name())))?;
            staged.push(step);
        }
        report.changes = deploy.changes.clone();
        Ok(Planned {
            deploy,
            functions,
            staged,
            report,
        })
    }

    async fn apply(self: &Arc<Self>, planned: Planned, allow_loss: bool) -> Result<DeployReport, DeployError> {
        let Planned {
            deploy,
            functions: plans,
            staged,
            mut report,
        } = planned;
        // Prepare every changed function before touching anything, so a
        // broken component leaves the running app as it was. Reading an
        // artifact and compiling are blocking work: off the async threads.
        let mut prepared: HashMap<String, Arc<FunctionImage>> = HashMap::new();
        let mut rejected = Vec::new();
        for plan in plans.iter().filter(|p| p.reuse.is_none()) {
            let limits = Limits {
                memory: plan.spec.memory.bytes(),
                timeout: plan.spec.timeout,
            };
            let node = self.clone();
            let (digest, env) = (plan.digest.clone(), plan.spec.env.clone());
            let result = tokio::task::spawn_blocking(move || {
                let bytes = node.artifacts.get(&digest).map_err(|e| e.to_string())?;
                node.runtime
                    .prepare(&digest.to_string(), &bytes, limits, env)
                    .map_err(|e| e.to_string())
            })
            .await;
            match result {
                Ok(Ok(image)) => {
                    prepared.insert(plan.spec.name.clone(), Arc::new(image));
                }
                Ok(Err(e)) => rejected.push((plan.spec.name.clone(), e)),
                Err(e) => rejected.push((plan.spec.name.clone(), format!("preparing it failed: {e}"))),
            }
        }
        if !rejected.is_empty() {
            return Err(DeployError::Rejected(rejected));
        }

        let now_us = weft_store::now_us();
        let mut functions = HashMap::new();
        for (plan, change) in plans.into_iter().zip(report.functions.iter_mut()) {
            let name = plan.spec.name.clone();
            let deployed = match plan.reuse {
                Some(d) => d,
                None => {
                    let (store, digest, config, n) =
                        (self.clone(), plan.digest.clone(), plan.config.clone(), name.clone());
                    let version =
                        tokio::task::spawn_blocking(move || store.store.version_for(&n, &digest, &config, now_us))
                            .await
                            .map_err(|e| DeployError::Store(e.to_string()))?
                            .map_err(|e| DeployError::Store(e.to_string()))?
                            .0;
                    let Some(image) = prepared.remove(&name) else {
                        return Err(DeployError::Store(format!("function `{name}` was not prepared")));
                    };
                    change.version = version.version;
                    change.compiled_from = Some(image.compiled_from.into());
                    change.prepare_ms = Some(image.prepare_time.as_secs_f64() * 1000.0);
                    Arc::new(Deployed {
                        name: name.clone(),
                        version: version.version,
                        digest: plan.digest,
                        config: plan.config,
                        spec: plan.spec,
                        image,
                    })
                }
            };
            functions.insert(name, deployed);
        }

        let mut routes = RouteTable::default();
        for route in &deploy.manifest.routes {
            // The manifest check already refused collisions.
            let _ = routes.insert(route.method, route.path.clone(), route.to.clone());
        }
        let in_use: std::collections::HashSet<String> = functions.values().map(|d| d.digest.to_string()).collect();

        // Compiling took time, and messages may have come in meanwhile.
        if !allow_loss {
            let mut losses = Vec::new();
            for step in &staged {
                losses.extend(step.losses(self).await);
            }
            if !losses.is_empty() {
                return Err(DeployError::Loss(losses));
            }
        }
        // From here to the end there is no await: nothing else runs
        // between the new queues existing and the old ones going.
        for step in &staged {
            step.install(self, &deploy);
        }
        for step in &staged {
            step.route(self, &deploy);
        }
        self.current.store(Arc::new(Deployment {
            app: deploy.manifest.app.clone(),
            functions,
            routes,
            manifest: Some(deploy.manifest.clone()),
        }));
        // The previous deploy's workers stop taking work and finish what
        // they hold in the background; this deploy's start now.
        let old = self.workers.swap(Arc::new(Workers::default()));
        tokio::spawn(async move { old.stop(RETIRE).await });
        let workers = self.workers.load_full();
        for step in &staged {
            step.start(self, &deploy, &workers);
        }
        for step in &staged {
            step.retire(self, &deploy);
        }
        self.runtime.forget_unused(&|digest| in_use.contains(digest));
        Ok(report)
    }
}
