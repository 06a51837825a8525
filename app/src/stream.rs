//! The browser's connection to the event stream: connect, follow the browser's own reconnects,
//! reconnect by itself when the browser gives up, resume from the last id, and keep a bounded
//! log. Views get a [`Feed`] of signals and never touch the EventSource.

use crate::event::LiveEvent;
use leptos::prelude::*;
use std::collections::VecDeque;

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
            Status::Closed => "closed".into(),
        }
    }

    /// The CSS class of the badge.
    pub fn class(self) -> &'static str {
        match self {
            Status::Connecting => "connecting",
            Status::Live => "live",
            Status::Reconnecting { .. } => "reconnecting",
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
/// the browser it also opens the stream, and closes it when the calling component goes away.
pub fn connect(base: String, topics: Vec<String>, capacity: usize, seed: Vec<LiveEvent>) -> Feed {
    let (status, set_status) = signal(Status::Connecting);
    let (log, set_log) = signal(EventLog::new(capacity, seed));
    #[cfg(feature = "hydrate")]
    {
        let (task, abort) =
            futures::future::abortable(browser::run(base, topics, set_status, set_log));
        leptos::task::spawn_local(async move {
            let _ = task.await;
        });
        // Dropping the task drops the EventSource, which closes it.
        on_cleanup(move || abort.abort());
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (base, topics, set_status, set_log);
    }
    Feed { status, log }
}

/// Exponential backoff with ±25 % jitter for attempt `n` (1-based): 0.5 s doubling to 30 s.
/// The jitter spreads a crowd of clients that lost the same server over time.
pub fn backoff_ms(attempt: u32, unit_random: f64) -> u32 {
    let base = 500f64 * 2f64.powi(attempt.saturating_sub(1).min(16) as i32);
    let capped = base.min(30_000.0);
    let jitter = 1.0 + (unit_random.clamp(0.0, 1.0) * 0.5 - 0.25);
    (capped * jitter).round() as u32
}

/// The stream URL for a position; `lastEventId` in the query because a new EventSource cannot
/// set the `Last-Event-ID` header itself.
pub fn stream_url(base: &str, last_id: Option<u64>) -> String {
    match last_id {
        Some(id) => format!("{base}/api/events?lastEventId={id}"),
        None => format!("{base}/api/events"),
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    use super::*;
    use crate::event::{Ready, READY_EVENT, RESET_EVENT};
    use futures::StreamExt;
    use gloo_net::eventsource::{futures::EventSource, State};

    pub(super) async fn run(
        base: String,
        topics: Vec<String>,
        set_status: WriteSignal<Status>,
        set_log: WriteSignal<EventLog>,
    ) {
        let mut attempt: u32 = 0;
        loop {
            let last_id = set_log.try_update(|l| l.last_id).flatten();
            let url = stream_url(&base, last_id);
            let mut source = match EventSource::new(&url) {
                Ok(s) => s,
                Err(e) => {
                    leptos::logging::error!("cannot open the event stream {url}: {e}");
                    set_status.set(Status::Closed);
                    return;
                }
            };
            let mut names: Vec<String> = topics.clone();
            names.extend(["open", "error", READY_EVENT, RESET_EVENT].map(String::from));
            let mut subscriptions = Vec::with_capacity(names.len());
            for name in &names {
                match source.subscribe(name.clone()) {
                    Ok(s) => subscriptions.push(s),
                    Err(e) => leptos::logging::error!("cannot listen for '{name}': {e}"),
                }
            }
            let mut incoming = futures::stream::select_all(subscriptions);
            // Events before `ready` on each connection are replay: their delay is not a delivery delay.
            let mut replaying = true;
            while let Some(item) = incoming.next().await {
                let Ok((name, message)) = item else {
                    break; // the EventSource is CLOSED: the browser will not retry by itself
                };
                match name.as_str() {
                    "open" => {}
                    "error" => {
                        if source.state() == State::Closed {
                            break;
                        }
                        replaying = true;
                        set_status.set(Status::Reconnecting { in_ms: None });
                    }
                    READY_EVENT => {
                        replaying = false;
                        attempt = 0;
                        if let Some(ready) = parse::<Ready>(&message) {
                            set_log.update(|l| l.advance_to(ready.head));
                        }
                        set_status.set(Status::Live);
                    }
                    RESET_EVENT => set_log.update(|l| l.reset()),
                    _ => {
                        if let Some(event) = parse::<LiveEvent>(&message) {
                            let delay =
                                (!replaying).then(|| js_sys::Date::now() - event.sent_ms as f64);
                            set_log.update(|l| {
                                l.push(event, delay);
                            });
                        }
                    }
                }
            }
            drop(incoming);
            source.close();
            attempt = attempt.saturating_add(1);
            let wait = backoff_ms(attempt, js_sys::Math::random());
            set_status.set(Status::Reconnecting { in_ms: Some(wait) });
            gloo_timers::future::TimeoutFuture::new(wait).await;
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(message: &web_sys::MessageEvent) -> Option<T> {
        let data = message.data().as_string()?;
        match serde_json::from_str(&data) {
            Ok(v) => Some(v),
            Err(e) => {
                leptos::logging::warn!("ignoring an event that does not parse: {e}");
                None
            }
        }
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
    fn stream_urls_carry_the_position() {
        assert_eq!(stream_url("", None), "/api/events");
        assert_eq!(
            stream_url("/live", Some(9)),
            "/live/api/events?lastEventId=9"
        );
    }

    #[test]
    fn status_labels() {
        assert_eq!(
            Status::Reconnecting { in_ms: Some(1500) }.label(),
            "reconnecting in 2 s"
        );
        assert_eq!(Status::Live.label(), "live");
    }
}
