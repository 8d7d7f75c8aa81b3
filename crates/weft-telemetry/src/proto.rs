//! OTLP's protobuf messages written straight into bytes: a span as its
//! fields arrive, then a batch of encoded spans wrapped in the export
//! request. No message structs are built on the way, so exporting a span
//! costs one buffer and no copy of its strings: the request path (which
//! encodes invocation spans from their records) and the export task stay
//! cheap on a machine with no core to spare.
//!
//! Field numbers are those of `opentelemetry/proto/trace/v1/trace.proto`,
//! `common/v1/common.proto` and `collector/trace/v1/trace_service.proto`;
//! the tests decode what is written with the `opentelemetry-proto` types.

use bytes::Bytes;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use serde_json::Value;

use crate::span::{Span, SpanKind};

/// One span being written.
pub struct SpanWriter {
    buf: Vec<u8>,
}

/// `opentelemetry.proto.trace.v1.Span` field numbers.
mod span {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START: u32 = 7;
    pub const END: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const EVENTS: u32 = 11;
    pub const LINKS: u32 = 13;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;
}

/// `SpanFlags`: the W3C flags in the low byte, and "whether the parent is
/// remote" known (bit 8).
const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
/// `Status.StatusCode.STATUS_CODE_ERROR`.
const STATUS_ERROR: u64 = 2;

fn nanos(us: i64) -> u64 {
    (us.max(0) as u64).saturating_mul(1000)
}

fn kind_number(kind: SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn bytes_field(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

fn varint_field(buf: &mut Vec<u8>, tag: u32, value: u64) {
    encode_key(tag, WireType::Varint, buf);
    encode_varint(value, buf);
}

fn fixed64_field(buf: &mut Vec<u8>, tag: u32, value: u64) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&value.to_le_bytes());
}

fn fixed32_field(buf: &mut Vec<u8>, tag: u32, value: u32) {
    encode_key(tag, WireType::ThirtyTwoBit, buf);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// A length-delimited field's size: key, length, content.
fn delimited_len(tag: u32, len: usize) -> usize {
    encoded_len_varint(u64::from(tag << 3)) + encoded_len_varint(len as u64) + len
}

/// An attribute value, as `AnyValue`'s one field.
#[derive(Clone, Copy)]
pub enum Attr<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
}

impl<'a> Attr<'a> {
    /// A JSON value as an attribute; arrays and objects become their JSON
    /// text (`text` holds it).
    fn of_json(value: &'a Value, text: &'a mut String) -> Attr<'a> {
        match value {
            Value::String(s) => Attr::Str(s),
            Value::Bool(b) => Attr::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Attr::Int(i),
                None => Attr::Double(n.as_f64().unwrap_or(0.0)),
            },
            other => {
                *text = other.to_string();
                Attr::Str(text)
            }
        }
    }

    /// `AnyValue`'s encoded size.
    fn len(self) -> usize {
        match self {
            Attr::Str(s) => delimited_len(1, s.len()),
            Attr::Bool(_) => 2,
            Attr::Int(i) => 1 + encoded_len_varint(i as u64),
            Attr::Double(_) => 9,
        }
    }

    fn write(self, buf: &mut Vec<u8>) {
        match self {
            Attr::Str(s) => bytes_field(buf, 1, s.as_bytes()),
            Attr::Bool(b) => varint_field(buf, 2, u64::from(b)),
            Attr::Int(i) => varint_field(buf, 3, i as u64),
            Attr::Double(d) => fixed64_field(buf, 4, d.to_bits()),
        }
    }
}

/// Writes a `KeyValue` as field `tag` of the message in `buf`.
fn key_value(buf: &mut Vec<u8>, tag: u32, key: &str, value: Attr<'_>) {
    let value_len = value.len();
    let len = delimited_len(1, key.len()) + delimited_len(2, value_len);
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    bytes_field(buf, 1, key.as_bytes());
    encode_key(2, WireType::LengthDelimited, buf);
    encode_varint(value_len as u64, buf);
    value.write(buf);
}

impl SpanWriter {
    /// A span of `trace_id`, `span_id` (child of `parent`, if any), with
    /// its name, kind, times and W3C flags.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        trace_id: u128,
        span_id: u64,
        parent: Option<u64>,
        name: &str,
        kind: SpanKind,
        start_us: i64,
        end_us: i64,
        flags: u8,
    ) -> SpanWriter {
        let mut buf = Vec::with_capacity(512);
        bytes_field(&mut buf, span::TRACE_ID, &trace_id.to_be_bytes());
        bytes_field(&mut buf, span::SPAN_ID, &span_id.to_be_bytes());
        if let Some(p) = parent {
            bytes_field(&mut buf, span::PARENT_SPAN_ID, &p.to_be_bytes());
        }
        fixed32_field(&mut buf, span::FLAGS, CONTEXT_HAS_IS_REMOTE | u32::from(flags));
        bytes_field(&mut buf, span::NAME, name.as_bytes());
        varint_field(&mut buf, span::KIND, kind_number(kind));
        fixed64_field(&mut buf, span::START, nanos(start_us));
        fixed64_field(&mut buf, span::END, nanos(end_us));
        SpanWriter { buf }
    }

    pub fn attr(&mut self, key: &str, value: Attr<'_>) -> &mut SpanWriter {
        key_value(&mut self.buf, span::ATTRIBUTES, key, value);
        self
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut SpanWriter {
        self.attr(key, Attr::Str(value))
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut SpanWriter {
        self.attr(key, Attr::Int(value))
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut SpanWriter {
        self.attr(key, Attr::Bool(value))
    }

    /// An attribute from a JSON value.
    pub fn json(&mut self, key: &str, value: &Value) -> &mut SpanWriter {
        let mut text = String::new();
        let attr = Attr::of_json(value, &mut text);
        self.attr(key, attr)
    }

    /// A span event, with its attributes.
    pub fn event<'v>(
        &mut self,
        name: &str,
        time_us: i64,
        attributes: impl IntoIterator<Item = (&'v str, &'v Value)>,
    ) -> &mut SpanWriter {
        let mut event = Vec::with_capacity(64 + name.len());
        fixed64_field(&mut event, 1, nanos(time_us));
        bytes_field(&mut event, 2, name.as_bytes());
        for (k, v) in attributes {
            let mut text = String::new();
            key_value(&mut event, 3, k, Attr::of_json(v, &mut text));
        }
        bytes_field(&mut self.buf, span::EVENTS, &event);
        self
    }

    /// A link to another span (of this trace or another).
    pub fn link(&mut self, trace_id: u128, span_id: u64) -> &mut SpanWriter {
        let mut link = Vec::with_capacity(40);
        bytes_field(&mut link, 1, &trace_id.to_be_bytes());
        bytes_field(&mut link, 2, &span_id.to_be_bytes());
        fixed32_field(&mut link, 6, CONTEXT_HAS_IS_REMOTE);
        bytes_field(&mut self.buf, span::LINKS, &link);
        self
    }

    /// Marks the span failed, with why.
    pub fn error(&mut self, message: &str) -> &mut SpanWriter {
        let len = delimited_len(2, message.len()) + 2;
        encode_key(span::STATUS, WireType::LengthDelimited, &mut self.buf);
        encode_varint(len as u64, &mut self.buf);
        bytes_field(&mut self.buf, 2, message.as_bytes());
        varint_field(&mut self.buf, 3, STATUS_ERROR);
        self
    }

    /// The encoded `Span` message.
    pub fn finish(self) -> Bytes {
        Bytes::from(self.buf)
    }
}

/// Hex ids as an integer; 0 (which no valid id is) when not hex.
fn hex_id(hex: &str) -> u128 {
    u128::from_str_radix(hex, 16).unwrap_or(0)
}

/// A kept span as OTLP bytes.
pub fn encode_span(s: &Span) -> Bytes {
    let mut w = SpanWriter::new(
        hex_id(&s.trace_id),
        hex_id(&s.span_id) as u64,
        s.parent_span_id.as_deref().map(|p| hex_id(p) as u64),
        &s.name,
        s.kind,
        s.start_us,
        s.end_us(),
        u8::from(s.sampled),
    );
    for (k, v) in &s.attributes {
        w.json(k, v);
    }
    if let Some(id) = &s.request_id {
        w.str("weft.request_id", id);
    }
    for e in &s.events {
        w.event(&e.name, e.time_us, e.attributes.iter().map(|(k, v)| (k.as_str(), v)));
    }
    for l in &s.links {
        w.link(hex_id(&l.trace_id), hex_id(&l.span_id) as u64);
    }
    if let Some(e) = &s.error {
        w.error(e);
    }
    w.finish()
}

/// The part of every export request before its spans: the resource (with
/// its attributes) and the instrumentation scope, written once.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `ResourceSpans.resource` (field 1), whole.
    resource: Vec<u8>,
    /// `ScopeSpans.scope` (field 1), whole.
    scope: Vec<u8>,
}

impl Envelope {
    pub fn new(resource: &[(&str, &str)], scope: &str, version: &str) -> Envelope {
        let mut attributes = Vec::new();
        for (k, v) in resource {
            key_value(&mut attributes, 1, k, Attr::Str(v));
        }
        let mut resource = Vec::new();
        bytes_field(&mut resource, 1, &attributes);
        let mut fields = Vec::new();
        bytes_field(&mut fields, 1, scope.as_bytes());
        bytes_field(&mut fields, 2, version.as_bytes());
        let mut scope = Vec::new();
        bytes_field(&mut scope, 1, &fields);
        Envelope { resource, scope }
    }

    /// An `ExportTraceServiceRequest` carrying `spans` (each an encoded
    /// `Span`) under the resource and scope.
    pub fn request(&self, spans: &[Bytes]) -> Vec<u8> {
        let spans_len: usize = spans.iter().map(|s| delimited_len(2, s.len())).sum();
        let scope_spans = self.scope.len() + spans_len;
        let resource_spans = self.resource.len() + delimited_len(2, scope_spans);
        let mut out = Vec::with_capacity(delimited_len(1, resource_spans));
        // ExportTraceServiceRequest.resource_spans
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(resource_spans as u64, &mut out);
        out.extend_from_slice(&self.resource);
        // ResourceSpans.scope_spans
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(scope_spans as u64, &mut out);
        out.extend_from_slice(&self.scope);
        for s in spans {
            // ScopeSpans.spans
            bytes_field(&mut out, 2, s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::SpanContext;
    use crate::span::{Link, SpanEvent};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::trace::v1 as otlp;
    use prost::Message;

    fn value(kv: &opentelemetry_proto::tonic::common::v1::KeyValue) -> any_value::Value {
        kv.value.clone().unwrap().value.unwrap()
    }

    #[test]
    fn a_span_decodes_as_the_otlp_types_read_it() {
        let root = SpanContext::root();
        let child = root.child();
        let other = SpanContext::root();
        let mut span = Span::new(&child, Some(&root), "send q".into(), SpanKind::Producer, 10)
            .with("n", 3)
            .with("ok", true)
            .with("s", "x")
            .with("ratio", 0.5)
            .with("list", serde_json::json!([1, 2]));
        span.duration_us = 5;
        span.error = Some("broke".into());
        span.request_id = Some("r-1".into());
        span.events.push(SpanEvent::new("retry", 12).with("attempt", 2));
        span.links.push(Link::from(&other));
        let envelope = Envelope::new(&[("service.name", "app"), ("service.instance.id", "n1")], "weft", "1.2");
        let bytes = envelope.request(&[encode_span(&span), encode_span(&span)]);
        let back = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let rs = &back.resource_spans[0];
        let resource = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(resource[0].key, "service.name");
        assert_eq!(value(&resource[1]), any_value::Value::StringValue("n1".into()));
        let scope = rs.scope_spans[0].scope.as_ref().unwrap();
        assert_eq!((scope.name.as_str(), scope.version.as_str()), ("weft", "1.2"));
        assert_eq!(rs.scope_spans[0].spans.len(), 2);
        let s = &rs.scope_spans[0].spans[0];
        assert_eq!(s.trace_id, root.trace_id.to_be_bytes());
        assert_eq!(s.span_id, child.span_id.to_be_bytes());
        assert_eq!(s.parent_span_id, root.span_id.to_be_bytes());
        assert_eq!(s.flags, 0x101);
        assert_eq!(s.name, "send q");
        assert_eq!(s.kind, otlp::span::SpanKind::Producer as i32);
        assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano), (10_000, 15_000));
        let attr = |k: &str| value(s.attributes.iter().find(|a| a.key == k).unwrap());
        assert_eq!(attr("n"), any_value::Value::IntValue(3));
        assert_eq!(attr("ok"), any_value::Value::BoolValue(true));
        assert_eq!(attr("s"), any_value::Value::StringValue("x".into()));
        assert_eq!(attr("ratio"), any_value::Value::DoubleValue(0.5));
        assert_eq!(attr("list"), any_value::Value::StringValue("[1,2]".into()));
        assert_eq!(attr("weft.request_id"), any_value::Value::StringValue("r-1".into()));
        assert_eq!(s.attributes.len(), 6);
        let event = &s.events[0];
        assert_eq!((event.name.as_str(), event.time_unix_nano), ("retry", 12_000));
        assert_eq!(value(&event.attributes[0]), any_value::Value::IntValue(2));
        assert_eq!(s.links[0].trace_id, other.trace_id.to_be_bytes());
        assert_eq!(s.links[0].span_id, other.span_id.to_be_bytes());
        let status = s.status.as_ref().unwrap();
        assert_eq!(status.code, otlp::status::StatusCode::Error as i32);
        assert_eq!(status.message, "broke");
    }

    #[test]
    fn long_strings_and_empty_batches_encode() {
        let root = SpanContext::root();
        let long = "x".repeat(70_000);
        let mut w = SpanWriter::new(root.trace_id, root.span_id, None, &long, SpanKind::Server, 1, 2, 0);
        w.str(&long, &long).int("neg", -5);
        let envelope = Envelope::new(&[], "weft", "0");
        let back = ExportTraceServiceRequest::decode(envelope.request(&[w.finish()]).as_slice()).unwrap();
        let s = &back.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.name.len(), 70_000);
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.flags, 0x100, "not sampled");
        assert_eq!(value(&s.attributes[1]), any_value::Value::IntValue(-5));
        let empty = ExportTraceServiceRequest::decode(envelope.request(&[]).as_slice()).unwrap();
        assert!(empty.resource_spans[0].scope_spans[0].spans.is_empty());
    }
}
