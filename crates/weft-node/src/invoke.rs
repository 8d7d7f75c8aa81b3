//! The invoke pipeline: what happens around every invocation. A request
//! gets an id and weft's headers, runs on a fresh instance of the
//! function, and leaves a record and its log lines when the instance is
//! gone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use tokio::sync::oneshot;
use weft_runtime::{Answer, Exit, InvocationContext};
use weft_store::{InvocationRecord, LogLine, Outcome, Trigger};
use weft_telemetry::{Link, Report, SpanContext, SpanEvent};

use crate::body;
use crate::call::{Call, Handled};
use crate::deployment::Deployed;
use crate::node::Node;
use crate::outbound::FunctionOutbound;
use crate::telemetry;

const REQUEST_ID: HeaderName = HeaderName::from_static("weft-request-id");

impl Node {
    /// Runs `function` for `request`, records the invocation, and returns
    /// the response (streaming) as soon as the function answers.
    pub async fn invoke<B>(
        self: &Arc<Self>,
        function: &Arc<Deployed>,
        mut request: hyper::Request<B>,
        call: Call<'_>,
    ) -> Handled
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<weft_runtime::HttpError>,
    {
        let request_id = self.new_request_id();
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        // The invocation's span continues the one weft knows of, or the
        // caller's `traceparent`, or starts a trace.
        let trace = call.trace;
        let span = self.tracing.then(|| {
            let parent = trace.parent.or_else(|| telemetry::incoming(request.headers()));
            (SpanContext::child_of(parent.as_ref()), parent)
        });
        prepare_headers(request.headers_mut(), &request_id, &function.name, call.params);
        if let Some((context, _)) = &span {
            telemetry::set_headers(request.headers_mut(), context);
        }
        for (name, value) in call.trusted {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                request.headers_mut().insert(n, v);
            }
        }
        let context = span.as_ref().map(|(c, _)| c.clone());
        let outbound = Arc::new(FunctionOutbound::new(
            self,
            function,
            &request_id,
            call.depth,
            context.clone(),
        ));
        let (record_tx, record_rx) = oneshot::channel();
        let base = RecordBase {
            request_id: request_id.clone(),
            function: function.clone(),
            trigger: call.trigger,
            parent: call.parent.map(str::to_string),
            outbound: outbound.clone(),
            span,
            links: trace.links,
            events: trace.events,
        };
        // The record is written on the invocation's own task when the
        // instance is gone: no task of our own waits for it.
        let node = Arc::downgrade(self);
        self.running.fetch_add(1, Ordering::AcqRel);
        let running = Running(node.clone());
        let on_complete = Box::new(move |completion: &weft_runtime::Completion| {
            if let Some(node) = node.upgrade() {
                // Only the admin API's invoke waits for the record.
                if let Some(record) = node.finish(base, completion, !record_tx.is_closed()) {
                    let _ = record_tx.send(record);
                }
            }
            drop(running);
        });
        let stores = self
            .capabilities
            .iter()
            .find_map(|c| c.stores(self, function))
            .unwrap_or_else(|| Arc::new(NoStores));
        let ctx = InvocationContext {
            request_id: request_id.clone(),
            outbound,
            stores,
            nested: call.trigger == Trigger::Internal,
            on_complete: Some(on_complete),
        };
        let invocation = self.runtime.invoke(function.image.clone(), request, ctx).await;

        let (response, status) = match invocation.answer {
            Answer::Response(mut response) => {
                if let Ok(v) = HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert(REQUEST_ID, v);
                }
                let status = response.status().as_u16();
                (body::coalesce(response).await, status)
            }
            Answer::Refused(code) => {
                let message = format!("function `{}` answered with error {code}", function.name);
                (body::error(500, &message, Some(&request_id)), 500)
            }
            Answer::Nothing => {
                // The function ended without answering: wait for how, so the
                // caller learns why.
                let (status, message) = match invocation.completion.await {
                    Ok(c) => failure(&function.name, &c.exit),
                    Err(_) => (500, "the invocation was lost".to_string()),
                };
                (body::error(status, &message, Some(&request_id)), status)
            }
        };
        self.print(&method, &path, &function.name, status, started);
        Handled {
            response,
            request_id,
            record: record_rx,
            span: context,
        }
    }

    /// Writes the record and the function's output for a finished
    /// invocation, and returns the record if `wanted`.
    fn finish(
        &self,
        base: RecordBase,
        completion: &weft_runtime::Completion,
        wanted: bool,
    ) -> Option<InvocationRecord> {
        let name = &base.function.name;
        let (outcome, error) = match &completion.exit {
            Exit::Returned => (Outcome::Success, None),
            Exit::Trap(m) => (Outcome::Trap, Some(m.clone())),
            Exit::Timeout(_) => (Outcome::Timeout, Some(failure(name, &completion.exit).1)),
            Exit::MemoryLimit { .. } => (Outcome::MemoryLimit, Some(failure(name, &completion.exit).1)),
            Exit::Failed(m) => (Outcome::Failed, Some(m.clone())),
        };
        // A function that answered and then failed (say, trapped while
        // streaming) still answered with its status.
        let status = completion.status.unwrap_or_else(|| failure(name, &completion.exit).0);
        let line = |stream: &str, time_us: i64, line: String| LogLine {
            seq: 0,
            request_id: base.request_id.clone(),
            function: name.clone(),
            stream: stream.into(),
            time_us,
            line,
            version: None,
            trace_id: None,
        };
        let mut lines: Vec<LogLine> = base
            .outbound
            .take_denials()
            .into_iter()
            .map(|l| line("stderr", completion.start_us, l))
            .collect();
        lines.extend(
            completion
                .output
                .iter()
                .map(|o| line(o.stream, o.time_us, o.line.clone())),
        );
        let duration_us = completion.duration.as_micros() as u64;
        let memory_bytes = base.function.image.limits.memory;
        let init_us = completion.cold.then_some(completion.instantiate.as_micros() as u64);
        let report = Report {
            request_id: &base.request_id,
            duration_us,
            memory_bytes,
            peak_memory_bytes: completion.peak_memory,
            init_us,
        };
        lines.push(line(PLATFORM, completion.start_us + duration_us as i64, report.line()));
        self.store.logs(lines);
        let (trace_id, span_id, parent_span_id) = match &base.span {
            Some((c, p)) => (
                Some(c.trace_hex()),
                Some(c.span_hex()),
                p.as_ref().map(SpanContext::span_hex),
            ),
            None => (None, None, None),
        };
        let record = InvocationRecord {
            request_id: base.request_id,
            function: name.clone(),
            version: base.function.version,
            trigger: base.trigger,
            start_us: completion.start_us,
            duration_us,
            cold: completion.cold,
            peak_memory_bytes: completion.peak_memory,
            outcome,
            status,
            error,
            parent_request_id: base.parent,
            memory_bytes,
            billed_ms: weft_telemetry::billed_ms(duration_us),
            init_us,
            trace_id,
            span_id,
            parent_span_id,
            links: base.links,
            events: base.events,
        };
        self.count_invocation(&record);
        self.export_invocation(&record, base.span.as_ref().map(|(c, _)| c.flags));
        if wanted {
            self.store.record(record.clone());
            return Some(record);
        }
        self.store.record(record);
        None
    }

    fn print(&self, method: &http::Method, path: &str, function: &str, status: u16, started: Instant) {
        if self.print_requests {
            println!("{method} {path} -> {function} {status} in {:.2?}", started.elapsed());
        }
    }
}

/// Counts one invocation as running until it is dropped (its record
/// written, or its completion lost).
struct Running(std::sync::Weak<Node>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(node) = self.0.upgrade() {
            node.running.fetch_sub(1, Ordering::AcqRel);
            node.ended.notify_waiters();
        }
    }
}

struct RecordBase {
    request_id: String,
    function: Arc<Deployed>,
    trigger: Trigger,
    parent: Option<String>,
    outbound: Arc<FunctionOutbound>,
    /// The invocation's span and its parent (in the same trace).
    span: Option<(SpanContext, Option<SpanContext>)>,
    links: Vec<Link>,
    events: Vec<SpanEvent>,
}

/// The log stream of the lines weft writes about an invocation (its
/// `REPORT`), beside the function's own `stdout` and `stderr`.
pub const PLATFORM: &str = "platform";

/// Status and message for an invocation that ended without answering.
fn failure(function: &str, exit: &Exit) -> (u16, String) {
    match exit {
        Exit::Returned => (
            500,
            format!("function `{function}` returned without setting a response"),
        ),
        Exit::Trap(m) => (500, format!("function `{function}` trapped: {m}")),
        Exit::Timeout(t) => (
            504,
            format!("function `{function}` timed out after {t:?} (its `timeout` in weft.toml)"),
        ),
        Exit::MemoryLimit { limit } => (
            500,
            format!(
                "function `{function}` exceeded its memory limit of {} (raise `memory` in [function.{function}] of weft.toml)",
                weft_manifest::ByteSize(*limit)
            ),
        ),
        Exit::Failed(m) => (500, format!("function `{function}` could not run: {m}")),
    }
}

/// Removes `weft-*` headers a client sent (they are weft's to set), then
/// adds the request id, the function name and the route parameters. (The
/// trace headers are set after, to the invocation's own span.)
fn prepare_headers(headers: &mut http::HeaderMap, request_id: &str, function: &str, params: &[(&str, &str)]) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("weft-"))
        .cloned()
        .collect();
    for k in spoofed {
        headers.remove(k);
    }
    if !headers.contains_key(http::header::HOST) {
        headers.insert(http::header::HOST, HeaderValue::from_static("localhost"));
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(function) {
        headers.insert(HeaderName::from_static("weft-function"), v);
    }
    for (name, value) in params {
        let header = HeaderName::from_bytes(format!("weft-param-{}", name.to_ascii_lowercase()).as_bytes());
        let value = HeaderValue::from_str(&percent_decode(value));
        if let (Ok(h), Ok(v)) = (header, value) {
            headers.insert(h, v);
        }
    }
}

/// Decodes `%XX` escapes in a path parameter; invalid escapes stay as
/// written, and text that does not decode to UTF-8 stays as it was.
pub fn percent_decode(s: &str) -> String {
    match percent_encoding::percent_decode_str(s).decode_utf8() {
        Ok(decoded) => decoded.into_owned(),
        Err(_) => s.to_string(),
    }
}

/// The stores of a node that keeps none.
struct NoStores;

impl weft_runtime::Stores for NoStores {
    fn open(&self, name: &str) -> Result<Arc<dyn weft_runtime::Store>, weft_runtime::StoreError> {
        Err(weft_runtime::StoreError::NoSuchStore(format!(
            "no store `{name}` exists"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_weft_s_to_set() {
        let mut h = http::HeaderMap::new();
        h.insert("weft-param-id", HeaderValue::from_static("spoofed"));
        h.insert("weft-request-id", HeaderValue::from_static("spoofed"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        prepare_headers(&mut h, "r1", "users", &[("id", "a%20b"), ("rest", "x/y")]);
        assert_eq!(h["weft-param-id"], "a b");
        assert_eq!(h["weft-param-rest"], "x/y");
        assert_eq!(h["weft-request-id"], "r1");
        assert_eq!(h["weft-function"], "users");
        assert_eq!(h["accept"], "*/*");
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
