//! `append_all` on JetStream: several streams in one durable write.
//!
//! JetStream writes one stream at a time, so a put to several streams is
//! first one message on the outbox stream (the whole put, as JSON): once
//! the server has it, the put is accepted, durable, and one write. The
//! node then copies each message to its stream, each under a
//! deduplication id (the message's own when it has a window, else
//! `weft-outbox-SEQ-I-J`), and deletes the outbox entry.
//!
//! A node that dies between the two leaves the entry behind. Every node
//! runs a replayer that, every [`REPLAY_EVERY`], copies out entries older
//! than [`REPLAY_AFTER`] and deletes them; the deduplication ids make a
//! copy that was already made a duplicate, so each copy exists once. This
//! holds while the entry is replayed within the target streams'
//! deduplication window (two minutes at least); an outbox entry left for
//! longer (every node down that long) may be copied twice.

use std::time::Duration;

use async_nats::jetstream::stream;
use serde::{Deserialize, Serialize};
use weft_store::durable::{Append, Appended, NewMessage, Result, StorageError};

use crate::JetStream;

pub const REPLAY_EVERY: Duration = Duration::from_secs(5);
pub const REPLAY_AFTER: Duration = Duration::from_secs(10);
/// Entries copied out per replay pass.
const REPLAY_BATCH: usize = 256;

#[derive(Serialize, Deserialize)]
struct Entry {
    appends: Vec<Part>,
}

#[derive(Serialize, Deserialize)]
struct Part {
    stream: String,
    window_us: u64,
    messages: Vec<NewMessage>,
}

impl JetStream {
    async fn outbox(&self) -> Result<&stream::Stream> {
        self.outbox
            .get_or_try_init(|| async {
                self.ensure_stream(stream::Config {
                    name: self.names.outbox_stream(),
                    description: Some("weft: puts to several streams, until each is copied out".into()),
                    subjects: vec![self.names.outbox_subject()],
                    storage: stream::StorageType::File,
                    num_replicas: self.replicas,
                    allow_direct: true,
                    ..Default::default()
                })
                .await
            })
            .await
    }

    pub(crate) async fn append_through_outbox(&self, appends: Vec<Append>) -> Result<Vec<Vec<Appended>>> {
        self.outbox().await?;
        let entry = Entry {
            appends: appends
                .into_iter()
                .map(|a| Part {
                    stream: a.stream,
                    window_us: a.dedup_window.as_micros() as u64,
                    messages: a.messages,
                })
                .collect(),
        };
        let body = serde_json::to_vec(&entry).map_err(|e| StorageError::Other(e.to_string()))?;
        self.check_connected()?;
        let ack = self
            .js
            .publish(self.names.outbox_subject(), body.into())
            .await
            .map_err(|e| self.error("cannot append", e))?
            .await
            .map_err(|e| self.error("the append was not confirmed", e))?;
        // Accepted: what follows may fail and be finished by a replayer.
        match self.copy_out(ack.sequence, entry).await {
            Ok(out) => Ok(out),
            Err((parts, e)) => {
                tracing::warn!("put {} is kept; its copies are left to the replayer: {e}", ack.sequence);
                Ok(parts
                    .iter()
                    .map(|n| {
                        vec![
                            Appended {
                                seq: 0,
                                duplicate: false
                            };
                            *n
                        ]
                    })
                    .collect())
            }
        }
    }

    /// Copies an outbox entry's messages to their streams, then deletes it.
    async fn copy_out(
        &self,
        seq: u64,
        entry: Entry,
    ) -> std::result::Result<Vec<Vec<Appended>>, (Vec<usize>, StorageError)> {
        let sizes: Vec<usize> = entry.appends.iter().map(|p| p.messages.len()).collect();
        let mut out = Vec::with_capacity(entry.appends.len());
        for (i, part) in entry.appends.into_iter().enumerate() {
            let window = Duration::from_micros(part.window_us);
            let h = self
                .handle(&part.stream, window)
                .await
                .map_err(|e| (sizes.clone(), e))?;
            let dedup = |j: usize, m: &NewMessage| {
                Some(if !window.is_zero() && !m.id.is_empty() {
                    m.id.clone()
                } else {
                    format!("weft-outbox-{seq}-{i}-{j}")
                })
            };
            let appended = self
                .publish(&h, part.messages, dedup, |_| 0)
                .await
                .map_err(|e| (sizes.clone(), e))?;
            self.wake(&part.stream).await;
            out.push(appended);
        }
        let outbox = self.outbox().await.map_err(|e| (sizes.clone(), e))?;
        outbox
            .delete_message(seq)
            .await
            .map_err(|e| (sizes.clone(), self.error("cannot clear the outbox", e)))?;
        Ok(out)
    }

    /// Copies out what a node left in the outbox; returns how many entries.
    pub async fn replay_outbox(&self, older_than: Duration) -> Result<usize> {
        let outbox = self.outbox().await?;
        let cutoff = weft_store::now_us() - older_than.as_micros() as i64;
        let mut seq = 1;
        let mut done = 0;
        while done < REPLAY_BATCH {
            let m = match outbox
                .direct_get_next_for_subject(self.names.outbox_subject(), Some(seq))
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => break,
                Err(e) => return Err(self.error("cannot read the outbox", e)),
            };
            if crate::streams::micros(m.time.unix_timestamp_nanos()) > cutoff {
                break;
            }
            seq = m.sequence + 1;
            let Ok(entry) = serde_json::from_slice::<Entry>(&m.payload) else {
                tracing::error!("outbox entry {} is not a put; leaving it", m.sequence);
                continue;
            };
            match self.copy_out(m.sequence, entry).await {
                Ok(_) => done += 1,
                // Another node deleted it first: its copies are made.
                Err((_, e)) if e.to_string().contains("not found") => {}
                Err((_, e)) => return Err(e),
            }
        }
        Ok(done)
    }

    pub(crate) fn start_replayer(self: &std::sync::Arc<Self>) {
        let weak = std::sync::Arc::downgrade(self);
        self.spawn(async move {
            loop {
                tokio::time::sleep(REPLAY_EVERY).await;
                let Some(store) = weak.upgrade() else { return };
                if !store.connected() {
                    continue;
                }
                match store.replay_outbox(REPLAY_AFTER).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("copied out {n} puts a node left in the outbox"),
                    Err(e) => tracing::warn!("cannot replay the outbox: {e}"),
                }
            }
        });
    }
}
