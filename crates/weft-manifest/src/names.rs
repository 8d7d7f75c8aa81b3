//! The names a manifest declares, and the one check of every reference to
//! them.
//!
//! Names are collected from every section before any table is checked, so
//! a reference is checked against every declared name: a queue with its own
//! mistakes is not also reported as missing. Every "which is not declared"
//! error goes through [`Checker::declared`]; each place says how it words
//! the error with a [`Wording`], so messages read as they always have.

use std::ops::Range;

use toml_edit::{Item, Table, TableLike};

use crate::parse::{Checker, closest};
use crate::{Diagnostic, Target, TargetKind};

/// A mistake was found and reported; there is nothing more to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported;

/// The tag of a FIFO queue in [`Names`].
pub const FIFO: &str = "fifo";

/// Every declared name, by kind (`function`, `queue`, `topic`, `bus`,
/// `schedule`, `rule`, or a kind an extension section declares), in the
/// order written, each with tags such as [`FIFO`].
#[derive(Debug, Clone, Default)]
pub struct Names {
    declared: Vec<Declared>,
}

#[derive(Debug, Clone)]
struct Declared {
    kind: String,
    name: String,
    tags: Vec<String>,
}

impl Names {
    /// Declares `name` as a `kind`; declaring it again changes nothing.
    pub fn declare(&mut self, kind: &str, name: &str) {
        if !self.contains(kind, name) {
            self.declared.push(Declared {
                kind: kind.to_string(),
                name: name.to_string(),
                tags: Vec::new(),
            });
        }
    }

    /// Declares every `NAME` of the manifest's `[KIND.NAME]` tables as a `kind`.
    pub fn declare_tables(&mut self, root: &Table, kind: &str) {
        if let Some(tables) = root.get(kind).and_then(Item::as_table_like) {
            for (name, _) in tables.iter() {
                self.declare(kind, name);
            }
        }
    }

    /// Declares `name` as a `kind` that has `tag`.
    pub fn tag(&mut self, kind: &str, name: &str, tag: &str) {
        self.declare(kind, name);
        if let Some(d) = self.declared.iter_mut().find(|d| d.kind == kind && d.name == name)
            && !d.tags.iter().any(|t| t == tag)
        {
            d.tags.push(tag.to_string());
        }
    }

    pub fn contains(&self, kind: &str, name: &str) -> bool {
        self.declared.iter().any(|d| d.kind == kind && d.name == name)
    }

    pub fn has_tag(&self, kind: &str, name: &str, tag: &str) -> bool {
        self.declared
            .iter()
            .any(|d| d.kind == kind && d.name == name && d.tags.iter().any(|t| t == tag))
    }

    /// The declared names of `kind`, in the order written.
    pub fn of(&self, kind: &str) -> Vec<&str> {
        self.declared
            .iter()
            .filter(|d| d.kind == kind)
            .map(|d| d.name.as_str())
            .collect()
    }
}

/// How one place words a reference to a name that is not declared.
///
/// The help is "did you mean `NEAR`?" when a declared name is close, else
/// "declare it as [KIND.NAME]"; each part can be changed.
#[derive(Debug, Clone)]
pub struct Wording {
    message: String,
    qualified: bool,
    after_near: String,
    otherwise: Option<String>,
    not_tagged: Option<String>,
}

impl Wording {
    /// `message` is the error, e.g. "trigger #1 names queue `job`, which
    /// is not declared in this app".
    pub fn new(message: impl Into<String>) -> Wording {
        Wording {
            message: message.into(),
            qualified: false,
            after_near: String::new(),
            otherwise: None,
            not_tagged: None,
        }
    }

    /// Suggests a close name as `KIND:NEAR`, as `publish` entries write it.
    pub fn qualified(mut self) -> Wording {
        self.qualified = true;
        self
    }

    /// Text said after "did you mean `NEAR`?".
    pub fn after_near(mut self, text: impl Into<String>) -> Wording {
        self.after_near = text.into();
        self
    }

    /// The help when no declared name is close.
    pub fn otherwise(mut self, help: impl Into<String>) -> Wording {
        self.otherwise = Some(help.into());
        self
    }

    /// Does not suggest the closest name if it has `tag`.
    pub fn not_tagged(mut self, tag: impl Into<String>) -> Wording {
        self.not_tagged = Some(tag.into());
        self
    }
}

/// The kinds of a target that names a function, queue, topic, bus or
/// workflow, as
/// [`TargetChoice::kinds`] takes them.
pub(crate) const NAMED_TARGETS: &[(TargetKind, &str)] = &[
    (TargetKind::Function, "\"NAME\""),
    (TargetKind::Queue, "\"NAME\""),
    (TargetKind::Topic, "\"NAME\""),
    (TargetKind::Bus, "\"NAME\""),
    (TargetKind::Workflow, "\"NAME\""),
];

/// How one place chooses its one target among some kinds (`function = `,
/// `queue = `, ..., `url = `), and words the mistakes.
pub struct TargetChoice<'a> {
    /// The kinds allowed here, each with the example the help for a value
    /// that is not a string shows, e.g. `(TargetKind::Queue, "\"jobs\"")`.
    pub kinds: &'a [(TargetKind, &'a str)],
    /// E.g. `[schedule.nightly]` or `target #2 of [rule.big]`.
    pub place: &'a str,
    /// Where "more than one" and "no target" point.
    pub span: Option<Range<usize>>,
    /// Said of a place without a target, e.g. "has no target".
    pub missing: &'a str,
    /// The help for a place with more than one target.
    pub one: &'a str,
    /// What the place does to its target, e.g. "names" or "fires".
    pub verb: &'a str,
    /// Refuses a FIFO queue (reported at `span`): what the place does to it
    /// ("sends to") and the help. The target is still returned, so later
    /// checks go on.
    pub standard_queue: Option<(&'a str, &'a str)>,
}

impl Checker {
    /// The names declared anywhere in the manifest.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Whether `name` is a declared `kind`; if not, reports it at `span`,
    /// worded as `wording` says.
    pub fn declared(&mut self, kind: &str, name: &str, span: Option<Range<usize>>, wording: Wording) -> bool {
        if self.names.contains(kind, name) {
            return true;
        }
        let known = self.names.of(kind);
        let near = closest(name, &known).filter(|near| {
            wording
                .not_tagged
                .as_ref()
                .is_none_or(|tag| !self.names.has_tag(kind, near, tag))
        });
        let help = match near {
            Some(near) if wording.qualified => format!("did you mean `{kind}:{near}`?{}", wording.after_near),
            Some(near) => format!("did you mean `{near}`?{}", wording.after_near),
            None => wording
                .otherwise
                .unwrap_or_else(|| format!("declare it as [{kind}.{name}]")),
        };
        self.push(Diagnostic::new(span, wording.message).with_help(help));
        false
    }

    /// A required string `key` of `table` naming a declared `kind` (the
    /// key's own name): reports it missing, not a string, or not declared.
    pub fn reference(&mut self, table: &dyn TableLike, key: &str, place: &str, kind: &str) -> Option<String> {
        let help = format!("add `{key} = \"NAME\"` naming a [{kind}.NAME]");
        let (value, span) = self.required(table, key, place, "\"NAME\"", None, &help)?;
        let message = format!("{place} names {key} `{value}`, which is not declared in this app");
        self.declared(kind, value, span, Wording::new(message))
            .then(|| value.to_string())
    }

    /// The one target `table` names among `choice.kinds`: reports none,
    /// more than one, a value that is not a string, a name that is not
    /// declared, or a URL that is not http(s).
    pub fn target(&mut self, table: &dyn TableLike, choice: &TargetChoice<'_>) -> Option<Target> {
        let words: Vec<&str> = choice.kinds.iter().map(|(k, _)| k.as_str()).collect();
        let given: Vec<&(TargetKind, &str)> = choice
            .kinds
            .iter()
            .filter(|(k, _)| table.contains_key(k.as_str()))
            .collect();
        let (kind, example) = match given.as_slice() {
            [one] => **one,
            [] => {
                let adds: Vec<String> = choice.kinds.iter().map(|(k, _)| add_target(*k)).collect();
                self.error(
                    choice.span.clone(),
                    format!("{} {}", choice.place, choice.missing),
                    format!("add {}", either(&adds, "or")),
                );
                return None;
            }
            _ => {
                let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
                self.error(
                    choice.span.clone(),
                    format!("{} has more than one of {}", choice.place, either(&quoted, "and")),
                    choice.one,
                );
                return None;
            }
        };
        let word = kind.as_str();
        let (value, span) = self.string(table, word, choice.place, example)?;
        if kind == TargetKind::Url {
            return match value.parse::<http::Uri>() {
                Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
                    Some(Target::Url(value.to_string()))
                }
                _ => {
                    self.error(
                        span,
                        format!("`url` of {} is `{value}`, not an http:// or https:// URL", choice.place),
                        "write e.g. `url = \"https://example.com/hook\"`",
                    );
                    None
                }
            };
        }
        let message = format!(
            "{} {} {word} `{value}`, which is not declared in this app",
            choice.place, choice.verb
        );
        if !self.declared(word, value, span, Wording::new(message)) {
            return None;
        }
        if let Some((does, help)) = choice.standard_queue
            && kind == TargetKind::Queue
            && self.names.has_tag("queue", value, FIFO)
        {
            self.error(
                choice.span.clone(),
                format!("{} {does} FIFO queue `{value}`", choice.place),
                help,
            );
        }
        Some(Target::new(kind, value))
    }

    /// `dead_letter` of `table`, which must name a standard (not FIFO) queue
    /// of the app: `Ok(None)` when absent.
    pub fn dead_letter(
        &mut self,
        table: &dyn TableLike,
        place: &str,
        example: &str,
    ) -> Result<Option<String>, Reported> {
        let Some((d, span)) = self.string(table, "dead_letter", place, example) else {
            // A value of the wrong type was reported by `string`.
            return if table.contains_key("dead_letter") {
                Err(Reported)
            } else {
                Ok(None)
            };
        };
        let fifo = self.names.has_tag("queue", d, FIFO);
        if !fifo && self.names.contains("queue", d) {
            return Ok(Some(d.to_string()));
        }
        let message = format!("`dead_letter` of {place} is `{d}`, which is not a standard queue of this app");
        if fifo {
            self.error(span, message, format!("`{d}` is a FIFO queue: name a standard one"));
        } else {
            let wording = Wording::new(message)
                .not_tagged(FIFO)
                .otherwise(format!("declare a standard queue [queue.{d}]"));
            self.declared("queue", d, span, wording);
        }
        Err(Reported)
    }
}

/// `kind = "NAME"`, as the help for a missing target shows it.
fn add_target(kind: TargetKind) -> String {
    match kind {
        TargetKind::Url => "`url = \"https://...\"`".to_string(),
        _ => format!("`{kind} = \"NAME\"`"),
    }
}

/// `a`, `a or b`, `a, b or c`.
fn either(items: &[String], last: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., end] => format!("{} {last} {end}", init.join(", ")),
    }
}
