//! One weft node: the deployed app and everything that happens to it,
//! apart from HTTP serving.
//!
//! A [`Node`] holds the running app: the current [`Deployment`] (functions
//! ready to run, and the route table), the runtime, the store, the durable
//! storage, and the registered [capabilities](capability::Capability).
//! It turns a request for a function into an invocation and leaves a
//! record of it ([`Node::invoke`]), follows forwards
//! ([`Node::invoke_following`]), decides where a function's outbound
//! HTTP goes (`outbound`), plans and applies deploys ([`Node::plan`],
//! [`Node::deploy`]), delivers events to targets ([`Node::deliver`]), and
//! stops in order ([`Node::shutdown`]).
//!
//! Every capability (triggers, async invocation, schedules, queues,
//! topics, the bus) is one module under [`capabilities`], registered in
//! [`capabilities::all`]. Nothing else in this crate names one.
//!
//! Modules depend on each other in one direction only: `capability`,
//! `deployment`, `call` and `body` know no other module of the crate;
//! `node` knows those; everything else builds on `node`.
//!
//! This crate does not serve HTTP: `weft-gateway` does, on top of it.

pub mod body;
mod call;
pub mod capabilities;
pub mod capability;
mod cluster;
mod delivery;
mod deploy;
mod deployment;
mod forward;
mod invoke;
mod metrics;
mod node;
mod outbound;
pub mod telemetry;

pub use body::Body;
pub use call::{Call, Handled, Traced};
pub use capability::{Action, Capability, Change};
pub use cluster::NodeInfo;
pub use deploy::{DeployError, DeployReport, FunctionAction, FunctionChange};
pub use deployment::{Deployed, Deployment};
pub use forward::MAX_FORWARDS;
pub use invoke::percent_decode;
pub use node::{Node, NodeConfig};
pub use outbound::{INTERNAL_SUFFIX, MAX_CALL_DEPTH};
pub use weft_store::Trigger;
