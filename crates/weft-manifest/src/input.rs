//! What a rule target is sent: the whole event, fixed JSON, the part at a
//! JSON path, or EventBridge's input transformer (values picked by path and
//! put into a template). Checked by the bus section, applied by delivery.

use serde_json::Value;

/// Placeholders every input template may use.
pub(crate) const RESERVED: &[&str] = &[
    "aws.events.rule-name",
    "aws.events.rule-arn",
    "aws.events.event",
    "aws.events.event.json",
    "aws.events.event.ingestion-time",
];

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
pub(crate) fn fill(template: &str, mut value: impl FnMut(&str) -> Option<Value>) -> String {
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

pub(crate) fn is_placeholder_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Every `<name>` in a template.
pub(crate) fn placeholders(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    fill(template, |name| {
        names.push(name.to_string());
        None
    });
    names
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
