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
use toml_edit::{Item, Key, TableLike};

use crate::names::{FIFO, TargetChoice};
use crate::parse::{Checker, Kind, closest, span_of};
use crate::pattern::Pattern;
use crate::{Retry, Target, TargetKind};

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
    "input",
    "input_path",
    "input_paths",
    "input_template",
    "retries",
    "max_event_age",
    "backoff",
    "dead_letter",
];
/// Placeholders every input template may use.
const RESERVED: &[&str] = &[
    "aws.events.rule-name",
    "aws.events.rule-arn",
    "aws.events.event",
    "aws.events.event.json",
    "aws.events.event.ingestion-time",
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

/// What a target is sent: the event, or something made from it.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The whole event.
    Event,
    /// This JSON text, whatever the event.
    Constant(String),
    /// The part of the event at this path.
    Path(JsonPath),
    /// EventBridge's input transformer: values picked by path, put into a template.
    Template {
        paths: Vec<(String, JsonPath)>,
        template: String,
    },
}

/// A JSONPath of the form EventBridge's input paths use: `$`, then
/// `.name`, `['name']` or `[N]` steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    pub text: String,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(usize),
}

impl JsonPath {
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let bad = |why: &str| format!("`{text}` is not a JSON path: {why}; write e.g. \"$.detail.amount\"");
        let rest = text.strip_prefix('$').ok_or_else(|| bad("it must start with `$`"))?;
        let mut steps = Vec::new();
        let mut rest = rest;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let name = &after[..end];
                if name.is_empty() || name == "*" {
                    return Err(bad("a `.` must be followed by a field name"));
                }
                steps.push(Step::Field(name.to_string()));
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix("['") {
                let end = after.find("']").ok_or_else(|| bad("a `['` has no closing `']`"))?;
                steps.push(Step::Field(after[..end].to_string()));
                rest = &after[end + 2..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']').ok_or_else(|| bad("a `[` has no closing `]`"))?;
                let n = after[..end]
                    .parse()
                    .map_err(|_| bad("only field names and array indexes are supported"))?;
                steps.push(Step::Index(n));
                rest = &after[end + 1..];
            } else {
                return Err(bad("expected `.`, `['` or `[` after the `$`"));
            }
        }
        Ok(JsonPath {
            text: text.to_string(),
            steps,
        })
    }

    /// The value at this path in `value`, if there is one.
    pub fn get<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.steps.iter().try_fold(value, |v, step| match step {
            Step::Field(name) => v.get(name.as_str()),
            Step::Index(n) => v.get(*n),
        })
    }
}

/// What a template placeholder stands for when the input is made.
pub struct TemplateContext<'a> {
    pub event: &'a Value,
    pub rule: &'a str,
    pub rule_arn: &'a str,
    pub ingestion_time: &'a str,
}

impl Input {
    /// The body a target is sent for `event`.
    pub fn apply(&self, cx: &TemplateContext<'_>) -> Vec<u8> {
        match self {
            Input::Event => cx.event.to_string().into_bytes(),
            Input::Constant(text) => text.clone().into_bytes(),
            Input::Path(path) => path.get(cx.event).unwrap_or(&Value::Null).to_string().into_bytes(),
            Input::Template { paths, template } => fill(template, |name| {
                let value = match name {
                    "aws.events.rule-name" => Value::from(cx.rule),
                    "aws.events.rule-arn" => Value::from(cx.rule_arn),
                    "aws.events.event" | "aws.events.event.json" => cx.event.clone(),
                    "aws.events.event.ingestion-time" => Value::from(cx.ingestion_time),
                    _ => {
                        let (_, path) = paths.iter().find(|(n, _)| n == name)?;
                        path.get(cx.event).cloned().unwrap_or(Value::Null)
                    }
                };
                Some(value)
            })
            .into_bytes(),
        }
    }
}

/// Replaces each `<name>` of `template` for which `value` gives a value.
/// Inside a JSON string, a string goes in as its escaped text and anything
/// else as its escaped JSON; outside one, every value goes in as JSON.
fn fill(template: &str, mut value: impl FnMut(&str) -> Option<Value>) -> String {
    let mut out = String::with_capacity(template.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if c == '<'
            && let Some(end) = rest[1..].find('>')
            && let name = &rest[1..=end]
            && is_placeholder_name(name)
            && let Some(v) = value(name)
        {
            if in_string {
                let text = match &v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                let quoted = Value::from(text).to_string();
                out.push_str(&quoted[1..quoted.len() - 1]);
            } else {
                out.push_str(&v.to_string());
            }
            rest = &rest[end + 2..];
            continue;
        }
        if c == '\\' && in_string {
            escaped = !escaped;
        } else {
            if c == '"' && !escaped {
                in_string = !in_string;
            }
            escaped = false;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn is_placeholder_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Every `<name>` in a template.
fn placeholders(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    fill(template, |name| {
        names.push(name.to_string());
        None
    });
    names
}

impl Checker {
    pub(crate) fn buses(&mut self, key: &Key, item: &Item) -> Vec<Bus> {
        let Some(table) = self.kind_table(key, item, &BUS) else {
            return Vec::new();
        };
        let mut buses = Vec::new();
        for (name, item) in table.iter() {
            let Some(b) = self.named(table, key, name, item, &BUS) else {
                continue;
            };
            if !b.name_ok {
                continue;
            }
            let day = Duration::from_secs(86_400);
            let archive = match b.table.contains_key("archive") {
                true => {
                    match self.duration_in(b.table, "archive", &b.place, day, (Duration::from_secs(60), 3650 * day)) {
                        Some(d) => Some(d),
                        None => continue,
                    }
                }
                false => None,
            };
            buses.push(Bus {
                name: b.name.to_string(),
                archive,
            });
        }
        buses
    }

    pub(crate) fn rules(&mut self, key: &Key, item: &Item) -> Vec<Rule> {
        let Some(table) = self.kind_table(key, item, &RULE) else {
            return Vec::new();
        };
        let mut rules = Vec::new();
        for (name, item) in table.iter() {
            let Some(named) = self.named(table, key, name, item, &RULE) else {
                continue;
            };
            let (name, rkey, r, place) = (named.name, named.key, named.table, named.place);
            let mut ok = named.name_ok;
            let bus = match r.contains_key("bus") {
                true => self.reference(r, "bus", &place, "bus"),
                false => Some(DEFAULT_BUS.to_string()),
            };
            let pattern = match self.required(
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
                        self.error(
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
                        self.error(
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
                self.error(
                    item.span(),
                    format!("`description` of {place} must be a string"),
                    "write it in quotes",
                );
                ok = false;
            }
            let targets = match r.get_key_value("target") {
                Some((tkey, titem)) => {
                    let tables = self.array_of_tables(
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
                        match self.rule_target(t, &place) {
                            Some(target) => targets.push(target),
                            None => ok = false,
                        }
                    }
                    targets
                }
                None => {
                    self.error(
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
        }
        self.bus_cycles(&rules);
        rules
    }

    fn rule_target(&mut self, t: &dyn TableLike, place: &str) -> Option<RuleTarget> {
        self.unknown_keys(t, TARGET_KEYS, place);
        let kind = self.target(
            t,
            &TargetChoice {
                kinds: &[
                    (TargetKind::Function, "\"NAME\""),
                    (TargetKind::Queue, "\"NAME\""),
                    (TargetKind::Topic, "\"NAME\""),
                    (TargetKind::Bus, "\"NAME\""),
                ],
                place,
                span: None,
                missing: "names nothing to send to",
                one: "a target sends to one place: give each its own [[rule.NAME.target]]",
                verb: "names",
            },
        );
        if let Some(Target::Queue(q)) = &kind
            && self.names().has_tag("queue", q, FIFO)
        {
            self.error(
                None,
                format!("{place} sends to FIFO queue `{q}`"),
                "rules send to standard queues: target a queue without `fifo = true`",
            );
        }
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
        if !matches!(kind, Some(Target::Function(_))) {
            for key in ["retries", "max_event_age", "backoff", "dead_letter"] {
                if let Some((k, item)) = t.get_key_value(key) {
                    self.error(
                        span_of(k, item),
                        format!("{place} has `{key}`, but only function targets retry"),
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cx(event: &Value) -> TemplateContext<'_> {
        TemplateContext {
            event,
            rule: "big-orders",
            rule_arn: "arn:weft:events:local:000000000000:rule/default/big-orders",
            ingestion_time: "2026-11-23T10:00:00Z",
        }
    }

    #[test]
    fn paths_reach_fields_and_array_elements() {
        let event = json!({"detail": {"items": [{"sku": "a"}, {"sku": "b"}], "odd key": 1}});
        assert_eq!(JsonPath::parse("$").unwrap().get(&event), Some(&event));
        assert_eq!(
            JsonPath::parse("$.detail.items[1].sku").unwrap().get(&event),
            Some(&json!("b"))
        );
        assert_eq!(
            JsonPath::parse("$.detail['odd key']").unwrap().get(&event),
            Some(&json!(1))
        );
        assert_eq!(JsonPath::parse("$.detail.missing").unwrap().get(&event), None);
        for bad in ["detail", "$..x", "$.a[*]", "$.a[", "$x"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn templates_put_json_outside_quotes_and_text_inside() {
        let event = json!({"id": "e1", "detail": {"amount": 12.5, "who": "Ann \"A\"", "tags": ["x"]}});
        let input = Input::Template {
            paths: vec![
                ("amount".into(), JsonPath::parse("$.detail.amount").unwrap()),
                ("who".into(), JsonPath::parse("$.detail.who").unwrap()),
                ("tags".into(), JsonPath::parse("$.detail.tags").unwrap()),
                ("none".into(), JsonPath::parse("$.detail.none").unwrap()),
            ],
            template: r#"{"a": <amount>, "w": <who>, "text": "<who> paid <amount>", "t": <tags>, "n": <none>, "r": "<aws.events.rule-name>", "e": <aws.events.event>, "keep": "<b>"}"#.into(),
        };
        let out: Value = serde_json::from_slice(&input.apply(&cx(&event))).unwrap();
        assert_eq!(
            out,
            json!({"a": 12.5, "w": "Ann \"A\"", "text": "Ann \"A\" paid 12.5", "t": ["x"], "n": null,
                   "r": "big-orders", "e": event, "keep": "<b>"})
        );
    }

    #[test]
    fn escaped_quotes_do_not_end_a_string() {
        let event = json!({ "n": 7 });
        let input = Input::Template {
            paths: vec![("n".into(), JsonPath::parse("$.n").unwrap())],
            template: r#"{"a": "say \"<n>\"", "b": "\\", "c": <n>}"#.into(),
        };
        let out: Value = serde_json::from_slice(&input.apply(&cx(&event))).unwrap();
        assert_eq!(out, json!({ "a": "say \"7\"", "b": "\\", "c": 7 }));
    }

    #[test]
    fn text_templates_and_the_other_inputs() {
        let event = json!({"source": "shop", "detail": {"n": 1}});
        let text = Input::Template {
            paths: vec![("s".into(), JsonPath::parse("$.source").unwrap())],
            template: "event from <s> for <aws.events.rule-name>".into(),
        };
        assert_eq!(text.apply(&cx(&event)), b"event from \"shop\" for \"big-orders\"");
        assert_eq!(Input::Event.apply(&cx(&event)), event.to_string().into_bytes());
        assert_eq!(Input::Constant("[1]".into()).apply(&cx(&event)), b"[1]");
        assert_eq!(
            Input::Path(JsonPath::parse("$.detail").unwrap()).apply(&cx(&event)),
            b"{\"n\":1}"
        );
    }
}
