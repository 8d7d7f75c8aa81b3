//! A section defined outside this crate, through the public API only: it
//! owns `[counter.NAME]`, is checked like the built-in sections, and keeps
//! its checked value in the manifest.

use weft_manifest::section::toml_edit::Table;
use weft_manifest::section::{Checker, Kind, Section};
use weft_manifest::{Extension, Manifest};

#[derive(Debug, Clone, PartialEq)]
struct Counter {
    name: String,
    start: u32,
    /// A function told when the counter resets.
    notify: Option<String>,
}

struct Counters;

const COUNTER: Kind = Kind {
    name: "counter",
    keys: &["start", "notify"],
    example: "visits",
    help: "write the counter as `[counter.NAME]` with `start = 0`",
};

impl Section for Counters {
    fn keys(&self) -> &[&str] {
        &["counter"]
    }

    fn check(&self, c: &mut Checker, root: &Table, manifest: &mut Manifest) {
        let mut counters = Vec::new();
        c.each_named(root, &COUNTER, |c, counter| {
            let start = c.integer_in(counter.table, "start", &counter.place, 0, (0, 1_000_000));
            let notify = match counter.table.contains_key("notify") {
                true => c
                    .reference(counter.table, "notify", &counter.place, "function")
                    .map(Some),
                false => Some(None),
            };
            if let (true, Some(start), Some(notify)) = (counter.name_ok, start, notify) {
                counters.push(Counter {
                    name: counter.name.to_string(),
                    start,
                    notify,
                });
            }
        });
        if !counters.is_empty() {
            manifest.extensions.insert("counter".into(), Extension::new(counters));
        }
    }
}

const APP: &str = "[app]\nname = \"shop\"\n\n[function.audit]\nsource = \"audit.wasm\"\n\n";

fn parse(counters: &str) -> Result<Manifest, String> {
    Manifest::parse_with(&format!("{APP}{counters}"), "weft.toml", &[&Counters]).map_err(|d| d.to_string())
}

#[test]
fn a_good_counter_is_kept_in_the_manifest() {
    let m = parse("[counter.visits]\nstart = 5\nnotify = \"audit\"\n\n[counter.clicks]\n").unwrap();
    let counters: &Vec<Counter> = m.extension("counter").unwrap();
    assert_eq!(
        counters,
        &[
            Counter {
                name: "visits".into(),
                start: 5,
                notify: Some("audit".into()),
            },
            Counter {
                name: "clicks".into(),
                start: 0,
                notify: None,
            },
        ]
    );
    assert_eq!(m.extension::<Vec<String>>("counter"), None, "only the type it holds");
    assert_eq!(m.clone(), m);
    assert_ne!(parse("[counter.visits]\nstart = 6\n").unwrap(), m);
}

#[test]
fn a_bad_counter_is_reported_where_it_is_written() {
    let got = parse("[counter.visits]\nstart = \"5\"\nstep = 2\nnotify = \"audti\"\n").unwrap_err();
    let expected = r#"error: unknown key `step` in [counter.visits]
  --> weft.toml:9:1
  |
9 | step = 2
  | ^^^^
  = help: remove it; the keys allowed here are: start, notify

error: `start` in [counter.visits] must be a whole number, found string
  --> weft.toml:8:9
  |
8 | start = "5"
  |         ^^^
  = help: write it without quotes, e.g. `start = 0`

error: [counter.visits] names notify `audti`, which is not declared in this app
  --> weft.toml:10:10
   |
10 | notify = "audti"
   |          ^^^^^^^
  = help: did you mean `audit`?

3 errors in weft.toml
"#;
    assert_eq!(got, expected);
}

#[test]
fn the_top_level_knows_the_extension_key_only_when_it_is_passed() {
    let text = format!("{APP}[counter.visits]\n");
    let without = Manifest::parse(&text, "weft.toml").unwrap_err().to_string();
    assert!(without.contains("unknown key `counter` in the top level"), "{without}");
    let typo = parse("[counters.visits]\n").unwrap_err().to_string();
    assert!(
        typo.contains("did you mean `counter`? The keys allowed here are: app, function, route, queue, trigger, schedule, topic, subscription, bus, rule, kv, bucket, workflow, pricing, counter"),
        "{typo}"
    );
}
