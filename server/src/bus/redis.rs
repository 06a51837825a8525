//! The Redis bus: one Redis stream is the shared, ordered log of every server instance.
//!
//! - **Publishing** runs [`PUBLISH_SCRIPT`] on a shared multiplexed connection (one per
//!   process, reconnecting on its own): it picks the entry's id and appends it with
//!   `XADD ... MAXLEN ~ <EVENTS_HISTORY>`. Nothing is added to the local hub here: the reader
//!   does that, so every instance inserts every event in the stream's order.
//! - **One reader task per process** follows the stream with `XREAD BLOCK` on a connection of
//!   its own and inserts each entry into the local [`Hub`] under its global id (see
//!   [`super::stream_id`]). Browsers never get a Redis connection: they subscribe to the hub.
//! - **Resuming**: the local hub's ring covers most resumes. An older position still in the
//!   stream is served from it with `XRANGE`; a position newer than this instance has read
//!   yet (the client came from a faster instance) waits briefly for the reader to get there.
//!
//! When Redis goes away, open streams stay open on the local hub and keep their heartbeats;
//! publishing answers 503; the reader retries with backoff (one log line per outage, one when
//! it is back) and then reads on from the last id it inserted, so nothing another instance
//! stored meanwhile is lost. If entries after that id were trimmed meanwhile, the local hub is
//! cut ([`Hub::cut`]): its streams end, the clients reconnect and get a `reset`.

use super::{older_wanted, stream_id::StreamId, with_older, PublishError};
use crate::hub::{Frame, Hub, InsertError, Resume, Subscription};
use events_core::event::LiveEvent;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    streams::{StreamId as Entry, StreamRangeReply, StreamReadReply},
    AsyncConnectionConfig, Client, RedisError, Value,
};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long one `XREAD` waits for new entries before asking again.
const BLOCK: Duration = Duration::from_secs(5);
/// Entries read at once: a reader that fell behind catches up in batches.
const BATCH: usize = 512;
/// Bounds on reaching Redis and on any answer but `XREAD`'s: a publish gets its 503 quickly
/// instead of hanging while Redis is away.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// The reader's retry delays while Redis is away (doubling, with jitter).
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Most events served to one resuming client from the stream, on top of the local history.
/// `MAXLEN ~` trims whole nodes of the stream (100 entries each by default), so the stream
/// holds a little more than the local ring: this is what such a client may still get.
const OLDER_LIMIT: usize = 1000;
/// The longest a resuming client waits for this instance's reader to reach its position.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

/// Appends one event with an id after every id already used, and returns that id.
///
/// The id is `<ms>-<seq>` with `ms` from Redis's clock, but never before the stream's last
/// entry nor before the caller's newest id (`floor`, which matters after Redis restarted
/// without persistence: its stream is then empty, and new ids must still be after the old
/// ones the instances and browsers hold). `seq` stays below 1000 so the id maps to an SSE id
/// (see `stream_id.rs`). Running as one script makes choosing and appending atomic, so
/// instances publishing at once never collide.
///
/// KEYS[1] the stream; ARGV: maxlen, floor ms, floor seq, topic, text, sent_ms.
pub const PUBLISH_SCRIPT: &str = r#"
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = 0
local function after(lms, lseq)
  if ms < lms or (ms == lms and seq <= lseq) then
    ms = lms
    seq = lseq + 1
    if seq > 999 then
      ms = ms + 1
      seq = 0
    end
  end
end
after(tonumber(ARGV[2]), tonumber(ARGV[3]))
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local id = last[1][1]
  local dash = string.find(id, '-', 1, true)
  after(tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1)))
end
local id = string.format('%.0f-%.0f', ms, seq)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id,
  'topic', ARGV[4], 'text', ARGV[5], 'sent_ms', ARGV[6])
return id
"#;

pub struct Settings {
    pub url: String,
    /// The stream's key.
    pub key: String,
    /// Entries the stream keeps (`MAXLEN ~`), and the local hub too.
    pub history: usize,
}

pub struct RedisBus {
    hub: Arc<Hub>,
    /// Shared by every publish and resume of this process.
    conn: ConnectionManager,
    key: String,
    history: usize,
    script: redis::Script,
    /// The hub's head as the reader last left it.
    head: watch::Receiver<u64>,
}

impl RedisBus {
    /// Starts the reader. Redis need not be reachable yet: until it is, streams get
    /// heartbeats and publishing answers 503.
    pub fn start(
        hub: Arc<Hub>,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> Result<Arc<RedisBus>, String> {
        let client = Client::open(settings.url.as_str()).map_err(|e| {
            format!("EVENTS_REDIS_URL: not a Redis address like redis://127.0.0.1:6379/ ({e})")
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(ANSWER_TIMEOUT))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| format!("EVENTS_REDIS_URL: {e}"))?;
        let (head_tx, head) = watch::channel(hub.head());
        let reader = Reader {
            hub: hub.clone(),
            client,
            shared: conn.clone(),
            key: settings.key.clone(),
            history: settings.history,
            head: head_tx,
        };
        tokio::spawn(reader.run(shutdown));
        Ok(Arc::new(RedisBus {
            hub,
            conn,
            key: settings.key,
            history: settings.history,
            script: redis::Script::new(PUBLISH_SCRIPT),
            head,
        }))
    }

    /// The shared connection, for what else the instances share (presence).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The event stream's key: what else the instances share is kept beside it.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub async fn publish(&self, topic: &str, text: &str) -> Result<LiveEvent, PublishError> {
        self.hub.check(topic, text)?;
        let sent_ms = crate::hub::now_ms();
        let floor = StreamId::from_sse(self.hub.head());
        let mut call = self.script.prepare_invoke();
        call.key(&self.key)
            .arg(self.history)
            .arg(floor.ms)
            .arg(floor.seq)
            .arg(topic)
            .arg(text)
            .arg(sent_ms);
        let mut conn = self.conn.clone();
        let id: String = call
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let id = StreamId::parse(&id)
            .and_then(StreamId::to_sse)
            .ok_or_else(|| unavailable(format!("it answered the id '{id}'")))?;
        Ok(LiveEvent {
            id,
            topic: topic.to_string(),
            text: text.to_string(),
            sent_ms,
        })
    }

    pub async fn subscribe(&self, resume: &Resume) -> Subscription {
        if let Resume::After(id) = resume {
            self.catch_up_to(*id).await;
        }
        let mut sub = self.hub.subscribe(resume);
        // Older than the local history: the stream may still have it.
        let Some((id, end)) = older_wanted(resume, &sub) else {
            return sub;
        };
        match self.range(id, end).await {
            Ok(Some(older)) => with_older(&mut sub, older),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "cannot read older events from Redis; the client gets a reset")
            }
        }
        sub
    }

    /// A client that was on a faster instance may hold an id this reader has not reached yet.
    /// If the stream has that id, wait (a little) for the reader rather than answer `reset`.
    async fn catch_up_to(&self, id: u64) {
        if id <= self.hub.head() {
            return;
        }
        let wanted = StreamId::from_sse(id).to_string();
        let mut conn = self.conn.clone();
        let found: Result<StreamRangeReply, RedisError> = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg(&wanted)
            .arg(&wanted)
            .query_async(&mut conn)
            .await;
        if found.is_ok_and(|r| !r.ids.is_empty()) {
            let mut head = self.head.clone();
            let _ = tokio::time::timeout(CATCH_UP_WAIT, head.wait_for(|h| *h >= id)).await;
        }
    }

    /// The events after `after` up to `end`, when the stream still holds `after` itself (which
    /// proves nothing between was trimmed); `None` when it does not, or when there are more
    /// than [`OLDER_LIMIT`].
    async fn range(&self, after: u64, end: u64) -> Result<Option<Vec<Arc<Frame>>>, RedisError> {
        let start = StreamId::from_sse(after);
        let mut conn = self.conn.clone();
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg(start.to_string())
            .arg(StreamId::from_sse(end).to_string())
            .arg("COUNT")
            .arg(OLDER_LIMIT + 2)
            .query_async(&mut conn)
            .await?;
        if reply.ids.len() > OLDER_LIMIT + 1
            || reply.ids.first().and_then(|e| StreamId::parse(&e.id)) != Some(start)
        {
            return Ok(None);
        }
        Ok(Some(
            reply.ids[1..]
                .iter()
                .filter_map(entry_event)
                .map(|event| Arc::new(Frame::new(event)))
                .collect(),
        ))
    }
}

fn unavailable(why: String) -> PublishError {
    PublishError::Unavailable {
        store: "Redis",
        why,
    }
}

/// A stream entry as an event; `None` for an entry this server did not write (no SSE id, or
/// fields missing).
fn entry_event(entry: &Entry) -> Option<LiveEvent> {
    Some(LiveEvent {
        id: StreamId::parse(&entry.id)?.to_sse()?,
        topic: entry.get("topic")?,
        text: entry.get("text")?,
        sent_ms: entry.get("sent_ms")?,
    })
}

/// The one task per process that follows the stream into the local hub.
struct Reader {
    hub: Arc<Hub>,
    client: Client,
    /// The publishers' connection, woken when Redis is back (see [`Reader::wake_shared`]).
    shared: ConnectionManager,
    key: String,
    history: usize,
    head: watch::Sender<u64>,
}

impl Reader {
    async fn run(self, shutdown: CancellationToken) {
        // The last entry inserted; `None` until the history was first loaded.
        let mut last: Option<StreamId> = None;
        // Since when Redis has been away, if it is.
        let mut outage: Option<Instant> = None;
        let mut retry = RETRY_MIN;
        loop {
            let error = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = self.follow(&mut last, &mut outage, &mut retry) => e,
            };
            if outage.is_none() {
                outage = Some(Instant::now());
                tracing::warn!(
                    %error,
                    "event store (Redis) unavailable: {error}; open streams stay open with \
                     their heartbeats, publishing answers 503; retrying until it is back"
                );
            } else {
                tracing::debug!(%error, "event store (Redis) still unavailable");
            }
            let pause = crate::limits::jitter(retry);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            retry = (retry * 2).min(RETRY_MAX);
        }
    }

    /// Connects, finds where to read from and follows the stream; returns only on an error.
    async fn follow(
        &self,
        last: &mut Option<StreamId>,
        outage: &mut Option<Instant>,
        retry: &mut Duration,
    ) -> RedisError {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(BLOCK + ANSWER_TIMEOUT));
        let mut conn = match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => conn,
            Err(e) => return e,
        };
        let from = match *last {
            None => self.load(&mut conn).await,
            Some(position) => self.check_gap(&mut conn, position).await,
        };
        let mut position = match from {
            Ok(position) => position,
            Err(e) => return e,
        };
        *last = Some(position);
        match outage.take() {
            Some(since) => {
                tracing::info!(
                    after_secs = since.elapsed().as_secs_f64(),
                    from = %position,
                    "event store (Redis) reachable again; reading on from the last entry"
                );
                self.wake_shared().await;
            }
            None => tracing::info!(key = %self.key, from = %position, "following the Redis stream"),
        }
        *retry = RETRY_MIN;
        loop {
            let reply: Option<StreamReadReply> = match redis::cmd("XREAD")
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(position.to_string())
                .query_async(&mut conn)
                .await
            {
                Ok(reply) => reply,
                Err(e) => return e,
            };
            for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                if let Some(id) = StreamId::parse(&entry.id) {
                    position = position.max(id);
                }
                self.insert(&entry);
            }
            *last = Some(position);
            self.head.send_replace(self.hub.head());
        }
    }

    /// The shared connection reconnects when a command finds it broken, so the first publish
    /// after an outage would fail; a `PING` from here takes that failure instead.
    async fn wake_shared(&self) {
        for _ in 0..3 {
            let mut conn = self.shared.clone();
            let pong: Result<String, RedisError> = redis::cmd("PING").query_async(&mut conn).await;
            if pong.is_ok() {
                return;
            }
            tokio::time::sleep(RETRY_MIN).await;
        }
    }

    /// The newest `history` entries into the hub (at start, and after a cut); returns where
    /// to read on from.
    async fn load(&self, conn: &mut MultiplexedConnection) -> Result<StreamId, RedisError> {
        let reply: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&self.key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(self.history)
            .query_async(conn)
            .await?;
        let mut position = StreamId::from_sse(self.hub.head());
        for entry in reply.ids.iter().rev() {
            if let Some(id) = StreamId::parse(&entry.id) {
                position = position.max(id);
            }
            self.insert(entry);
        }
        self.head.send_replace(self.hub.head());
        Ok(position)
    }

    /// After an outage: were entries after `position` trimmed while we were away? Trimming
    /// removes the oldest entries, so while the stream's first entry is not after our
    /// position, everything after it is still there. When the first entry is after it, what
    /// lay between was lost if the stream ever dropped entries (`XINFO STREAM`: more entries
    /// added than it holds, or a deleted id after ours). If it never did, it is a new stream
    /// (Redis restarted without persistence) and holds everything published since. When
    /// events may have been missed, the local hub is cut (its clients reconnect and get a
    /// `reset`) and the history is loaded again.
    async fn check_gap(
        &self,
        conn: &mut MultiplexedConnection,
        position: StreamId,
    ) -> Result<StreamId, RedisError> {
        let first: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        let first = first.ids.first().and_then(|e| StreamId::parse(&e.id));
        if first.is_none_or(|first| first <= position) {
            return Ok(position);
        }
        let info: Value = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&self.key)
            .query_async(conn)
            .await?;
        let number = |name| info_field(&info, name).and_then(|v| v.parse::<u64>().ok());
        let deleted = info_field(&info, "max-deleted-entry-id").and_then(|v| StreamId::parse(&v));
        let dropped = match (number("entries-added"), number("length")) {
            (Some(added), Some(length)) => added > length,
            // An older Redis that does not say: assume the worst.
            _ => true,
        };
        if !dropped && deleted.is_none_or(|d| d <= position) {
            return Ok(position);
        }
        tracing::warn!(
            %position,
            ?first,
            "events after this instance's last one were trimmed from the Redis stream while it \
             was away; ending its streams so their clients reconnect and get a reset"
        );
        self.hub.cut();
        self.load(conn).await
    }

    fn insert(&self, entry: &Entry) {
        let Some(event) = entry_event(entry) else {
            tracing::warn!(id = %entry.id, "skipping a stream entry that this server did not write");
            return;
        };
        match self.hub.insert(event) {
            Ok(_) | Err(InsertError::Stale { .. }) => {}
            Err(e) => tracing::warn!(id = %entry.id, error = %e, "skipping a stream entry"),
        }
    }
}

/// A field of an `XINFO STREAM` answer (a flat list of names and values in RESP2, a map in
/// RESP3), as text (numbers too).
fn info_field(info: &Value, name: &str) -> Option<String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    };
    match info {
        Value::Array(items) => items
            .chunks_exact(2)
            .find(|kv| text(&kv[0]).as_deref() == Some(name))
            .and_then(|kv| text(&kv[1])),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .and_then(|(_, v)| text(v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xinfo_fields_in_either_protocol() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let resp2 = Value::Array(vec![
            bulk("length"),
            Value::Int(3),
            bulk("max-deleted-entry-id"),
            bulk("17-4"),
        ]);
        assert_eq!(
            info_field(&resp2, "max-deleted-entry-id").as_deref(),
            Some("17-4")
        );
        assert_eq!(info_field(&resp2, "length").as_deref(), Some("3"));
        assert_eq!(info_field(&resp2, "groups"), None);
        let resp3 = Value::Map(vec![(bulk("max-deleted-entry-id"), bulk("0-0"))]);
        assert_eq!(
            info_field(&resp3, "max-deleted-entry-id").as_deref(),
            Some("0-0")
        );
        assert_eq!(info_field(&Value::Nil, "x"), None);
    }

    #[test]
    fn entries_this_server_did_not_write_are_skipped() {
        let entry = |id: &str, fields: &[(&str, &str)]| Entry {
            id: id.into(),
            map: fields
                .iter()
                .map(|(k, v)| (k.to_string(), Value::BulkString(v.as_bytes().to_vec())))
                .collect(),
            ..Default::default()
        };
        let ours = [("topic", "chat"), ("text", "hi"), ("sent_ms", "12")];
        assert_eq!(
            entry_event(&entry("5-7", &ours)),
            Some(LiveEvent {
                id: 5007,
                topic: "chat".into(),
                text: "hi".into(),
                sent_ms: 12
            })
        );
        assert_eq!(entry_event(&entry("5-1000", &ours)), None, "no SSE id");
        assert_eq!(entry_event(&entry("5-7", &ours[..2])), None, "no sent_ms");
    }
}
