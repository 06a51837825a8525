//! The encoding of what the tabs say to each other over their `BroadcastChannel`.
//!
//! A protocol, not a detail: during a deployment the tabs of one browser may run two versions
//! of the page (an old tab leading, a new one following, or the reverse), and each must read
//! what the other writes. Change it only compatibly: add fields and kinds, never rename or
//! repurpose one; anything a version does not know reads as `None` and is ignored.

use super::{Item, Status};
use crate::event::LiveEvent;
use crate::json::{self, from_number, object};
use wasm_bindgen::JsValue;

/// What the tabs say to each other over the channel, as plain JavaScript objects (see
/// [`Relay::to_js`]).
#[derive(Clone, Debug)]
pub(super) enum Relay {
    /// Leader to all: one item, as it arrived from the stream.
    Item(Item),
    /// Leader to all: its log (oldest first), its position and its status, for tabs that joined
    /// since. Sent when a tab says hello and when a tab takes the lead.
    Sync {
        rows: Vec<LiveEvent>,
        last_id: Option<u64>,
        status: Status,
    },
    /// A new tab to the leader: asks for a sync.
    Hello { tab: String, visible: bool },
    /// A tab to the leader: it was shown or hidden (also the answer to a census).
    Visibility { tab: String, visible: bool },
    /// A tab to the leader: it is closing.
    Bye { tab: String },
    /// A new leader to all: report your visibility.
    Census,
}

/// The relay's shape on the channel: `{"relay": kind, ...fields}`, items as
/// `{"item": kind, ...}`, statuses as `{"status": kind, "in_ms"?}`, events as the stream
/// carries them. Anything else (another version of the page) reads as `None`.
impl Relay {
    pub(super) fn to_js(&self) -> JsValue {
        let text = |s: &str| JsValue::from_str(s);
        match self {
            Relay::Item(item) => object(&[("relay", text("item")), ("item", item_to_js(item))]),
            Relay::Sync {
                rows,
                last_id,
                status,
            } => object(&[
                ("relay", text("sync")),
                ("rows", json::array(rows.iter().map(json::live_event_value))),
                ("last_id", last_id.map_or(JsValue::NULL, from_number)),
                ("status", status_to_js(*status)),
            ]),
            Relay::Hello { tab, visible } => object(&[
                ("relay", text("hello")),
                ("tab", text(tab)),
                ("visible", JsValue::from_bool(*visible)),
            ]),
            Relay::Visibility { tab, visible } => object(&[
                ("relay", text("visibility")),
                ("tab", text(tab)),
                ("visible", JsValue::from_bool(*visible)),
            ]),
            Relay::Bye { tab } => object(&[("relay", text("bye")), ("tab", text(tab))]),
            Relay::Census => object(&[("relay", text("census"))]),
        }
    }

    pub(super) fn from_js(value: &JsValue) -> Option<Relay> {
        let tab = || json::string(value, "tab");
        let visible = || json::flag(value, "visible");
        Some(match json::string(value, "relay")?.as_str() {
            "item" => Relay::Item(item_from_js(&json::get(value, "item"))?),
            "sync" => Relay::Sync {
                rows: json::list(value, "rows")
                    .iter()
                    .map(json::live_event)
                    .collect::<Option<_>>()?,
                last_id: json::number(value, "last_id"),
                status: status_from_js(&json::get(value, "status"))?,
            },
            "hello" => Relay::Hello {
                tab: tab()?,
                visible: visible()?,
            },
            "visibility" => Relay::Visibility {
                tab: tab()?,
                visible: visible()?,
            },
            "bye" => Relay::Bye { tab: tab()? },
            "census" => Relay::Census,
            _ => return None,
        })
    }
}

fn item_to_js(item: &Item) -> JsValue {
    let kind = |s: &str| ("item", JsValue::from_str(s));
    match item {
        Item::Event { event, live } => object(&[
            kind("event"),
            ("event", json::live_event_value(event)),
            ("live", JsValue::from_bool(*live)),
        ]),
        Item::Ready(ready) => object(&[
            kind("ready"),
            ("head", from_number(ready.head)),
            ("heartbeat_ms", from_number(ready.heartbeat_ms)),
            ("instance", JsValue::from_str(&ready.instance)),
        ]),
        Item::Reset => object(&[kind("reset")]),
        Item::Presence(p) => object(&[
            kind("presence"),
            ("watching", from_number(p.watching)),
            (
                "names",
                json::array(p.names.iter().map(|n| JsValue::from_str(n))),
            ),
        ]),
        Item::Status(status) => object(&[kind("status"), ("status", status_to_js(*status))]),
    }
}

fn item_from_js(value: &JsValue) -> Option<Item> {
    Some(match json::string(value, "item")?.as_str() {
        "event" => Item::Event {
            event: json::live_event(&json::get(value, "event"))?,
            live: json::flag(value, "live")?,
        },
        "ready" => Item::Ready(json::ready(value)?),
        "reset" => Item::Reset,
        "presence" => Item::Presence(json::presence(value)?),
        "status" => Item::Status(status_from_js(&json::get(value, "status"))?),
        _ => return None,
    })
}

fn status_to_js(status: Status) -> JsValue {
    let kind = |s: &str| ("status", JsValue::from_str(s));
    match status {
        Status::Connecting => object(&[kind("connecting")]),
        Status::Live => object(&[kind("live")]),
        Status::Reconnecting { in_ms } => object(&[
            kind("reconnecting"),
            ("in_ms", in_ms.map_or(JsValue::NULL, JsValue::from)),
        ]),
        Status::Paused => object(&[kind("paused")]),
        Status::Closed => object(&[kind("closed")]),
    }
}

fn status_from_js(value: &JsValue) -> Option<Status> {
    Some(match json::string(value, "status")?.as_str() {
        "connecting" => Status::Connecting,
        "live" => Status::Live,
        "reconnecting" => Status::Reconnecting {
            in_ms: json::number(value, "in_ms").map(|ms| ms.min(u64::from(u32::MAX)) as u32),
        },
        "paused" => Status::Paused,
        "closed" => Status::Closed,
        _ => return None,
    })
}
