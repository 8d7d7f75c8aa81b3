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

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::Duration;

use serde_json::{Map, Value};
use weft_manifest::pattern::{Pattern, PatternSet};
use weft_manifest::{Endpoint, Manifest, Queue, Trigger};

use crate::{Outgoing, QueueError, Queues};

/// A CloudEvent, as the ingress or a function publishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub time: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
    /// Other attributes (extensions), by name.
    pub extensions: BTreeMap<String, String>,
}

impl CloudEvent {
    /// The event as filter patterns see it: the structured form, with
    /// `data` as JSON when it is JSON, else as text.
    pub fn as_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("specversion".into(), "1.0".into());
        map.insert("id".into(), self.id.clone().into());
        map.insert("source".into(), self.source.clone().into());
        map.insert("type".into(), self.event_type.clone().into());
        if let Some(t) = &self.time {
            map.insert("time".into(), t.clone().into());
        }
        if let Some(ct) = &self.content_type {
            map.insert("datacontenttype".into(), ct.clone().into());
        }
        for (k, v) in &self.extensions {
            map.insert(k.clone(), v.clone().into());
        }
        let data =
            serde_json::from_slice(&self.data).unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&self.data)));
        map.insert("data".into(), data);
        Value::Object(map)
    }
}

/// What publishing one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    /// Subscriptions the event matched (and was stored for).
    pub delivered_to: usize,
    /// Every copy was already stored: the event was published before.
    pub duplicate: bool,
}

/// What the topics' function and URL subscriptions need from the node.
#[derive(Debug, Default)]
pub struct Plan {
    pub queues: Vec<Queue>,
    pub triggers: Vec<Trigger>,
    /// (hidden queue, URL) pairs.
    pub urls: Vec<(String, String)>,
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
            let (target, visibility) = match &s.target {
                Endpoint::Queue(q) => {
                    list.push((s.filter.clone().unwrap_or_else(Pattern::any), q.clone()));
                    continue;
                }
                Endpoint::Function(f) => (
                    format!("function:{f}"),
                    manifest
                        .function(f)
                        .map_or(Duration::from_secs(30), |f| f.timeout + Duration::from_secs(30)),
                ),
                Endpoint::Url(u) => (format!("url:{u}"), Duration::from_secs(60)),
            };
            let queue = crate::hidden_queue(&s.topic, &target, &mut taken);
            plan.queues.push(Queue {
                name: queue.clone(),
                visibility_timeout: visibility,
                max_receives: s.max_receives,
                dead_letter: s.dead_letter.clone(),
                delay: Duration::ZERO,
                retention: Duration::from_secs(4 * 86_400),
                fifo: false,
                backoff: s.backoff,
                max_age: None,
            });
            match &s.target {
                Endpoint::Function(f) => plan.triggers.push(Trigger {
                    queue: queue.clone(),
                    function: f.clone(),
                    batch: 1,
                    concurrency: 1,
                }),
                Endpoint::Url(u) => plan.urls.push((queue.clone(), u.clone())),
                Endpoint::Queue(_) => {}
            }
            // No filter: the empty pattern, which matches every event.
            list.push((s.filter.clone().unwrap_or_else(Pattern::any), queue));
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
            .triggers
            .iter()
            .map(|t| (t.queue.clone(), t.function.clone()))
            .chain(plan.urls)
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
