//! What waits for the store's writer thread: invocation records, log lines,
//! spans and flushes, each kind bounded by a count of items.
//!
//! Callers are async tasks on the request path, so queueing never blocks
//! on the writer: what does not fit is shed, counted ([`Shed`]) and
//! reported through `tracing` at most once per [`WARN_EVERY`]. Both sides
//! hold the lock only to push one item or to take everything at once, so
//! while the writer commits one batch the next one can fill up to the
//! bounds: at most twice the bounds are in memory.
//!
//! This module must not know about SQLite.

use std::sync::{Condvar, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use weft_telemetry::Span;

use super::{InvocationRecord, LogLine, StoreError};

/// Invocation records that may wait for the writer. A record takes a few
/// hundred bytes, so a full queue holds about 20 MiB: several seconds of a
/// heavy burst while the writer is held up, after which records are shed
/// rather than held in memory until it recovers.
pub const QUEUED_RECORDS: usize = 65_536;

/// Log lines that may wait for the writer, bounded apart from records so
/// that a chatty function sheds its own lines and not the records. A
/// typical line takes a few hundred bytes, so a full queue holds tens of
/// MiB; even if every line were at the runtime's 16 KiB cut it would stay
/// under 1 GiB.
pub const QUEUED_LOG_LINES: usize = 65_536;

/// Spans (other than invocations', which are their records) that may
/// wait for the writer: a few per message hop, a few hundred bytes each.
pub const QUEUED_SPANS: usize = 65_536;

/// Shedding is reported at most this often, with the counts since the
/// last report, so an overload writes a warning a second and not one per
/// invocation.
pub(super) const WARN_EVERY: Duration = Duration::from_secs(1);

/// How many invocation records and log lines the store dropped because
/// its writer could not keep up, since it was opened. See
/// [`Store::shed`](crate::Store::shed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Shed {
    pub records: u64,
    pub log_lines: u64,
    pub spans: u64,
}

impl Shed {
    fn since(self, earlier: Shed) -> Shed {
        Shed {
            records: self.records - earlier.records,
            log_lines: self.log_lines - earlier.log_lines,
            spans: self.spans - earlier.spans,
        }
    }
}

/// How many items of each kind may wait.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub records: usize,
    pub log_lines: usize,
    pub spans: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        records: QUEUED_RECORDS,
        log_lines: QUEUED_LOG_LINES,
        spans: QUEUED_SPANS,
    };
}

/// One piece of work for the writer. A record is most of the work, so it
/// is kept inline rather than boxed (one allocation fewer per invocation).
#[allow(clippy::large_enum_variant)]
pub(super) enum Work {
    Record(InvocationRecord),
    Lines(Vec<LogLine>),
    Spans(Vec<Span>),
    /// Answered once everything queued before it is committed.
    Flush(mpsc::Sender<()>),
}

/// What the writer takes in one go and commits in one transaction.
#[derive(Default)]
pub(super) struct Batch {
    pub records: Vec<InvocationRecord>,
    pub lines: Vec<LogLine>,
    pub spans: Vec<Span>,
    pub flushes: Vec<mpsc::Sender<()>>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.lines.is_empty() && self.spans.is_empty() && self.flushes.is_empty()
    }
}

/// What [`Queue::take`] found.
pub(super) enum Taken {
    Work(Batch),
    /// Nothing arrived in the time given.
    Idle,
    /// Closed, and everything queued before has been taken.
    Closed,
}

#[derive(Default)]
struct Pending {
    waiting: Batch,
    /// No more work is accepted: the store closed or its writer stopped.
    closed: bool,
    shed: Shed,
    /// What had been shed at the last report, and when that was.
    reported: Shed,
    reported_at: Option<Instant>,
}

impl Pending {
    /// What was shed since the last report, if anything was and the last
    /// report is at least [`WARN_EVERY`] old; marks it reported.
    fn unreported(&mut self, now: Instant) -> Option<Shed> {
        if self.shed == self.reported {
            return None;
        }
        if self.reported_at.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            return None;
        }
        let new = self.shed.since(self.reported);
        self.reported = self.shed;
        self.reported_at = Some(now);
        Some(new)
    }
}

fn warn(shed: Option<Shed>) {
    if let Some(shed) = shed {
        tracing::warn!(
            records = shed.records,
            log_lines = shed.log_lines,
            spans = shed.spans,
            "the store's writer cannot keep up: shed {} invocation records, {} log lines and {} spans since the last warning",
            shed.records,
            shed.log_lines,
            shed.spans
        );
    }
}

/// The queue between the callers and the writer thread.
pub(super) struct Queue {
    pending: Mutex<Pending>,
    /// Signalled when work arrives in an empty queue, or on closing.
    ready: Condvar,
    limits: Limits,
}

impl Queue {
    pub fn new(limits: Limits) -> Queue {
        Queue {
            pending: Mutex::new(Pending::default()),
            ready: Condvar::new(),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Every change under the lock is a push, a counter or a swap: a
        // panic elsewhere cannot leave it half done.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `work`, or as much of it as fits and sheds the rest. Refused
    /// only once the queue is closed.
    pub fn push(&self, work: Work) -> Result<(), StoreError> {
        let report = {
            let mut p = self.lock();
            if p.closed {
                return Err(StoreError::WriterGone);
            }
            let was_empty = p.waiting.is_empty();
            match work {
                Work::Record(record) if p.waiting.records.len() < self.limits.records => p.waiting.records.push(record),
                Work::Record(_) => p.shed.records += 1,
                Work::Lines(mut lines) => {
                    let room = self.limits.log_lines.saturating_sub(p.waiting.lines.len());
                    if lines.len() > room {
                        p.shed.log_lines += (lines.len() - room) as u64;
                        lines.truncate(room);
                    }
                    p.waiting.lines.append(&mut lines);
                }
                Work::Spans(mut spans) => {
                    let room = self.limits.spans.saturating_sub(p.waiting.spans.len());
                    if spans.len() > room {
                        p.shed.spans += (spans.len() - room) as u64;
                        spans.truncate(room);
                    }
                    p.waiting.spans.append(&mut spans);
                }
                Work::Flush(done) => p.waiting.flushes.push(done),
            }
            // The writer waits only while the queue is empty.
            if was_empty && !p.waiting.is_empty() {
                self.ready.notify_one();
            }
            p.unreported(Instant::now())
        };
        warn(report);
        Ok(())
    }

    /// What was shed since the queue was made.
    pub fn shed(&self) -> Shed {
        self.lock().shed
    }

    /// How many records wait, not yet taken by the writer.
    #[cfg(test)]
    pub fn waiting_records(&self) -> usize {
        self.lock().waiting.records.len()
    }

    /// Waits up to `idle` for work, lets more gather for `gather` (unless a
    /// flush is waiting or the queue is closing), and takes all of it.
    pub fn take(&self, idle: Duration, gather: Duration) -> Taken {
        let p = self.lock();
        let (mut p, _) = self
            .ready
            .wait_timeout_while(p, idle, |p| p.waiting.is_empty() && !p.closed)
            .unwrap_or_else(|e| e.into_inner());
        if p.waiting.is_empty() {
            return if p.closed { Taken::Closed } else { Taken::Idle };
        }
        if p.waiting.flushes.is_empty() && !p.closed {
            drop(p);
            std::thread::sleep(gather);
            p = self.lock();
        }
        Taken::Work(std::mem::take(&mut p.waiting))
    }

    /// Reports what was shed since the last report, if that is due.
    pub fn warn_if_due(&self) {
        let report = self.lock().unreported(Instant::now());
        warn(report);
    }

    /// Accepts no more work; the writer takes what is queued, then stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// The writer is gone: accepts no more work, lets waiting flushes
    /// fail, and reports what was shed and not yet reported.
    pub fn stopped(&self) {
        let report = {
            let mut p = self.lock();
            p.closed = true;
            p.waiting.flushes.clear();
            p.reported_at = None;
            p.unreported(Instant::now())
        };
        warn(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shedding_is_reported_at_most_once_per_interval_with_the_counts_since_the_last_report() {
        let mut p = Pending::default();
        let start = Instant::now();
        assert_eq!(p.unreported(start), None, "nothing shed");
        p.shed.records = 1;
        let first = p.unreported(start);
        assert_eq!(
            first,
            Some(Shed {
                records: 1,
                log_lines: 0,
                spans: 0
            })
        );
        p.shed = Shed {
            records: 5,
            log_lines: 2,
            spans: 3,
        };
        assert_eq!(p.unreported(start + WARN_EVERY / 2), None, "too soon");
        let second = p.unreported(start + WARN_EVERY);
        assert_eq!(
            second,
            Some(Shed {
                records: 4,
                log_lines: 2,
                spans: 3
            })
        );
        assert_eq!(p.unreported(start + 3 * WARN_EVERY), None, "nothing new");
    }
}
