//! Any text, in any frame field position, cannot break the event-stream framing: it comes back
//! as exactly one event with the same id and name, and the text intact.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use events_core::wire;

fuzz_target!(|input: (u64, String)| {
    let (id, text) = input;
    // As the hub sends it: JSON in one data line.
    let json = serde_json::to_string(&text).expect("json");
    let events = common::parse(wire::encode(Some(id), Some("chat"), &json));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, id.to_string());
    assert_eq!(events[0].event, "chat");
    let back: String = serde_json::from_str(&events[0].data).expect("json back");
    assert_eq!(back, text);
    // Raw, with its own line breaks: one event, lines normalised to LF as the format does.
    let events = common::parse(wire::encode(Some(id), Some("chat"), &text));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data, text.replace("\r\n", "\n").replace('\r', "\n"));
});
