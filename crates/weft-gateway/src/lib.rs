//! The HTTP faces of a weft node. The node itself (deploys, invocations,
//! capabilities) is `weft-node`; this crate only speaks HTTP to it.
//!
//! - [`gateway`]: the app's routes, matched against the deployed route
//!   table, and the event ingress under `/events/` ([`ingress`]).
//! - [`policy`]: request policy that applies to routes and to the ingress
//!   alike (today: the body-size cap).
//! - [`admin`]: the JSON admin API that the CLI uses, one module per
//!   resource, plus the operations every capability registers.
//! - [`serve`]: the accept loops, with connection bounds (header and idle
//!   timeouts, a connection cap with 503 past it) and graceful shutdown.
//!
//! `weft-node` never depends on this crate.

pub mod admin;
pub mod gateway;
pub mod ingress;
pub mod policy;
mod serve;

pub use serve::{Counters, Limits, serve, serve_per_core};
pub use weft_node::{Body, Node};
