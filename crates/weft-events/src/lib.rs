//! Durable events: what queues mean, built on the storage interface.
//!
//! [`Queues`] gives each `[queue.NAME]` its SQS-like behaviour over a
//! storage stream: delays, visibility timeouts, receive counts, retries
//! with exponential backoff, dead-letter queues and redrive, FIFO ordering
//! per group with deduplication. [`cloudevents`] encodes deliveries as
//! CloudEvents 1.0 over HTTP (binary mode for one message, the batched
//! content mode for several).
//!
//! [`bus::Buses`] routes events by content with EventBridge rules.
//!
//! This crate must not know about HTTP servers, functions or wasmtime.

pub mod bus;
pub mod cloudevents;
mod queue;
mod topics;

pub use queue::{Outgoing, QueueError, Queues, Sent, hidden_queue};
pub use topics::{CloudEvent, Plan, Published, Topics};
