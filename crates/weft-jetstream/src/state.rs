//! Key-value and object buckets: JetStream's own, one per weft bucket,
//! named by [`crate::names`]. Keys and object names are encoded the same
//! way, so any string weft uses is a valid key.
//!
//! A key-value bucket is a stream in the layout of NATS's buckets (one
//! subject per key, the last message of each kept). weft reads a key with
//! a direct get of its subject's last message and writes it with the
//! server's compare-and-set on that message's sequence, which is the
//! key's revision. Its own headers say what NATS's buckets do not:
//!
//! - `Weft-Expires`: when the value's time to live ends (microseconds);
//!   an expired value reads as absent and is removed, with its change, by
//!   `expire_keys` or the next write of the key.
//! - `Weft-Change`: the message is a change to copy to the write's change
//!   streams. It holds the old value after the new one (`Weft-Old-Length`
//!   says how long), so the message is the whole change, durable in the
//!   one publish. The writer then copies the change to each stream under
//!   the deduplication id `weft-kv-BUCKET-REVISION` before it answers.
//!
//! A writer cut off between the publish and the copies (its node died,
//! its caller went away) leaves a change uncopied. Two things finish it,
//! each making only duplicates of a copy already made: the next write of
//! the key copies its predecessor's change first while that change is
//! past the bucket's watermark (so each key's changes arrive in order),
//! and [`KeyValue::catch_up`], which the node calls every second, copies
//! every change past the watermark and moves it on (it is kept in the
//! bucket `weft:changes`). Like the outbox, this makes each copy once
//! while it happens within the streams' deduplication window (two
//! minutes).
//!
//! Reads go to each stream's leader, so a read sees every write the
//! server has acknowledged, on any node.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{kv, object_store, stream};
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use weft_store::durable::{Change, Entry, Expect, KeyValue, NewMessage, Objects, Result, StorageError, Write, Written};

use crate::JetStream;
use crate::names::{decode, encode};

/// Room left in a message for weft's headers.
const HEADROOM: usize = 8 * 1024;
const OPERATION: &str = "KV-Operation";
const EXPIRES: &str = "Weft-Expires";
const CHANGE: &str = "Weft-Change";
const OLD_LENGTH: &str = "Weft-Old-Length";
const EXPIRED: &str = "Weft-Expired";
const EXPECTED_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
/// Where each bucket's sweep of uncopied changes got to.
const WATERMARKS: &str = "weft:changes";
/// A change younger than this may still be being copied by its writer.
const SWEEP_AFTER: Duration = Duration::from_secs(2);
/// How long one catch-up of a bucket runs at most.
const SWEEP_FOR: Duration = Duration::from_secs(2);
/// Writes of one key that lose its compare-and-set to others before the
/// write gives up.
const MAX_RACES: u32 = 64;

fn key(k: &str) -> Result<String> {
    if k.is_empty() {
        return Err(StorageError::Other("a key cannot be empty".into()));
    }
    Ok(encode(k))
}

/// A key-value bucket's stream, and its key listing.
pub(crate) struct Bucket {
    /// weft's name for it.
    name: String,
    /// `$KV.ENCODED.`, the subjects of its keys.
    prefix: String,
    stream: stream::Stream,
    store: kv::Store,
    /// Held while this node sweeps the bucket.
    sweeping: tokio::sync::Mutex<()>,
    /// Every change up to this revision is copied (as last seen here).
    watermark: std::sync::atomic::AtomicU64,
}

/// A key's last message.
struct Stored {
    seq: u64,
    value: Vec<u8>,
    /// The old value a change message carries after the new one.
    old: Option<Vec<u8>>,
    deleted: bool,
    expires_us: Option<i64>,
    /// The message is a change to copy.
    is_change: bool,
    /// The streams its change goes to, as its writer named them (none in
    /// messages written before weft kept them: the caller's then).
    streams: Option<Vec<String>>,
    expired: bool,
    at_us: i64,
}

impl Stored {
    fn parse(m: &async_nats::jetstream::message::StreamMessage) -> Stored {
        let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_string());
        let deleted = matches!(header(OPERATION).as_deref(), Some("DEL" | "PURGE"));
        let old_length = header(OLD_LENGTH).and_then(|l| l.parse::<usize>().ok());
        let payload = &m.payload[..];
        let (value, old) = match old_length {
            Some(n) if n <= payload.len() => {
                let (new, old) = payload.split_at(payload.len() - n);
                (new.to_vec(), Some(old.to_vec()))
            }
            _ => (payload.to_vec(), None),
        };
        Stored {
            seq: m.sequence,
            value,
            old,
            deleted,
            expires_us: header(EXPIRES).and_then(|e| e.parse().ok()),
            is_change: header(CHANGE).is_some(),
            streams: header(CHANGE).and_then(|c| serde_json::from_str(&c).ok()),
            expired: header(EXPIRED).is_some(),
            at_us: crate::streams::micros(m.time.unix_timestamp_nanos()),
        }
    }

    fn live(&self, now: i64) -> bool {
        !self.deleted && self.expires_us.is_none_or(|at| at > now)
    }

    /// The change this message is, if it was written with change streams.
    fn change(&self, bucket: &str, key: &str) -> Option<Change> {
        if !self.is_change {
            return None;
        }
        Some(Change {
            bucket: bucket.to_string(),
            key: key.to_string(),
            old: self.old.clone(),
            new: (!self.deleted).then(|| self.value.clone()),
            revision: self.seq,
            at_us: self.at_us,
            expired: self.expired,
        })
    }
}

/// One publish to a key's subject.
struct Publish<'a> {
    /// None removes the key.
    value: Option<&'a [u8]>,
    old: Option<&'a [u8]>,
    /// The sequence the key's last message must be at (0: none).
    expected: u64,
    expires_us: Option<i64>,
    changes: &'a [String],
    expired: bool,
}

/// What a publish to a key did.
enum Published {
    At(u64),
    /// The key moved on since it was read.
    Raced,
}

impl JetStream {
    async fn bucket(&self, bucket: &str) -> Result<Arc<Bucket>> {
        if let Some(b) = self.kv.read().unwrap_or_else(|p| p.into_inner()).get(bucket) {
            return Ok(b.clone());
        }
        self.check_connected()?;
        // One task at a time asks the server, so a burst of first writes
        // makes the bucket once.
        let _one = self.opening.lock().await;
        if let Some(b) = self.kv.read().unwrap_or_else(|p| p.into_inner()).get(bucket) {
            return Ok(b.clone());
        }
        let name = self.names.kv_bucket(bucket);
        // The bucket's stream is made here in the layout of NATS's
        // key-value buckets (the client's own maker needs a 2.10 server).
        let stream = self
            .js
            .get_or_create_stream(stream::Config {
                name: format!("KV_{name}"),
                description: Some(format!("weft bucket {bucket}")),
                subjects: vec![format!("$KV.{name}.>")],
                max_messages_per_subject: 1,
                max_message_size: -1,
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| self.error(&format!("cannot make bucket {name}"), e))?;
        let store = self
            .js
            .get_key_value(&name)
            .await
            .map_err(|e| self.error(&format!("cannot open bucket {name}"), e))?;
        let handle = Arc::new(Bucket {
            name: bucket.to_string(),
            prefix: format!("$KV.{name}."),
            stream,
            store,
            sweeping: tokio::sync::Mutex::new(()),
            watermark: std::sync::atomic::AtomicU64::new(0),
        });
        Ok(self
            .kv
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(bucket.to_string())
            .or_insert(handle)
            .clone())
    }

    /// The last message of `subject`, if it has one, from the leader.
    async fn last(&self, b: &Bucket, subject: &str) -> Result<Option<Stored>> {
        match b.stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(Some(Stored::parse(&m))),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(self.error("cannot read the key", e)),
        }
    }

    async fn publish_key(&self, subject: &str, p: Publish<'_>) -> Result<Published> {
        let mut headers = HeaderMap::new();
        headers.insert(EXPECTED_SUBJECT_SEQ, p.expected.to_string().as_str());
        if p.value.is_none() {
            headers.insert(OPERATION, "DEL");
        }
        if let Some(at) = p.expires_us {
            headers.insert(EXPIRES, at.to_string().as_str());
        }
        let mut payload = p.value.unwrap_or_default().to_vec();
        if !p.changes.is_empty() {
            // The change's own streams, so whoever copies it later (the
            // key's next writer, a catch-up) sends it where it was meant.
            let streams = serde_json::to_string(p.changes).unwrap_or_default();
            headers.insert(CHANGE, streams.as_str());
            if let Some(old) = p.old {
                headers.insert(OLD_LENGTH, old.len().to_string().as_str());
                payload.extend_from_slice(old);
            }
            if p.expired {
                headers.insert(EXPIRED, "1");
            }
        }
        use async_nats::jetstream::context::PublishErrorKind;
        self.check_connected()?;
        let size = payload.len();
        let sent = match self
            .js
            .publish_with_headers(subject.to_string(), headers, payload.into())
            .await
        {
            Ok(sent) => sent,
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                return Err(StorageError::Other(format!(
                    "the write is {size} bytes (with the old value a change carries), more than the NATS server \
                     takes in one message; raise max_payload in the server's configuration"
                )));
            }
            Err(e) => return Err(self.error("cannot write the key", e)),
        };
        match sent.await {
            Ok(ack) => Ok(Published::At(ack.sequence)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(Published::Raced),
            Err(e) => Err(self.error("the write was not confirmed", e)),
        }
    }

    /// Copies a change to its streams, each under the change's own
    /// deduplication id, so a second copy is a duplicate.
    async fn copy_change(&self, b: &Bucket, change: &Change, streams: &[String]) -> Result<()> {
        let id = format!("weft-kv-{}-{}", encode(&b.name), change.revision);
        for stream in streams {
            let h = self.handle(stream, Duration::ZERO).await?;
            let message: NewMessage = change.message();
            self.publish(&h, vec![message], |_, _| Some(id.clone()), |_| 0).await?;
            self.wake(stream).await;
        }
        Ok(())
    }

    /// A set (`value`) or a removal (none) of one key, with its change.
    async fn write_key(&self, bucket: &str, k: &str, value: Option<Vec<u8>>, write: &Write) -> Result<Option<Written>> {
        let b = self.bucket(bucket).await?;
        let subject = format!("{}{}", b.prefix, key(k)?);
        for race in 0..MAX_RACES {
            if race > 0 {
                tokio::time::sleep(Duration::from_millis(u64::from(race))).await;
            }
            let now = weft_store::now_us();
            let last = self.last(&b, &subject).await?;
            let expected = last.as_ref().map_or(0, |s| s.seq);
            if let Some(s) = &last {
                // The previous change may be uncopied if its writer was cut
                // off: copying it again first keeps this key's changes in order.
                if let Some(change) = s.change(&b.name, k)
                    && s.seq > b.watermark.load(std::sync::atomic::Ordering::Relaxed)
                {
                    self.copy_change(&b, &change, s.streams.as_deref().unwrap_or(&write.changes))
                        .await?;
                }
                if !s.deleted && !s.live(now) {
                    // Expired: removed first, with its own change.
                    self.remove_expired(&b, &subject, k, s, &write.changes).await?;
                    continue;
                }
            }
            let old = last.filter(|s| s.live(now)).map(|s| Entry {
                value: s.value,
                revision: s.seq,
                expires_us: s.expires_us,
            });
            if !write.expect.allows(old.as_ref().map(|e| e.revision)) {
                return Err(StorageError::Conflict {
                    current: old.map(|e| e.revision),
                });
            }
            if value.is_none() && old.is_none() {
                return Ok(None);
            }
            let expires_us = match (&value, write.ttl) {
                (Some(_), Some(ttl)) => Some(now.saturating_add(ttl.as_micros().min(i64::MAX as u128) as i64)),
                _ => None,
            };
            let publish = Publish {
                value: value.as_deref(),
                old: old.as_ref().map(|e| e.value.as_slice()),
                expected,
                expires_us,
                changes: &write.changes,
                expired: false,
            };
            match self.publish_key(&subject, publish).await? {
                Published::At(revision) => {
                    if !write.changes.is_empty() {
                        let change = Change {
                            bucket: b.name.clone(),
                            key: k.to_string(),
                            old: old.as_ref().map(|e| e.value.clone()),
                            new: value.clone(),
                            revision,
                            at_us: now,
                            expired: false,
                        };
                        // The write is kept: a copy that fails now is
                        // made by the next write of the key or a catch-up.
                        if let Err(e) = self.copy_change(&b, &change, &write.changes).await {
                            tracing::warn!("the change of {bucket} revision {revision} is left to the catch-up: {e}");
                        }
                    }
                    return Ok(Some(Written { revision, old }));
                }
                Published::Raced if write.expect == Expect::Anything => continue,
                Published::Raced => {
                    let now = weft_store::now_us();
                    let current = self.last(&b, &subject).await?.filter(|s| s.live(now)).map(|s| s.seq);
                    return Err(StorageError::Conflict { current });
                }
            }
        }
        Err(StorageError::Unavailable(format!(
            "key `{k}` of {bucket} changed under {MAX_RACES} writes in a row; try again"
        )))
    }

    /// Removes key `k`, whose last message `s` has expired, with an expired
    /// change to `changes`; false if the key moved on meanwhile.
    async fn remove_expired(&self, b: &Bucket, subject: &str, k: &str, s: &Stored, changes: &[String]) -> Result<bool> {
        let removal = Publish {
            value: None,
            old: Some(&s.value),
            expected: s.seq,
            expires_us: None,
            changes,
            expired: true,
        };
        let Published::At(revision) = self.publish_key(subject, removal).await? else {
            return Ok(false);
        };
        if !changes.is_empty() {
            let change = Change {
                bucket: b.name.clone(),
                key: k.to_string(),
                old: Some(s.value.clone()),
                new: None,
                revision,
                at_us: weft_store::now_us(),
                expired: true,
            };
            // The removal is kept: its copy, if it fails now, is left to
            // the next write of the key or a catch-up.
            if let Err(e) = self.copy_change(b, &change, changes).await {
                tracing::warn!(
                    "the expiry of {} revision {revision} is left to the catch-up: {e}",
                    b.name
                );
            }
        }
        Ok(true)
    }

    /// Copies the changes past the bucket's watermark (older than
    /// [`SWEEP_AFTER`], which their writers may still be copying) to
    /// `changes`, and moves the watermark past them; returns how many.
    async fn sweep_changes(&self, b: &Bucket, changes: &[String]) -> Result<usize> {
        use std::sync::atomic::Ordering;
        let Ok(_one) = b.sweeping.try_lock() else {
            return Ok(0);
        };
        let mark = self.get(WATERMARKS, &b.name).await?;
        let from = mark
            .as_ref()
            .and_then(|e| std::str::from_utf8(&e.value).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        b.watermark.fetch_max(from, Ordering::Relaxed);
        let cutoff = weft_store::now_us() - SWEEP_AFTER.as_micros() as i64;
        let filter = format!("{}>", b.prefix);
        let started = std::time::Instant::now();
        let (mut copied, mut last) = (0, from);
        while started.elapsed() < SWEEP_FOR {
            let m = match b
                .stream
                .get_first_raw_message_by_subject(filter.as_str(), last + 1)
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(self.error("cannot read the bucket", e)),
            };
            let stored = Stored::parse(&m);
            if stored.at_us > cutoff {
                break;
            }
            let streams = stored.streams.as_deref().unwrap_or(changes);
            if let Some(k) = m.subject.strip_prefix(b.prefix.as_str()).and_then(decode)
                && let Some(change) = stored.change(&b.name, &k)
                && !streams.is_empty()
            {
                self.copy_change(b, &change, streams).await?;
                copied += 1;
            }
            last = m.sequence;
        }
        if last > from {
            let value = last.to_string().into_bytes();
            match mark {
                Some(e) => self.update(WATERMARKS, &b.name, value, e.revision).await.map(|_| ()),
                None => self.create(WATERMARKS, &b.name, value).await.map(|_| ()),
            }
            .or_else(|e| match e {
                // Another node swept meanwhile; its watermark stands.
                StorageError::Conflict { .. } => Ok(()),
                e => Err(e),
            })?;
            b.watermark.fetch_max(last, Ordering::Relaxed);
        }
        Ok(copied)
    }
}

#[async_trait::async_trait]
impl KeyValue for JetStream {
    async fn get(&self, bucket: &str, k: &str) -> Result<Option<Entry>> {
        let b = self.bucket(bucket).await?;
        let subject = format!("{}{}", b.prefix, key(k)?);
        let now = weft_store::now_us();
        Ok(self.last(&b, &subject).await?.filter(|s| s.live(now)).map(|s| Entry {
            value: s.value,
            revision: s.seq,
            expires_us: s.expires_us,
        }))
    }

    async fn set(&self, bucket: &str, k: &str, value: Vec<u8>, write: &Write) -> Result<Written> {
        match self.write_key(bucket, k, Some(value), write).await? {
            Some(w) => Ok(w),
            None => Err(StorageError::Other("the set wrote nothing".into())),
        }
    }

    async fn remove(&self, bucket: &str, k: &str, write: &Write) -> Result<Option<Written>> {
        self.write_key(bucket, k, None, write).await
    }

    async fn list(&self, bucket: &str, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let b = self.bucket(bucket).await?;
        let mut keys = b.store.keys().await.map_err(|e| self.error("cannot list keys", e))?;
        let mut names = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(|e| self.error("cannot list keys", e))?;
            if let Some(name) = decode(&k)
                && name.starts_with(prefix)
                && after.is_none_or(|a| name.as_str() > a)
            {
                names.push(name);
            }
        }
        names.sort();
        // Expiry is weft's own: each key is checked as the page fills.
        let now = weft_store::now_us();
        let mut out = Vec::new();
        for name in names {
            if out.len() >= limit {
                break;
            }
            let subject = format!("{}{}", b.prefix, encode(&name));
            if self.last(&b, &subject).await?.is_some_and(|s| s.live(now)) {
                out.push(name);
            }
        }
        Ok(out)
    }

    async fn catch_up(&self, bucket: &str, changes: &[String]) -> Result<usize> {
        let b = self.bucket(bucket).await?;
        self.sweep_changes(&b, changes).await
    }

    async fn expire_keys(&self, bucket: &str, changes: &[String], max: usize) -> Result<usize> {
        let b = self.bucket(bucket).await?;
        let now = weft_store::now_us();
        let mut keys = b.store.keys().await.map_err(|e| self.error("cannot list keys", e))?;
        let mut expired = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(|e| self.error("cannot list keys", e))?;
            let subject = format!("{}{k}", b.prefix);
            if let Some(s) = self.last(&b, &subject).await?
                && !s.deleted
                && !s.live(now)
                && let Some(name) = decode(&k)
            {
                expired.push(name);
                if expired.len() >= max {
                    break;
                }
            }
        }
        let mut n = 0;
        for name in expired {
            // A write of an expired key removes it first, as an expiry.
            let subject = format!("{}{}", b.prefix, encode(&name));
            let Some(s) = self.last(&b, &subject).await? else {
                continue;
            };
            if s.deleted || s.live(weft_store::now_us()) {
                continue;
            }
            if self.remove_expired(&b, &subject, &name, &s, changes).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    fn max_value(&self) -> usize {
        self.client.server_info().max_payload.saturating_sub(HEADROOM)
    }

    fn serializes_compare_and_set(&self) -> bool {
        JetStream::serializes_compare_and_set(self)
    }
}

impl JetStream {
    async fn object_bucket(&self, bucket: &str) -> Result<object_store::ObjectStore> {
        if let Some(b) = self.objects.read().unwrap_or_else(|p| p.into_inner()).get(bucket) {
            return Ok(b.clone());
        }
        self.check_connected()?;
        let name = self.names.object_bucket(bucket);
        let store = match self.js.get_object_store(&name).await {
            Ok(s) => s,
            Err(_) => self
                .js
                .create_object_store(object_store::Config {
                    bucket: name.clone(),
                    description: Some(format!("weft objects {bucket}")),
                    storage: stream::StorageType::File,
                    num_replicas: self.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| self.error(&format!("cannot open object bucket {name}"), e))?,
        };
        self.objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bucket.to_string(), store.clone());
        Ok(store)
    }
}

#[async_trait::async_trait]
impl Objects for JetStream {
    async fn put_object(&self, bucket: &str, name: &str, data: Vec<u8>) -> Result<()> {
        let store = self.object_bucket(bucket).await?;
        self.check_connected()?;
        store
            .put(key(name)?.as_str(), &mut data.as_slice())
            .await
            .map(|_| ())
            .map_err(|e| self.error("cannot store the object", e))
    }

    async fn get_object(&self, bucket: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let store = self.object_bucket(bucket).await?;
        let mut object = match store.get(key(name)?).await {
            Ok(o) => o,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error("cannot read the object", e)),
        };
        let mut data = Vec::with_capacity(object.info().size);
        object
            .read_to_end(&mut data)
            .await
            .map_err(|e| self.error("cannot read the object", e))?;
        Ok(Some(data))
    }

    async fn delete_object(&self, bucket: &str, name: &str) -> Result<bool> {
        let store = self.object_bucket(bucket).await?;
        self.check_connected()?;
        match store.delete(key(name)?).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.error("cannot delete the object", e)),
        }
    }

    async fn list_objects(&self, bucket: &str) -> Result<Vec<String>> {
        let store = self.object_bucket(bucket).await?;
        let mut list = store.list().await.map_err(|e| self.error("cannot list objects", e))?;
        let mut out = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| self.error("cannot list objects", e))?;
            if !info.deleted
                && let Some(name) = decode(&info.name)
            {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }
}
