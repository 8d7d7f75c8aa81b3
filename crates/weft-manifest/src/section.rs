//! What a section of the manifest is, and what a section needs to check
//! its tables: the extension point through which a capability owns its
//! top-level keys.
//!
//! A [`Section`] owns one or more top-level keys (`[queue.NAME]` and
//! `[[trigger]]`, say). Checking runs in two passes over every section:
//! first each one declares the names other sections may refer to, then each
//! one checks its tables through the [`Checker`] and writes its part of the
//! [`Manifest`]. The built-in sections are registered in one list inside
//! this crate; a crate outside this one passes its own to
//! [`Manifest::parse_with`] and finds its checked value in
//! [`Manifest::extensions`].
//!
//! ```
//! use weft_manifest::Manifest;
//! use weft_manifest::section::{Checker, Extension, Kind, Section, toml_edit::Table};
//!
//! /// `[counter.NAME]` with `start = N`.
//! struct Counters;
//!
//! const COUNTER: Kind = Kind {
//!     name: "counter",
//!     keys: &["start"],
//!     example: "visits",
//!     help: "write the counter as `[counter.NAME]`",
//! };
//!
//! impl Section for Counters {
//!     fn keys(&self) -> &[&str] {
//!         &["counter"]
//!     }
//!
//!     fn check(&self, c: &mut Checker, root: &Table, manifest: &mut Manifest) {
//!         let mut counters: Vec<(String, u32)> = Vec::new();
//!         c.each_named(root, &COUNTER, |c, counter| {
//!             if let Some(start) = c.integer_in(counter.table, "start", &counter.place, 0, (0, 1000)) {
//!                 counters.push((counter.name.to_string(), start));
//!             }
//!         });
//!         manifest.extensions.insert("counter".into(), Extension::new(counters));
//!     }
//! }
//!
//! let text = "[app]\nname = \"shop\"\n\n[counter.visits]\nstart = 5\n";
//! let manifest = Manifest::parse_with(text, "weft.toml", &[&Counters]).unwrap();
//! let counters: &Vec<(String, u32)> = manifest.extension("counter").unwrap();
//! assert_eq!(counters, &[("visits".to_string(), 5)]);
//! ```

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use toml_edit::Table;

use crate::Manifest;
pub use crate::names::{FIFO, Names, Reported, TargetChoice, Wording};
pub use crate::parse::{Checker, Kind, Named, span_of};
/// The TOML types sections read, so a section's crate uses the same version.
pub use toml_edit;

/// One part of the manifest: the top-level keys it owns, the names it
/// declares, and the check of its tables. `Send + Sync` so an embedder can
/// keep its sections in a `static` or share them between threads.
pub trait Section: Send + Sync {
    /// The top-level keys this section owns, e.g. `["queue", "trigger"]`.
    /// No two sections may own the same key.
    fn keys(&self) -> &[&str];

    /// First pass, before any table is checked: declares the names other
    /// sections may refer to. By default, every `NAME` of a `[KEY.NAME]`
    /// table as a `KEY`.
    fn declare(&self, root: &Table, names: &mut Names) {
        for key in self.keys() {
            names.declare_tables(root, key);
        }
    }

    /// Second pass: checks this section's tables, reporting every mistake
    /// through `c`, and writes its part of `manifest`. It runs whether or
    /// not its keys are present (a required key is missing otherwise).
    fn check(&self, c: &mut Checker, root: &Table, manifest: &mut Manifest);
}

/// The checked value of a section defined outside this crate, kept in
/// [`Manifest::extensions`] under the section's key.
#[derive(Clone)]
pub struct Extension(Arc<dyn Checked>);

/// What an extension's value must be for the manifest to stay
/// `Debug + Clone + PartialEq`.
trait Checked: Any + fmt::Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn equals(&self, other: &dyn Checked) -> bool;
}

impl<T: Any + fmt::Debug + PartialEq + Send + Sync> Checked for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn equals(&self, other: &dyn Checked) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
}

impl Extension {
    pub fn new<T: Any + fmt::Debug + PartialEq + Send + Sync>(value: T) -> Extension {
        Extension(Arc::new(value))
    }

    /// The value, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }
}

impl PartialEq for Extension {
    /// Equal when both hold equal values of the same type.
    fn eq(&self, other: &Extension) -> bool {
        self.0.equals(&*other.0)
    }
}

impl fmt::Debug for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
