//! The event bus: rules route each event by its content.
//!
//! An event on a bus is an EventBridge envelope (`version`, `id`,
//! `detail-type`, `source`, `account`, `time`, `region`, `resources`,
//! `detail`), so EventBridge rules work unchanged. Events arrive as
//! CloudEvents (mapped as [`BusEvent::from_cloudevent`] says) or as
//! PutEvents entries ([`put_entries`]).
//!
//! Putting an event: the bus's archive keeps a copy (if it has one), the
//! bus's compiled rules ([`PatternSet`]) pick the matching rules, and
//! every target of each gets the event, reshaped by its input transformer:
//! - a queue target: a message sent to the queue;
//! - a topic target: a CloudEvent published to the topic;
//! - a bus target: the event, put on that bus;
//! - a function target: a message on the target's hidden queue
//!   `rule:RULE#function:NAME`, which a trigger delivers with the target's retries,
//!   event age limit and dead-letter queue.
//!
//! Each delivery carries the id `EVENT/RULE/N` (plus `/replay/NAME` in a
//! replay) as its deduplication id, so putting the same event again
//! within five minutes (a producer's retry) stores nothing twice. A put is
//! one write: the archive copy and every target's copy are committed
//! together, with one fsync, before the put is answered.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Map, Value, json};
use weft_manifest::pattern::PatternSet;
use weft_manifest::{DEDUP_WINDOW, Input, Manifest, Target, TemplateContext};
use weft_store::durable::{Append, NewMessage, Storage};
use weft_telemetry::SpanContext;

use crate::{CloudEvent, Outgoing, QueueError, Queues, Topics};

/// The `account` of every envelope: weft has no accounts.
pub const ACCOUNT: &str = "000000000000";
/// The `region` of every envelope.
pub const REGION: &str = "local";
/// PutEvents takes at most this many entries per request (as EventBridge).
pub const MAX_ENTRIES: usize = 10;
/// The largest event, envelope included (as EventBridge).
pub const MAX_EVENT: usize = 256 * 1024;

/// How an envelope is routed: a replay's name, the one rule to use, and
/// the span its copies are stored by.
#[derive(Clone, Copy, Default)]
struct Via<'a> {
    replay: Option<&'a str>,
    only_rule: Option<&'a str>,
    trace: Option<&'a SpanContext>,
}

/// One event on a bus, before it is put in an envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct BusEvent {
    pub id: String,
    pub source: String,
    pub detail_type: String,
    /// RFC 3339.
    pub time: String,
    pub resources: Vec<String>,
    /// A JSON object.
    pub detail: Value,
    /// CloudEvents extension attributes, kept beside the envelope's fields.
    pub extensions: BTreeMap<String, String>,
}

impl BusEvent {
    /// The event as rules see it and targets receive it.
    pub fn envelope(&self) -> Value {
        let mut map = Map::new();
        map.insert("version".into(), "0".into());
        map.insert("id".into(), self.id.clone().into());
        map.insert("detail-type".into(), self.detail_type.clone().into());
        map.insert("source".into(), self.source.clone().into());
        map.insert("account".into(), ACCOUNT.into());
        map.insert("time".into(), self.time.clone().into());
        map.insert("region".into(), REGION.into());
        map.insert("resources".into(), self.resources.clone().into());
        map.insert("detail".into(), self.detail.clone());
        if !self.extensions.is_empty() {
            map.insert("extensions".into(), json!(self.extensions));
        }
        Value::Object(map)
    }

    /// A CloudEvent as a bus event: `id`, `source` and `time` keep their
    /// names, `type` is `detail-type`, `data` (a JSON object) is `detail`,
    /// `subject` is the one entry of `resources`; other attributes are
    /// kept under `extensions`. An event without `time` gets the time it
    /// arrived.
    pub fn from_cloudevent(event: CloudEvent) -> Result<BusEvent, String> {
        let detail = match serde_json::from_slice::<Value>(&event.data) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) | Err(_) if event.data.is_empty() => json!({}),
            _ => {
                return Err(format!(
                    "event `{}`: a bus event's data must be a JSON object (it becomes EventBridge's `detail`)",
                    event.id
                ));
            }
        };
        let mut extensions = event.extensions;
        let resources = extensions.remove("subject").into_iter().collect();
        Ok(BusEvent {
            id: event.id,
            source: event.source,
            detail_type: event.event_type,
            time: event.time.unwrap_or_else(crate::cloudevents::now),
            resources,
            detail,
            extensions,
        })
    }
}

/// Why one PutEvents entry was refused.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EntryError {
    #[serde(rename = "ErrorCode")]
    pub code: &'static str,
    #[serde(rename = "ErrorMessage")]
    pub message: String,
}

fn invalid(message: String) -> EntryError {
    EntryError {
        code: "InvalidArgument",
        message,
    }
}

/// One accepted PutEvents entry: the bus it goes to, and its event.
pub type Entry = (String, BusEvent);

/// Reads a PutEvents request: `{"Entries": [{"Source", "DetailType",
/// "Detail", "EventBusName"?, "Time"?, "Resources"?}]}`; entries without
/// `EventBusName` go to `default_bus`. A request that
/// is not of that shape is an `Err`; otherwise each entry is a bus name
/// and its event, or why the entry was refused.
pub fn put_entries(
    body: &[u8],
    default_bus: &str,
    new_id: impl Fn() -> String,
) -> Result<Vec<Result<Entry, EntryError>>, String> {
    let request: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let entries = match request.get("Entries") {
        Some(Value::Array(entries)) if !entries.is_empty() && entries.len() <= MAX_ENTRIES => entries,
        Some(Value::Array(entries)) if !entries.is_empty() => {
            return Err(format!(
                "`Entries` has {} entries; PutEvents takes 1 to {MAX_ENTRIES}: split the request",
                entries.len()
            ));
        }
        _ => return Err("the body must be {\"Entries\": [ ... ]} with 1 to 10 entries".into()),
    };
    Ok(entries.iter().map(|e| entry(e, default_bus, &new_id)).collect())
}

fn entry(e: &Value, default_bus: &str, new_id: &impl Fn() -> String) -> Result<Entry, EntryError> {
    let Value::Object(e) = e else {
        return Err(invalid("an entry must be a JSON object".into()));
    };
    let text = |name: &str, max: usize| -> Result<String, EntryError> {
        match e.get(name) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(s.clone()),
            Some(Value::String(_)) => Err(invalid(format!("`{name}` must be 1 to {max} characters"))),
            Some(_) => Err(invalid(format!("`{name}` must be a string"))),
            None => Err(invalid(format!("`{name}` is required"))),
        }
    };
    let source = text("Source", 256)?;
    let detail_type = text("DetailType", 128)?;
    let detail = match e.get("Detail") {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return Err(EntryError {
                    code: "MalformedDetail",
                    message: "`Detail` must be a JSON object, as text (or as JSON)".into(),
                });
            }
        },
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            return Err(EntryError {
                code: "MalformedDetail",
                message: "`Detail` must be a JSON object, as text (or as JSON)".into(),
            });
        }
        None => return Err(invalid("`Detail` is required".into())),
    };
    let bus = match e.get("EventBusName") {
        None => default_bus.to_string(),
        Some(Value::String(name)) => match name.rsplit_once(":event-bus/") {
            Some((_, n)) => n.to_string(),
            None => name.clone(),
        },
        Some(_) => return Err(invalid("`EventBusName` must be a string".into())),
    };
    let time = match e.get("Time") {
        None => crate::cloudevents::now(),
        Some(Value::String(t)) => match t.parse::<jiff::Timestamp>() {
            Ok(ts) => ts.to_string(),
            Err(_) => return Err(invalid(format!("`Time` is `{t}`, not an RFC 3339 timestamp"))),
        },
        Some(Value::Number(n)) => match n
            .as_f64()
            .and_then(|s| jiff::Timestamp::from_millisecond((s * 1000.0) as i64).ok())
        {
            Some(ts) => ts.to_string(),
            None => return Err(invalid(format!("`Time` is {n}, not seconds since the Unix epoch"))),
        },
        Some(_) => {
            return Err(invalid(
                "`Time` must be an RFC 3339 string or seconds since the Unix epoch".into(),
            ));
        }
    };
    let resources = match e.get("Resources") {
        None => Vec::new(),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
        }
        Some(_) => return Err(invalid("`Resources` must be a list of strings".into())),
    };
    for key in e.keys() {
        if ![
            "Source",
            "DetailType",
            "Detail",
            "EventBusName",
            "Time",
            "Resources",
            "TraceHeader",
        ]
        .contains(&key.as_str())
        {
            return Err(invalid(format!(
                "`{key}` is not a PutEvents entry field: use Source, DetailType, Detail, EventBusName, Time, Resources"
            )));
        }
    }
    let event = BusEvent {
        id: new_id(),
        source,
        detail_type,
        time,
        resources,
        detail,
        extensions: BTreeMap::new(),
    };
    if event.envelope().to_string().len() > MAX_EVENT {
        return Err(invalid(format!("the event is over {} KiB", MAX_EVENT / 1024)));
    }
    Ok((bus, event))
}

/// What putting one event did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Put {
    pub id: String,
    /// Rules the event matched.
    pub rules: usize,
    /// Copies stored for targets (not counting duplicates).
    pub deliveries: usize,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Replayed {
    pub name: String,
    /// Archived events in the window.
    pub events: usize,
    /// Copies stored for targets.
    pub deliveries: usize,
}

/// A plan for the node: the hidden queues of function targets, each
/// drained to its function.
#[derive(Debug, Default)]
pub struct BusPlan {
    pub hidden: Vec<crate::Hidden>,
}

/// Where a rule sends, and what: a function target is sent to its hidden
/// queue, so `to` is a queue, a topic or a bus.
struct RuleTarget {
    to: Target,
    input: Input,
}

struct RuleState {
    name: String,
    arn: String,
    targets: Vec<RuleTarget>,
}

struct BusState {
    archive: Option<Duration>,
    rules: PatternSet<usize>,
}

#[derive(Default)]
struct State {
    buses: HashMap<String, BusState>,
    rules: Vec<RuleState>,
}

/// The buses and rules of a manifest, compiled, ready for [`Buses::install`].
pub struct BusRouting(Arc<State>);

/// Per rule of one bus: (events matched, of those failed).
type RuleCounts = BTreeMap<String, (u64, u64)>;

/// The app's buses and rules.
pub struct Buses {
    storage: Arc<dyn Storage>,
    state: RwLock<Arc<State>>,
    /// Per (bus, rule): events matched, and of those, how many the put
    /// failed to store; since the node started.
    counts: std::sync::Mutex<BTreeMap<String, RuleCounts>>,
}

/// How many of the sent messages were stored (not duplicates).
fn stored(sent: &[Vec<crate::Sent>]) -> usize {
    sent.iter().flatten().filter(|s| !s.duplicate).count()
}

fn archive_stream(bus: &str) -> String {
    format!("archive:{bus}")
}

impl Buses {
    pub fn new(storage: Arc<dyn Storage>) -> Buses {
        Buses {
            storage,
            state: RwLock::default(),
            counts: Default::default(),
        }
    }

    /// Compiles the buses and rules of a manifest. Returns the hidden
    /// queues and triggers its function targets need, which must exist
    /// before the routing is installed.
    pub fn plan(manifest: &Manifest) -> (BusPlan, BusRouting) {
        let mut plan = BusPlan::default();
        let mut rules = Vec::new();
        let mut patterns: HashMap<&str, Vec<_>> = HashMap::new();
        let mut taken = std::collections::HashSet::new();
        for rule in manifest.rules.iter().filter(|r| r.enabled) {
            let mut targets = Vec::new();
            for t in &rule.targets {
                let to = match &t.target {
                    // A function or a workflow is reached through a hidden
                    // queue of its own, retried by the target's policy.
                    Target::Function(_) | Target::Workflow(_) => {
                        let owner = format!("rule:{}", rule.name);
                        let retention = t.retry.max_age.unwrap_or_default() + Duration::from_secs(3600);
                        let mut hidden = crate::Hidden::new(
                            manifest,
                            &owner,
                            &t.target,
                            t.retry,
                            t.dead_letter.clone(),
                            retention,
                            &mut taken,
                        );
                        hidden.concurrency = 2;
                        let queue = Target::Queue(hidden.queue.name.clone());
                        plan.hidden.push(hidden);
                        queue
                    }
                    other => other.clone(),
                };
                targets.push(RuleTarget {
                    to,
                    input: t.input.clone(),
                });
            }
            patterns
                .entry(rule.bus.as_str())
                .or_default()
                .push((rule.pattern.clone(), rules.len()));
            rules.push(RuleState {
                name: rule.name.clone(),
                arn: format!("arn:weft:events:{REGION}:{ACCOUNT}:rule/{}/{}", rule.bus, rule.name),
                targets,
            });
        }
        let buses = manifest
            .all_buses()
            .into_iter()
            .map(|b| {
                let set = PatternSet::new(patterns.remove(b.name.as_str()).unwrap_or_default());
                (
                    b.name,
                    BusState {
                        archive: b.archive,
                        rules: set,
                    },
                )
            })
            .collect();
        (plan, BusRouting(Arc::new(State { buses, rules })))
    }

    /// Routes puts by `routing` from now on.
    pub fn install(&self, routing: BusRouting) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = routing.0;
    }

    fn state(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn exists(&self, bus: &str) -> bool {
        self.state().buses.contains_key(bus)
    }

    /// The names of the deployed buses, and how long each archives events.
    pub fn list(&self) -> Vec<(String, Option<Duration>)> {
        let mut list: Vec<_> = self
            .state()
            .buses
            .iter()
            .map(|(name, b)| (name.clone(), b.archive))
            .collect();
        list.sort();
        list
    }

    /// Puts events on `bus`: archived, matched, and stored for every
    /// target of every matching rule, all in one write: durable when this
    /// returns, and on an error nothing of it is kept.
    pub async fn put(
        &self,
        queues: &Queues,
        topics: &Topics,
        bus: &str,
        events: Vec<BusEvent>,
        trace: Option<&SpanContext>,
    ) -> Result<Vec<Put>, QueueError> {
        // The copies are checked against their queues while the routing
        // that chose them is held, so a deploy cannot drop a queue between.
        let mut matched: Vec<usize> = Vec::new();
        let snapshot: Arc<State>;
        let (spans, prepared) = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            snapshot = Arc::clone(&state);
            let b = state
                .buses
                .get(bus)
                .ok_or_else(|| QueueError::NoSuchBus(bus.to_string()))?;
            let mut sends = Vec::new();
            let mut spans = Vec::with_capacity(events.len());
            let mut archived = Vec::new();
            for event in &events {
                let envelope = event.envelope();
                let start = sends.len();
                let via = Via {
                    trace,
                    ..Via::default()
                };
                let rules = self.route(&state, topics, bus, &envelope, via, &mut sends)?;
                spans.push((start, sends.len(), rules.len()));
                matched.extend(rules);
                if b.archive.is_some() {
                    let mut attributes = BTreeMap::new();
                    if let Some(trace) = trace {
                        crate::trace::store(&mut attributes, trace);
                    }
                    archived.push(NewMessage {
                        id: event.id.clone(),
                        body: envelope.to_string().into_bytes(),
                        attributes,
                        ..Default::default()
                    });
                }
            }
            let archive = match archived.is_empty() {
                true => Vec::new(),
                false => vec![Append {
                    stream: archive_stream(bus),
                    messages: archived,
                    dedup_window: DEDUP_WINDOW,
                }],
            };
            let batches = sends.into_iter().map(|(q, m)| (q, vec![m])).collect();
            (spans, queues.prepare_all(batches, archive)?)
        };
        let sent = queues.commit(prepared).await;
        self.count(bus, &snapshot, &matched, sent.is_err());
        let sent = sent?;
        Ok(events
            .into_iter()
            .zip(spans)
            .map(|(event, (start, end, rules))| Put {
                id: event.id,
                rules,
                deliveries: stored(&sent[start..end]),
            })
            .collect())
    }

    /// Counts the rules of `bus` that `matched` events, and whether their
    /// put `failed`.
    /// (`matched` holds indices into `state.rules`; names are copied only
    /// the first time a rule is counted.)
    fn count(&self, bus: &str, state: &State, matched: &[usize], failed: bool) {
        if matched.is_empty() {
            return;
        }
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if !counts.contains_key(bus) {
            counts.insert(bus.to_string(), BTreeMap::new());
        }
        let Some(rules) = counts.get_mut(bus) else { return };
        for &i in matched {
            let Some(rule) = state.rules.get(i) else { continue };
            if !rules.contains_key(&rule.name) {
                rules.insert(rule.name.clone(), (0, 0));
            }
            if let Some(entry) = rules.get_mut(&rule.name) {
                entry.0 += 1;
                entry.1 += u64::from(failed);
            }
        }
    }

    /// Per bus and rule: events matched and, of those, how many their put
    /// failed to store, since the node started.
    pub fn rule_counts(&self) -> Vec<(String, String, u64, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts
            .iter()
            .flat_map(|(b, rules)| rules.iter().map(move |(r, (m, f))| (b.clone(), r.clone(), *m, *f)))
            .collect()
    }

    /// Adds to `out` a (queue, message) for every copy of `envelope` the
    /// rules of `bus` make (only `via.only_rule`'s, if given): for queue and
    /// function targets directly, for topic targets one per matching
    /// subscription, for bus targets those of that bus's rules. Returns the
    /// indices (into `state.rules`) of the rules that matched.
    fn route(
        &self,
        state: &State,
        topics: &Topics,
        bus: &str,
        envelope: &Value,
        via: Via<'_>,
        out: &mut Vec<(String, Outgoing)>,
    ) -> Result<Vec<usize>, QueueError> {
        let Via {
            replay,
            only_rule,
            trace,
        } = via;
        let Some(b) = state.buses.get(bus) else {
            return Err(QueueError::NoSuchBus(bus.to_string()));
        };
        let indices: Vec<usize> = b
            .rules
            .matching(envelope)
            .into_iter()
            .copied()
            .filter(|&r| only_rule.is_none_or(|only| only == state.rules[r].name))
            .collect();
        let matched: Vec<&RuleState> = indices.iter().map(|&r| &state.rules[r]).collect();
        let id = envelope["id"].as_str().unwrap_or_default();
        let text = |field: &str| envelope[field].as_str().map(str::to_string);
        let ingestion_time = crate::cloudevents::now();
        for rule in &matched {
            for (n, target) in rule.targets.iter().enumerate() {
                let delivery_id = match replay {
                    Some(name) => format!("{id}/{}/{}/replay/{name}", rule.name, n + 1),
                    None => format!("{id}/{}/{}", rule.name, n + 1),
                };
                let body = target.input.apply(&TemplateContext {
                    event: envelope,
                    rule: &rule.name,
                    rule_arn: &rule.arn,
                    ingestion_time: &ingestion_time,
                });
                match &target.to {
                    Target::Queue(q) => out.push((
                        q.clone(),
                        Outgoing {
                            id: Some(delivery_id),
                            body,
                            event_type: text("detail-type"),
                            source: text("source"),
                            time: text("time"),
                            trace: trace.cloned(),
                            ..Default::default()
                        },
                    )),
                    Target::Topic(t) => {
                        let mut event = CloudEvent {
                            id: delivery_id,
                            source: text("source").unwrap_or_default(),
                            event_type: text("detail-type").unwrap_or_default(),
                            time: text("time"),
                            content_type: Some("application/json".into()),
                            data: body,
                            extensions: BTreeMap::new(),
                        };
                        if let Some(trace) = trace {
                            crate::trace::set_extensions(&mut event.extensions, trace);
                        }
                        out.extend(topics.deliveries(t, &[event])?.into_iter().flatten());
                    }
                    Target::Bus(next) => {
                        let via = Via { only_rule: None, ..via };
                        self.route(state, topics, next, envelope, via, out)?;
                    }
                    // The manifest check allows no other rule targets, and
                    // function and workflow targets were turned into their
                    // queues.
                    Target::Function(_) | Target::Workflow(_) | Target::Url(_) => {}
                }
            }
        }
        Ok(indices)
    }

    /// Sends the events `bus` archived between `from_us` and `to_us`
    /// (microseconds since the Unix epoch, by the time the bus received
    /// them) through its rules again, or only through `rule`. Each
    /// replayed envelope carries `"replay-name": NAME`.
    #[allow(clippy::too_many_arguments)]
    pub async fn replay(
        &self,
        queues: &Queues,
        topics: &Topics,
        bus: &str,
        from_us: i64,
        to_us: i64,
        rule: Option<&str>,
        name: &str,
    ) -> Result<Replayed, QueueError> {
        let state = self.state();
        let b = state
            .buses
            .get(bus)
            .ok_or_else(|| QueueError::NoSuchBus(bus.to_string()))?;
        if b.archive.is_none() {
            return Err(QueueError::Invalid(format!(
                "bus `{bus}` keeps no archive: add `archive = \"7d\"` to [bus.{bus}] in weft.toml, then put events to replay"
            )));
        }
        if let Some(r) = rule
            && !state.rules.iter().any(|s| s.name == r)
        {
            return Err(QueueError::Invalid(format!("no enabled rule `{r}` is deployed")));
        }
        let (mut after, mut events, mut deliveries) = (0, 0, 0);
        loop {
            let page = self.storage.read(&archive_stream(bus), after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let prepared = {
                let state = self.state.read().unwrap_or_else(|p| p.into_inner());
                let mut sends = Vec::new();
                for m in page
                    .iter()
                    .filter(|m| m.appended_us >= from_us && m.appended_us < to_us)
                {
                    let Ok(Value::Object(mut envelope)) = serde_json::from_slice::<Value>(&m.body) else {
                        tracing::warn!("archive of bus `{bus}`: message {} is not an envelope; skipped", m.seq);
                        continue;
                    };
                    envelope.insert("replay-name".into(), name.into());
                    let envelope = Value::Object(envelope);
                    // A replayed copy continues the trace of the put it was archived by.
                    let original = crate::trace::of_message(m);
                    let via = Via {
                        replay: Some(name),
                        only_rule: rule,
                        trace: original.as_ref(),
                    };
                    self.route(&state, topics, bus, &envelope, via, &mut sends)?;
                    events += 1;
                }
                let batches = sends.into_iter().map(|(q, m)| (q, vec![m])).collect();
                queues.prepare_all(batches, Vec::new())?
            };
            deliveries += stored(&queues.commit(prepared).await?);
        }
        Ok(Replayed {
            name: name.to_string(),
            events,
            deliveries,
        })
    }

    /// How many events `bus` keeps in its archive, and since when.
    pub async fn archive_stats(&self, bus: &str) -> Result<(u64, Option<i64>), QueueError> {
        let stats = self.storage.stats(&archive_stream(bus)).await?;
        Ok((stats.visible + stats.in_flight + stats.delayed, stats.oldest_us))
    }

    /// Deletes archived events past their bus's retention.
    pub async fn expire(&self) -> Result<usize, QueueError> {
        let state = self.state();
        let mut n = 0;
        for (name, b) in &state.buses {
            if let Some(retention) = b.archive {
                n += self.storage.expire(&archive_stream(name), retention).await?;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entries(body: Value) -> Result<Vec<Result<Entry, EntryError>>, String> {
        put_entries(body.to_string().as_bytes(), "orders", || "id-1".to_string())
    }

    fn one(entry: Value) -> Result<Entry, EntryError> {
        entries(json!({ "Entries": [entry] })).unwrap().remove(0)
    }

    #[test]
    fn a_put_request_must_have_one_to_ten_entries() {
        assert!(
            put_entries(b"not json", "default", String::new)
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(entries(json!({})).unwrap_err().contains("1 to 10 entries"));
        assert!(
            entries(json!({ "Entries": [] }))
                .unwrap_err()
                .contains("1 to 10 entries")
        );
        let eleven: Vec<Value> = (0..11).map(|_| json!({})).collect();
        assert!(
            entries(json!({ "Entries": eleven }))
                .unwrap_err()
                .contains("has 11 entries")
        );
    }

    #[test]
    fn entries_become_events_with_defaults() {
        let (bus, event) =
            one(json!({ "Source": "shop", "DetailType": "OrderPlaced", "Detail": "{\"n\": 1}" })).unwrap();
        assert_eq!(bus, "orders", "the default bus is the caller's");
        assert_eq!((event.id.as_str(), event.detail.clone()), ("id-1", json!({ "n": 1 })));
        let envelope = event.envelope();
        assert_eq!(envelope["version"], "0");
        assert_eq!(envelope["account"], ACCOUNT);
        assert_eq!(envelope["region"], REGION);
        assert_eq!(envelope["resources"], json!([]));
        assert!(envelope.get("extensions").is_none());

        let (bus, event) = one(json!({
            "Source": "shop", "DetailType": "T", "Detail": { "inline": true },
            "EventBusName": "arn:aws:events:eu-west-1:123456789012:event-bus/billing",
            "Time": 1_700_000_000, "Resources": ["r1"],
        }))
        .unwrap();
        assert_eq!(bus, "billing");
        assert_eq!(event.time, "2023-11-14T22:13:20Z");
        assert_eq!(event.resources, ["r1"]);
        assert_eq!(event.detail, json!({ "inline": true }));
    }

    #[test]
    fn bad_entries_get_eventbridge_error_codes() {
        let base = json!({ "Source": "shop", "DetailType": "T", "Detail": "{}" });
        let with = |key: &str, value: Value| {
            let mut e = base.clone();
            e[key] = value;
            one(e).unwrap_err()
        };
        let without = |key: &str| {
            let mut e = base.clone();
            e.as_object_mut().unwrap().remove(key);
            one(e).unwrap_err()
        };
        assert_eq!(without("Source").message, "`Source` is required");
        assert_eq!(without("DetailType").code, "InvalidArgument");
        assert_eq!(without("Detail").message, "`Detail` is required");
        assert!(with("Source", json!("x".repeat(257))).message.contains("1 to 256"));
        assert!(with("DetailType", json!(5)).message.contains("must be a string"));
        assert_eq!(with("Detail", json!("[1]")).code, "MalformedDetail");
        assert_eq!(with("Detail", json!("{broken")).code, "MalformedDetail");
        assert_eq!(with("Detail", json!(3)).code, "MalformedDetail");
        assert!(with("Time", json!("yesterday")).message.contains("not an RFC 3339"));
        assert!(with("Resources", json!("r1")).message.contains("list of strings"));
        assert!(with("EventBusName", json!(1)).message.contains("must be a string"));
        assert!(
            with("Region", json!("x"))
                .message
                .contains("`Region` is not a PutEvents entry field")
        );
        assert!(
            with("Detail", json!({ "big": "x".repeat(MAX_EVENT) }))
                .message
                .contains("over 256 KiB")
        );
        assert_eq!(
            entries(json!({ "Entries": [5] })).unwrap()[0]
                .as_ref()
                .unwrap_err()
                .code,
            "InvalidArgument"
        );
    }

    fn cloudevent(data: &[u8]) -> CloudEvent {
        CloudEvent {
            id: "c1".into(),
            source: "tools".into(),
            event_type: "Notice".into(),
            time: Some("2026-11-23T10:00:00Z".into()),
            content_type: Some("application/json".into()),
            data: data.to_vec(),
            extensions: BTreeMap::from([
                ("subject".to_string(), "order/7".to_string()),
                ("traceparent".to_string(), "00-ab".to_string()),
            ]),
        }
    }

    #[test]
    fn cloudevents_map_onto_the_envelope() {
        let event = BusEvent::from_cloudevent(cloudevent(br#"{"a": 1}"#)).unwrap();
        let envelope = event.envelope();
        assert_eq!(envelope["id"], "c1");
        assert_eq!(envelope["source"], "tools");
        assert_eq!(envelope["detail-type"], "Notice");
        assert_eq!(envelope["time"], "2026-11-23T10:00:00Z");
        assert_eq!(envelope["resources"], json!(["order/7"]));
        assert_eq!(envelope["detail"], json!({ "a": 1 }));
        assert_eq!(envelope["extensions"], json!({ "traceparent": "00-ab" }));
        assert_eq!(BusEvent::from_cloudevent(cloudevent(b"")).unwrap().detail, json!({}));
        for data in [&b"[1]"[..], b"text", b"42"] {
            let why = BusEvent::from_cloudevent(cloudevent(data)).unwrap_err();
            assert!(why.contains("must be a JSON object"), "{why}");
        }
    }
}
