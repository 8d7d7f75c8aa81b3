//! The capabilities of a node, each one module of the shape
//! [`crate::capability::Capability`], and [`all`], the one list they are
//! registered in.
//!
//! A capability that sends to queues it adds (hidden queues for function
//! and URL targets) plans before [`queues`], which plans last so that it
//! sees, and checks for loss, every queue the deploy needs.

pub mod asyncs;
pub mod buckets;
pub mod bus;
mod held;
mod http;
pub mod kv;
pub mod queues;
mod routing;
pub mod schedules;
pub mod topics;
pub mod triggers;
pub mod workflows;

use std::sync::Arc;

use crate::capability::Capability;

/// Every capability, in the order deploys plan, install and start them.
pub fn all() -> Vec<Arc<dyn Capability<crate::node::Node>>> {
    vec![
        Arc::new(triggers::Triggers),
        Arc::new(asyncs::AsyncInvocations::default()),
        Arc::new(schedules::Schedules),
        Arc::new(topics::Topics),
        Arc::new(bus::Bus),
        Arc::new(kv::Kv::default()),
        Arc::new(buckets::Buckets::default()),
        Arc::new(workflows::Workflows::default()),
        Arc::new(queues::Queues),
    ]
}
