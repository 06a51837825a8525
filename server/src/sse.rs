//! `GET /api/events`: the event stream.
//!
//! On connect: a `retry:` hint, then (when resuming) a `reset` if the position is lost and the
//! missed events from the history, then a `ready` event whose `id:` is the newest id, then live
//! events as they are published, with a `ping` event after each quiet heartbeat interval. The
//! stream ends when the server stops (so browsers reconnect and resume on the next process) or
//! when the client falls too far behind (it resumes from the history).

use crate::{
    config::Frontend,
    error::ApiError,
    hub::{Frame, Resume},
    limits,
    listener::Peer,
    metrics::{self as figures, Ended},
    state::AppState,
    wire,
};
use app::event::{Ready, Reset, READY_EVENT, RESET_EVENT};
use axum::{
    extract::{ConnectInfo, Query, State},
    http::{header, HeaderMap, HeaderValue},
    response::Response,
};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};
use tokio::{
    sync::broadcast::{self, error::RecvError},
    time::MissedTickBehavior,
};
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
pub struct StreamQuery {
    /// Comma-separated topics; all when absent.
    topic: Option<String>,
    /// For clients that cannot set the `Last-Event-ID` header (a new browser EventSource).
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

pub async fn events(
    State(state): State<AppState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let client = state.client_addr(peer, &headers);
    let filter = topic_filter(query.topic.as_deref(), state.hub.topics())?;
    // The header wins: it is what the browser sends on its own reconnects, and it is newer than
    // the position written into the URL when this EventSource was created.
    // An empty header says nothing (the query may still hold a position).
    let header = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("(not text)"))
        .filter(|v| !v.trim().is_empty());
    let resume = Resume::parse(header.or(query.last_event_id.as_deref()));
    // Before counting: with Redis this may wait on it, and a client that leaves meanwhile
    // drops this handler at the await, which must not leave the count raised.
    let sub = state.bus.subscribe(&resume).await;

    // Counted before the stream is built; the guard below gives it back.
    let open = state.open_streams.fetch_add(1, Ordering::Relaxed) + 1;
    if open > state.config.max_streams {
        state.open_streams.fetch_sub(1, Ordering::Relaxed);
        metrics::counter!(figures::STREAMS_REFUSED).increment(1);
        return Ok(limits::too_many_streams(open - 1));
    }
    let client_ip = state.client_ip(peer, &headers);
    let addr_slot = match state
        .streams_per_addr
        .acquire(client_ip, state.config.max_streams_per_addr)
    {
        Ok(slot) => slot,
        Err(held) => {
            state.open_streams.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!(figures::STREAMS_REFUSED).increment(1);
            return Ok(limits::too_many_streams_from(client_ip, held));
        }
    };
    metrics::counter!(figures::STREAMS_OPENED).increment(1);
    if resume != Resume::Fresh {
        figures::resumed(sub.reset.is_some());
    }
    // Each connection gets its own reconnect delay, so a restart does not bring every client
    // back in the same instant.
    let retry = limits::jitter(state.config.retry);
    let mut opening = BytesMut::new();
    opening.extend_from_slice(&wire::retry(retry.as_millis() as u64));
    let wanted_frames = sub
        .replay
        .into_iter()
        .filter(|f| wanted(&filter, &f.event.topic));
    let (replay, cut) = within_budget(wanted_frames, state.config.max_replay);
    let mut reset = sub.reset;
    if cut && reset.is_none() {
        // More was missed than one stream may be sent at once: say so, as for a position
        // outside the history, and send the newest events that fit.
        tracing::warn!(%client, max_bytes = state.config.max_replay, "replay cut to EVENTS_MAX_REPLAY; the client gets a reset");
        reset = Some(Reset {
            requested: match &resume {
                Resume::After(id) => id.to_string(),
                other => format!("{other:?}"),
            },
            oldest: replay.first().map(|f| f.event.id),
            head: sub.head,
        });
    }
    if let Some(reset) = &reset {
        let data = serde_json::to_string(reset).unwrap_or_default();
        opening.extend_from_slice(&wire::encode(None, Some(RESET_EVENT), &data));
    }
    let replayed = replay.len();
    let deliveries = figures::deliveries();
    // Replayed events are deliveries too: the client receives each one once.
    deliveries.increment(replayed as u64);
    let ready = Ready {
        head: sub.head,
        heartbeat_ms: state.config.heartbeat.as_millis() as u64,
        instance: state.config.instance.clone(),
    };
    let data = serde_json::to_string(&ready).unwrap_or_default();
    let mut ready = BytesMut::from(&wire::encode(Some(sub.head), Some(READY_EVENT), &data)[..]);
    let pad = state.config.pad.then(wire::padding);
    if let Some(pad) = &pad {
        ready.extend_from_slice(pad);
    }

    tracing::info!(%client, ?resume, replayed, reset = reset.is_some(), open, "stream opened");

    let plan = Plan {
        opening: opening.freeze(),
        replay,
        ready: ready.freeze(),
        live: sub.live,
        heartbeat: state.config.heartbeat,
        filter,
        pad,
        guard: Guard {
            open_streams: state.open_streams.clone(),
            shutdown: state.shutdown.clone(),
            client,
            since: Instant::now(),
            delivered: 0,
            deliveries,
            ended: None,
            _addr: addr_slot,
        },
    };
    // Whoever takes the plan first writes the stream: the direct writer (`direct_stream.rs`) when the
    // connection came in as a plain HTTP/1 stream request, else hyper, by polling this body.
    let handoff = Handoff(Arc::new(Mutex::new(Some(plan))));
    let body = futures::stream::unfold(BodyState::Waiting(handoff.clone()), |body| async move {
        let mut conn = match body {
            BodyState::Waiting(handoff) => Box::new(Connection::new(handoff.take()?)),
            BodyState::Streaming(conn) => conn,
        };
        let next = conn.next().await?;
        Some((
            Ok::<Bytes, std::convert::Infallible>(next),
            BodyState::Streaming(conn),
        ))
    });

    let mut response = Response::new(axum::body::Body::from_stream(body));
    response.extensions_mut().insert(handoff);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx (and proxies that honour it) would otherwise buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if state.config.frontend == Frontend::AspNetCoreModule {
        // IIS's dynamic compression takes any `text/*` answer without a content encoding, and
        // a compressor holds events back; where an admin locked it on at server level,
        // web.config cannot turn it off. A content encoding keeps IIS's hands off, as
        // SignalR's SSE transport does (dotnet/aspnetcore#64719). RFC 9110 says `identity`
        // SHOULD NOT be sent, so only behind the module, where it is needed.
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    Ok(response)
}

/// `None` means every topic. Unknown topics are refused rather than silently matching nothing.
fn topic_filter(value: Option<&str>, known: &[String]) -> Result<Option<Arc<[String]>>, ApiError> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let mut topics = Vec::new();
    for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if !known.iter().any(|k| k == t) {
            return Err(ApiError::bad_request(format!(
                "unknown topic '{}' in ?topic=; this server has: {}",
                t.chars().take(64).collect::<String>(),
                known.join(", ")
            )));
        }
        // Once each: the list is kept for the stream's life and read per event, so 13,000
        // repeats of one name must not cost 13,000 entries.
        if !topics.iter().any(|x| x == t) {
            topics.push(t.to_string());
        }
    }
    if topics.len() == known.len() {
        return Ok(None);
    }
    Ok(Some(topics.into()))
}

/// The newest `frames` whose bytes fit in `max_bytes` together, oldest first, and whether any
/// were left out.
fn within_budget(
    frames: impl DoubleEndedIterator<Item = Arc<Frame>>,
    max_bytes: usize,
) -> (Vec<Arc<Frame>>, bool) {
    let mut bytes = 0usize;
    let mut cut = false;
    let mut kept = Vec::new();
    for frame in frames.rev() {
        bytes = bytes.saturating_add(frame.bytes.len());
        if bytes > max_bytes {
            cut = true;
            break;
        }
        kept.push(frame);
    }
    kept.reverse();
    (kept, cut)
}

fn wanted(filter: &Option<Arc<[String]>>, topic: &str) -> bool {
    filter.as_ref().is_none_or(|f| f.iter().any(|t| t == topic))
}

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
    pub filter: Option<Arc<[String]>>,
    /// Behind HttpPlatformHandler: written after each event so its buffer lets it through.
    pub pad: Option<Bytes>,
    pub guard: Guard,
}

impl Plan {
    /// Counts the stream under the writer that took it.
    pub fn written_by(&self, writer: &'static str) {
        metrics::counter!(figures::STREAMS_WRITTEN, "writer" => writer).increment(1);
    }

    pub fn wants(&self, frame: &Frame) -> bool {
        wanted(&self.filter, &frame.event.topic)
    }
}

/// The stream response's extension: the [`Plan`], for the first writer that takes it.
#[derive(Clone)]
pub struct Handoff(Arc<Mutex<Option<Plan>>>);

impl Handoff {
    pub fn take(&self) -> Option<Plan> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

enum BodyState {
    Waiting(Handoff),
    Streaming(Box<Connection>),
}

/// The stream as hyper writes it: for HTTP/2, and HTTP/1 connections that asked for something
/// else first (see `direct_stream.rs` for the path most streams take).
struct Connection {
    /// The opening, the replay's frames and `ready`, in the order they are written.
    first: std::collections::VecDeque<Bytes>,
    plan: Plan,
    heartbeat: tokio::time::Interval,
    /// Made once and polled on every call, as in `direct_stream.rs`: a new `cancelled()` per
    /// call would take the token's lock twice per delivery.
    stopping: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl Connection {
    fn new(mut plan: Plan) -> Connection {
        plan.written_by("hyper");
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + plan.heartbeat, plan.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Connection {
            // Taken: the plan need not hold the opening and the replay for the stream's life.
            first: std::iter::once(std::mem::take(&mut plan.opening))
                .chain(
                    std::mem::take(&mut plan.replay)
                        .into_iter()
                        .map(|f| f.bytes.clone()),
                )
                .chain([std::mem::take(&mut plan.ready)])
                .collect(),
            stopping: Box::pin(plan.guard.shutdown.clone().cancelled_owned()),
            plan,
            heartbeat,
        }
    }

    /// Ends the stream from our side, remembering why for the figures.
    fn end(&mut self, why: Ended) -> Option<Bytes> {
        self.plan.guard.end(why);
        None
    }

    /// The next chunk to write, or `None` to end the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.pop_front() {
            return Some(first);
        }
        loop {
            tokio::select! {
                biased;
                _ = self.stopping.as_mut() => return self.end(Ended::Shutdown),
                received = self.plan.live.recv() => match received {
                    Ok(frame) if self.plan.wants(&frame) => {
                        self.plan.guard.delivered(1);
                        // The ping is for quiet streams only.
                        self.heartbeat.reset();
                        return Some(match &self.plan.pad {
                            None => frame.bytes.clone(),
                            Some(pad) => [&frame.bytes[..], &pad[..]].concat().into(),
                        });
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        self.plan.guard.lagged(missed);
                        return self.end(Ended::Lagging);
                    }
                    Err(RecvError::Closed) => return self.end(Ended::HubClosed),
                },
                _ = self.heartbeat.tick() => return Some(wire::ping()),
            }
        }
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
}

impl Guard {
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
