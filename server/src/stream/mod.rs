//! `GET {base}/api/events`: the event stream, from the request to the last byte.
//!
//! On connect: a `retry:` hint, then (when resuming) a `reset` if the position is lost and the
//! missed events from the history, then a `ready` event whose `id:` is the newest id, then live
//! events as they are published, with a `ping` event after each quiet heartbeat interval, and
//! with `?presence=1` a `presence` event (who is watching) after `ready` and at each change. The
//! stream ends when the server stops (so browsers reconnect and resume on the next process) or
//! when the client falls too far behind (it resumes from the history).
//!
//! One request, two possible writers, one contract:
//! - this file is the handler: every check and every header, for both writers;
//! - [`plan`] is what it hands over: the opening, the replay, the live feed and the guard that
//!   counts and logs the stream;
//! - [`direct_writer`] writes most streams (plain HTTP/1 connections whose first request is the
//!   stream), owning the socket: their opening, then [`shard`] their live events, one loop per
//!   worker for all of its streams; [`hyper_writer`] writes the rest (HTTP/2, a stream after
//!   another request on its connection) as a response body. `crate::connection` decides which.

pub mod direct_writer;
mod hyper_writer;
pub mod plan;
pub mod shard;

use crate::{
    access::{Action, Viewer},
    config::Frontend,
    connection::Peer,
    error::ApiError,
    hub::{Frame, Resume},
    limits, metrics as figures,
    state::AppState,
    wire,
};
use axum::{
    extract::{ConnectInfo, Query, State},
    http::{header, HeaderMap, HeaderValue},
    response::Response,
};
use bytes::BytesMut;
use events_core::event::{Ready, Reset, PRESENCE_EVENT, READY_EVENT, RESET_EVENT};
use plan::{Guard, Handoff, Plan};
use serde::Deserialize;
use std::sync::{atomic::Ordering, Arc};

#[derive(Deserialize)]
pub struct StreamQuery {
    /// Comma-separated topics; all when absent.
    topic: Option<String>,
    /// For clients that cannot set the `Last-Event-ID` header (a new browser EventSource).
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
    /// `1`: also send `presence` events, who is watching, when it changes (the page asks).
    presence: Option<String>,
}

pub async fn events(
    State(state): State<AppState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    viewer: Viewer,
    Query(query): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let client = state.client_addr(peer, &headers);
    state.config.access.admit(&viewer)?;
    // Checked when the token was, and again here: the stream must not outlive it.
    let expiry = viewer.expires.map(|at| {
        let left = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        Box::pin(tokio::time::sleep(left))
    });
    let filter = topic_filter(query.topic.as_deref(), state.hub.topics())?;
    let filter = readable(&state, &viewer, filter)?;
    let presence = match query.presence.as_deref().map(str::trim) {
        None | Some("" | "0") => false,
        Some("1") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "presence={}: use 1 (send who is watching) or 0",
                other.chars().take(16).collect::<String>()
            )))
        }
    };
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
    if open > state.config.stream.max_streams {
        state.open_streams.fetch_sub(1, Ordering::Relaxed);
        metrics::counter!(figures::STREAMS_REFUSED).increment(1);
        return Ok(limits::too_many_streams(open - 1));
    }
    let client_ip = state.client_ip(peer, &headers);
    let addr_slot = match state
        .streams_per_addr
        .acquire(client_ip, state.config.stream.max_per_addr)
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
    let retry = limits::jitter(state.config.stream.retry);
    let mut opening = BytesMut::new();
    opening.extend_from_slice(&wire::retry(retry.as_millis() as u64));
    let wanted_frames = sub
        .replay
        .into_iter()
        .filter(|f| wanted(&filter, &f.event.topic));
    let (replay, cut) = within_budget(wanted_frames, state.config.stream.max_replay);
    let mut reset = sub.reset;
    if cut && reset.is_none() {
        // More was missed than one stream may be sent at once: say so, as for a position
        // outside the history, and send the newest events that fit.
        tracing::warn!(%client, max_bytes = state.config.stream.max_replay, "replay cut to EVENTS_MAX_REPLAY; the client gets a reset");
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
        heartbeat_ms: state.config.stream.heartbeat.as_millis() as u64,
        instance: state.config.site.instance.clone(),
    };
    let data = serde_json::to_string(&ready).unwrap_or_default();
    let mut ready = BytesMut::from(&wire::encode(Some(sub.head), Some(READY_EVENT), &data)[..]);
    if presence {
        // The figure as it stands, so a page that reconnects is right even when nothing
        // changed meanwhile; the task announces the count with this stream in it shortly.
        let line = serde_json::to_string(&state.presence.line()).unwrap_or_default();
        ready.extend_from_slice(&wire::encode(None, Some(PRESENCE_EVENT), &line));
    }
    let pad = state.config.stream.pad.then(wire::padding);
    if let Some(pad) = &pad {
        ready.extend_from_slice(pad);
    }

    tracing::info!(%client, viewer = %viewer.log_name(), ?resume, replayed, reset = reset.is_some(), open, "stream opened");

    let plan = Plan {
        opening: opening.freeze(),
        replay,
        ready: ready.freeze(),
        live: sub.live,
        heartbeat: state.config.stream.heartbeat,
        lag_limit: state.config.hub.subscriber_buffer,
        presence,
        pad,
        expiry,
        guard: Guard::new(
            state.open_streams.clone(),
            state.shutdown.clone(),
            client,
            deliveries,
            addr_slot,
            state.presence.seat(viewer.name.as_deref(), filter.clone()),
        ),
        filter,
    };
    // Whoever takes the plan first writes the stream: the direct writer when the connection
    // came in as a plain HTTP/1 stream request, else hyper, by polling this body.
    let handoff = Handoff::new(plan);
    let mut response = Response::new(hyper_writer::body(handoff.clone()));
    response.extensions_mut().insert(handoff);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx (and proxies that honour it) would otherwise buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if state.config.iis.frontend == Frontend::AspNetCoreModule {
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

/// The asked-for topics if the viewer may read them all (403 or 401 naming the first it may
/// not), or with none asked for, every topic it may read. The live feed and the replay both
/// go through this one filter, so a private event reaches no stream that may not read it.
fn readable(
    state: &AppState,
    viewer: &Viewer,
    asked: Option<Arc<[String]>>,
) -> Result<Option<Arc<[String]>>, ApiError> {
    let access = &state.config.access;
    let known = state.hub.topics();
    if let Some(asked) = &asked {
        if let Some(closed) = asked
            .iter()
            .find(|t| !access.allows(viewer, Action::Read, t))
        {
            return Err(access.refusal(viewer, Action::Read, closed));
        }
        return Ok(Some(asked.clone()));
    }
    let may = access.topics(viewer, Action::Read, known);
    if may.len() == known.len() {
        return Ok(None);
    }
    if may.is_empty() {
        // Said of the first topic: the refusal names one, and every one is closed.
        let first = known.first().map_or("", String::as_str);
        return Err(access.refusal(viewer, Action::Read, first));
    }
    Ok(Some(may.into()))
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

pub(crate) fn wanted(filter: &Option<Arc<[String]>>, topic: &str) -> bool {
    filter.as_ref().is_none_or(|f| f.iter().any(|t| t == topic))
}
