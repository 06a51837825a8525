//! Where events go when they are published and where subscriptions come from: the event bus.
//!
//! Three implementations behind one small interface ([`Bus`]):
//!
//! - [`log`] (the default): a SQLite file in the data folder is the durable, ordered log of
//!   every process on the machine that shares the folder; each process's reader follows it
//!   into the local hub. The history survives restarts and IIS recycles.
//! - [`local`] (`EVENTS_STORE=memory`): this process's [`Hub`] numbers, keeps and broadcasts
//!   every event in memory only; a restart starts a new history.
//! - [`redis`] (`EVENTS_REDIS_URL`): a Redis stream is the shared, ordered log of every instance.
//!   Publishing appends to it (`XADD`) and does not touch the local hub; one reader task per
//!   process follows the stream (`XREAD BLOCK`) and inserts each entry into the local hub under
//!   its global id, so every instance holds the same events with the same ids in the same
//!   order, and a client can resume on any of them.
//!
//! Either way the local [`Hub`] stays each process's fan-out core (history ring and broadcast
//! of pre-encoded frames) and a [`Subscription`] has the same shape, so the stream route does
//! not know which bus it is on.

pub mod local;
pub mod log;
pub mod redis;
pub mod stream_id;

use crate::hub::{self, Frame, Hub, Resume, Subscription};
use events_core::event::LiveEvent;
use std::sync::Arc;

#[derive(Clone)]
pub enum Bus {
    Local(Arc<Hub>),
    Log(Arc<log::LogBus>),
    Redis(Arc<redis::RedisBus>),
}

/// Why a publish did not happen.
#[derive(Debug)]
pub enum PublishError {
    /// The sender's mistake: unknown topic, empty or too long text (400).
    Invalid(hub::PublishError),
    /// The event store cannot take events right now (503): which store, and why.
    Unavailable { store: &'static str, why: String },
}

impl PublishError {
    pub fn status(&self) -> u16 {
        match self {
            PublishError::Invalid(_) => 400,
            PublishError::Unavailable { .. } => 503,
        }
    }
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Invalid(e) => write!(f, "{e}"),
            PublishError::Unavailable { store, why } => {
                write!(f, "event store ({store}) unavailable: {why}")
            }
        }
    }
}

impl std::error::Error for PublishError {}

impl From<hub::PublishError> for PublishError {
    fn from(e: hub::PublishError) -> PublishError {
        PublishError::Invalid(e)
    }
}

/// For a store that holds more than the local ring (the log, Redis): the events a resuming
/// subscription still lacks, as `(after, end)`, when its position is older than the local
/// history; `None` when the local hub answered it (no reset, or a position not before the
/// head). `end` is the last event before the first one held here, or the head when nothing is.
fn older_wanted(resume: &Resume, sub: &Subscription) -> Option<(u64, u64)> {
    let Resume::After(id) = *resume else {
        return None;
    };
    if sub.reset.is_none() || id >= sub.head {
        return None;
    }
    let end = sub
        .replay
        .first()
        .map_or(sub.head, |f| f.event.id.saturating_sub(1).min(sub.head));
    Some((id, end))
}

/// The store had every event of [`older_wanted`]'s range: they go before the local replay,
/// and the client needs no reset.
fn with_older(sub: &mut Subscription, mut older: Vec<Arc<Frame>>) {
    older.append(&mut sub.replay);
    sub.replay = older;
    sub.reset = None;
}

impl Bus {
    /// Checks and publishes; the event as every subscriber will receive it.
    pub async fn publish(&self, topic: &str, text: &str) -> Result<LiveEvent, PublishError> {
        match self {
            Bus::Local(hub) => local::publish(hub, topic, text),
            Bus::Log(bus) => bus.publish(topic, text).await,
            Bus::Redis(bus) => bus.publish(topic, text).await,
        }
    }

    /// The demo tick. Processes sharing the log tick once between them (`None`: another
    /// process ticks now).
    pub async fn tick(&self, text: &str) -> Result<Option<LiveEvent>, PublishError> {
        match self {
            Bus::Log(bus) => bus.tick(text).await,
            _ => self.publish("tick", text).await.map(Some),
        }
    }

    /// What a new stream sends first (reset, replay) and its live feed. With the log or Redis,
    /// a position older than the local history but still in the store is served from it.
    pub async fn subscribe(&self, resume: &Resume) -> Subscription {
        match self {
            Bus::Local(hub) => hub.subscribe(resume),
            Bus::Log(bus) => bus.subscribe(resume).await,
            Bus::Redis(bus) => bus.subscribe(resume).await,
        }
    }
}
