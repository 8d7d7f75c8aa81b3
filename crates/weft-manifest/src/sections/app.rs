//! `[app]` and `[function.NAME]`: the app's name, and each deployable
//! function with its limits, configuration and grants (`allowed_hosts`,
//! `publish`). `[function.NAME.async]` belongs to the queues section; the
//! grants of what other sections declare (`kv`, `buckets`) are checked by
//! those sections, through [`Checker::grants`].

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml_edit::{Document, Item, Key, Table, TableLike, Value};

use crate::names::{Names, Wording};
use crate::parse::{Checker, span_of};
use crate::section::Section;
use crate::{AsyncInvoke, ByteSize, HostPattern, Manifest, Target, TargetKind, check_name, parse_duration, parse_size};

/// The largest `memory` a function may ask for.
pub const MAX_MEMORY: u64 = 4 * 1024 * 1024 * 1024;
/// The longest `timeout` a function may ask for (as on Lambda).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// `memory` when the manifest does not say.
pub const DEFAULT_MEMORY: u64 = 128 * 1024 * 1024;
/// `timeout` when the manifest does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MIN_MEMORY: u64 = 1 << 20;
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
    "kv",
    "buckets",
];
const BUILD_KEYS: &[&str] = &["command", "workdir"];
/// What `publish` entries may name.
const GRANTS: &[TargetKind] = &[
    TargetKind::Queue,
    TargetKind::Topic,
    TargetKind::Bus,
    TargetKind::Workflow,
];

/// `[function.NAME]`: one deployable function and what it is granted.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    /// The component file, relative to the app directory.
    pub source: PathBuf,
    pub build: Option<Build>,
    pub memory: ByteSize,
    pub timeout: Duration,
    /// Configuration values, in the order written.
    pub env: Vec<(String, String)>,
    /// Outbound HTTP destinations; empty means none.
    pub allowed_hosts: Vec<HostPattern>,
    /// Queues, topics and buses the function may send events to.
    pub publish: Vec<Target>,
    /// `[function.NAME.async]`: how asynchronous invocations are retried and
    /// where their results go.
    pub async_invoke: AsyncInvoke,
    /// The key-value stores it may open (`kv = ["carts"]`; the kv section's).
    pub kv: Vec<String>,
    /// The buckets it may read and write (`buckets = ["uploads"]`; the
    /// bucket section's).
    pub buckets: Vec<String>,
}

/// A key of `[function.NAME]` that lists names another section declares,
/// e.g. `kv = ["carts"]`, and how its messages read.
pub(crate) struct Grant<'a> {
    /// The key in `[function.NAME]`, e.g. `kv`.
    pub key: &'a str,
    /// The kind of name it lists, as declared, e.g. `kv` (`[kv.NAME]`).
    pub kind: &'a str,
    /// What that is called in messages, e.g. "store".
    pub noun: &'a str,
    /// What the function may do with it, e.g. "open".
    pub verb: &'a str,
    /// A name for the examples, e.g. "carts".
    pub example: &'a str,
}

/// How to produce a function's component from source.
#[derive(Debug, Clone, PartialEq)]
pub struct Build {
    /// A shell command line, run with `sh -c`.
    pub command: String,
    /// Relative to the app directory.
    pub workdir: PathBuf,
}

pub(crate) struct Functions;

impl Section for Functions {
    fn keys(&self) -> &[&str] {
        &["app", "function"]
    }

    fn declare(&self, root: &Table, names: &mut Names) {
        names.declare_tables(root, "function");
    }

    fn check(&self, c: &mut Checker, root: &Table, manifest: &mut Manifest) {
        match root.get_key_value("app") {
            Some((key, item)) => manifest.app = c.app(key, item).unwrap_or_default(),
            None => c.error(
                None,
                "the manifest has no [app] table",
                "add `[app]` with `name = \"my-app\"` at the top of the file",
            ),
        }
        let Some((key, item)) = root.get_key_value("function") else {
            return;
        };
        let Some(table) = item.as_table_like() else {
            c.error(
                span_of(key, item),
                format!("`function` must be a table of functions, found {}", item.type_name()),
                "write each function as its own table: `[function.NAME]`",
            );
            return;
        };
        for (name, item) in table.iter() {
            let key = table.key(name).unwrap_or(key);
            if let Some(f) = c.function(name, key, item) {
                manifest.functions.push(f);
            }
        }
    }
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

impl Checker {
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
        let hosts = self.array(table, "allowed_hosts", &place, "[\"api.example.com\"]");
        ok &= hosts.is_ok();
        for value in hosts.ok().flatten().into_iter().flat_map(|a| a.iter()) {
            match value.as_str().map(HostPattern::parse) {
                Some(Ok(p)) => allowed_hosts.push(p),
                Some(Err(why)) => {
                    self.error(
                        value.span(),
                        format!("`allowed_hosts` in {place}: {why}"),
                        "entries look like `api.example.com`, `api.example.com:8080`, `*.example.com` or `*`",
                    );
                    ok = false;
                }
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

        let mut publish = Vec::new();
        let grants = self.array(table, "publish", &place, "[\"queue:jobs\"]");
        ok &= grants.is_ok();
        for value in grants.ok().flatten().into_iter().flat_map(|a| a.iter()) {
            let parsed = value
                .as_str()
                .and_then(Target::parse)
                .filter(|t| GRANTS.contains(&t.kind()));
            let Some(grant) = parsed else {
                self.error(
                    value.span(),
                    format!("`publish` entry {value} in {place} is not `queue:NAME`, `topic:NAME`, `bus:NAME` or `workflow:NAME`"),
                    "write e.g. `publish = [\"queue:jobs\"]`",
                );
                ok = false;
                continue;
            };
            let (what, granted) = (grant.kind(), grant.name());
            let wording = Wording::new(format!(
                "{place} may publish to `{grant}`, but no {what} `{granted}` is declared"
            ))
            .qualified()
            .otherwise(format!("declare it as [{what}.{granted}], or remove the entry"));
            self.report_last(|c| c.declared(what.as_str(), granted, value.span(), wording));
            publish.push(grant);
        }

        let source = source?;
        ok.then(|| Function {
            name: name.to_string(),
            source,
            build,
            memory,
            timeout,
            env,
            allowed_hosts,
            publish,
            async_invoke: AsyncInvoke::default(),
            kv: Vec::new(),
            buckets: Vec::new(),
        })
    }

    /// Checks `grant` in every `[function.NAME]`, each entry naming a
    /// declared name, and keeps the names in `field` of each checked
    /// function.
    pub(crate) fn grants(
        &mut self,
        root: &Table,
        manifest: &mut Manifest,
        grant: &Grant<'_>,
        field: fn(&mut Function) -> &mut Vec<String>,
    ) {
        let Some(functions) = root.get("function").and_then(Item::as_table_like) else {
            return;
        };
        for (name, function) in functions.iter() {
            let Some(table) = function.as_table_like() else {
                continue;
            };
            let granted = self.granted(name, table, grant);
            if let Some(f) = manifest.functions.iter_mut().find(|f| f.name == name) {
                *field(f) = granted;
            }
        }
    }

    /// `grant` in one `[function.NAME]`, e.g. `kv = ["carts"]`.
    fn granted(&mut self, function: &str, table: &dyn TableLike, grant: &Grant<'_>) -> Vec<String> {
        let Grant {
            key,
            kind,
            noun,
            verb,
            example,
        } = grant;
        let place = format!("[function.{function}]");
        let mut granted = Vec::new();
        let Ok(Some(array)) = self.array(table, key, &place, &format!("[\"{example}\"]")) else {
            return granted;
        };
        for value in array.iter() {
            let Some(name) = value.as_str() else {
                self.error(
                    value.span(),
                    format!(
                        "`{key}` entries in {place} must be strings, found {}",
                        value.type_name()
                    ),
                    format!("name each {noun} in quotes, e.g. `{key} = [\"{example}\"]`"),
                );
                continue;
            };
            let wording = Wording::new(format!(
                "{place} may {verb} {noun} `{name}`, but no {noun} `{name}` is declared"
            ))
            .otherwise(format!("declare it as [{kind}.{name}], or remove the entry"));
            if self.declared(kind, name, value.span(), wording) {
                granted.push(name.to_string());
            }
        }
        granted
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
}
