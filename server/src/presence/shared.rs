//! Presence across instances on one Redis: each instance writes its own [`Tally`] under a key
//! of its own that expires ([`TTL`]), listed in one set, and adds up every live one.
//!
//! An expiring key per instance, not one hash, so an instance that dies without a word
//! (a killed worker process, a lost machine) drops out by Redis's clock within [`TTL`], with
//! no clock of ours compared to another machine's. A clean stop deletes the key at once.

use super::{Figures, Tally};
use redis::aio::ConnectionManager;
use std::time::Duration;

/// How often each instance writes its figures and reads the others'.
pub const EVERY: Duration = Duration::from_secs(1);
/// How long an instance's figures count after its last write.
const TTL: Duration = Duration::from_secs(5);

pub struct Shared {
    conn: ConnectionManager,
    /// The set of every instance's key.
    set: String,
    /// This instance's key: its name, process id and start time, so two instances given the
    /// same `EVENTS_INSTANCE` (or one restarted) never overwrite each other.
    mine: String,
    /// Set while Redis cannot be reached, so an outage is logged once.
    failing: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Next to the event stream's key: instances that share events share presence.
    pub fn new(conn: ConnectionManager, stream_key: &str, instance: &str) -> Shared {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let set = format!("{stream_key}:presence");
        Shared {
            conn,
            mine: format!("{set}:{instance}:{}:{started}", std::process::id()),
            set,
            failing: Default::default(),
        }
    }

    /// Writes ours, reads everyone's. While Redis is away: this instance's figures alone.
    pub async fn exchange(&self, local: Tally) -> Figures {
        match self.try_exchange(&local).await {
            Ok(figures) => {
                if self
                    .failing
                    .swap(false, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::info!("presence: Redis is back; counting every instance again");
                }
                figures
            }
            Err(e) => {
                if !self
                    .failing
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(error = %e, "presence: Redis unreachable; counting this instance alone until it is back");
                }
                Figures {
                    tally: local,
                    instances: 1,
                }
            }
        }
    }

    async fn try_exchange(&self, local: &Tally) -> Result<Figures, redis::RedisError> {
        let mut conn = self.conn.clone();
        let mine = serde_json::to_string(local).unwrap_or_default();
        let (keys,): (Vec<String>,) = redis::pipe()
            .cmd("SET")
            .arg(&self.mine)
            .arg(&mine)
            .arg("PX")
            .arg(TTL.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(&self.set)
            .arg(&self.mine)
            .ignore()
            .cmd("SMEMBERS")
            .arg(&self.set)
            .query_async(&mut conn)
            .await?;
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut figures = Figures::default();
        let mut gone = Vec::new();
        for (key, value) in keys.iter().zip(values) {
            let read = value.as_deref().map(serde_json::from_str::<Tally>);
            match read {
                Some(Ok(tally)) => {
                    figures.tally.add(&tally);
                    figures.instances += 1;
                }
                // Expired: that instance stopped writing.
                None => gone.push(key),
                Some(Err(e)) => {
                    tracing::warn!(key = %key, error = %e, "presence: ignoring figures that do not parse");
                }
            }
        }
        if !gone.is_empty() {
            let _: Result<(), _> = redis::cmd("SREM")
                .arg(&self.set)
                .arg(&gone)
                .query_async(&mut conn)
                .await;
        }
        Ok(figures)
    }

    /// A clean stop: the others stop counting this instance at their next look.
    pub async fn leave(&self) {
        let mut conn = self.conn.clone();
        let _: Result<(), _> = redis::pipe()
            .cmd("DEL")
            .arg(&self.mine)
            .ignore()
            .cmd("SREM")
            .arg(&self.set)
            .arg(&self.mine)
            .ignore()
            .query_async(&mut conn)
            .await;
    }
}
