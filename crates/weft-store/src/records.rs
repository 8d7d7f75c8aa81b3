//! Function versions, invocation records and function logs in SQLite.

mod queue;
mod telemetry;

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::Digest;

use queue::{Batch, Limits, Queue, Taken, Work};
pub use queue::{QUEUED_LOG_LINES, QUEUED_RECORDS, QUEUED_SPANS, Shed};
pub use telemetry::{MAX_TRACE_SPANS, UsageBy, UsageQuery};
use weft_telemetry::{Link, Span, SpanEvent};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the embedded database at {path} cannot be opened: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("embedded database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the store's writer has stopped")]
    WriterGone,
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The function answered (any status it chose).
    Success,
    /// The function trapped or panicked.
    Trap,
    /// The function ran past its timeout.
    Timeout,
    /// The function asked for more memory than its limit.
    MemoryLimit,
    /// The function could not start (instantiation failed, no capacity).
    Failed,
}

impl Outcome {
    /// Every outcome, in the order they are documented.
    pub const ALL: [Outcome; 5] = [
        Outcome::Success,
        Outcome::Trap,
        Outcome::Timeout,
        Outcome::MemoryLimit,
        Outcome::Failed,
    ];

    /// The text form, as stored and as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Trap => "trap",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::Failed => "failed",
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Outcome, UnknownName> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownName::Outcome(s.into()))
    }
}

impl FromSql for Outcome {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Outcome> {
        value.as_str()?.parse().map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// What started an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A request to one of the app's routes.
    Http,
    /// The admin API (`weft invoke`).
    Invoke,
    /// Another function, through its internal address.
    Internal,
    /// A message (or batch) from a queue.
    Queue,
    /// An asynchronous invocation.
    Event,
    /// Another function handed the request on.
    Forward,
    /// A schedule came due.
    Schedule,
    /// A workflow's Task state.
    Workflow,
}

impl Trigger {
    /// Every trigger, in the order they are documented.
    pub const ALL: [Trigger; 8] = [
        Trigger::Http,
        Trigger::Invoke,
        Trigger::Internal,
        Trigger::Queue,
        Trigger::Event,
        Trigger::Forward,
        Trigger::Schedule,
        Trigger::Workflow,
    ];

    /// The text form, as stored and as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Http => "http",
            Trigger::Invoke => "invoke",
            Trigger::Internal => "internal",
            Trigger::Queue => "queue",
            Trigger::Event => "event",
            Trigger::Forward => "forward",
            Trigger::Schedule => "schedule",
            Trigger::Workflow => "workflow",
        }
    }
}

impl std::str::FromStr for Trigger {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Trigger, UnknownName> {
        Trigger::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownName::Trigger(s.into()))
    }
}

impl FromSql for Trigger {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Trigger> {
        value.as_str()?.parse().map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// A text form that names none of an enum's values: read back from the
/// database (written by another version of weft, or by hand) or sent by a
/// client. Refused rather than guessed, so a record never says what did
/// not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownName {
    #[error(
        "`{0}` is not an invocation outcome: the outcomes are {known}",
        known = Outcome::ALL.map(Outcome::as_str).join(", ")
    )]
    Outcome(String),
    #[error(
        "`{0}` is not an invocation trigger: the triggers are {known}",
        known = Trigger::ALL.map(Trigger::as_str).join(", ")
    )]
    Trigger(String),
}

/// What one invocation leaves behind: the unit of billing and debugging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecord {
    pub request_id: String,
    pub function: String,
    pub version: u64,
    pub trigger: Trigger,
    /// Microseconds since the Unix epoch.
    pub start_us: i64,
    pub duration_us: u64,
    pub cold: bool,
    /// Largest total linear memory the instance held, in bytes.
    pub peak_memory_bytes: u64,
    pub outcome: Outcome,
    /// The HTTP status the caller received.
    pub status: u16,
    pub error: Option<String>,
    /// The invocation that called this one, for internal calls.
    pub parent_request_id: Option<String>,
    /// The function's configured memory limit, in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// The duration rounded up to the millisecond, as billed.
    #[serde(default)]
    pub billed_ms: u64,
    /// Time spent creating the instance, set on a cold start.
    #[serde(default)]
    pub init_us: Option<u64>,
    /// The invocation's span: its trace, its own id and its parent's
    /// (none when tracing is off).
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub span_id: Option<String>,
    #[serde(default)]
    pub parent_span_id: Option<String>,
    /// Spans it is linked to (the other messages of a batch).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    /// What happened during it (a retry, a forward that led to it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<SpanEvent>,
}

/// One line a function wrote to stdout or stderr.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Position in the log, assigned by the store; 0 before it is stored.
    #[serde(default)]
    pub seq: i64,
    pub request_id: String,
    pub function: String,
    pub stream: String,
    pub time_us: i64,
    pub line: String,
    /// The function version and trace of the invocation that wrote it,
    /// filled in when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// One deployed version of a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionVersion {
    pub function: String,
    pub version: u64,
    pub digest: Digest,
    /// The function's settings as deployed (JSON), part of what makes a version.
    pub config: String,
    pub deployed_us: i64,
}

#[derive(Debug, Clone, Default)]
pub struct RecordQuery {
    pub function: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub function: Option<String>,
    pub request_id: Option<String>,
    /// Only lines of invocations in this trace.
    pub trace_id: Option<String>,
    /// Only lines written at or after this time (microseconds since the epoch).
    pub since_us: Option<i64>,
    /// Only lines with `seq` greater than this.
    pub after: i64,
    pub limit: usize,
}

/// The embedded database.
pub struct Store {
    conn: Mutex<Connection>,
    queue: Arc<Queue>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS function_versions (
    function TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    config TEXT NOT NULL,
    deployed_us INTEGER NOT NULL,
    PRIMARY KEY (function, version)
);
CREATE TABLE IF NOT EXISTS invocations (
    request_id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    version INTEGER NOT NULL,
    trigger TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    cold INTEGER NOT NULL,
    peak_memory_bytes INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    status INTEGER NOT NULL,
    error TEXT,
    parent_request_id TEXT
);
CREATE INDEX IF NOT EXISTS invocations_by_function ON invocations (function, start_us);
CREATE INDEX IF NOT EXISTS invocations_by_start ON invocations (start_us);
CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    function TEXT NOT NULL,
    stream TEXT NOT NULL,
    time_us INTEGER NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_function ON logs (function, seq);
CREATE INDEX IF NOT EXISTS logs_by_request ON logs (request_id);
CREATE TABLE IF NOT EXISTS spans (
    span_id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    error TEXT,
    request_id TEXT,
    function TEXT,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS spans_by_trace ON spans (trace_id);
CREATE INDEX IF NOT EXISTS spans_by_start ON spans (start_us);
";

/// Columns added to `invocations` after its first release, added to an
/// older file when it is opened.
const ADDED_COLUMNS: [(&str, &str); 7] = [
    ("memory_bytes", "INTEGER NOT NULL DEFAULT 0"),
    ("billed_ms", "INTEGER NOT NULL DEFAULT 0"),
    ("init_us", "INTEGER"),
    ("trace_id", "TEXT"),
    ("span_id", "TEXT"),
    ("parent_span_id", "TEXT"),
    ("span_extra", "TEXT"),
];

/// Brings an older database up to [`SCHEMA`] and [`ADDED_COLUMNS`].
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('invocations')")?;
    let have: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for (column, kind) in ADDED_COLUMNS {
        if !have.iter().any(|h| h == column) {
            conn.execute_batch(&format!("ALTER TABLE invocations ADD COLUMN {column} {kind}"))?;
        }
    }
    conn.execute_batch("CREATE INDEX IF NOT EXISTS invocations_by_trace ON invocations (trace_id)")
}

/// The columns [`record_from_row`] reads, in its order.
const RECORD_COLUMNS: &str = "request_id, function, version, trigger, start_us, duration_us, cold, peak_memory_bytes,
    outcome, status, error, parent_request_id, memory_bytes, billed_ms, init_us, trace_id, span_id, parent_span_id,
    span_extra";

fn open(path: &Path) -> Result<Connection, StoreError> {
    let shown = path.display().to_string();
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: shown.clone(),
        source,
    })?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Records and logs are telemetry: WAL with NORMAL keeps the database
    // consistent across a crash and may lose only the last moments of it.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

impl Store {
    /// Opens (or creates) the database file and starts its writer thread.
    /// Records and logs older than [`DEFAULT_RETENTION`] are deleted; see
    /// [`Store::open_with_retention`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_retention(path, DEFAULT_RETENTION)
    }

    /// Opens the store; the writer deletes records and log lines older
    /// than `retention` about once a minute.
    pub fn open_with_retention(path: &Path, retention: Duration) -> Result<Store, StoreError> {
        Store::start(path, retention, Limits::DEFAULT)
    }

    fn start(path: &Path, retention: Duration, limits: Limits) -> Result<Store, StoreError> {
        let conn = open(path)?;
        migrate(&conn)?;
        let writer_conn = open(path)?;
        let queue = Arc::new(Queue::new(limits));
        let writer_queue = queue.clone();
        let thread = std::thread::Builder::new()
            .name("weft-store-writer".into())
            .spawn(move || write_loop(writer_conn, &writer_queue, retention))
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Store {
            conn: Mutex::new(conn),
            queue,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (every statement is atomic), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a record for the writer. Never blocks: with
    /// [`QUEUED_RECORDS`] already waiting, the record is shed and counted
    /// in [`Store::shed`].
    pub fn record(&self, record: InvocationRecord) {
        if self.queue.push(Work::Record(record)).is_err() {
            tracing::warn!("invocation record dropped: the store is closed");
        }
    }

    /// Queues spans for the writer. Never blocks: past [`QUEUED_SPANS`]
    /// waiting, the spans that do not fit are shed and counted in
    /// [`Store::shed`].
    pub fn spans(&self, spans: Vec<Span>) {
        if !spans.is_empty() && self.queue.push(Work::Spans(spans)).is_err() {
            tracing::warn!("spans dropped: the store is closed");
        }
    }

    /// Queues log lines for the writer. Never blocks: past
    /// [`QUEUED_LOG_LINES`] waiting, the lines that do not fit are shed
    /// and counted in [`Store::shed`].
    pub fn logs(&self, lines: Vec<LogLine>) {
        if !lines.is_empty() && self.queue.push(Work::Lines(lines)).is_err() {
            tracing::warn!("log lines dropped: the store is closed");
        }
    }

    /// How many records and log lines were shed because the writer could
    /// not keep up, since the store was opened.
    pub fn shed(&self) -> Shed {
        self.queue.shed()
    }

    /// Waits until everything queued so far is committed.
    pub fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::channel();
        self.queue.push(Work::Flush(tx))?;
        rx.recv().map_err(|_| StoreError::WriterGone)
    }

    /// Stops the store in order: records and lines queued after this are
    /// refused (with a warning), everything queued before is committed,
    /// and it returns once the writer thread has finished. Dropping the
    /// store does the same. Reads after it answer [`StoreError::WriterGone`].
    pub fn close(&self) {
        self.queue.close();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }

    /// The newest version of `function`, if any.
    pub fn latest_version(&self, function: &str) -> Result<Option<FunctionVersion>, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT function, version, digest, config, deployed_us FROM function_versions
                 WHERE function = ?1 ORDER BY version DESC LIMIT 1",
                params![function],
                version_from_row,
            )
            .optional()?;
        Ok(row)
    }

    /// Returns the version for this digest and config: the latest one if it
    /// is the same, else a new one numbered one past the latest.
    pub fn version_for(
        &self,
        function: &str,
        digest: &Digest,
        config: &str,
        now_us: i64,
    ) -> Result<(FunctionVersion, bool), StoreError> {
        if let Some(latest) = self.latest_version(function)?
            && latest.digest == *digest
            && latest.config == config
        {
            return Ok((latest, false));
        }
        let conn = self.conn();
        let next: u64 = conn.query_row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM function_versions WHERE function = ?1",
            params![function],
            |r| r.get(0),
        )?;
        conn.execute(
            "INSERT INTO function_versions (function, version, digest, config, deployed_us) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![function, next, digest.as_str(), config, now_us],
        )?;
        let v = FunctionVersion {
            function: function.into(),
            version: next,
            digest: digest.clone(),
            config: config.into(),
            deployed_us: now_us,
        };
        Ok((v, true))
    }

    pub fn records(&self, query: &RecordQuery) -> Result<Vec<InvocationRecord>, StoreError> {
        self.flush()?;
        let conn = self.conn();
        let limit = query.limit.clamp(1, 10_000) as i64;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM invocations WHERE (?1 IS NULL OR function = ?1) ORDER BY start_us DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![query.function, limit], record_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn record_by_id(&self, request_id: &str) -> Result<Option<InvocationRecord>, StoreError> {
        self.flush()?;
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {RECORD_COLUMNS} FROM invocations WHERE request_id = ?1"),
                params![request_id],
                record_from_row,
            )
            .optional()?;
        Ok(row)
    }

    pub fn log_lines(&self, query: &LogQuery) -> Result<Vec<LogLine>, StoreError> {
        self.flush()?;
        let conn = self.conn();
        let limit = query.limit.clamp(1, 10_000) as i64;
        // By trace, the trace's invocations lead (by their index) to their
        // lines; otherwise the lines are read in order.
        let sql = match query.trace_id {
            Some(_) => {
                "SELECT l.seq, l.request_id, l.function, l.stream, l.time_us, l.line, i.version, i.trace_id
                 FROM invocations i JOIN logs l ON l.request_id = i.request_id
                 WHERE i.trace_id = ?5 AND l.seq > ?1 AND (?2 IS NULL OR l.function = ?2)
                   AND (?3 IS NULL OR l.request_id = ?3) AND (?4 IS NULL OR l.time_us >= ?4)
                 ORDER BY l.seq LIMIT ?6"
            }
            None => {
                "SELECT l.seq, l.request_id, l.function, l.stream, l.time_us, l.line, i.version, i.trace_id
                 FROM logs l LEFT JOIN invocations i ON i.request_id = l.request_id
                 WHERE l.seq > ?1 AND (?2 IS NULL OR l.function = ?2) AND (?3 IS NULL OR l.request_id = ?3)
                   AND (?4 IS NULL OR l.time_us >= ?4) AND ?5 IS NULL
                 ORDER BY l.seq LIMIT ?6"
            }
        };
        let mut stmt = conn.prepare_cached(sql)?;
        let args = params![
            query.after,
            query.function,
            query.request_id,
            query.since_us,
            query.trace_id,
            limit
        ];
        let rows = stmt.query_map(args, |r| {
            Ok(LogLine {
                seq: r.get(0)?,
                request_id: r.get(1)?,
                function: r.get(2)?,
                stream: r.get(3)?,
                time_us: r.get(4)?,
                line: r.get(5)?,
                version: r.get(6)?,
                trace_id: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

fn version_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FunctionVersion> {
    let digest: String = r.get(2)?;
    Ok(FunctionVersion {
        function: r.get(0)?,
        version: r.get(1)?,
        digest: Digest::try_from(digest).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?,
        config: r.get(3)?,
        deployed_us: r.get(4)?,
    })
}

fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InvocationRecord> {
    Ok(InvocationRecord {
        request_id: r.get(0)?,
        function: r.get(1)?,
        version: r.get(2)?,
        trigger: r.get(3)?,
        start_us: r.get(4)?,
        duration_us: r.get(5)?,
        cold: r.get(6)?,
        peak_memory_bytes: r.get(7)?,
        outcome: r.get(8)?,
        status: r.get(9)?,
        error: r.get(10)?,
        parent_request_id: r.get(11)?,
        memory_bytes: r.get(12)?,
        billed_ms: r.get(13)?,
        init_us: r.get(14)?,
        trace_id: r.get(15)?,
        span_id: r.get(16)?,
        parent_span_id: r.get(17)?,
        links: Vec::new(),
        events: Vec::new(),
    })
    .map(|mut record| {
        if let Ok(Some(extra)) = r.get::<_, Option<String>>(18)
            && let Ok(extra) = serde_json::from_str::<telemetry::SpanExtra>(&extra)
        {
            record.links = extra.links;
            record.events = extra.events;
        }
        record
    })
}

/// How long the writer lets records gather after the first one arrives.
/// Waking once per batch instead of once per record keeps the writer from
/// costing every request a thread wake-up; records reach the disk at most
/// this much later.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// The writer thread: waits for work, lets more gather, commits it all in
/// one transaction, answers flushes, and repeats until the queue closes.
fn write_loop(mut conn: Connection, queue: &Queue, retention: Duration) {
    /// Marks the queue stopped however the thread ends, so that callers
    /// are refused instead of waiting for a writer that is gone.
    struct Stopped<'a>(&'a Queue);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            self.0.stopped();
        }
    }
    let _stopped = Stopped(queue);
    let mut pruned = Instant::now();
    loop {
        // Wake at least once a minute, so old telemetry is pruned even
        // when nothing is written.
        match queue.take(PRUNE_EVERY, GATHER) {
            Taken::Work(batch) => {
                if let Err(e) = commit(&mut conn, &batch) {
                    tracing::error!(
                        "could not store {} invocation records, {} log lines and {} spans: {e}",
                        batch.records.len(),
                        batch.lines.len(),
                        batch.spans.len()
                    );
                }
                for done in batch.flushes {
                    let _ = done.send(());
                }
            }
            Taken::Idle => {}
            Taken::Closed => return,
        }
        queue.warn_if_due();
        prune_if_due(&conn, &mut pruned, retention);
    }
}

/// Records and log lines are kept this long unless told otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);
const PRUNE_EVERY: Duration = Duration::from_secs(60);

fn prune_if_due(conn: &Connection, last: &mut Instant, retention: Duration) {
    if last.elapsed() < PRUNE_EVERY {
        return;
    }
    *last = Instant::now();
    let cutoff = now_us() - retention.as_micros().min(i64::MAX as u128) as i64;
    if let Err(e) = prune(conn, cutoff) {
        tracing::warn!("could not delete old invocation records and logs: {e}");
    }
}

/// Deletes records and log lines from before `cutoff_us`.
fn prune(conn: &Connection, cutoff_us: i64) -> rusqlite::Result<usize> {
    let records = conn.execute("DELETE FROM invocations WHERE start_us < ?1", params![cutoff_us])?;
    let lines = conn.execute("DELETE FROM logs WHERE time_us < ?1", params![cutoff_us])?;
    let spans = conn.execute("DELETE FROM spans WHERE start_us < ?1", params![cutoff_us])?;
    Ok(records + lines + spans)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// `back` before now, in microseconds since the Unix epoch (as far back
/// as the type reaches).
pub fn us_before_now(back: Duration) -> i64 {
    now_us().saturating_sub(back.as_micros().min(i64::MAX as u128) as i64)
}

fn commit(conn: &mut Connection, batch: &Batch) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut rec = tx.prepare_cached(
            "INSERT OR REPLACE INTO invocations (request_id, function, version, trigger, start_us, duration_us, cold,
                peak_memory_bytes, outcome, status, error, parent_request_id, memory_bytes, billed_ms, init_us,
                trace_id, span_id, parent_span_id, span_extra)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        )?;
        for r in &batch.records {
            let extra = telemetry::SpanExtra::of_record(r);
            rec.execute(params![
                r.request_id,
                r.function,
                r.version,
                r.trigger.as_str(),
                r.start_us,
                r.duration_us,
                r.cold,
                r.peak_memory_bytes,
                r.outcome.as_str(),
                r.status,
                r.error,
                r.parent_request_id,
                r.memory_bytes,
                r.billed_ms,
                r.init_us,
                r.trace_id,
                r.span_id,
                r.parent_span_id,
                extra
            ])?;
        }
        telemetry::insert_spans(&tx, &batch.spans)?;
        let mut log = tx.prepare_cached(
            "INSERT INTO logs (request_id, function, stream, time_us, line) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for l in &batch.lines {
            log.execute(params![l.request_id, l.function, l.stream, l.time_us, l.line])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, function: &str, start: i64) -> InvocationRecord {
        InvocationRecord {
            request_id: id.into(),
            function: function.into(),
            version: 1,
            trigger: Trigger::Http,
            start_us: start,
            duration_us: 10,
            cold: false,
            peak_memory_bytes: 65536,
            outcome: Outcome::Success,
            status: 200,
            error: None,
            parent_request_id: None,
            memory_bytes: 128 << 20,
            billed_ms: 1,
            init_us: None,
            trace_id: None,
            span_id: None,
            parent_span_id: None,
            links: Vec::new(),
            events: Vec::new(),
        }
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Every name parses back and serializes as it is stored.
    fn read_as_written<T>(all: &[T], as_str: fn(&T) -> &'static str)
    where
        T: std::str::FromStr<Err = UnknownName> + Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        for value in all {
            let name = as_str(value);
            assert_eq!(&name.parse::<T>().unwrap(), value);
            let json = serde_json::to_string(value).unwrap();
            assert_eq!(json, format!("\"{name}\""), "serialized as stored");
            assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), value);
        }
    }

    #[test]
    fn outcomes_and_triggers_read_as_they_are_written() {
        read_as_written(&Outcome::ALL, |o| o.as_str());
        read_as_written(&Trigger::ALL, |t| t.as_str());
        let names = Trigger::ALL.map(Trigger::as_str);
        assert_eq!(
            names,
            [
                "http", "invoke", "internal", "queue", "event", "forward", "schedule", "workflow"
            ]
        );
    }

    #[test]
    fn unknown_outcomes_and_triggers_are_refused() {
        assert_eq!(
            "crashed".parse::<Outcome>().unwrap_err().to_string(),
            "`crashed` is not an invocation outcome: the outcomes are success, trap, timeout, memory_limit, failed"
        );
        assert_eq!(
            "cron".parse::<Trigger>().unwrap_err().to_string(),
            "`cron` is not an invocation trigger: the triggers are http, invoke, internal, queue, event, forward, schedule, workflow"
        );
        assert!("HTTP".parse::<Trigger>().is_err(), "names are lowercase");
        let json = serde_json::from_str::<Outcome>("\"crashed\"").unwrap_err().to_string();
        assert!(json.contains("`crashed`"), "{json}");
        let json = serde_json::from_str::<Trigger>("\"cron\"").unwrap_err().to_string();
        assert!(json.contains("`cron`"), "{json}");
    }

    /// A row read back with a name this version does not know is an error
    /// that names it, from both ways of reading records.
    fn unreadable(column: &str, value: &str) -> String {
        let dir = temp(&format!("unknown-{column}"));
        let store = Store::open(&dir.join("weft.db")).unwrap();
        store.record(record("a", "f", 1));
        store.flush().unwrap();
        store
            .conn()
            .execute(&format!("UPDATE invocations SET {column} = ?1"), [value])
            .unwrap();
        let all = store.records(&RecordQuery {
            function: None,
            limit: 10,
        });
        let error = all.unwrap_err().to_string();
        assert_eq!(store.record_by_id("a").unwrap_err().to_string(), error);
        let _ = std::fs::remove_dir_all(&dir);
        error
    }

    #[test]
    fn a_stored_record_with_an_unknown_outcome_or_trigger_is_an_error_naming_it() {
        let error = unreadable("outcome", "crashed");
        assert!(error.contains("`crashed` is not an invocation outcome"), "{error}");
        let error = unreadable("trigger", "cron");
        assert!(error.contains("`cron` is not an invocation trigger"), "{error}");
    }

    fn line(request_id: &str, text: &str) -> LogLine {
        LogLine {
            seq: 0,
            request_id: request_id.into(),
            function: "f".into(),
            stream: "stdout".into(),
            time_us: 1,
            line: text.into(),
            version: None,
            trace_id: None,
        }
    }

    /// The request ids of every stored record, newest first.
    fn request_ids(store: &Store) -> Vec<String> {
        let query = RecordQuery {
            function: None,
            limit: 10_000,
        };
        store
            .records(&query)
            .unwrap()
            .into_iter()
            .map(|r| r.request_id)
            .collect()
    }

    /// Holds the writer up the way a stalled disk or another writer would:
    /// a second connection takes SQLite's write lock, and the writer, given
    /// record `r0`, waits for it in its commit (up to its busy timeout)
    /// while callers keep queueing. Rolling the returned connection back
    /// lets the writer go on.
    fn hold_writer(store: &Store, db: &Path) -> Connection {
        let holder = Connection::open(db).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        store.record(record("r0", "f", 0));
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.queue.waiting_records() > 0 {
            assert!(Instant::now() < deadline, "the writer never took the first record");
            std::thread::sleep(Duration::from_millis(1));
        }
        holder
    }

    #[test]
    fn an_overloaded_store_sheds_and_counts_instead_of_growing() {
        let dir = temp("shed");
        let db = dir.join("weft.db");
        let limits = Limits {
            records: 4,
            log_lines: 6,
            spans: 2,
        };
        let store = Store::start(&db, DEFAULT_RETENTION, limits).unwrap();
        let holder = hold_writer(&store, &db);
        let queued = Instant::now();
        for i in 1..=6 {
            store.record(record(&format!("r{i}"), "f", i));
        }
        store.logs(["a1", "a2", "a3", "a4"].map(|t| line("r1", t)).to_vec());
        store.logs(["b1", "b2", "b3", "b4", "b5"].map(|t| line("r2", t)).to_vec());
        let root = weft_telemetry::SpanContext::root();
        let span = |name: &str| {
            Span::new(
                &root.child(),
                Some(&root),
                name.into(),
                weft_telemetry::SpanKind::Producer,
                1,
            )
        };
        store.spans(vec![span("s1"), span("s2"), span("s3")]);
        assert!(
            queued.elapsed() < Duration::from_secs(1),
            "queueing waited for the writer"
        );
        assert_eq!(
            store.shed(),
            Shed {
                records: 2,
                log_lines: 3,
                spans: 1
            }
        );

        holder.execute_batch("ROLLBACK").unwrap();
        store.flush().unwrap();
        let mut kept = request_ids(&store);
        kept.sort();
        assert_eq!(
            kept,
            ["r0", "r1", "r2", "r3", "r4"],
            "the first records that fit are kept"
        );
        let lines: Vec<String> = store
            .log_lines(&LogQuery {
                limit: 100,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|l| l.line)
            .collect();
        assert_eq!(
            lines,
            ["a1", "a2", "a3", "a4", "b1", "b2"],
            "lines are kept up to the bound"
        );
        assert_eq!(
            store.shed(),
            Shed {
                records: 2,
                log_lines: 3,
                spans: 1
            },
            "nothing more was shed"
        );
        let (_, spans) = store.trace(&root.trace_hex()).unwrap().unwrap();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["s1", "s2"], "spans are kept up to the bound");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn close_writes_what_was_queued_before_it_and_refuses_what_comes_after() {
        let dir = temp("close");
        let db = dir.join("weft.db");
        let store = Store::open(&db).unwrap();
        let holder = hold_writer(&store, &db);
        for i in 1..=100 {
            store.record(record(&format!("r{i}"), "f", i));
        }
        store.logs(vec![line("r1", "last words")]);
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            holder.execute_batch("ROLLBACK").unwrap();
        });
        store.close();
        store.record(record("late", "f", 1_000));
        release.join().unwrap();

        // The closed store is still alive: what is on disk is close's doing.
        let reopened = Store::open(&db).unwrap();
        let kept = request_ids(&reopened);
        assert_eq!(kept.len(), 101, "r0 to r100 are kept, `late` is not");
        assert!(!kept.contains(&"late".to_string()));
        let lines = reopened.log_lines(&LogQuery {
            limit: 10,
            ..Default::default()
        });
        assert_eq!(
            lines.unwrap().iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            ["last words"]
        );
        assert_eq!(store.shed(), Shed::default());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn old_records_and_logs_are_pruned() {
        let dir = temp("prune");
        let store = Store::open(&dir.join("weft.db")).unwrap();
        store.record(record("old", "f", 1_000));
        store.record(record("new", "f", now_us()));
        store.flush().unwrap();
        let deleted = prune(&store.conn(), now_us() - 60_000_000).unwrap();
        assert_eq!(deleted, 1);
        let left = store
            .records(&RecordQuery {
                function: None,
                limit: 10,
            })
            .unwrap();
        assert_eq!(left.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(), ["new"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_and_logs_survive_reopening() {
        let dir = temp("reopen");
        let db = dir.join("weft.db");
        {
            let store = Store::open(&db).unwrap();
            store.record(record("a", "f", 1));
            store.record(record("b", "g", 2));
            store.logs(vec![LogLine {
                seq: 0,
                request_id: "a".into(),
                function: "f".into(),
                stream: "stdout".into(),
                time_us: 1,
                line: "hello".into(),
                version: None,
                trace_id: None,
            }]);
            let digest = Digest::of(b"x");
            let (v1, new1) = store.version_for("f", &digest, "{}", 5).unwrap();
            let (v1b, new1b) = store.version_for("f", &digest, "{}", 6).unwrap();
            let (v2, new2) = store.version_for("f", &digest, "{\"memory\":1}", 7).unwrap();
            assert_eq!(
                (v1.version, new1, v1b.version, new1b, v2.version, new2),
                (1, true, 1, false, 2, true)
            );
        }
        let store = Store::open(&db).unwrap();
        let all = store
            .records(&RecordQuery {
                function: None,
                limit: 10,
            })
            .unwrap();
        assert_eq!(
            all.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        let only_f = store
            .records(&RecordQuery {
                function: Some("f".into()),
                limit: 10,
            })
            .unwrap();
        assert_eq!(only_f, vec![record("a", "f", 1)]);
        let lines = store
            .log_lines(&LogQuery {
                function: Some("f".into()),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].line, "hello");
        assert!(lines[0].seq > 0);
        assert_eq!(store.latest_version("f").unwrap().unwrap().version, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
