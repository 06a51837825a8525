//! Who is watching: every open stream holds a [`Seat`] for its life, and one task turns the
//! seats into figures: the page's live line (a `presence` event to the streams that ask for
//! it), and `GET {base}/api/presence` per topic.
//!
//! A stream is a watcher, not a tab: the page's tabs share one stream per browser (its leader
//! holds it), so on the page the count is the number of browsers. Names are those of
//! signed-in viewers (a Windows account, a token's subject), and only with
//! `EVENTS_PRESENCE_NAMES=on`: otherwise they are never gathered, not even into Redis.
//!
//! Changes are coalesced: the task wakes on the first change, sends, then waits
//! [`COALESCE`] before it looks again, so ten thousand streams connecting at once cost a few
//! announcements, not ten thousand. With Redis ([`shared`]) each instance writes its own
//! figures to Redis every [`shared::EVERY`] and adds up everyone's.

pub mod route;
pub mod shared;

use crate::hub::{Frame, Hub};
use events_core::event::{Presence as Line, MAX_PRESENCE_NAMES, PRESENCE_EVENT};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The shortest time between two looks at the seats.
pub const COALESCE: Duration = Duration::from_millis(250);

/// This instance's seats and the latest figures.
pub struct Presence {
    seats: Mutex<Seats>,
    changed: Notify,
    /// `EVENTS_PRESENCE_NAMES`: gather the signed-in watchers' names.
    names: bool,
    topics: Vec<String>,
    /// What the task last found (every instance with Redis): read by the page and the API.
    current: Mutex<Arc<Figures>>,
}

#[derive(Default)]
struct Seats {
    next: u64,
    taken: HashMap<u64, Watcher>,
}

struct Watcher {
    name: Option<String>,
    /// `None`: every topic.
    topics: Option<Arc<[String]>>,
}

/// A stream's place among the watchers, given back when it is dropped (with the stream's
/// guard, however the stream ends).
pub struct Seat {
    presence: Arc<Presence>,
    key: u64,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.presence.seats().taken.remove(&self.key);
        self.presence.changed.notify_one();
    }
}

/// Watchers, in total and per topic, with the names of the signed-in ones (how many streams
/// each holds). The shape each instance writes to Redis, so instances add theirs up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub watching: u64,
    #[serde(default)]
    pub names: BTreeMap<String, u64>,
    #[serde(default)]
    pub topics: BTreeMap<String, Count>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub watching: u64,
    #[serde(default)]
    pub names: BTreeMap<String, u64>,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.watching += other.watching;
        add_names(&mut self.names, &other.names);
        for (topic, count) in &other.topics {
            let mine = self.topics.entry(topic.clone()).or_default();
            mine.watching += count.watching;
            add_names(&mut mine.names, &count.names);
        }
    }

    /// The page's line: the total and the first names.
    fn line(&self) -> Line {
        Line {
            watching: self.watching,
            names: self
                .names
                .keys()
                .take(MAX_PRESENCE_NAMES)
                .cloned()
                .collect(),
        }
    }
}

fn add_names(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (name, n) in from {
        *into.entry(name.clone()).or_default() += n;
    }
}

/// What the task last found.
#[derive(Debug, Default)]
pub struct Figures {
    pub tally: Tally,
    /// Instances whose figures are in the tally (1 without Redis).
    pub instances: usize,
}

impl Presence {
    pub fn new(topics: Vec<String>, names: bool) -> Arc<Presence> {
        Arc::new(Presence {
            seats: Mutex::default(),
            changed: Notify::new(),
            names,
            topics,
            current: Mutex::new(Arc::new(Figures {
                tally: Tally::default(),
                instances: 1,
            })),
        })
    }

    fn seats(&self) -> MutexGuard<'_, Seats> {
        // Each change is one insert or remove: a panic cannot leave the map half-changed.
        self.seats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a seat for a stream reading `topics` (`None`: all) as `name` (`None`: anonymous).
    pub fn seat(self: &Arc<Self>, name: Option<&str>, topics: Option<Arc<[String]>>) -> Seat {
        let name = name.filter(|_| self.names).map(str::to_string);
        let mut seats = self.seats();
        let key = seats.next;
        seats.next += 1;
        seats.taken.insert(key, Watcher { name, topics });
        drop(seats);
        self.changed.notify_one();
        Seat {
            presence: self.clone(),
            key,
        }
    }

    /// This instance's watchers.
    pub fn local(&self) -> Tally {
        let mut tally = Tally {
            topics: self
                .topics
                .iter()
                .map(|t| (t.clone(), Count::default()))
                .collect(),
            ..Tally::default()
        };
        for watcher in self.seats().taken.values() {
            tally.watching += 1;
            if let Some(name) = &watcher.name {
                *tally.names.entry(name.clone()).or_default() += 1;
            }
            let reads = |t: &String| watcher.topics.as_ref().is_none_or(|w| w.contains(t));
            for (_, count) in tally.topics.iter_mut().filter(|(t, _)| reads(t)) {
                count.watching += 1;
                if let Some(name) = &watcher.name {
                    *count.names.entry(name.clone()).or_default() += 1;
                }
            }
        }
        tally
    }

    pub fn current(&self) -> Arc<Figures> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The page's line as it stands.
    pub fn line(&self) -> Line {
        self.current().tally.line()
    }

    pub fn shows_names(&self) -> bool {
        self.names
    }

    fn set(&self, figures: Figures) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(figures);
    }
}

/// Keeps the figures current until the server stops, and announces each change of the
/// page's line to the hub's streams (those that asked for presence pass it on).
pub fn spawn(
    presence: Arc<Presence>,
    hub: Arc<Hub>,
    shared: Option<shared::Shared>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(shared::EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut announced = Line::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = presence.changed.notified() => {}
                // Others' figures change without a word to us: look at them at each interval.
                _ = every.tick(), if shared.is_some() => {}
            }
            let local = presence.local();
            let figures = match &shared {
                None => Figures {
                    tally: local,
                    instances: 1,
                },
                Some(shared) => shared.exchange(local).await,
            };
            let line = figures.tally.line();
            presence.set(figures);
            if line != announced {
                let data = serde_json::to_string(&line).unwrap_or_default();
                hub.announce(Frame::announcement(PRESENCE_EVENT, &data));
                announced = line;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(COALESCE) => {}
            }
        }
        if let Some(shared) = shared {
            shared.leave().await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> Option<Arc<[String]>> {
        Some(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn seats_count_per_topic_and_are_given_back() {
        let p = Presence::new(vec!["a".into(), "b".into()], true);
        let alice = p.seat(Some("alice"), None);
        let anon = p.seat(None, topics(&["b"]));
        let alice_again = p.seat(Some("alice"), topics(&["a"]));
        let t = p.local();
        assert_eq!(t.watching, 3);
        assert_eq!(t.names, BTreeMap::from([("alice".to_string(), 2)]));
        assert_eq!(t.topics["a"].watching, 2);
        assert_eq!(t.topics["b"].watching, 2);
        assert_eq!(t.topics["b"].names["alice"], 1);
        drop((alice, alice_again));
        let t = p.local();
        assert_eq!((t.watching, t.names.len()), (1, 0));
        assert_eq!((t.topics["a"].watching, t.topics["b"].watching), (0, 1));
        drop(anon);
        assert_eq!(p.local().watching, 0);
    }

    #[test]
    fn names_are_not_gathered_unless_allowed() {
        let p = Presence::new(vec!["a".into()], false);
        let _seat = p.seat(Some("alice"), None);
        let t = p.local();
        assert_eq!(t.watching, 1);
        assert!(t.names.is_empty() && t.topics["a"].names.is_empty());
    }

    #[test]
    fn instances_add_up_and_the_line_is_bounded() {
        let mut total = Tally::default();
        for i in 0..(MAX_PRESENCE_NAMES + 10) {
            let mut one = Tally {
                watching: 2,
                ..Tally::default()
            };
            one.names.insert(format!("user{i:03}"), 1);
            one.topics.insert(
                "a".into(),
                Count {
                    watching: 1,
                    names: one.names.clone(),
                },
            );
            total.add(&one);
        }
        let n = (MAX_PRESENCE_NAMES + 10) as u64;
        assert_eq!(total.watching, 2 * n);
        assert_eq!(total.topics["a"].watching, n);
        let line = total.line();
        assert_eq!(line.watching, 2 * n);
        assert_eq!(line.names.len(), MAX_PRESENCE_NAMES);
        assert_eq!(line.names[0], "user000");
    }

    #[tokio::test]
    async fn each_change_is_announced_once_coalesced() {
        let hub = Arc::new(Hub::starting_at(
            events_core::hub::HubSettings {
                topics: vec!["a".into()],
                history: 10,
                max_text: 100,
                subscriber_buffer: 64,
            },
            1000,
        ));
        let mut live = hub.subscribe(&events_core::hub::Resume::Fresh).live;
        let p = Presence::new(vec!["a".into()], true);
        let stop = CancellationToken::new();
        spawn(p.clone(), hub.clone(), None, stop.clone());
        // A crowd arriving at once.
        let seats: Vec<Seat> = (0..100).map(|_| p.seat(Some("bob"), None)).collect();
        let mut last = Line::default();
        let mut frames = 0;
        while last.watching != 100 {
            let frame = tokio::time::timeout(Duration::from_secs(10), live.recv())
                .await
                .expect("announced in time")
                .expect("live");
            assert!(frame.is_announcement());
            let data = std::str::from_utf8(&frame.bytes)
                .expect("text")
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data");
            last = serde_json::from_str(data).expect("a presence line");
            frames += 1;
        }
        assert_eq!(last.names, vec!["bob".to_string()]);
        assert!(frames <= 3, "100 arrivals took {frames} announcements");
        assert_eq!(p.current().tally.watching, 100);
        drop(seats);
        let frame = tokio::time::timeout(Duration::from_secs(10), live.recv())
            .await
            .expect("announced in time")
            .expect("live");
        assert!(std::str::from_utf8(&frame.bytes)
            .expect("text")
            .contains("{\"watching\":0}"));
        stop.cancel();
    }
}
