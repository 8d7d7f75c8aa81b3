//! A small client for the admin API.

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8081";

pub struct Client {
    base: String,
    http: HyperClient<HttpConnector, Full<Bytes>>,
    /// `TRACEPARENT` (and `TRACESTATE`) from the environment, as
    /// OpenTelemetry's environment carrier has it: what a command sends or
    /// puts joins that trace, so a script's steps show as one.
    trace: Option<(String, Option<String>)>,
}

impl Client {
    pub fn new(server: &str) -> anyhow::Result<Client> {
        let base = server.trim_end_matches('/').to_string();
        let uri: http::Uri = base
            .parse()
            .with_context(|| format!("`{server}` is not a URL; pass --server http://HOST:PORT"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            bail!("`{server}` is not an http://HOST:PORT URL; pass --server http://127.0.0.1:8081");
        }
        let trace = match std::env::var("TRACEPARENT") {
            Ok(parent) => {
                let state = std::env::var("TRACESTATE").ok();
                if weft_telemetry::SpanContext::parse(&parent, state.as_deref()).is_none() {
                    let shown: String = parent.chars().take(64).collect();
                    let more = if shown.len() < parent.len() { "…" } else { "" };
                    bail!(
                        "TRACEPARENT `{shown}{more}` is not a W3C traceparent; write `00-` 32 hex digits `-` 16 hex digits `-01`, or unset it"
                    );
                }
                Some((parent, state))
            }
            Err(_) => None,
        };
        Ok(Client {
            base,
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
            trace,
        })
    }

    /// Sends a request; returns the status and the JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
        content_type: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, content_type);
        if let Some((parent, state)) = &self.trace {
            request = request.header("traceparent", parent);
            if let Some(state) = state {
                request = request.header("tracestate", state);
            }
        }
        let request = request.body(Full::new(body.unwrap_or_default()))?;
        let response = self.http.request(request).await.map_err(|e| {
            anyhow!(
                "cannot reach the weft server at {}: {e}. Is `weft up` running? (set --server or WEFT_SERVER)",
                self.base
            )
        })?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .context("the server's answer was cut off")?
            .to_bytes();
        if bytes.is_empty() {
            return Ok((status, Value::Null));
        }
        let value = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the server answered {status} with something other than JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        })?;
        Ok((status, value))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.call("GET", path, None, "application/json").await
    }

    pub async fn post_json(&self, path: &str, value: &Value) -> anyhow::Result<(u16, Value)> {
        self.call("POST", path, Some(Bytes::from(value.to_string())), "application/json")
            .await
    }
}

/// The `error` field of an error answer, or the whole answer.
pub fn error_text(value: &Value) -> String {
    value
        .get("error")
        .and_then(Value::as_str)
        .map_or_else(|| value.to_string(), str::to_string)
}

/// Every byte but the unreserved ones of RFC 3986 is escaped.
const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query parameter value or a path segment.
pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, ESCAPED).to_string()
}
