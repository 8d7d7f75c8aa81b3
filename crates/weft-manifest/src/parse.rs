//! The shared part of checking a manifest: reading the TOML, the two
//! passes over the registered sections (declare every name, then check
//! every table), unknown keys, typed value getters, and diagnostics.
//!
//! It knows no section: which top-level keys exist and what they mean is
//! registered in [`crate::sections`] or passed in by the embedder.

use std::ops::Range;

use toml_edit::{Array, Document, Item, Key, Table, TableLike};

use crate::names::{Names, Reported};
use crate::section::Section;
use crate::{ByteSize, Diagnostic, Diagnostics, Manifest, format_duration, parse_duration, parse_size};

pub(crate) fn parse(text: &str, file: &str, extra: &[&dyn Section]) -> Result<Manifest, Diagnostics> {
    let doc = match Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let message = format!("this is not valid TOML: {}", e.message().trim_end());
            let help = "fix the TOML syntax at this place (quotes, brackets, `key = value`)";
            return Err(Diagnostics::single(
                file,
                text,
                Diagnostic::new(e.span(), message).with_help(help),
            ));
        }
    };
    let root = doc.as_table();
    let sections: Vec<&dyn Section> = crate::sections::BUILT_IN
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect();
    debug_assert!(
        {
            let mut keys: Vec<&str> = sections.iter().flat_map(|s| s.keys().iter().copied()).collect();
            let all = keys.len();
            keys.sort_unstable();
            keys.dedup();
            keys.len() == all
        },
        "two sections own the same top-level key"
    );
    let mut names = Names::default();
    for section in &sections {
        section.declare(root, &mut names);
    }
    let mut c = Checker {
        out: Diagnostics::new(file, text),
        last: Vec::new(),
        names,
    };
    c.unknown_keys(root, &crate::sections::top_keys(&sections), "the top level");
    let mut manifest = Manifest::default();
    for section in &sections {
        section.check(&mut c, root, &mut manifest);
    }
    let last = std::mem::take(&mut c.last);
    c.out.items.extend(last);
    c.out.into_result(manifest)
}

/// Checks the tables of a manifest and collects every mistake.
pub struct Checker {
    out: Diagnostics,
    /// Mistakes shown after every section's own; see [`Checker::report_last`].
    last: Vec<Diagnostic>,
    pub(crate) names: Names,
}

/// A kind of `[KIND.NAME]` table: `queue`, `topic`, `bus`, ...
pub struct Kind<'k> {
    pub name: &'k str,
    /// The keys its tables may have.
    pub keys: &'k [&'k str],
    /// A good name, for the help on a bad one.
    pub example: &'k str,
    /// What to write instead of a `[KIND.NAME]` that is not a table.
    pub help: &'k str,
}

/// One `[KIND.NAME]` table, from [`Checker::named`].
pub struct Named<'a> {
    pub name: &'a str,
    pub key: &'a Key,
    pub table: &'a dyn TableLike,
    /// `[KIND.NAME]`, for messages.
    pub place: String,
    /// The name is valid (else it was reported).
    pub name_ok: bool,
}

/// The span of a value, or else of its key.
pub fn span_of(key: &Key, item: &Item) -> Option<Range<usize>> {
    item.span().or_else(|| key.span())
}

impl Checker {
    /// Reports a mistake at `span`, with how to fix it.
    pub fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>, help: impl Into<String>) {
        self.out.push(Diagnostic::new(span, message).with_help(help));
    }

    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.out.push(diagnostic);
    }

    /// Runs `check`, showing what it reports after every section's own
    /// mistakes: references to what a function may publish to and where
    /// its results go read best once the tables they name are checked.
    pub fn report_last<R>(&mut self, check: impl FnOnce(&mut Checker) -> R) -> R {
        let mark = self.out.items.len();
        let result = check(self);
        let moved: Vec<Diagnostic> = self.out.items.drain(mark..).collect();
        self.last.extend(moved);
        result
    }

    /// A required string: `None` once reported missing (at `missing_span`,
    /// with `help`) or not a string.
    pub fn required<'a>(
        &mut self,
        table: &'a dyn TableLike,
        key: &str,
        place: &str,
        example: &str,
        missing_span: Option<Range<usize>>,
        help: &str,
    ) -> Option<(&'a str, Option<Range<usize>>)> {
        if !table.contains_key(key) {
            self.error(missing_span, format!("{place} has no `{key}`"), help);
            return None;
        }
        self.string(table, key, place, example)
    }

    /// Reports every key of `table` not in `known`, suggesting a close one.
    pub fn unknown_keys(&mut self, table: &dyn TableLike, known: &[&str], place: &str) {
        for (name, _) in table.iter() {
            if known.contains(&name) {
                continue;
            }
            let span = table.key(name).and_then(Key::span);
            let help = match closest(name, known) {
                Some(near) => format!("did you mean `{near}`? The keys allowed here are: {}", known.join(", ")),
                None => format!("remove it; the keys allowed here are: {}", known.join(", ")),
            };
            self.out
                .push(Diagnostic::new(span, format!("unknown key `{name}` in {place}")).with_help(help));
        }
    }

    /// `item` as a table; else reports `{what} must be a table`.
    pub fn table<'a>(&mut self, key: &Key, item: &'a Item, what: &str, help: &str) -> Option<&'a dyn TableLike> {
        let table = item.as_table_like();
        if table.is_none() {
            self.error(
                span_of(key, item),
                format!("{what} must be a table, found {}", item.type_name()),
                help,
            );
        }
        table
    }

    /// The table of all `[KIND.NAME]` tables, if `item` is one.
    pub fn kind_table<'a>(&mut self, key: &Key, item: &'a Item, kind: &Kind<'_>) -> Option<&'a dyn TableLike> {
        self.table(
            key,
            item,
            &format!("`{}`", kind.name),
            &format!("write each {0} as its own table: `[{0}.NAME]`", kind.name),
        )
    }

    /// One `[KIND.NAME]` table of `table` (found under `key`), checked for
    /// being a table, for unknown keys and for a valid name ([`check_name`]).
    pub fn named<'a>(
        &mut self,
        table: &'a dyn TableLike,
        key: &'a Key,
        name: &'a str,
        item: &'a Item,
        kind: &Kind<'_>,
    ) -> Option<Named<'a>> {
        self.named_by(table, key, name, item, kind, &name_rule(kind))
    }

    /// [`Checker::named`], with the names `rule` allows: it says what is
    /// wrong with a name (completing "KIND name `NAME` ...") and how to
    /// fix it.
    pub(crate) fn named_by<'a>(
        &mut self,
        table: &'a dyn TableLike,
        key: &'a Key,
        name: &'a str,
        item: &'a Item,
        kind: &Kind<'_>,
        rule: &NameRule<'_>,
    ) -> Option<Named<'a>> {
        let key = table.key(name).unwrap_or(key);
        let place = format!("[{}.{name}]", kind.name);
        let t = self.table(key, item, &format!("`{}.{name}`", kind.name), kind.help)?;
        self.unknown_keys(t, kind.keys, &place);
        let name_ok = match rule(name) {
            Ok(()) => true,
            Err((why, fix)) => {
                self.error(key.span(), format!("{} name `{name}` {why}", kind.name), fix);
                false
            }
        };
        Some(Named {
            name,
            key,
            table: t,
            place,
            name_ok,
        })
    }

    /// An optional string; `None` when absent or (reported) not a string.
    pub fn string<'a>(
        &mut self,
        table: &'a dyn TableLike,
        name: &str,
        place: &str,
        example: &str,
    ) -> Option<(&'a str, Option<Range<usize>>)> {
        let (key, item) = table.get_key_value(name)?;
        match item.as_str() {
            Some(s) => Some((s, span_of(key, item))),
            None => {
                self.error(
                    span_of(key, item),
                    format!("`{name}` in {place} must be a string, found {}", item.type_name()),
                    format!("write it in quotes, e.g. `{name} = {example}`"),
                );
                None
            }
        }
    }

    /// An optional array: `Ok(None)` when absent.
    pub fn array<'a>(
        &mut self,
        table: &'a dyn TableLike,
        key: &str,
        place: &str,
        example: &str,
    ) -> Result<Option<&'a Array>, Reported> {
        let Some((k, item)) = table.get_key_value(key) else {
            return Ok(None);
        };
        match item.as_array() {
            Some(array) => Ok(Some(array)),
            None => {
                self.error(
                    span_of(k, item),
                    format!("`{key}` in {place} must be an array, found {}", item.type_name()),
                    format!("write `{key} = {example}`"),
                );
                Err(Reported)
            }
        }
    }

    /// The tables of a `[[name]]` array (or an array of inline tables).
    pub fn array_of_tables<'a>(&mut self, key: &Key, item: &'a Item, name: &str, help: &str) -> Vec<&'a dyn TableLike> {
        self.located_tables(key, item, name, help)
            .into_iter()
            .map(|(table, _)| table)
            .collect()
    }

    /// [`Checker::array_of_tables`], each table with its span: its
    /// `[[name]]` header, or the inline table.
    pub fn located_tables<'a>(
        &mut self,
        key: &Key,
        item: &'a Item,
        name: &str,
        help: &str,
    ) -> Vec<(&'a dyn TableLike, Option<Range<usize>>)> {
        if let Some(aot) = item.as_array_of_tables() {
            aot.iter().map(|t| (t as &dyn TableLike, t.span())).collect()
        } else if let Some(array) = item
            .as_array()
            .filter(|a| a.iter().all(|v| v.as_inline_table().is_some()))
        {
            array
                .iter()
                .filter_map(|v| v.as_inline_table().map(|t| (t as &dyn TableLike, t.span())))
                .collect()
        } else {
            self.error(
                span_of(key, item),
                format!("`{name}` must be an array of tables, found {}", item.type_name()),
                help,
            );
            Vec::new()
        }
    }

    /// Each `[KIND.NAME]` table of the manifest, checked by
    /// [`Checker::named`], given to `check` in the order written.
    pub fn each_named<'a>(&mut self, root: &'a Table, kind: &Kind<'_>, check: impl FnMut(&mut Checker, Named<'a>)) {
        self.each_named_by(root, kind, &name_rule(kind), check);
    }

    /// [`Checker::each_named`], with the names `rule` allows (see
    /// [`Checker::named_by`]).
    pub(crate) fn each_named_by<'a>(
        &mut self,
        root: &'a Table,
        kind: &Kind<'_>,
        rule: &NameRule<'_>,
        mut check: impl FnMut(&mut Checker, Named<'a>),
    ) {
        let Some((key, item)) = root.get_key_value(kind.name) else {
            return;
        };
        let Some(table) = self.kind_table(key, item, kind) else {
            return;
        };
        for (name, item) in table.iter() {
            if let Some(named) = self.named_by(table, key, name, item, kind, rule) {
                check(self, named);
            }
        }
    }

    /// Each table of the manifest's `[[NAME]]` array, checked for unknown
    /// keys, given to `check` with its place (`NAME #N`), in the order
    /// written.
    pub fn each_listed<'a>(
        &mut self,
        root: &'a Table,
        name: &str,
        keys: &[&str],
        help: &str,
        mut check: impl FnMut(&mut Checker, &'a dyn TableLike, &str),
    ) {
        let Some((key, item)) = root.get_key_value(name) else {
            return;
        };
        for (n, table) in self.array_of_tables(key, item, name, help).into_iter().enumerate() {
            let place = format!("{name} #{}", n + 1);
            self.unknown_keys(table, keys, &format!("[[{name}]] ({place})"));
            check(self, table, &place);
        }
    }

    /// An optional duration within `range`, `default` when absent; `None`
    /// once reported.
    pub fn duration_in(
        &mut self,
        table: &dyn TableLike,
        key: &str,
        place: &str,
        default: std::time::Duration,
        range: (std::time::Duration, std::time::Duration),
    ) -> Option<std::time::Duration> {
        let Some((text, span)) = self.string(table, key, place, "\"30s\"") else {
            return (!table.contains_key(key)).then_some(default);
        };
        match parse_duration(text) {
            Ok(d) if d >= range.0 && d <= range.1 => Some(d),
            Ok(_) => {
                self.error(
                    span,
                    format!("`{key}` in {place} is `{text}`, outside the allowed range"),
                    format!(
                        "use a duration from {} to {}",
                        format_duration(range.0),
                        format_duration(range.1)
                    ),
                );
                None
            }
            Err(why) => {
                self.error(
                    span,
                    format!("`{key}` in {place} is not a duration: {why}"),
                    "write a number and a unit: `\"500ms\"`, `\"30s\"`, `\"2m\"`",
                );
                None
            }
        }
    }

    /// An optional size within `range` (in bytes), `default` when absent;
    /// `None` once reported.
    pub fn size_in(
        &mut self,
        table: &dyn TableLike,
        key: &str,
        place: &str,
        default: u64,
        range: (u64, u64),
    ) -> Option<u64> {
        let Some((text, span)) = self.string(table, key, place, "\"1MB\"") else {
            return (!table.contains_key(key)).then_some(default);
        };
        match parse_size(text) {
            Ok(size) if size.bytes() >= range.0 && size.bytes() <= range.1 => Some(size.bytes()),
            Ok(size) => {
                self.error(
                    span,
                    format!("`{key}` in {place} is {size}, outside the allowed range"),
                    format!("use a size from {} to {}", ByteSize(range.0), ByteSize(range.1)),
                );
                None
            }
            Err(why) => {
                self.error(
                    span,
                    format!("`{key}` in {place} is not a size: {why}"),
                    "write a number and a unit: `\"1MB\"`, `\"64KB\"`, `\"100B\"`",
                );
                None
            }
        }
    }

    /// An optional whole number within `range`, `default` when absent;
    /// `None` once reported.
    pub fn integer_in(
        &mut self,
        table: &dyn TableLike,
        key: &str,
        place: &str,
        default: u32,
        range: (u32, u32),
    ) -> Option<u32> {
        let Some((k, item)) = table.get_key_value(key) else {
            return Some(default);
        };
        match item.as_integer() {
            Some(n) if n >= i64::from(range.0) && n <= i64::from(range.1) => Some(n as u32),
            Some(n) => {
                self.error(
                    span_of(k, item),
                    format!("`{key}` in {place} is {n}, outside the allowed range"),
                    format!("use a whole number from {} to {}", range.0, range.1),
                );
                None
            }
            None => {
                self.error(
                    span_of(k, item),
                    format!("`{key}` in {place} must be a whole number, found {}", item.type_name()),
                    format!("write it without quotes, e.g. `{key} = {default}`"),
                );
                None
            }
        }
    }

    /// 1-based line and column of a byte offset of the manifest.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        self.out.line_col(offset)
    }
}

/// Which names a kind of `[KIND.NAME]` table allows: for a name it
/// refuses, what is wrong with it and how to fix it.
pub(crate) type NameRule<'r> = dyn Fn(&str) -> Result<(), (String, String)> + 'r;

/// The names most kinds allow: [`check_name`]'s.
fn name_rule<'k>(kind: &'k Kind<'_>) -> impl Fn(&str) -> Result<(), (String, String)> + 'k {
    |name| {
        check_name(name).map_err(|why| {
            (
                why.to_string(),
                format!("use lowercase letters, digits and `-`, like `{}`", kind.example),
            )
        })
    }
}

/// Checks an app or function name: these appear in hostnames and URLs.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > 63 {
        return Err("is longer than 63 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lowercase letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.ends_with('-')
    {
        return Err("may hold only lowercase letters, digits and `-` (not at the end)");
    }
    Ok(())
}

/// The known word nearest to `word`, if it is near enough to be a typo.
pub(crate) fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}
