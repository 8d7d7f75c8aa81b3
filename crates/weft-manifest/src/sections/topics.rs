//! `[topic.NAME]` and `[[subscription]]`: publish once, deliver to every
//! matching subscription.

use std::time::Duration;

use toml_edit::Table;

use crate::names::TargetChoice;
use crate::parse::{Checker, Kind};
use crate::pattern::Pattern;
use crate::section::Section;
use crate::{Manifest, Retry, Target, TargetKind};

const SUBSCRIPTION_KEYS: &[&str] = &[
    "topic",
    "function",
    "queue",
    "url",
    "filter",
    "max_receives",
    "backoff",
    "dead_letter",
];

/// `[topic.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Topic {
    pub name: String,
}

/// `[[subscription]]`: events published to `topic` that match `filter` go to `target`.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub topic: String,
    /// A function, a queue, or an HTTP(S) endpoint sent each event as a
    /// CloudEvent in binary mode.
    pub target: Target,
    /// An EventBridge pattern matched against the event in CloudEvents
    /// structured form (`type`, `source`, `id`, `time`, `data`, ...).
    pub filter: Option<Pattern>,
    pub filter_text: Option<String>,
    /// Function subscriptions: `max_receives` deliveries before the
    /// dead-letter queue, the first retry delay `backoff` (doubling).
    pub retry: Retry,
    /// Function subscriptions: a standard queue for events that keep failing.
    pub dead_letter: Option<String>,
}

const TOPIC: Kind = Kind {
    name: "topic",
    keys: &[],
    example: "orders",
    help: "write the topic as `[topic.NAME]`",
};

pub(crate) struct Topics;

impl Section for Topics {
    fn keys(&self) -> &[&str] {
        &["topic", "subscription"]
    }

    fn check(&self, c: &mut Checker, root: &Table, manifest: &mut Manifest) {
        c.each_named(root, &TOPIC, |c, t| {
            if !t.name_ok {
                return;
            }
            if matches!(t.name, "bus" | "put") {
                c.error(
                    t.key.span(),
                    format!(
                        "topic name `{}` is kept for the event ingress (`POST /events/bus/BUS`, `POST /events/put`)",
                        t.name
                    ),
                    "choose another name, like `orders`",
                );
                return;
            }
            manifest.topics.push(Topic {
                name: t.name.to_string(),
            });
        });
        c.each_listed(
            root,
            "subscription",
            SUBSCRIPTION_KEYS,
            "write each subscription as `[[subscription]]` with `topic` and a target",
            |c, table, place| {
                let topic = c.reference(table, "topic", place, "topic");
                let target = c.target(
                    table,
                    &TargetChoice {
                        kinds: &[
                            (TargetKind::Function, "\"NAME\""),
                            (TargetKind::Queue, "\"NAME\""),
                            (TargetKind::Url, "\"https://example.com/hook\""),
                        ],
                        place,
                        span: None,
                        missing: "has no target",
                        one: "a subscription delivers to one target: keep one",
                        verb: "names",
                        standard_queue: Some((
                            "delivers to",
                            "topics deliver to standard queues: subscribe a queue without `fifo = true`",
                        )),
                    },
                );
                let mut ok = true;
                let filter = match c.string(table, "filter", place, "'{\"type\": [\"order.placed\"]}'") {
                    Some((text, span)) => match Pattern::parse(text) {
                        Ok(p) => Some((p, text.to_string())),
                        Err(why) => {
                            c.error(
                                span,
                                format!("`filter` of {place} is not a valid event pattern: {why}"),
                                "write an EventBridge pattern as JSON, e.g. filter = '{\"type\": [\"order.placed\"]}'",
                            );
                            ok = false;
                            None
                        }
                    },
                    None => {
                        ok &= !table.contains_key("filter");
                        None
                    }
                };
                let max_receives = c.integer_in(table, "max_receives", place, 5, (1, 1000));
                let backoff = c.duration_in(
                    table,
                    "backoff",
                    place,
                    Duration::from_secs(1),
                    (Duration::ZERO, Duration::from_secs(12 * 3600)),
                );
                let dead_letter = c.dead_letter(table, place, "\"orders-dlq\"").unwrap_or_else(|_| {
                    ok = false;
                    None
                });
                if let (true, Some(topic), Some(target), Some(max_receives), Some(backoff)) =
                    (ok, topic, target, max_receives, backoff)
                {
                    let (filter, filter_text) = filter.map_or((None, None), |(p, t)| (Some(p), Some(t)));
                    manifest.subscriptions.push(Subscription {
                        topic,
                        target,
                        filter,
                        filter_text,
                        retry: Retry {
                            max_attempts: max_receives,
                            backoff,
                            max_age: None,
                        },
                        dead_letter,
                    });
                }
            },
        );
    }
}
