//! The hub: assigns ids, keeps a bounded history for resuming, and broadcasts each event to
//! every subscriber. Every publisher (the HTTP endpoint, the page's form, the tick source)
//! goes through [`Hub::publish`], so every subscriber sees every event once, in id order.

use crate::{
    event::{LiveEvent, Reset},
    wire,
};
use bytes::Bytes;
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::{SystemTime, UNIX_EPOCH},
};
use tokio::sync::broadcast;

/// An event and its wire encoding, made once at publish time and shared by the history and
/// every subscriber.
#[derive(Debug)]
pub struct Frame {
    pub event: LiveEvent,
    pub bytes: Bytes,
}

impl Frame {
    /// The event with its wire encoding, made here once.
    pub fn new(event: LiveEvent) -> Frame {
        Frame {
            bytes: encode_event(&event),
            event,
        }
    }

    /// A control event for [`Hub::announce`]: `event: name`, no `id:`. Its id here is 0, which
    /// no published event has (ids start far above it), so writers tell the two apart with
    /// one comparison; its topic is its name.
    pub fn announcement(name: &str, data: &str) -> Frame {
        Frame {
            bytes: wire::encode(None, Some(name), data),
            event: LiveEvent {
                id: 0,
                topic: name.to_string(),
                text: String::new(),
                sent_ms: now_ms(),
            },
        }
    }

    /// Made by [`Frame::announcement`]: not an event, not in the history.
    pub fn is_announcement(&self) -> bool {
        self.event.id == 0
    }
}

/// Where a subscriber wants to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resume {
    /// A new client: only what is published from now on.
    Fresh,
    /// A returning client that has seen everything up to and including this id.
    After(u64),
    /// A `Last-Event-ID` that is not one of our ids at all (not a number): kept for the reset
    /// message.
    Unreadable(String),
}

impl Resume {
    /// Reads a `Last-Event-ID` value. Empty means a fresh client (browsers send nothing, or
    /// an empty id after an event that cleared it).
    pub fn parse(value: Option<&str>) -> Resume {
        match value.map(str::trim) {
            None | Some("") => Resume::Fresh,
            Some(v) => match v.parse::<u64>() {
                Ok(id) => Resume::After(id),
                Err(_) => Resume::Unreadable(v.chars().take(64).collect()),
            },
        }
    }
}

/// What a new subscriber gets: what it missed, then the live feed, with no gap and no overlap
/// between the two (both are taken under the same lock).
pub struct Subscription {
    /// Present when the client's position cannot be continued; sent before the replay.
    pub reset: Option<Reset>,
    /// Events to send before live ones, oldest first.
    pub replay: Vec<Arc<Frame>>,
    /// The newest id issued when the subscription was made.
    pub head: u64,
    pub live: broadcast::Receiver<Arc<Frame>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PublishError {
    Topic(String),
    TextEmpty,
    TextTooLong { max: usize },
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Topic(msg) => f.write_str(msg),
            PublishError::TextEmpty => f.write_str("text must not be empty or only spaces"),
            PublishError::TextTooLong { max } => write!(
                f,
                "text is longer than {max} bytes as the stream carries it (JSON-escaped: a \
                 control character or a quote counts for the bytes of its escape)"
            ),
        }
    }
}

impl std::error::Error for PublishError {}

/// Why [`Hub::insert`] refused an event that was numbered elsewhere.
#[derive(Debug, PartialEq, Eq)]
pub enum InsertError {
    /// Its id is not after the newest one held: ids only grow.
    Stale { id: u64, head: u64 },
    /// Its topic could not be an SSE event name.
    Topic(crate::event::TopicError),
}

impl std::fmt::Display for InsertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InsertError::Stale { id, head } => {
                write!(f, "id {id} is not after the newest id {head}")
            }
            InsertError::Topic(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for InsertError {}

pub struct Hub {
    state: Mutex<State>,
    topics: Vec<String>,
    max_text: usize,
}

struct State {
    /// The newest id issued (or the one before the first).
    head: u64,
    /// The head at the last [`Hub::cut`]: events after it may have been missed, so no
    /// position up to it can be continued, not even one equal to the head.
    cut_at: Option<u64>,
    history: VecDeque<Arc<Frame>>,
    capacity: usize,
    /// Events that entered this hub: published here, or (with an external event store)
    /// inserted from it (read by the server's metrics).
    published: u64,
    /// Inside the state so that [`Hub::cut`] can replace it under the same lock.
    live: broadcast::Sender<Arc<Frame>>,
    /// Size of each subscriber's live buffer.
    buffer: usize,
}

#[derive(Clone, Debug)]
pub struct HubSettings {
    pub topics: Vec<String>,
    pub history: usize,
    pub max_text: usize,
    /// How far a subscriber may fall behind before its stream is ended.
    pub subscriber_buffer: usize,
}

impl Hub {
    /// Ids start from the start time in microseconds (Unix ms × 1000), so they keep growing
    /// across restarts as long as a process averages under 1,000 events per millisecond of its
    /// life: a client holding an id from an earlier process then gets a `reset` instead of a
    /// replay of unrelated events that happen to share its numbers.
    pub fn new(settings: HubSettings) -> Hub {
        Hub::starting_at(settings, now_ms().saturating_mul(1000))
    }

    /// A hub whose first event gets id `head + 1`.
    pub fn starting_at(settings: HubSettings, head: u64) -> Hub {
        let buffer = settings.subscriber_buffer.max(1);
        let (live, _) = broadcast::channel(buffer);
        Hub {
            state: Mutex::new(State {
                head,
                cut_at: None,
                history: VecDeque::with_capacity(settings.history.min(4096)),
                capacity: settings.history.max(1),
                published: 0,
                live,
                buffer,
            }),
            topics: settings.topics,
            max_text: settings.max_text,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-written (every
        // mutation is a push/pop after the frame is built), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Checks, assigns the next id, encodes once, records in the history and broadcasts.
    pub fn publish(&self, topic: &str, text: &str) -> Result<Arc<Frame>, PublishError> {
        self.check(topic, text)?;
        let sent_ms = now_ms();
        let mut state = self.state();
        let id = state.head + 1;
        Ok(state.push(LiveEvent {
            id,
            topic: topic.to_string(),
            text: text.to_string(),
            sent_ms,
        }))
    }

    /// What [`Hub::publish`] checks before it numbers an event: a known topic and a text that
    /// is neither blank nor too long. An external event store checks the same before it
    /// stores an event.
    pub fn check(&self, topic: &str, text: &str) -> Result<(), PublishError> {
        crate::event::validate_topic(topic).map_err(|e| PublishError::Topic(e.to_string()))?;
        if !self.topics.iter().any(|t| t == topic) {
            return Err(PublishError::Topic(format!(
                "unknown topic '{topic}'; this server accepts: {}",
                self.topics.join(", ")
            )));
        }
        if text.trim().is_empty() {
            return Err(PublishError::TextEmpty);
        }
        // Measured as it goes on the wire: `\u0000` is six bytes in every stream, every
        // replay and the page, so a limit on the raw text would let one event cost six times
        // what the setting says.
        if text.len() > self.max_text || wire::json_escaped_len(text) > self.max_text {
            return Err(PublishError::TextTooLong { max: self.max_text });
        }
        Ok(())
    }

    /// Adds an event numbered elsewhere (an external event store shared by several processes),
    /// as [`Hub::publish`] adds its own: recorded, broadcast, and its id becomes the head. The
    /// id must be after the head, so ids keep growing and a repeated event is refused. Only
    /// the topic's alphabet is checked (it becomes the SSE event name); the publisher checked
    /// the rest.
    pub fn insert(&self, event: LiveEvent) -> Result<Arc<Frame>, InsertError> {
        crate::event::validate_topic(&event.topic).map_err(InsertError::Topic)?;
        let mut state = self.state();
        if event.id <= state.head {
            return Err(InsertError::Stale {
                id: event.id,
                head: state.head,
            });
        }
        Ok(state.push(event))
    }

    /// Ends every live subscription and forgets the history, keeping the head (ids still only
    /// grow). For when events may have been missed: the subscribers' streams end, they
    /// reconnect, and their positions are no longer covered, so they get a `reset` instead of
    /// a silent gap. That holds for a client at the head too: it reconnects before the store's
    /// newer events are inserted, and without `cut_at` it would look up to date and then get
    /// them live, after the gap, with no reset.
    pub fn cut(&self) {
        let mut state = self.state();
        state.history.clear();
        state.cut_at = Some(state.head);
        // Dropping the old sender closes every receiver once it has read what it was sent.
        let (live, _) = broadcast::channel(state.buffer);
        state.live = live;
    }

    /// Sends an announcement to every live subscriber, in line with the events, without
    /// numbering or keeping it: a replay never holds one. Each stream decides whether it
    /// wants it.
    pub fn announce(&self, frame: Frame) {
        let _ = self.state().live.send(Arc::new(frame));
    }

    /// The newest id held (or the start value).
    pub fn head(&self) -> u64 {
        self.state().head
    }

    pub fn subscribe(&self, resume: &Resume) -> Subscription {
        let state = self.state();
        let live = state.live.subscribe();
        let head = state.head;
        let oldest = state.history.front().map(|f| f.event.id);
        let whole = || state.history.iter().cloned().collect::<Vec<_>>();
        let reset = |requested: String| {
            Some(Reset {
                requested,
                oldest,
                head,
            })
        };
        let (reset, replay) = match resume {
            Resume::Fresh => (None, Vec::new()),
            Resume::After(id) if state.cut_at.is_some_and(|cut| *id <= cut) => {
                (reset(id.to_string()), whole())
            }
            Resume::After(id) if *id == head => (None, Vec::new()),
            // Covered when the next event after `id` is still held (or nothing was lost).
            Resume::After(id) if *id < head && oldest.is_some_and(|o| *id + 1 >= o) => {
                let skip = state.history.partition_point(|f| f.event.id <= *id);
                (None, state.history.iter().skip(skip).cloned().collect())
            }
            // Older than the history, newer than anything issued, or from another process.
            Resume::After(id) => (reset(id.to_string()), whole()),
            Resume::Unreadable(v) => (reset(v.clone()), whole()),
        };
        Subscription {
            reset,
            replay,
            head,
            live,
        }
    }

    /// The newest `limit` events, oldest first (for the page's first render).
    pub fn recent(&self, limit: usize) -> Vec<LiveEvent> {
        self.recent_within(limit, usize::MAX, |_| true, |_| 0)
    }

    /// The newest events, at most `limit` of them and at most `max_bytes` of `cost` together,
    /// oldest first: the page's first render is bounded in bytes whatever the history holds (a
    /// thousand events of the longest text would be a page of tens of megabytes). `cost` says
    /// what an event costs where it goes; `keep`, which events the page may show (a private
    /// topic's are left out of a page whose viewer may not read it).
    pub fn recent_within(
        &self,
        limit: usize,
        max_bytes: usize,
        keep: impl Fn(&LiveEvent) -> bool,
        cost: impl Fn(&LiveEvent) -> usize,
    ) -> Vec<LiveEvent> {
        let state = self.state();
        let mut bytes = 0usize;
        let mut newest: Vec<LiveEvent> = state
            .history
            .iter()
            .rev()
            .filter(|f| keep(&f.event))
            .take(limit)
            .take_while(|f| {
                bytes = bytes.saturating_add(cost(&f.event));
                bytes <= max_bytes
            })
            .map(|f| f.event.clone())
            .collect();
        newest.reverse();
        newest
    }

    /// Events held for resuming right now.
    pub fn history_len(&self) -> usize {
        self.state().history.len()
    }

    /// Events published since this hub was made.
    pub fn published(&self) -> u64 {
        self.state().published
    }

    pub fn subscribers(&self) -> usize {
        self.state().live.receiver_count()
    }
}

impl State {
    /// Encodes once, records in the history and broadcasts; `event.id` is after the head.
    fn push(&mut self, event: LiveEvent) -> Arc<Frame> {
        let frame = Arc::new(Frame::new(event));
        self.head = frame.event.id;
        if self.history.len() == self.capacity {
            self.history.pop_front();
        }
        self.history.push_back(frame.clone());
        // Sent under the lock so the broadcast order is the id order, and a concurrent
        // subscribe sees each event either in its replay or in its live feed, never both.
        let _ = self.live.send(frame.clone());
        self.published += 1;
        frame
    }
}

/// The clock every event's `sent_ms` is read from (Unix milliseconds).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The event's frame: `id:` is its id, `event:` its topic, `data:` its JSON.
pub fn encode_event(event: &LiveEvent) -> Bytes {
    // Serialising a struct of strings and integers cannot fail; were it ever to, an empty
    // object still keeps the framing intact.
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_string());
    wire::encode(Some(event.id), Some(&event.topic), &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(history: usize) -> Hub {
        Hub::starting_at(
            HubSettings {
                topics: vec!["a".into(), "b".into()],
                history,
                max_text: 100,
                subscriber_buffer: 16,
            },
            1000,
        )
    }

    fn ids(frames: &[Arc<Frame>]) -> Vec<u64> {
        frames.iter().map(|f| f.event.id).collect()
    }

    #[test]
    fn ids_grow_from_the_start_value() {
        let h = hub(10);
        assert_eq!(h.publish("a", "x").expect("ok").event.id, 1001);
        assert_eq!(h.publish("b", "y").expect("ok").event.id, 1002);
    }

    #[test]
    fn the_default_start_is_after_any_earlier_process() {
        let settings = || HubSettings {
            topics: vec!["a".into()],
            history: 1,
            max_text: 10,
            subscriber_buffer: 1,
        };
        let first = Hub::new(settings());
        let id = first.publish("a", "x").expect("ok").event.id;
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = Hub::new(settings());
        let sub = second.subscribe(&Resume::After(id));
        assert!(
            sub.reset.is_some(),
            "an id from an earlier process is not ours"
        );
    }

    #[test]
    fn publishing_checks_its_input() {
        let h = hub(10);
        assert!(matches!(h.publish("", "x"), Err(PublishError::Topic(_))));
        assert!(
            matches!(h.publish("c", "x"), Err(PublishError::Topic(m)) if m.contains("unknown topic"))
        );
        assert_eq!(h.publish("a", "").err(), Some(PublishError::TextEmpty));
        assert_eq!(h.publish("a", " \n\t").err(), Some(PublishError::TextEmpty));
        assert_eq!(
            h.publish("a", &"x".repeat(101)).err(),
            Some(PublishError::TextTooLong { max: 100 })
        );
        assert!(h.recent(10).is_empty(), "refused events leave no trace");
    }

    #[test]
    fn the_text_limit_is_measured_as_the_stream_carries_it() {
        let h = hub(10);
        assert!(h.publish("a", &"x".repeat(100)).is_ok());
        // 17 NULs are 102 bytes once JSON-escaped (`\u0000` each).
        assert_eq!(
            h.publish("a", &"\0".repeat(17)).err(),
            Some(PublishError::TextTooLong { max: 100 })
        );
        assert!(h.publish("a", &"\0".repeat(16)).is_ok(), "96 bytes escaped");
        assert_eq!(
            h.publish("a", &"\"".repeat(51)).err(),
            Some(PublishError::TextTooLong { max: 100 })
        );
    }

    #[test]
    fn the_recent_events_are_bounded_in_bytes() {
        let h = hub(10);
        for i in 0..5 {
            h.publish("a", &i.to_string().repeat(50)).expect("ok");
        }
        let cost = |e: &LiveEvent| e.text.len();
        let two: Vec<u64> = h
            .recent_within(10, 101, |_| true, cost)
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(two, [1004, 1005], "the newest that fit, oldest first");
        assert!(h.recent_within(10, 49, |_| true, cost).is_empty());
        assert_eq!(h.recent_within(3, usize::MAX, |_| true, cost).len(), 3);
    }

    #[test]
    fn history_is_bounded_and_recent_is_oldest_first() {
        let h = hub(3);
        for i in 0..5 {
            h.publish("a", &i.to_string()).expect("ok");
        }
        let recent: Vec<u64> = h.recent(10).iter().map(|e| e.id).collect();
        assert_eq!(recent, vec![1003, 1004, 1005]);
        let two: Vec<u64> = h.recent(2).iter().map(|e| e.id).collect();
        assert_eq!(two, vec![1004, 1005]);
    }

    #[test]
    fn resume_replays_exactly_what_was_missed() {
        let h = hub(5);
        for _ in 0..4 {
            h.publish("a", "x").expect("ok");
        }
        let sub = h.subscribe(&Resume::After(1002));
        assert!(sub.reset.is_none());
        assert_eq!(ids(&sub.replay), vec![1003, 1004]);
        assert_eq!(sub.head, 1004);
        // Up to date: nothing to replay.
        let sub = h.subscribe(&Resume::After(1004));
        assert!(sub.reset.is_none() && sub.replay.is_empty());
        // Fresh: nothing either.
        let sub = h.subscribe(&Resume::Fresh);
        assert!(sub.reset.is_none() && sub.replay.is_empty());
    }

    #[test]
    fn the_edge_of_the_history_is_still_covered() {
        let h = hub(3);
        for _ in 0..5 {
            h.publish("a", "x").expect("ok"); // history now 1003..=1005
        }
        let sub = h.subscribe(&Resume::After(1002));
        assert!(sub.reset.is_none(), "1003 is the next one and still held");
        assert_eq!(ids(&sub.replay), vec![1003, 1004, 1005]);
    }

    #[test]
    fn a_gap_is_announced_never_silent() {
        let h = hub(3);
        for _ in 0..5 {
            h.publish("a", "x").expect("ok");
        }
        let sub = h.subscribe(&Resume::After(1001));
        let reset = sub.reset.expect("1002 was dropped from the history");
        assert_eq!(reset.oldest, Some(1003));
        assert_eq!(reset.head, 1005);
        assert_eq!(ids(&sub.replay), vec![1003, 1004, 1005]);
    }

    #[test]
    fn unknown_positions_reset() {
        let h = hub(3);
        h.publish("a", "x").expect("ok");
        for resume in [
            Resume::After(5000),
            Resume::After(0),
            Resume::Unreadable("abc".into()),
        ] {
            let sub = h.subscribe(&resume);
            assert!(sub.reset.is_some(), "{resume:?}");
            assert_eq!(ids(&sub.replay), vec![1001]);
        }
    }

    #[test]
    fn last_event_id_parsing() {
        assert_eq!(Resume::parse(None), Resume::Fresh);
        assert_eq!(Resume::parse(Some(" ")), Resume::Fresh);
        assert_eq!(Resume::parse(Some("42")), Resume::After(42));
        assert_eq!(Resume::parse(Some("-1")), Resume::Unreadable("-1".into()));
        assert_eq!(
            Resume::parse(Some("99999999999999999999999")),
            Resume::Unreadable("99999999999999999999999".into())
        );
    }

    fn event(id: u64, topic: &str) -> LiveEvent {
        LiveEvent {
            id,
            topic: topic.into(),
            text: "x".into(),
            sent_ms: 1,
        }
    }

    #[test]
    fn inserted_ids_must_grow() {
        let h = hub(10);
        assert_eq!(h.insert(event(5000, "a")).expect("after").event.id, 5000);
        assert_eq!(h.head(), 5000);
        assert_eq!(
            h.insert(event(5000, "a")).err(),
            Some(InsertError::Stale {
                id: 5000,
                head: 5000
            })
        );
        assert!(matches!(
            h.insert(event(5001, "a b")),
            Err(InsertError::Topic(_))
        ));
        // A topic this hub does not publish is still carried (another instance may).
        assert!(h.insert(event(5002, "other")).is_ok());
        assert_eq!(h.publish("a", "y").expect("ok").event.id, 5003);
        let sub = h.subscribe(&Resume::After(5000));
        assert_eq!(ids(&sub.replay), vec![5002, 5003]);
    }

    #[tokio::test]
    async fn a_cut_ends_live_subscriptions_and_forgets_the_history() {
        let h = hub(10);
        h.publish("a", "1").expect("ok");
        let mut sub = h.subscribe(&Resume::Fresh);
        h.publish("a", "2").expect("ok");
        h.cut();
        // What was sent before the cut is still read, then the feed ends.
        assert_eq!(sub.live.recv().await.expect("sent before").event.id, 1002);
        assert!(matches!(
            sub.live.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
        assert_eq!(h.head(), 1002, "ids keep growing");
        let again = h.subscribe(&Resume::After(1001));
        assert!(again.reset.is_some(), "the position is no longer covered");
        let at_head = h.subscribe(&Resume::After(1002));
        assert!(
            at_head.reset.is_some(),
            "a client at the head is behind whatever the store adds after the cut"
        );
        assert_eq!(h.publish("a", "3").expect("ok").event.id, 1003);
        assert_eq!(h.subscribers(), 2);
        let after = h.subscribe(&Resume::After(1003));
        assert!(after.reset.is_none(), "a position after the cut continues");
        assert!(after.replay.is_empty());
        assert!(
            h.subscribe(&Resume::After(1002)).reset.is_some(),
            "the cut position stays uncovered once newer events arrive"
        );
    }

    #[tokio::test]
    async fn subscribers_get_live_events_in_order_after_the_replay() {
        let h = hub(10);
        h.publish("a", "1").expect("ok");
        let mut sub = h.subscribe(&Resume::After(1000));
        h.publish("b", "2").expect("ok");
        assert_eq!(ids(&sub.replay), vec![1001]);
        let next = sub.live.recv().await.expect("live");
        assert_eq!(next.event.id, 1002);
        assert_eq!(next.event.topic, "b");
    }

    #[tokio::test]
    async fn an_announcement_goes_live_in_line_and_never_into_the_history() {
        let h = hub(10);
        let mut sub = h.subscribe(&Resume::Fresh);
        h.publish("a", "1").expect("ok");
        h.announce(Frame::announcement("presence", "{\"watching\":1}"));
        h.publish("a", "2").expect("ok");
        let got: Vec<(u64, bool)> = [
            sub.live.recv().await.expect("live"),
            sub.live.recv().await.expect("live"),
            sub.live.recv().await.expect("live"),
        ]
        .iter()
        .map(|f| (f.event.id, f.is_announcement()))
        .collect();
        assert_eq!(got, vec![(1001, false), (0, true), (1002, false)]);
        assert_eq!(h.head(), 1002);
        assert_eq!(
            ids(&h.subscribe(&Resume::After(1000)).replay),
            vec![1001, 1002]
        );
        let frame = Frame::announcement("presence", "{}");
        assert_eq!(&frame.bytes[..], b"event: presence\ndata: {}\n\n");
    }
}
