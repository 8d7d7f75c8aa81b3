//! Walks the TOML document and builds a [`Manifest`], collecting every
//! mistake instead of stopping at the first.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;

use toml_edit::{Document, Item, Key, TableLike, Value};

use crate::names::{FIFO, Names, Wording};
use crate::route::{RoutePath, RouteTable};
use crate::{
    Build, ByteSize, DEFAULT_MEMORY, DEFAULT_TIMEOUT, Diagnostic, Diagnostics, Function, HostPattern, MAX_MEMORY,
    MAX_TIMEOUT, Manifest, Method, Route, Target, TargetKind, parse_duration, parse_size,
};

const TOP_KEYS: &[&str] = &[
    "app",
    "function",
    "route",
    "queue",
    "trigger",
    "schedule",
    "topic",
    "subscription",
    "bus",
    "rule",
];
const APP_KEYS: &[&str] = &["name"];
const FUNCTION_KEYS: &[&str] = &[
    "async",
    "source",
    "build",
    "memory",
    "timeout",
    "env",
    "allowed_hosts",
    "publish",
];
const BUILD_KEYS: &[&str] = &["command", "workdir"];
const ROUTE_KEYS: &[&str] = &["method", "path", "function"];
const MIN_MEMORY: u64 = 1 << 20;

pub(crate) fn parse(text: &str, file: &str) -> Result<Manifest, Diagnostics> {
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
    let mut c = Checker {
        out: Diagnostics::new(file, text),
        last: Vec::new(),
        names: declare(root),
    };
    c.unknown_keys(root, TOP_KEYS, "the top level");

    let app = match root.get_key_value("app") {
        Some((key, item)) => c.app(key, item),
        None => {
            c.error(
                None,
                "the manifest has no [app] table",
                "add `[app]` with `name = \"my-app\"` at the top of the file",
            );
            None
        }
    };

    let mut functions = Vec::new();
    if let Some((key, item)) = root.get_key_value("function") {
        match item.as_table_like() {
            Some(table) => {
                for (name, item) in table.iter() {
                    let key = table.key(name).unwrap_or(key);
                    if let Some(f) = c.function(name, key, item) {
                        functions.push(f);
                    }
                }
            }
            None => c.error(
                span_of(key, item),
                format!("`function` must be a table of functions, found {}", item.type_name()),
                "write each function as its own table: `[function.NAME]`",
            ),
        }
    }
    let routes = match root.get_key_value("route") {
        Some((key, item)) => c.routes(key, item),
        None => Vec::new(),
    };
    let queues = match root.get_key_value("queue") {
        Some((key, item)) => c.queues(key, item),
        None => Vec::new(),
    };
    let triggers = match root.get_key_value("trigger") {
        Some((key, item)) => c.triggers(key, item),
        None => Vec::new(),
    };
    let topics = match root.get_key_value("topic") {
        Some((key, item)) => c.topics(key, item),
        None => Vec::new(),
    };
    let subscriptions = match root.get_key_value("subscription") {
        Some((key, item)) => c.subscriptions(key, item),
        None => Vec::new(),
    };
    let buses = match root.get_key_value("bus") {
        Some((key, item)) => c.buses(key, item),
        None => Vec::new(),
    };
    let rules = match root.get_key_value("rule") {
        Some((key, item)) => c.rules(key, item),
        None => Vec::new(),
    };
    let schedules = match root.get_key_value("schedule") {
        Some((key, item)) => c.schedules(key, item),
        None => Vec::new(),
    };
    let last = std::mem::take(&mut c.last);
    c.out.items.extend(last);
    let manifest = Manifest {
        app: app.unwrap_or_default(),
        functions,
        routes,
        queues,
        triggers,
        schedules,
        topics,
        subscriptions,
        buses,
        rules,
    };
    c.out.into_result(manifest)
}

/// Byte spans of each function's `source` value (or its table key), for
/// diagnostics found after parsing.
pub(crate) fn source_spans(text: &str) -> HashMap<String, Range<usize>> {
    let mut spans = HashMap::new();
    let Ok(doc) = Document::parse(text) else {
        return spans;
    };
    let Some(table) = doc.as_table().get("function").and_then(Item::as_table_like) else {
        return spans;
    };
    for (name, item) in table.iter() {
        let span = item
            .as_table_like()
            .and_then(|t| t.get_key_value("source"))
            .and_then(|(k, v)| span_of(k, v))
            .or_else(|| table.key(name).and_then(Key::span));
        if let Some(span) = span {
            spans.insert(name.to_string(), span);
        }
    }
    spans
}

/// Checks the tables of a manifest and collects every mistake.
pub struct Checker {
    pub(crate) out: Diagnostics,
    /// Mistakes shown after every section's own; see [`Checker::report_last`].
    last: Vec<Diagnostic>,
    pub(crate) names: Names,
}

/// Every name the manifest declares, read before any table is checked.
fn declare(root: &dyn TableLike) -> Names {
    let mut names = Names::default();
    for kind in ["function", "queue", "topic", "bus", "schedule", "rule"] {
        let Some(table) = root.get(kind).and_then(Item::as_table_like) else {
            continue;
        };
        for (name, item) in table.iter() {
            names.declare(kind, name);
            let fifo = item.get("fifo").and_then(Item::as_bool);
            if kind == "queue" && fifo == Some(true) {
                names.tag(kind, name, FIFO);
            }
        }
    }
    names.declare("bus", crate::DEFAULT_BUS);
    names
}

/// A kind of `[KIND.NAME]` table: `queue`, `topic`, `bus`, ...
pub(crate) struct Kind<'k> {
    pub name: &'k str,
    /// The keys its tables may have.
    pub keys: &'k [&'k str],
    /// A good name, for the help on a bad one.
    pub example: &'k str,
    /// What to write instead of a `[KIND.NAME]` that is not a table.
    pub help: &'k str,
}

/// One `[KIND.NAME]` table, from [`Checker::named`].
pub(crate) struct Named<'a> {
    pub name: &'a str,
    pub key: &'a Key,
    pub table: &'a dyn TableLike,
    /// `[KIND.NAME]`, for messages.
    pub place: String,
    /// The name is valid (else it was reported).
    pub name_ok: bool,
}

pub(crate) fn span_of(key: &Key, item: &Item) -> Option<Range<usize>> {
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

    pub(crate) fn unknown_keys(&mut self, table: &dyn TableLike, known: &[&str], place: &str) {
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

    pub(crate) fn table<'a>(&mut self, key: &Key, item: &'a Item, what: &str, help: &str) -> Option<&'a dyn TableLike> {
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
    pub(crate) fn kind_table<'a>(&mut self, key: &Key, item: &'a Item, kind: &Kind<'_>) -> Option<&'a dyn TableLike> {
        self.table(
            key,
            item,
            &format!("`{}`", kind.name),
            &format!("write each {0} as its own table: `[{0}.NAME]`", kind.name),
        )
    }

    /// One `[KIND.NAME]` table of `table` (found under `key`), checked for
    /// being a table, for unknown keys and for a valid name.
    pub(crate) fn named<'a>(
        &mut self,
        table: &'a dyn TableLike,
        key: &'a Key,
        name: &'a str,
        item: &'a Item,
        kind: &Kind<'_>,
    ) -> Option<Named<'a>> {
        let key = table.key(name).unwrap_or(key);
        let place = format!("[{}.{name}]", kind.name);
        let t = self.table(key, item, &format!("`{}.{name}`", kind.name), kind.help)?;
        self.unknown_keys(t, kind.keys, &place);
        let name_ok = match crate::check_name(name) {
            Ok(()) => true,
            Err(why) => {
                self.error(
                    key.span(),
                    format!("{} name `{name}` {why}", kind.name),
                    format!("use lowercase letters, digits and `-`, like `{}`", kind.example),
                );
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

    pub(crate) fn string<'a>(
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

    fn app(&mut self, key: &Key, item: &Item) -> Option<String> {
        let table = self.table(key, item, "`app`", "write `[app]` followed by `name = \"my-app\"`")?;
        self.unknown_keys(table, APP_KEYS, "[app]");
        match self.required(
            table,
            "name",
            "[app]",
            "\"my-app\"",
            key.span(),
            "add `name = \"my-app\"` under [app]",
        ) {
            Some((name, span)) => {
                if let Err(why) = check_name(name) {
                    self.error(
                        span,
                        format!("app name `{name}` {why}"),
                        "use lowercase letters, digits and `-`, like `my-app`",
                    );
                }
                Some(name.to_string())
            }
            None => None,
        }
    }

    fn function(&mut self, name: &str, key: &Key, item: &Item) -> Option<Function> {
        let place = format!("[function.{name}]");
        let table = self.table(
            key,
            item,
            &format!("`function.{name}`"),
            "write the function as `[function.NAME]` with `source = \"path.wasm\"`",
        )?;
        self.unknown_keys(table, FUNCTION_KEYS, &place);
        let mut ok = true;
        if let Err(why) = check_name(name) {
            self.error(
                key.span(),
                format!("function name `{name}` {why}"),
                "function names are used in internal addresses (`NAME.weft.internal`): use lowercase letters, digits and `-`",
            );
            ok = false;
        }

        let source_help = match table.contains_key("build") {
            true => "add `source = \"...\"`: the path of the .wasm file the build command writes",
            false => "add `source = \"path/to/component.wasm\"`",
        };
        let example = "\"target/wasm32-wasip2/release/app.wasm\"";
        let source = match self.required(table, "source", &place, example, key.span(), source_help) {
            Some((s, span)) => {
                if s.is_empty() {
                    self.error(
                        span,
                        format!("`source` in {place} is empty"),
                        "give the path of the component `.wasm` file",
                    );
                    ok = false;
                }
                Some(PathBuf::from(s))
            }
            None => {
                ok = false;
                None
            }
        };

        let build = match table.get_key_value("build") {
            None => None,
            Some((bkey, bitem)) => self.build(&place, bkey, bitem),
        };
        if table.contains_key("build") && build.is_none() {
            ok = false;
        }

        let memory = match self.string(table, "memory", &place, "\"128MB\"") {
            None => {
                ok &= !table.contains_key("memory");
                ByteSize(DEFAULT_MEMORY)
            }
            Some((text, span)) => match parse_size(text) {
                Ok(size) if size.bytes() < MIN_MEMORY || size.bytes() > MAX_MEMORY => {
                    self.error(
                        span,
                        format!("`memory` in {place} is {size}, outside the allowed range"),
                        "use a size from 1MB to 4GB, e.g. `memory = \"128MB\"`",
                    );
                    ok = false;
                    size
                }
                Ok(size) => size,
                Err(why) => {
                    self.error(
                        span,
                        format!("`memory` in {place} is not a size: {why}"),
                        "write a number and a unit: `\"128MB\"`, `\"512KB\"`, `\"1GB\"`",
                    );
                    ok = false;
                    ByteSize(DEFAULT_MEMORY)
                }
            },
        };

        let timeout = match self.string(table, "timeout", &place, "\"30s\"") {
            None => {
                ok &= !table.contains_key("timeout");
                DEFAULT_TIMEOUT
            }
            Some((text, span)) => match parse_duration(text) {
                Ok(d) if d.is_zero() || d > MAX_TIMEOUT => {
                    self.error(
                        span,
                        format!("`timeout` in {place} is `{text}`, outside the allowed range"),
                        "use a duration from 1ms to 15m, e.g. `timeout = \"30s\"`",
                    );
                    ok = false;
                    d
                }
                Ok(d) => d,
                Err(why) => {
                    self.error(
                        span,
                        format!("`timeout` in {place} is not a duration: {why}"),
                        "write a number and a unit: `\"500ms\"`, `\"30s\"`, `\"2m\"`",
                    );
                    ok = false;
                    DEFAULT_TIMEOUT
                }
            },
        };

        let mut env = Vec::new();
        if let Some((ekey, eitem)) = table.get_key_value("env") {
            match eitem.as_table_like() {
                Some(vars) => {
                    for (var, value) in vars.iter() {
                        let vspan = vars.key(var).and_then(Key::span);
                        match value.as_value() {
                            Some(Value::String(s)) => env.push((var.to_string(), s.value().clone())),
                            Some(Value::Integer(i)) => env.push((var.to_string(), i.value().to_string())),
                            Some(Value::Boolean(b)) => env.push((var.to_string(), b.value().to_string())),
                            Some(Value::Float(f)) => env.push((var.to_string(), f.value().to_string())),
                            _ => {
                                self.error(
                                    value.span().or(vspan),
                                    format!(
                                        "env value `{var}` in {place} must be a string, number or boolean, found {}",
                                        value.type_name()
                                    ),
                                    format!("write it as `{var} = \"value\"`"),
                                );
                                ok = false;
                            }
                        }
                    }
                }
                None => {
                    self.error(
                        span_of(ekey, eitem),
                        format!("`env` in {place} must be a table, found {}", eitem.type_name()),
                        "write `env = { KEY = \"value\" }`",
                    );
                    ok = false;
                }
            }
        }

        let mut allowed_hosts = Vec::new();
        if let Some((hkey, hitem)) = table.get_key_value("allowed_hosts") {
            match hitem.as_array() {
                Some(array) => {
                    for value in array.iter() {
                        match value.as_str() {
                            Some(s) => match HostPattern::parse(s) {
                                Ok(p) => allowed_hosts.push(p),
                                Err(why) => {
                                    self.error(value.span(), format!("`allowed_hosts` in {place}: {why}"), "entries look like `api.example.com`, `api.example.com:8080`, `*.example.com` or `*`");
                                    ok = false;
                                }
                            },
                            None => {
                                self.error(
                                    value.span(),
                                    format!(
                                        "`allowed_hosts` entries in {place} must be strings, found {}",
                                        value.type_name()
                                    ),
                                    "write each host in quotes",
                                );
                                ok = false;
                            }
                        }
                    }
                }
                None => {
                    self.error(
                        span_of(hkey, hitem),
                        format!(
                            "`allowed_hosts` in {place} must be an array, found {}",
                            hitem.type_name()
                        ),
                        "write `allowed_hosts = [\"api.example.com\"]`",
                    );
                    ok = false;
                }
            }
        }

        let mut publish = Vec::new();
        if let Some((pkey, pitem)) = table.get_key_value("publish") {
            match pitem.as_array() {
                Some(array) => {
                    for value in array.iter() {
                        let parsed = value
                            .as_str()
                            .and_then(Target::parse)
                            .filter(|t| matches!(t.kind(), TargetKind::Queue | TargetKind::Topic | TargetKind::Bus));
                        match parsed {
                            Some(grant) => {
                                let (what, granted) = (grant.kind(), grant.name());
                                let wording = Wording::new(format!(
                                    "{place} may publish to `{grant}`, but no {what} `{granted}` is declared"
                                ))
                                .qualified()
                                .otherwise(format!("declare it as [{what}.{granted}], or remove the entry"));
                                self.report_last(|c| c.declared(what.as_str(), granted, value.span(), wording));
                                publish.push(grant);
                            }
                            None => {
                                self.error(
                                    value.span(),
                                    format!("`publish` entry {value} in {place} is not `queue:NAME`, `topic:NAME` or `bus:NAME`"),
                                    "write e.g. `publish = [\"queue:jobs\"]`",
                                );
                                ok = false;
                            }
                        }
                    }
                }
                None => {
                    self.error(
                        span_of(pkey, pitem),
                        format!("`publish` in {place} must be an array, found {}", pitem.type_name()),
                        "write `publish = [\"queue:jobs\"]`",
                    );
                    ok = false;
                }
            }
        }

        let source = source?;
        let async_invoke = match table.get_key_value("async") {
            Some((akey, aitem)) => self.async_invoke(name, akey, aitem),
            None => Some(crate::AsyncInvoke::default()),
        };
        let async_invoke = async_invoke?;
        ok.then(|| Function {
            name: name.to_string(),
            source,
            build,
            memory,
            timeout,
            env,
            allowed_hosts,
            publish,
            async_invoke,
        })
    }

    fn build(&mut self, place: &str, key: &Key, item: &Item) -> Option<Build> {
        if let Some(command) = item.as_str() {
            return self
                .build_command(place, command, span_of(key, item))
                .map(|command| Build {
                    command,
                    workdir: PathBuf::from("."),
                });
        }
        let Some(table) = item.as_table_like() else {
            self.error(
                span_of(key, item),
                format!("`build` in {place} must be a string or a table, found {}", item.type_name()),
                "write `build = \"cargo build --target wasm32-wasip2 --release\"`, or `build = { command = \"...\", workdir = \"dir\" }`",
            );
            return None;
        };
        let bplace = format!("`build` of {place}");
        self.unknown_keys(table, BUILD_KEYS, &bplace);
        let command = self
            .required(
                table,
                "command",
                &bplace,
                "\"cargo build --target wasm32-wasip2 --release\"",
                span_of(key, item),
                "add `command = \"...\"`, the shell command that builds the component",
            )
            .and_then(|(c, span)| self.build_command(place, c, span));
        let workdir = match self.string(table, "workdir", &bplace, "\".\"") {
            Some((w, _)) => PathBuf::from(w),
            None if table.contains_key("workdir") => return None,
            None => PathBuf::from("."),
        };
        command.map(|command| Build { command, workdir })
    }

    fn build_command(&mut self, place: &str, command: &str, span: Option<Range<usize>>) -> Option<String> {
        if command.trim().is_empty() {
            self.error(
                span,
                format!("the build command of {place} is empty"),
                "give the shell command that builds the component, or remove `build`",
            );
            return None;
        }
        Some(command.to_string())
    }

    /// The tables of a `[[name]]` array (or an array of inline tables).
    pub(crate) fn array_of_tables<'a>(
        &mut self,
        key: &Key,
        item: &'a Item,
        name: &str,
        help: &str,
    ) -> Vec<&'a dyn TableLike> {
        if let Some(aot) = item.as_array_of_tables() {
            aot.iter().map(|t| t as &dyn TableLike).collect()
        } else if let Some(array) = item
            .as_array()
            .filter(|a| a.iter().all(|v| v.as_inline_table().is_some()))
        {
            array
                .iter()
                .filter_map(|v| v.as_inline_table().map(|t| t as &dyn TableLike))
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

    fn routes(&mut self, key: &Key, item: &Item) -> Vec<Route> {
        let tables = self.array_of_tables(
            key,
            item,
            "route",
            "write each route as `[[route]]` with `path` and `function`",
        );
        let mut routes = Vec::new();
        let mut table_of_routes: RouteTable<Option<Range<usize>>> = RouteTable::default();
        for (n, table) in tables.into_iter().enumerate() {
            let place = format!("route #{}", n + 1);
            self.unknown_keys(table, ROUTE_KEYS, &format!("[[route]] ({place})"));
            let method = match self.string(table, "method", &place, "\"GET\"") {
                Some((m, span)) => match Method::parse(m) {
                    Ok(m) => m,
                    Err(why) => {
                        self.error(
                            span,
                            format!("{place}: {why}"),
                            "leave `method` out to match any method",
                        );
                        continue;
                    }
                },
                None if table.contains_key("method") => continue,
                None => None,
            };
            let path = self
                .required(
                    table,
                    "path",
                    &place,
                    "\"/users/{id}\"",
                    None,
                    "add `path = \"/...\"` to the [[route]]",
                )
                .and_then(|(p, span)| match RoutePath::parse(p) {
                    Ok(p) => Some((p, span)),
                    Err(e) => {
                        self.error(span, format!("{place}: {}", e.message), &e.help);
                        None
                    }
                });
            let function = self
                .required(
                    table,
                    "function",
                    &place,
                    "\"my-function\"",
                    None,
                    "add `function = \"NAME\"` naming a [function.NAME]",
                )
                .and_then(|(f, span)| {
                    let functions = self.names.of("function");
                    let otherwise = match functions.is_empty() {
                        true => "declare it with `[function.NAME]` and a `source`".to_string(),
                        false => format!(
                            "declare it with [function.{f}], or use one of: {}",
                            functions.join(", ")
                        ),
                    };
                    let wording = Wording::new(format!(
                        "{place} sends requests to `{f}`, which is not a function of this app"
                    ))
                    .after_near(" Functions are declared as [function.NAME]")
                    .otherwise(otherwise);
                    self.declared("function", f, span, wording).then(|| f.to_string())
                });
            if let Some((p, span)) = &path
                && (p.as_str() == "/events" || p.as_str().starts_with("/events/"))
            {
                self.error(
                    span.clone(),
                    format!(
                        "{place}: paths under `/events/` are reserved for the CloudEvents ingress (POST /events/TOPIC)"
                    ),
                    "choose another path for this route",
                );
                continue;
            }
            let (Some((path, span)), Some(function)) = (path, function) else {
                continue;
            };
            match table_of_routes.insert(method, path.clone(), span.clone()) {
                Ok(()) => routes.push(Route { method, path, function }),
                Err(other) => {
                    let with = match other.and_then(|i| routes.get(i).zip(table_of_routes.entries().nth(i))) {
                        Some((r, (_, _, earlier))) => {
                            let at = earlier
                                .as_ref()
                                .map_or(String::new(), |s| format!(" on line {}", self.out.line_col(s.start).0));
                            format!(" `{} {}`{at}", method_name(r.method), r.path)
                        }
                        None => String::new(),
                    };
                    self.out.push(
                        Diagnostic::new(span, format!("{place} (`{} {path}`) collides with the route{with}", method_name(method)))
                            .with_help("two routes with the same method cannot have the same path shape: change the path, the method, or remove one"),
                    );
                }
            }
        }
        routes
    }
}

fn method_name(method: Option<Method>) -> &'static str {
    method.map_or("ANY", Method::as_str)
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
