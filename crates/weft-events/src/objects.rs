//! An object bucket's objects as the storage keeps them ([`Head`]), and
//! their changes as S3 event notifications, so handlers and rules written
//! for S3 read them as they are.
//!
//! An object's head is a key-value entry of the bucket (the key is the
//! object's key); writing it is what makes the object visible, and the
//! write carries its change to the bucket's notification queues. A change
//! becomes:
//!
//! - for a function, queue or topic: S3's record (`eventVersion` 2.1):
//!   `eventName` `ObjectCreated:Put|Copy|CompleteMultipartUpload` or
//!   `ObjectRemoved:Delete`; `s3.bucket.name`; `s3.object.key` URL-encoded
//!   as S3 does (a space as `+`, `/` as it is); `size`, `eTag` (without quotes) and
//!   `sequencer` (the change's revision, 16 hex digits, so later changes
//!   of a key sort after earlier ones). Functions get them batched as
//!   `{"Records": [...]}`; a queue or topic gets one per message, in the
//!   same envelope, as S3 sends to SQS and SNS.
//! - on a bus: EventBridge's event for S3, `source` `aws.s3`,
//!   `detail-type` `Object Created` or `Object Deleted`, and the `detail`
//!   S3 gives it, so rules written for S3 on EventBridge match.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use weft_store::durable::{Change, Message};

use crate::CloudEvent;

/// The `source` of object events on a bus.
pub const SOURCE: &str = "aws.s3";

/// One object: what its data is and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Bytes.
    pub size: u64,
    /// Without quotes: the MD5 of the data in hex, or for a multipart
    /// upload the MD5 of its parts' MD5s, `-` and the number of parts.
    pub etag: String,
    /// When it was written, in microseconds since the epoch.
    pub modified_us: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `x-amz-meta-*` headers, lowercased, without the prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<(String, String)>,
    /// Its data, in order: blob ids and their sizes (one per part of a
    /// multipart upload).
    pub blobs: Vec<(String, u64)>,
    /// How it was made: `Put`, `Copy` or `CompleteMultipartUpload`.
    pub made: String,
    /// The multipart upload it completed, whose parts' records may still
    /// name its blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
}

impl Head {
    pub fn from_json(bytes: &[u8]) -> Result<Head, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("an object's head is not readable: {e}"))
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The number of parts of a multipart object.
    pub fn parts(&self) -> Option<usize> {
        (self.made == "CompleteMultipartUpload").then_some(self.blobs.len())
    }
}

/// The event name of a change: `ObjectCreated:Put`, `ObjectRemoved:Delete`, ...
pub fn event_name(new: Option<&Head>) -> String {
    match new {
        Some(head) => format!("ObjectCreated:{}", head.made),
        None => "ObjectRemoved:Delete".into(),
    }
}

/// The `sequencer` of a change.
pub fn sequencer(revision: u64) -> String {
    format!("{revision:016X}")
}

/// The id of the queued change a record's `sequencer` names (what a
/// function's `batchItemFailures` gives as `itemIdentifier`).
pub fn change_id(sequencer: &str) -> Option<String> {
    let revision = u64::from_str_radix(sequencer, 16).ok()?;
    Some(format!("{revision:021}"))
}

/// A key as S3 writes it in notifications: form-encoded (a space as
/// `+`), its `/`s left as they are.
pub fn encode_key(key: &str) -> String {
    key.split('/')
        .map(|segment| form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>())
        .collect::<Vec<_>>()
        .join("/")
}

fn time(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// A change of `bucket` with its new head, if the object is there.
struct Parsed {
    change: Change,
    new: Option<Head>,
}

fn parse(m: &Message) -> Result<Parsed, String> {
    let change = Change::from_message(m).ok_or_else(|| format!("message {} is not an object change", m.id))?;
    let new = change.new.as_deref().map(Head::from_json).transpose()?;
    Ok(Parsed { change, new })
}

/// The S3 event record of one change of `bucket`, in the app `app`.
fn record(app: &str, bucket: &str, p: &Parsed) -> Value {
    let mut object = json!({
        "key": encode_key(&p.change.key),
        "sequencer": sequencer(p.change.revision),
    });
    if let Some(head) = &p.new {
        object["size"] = json!(head.size);
        object["eTag"] = json!(head.etag);
    }
    json!({
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": time(p.change.at_us),
        "eventName": event_name(p.new.as_ref()),
        "userIdentity": {"principalId": "weft"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": format!("{bucket}-{}", p.change.revision)},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": app,
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "weft"},
                "arn": format!("arn:aws:s3:::{bucket}"),
            },
            "object": object,
        },
    })
}

/// A function's request body for a batch of changes: `{"Records": [...]}`.
pub fn records(app: &str, bucket: &str, messages: &[Message]) -> Result<Vec<u8>, String> {
    let mut records = Vec::with_capacity(messages.len());
    for m in messages {
        records.push(record(app, bucket, &parse(m)?));
    }
    Ok(json!({ "Records": records }).to_string().into_bytes())
}

/// One change as the event a queue or topic is sent (`{"Records": [one]}`),
/// or, `for_bus`, EventBridge's S3 event.
pub fn event(app: &str, bucket: &str, m: &Message, for_bus: bool) -> Result<CloudEvent, String> {
    let p = parse(m)?;
    let id = format!("{bucket}-{}", p.change.revision);
    let mut extensions = std::collections::BTreeMap::new();
    extensions.insert("subject".to_string(), p.change.key.clone());
    let (event_type, data) = if for_bus {
        let (detail_type, detail) = detail(bucket, &p, &id);
        (detail_type, detail)
    } else {
        (
            format!("s3:{}", event_name(p.new.as_ref())),
            json!({ "Records": [record(app, bucket, &p)] }),
        )
    };
    Ok(CloudEvent {
        id,
        source: SOURCE.to_string(),
        event_type,
        time: Some(time(p.change.at_us)),
        content_type: Some("application/json".into()),
        data: data.to_string().into_bytes(),
        extensions,
    })
}

/// EventBridge's `detail-type` and `detail` for a change.
fn detail(bucket: &str, p: &Parsed, request_id: &str) -> (String, Value) {
    let mut object = json!({
        "key": p.change.key,
        "sequencer": sequencer(p.change.revision),
    });
    let mut detail = json!({
        "version": "0",
        "bucket": {"name": bucket},
        "request-id": request_id,
        "requester": "weft",
        "source-ip-address": "127.0.0.1",
    });
    let detail_type = match &p.new {
        Some(head) => {
            object["size"] = json!(head.size);
            object["etag"] = json!(head.etag);
            detail["reason"] = json!(match head.made.as_str() {
                "Copy" => "CopyObject",
                "CompleteMultipartUpload" => "CompleteMultipartUpload",
                _ => "PutObject",
            });
            "Object Created"
        }
        None => {
            detail["reason"] = json!("DeleteObject");
            detail["deletion-type"] = json!("Permanently Deleted");
            "Object Deleted"
        }
    };
    detail["object"] = object;
    (detail_type.to_string(), detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_store::durable::NewMessage;

    fn head(made: &str) -> Head {
        Head {
            size: 11,
            etag: "5eb63bbbe01eeed093cb22bb8f5acdc3".into(),
            modified_us: 1_700_000_000_000_000,
            content_type: Some("text/plain".into()),
            metadata: vec![("owner".into(), "ana".into())],
            blobs: vec![("0001".into(), 11)],
            made: made.into(),
            upload: None,
        }
    }

    fn message(new: Option<&Head>) -> Message {
        let change = Change {
            bucket: "bucket:photos".into(),
            key: "holiday pics/a+b.jpg".into(),
            old: None,
            new: new.map(Head::to_json),
            revision: 255,
            at_us: 1_700_000_000_123_456,
            expired: false,
        };
        let NewMessage {
            id,
            group,
            body,
            attributes,
            ..
        } = change.message();
        Message {
            seq: 1,
            id,
            group,
            body,
            attributes,
            appended_us: 0,
            receive_count: 1,
            last_error: None,
        }
    }

    #[test]
    fn records_have_s3s_shape_with_the_key_form_encoded() {
        let body = records("shop", "photos", &[message(Some(&head("Put"))), message(None)]).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let created = &v["Records"][0];
        assert_eq!(created["eventName"], "ObjectCreated:Put");
        assert_eq!(created["eventVersion"], "2.1");
        assert_eq!(created["eventTime"], "2023-11-14T22:13:20.123Z");
        assert_eq!(created["s3"]["bucket"]["name"], "photos");
        assert_eq!(created["s3"]["object"]["key"], "holiday+pics/a%2Bb.jpg");
        assert_eq!(created["s3"]["object"]["size"], 11);
        assert_eq!(created["s3"]["object"]["eTag"], "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(created["s3"]["object"]["sequencer"], "00000000000000FF");
        assert_eq!(
            change_id("00000000000000FF").as_deref(),
            Some(message(None).id.as_str())
        );
        assert_eq!(change_id("not hex"), None);
        let removed = &v["Records"][1];
        assert_eq!(removed["eventName"], "ObjectRemoved:Delete");
        assert!(removed["s3"]["object"].get("size").is_none());
    }

    #[test]
    fn on_a_bus_changes_are_eventbridges_s3_events() {
        let e = event("shop", "photos", &message(Some(&head("CompleteMultipartUpload"))), true).unwrap();
        assert_eq!((e.source.as_str(), e.event_type.as_str()), ("aws.s3", "Object Created"));
        let d: Value = serde_json::from_slice(&e.data).unwrap();
        assert_eq!(d["version"], "0");
        assert_eq!(d["bucket"]["name"], "photos");
        assert_eq!(d["object"]["key"], "holiday pics/a+b.jpg");
        assert_eq!(d["object"]["etag"], "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(d["reason"], "CompleteMultipartUpload");
        let e = event("shop", "photos", &message(None), true).unwrap();
        assert_eq!(e.event_type, "Object Deleted");
        let d: Value = serde_json::from_slice(&e.data).unwrap();
        assert_eq!(d["deletion-type"], "Permanently Deleted");

        let e = event("shop", "photos", &message(Some(&head("Copy"))), false).unwrap();
        assert_eq!(e.event_type, "s3:ObjectCreated:Copy");
        let d: Value = serde_json::from_slice(&e.data).unwrap();
        assert_eq!(d["Records"][0]["eventName"], "ObjectCreated:Copy");
    }
}
