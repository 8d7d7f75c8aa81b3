//! The embedded provider: one SQLite file, written by one thread with
//! group commit.
//!
//! Every operation goes to the writer thread. The thread takes all the
//! operations that queued up while it was busy, runs them in one
//! transaction (each in its own savepoint, so one failing operation does
//! not undo the others), commits with `synchronous = FULL` (one fsync for
//! the whole group), and only then answers each caller. Throughput grows
//! with the number of concurrent writers while each write still waits for
//! exactly one fsync. [`Embedded::commit_stats`] shows how much the
//! groups share.
//!
//! Key-value reads (`get`, `list`) do not queue behind writes: they run
//! on one of [`READERS`] read-only connections of their own, on the
//! caller's thread (a read of a cached page takes microseconds). In WAL
//! mode a read sees every transaction committed before it began, so a
//! read after a write's answer sees that write.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::records::now_us;

use super::{
    Append, Appended, BlobReader, BlobWriter, Blobs, Change, Entry, Files, KeyValue, Message, NewMessage, Objects,
    Receipt, Result, StorageError, StreamStats, Streams, Write, Written,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    grp TEXT,
    body BLOB NOT NULL,
    attributes TEXT NOT NULL,
    appended_us INTEGER NOT NULL,
    -- not deliverable before this time: a delay, a retry backoff, or a lease
    visible_us INTEGER NOT NULL,
    -- 1 while leased (visible_us is then the lease's end)
    leased INTEGER NOT NULL DEFAULT 0,
    receive_count INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (stream, seq)
);
CREATE INDEX IF NOT EXISTS messages_by_group ON messages (stream, grp, seq);
CREATE INDEX IF NOT EXISTS messages_by_age ON messages (stream, appended_us);
CREATE TABLE IF NOT EXISTS stream_seq (stream TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dedup (
    stream TEXT NOT NULL,
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at_us INTEGER NOT NULL,
    PRIMARY KEY (stream, id)
);
CREATE TABLE IF NOT EXISTS kv (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    revision INTEGER NOT NULL,
    -- a time to live's end (microseconds), if the value has one
    expires_us INTEGER,
    PRIMARY KEY (bucket, key)
);
CREATE TABLE IF NOT EXISTS kv_revision (bucket TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (bucket, name)
);
";

/// What a caller asks of the writer thread.
enum Op {
    Append(Vec<Append>),
    Lease {
        stream: String,
        max: usize,
        visibility: Duration,
        fifo: bool,
    },
    Ack {
        stream: String,
        receipts: Vec<Receipt>,
    },
    Release {
        stream: String,
        receipt: Receipt,
        delay: Duration,
        error: Option<String>,
    },
    Transfer {
        stream: String,
        seqs: Vec<u64>,
        to: String,
        attributes: BTreeMap<String, String>,
        reset: bool,
    },
    Peek {
        stream: String,
        after: u64,
        max: usize,
    },
    Stats {
        stream: String,
    },
    Expire {
        stream: String,
        age: Duration,
    },

    /// A set, or with no value a removal.
    Set {
        bucket: String,
        key: String,
        value: Option<Vec<u8>>,
        write: Write,
    },

    ExpireKeys {
        bucket: String,
        changes: Vec<String>,
        max: usize,
    },
    PutObject {
        bucket: String,
        name: String,
        data: Vec<u8>,
    },
    GetObject {
        bucket: String,
        name: String,
    },
    DeleteObject {
        bucket: String,
        name: String,
    },
    ListObjects {
        bucket: String,
    },
}

enum Reply {
    Appended(Vec<Vec<Appended>>),
    Messages(Vec<Message>),
    Count(usize),
    Flag(bool),
    Stats(StreamStats),
    Written(Option<Written>),
    Names(Vec<String>),
    Bytes(Option<Vec<u8>>),
    Done,
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Reply>>,
}

/// The embedded storage provider.
pub struct Embedded {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// The writer thread, then the checkpointer (which ends after it).
    threads: Mutex<Vec<JoinHandle<()>>>,
    commits: Arc<Commits>,
    /// Read-only connections for key-value reads.
    readers: Vec<Mutex<Connection>>,
    /// Blobs, as files in a directory beside the database file.
    blobs: Files,
}

/// Read-only connections of one provider.
pub const READERS: usize = 2;

/// How much group commit shared, since the provider was opened: see
/// [`Embedded::commit_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Transactions committed (one fsync each).
    pub commits: u64,
    /// Operations those transactions carried, reads included.
    pub operations: u64,
    /// Commits by how long each took (transaction and fsync), in
    /// microseconds: per bound of [`COMMIT_BOUNDS_US`], then the rest.
    pub commit_us: [u64; COMMIT_BOUNDS_US.len() + 1],
    pub commit_us_sum: u64,
    /// Commits by how many operations each carried: per bound of
    /// [`BATCH_BOUNDS`], then the rest.
    pub batch: [u64; BATCH_BOUNDS.len() + 1],
}

/// Upper bounds of the commit-time buckets, in microseconds.
pub const COMMIT_BOUNDS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];
/// Upper bounds of the operations-per-commit buckets.
pub const BATCH_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// The writer thread's counts behind [`CommitStats`].
#[derive(Default)]
struct Commits {
    commits: AtomicU64,
    operations: AtomicU64,
    commit_us: [AtomicU64; COMMIT_BOUNDS_US.len() + 1],
    commit_us_sum: AtomicU64,
    batch: [AtomicU64; BATCH_BOUNDS.len() + 1],
}

/// The bucket of `value` among `bounds` (the last one past them all).
fn bucket(bounds: &[u64], value: u64) -> usize {
    bounds.iter().position(|b| value <= *b).unwrap_or(bounds.len())
}

fn micros(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

fn classify(e: rusqlite::Error) -> StorageError {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked,
        ) => StorageError::Unavailable(e.to_string()),
        _ => StorageError::Other(e.to_string()),
    }
}

impl Embedded {
    /// Opens (or creates) the database file and starts its writer thread.
    /// Blobs go to the directory of the same name with `.blobs` for its
    /// extension (`events.db`, `events.blobs/`).
    pub fn open(path: &Path) -> Result<Embedded> {
        let blobs = Files::open(&path.with_extension("blobs"))?;
        let conn = Connection::open(path).map_err(|e| StorageError::Unavailable(format!("{}: {e}", path.display())))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(classify)?;
        // An acknowledged write must survive a crash or power loss.
        conn.pragma_update(None, "synchronous", "FULL").map_err(classify)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(classify)?;
        // Checkpoints run on a thread of their own (below), so no commit
        // waits while the log is copied into the database and fsynced.
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(classify)?;
        conn.wal_hook(Some(note_wal_pages));
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(classify)?;
        conn.execute_batch(SCHEMA).map_err(classify)?;
        upgrade(&conn).map_err(classify)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| StorageError::Unavailable(format!("{}: {e}", path.display())))?;
            reader.busy_timeout(Duration::from_secs(10)).map_err(classify)?;
            readers.push(Mutex::new(reader));
        }
        let checkpoints =
            Connection::open(path).map_err(|e| StorageError::Unavailable(format!("{}: {e}", path.display())))?;
        checkpoints.busy_timeout(Duration::from_secs(10)).map_err(classify)?;
        let (committed, wake) = mpsc::sync_channel(1);
        let checkpointer = std::thread::Builder::new()
            .name("weft-durable-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoints, wake))
            .map_err(|e| StorageError::Other(format!("cannot start the storage checkpointer: {e}")))?;
        let (tx, rx) = mpsc::channel();
        let commits = Arc::new(Commits::default());
        let counts = commits.clone();
        let writer = std::thread::Builder::new()
            .name("weft-durable-writer".into())
            .spawn(move || write_loop(conn, rx, &counts, committed))
            .map_err(|e| StorageError::Other(format!("cannot start the storage writer: {e}")))?;
        Ok(Embedded {
            jobs: Mutex::new(Some(tx)),
            threads: Mutex::new(vec![writer, checkpointer]),
            commits,
            readers,
            blobs,
        })
    }

    /// How many transactions the writer committed and how many operations
    /// they carried. Under concurrent load there are far fewer commits
    /// than operations; one commit per operation means group commit is
    /// not sharing fsyncs.
    pub fn commit_stats(&self) -> CommitStats {
        let c = &self.commits;
        CommitStats {
            commits: c.commits.load(Ordering::Relaxed),
            operations: c.operations.load(Ordering::Relaxed),
            commit_us: std::array::from_fn(|i| c.commit_us[i].load(Ordering::Relaxed)),
            commit_us_sum: c.commit_us_sum.load(Ordering::Relaxed),
            batch: std::array::from_fn(|i| c.batch[i].load(Ordering::Relaxed)),
        }
    }

    async fn run(&self, op: Op) -> Result<Reply> {
        let (reply, answer) = oneshot::channel();
        {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let sender = jobs
                .as_ref()
                .ok_or_else(|| StorageError::Unavailable("the storage is closed".into()))?;
            sender
                .send(Job { op, reply })
                .map_err(|_| StorageError::Unavailable("the storage writer stopped".into()))?;
        }
        answer
            .await
            .map_err(|_| StorageError::Unavailable("the storage writer stopped".into()))?
    }

    /// Finishes queued work and stops the writer, then the checkpointer.
    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.close();
    }
}

/// Brings a file made by an older weft up to date: columns added since
/// are added to its tables.
fn upgrade(conn: &Connection) -> rusqlite::Result<()> {
    let has_expiry: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('kv') WHERE name = 'expires_us'")?
        .exists([])?;
    if !has_expiry {
        conn.execute_batch("ALTER TABLE kv ADD COLUMN expires_us INTEGER")?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS kv_by_expiry ON kv (bucket, expires_us) WHERE expires_us IS NOT NULL",
    )
}

fn unexpected<T>() -> Result<T> {
    Err(StorageError::Other(
        "the storage writer answered with the wrong kind of reply".into(),
    ))
}

fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Job>, commits: &Commits, committed: mpsc::SyncSender<()>) {
    const GROUP: usize = 4096;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let results = run_group(&mut conn, &jobs, commits);
        for (job, result) in jobs.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
        // One wake-up is enough however many commits it stands for.
        if WAL_PAGES.get() >= CHECKPOINT_PAGES {
            let _ = committed.try_send(());
        }
    }
}

/// The write-ahead log's size (bytes) kept once a checkpoint has emptied it.
const WAL_SIZE_LIMIT: i64 = 64 << 20;
/// The log's length (pages) from which the checkpointer copies it into
/// the database, as SQLite's own automatic checkpoint would.
const CHECKPOINT_PAGES: i32 = 1000;

thread_local! {
    /// The pages in the log after the writer thread's last commit.
    static WAL_PAGES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// SQLite's hook after each commit (on the writer thread): the log's length.
fn note_wal_pages(_: &rusqlite::hooks::Wal, pages: std::os::raw::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(pages);
    Ok(())
}

/// Copies committed pages from the log into the database while the
/// writer goes on committing (a passive checkpoint never blocks it). The
/// log is fsynced at every commit, so what a checkpoint has not copied
/// yet is durable all the same. Ends when the writer does.
fn checkpoint_loop(conn: Connection, wake: mpsc::Receiver<()>) {
    let checkpoint = |mode: &str| {
        if let Err(e) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
            tracing::warn!(error = %e, "storage checkpoint failed; the log grows until the next one succeeds");
        }
    };
    while wake.recv().is_ok() {
        checkpoint("PASSIVE");
    }
    checkpoint("TRUNCATE");
}

/// Runs a group of operations in one transaction and one fsync.
fn run_group(conn: &mut Connection, jobs: &[Job], commits: &Commits) -> Vec<Result<Reply>> {
    let started = std::time::Instant::now();
    let mut tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = classify(e);
            return jobs.iter().map(|_| Err(e.clone())).collect();
        }
    };
    let now = now_us();
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        let result = match tx.savepoint() {
            Ok(mut sp) => match apply(&mut sp, &job.op, now) {
                Ok(reply) => sp.commit().map(|()| reply).map_err(classify),
                Err(e) => Err(e),
            },
            Err(e) => Err(classify(e)),
        };
        results.push(result);
    }
    if let Err(e) = tx.commit() {
        // Nothing of this group is on disk: every caller gets the error.
        let e = classify(e);
        return jobs.iter().map(|_| Err(e.clone())).collect();
    }
    let took = started.elapsed().as_micros() as u64;
    commits.commits.fetch_add(1, Ordering::Relaxed);
    commits.operations.fetch_add(jobs.len() as u64, Ordering::Relaxed);
    commits.commit_us[bucket(&COMMIT_BOUNDS_US, took)].fetch_add(1, Ordering::Relaxed);
    commits.commit_us_sum.fetch_add(took, Ordering::Relaxed);
    commits.batch[bucket(&BATCH_BOUNDS, jobs.len() as u64)].fetch_add(1, Ordering::Relaxed);
    results
}

fn sql(e: rusqlite::Error) -> StorageError {
    classify(e)
}

fn message_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let attributes: String = r.get(4)?;
    Ok(Message {
        seq: r.get(0)?,
        id: r.get(1)?,
        group: r.get(2)?,
        body: r.get(3)?,
        attributes: serde_json::from_str(&attributes).unwrap_or_default(),
        appended_us: r.get(5)?,
        receive_count: r.get(6)?,
        last_error: r.get(7)?,
    })
}

/// Runs a statement through the connection's statement cache: preparing
/// SQL is a large part of a small statement's cost.
fn execute(tx: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    tx.prepare_cached(sql)?.execute(params)
}

fn query_row<T>(
    tx: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    tx.prepare_cached(sql)?.query_row(params, f)
}

const MESSAGE_COLUMNS: &str = "seq, id, grp, body, attributes, appended_us, receive_count, last_error";

fn next_seq(tx: &Connection, table: &str, key: &str) -> rusqlite::Result<u64> {
    let (table, column) = match table {
        "stream" => ("stream_seq", "stream"),
        _ => ("kv_revision", "bucket"),
    };
    query_row(
        tx,
        &format!(
            "INSERT INTO {table} ({column}, last) VALUES (?1, 1)
             ON CONFLICT({column}) DO UPDATE SET last = last + 1 RETURNING last"
        ),
        params![key],
        |r| r.get(0),
    )
}

/// Appends one stream's messages (within the caller's transaction).
fn append(tx: &Connection, a: &Append, now: i64) -> Result<Vec<Appended>> {
    let Append {
        stream,
        messages,
        dedup_window: window,
    } = a;
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        // A zero window turns deduplication off for this append.
        let seen: Option<u64> = if window.is_zero() {
            None
        } else {
            query_row(
                tx,
                "SELECT seq FROM dedup WHERE stream = ?1 AND id = ?2 AND at_us >= ?3",
                params![stream, m.id, now - micros(*window)],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?
        };
        if let Some(seq) = seen {
            out.push(Appended { seq, duplicate: true });
            continue;
        }
        let seq = next_seq(tx, "stream", stream).map_err(sql)?;
        let attributes = serde_json::to_string(&m.attributes).map_err(|e| StorageError::Other(e.to_string()))?;
        execute(
            tx,
            "INSERT INTO messages (stream, seq, id, grp, body, attributes, appended_us, visible_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                stream,
                seq,
                m.id,
                m.group,
                m.body,
                attributes,
                now,
                now + micros(m.delay)
            ],
        )
        .map_err(sql)?;
        if !window.is_zero() {
            execute(
                tx,
                "INSERT OR REPLACE INTO dedup (stream, id, seq, at_us) VALUES (?1, ?2, ?3, ?4)",
                params![stream, m.id, seq, now],
            )
            .map_err(sql)?;
        }
        out.push(Appended { seq, duplicate: false });
    }
    Ok(out)
}

/// The key's live entry: none if absent or expired.
fn current(tx: &Connection, bucket: &str, key: &str, now: i64) -> Result<Option<Entry>> {
    let entry = query_row(
        tx,
        "SELECT value, revision, expires_us FROM kv WHERE bucket = ?1 AND key = ?2",
        params![bucket, key],
        |r| {
            Ok(Entry {
                value: r.get(0)?,
                revision: r.get(1)?,
                expires_us: r.get(2)?,
            })
        },
    )
    .optional()
    .map_err(sql)?;
    Ok(entry.filter(|e| e.expires_us.is_none_or(|at| at > now)))
}

/// Up to `limit` live keys of `bucket` starting with `prefix`, after `after`.
fn list(
    conn: &Connection,
    bucket: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    now: i64,
) -> Result<Vec<String>> {
    // The keys with the prefix are a range of the (bucket, key) index:
    // from the prefix to the prefix with its last character the next one.
    // One bound of each side, so SQLite scans only the range.
    let (from, from_value) = match after {
        Some(after) if after >= prefix => ("key > ?2", after),
        _ => ("key >= ?2", prefix),
    };
    let end = after_prefix(prefix);
    let to = if end.is_some() {
        "AND key < ?5"
    } else {
        "AND ?5 IS NULL"
    };
    let query = format!(
        "SELECT key FROM kv WHERE bucket = ?1 AND {from} {to}
           AND substr(key, 1, length(?6)) = ?6
           AND (expires_us IS NULL OR expires_us > ?3)
         ORDER BY key LIMIT ?4"
    );
    let mut stmt = conn.prepare_cached(&query).map_err(sql)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![bucket, from_value, now, limit, end, prefix], |r| r.get(0))
        .map_err(sql)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql)
}

/// The least string greater than every string that starts with `prefix`
/// (UTF-8 sorts by code point), or none for the empty prefix or one of
/// nothing but the last character there is.
fn after_prefix(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Appends `change` to each of `streams` (within the caller's transaction).
fn append_change(tx: &Connection, change: &Change, streams: &[String], now: i64) -> Result<()> {
    for stream in streams {
        let one = Append {
            stream: stream.clone(),
            messages: vec![change.message()],
            dedup_window: Duration::ZERO,
        };
        append(tx, &one, now)?;
    }
    Ok(())
}

/// Removes a key whose time to live ran out, with its expired change.
fn remove_expired(
    tx: &Connection,
    bucket: &str,
    key: &str,
    value: Vec<u8>,
    changes: &[String],
    now: i64,
) -> Result<()> {
    let revision = next_seq(tx, "kv", bucket).map_err(sql)?;
    execute(
        tx,
        "DELETE FROM kv WHERE bucket = ?1 AND key = ?2",
        params![bucket, key],
    )
    .map_err(sql)?;
    let change = Change {
        bucket: bucket.to_string(),
        key: key.to_string(),
        old: Some(value),
        new: None,
        revision,
        at_us: now,
        expired: true,
    };
    append_change(tx, &change, changes, now)
}

/// A set (`value`) or removal (none) of one key, with its change.
fn write_key(
    tx: &Connection,
    bucket: &str,
    key: &str,
    value: Option<&[u8]>,
    write: &Write,
    now: i64,
) -> Result<Option<Written>> {
    // The old value is read only when a change carries it.
    let with_changes = !write.changes.is_empty();
    let stored: Option<(Option<Vec<u8>>, u64, Option<i64>)> = query_row(
        tx,
        "SELECT CASE WHEN ?3 THEN value END, revision, expires_us FROM kv WHERE bucket = ?1 AND key = ?2",
        params![bucket, key, with_changes],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
    .map_err(sql)?;
    // A key past its time to live is removed first, with its own change,
    // so every expiry is a removal whether or not housekeeping saw it.
    let old = match stored {
        Some((old, _, Some(at))) if at <= now => {
            remove_expired(tx, bucket, key, old.unwrap_or_default(), &write.changes, now)?;
            None
        }
        Some((old, revision, expires_us)) => Some(Entry {
            value: old.unwrap_or_default(),
            revision,
            expires_us,
        }),
        None => None,
    };
    if !write.expect.allows(old.as_ref().map(|e| e.revision)) {
        return Err(StorageError::Conflict {
            current: old.map(|e| e.revision),
        });
    }
    if value.is_none() && old.is_none() {
        return Ok(None);
    }
    let revision = next_seq(tx, "kv", bucket).map_err(sql)?;
    match value {
        Some(value) => {
            let expires = write.ttl.map(|ttl| now.saturating_add(micros(ttl)));
            execute(
                tx,
                "INSERT INTO kv (bucket, key, value, revision, expires_us) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (bucket, key) DO UPDATE
                 SET value = excluded.value, revision = excluded.revision, expires_us = excluded.expires_us",
                params![bucket, key, value, revision, expires],
            )
            .map_err(sql)?
        }
        None => execute(
            tx,
            "DELETE FROM kv WHERE bucket = ?1 AND key = ?2",
            params![bucket, key],
        )
        .map_err(sql)?,
    };
    if with_changes {
        let change = Change {
            bucket: bucket.to_string(),
            key: key.to_string(),
            old: old.as_ref().map(|e| e.value.clone()),
            new: value.map(<[u8]>::to_vec),
            revision,
            at_us: now,
            expired: false,
        };
        append_change(tx, &change, &write.changes, now)?;
    }
    Ok(Some(Written { revision, old }))
}

fn apply(savepoint: &mut rusqlite::Savepoint<'_>, op: &Op, now: i64) -> Result<Reply> {
    let tx: &Connection = savepoint;
    match op {
        Op::Append(appends) => {
            let mut out = Vec::with_capacity(appends.len());
            for a in appends {
                out.push(append(tx, a, now)?);
            }
            Ok(Reply::Appended(out))
        }
        Op::Lease {
            stream,
            max,
            visibility,
            fifo,
        } => {
            let query = if *fifo {
                format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.stream = ?1 AND m.visible_us <= ?2
                       AND m.seq = (SELECT MIN(x.seq) FROM messages x WHERE x.stream = ?1 AND x.grp IS m.grp)
                     ORDER BY m.seq LIMIT ?3"
                )
            } else {
                format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE stream = ?1 AND visible_us <= ?2 ORDER BY seq LIMIT ?3"
                )
            };
            let mut leased: Vec<Message> = {
                let mut stmt = tx.prepare_cached(&query).map_err(sql)?;
                let rows = stmt
                    .query_map(params![stream, now, *max as i64], message_from_row)
                    .map_err(sql)?;
                rows.collect::<rusqlite::Result<_>>().map_err(sql)?
            };
            let until = now + micros(*visibility);
            for m in &mut leased {
                m.receive_count += 1;
                execute(tx,
                    "UPDATE messages SET visible_us = ?3, leased = 1, receive_count = ?4 WHERE stream = ?1 AND seq = ?2",
                    params![stream, m.seq, until, m.receive_count],
                )
                .map_err(sql)?;
            }
            Ok(Reply::Messages(leased))
        }
        Op::Ack { stream, receipts } => {
            let mut n = 0;
            for r in receipts {
                n += execute(
                    tx,
                    "DELETE FROM messages WHERE stream = ?1 AND seq = ?2 AND receive_count = ?3",
                    params![stream, r.seq, r.receive_count],
                )
                .map_err(sql)?;
            }
            Ok(Reply::Count(n))
        }
        Op::Release {
            stream,
            receipt,
            delay,
            error,
        } => {
            let n = execute(
                tx,
                "UPDATE messages SET visible_us = ?4, leased = 0, last_error = COALESCE(?5, last_error)
                     WHERE stream = ?1 AND seq = ?2 AND receive_count = ?3",
                params![stream, receipt.seq, receipt.receive_count, now + micros(*delay), error],
            )
            .map_err(sql)?;
            Ok(Reply::Flag(n > 0))
        }
        Op::Transfer {
            stream,
            seqs,
            to,
            attributes,
            reset,
        } => {
            let mut n = 0;
            for seq in seqs {
                let found = query_row(
                    tx,
                    &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE stream = ?1 AND seq = ?2"),
                    params![stream, seq],
                    message_from_row,
                )
                .optional()
                .map_err(sql)?;
                let Some(mut m) = found else { continue };
                m.attributes.extend(attributes.clone());
                let json = serde_json::to_string(&m.attributes).map_err(|e| StorageError::Other(e.to_string()))?;
                let count = if *reset { 0 } else { m.receive_count };
                let new_seq = next_seq(tx, "stream", to).map_err(sql)?;
                execute(tx,
                    "INSERT INTO messages (stream, seq, id, grp, body, attributes, appended_us, visible_us, receive_count, last_error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![to, new_seq, m.id, m.group, m.body, json, m.appended_us, now, count, m.last_error],
                )
                .map_err(sql)?;
                execute(
                    tx,
                    "DELETE FROM messages WHERE stream = ?1 AND seq = ?2",
                    params![stream, seq],
                )
                .map_err(sql)?;
                n += 1;
            }
            Ok(Reply::Count(n))
        }
        Op::Peek { stream, after, max } => {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE stream = ?1 AND seq > ?3 ORDER BY seq LIMIT ?2"
                ))
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![stream, *max as i64, *after as i64], message_from_row)
                .map_err(sql)?;
            Ok(Reply::Messages(rows.collect::<rusqlite::Result<_>>().map_err(sql)?))
        }
        Op::Stats { stream } => {
            let stats = query_row(
                tx,
                "SELECT
                        COALESCE(SUM(visible_us <= ?2), 0),
                        COALESCE(SUM(visible_us > ?2 AND leased = 1), 0),
                        COALESCE(SUM(visible_us > ?2 AND leased = 0), 0),
                        MIN(appended_us)
                     FROM messages WHERE stream = ?1",
                params![stream, now],
                |r| {
                    Ok(StreamStats {
                        visible: r.get(0)?,
                        in_flight: r.get(1)?,
                        delayed: r.get(2)?,
                        oldest_us: r.get(3)?,
                    })
                },
            )
            .map_err(sql)?;
            Ok(Reply::Stats(stats))
        }
        Op::Expire { stream, age } => {
            let cutoff = now - micros(*age);
            let n = execute(
                tx,
                "DELETE FROM messages WHERE stream = ?1 AND appended_us < ?2",
                params![stream, cutoff],
            )
            .map_err(sql)?;
            execute(
                tx,
                "DELETE FROM dedup WHERE stream = ?1 AND at_us < ?2",
                params![stream, cutoff],
            )
            .map_err(sql)?;
            Ok(Reply::Count(n))
        }
        Op::Set {
            bucket,
            key,
            value,
            write,
        } => Ok(Reply::Written(write_key(
            tx,
            bucket,
            key,
            value.as_deref(),
            write,
            now,
        )?)),
        Op::ExpireKeys { bucket, changes, max } => {
            let expired: Vec<(String, Vec<u8>)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT key, value FROM kv WHERE bucket = ?1 AND expires_us <= ?2 ORDER BY expires_us LIMIT ?3",
                    )
                    .map_err(sql)?;
                let rows = stmt
                    .query_map(params![bucket, now, i64::try_from(*max).unwrap_or(i64::MAX)], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .map_err(sql)?;
                rows.collect::<rusqlite::Result<_>>().map_err(sql)?
            };
            for (key, value) in &expired {
                remove_expired(tx, bucket, key, value.clone(), changes, now)?;
            }
            Ok(Reply::Count(expired.len()))
        }
        Op::PutObject { bucket, name, data } => {
            execute(
                tx,
                "INSERT OR REPLACE INTO objects (bucket, name, data) VALUES (?1, ?2, ?3)",
                params![bucket, name, data],
            )
            .map_err(sql)?;
            Ok(Reply::Done)
        }
        Op::GetObject { bucket, name } => {
            let data = query_row(
                tx,
                "SELECT data FROM objects WHERE bucket = ?1 AND name = ?2",
                params![bucket, name],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
            Ok(Reply::Bytes(data))
        }
        Op::DeleteObject { bucket, name } => {
            let n = execute(
                tx,
                "DELETE FROM objects WHERE bucket = ?1 AND name = ?2",
                params![bucket, name],
            )
            .map_err(sql)?;
            Ok(Reply::Flag(n > 0))
        }
        Op::ListObjects { bucket } => {
            let mut stmt = tx
                .prepare_cached("SELECT name FROM objects WHERE bucket = ?1 ORDER BY name")
                .map_err(sql)?;
            let rows = stmt.query_map(params![bucket], |r| r.get(0)).map_err(sql)?;
            Ok(Reply::Names(rows.collect::<rusqlite::Result<_>>().map_err(sql)?))
        }
    }
}

#[async_trait::async_trait]
impl Streams for Embedded {
    async fn append(&self, stream: &str, messages: Vec<NewMessage>, dedup_window: Duration) -> Result<Vec<Appended>> {
        let one = Append {
            stream: stream.into(),
            messages,
            dedup_window,
        };
        Ok(self.append_all(vec![one]).await?.pop().unwrap_or_default())
    }

    async fn append_all(&self, appends: Vec<Append>) -> Result<Vec<Vec<Appended>>> {
        match self.run(Op::Append(appends)).await? {
            Reply::Appended(a) => Ok(a),
            _ => unexpected(),
        }
    }

    async fn lease(&self, stream: &str, max: usize, visibility: Duration, fifo: bool) -> Result<Vec<Message>> {
        match self
            .run(Op::Lease {
                stream: stream.into(),
                max,
                visibility,
                fifo,
            })
            .await?
        {
            Reply::Messages(m) => Ok(m),
            _ => unexpected(),
        }
    }

    async fn ack(&self, stream: &str, receipts: &[Receipt]) -> Result<usize> {
        match self
            .run(Op::Ack {
                stream: stream.into(),
                receipts: receipts.to_vec(),
            })
            .await?
        {
            Reply::Count(n) => Ok(n),
            _ => unexpected(),
        }
    }

    async fn release(&self, stream: &str, receipt: Receipt, delay: Duration, error: Option<String>) -> Result<bool> {
        match self
            .run(Op::Release {
                stream: stream.into(),
                receipt,
                delay,
                error,
            })
            .await?
        {
            Reply::Flag(f) => Ok(f),
            _ => unexpected(),
        }
    }

    async fn transfer(
        &self,
        stream: &str,
        seqs: &[u64],
        to: &str,
        attributes: BTreeMap<String, String>,
        reset: bool,
    ) -> Result<usize> {
        let op = Op::Transfer {
            stream: stream.into(),
            seqs: seqs.to_vec(),
            to: to.into(),
            attributes,
            reset,
        };
        match self.run(op).await? {
            Reply::Count(n) => Ok(n),
            _ => unexpected(),
        }
    }

    async fn peek(&self, stream: &str, max: usize) -> Result<Vec<Message>> {
        self.read(stream, 0, max).await
    }

    async fn read(&self, stream: &str, after: u64, max: usize) -> Result<Vec<Message>> {
        match self
            .run(Op::Peek {
                stream: stream.into(),
                after,
                max,
            })
            .await?
        {
            Reply::Messages(m) => Ok(m),
            _ => unexpected(),
        }
    }

    async fn stats(&self, stream: &str) -> Result<StreamStats> {
        match self.run(Op::Stats { stream: stream.into() }).await? {
            Reply::Stats(s) => Ok(s),
            _ => unexpected(),
        }
    }

    async fn expire(&self, stream: &str, age: Duration) -> Result<usize> {
        match self
            .run(Op::Expire {
                stream: stream.into(),
                age,
            })
            .await?
        {
            Reply::Count(n) => Ok(n),
            _ => unexpected(),
        }
    }

    fn commit_stats(&self) -> Option<CommitStats> {
        Some(Embedded::commit_stats(self))
    }
}

/// Keys are never empty, on every provider.
fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(StorageError::Other("a key cannot be empty".into()));
    }
    Ok(())
}

#[async_trait::async_trait]
impl KeyValue for Embedded {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>> {
        check_key(key)?;
        self.with_reader(|conn| current(conn, bucket, key, now_us()))
    }

    async fn set(&self, bucket: &str, key: &str, value: Vec<u8>, write: &Write) -> Result<Written> {
        match self.write(bucket, key, Some(value), write).await? {
            Some(w) => Ok(w),
            None => unexpected(),
        }
    }

    async fn remove(&self, bucket: &str, key: &str, write: &Write) -> Result<Option<Written>> {
        self.write(bucket, key, None, write).await
    }

    async fn list(&self, bucket: &str, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.with_reader(|conn| list(conn, bucket, prefix, after, limit, now_us()))
    }

    async fn expire_keys(&self, bucket: &str, changes: &[String], max: usize) -> Result<usize> {
        let op = Op::ExpireKeys {
            bucket: bucket.into(),
            changes: changes.to_vec(),
            max,
        };
        match self.run(op).await? {
            Reply::Count(n) => Ok(n),
            _ => unexpected(),
        }
    }
}

impl Embedded {
    /// Runs `read` on a free reader (or waits for the first one).
    fn with_reader<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self
            .readers
            .iter()
            .find_map(|r| r.try_lock().ok())
            .unwrap_or_else(|| self.readers[0].lock().unwrap_or_else(|p| p.into_inner()));
        read(&conn)
    }

    async fn write(&self, bucket: &str, key: &str, value: Option<Vec<u8>>, write: &Write) -> Result<Option<Written>> {
        check_key(key)?;
        let op = Op::Set {
            bucket: bucket.into(),
            key: key.into(),
            value,
            write: write.clone(),
        };
        match self.run(op).await? {
            Reply::Written(w) => Ok(w),
            _ => unexpected(),
        }
    }
}

#[async_trait::async_trait]
impl Objects for Embedded {
    async fn put_object(&self, bucket: &str, name: &str, data: Vec<u8>) -> Result<()> {
        match self
            .run(Op::PutObject {
                bucket: bucket.into(),
                name: name.into(),
                data,
            })
            .await?
        {
            Reply::Done => Ok(()),
            _ => unexpected(),
        }
    }

    async fn get_object(&self, bucket: &str, name: &str) -> Result<Option<Vec<u8>>> {
        match self
            .run(Op::GetObject {
                bucket: bucket.into(),
                name: name.into(),
            })
            .await?
        {
            Reply::Bytes(b) => Ok(b),
            _ => unexpected(),
        }
    }

    async fn delete_object(&self, bucket: &str, name: &str) -> Result<bool> {
        match self
            .run(Op::DeleteObject {
                bucket: bucket.into(),
                name: name.into(),
            })
            .await?
        {
            Reply::Flag(f) => Ok(f),
            _ => unexpected(),
        }
    }

    async fn list_objects(&self, bucket: &str) -> Result<Vec<String>> {
        match self.run(Op::ListObjects { bucket: bucket.into() }).await? {
            Reply::Names(n) => Ok(n),
            _ => unexpected(),
        }
    }
}

#[async_trait::async_trait]
impl Blobs for Embedded {
    async fn create_blob(&self, bucket: &str) -> Result<BlobWriter> {
        self.blobs.create_blob(bucket).await
    }

    async fn read_blob(&self, bucket: &str, id: &str, offset: u64, len: u64) -> Result<Option<BlobReader>> {
        self.blobs.read_blob(bucket, id, offset, len).await
    }

    async fn remove_blob(&self, bucket: &str, id: &str) -> Result<bool> {
        self.blobs.remove_blob(bucket, id).await
    }

    async fn list_blobs(&self, bucket: &str, before: std::time::SystemTime) -> Result<Vec<String>> {
        self.blobs.list_blobs(bucket, before).await
    }

    async fn sweep_unfinished(&self, bucket: &str, before: std::time::SystemTime) -> Result<usize> {
        self.blobs.sweep_unfinished(bucket, before).await
    }
}

#[cfg(test)]
mod tests {
    use super::after_prefix;

    #[test]
    fn the_range_of_a_prefix_ends_at_the_next_character() {
        assert_eq!(after_prefix(""), None);
        assert_eq!(after_prefix("order:o-1/").as_deref(), Some("order:o-10"));
        assert_eq!(after_prefix("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(after_prefix("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(after_prefix("\u{10FFFF}"), None);
        for (prefix, inside, outside) in [("ab", "ab\u{10FFFF}z", "ac"), ("x/", "x/~", "x0")] {
            let end = after_prefix(prefix).unwrap();
            assert!(prefix <= inside && inside.as_bytes() < end.as_bytes(), "{inside}");
            assert!(outside.as_bytes() >= end.as_bytes(), "{outside}");
        }
    }
}
