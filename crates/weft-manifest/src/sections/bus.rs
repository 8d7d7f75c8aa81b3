//! `[bus.NAME]` and `[rule.NAME]`: an event bus that routes events by
//! content, as EventBridge does.
//!
//! A rule matches the events of one bus against an EventBridge pattern and
//! sends each match to its targets: a function, a queue, a topic or another
//! bus. A target may reshape the event first (`input`, `input_path`, or
//! `input_paths` with `input_template`: EventBridge's input transformer);
//! a function target retries on its own and may have a dead-letter queue.

use std::time::Duration;

use serde_json::Value;
use toml_edit::{Table, TableLike};

use crate::input::{Input, JsonPath, RESERVED, fill, is_placeholder_name, placeholders};
use crate::names::{NAMED_TARGETS, Names, TargetChoice};
use crate::parse::{Checker, Kind, closest, span_of};
use crate::pattern::Pattern;
use crate::section::Section;
use crate::{Manifest, Retry, Target};

/// The bus every app has, whether or not it is declared.
pub const DEFAULT_BUS: &str = "default";
/// `retries` of a function target when the manifest does not say (as EventBridge).
pub const DEFAULT_RETRIES: u32 = 185;
/// `max_event_age` of a function target when the manifest does not say (as EventBridge).
pub const DEFAULT_MAX_EVENT_AGE: Duration = Duration::from_secs(24 * 3600);

const BUS: Kind = Kind {
    name: "bus",
    keys: &["archive"],
    example: "orders",
    help: "write the bus as `[bus.NAME]`",
};
const RULE: Kind = Kind {
    name: "rule",
    keys: &["bus", "pattern", "target", "enabled", "description"],
    example: "big-orders",
    help: "write the rule as `[rule.NAME]`",
};
const TARGET_KEYS: &[&str] = &[
    "function",
    "queue",
    "topic",
    "bus",
    "workflow",
    "input",
    "input_path",
    "input_paths",
    "input_template",
    "retries",
    "max_event_age",
    "backoff",
    "dead_letter",
];
/// `[bus.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bus {
    pub name: String,
    /// Keep every event put on the bus this long, for replay.
    pub archive: Option<Duration>,
}

/// `[rule.NAME]`: events on `bus` matching `pattern` go to every target.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub bus: String,
    pub pattern: Pattern,
    pub pattern_text: String,
    pub enabled: bool,
    pub targets: Vec<RuleTarget>,
}

/// `[[rule.NAME.target]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleTarget {
    /// A function, queue, topic or bus.
    pub target: Target,
    pub input: Input,
    /// Function targets: `retries` + 1 attempts, the first retry delay
    /// `backoff` (doubling), and `max_event_age` (always set), past which an
    /// event is not tried again.
    pub retry: Retry,
    /// Function targets: a standard queue for events that could not be delivered.
    pub dead_letter: Option<String>,
}

pub(crate) struct Buses;

impl Section for Buses {
    fn keys(&self) -> &[&str] {
        &["bus", "rule"]
    }

    fn declare(&self, root: &Table, names: &mut Names) {
        names.declare_tables(root, "bus");
        names.declare_tables(root, "rule");
        names.declare("bus", DEFAULT_BUS);
    }

    fn check(&self, c: &mut Checker, root: &Table, manifest: &mut Manifest) {
        manifest.buses = c.buses(root);
        manifest.rules = c.rules(root);
    }
}

impl Checker {
    fn buses(&mut self, root: &Table) -> Vec<Bus> {
        let mut buses = Vec::new();
        self.each_named(root, &BUS, |c, b| {
            if !b.name_ok {
                return;
            }
            let day = Duration::from_secs(86_400);
            let archive = match b.table.contains_key("archive") {
                true => match c.duration_in(b.table, "archive", &b.place, day, (Duration::from_secs(60), 3650 * day)) {
                    Some(d) => Some(d),
                    None => return,
                },
                false => None,
            };
            buses.push(Bus {
                name: b.name.to_string(),
                archive,
            });
        });
        buses
    }

    fn rules(&mut self, root: &Table) -> Vec<Rule> {
        let mut rules = Vec::new();
        self.each_named(root, &RULE, |c, named| {
            let (name, rkey, r, place) = (named.name, named.key, named.table, named.place);
            let mut ok = named.name_ok;
            let bus = match r.contains_key("bus") {
                true => c.reference(r, "bus", &place, "bus"),
                false => Some(DEFAULT_BUS.to_string()),
            };
            let pattern = match c.required(
                r,
                "pattern",
                &place,
                "'{\"source\": [\"shop\"]}'",
                rkey.span(),
                "add e.g. pattern = '{\"source\": [\"shop\"]}' (an EventBridge event pattern)",
            ) {
                Some((text, span)) => match Pattern::parse(text) {
                    Ok(p) => Some((p, text.to_string())),
                    Err(why) => {
                        c.error(
                            span,
                            format!("`pattern` of {place} is not a valid event pattern: {why}"),
                            "write an EventBridge pattern as JSON, e.g. pattern = '{\"source\": [\"shop\"], \"detail-type\": [\"order.placed\"]}'",
                        );
                        None
                    }
                },
                None => None,
            };
            let enabled = match r.get("enabled") {
                None => Some(true),
                Some(item) => match item.as_bool() {
                    Some(b) => Some(b),
                    None => {
                        c.error(
                            item.span(),
                            format!("`enabled` of {place} must be true or false"),
                            "write `enabled = false` to keep the rule without running it",
                        );
                        None
                    }
                },
            };
            if let Some(item) = r.get("description")
                && !item.is_str()
            {
                c.error(
                    item.span(),
                    format!("`description` of {place} must be a string"),
                    "write it in quotes",
                );
                ok = false;
            }
            let targets = match r.get_key_value("target") {
                Some((tkey, titem)) => {
                    let tables = c.array_of_tables(
                        tkey,
                        titem,
                        &format!("rule.{name}.target"),
                        &format!(
                            "write each target as `[[rule.{name}.target]]` with `function`, `queue`, `topic` or `bus`"
                        ),
                    );
                    let mut targets = Vec::new();
                    for (n, t) in tables.into_iter().enumerate() {
                        let place = format!("target #{} of [rule.{name}]", n + 1);
                        match c.rule_target(t, &place) {
                            Some(target) => targets.push(target),
                            None => ok = false,
                        }
                    }
                    targets
                }
                None => {
                    c.error(
                        rkey.span(),
                        format!("{place} has no targets, so it would do nothing"),
                        format!("add a target:\n[[rule.{name}.target]]\nfunction = \"NAME\""),
                    );
                    ok = false;
                    Vec::new()
                }
            };
            if let (true, Some(bus), Some((pattern, pattern_text)), Some(enabled)) = (ok, bus, pattern, enabled) {
                rules.push(Rule {
                    name: name.to_string(),
                    bus,
                    pattern,
                    pattern_text,
                    enabled,
                    targets,
                });
            }
        });
        self.bus_cycles(&rules);
        rules
    }

    fn rule_target(&mut self, t: &dyn TableLike, place: &str) -> Option<RuleTarget> {
        self.unknown_keys(t, TARGET_KEYS, place);
        let kind = self.target(
            t,
            &TargetChoice {
                kinds: NAMED_TARGETS,
                place,
                span: None,
                missing: "names nothing to send to",
                one: "a target sends to one place: give each its own [[rule.NAME.target]]",
                verb: "names",
                standard_queue: Some((
                    "sends to",
                    "rules send to standard queues: target a queue without `fifo = true`",
                )),
            },
        );
        let input = self.target_input(t, place);
        if matches!(kind, Some(Target::Bus(_))) && !matches!(input, Some(Input::Event)) {
            self.error(
                None,
                format!("{place} sends to a bus and reshapes the event"),
                "a bus takes whole events: remove `input`, `input_path` and `input_template` from this target",
            );
            return None;
        }
        let mut retry_keys_ok = true;
        if !matches!(kind, Some(Target::Function(_) | Target::Workflow(_))) {
            for key in ["retries", "max_event_age", "backoff", "dead_letter"] {
                if let Some((k, item)) = t.get_key_value(key) {
                    self.error(
                        span_of(k, item),
                        format!("{place} has `{key}`, but only function and workflow targets retry"),
                        "a queue, topic or bus target is written when the event is put, or the put fails: remove it",
                    );
                    retry_keys_ok = false;
                }
            }
        }
        let retries = self.integer_in(t, "retries", place, DEFAULT_RETRIES, (0, 185));
        let max_event_age = self.duration_in(
            t,
            "max_event_age",
            place,
            DEFAULT_MAX_EVENT_AGE,
            (Duration::from_secs(60), Duration::from_secs(24 * 3600)),
        );
        let backoff = self.duration_in(
            t,
            "backoff",
            place,
            Duration::from_secs(1),
            (Duration::ZERO, Duration::from_secs(3600)),
        );
        let dead_letter = self.dead_letter(t, place, "\"failed-events\"").ok();
        Some(RuleTarget {
            target: kind?,
            input: input?,
            retry: Retry {
                max_attempts: retries? + 1,
                backoff: backoff?,
                max_age: Some(max_event_age?),
            },
            dead_letter: dead_letter?,
        })
        .filter(|_| retry_keys_ok)
    }

    fn target_input(&mut self, t: &dyn TableLike, place: &str) -> Option<Input> {
        let given: Vec<&str> = ["input", "input_path", "input_template"]
            .into_iter()
            .filter(|k| t.contains_key(k))
            .collect();
        if given.len() > 1 {
            self.error(
                None,
                format!("{place} has both `{}` and `{}`", given[0], given[1]),
                "a target takes the whole event, `input` (fixed JSON), `input_path`, or `input_paths` with `input_template`: keep one",
            );
            return None;
        }
        if t.contains_key("input_paths") && !t.contains_key("input_template") {
            self.error(
                None,
                format!("{place} has `input_paths` but no `input_template`"),
                "add e.g. input_template = '{\"amount\": <amount>}' using the names of `input_paths`",
            );
            return None;
        }
        if let Some((text, span)) = self.string(t, "input", place, "'{\"fixed\": true}'") {
            return match serde_json::from_str::<Value>(text) {
                Ok(_) => Some(Input::Constant(text.to_string())),
                Err(e) => {
                    self.error(
                        span,
                        format!("`input` of {place} is not JSON: {e}"),
                        "write the fixed input as JSON text, e.g. input = '{\"report\": \"daily\"}'",
                    );
                    None
                }
            };
        }
        if let Some((text, span)) = self.string(t, "input_path", place, "\"$.detail\"") {
            return match JsonPath::parse(text) {
                Ok(p) => Some(Input::Path(p)),
                Err(why) => {
                    self.error(
                        span,
                        format!("`input_path` of {place}: {why}"),
                        "e.g. input_path = \"$.detail\"",
                    );
                    None
                }
            };
        }
        let Some((template, tspan)) = self.string(t, "input_template", place, "'{\"id\": <id>}'") else {
            return (!given.iter().any(|k| t.contains_key(k))).then_some(Input::Event);
        };
        let mut paths = Vec::new();
        let mut ok = true;
        if let Some((pkey, pitem)) = t.get_key_value("input_paths") {
            match pitem.as_table_like() {
                Some(map) => {
                    for (name, value) in map.iter() {
                        let at = value.span().or_else(|| span_of(pkey, pitem));
                        if name.starts_with("aws.") || !is_placeholder_name(name) {
                            self.error(
                                at,
                                format!("`input_paths` of {place} has the name `{name}`"),
                                "names use letters, digits, `_`, `-` and `.`, and may not start with `aws.` (kept for weft's own)",
                            );
                            ok = false;
                            continue;
                        }
                        match value.as_str().map(JsonPath::parse) {
                            Some(Ok(p)) => paths.push((name.to_string(), p)),
                            Some(Err(why)) => {
                                self.error(
                                    at,
                                    format!("`input_paths.{name}` of {place}: {why}"),
                                    "e.g. \"$.detail.id\"",
                                );
                                ok = false;
                            }
                            None => {
                                self.error(
                                    at,
                                    format!("`input_paths.{name}` of {place} must be a string"),
                                    "write a JSON path in quotes, e.g. \"$.detail.id\"",
                                );
                                ok = false;
                            }
                        }
                    }
                }
                None => {
                    self.error(
                        span_of(pkey, pitem),
                        format!("`input_paths` of {place} must be a table of names to JSON paths"),
                        "write e.g. input_paths = { amount = \"$.detail.amount\" }",
                    );
                    ok = false;
                }
            }
        }
        for name in placeholders(template) {
            if !RESERVED.contains(&name.as_str()) && !paths.iter().any(|(n, _)| *n == name) {
                let names: Vec<&str> = paths.iter().map(|(n, _)| n.as_str()).collect();
                let help = match closest(&name, &names) {
                    Some(near) => format!("did you mean `<{near}>`?"),
                    None => format!(
                        "add `{name} = \"$.detail.{name}\"` to `input_paths`, or use a reserved name such as <aws.events.rule-name>"
                    ),
                };
                self.error(
                    tspan.clone(),
                    format!("`input_template` of {place} uses `<{name}>`, which `input_paths` does not define"),
                    &help,
                );
                ok = false;
            }
        }
        let trimmed = template.trim_start();
        if ok && (trimmed.starts_with('{') || trimmed.starts_with('[')) {
            let sample = fill(template, |_| Some(Value::Null));
            if let Err(e) = serde_json::from_str::<Value>(&sample) {
                self.error(
                    tspan,
                    format!("`input_template` of {place} does not make JSON: {e}"),
                    "outside quotes a placeholder stands for a JSON value (`{\"n\": <n>}`); inside quotes for text (`{\"s\": \"id <id>\"}`)",
                );
                ok = false;
            }
        }
        ok.then(|| Input::Template {
            paths,
            template: template.to_string(),
        })
    }

    /// Refuses rules whose bus targets could send an event round in a circle.
    fn bus_cycles(&mut self, rules: &[Rule]) {
        let edges: Vec<(&str, &str, &str)> = rules
            .iter()
            .flat_map(|r| {
                r.targets.iter().filter_map(move |t| match &t.target {
                    Target::Bus(b) => Some((r.bus.as_str(), b.as_str(), r.name.as_str())),
                    _ => None,
                })
            })
            .collect();
        for (from, to, rule) in &edges {
            // Is `from` reachable again from `to`?
            let mut path = vec![*from, *to];
            let mut seen = vec![*to];
            let mut stack = vec![(*to, path.clone())];
            while let Some((at, trail)) = stack.pop() {
                if at == *from {
                    path = trail;
                    self.error(
                        None,
                        format!(
                            "rule `{rule}` sends events from bus `{from}` to bus `{to}`, and they can come back: {}",
                            path.join(" → ")
                        ),
                        "bus targets must not form a loop: remove one of the bus targets, or send to a function or queue instead",
                    );
                    return;
                }
                for (f, t, _) in &edges {
                    if *f == at && (!seen.contains(t) || *t == *from) {
                        seen.push(t);
                        let mut next = trail.clone();
                        next.push(t);
                        stack.push((t, next));
                    }
                }
            }
        }
    }
}
