//! Durable events: what queues, topics and buses mean, built on the
//! storage interface.
//!
//! [`Queues`] gives each `[queue.NAME]` its SQS-like behaviour over a
//! storage stream: delays, visibility timeouts, receive counts, retries
//! with exponential backoff, dead-letter queues and redrive, FIFO ordering
//! per group with deduplication. [`cloudevents`] is the one CloudEvents 1.0
//! HTTP codec: it decodes events in every content mode for the ingress and
//! for functions' publishes, and encodes deliveries (binary mode for one
//! message, the batched content mode for several).
//!
//! [`Topics`] fan an event out to every subscription whose filter it
//! matches; [`bus::Buses`] route events by content with EventBridge
//! rules, reshape them for each target, archive and replay them. Both
//! store every copy of one publish or put in one write.
//!
//! This crate must not know about HTTP servers, functions or wasmtime.

pub mod bus;
pub mod cloudevents;
pub mod kv;
pub mod objects;
mod queue;
mod topics;
pub mod trace;

pub use cloudevents::CloudEvent;
pub use queue::{Hidden, Outgoing, Prepared, QueueError, Queues, Sent, hidden_queue, stream_of};
pub use topics::{Plan, Published, TopicRouting, Topics};
