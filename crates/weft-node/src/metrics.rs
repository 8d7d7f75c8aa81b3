//! The node's metrics, in the Prometheus text format: invocations as they
//! end, the rest counted where it happens (dead letters, rule matches,
//! schedule fires), and gauges (instances, queue depths, the store's
//! commits) read when scraped. `docs/metrics.md` lists every metric.

use weft_store::InvocationRecord;
use weft_store::durable::{BATCH_BOUNDS, COMMIT_BOUNDS_US};
use weft_telemetry::metrics::{DURATION_BUCKETS, MEMORY_BUCKETS, labels};

use crate::node::Node;

impl Node {
    /// Counts one finished invocation.
    pub(crate) fn count_invocation(&self, r: &InvocationRecord) {
        let m = &self.metrics;
        let (function, trigger) = (r.function.as_str(), r.trigger.as_str());
        let by_outcome = labels(&[
            ("function", function),
            ("trigger", trigger),
            ("outcome", r.outcome.as_str()),
        ]);
        m.count(
            "faas_invocations_total",
            "Invocations by function, trigger and outcome.",
            &by_outcome,
            1,
        );
        if r.outcome != weft_store::Outcome::Success {
            m.count(
                "faas_errors_total",
                "Invocations that trapped, timed out, ran out of memory or could not start.",
                &by_outcome,
                1,
            );
        }
        let by_trigger = labels(&[("function", function), ("trigger", trigger)]);
        m.observe(
            "faas_invoke_duration_seconds",
            "How long invocations took, in seconds.",
            DURATION_BUCKETS,
            &by_trigger,
            r.duration_us as f64 / 1e6,
        );
        let by_function = labels(&[("function", function)]);
        m.observe(
            "faas_mem_usage_bytes",
            "The peak linear memory of each invocation, in bytes.",
            MEMORY_BUCKETS,
            &by_function,
            r.peak_memory_bytes as f64,
        );
        if let Some(init) = r.init_us {
            m.count(
                "faas_coldstarts_total",
                "Invocations that were cold starts.",
                &by_function,
                1,
            );
            m.observe(
                "faas_init_duration_seconds",
                "How long a cold start took to create its instance, in seconds.",
                DURATION_BUCKETS,
                &by_function,
                init as f64 / 1e6,
            );
        }
    }

    /// Every metric in the Prometheus text format, gauges read now.
    pub async fn metrics(&self) -> String {
        let m = &self.metrics;
        let (live, pool) = self.runtime.instances();
        m.set(
            "weft_instances_in_use",
            "Function instances alive now.",
            "",
            live as f64,
        );
        m.set(
            "weft_instance_slots",
            "Instance slots in the pool.",
            "",
            f64::from(pool),
        );
        let (running, slots) = self.runtime.invocation_slots();
        m.set(
            "weft_invocation_slots_in_use",
            "Top-level invocations running now (in-process calls take none).",
            "",
            running as f64,
        );
        m.set(
            "weft_invocation_slots",
            "Top-level invocations that may run at once.",
            "",
            slots as f64,
        );
        m.clear("weft_queue_messages");
        m.clear("weft_queue_oldest_message_age_seconds");
        let now = weft_store::now_us();
        for queue in self.queues.names() {
            let Ok(stats) = self.queues.stats(&queue).await else {
                continue;
            };
            for (state, n) in [
                ("visible", stats.visible),
                ("in_flight", stats.in_flight),
                ("delayed", stats.delayed),
            ] {
                m.set(
                    "weft_queue_messages",
                    "Messages in each queue, by state.",
                    &labels(&[("queue", &queue), ("state", state)]),
                    n as f64,
                );
            }
            let age = stats.oldest_us.map_or(0.0, |t| (now - t).max(0) as f64 / 1e6);
            m.set(
                "weft_queue_oldest_message_age_seconds",
                "The age of each queue's oldest message, in seconds (0 when empty).",
                &labels(&[("queue", &queue)]),
                age,
            );
        }
        for (queue, n) in self.queues.dead_lettered() {
            m.set_total(
                "weft_queue_dead_lettered_total",
                "Messages moved to a dead-letter queue, by the queue they left, since the node started.",
                &labels(&[("queue", &queue)]),
                n as f64,
            );
        }
        for (bus, rule, matched, failed) in self.buses.rule_counts() {
            let l = labels(&[("bus", &bus), ("rule", &rule)]);
            m.set_total(
                "weft_bus_events_matched_total",
                "Events each rule matched, since the node started.",
                &l,
                matched as f64,
            );
            m.set_total(
                "weft_bus_events_failed_total",
                "Events each rule matched whose put failed to store them, since the node started.",
                &l,
                failed as f64,
            );
        }
        if let Some(exporter) = &self.exporter {
            let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed) as f64;
            let s = &exporter.stats;
            m.set_total(
                "weft_spans_exported_total",
                "Spans sent to the OTLP collector.",
                "",
                load(&s.exported),
            );
            for (reason, n) in [("queue_full", &s.dropped_full), ("export_failed", &s.dropped_failed)] {
                m.set_total(
                    "weft_spans_dropped_total",
                    "Spans not exported: the export queue was full, or the collector refused them or was unreachable.",
                    &labels(&[("reason", reason)]),
                    load(n),
                );
            }
        }
        let shed = self.store.shed();
        for (what, n) in [
            ("records", shed.records),
            ("log_lines", shed.log_lines),
            ("spans", shed.spans),
        ] {
            m.set_total(
                "weft_telemetry_shed_total",
                "Records, log lines and spans dropped because the store's writer could not keep up.",
                &labels(&[("kind", what)]),
                n as f64,
            );
        }
        if let Some(c) = self.storage.commit_stats() {
            let seconds: Vec<f64> = COMMIT_BOUNDS_US.iter().map(|b| *b as f64 / 1e6).collect();
            m.set_histogram(
                "weft_store_commit_seconds",
                "How long each commit of the durable store took (transaction and fsync), in seconds.",
                "",
                &seconds,
                &c.commit_us,
                c.commit_us_sum as f64 / 1e6,
            );
            let sizes: Vec<f64> = BATCH_BOUNDS.iter().map(|b| *b as f64).collect();
            let operations = c.operations as f64;
            m.set_histogram(
                "weft_store_commit_operations",
                "How many operations each commit of the durable store carried (group commit).",
                "",
                &sizes,
                &c.batch,
                operations,
            );
        }
        m.render()
    }
}
