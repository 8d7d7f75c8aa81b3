//! The HTTP front of a weft node, and the node itself.
//!
//! A [`Node`] holds the running app: the current [`Deployment`] (functions
//! ready to run, and the route table), the runtime, and the store. It turns
//! a request for a function into an invocation and leaves a record of it.
//! [`gateway`] serves the app's routes; [`admin`] serves the JSON admin API
//! that the CLI uses. In-process calls between functions go through
//! [`outbound`], without a socket.

pub mod admin;
mod asyncs;
mod body;
mod deploy;
mod forward;
pub mod gateway;
mod ingress;
mod node;
mod outbound;
mod schedules;
mod serve;
mod triggers;

pub use body::Body;
pub use deploy::{DeployError, DeployReport, Deployed, Deployment, FunctionChange};
pub use forward::MAX_FORWARDS;
pub use node::{Node, NodeConfig, Trigger};
pub use outbound::{INTERNAL_SUFFIX, MAX_CALL_DEPTH};
pub use serve::{serve, serve_per_core};
