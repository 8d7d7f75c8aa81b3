//! Event patterns in EventBridge syntax, used as topic filter policies
//! (and, later, by the event bus).
//!
//! A pattern is a JSON object. A key maps either to a nested pattern or to
//! a list of matchers, any one of which must match the event's value at
//! that key (when the event's value is an array, any one element). A
//! matcher is a literal (string, number, boolean, null) or an object:
//! `prefix`, `suffix`, `equals-ignore-case`, `wildcard`, `anything-but`
//! (a value, a list, or a `prefix`/`suffix`/`equals-ignore-case`),
//! `numeric` (up to two comparisons), `exists`. `$or` takes a list of
//! patterns. Every key of the pattern must match for the event to match.
//!
//! [`Pattern::parse`] checks a pattern once and says what is wrong;
//! [`Pattern::matches`] then never fails.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    fields: Vec<(String, Node)>,
    any_of: Vec<Vec<Pattern>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Nested(Pattern),
    Matchers(Vec<Matcher>),
}

#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Equals(Value),
    Prefix(String, bool),
    Suffix(String, bool),
    IgnoreCase(String),
    Wildcard(String),
    AnythingBut(Box<Matcher>),
    AnythingButAny(Vec<Value>),
    Numeric(Vec<(Comparison, f64)>),
    Exists(bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Less,
    LessOrEqual,
    Equal,
    GreaterOrEqual,
    Greater,
}

impl Pattern {
    /// Parses and checks a pattern from JSON text.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("the pattern is not JSON: {e}"))?;
        Pattern::from_value(&value, "")
    }

    fn from_value(value: &Value, at: &str) -> Result<Pattern, String> {
        let Value::Object(map) = value else {
            return Err(format!("{}a pattern must be a JSON object", place(at)));
        };
        if map.is_empty() && !at.is_empty() {
            return Err(format!(
                "{}an empty object matches nothing: remove it or add fields",
                place(at)
            ));
        }
        let mut pattern = Pattern {
            fields: Vec::new(),
            any_of: Vec::new(),
        };
        for (key, value) in map {
            let here = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            if key == "$or" {
                let Value::Array(options) = value else {
                    return Err(format!("{}`$or` takes a list of patterns", place(&here)));
                };
                if options.len() < 2 {
                    return Err(format!("{}`$or` needs at least two patterns", place(&here)));
                }
                let options = options
                    .iter()
                    .map(|o| Pattern::from_value(o, at))
                    .collect::<Result<_, _>>()?;
                pattern.any_of.push(options);
                continue;
            }
            let node = match value {
                Value::Object(_) => Node::Nested(Pattern::from_value(value, &here)?),
                Value::Array(items) if items.is_empty() => {
                    return Err(format!("{}an empty list matches nothing", place(&here)));
                }
                Value::Array(items) => {
                    Node::Matchers(items.iter().map(|i| matcher(i, &here)).collect::<Result<_, _>>()?)
                }
                other => {
                    return Err(format!(
                        "{}values must be in a list: write [{other}] (a list of values any of which may match)",
                        place(&here)
                    ));
                }
            };
            pattern.fields.push((key.clone(), node));
        }
        Ok(pattern)
    }

    /// Whether `event` (a JSON object) matches.
    pub fn matches(&self, event: &Value) -> bool {
        self.fields.iter().all(|(key, node)| {
            let value = event.get(key);
            match node {
                Node::Nested(p) => value.is_some_and(|v| v.is_object() && p.matches(v)),
                Node::Matchers(ms) => ms.iter().any(|m| m.matches(value)),
            }
        }) && self
            .any_of
            .iter()
            .all(|options| options.iter().any(|p| p.matches(event)))
    }
}

fn place(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("at `{at}`: ")
    }
}

fn string_arg(value: &Value, name: &str, at: &str) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{}`{name}` takes a string", place(at)))
}

fn matcher(item: &Value, at: &str) -> Result<Matcher, String> {
    let Value::Object(map) = item else {
        return Ok(Matcher::Equals(item.clone()));
    };
    if map.len() != 1 {
        return Err(format!(
            "{}a matcher object has exactly one operator, e.g. {{\"prefix\": \"a\"}}",
            place(at)
        ));
    }
    let (op, arg) = map.iter().next().expect("one entry");
    Ok(match op.as_str() {
        "prefix" | "suffix" => {
            let (text, ignore_case) = match arg {
                Value::Object(inner) if inner.len() == 1 && inner.contains_key("equals-ignore-case") => (
                    string_arg(&inner["equals-ignore-case"], "equals-ignore-case", at)?,
                    true,
                ),
                _ => (string_arg(arg, op, at)?, false),
            };
            if op == "prefix" {
                Matcher::Prefix(text, ignore_case)
            } else {
                Matcher::Suffix(text, ignore_case)
            }
        }
        "equals-ignore-case" => Matcher::IgnoreCase(string_arg(arg, op, at)?),
        "wildcard" => {
            let w = string_arg(arg, op, at)?;
            if w.contains("**") {
                return Err(format!("{}`wildcard` cannot have consecutive `*`", place(at)));
            }
            Matcher::Wildcard(w)
        }
        "exists" => Matcher::Exists(
            arg.as_bool()
                .ok_or_else(|| format!("{}`exists` takes true or false", place(at)))?,
        ),
        "numeric" => numeric(arg, at)?,
        "anything-but" => match arg {
            Value::Array(values) => {
                if values.is_empty() || values.iter().any(|v| !(v.is_string() || v.is_number())) {
                    return Err(format!(
                        "{}`anything-but` takes a list of strings or numbers",
                        place(at)
                    ));
                }
                Matcher::AnythingButAny(values.clone())
            }
            Value::Object(inner) => {
                let m = matcher(arg, at)?;
                match m {
                    Matcher::Prefix(..) | Matcher::Suffix(..) | Matcher::IgnoreCase(_) | Matcher::Wildcard(_) => {
                        Matcher::AnythingBut(Box::new(m))
                    }
                    _ => {
                        let name = inner.keys().next().cloned().unwrap_or_default();
                        return Err(format!("{}`anything-but` cannot take `{name}`", place(at)));
                    }
                }
            }
            Value::String(_) | Value::Number(_) => Matcher::AnythingButAny(vec![arg.clone()]),
            _ => {
                return Err(format!(
                    "{}`anything-but` takes a string, a number, a list or a prefix/suffix",
                    place(at)
                ));
            }
        },
        "cidr" => return Err(format!("{}`cidr` is not supported yet", place(at))),
        other => {
            return Err(format!(
                "{}`{other}` is not a matcher: use prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric or exists",
                place(at)
            ));
        }
    })
}

fn numeric(arg: &Value, at: &str) -> Result<Matcher, String> {
    let bad = || {
        format!(
            "{}`numeric` takes [\"op\", number] or [\"op\", number, \"op\", number] with op one of < <= = >= >",
            place(at)
        )
    };
    let Value::Array(items) = arg else { return Err(bad()) };
    if items.is_empty() || items.len() % 2 != 0 || items.len() > 4 {
        return Err(bad());
    }
    let mut parts = Vec::new();
    for pair in items.chunks(2) {
        let op = match pair[0].as_str() {
            Some("<") => Comparison::Less,
            Some("<=") => Comparison::LessOrEqual,
            Some("=") => Comparison::Equal,
            Some(">=") => Comparison::GreaterOrEqual,
            Some(">") => Comparison::Greater,
            _ => return Err(bad()),
        };
        let n = pair[1].as_f64().ok_or_else(bad)?;
        parts.push((op, n));
    }
    if parts.len() == 2 {
        let lower = matches!(parts[0].0, Comparison::Greater | Comparison::GreaterOrEqual);
        let upper = matches!(parts[1].0, Comparison::Less | Comparison::LessOrEqual);
        if !(lower && upper) || parts[0].1 > parts[1].1 {
            return Err(format!(
                "{}a numeric range is [\">\" or \">=\", low, \"<\" or \"<=\", high] with low <= high",
                place(at)
            ));
        }
    }
    Ok(Matcher::Numeric(parts))
}

fn text_of(value: &Value) -> Option<&str> {
    value.as_str()
}

impl Matcher {
    /// A missing field matches only `exists: false`; an array matches
    /// when any element does.
    fn matches(&self, value: Option<&Value>) -> bool {
        match (self, value) {
            (Matcher::Exists(want), v) => v.is_some_and(|v| !v.is_object()) == *want,
            (_, None) => false,
            (_, Some(Value::Array(items))) => items.iter().any(|v| self.matches_one(v)),
            (_, Some(v)) => self.matches_one(v),
        }
    }

    fn matches_one(&self, v: &Value) -> bool {
        match self {
            Matcher::Equals(want) => equal(want, v),
            Matcher::Prefix(p, false) => text_of(v).is_some_and(|s| s.starts_with(p.as_str())),
            Matcher::Prefix(p, true) => text_of(v).is_some_and(|s| s.to_lowercase().starts_with(&p.to_lowercase())),
            Matcher::Suffix(p, false) => text_of(v).is_some_and(|s| s.ends_with(p.as_str())),
            Matcher::Suffix(p, true) => text_of(v).is_some_and(|s| s.to_lowercase().ends_with(&p.to_lowercase())),
            Matcher::IgnoreCase(p) => text_of(v).is_some_and(|s| s.to_lowercase() == p.to_lowercase()),
            Matcher::Wildcard(w) => text_of(v).is_some_and(|s| wildcard(w, s)),
            Matcher::AnythingBut(inner) => (v.is_string() || v.is_number()) && !inner.matches_one(v),
            Matcher::AnythingButAny(values) => (v.is_string() || v.is_number()) && !values.iter().any(|x| equal(x, v)),
            Matcher::Numeric(parts) => v.as_f64().is_some_and(|n| {
                parts.iter().all(|(op, x)| match op {
                    Comparison::Less => n < *x,
                    Comparison::LessOrEqual => n <= *x,
                    Comparison::Equal => n == *x,
                    Comparison::GreaterOrEqual => n >= *x,
                    Comparison::Greater => n > *x,
                })
            }),
            Matcher::Exists(_) => true,
        }
    }
}

/// Equality as EventBridge compares: numbers by value, the rest exactly.
fn equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// `*` matches any run of characters.
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}
