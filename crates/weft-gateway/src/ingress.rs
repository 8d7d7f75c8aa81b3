//! The event ingress on the app's port: CloudEvents to a topic
//! (`POST /events/TOPIC`) or a bus (`POST /events/bus/BUS`), and
//! EventBridge's PutEvents shape (`POST /events/put`).
//!
//! It takes the three HTTP content modes of CloudEvents 1.0: binary (the
//! attributes in `ce-*` headers, the body is the data), structured
//! (`application/cloudevents+json`) and batched
//! (`application/cloudevents-batch+json`). `specversion` (1.0), `id`,
//! `source` and `type` are required; a missing or invalid attribute gets a
//! 400 that names it (and the event's position in a batch). Accepted events
//! are on disk when the 202 is sent; an id accepted within the last five
//! minutes is acknowledged as a duplicate and not stored again. When the
//! storage cannot take writes (a full disk), the answer is 503 and nothing
//! of the request is kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use weft_events::CloudEvent;
use weft_events::bus::{BusEvent, EntryError};

use crate::body::{self, Body};
use crate::node::Node;

/// The path prefix of the ingress.
pub const PREFIX: &str = "/events/";
/// The largest request the ingress reads.
const MAX_REQUEST: usize = 1 << 20;

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

/// Attributes of a binary-mode event, from `ce-*` headers.
pub(crate) fn from_headers(headers: &http::HeaderMap, body: Bytes) -> Result<CloudEvent, String> {
    let mut attributes = Map::new();
    for (name, value) in headers {
        if let Some(attr) = name.as_str().strip_prefix("ce-") {
            let value = value.to_str().map_err(|_| format!("header `{name}` is not text"))?;
            attributes.insert(attr.to_string(), Value::from(value));
        }
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    event_from(attributes, body.to_vec(), content_type, "")
}

/// Checks the attributes and builds the event. `at` prefixes messages.
fn event_from(
    mut attributes: Map<String, Value>,
    data: Vec<u8>,
    content_type: Option<String>,
    at: &str,
) -> Result<CloudEvent, String> {
    let mut required = |name: &str| -> Result<String, String> {
        match attributes.remove(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(_) => Err(format!("{at}attribute `{name}` must be a non-empty string")),
            None => Err(format!("{at}required attribute `{name}` is missing")),
        }
    };
    let specversion = required("specversion")?;
    if specversion != "1.0" {
        return Err(format!(
            "{at}attribute `specversion` is `{specversion}`; weft takes CloudEvents 1.0"
        ));
    }
    let id = required("id")?;
    let source = required("source")?;
    let event_type = required("type")?;
    let time = match attributes.remove("time") {
        None => None,
        Some(Value::String(t)) if t.parse::<jiff::Timestamp>().is_ok() => Some(t),
        Some(other) => return Err(format!("{at}attribute `time` is {other}, not an RFC 3339 timestamp")),
    };
    let content_type = match attributes.remove("datacontenttype") {
        Some(Value::String(ct)) => Some(ct),
        _ => content_type,
    };
    let mut extensions = BTreeMap::new();
    for (name, value) in attributes {
        if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) || name.is_empty() || name.len() > 20 {
            return Err(format!(
                "{at}attribute name `{name}` is invalid: CloudEvents names are 1 to 20 lowercase letters or digits"
            ));
        }
        let text = match value {
            Value::String(s) => s,
            other => other.to_string(),
        };
        extensions.insert(name, text);
    }
    Ok(CloudEvent {
        id,
        source,
        event_type,
        time,
        content_type,
        data,
        extensions,
    })
}

/// One structured-mode event (a JSON object).
fn structured(value: Value, at: &str) -> Result<CloudEvent, String> {
    let Value::Object(mut attributes) = value else {
        return Err(format!("{at}an event in structured mode must be a JSON object"));
    };
    let data = match (attributes.remove("data"), attributes.remove("data_base64")) {
        (Some(_), Some(_)) => return Err(format!("{at}an event has either `data` or `data_base64`, not both")),
        (Some(Value::String(s)), None) => s.into_bytes(),
        (Some(v), None) => v.to_string().into_bytes(),
        (None, Some(Value::String(b64))) => {
            decode_base64(&b64).ok_or_else(|| format!("{at}`data_base64` is not valid base64"))?
        }
        (None, Some(_)) => return Err(format!("{at}`data_base64` must be a string")),
        (None, None) => Vec::new(),
    };
    event_from(attributes, data, Some("application/json".into()), at)
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !clean.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | u32::from(value(c)?);
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// Handles `POST /events/...`: `TOPIC`, `bus/BUS` or `put`.
pub async fn handle(node: Arc<Node>, rest: &str, request: hyper::Request<Incoming>) -> hyper::Response<Body> {
    if request.method() != http::Method::POST {
        return body::error(405, "send events with POST", None);
    }
    /// Where the request's CloudEvents go.
    enum Inlet<'a> {
        Topic(&'a str),
        Bus(&'a str),
    }
    let inlet = match rest.strip_prefix("bus/") {
        Some(bus) if node.buses.exists(bus) => Some(Inlet::Bus(bus)),
        Some(bus) => {
            return body::error(
                404,
                &format!(
                    "no bus `{bus}` is deployed; buses take POST /events/bus/BUS (the `default` bus always exists)"
                ),
                None,
            );
        }
        None if rest == "put" => None,
        None if node.topics.exists(rest) => Some(Inlet::Topic(rest)),
        None => {
            return body::error(
                404,
                &format!(
                    "no topic `{rest}` is deployed; the ingress takes POST /events/TOPIC, /events/bus/BUS and /events/put"
                ),
                None,
            );
        }
    };
    let (parts, incoming) = request.into_parts();
    let bytes = match Limited::new(incoming, MAX_REQUEST).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return body::error(413, &format!("the request is over {MAX_REQUEST} bytes"), None),
    };
    let Some(inlet) = inlet else {
        let (status, answer) = put_events(&node, &bytes, None).await;
        return body::json(status, &answer);
    };
    let events = match cloudevents_of(&parts.headers, bytes) {
        Ok(e) => e,
        Err(why) => return body::error(400, &why, None),
    };
    match inlet {
        Inlet::Topic(topic) => match node.topics.publish(&node.queues, topic, events).await {
            Ok(published) => {
                let duplicates = published.iter().filter(|p| p.duplicate).count();
                body::json(
                    202,
                    &json!({ "accepted": published.len(), "duplicates": duplicates, "events": published }),
                )
            }
            Err(e) => body::error(e.status(), &e.to_string(), None),
        },
        Inlet::Bus(bus) => {
            let events: Result<Vec<BusEvent>, String> = events.into_iter().map(BusEvent::from_cloudevent).collect();
            let events = match events {
                Ok(e) => e,
                Err(why) => return body::error(400, &why, None),
            };
            match node.buses.put(&node.queues, &node.topics, bus, events).await {
                Ok(put) => body::json(202, &json!({ "accepted": put.len(), "events": put })),
                Err(e) => body::error(e.status(), &e.to_string(), None),
            }
        }
    }
}

/// The events of a request in any of the three CloudEvents modes.
pub(crate) fn cloudevents_of(headers: &http::HeaderMap, bytes: Bytes) -> Result<Vec<CloudEvent>, String> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media == STRUCTURED {
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("the body is not JSON: {e}"))
            .and_then(|v| structured(v, ""))
            .map(|e| vec![e])
    } else if media == BATCH {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Array(items)) if !items.is_empty() => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| structured(v, &format!("event #{}: ", i + 1)))
                .collect(),
            Ok(_) => Err("a batch is a non-empty JSON array of events".into()),
            Err(e) => Err(format!("the body is not JSON: {e}")),
        }
    } else {
        from_headers(headers, bytes).map(|e| vec![e])
    }
}

/// A PutEvents request: answers the status and EventBridge's response
/// shape, `{"FailedEntryCount", "Entries": [{"EventId"} or {"ErrorCode",
/// "ErrorMessage"}]}`, one result per entry in order. With `only_bus`
/// (a function's grant), entries for other buses are refused.
pub(crate) async fn put_events(node: &Node, body: &[u8], only_bus: Option<&str>) -> (u16, Value) {
    let default_bus = only_bus.unwrap_or(weft_manifest::DEFAULT_BUS);
    let entries = match weft_events::bus::put_entries(body, default_bus, || node.queues.new_id()) {
        Ok(e) => e,
        Err(why) => return (400, json!({ "error": why })),
    };
    // The valid entries of each bus go in one put: one write for the lot.
    // Until then their results are `None`.
    let mut by_bus: BTreeMap<String, Vec<(usize, BusEvent)>> = BTreeMap::new();
    let mut results: Vec<Option<Result<String, EntryError>>> = entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| match entry {
            Err(e) => Some(Err(e)),
            Ok((bus, _)) if only_bus.is_some_and(|only| only != bus) => Some(Err(EntryError {
                code: "AccessDeniedException",
                message: format!(
                    "this address puts events on bus `{}` only; use http://{bus}.bus.weft.internal/ with \"bus:{bus}\" in `publish`",
                    only_bus.unwrap_or_default()
                ),
            })),
            Ok((bus, event)) => {
                by_bus.entry(bus).or_default().push((i, event));
                None
            }
        })
        .collect();
    for (bus, list) in by_bus {
        let (places, events): (Vec<usize>, Vec<BusEvent>) = list.into_iter().unzip();
        let outcome = node.buses.put(&node.queues, &node.topics, &bus, events).await;
        for (n, i) in places.into_iter().enumerate() {
            results[i] = Some(match &outcome {
                Ok(put) => Ok(put[n].id.clone()),
                Err(weft_events::QueueError::NoSuchBus(b)) => Err(EntryError {
                    code: "InvalidArgument",
                    message: format!("no bus `{b}` is deployed; declare [bus.{b}] in weft.toml"),
                }),
                Err(e) => Err(EntryError {
                    code: "InternalFailure",
                    message: e.to_string(),
                }),
            });
        }
    }
    let results: Vec<Result<String, EntryError>> = results.into_iter().flatten().collect();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let entries: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(id) => json!({ "EventId": id }),
            Err(e) => json!(e),
        })
        .collect();
    (200, json!({ "FailedEntryCount": failed, "Entries": entries }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::decode_base64("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(super::decode_base64("AAEC/w=="), Some(vec![0, 1, 2, 255]));
        assert_eq!(super::decode_base64("abc"), None);
    }
}
