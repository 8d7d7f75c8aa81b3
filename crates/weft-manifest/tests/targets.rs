//! Every place that sends events names its target with one `Target` and
//! retries with one `Retry`, whatever the keys the manifest uses there.

use std::time::Duration;

use weft_manifest::{Manifest, Retry, Target};

const APP: &str = r#"
[app]
name = "shop"

[function.billing]
source = "billing.wasm"
publish = ["queue:jobs", "topic:orders", "bus:default"]

[function.billing.async]
retries = 1
backoff = "10s"
max_event_age = "1h"
on_success = "function:billing"
on_failure = "queue:jobs"

[queue.jobs]
max_receives = 7
backoff = "2s"

[topic.orders]

[[subscription]]
topic = "orders"
url = "https://example.com/hook"
max_receives = 4

[[rule.big.target]]
function = "billing"
retries = 9
max_event_age = "2h"

[rule.big]
pattern = '{"source": ["shop"]}'

[schedule.nightly]
expression = "rate(1 day)"
topic = "orders"
"#;

#[test]
fn every_sender_names_one_target_and_one_retry() {
    let m = Manifest::parse(APP, "weft.toml").unwrap();
    let billing = m.function("billing").unwrap();
    assert_eq!(
        billing.publish,
        [
            Target::Queue("jobs".into()),
            Target::Topic("orders".into()),
            Target::Bus("default".into())
        ]
    );
    let a = &billing.async_invoke;
    assert_eq!(
        a.retry,
        Retry {
            max_attempts: 2,
            backoff: Duration::from_secs(10),
            max_age: Some(Duration::from_secs(3600)),
        }
    );
    assert_eq!(a.on_success, Some(Target::Function("billing".into())));
    assert_eq!(
        a.on_failure.as_ref().map(ToString::to_string).as_deref(),
        Some("queue:jobs")
    );

    let jobs = m.queue("jobs").unwrap();
    assert_eq!(
        jobs.retry,
        Retry {
            max_attempts: 7,
            backoff: Duration::from_secs(2),
            max_age: None,
        }
    );
    let s = &m.subscriptions[0];
    assert_eq!(s.target, Target::Url("https://example.com/hook".into()));
    assert_eq!(s.retry.max_attempts, 4);

    let t = &m.rules[0].targets[0];
    assert_eq!(t.target, Target::Function("billing".into()));
    assert_eq!(t.retry.retries(), 9);
    assert_eq!(t.retry.max_age, Some(Duration::from_secs(7200)));
    assert_eq!(m.schedules[0].target, Target::Topic("orders".into()));
}
