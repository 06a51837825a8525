//! Any request body: the publish parser and the hub's checks either refuse it or publish an
//! event whose frame parses back to exactly that topic and text. Never a panic.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use events_core::{
    hub::{Hub, HubSettings},
    publish::PublishRequest,
};
use std::sync::OnceLock;

fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(|| {
        Hub::starting_at(
            HubSettings {
                topics: vec!["chat".into(), "alert".into(), "a.b-c_d".into()],
                history: 16,
                max_text: 4096,
                subscriber_buffer: 16,
            },
            0,
        )
    })
}

fuzz_target!(|body: &[u8]| {
    let Ok(request) = serde_json::from_slice::<PublishRequest>(body) else {
        return;
    };
    let Ok(frame) = hub().publish(&request.topic, &request.text) else {
        return;
    };
    let events = common::parse(frame.bytes.clone());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, request.topic);
    assert_eq!(events[0].id, frame.event.id.to_string());
    let data: serde_json::Value = serde_json::from_str(&events[0].data).expect("json");
    assert_eq!(data["text"].as_str(), Some(request.text.as_str()));
    assert_eq!(data["topic"].as_str(), Some(request.topic.as_str()));
});
