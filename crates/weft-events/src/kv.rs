//! A key-value store's changes as DynamoDB Streams records, so handlers
//! written for DynamoDB Streams read them as they are.
//!
//! A store's change (a [`Change`], which the storage writes with the
//! change itself) becomes one record:
//!
//! - `eventName`: `INSERT`, `MODIFY` or `REMOVE`; an expired time to live
//!   is a `REMOVE` with DynamoDB's TTL `userIdentity`.
//! - `dynamodb.Keys`: `{"key": {"S": KEY}}`: a store has one key
//!   attribute, named `key`.
//! - `dynamodb.NewImage` / `OldImage`: a value that is a JSON object is
//!   the item: its fields as attribute values, with `key` added. Any other
//!   value is `value`, a string (`S`) when it is UTF-8, else binary (`B`).
//! - `dynamodb.SequenceNumber`: the change's revision, 21 digits, so the
//!   text sorts as the number does; it is also the record's
//!   `itemIdentifier` in a partial batch response.
//! - `StreamViewType` is always `NEW_AND_OLD_IMAGES`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use weft_store::durable::{Change, Message};

use crate::CloudEvent;

/// The `source` of a change event on a bus.
pub const SOURCE: &str = "weft.kv";
/// The `type` (on a bus, `detail-type`) of a change event.
pub const EVENT_TYPE: &str = "KV Stream Record";

/// One attribute value of DynamoDB's JSON.
fn attribute(v: &Value) -> Value {
    match v {
        Value::Null => json!({"NULL": true}),
        Value::Bool(b) => json!({"BOOL": b}),
        Value::Number(n) => json!({"N": n.to_string()}),
        Value::String(s) => json!({"S": s}),
        Value::Array(items) => json!({"L": items.iter().map(attribute).collect::<Vec<_>>()}),
        Value::Object(fields) => {
            json!({"M": fields.iter().map(|(k, v)| (k.clone(), attribute(v))).collect::<Map<_, _>>()})
        }
    }
}

/// A stored value as a DynamoDB item of the store's key.
pub fn image(key: &str, value: &[u8]) -> Value {
    let mut item = match serde_json::from_slice::<Value>(value) {
        Ok(Value::Object(fields)) => fields.iter().map(|(k, v)| (k.clone(), attribute(v))).collect(),
        _ => {
            let mut item = Map::new();
            let value = match std::str::from_utf8(value) {
                Ok(text) => json!({"S": text}),
                Err(_) => json!({"B": STANDARD.encode(value)}),
            };
            item.insert("value".into(), value);
            item
        }
    };
    item.insert("key".into(), json!({"S": key}));
    Value::Object(item)
}

/// What a record calls a change.
pub fn event_name(change: &Change) -> &'static str {
    match (&change.old, &change.new) {
        (_, None) => "REMOVE",
        (None, Some(_)) => "INSERT",
        (Some(_), Some(_)) => "MODIFY",
    }
}

/// The DynamoDB Streams record of one change of `store`, in the app `app`.
pub fn record(app: &str, store: &str, change: &Change) -> Value {
    let mut dynamodb = Map::new();
    dynamodb.insert(
        "ApproximateCreationDateTime".into(),
        json!(change.at_us.div_euclid(1_000_000)),
    );
    dynamodb.insert("Keys".into(), json!({"key": {"S": change.key}}));
    if let Some(new) = &change.new {
        dynamodb.insert("NewImage".into(), image(&change.key, new));
    }
    if let Some(old) = &change.old {
        dynamodb.insert("OldImage".into(), image(&change.key, old));
    }
    dynamodb.insert("SequenceNumber".into(), change.sequence_number().into());
    let size = change.key.len() + change.old.as_ref().map_or(0, Vec::len) + change.new.as_ref().map_or(0, Vec::len);
    dynamodb.insert("SizeBytes".into(), json!(size));
    dynamodb.insert("StreamViewType".into(), "NEW_AND_OLD_IMAGES".into());
    let mut record = Map::new();
    record.insert("eventID".into(), format!("{store}-{}", change.revision).into());
    record.insert("eventName".into(), event_name(change).into());
    record.insert("eventVersion".into(), "1.1".into());
    record.insert("eventSource".into(), "weft:kv".into());
    record.insert("awsRegion".into(), "local".into());
    record.insert("dynamodb".into(), Value::Object(dynamodb));
    record.insert(
        "eventSourceARN".into(),
        format!("arn:weft:kv:local:{app}:table/{store}/stream/changes").into(),
    );
    if change.expired {
        record.insert(
            "userIdentity".into(),
            json!({"type": "Service", "principalId": "dynamodb.amazonaws.com"}),
        );
    }
    Value::Object(record)
}

/// The change a queued message holds, or why it holds none.
pub fn change_of(m: &Message) -> Result<Change, String> {
    Change::from_message(m).ok_or_else(|| format!("message {} is not a key-value change", m.id))
}

/// A function's request body for a batch of changes: `{"Records": [...]}`.
pub fn records(app: &str, store: &str, messages: &[Message]) -> Result<Vec<u8>, String> {
    let mut records = Vec::with_capacity(messages.len());
    for m in messages {
        records.push(record(app, store, &change_of(m)?));
    }
    Ok(json!({ "Records": records }).to_string().into_bytes())
}

/// One change as the event a queue, topic or bus target is sent: its data
/// is the record.
pub fn event(app: &str, store: &str, m: &Message) -> Result<CloudEvent, String> {
    let change = change_of(m)?;
    let record = record(app, store, &change);
    let mut extensions = std::collections::BTreeMap::new();
    extensions.insert("subject".to_string(), store.to_string());
    Ok(CloudEvent {
        id: format!("{store}-{}", change.revision),
        source: SOURCE.to_string(),
        event_type: EVENT_TYPE.to_string(),
        time: None,
        content_type: Some("application/json".into()),
        data: record.to_string().into_bytes(),
        extensions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(old: Option<&str>, new: Option<&str>) -> Change {
        Change {
            bucket: "kv:carts".into(),
            key: "cart-1".into(),
            old: old.map(|s| s.as_bytes().to_vec()),
            new: new.map(|s| s.as_bytes().to_vec()),
            revision: 42,
            at_us: 1_700_000_000_123_456,
            expired: false,
        }
    }

    #[test]
    fn a_json_object_is_the_item_and_other_values_are_one_attribute() {
        let r = record(
            "shop",
            "carts",
            &change(
                Some("plain text"),
                Some(r#"{"total": 12.5, "items": ["a"], "paid": false, "note": null}"#),
            ),
        );
        assert_eq!(r["eventName"], "MODIFY");
        assert_eq!(r["dynamodb"]["Keys"], json!({"key": {"S": "cart-1"}}));
        assert_eq!(
            r["dynamodb"]["NewImage"],
            json!({
                "key": {"S": "cart-1"},
                "total": {"N": "12.5"},
                "items": {"L": [{"S": "a"}]},
                "paid": {"BOOL": false},
                "note": {"NULL": true}
            })
        );
        assert_eq!(
            r["dynamodb"]["OldImage"],
            json!({"key": {"S": "cart-1"}, "value": {"S": "plain text"}})
        );
        assert_eq!(r["dynamodb"]["SequenceNumber"], "000000000000000000042");
        assert_eq!(r["dynamodb"]["ApproximateCreationDateTime"], 1_700_000_000);
        assert_eq!(r["dynamodb"]["StreamViewType"], "NEW_AND_OLD_IMAGES");
        assert_eq!(r["eventSourceARN"], "arn:weft:kv:local:shop:table/carts/stream/changes");
        assert!(r.get("userIdentity").is_none());
    }

    #[test]
    fn inserts_removals_expiries_and_binary_values() {
        let insert = record("shop", "carts", &change(None, Some("1")));
        assert_eq!(insert["eventName"], "INSERT");
        assert!(insert["dynamodb"].get("OldImage").is_none());
        let mut expired = change(Some("1"), None);
        expired.expired = true;
        let removal = record("shop", "carts", &expired);
        assert_eq!(removal["eventName"], "REMOVE");
        assert!(removal["dynamodb"].get("NewImage").is_none());
        assert_eq!(removal["userIdentity"]["principalId"], "dynamodb.amazonaws.com");
        let binary = image("k", &[0xff, 0x00]);
        assert_eq!(binary["value"], json!({"B": "/wA="}));
    }
}
