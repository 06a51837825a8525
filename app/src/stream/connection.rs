//! One EventSource at a time, for as long as the caller keeps the future: it follows the
//! browser's own reconnects, and reconnects by itself, with backoff, whenever the browser gives
//! up or the stream stops breathing. Every attempt resumes from the position the caller holds.
//!
//! The browser gives up (the EventSource goes CLOSED) on any answer that is not a `200` with
//! `text/event-stream`: the `503` of an application pool recycle, a proxy's `502`, a `204`, an
//! HTML error page. None of those is final for a live view, so this module never gives up.
//!
//! The watchdog: the server sends a `ping` after each quiet heartbeat interval and says how
//! long that is in its `ready` event. A stream that is silent for [`super::watchdog_ms`] of
//! that is held by something in between (a proxy that buffers, a half-open connection after a
//! network change) even though the socket looks fine; it is closed and opened again.
//!
//! A stream opened with a token ends at the token's expiry with an `expired` event. The client
//! then fetches the page once, with its cookies, before it reconnects: a sign-in front that
//! renews the token cookie on requests that pass it (oauth2-proxy, an IIS sign-in module, the
//! site's own sign-in pages) renews it there, and the reconnect resumes from the last id. It
//! does the same after every refused connect (the browser gave up): an `EventSource` cannot
//! see the status, and a token that expired while the laptop slept is refused with a 401 that
//! only a renewal ends.

use super::{backoff_ms, stream_url, watchdog_ms, Item, Status};
use crate::event::{EXPIRED_EVENT, PING_EVENT, PRESENCE_EVENT, READY_EVENT, RESET_EVENT};
use futures::{
    channel::mpsc,
    future::{select, Either},
    StreamExt,
};
use gloo_timers::future::TimeoutFuture;
use wasm_bindgen::{prelude::Closure, JsCast};

/// Runs the stream until the future is dropped (which closes the EventSource). Returns only if
/// the URL cannot be opened at all, after reporting [`Status::Closed`].
///
/// `position` is read before every attempt; `emit` gets every item in the order it arrived.
pub(super) async fn run(
    base: String,
    topics: Vec<String>,
    position: impl Fn() -> Option<u64>,
    emit: impl Fn(Item),
) {
    let mut names = topics;
    names.extend(
        [
            READY_EVENT,
            RESET_EVENT,
            PING_EVENT,
            EXPIRED_EVENT,
            PRESENCE_EVENT,
        ]
        .map(String::from),
    );
    let mut attempt: u32 = 0;
    // Known from the first `ready`; it then also guards the following attempts from their start.
    let mut heartbeat_ms: Option<u64> = None;
    // Set when the page should be fetched before the next attempt (see the module doc).
    let mut renew = false;
    loop {
        if std::mem::take(&mut renew) {
            if let Some(window) = web_sys::window() {
                let page = window.fetch_with_str(&format!("{base}/"));
                let _ = wasm_bindgen_futures::JsFuture::from(page).await;
            }
        }
        let url = stream_url(&base, position());
        let mut source = match Source::open(&url, &names) {
            Ok(s) => s,
            Err(e) => {
                web_sys::console::error_2(
                    &format!("cannot open the event stream {url}:").into(),
                    &e,
                );
                emit(Item::Status(Status::Closed));
                return;
            }
        };
        // Events before `ready` on each connection are replay: their delay is not a delivery delay.
        let mut replaying = true;
        loop {
            let next = match heartbeat_ms.filter(|ms| *ms > 0) {
                None => source.rx.next().await,
                Some(hb) => {
                    let limit = watchdog_ms(hb);
                    match select(source.rx.next(), TimeoutFuture::new(limit)).await {
                        Either::Left((next, _)) => next,
                        Either::Right(_) => {
                            leptos::logging::warn!(
                                "nothing from the event stream for {limit} ms (heartbeat {hb} ms): \
                                 something holds it; reconnecting"
                            );
                            break;
                        }
                    }
                }
            };
            let Some(incoming) = next else { break };
            match incoming {
                Incoming::Open => {}
                // CLOSED: the browser will not retry by itself (see the module documentation).
                Incoming::Error { closed: true } => {
                    renew = true;
                    break;
                }
                Incoming::Error { closed: false } => {
                    replaying = true;
                    emit(Item::Status(Status::Reconnecting { in_ms: None }));
                }
                Incoming::Message { name, data } => match name.as_str() {
                    PING_EVENT => {}
                    READY_EVENT => {
                        replaying = false;
                        attempt = 0;
                        if let Some(ready) = parse(&data, crate::json::ready) {
                            heartbeat_ms = Some(ready.heartbeat_ms);
                            emit(Item::Ready(ready));
                        }
                        emit(Item::Status(Status::Live));
                    }
                    RESET_EVENT => emit(Item::Reset),
                    PRESENCE_EVENT => {
                        if let Some(p) = parse(&data, crate::json::presence) {
                            emit(Item::Presence(p));
                        }
                    }
                    EXPIRED_EVENT => {
                        renew = true;
                        attempt = 0;
                        break;
                    }
                    _ => {
                        if let Some(event) = parse(&data, crate::json::live_event) {
                            emit(Item::Event {
                                event,
                                live: !replaying,
                            });
                        }
                    }
                },
            }
        }
        drop(source);
        attempt = attempt.saturating_add(1);
        let wait = backoff_ms(attempt, js_sys::Math::random());
        emit(Item::Status(Status::Reconnecting { in_ms: Some(wait) }));
        TimeoutFuture::new(wait).await;
    }
}

fn parse<T>(data: &str, read: fn(&wasm_bindgen::JsValue) -> Option<T>) -> Option<T> {
    let parsed = crate::json::parse(data).and_then(|v| read(&v));
    if parsed.is_none() {
        leptos::logging::warn!("ignoring an event that does not parse: {data}");
    }
    parsed
}

enum Incoming {
    Open,
    /// `closed`: the EventSource is CLOSED; otherwise the browser is reconnecting by itself.
    Error {
        closed: bool,
    },
    Message {
        name: String,
        data: String,
    },
}

type Listener = Closure<dyn FnMut(web_sys::Event)>;

/// An EventSource whose events arrive on one channel, in order. Dropping it removes the
/// listeners and closes the connection.
///
/// Written on web-sys rather than with gloo-net's `EventSource` (which this client first used):
/// gloo-net gives one stream per event name, and merging those streams loses the order between
/// names, while the protocol depends on it: a `reset` must be handled before the replay that
/// follows it, and the replay before the `ready` that ends it.
struct Source {
    es: web_sys::EventSource,
    listeners: Vec<(String, Listener)>,
    rx: mpsc::UnboundedReceiver<Incoming>,
}

impl Source {
    fn open(url: &str, names: &[String]) -> Result<Self, wasm_bindgen::JsValue> {
        let es = web_sys::EventSource::new(url)?;
        let (tx, rx) = mpsc::unbounded();
        let mut source = Source {
            es: es.clone(),
            listeners: Vec::with_capacity(names.len() + 2),
            rx,
        };
        for name in names {
            let (tx, owned) = (tx.clone(), name.clone());
            source.listen(name, move |e| {
                let data = e
                    .dyn_ref::<web_sys::MessageEvent>()
                    .and_then(|m| m.data().as_string())
                    .unwrap_or_default();
                let _ = tx.unbounded_send(Incoming::Message {
                    name: owned.clone(),
                    data,
                });
            });
        }
        let open_tx = tx.clone();
        source.listen("open", move |_| {
            let _ = open_tx.unbounded_send(Incoming::Open);
        });
        source.listen("error", move |_| {
            let closed = es.ready_state() == web_sys::EventSource::CLOSED;
            let _ = tx.unbounded_send(Incoming::Error { closed });
        });
        Ok(source)
    }

    fn listen(&mut self, name: &str, f: impl FnMut(web_sys::Event) + 'static) {
        let f = Closure::<dyn FnMut(web_sys::Event)>::new(f);
        match self
            .es
            .add_event_listener_with_callback(name, f.as_ref().unchecked_ref())
        {
            Ok(()) => self.listeners.push((name.to_string(), f)),
            Err(e) => web_sys::console::error_2(&format!("cannot listen for '{name}':").into(), &e),
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.es.close();
        for (name, f) in &self.listeners {
            let _ = self
                .es
                .remove_event_listener_with_callback(name, f.as_ref().unchecked_ref());
        }
    }
}
