//! Deploying an app: check the manifest, prepare every changed function,
//! and switch to the new set in one step, or change nothing.
//!
//! Requests already running keep the [`Deployed`] they started with (an
//! `Arc`), so they finish on the old version while new requests get the new
//! one. A function whose component and settings are unchanged keeps its
//! version and its prepared image.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use weft_manifest::{Diagnostics, Manifest, RouteTable};
use weft_runtime::{FunctionImage, Limits};
use weft_store::Digest;

use crate::node::Node;

/// One function as deployed.
pub struct Deployed {
    pub name: String,
    pub version: u64,
    pub digest: Digest,
    /// The settings that, with the digest, make the version.
    pub config: String,
    pub spec: weft_manifest::Function,
    pub image: Arc<FunctionImage>,
}

/// The app as deployed: its functions and its routes.
#[derive(Default)]
pub struct Deployment {
    pub app: String,
    pub functions: HashMap<String, Arc<Deployed>>,
    pub routes: RouteTable<String>,
    pub manifest: Option<Manifest>,
}

/// What a deploy did to one function.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FunctionChange {
    pub function: String,
    pub version: u64,
    /// `created`, `updated` or `unchanged`.
    pub change: String,
    pub digest: String,
    /// `compiled`, `cache` or `memory`, for prepared functions.
    pub compiled_from: Option<String>,
    pub prepare_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DeployReport {
    pub app: String,
    pub functions: Vec<FunctionChange>,
    pub removed: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Manifest(Diagnostics),
    #[error("function `{function}`: {message}")]
    Artifact { function: String, message: String },
    #[error("the deploy was rejected and nothing changed:\n{}", .0.iter().map(|(f, e)| format!("  function `{f}`: {e}")).collect::<Vec<_>>().join("\n"))]
    Rejected(Vec<(String, String)>),
    #[error("the store failed: {0}")]
    Store(String),
}

impl DeployError {
    pub fn status(&self) -> u16 {
        match self {
            DeployError::Manifest(_) | DeployError::Artifact { .. } => 400,
            DeployError::Rejected(_) => 422,
            DeployError::Store(_) => 500,
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
            "retries": f.async_invoke.retries,
            "max_event_age_ms": f.async_invoke.max_event_age.as_millis() as u64,
            "backoff_ms": f.async_invoke.backoff.as_millis() as u64,
            "on_success": f.async_invoke.on_success.as_ref().map(|d| d.to_string()),
            "on_failure": f.async_invoke.on_failure.as_ref().map(|d| d.to_string()),
        },
    })
    .to_string()
}

impl Node {
    /// Deploys manifest `text` with each function's component given by the
    /// digest of an artifact already in the store.
    pub async fn deploy(
        self: &Arc<Self>,
        text: &str,
        file: &str,
        artifacts: &HashMap<String, Digest>,
    ) -> Result<DeployReport, DeployError> {
        let manifest = Manifest::parse(text, file).map_err(DeployError::Manifest)?;
        let _one_at_a_time = self.deploying.lock().await;
        let current = self.deployment();

        struct Plan {
            spec: weft_manifest::Function,
            digest: Digest,
            config: String,
            reuse: Option<Arc<Deployed>>,
        }
        let mut plans = Vec::new();
        for spec in &manifest.functions {
            let digest = artifacts
                .get(&spec.name)
                .cloned()
                .ok_or_else(|| DeployError::Artifact {
                    function: spec.name.clone(),
                    message: "no component was given for it: build it and upload its artifact".into(),
                })?;
            if !self.artifacts.contains(&digest) {
                return Err(DeployError::Artifact {
                    function: spec.name.clone(),
                    message: format!(
                        "artifact {digest} is not stored: upload it with PUT /v1/artifacts/{digest} first"
                    ),
                });
            }
            let config = config_of(spec);
            let reuse = current
                .functions
                .get(&spec.name)
                .filter(|d| d.digest == digest && d.config == config)
                .cloned();
            plans.push(Plan {
                spec: spec.clone(),
                digest,
                config,
                reuse,
            });
        }

        // Prepare every changed function before touching anything, so a
        // broken component leaves the running app as it was.
        let mut prepared: HashMap<String, Arc<FunctionImage>> = HashMap::new();
        let mut rejected = Vec::new();
        for plan in plans.iter().filter(|p| p.reuse.is_none()) {
            let bytes = match self.artifacts.get(&plan.digest) {
                Ok(b) => b,
                Err(e) => {
                    rejected.push((plan.spec.name.clone(), e.to_string()));
                    continue;
                }
            };
            let limits = Limits {
                memory: plan.spec.memory.bytes(),
                timeout: plan.spec.timeout,
            };
            let node = self.clone();
            let (digest, env) = (plan.digest.to_string(), plan.spec.env.clone());
            let result = tokio::task::spawn_blocking(move || node.runtime.prepare(&digest, &bytes, limits, env)).await;
            match result {
                Ok(Ok(image)) => {
                    prepared.insert(plan.spec.name.clone(), Arc::new(image));
                }
                Ok(Err(e)) => rejected.push((plan.spec.name.clone(), e.to_string())),
                Err(e) => rejected.push((plan.spec.name.clone(), format!("preparing it failed: {e}"))),
            }
        }
        if !rejected.is_empty() {
            return Err(DeployError::Rejected(rejected));
        }

        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let mut functions = HashMap::new();
        let mut changes = Vec::new();
        for plan in plans {
            let name = plan.spec.name.clone();
            let deployed = match plan.reuse {
                Some(d) => {
                    changes.push(FunctionChange {
                        function: name.clone(),
                        version: d.version,
                        change: "unchanged".into(),
                        digest: d.digest.to_string(),
                        compiled_from: None,
                        prepare_ms: None,
                    });
                    d
                }
                None => {
                    let (version, _) = self
                        .store
                        .version_for(&name, &plan.digest, &plan.config, now_us)
                        .map_err(|e| DeployError::Store(e.to_string()))?;
                    let image = prepared
                        .remove(&name)
                        .expect("every changed function was prepared above");
                    changes.push(FunctionChange {
                        function: name.clone(),
                        version: version.version,
                        change: if current.functions.contains_key(&name) {
                            "updated"
                        } else {
                            "created"
                        }
                        .into(),
                        digest: plan.digest.to_string(),
                        compiled_from: Some(image.compiled_from.into()),
                        prepare_ms: Some(image.prepare_time.as_secs_f64() * 1000.0),
                    });
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
        for route in &manifest.routes {
            // The manifest check already refused collisions.
            let _ = routes.insert(route.method, route.path.clone(), route.function.clone());
        }
        let removed: Vec<String> = current
            .functions
            .keys()
            .filter(|k| !functions.contains_key(*k))
            .cloned()
            .collect();
        let report = DeployReport {
            app: manifest.app.clone(),
            functions: changes,
            removed,
        };
        let in_use: std::collections::HashSet<String> = functions.values().map(|d| d.digest.to_string()).collect();
        // Function and URL subscriptions of topics run on hidden queues.
        // So do function targets of bus rules. The new queues exist before
        // the new routing sends to them; the old ones go once it is in.
        let (plan, topic_routing) = weft_events::Topics::plan(&manifest);
        let (bus_plan, bus_routing) = weft_events::bus::Buses::plan(&manifest);
        let queues = [manifest.queues.clone(), plan.queues, bus_plan.queues].concat();
        self.queues.add(&queues);
        self.topics.install(topic_routing);
        self.buses.install(bus_routing);
        self.queues.configure(&queues);
        let triggers = [manifest.triggers.clone(), plan.triggers, bus_plan.triggers].concat();
        let urls = plan.urls;
        let schedules = manifest.schedules.clone();
        self.current.store(Arc::new(Deployment {
            app: manifest.app.clone(),
            functions,
            routes,
            manifest: Some(manifest),
        }));
        crate::triggers::restart(self, &triggers, &urls);
        crate::schedules::restart(self, &schedules);
        let names: Vec<String> = self.deployment().functions.keys().cloned().collect();
        self.resume_async(&names).await;
        self.runtime.forget_unused(&|digest| in_use.contains(digest));
        Ok(report)
    }
}
