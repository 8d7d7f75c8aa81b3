//! Admin operations that change the app: artifact uploads, plans and
//! deployments.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use serde::Deserialize;
use serde_json::json;
use weft_node::Node;
use weft_node::capability::{AdminReply, AdminRequest, AdminRoute, admin_route};
use weft_store::{ArtifactError, Digest};

/// Largest component upload.
const MAX_ARTIFACT: usize = 256 << 20;

type Reply = Result<AdminReply, AdminReply>;

pub(super) fn routes() -> Vec<AdminRoute<Node>> {
    let has = |node: Arc<Node>, r: AdminRequest| async move {
        let d = digest_of(r.param("digest"))?;
        if !node.artifacts.contains(&d) {
            return Err(AdminReply::error(404, format!("artifact {d} is not stored")));
        }
        Ok(AdminReply::ok(json!({ "digest": d })))
    };
    vec![
        admin_route(Method::GET, "/v1/artifacts/{digest}", has),
        admin_route(Method::HEAD, "/v1/artifacts/{digest}", has),
        admin_route(Method::PUT, "/v1/artifacts/{digest}", |node, r| async move {
            put_artifact(&node, r).await
        })
        .with_max_body(MAX_ARTIFACT),
        admin_route(Method::POST, "/v1/deployments", |node, r| async move {
            deploy(&node, &r, false).await
        }),
        admin_route(Method::POST, "/v1/plans", |node, r| async move {
            deploy(&node, &r, true).await
        }),
    ]
}

fn digest_of(text: &str) -> Result<Digest, AdminReply> {
    Digest::try_from(text.to_string()).map_err(|e| AdminReply::error(400, e))
}

async fn put_artifact(node: &Arc<Node>, request: AdminRequest) -> Reply {
    let expected = digest_of(request.param("digest"))?;
    let node = node.clone();
    let bytes = request.body;
    match tokio::task::spawn_blocking(move || node.artifacts.put(&bytes, Some(&expected))).await {
        Ok(Ok(d)) => Ok(AdminReply::with_status(201, json!({ "digest": d }))),
        Ok(Err(e @ ArtifactError::Mismatch { .. })) => Err(AdminReply::error(400, e.to_string())),
        Ok(Err(e)) => Err(AdminReply::error(507, e.to_string())),
        Err(e) => Err(AdminReply::error(500, format!("storing the artifact failed: {e}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    manifest: String,
    #[serde(default = "default_file")]
    file: String,
    artifacts: HashMap<String, Digest>,
    /// Deploy even if it loses data (a removed queue's waiting messages).
    #[serde(default)]
    allow_loss: bool,
}

fn default_file() -> String {
    "weft.toml".into()
}

/// Deploys, or with `plan_only` says what a deploy would change.
async fn deploy(node: &Arc<Node>, request: &AdminRequest, plan_only: bool) -> Reply {
    let input: DeployRequest = request.json()?;
    let report = if plan_only {
        node.plan(&input.manifest, &input.file, &input.artifacts).await
    } else {
        node.deploy_everywhere(&input.manifest, &input.file, &input.artifacts, input.allow_loss)
            .await
    };
    match report {
        Ok(report) => Ok(AdminReply::ok(json!(report))),
        Err(e) => {
            let mut body = json!({ "error": e.to_string() });
            if let weft_node::DeployError::Loss(losses) = &e {
                body["losses"] = json!(losses);
            }
            Err(AdminReply::with_status(e.status(), body))
        }
    }
}
