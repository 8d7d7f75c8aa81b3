//! The event ingress on the app's port: CloudEvents to a topic
//! (`POST /events/TOPIC`) or a bus (`POST /events/bus/BUS`), and
//! EventBridge's PutEvents shape (`POST /events/put`).
//!
//! It takes the three HTTP content modes of CloudEvents 1.0, decoded by
//! `weft_events::cloudevents`; a missing or invalid attribute gets a 400
//! that names it (and the event's position in a batch). Accepted events
//! are on disk when the 202 is sent; an id accepted within the last five
//! minutes is acknowledged as a duplicate and not stored again. When the
//! storage cannot take writes (a full disk), the answer is 503 and nothing
//! of the request is kept.

use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use weft_node::Node;
use weft_node::body::{self, Body};
use weft_node::capabilities::bus::{put_cloudevents, put_events};

/// The path prefix of the ingress.
pub const PREFIX: &str = "/events/";
/// The largest request the ingress reads.
const MAX_REQUEST: usize = 1 << 20;
/// How long the ingress waits for a request's body.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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
        Some("") => {
            return body::error(
                400,
                "name the bus: POST /events/bus/BUS (the `default` bus always exists)",
                None,
            );
        }
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
    let bytes = match tokio::time::timeout(READ_TIMEOUT, Limited::new(incoming, MAX_REQUEST).collect()).await {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(_)) => return body::error(413, &format!("the request is over {MAX_REQUEST} bytes"), None),
        Err(_) => {
            let message = format!("the request body did not arrive within {READ_TIMEOUT:?}; send it at once");
            return body::error(408, &message, None);
        }
    };
    let parent = weft_node::telemetry::incoming(&parts.headers);
    let Some(inlet) = inlet else {
        let (status, answer) = put_events(&node, &bytes, None, parent.as_ref()).await;
        return body::json(status, &answer);
    };
    let events = match weft_events::cloudevents::decode(&parts.headers, bytes) {
        Ok(e) => e,
        Err(why) => return body::error(400, &why, None),
    };
    match inlet {
        Inlet::Topic(topic) => match weft_node::capabilities::topics::publish(&node, topic, events, parent).await {
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
            let (status, answer) = put_cloudevents(&node, bus, events, parent).await;
            body::json(status, &answer)
        }
    }
}
