//! Where records go: the targets of a store's changes (`[[kv.NAME.target]]`)
//! and of a bucket's notifications (`[[bucket.NAME.notify]]`), checked the
//! same way.
//!
//! A function target is sent batches of records and retried as a stream's
//! reader is, until [`CHANGE_RETENTION`]; a queue, topic or bus target is
//! sent each record as one event, so it takes neither `batch` nor
//! `dead_letter`. FIFO queues are refused, as DynamoDB Streams and S3
//! refuse them.

use std::ops::Range;
use std::time::Duration;

use toml_edit::TableLike;

use crate::names::{NAMED_TARGETS, TargetChoice};
use crate::parse::{Checker, span_of};
use crate::{Retry, Target};

/// How long a record waits for its function target at most, as DynamoDB
/// Streams keep records.
pub const CHANGE_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The keys of a target of records.
pub(crate) const TARGET_KEYS: &[&str] = &["function", "queue", "topic", "bus", "workflow", "batch", "dead_letter"];

/// How the messages about one kind of record target read.
pub(crate) struct Records<'a> {
    /// One record, e.g. "change" or "notification".
    pub record: &'a str,
    /// How each target is written, e.g. `[[kv.NAME.target]]`.
    pub table: &'a str,
}

/// One target of records, as [`Checker::record_target`] read it.
pub(crate) struct RecordTarget {
    pub target: Target,
    /// Function targets: records per invocation.
    pub batch: u32,
    /// Function targets: a standard queue for records that could not be delivered.
    pub dead_letter: Option<String>,
}

/// How a function target of records is retried: doubling the wait from one
/// second, until the record is [`CHANGE_RETENTION`] old.
pub(crate) fn record_retry() -> Retry {
    Retry {
        max_attempts: u32::MAX,
        backoff: Duration::from_secs(1),
        max_age: Some(CHANGE_RETENTION),
    }
}

impl Checker {
    /// The one function, queue, topic or bus `t` sends records to, with
    /// `batch` and `dead_letter` (function targets only). `span` is where a
    /// missing, doubled or FIFO target is reported. The caller reports
    /// unknown keys.
    pub(crate) fn record_target(
        &mut self,
        t: &dyn TableLike,
        place: &str,
        span: Option<Range<usize>>,
        records: &Records<'_>,
    ) -> Option<RecordTarget> {
        let Records { record, table } = records;
        let missing = format!("names nothing to send the {record}s to");
        let one = format!("a target sends to one place: give each its own {table}");
        let standard = format!("{record}s go to standard queues: target a queue without `fifo = true`");
        let target = self.target(
            t,
            &TargetChoice {
                kinds: NAMED_TARGETS,
                place,
                span,
                missing: &missing,
                one: &one,
                verb: "names",
                standard_queue: Some(("sends to", &standard)),
            },
        );
        let mut ok = true;
        let function = matches!(target, Some(Target::Function(_)) | None);
        if !function {
            for key in ["batch", "dead_letter"] {
                if let Some((k, item)) = t.get_key_value(key) {
                    self.error(
                        span_of(k, item),
                        format!("{place} has `{key}`, but only function targets take it"),
                        format!("a queue, topic or bus target is sent each {record} as one event: remove it"),
                    );
                    ok = false;
                }
            }
        }
        let batch = match function {
            true => self.integer_in(t, "batch", place, 100, (1, 1000)),
            false => Some(100),
        };
        let dead_letter = match function {
            true => self.dead_letter(t, place, &format!("\"failed-{record}s\"")).ok(),
            false => Some(None),
        };
        Some(RecordTarget {
            target: target?,
            batch: batch?,
            dead_letter: dead_letter?,
        })
        .filter(|_| ok)
    }
}
