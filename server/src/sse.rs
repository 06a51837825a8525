//! `GET /api/events`: the event stream.
//!
//! On connect: a `retry:` hint, then (when resuming) a `reset` if the position is lost and the
//! missed events from the history, then a `ready` event whose `id:` is the newest id, then live
//! events as they are published, with a `ping` event after each quiet heartbeat interval. The
//! stream ends when the server stops (so browsers reconnect and resume on the next process) or
//! when the client falls too far behind (it resumes from the history).

use crate::{
    error::ApiError,
    hub::Resume,
    limits,
    listener::Peer,
    metrics::{self as figures, Ended},
    state::AppState,
    wire,
};
use app::event::{Ready, READY_EVENT, RESET_EVENT};
use axum::{
    body::Body,
    extract::{ConnectInfo, Query, State},
    http::{header, HeaderMap, HeaderValue},
    response::Response,
};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use std::{
    sync::{atomic::Ordering, Arc},
    time::Instant,
};
use tokio::{sync::broadcast::error::RecvError, time::MissedTickBehavior};

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

    // Counted before anything is allocated for the stream; the guard below gives it back.
    let open = state.open_streams.fetch_add(1, Ordering::Relaxed) + 1;
    if open > state.config.max_streams {
        state.open_streams.fetch_sub(1, Ordering::Relaxed);
        metrics::counter!(figures::STREAMS_REFUSED).increment(1);
        return Ok(limits::too_many_streams(open - 1));
    }
    metrics::counter!(figures::STREAMS_OPENED).increment(1);
    if resume != Resume::Fresh {
        figures::resumed(sub.reset.is_some());
    }
    let mut first = BytesMut::new();
    // Each connection gets its own reconnect delay, so a restart does not bring every client
    // back in the same instant.
    let retry = limits::jitter(state.config.retry);
    first.extend_from_slice(&wire::retry(retry.as_millis() as u64));
    if let Some(reset) = &sub.reset {
        let data = serde_json::to_string(reset).unwrap_or_default();
        first.extend_from_slice(&wire::encode(None, Some(RESET_EVENT), &data));
    }
    let mut replayed = 0usize;
    for frame in sub
        .replay
        .iter()
        .filter(|f| wanted(&filter, &f.event.topic))
    {
        first.extend_from_slice(&frame.bytes);
        replayed += 1;
    }
    let deliveries = figures::deliveries();
    // Replayed events are deliveries too: the client receives each one once.
    deliveries.increment(replayed as u64);
    let ready = Ready {
        head: sub.head,
        heartbeat_ms: state.config.heartbeat.as_millis() as u64,
        instance: state.config.instance.clone(),
    };
    let data = serde_json::to_string(&ready).unwrap_or_default();
    first.extend_from_slice(&wire::encode(Some(sub.head), Some(READY_EVENT), &data));
    let pad = state.config.pad.then(wire::padding);
    if let Some(pad) = &pad {
        first.extend_from_slice(pad);
    }

    tracing::info!(%client, ?resume, replayed, reset = sub.reset.is_some(), open, "stream opened");

    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + state.config.heartbeat,
        state.config.heartbeat,
    );
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let conn = Connection {
        first: Some(first.freeze()),
        live: sub.live,
        heartbeat,
        filter,
        pad,
        guard: Guard {
            state: state.clone(),
            client,
            since: Instant::now(),
            delivered: 0,
            deliveries,
            ended: None,
        },
    };
    let body = futures::stream::unfold(conn, |mut conn| async move {
        let next = conn.next().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(next), conn))
    });

    let mut response = Response::new(Body::from_stream(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx (and proxies that honour it) would otherwise buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
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
        topics.push(t.to_string());
    }
    Ok(Some(topics.into()))
}

fn wanted(filter: &Option<Arc<[String]>>, topic: &str) -> bool {
    filter.as_ref().is_none_or(|f| f.iter().any(|t| t == topic))
}

struct Connection {
    first: Option<Bytes>,
    live: tokio::sync::broadcast::Receiver<Arc<crate::hub::Frame>>,
    heartbeat: tokio::time::Interval,
    filter: Option<Arc<[String]>>,
    /// Behind HttpPlatformHandler: written after each event so its buffer lets it through.
    pad: Option<Bytes>,
    guard: Guard,
}

impl Connection {
    /// Ends the stream from our side, remembering why for the figures.
    fn end(&mut self, why: Ended) -> Option<Bytes> {
        self.guard.ended = Some(why);
        None
    }

    /// The next chunk to write, or `None` to end the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        let shutdown = self.guard.state.shutdown.clone();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return self.end(Ended::Shutdown),
                received = self.live.recv() => match received {
                    Ok(frame) if wanted(&self.filter, &frame.event.topic) => {
                        self.guard.delivered += 1;
                        self.guard.deliveries.increment(1);
                        // The ping is for quiet streams only.
                        self.heartbeat.reset();
                        return Some(match &self.pad {
                            None => frame.bytes.clone(),
                            Some(pad) => [&frame.bytes[..], &pad[..]].concat().into(),
                        });
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(client = %self.guard.client, missed, "subscriber fell behind; ending its stream so it resumes from the history");
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
struct Guard {
    state: AppState,
    client: String,
    since: Instant,
    delivered: u64,
    /// The shared delivery counter, looked up once when the stream opens.
    deliveries: metrics::Counter,
    /// Set when the server ended the stream; a body dropped without it means the client went
    /// away (closed, reset, or a write failed or stalled).
    ended: Option<Ended>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        figures::stream_closed(self.ended.unwrap_or(Ended::ClientGone));
        let open = self.state.open_streams.fetch_sub(1, Ordering::Relaxed) - 1;
        tracing::info!(client = %self.client, delivered = self.delivered, secs = self.since.elapsed().as_secs(), open, "stream closed");
    }
}
