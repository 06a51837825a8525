//! Where events go when they are published and where subscriptions come from: the event bus.
//!
//! Two implementations behind one small interface ([`Bus`]):
//!
//! - [`local`] (the default): this process's [`Hub`] numbers, keeps and broadcasts every event,
//!   exactly as a single server always has.
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
pub mod redis;
pub mod stream_id;

use crate::hub::{self, Hub, Resume, Subscription};
use events_core::event::LiveEvent;
use std::sync::Arc;

#[derive(Clone)]
pub enum Bus {
    Local(Arc<Hub>),
    Redis(Arc<redis::RedisBus>),
}

/// Why a publish did not happen.
#[derive(Debug)]
pub enum PublishError {
    /// The sender's mistake: unknown topic, empty or too long text (400).
    Invalid(hub::PublishError),
    /// The shared event store cannot be reached right now (503); the text says why.
    Unavailable(String),
}

impl PublishError {
    pub fn status(&self) -> u16 {
        match self {
            PublishError::Invalid(_) => 400,
            PublishError::Unavailable(_) => 503,
        }
    }
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Invalid(e) => write!(f, "{e}"),
            PublishError::Unavailable(why) => write!(f, "event store (Redis) unavailable: {why}"),
        }
    }
}

impl std::error::Error for PublishError {}

impl From<hub::PublishError> for PublishError {
    fn from(e: hub::PublishError) -> PublishError {
        PublishError::Invalid(e)
    }
}

impl Bus {
    /// Checks and publishes; the event as every subscriber will receive it.
    pub async fn publish(&self, topic: &str, text: &str) -> Result<LiveEvent, PublishError> {
        match self {
            Bus::Local(hub) => local::publish(hub, topic, text),
            Bus::Redis(bus) => bus.publish(topic, text).await,
        }
    }

    /// What a new stream sends first (reset, replay) and its live feed. With Redis, a position
    /// older than the local history but still in the stream is served from Redis.
    pub async fn subscribe(&self, resume: &Resume) -> Subscription {
        match self {
            Bus::Local(hub) => hub.subscribe(resume),
            Bus::Redis(bus) => bus.subscribe(resume).await,
        }
    }
}
