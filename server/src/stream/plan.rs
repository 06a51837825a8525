//! What the stream's handler hands to whichever writer takes the stream: the contract both
//! writers keep. The handler has made every decision (checks, headers, resume position);
//! a writer only writes what the plan holds and ends the stream when its guard says why.

use crate::{
    hub::Frame,
    limits,
    metrics::{self as figures, Ended},
};
use bytes::Bytes;
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// An opened stream, not yet written: everything either writer needs.
pub struct Plan {
    /// `retry:` and any `reset`: written with the response head.
    pub opening: Bytes,
    /// The missed events, oldest first: the history's own frames, shared, never copied into a
    /// buffer of the stream's (a few dozen streams resuming from a large history each copied
    /// it whole, and the process ran out of memory).
    pub replay: Vec<Arc<Frame>>,
    /// The `ready` event (and padding): written after the replay.
    pub ready: Bytes,
    pub live: broadcast::Receiver<Arc<Frame>>,
    pub heartbeat: Duration,
    /// Events a subscriber may fall behind before its stream is ended (the hub's buffer).
    pub lag_limit: usize,
    pub filter: Option<Arc<[String]>>,
    /// The stream asked for `presence` announcements (`?presence=1`).
    pub presence: bool,
    /// Behind HttpPlatformHandler: written after each event so its buffer lets it through.
    pub pad: Option<Bytes>,
    /// When the viewer's token expires: the stream ends then, with an `expired` event. Boxed,
    /// so a stream without a token pays one pointer for it, not a timer.
    pub expiry: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    pub guard: Guard,
}

impl Plan {
    /// Counts the stream under the writer that took it.
    pub fn written_by(&self, writer: &'static str) {
        metrics::counter!(figures::STREAMS_WRITTEN, "writer" => writer).increment(1);
    }

    pub fn wants(&self, frame: &Frame) -> bool {
        if frame.is_announcement() {
            return self.presence;
        }
        super::wanted(&self.filter, &frame.event.topic)
    }
}

/// Ready when the viewer's token expires; never without one. On its own, not a method, so a
/// writer can wait on it while it also waits on the plan's live feed.
pub async fn expired(expiry: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match expiry {
        Some(at) => at.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The stream response's extension: the [`Plan`], for the first writer that takes it.
#[derive(Clone)]
pub struct Handoff(Arc<Mutex<Option<Plan>>>);

impl Handoff {
    pub fn new(plan: Plan) -> Handoff {
        Handoff(Arc::new(Mutex::new(Some(plan))))
    }

    pub fn take(&self) -> Option<Plan> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Logs the end of a stream however it ends (client gone, shutdown, lag) and keeps the count.
pub struct Guard {
    /// Only what an open stream needs of the state: each stream holds its guard for its life.
    open_streams: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    client: String,
    since: Instant,
    delivered: u64,
    /// The shared delivery counter, looked up once when the stream opens.
    deliveries: metrics::Counter,
    /// Set when the server ended the stream; a body dropped without it means the client went
    /// away (closed, reset, or a write failed or stalled).
    ended: Option<Ended>,
    /// The stream's place under `EVENTS_MAX_STREAMS_PER_ADDR`.
    _addr: limits::Slot,
    /// The stream's place among the watchers.
    _seat: crate::presence::Seat,
}

impl Guard {
    pub fn new(
        open_streams: Arc<AtomicUsize>,
        shutdown: CancellationToken,
        client: String,
        deliveries: metrics::Counter,
        addr: limits::Slot,
        seat: crate::presence::Seat,
    ) -> Guard {
        Guard {
            open_streams,
            shutdown,
            client,
            since: Instant::now(),
            delivered: 0,
            deliveries,
            ended: None,
            _addr: addr,
            _seat: seat,
        }
    }

    pub fn delivered(&mut self, events: u64) {
        self.delivered += events;
        self.deliveries.increment(events);
    }

    pub fn end(&mut self, why: Ended) {
        self.ended = Some(why);
    }

    pub fn lagged(&self, missed: u64) {
        tracing::warn!(client = %self.client, missed, "subscriber fell behind; ending its stream so it resumes from the history");
    }

    pub fn client(&self) -> &str {
        &self.client
    }

    pub fn shutdown(&self) -> &tokio_util::sync::CancellationToken {
        &self.shutdown
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        figures::stream_closed(self.ended.unwrap_or(Ended::ClientGone));
        let open = self.open_streams.fetch_sub(1, Ordering::Relaxed) - 1;
        tracing::info!(client = %self.client, delivered = self.delivered, secs = self.since.elapsed().as_secs(), open, "stream closed");
    }
}
