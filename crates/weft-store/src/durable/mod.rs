//! The storage interface behind every durable part of weft: queues,
//! topics, schedules, workflow state, key-value data and artifacts.
//!
//! It has the shape of NATS JetStream, so that a JetStream provider can
//! implement it next to the embedded one ([`Embedded`], one SQLite file):
//!
//! - [`Streams`]: durable, ordered messages consumed as a work queue: a
//!   consumer *leases* messages for a visibility window, then acknowledges
//!   them (gone) or releases them (delivered again later). A lease that
//!   lapses makes the message deliverable again, with its receive count up.
//!   Messages may carry a deduplication id and a group (FIFO per group).
//! - [`KeyValue`]: buckets of keys with revisions and compare-and-set.
//! - [`Objects`]: small named blobs, held whole (components).
//! - [`Blobs`]: immutable byte streams of any size, read by range (the
//!   data of object buckets).
//!
//! Every write is durable when its future resolves: the embedded provider
//! answers only after the transaction holding it is committed and fsynced.
//! The behaviour every provider must show is written once, in
//! [`conformance`] (with the `conformance` feature), and run against each
//! provider by its tests.

mod blobs;
#[cfg(feature = "conformance")]
pub mod conformance;
mod embedded;

pub use blobs::{Blob, BlobReader, BlobWrite, BlobWriter, Blobs, Files, READ_CHUNK, is_blob_id, new_blob_id};

pub use embedded::{BATCH_BOUNDS, COMMIT_BOUNDS_US, CommitStats, Embedded};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StorageError {
    /// The storage cannot take writes now (disk full, read-only, I/O error).
    /// Nothing of the failed operation was kept; retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A compare-and-set lost: the key is at another revision.
    #[error("revision conflict: the key is at revision {current:?}")]
    Conflict { current: Option<u64> },
    #[error("storage error: {0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// A message to append to a stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewMessage {
    /// Unique id; a second append with the same id within the stream's
    /// deduplication window is acknowledged but not stored.
    pub id: String,
    /// Messages of one group are delivered one at a time, in order, by
    /// [`Streams::lease`] with `fifo`.
    pub group: Option<String>,
    pub body: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
    /// Not deliverable before this long after the append.
    pub delay: Duration,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub seq: u64,
    pub id: String,
    pub group: Option<String>,
    pub body: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
    /// Microseconds since the Unix epoch.
    pub appended_us: i64,
    /// How many times it was leased, this lease included.
    pub receive_count: u32,
    pub last_error: Option<String>,
}

impl Message {
    /// The handle that acknowledges or releases this lease, and no later one.
    pub fn receipt(&self) -> Receipt {
        Receipt {
            seq: self.seq,
            receive_count: self.receive_count,
        }
    }
}

/// Names one lease of one message: `SEQ.RECEIVE_COUNT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    pub seq: u64,
    pub receive_count: u32,
}

impl std::fmt::Display for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.seq, self.receive_count)
    }
}

impl std::str::FromStr for Receipt {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Receipt, String> {
        let bad = || format!("`{s}` is not a receipt: receipts look like `42.1` (as `receive` prints them)");
        let (seq, count) = s.split_once('.').ok_or_else(bad)?;
        Ok(Receipt {
            seq: seq.parse().map_err(|_| bad())?,
            receive_count: count.parse().map_err(|_| bad())?,
        })
    }
}

/// Messages for one stream, in an [`Streams::append_all`].
#[derive(Debug, Clone, PartialEq)]
pub struct Append {
    pub stream: String,
    pub messages: Vec<NewMessage>,
    /// As in [`Streams::append`].
    pub dedup_window: Duration,
}

/// The result of appending one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// The id was seen within the deduplication window; nothing was stored.
    pub duplicate: bool,
}

/// Counts of a stream's messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamStats {
    /// Deliverable now.
    pub visible: u64,
    /// Leased and not yet acknowledged.
    pub in_flight: u64,
    /// Waiting for their delay (or a retry backoff).
    pub delayed: u64,
    pub oldest_us: Option<i64>,
}

/// Called with a stream's name when messages may have become deliverable
/// on it (see [`Streams::on_append`]).
pub type Wake = Arc<dyn Fn(&str) + Send + Sync>;

#[async_trait::async_trait]
pub trait Streams: Send + Sync {
    /// Appends messages, in order, in one durable write. Ids seen within
    /// `dedup_window` are acknowledged as duplicates and not stored; a zero
    /// window turns deduplication off.
    async fn append(&self, stream: &str, messages: Vec<NewMessage>, dedup_window: Duration) -> Result<Vec<Appended>>;
    /// Appends to several streams in one durable write: all of it is kept,
    /// or (on an error) none. Results are in the order of `appends`.
    async fn append_all(&self, appends: Vec<Append>) -> Result<Vec<Vec<Appended>>>;
    /// Leases up to `max` deliverable messages for `visibility`, oldest
    /// first. With `fifo`, at most the oldest message of each group, and
    /// none of a group that has a message in flight.
    async fn lease(&self, stream: &str, max: usize, visibility: Duration, fifo: bool) -> Result<Vec<Message>>;
    /// Acknowledges leases: their messages are gone. Returns how many of the
    /// receipts were current (a lapsed lease's receipt does nothing).
    async fn ack(&self, stream: &str, receipts: &[Receipt]) -> Result<usize>;
    /// Ends a lease early: the message is deliverable again after `delay`,
    /// with `error` kept as its last error. Returns whether it was current.
    async fn release(&self, stream: &str, receipt: Receipt, delay: Duration, error: Option<String>) -> Result<bool>;
    /// Moves messages to the end of another stream in one write, with
    /// `attributes` added; with `reset`, their receive counts start over.
    async fn transfer(
        &self,
        stream: &str,
        seqs: &[u64],
        to: &str,
        attributes: BTreeMap<String, String>,
        reset: bool,
    ) -> Result<usize>;
    /// The oldest messages, without leasing them.
    async fn peek(&self, stream: &str, max: usize) -> Result<Vec<Message>>;
    /// Up to `max` messages with a sequence number above `after`, oldest
    /// first, without leasing them: a stream read as a log (archives).
    async fn read(&self, stream: &str, after: u64, max: usize) -> Result<Vec<Message>>;
    async fn stats(&self, stream: &str) -> Result<StreamStats>;
    /// Deletes messages appended more than `age` ago; returns how many.
    async fn expire(&self, stream: &str, age: Duration) -> Result<usize>;
    /// Registers `wake` for appends made by other processes that share this
    /// storage (other nodes), so their consumers here wake at once. A
    /// provider only one process uses (the embedded one) never calls it:
    /// the node wakes its own consumers.
    fn on_append(&self, wake: Wake) {
        let _ = wake;
    }
    /// Whether other processes (nodes) share this storage, so that the
    /// node agrees with them through it on the deployment and its peers.
    fn is_shared(&self) -> bool {
        false
    }
    /// How commits went, for a provider that groups writes into commits
    /// of its own (the embedded one); none for the others.
    fn commit_stats(&self) -> Option<CommitStats> {
        None
    }
}

/// A key's value and revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub revision: u64,
    /// When the value expires (microseconds since the Unix epoch), if it
    /// was written with a time to live. An expired key reads as absent.
    pub expires_us: Option<i64>,
}

/// The precondition of a key-value write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Expect {
    /// Whatever the key holds.
    #[default]
    Anything,
    /// Only if the key is absent (or expired).
    Absent,
    /// Only if the key is at this revision.
    Revision(u64),
}

impl Expect {
    /// Whether a key at `current` (none: absent) meets it.
    pub fn allows(self, current: Option<u64>) -> bool {
        match self {
            Expect::Anything => true,
            Expect::Absent => current.is_none(),
            Expect::Revision(r) => current == Some(r),
        }
    }
}

/// How a key-value write is made: [`KeyValue::set`] and [`KeyValue::remove`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Write {
    /// Else [`StorageError::Conflict`], and nothing is written.
    pub expect: Expect,
    /// A set value expires this long after the write.
    pub ttl: Option<Duration>,
    /// Streams each given the write's [`Change`] (one message), in the
    /// same durable write as the change itself.
    pub changes: Vec<String>,
}

/// What a key-value write did.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The revision of this change (a removal has one too).
    pub revision: u64,
    /// What the key held before, if anything. A provider may leave its
    /// value empty when the write has no change streams (it need not read
    /// a value nothing carries).
    pub old: Option<Entry>,
}

/// One change of one key, as a write appends it to its change streams:
/// an insert (`old` none), a modification, or a removal (`new` none;
/// `expired` when the key's time to live ran out). Revisions of one
/// bucket only grow, so they order its changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub bucket: String,
    pub key: String,
    pub old: Option<Vec<u8>>,
    pub new: Option<Vec<u8>>,
    pub revision: u64,
    /// Microseconds since the Unix epoch.
    pub at_us: i64,
    pub expired: bool,
}

/// The attributes of a change's message.
const CHANGE_BUCKET: &str = "kv-bucket";
const CHANGE_KEY: &str = "kv-key";
const CHANGE_AT: &str = "kv-at-us";
const CHANGE_NEW: &str = "kv-new-length";
const CHANGE_OLD: &str = "kv-old-length";
const CHANGE_EXPIRED: &str = "kv-expired";

impl Change {
    /// The revision as 21 digits, so the text sorts as the number does
    /// (DynamoDB Streams' `SequenceNumber`).
    pub fn sequence_number(&self) -> String {
        format!("{:021}", self.revision)
    }

    /// The change as a stream message: its id is the sequence number
    /// (unique in the bucket), its group the key, so a FIFO lease keeps
    /// each key's changes in order. The body is the new value then the
    /// old one, as they are; the attributes say the rest.
    pub fn message(&self) -> NewMessage {
        let mut attributes = BTreeMap::new();
        attributes.insert(CHANGE_BUCKET.to_string(), self.bucket.clone());
        attributes.insert(CHANGE_KEY.to_string(), self.key.clone());
        attributes.insert(CHANGE_AT.to_string(), self.at_us.to_string());
        let mut body = Vec::new();
        for (name, value) in [(CHANGE_NEW, &self.new), (CHANGE_OLD, &self.old)] {
            if let Some(v) = value {
                attributes.insert(name.to_string(), v.len().to_string());
                body.extend_from_slice(v);
            }
        }
        if self.expired {
            attributes.insert(CHANGE_EXPIRED.to_string(), "true".to_string());
        }
        NewMessage {
            id: self.sequence_number(),
            group: Some(self.key.clone()),
            body,
            attributes,
            delay: Duration::ZERO,
        }
    }

    /// The change a stream message holds, if it holds one.
    pub fn from_message(m: &Message) -> Option<Change> {
        let a = &m.attributes;
        let length = |name: &str| -> Option<Option<usize>> {
            match a.get(name) {
                None => Some(None),
                Some(n) => n.parse().ok().map(Some),
            }
        };
        let (new_len, old_len) = (length(CHANGE_NEW)?, length(CHANGE_OLD)?);
        if new_len.unwrap_or(0) + old_len.unwrap_or(0) != m.body.len() {
            return None;
        }
        let (new, old) = m.body.split_at(new_len.unwrap_or(0));
        Some(Change {
            bucket: a.get(CHANGE_BUCKET)?.clone(),
            key: a.get(CHANGE_KEY)?.clone(),
            old: old_len.map(|_| old.to_vec()),
            new: new_len.map(|_| new.to_vec()),
            revision: m.id.parse().ok()?,
            at_us: a.get(CHANGE_AT)?.parse().ok()?,
            expired: a.contains_key(CHANGE_EXPIRED),
        })
    }
}

/// Buckets of keys with revisions, compare-and-set, times to live, and
/// change records written with the changes. Keys read back in byte order.
#[async_trait::async_trait]
pub trait KeyValue: Send + Sync {
    /// The key's value; none if it is absent or expired.
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>>;
    /// Sets the value, as `write` says.
    async fn set(&self, bucket: &str, key: &str, value: Vec<u8>, write: &Write) -> Result<Written>;
    /// Removes the key, as `write` says; none (and no change) if it was
    /// absent. A removal's `ttl` means nothing.
    async fn remove(&self, bucket: &str, key: &str, write: &Write) -> Result<Option<Written>>;
    /// Up to `limit` keys starting with `prefix` and sorting after `after`,
    /// in order; expired keys are left out.
    async fn list(&self, bucket: &str, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>>;
    /// Removes up to `max` keys whose time to live has run out, each with
    /// an expired [`Change`] appended to `changes`; returns how many.
    async fn expire_keys(&self, bucket: &str, changes: &[String], max: usize) -> Result<usize>;
    /// Finishes what writes of `bucket` cut off midway left undone: their
    /// changes not yet appended to the streams the write named (`changes`
    /// for a change stored without them). A provider that writes a change
    /// in one transaction with the write has none. Returns how many it
    /// finished.
    async fn catch_up(&self, bucket: &str, changes: &[String]) -> Result<usize> {
        let _ = (bucket, changes);
        Ok(0)
    }
    /// The largest value this provider stores.
    fn max_value(&self) -> usize {
        usize::MAX
    }
    /// Whether compare-and-set admits exactly one writer of a revision
    /// even when writers race (a provider on servers that check it only
    /// before replicating a write does not).
    fn serializes_compare_and_set(&self) -> bool {
        true
    }

    /// Sets the value; returns the new revision.
    async fn put(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<u64> {
        Ok(self.set(bucket, key, value, &Write::default()).await?.revision)
    }
    /// Sets the value only if the key is absent, else [`StorageError::Conflict`].
    async fn create(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<u64> {
        let write = Write {
            expect: Expect::Absent,
            ..Write::default()
        };
        Ok(self.set(bucket, key, value, &write).await?.revision)
    }
    /// Sets the value only if the key is at `revision`, else [`StorageError::Conflict`].
    async fn update(&self, bucket: &str, key: &str, value: Vec<u8>, revision: u64) -> Result<u64> {
        let write = Write {
            expect: Expect::Revision(revision),
            ..Write::default()
        };
        Ok(self.set(bucket, key, value, &write).await?.revision)
    }
    /// Removes the key; returns whether it existed.
    async fn delete(&self, bucket: &str, key: &str) -> Result<bool> {
        Ok(self.remove(bucket, key, &Write::default()).await?.is_some())
    }
    /// Keys starting with `prefix`, in order.
    async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        self.list(bucket, prefix, None, usize::MAX).await
    }
}

#[async_trait::async_trait]
pub trait Objects: Send + Sync {
    async fn put_object(&self, bucket: &str, name: &str, data: Vec<u8>) -> Result<()>;
    async fn get_object(&self, bucket: &str, name: &str) -> Result<Option<Vec<u8>>>;
    async fn delete_object(&self, bucket: &str, name: &str) -> Result<bool>;
    async fn list_objects(&self, bucket: &str) -> Result<Vec<String>>;
}

/// Everything durable, from one provider.
pub trait Storage: Streams + KeyValue + Objects + Blobs {}

impl<T: Streams + KeyValue + Objects + Blobs> Storage for T {}
