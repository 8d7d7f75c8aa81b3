//! The app model: what a `weft.toml` says, checked.
//!
//! [`Manifest::parse`] turns manifest text into a [`Manifest`] or into
//! [`Diagnostics`]: every mistake found in one pass, each with the place
//! (file:line:column), what is wrong, and how to fix it. Parsing is pure: it
//! reads no files, so the server can check a manifest a client uploaded with
//! the same code that checks one on disk. [`Manifest::check_files`] is the
//! separate step that looks at the app directory.
//!
//! This crate must not know how functions run or where anything is stored.
//!
//! ```
//! let text = r#"
//! [app]
//! name = "shop"
//!
//! [function.cart]
//! source = "cart.wasm"
//! memory = "64MB"
//!
//! [[route]]
//! method = "GET"
//! path = "/cart/{id}"
//! function = "cart"
//! "#;
//! let manifest = weft_manifest::Manifest::parse(text, "weft.toml").unwrap();
//! assert_eq!(manifest.functions[0].memory.bytes(), 64 * 1024 * 1024);
//! ```

mod bus;
mod diagnostic;
mod hosts;
mod names;
mod parse;
pub mod pattern;
mod queues;
mod retry;
mod route;
mod schedule;
mod target;
mod topics;
mod units;

pub use bus::{
    Bus, DEFAULT_BUS, DEFAULT_MAX_EVENT_AGE, DEFAULT_RETRIES, Input, JsonPath, Rule, RuleTarget, TemplateContext,
};
pub use diagnostic::{Diagnostic, Diagnostics};
pub use hosts::HostPattern;
pub use parse::check_name;
pub use queues::{DEDUP_WINDOW, Queue, Trigger};
pub use retry::{MAX_BACKOFF, Retry};
pub use route::{Method, RouteMatch, RoutePath, RouteSyntaxError, RouteTable};
pub use schedule::{Cron, Expression, Missed, Schedule};
pub use target::{Target, TargetKind};
pub use topics::{Subscription, Topic};
pub use units::{ByteSize, format_duration, parse_duration, parse_size};

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest `memory` a function may ask for.
pub const MAX_MEMORY: u64 = 4 * 1024 * 1024 * 1024;
/// The longest `timeout` a function may ask for (as on Lambda).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// `memory` when the manifest does not say.
pub const DEFAULT_MEMORY: u64 = 128 * 1024 * 1024;
/// `timeout` when the manifest does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A whole app, as its manifest describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub app: String,
    pub functions: Vec<Function>,
    pub routes: Vec<Route>,
    pub queues: Vec<Queue>,
    pub triggers: Vec<Trigger>,
    pub schedules: Vec<Schedule>,
    pub topics: Vec<Topic>,
    pub subscriptions: Vec<Subscription>,
    /// Declared buses (the `default` bus exists whether declared or not).
    pub buses: Vec<Bus>,
    pub rules: Vec<Rule>,
}

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
}

/// Retries and destinations of asynchronous invocations (as Lambda's).
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncInvoke {
    /// `retries` (0 to 2) + 1 attempts, `backoff`, and `max_event_age`
    /// (always set).
    pub retry: Retry,
    /// A function, queue, topic or bus; a bus is put an event with
    /// EventBridge's Lambda destination shape.
    pub on_success: Option<Target>,
    pub on_failure: Option<Target>,
}

impl Default for AsyncInvoke {
    fn default() -> Self {
        AsyncInvoke {
            retry: Retry {
                max_attempts: 3,
                backoff: Duration::from_secs(60),
                max_age: Some(Duration::from_secs(6 * 3600)),
            },
            on_success: None,
            on_failure: None,
        }
    }
}

/// How to produce a function's component from source.
#[derive(Debug, Clone, PartialEq)]
pub struct Build {
    /// A shell command line, run with `sh -c`.
    pub command: String,
    /// Relative to the app directory.
    pub workdir: PathBuf,
}

/// `[[route]]`: requests matching `method` and `path` go to `function`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `None` matches any method.
    pub method: Option<Method>,
    pub path: RoutePath,
    pub function: String,
}

impl Manifest {
    /// Parses and checks manifest text. `file` names it in diagnostics.
    pub fn parse(text: &str, file: &str) -> Result<Manifest, Diagnostics> {
        parse::parse(text, file)
    }

    /// Reads and parses `APP_DIR/weft.toml`.
    pub fn load(app_dir: &Path) -> Result<(Manifest, String), Diagnostics> {
        let path = app_dir.join("weft.toml");
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Diagnostics::single(
                &shown,
                "",
                Diagnostic::new(None, format!("cannot read the manifest: {e}"))
                    .with_help("run `weft new NAME` to create an app, or pass the directory that holds weft.toml"),
            )
        })?;
        let manifest = Manifest::parse(&text, &shown)?;
        Ok((manifest, text))
    }

    /// Checks that every function without a build command has its source file.
    /// Functions with a build get the same check after building; see
    /// [`Manifest::check_sources`].
    pub fn check_files(&self, app_dir: &Path, text: &str, file: &str) -> Result<(), Diagnostics> {
        let pending: Vec<&Function> = self.functions.iter().filter(|f| f.build.is_none()).collect();
        self.check_sources_of(pending, app_dir, text, file)
    }

    /// Checks that every function's source file exists (run after builds).
    pub fn check_sources(&self, app_dir: &Path, text: &str, file: &str) -> Result<(), Diagnostics> {
        self.check_sources_of(self.functions.iter().collect(), app_dir, text, file)
    }

    fn check_sources_of(
        &self,
        functions: Vec<&Function>,
        app_dir: &Path,
        text: &str,
        file: &str,
    ) -> Result<(), Diagnostics> {
        let mut out = Diagnostics::new(file, text);
        let spans = parse::source_spans(text);
        for function in functions {
            let path = app_dir.join(&function.source);
            if !path.is_file() {
                let help = if function.build.is_some() {
                    "the build command ran but did not write this file: make `source` the path the build writes"
                } else {
                    "build the component first, fix the path, or add `build = \"...\"` so weft builds it"
                };
                out.push(
                    Diagnostic::new(
                        spans.get(&function.name).cloned(),
                        format!(
                            "function `{}`: source file `{}` does not exist",
                            function.name,
                            path.display()
                        ),
                    )
                    .with_help(help),
                );
            }
        }
        out.into_result(())
    }

    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }

    pub fn queue(&self, name: &str) -> Option<&Queue> {
        self.queues.iter().find(|q| q.name == name)
    }

    /// Every bus of the app: the declared ones, and `default` if it is not.
    pub fn all_buses(&self) -> Vec<Bus> {
        let mut buses = self.buses.clone();
        if !buses.iter().any(|b| b.name == DEFAULT_BUS) {
            buses.insert(
                0,
                Bus {
                    name: DEFAULT_BUS.to_string(),
                    archive: None,
                },
            );
        }
        buses
    }
}
