//! The built-in sections of the manifest, each one module of the same
//! shape (a [`Section`]: its top-level keys, the names it declares, the
//! check of its tables), and the one list that registers them.
//!
//! Adding a capability adds a module here and an entry in [`BUILT_IN`];
//! it touches no other section and not the checker.

use crate::section::Section;

pub(crate) mod app;
pub(crate) mod buckets;
pub(crate) mod bus;
pub(crate) mod kv;
pub(crate) mod pricing;
pub(crate) mod queues;
pub(crate) mod routes;
pub(crate) mod schedules;
pub(crate) mod topics;
pub(crate) mod workflows;

/// Every built-in section, in the order their mistakes are reported:
/// each section's references are checked against every declared name, but
/// a manifest's tables read best in this order.
pub(crate) const BUILT_IN: &[&dyn Section] = &[
    &app::Functions,
    &routes::Routes,
    &queues::Queues,
    &topics::Topics,
    &bus::Buses,
    &schedules::Schedules,
    &kv::Stores,
    &buckets::Buckets,
    &workflows::Workflows,
    &pricing::Prices,
];

/// The order the help for an unknown top-level key lists the built-in keys
/// in, as it always has; keys of other sections follow, in the order given.
const LISTED: &[&str] = &[
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
    "kv",
    "bucket",
    "workflow",
    "pricing",
];

/// The top-level keys `sections` own, as the help lists them.
pub(crate) fn top_keys<'s>(sections: &[&'s dyn Section]) -> Vec<&'s str> {
    let owned: Vec<&str> = sections.iter().flat_map(|s| s.keys().iter().copied()).collect();
    let mut keys: Vec<&str> = LISTED.iter().copied().filter(|k| owned.contains(k)).collect();
    keys.extend(owned.into_iter().filter(|k| !LISTED.contains(k)));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_key_is_listed_once_and_owned_once() {
        let mut owned: Vec<&str> = BUILT_IN.iter().flat_map(|s| s.keys().iter().copied()).collect();
        owned.sort_unstable();
        let mut listed = LISTED.to_vec();
        listed.sort_unstable();
        assert_eq!(owned, listed);
        assert_eq!(top_keys(BUILT_IN), LISTED);
    }
}
