//! Where a function's outbound HTTP goes: to another function of the app
//! in-process (`http://NAME.weft.internal/...`), to a host its manifest
//! allows, or nowhere, with an error that says which grant is missing.

use std::sync::{Arc, Mutex, Weak};

use weft_runtime::{HttpError, Outbound, OutboundFuture, RequestOptions, WasiBody, send_direct};

use crate::deploy::Deployed;
use crate::node::{Call, Node, Trigger};

/// Hosts ending in this reach the app's own functions: `http://NAME.weft.internal/PATH`.
pub const INTERNAL_SUFFIX: &str = ".weft.internal";
/// How deep in-process calls may nest before weft stops them as a loop.
pub const MAX_CALL_DEPTH: u32 = 8;

/// The outbound policy of one invocation.
pub(crate) struct FunctionOutbound {
    node: Weak<Node>,
    caller: Arc<Deployed>,
    request_id: String,
    depth: u32,
    denials: Mutex<Vec<String>>,
}

impl FunctionOutbound {
    pub(crate) fn new(node: &Arc<Node>, caller: &Arc<Deployed>, request_id: &str, depth: u32) -> Self {
        FunctionOutbound {
            node: Arc::downgrade(node),
            caller: caller.clone(),
            request_id: request_id.to_string(),
            depth,
            denials: Mutex::new(Vec::new()),
        }
    }

    /// The refusals this invocation met, as log lines.
    pub(crate) fn take_denials(&self) -> Vec<String> {
        std::mem::take(&mut *self.denials.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn deny(&self, message: String) -> OutboundFuture {
        self.denials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("[weft] {message}"));
        Box::pin(async move { Err(HttpError::InternalError(Some(message))) })
    }
}

impl Outbound for FunctionOutbound {
    fn send(&self, request: http::Request<WasiBody>, options: Option<RequestOptions>) -> OutboundFuture {
        let uri = request.uri();
        let Some(host) = uri.host().map(str::to_ascii_lowercase) else {
            return self.deny("outbound request without a host".into());
        };
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let default_port = if https { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        let caller = &self.caller.name;

        if let Some(target) = host.strip_suffix(INTERNAL_SUFFIX) {
            let Some(node) = self.node.upgrade() else {
                return self.deny("the node is shutting down".into());
            };
            if self.depth + 1 >= MAX_CALL_DEPTH {
                return self.deny(format!(
                    "call from `{caller}` to `{target}` refused: in-process calls are nested {MAX_CALL_DEPTH} deep; is there a loop?"
                ));
            }
            let Some(function) = node.deployment().functions.get(target).cloned() else {
                let deployment = node.deployment();
                let mut known: Vec<&str> = deployment.functions.keys().map(String::as_str).collect();
                known.sort();
                return self.deny(format!(
                    "`{host}` names no function of this app; internal addresses are http://FUNCTION{INTERNAL_SUFFIX}/PATH with FUNCTION one of: {}",
                    known.join(", ")
                ));
            };
            let parent = self.request_id.clone();
            let depth = self.depth + 1;
            return Box::pin(async move {
                let call = Call {
                    trigger: Trigger::Internal,
                    params: &[],
                    parent: Some(&parent),
                    depth,
                };
                let handled = node.invoke(&function, request, call).await;
                Ok(handled.response)
            });
        }

        let allowed = self
            .caller
            .spec
            .allowed_hosts
            .iter()
            .any(|p| p.allows(&host, port, port == default_port));
        if !allowed {
            let entry = if port == default_port {
                host.clone()
            } else {
                format!("{host}:{port}")
            };
            return self.deny(format!(
                "outbound HTTP to `{entry}` is not allowed for function `{caller}`: add \"{entry}\" to `allowed_hosts` in [function.{caller}] of weft.toml"
            ));
        }
        send_direct(request, options)
    }
}
