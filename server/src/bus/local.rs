//! The in-process bus: the hub numbers and broadcasts every event itself. What runs with no
//! configuration; one process holds the whole history.

use super::PublishError;
use crate::hub::Hub;
use events_core::event::LiveEvent;

pub fn publish(hub: &Hub, topic: &str, text: &str) -> Result<LiveEvent, PublishError> {
    Ok(hub.publish(topic, text)?.event.clone())
}
