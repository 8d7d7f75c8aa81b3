//! Streams on JetStream.
//!
//! Each weft stream is one JetStream stream (work-queue retention, one
//! subject, direct get on) and one durable pull consumer, `weft`, that
//! every node leases through, so the server hands each message to one
//! node at a time and redelivers it when its ack wait passes.
//!
//! What JetStream has no field for travels in headers or notes:
//!
//! - `Weft-Id`, `Weft-Group`, `Weft-Attributes` (JSON): the message's own.
//! - `Weft-Received`: receives before this stream (a dead-letter move
//!   keeps the count); the receive count is that plus the server's
//!   delivery count.
//! - `Weft-Delay-Us`: not deliverable before this long after the append.
//!   A delayed message's first delivery is always handed back with a
//!   delay (JetStream 2.9 has no scheduled delivery), so its receive count
//!   is one below the server's count.
//! - A released message's error is a note: one message on the notes
//!   stream, subject `PREFIX.n.STREAM.SEQ`, removed when the message is
//!   acknowledged.
//!
//! Limits of this provider, kept in `ARCHITECTURE.md`:
//! - A stream's visibility is one value at a time: a lease asking for
//!   another one changes the consumer's ack wait for every later lease.
//! - FIFO streams lease one message at a time across all groups (order
//!   within each group holds, groups do not run side by side).
//! - A receipt is checked by the node that leased the message.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use weft_store::durable::{
    Append, Appended, Message, NewMessage, Receipt, Result, StorageError, StreamStats, Streams, Wake,
};

use crate::JetStream;

/// Most messages in flight on one (non-FIFO) stream's consumer.
pub const MAX_IN_FLIGHT: i64 = 65_536;
/// A lease counts as lapsed here this much before the server's ack wait
/// ends, so that a receipt never acknowledges a later delivery.
const LEASE_MARGIN: Duration = Duration::from_millis(20);
/// How long a lease waits when the consumer has its most messages in flight.
const FULL_WAIT: Duration = Duration::from_millis(20);
/// Deduplication window of a stream made without one.
const DEFAULT_WINDOW: Duration = Duration::from_secs(120);

const ID: &str = "Weft-Id";
const GROUP: &str = "Weft-Group";
const ATTRIBUTES: &str = "Weft-Attributes";
const RECEIVED: &str = "Weft-Received";
const DELAY: &str = "Weft-Delay-Us";
const MSG_ID: &str = "Nats-Msg-Id";

/// One weft stream's JetStream stream, and its consumer once leased from.
pub struct Handle {
    pub subject: String,
    pub stream: stream::Stream,
    window: Mutex<Duration>,
    consumer: Mutex<Option<(consumer::PullConsumer, Duration, bool)>>,
}

/// A lease this node holds: what its receipt must match.
pub struct Lease {
    receive_count: u32,
    reply: async_nats::Subject,
    lapses: Instant,
    noted: bool,
}

/// Microseconds from a server time's nanoseconds.
pub(crate) fn micros(nanos: i128) -> i64 {
    (nanos / 1000) as i64
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.as_str())
}

/// The headers that carry a message's fields.
fn headers(m: &NewMessage, dedup_id: Option<&str>, received: u32) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(ID, m.id.as_str());
    if let Some(g) = &m.group {
        h.insert(GROUP, g.as_str());
    }
    if !m.attributes.is_empty()
        && let Ok(json) = serde_json::to_string(&m.attributes)
    {
        h.insert(ATTRIBUTES, json.as_str());
    }
    if received > 0 {
        h.insert(RECEIVED, received.to_string().as_str());
    }
    if !m.delay.is_zero() {
        h.insert(DELAY, m.delay.as_micros().to_string().as_str());
    }
    if let Some(id) = dedup_id {
        h.insert(MSG_ID, id);
    }
    h
}

/// A stored message's fields back from its headers.
fn fields(headers: &HeaderMap) -> (NewMessage, u32) {
    let attributes = header(headers, ATTRIBUTES)
        .and_then(|a| serde_json::from_str::<BTreeMap<String, String>>(a).ok())
        .unwrap_or_default();
    let delay = header(headers, DELAY)
        .and_then(|d| d.parse::<u64>().ok())
        .map(Duration::from_micros)
        .unwrap_or_default();
    let received = header(headers, RECEIVED).and_then(|r| r.parse().ok()).unwrap_or(0);
    (
        NewMessage {
            id: header(headers, ID).unwrap_or_default().to_string(),
            group: header(headers, GROUP).map(str::to_string),
            body: Vec::new(),
            attributes,
            delay,
        },
        received,
    )
}

impl JetStream {
    /// What is wrong with a stream under weft's prefix, if anything.
    pub(crate) fn mismatch(&self, config: &stream::Config) -> Option<String> {
        let name = &config.name;
        let (subject, retention) = if *name == self.names.notes_stream() {
            (self.names.notes_subjects(), stream::RetentionPolicy::Limits)
        } else if *name == self.names.outbox_stream() {
            (self.names.outbox_subject(), stream::RetentionPolicy::Limits)
        } else if name.starts_with(&format!("{}_q_", self.names.prefix())) {
            let subject = config.subjects.first().cloned().unwrap_or_default();
            if !subject.starts_with(&format!("{}.q.", self.names.prefix())) {
                return Some(format!(
                    "its subjects are {:?}, not one `{}.q.…`",
                    config.subjects,
                    self.names.prefix()
                ));
            }
            (subject, stream::RetentionPolicy::WorkQueue)
        } else {
            return Some("weft makes no stream of this name".into());
        };
        if config.subjects != [subject.clone()] {
            return Some(format!("its subjects are {:?}, not [{subject:?}]", config.subjects));
        }
        if config.retention != retention {
            return Some(format!("its retention is {:?}, not {retention:?}", config.retention));
        }
        if !config.allow_direct {
            return Some("direct get is off".into());
        }
        None
    }

    /// The stream holding `name`, made on first use; `window` widens its
    /// deduplication window if it is wider.
    pub(crate) async fn handle(&self, name: &str, window: Duration) -> Result<Arc<Handle>> {
        let known = self
            .streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        let handle = match known {
            Some(h) => h,
            None => self.open_handle(name, window).await?,
        };
        let wider = {
            let current = *handle.window.lock().unwrap_or_else(|p| p.into_inner());
            window > current
        };
        if wider {
            let mut config = handle.stream.cached_info().config.clone();
            config.duplicate_window = window;
            self.js
                .update_stream(&config)
                .await
                .map_err(|e| self.error("cannot widen the deduplication window", e))?;
            *handle.window.lock().unwrap_or_else(|p| p.into_inner()) = window;
        }
        Ok(handle)
    }

    /// Makes (or finds) the handle of `name`, one task at a time: a burst
    /// of first appends asks the server once, not once each.
    async fn open_handle(&self, name: &str, window: Duration) -> Result<Arc<Handle>> {
        let _one = self.opening.lock().await;
        if let Some(h) = self.streams.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Ok(h.clone());
        }
        let config = stream::Config {
            name: self.names.stream(name),
            description: Some(format!("weft stream {name}")),
            subjects: vec![self.names.subject(name)],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: window.max(DEFAULT_WINDOW),
            allow_direct: true,
            ..Default::default()
        };
        let stream = self.ensure_stream(config).await?;
        let window = stream.cached_info().config.duplicate_window;
        let h = Arc::new(Handle {
            subject: self.names.subject(name),
            stream,
            window: Mutex::new(window),
            consumer: Mutex::new(None),
        });
        Ok(self
            .streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert(h)
            .clone())
    }

    /// Gets a stream, or makes it; one that exists must be weft's.
    pub(crate) async fn ensure_stream(&self, config: stream::Config) -> Result<stream::Stream> {
        self.check_connected()?;
        let name = config.name.clone();
        let stream = self
            .js
            .get_or_create_stream(config)
            .await
            .map_err(|e| self.error(&format!("cannot open stream {name}"), e))?;
        if let Some(reason) = self.mismatch(&stream.cached_info().config) {
            return Err(StorageError::Other(format!(
                "stream `{name}` was not made by weft: {reason}; remove it or use another --nats-prefix"
            )));
        }
        Ok(stream)
    }

    /// The stream's consumer, made or changed to lease for `visibility`
    /// (and one message at a time with `fifo`).
    async fn consumer(&self, h: &Handle, visibility: Duration, fifo: bool) -> Result<consumer::PullConsumer> {
        if let Some((c, wait, f)) = &*h.consumer.lock().unwrap_or_else(|p| p.into_inner())
            && *wait == visibility
            && *f == fifo
        {
            return Ok(c.clone());
        }
        let config = consumer::pull::Config {
            durable_name: Some("weft".into()),
            description: Some("weft's leases".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: visibility.max(Duration::from_millis(1)),
            max_deliver: -1,
            max_ack_pending: if fifo { 1 } else { MAX_IN_FLIGHT },
            num_replicas: self.replicas,
            ..Default::default()
        };
        let c: consumer::PullConsumer = match h.stream.get_consumer("weft").await {
            Ok(existing) => {
                let existing: consumer::PullConsumer = existing;
                let current = &existing.cached_info().config;
                if current.ack_wait == config.ack_wait && current.max_ack_pending == config.max_ack_pending {
                    existing
                } else {
                    // JetStream 2.9 changes a durable consumer's editable
                    // settings when it is created again under its name.
                    h.stream
                        .create_consumer(config)
                        .await
                        .map_err(|e| self.error("cannot change the stream's consumer", e))?
                }
            }
            Err(_) => h
                .stream
                .get_or_create_consumer("weft", config)
                .await
                .map_err(|e| self.error("cannot make the stream's consumer", e))?,
        };
        *h.consumer.lock().unwrap_or_else(|p| p.into_inner()) = Some((c.clone(), visibility, fifo));
        Ok(c)
    }

    /// Publishes messages to `h` and waits for the server's acknowledgements,
    /// in order. `dedup` gives each message's deduplication id.
    pub(crate) async fn publish(
        &self,
        h: &Handle,
        messages: Vec<NewMessage>,
        dedup: impl Fn(usize, &NewMessage) -> Option<String>,
        received: impl Fn(usize) -> u32,
    ) -> Result<Vec<Appended>> {
        self.check_connected()?;
        let send = |i: usize, id: Option<&str>| {
            let m = &messages[i];
            self.js
                .publish_with_headers(h.subject.clone(), headers(m, id, received(i)), m.body.clone().into())
        };
        let mut out = Vec::with_capacity(messages.len());
        let mut pending = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let id = dedup(i, m);
            let ack = send(i, id.as_deref())
                .await
                .map_err(|e| self.error("cannot append", e))?;
            pending.push((i, id, ack));
        }
        for (i, id, ack) in pending {
            let mut answer = ack.await;
            // A stream just made on a cluster takes a moment before its
            // leader takes messages; the server stored nothing meanwhile.
            let mut tries = 0;
            while let Err(e) = &answer
                && e.to_string().contains("no stream found")
                && tries < 40
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let ack = send(i, id.as_deref())
                    .await
                    .map_err(|e| self.error("cannot append", e))?;
                answer = ack.await;
            }
            let ack = answer.map_err(|e| self.error("the append was not confirmed", e))?;
            out.push(Appended {
                seq: ack.sequence,
                duplicate: ack.duplicate,
            });
        }
        Ok(out)
    }

    async fn notes(&self) -> Result<&stream::Stream> {
        self.notes
            .get_or_try_init(|| async {
                self.ensure_stream(stream::Config {
                    name: self.names.notes_stream(),
                    description: Some("weft: the last error of released messages".into()),
                    subjects: vec![self.names.notes_subjects()],
                    storage: stream::StorageType::File,
                    num_replicas: self.replicas,
                    max_messages_per_subject: 1,
                    max_age: Duration::from_secs(14 * 24 * 3600),
                    allow_direct: true,
                    ..Default::default()
                })
                .await
            })
            .await
    }

    async fn note(&self, stream: &str, seq: u64) -> Option<Note> {
        let notes = self.notes().await.ok()?;
        let m = notes
            .direct_get_last_for_subject(self.names.note(stream, seq))
            .await
            .ok()?;
        serde_json::from_slice(&m.payload).ok()
    }

    async fn forget_note(&self, stream: &str, seq: u64) {
        if let Ok(notes) = self.notes().await
            && let Err(e) = notes.purge().filter(self.names.note(stream, seq)).await
        {
            tracing::debug!("cannot remove the note on {stream}/{seq}: {e}");
        }
    }

    /// The current lease on `receipt`, taken out of the table, if it is current.
    fn take_lease(&self, stream: &str, receipt: Receipt) -> Option<Lease> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let key = (stream.to_string(), receipt.seq);
        let current = leases
            .get(&key)
            .is_some_and(|l| l.receive_count == receipt.receive_count && Instant::now() < l.lapses);
        if current { leases.remove(&key) } else { None }
    }

    /// Sends an acknowledgement (`+ACK`, `-NAK …`) and waits for the server's word.
    async fn answer(&self, reply: async_nats::Subject, kind: jetstream::AckKind) -> Result<()> {
        self.client
            .request(reply, kind.into())
            .await
            .map(|_| ())
            .map_err(|e| self.error("the acknowledgement was not confirmed", e))
    }

    /// A stored message from its fields (as [`fields`] read them from its headers).
    fn message(seq: u64, fields: NewMessage, payload: &[u8], time: i64, count: u32) -> Message {
        Message {
            seq,
            id: fields.id,
            group: fields.group,
            body: payload.to_vec(),
            attributes: fields.attributes,
            appended_us: time,
            receive_count: count,
            last_error: None,
        }
    }

    /// Messages with sequence numbers from `from`, oldest first, unleased.
    async fn scan(&self, h: &Handle, from: u64, max: usize) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        let mut seq = from.max(1);
        while out.len() < max {
            match h.stream.direct_get_next_for_subject(&h.subject, Some(seq)).await {
                Ok(m) => {
                    let (f, received) = fields(&m.headers);
                    seq = m.sequence + 1;
                    let time = micros(m.time.unix_timestamp_nanos());
                    out.push(JetStream::message(m.sequence, f, &m.payload, time, received));
                }
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => break,
                Err(e) => return Err(self.error("cannot read the stream", e)),
            }
        }
        Ok(out)
    }
}

/// What a release leaves on a message for its next delivery.
#[derive(serde::Serialize, serde::Deserialize)]
struct Note {
    error: Option<String>,
    /// Not deliverable before this time (microseconds since the epoch).
    until_us: i64,
}

#[async_trait::async_trait]
impl Streams for JetStream {
    async fn append(&self, stream: &str, messages: Vec<NewMessage>, dedup_window: Duration) -> Result<Vec<Appended>> {
        let h = self.handle(stream, dedup_window).await?;
        let dedup = !dedup_window.is_zero();
        let out = self
            .publish(
                &h,
                messages,
                |_, m| (dedup && !m.id.is_empty()).then(|| m.id.clone()),
                |_| 0,
            )
            .await?;
        self.wake(stream).await;
        Ok(out)
    }

    async fn append_all(&self, appends: Vec<Append>) -> Result<Vec<Vec<Appended>>> {
        if appends.len() == 1 {
            let Some(a) = appends.into_iter().next() else {
                return Ok(Vec::new());
            };
            return Ok(vec![self.append(&a.stream, a.messages, a.dedup_window).await?]);
        }
        self.append_through_outbox(appends).await
    }

    async fn lease(&self, stream: &str, max: usize, visibility: Duration, fifo: bool) -> Result<Vec<Message>> {
        self.check_connected()?;
        let h = self.handle(stream, Duration::ZERO).await?;
        let consumer = self.consumer(&h, visibility, fifo).await?;
        let asked = Instant::now();
        // The server ends a no-wait pull at once when the stream runs dry,
        // but says nothing when the consumer holds its most messages in
        // flight (a FIFO stream's one): there, the pull's expiry ends the wait,
        // and elsewhere the request timeout does.
        let mut fetch = consumer.fetch().max_messages(max.max(1));
        if fifo {
            fetch = fetch.expires(FULL_WAIT);
        }
        let mut batch = fetch.messages().await.map_err(|e| self.error("cannot lease", e))?;
        let mut out = Vec::new();
        while let Ok(Some(next)) = tokio::time::timeout(crate::REQUEST_TIMEOUT, batch.next()).await {
            let m = next.map_err(|e| self.error("cannot lease", e))?;
            let Ok(info) = m.info() else { continue };
            let (seq, delivered, published) = (
                info.stream_sequence,
                info.delivered.max(1) as u32,
                micros(info.published.unix_timestamp_nanos()),
            );
            let Some(reply) = m.reply.clone() else { continue };
            let (f, received) = m.headers.as_ref().map(fields).unwrap_or_default();
            let mut count = received + delivered;
            if !f.delay.is_zero() {
                let due = published + f.delay.as_micros() as i64;
                let now = weft_store::now_us();
                if delivered == 1 || due > now {
                    let wait = Duration::from_micros(due.saturating_sub(now).max(0) as u64);
                    self.answer(reply, jetstream::AckKind::Nak(Some(wait))).await?;
                    continue;
                }
                count -= 1;
            }
            let mut message = JetStream::message(seq, f, &m.payload, published, count);
            let mut noted = false;
            if delivered > 1
                && let Some(note) = self.note(stream, seq).await
            {
                message.last_error = note.error;
                noted = true;
            }
            self.leases.lock().unwrap_or_else(|p| p.into_inner()).insert(
                (stream.to_string(), seq),
                Lease {
                    receive_count: count,
                    reply,
                    lapses: asked + visibility.saturating_sub(LEASE_MARGIN),
                    noted,
                },
            );
            out.push(message);
        }
        self.sweep_leases();
        Ok(out)
    }

    async fn ack(&self, stream: &str, receipts: &[Receipt]) -> Result<usize> {
        let leases: Vec<(u64, Lease)> = receipts
            .iter()
            .filter_map(|r| self.take_lease(stream, *r).map(|l| (r.seq, l)))
            .collect();
        let answers = leases
            .iter()
            .map(|(_, l)| self.answer(l.reply.clone(), jetstream::AckKind::Ack));
        let results = futures_util::future::join_all(answers).await;
        let mut acked = 0;
        for ((seq, lease), result) in leases.iter().zip(results) {
            result?;
            acked += 1;
            if lease.noted {
                self.forget_note(stream, *seq).await;
            }
        }
        Ok(acked)
    }

    async fn release(&self, stream: &str, receipt: Receipt, delay: Duration, error: Option<String>) -> Result<bool> {
        let Some(lease) = self.take_lease(stream, receipt) else {
            return Ok(false);
        };
        // The notes stream exists before the first note goes to it.
        self.notes().await?;
        let note = Note {
            error,
            until_us: weft_store::now_us() + delay.as_micros() as i64,
        };
        let body = serde_json::to_vec(&note).map_err(|e| StorageError::Other(e.to_string()))?;
        self.js
            .publish(self.names.note(stream, receipt.seq), body.into())
            .await
            .map_err(|e| self.error("cannot keep the error", e))?
            .await
            .map_err(|e| self.error("the error was not kept", e))?;
        let kind = jetstream::AckKind::Nak((!delay.is_zero()).then_some(delay));
        self.answer(lease.reply, kind).await?;
        if delay.is_zero() {
            self.wake(stream).await;
        }
        Ok(true)
    }

    async fn transfer(
        &self,
        stream: &str,
        seqs: &[u64],
        to: &str,
        attributes: BTreeMap<String, String>,
        reset: bool,
    ) -> Result<usize> {
        let from = self.handle(stream, Duration::ZERO).await?;
        let dest = self.handle(to, Duration::ZERO).await?;
        let mut moved = 0;
        for &seq in seqs {
            let m = match from.stream.direct_get(seq).await {
                Ok(m) => m,
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => continue,
                Err(e) => return Err(self.error("cannot read the message to move", e)),
            };
            let (mut fields, received) = fields(&m.headers);
            fields.attributes.extend(attributes.clone());
            fields.delay = Duration::ZERO;
            fields.body = m.payload.to_vec();
            let lease = self
                .leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(stream.to_string(), seq));
            let count = if reset {
                0
            } else {
                lease.as_ref().map(|l| l.receive_count).unwrap_or(received)
            };
            let id = format!("weft-moved-{}-{seq}", crate::names::token(stream));
            self.publish(&dest, vec![fields], |_, _| Some(id.clone()), |_| count)
                .await?;
            match lease {
                Some(l) => self.answer(l.reply, jetstream::AckKind::Ack).await?,
                None => {
                    from.stream
                        .delete_message(seq)
                        .await
                        .map_err(|e| self.error("cannot remove the moved message", e))?;
                }
            }
            self.forget_note(stream, seq).await;
            moved += 1;
        }
        if moved > 0 {
            self.wake(to).await;
        }
        Ok(moved)
    }

    async fn peek(&self, stream: &str, max: usize) -> Result<Vec<Message>> {
        let h = self.handle(stream, Duration::ZERO).await?;
        self.scan(&h, 1, max).await
    }

    async fn read(&self, stream: &str, after: u64, max: usize) -> Result<Vec<Message>> {
        let h = self.handle(stream, Duration::ZERO).await?;
        self.scan(&h, after + 1, max).await
    }

    async fn stats(&self, stream: &str) -> Result<StreamStats> {
        let h = self.handle(stream, Duration::ZERO).await?;
        let info = h
            .stream
            .get_info()
            .await
            .map_err(|e| self.error("cannot read the stream", e))?;
        let oldest_us = (info.state.messages > 0).then(|| micros(info.state.first_timestamp.unix_timestamp_nanos()));
        let consumer = match h.stream.consumer_info("weft").await {
            Ok(c) => Some(c),
            Err(e) if e.to_string().contains("not found") => None,
            Err(e) => return Err(self.error("cannot read the stream's consumer", e)),
        };
        let Some(consumer) = consumer else {
            return Ok(StreamStats {
                visible: info.state.messages,
                oldest_us,
                ..Default::default()
            });
        };
        let delayed = self.delayed(stream).await?;
        let held = consumer.num_ack_pending as u64;
        Ok(StreamStats {
            visible: consumer.num_pending,
            in_flight: held.saturating_sub(delayed),
            delayed: delayed.min(held),
            oldest_us,
        })
    }

    async fn expire(&self, stream: &str, age: Duration) -> Result<usize> {
        let h = self.handle(stream, Duration::ZERO).await?;
        let cutoff = weft_store::now_us() - age.as_micros() as i64;
        let info = h
            .stream
            .get_info()
            .await
            .map_err(|e| self.error("cannot read the stream", e))?;
        if info.state.messages == 0 {
            return Ok(0);
        }
        // The first message at or after the cutoff, by halving: appends
        // carry the server's clock, so times rise with sequence numbers.
        let (mut lo, mut hi) = (info.state.first_sequence, info.state.last_sequence + 1);
        let mut keep = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match h.stream.direct_get_next_for_subject(&h.subject, Some(mid)).await {
                Ok(m) if micros(m.time.unix_timestamp_nanos()) < cutoff => lo = m.sequence + 1,
                Ok(m) => {
                    keep = Some(m.sequence);
                    hi = mid;
                }
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => hi = mid,
                Err(e) => return Err(self.error("cannot read the stream", e)),
            }
        }
        let purge = match keep {
            Some(seq) if seq <= info.state.first_sequence => return Ok(0),
            Some(seq) => h.stream.purge().sequence(seq).await,
            None => h.stream.purge().await,
        };
        let purged = purge.map_err(|e| self.error("cannot expire messages", e))?;
        Ok(purged.purged as usize)
    }

    fn on_append(&self, wake: Wake) {
        self.wakes.write().unwrap_or_else(|p| p.into_inner()).push(wake);
    }

    fn is_shared(&self) -> bool {
        true
    }
}

impl JetStream {
    /// Messages of `stream` released with a delay that has not passed.
    async fn delayed(&self, stream: &str) -> Result<u64> {
        let notes = self.notes().await?;
        let info = notes
            .info_with_subjects(self.names.notes_of(stream))
            .await
            .map_err(|e| self.error("cannot read the notes", e))?;
        let subjects: Vec<String> = {
            let mut info = info;
            let mut all = Vec::new();
            while let Some(s) = info.next().await {
                let (subject, _) = s.map_err(|e| self.error("cannot read the notes", e))?;
                all.push(subject);
            }
            all
        };
        let now = weft_store::now_us();
        let mut delayed = 0;
        for subject in subjects {
            if let Ok(m) = notes.direct_get_last_for_subject(subject).await
                && let Ok(note) = serde_json::from_slice::<Note>(&m.payload)
                && note.until_us > now
            {
                delayed += 1;
            }
        }
        Ok(delayed)
    }

    /// Drops leases that lapsed without an answer (the server has them back).
    fn sweep_leases(&self) {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if leases.len() > 4096 {
            let now = Instant::now();
            leases.retain(|_, l| l.lapses > now);
        }
    }
}
