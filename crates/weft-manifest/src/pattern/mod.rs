//! Event patterns in EventBridge syntax: topic filter policies and bus rules.
//!
//! A pattern is a JSON object. A key maps either to a nested pattern or to
//! a list of matchers, any one of which must match the event's value at
//! that key. A matcher is a literal (string, number, boolean, null) or an
//! object: `prefix`, `suffix`, `equals-ignore-case`, `wildcard`,
//! `anything-but` (a value, a list, or a `prefix`/`suffix`/
//! `equals-ignore-case`/`wildcard` with a string or a list of strings),
//! `numeric` (up to two comparisons), `exists`, `cidr`. `$or` takes a list
//! of patterns. Every key of the pattern must match for the event to match.
//!
//! Events are seen flattened, as EventBridge sees them: a field path such
//! as `detail.items.sku` reaches every leaf (a string, number, boolean or
//! null) at that path, through objects and through arrays at any depth.
//! The steps of a path are joined with dots, in the pattern and in the
//! event alike, so a key `"items.sku"` is the same field as `items` holding
//! `sku`.
//! A condition holds when any leaf at its path matches any of its
//! matchers; `exists` looks only at leaves, so an object or an empty
//! array does not exist.
//!
//! [`Pattern::parse`] checks a pattern once and says what is wrong; it
//! turns it into *alternatives* (one per combination of `$or` branches),
//! each a list of conditions on field paths. [`Pattern::matches`] then
//! never fails. [`PatternSet`] compiles many patterns so that matching an
//! event costs about the same with 1 or 10,000 of them.

mod set;

use std::net::IpAddr;

use serde_json::{Map, Value};

pub use set::{PatternSet, Scratch};

/// The most alternatives the `$or`s of one pattern may multiply into.
const MAX_ALTERNATIVES: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    alternatives: Vec<Vec<Condition>>,
}

/// Any leaf at `path` matches any of `matchers` (for `exists: false`: there is no leaf).
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    path: Vec<String>,
    matchers: Vec<Matcher>,
}

#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Equals(Value),
    Prefix(String, bool),
    Suffix(String, bool),
    IgnoreCase(String),
    /// The literal runs between the `*`s, escapes resolved.
    Wildcard(Vec<String>),
    /// Matches a leaf that none of these match.
    AnythingBut(Vec<Matcher>),
    Numeric(Vec<(Comparison, f64)>),
    Exists(bool),
    Cidr(IpAddr, u8),
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
        Pattern::from_value(&value)
    }

    /// The empty pattern `{}`: matches every event.
    pub fn any() -> Pattern {
        Pattern {
            alternatives: vec![Vec::new()],
        }
    }

    /// Checks a pattern given as JSON.
    pub fn from_value(value: &Value) -> Result<Pattern, String> {
        let alternatives = alternatives(value, &[])?;
        Ok(Pattern { alternatives })
    }

    /// Whether `event` (a JSON object) matches.
    pub fn matches(&self, event: &Value) -> bool {
        self.alternatives.iter().any(|conditions| {
            conditions.iter().all(|c| {
                let mut leaves = Vec::new();
                collect_leaves(event, &c.path, &mut leaves);
                c.holds(leaves.iter().copied())
            })
        })
    }
}

/// The alternatives of the pattern object `value` found at `at`.
fn alternatives(value: &Value, at: &[String]) -> Result<Vec<Vec<Condition>>, String> {
    let Value::Object(map) = value else {
        return Err(format!("{}a pattern must be a JSON object", place(at)));
    };
    if map.is_empty() && !at.is_empty() {
        return Err(format!(
            "{}an empty object matches nothing: remove it or add fields",
            place(at)
        ));
    }
    let mut out: Vec<Vec<Condition>> = vec![Vec::new()];
    for (key, value) in map {
        let branches = if key == "$or" {
            let Value::Array(options) = value else {
                return Err(format!("{}`$or` takes a list of patterns", place(at)));
            };
            if options.len() < 2 {
                return Err(format!("{}`$or` needs at least two patterns", place(at)));
            }
            let mut branches = Vec::new();
            for option in options {
                branches.extend(alternatives(option, at)?);
            }
            branches
        } else {
            let here: Vec<String> = at.iter().cloned().chain(key.split('.').map(str::to_string)).collect();
            match value {
                Value::Object(_) => alternatives(value, &here)?,
                Value::Array(items) if items.is_empty() => {
                    return Err(format!("{}an empty list matches nothing", place(&here)));
                }
                Value::Array(items) => {
                    let matchers = items.iter().map(|i| matcher(i, &here)).collect::<Result<_, _>>()?;
                    vec![vec![Condition { path: here, matchers }]]
                }
                other => {
                    return Err(format!(
                        "{}values must be in a list: write [{other}] (a list of values any of which may match)",
                        place(&here)
                    ));
                }
            }
        };
        if out.len() * branches.len() > MAX_ALTERNATIVES {
            return Err(format!(
                "{}the `$or` branches combine into more than {MAX_ALTERNATIVES} alternatives: split the rule in two",
                place(at)
            ));
        }
        out = out
            .iter()
            .flat_map(|done| {
                branches
                    .iter()
                    .map(move |b| done.iter().chain(b).cloned().collect::<Vec<_>>())
            })
            .collect();
    }
    Ok(out)
}

/// Every leaf of `value` at `path`, through objects and arrays.
fn collect_leaves<'v>(value: &'v Value, path: &[String], out: &mut Vec<&'v Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| collect_leaves(v, path, out)),
        Value::Object(map) => {
            for (key, v) in map {
                if let Some(rest) = after_key(path, key) {
                    collect_leaves(v, rest, out)
                }
            }
        }
        leaf if path.is_empty() => out.push(leaf),
        _ => {}
    }
}

/// What is left of `path` past the event key `key`, if `path` goes
/// through it. A key with dots is as many steps as it has parts:
/// EventBridge joins the steps of a path with dots, so `{"a.b": 1}` and
/// `{"a": {"b": 1}}` have the same field `a.b`.
fn after_key<'p>(path: &'p [String], key: &str) -> Option<&'p [String]> {
    key.split('.').try_fold(path, |rest, part| {
        let (first, rest) = rest.split_first()?;
        (first == part).then_some(rest)
    })
}

impl Condition {
    /// Whether the leaves found at the condition's path satisfy it.
    fn holds<'v>(&self, leaves: impl Iterator<Item = &'v Value> + Clone) -> bool {
        self.matchers.iter().any(|m| match m {
            Matcher::Exists(want) => leaves.clone().next().is_some() == *want,
            m => leaves.clone().any(|v| m.matches_one(v)),
        })
    }
}

fn place(at: &[String]) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("at `{}`: ", at.join("."))
    }
}

fn string_arg(value: &Value, name: &str, at: &[String]) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{}`{name}` takes a string", place(at)))
}

fn matcher(item: &Value, at: &[String]) -> Result<Matcher, String> {
    let Value::Object(map) = item else {
        if item.is_array() {
            return Err(format!("{}a list cannot hold a list: flatten it", place(at)));
        }
        return Ok(Matcher::Equals(item.clone()));
    };
    let (op, arg) = operator(map, at)?;
    Ok(match op {
        "prefix" | "suffix" => {
            let (text, ignore_case) = match arg {
                Value::Object(inner) if inner.len() == 1 && inner.contains_key("equals-ignore-case") => (
                    string_arg(&inner["equals-ignore-case"], "equals-ignore-case", at)?.to_lowercase(),
                    true,
                ),
                Value::String(text) => (text.clone(), false),
                _ => {
                    return Err(format!(
                        "{}`{op}` takes a string, or {{\"equals-ignore-case\": \"...\"}} to ignore case",
                        place(at)
                    ));
                }
            };
            if op == "prefix" {
                Matcher::Prefix(text, ignore_case)
            } else {
                Matcher::Suffix(text, ignore_case)
            }
        }
        "equals-ignore-case" => Matcher::IgnoreCase(string_arg(arg, op, at)?.to_lowercase()),
        "wildcard" => wildcard_matcher(string_arg(arg, op, at)?, at)?,
        "exists" => Matcher::Exists(
            arg.as_bool()
                .ok_or_else(|| format!("{}`exists` takes true or false", place(at)))?,
        ),
        "numeric" => numeric(arg, at)?,
        "cidr" => cidr(arg, at)?,
        "anything-but" => anything_but(arg, at)?,
        other => {
            return Err(format!(
                "{}`{other}` is not a matcher: use prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric, exists or cidr",
                place(at)
            ));
        }
    })
}

/// The one operator of a matcher object and its argument.
fn operator<'m>(map: &'m Map<String, Value>, at: &[String]) -> Result<(&'m str, &'m Value), String> {
    let mut entries = map.iter();
    match (entries.next(), entries.next()) {
        (Some((op, arg)), None) => Ok((op.as_str(), arg)),
        _ => Err(format!(
            "{}a matcher object has exactly one operator, e.g. {{\"prefix\": \"a\"}}",
            place(at)
        )),
    }
}

/// A `wildcard` pattern split at its `*`s. `\*` is a literal `*` and `\\` a
/// literal `\`; a backslash before anything else, and two `*`s in a row, are
/// refused, as EventBridge refuses them.
fn wildcard_matcher(text: String, at: &[String]) -> Result<Matcher, String> {
    let mut parts = Vec::new();
    let mut run = String::new();
    let mut chars = text.chars();
    let mut after_star = false;
    while let Some(c) = chars.next() {
        match c {
            '*' if after_star => {
                return Err(format!("{}`wildcard` cannot have consecutive `*`", place(at)));
            }
            '*' => {
                parts.push(std::mem::take(&mut run));
                after_star = true;
                continue;
            }
            '\\' => match chars.next() {
                Some(escaped @ ('*' | '\\')) => run.push(escaped),
                _ => {
                    return Err(format!(
                        "{}`wildcard` is `{text}`: a backslash escapes only `*` or another backslash; write `\\\\` for a backslash",
                        place(at)
                    ));
                }
            },
            c => run.push(c),
        }
        after_star = false;
    }
    parts.push(run);
    Ok(Matcher::Wildcard(parts))
}

/// `anything-but`: a string, a number, a list of strings or of numbers, or
/// `prefix`, `suffix`, `wildcard` or `equals-ignore-case` with a string or a
/// list of strings.
fn anything_but(arg: &Value, at: &[String]) -> Result<Matcher, String> {
    let excluded = match arg {
        Value::Object(inner) => {
            let (op, arg) = operator(inner, at)?;
            if !matches!(op, "prefix" | "suffix" | "wildcard" | "equals-ignore-case") {
                return Err(format!(
                    "{}`anything-but` cannot take `{op}`: use a value, a list, or prefix, suffix, wildcard or equals-ignore-case",
                    place(at)
                ));
            }
            excluded_texts(op, arg, at)?
                .into_iter()
                .map(|text| match op {
                    "prefix" => Ok(Matcher::Prefix(text, false)),
                    "suffix" => Ok(Matcher::Suffix(text, false)),
                    "wildcard" => wildcard_matcher(text, at),
                    _ => Ok(Matcher::IgnoreCase(text.to_lowercase())),
                })
                .collect::<Result<_, _>>()?
        }
        Value::Array(values) => {
            let all = |kind: fn(&Value) -> bool| values.iter().all(kind);
            if values.is_empty() {
                return Err(format!(
                    "{}`anything-but` takes a list of strings or numbers, and this one is empty: add the values to exclude",
                    place(at)
                ));
            }
            if !all(|v| v.is_string() || v.is_number()) {
                return Err(format!(
                    "{}`anything-but` takes a list of strings or numbers; null, booleans, lists and objects cannot be excluded",
                    place(at)
                ));
            }
            if !(all(Value::is_string) || all(Value::is_number)) {
                return Err(format!(
                    "{}`anything-but` takes a list of strings or a list of numbers, not both: keep the values of the type the field holds",
                    place(at)
                ));
            }
            values.iter().cloned().map(Matcher::Equals).collect()
        }
        Value::String(_) | Value::Number(_) => vec![Matcher::Equals(arg.clone())],
        other => {
            return Err(format!(
                "{}`anything-but` cannot exclude {other}: it takes a string, a number, a list of either, or prefix, suffix, wildcard or equals-ignore-case",
                place(at)
            ));
        }
    };
    Ok(Matcher::AnythingBut(excluded))
}

/// The strings under `anything-but`'s `op`: one, or a list of them.
fn excluded_texts(op: &str, arg: &Value, at: &[String]) -> Result<Vec<String>, String> {
    let affix = op == "prefix" || op == "suffix";
    let not_strings = || {
        format!(
            "{}`anything-but` takes `{op}` with a string or a list of strings, e.g. {{\"{op}\": [\"a\", \"b\"]}}",
            place(at)
        )
    };
    let texts = match arg {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) if items.is_empty() => {
            return Err(format!(
                "{}`anything-but`: the list under `{op}` is empty: add the strings to exclude",
                place(at)
            ));
        }
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(not_strings)?,
        Value::Object(inner) if affix && inner.contains_key("equals-ignore-case") => {
            return Err(format!(
                "{}`anything-but` cannot take `{op}` with `equals-ignore-case`: list the casings to exclude instead, e.g. {{\"{op}\": [\"ab\", \"AB\"]}}",
                place(at)
            ));
        }
        _ => return Err(not_strings()),
    };
    if affix && texts.iter().any(String::is_empty) {
        return Err(format!(
            "{}`anything-but` cannot take an empty `{op}`: every string has it, so no string would match; remove it",
            place(at)
        ));
    }
    Ok(texts)
}

fn numeric(arg: &Value, at: &[String]) -> Result<Matcher, String> {
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

/// `{"cidr": "10.0.0.0/24"}`: an IPv4 or IPv6 network.
fn cidr(arg: &Value, at: &[String]) -> Result<Matcher, String> {
    let text = string_arg(arg, "cidr", at)?;
    let bad = |why: &str| {
        format!(
            "{}`cidr` is `{text}`: {why}; write a network like \"10.0.0.0/24\" or \"2001:db8::/32\"",
            place(at)
        )
    };
    let (addr, bits) = text.split_once('/').ok_or_else(|| bad("it has no `/` prefix length"))?;
    let addr: IpAddr = addr.parse().map_err(|_| bad("the address is not an IP address"))?;
    let bits: u8 = bits.parse().map_err(|_| bad("the prefix length is not a number"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if bits > max {
        return Err(bad(&format!("the prefix length is over {max}")));
    }
    Ok(Matcher::Cidr(addr, bits))
}

/// Whether `ip` is inside the network `net`/`bits` (same family only).
fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
        let (whole, rest) = (usize::from(bits / 8), bits % 8);
        a[..whole] == b[..whole] && (rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0)
    }
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => prefix_eq(&a.octets(), &b.octets(), bits),
        (IpAddr::V6(a), IpAddr::V6(b)) => prefix_eq(&a.octets(), &b.octets(), bits),
        _ => false,
    }
}

impl Matcher {
    /// Whether one leaf matches (never called for `exists`).
    fn matches_one(&self, v: &Value) -> bool {
        match self {
            Matcher::Equals(want) => equal(want, v),
            Matcher::Prefix(p, false) => v.as_str().is_some_and(|s| s.starts_with(p.as_str())),
            Matcher::Prefix(p, true) => v.as_str().is_some_and(|s| s.to_lowercase().starts_with(p.as_str())),
            Matcher::Suffix(p, false) => v.as_str().is_some_and(|s| s.ends_with(p.as_str())),
            Matcher::Suffix(p, true) => v.as_str().is_some_and(|s| s.to_lowercase().ends_with(p.as_str())),
            Matcher::IgnoreCase(p) => v.as_str().is_some_and(|s| s.to_lowercase() == *p),
            Matcher::Wildcard(parts) => v.as_str().is_some_and(|s| wildcard(parts, s)),
            // Any value that is there, `null` and booleans too: only a
            // missing field escapes anything-but.
            Matcher::AnythingBut(excluded) => !excluded.iter().any(|m| m.matches_one(v)),
            Matcher::Numeric(parts) => v.as_f64().is_some_and(|n| {
                parts.iter().all(|(op, x)| match op {
                    Comparison::Less => n < *x,
                    Comparison::LessOrEqual => n <= *x,
                    Comparison::Equal => n == *x,
                    Comparison::GreaterOrEqual => n >= *x,
                    Comparison::Greater => n > *x,
                })
            }),
            Matcher::Cidr(net, bits) => v
                .as_str()
                .and_then(|s| s.parse::<IpAddr>().ok())
                .is_some_and(|ip| in_network(ip, *net, *bits)),
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

/// Whether `text` is the literal `parts` with any run of characters
/// between each two.
fn wildcard(parts: &[String], text: &str) -> bool {
    let [first, middles @ .., last] = parts else {
        return parts.first().is_some_and(|only| only == text);
    };
    if !text.starts_with(first.as_str())
        || !text[first.len()..].ends_with(last.as_str())
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in middles {
        match rest.find(middle.as_str()) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}
