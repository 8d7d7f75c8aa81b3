//! Topics: publish once, deliver a copy to every matching subscription.
//!
//! A topic's filters are compiled into one [`PatternSet`]. Every
//! subscription has a queue of its own: a queue subscription's
//! target queue, or for a function or URL subscription a hidden queue
//! named by what it delivers to (`TOPIC#function:NAME`, `TOPIC#url:URL`,
//! see [`crate::hidden_queue`]) with the subscription's retries and
//! dead-letter queue, drained by a trigger or a URL worker. Publishing filters
//! the event against each subscription's pattern and sends it to the
//! matching queues, with the event id as the deduplication id: an event
//! published again within five minutes is acknowledged and not stored twice.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use weft_manifest::pattern::{Pattern, PatternSet};
use weft_manifest::{Manifest, Target};

use crate::cloudevents::CloudEvent;
use crate::{Hidden, Outgoing, QueueError, Queues};

/// What publishing one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    /// Subscriptions the event matched (and was stored for).
    pub delivered_to: usize,
    /// Every copy was already stored: the event was published before.
    pub duplicate: bool,
}

/// What the topics' function and URL subscriptions need from the node:
/// their hidden queues, each drained to its function or URL.
#[derive(Debug, Default)]
pub struct Plan {
    pub hidden: Vec<Hidden>,
}

/// One topic's subscriptions: their filters compiled into one set, each
/// standing for the index of its subscription's queue.
struct Routes {
    filters: PatternSet<usize>,
    queues: Vec<String>,
}

/// The app's topics and where their events go.
#[derive(Default)]
pub struct Topics {
    routes: RwLock<HashMap<String, Routes>>,
}

/// The topics of a manifest, compiled, ready for [`Topics::install`].
pub struct TopicRouting(HashMap<String, Routes>);

impl Topics {
    /// Compiles the topics of a manifest. Returns what its function and
    /// URL subscriptions need (hidden queues, triggers, URL deliveries),
    /// which must exist before the routing is installed.
    pub fn plan(manifest: &Manifest) -> (Plan, TopicRouting) {
        let mut routes: HashMap<String, Vec<(Pattern, String)>> =
            manifest.topics.iter().map(|t| (t.name.clone(), Vec::new())).collect();
        let mut plan = Plan::default();
        let mut taken = std::collections::HashSet::new();
        for s in &manifest.subscriptions {
            let list = routes.entry(s.topic.clone()).or_default();
            // No filter: the empty pattern, which matches every event.
            let filter = s.filter.clone().unwrap_or_else(Pattern::any);
            if let Target::Queue(q) = &s.target {
                list.push((filter, q.clone()));
                continue;
            }
            let retention = Duration::from_secs(4 * 86_400);
            let hidden = Hidden::new(
                manifest,
                &s.topic,
                &s.target,
                s.retry,
                s.dead_letter.clone(),
                retention,
                &mut taken,
            );
            list.push((filter, hidden.queue.name.clone()));
            plan.hidden.push(hidden);
        }
        let routes = routes
            .into_iter()
            .map(|(topic, list)| {
                let queues = list.iter().map(|(_, q)| q.clone()).collect();
                let filters = PatternSet::new(list.into_iter().enumerate().map(|(i, (p, _))| (p, i)));
                (topic, Routes { filters, queues })
            })
            .collect();
        (plan, TopicRouting(routes))
    }

    /// Routes publishes by `routing` from now on.
    pub fn install(&self, routing: TopicRouting) {
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = routing.0;
    }

    pub fn exists(&self, topic: &str) -> bool {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(topic)
    }

    /// The messages that publishing `events` stores: for each event, a
    /// (queue, message) for every subscription it matches.
    pub fn deliveries(&self, topic: &str, events: &[CloudEvent]) -> Result<Vec<Vec<(String, Outgoing)>>, QueueError> {
        deliveries(&self.routes.read().unwrap_or_else(|p| p.into_inner()), topic, events)
    }

    /// Stores a copy of each event for every subscription it matches, all
    /// in one write; durable when this returns.
    pub async fn publish(
        &self,
        queues: &Queues,
        topic: &str,
        events: Vec<CloudEvent>,
    ) -> Result<Vec<Published>, QueueError> {
        // The copies are checked against their queues while the routing
        // that chose them is held, so a deploy cannot drop a queue between.
        let (counts, prepared) = {
            let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
            let per_event = deliveries(&routes, topic, &events)?;
            let counts: Vec<usize> = per_event.iter().map(Vec::len).collect();
            let batches = per_event.into_iter().flatten().map(|(q, m)| (q, vec![m])).collect();
            (counts, queues.prepare_all(batches, Vec::new())?)
        };
        let mut sent = queues.commit(prepared).await?.into_iter();
        Ok(counts
            .into_iter()
            .map(|n| {
                let duplicates = sent
                    .by_ref()
                    .take(n)
                    .filter(|s| s.first().is_some_and(|s| s.duplicate))
                    .count();
                Published {
                    delivered_to: n,
                    duplicate: n > 0 && duplicates == n,
                }
            })
            .collect())
    }
}

/// The copies of `events` that `topic`'s subscriptions in `routes` take.
fn deliveries(
    routes: &HashMap<String, Routes>,
    topic: &str,
    events: &[CloudEvent],
) -> Result<Vec<Vec<(String, Outgoing)>>, QueueError> {
    let routes = routes
        .get(topic)
        .ok_or_else(|| QueueError::NoSuchTopic(topic.to_string()))?;
    Ok(events
        .iter()
        .map(|event| {
            routes
                .filters
                .matching(&event.as_json())
                .into_iter()
                .map(|&i| {
                    let message = Outgoing {
                        id: Some(event.id.clone()),
                        body: event.data.clone(),
                        content_type: event.content_type.clone(),
                        event_type: Some(event.event_type.clone()),
                        source: Some(event.source.clone()),
                        time: event.time.clone(),
                        trace: crate::trace::of_extensions(&event.extensions),
                        ..Default::default()
                    };
                    (routes.queues[i].clone(), message)
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden(manifest: &str) -> Vec<(String, String)> {
        let m = Manifest::parse(manifest, "weft.toml").unwrap();
        let (plan, _) = Topics::plan(&m);
        let mut pairs: Vec<(String, String)> = plan
            .hidden
            .iter()
            .map(|h| (h.queue.name.clone(), h.target.name().to_string()))
            .collect();
        pairs.sort();
        pairs
    }

    #[test]
    fn hidden_queues_follow_their_target_when_the_manifest_is_reordered() {
        let head =
            "[app]\nname = \"a\"\n[function.a]\nsource = \"a.wasm\"\n[function.b]\nsource = \"b.wasm\"\n[topic.t]\n";
        let a = "[[subscription]]\ntopic = \"t\"\nfunction = \"a\"\n";
        let b = "[[subscription]]\ntopic = \"t\"\nfunction = \"b\"\n";
        let url = "[[subscription]]\ntopic = \"t\"\nurl = \"http://example.com/hook\"\n";
        let first = hidden(&format!("{head}{a}{b}{url}{a}"));
        let second = hidden(&format!("{head}{url}{a}{b}{a}"));
        assert_eq!(first, second);
        assert_eq!(
            first,
            [
                ("t#function:a".to_string(), "a".to_string()),
                ("t#function:a#2".to_string(), "a".to_string()),
                ("t#function:b".to_string(), "b".to_string()),
                (
                    "t#url:http://example.com/hook".to_string(),
                    "http://example.com/hook".to_string()
                ),
            ]
        );
    }
}
