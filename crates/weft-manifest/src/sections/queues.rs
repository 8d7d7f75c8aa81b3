//! `[queue.NAME]`, `[[trigger]]` and `[function.NAME.async]`: durable
//! queues, the functions they feed, and how asynchronous invocations retry
//! and where their results go.

use std::ops::Range;
use std::time::Duration;

use toml_edit::{Item, Key, Table};

use crate::names::{FIFO, Names, Wording};
use crate::parse::{Checker, Kind, span_of};
use crate::section::Section;
use crate::{Manifest, Retry, Target, TargetKind};

const QUEUE: Kind = Kind {
    name: "queue",
    keys: &[
        "visibility_timeout",
        "max_receives",
        "dead_letter",
        "delay",
        "retention",
        "fifo",
        "backoff",
    ],
    example: "jobs",
    help: "write the queue as `[queue.NAME]` with its settings",
};
const TRIGGER_KEYS: &[&str] = &["queue", "kv", "function", "batch", "concurrency"];
const ASYNC_KEYS: &[&str] = &["retries", "max_event_age", "backoff", "on_success", "on_failure"];
/// What `on_success` and `on_failure` may name.
const DESTINATIONS: &[TargetKind] = &[
    TargetKind::Function,
    TargetKind::Queue,
    TargetKind::Topic,
    TargetKind::Bus,
    TargetKind::Workflow,
];

/// `[queue.NAME]`: a durable, at-least-once queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub name: String,
    /// How long a received message stays hidden before it is delivered again.
    pub visibility_timeout: Duration,
    /// `max_receives` (receives after which a message goes to the
    /// dead-letter queue; without one it stays, and is retried until
    /// `retention`, unless `max_age` is set) and `backoff` (the first retry
    /// delay after a failed delivery, doubling). `max_age` is for event
    /// delivery (the hidden queues of rule targets): a message that failed
    /// and is older than this, or has had `max_receives` tries, goes to the
    /// dead-letter queue or, without one, is dropped. Queues the app
    /// declares have none.
    pub retry: Retry,
    pub dead_letter: Option<String>,
    /// Every message waits this long before its first delivery.
    pub delay: Duration,
    /// Messages older than this are deleted, delivered or not.
    pub retention: Duration,
    /// Ordering per message group, and deduplication by message id.
    pub fifo: bool,
}

/// `[[trigger]]`: a queue's messages are delivered to a function.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub queue: String,
    pub function: String,
    /// Messages per invocation: 1 sends one CloudEvent in binary mode, more
    /// send a batch in the batched content mode.
    pub batch: u32,
    /// Invocations of this trigger running at once.
    pub concurrency: u32,
}

/// The deduplication window of FIFO queues (as on SQS).
pub const DEDUP_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Retries and destinations of asynchronous invocations (as Lambda's).
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncInvoke {
    /// `retries` (0 to 2) + 1 attempts, `backoff`, and `max_event_age`
    /// (always set).
    pub retry: Retry,
    /// A function, queue, topic or bus; a bus is put an event with
    /// EventBridge's Lambda destination shape.
    pub on_success: Option<Target>,
    pub on_failure: Option<Target>,
}

impl Default for AsyncInvoke {
    fn default() -> Self {
        AsyncInvoke {
            retry: Retry {
                max_attempts: 3,
                backoff: Duration::from_secs(60),
                max_age: Some(Duration::from_secs(6 * 3600)),
            },
            on_success: None,
            on_failure: None,
        }
    }
}

pub(crate) struct Queues;

impl Section for Queues {
    fn keys(&self) -> &[&str] {
        &["queue", "trigger"]
    }

    fn declare(&self, root: &Table, names: &mut Names) {
        let Some(queues) = root.get("queue").and_then(Item::as_table_like) else {
            return;
        };
        for (name, queue) in queues.iter() {
            names.declare("queue", name);
            if queue.get("fifo").and_then(Item::as_bool) == Some(true) {
                names.tag("queue", name, FIFO);
            }
        }
    }

    fn check(&self, c: &mut Checker, root: &Table, manifest: &mut Manifest) {
        manifest.queues = c.queues(root);
        if let Some(functions) = root.get("function").and_then(Item::as_table_like) {
            for (name, function) in functions.iter() {
                let Some((key, item)) = function.as_table_like().and_then(|f| f.get_key_value("async")) else {
                    continue;
                };
                let checked = c.async_invoke(name, key, item);
                let function = manifest.functions.iter_mut().find(|f| f.name == name);
                if let (Some(checked), Some(function)) = (checked, function) {
                    function.async_invoke = checked;
                }
            }
        }
        c.each_listed(
            root,
            "trigger",
            TRIGGER_KEYS,
            "write each trigger as `[[trigger]]` with `queue` and `function`",
            |c, table, place| {
                // A store's changes: the kv section's.
                if table.contains_key("kv") {
                    if let Some((k, item)) = table.get_key_value("queue") {
                        c.error(
                            span_of(k, item),
                            format!("{place} has both `queue` and `kv`"),
                            "a trigger takes one source: give each its own [[trigger]]",
                        );
                    }
                    return;
                }
                let queue = c.reference(table, "queue", place, "queue");
                let function = c.reference(table, "function", place, "function");
                let batch = c.integer_in(table, "batch", place, 1, (1, 100));
                let concurrency = c.integer_in(table, "concurrency", place, 1, (1, 100));
                if let (Some(queue), Some(function), Some(batch), Some(concurrency)) =
                    (queue, function, batch, concurrency)
                {
                    manifest.triggers.push(Trigger {
                        queue,
                        function,
                        batch,
                        concurrency,
                    });
                }
            },
        );
    }
}

impl Checker {
    /// `[function.NAME.async]`.
    fn async_invoke(&mut self, function: &str, key: &Key, item: &Item) -> Option<AsyncInvoke> {
        let place = format!("[function.{function}.async]");
        let table = self.table(
            key,
            item,
            &format!("`async` of [function.{function}]"),
            "write `[function.NAME.async]` with `retries`, `on_failure`, ...",
        )?;
        self.unknown_keys(table, ASYNC_KEYS, &place);
        let defaults = AsyncInvoke::default();
        let retries = self.integer_in(table, "retries", &place, defaults.retry.retries(), (0, 2));
        let age = self.duration_in(
            table,
            "max_event_age",
            &place,
            defaults.retry.max_age.unwrap_or(Duration::from_secs(6 * 3600)),
            (Duration::from_secs(60), Duration::from_secs(6 * 3600)),
        );
        let backoff = self.duration_in(
            table,
            "backoff",
            &place,
            defaults.retry.backoff,
            (Duration::ZERO, Duration::from_secs(3600)),
        );
        let mut ok = true;
        let mut destination = |c: &mut Checker, name: &str| -> Option<Target> {
            let (text, span) = c.string(table, name, &place, "\"queue:failed\"")?;
            let parsed = Target::parse(text).filter(|t| DESTINATIONS.contains(&t.kind()));
            match parsed {
                Some(d) => {
                    let (what, named) = (d.kind(), d.name());
                    let wording = Wording::new(format!("{place} sends to `{d}`, but no {what} `{named}` is declared"))
                        .qualified();
                    c.report_last(|c| c.declared(what.as_str(), named, span, wording));
                    Some(d)
                }
                None => {
                    c.error(
                        span,
                        format!("`{name}` in {place} is `{text}`, not `queue:NAME`, `function:NAME`, `topic:NAME`, `bus:NAME` or `workflow:NAME`"),
                        "write e.g. `on_failure = \"queue:failed\"`",
                    );
                    ok = false;
                    None
                }
            }
        };
        let on_success = destination(self, "on_success");
        let on_failure = destination(self, "on_failure");
        // A destination of the wrong type was reported by `string`.
        let unusable = |key: &str, value: &Option<Target>| table.contains_key(key) && value.is_none();
        if unusable("on_success", &on_success) || unusable("on_failure", &on_failure) {
            ok = false;
        }
        match (ok, retries, age, backoff) {
            (true, Some(retries), Some(max_event_age), Some(backoff)) => Some(AsyncInvoke {
                retry: Retry {
                    max_attempts: retries + 1,
                    backoff,
                    max_age: Some(max_event_age),
                },
                on_success,
                on_failure,
            }),
            _ => None,
        }
    }

    fn queues(&mut self, root: &Table) -> Vec<Queue> {
        let mut queues = Vec::new();
        let mut dead_letters: Vec<(String, String, Option<Range<usize>>)> = Vec::new();
        self.each_named(root, &QUEUE, |c, named| {
            let (name, q, place, mut ok) = (named.name, named.table, named.place, named.name_ok);
            let fifo = match q.get_key_value("fifo") {
                None => false,
                Some((k, v)) => match v.as_bool() {
                    Some(b) => b,
                    None => {
                        c.error(
                            span_of(k, v),
                            format!("`fifo` in {place} must be true or false, found {}", v.type_name()),
                            "write `fifo = true`",
                        );
                        ok = false;
                        false
                    }
                },
            };
            let day = Duration::from_secs(86_400);
            let visibility = c.duration_in(
                q,
                "visibility_timeout",
                &place,
                Duration::from_secs(30),
                (Duration::from_millis(1), Duration::from_secs(12 * 3600)),
            );
            let delay = c.duration_in(
                q,
                "delay",
                &place,
                Duration::ZERO,
                (Duration::ZERO, Duration::from_secs(15 * 60)),
            );
            let retention = c.duration_in(q, "retention", &place, 4 * day, (Duration::from_secs(60), 14 * day));
            let backoff = c.duration_in(
                q,
                "backoff",
                &place,
                Duration::from_secs(1),
                (Duration::ZERO, Duration::from_secs(12 * 3600)),
            );
            let max_receives = c.integer_in(q, "max_receives", &place, 5, (1, 1000));
            let dead_letter = c.string(q, "dead_letter", &place, "\"jobs-dlq\"").map(|(d, span)| {
                dead_letters.push((name.to_string(), d.to_string(), span));
                d.to_string()
            });
            ok &= !(q.contains_key("dead_letter") && dead_letter.is_none());
            if let (true, Some(visibility_timeout), Some(delay), Some(retention), Some(backoff), Some(max_receives)) =
                (ok, visibility, delay, retention, backoff, max_receives)
            {
                queues.push(Queue {
                    name: name.to_string(),
                    visibility_timeout,
                    retry: Retry {
                        max_attempts: max_receives,
                        backoff,
                        max_age: None,
                    },
                    dead_letter,
                    delay,
                    retention,
                    fifo,
                });
            }
        });
        for (queue, target, span) in &dead_letters {
            if queue == target {
                self.error(
                    span.clone(),
                    format!("[queue.{queue}] is its own dead-letter queue"),
                    "name another queue, e.g. `dead_letter = \"jobs-dlq\"` with its own [queue.jobs-dlq]",
                );
                continue;
            }
            let wording = Wording::new(format!(
                "[queue.{queue}] sends dead letters to `{target}`, which is not a queue of this app"
            ))
            .after_near(" Declare dead-letter queues as [queue.NAME] too")
            .otherwise(format!("declare it: add a [queue.{target}] table"));
            if !self.declared("queue", target, span.clone(), wording) {
                continue;
            }
            let Some(dlq) = queues.iter().find(|q| q.name == *target) else {
                continue;
            };
            let source_fifo = queues.iter().find(|q| q.name == *queue).is_some_and(|q| q.fifo);
            if source_fifo != dlq.fifo {
                let kind = |f: bool| if f { "a FIFO" } else { "a standard" };
                self.error(
                    span.clone(),
                    format!(
                        "[queue.{queue}] is {} queue but its dead-letter queue `{target}` is {} queue",
                        kind(source_fifo),
                        kind(dlq.fifo)
                    ),
                    "a dead-letter queue must be of the same kind as its source: set `fifo` alike on both",
                );
            }
        }
        queues
    }
}
