//! What weft's telemetry is made of, knowing no node or store: W3C trace
//! context ([`context`]), spans and traces as trees ([`span`]), the
//! per-invocation report ([`report`]), pay-per-use ([`cost`]) and
//! metrics in the Prometheus text format ([`metrics`]), and export over
//! OTLP ([`otlp`], its messages written by [`proto`]).

pub mod context;
pub mod cost;
pub mod metrics;
pub mod otlp;
pub mod proto;
pub mod report;
pub mod span;

pub use context::SpanContext;
pub use cost::{Prices, Usage};
pub use report::{Report, billed_ms};
pub use span::{Link, Span, SpanEvent, SpanKind, SpanNode, Trace};
