//! The embedded store: one SQLite file in the data directory, plus a folder
//! of content-addressed component files.
//!
//! It keeps what must outlive the process: function versions, invocation
//! records, and the lines functions wrote. Records and logs are written by
//! one background thread in batches (one transaction per batch), so the
//! request path only sends to a channel and never waits on the disk.
//! Readers use their own connection; SQLite's WAL mode lets them run while
//! the writer commits.
//!
//! This crate must not know about HTTP, wasmtime or manifests.

mod artifacts;
pub mod durable;
mod records;

pub use artifacts::{ArtifactError, Artifacts, Digest};
pub use records::{
    DEFAULT_RETENTION, FunctionVersion, InvocationRecord, LogLine, LogQuery, Outcome, RecordQuery, Store, StoreError,
    Trigger, UnknownName, now_us,
};
