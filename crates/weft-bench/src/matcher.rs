//! Rule matching: events per second on one core with 1, 100 and 10,000
//! rules, the compiled `PatternSet` against checking every rule in turn.
//!
//! The rules are typical EventBridge rules: a `source`, a `detail-type`,
//! and conditions inside `detail` (a numeric range, a list of values, a
//! prefix). Events are EventBridge envelopes, parsed once before timing:
//! the figure is the matcher's cost, not JSON parsing's.

use std::fmt::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_manifest::pattern::{Pattern, PatternSet, Scratch};

/// A small deterministic generator, so every run sees the same rules and events.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % below
    }
}

fn rule(i: usize) -> Pattern {
    let detail = match i % 3 {
        0 => json!({"amount": [{"numeric": [">", (i % 100) as f64]}]}),
        1 => json!({"region": ["eu-west", "us-east"], "status": [{"anything-but": "cancelled"}]}),
        _ => json!({"sku": [{"prefix": format!("sku-{}", i % 10)}]}),
    };
    Pattern::from_value(&json!({
        "source": [format!("app.{}", i % 50)],
        "detail-type": [format!("Type {i}")],
        "detail": detail,
    }))
    .expect("the benchmark's rules are valid")
}

fn event(rng: &mut Lcg, rules: usize) -> Value {
    let t = rng.next(rules.max(1));
    // Half the events come from the source their type's rules name.
    let source = if rng.next(2) == 0 { t % 50 } else { rng.next(50) };
    let region = ["eu-west", "us-east", "ap-south"][rng.next(3)];
    let status = ["placed", "cancelled", "paid"][rng.next(3)];
    json!({
        "version": "0",
        "id": format!("6a7e8feb-b491-4cf7-a9f1-bf3703467{t:03}"),
        "detail-type": format!("Type {t}"),
        "source": format!("app.{source}"),
        "account": "000000000000",
        "time": "2026-11-23T10:00:00Z",
        "region": "local",
        "resources": ["arn:weft:orders"],
        "detail": {
            "amount": rng.next(200),
            "region": region,
            "status": status,
            "sku": format!("sku-{}-{}", rng.next(10), rng.next(1000)),
            "customer": {"id": rng.next(100_000), "tier": "gold"},
            "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}],
        }
    })
}

/// Runs `one` over `events` round and round for `time`; returns events/s
/// and the matches found per event.
fn measure(events: &[Value], time: Duration, mut one: impl FnMut(&Value) -> usize) -> (f64, f64) {
    let start = Instant::now();
    let (mut done, mut matched) = (0usize, 0usize);
    while start.elapsed() < time {
        for e in events {
            matched += one(e);
        }
        done += events.len();
    }
    let secs = start.elapsed().as_secs_f64();
    (done as f64 / secs, matched as f64 / done as f64)
}

pub fn report(time: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "One thread; {}s per figure. Each rule: a `source` (50 distinct), its own `detail-type`, and one `detail` condition (numeric, a list with anything-but, or a prefix). Events are parsed envelopes.\n",
        time.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| rules | compiled, events/s | every rule in turn, events/s | compiled / in turn | matches per event |"
    );
    let _ = writeln!(out, "| ---: | ---: | ---: | ---: | ---: |");
    let mut compiled_at = Vec::new();
    for rules in [1usize, 100, 10_000] {
        let patterns: Vec<(Pattern, usize)> = (0..rules).map(|i| (rule(i), i)).collect();
        let set = PatternSet::new(patterns.iter().cloned());
        let mut rng = Lcg(42);
        let events: Vec<Value> = (0..1024).map(|_| event(&mut rng, rules)).collect();
        let mut scratch = Scratch::default();
        let (fast, per_event) = measure(&events, time, |e| set.matching_with(e, &mut scratch).len());
        let (slow, slow_per_event) = measure(&events, time, |e| patterns.iter().filter(|(p, _)| p.matches(e)).count());
        assert_eq!(
            per_event.to_bits(),
            slow_per_event.to_bits(),
            "both ways must find the same matches"
        );
        let _ = writeln!(
            out,
            "| {rules} | {fast:.0} | {slow:.0} | {:.1} | {per_event:.2} |",
            fast / slow
        );
        compiled_at.push(fast);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "- compiled, 10,000 rules / 1 rule, events/s: **{:.2}** (bar: near 1); 10,000 / 100: **{:.2}**",
        compiled_at[2] / compiled_at[0],
        compiled_at[2] / compiled_at[1]
    );
    let _ = writeln!(
        out,
        "- compiled, 10,000 rules: **{:.0}** events/s on one core (bar: over 500,000)",
        compiled_at[2]
    );
    out
}
