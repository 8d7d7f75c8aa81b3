//! CloudEvents 1.0 over HTTP, in both directions: the one codec every
//! part of weft uses.
//!
//! **In** ([`decode`]): a request in any of the three HTTP content modes,
//! binary (attributes in `ce-*` headers, the body is the data), structured
//! (`application/cloudevents+json`) and batched
//! (`application/cloudevents-batch+json`). `specversion` (1.0), `id`,
//! `source` and `type` are required; a missing or invalid attribute is
//! refused with a message that names it (and the event's place in a
//! batch). The ingress and functions' publishes both decode here.
//!
//! **Out**: deliveries from queues. One message is sent in binary mode:
//! the body is the message, and the attributes are `ce-*` headers. Several
//! are sent in the batched content mode, a JSON array of events in the
//! structured format. Every delivered event carries two extension
//! attributes: `weftqueue` (the queue's name) and `weftreceivecount` (1 on
//! the first delivery).
//!
//! A function that handles a batch can report which events failed instead
//! of failing the whole batch, answering 2xx with the same shape as
//! Lambda's partial batch responses:
//! `{"batchItemFailures": [{"itemIdentifier": "<event id>"}]}`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use weft_store::durable::Message;

/// The `type` of an event when the sender gave none.
pub const DEFAULT_TYPE: &str = "weft.queue.message";
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// A CloudEvent, as the ingress or a function publishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub time: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
    /// Other attributes (extensions), by name.
    pub extensions: BTreeMap<String, String>,
}

impl CloudEvent {
    /// The event as filter patterns see it: the structured form, with
    /// `data` as JSON when it is JSON, else as text.
    pub fn as_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("specversion".into(), "1.0".into());
        map.insert("id".into(), self.id.clone().into());
        map.insert("source".into(), self.source.clone().into());
        map.insert("type".into(), self.event_type.clone().into());
        if let Some(t) = &self.time {
            map.insert("time".into(), t.clone().into());
        }
        if let Some(ct) = &self.content_type {
            map.insert("datacontenttype".into(), ct.clone().into());
        }
        for (k, v) in &self.extensions {
            map.insert(k.clone(), v.clone().into());
        }
        let data =
            serde_json::from_slice(&self.data).unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&self.data)));
        map.insert("data".into(), data);
        Value::Object(map)
    }
}

/// `2026-11-23T10:15:30.123456Z` for microseconds since the Unix epoch.
pub fn rfc3339(us: i64) -> String {
    let at = jiff::Timestamp::from_microsecond(us).unwrap_or(if us < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    });
    at.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Now, in the form of [`rfc3339`].
pub fn now() -> String {
    rfc3339(weft_store::now_us())
}

/// Whether a request carries CloudEvents: a CloudEvents content type, or
/// `ce-*` headers (binary mode).
pub fn is_cloudevents(headers: &http::HeaderMap) -> bool {
    media_type(headers).starts_with("application/cloudevents") || headers.keys().any(|k| k.as_str().starts_with("ce-"))
}

fn media_type(headers: &http::HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The events of a request in any of the three HTTP content modes.
pub fn decode(headers: &http::HeaderMap, body: bytes::Bytes) -> Result<Vec<CloudEvent>, String> {
    let media = media_type(headers);
    if media == STRUCTURED_CONTENT_TYPE {
        serde_json::from_slice(&body)
            .map_err(|e| format!("the body is not JSON: {e}"))
            .and_then(|v| from_structured(v, ""))
            .map(|e| vec![e])
    } else if media == BATCH_CONTENT_TYPE {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) if !items.is_empty() => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| from_structured(v, &format!("event #{}: ", i + 1)))
                .collect(),
            Ok(_) => Err("a batch is a non-empty JSON array of events".into()),
            Err(e) => Err(format!("the body is not JSON: {e}")),
        }
    } else {
        from_binary(headers, body).map(|e| vec![e])
    }
}

/// One binary-mode event: attributes from `ce-*` headers, the body as data.
pub fn from_binary(headers: &http::HeaderMap, body: bytes::Bytes) -> Result<CloudEvent, String> {
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
    checked(attributes, body.to_vec(), content_type, "")
}

/// One structured-mode event (a JSON object). `at` prefixes messages.
pub fn from_structured(value: Value, at: &str) -> Result<CloudEvent, String> {
    let Value::Object(mut attributes) = value else {
        return Err(format!("{at}an event in structured mode must be a JSON object"));
    };
    let data = match (attributes.remove("data"), attributes.remove("data_base64")) {
        (Some(_), Some(_)) => return Err(format!("{at}an event has either `data` or `data_base64`, not both")),
        (Some(Value::String(s)), None) => s.into_bytes(),
        (Some(v), None) => v.to_string().into_bytes(),
        (None, Some(Value::String(b64))) => {
            let clean: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            BASE64.decode(clean.as_bytes()).map_err(|e| {
                format!("{at}attribute `data_base64` is not valid base64 ({e}); encode the data with the standard alphabet and `=` padding")
            })?
        }
        (None, Some(_)) => return Err(format!("{at}attribute `data_base64` must be a string")),
        (None, None) => Vec::new(),
    };
    checked(attributes, data, Some("application/json".into()), at)
}

/// Checks the attributes and builds the event. `at` prefixes messages.
fn checked(
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

/// The event's own source (when it came through a topic), else the queue.
fn source(queue: &str, m: &Message) -> String {
    m.attributes
        .get("source")
        .cloned()
        .unwrap_or_else(|| format!("/weft/queues/{queue}"))
}

fn time(m: &Message) -> String {
    m.attributes
        .get("time")
        .cloned()
        .unwrap_or_else(|| rfc3339(m.appended_us))
}

fn content_type(m: &Message) -> String {
    match m.attributes.get("content-type") {
        Some(ct) => ct.clone(),
        None if serde_json::from_slice::<Value>(&m.body).is_ok() => "application/json".into(),
        None => "application/octet-stream".into(),
    }
}

/// Headers and body of one message in binary mode.
pub fn binary(queue: &str, m: &Message) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let headers = vec![
        ("ce-specversion", "1.0".to_string()),
        ("ce-id", m.id.clone()),
        ("ce-source", source(queue, m)),
        (
            "ce-type",
            m.attributes.get("type").cloned().unwrap_or_else(|| DEFAULT_TYPE.into()),
        ),
        ("ce-time", time(m)),
        ("ce-weftqueue", queue.to_string()),
        ("ce-weftreceivecount", m.receive_count.to_string()),
        ("content-type", content_type(m)),
    ];
    let mut headers = headers;
    for (name, value) in crate::trace::attributes(m) {
        headers.push((
            if name == "traceparent" {
                "ce-traceparent"
            } else {
                "ce-tracestate"
            },
            value.clone(),
        ));
    }
    (headers, m.body.clone())
}

/// One message as an event, as [`binary`] sends it.
pub fn event(queue: &str, m: &Message) -> CloudEvent {
    let mut extensions = BTreeMap::new();
    for (name, value) in crate::trace::attributes(m) {
        extensions.insert(name.to_string(), value.clone());
    }
    CloudEvent {
        id: m.id.clone(),
        source: source(queue, m),
        event_type: m.attributes.get("type").cloned().unwrap_or_else(|| DEFAULT_TYPE.into()),
        time: Some(time(m)),
        content_type: Some(content_type(m)),
        data: m.body.clone(),
        extensions,
    }
}

/// One message as a structured-format event.
pub fn structured(queue: &str, m: &Message) -> Value {
    let ct = content_type(m);
    let mut event = json!({
        "specversion": "1.0",
        "id": m.id,
        "source": source(queue, m),
        "type": m.attributes.get("type").map_or(DEFAULT_TYPE, String::as_str),
        "time": time(m),
        "datacontenttype": ct,
        "weftqueue": queue,
        "weftreceivecount": m.receive_count,
    });
    for (name, value) in crate::trace::attributes(m) {
        event[name] = Value::from(value.as_str());
    }
    let json_data = if ct.contains("json") {
        serde_json::from_slice::<Value>(&m.body).ok()
    } else {
        None
    };
    match json_data {
        Some(data) => event["data"] = data,
        None => match std::str::from_utf8(&m.body) {
            Ok(text) if ct.starts_with("text/") => event["data"] = Value::from(text),
            _ => event["data_base64"] = Value::from(BASE64.encode(&m.body)),
        },
    }
    event
}

/// Several messages in the batched content mode.
pub fn batch(queue: &str, messages: &[Message]) -> Vec<u8> {
    Value::Array(messages.iter().map(|m| structured(queue, m)).collect())
        .to_string()
        .into_bytes()
}

/// The event ids a function reported as failed in a 2xx answer, if it
/// answered with a partial batch response; `Err` if it tried and the shape
/// is wrong.
pub fn failed_items(body: &[u8]) -> Result<Option<Vec<String>>, String> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Ok(None);
    };
    let Some(items) = value.get("batchItemFailures") else {
        return Ok(None);
    };
    let shape = "expected {\"batchItemFailures\": [{\"itemIdentifier\": \"<event id>\"}, ...]}";
    let items = items
        .as_array()
        .ok_or_else(|| format!("`batchItemFailures` is not an array: {shape}"))?;
    items
        .iter()
        .map(|i| {
            i.get("itemIdentifier")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("an entry has no string `itemIdentifier`: {shape}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &[u8], attributes: &[(&str, &str)]) -> Message {
        Message {
            seq: 7,
            id: "m-1".into(),
            group: None,
            body: body.to_vec(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            appended_us: 1_795_000_000_123_456,
            receive_count: 2,
            last_error: None,
        }
    }

    #[test]
    fn binary_mode_headers() {
        let (headers, body) = binary("jobs", &message(br#"{"a":1}"#, &[("type", "order.placed")]));
        let h: BTreeMap<_, _> = headers.into_iter().collect();
        assert_eq!(h["ce-id"], "m-1");
        assert_eq!(h["ce-source"], "/weft/queues/jobs");
        assert_eq!(h["ce-type"], "order.placed");
        assert_eq!(h["ce-time"], "2026-11-18T11:06:40.123456Z");
        assert_eq!(h["ce-weftreceivecount"], "2");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(body, br#"{"a":1}"#);
    }

    #[test]
    fn batched_mode_keeps_json_and_encodes_binary() {
        let json_batch: Value = serde_json::from_slice(&batch("q", &[message(br#"{"a":1}"#, &[])])).unwrap();
        assert_eq!(json_batch[0]["data"]["a"], 1);
        assert_eq!(json_batch[0]["type"], DEFAULT_TYPE);
        let raw = structured(
            "q",
            &message(&[0, 1, 2, 255], &[("content-type", "application/octet-stream")]),
        );
        assert_eq!(raw["data_base64"], "AAEC/w==");
    }

    #[test]
    fn partial_batch_failures() {
        assert_eq!(failed_items(b"ok"), Ok(None));
        assert_eq!(failed_items(br#"{"other":1}"#), Ok(None));
        assert_eq!(
            failed_items(br#"{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"b"}]}"#),
            Ok(Some(vec!["a".into(), "b".into()]))
        );
        assert!(
            failed_items(br#"{"batchItemFailures":[{"id":"a"}]}"#)
                .unwrap_err()
                .contains("itemIdentifier")
        );
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(1_795_000_000_123_456), "2026-11-18T11:06:40.123456Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999Z");
        assert!(rfc3339(i64::MAX).starts_with("9999-"));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    fn structured_body(event: Value) -> Result<Vec<CloudEvent>, String> {
        let h = headers(&[("content-type", STRUCTURED_CONTENT_TYPE)]);
        decode(&h, bytes::Bytes::from(event.to_string()))
    }

    #[test]
    fn decodes_base64_data_and_refuses_what_is_not_base64() {
        let base = json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t"});
        let mut good = base.clone();
        good["data_base64"] = json!("AAEC/w==");
        assert_eq!(structured_body(good).unwrap()[0].data, vec![0, 1, 2, 255]);
        for bad in ["====", "abc", "a===", "@@@@", "AAEC/w=", "\u{0}"] {
            let mut event = base.clone();
            event["data_base64"] = json!(bad);
            let why = structured_body(event).unwrap_err();
            assert!(why.contains("`data_base64` is not valid base64"), "{bad}: {why}");
        }
    }

    #[test]
    fn decodes_each_mode_and_names_what_is_missing() {
        let binary = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "e1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("ce-color", "red"),
            ("content-type", "text/plain"),
        ]);
        let events = decode(&binary, bytes::Bytes::from_static(b"hi")).unwrap();
        assert_eq!(events[0].id, "e1");
        assert_eq!(events[0].extensions["color"], "red");
        assert_eq!(events[0].data, b"hi");
        assert!(is_cloudevents(&binary));
        assert!(!is_cloudevents(&headers(&[("content-type", "application/json")])));

        let missing = headers(&[("ce-specversion", "1.0"), ("ce-id", "e1"), ("ce-type", "t")]);
        let why = decode(&missing, bytes::Bytes::new()).unwrap_err();
        assert_eq!(why, "required attribute `source` is missing");

        let batch = headers(&[("content-type", BATCH_CONTENT_TYPE)]);
        let body =
            json!([{"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": {"a": 1}}, {"id": "2"}]);
        let why = decode(&batch, bytes::Bytes::from(body.to_string())).unwrap_err();
        assert_eq!(why, "event #2: required attribute `specversion` is missing");
        let why = decode(&batch, bytes::Bytes::from_static(b"[]")).unwrap_err();
        assert!(why.contains("non-empty JSON array"), "{why}");
    }
}
