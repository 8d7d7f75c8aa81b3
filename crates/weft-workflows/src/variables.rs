//! Workflow variables: what a state's `Assign` sets and later states read
//! as `$name`, in JSONPath and in JSONata alike.
//!
//! Each scope (the top level, each Parallel branch, each Map iteration)
//! has a [`Frame`] of its own. Its states read the variables of the scopes
//! around it too, as they were when the branch or iteration began, but
//! assign only their own: the validator refuses an inner scope that
//! assigns a name an outer scope assigns, as Step Functions does. A
//! branch's variables end with it; its data leaves through its output.
//!
//! A state's assignments are made together once the state is done, so
//! every expression of the state, `Assign` included, reads the values from
//! before it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Map, Value};

use crate::execution::Failure;
use crate::path::Variables;

/// The largest value one variable may hold, in bytes of JSON.
pub const MAX_VARIABLE: usize = 256 * 1024;
/// The most one `Assign` may set at once, in bytes of JSON.
pub const MAX_ASSIGN: usize = 256 * 1024;
/// The most all the variables of an execution may hold together.
pub const MAX_TOTAL: usize = 10 * 1024 * 1024;
/// The longest a variable's name may be, in characters.
pub const MAX_NAME: usize = 80;

/// Checks a name an `Assign` sets (its `.$` suffix, in JSONPath, already
/// taken off).
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err("a variable needs a name; write e.g. \"total\"".into());
    };
    if name == "states" {
        return Err(
            "$states is the name Step Functions keeps for the state's input, result and context; choose another name"
                .into(),
        );
    }
    if !(first.is_alphabetic() || first == '_') || !chars.all(|c| c.is_alphanumeric() || c == '_') {
        return Err(format!(
            "{name:?} is not a variable name: it starts with a letter or '_' and goes on with letters, digits and '_'; a variable is set whole, not a field of it"
        ));
    }
    let length = name.chars().count();
    if length > MAX_NAME {
        return Err(format!(
            "variable names are at most {MAX_NAME} characters, and this one has {length}; shorten it"
        ));
    }
    Ok(())
}

/// The variables of one scope, and (read only) those around it.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    own: Map<String, Value>,
    /// The bytes of JSON the own variables hold.
    own_bytes: usize,
    outer: Option<Arc<Frame>>,
}

impl Frame {
    /// A new scope's frame, inside `outer`.
    pub fn within(outer: Option<Arc<Frame>>) -> Frame {
        Frame {
            own: Map::new(),
            own_bytes: 0,
            outer,
        }
    }

    /// The bytes of JSON this scope's own variables hold.
    pub fn own_bytes(&self) -> usize {
        self.own_bytes
    }

    /// Sets what `state`'s `Assign` gave, all at once, within the limits:
    /// one variable, one `Assign`, and all the variables of the execution,
    /// whose bytes `total` counts.
    pub fn assign(&mut self, state: &str, assigned: Map<String, Value>, total: &AtomicUsize) -> Result<(), Failure> {
        let mut bytes = 0;
        for (name, value) in &assigned {
            let size = crate::execution::size_of(value);
            if size > MAX_VARIABLE {
                return Err(too_large(
                    state,
                    format!("the variable ${name} would hold {size} bytes, more than the {MAX_VARIABLE} one may"),
                ));
            }
            bytes += size;
        }
        if bytes > MAX_ASSIGN {
            return Err(too_large(
                state,
                format!("its Assign sets {bytes} bytes at once, more than the {MAX_ASSIGN} one Assign may"),
            ));
        }
        let replaced: usize = assigned
            .keys()
            .filter_map(|name| self.own.get(name))
            .map(crate::execution::size_of)
            .sum();
        let after = total.load(Ordering::Relaxed).saturating_sub(replaced) + bytes;
        if after > MAX_TOTAL {
            return Err(too_large(
                state,
                format!("the execution's variables would hold {after} bytes, more than the {MAX_TOTAL} they may"),
            ));
        }
        total.fetch_add(bytes, Ordering::Relaxed);
        total.fetch_sub(replaced, Ordering::Relaxed);
        self.own_bytes = self.own_bytes + bytes - replaced;
        self.own.extend(assigned);
        Ok(())
    }
}

fn too_large(state: &str, why: String) -> Failure {
    Failure::new("States.DataLimitExceeded", format!("state {state:?}: {why}"))
}

impl Variables for Frame {
    fn variable(&self, name: &str) -> Option<&Value> {
        match self.own.get(name) {
            Some(value) => Some(value),
            None => self.outer.as_ref()?.variable(name),
        }
    }

    fn each(&self, f: &mut dyn FnMut(&str, &Value)) {
        for (name, value) in &self.own {
            f(name, value);
        }
        if let Some(outer) = &self.outer {
            outer.each(&mut |name, value| {
                if !self.own.contains_key(name) {
                    f(name, value);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_inner_frame_reads_the_outer_one_and_assigns_its_own() {
        let mut outer = Frame::within(None);
        outer
            .assign(
                "A",
                Map::from_iter([("total".to_string(), json!(3))]),
                &AtomicUsize::new(0),
            )
            .expect("within the limits");
        let mut inner = Frame::within(Some(Arc::new(outer)));
        inner
            .assign(
                "B",
                Map::from_iter([("item".to_string(), json!("x"))]),
                &AtomicUsize::new(0),
            )
            .expect("within the limits");
        assert_eq!(inner.variable("total"), Some(&json!(3)));
        assert_eq!(inner.variable("item"), Some(&json!("x")));
        let mut names = Vec::new();
        inner.each(&mut |name, _| names.push(name.to_string()));
        assert_eq!(names, ["item", "total"]);
    }

    #[test]
    fn the_limits_name_what_they_limit() {
        let mut frame = Frame::within(None);
        let total = AtomicUsize::new(0);
        let big = json!("x".repeat(MAX_VARIABLE));
        let failure = frame
            .assign("Big", Map::from_iter([("blob".to_string(), big)]), &total)
            .expect_err("over one variable's limit");
        assert_eq!(failure.error, "States.DataLimitExceeded");
        assert!(failure.cause.unwrap_or_default().contains("$blob"));
        let half = json!("x".repeat(MAX_VARIABLE / 2));
        let failure = frame
            .assign(
                "Two",
                Map::from_iter([("a".to_string(), half.clone()), ("b".to_string(), half)]),
                &total,
            )
            .expect_err("over one Assign's limit");
        assert!(failure.cause.unwrap_or_default().contains("one Assign"));
        // The execution's bound counts every scope's variables.
        let almost = AtomicUsize::new(MAX_TOTAL - 10);
        let failure = frame
            .assign(
                "Last",
                Map::from_iter([("v".to_string(), json!("0123456789"))]),
                &almost,
            )
            .expect_err("over the execution's bound");
        assert!(failure.cause.unwrap_or_default().contains("execution's variables"));
        frame
            .assign("Small", Map::from_iter([("v".to_string(), json!(1))]), &total)
            .expect("within the bounds");
        assert_eq!(total.load(Ordering::Relaxed), 1);
        frame
            .assign("Again", Map::from_iter([("v".to_string(), json!(22))]), &total)
            .expect("a variable replaced");
        assert_eq!((total.load(Ordering::Relaxed), frame.own_bytes()), (2, 2));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("total_2").is_ok());
        assert!(check_name("états").is_ok());
        assert!(check_name("states").unwrap_err().contains("keeps"));
        assert!(check_name("order.id").unwrap_err().contains("set whole"));
        assert!(check_name("2x").is_err());
        assert!(check_name(&"a".repeat(81)).unwrap_err().contains("80"));
    }
}
