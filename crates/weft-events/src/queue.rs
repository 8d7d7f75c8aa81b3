//! Queue semantics over a storage stream named `queue:NAME`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use weft_manifest::{DEDUP_WINDOW, Queue};
use weft_store::durable::{Append, Message, NewMessage, Receipt, Storage, StorageError, StreamStats};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no queue `{0}` is deployed")]
    NoSuchQueue(String),
    #[error("no topic `{0}` is deployed")]
    NoSuchTopic(String),
    #[error("no bus `{0}` is deployed")]
    NoSuchBus(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl QueueError {
    /// The HTTP status that says this to a client.
    pub fn status(&self) -> u16 {
        match self {
            QueueError::NoSuchQueue(_) | QueueError::NoSuchTopic(_) | QueueError::NoSuchBus(_) => 404,
            QueueError::Invalid(_) => 400,
            QueueError::Storage(StorageError::Unavailable(_)) => 503,
            QueueError::Storage(_) => 500,
        }
    }
}

/// A message to send.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// Deduplication id; generated when absent (FIFO: from the body).
    pub id: Option<String>,
    /// FIFO message group.
    pub group: Option<String>,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    /// CloudEvents `type` to deliver it with.
    pub event_type: Option<String>,
    /// Added to the queue's own delay.
    pub delay: Option<Duration>,
    /// CloudEvents `source` and `time` to deliver it with (from a topic).
    pub source: Option<String>,
    pub time: Option<String>,
    /// The span that stored it (W3C trace context), kept with the message
    /// and restored when it is delivered.
    pub trace: Option<weft_telemetry::SpanContext>,
}

/// Messages checked by [`Queues::prepare_all`], ready for [`Queues::commit`].
pub struct Prepared {
    appends: Vec<Append>,
    /// The message ids of each queue's append (the first `ids.len()` appends).
    ids: Vec<Vec<String>>,
    names: Vec<String>,
}

/// What became of one sent message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sent {
    pub id: String,
    pub seq: u64,
    pub duplicate: bool,
}

/// The app's queues: their settings and their messages.
pub struct Queues {
    storage: Arc<dyn Storage>,
    config: RwLock<HashMap<String, Queue>>,
    wakers: Arc<RwLock<HashMap<String, Arc<Notify>>>>,
    ids: AtomicU64,
    /// Messages moved to a dead-letter queue (or dropped as out of
    /// tries), by the queue they left, since the node started.
    given_up: std::sync::Mutex<BTreeMap<String, u64>>,
}

/// The content type of a body sent without one.
fn sniff(body: &[u8]) -> &'static str {
    if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
        "application/json"
    } else if std::str::from_utf8(body).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

/// The name of a hidden queue that delivers to `target` (`function:NAME`,
/// `url:URL`) for `owner` (a topic, `rule:NAME`). Named by what it
/// delivers to, not by position, so reordering the manifest never sends
/// waiting messages elsewhere; a second queue of one owner for the same
/// target gets `#2` (then `#3`, ...), tracked in `taken`.
pub fn hidden_queue(owner: &str, target: &str, taken: &mut std::collections::HashSet<String>) -> String {
    let base = format!("{owner}#{target}");
    let mut name = base.clone();
    let mut n = 1;
    while !taken.insert(name.clone()) {
        n += 1;
        name = format!("{base}#{n}");
    }
    name
}

/// A hidden queue that delivers to a function or a URL (a topic's
/// function and URL subscriptions, a rule's function targets), and how
/// many workers drain it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hidden {
    pub queue: Queue,
    /// A function or a URL.
    pub target: weft_manifest::Target,
    pub concurrency: u32,
}

impl Hidden {
    /// The hidden queue of `owner` (a topic, `rule:NAME`) for `target`,
    /// retried by `retry`, named by [`hidden_queue`]. A function's
    /// deliveries stay hidden for its timeout and 30 s more.
    pub fn new(
        manifest: &weft_manifest::Manifest,
        owner: &str,
        target: &weft_manifest::Target,
        retry: weft_manifest::Retry,
        dead_letter: Option<String>,
        retention: Duration,
        taken: &mut std::collections::HashSet<String>,
    ) -> Hidden {
        let visibility = match target {
            weft_manifest::Target::Function(f) => manifest
                .function(f)
                .map_or(Duration::from_secs(30), |f| f.timeout)
                .saturating_add(Duration::from_secs(30)),
            _ => Duration::from_secs(60),
        };
        Hidden {
            queue: Queue {
                name: hidden_queue(owner, &target.to_string(), taken),
                visibility_timeout: visibility,
                retry,
                dead_letter,
                delay: Duration::ZERO,
                retention,
                fifo: false,
            },
            target: target.clone(),
            concurrency: 1,
        }
    }
}

/// The storage stream that holds a queue's messages (also for writes that
/// append to a queue in the same write as something else: a key-value
/// store's changes).
pub fn stream_of(queue: &str) -> String {
    format!("queue:{queue}")
}

impl Queues {
    pub fn new(storage: Arc<dyn Storage>) -> Queues {
        let wakers: Arc<RwLock<HashMap<String, Arc<Notify>>>> = Arc::default();
        // Appends by other nodes (a shared storage) wake the consumers
        // here: a queue's stream is `queue:NAME`; other streams (async
        // invocations) are waited on under their stream's own name.
        let known = Arc::downgrade(&wakers);
        storage.on_append(Arc::new(move |stream: &str| {
            let Some(wakers) = known.upgrade() else { return };
            let key = stream.strip_prefix("queue:").unwrap_or(stream);
            if let Some(n) = wakers.read().unwrap_or_else(|p| p.into_inner()).get(key) {
                n.notify_waiters();
            }
        }));
        Queues {
            storage,
            config: RwLock::default(),
            wakers,
            ids: AtomicU64::new(0),
            given_up: Default::default(),
        }
    }

    /// How many messages each queue gave up on (moved to its dead-letter
    /// queue, or dropped out of tries), since the node started.
    pub fn dead_lettered(&self) -> Vec<(String, u64)> {
        let counts = self.given_up.lock().unwrap_or_else(|p| p.into_inner());
        counts.iter().map(|(q, n)| (q.clone(), *n)).collect()
    }

    fn count_given_up(&self, queue: &str, n: usize) {
        let mut counts = self.given_up.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(queue.to_string()).or_default() += n as u64;
    }

    /// Replaces the queue settings (on deploy). Messages are kept.
    pub fn configure(&self, queues: &[Queue]) {
        let mut config = self.config.write().unwrap_or_else(|p| p.into_inner());
        *config = queues.iter().map(|q| (q.name.clone(), q.clone())).collect();
    }

    /// Adds or updates queue settings, keeping the others: a deploy adds
    /// its new hidden queues before anything routes to them, and drops the
    /// old ones (with [`Queues::configure`]) once nothing does.
    pub fn add(&self, queues: &[Queue]) {
        let mut config = self.config.write().unwrap_or_else(|p| p.into_inner());
        for q in queues {
            config.insert(q.name.clone(), q.clone());
        }
    }

    pub fn get(&self, name: &str) -> Result<Queue, QueueError> {
        let config = self.config.read().unwrap_or_else(|p| p.into_inner());
        config
            .get(name)
            .cloned()
            .ok_or_else(|| QueueError::NoSuchQueue(name.to_string()))
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Resolves when a message may have become deliverable on `queue`.
    pub fn waker(&self, queue: &str) -> Arc<Notify> {
        if let Some(n) = self.wakers.read().unwrap_or_else(|p| p.into_inner()).get(queue) {
            return n.clone();
        }
        self.wakers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(queue.to_string())
            .or_default()
            .clone()
    }

    /// A new id for a message or event: the time, the process and a
    /// counter, so it repeats neither within a run nor across restarts.
    pub fn new_id(&self) -> String {
        let now = weft_store::now_us();
        format!(
            "{now:x}-{:x}-{:x}",
            std::process::id(),
            self.ids.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Sends messages: durable (fsynced) when this returns.
    pub async fn send(&self, queue: &str, messages: Vec<Outgoing>) -> Result<Vec<Sent>, QueueError> {
        let prepared = self.prepare_all(vec![(queue.to_string(), messages)], Vec::new())?;
        Ok(self.commit(prepared).await?.pop().unwrap_or_default())
    }

    /// Checks messages for several queues, plus `others` (appends to
    /// streams that are not queues, such as a bus's archive), for one
    /// [`Queues::commit`]. It does not wait, so a caller can check while
    /// it holds the routing that chose those queues.
    pub fn prepare_all(
        &self,
        batches: Vec<(String, Vec<Outgoing>)>,
        others: Vec<Append>,
    ) -> Result<Prepared, QueueError> {
        let mut appends = Vec::with_capacity(batches.len() + others.len());
        let mut ids = Vec::with_capacity(batches.len());
        let mut names = Vec::with_capacity(batches.len());
        for (queue, messages) in batches {
            let append = self.prepare(&queue, messages)?;
            ids.push(append.messages.iter().map(|m| m.id.clone()).collect::<Vec<_>>());
            appends.push(append);
            names.push(queue);
        }
        appends.extend(others);
        Ok(Prepared { appends, ids, names })
    }

    /// Stores what [`Queues::prepare_all`] checked, in one durable write:
    /// all of it, or (on an error) none. Returns what became of each
    /// queue's messages, in the order they were given.
    pub async fn commit(&self, prepared: Prepared) -> Result<Vec<Vec<Sent>>, QueueError> {
        let Prepared { appends, ids, names } = prepared;
        if appends.is_empty() {
            // Nothing to keep: no write, no fsync.
            return Ok(Vec::new());
        }
        let appended = self.storage.append_all(appends).await?;
        for queue in &names {
            self.waker(queue).notify_waiters();
        }
        Ok(ids
            .into_iter()
            .zip(appended)
            .map(|(ids, appended)| {
                ids.into_iter()
                    .zip(appended)
                    .map(|(id, a)| Sent {
                        id,
                        seq: a.seq,
                        duplicate: a.duplicate,
                    })
                    .collect()
            })
            .collect())
    }

    /// Checks messages for `queue` and turns them into a stream append.
    fn prepare(&self, queue: &str, messages: Vec<Outgoing>) -> Result<Append, QueueError> {
        let q = self.get(queue)?;
        let given_ids = messages.iter().any(|m| m.id.is_some());
        let mut batch = Vec::with_capacity(messages.len());
        for (n, m) in messages.into_iter().enumerate() {
            if q.fifo && m.group.as_deref().is_none_or(str::is_empty) {
                return Err(QueueError::Invalid(format!(
                    "message #{}: queue `{queue}` is FIFO, so every message needs a `group` (its ordering key)",
                    n + 1
                )));
            }
            if let Some(id) = &m.id
                && (id.is_empty() || id.len() > 128)
            {
                return Err(QueueError::Invalid(format!(
                    "message #{}: `id` must be 1 to 128 characters",
                    n + 1
                )));
            }
            let id = match (&m.id, q.fifo) {
                (Some(id), _) => id.clone(),
                // As SQS's content-based deduplication: the body's hash.
                (None, true) => Sha256::digest(&m.body).iter().map(|b| format!("{b:02x}")).collect(),
                (None, false) => self.new_id(),
            };
            let mut attributes = BTreeMap::new();
            let content_type = m.content_type.unwrap_or_else(|| sniff(&m.body).to_string());
            attributes.insert("content-type".to_string(), content_type);
            for (key, value) in [("type", m.event_type), ("source", m.source), ("time", m.time)] {
                if let Some(v) = value {
                    attributes.insert(key.to_string(), v);
                }
            }
            if let Some(trace) = &m.trace {
                crate::trace::store(&mut attributes, trace);
            }
            let delay = q.delay + m.delay.unwrap_or_default();
            batch.push(NewMessage {
                id,
                group: m.group,
                body: m.body,
                attributes,
                delay,
            });
        }
        // Ids weft generated cannot repeat: deduplicate only given ones (and
        // FIFO bodies).
        let dedup_window = if q.fifo || given_ids {
            DEDUP_WINDOW
        } else {
            Duration::ZERO
        };
        Ok(Append {
            stream: stream_of(queue),
            messages: batch,
            dedup_window,
        })
    }

    /// Receives up to `max` messages for `visibility` (the queue's own when
    /// `None`). Messages received more than `max_receives` times move to
    /// the dead-letter queue instead of being returned.
    pub async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Option<Duration>,
    ) -> Result<Vec<Message>, QueueError> {
        let q = self.get(queue)?;
        let leased = self
            .storage
            .lease(
                &stream_of(queue),
                max,
                visibility.unwrap_or(q.visibility_timeout),
                q.fifo,
            )
            .await?;
        let gives_up = q.dead_letter.is_some() || q.retry.max_age.is_some();
        let (dead, live): (Vec<Message>, Vec<Message>) = match gives_up {
            true => leased.into_iter().partition(|m| m.receive_count > q.retry.max_attempts),
            false => (Vec::new(), leased),
        };
        if !dead.is_empty() {
            self.give_up(&q, &dead).await?;
        }
        Ok(live)
    }

    /// Moves messages to the queue's dead-letter queue; without one (event
    /// delivery), drops them with a log line.
    async fn give_up(&self, q: &Queue, messages: &[Message]) -> Result<(), QueueError> {
        let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
        if q.dead_letter.is_some() {
            return self.dead_letter(q, &seqs).await;
        }
        let receipts: Vec<Receipt> = messages.iter().map(Message::receipt).collect();
        self.storage.ack(&stream_of(&q.name), &receipts).await?;
        self.count_given_up(&q.name, messages.len());
        for m in messages {
            tracing::warn!(
                "event {} of `{}` dropped after {} tries: {}",
                m.id,
                q.name,
                m.receive_count,
                m.last_error.as_deref().unwrap_or("its tries ran out")
            );
        }
        Ok(())
    }

    async fn dead_letter(&self, q: &Queue, seqs: &[u64]) -> Result<(), QueueError> {
        let Some(dlq) = &q.dead_letter else { return Ok(()) };
        let attributes = BTreeMap::from([("dead-letter-source".to_string(), q.name.clone())]);
        self.storage
            .transfer(&stream_of(&q.name), seqs, &stream_of(dlq), attributes, false)
            .await?;
        self.count_given_up(&q.name, seqs.len());
        tracing::info!(
            "{} message(s) of queue `{}` moved to dead-letter queue `{dlq}`",
            seqs.len(),
            q.name
        );
        Ok(())
    }

    pub async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<usize, QueueError> {
        self.get(queue)?;
        Ok(self.storage.ack(&stream_of(queue), receipts).await?)
    }

    /// A delivery of `message` failed with `error`: retry after the queue's
    /// backoff (doubling with each receive), or, past `max_receives`, move
    /// it to the dead-letter queue now.
    pub async fn failed(&self, queue: &str, message: &Message, error: &str) -> Result<(), QueueError> {
        let q = self.get(queue)?;
        let receipt = message.receipt();
        let age = Duration::from_micros((weft_store::now_us() - message.appended_us).max(0) as u64);
        let out_of_tries = message.receive_count >= q.retry.max_attempts;
        if (q.dead_letter.is_some() && out_of_tries)
            || (q.retry.max_age.is_some() && q.retry.gives_up(message.receive_count, age))
        {
            if q.dead_letter.is_none() {
                let mut last = message.clone();
                last.last_error = Some(error.to_string());
                return self.give_up(&q, &[last]).await;
            }
            // Keep the error with the message before it moves.
            self.storage
                .release(&stream_of(queue), receipt, Duration::ZERO, Some(error.to_string()))
                .await?;
            return self.dead_letter(&q, &[message.seq]).await;
        }
        let delay = q.retry.delay(message.receive_count);
        self.storage
            .release(&stream_of(queue), receipt, delay, Some(error.to_string()))
            .await?;
        Ok(())
    }

    pub async fn peek(&self, queue: &str, max: usize) -> Result<Vec<Message>, QueueError> {
        self.get(queue)?;
        Ok(self.storage.peek(&stream_of(queue), max).await?)
    }

    pub async fn stats(&self, queue: &str) -> Result<StreamStats, QueueError> {
        self.get(queue)?;
        Ok(self.storage.stats(&stream_of(queue)).await?)
    }

    /// Moves every message of dead-letter queue `dlq` back to the queue it
    /// came from, with its receive count reset. Returns how many moved.
    pub async fn redrive(&self, dlq: &str) -> Result<usize, QueueError> {
        self.get(dlq)?;
        let mut moved = 0;
        loop {
            let batch = self.storage.peek(&stream_of(dlq), 500).await?;
            if batch.is_empty() {
                return Ok(moved);
            }
            let mut by_source: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            for m in &batch {
                let Some(source) = m.attributes.get("dead-letter-source") else {
                    return Err(QueueError::Invalid(format!(
                        "message {} of `{dlq}` did not come from another queue, so it has nowhere to go back to",
                        m.id
                    )));
                };
                self.get(source).map_err(|_| {
                    QueueError::Invalid(format!(
                        "message {} came from queue `{source}`, which is no longer deployed",
                        m.id
                    ))
                })?;
                by_source.entry(source.clone()).or_default().push(m.seq);
            }
            for (source, seqs) in by_source {
                moved += self
                    .storage
                    .transfer(&stream_of(dlq), &seqs, &stream_of(&source), BTreeMap::new(), true)
                    .await?;
                self.waker(&source).notify_waiters();
            }
        }
    }

    /// Deletes messages past their queue's retention.
    pub async fn expire(&self) -> Result<usize, QueueError> {
        let queues: Vec<Queue> = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut n = 0;
        for q in queues {
            n += self.storage.expire(&stream_of(&q.name), q.retention).await?;
        }
        Ok(n)
    }
}
