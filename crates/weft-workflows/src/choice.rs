//! Choice rules evaluated against a state's input (JSONPath): the
//! comparison operators, their `Path` forms, the `Is*` tests, and `And`,
//! `Or`, `Not`.
//!
//! A rule whose `Variable` names nothing fails with `States.Runtime`, as on
//! Step Functions, except the `Is*` tests, which are about presence and
//! type: a value that is absent is not null, not a number, and so on. A
//! comparison with a value of another type than the operator's is false.

use serde_json::Value;

use crate::definition::{Condition, Operand, Relation, Test};
use crate::execution::Failure;
use crate::path::{Env, Path};

/// Whether `condition` holds for `input`.
pub fn holds(condition: &Condition, input: &Value, env: &Env<'_>) -> Result<bool, Failure> {
    match condition {
        Condition::And(all) => {
            for c in all {
                if !holds(c, input, env)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Condition::Or(any) => {
            for c in any {
                if holds(c, input, env)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Condition::Not(c) => Ok(!holds(c, input, env)?),
        Condition::Test { variable, test } => test_holds(variable, test, input, env),
        Condition::Jsonata(_) => Err(Failure::runtime(
            "a JSONata Condition reached the JSONPath evaluator; the state's QueryLanguage is JSONata",
        )),
    }
}

fn test_holds(variable: &str, test: &Test, input: &Value, env: &Env<'_>) -> Result<bool, Failure> {
    let path = Path::parse(variable).map_err(|e| Failure::runtime(e.to_string()))?;
    let found = path.matches(input, env).into_iter().next().cloned();
    if let Some(result) = type_test(test, found.as_ref()) {
        return Ok(result);
    }
    let Some(value) = found else {
        return Err(Failure::runtime(format!(
            "the Choice rule's Variable {variable} matches nothing in the input; test it with IsPresent first"
        )));
    };
    Ok(match test {
        Test::String(relation, o) => {
            let other = match o {
                Operand::Literal(s) => Some(s.clone()),
                Operand::Path(_) => operand_value(o, input, env)?.and_then(|v| v.as_str().map(str::to_string)),
            };
            match (value.as_str(), other) {
                (Some(a), Some(b)) => compare(*relation, a.cmp(b.as_str())),
                _ => false,
            }
        }
        Test::Numeric(relation, o) => {
            let other = match o {
                Operand::Literal(n) => Some(*n),
                Operand::Path(_) => operand_value(o, input, env)?.and_then(|v| v.as_f64()),
            };
            match (value.as_f64(), other) {
                (Some(a), Some(b)) => a.partial_cmp(&b).is_some_and(|o| compare(*relation, o)),
                _ => false,
            }
        }
        Test::Boolean(o) => {
            let other = match o {
                Operand::Literal(b) => Some(*b),
                Operand::Path(_) => operand_value(o, input, env)?.and_then(|v| v.as_bool()),
            };
            matches!((value.as_bool(), other), (Some(a), Some(b)) if a == b)
        }
        Test::Timestamp(relation, o) => {
            let other = match o {
                Operand::Literal(t) => Some(*t),
                Operand::Path(_) => operand_value(o, input, env)?.and_then(|v| v.as_str().and_then(timestamp)),
            };
            match (value.as_str().and_then(timestamp), other) {
                (Some(a), Some(b)) => compare(*relation, a.cmp(&b)),
                _ => false,
            }
        }
        Test::StringMatches(pattern) => value.as_str().is_some_and(|s| wildcard(pattern, s)),
        // The presence and type tests were answered by `type_test`.
        _ => false,
    })
}

/// The answer of a presence or type test (`IsPresent`, `IsNull`, ...) on
/// what the variable found, or `None` for a comparison.
fn type_test(test: &Test, found: Option<&Value>) -> Option<bool> {
    let is = |want: bool, kind: fn(&Value) -> bool| Some(found.is_some_and(kind) == want);
    match test {
        Test::IsPresent(want) => Some(found.is_some() == *want),
        Test::IsNull(want) => is(*want, Value::is_null),
        Test::IsNumeric(want) => is(*want, Value::is_number),
        Test::IsString(want) => is(*want, Value::is_string),
        Test::IsBoolean(want) => is(*want, Value::is_boolean),
        Test::IsTimestamp(want) => is(*want, |v| v.as_str().is_some_and(|s| timestamp(s).is_some())),
        _ => None,
    }
}

/// The value an operand's path names; an operand path that matches
/// nothing is `States.Runtime`.
fn operand_value<T>(o: &Operand<T>, input: &Value, env: &Env<'_>) -> Result<Option<Value>, Failure> {
    match o {
        Operand::Literal(_) => Ok(None),
        Operand::Path(p) => Path::parse(p)
            .and_then(|p| p.select(input, env))
            .map(Some)
            .map_err(|e| Failure::runtime(e.to_string())),
    }
}

fn compare(relation: Relation, ordering: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match relation {
        Relation::Equals => ordering == Equal,
        Relation::LessThan => ordering == Less,
        Relation::GreaterThan => ordering == Greater,
        Relation::LessThanEquals => ordering != Greater,
        Relation::GreaterThanEquals => ordering != Less,
    }
}

/// An RFC 3339 timestamp, as Step Functions reads them.
pub fn timestamp(text: &str) -> Option<jiff::Timestamp> {
    text.parse().ok()
}

/// `StringMatches`: `*` matches any run of characters; `\*` is a star and
/// `\\` a backslash.
fn wildcard(pattern: &str, text: &str) -> bool {
    enum Piece {
        Star,
        Char(char),
    }
    let mut pieces = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => pieces.push(Piece::Char(chars.next().unwrap_or('\\'))),
            '*' => pieces.push(Piece::Star),
            c => pieces.push(Piece::Char(c)),
        }
    }
    let text: Vec<char> = text.chars().collect();
    // Greedy matching with one backtrack point: the last star seen.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pieces.get(p) {
            Some(Piece::Char(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            Some(Piece::Star) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pieces[p..].iter().all(|piece| matches!(piece, Piece::Star))
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn string_matches_stars_and_escapes() {
        assert!(wildcard("log-*.txt", "log-2026.txt"));
        assert!(wildcard("*", ""));
        assert!(wildcard("a*b*c", "aXXbYYc"));
        assert!(!wildcard("a*b*c", "aXXbYY"));
        assert!(wildcard(r"a\*b", "a*b"));
        assert!(!wildcard(r"a\*b", "aXb"));
        assert!(wildcard(r"back\\slash", r"back\slash"));
    }
}
