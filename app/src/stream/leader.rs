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
//! A tab that joins while another leads says hello and gets a `Relay::Sync` of the leader's log,
//! so nothing published between its server-rendered page and its first relayed item is lost.
//! Relayed events that reach it before that sync are left out: the sync, sent after them,
//! contains them.
//!
//! The lock and the channel are named after the path base, so two applications on one origin
//! (`/live` and `/live-test` under one IIS site) never share a stream, and after the viewer
//! (the page's `scope`), so a tab signed in as someone else never receives what this viewer
//! may read.
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
//!
//! What the tabs post is encoded in `relay.rs` (a protocol between versions of the page); the
//! channel and the lock are wrapped in `browser.rs`.

use super::{
    browser::{Channel, Lock},
    connection,
    relay::Relay,
    visibility, Item, Sink, Status,
};
use futures::{
    channel::mpsc::{self, UnboundedSender},
    future::AbortHandle,
    StreamExt,
};
use std::rc::Rc;

/// What the tab's coordinator reacts to.
pub(super) enum Input {
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
pub(super) async fn run(base: String, scope: String, topics: Vec<String>, sink: Sink) {
    let (tx, mut rx) = mpsc::unbounded();
    let channel = Channel::open(&format!("sse-live{base}{scope}"), tx.clone()).map(Rc::new);
    let lock = channel
        .as_ref()
        .and_then(|_| Lock::request(&format!("sse-live-stream{base}{scope}"), tx.clone()));
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
