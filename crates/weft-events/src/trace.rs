//! Trace context on stored messages and events: the CloudEvents
//! distributed-tracing extension (`traceparent`, `tracestate`), kept as
//! message attributes of those names and as CloudEvent extensions.

use std::collections::BTreeMap;

use weft_store::durable::Message;
use weft_telemetry::SpanContext;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Keeps `trace` in a message's attributes.
pub fn store(attributes: &mut BTreeMap<String, String>, trace: &SpanContext) {
    attributes.insert(TRACEPARENT.into(), trace.traceparent());
    if let Some(state) = &trace.state {
        attributes.insert(TRACESTATE.into(), state.clone());
    }
}

/// The context a message was stored with, if it was and it reads.
pub fn of_message(m: &Message) -> Option<SpanContext> {
    of_extensions(&m.attributes)
}

/// The context in CloudEvent extensions (or message attributes).
pub fn of_extensions(map: &BTreeMap<String, String>) -> Option<SpanContext> {
    SpanContext::parse(map.get(TRACEPARENT)?, map.get(TRACESTATE).map(String::as_str))
}

/// Removes the trace extensions of an event, and returns the context they held.
pub fn take_extensions(map: &mut BTreeMap<String, String>) -> Option<SpanContext> {
    let found = of_extensions(map);
    map.remove(TRACEPARENT);
    map.remove(TRACESTATE);
    found
}

/// Sets the extensions of an event to `trace`.
pub fn set_extensions(map: &mut BTreeMap<String, String>, trace: &SpanContext) {
    store(map, trace);
    if trace.state.is_none() {
        map.remove(TRACESTATE);
    }
}

/// The trace attributes a message carries, to deliver with it.
pub(crate) fn attributes(m: &Message) -> impl Iterator<Item = (&'static str, &String)> {
    [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|name| m.attributes.get(name).map(|v| (name, v)))
}
