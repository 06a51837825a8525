//! The browser's connection to the event stream, with a small interface: the views get a
//! [`Feed`] (a signal of the status, a signal of the bounded log) and never touch a socket.
//!
//! Behind it, one file per concern:
//! - [`connection`]: one EventSource at a time; follows the browser's own reconnects, reconnects
//!   by itself with backoff whenever the browser gives up (any non-200 answer, a 204, a wrong
//!   content type), resumes from the last id, and has a watchdog for streams that stop breathing.
//! - [`leader`]: one stream per browser, not per tab. The tabs elect a leader with the Web Locks
//!   API; it holds the stream and relays every item over a `BroadcastChannel`; the others render
//!   the relay and one of them takes over when the leader goes. What they post is encoded in
//!   `relay.rs`, a protocol other versions of the page must read; `browser.rs` wraps the
//!   channel and the lock.
//! - [`visibility`]: the leader lets the stream go while every tab of the view is hidden.

use crate::event::{LiveEvent, Presence, Ready};
use leptos::prelude::*;
use std::collections::VecDeque;

#[cfg(feature = "hydrate")]
mod browser;
#[cfg(feature = "hydrate")]
mod connection;
#[cfg(feature = "hydrate")]
mod leader;
#[cfg(feature = "hydrate")]
mod relay;
pub mod visibility;

/// What the status badge shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Status {
    /// First connection, not yet confirmed by the server's `ready` event.
    Connecting,
    /// The server has confirmed the stream; events arrive as they are published.
    Live,
    /// The connection dropped; the browser or this module is connecting again.
    /// `in_ms` is the wait before the next attempt when this module scheduled it.
    Reconnecting { in_ms: Option<u32> },
    /// Every tab of the view has been hidden for a while: the stream was let go to spare the
    /// server, and is resumed from the last id as soon as a tab is visible again.
    Paused,
    /// The stream cannot be opened at all (an invalid URL); nothing will retry.
    Closed,
}

impl Status {
    pub fn label(self) -> String {
        match self {
            Status::Connecting => "connecting".into(),
            Status::Live => "live".into(),
            Status::Reconnecting { in_ms: Some(ms) } => {
                format!("reconnecting in {} s", ms.div_ceil(1000))
            }
            Status::Reconnecting { in_ms: None } => "reconnecting".into(),
            Status::Paused => "paused (hidden)".into(),
            Status::Closed => "closed".into(),
        }
    }

    /// The badge's tooltip: what the state means for the reader.
    pub fn hint(self) -> &'static str {
        match self {
            Status::Connecting => "Opening the event stream",
            Status::Live => "Events arrive as they are published",
            Status::Reconnecting { .. } => {
                "The connection dropped; reconnecting without losing events"
            }
            Status::Paused => {
                "Every tab of this page is hidden: the stream is released and resumes, \
                 with everything missed, when a tab is shown again"
            }
            Status::Closed => "The event stream cannot be opened",
        }
    }

    /// The CSS class of the badge. A paused stream looks idle, like one that is connecting.
    pub fn class(self) -> &'static str {
        match self {
            Status::Connecting => "connecting",
            Status::Live => "live",
            Status::Reconnecting { .. } => "reconnecting",
            Status::Paused => "connecting paused",
            Status::Closed => "closed",
        }
    }
}

/// One row of the live list.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    pub event: LiveEvent,
    /// Browser clock minus the server's send time, for events that arrived live; `None` for
    /// rows that were in the page or replayed on resume, whose delay says nothing about the path.
    pub delay_ms: Option<f64>,
}

/// The bounded log of received events, newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventLog {
    pub rows: VecDeque<Received>,
    pub capacity: usize,
    /// Events received since the page loaded (the seeded rows are not counted).
    pub received: u64,
    /// How many times the server said the client's position was lost (history reset).
    pub resets: u64,
    /// Newest id seen, the position to resume from.
    pub last_id: Option<u64>,
    /// The server instance the stream is connected to, from its `ready` event.
    pub instance: Option<String>,
    /// Who is watching, from the page and then the `presence` events.
    pub presence: Presence,
}

impl EventLog {
    pub fn new(capacity: usize, seed: Vec<LiveEvent>) -> Self {
        let mut log = EventLog {
            capacity: capacity.max(1),
            ..Default::default()
        };
        for event in seed {
            log.insert(event, None);
        }
        log
    }

    /// Adds an event unless it is one already shown (an id not newer than the last one):
    /// the seam between the server-rendered rows and the stream, and any overlap after a
    /// reconnect, never shows a row twice.
    pub fn push(&mut self, event: LiveEvent, delay_ms: Option<f64>) -> bool {
        if self.last_id.is_some_and(|last| event.id <= last) {
            return false;
        }
        self.received += 1;
        self.insert(event, delay_ms);
        true
    }

    fn insert(&mut self, event: LiveEvent, delay_ms: Option<f64>) {
        self.last_id = Some(self.last_id.map_or(event.id, |l| l.max(event.id)));
        self.rows.push_front(Received { event, delay_ms });
        self.rows.truncate(self.capacity);
    }

    /// The server could not continue from our position: drop the rows and the position, and
    /// rebuild from the history the server sends next. The reset is counted and shown.
    pub fn reset(&mut self) {
        self.resets += 1;
        self.last_id = None;
        self.rows.clear();
    }

    /// Takes what another tab holds (oldest first) and its position: the rows this log has not
    /// seen are added, so a tab that joins late has no gap between its page and the relay.
    pub fn catch_up(&mut self, rows: Vec<LiveEvent>, last_id: Option<u64>) {
        for event in rows {
            self.push(event, None);
        }
        if let Some(id) = last_id {
            self.advance_to(id);
        }
    }

    /// Records a position without an event (the `ready` event's id).
    pub fn advance_to(&mut self, id: u64) {
        self.last_id = Some(self.last_id.map_or(id, |l| l.max(id)));
    }
}

/// What the views read.
#[derive(Clone, Copy)]
pub struct Feed {
    pub status: ReadSignal<Status>,
    pub log: ReadSignal<EventLog>,
}

/// Starts the feed. On the server it only holds the seed (so the page renders the rows); in
/// the browser it also starts the tab's part in the stream (see [`leader`]): the one tab that
/// holds the browser's stream, or a follower of it, or a stream of its own where the browser
/// cannot share one. Everything it opened is closed when the calling component goes away.
pub fn connect(
    base: String,
    scope: String,
    topics: Vec<String>,
    capacity: usize,
    seed: Vec<LiveEvent>,
    presence: Presence,
) -> Feed {
    let (status, set_status) = signal(Status::Connecting);
    let (log, set_log) = signal(EventLog {
        presence,
        ..EventLog::new(capacity, seed)
    });
    #[cfg(feature = "hydrate")]
    {
        let sink = Sink {
            status,
            set_status,
            log,
            set_log,
            pending: Default::default(),
        };
        let (task, abort) = futures::future::abortable(leader::run(base, scope, topics, sink));
        leptos::task::spawn_local(async move {
            let _ = task.await;
        });
        // Aborting drops the task and with it the EventSource, the lock and the channel.
        on_cleanup(move || abort.abort());
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (base, scope, topics, set_status, set_log);
    }
    Feed { status, log }
}

/// One thing the stream delivered, as the connection reports it and as the leader relays it
/// to the other tabs: the views' signals are fed from these and from nothing else.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `live` is false for events replayed on resume: their delay says nothing about the path.
    Event {
        event: LiveEvent,
        live: bool,
    },
    Ready(Ready),
    Reset,
    Status(Status),
    Presence(Presence),
}

/// The views are updated at most once per this many milliseconds: at a few events a second
/// every event is shown at once, at hundreds a second they are shown in batches, one render
/// per batch instead of one per event (which the page could not keep up with).
#[cfg(feature = "hydrate")]
const RENDER_EVERY_MS: f64 = 16.0;

/// Where items end up in this tab: the signals the views read.
#[cfg(feature = "hydrate")]
#[derive(Clone)]
pub(crate) struct Sink {
    status: ReadSignal<Status>,
    set_status: WriteSignal<Status>,
    log: ReadSignal<EventLog>,
    set_log: WriteSignal<EventLog>,
    pending: std::rc::Rc<std::cell::RefCell<Pending>>,
}

/// Events that arrived since the views were last updated, with their delays.
#[cfg(feature = "hydrate")]
#[derive(Default)]
struct Pending {
    events: Vec<(LiveEvent, Option<f64>)>,
    flushed_ms: f64,
    scheduled: bool,
}

#[cfg(feature = "hydrate")]
impl Sink {
    fn apply(&self, item: &Item) {
        if let Item::Event { event, live } = item {
            let now = js_sys::Date::now();
            let delay = live.then(|| now - event.sent_ms as f64);
            let mut pending = self.pending.borrow_mut();
            pending.events.push((event.clone(), delay));
            if pending.scheduled {
                return;
            }
            let since = now - pending.flushed_ms;
            if since >= RENDER_EVERY_MS {
                drop(pending);
                self.flush();
            } else {
                pending.scheduled = true;
                let sink = self.clone();
                set_timeout(
                    move || sink.flush(),
                    std::time::Duration::from_millis((RENDER_EVERY_MS - since).ceil() as u64),
                );
            }
            return;
        }
        // Everything else applies after the events that came before it.
        self.flush();
        match item {
            Item::Event { .. } => {}
            Item::Ready(ready) => self.set_log.update(|l| {
                l.advance_to(ready.head);
                l.instance = Some(ready.instance.clone()).filter(|i| !i.is_empty());
            }),
            Item::Reset => self.set_log.update(|l| l.reset()),
            Item::Presence(p) => self.set_log.update(|l| l.presence = p.clone()),
            Item::Status(s) => {
                if self.status.try_get_untracked() != Some(*s) {
                    self.set_status.set(*s);
                }
            }
        }
    }

    /// Puts the pending events into the log, in one update.
    fn flush(&self) {
        let events = {
            let mut pending = self.pending.borrow_mut();
            pending.scheduled = false;
            pending.flushed_ms = js_sys::Date::now();
            std::mem::take(&mut pending.events)
        };
        if !events.is_empty() {
            self.set_log.try_update(|l| {
                for (event, delay) in events {
                    l.push(event, delay);
                }
            });
        }
    }

    /// Takes another tab's log (see [`EventLog::catch_up`]).
    fn catch_up(&self, rows: Vec<LiveEvent>, last_id: Option<u64>) {
        self.flush();
        self.set_log.update(|l| l.catch_up(rows, last_id));
    }

    /// This tab's rows (oldest first) and position, for a tab that catches up.
    fn snapshot(&self) -> (Vec<LiveEvent>, Option<u64>) {
        self.flush();
        self.log
            .try_with_untracked(|l| {
                let rows = l.rows.iter().rev().map(|r| r.event.clone()).collect();
                (rows, l.last_id)
            })
            .unwrap_or_default()
    }

    /// The position to resume from.
    fn last_id(&self) -> Option<u64> {
        self.flush();
        self.log.try_with_untracked(|l| l.last_id).flatten()
    }

    fn status(&self) -> Status {
        self.status
            .try_get_untracked()
            .unwrap_or(Status::Connecting)
    }
}

/// Exponential backoff with ±25 % jitter for attempt `n` (1-based): 0.5 s doubling to 30 s.
/// The jitter spreads a crowd of clients that lost the same server over time.
pub fn backoff_ms(attempt: u32, unit_random: f64) -> u32 {
    let base = 500f64 * 2f64.powi(attempt.saturating_sub(1).min(16) as i32);
    let capped = base.min(30_000.0);
    let jitter = 1.0 + (unit_random.clamp(0.0, 1.0) * 0.5 - 0.25);
    (capped * jitter).round() as u32
}

/// How long a stream may stay silent before the watchdog reconnects: 2.5 heartbeats, so one
/// late ping is tolerated and a held stream is noticed within three intervals.
pub fn watchdog_ms(heartbeat_ms: u64) -> u32 {
    (heartbeat_ms.saturating_mul(5) / 2).min(u64::from(u32::MAX)) as u32
}

/// The stream URL for a position; `lastEventId` in the query because a new EventSource cannot
/// set the `Last-Event-ID` header itself. The page shows who is watching, so it asks for
/// `presence` events.
pub fn stream_url(base: &str, last_id: Option<u64>) -> String {
    match last_id {
        Some(id) => format!("{base}/api/events?presence=1&lastEventId={id}"),
        None => format!("{base}/api/events?presence=1"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: u64) -> LiveEvent {
        LiveEvent {
            id,
            topic: "t".into(),
            text: format!("e{id}"),
            sent_ms: 0,
        }
    }

    #[test]
    fn the_seam_shows_no_row_twice() {
        let mut log = EventLog::new(10, vec![ev(1), ev(2), ev(3)]);
        assert_eq!(log.received, 0);
        assert!(!log.push(ev(3), Some(1.0)));
        assert!(log.push(ev(4), Some(1.0)));
        let ids: Vec<u64> = log.rows.iter().map(|r| r.event.id).collect();
        assert_eq!(ids, vec![4, 3, 2, 1]);
        assert_eq!(log.received, 1);
    }

    #[test]
    fn the_log_stays_bounded() {
        let mut log = EventLog::new(3, vec![]);
        for id in 1..=10 {
            log.push(ev(id), None);
        }
        let ids: Vec<u64> = log.rows.iter().map(|r| r.event.id).collect();
        assert_eq!(ids, vec![10, 9, 8]);
        assert_eq!(log.received, 10);
    }

    #[test]
    fn a_reset_takes_the_history_that_follows() {
        let mut log = EventLog::new(5, vec![ev(100)]);
        log.reset();
        assert!(log.push(ev(7), None));
        assert_eq!(log.resets, 1);
        assert_eq!(log.last_id, Some(7));
    }

    #[test]
    fn ready_moves_the_position_without_a_row() {
        let mut log = EventLog::new(5, vec![]);
        log.advance_to(41);
        assert!(!log.push(ev(41), None));
        assert!(log.push(ev(42), None));
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        assert_eq!(backoff_ms(1, 0.5), 500);
        assert_eq!(backoff_ms(2, 0.5), 1000);
        assert_eq!(backoff_ms(7, 0.5), 30_000);
        assert_eq!(backoff_ms(100, 0.5), 30_000);
        assert_eq!(backoff_ms(1, 0.0), 375);
        assert_eq!(backoff_ms(1, 1.0), 625);
    }

    #[test]
    fn a_late_tab_catches_up_without_gap_or_duplicate() {
        let mut log = EventLog::new(10, vec![ev(1), ev(2)]);
        log.catch_up(vec![ev(1), ev(2), ev(3), ev(4)], Some(6));
        let ids: Vec<u64> = log.rows.iter().map(|r| r.event.id).collect();
        assert_eq!(ids, vec![4, 3, 2, 1]);
        assert_eq!(log.last_id, Some(6));
        assert!(!log.push(ev(6), None));
        assert!(log.push(ev(7), None));
    }

    #[test]
    fn the_watchdog_allows_two_and_a_half_heartbeats() {
        assert_eq!(watchdog_ms(1000), 2500);
        assert_eq!(watchdog_ms(15_000), 37_500);
        assert_eq!(watchdog_ms(u64::MAX), u32::MAX);
    }

    #[test]
    fn stream_urls_carry_the_position() {
        assert_eq!(stream_url("", None), "/api/events?presence=1");
        assert_eq!(
            stream_url("/live", Some(9)),
            "/live/api/events?presence=1&lastEventId=9"
        );
    }

    #[test]
    fn status_labels() {
        assert_eq!(
            Status::Reconnecting { in_ms: Some(1500) }.label(),
            "reconnecting in 2 s"
        );
        assert_eq!(Status::Live.label(), "live");
        assert_eq!(Status::Paused.label(), "paused (hidden)");
    }
}
