//! The JetStream provider of weft's storage interface
//! ([`weft_store::durable::Storage`]): several weft nodes share one NATS
//! JetStream (one server or a cluster), which keeps every durable part and
//! does all the consensus. weft adds none of its own.
//!
//! How each part maps onto JetStream (also in `ARCHITECTURE.md`):
//!
//! - A weft stream is a JetStream stream with work-queue retention and one
//!   subject; its messages are leased through one durable pull consumer,
//!   `weft`, shared by every node, so a message is leased by one node at
//!   a time. A lease's visibility is the consumer's ack wait; a lapsed
//!   lease is redelivered by the server.
//! - Receipts are checked by the node that leased the message (a lease
//!   lapses there a little before the server's), so a stale receipt
//!   acknowledges nothing. See [`streams`].
//! - `append_all` writes one entry to an outbox stream and then copies
//!   it out under deduplication ids; see [`outbox`].
//! - Key-value buckets and object buckets are JetStream's own.
//! - Names are encoded into tokens JetStream accepts; see [`names`].

mod blobs;
mod connect;
pub mod names;
mod outbox;
mod state;
mod streams;
#[cfg(feature = "testing")]
pub mod testing;

pub use connect::{Auth, ConnectError, Options};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream;
use weft_store::durable::{StorageError, Wake};

use names::Names;

/// weft's storage on a NATS JetStream.
pub struct JetStream {
    client: async_nats::Client,
    js: jetstream::Context,
    names: Names,
    url: String,
    replicas: usize,
    streams: RwLock<HashMap<String, Arc<streams::Handle>>>,
    /// Held while a stream's handle is made.
    opening: tokio::sync::Mutex<()>,
    leases: Mutex<HashMap<(String, u64), streams::Lease>>,
    kv: RwLock<HashMap<String, Arc<state::Bucket>>>,
    objects: RwLock<HashMap<String, jetstream::object_store::ObjectStore>>,
    notes: tokio::sync::OnceCell<jetstream::stream::Stream>,
    outbox: tokio::sync::OnceCell<jetstream::stream::Stream>,
    wakes: Arc<RwLock<Vec<Wake>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for JetStream {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
    }
}

impl JetStream {
    /// The server weft is connected to, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether a compare-and-set (a publish with an expected last
    /// sequence) admits one writer of a revision: always at one replica;
    /// at more, only from nats-server 2.9.21 on, where the check became
    /// part of the replicated write (nats-server issue 4320).
    pub fn serializes_compare_and_set(&self) -> bool {
        if self.replicas <= 1 {
            return true;
        }
        let version = self.client.server_info().version;
        let parts: Vec<u64> = version
            .trim_start_matches('v')
            .split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|p| p.parse().unwrap_or(0))
            .collect();
        parts.as_slice() >= [2, 9, 21].as_slice()
    }

    /// Whether the connection is up now (it comes back by itself).
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Fails fast while the connection is down, so that ingress and sends
    /// answer 503 at once instead of waiting out a timeout.
    fn check_connected(&self) -> Result<(), StorageError> {
        if self.connected() {
            Ok(())
        } else {
            Err(StorageError::Unavailable(format!(
                "NATS at {} is not connected; weft reconnects by itself when it is back",
                self.url
            )))
        }
    }

    /// A failure from the client, as a storage error: unavailable while the
    /// connection is down, a request timed out, or the server (a cluster
    /// electing a leader, a stream's replicas catching up) cannot answer
    /// now; else other. Nothing was kept either way, and a retry is safe.
    fn error(&self, what: &str, e: impl std::fmt::Display) -> StorageError {
        let text = format!("{what}: {e}");
        let lower = text.to_lowercase();
        const PASSING: &[&str] = &[
            "timed out",
            "no responders",
            "unavailable",
            "offline",
            "leader",
            "quorum",
            "no suitable peers",
            "connection",
            "disconnected",
            "broken pipe",
            "no stream found",
        ];
        if !self.connected() || PASSING.iter().any(|p| lower.contains(p)) {
            StorageError::Unavailable(format!("NATS at {}: {text}", self.url))
        } else {
            StorageError::Other(text)
        }
    }

    /// Tells the consumers on every node that `stream` may have messages.
    /// A core publish, queued on the connection and not waited for by the
    /// server; a lost wake only delays a consumer until its next poll.
    async fn wake(&self, stream: &str) {
        let payload = bytes::Bytes::copy_from_slice(stream.as_bytes());
        let _ = self.client.publish(self.names.wake_subject(), payload).await;
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tokio::spawn(task));
    }
}

/// How long a request to the server may take before it counts as unavailable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
