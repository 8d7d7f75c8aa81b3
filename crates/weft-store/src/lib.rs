//! The embedded store: one SQLite file in the data directory, plus a folder
//! of content-addressed component files.
//!
//! It keeps what must outlive the process: function versions, invocation
//! records, and the lines functions wrote. Records and logs are written by
//! one background thread in batches (one transaction per batch), so the
//! request path only queues them and never waits on the disk. The queue is
//! bounded: when the writer falls behind, what does not fit is shed and
//! counted ([`Store::shed`]) rather than held in memory.
//! Readers use their own connection; SQLite's WAL mode lets them run while
//! the writer commits.
//!
//! This crate must not know about HTTP, wasmtime or manifests.

mod artifacts;
pub mod durable;
mod records;

pub use artifacts::{ArtifactError, Artifacts, Digest};
pub use records::{
    DEFAULT_RETENTION, FunctionVersion, InvocationRecord, LogLine, LogQuery, MAX_TRACE_SPANS, Outcome,
    QUEUED_LOG_LINES, QUEUED_RECORDS, QUEUED_SPANS, RecordQuery, Shed, Store, StoreError, Trigger, UnknownName,
    UsageBy, UsageQuery, now_us, us_before_now,
};
