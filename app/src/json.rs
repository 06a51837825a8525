//! The client's JSON, read and written by the browser's own `JSON` and plain JavaScript
//! objects instead of serde: the stream's events, the page's data, and what the tabs post each
//! other over their `BroadcastChannel` (structured clone, no text at all). serde_json and the
//! serde impls it monomorphises were the largest part of the WebAssembly client after the
//! framework itself; the browser already has a JSON parser.
//!
//! Numbers travel as JavaScript numbers: ids are microseconds since 1970 (about 1.8e15), exact
//! in an `f64` (integers up to 2^53, about 9e15, the year 2255).
//!
//! The server writes these with serde (`events-core`); the end-to-end tests read both.

use crate::event::{LiveEvent, PageData, Presence, Ready};
use js_sys::{Array, Object, Reflect, JSON};
use wasm_bindgen::{JsCast, JsValue};

pub fn parse(text: &str) -> Option<JsValue> {
    JSON::parse(text).ok().filter(|v| v.is_object())
}

pub fn get(object: &JsValue, key: &str) -> JsValue {
    Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

pub fn string(object: &JsValue, key: &str) -> Option<String> {
    get(object, key).as_string()
}

pub fn flag(object: &JsValue, key: &str) -> Option<bool> {
    get(object, key).as_bool()
}

/// A non-negative whole number.
pub fn number(object: &JsValue, key: &str) -> Option<u64> {
    get(object, key)
        .as_f64()
        .filter(|v| *v >= 0.0 && v.fract() == 0.0 && *v <= 9_007_199_254_740_992.0)
        .map(|v| v as u64)
}

pub fn list(object: &JsValue, key: &str) -> Vec<JsValue> {
    get(object, key)
        .dyn_into::<Array>()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// `{key: value, ...}`.
pub fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let object = Object::new();
    for (key, value) in fields {
        let _ = Reflect::set(&object, &JsValue::from_str(key), value);
    }
    object.into()
}

pub fn array(items: impl IntoIterator<Item = JsValue>) -> JsValue {
    items.into_iter().collect::<Array>().into()
}

pub fn from_number(n: u64) -> JsValue {
    JsValue::from_f64(n as f64)
}

pub fn live_event(value: &JsValue) -> Option<LiveEvent> {
    Some(LiveEvent {
        id: number(value, "id")?,
        topic: string(value, "topic")?,
        text: string(value, "text")?,
        sent_ms: number(value, "sent_ms")?,
    })
}

pub fn live_event_value(event: &LiveEvent) -> JsValue {
    object(&[
        ("id", from_number(event.id)),
        ("topic", JsValue::from_str(&event.topic)),
        ("text", JsValue::from_str(&event.text)),
        ("sent_ms", from_number(event.sent_ms)),
    ])
}

pub fn ready(value: &JsValue) -> Option<Ready> {
    Some(Ready {
        head: number(value, "head")?,
        heartbeat_ms: number(value, "heartbeat_ms")?,
        // Absent from a server older than the field: shown as unknown.
        instance: string(value, "instance").unwrap_or_default(),
    })
}

pub fn presence(value: &JsValue) -> Option<Presence> {
    Some(Presence {
        watching: number(value, "watching")?,
        names: strings(value, "names"),
    })
}

fn strings(value: &JsValue, key: &str) -> Vec<String> {
    list(value, key)
        .iter()
        .filter_map(JsValue::as_string)
        .collect()
}

/// The page's data, as the server wrote it into `<script id="page-data">`.
pub fn page_data(text: &str) -> Option<PageData> {
    let value = parse(text)?;
    Some(PageData {
        topics: strings(&value, "topics"),
        publish_topics: strings(&value, "publish_topics"),
        viewer: string(&value, "viewer"),
        scope: string(&value, "scope").unwrap_or_default(),
        events: list(&value, "events")
            .iter()
            .filter_map(live_event)
            .collect(),
        max_rows: number(&value, "max_rows")? as usize,
        base: string(&value, "base")?,
        form_error: string(&value, "form_error"),
        presence: presence(&get(&value, "presence")).unwrap_or_default(),
    })
}
