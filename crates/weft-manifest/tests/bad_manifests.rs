//! Each `tests/bad/NAME.toml` is a manifest with mistakes; `NAME.expected` is
//! exactly what a user sees for it. Run with `UPDATE_EXPECT=1` to rewrite the
//! expected files after an intended change, then review the diff.

use std::path::Path;

#[test]
fn bad_manifests_report_what_a_user_sees() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/bad exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected the whole table of cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(case).unwrap();
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let got = match weft_manifest::Manifest::parse(&text, &name) {
            Ok(_) => "OK: no errors\n".to_string(),
            Err(d) => d.to_string(),
        };
        let expected_path = case.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            failures.push(format!("== {name}\n-- expected:\n{expected}\n-- got:\n{got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_good_manifest_parses_fully() {
    let text = r#"
[app]
name = "shop"

[function.cart]
source = "cart.wasm"
build = { command = "make", workdir = "cart" }
memory = "64MB"
timeout = "2s"
env = { MODE = "test", RETRIES = 3 }
allowed_hosts = ["api.example.com", "127.0.0.1:*"]

[function.home]
source = "home.wasm"

[[route]]
method = "GET"
path = "/cart/{id}"
function = "cart"

[[route]]
path = "/{*rest}"
function = "home"
"#;
    let m = weft_manifest::Manifest::parse(text, "weft.toml").unwrap();
    assert_eq!(m.app, "shop");
    let cart = m.function("cart").unwrap();
    assert_eq!(cart.memory.bytes(), 64 << 20);
    assert_eq!(cart.timeout, std::time::Duration::from_secs(2));
    assert_eq!(
        cart.env,
        vec![("MODE".into(), "test".into()), ("RETRIES".into(), "3".into())]
    );
    assert_eq!(cart.build.as_ref().unwrap().workdir, Path::new("cart"));
    assert_eq!(cart.allowed_hosts.len(), 2);
    let home = m.function("home").unwrap();
    assert_eq!(home.memory.bytes(), weft_manifest::DEFAULT_MEMORY);
    assert_eq!(m.routes.len(), 2);
    assert_eq!(m.routes[1].method, None);
    assert_eq!(m.routes[0].path.params(), ["id"]);
}

#[test]
fn a_price_table_is_read_with_its_defaults() {
    let app = "[app]\nname = \"shop\"\n\n[function.cart]\nsource = \"cart.wasm\"\n";
    let m = weft_manifest::Manifest::parse(app, "weft.toml").unwrap();
    assert_eq!(m.pricing, None, "no [pricing] means the default table");
    let text = format!("{app}\n[pricing]\nper_request = 0\nper_gb_second = 0.00001\n");
    let p = weft_manifest::Manifest::parse(&text, "weft.toml")
        .unwrap()
        .pricing
        .unwrap();
    assert_eq!((p.per_request, p.per_gb_second), (0.0, 0.00001));
    assert_eq!(
        (p.currency.as_str(), p.label.as_str()),
        ("USD", "the app's prices ([pricing])")
    );
    let text = format!(
        "{app}\n[pricing]\nlabel = \"rack 4\"\ncurrency = \"EUR\"\nper_request = 0.0000001\nper_gb_second = 1\n"
    );
    let p = weft_manifest::Manifest::parse(&text, "weft.toml")
        .unwrap()
        .pricing
        .unwrap();
    assert_eq!(
        (p.label.as_str(), p.currency.as_str(), p.per_gb_second),
        ("rack 4", "EUR", 1.0)
    );
    let half = format!("{app}\n[pricing]\nper_request = 0\n");
    let error = weft_manifest::Manifest::parse(&half, "weft.toml")
        .unwrap_err()
        .to_string();
    assert!(error.contains("[pricing] has no `per_gb_second`"), "{error}");
}

#[test]
fn a_manifest_with_stores_parses_fully() {
    use std::time::Duration;
    use weft_manifest::{DEFAULT_MAX_VALUE, MAX_KEY, Store, StoreTarget, Target};
    let text = r#"
[app]
name = "shop"

[queue.cart-events]

[queue.failed-changes]

[topic.orders]

[bus.audit]

[function.cart-handler]
source = "cart.wasm"
kv = ["carts", "sessions"]

[function.indexer]
source = "indexer.wasm"

[kv.carts]
max_value = "4MB"
max_key = "512B"
ttl = "24h"
changes = true

[[kv.carts.target]]
function = "indexer"
batch = 25
dead_letter = "failed-changes"

[[kv.carts.target]]
queue = "cart-events"

[[kv.carts.target]]
topic = "orders"

[[kv.carts.target]]
bus = "audit"

[kv.sessions]

[[trigger]]
kv = "carts"
function = "cart-handler"
batch = 10
"#;
    let m = weft_manifest::Manifest::parse(text, "weft.toml").unwrap();
    let function = |name: &str, batch: u32, dead_letter: Option<&str>| StoreTarget {
        target: Target::Function(name.into()),
        batch,
        concurrency: 1,
        retry: weft_manifest::Retry {
            max_attempts: u32::MAX,
            backoff: Duration::from_secs(1),
            max_age: Some(weft_manifest::CHANGE_RETENTION),
        },
        dead_letter: dead_letter.map(String::from),
    };
    let event = |target: Target| StoreTarget {
        target,
        ..function("unused", 100, None)
    };
    assert_eq!(
        m.stores,
        vec![
            Store {
                name: "carts".into(),
                max_value: Some(4 << 20),
                max_key: 512,
                ttl: Some(Duration::from_secs(24 * 3600)),
                changes: true,
                targets: vec![
                    function("indexer", 25, Some("failed-changes")),
                    event(Target::Queue("cart-events".into())),
                    event(Target::Topic("orders".into())),
                    event(Target::Bus("audit".into())),
                    function("cart-handler", 10, None),
                ],
            },
            Store {
                name: "sessions".into(),
                max_value: None,
                max_key: MAX_KEY,
                ttl: None,
                changes: false,
                targets: Vec::new(),
            },
        ]
    );
    assert_eq!((DEFAULT_MAX_VALUE, MAX_KEY), (1 << 20, 1 << 10));
    assert_eq!(m.store("sessions"), Some(&Store::new("sessions")));
    assert_eq!(m.function("cart-handler").unwrap().kv, ["carts", "sessions"]);
    assert!(m.function("indexer").unwrap().kv.is_empty());
}
