//! `[kv.NAME]`: key-value stores, with their limits, time to live and
//! change stream; `[[kv.NAME.target]]` and `[[trigger]]` with `kv`, where
//! the changes go; and `kv = [...]` in `[function.NAME]`, the stores a
//! function may open.

use std::time::Duration;

use toml_edit::{Item, Table, TableLike};

use crate::names::Names;
use crate::parse::{Checker, Kind, span_of};
use crate::records::{Records, TARGET_KEYS, record_retry};
use crate::section::Section;
use crate::sections::app::Grant;
use crate::{Manifest, Retry, Target};

/// `max_value` when the manifest does not say (or less, where the
/// storage cannot keep that much in one write).
pub const DEFAULT_MAX_VALUE: u64 = 1 << 20;
/// The largest `max_value`.
pub const MAX_VALUE: u64 = 16 << 20;
/// The longest key (and `max_key`'s default).
pub const MAX_KEY: u64 = 1024;
/// The tag of a store declared with `changes = true`.
const CHANGES: &str = "changes";

const STORE: Kind = Kind {
    name: "kv",
    keys: &["max_value", "max_key", "ttl", "changes", "target"],
    example: "carts",
    help: "write the store as `[kv.NAME]` with its settings",
};
const RECORDS: Records = Records {
    record: "change",
    table: "[[kv.NAME.target]]",
};
const GRANT: Grant = Grant {
    key: "kv",
    kind: "kv",
    noun: "store",
    verb: "open",
    example: "carts",
};

/// `[kv.NAME]`: a key-value store functions open by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    pub name: String,
    /// The largest value, in bytes; none for the default
    /// ([`DEFAULT_MAX_VALUE`], or what the storage keeps if less).
    pub max_value: Option<u64>,
    /// The longest key, in bytes.
    pub max_key: u64,
    /// Every value expires this long after it is written, unless a set
    /// from the admin API gives its own.
    pub ttl: Option<Duration>,
    /// Every insert, modification and removal is recorded, in the write.
    pub changes: bool,
    /// Where the changes go: `[[kv.NAME.target]]`, then `[[trigger]]`s.
    pub targets: Vec<StoreTarget>,
}

/// One place a store's changes go.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreTarget {
    /// A function (sent batches of records), queue, topic or bus.
    pub target: Target,
    /// Function targets: records per invocation.
    pub batch: u32,
    /// Function targets: invocations at once (each key's changes still
    /// arrive in order).
    pub concurrency: u32,
    /// Function targets: tried until `max_age` (24 hours), doubling the
    /// wait from one second.
    pub retry: Retry,
    /// Function targets: a standard queue for records that could not be delivered.
    pub dead_letter: Option<String>,
}

impl Store {
    /// A store with the defaults and no changes.
    pub fn new(name: &str) -> Store {
        Store {
            name: name.to_string(),
            max_value: None,
            max_key: MAX_KEY,
            ttl: None,
            changes: false,
            targets: Vec::new(),
        }
    }
}

pub(crate) struct Stores;

impl Section for Stores {
    fn keys(&self) -> &[&str] {
        &["kv"]
    }

    fn declare(&self, root: &Table, names: &mut Names) {
        let Some(stores) = root.get("kv").and_then(Item::as_table_like) else {
            return;
        };
        for (name, store) in stores.iter() {
            names.declare("kv", name);
            // A `changes` that is not a boolean is reported once, by the
            // store's own check, not again by each trigger on it.
            if store.get("changes").is_some_and(|c| c.as_bool() != Some(false)) {
                names.tag("kv", name, CHANGES);
            }
        }
    }

    fn check(&self, c: &mut Checker, root: &Table, manifest: &mut Manifest) {
        let mut stores = Vec::new();
        c.each_named(root, &STORE, |c, named| {
            if let Some(store) = c.store(named.name, named.table, &named.place) {
                stores.push(store);
            }
        });
        c.kv_triggers(root, &mut stores);
        manifest.stores = stores;
        c.grants(root, manifest, &GRANT, |f| &mut f.kv);
    }
}

impl Checker {
    fn store(&mut self, name: &str, table: &dyn TableLike, place: &str) -> Option<Store> {
        let max_value = match table.contains_key("max_value") {
            false => Some(None),
            true => self
                .size_in(table, "max_value", place, DEFAULT_MAX_VALUE, (1, MAX_VALUE))
                .map(Some),
        };
        let max_key = self.size_in(table, "max_key", place, MAX_KEY, (1, MAX_KEY));
        let ttl = match table.contains_key("ttl") {
            false => Some(None),
            true => self
                .duration_in(
                    table,
                    "ttl",
                    place,
                    Duration::ZERO,
                    (Duration::from_secs(1), Duration::from_secs(366 * 24 * 3600)),
                )
                .map(Some),
        };
        let changes = match table.get_key_value("changes") {
            None => Some(false),
            Some((k, item)) => match item.as_bool() {
                Some(b) => Some(b),
                None => {
                    self.error(
                        span_of(k, item),
                        format!("`changes` in {place} must be true or false"),
                        "write `changes = true` to record every insert, modification and removal",
                    );
                    None
                }
            },
        };
        let mut targets_ok = true;
        let mut targets = Vec::new();
        if let Some((tkey, titem)) = table.get_key_value("target") {
            let tables = self.array_of_tables(
                tkey,
                titem,
                &format!("kv.{name}.target"),
                &format!("write each target as `[[kv.{name}.target]]` with `function`, `queue`, `topic` or `bus`"),
            );
            if changes == Some(false) {
                self.error(
                    span_of(tkey, titem),
                    format!("{place} has targets, but it records no changes to send them"),
                    format!("add `changes = true` to [kv.{name}]"),
                );
                targets_ok = false;
            }
            for (n, t) in tables.into_iter().enumerate() {
                let place = format!("target #{} of [kv.{name}]", n + 1);
                match self.store_target(t, &place) {
                    Some(target) => targets.push(target),
                    None => targets_ok = false,
                }
            }
        }
        Some(Store {
            name: name.to_string(),
            max_value: max_value?,
            max_key: max_key?,
            ttl: ttl?,
            changes: changes?,
            targets,
        })
        .filter(|_| targets_ok)
    }

    fn store_target(&mut self, t: &dyn TableLike, place: &str) -> Option<StoreTarget> {
        self.unknown_keys(t, TARGET_KEYS, place);
        let target = self.record_target(t, place, None, &RECORDS)?;
        Some(StoreTarget {
            target: target.target,
            batch: target.batch,
            concurrency: 1,
            retry: record_retry(),
            dead_letter: target.dead_letter,
        })
    }

    /// `[[trigger]]`s with `kv`: function targets of the store's changes.
    fn kv_triggers(&mut self, root: &Table, stores: &mut [Store]) {
        // The queues section reports a `trigger` that is not an array of tables.
        let tables: Vec<&dyn TableLike> = match root.get("trigger") {
            Some(Item::ArrayOfTables(aot)) => aot.iter().map(|t| t as &dyn TableLike).collect(),
            Some(item) => item
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_inline_table().map(|t| t as &dyn TableLike))
                        .collect()
                })
                .unwrap_or_default(),
            None => return,
        };
        for (n, table) in tables.into_iter().enumerate() {
            if !table.contains_key("kv") {
                continue;
            }
            let place = format!("trigger #{}", n + 1);
            let store = self.reference(table, "kv", &place, "kv");
            let function = self.reference(table, "function", &place, "function");
            let batch = self.integer_in(table, "batch", &place, 100, (1, 1000));
            let concurrency = self.integer_in(table, "concurrency", &place, 1, (1, 100));
            if let Some(name) = &store
                && !self.names.has_tag("kv", name, CHANGES)
            {
                let span = table.get_key_value("kv").and_then(|(k, i)| span_of(k, i));
                self.error(
                    span,
                    format!("{place} takes the changes of store `{name}`, which records none"),
                    format!("add `changes = true` to [kv.{name}]"),
                );
                continue;
            }
            let (Some(store), Some(function), Some(batch), Some(concurrency)) = (store, function, batch, concurrency)
            else {
                continue;
            };
            if let Some(s) = stores.iter_mut().find(|s| s.name == store) {
                s.targets.push(StoreTarget {
                    target: Target::Function(function),
                    batch,
                    concurrency,
                    retry: record_retry(),
                    dead_letter: None,
                });
            }
        }
    }
}
