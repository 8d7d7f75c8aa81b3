//! Export of spans over OTLP/HTTP with protobuf bodies, to any
//! OpenTelemetry collector, off the request path: spans are offered to a
//! bounded queue without waiting, and one task sends them in batches. A
//! slow or dead collector never slows or fails a request; what it cannot
//! take is dropped and counted.
//!
//! Configured as OpenTelemetry SDKs are: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! (the full URL), else `OTEL_EXPORTER_OTLP_ENDPOINT` (a base, to which
//! `/v1/traces` is added), `OTEL_EXPORTER_OTLP_HEADERS`
//! (`key=value,...`), `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds),
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (only `http/protobuf`) and
//! `OTEL_SERVICE_NAME`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as proto;
use prost::Message;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::span::{Span, SpanKind};

/// Spans that may wait for the exporter; past this, new ones are dropped.
pub const QUEUED_SPANS: usize = 8192;
/// The most spans one request to the collector carries.
pub const MAX_BATCH: usize = 512;
/// How long spans gather after the first of a batch arrives. The task
/// sleeps meanwhile instead of waking for each span, so offering a span
/// costs a request no wake-up of another thread.
pub const BATCH_DELAY: Duration = Duration::from_millis(200);

/// Where and how to export.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// The traces URL (`http://HOST:PORT/v1/traces`).
    pub endpoint: http::Uri,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub timeout: Duration,
    /// `service.name` of the spans' resource.
    pub service: String,
    /// `service.instance.id`: the node.
    pub instance: String,
}

impl OtlpConfig {
    /// The configuration from `--otlp-endpoint` (a base URL, as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`) or the standard variables read by
    /// `env`; none when neither names an endpoint. `service` is used
    /// unless `OTEL_SERVICE_NAME` is set.
    pub fn from_env(
        flag: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
        service: &str,
        instance: &str,
    ) -> Result<Option<OtlpConfig>, String> {
        let env = |k: &str| env(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let (text, full) = match (
            flag,
            env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(f), _, _) => (f.to_string(), false),
            (None, Some(t), _) => (t, true),
            (None, None, Some(b)) => (b, false),
            (None, None, None) => return Ok(None),
        };
        if let Some(protocol) = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            && protocol != "http/protobuf"
        {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL is `{protocol}`: weft exports OTLP over HTTP with protobuf; set it to `http/protobuf` (collectors take it on port 4318)"
            ));
        }
        let endpoint = traces_url(&text, full)?;
        let mut headers = Vec::new();
        if let Some(list) = env("OTEL_EXPORTER_OTLP_TRACES_HEADERS").or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS")) {
            for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
                let bad = || {
                    format!("OTEL_EXPORTER_OTLP_HEADERS: `{pair}` is not `name=value` (separate headers with commas)")
                };
                let (k, v) = pair.split_once('=').ok_or_else(bad)?;
                let v = percent_encoding::percent_decode_str(v.trim())
                    .decode_utf8_lossy()
                    .into_owned();
                let name = http::HeaderName::from_bytes(k.trim().as_bytes()).map_err(|_| bad())?;
                let value = http::HeaderValue::from_str(&v).map_err(|_| bad())?;
                headers.push((name, value));
            }
        }
        let timeout = match env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").or_else(|| env("OTEL_EXPORTER_OTLP_TIMEOUT")) {
            None => Duration::from_secs(10),
            Some(ms) => match ms.parse::<u64>() {
                Ok(ms) if (1..=600_000).contains(&ms) => Duration::from_millis(ms),
                _ => {
                    return Err(format!(
                        "OTEL_EXPORTER_OTLP_TIMEOUT is `{ms}`: give milliseconds, 1 to 600000"
                    ));
                }
            },
        };
        Ok(Some(OtlpConfig {
            endpoint,
            headers,
            timeout,
            service: env("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_string()),
            instance: instance.to_string(),
        }))
    }
}

/// The traces URL: `text` itself if `full`, else `text` + `/v1/traces`.
fn traces_url(text: &str, full: bool) -> Result<http::Uri, String> {
    let bad = |why: &str| format!("OTLP endpoint `{text}`: {why}; give one like http://127.0.0.1:4318");
    let base: http::Uri = text.parse().map_err(|_| bad("not a URL"))?;
    match base.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "https is not supported yet; export to a collector on this machine or network over http",
            ));
        }
        _ => return Err(bad("it must start with http://")),
    }
    if base.host().is_none() {
        return Err(bad("it names no host"));
    }
    if full {
        return Ok(base);
    }
    let path = base.path().trim_end_matches('/');
    let path = if path.ends_with("/v1/traces") {
        path.to_string()
    } else {
        format!("{path}/v1/traces")
    };
    let authority = base.authority().map_or("", |a| a.as_str());
    format!("http://{authority}{path}")
        .parse()
        .map_err(|_| bad("not a URL"))
}

/// What the exporter did, since it started.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub exported: AtomicU64,
    /// Dropped because the queue was full (the collector is slower than the node).
    pub dropped_full: AtomicU64,
    /// Dropped because the collector refused them or could not be reached.
    pub dropped_failed: AtomicU64,
}

enum Item {
    Span(Box<Span>),
    Flush(oneshot::Sender<()>),
}

/// A running exporter.
pub struct Exporter {
    tx: mpsc::Sender<Item>,
    pub stats: Arc<ExportStats>,
}

impl Exporter {
    /// Starts the export task. Call it inside a tokio runtime.
    pub fn start(config: OtlpConfig) -> Exporter {
        let (tx, rx) = mpsc::channel(QUEUED_SPANS);
        let stats = Arc::new(ExportStats::default());
        tokio::spawn(run(config, rx, stats.clone()));
        Exporter { tx, stats }
    }

    /// Offers spans for export, never waiting: those that do not fit are
    /// dropped and counted. Spans of unsampled traces are not exported.
    pub fn offer(&self, spans: impl IntoIterator<Item = Span>) {
        for span in spans.into_iter().filter(|s| s.sampled) {
            if self.tx.try_send(Item::Span(Box::new(span))).is_err() {
                self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends what is queued, waiting up to `within`.
    pub async fn flush(&self, within: Duration) {
        let (done, wait) = oneshot::channel();
        let _ = tokio::time::timeout(within, async {
            if self.tx.send(Item::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        })
        .await;
    }
}

async fn run(config: OtlpConfig, mut rx: mpsc::Receiver<Item>, stats: Arc<ExportStats>) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        let take = |item: Item, batch: &mut Vec<Span>, flushes: &mut Vec<oneshot::Sender<()>>| match item {
            Item::Span(s) => batch.push(*s),
            Item::Flush(done) => flushes.push(done),
        };
        take(first, &mut batch, &mut flushes);
        if flushes.is_empty() {
            tokio::time::sleep(BATCH_DELAY).await;
        }
        // Everything queued by now goes (a flush sends all before it).
        while let Ok(item) = rx.try_recv() {
            take(item, &mut batch, &mut flushes);
        }
        for chunk in batch.chunks(MAX_BATCH) {
            let n = chunk.len() as u64;
            match send(&client, &config, chunk).await {
                Ok(()) => {
                    stats.exported.fetch_add(n, Ordering::Relaxed);
                }
                Err(why) => {
                    stats.dropped_failed.fetch_add(n, Ordering::Relaxed);
                    let now = tokio::time::Instant::now();
                    if warned.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10)) {
                        warned = Some(now);
                        tracing::warn!("OTLP export to {} failed, {n} spans dropped: {why}", config.endpoint);
                    }
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    config: &OtlpConfig,
    spans: &[Span],
) -> Result<(), String> {
    let body = encode(config, spans).encode_to_vec();
    let mut request = hyper::Request::builder()
        .method("POST")
        .uri(config.endpoint.clone())
        .header(http::header::CONTENT_TYPE, "application/x-protobuf");
    for (k, v) in &config.headers {
        request = request.header(k, v);
    }
    let request = request.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(config.timeout, client.request(request))
        .await
        .map_err(|_| format!("no answer within {:?}", config.timeout))?
        .map_err(|e| format!("cannot reach the collector: {e}"))?;
    let status = response.status();
    // Read (and bound) the answer so the connection can be reused.
    let _ = tokio::time::timeout(
        config.timeout,
        http_body_util::BodyExt::collect(http_body_util::Limited::new(response.into_body(), 1 << 20)),
    )
    .await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {status}"))
    }
}

/// The OTLP request carrying `spans`, under one resource and scope.
pub fn encode(config: &OtlpConfig, spans: &[Span]) -> ExportTraceServiceRequest {
    let resource = Resource {
        attributes: vec![
            key_value("service.name", &Value::from(config.service.as_str())),
            key_value("service.instance.id", &Value::from(config.instance.as_str())),
            key_value("telemetry.sdk.name", &Value::from("weft")),
        ],
        ..Default::default()
    };
    let scope = InstrumentationScope {
        name: "weft".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![proto::ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![proto::ScopeSpans {
                scope: Some(scope),
                spans: spans.iter().map(to_proto).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn to_proto(s: &Span) -> proto::Span {
    let nanos = |us: i64| (us.max(0) as u64).saturating_mul(1000);
    let kind = match s.kind {
        SpanKind::Internal => proto::span::SpanKind::Internal,
        SpanKind::Server => proto::span::SpanKind::Server,
        SpanKind::Client => proto::span::SpanKind::Client,
        SpanKind::Producer => proto::span::SpanKind::Producer,
        SpanKind::Consumer => proto::span::SpanKind::Consumer,
    };
    let mut attributes: Vec<KeyValue> = s.attributes.iter().map(|(k, v)| key_value(k, v)).collect();
    if let Some(id) = &s.request_id {
        attributes.push(key_value("weft.request_id", &Value::from(id.as_str())));
    }
    let status = s.error.as_ref().map(|e| proto::Status {
        message: e.clone(),
        code: proto::status::StatusCode::Error as i32,
    });
    proto::Span {
        trace_id: hex_bytes(&s.trace_id),
        span_id: hex_bytes(&s.span_id),
        parent_span_id: s.parent_span_id.as_deref().map(hex_bytes).unwrap_or_default(),
        flags: 0x100 | u32::from(s.sampled),
        name: s.name.clone(),
        kind: kind as i32,
        start_time_unix_nano: nanos(s.start_us),
        end_time_unix_nano: nanos(s.end_us()),
        attributes,
        events: s
            .events
            .iter()
            .map(|e| proto::span::Event {
                time_unix_nano: nanos(e.time_us),
                name: e.name.clone(),
                attributes: e.attributes.iter().map(|(k, v)| key_value(k, v)).collect(),
                dropped_attributes_count: 0,
            })
            .collect(),
        links: s
            .links
            .iter()
            .map(|l| proto::span::Link {
                trace_id: hex_bytes(&l.trace_id),
                span_id: hex_bytes(&l.span_id),
                flags: 0x100,
                ..Default::default()
            })
            .collect(),
        status,
        ..Default::default()
    }
}

fn key_value(key: &str, value: &Value) -> KeyValue {
    let value = match value {
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(0.0)),
        },
        other => any_value::Value::StringValue(other.to_string()),
    };
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Hex ids as bytes (the width of the digits given).
fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::SpanContext;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_endpoint_follows_the_sdk_variables() {
        let none = OtlpConfig::from_env(None, env(&[]), "app", "n").unwrap();
        assert_eq!(none, None);
        let c = OtlpConfig::from_env(Some("http://127.0.0.1:4318"), env(&[]), "app", "n")
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(c.service, "app");
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/otlp/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20abc, x-team=pay"),
            ("OTEL_SERVICE_NAME", "shop"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ];
        let c = OtlpConfig::from_env(None, env(&vars), "app", "n").unwrap().unwrap();
        assert_eq!(c.endpoint, "http://collector:4318/otlp/v1/traces");
        assert_eq!(c.headers[0].1, "Bearer abc");
        assert_eq!(c.headers[1].0, "x-team");
        assert_eq!(c.service, "shop");
        assert_eq!(c.timeout, Duration::from_millis(2500));
        let full = [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9999/custom")];
        let c = OtlpConfig::from_env(None, env(&full), "app", "n").unwrap().unwrap();
        assert_eq!(c.endpoint, "http://c:9999/custom");
    }

    #[test]
    fn bad_settings_say_what_to_give() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a str);
        let cases: [Case; 6] = [
            (&[], Some("ftp://x"), "it must start with http://"),
            (&[], Some("https://x:4318"), "https is not supported yet"),
            (&[], Some("not a url"), "not a URL"),
            (
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                Some("http://x"),
                "set it to `http/protobuf`",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")],
                Some("http://x"),
                "is not `name=value`",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")],
                Some("http://x"),
                "give milliseconds",
            ),
        ];
        for (vars, flag, says) in cases {
            let e = OtlpConfig::from_env(flag, env(vars), "app", "n").unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn spans_encode_as_otlp() {
        let root = SpanContext::root();
        let child = root.child();
        let mut span = Span::new(&child, Some(&root), "send q".into(), SpanKind::Producer, 10)
            .with("n", 3)
            .with("ok", true)
            .with("s", "x");
        span.duration_us = 5;
        span.error = Some("broke".into());
        let config = OtlpConfig::from_env(Some("http://x"), env(&[]), "app", "node-1")
            .unwrap()
            .unwrap();
        let request = encode(&config, &[span]);
        let bytes = request.encode_to_vec();
        let back = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let s = &back.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.trace_id, root.trace_id.to_be_bytes());
        assert_eq!(s.span_id, child.span_id.to_be_bytes());
        assert_eq!(s.parent_span_id, root.span_id.to_be_bytes());
        assert_eq!(s.kind, proto::span::SpanKind::Producer as i32);
        assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano), (10_000, 15_000));
        assert_eq!(s.status.as_ref().unwrap().code, proto::status::StatusCode::Error as i32);
        assert_eq!(s.attributes.len(), 3);
        let service = &back.resource_spans[0].resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
    }
}
