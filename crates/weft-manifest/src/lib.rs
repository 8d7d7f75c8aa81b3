//! The app model: what a `weft.toml` says, checked.
//!
//! [`Manifest::parse`] turns manifest text into a [`Manifest`] or into
//! [`Diagnostics`]: every mistake found in one pass, each with the place
//! (file:line:column), what is wrong, and how to fix it. Parsing is pure: it
//! reads no files, so the server can check a manifest a client uploaded with
//! the same code that checks one on disk. [`Manifest::check_files`] is the
//! separate step that looks at the app directory.
//!
//! Each top-level section (`[function.NAME]`, `[queue.NAME]`, ...) is one
//! [`Section`]; another crate adds its own with [`Manifest::parse_with`]
//! (see [`section`]).
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

mod diagnostic;
mod expression;
mod hosts;
mod input;
mod names;
mod parse;
pub mod pattern;
mod records;
mod retry;
mod route;
pub mod section;
mod sections;
mod target;
mod units;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use expression::{Cron, Expression};
pub use hosts::HostPattern;
pub use input::{Input, JsonPath, TemplateContext};
pub use parse::check_name;
pub use records::CHANGE_RETENTION;
pub use retry::{MAX_BACKOFF, Retry};
pub use route::{Method, RouteMatch, RoutePath, RouteSyntaxError, RouteTable};
pub use section::{Extension, Section};
pub use sections::app::{Build, DEFAULT_MEMORY, DEFAULT_TIMEOUT, Function, MAX_MEMORY, MAX_TIMEOUT};
pub use sections::buckets::{Bucket, MAX_OBJECT, Notify, ObjectEvent, check_bucket_name};
pub use sections::bus::{Bus, DEFAULT_BUS, DEFAULT_MAX_EVENT_AGE, DEFAULT_RETRIES, Rule, RuleTarget};
pub use sections::kv::{DEFAULT_MAX_VALUE, MAX_KEY, MAX_VALUE, Store, StoreTarget};
pub use sections::pricing::Pricing;
pub use sections::queues::{AsyncInvoke, DEDUP_WINDOW, Queue, Trigger};
pub use sections::routes::Route;
pub use sections::schedules::{Missed, Schedule};
pub use sections::topics::{Subscription, Topic};
pub use sections::workflows::{Workflow, WorkflowKind};
pub use target::{Target, TargetKind};
pub use units::{ByteSize, format_duration, parse_duration, parse_size};

use std::any::Any;
use std::collections::BTreeMap;
use std::path::Path;

/// A whole app, as its manifest describes it.
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// `[kv.NAME]`: key-value stores.
    pub stores: Vec<Store>,
    /// `[bucket.NAME]`: object buckets.
    pub buckets: Vec<Bucket>,
    /// `[workflow.NAME]`: state machines.
    pub workflows: Vec<Workflow>,
    /// `[pricing]`: the app's price table for `weft cost`, if it has one.
    pub pricing: Option<Pricing>,
    /// What sections defined outside this crate checked, by their
    /// top-level key; see [`Manifest::parse_with`].
    pub extensions: BTreeMap<String, Extension>,
}

impl Manifest {
    /// Parses and checks manifest text with the built-in sections. `file`
    /// names it in diagnostics.
    pub fn parse(text: &str, file: &str) -> Result<Manifest, Diagnostics> {
        parse::parse(text, file, &[])
    }

    /// Parses and checks manifest text with the built-in sections and
    /// `sections` (each owning top-level keys no other section owns), which
    /// keep what they check in [`Manifest::extensions`].
    pub fn parse_with(text: &str, file: &str, sections: &[&dyn Section]) -> Result<Manifest, Diagnostics> {
        parse::parse(text, file, sections)
    }

    /// The value an extension section kept under `key`, if it is a `T`.
    pub fn extension<T: Any>(&self, key: &str) -> Option<&T> {
        self.extensions.get(key)?.get()
    }

    /// Reads and parses `APP_DIR/weft.toml`.
    pub fn load(app_dir: &Path) -> Result<(Manifest, String), Diagnostics> {
        Manifest::load_with(app_dir, &[])
    }

    /// Reads and parses `APP_DIR/weft.toml` with the built-in sections and
    /// `sections`, as [`Manifest::parse_with`].
    pub fn load_with(app_dir: &Path, sections: &[&dyn Section]) -> Result<(Manifest, String), Diagnostics> {
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
        let manifest = Manifest::parse_with(&text, &shown, sections)?;
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
        let spans = sections::app::source_spans(text);
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

    pub fn store(&self, name: &str) -> Option<&Store> {
        self.stores.iter().find(|s| s.name == name)
    }

    pub fn bucket(&self, name: &str) -> Option<&Bucket> {
        self.buckets.iter().find(|b| b.name == name)
    }

    pub fn workflow(&self, name: &str) -> Option<&Workflow> {
        self.workflows.iter().find(|w| w.name == name)
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
