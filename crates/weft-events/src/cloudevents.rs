//! CloudEvents 1.0 over HTTP for deliveries from queues.
//!
//! One message is sent in binary mode: the body is the message, and the
//! attributes are `ce-*` headers. Several are sent in the batched content
//! mode: `application/cloudevents-batch+json`, a JSON array of events in
//! the structured format. Every event carries two extension attributes:
//! `weftqueue` (the queue's name) and `weftreceivecount` (1 on the first
//! delivery).
//!
//! A function that handles a batch can report which events failed instead
//! of failing the whole batch, answering 2xx with the same shape as
//! Lambda's partial batch responses:
//! `{"batchItemFailures": [{"itemIdentifier": "<event id>"}]}`.

use serde_json::{Value, json};
use weft_store::durable::Message;

/// The `type` of an event when the sender gave none.
pub const DEFAULT_TYPE: &str = "weft.queue.message";
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// `2026-11-23T10:15:30.123456Z` for microseconds since the Unix epoch.
pub fn rfc3339(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Now, in the form of [`rfc3339`].
pub fn now() -> String {
    rfc3339(weft_store::now_us())
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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
    (headers, m.body.clone())
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
    let json_data = if ct.contains("json") {
        serde_json::from_slice::<Value>(&m.body).ok()
    } else {
        None
    };
    match json_data {
        Some(data) => event["data"] = data,
        None => match std::str::from_utf8(&m.body) {
            Ok(text) if ct.starts_with("text/") => event["data"] = Value::from(text),
            _ => event["data_base64"] = Value::from(base64(&m.body)),
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

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
        assert_eq!(base64(b"hello"), "aGVsbG8=");
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
}
