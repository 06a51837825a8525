//! One stream per browser, not per tab.
//!
//! Every tab of the view asks for the same Web Lock (`navigator.locks.request`) and keeps it for
//! its life once granted. The tab that holds it is the leader: it runs the [`connection`] and
//! posts every item it receives (events, `ready`, `reset`, status changes) on a
//! `BroadcastChannel`; the other tabs render what the leader posts. When the leader goes (tab
//! closed, crashed, navigated away) the browser grants the lock to the next tab in line, which
//! resumes the stream from the last id it saw: the server replays what it missed, and the log's
//! id dedup drops what the other tabs already have.
//!
//! A tab that joins while another leads says hello and gets a [`Relay::Sync`] of the leader's log,
//! so nothing published between its server-rendered page and its first relayed item is lost.
//! Relayed events that reach it before that sync are left out: the sync, sent after them,
//! contains them.
//!
//! The lock and the channel are named after the path base, so two applications on one origin
//! (`/live` and `/live-test` under one IIS site) never share a stream.
//!
//! Browsers without `navigator.locks` (older ones, and any page served over plain HTTP from a
//! host other than localhost: Web Locks exist in secure contexts only) or without
//! `BroadcastChannel` fall back to a stream per tab: the tab leads alone.
//!
//! The leader also decides when to let the stream go because nobody looks (see
//! [`visibility`]); followers tell it when they are shown or hidden.
//!
//! For diagnostics and tests, the tab's role is written to `<html data-sse-role>`: `leader`,
//! `follower`, or `solo`.

use super::{connection, visibility, Item, Sink, Status};
use crate::event::LiveEvent;
use crate::json::{self, from_number, object};
use futures::{
    channel::mpsc::{self, UnboundedSender},
    future::AbortHandle,
    StreamExt,
};
use std::{cell::RefCell, rc::Rc};
use wasm_bindgen::{prelude::Closure, JsCast, JsValue};

/// What the tabs say to each other over the channel, as plain JavaScript objects (see
/// [`Relay::to_js`]).
#[derive(Clone, Debug)]
enum Relay {
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

/// What the tab's coordinator reacts to.
enum Input {
    /// This tab holds the lock now (or leads alone: no lock to be had).
    Lead,
    Relay(Relay),
    Visible(bool),
    Leaving,
    /// The hidden-release timer of this generation ran out.
    HiddenFor(u32),
}

/// The tab's part in the stream, until the future is dropped (the component's cleanup): the
/// lock is released, the channel closed, the stream ended.
pub(super) async fn run(base: String, topics: Vec<String>, sink: Sink) {
    let (tx, mut rx) = mpsc::unbounded();
    let channel = Channel::open(&format!("sse-live{base}"), tx.clone()).map(Rc::new);
    let lock = channel
        .as_ref()
        .and_then(|_| Lock::request(&format!("sse-live-stream{base}"), tx.clone()));
    let solo = lock.is_none();
    let watch_tx = tx.clone();
    let leave_tx = tx.clone();
    let _watch = visibility::Watch::new(
        move |visible| {
            let _ = watch_tx.unbounded_send(Input::Visible(visible));
        },
        move || {
            let _ = leave_tx.unbounded_send(Input::Leaving);
        },
    );
    let mut tab = Tab {
        id: format!(
            "{:x}-{:x}",
            js_sys::Date::now() as u64,
            (js_sys::Math::random() * 9.0e15) as u64
        ),
        base,
        topics,
        sink,
        // Without a lock the channel would only reach tabs that have their own stream.
        channel: if solo { None } else { channel },
        tx: tx.clone(),
        leading: false,
        synced: false,
        viewers: visibility::Viewers::new(visibility::is_visible()),
        release_ms: visibility::hidden_release_ms(),
        stream: None,
        paused: false,
        hidden_gen: 0,
        timer_armed: false,
        _lock: lock,
    };
    if solo {
        set_role("solo");
        tab.handle(Input::Lead);
    } else {
        set_role("follower");
        tab.post(&Relay::Hello {
            tab: tab.id.clone(),
            visible: visibility::is_visible(),
        });
    }
    while let Some(input) = rx.next().await {
        tab.handle(input);
    }
}

struct Tab {
    id: String,
    base: String,
    topics: Vec<String>,
    sink: Sink,
    channel: Option<Rc<Channel>>,
    tx: UnboundedSender<Input>,
    leading: bool,
    /// A follower has taken a sync and may apply relayed events.
    synced: bool,
    viewers: visibility::Viewers,
    release_ms: Option<u32>,
    /// The running connection task (leader only).
    stream: Option<AbortHandle>,
    paused: bool,
    hidden_gen: u32,
    timer_armed: bool,
    _lock: Option<Lock>,
}

impl Tab {
    fn handle(&mut self, input: Input) {
        match input {
            Input::Lead => {
                if self.leading {
                    return;
                }
                self.leading = true;
                self.synced = true;
                if self.channel.is_some() {
                    set_role("leader");
                }
                self.viewers = visibility::Viewers::new(visibility::is_visible());
                self.post_sync();
                self.post(&Relay::Census);
                self.start_stream();
                self.check_hidden();
            }
            Input::Relay(relay) if self.leading => match relay {
                Relay::Hello { tab, visible } => {
                    self.viewers.set(&tab, visible);
                    self.post_sync();
                    self.check_hidden();
                }
                Relay::Visibility { tab, visible } => {
                    self.viewers.set(&tab, visible);
                    self.check_hidden();
                }
                Relay::Bye { tab } => {
                    self.viewers.gone(&tab);
                    self.check_hidden();
                }
                // Only the lock holder sends these; a stale one from the previous leader is moot.
                Relay::Item(_) | Relay::Sync { .. } | Relay::Census => {}
            },
            Input::Relay(relay) => match relay {
                Relay::Item(item @ Item::Status(_)) => self.sink.apply(&item),
                Relay::Item(item) if self.synced => self.sink.apply(&item),
                Relay::Item(_) => {}
                Relay::Sync {
                    rows,
                    last_id,
                    status,
                } => {
                    self.sink.catch_up(rows, last_id);
                    self.sink.apply(&Item::Status(status));
                    self.synced = true;
                }
                Relay::Census => self.post(&Relay::Visibility {
                    tab: self.id.clone(),
                    visible: visibility::is_visible(),
                }),
                Relay::Hello { .. } | Relay::Visibility { .. } | Relay::Bye { .. } => {}
            },
            Input::Visible(visible) if self.leading => {
                self.viewers.set_own(visible);
                self.check_hidden();
            }
            Input::Visible(visible) => self.post(&Relay::Visibility {
                tab: self.id.clone(),
                visible,
            }),
            Input::Leaving => self.post(&Relay::Bye {
                tab: self.id.clone(),
            }),
            Input::HiddenFor(generation) => {
                if generation == self.hidden_gen && self.timer_armed {
                    self.timer_armed = false;
                    if self.leading && self.viewers.all_hidden() {
                        self.pause();
                    }
                }
            }
        }
    }

    fn post(&self, relay: &Relay) {
        if let Some(channel) = &self.channel {
            channel.post(relay);
        }
    }

    fn post_sync(&self) {
        if self.channel.is_none() {
            return;
        }
        let (rows, last_id) = self.sink.snapshot();
        self.post(&Relay::Sync {
            rows,
            last_id,
            status: self.sink.status(),
        });
    }

    /// Opens the stream from this tab's position and relays what it brings.
    fn start_stream(&mut self) {
        if self.stream.is_some() {
            return;
        }
        self.paused = false;
        let sink = self.sink.clone();
        let channel = self.channel.clone();
        let emit = move |item: Item| {
            sink.apply(&item);
            if let Some(channel) = &channel {
                channel.post(&Relay::Item(item));
            }
        };
        // A tab that takes over, or a stream that resumes, was showing something else.
        if self.sink.status() != Status::Connecting {
            emit(Item::Status(Status::Reconnecting { in_ms: None }));
        }
        let position = self.sink.clone();
        let task = connection::run(
            self.base.clone(),
            self.topics.clone(),
            move || position.last_id(),
            emit,
        );
        let (task, handle) = futures::future::abortable(task);
        leptos::task::spawn_local(async move {
            let _ = task.await;
        });
        self.stream = Some(handle);
    }

    /// Lets the stream go because nobody looks; [`Self::check_hidden`] takes it up again.
    fn pause(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        stream.abort();
        self.paused = true;
        let item = Item::Status(Status::Paused);
        self.sink.apply(&item);
        self.post(&Relay::Item(item));
    }

    /// Arms the release timer when every tab is hidden; disarms it, and resumes a paused
    /// stream, when one is visible.
    fn check_hidden(&mut self) {
        if !self.leading {
            return;
        }
        if self.viewers.all_hidden() {
            let Some(ms) = self.release_ms else { return };
            if self.timer_armed || self.stream.is_none() {
                return;
            }
            self.timer_armed = true;
            self.hidden_gen = self.hidden_gen.wrapping_add(1);
            let (generation, tx) = (self.hidden_gen, self.tx.clone());
            leptos::task::spawn_local(async move {
                gloo_timers::future::TimeoutFuture::new(ms).await;
                let _ = tx.unbounded_send(Input::HiddenFor(generation));
            });
        } else {
            self.timer_armed = false;
            self.hidden_gen = self.hidden_gen.wrapping_add(1);
            if self.paused {
                self.start_stream();
            }
        }
    }
}

impl Drop for Tab {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            stream.abort();
        }
        if !self.leading {
            self.post(&Relay::Bye {
                tab: self.id.clone(),
            });
        }
    }
}

fn set_role(role: &str) {
    if let Some(html) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.document_element())
    {
        let _ = html.set_attribute("data-sse-role", role);
    }
}

/// The relay's shape on the channel: `{"relay": kind, ...fields}`, items as
/// `{"item": kind, ...}`, statuses as `{"status": kind, "in_ms"?}`, events as the stream
/// carries them. Anything else (another version of the page) reads as `None`.
impl Relay {
    fn to_js(&self) -> JsValue {
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

    fn from_js(value: &JsValue) -> Option<Relay> {
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

/// The `BroadcastChannel` of this application's tabs.
struct Channel {
    channel: web_sys::BroadcastChannel,
    _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
}

impl Channel {
    /// `None` where the browser has no `BroadcastChannel`.
    fn open(name: &str, tx: UnboundedSender<Input>) -> Option<Self> {
        let channel = web_sys::BroadcastChannel::new(name).ok()?;
        let on_message =
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                match Relay::from_js(&e.data()) {
                    Some(relay) => {
                        let _ = tx.unbounded_send(Input::Relay(relay));
                    }
                    // Another version of the page, during a deployment: not ours to read.
                    None => leptos::logging::warn!("ignoring a message from another tab"),
                }
            });
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        Some(Channel {
            channel,
            _on_message: on_message,
        })
    }

    fn post(&self, relay: &Relay) {
        let _ = self.channel.post_message(&relay.to_js());
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.channel.set_onmessage(None);
        self.channel.close();
    }
}

/// A request for the Web Lock, held from its grant until this is dropped. Through
/// `js_sys::Reflect` because web-sys exposes the Web Locks API only behind
/// `--cfg=web_sys_unstable_apis`.
struct Lock {
    release: Rc<RefCell<Option<js_sys::Function>>>,
}

impl Lock {
    /// Queues the request; `Input::Lead` arrives when it is granted. `None` where the browser
    /// has no `navigator.locks`.
    fn request(name: &str, tx: UnboundedSender<Input>) -> Option<Self> {
        let get = |target: &JsValue, key: &str| {
            js_sys::Reflect::get(target, &JsValue::from_str(key))
                .ok()
                .filter(|v| !v.is_undefined() && !v.is_null())
        };
        let navigator = get(web_sys::window()?.as_ref(), "navigator")?;
        let locks = get(&navigator, "locks")?;
        let request: js_sys::Function = get(&locks, "request")?.dyn_into().ok()?;

        let release = Rc::new(RefCell::new(None));
        let slot = release.clone();
        let granted_tx = tx.clone();
        // Owned by JavaScript and freed when called, so a grant that comes after this tab's
        // component is gone finds no dangling closure: it returns at once, releasing the lock.
        let on_grant = Closure::once_into_js(move |_lock: JsValue| -> JsValue {
            if granted_tx.unbounded_send(Input::Lead).is_err() {
                return JsValue::UNDEFINED;
            }
            // Held until this promise resolves: until `Lock` is dropped, or the tab goes.
            js_sys::Promise::new(&mut |resolve, _reject| {
                *slot.borrow_mut() = Some(resolve);
            })
            .into()
        });
        let pending = request
            .call2(&locks, &JsValue::from_str(name), &on_grant)
            .ok()?;
        // Should the request ever fail, this tab leads alone rather than wait for nothing.
        let on_fail = Closure::once_into_js(move |e: JsValue| {
            // The error itself goes to the console as an object (no Debug formatting in the wasm).
            web_sys::console::warn_2(
                &"the Web Lock request failed; this tab streams alone:".into(),
                &e,
            );
            let _ = tx.unbounded_send(Input::Lead);
        });
        if let Some(catch) =
            get(&pending, "catch").and_then(|c| c.dyn_into::<js_sys::Function>().ok())
        {
            let _ = catch.call1(&pending, &on_fail);
        }
        Some(Lock { release })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(resolve) = self.release.borrow_mut().take() {
            let _ = resolve.call0(&JsValue::UNDEFINED);
        }
    }
}
