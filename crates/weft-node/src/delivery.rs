//! The one delivery path: "send this event to that target", for every
//! capability that sends events on (async destinations, schedules, and
//! the ones to come).
//!
//! The target's kind picks the capability that delivers it
//! ([`crate::capability::Capability::delivers`]); an event is a
//! CloudEvent, and each capability maps it onto what it stores: a queue
//! message, a topic's copies, a bus event, an asynchronous invocation.

use std::sync::Arc;

use weft_manifest::Target;

use crate::capability::DeliveryError;
use crate::node::Node;

impl Node {
    /// Delivers `event` to `target`; durable when this returns.
    pub async fn deliver(
        self: &Arc<Self>,
        target: &Target,
        event: weft_events::CloudEvent,
    ) -> Result<(), DeliveryError> {
        let kind = target.kind();
        let Some(capability) = self.capabilities.iter().find(|c| c.delivers() == Some(kind)) else {
            return Err(DeliveryError::NoTarget(format!(
                "nothing delivers events to a {} target ({target})",
                kind.as_str()
            )));
        };
        capability.deliver(self, target.name(), event).await
    }
}
