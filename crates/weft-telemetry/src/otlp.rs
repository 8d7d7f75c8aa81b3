//! Export of spans over OTLP, to any OpenTelemetry collector, off the
//! request path: spans are offered to a bounded queue without waiting, and
//! one task sends them in batches. A slow or dead collector never slows or
//! fails a request; what it cannot take is dropped and counted.
//!
//! Both of OTLP's binary transports are spoken: HTTP with protobuf bodies
//! (`POST /v1/traces`), and gRPC (the unary `TraceService/Export` over
//! HTTP/2), each over `http://` or `https://` (rustls).
//!
//! Configured as OpenTelemetry SDKs are: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! (the full URL), else `OTEL_EXPORTER_OTLP_ENDPOINT` (a base, to which
//! `/v1/traces` is added for HTTP), `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`http/protobuf`, the default, or `grpc`), `OTEL_EXPORTER_OTLP_HEADERS`
//! (`key=value,...`), `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds),
//! `OTEL_EXPORTER_OTLP_CERTIFICATE` (the PEM certificates that verify the
//! collector, instead of the system's), `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`
//! and `_CLIENT_KEY` (PEM, for a collector that asks for mutual TLS), each
//! also in its `_TRACES_` form, and `OTEL_SERVICE_NAME`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, oneshot};

use crate::proto::{Envelope, encode_span};
use crate::span::Span;

/// Spans that may wait for the exporter; past this, new ones are dropped.
pub const QUEUED_SPANS: usize = 8192;
/// The most spans one request to the collector carries.
pub const MAX_BATCH: usize = 512;
/// How long spans gather after the first of a batch arrives. The task
/// sleeps meanwhile instead of waking for each span, so offering a span
/// costs a request no wake-up of another thread.
pub const BATCH_DELAY: Duration = Duration::from_millis(200);

/// The path of gRPC's export call.
pub const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`: a protobuf body posted to `/v1/traces` (port 4318).
    HttpProtobuf,
    /// `grpc`: the unary export call over HTTP/2 (port 4317).
    Grpc,
}

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The URL requests go to: `http://HOST:PORT/v1/traces`, or the gRPC
    /// export call's path.
    pub endpoint: http::Uri,
    pub protocol: Protocol,
    /// The TLS settings of an `https://` endpoint: the roots that verify
    /// the collector (the system's, unless certificates are given) and a
    /// client certificate, if any.
    pub tls: Arc<rustls::ClientConfig>,
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
        let protocol = match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL")) {
            None => Protocol::HttpProtobuf,
            Some(p) if p == "http/protobuf" => Protocol::HttpProtobuf,
            Some(p) if p == "grpc" => Protocol::Grpc,
            Some(p) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL is `{p}`: weft exports OTLP as `http/protobuf` (collectors take it on port 4318) or `grpc` (port 4317); set one of them"
                ));
            }
        };
        let endpoint = export_url(&text, full, protocol)?;
        let tls = tls_config(&env, endpoint.scheme_str() == Some("https"))?;
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
            protocol,
            tls,
            headers,
            timeout,
            service: env("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_string()),
            instance: instance.to_string(),
        }))
    }
}

/// The URL exports go to: over HTTP, `text` itself if `full`, else `text`
/// + `/v1/traces`; over gRPC, the export call on `text`'s host.
fn export_url(text: &str, full: bool, protocol: Protocol) -> Result<http::Uri, String> {
    let bad = |why: &str| format!("OTLP endpoint `{text}`: {why}; give one like http://127.0.0.1:4318");
    let base: http::Uri = text.parse().map_err(|_| bad("not a URL"))?;
    let scheme = match base.scheme_str() {
        Some(s @ ("http" | "https")) => s.to_string(),
        _ => return Err(bad("it must start with http:// or https://")),
    };
    if base.host().is_none() {
        return Err(bad("it names no host"));
    }
    let authority = base.authority().map_or("", |a| a.as_str());
    let path = base.path().trim_end_matches('/');
    let path = match protocol {
        Protocol::Grpc => GRPC_EXPORT.to_string(),
        Protocol::HttpProtobuf if full => return Ok(base),
        Protocol::HttpProtobuf if path.ends_with("/v1/traces") => path.to_string(),
        Protocol::HttpProtobuf => format!("{path}/v1/traces"),
    };
    format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(|_| bad("not a URL"))
}

/// The TLS settings the certificate variables ask for; for plain `http`
/// (`https` false), settings that are never used.
fn tls_config(env: &impl Fn(&str) -> Option<String>, https: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let var = |name: &str| {
        let traces = name.replace("OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_TRACES_");
        env(&traces)
            .map(|v| (traces, v))
            .or_else(|| env(name).map(|v| (name.to_string(), v)))
    };
    let certificates = |(name, file): &(String, String)| -> Result<Vec<CertificateDer<'static>>, String> {
        let found: Result<Vec<_>, _> = CertificateDer::pem_file_iter(file)
            .map_err(|e| format!("{name}: cannot read `{file}`: {e}"))?
            .collect();
        match found {
            Ok(certs) if !certs.is_empty() => Ok(certs),
            Ok(_) => Err(format!(
                "{name}: `{file}` holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)"
            )),
            Err(e) => Err(format!("{name}: `{file}` is not PEM: {e}")),
        }
    };
    let roots = var("OTEL_EXPORTER_OTLP_CERTIFICATE");
    let client = (
        var("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"),
        var("OTEL_EXPORTER_OTLP_CLIENT_KEY"),
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut store = rustls::RootCertStore::empty();
    match &roots {
        Some(given) => {
            for cert in certificates(given)? {
                store
                    .add(cert)
                    .map_err(|e| format!("{}: a certificate in `{}` is not usable: {e}", given.0, given.1))?;
            }
        }
        None if https => {
            let (added, _) = store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if added == 0 {
                return Err(
                    "the OTLP endpoint is https, but this machine has no TLS root certificates: install the `ca-certificates` package, or name the collector's in OTEL_EXPORTER_OTLP_CERTIFICATE".into(),
                );
            }
        }
        None => {}
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(store);
    let config = match client {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some((name, file))) => {
            let key = PrivateKeyDer::from_pem_file(&file)
                .map_err(|e| format!("{name}: `{file}` holds no PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(certificates(&cert)?, key)
                .map_err(|e| format!("{name}: the key does not suit the client certificate: {e}"))?
        }
        _ => {
            return Err(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY go together: set both, or neither"
                    .into(),
            );
        }
    };
    Ok(Arc::new(config))
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
    /// An encoded `Span` message.
    Span(Bytes),
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
    pub fn offer<'s>(&self, spans: impl IntoIterator<Item = &'s Span>) {
        for span in spans.into_iter().filter(|s| s.sampled) {
            self.offer_encoded(encode_span(span));
        }
    }

    /// Offers one span already encoded as an OTLP `Span` message (see
    /// [`crate::proto::SpanWriter`]), never waiting.
    pub fn offer_encoded(&self, span: Bytes) {
        if self.tx.try_send(Item::Span(span)).is_err() {
            self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
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

type HttpsClient =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>;

/// The client for `config`: HTTP/1.1 or HTTP/2 (by ALPN over TLS) for
/// `http/protobuf`, HTTP/2 only for gRPC.
fn client(config: &OtlpConfig) -> HttpsClient {
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config((*config.tls).clone());
    let connector = builder.https_or_http().enable_http1().enable_http2().build();
    Client::builder(TokioExecutor::new())
        .http2_only(config.protocol == Protocol::Grpc)
        .build(connector)
}

async fn run(config: OtlpConfig, mut rx: mpsc::Receiver<Item>, stats: Arc<ExportStats>) {
    let client = client(&config);
    let envelope = envelope(&config);
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        let take = |item: Item, batch: &mut Vec<Bytes>, flushes: &mut Vec<oneshot::Sender<()>>| match item {
            Item::Span(s) => batch.push(s),
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
            match send(&client, &config, envelope.request(chunk)).await {
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

/// The most of a collector's answer that is read.
const MAX_ANSWER: usize = 1 << 20;

/// The resource and scope of every export: the service and the node.
fn envelope(config: &OtlpConfig) -> Envelope {
    Envelope::new(
        &[
            ("service.name", &config.service),
            ("service.instance.id", &config.instance),
            ("telemetry.sdk.name", "weft"),
        ],
        "weft",
        env!("CARGO_PKG_VERSION"),
    )
}

/// Sends one encoded `ExportTraceServiceRequest`.
async fn send(client: &HttpsClient, config: &OtlpConfig, message: Vec<u8>) -> Result<(), String> {
    let (content_type, body) = match config.protocol {
        Protocol::HttpProtobuf => ("application/x-protobuf", Bytes::from(message)),
        Protocol::Grpc => ("application/grpc", grpc_frame(&message)),
    };
    let mut request = hyper::Request::builder()
        .method("POST")
        .uri(config.endpoint.clone())
        .header(http::header::CONTENT_TYPE, content_type);
    if config.protocol == Protocol::Grpc {
        request = request.header(http::header::TE, "trailers");
    }
    for (k, v) in &config.headers {
        request = request.header(k, v);
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let answer = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach the collector: {e}"))?;
        let (parts, body) = response.into_parts();
        // Read (and bound) the answer: gRPC's status is in its trailers,
        // and a read answer lets the connection be reused.
        let collected = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_ANSWER))
            .await
            .map_err(|e| format!("the collector's answer was cut off: {e}"))?;
        Ok::<_, String>((parts, collected.trailers().cloned()))
    };
    let (parts, trailers) = tokio::time::timeout(config.timeout, answer)
        .await
        .map_err(|_| format!("no answer within {:?}", config.timeout))??;
    if !parts.status.is_success() {
        return Err(format!("the collector answered {}", parts.status));
    }
    if config.protocol == Protocol::Grpc {
        // A trailers-only answer carries the status in its headers.
        let status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| parts.headers.get("grpc-status"));
        let message = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-message"))
            .or_else(|| parts.headers.get("grpc-message"));
        return match status.map(|s| s.as_bytes()) {
            Some(b"0") => Ok(()),
            Some(code) => Err(format!(
                "the collector answered gRPC status {}: {}",
                String::from_utf8_lossy(code),
                message.map_or(std::borrow::Cow::Borrowed(""), |m| percent_encoding::percent_decode(
                    m.as_bytes()
                )
                .decode_utf8_lossy())
            )),
            None => Err("the collector's gRPC answer has no grpc-status".into()),
        };
    }
    Ok(())
}

/// A gRPC message frame: not compressed, its length, the message.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    Bytes::from(framed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_endpoint_follows_the_sdk_variables() {
        let none = OtlpConfig::from_env(None, env(&[]), "app", "n").unwrap();
        assert!(none.is_none());
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
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        let grpc = [("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        let c = OtlpConfig::from_env(Some("http://collector:4317/"), env(&grpc), "app", "n")
            .unwrap()
            .unwrap();
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.endpoint, format!("http://collector:4317{GRPC_EXPORT}").as_str());
    }

    #[test]
    fn bad_settings_say_what_to_give() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a str);
        let cases: [Case; 9] = [
            (&[], Some("ftp://x"), "it must start with http:// or https://"),
            (&[], Some("not a url"), "not a URL"),
            (
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
                Some("http://x"),
                "`http/protobuf` (collectors take it on port 4318) or `grpc`",
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
            (
                &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/no/such/ca.pem")],
                Some("https://x"),
                "OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read `/no/such/ca.pem`",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "Cargo.toml")],
                Some("https://x"),
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: `Cargo.toml` holds no PEM certificate",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_CLIENT_KEY", "Cargo.toml")],
                Some("https://x"),
                "go together: set both, or neither",
            ),
            (&[], Some("http://"), "not a URL"),
        ];
        for (vars, flag, says) in cases {
            let e = OtlpConfig::from_env(flag, env(vars), "app", "n").unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
