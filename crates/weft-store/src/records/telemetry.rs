//! Spans and use, from the same file as the records: a trace is the
//! spans of its hops plus the invocations in it (each record is its
//! invocation's span), and use is summed from the records.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_telemetry::proto::{Attr, SpanWriter};
use weft_telemetry::{Link, Span, SpanEvent, SpanKind, Usage, context::is_trace_id};

use super::{InvocationRecord, Outcome, RECORD_COLUMNS, Store, StoreError, Trigger, record_from_row};

/// The most spans one trace answers with.
pub const MAX_TRACE_SPANS: usize = 10_000;

/// What a record or span keeps as JSON: the parts that are usually empty.
#[derive(Default, Serialize, Deserialize)]
pub(super) struct SpanExtra {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<SpanEvent>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Value>,
}

impl SpanExtra {
    /// The JSON to store for a record, or none when it has no links or events.
    pub fn of_record(r: &InvocationRecord) -> Option<String> {
        if r.links.is_empty() && r.events.is_empty() {
            return None;
        }
        let extra = SpanExtra {
            links: r.links.clone(),
            events: r.events.clone(),
            attributes: BTreeMap::new(),
        };
        serde_json::to_string(&extra).ok()
    }
}

pub(super) fn insert_spans(conn: &Connection, spans: &[Span]) -> rusqlite::Result<()> {
    if spans.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO spans (span_id, trace_id, parent_span_id, name, kind, start_us, duration_us, error, request_id,
            function, extra) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for s in spans {
        let extra = SpanExtra {
            links: s.links.clone(),
            events: s.events.clone(),
            attributes: s.attributes.clone(),
        };
        stmt.execute(params![
            s.span_id,
            s.trace_id,
            s.parent_span_id,
            s.name,
            s.kind.as_str(),
            s.start_us,
            s.duration_us,
            s.error,
            s.request_id,
            s.function,
            serde_json::to_string(&extra).ok()
        ])?;
    }
    Ok(())
}

fn span_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Span> {
    let kind: String = r.get(4)?;
    let extra: Option<String> = r.get(10)?;
    let extra: SpanExtra = extra.and_then(|e| serde_json::from_str(&e).ok()).unwrap_or_default();
    Ok(Span {
        span_id: r.get(0)?,
        trace_id: r.get(1)?,
        parent_span_id: r.get(2)?,
        name: r.get(3)?,
        kind: SpanKind::parse(&kind).unwrap_or(SpanKind::Internal),
        start_us: r.get(5)?,
        duration_us: r.get(6)?,
        error: r.get(7)?,
        request_id: r.get(8)?,
        function: r.get(9)?,
        attributes: extra.attributes,
        events: extra.events,
        links: extra.links,
        sampled: true,
    })
}

impl Trigger {
    /// The OpenTelemetry `faas.trigger` this trigger is.
    pub fn faas_trigger(self) -> &'static str {
        match self {
            Trigger::Http | Trigger::Internal | Trigger::Forward => "http",
            Trigger::Queue => "pubsub",
            Trigger::Schedule => "timer",
            Trigger::Invoke | Trigger::Event | Trigger::Workflow => "other",
        }
    }

    /// The span kind of an invocation by this trigger.
    pub fn span_kind(self) -> SpanKind {
        match self {
            Trigger::Queue | Trigger::Event | Trigger::Schedule => SpanKind::Consumer,
            _ => SpanKind::Server,
        }
    }
}

impl InvocationRecord {
    /// The invocation as a span, with the OpenTelemetry FaaS attributes;
    /// none when it was not traced.
    pub fn span(&self) -> Option<Span> {
        let (trace_id, span_id) = (self.trace_id.clone()?, self.span_id.clone()?);
        let mut attributes = BTreeMap::new();
        self.attributes(|k, v| {
            let v = match v {
                Attr::Str(s) => Value::from(s),
                Attr::Bool(b) => Value::from(b),
                Attr::Int(i) => Value::from(i),
                Attr::Double(d) => Value::from(d),
            };
            attributes.insert(k.to_string(), v);
        });
        Some(Span {
            trace_id,
            span_id,
            parent_span_id: self.parent_span_id.clone(),
            name: self.function.clone(),
            kind: self.trigger.span_kind(),
            start_us: self.start_us,
            duration_us: self.duration_us,
            error: self.span_error(),
            request_id: Some(self.request_id.clone()),
            function: Some(self.function.clone()),
            attributes,
            events: self.events.clone(),
            links: self.links.clone(),
            sampled: true,
        })
    }

    /// The invocation's span as an OTLP `Span` message, written from the
    /// record without building a [`Span`] (what export costs a request).
    /// `flags` are the trace's W3C flags.
    pub fn otlp_span(&self, flags: u8) -> Option<bytes::Bytes> {
        let id = |hex: &str| u128::from_str_radix(hex, 16).ok();
        let trace_id = id(self.trace_id.as_deref()?)?;
        let span_id = id(self.span_id.as_deref()?)? as u64;
        let parent = self.parent_span_id.as_deref().and_then(id).map(|p| p as u64);
        let mut w = SpanWriter::new(
            trace_id,
            span_id,
            parent,
            &self.function,
            self.trigger.span_kind(),
            self.start_us,
            self.start_us + self.duration_us as i64,
            flags,
        );
        self.attributes(|k, v| {
            w.attr(k, v);
        });
        w.str("weft.request_id", &self.request_id);
        for e in &self.events {
            w.event(&e.name, e.time_us, e.attributes.iter().map(|(k, v)| (k.as_str(), v)));
        }
        for l in &self.links {
            if let (Some(t), Some(s)) = (id(&l.trace_id), id(&l.span_id)) {
                w.link(t, s as u64);
            }
        }
        if let Some(e) = self.span_error() {
            w.error(&e);
        }
        Some(w.finish())
    }

    /// The span's attributes: the OpenTelemetry FaaS ones, and weft's, in
    /// the order of their names (as a [`Span`] keeps them).
    fn attributes(&self, mut put: impl FnMut(&'static str, Attr<'_>)) {
        put("faas.coldstart", Attr::Bool(self.cold));
        put("faas.invocation_id", Attr::Str(&self.request_id));
        put("faas.max_memory", Attr::Int(self.memory_bytes as i64));
        put("faas.name", Attr::Str(&self.function));
        put("faas.trigger", Attr::Str(self.trigger.faas_trigger()));
        put("faas.version", Attr::Str(itoa::Buffer::new().format(self.version)));
        put("http.response.status_code", Attr::Int(i64::from(self.status)));
        put("weft.billed_ms", Attr::Int(self.billed_ms as i64));
        if let Some(init) = self.init_us {
            put("weft.init_us", Attr::Int(init as i64));
        }
        put("weft.outcome", Attr::Str(self.outcome.as_str()));
        put("weft.peak_memory_bytes", Attr::Int(self.peak_memory_bytes as i64));
        put("weft.trigger", Attr::Str(self.trigger.as_str()));
    }

    /// Why the span failed: the record's error, or a 5xx answer.
    fn span_error(&self) -> Option<String> {
        match (&self.error, self.outcome) {
            (Some(e), _) => Some(e.clone()),
            (None, Outcome::Success) if self.status >= 500 => Some(format!("answered {}", self.status)),
            _ => None,
        }
    }
}

/// What to sum use by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageBy {
    #[default]
    Function,
    /// The UTC day the invocation started, `YYYY-MM-DD`.
    Day,
    Trigger,
}

impl UsageBy {
    pub const ALL: [UsageBy; 3] = [UsageBy::Function, UsageBy::Day, UsageBy::Trigger];

    pub fn as_str(self) -> &'static str {
        match self {
            UsageBy::Function => "function",
            UsageBy::Day => "day",
            UsageBy::Trigger => "trigger",
        }
    }

    fn column(self) -> &'static str {
        match self {
            UsageBy::Function => "function",
            UsageBy::Day => "date(start_us / 1000000, 'unixepoch')",
            UsageBy::Trigger => "trigger",
        }
    }
}

impl std::str::FromStr for UsageBy {
    type Err = String;
    fn from_str(s: &str) -> Result<UsageBy, String> {
        UsageBy::ALL.into_iter().find(|b| b.as_str() == s).ok_or_else(|| {
            format!(
                "`{s}` is not a way to group cost: use one of {}",
                UsageBy::ALL.map(UsageBy::as_str).join(", ")
            )
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    /// Only invocations that started at or after this (microseconds since the epoch).
    pub since_us: i64,
    pub function: Option<String>,
    pub by: UsageBy,
}

impl Store {
    /// The spans of a trace, named by its id or by the request id of any
    /// invocation in it: the trace id and its spans (invocations'
    /// included), or none if nothing here belongs to it.
    pub fn trace(&self, id: &str) -> Result<Option<(String, Vec<Span>)>, StoreError> {
        self.flush()?;
        let conn = self.conn();
        let trace_id = if is_trace_id(id) {
            id.to_string()
        } else {
            let found: Option<Option<String>> = conn
                .query_row(
                    "SELECT trace_id FROM invocations WHERE request_id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?;
            match found.flatten() {
                Some(t) => t,
                None => return Ok(None),
            }
        };
        let limit = MAX_TRACE_SPANS as i64;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM invocations WHERE trace_id = ?1 ORDER BY start_us LIMIT ?2"
        ))?;
        let records = stmt.query_map(params![trace_id, limit], record_from_row)?;
        let mut spans: Vec<Span> = Vec::new();
        for r in records {
            spans.extend(r?.span());
        }
        let mut stmt = conn.prepare_cached(
            "SELECT span_id, trace_id, parent_span_id, name, kind, start_us, duration_us, error, request_id, function,
                extra FROM spans WHERE trace_id = ?1 ORDER BY start_us LIMIT ?2",
        )?;
        for s in stmt.query_map(params![trace_id, limit], span_from_row)? {
            spans.push(s?);
        }
        if spans.is_empty() {
            return Ok(None);
        }
        spans.truncate(MAX_TRACE_SPANS);
        Ok(Some((trace_id, spans)))
    }

    /// Use summed from the records, by the query's grouping, in key order.
    pub fn usage(&self, query: &UsageQuery) -> Result<Vec<(String, Usage)>, StoreError> {
        self.flush()?;
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {key}, COUNT(*), SUM(billed), SUM(billed * ((memory_bytes + 1023) / 1024)),
                    SUM(billed * ((peak_memory_bytes + 1023) / 1024))
             FROM (SELECT *, CASE WHEN billed_ms > 0 THEN billed_ms ELSE MAX((duration_us + 999) / 1000, 1) END AS billed
                   FROM invocations WHERE start_us >= ?1 AND (?2 IS NULL OR function = ?2))
             GROUP BY 1 ORDER BY 1",
            key = query.by.column()
        ))?;
        let rows = stmt.query_map(params![query.since_us, query.function], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Usage {
                    requests: r.get(1)?,
                    billed_ms: r.get(2)?,
                    configured_kib_ms: r.get(3)?,
                    measured_kib_ms: r.get(4)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use weft_telemetry::{SpanContext, billed_ms};

    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-store-telemetry-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn record(
        id: &str,
        function: &str,
        start_us: i64,
        duration_us: u64,
        context: Option<(&SpanContext, &SpanContext)>,
    ) -> InvocationRecord {
        InvocationRecord {
            request_id: id.into(),
            function: function.into(),
            version: 2,
            trigger: Trigger::Queue,
            start_us,
            duration_us,
            cold: true,
            peak_memory_bytes: 3 << 20,
            outcome: Outcome::Success,
            status: 200,
            error: None,
            parent_request_id: None,
            memory_bytes: 128 << 20,
            billed_ms: billed_ms(duration_us),
            init_us: Some(40),
            trace_id: context.map(|(c, _)| c.trace_hex()),
            span_id: context.map(|(c, _)| c.span_hex()),
            parent_span_id: context.map(|(_, p)| p.span_hex()),
            links: vec![Link {
                trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                span_id: "b7ad6b7169203331".into(),
            }],
            events: vec![SpanEvent::new("retry", start_us).with("weft.attempt", 2)],
        }
    }

    #[test]
    fn an_invocation_exports_the_span_it_keeps() {
        let root = SpanContext::root();
        let invocation = root.child();
        let mut rec = record("r-1", "worker", 20, 1500, Some((&invocation, &root)));
        for (error, status) in [
            (None, 200),
            (Some("trapped: unreachable".to_string()), 500),
            (None, 503),
        ] {
            rec.error = error;
            rec.status = status;
            let kept = rec.span().unwrap();
            assert_eq!(rec.otlp_span(1).unwrap(), weft_telemetry::proto::encode_span(&kept));
        }
        rec.init_us = None;
        rec.parent_span_id = None;
        assert_eq!(
            rec.otlp_span(1).unwrap(),
            weft_telemetry::proto::encode_span(&rec.span().unwrap())
        );
        assert_eq!(record("r-2", "other", 30, 10, None).otlp_span(1), None, "untraced");
    }

    #[test]
    fn a_trace_is_its_spans_and_its_invocations_by_either_id() {
        let dir = temp("trace");
        let store = Store::open(&dir.join("weft.db")).unwrap();
        let root = SpanContext::root();
        let send = root.child();
        let invocation = send.child();
        store.spans(vec![
            Span::new(&send, Some(&root), "send orders".into(), SpanKind::Producer, 10)
                .with("messaging.destination.name", "orders"),
        ]);
        store.record(record("r-1", "worker", 20, 1500, Some((&invocation, &send))));
        store.record(record("r-2", "other", 30, 10, None));

        let (by_request, spans) = store.trace("r-1").unwrap().unwrap();
        assert_eq!(by_request, root.trace_hex());
        let (_, same) = store.trace(&root.trace_hex()).unwrap().unwrap();
        assert_eq!(spans, same);
        assert_eq!(spans.len(), 2);
        let producer = spans.iter().find(|s| s.kind == SpanKind::Producer).unwrap();
        assert_eq!(producer.attributes["messaging.destination.name"], "orders");
        assert_eq!(producer.parent_span_id, Some(root.span_hex()));
        let worker = spans.iter().find(|s| s.kind == SpanKind::Consumer).unwrap();
        assert_eq!(worker.parent_span_id, Some(send.span_hex()));
        assert_eq!(worker.attributes["faas.trigger"], "pubsub");
        assert_eq!(worker.attributes["faas.coldstart"], true);
        assert_eq!(worker.attributes["faas.version"], "2");
        assert_eq!(worker.events[0].name, "retry");
        assert_eq!(worker.links[0].span_id, "b7ad6b7169203331");

        assert_eq!(store.trace("r-2").unwrap(), None, "an untraced invocation has no trace");
        assert_eq!(store.trace("nothing").unwrap(), None);
        assert_eq!(store.trace(&SpanContext::root().trace_hex()).unwrap(), None);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn use_sums_exactly_by_function_day_and_trigger() {
        let dir = temp("usage");
        let store = Store::open(&dir.join("weft.db")).unwrap();
        let day = 86_400_000_000;
        store.record(record("a", "f", 5, 1001, None));
        store.record(record("b", "f", day + 5, 10, None));
        store.record(record("c", "g", day + 6, 2500, None));
        let by_function = store
            .usage(&UsageQuery {
                since_us: 0,
                ..Default::default()
            })
            .unwrap();
        let f = Usage {
            requests: 2,
            billed_ms: 3,
            configured_kib_ms: 3 * 128 * 1024,
            measured_kib_ms: 3 * 3 * 1024,
        };
        assert_eq!(
            by_function,
            [
                ("f".to_string(), f),
                ("g".to_string(), Usage::of(3, 128 << 20, 3 << 20))
            ]
        );
        let by_day = store
            .usage(&UsageQuery {
                since_us: 0,
                by: UsageBy::Day,
                ..Default::default()
            })
            .unwrap();
        let days: Vec<(&str, u64)> = by_day.iter().map(|(k, u)| (k.as_str(), u.requests)).collect();
        assert_eq!(days, [("1970-01-01", 1), ("1970-01-02", 2)]);
        let since = store
            .usage(&UsageQuery {
                since_us: day,
                function: Some("f".into()),
                by: UsageBy::Trigger,
            })
            .unwrap();
        assert_eq!(since, [("queue".to_string(), Usage::of(1, 128 << 20, 3 << 20))]);
        assert_eq!(
            "week".parse::<UsageBy>().unwrap_err(),
            "`week` is not a way to group cost: use one of function, day, trigger"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_from_before_telemetry_gains_its_columns_and_keeps_its_records() {
        let dir = temp("migrate");
        let path = dir.join("weft.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE invocations (request_id TEXT PRIMARY KEY, function TEXT NOT NULL, version INTEGER NOT NULL,
                    trigger TEXT NOT NULL, start_us INTEGER NOT NULL, duration_us INTEGER NOT NULL, cold INTEGER NOT NULL,
                    peak_memory_bytes INTEGER NOT NULL, outcome TEXT NOT NULL, status INTEGER NOT NULL, error TEXT,
                    parent_request_id TEXT);
                 INSERT INTO invocations VALUES ('old', 'f', 1, 'http', 1, 10, 0, 65536, 'success', 200, NULL, NULL);",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let old = store.record_by_id("old").unwrap().unwrap();
        assert_eq!((old.memory_bytes, old.billed_ms, old.trace_id), (0, 0, None));
        store.record(record(
            "new",
            "f",
            2,
            10,
            Some((&SpanContext::root(), &SpanContext::root())),
        ));
        assert!(store.record_by_id("new").unwrap().unwrap().trace_id.is_some());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
