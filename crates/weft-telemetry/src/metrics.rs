//! Metrics in the Prometheus text exposition format (version 0.0.4):
//! counters and histograms kept by the node, and gauges read when scraped.
//!
//! Names follow the OpenTelemetry semantic conventions as Prometheus
//! spells them (dots become underscores, the unit is a suffix, counters
//! end in `_total`): `faas.invocations` is `faas_invocations_total`,
//! `faas.invoke_duration` in seconds is `faas_invoke_duration_seconds`.
//! weft's own are under `weft_`. `docs/metrics.md` lists them all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Bucket bounds for durations, in seconds: 100 µs to 60 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Bucket bounds for memory, in bytes: 64 KiB to 4 GiB.
pub const MEMORY_BUCKETS: &[f64] = &[
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    134217728.0,
    268435456.0,
    536870912.0,
    1073741824.0,
    4294967296.0,
];

/// Bucket bounds for counts of operations in one commit.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Debug, Clone)]
struct Histogram {
    bounds: Vec<f64>,
    /// Per bucket, not cumulative; one more for `+Inf`.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += value;
    }
}

#[derive(Debug, Clone)]
enum Series {
    Number(f64),
    Histogram(Histogram),
}

#[derive(Debug, Clone)]
struct Family {
    help: &'static str,
    kind: Kind,
    /// By the label set, rendered (`a="x",b="y"`).
    series: BTreeMap<String, Series>,
}

/// Metric families, each a set of series by labels.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

/// A label set, rendered once and reused.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

impl Registry {
    fn with<R>(&self, name: &'static str, help: &'static str, kind: Kind, f: impl FnOnce(&mut Family) -> R) -> R {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        f(family)
    }

    /// Applies `apply` to the series of `labels` in `family`, made by
    /// `make` the first time (the labels are copied only then).
    fn update(family: &mut Family, labels: &str, make: impl FnOnce() -> Series, apply: impl FnOnce(&mut Series)) {
        if let Some(series) = family.series.get_mut(labels) {
            apply(series);
            return;
        }
        let mut series = make();
        apply(&mut series);
        family.series.insert(labels.to_string(), series);
    }

    /// Adds `by` to a counter.
    pub fn count(&self, name: &'static str, help: &'static str, labels: &str, by: u64) {
        self.with(name, help, Kind::Counter, |f| {
            Registry::update(
                f,
                labels,
                || Series::Number(0.0),
                |s| {
                    if let Series::Number(n) = s {
                        *n += by as f64;
                    }
                },
            );
        });
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, help: &'static str, labels: &str, value: f64) {
        self.with(name, help, Kind::Gauge, |f| {
            f.series.insert(labels.to_string(), Series::Number(value));
        });
    }

    /// Sets a counter kept elsewhere to its current value.
    pub fn set_total(&self, name: &'static str, help: &'static str, labels: &str, value: f64) {
        self.with(name, help, Kind::Counter, |f| {
            f.series.insert(labels.to_string(), Series::Number(value));
        });
    }

    /// Forgets every series of a gauge (before setting the ones that exist now).
    pub fn clear(&self, name: &'static str) {
        if let Some(f) = self.families.lock().unwrap_or_else(|p| p.into_inner()).get_mut(name) {
            f.series.clear();
        }
    }

    /// Records one value in a histogram with `bounds`.
    pub fn observe(&self, name: &'static str, help: &'static str, bounds: &'static [f64], labels: &str, value: f64) {
        self.with(name, help, Kind::Histogram, |f| {
            Registry::update(
                f,
                labels,
                || Series::Histogram(Histogram::new(bounds)),
                |s| {
                    if let Series::Histogram(h) = s {
                        h.observe(value);
                    }
                },
            );
        });
    }

    /// Sets a whole histogram from counts kept elsewhere: `counts` per
    /// bucket of `bounds` (not cumulative), then the count past them.
    pub fn set_histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &str,
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) {
        if counts.len() != bounds.len() + 1 {
            return;
        }
        self.with(name, help, Kind::Histogram, |f| {
            let histogram = Histogram {
                bounds: bounds.to_vec(),
                counts: counts.to_vec(),
                sum,
            };
            f.series.insert(labels.to_string(), Series::Histogram(histogram));
        });
    }

    /// Every family in the text format, in name order.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = String::new();
        for (name, family) in &families {
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
            for (labels, series) in &family.series {
                match series {
                    Series::Number(n) => {
                        let _ = writeln!(out, "{name}{} {}", braces(labels), number(*n));
                    }
                    Series::Histogram(h) => {
                        let mut cumulative = 0;
                        for (i, count) in h.counts.iter().enumerate() {
                            cumulative += count;
                            let le = h.bounds.get(i).map_or("+Inf".to_string(), |b| number(*b));
                            let sep = if labels.is_empty() { "" } else { "," };
                            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
                        }
                        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), number(h.sum));
                        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
                    }
                }
            }
        }
        out
    }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

fn number(n: f64) -> String {
    if n.is_finite() && n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let r = Registry::default();
        let l = labels(&[("function", "a\"b"), ("trigger", "http")]);
        r.count("faas_invocations_total", "Invocations.", &l, 2);
        r.count("faas_invocations_total", "Invocations.", &l, 1);
        r.set("weft_instances", "Instances.", "", 3.5);
        r.observe("weft_x_seconds", "X.", &[0.1, 1.0], "", 0.05);
        r.observe("weft_x_seconds", "X.", &[0.1, 1.0], "", 5.0);
        let text = r.render();
        assert_eq!(
            text,
            "# HELP faas_invocations_total Invocations.\n# TYPE faas_invocations_total counter\n\
             faas_invocations_total{function=\"a\\\"b\",trigger=\"http\"} 3\n\
             # HELP weft_instances Instances.\n# TYPE weft_instances gauge\nweft_instances 3.5\n\
             # HELP weft_x_seconds X.\n# TYPE weft_x_seconds histogram\n\
             weft_x_seconds_bucket{le=\"0.1\"} 1\nweft_x_seconds_bucket{le=\"1\"} 1\nweft_x_seconds_bucket{le=\"+Inf\"} 2\n\
             weft_x_seconds_sum 5.05\nweft_x_seconds_count 2\n"
        );
        r.clear("weft_instances");
        assert!(!r.render().contains("weft_instances 3.5"));
    }
}
