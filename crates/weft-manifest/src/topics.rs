//! `[topic.NAME]` and `[[subscription]]`: publish once, deliver to every
//! matching subscription.

use std::time::Duration;

use toml_edit::{Item, Key};

use crate::names::{FIFO, TargetChoice};
use crate::parse::{Checker, Kind};
use crate::pattern::Pattern;
use crate::{Retry, Target, TargetKind};

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

impl Checker {
    pub(crate) fn topics(&mut self, key: &Key, item: &Item) -> Vec<Topic> {
        let Some(table) = self.kind_table(key, item, &TOPIC) else {
            return Vec::new();
        };
        let mut topics = Vec::new();
        for (name, item) in table.iter() {
            let Some(t) = self.named(table, key, name, item, &TOPIC) else {
                continue;
            };
            if !t.name_ok {
                continue;
            }
            if matches!(t.name, "bus" | "put") {
                self.error(
                    t.key.span(),
                    format!(
                        "topic name `{}` is kept for the event ingress (`POST /events/bus/BUS`, `POST /events/put`)",
                        t.name
                    ),
                    "choose another name, like `orders`",
                );
                continue;
            }
            topics.push(Topic {
                name: t.name.to_string(),
            });
        }
        topics
    }

    pub(crate) fn subscriptions(&mut self, key: &Key, item: &Item) -> Vec<Subscription> {
        let tables = self.array_of_tables(
            key,
            item,
            "subscription",
            "write each subscription as `[[subscription]]` with `topic` and a target",
        );
        let mut out = Vec::new();
        for (n, table) in tables.into_iter().enumerate() {
            let place = format!("subscription #{}", n + 1);
            self.unknown_keys(table, SUBSCRIPTION_KEYS, &format!("[[subscription]] ({place})"));
            let topic = self.reference(table, "topic", &place, "topic");
            let target = self.target(
                table,
                &TargetChoice {
                    kinds: &[
                        (TargetKind::Function, "\"NAME\""),
                        (TargetKind::Queue, "\"NAME\""),
                        (TargetKind::Url, "\"https://example.com/hook\""),
                    ],
                    place: &place,
                    span: None,
                    missing: "has no target",
                    one: "a subscription delivers to one target: keep one",
                    verb: "names",
                },
            );
            if let Some(Target::Queue(q)) = &target
                && self.names().has_tag("queue", q, FIFO)
            {
                self.error(
                    None,
                    format!("{place} delivers to FIFO queue `{q}`"),
                    "topics deliver to standard queues: subscribe a queue without `fifo = true`",
                );
            }
            let mut ok = true;
            let filter = match self.string(table, "filter", &place, "'{\"type\": [\"order.placed\"]}'") {
                Some((text, span)) => match Pattern::parse(text) {
                    Ok(p) => Some((p, text.to_string())),
                    Err(why) => {
                        self.error(
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
            let max_receives = self.integer_in(table, "max_receives", &place, 5, (1, 1000));
            let backoff = self.duration_in(
                table,
                "backoff",
                &place,
                Duration::from_secs(1),
                (Duration::ZERO, Duration::from_secs(12 * 3600)),
            );
            let dead_letter = self.dead_letter(table, &place, "\"orders-dlq\"").unwrap_or_else(|()| {
                ok = false;
                None
            });
            if let (true, Some(topic), Some(target), Some(max_receives), Some(backoff)) =
                (ok, topic, target, max_receives, backoff)
            {
                let (filter, filter_text) = filter.map_or((None, None), |(p, t)| (Some(p), Some(t)));
                out.push(Subscription {
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
        }
        out
    }
}
