//! A deploy step that several capabilities share: install routing
//! compiled at plan time once the queues it sends to exist, before the new
//! deployment's functions can publish to it.

use std::sync::{Arc, Mutex};

use crate::capability::{Deploy, Staged};
use crate::node::Node;

/// Routing `R`, compiled by a plan, installed by `install` in the route
/// phase.
pub(crate) struct Routing<R> {
    compiled: Mutex<Option<R>>,
    install: fn(&Node, R),
}

impl<R: Send> Routing<R> {
    pub(crate) fn new(compiled: R, install: fn(&Node, R)) -> Routing<R> {
        Routing {
            compiled: Mutex::new(Some(compiled)),
            install,
        }
    }
}

impl<R: Send> Staged<Node> for Routing<R> {
    fn route(&self, node: &Arc<Node>, _deploy: &Deploy) {
        if let Some(routing) = self.compiled.lock().unwrap_or_else(|p| p.into_inner()).take() {
            (self.install)(node, routing);
        }
    }
}
