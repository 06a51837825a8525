//! `GET /metrics`: the figures an operator watches to know the viewers are live, in the
//! Prometheus text format.
//!
//! The recorder is the `metrics` crate's global one, filled by `metrics-exporter-prometheus`
//! built without its own HTTP listener: the figures are served by our router, so they sit
//! under the path base and behind the module's token check like every other route, and no
//! second port has to be opened (IIS forwards one). Counters are bumped where things happen
//! (the hub, the stream, the listener); the gauges are read from the state when scraped, so
//! an open stream costs nothing between scrapes.

use crate::state::AppState;
use axum::{
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use metrics::{counter, describe_counter, describe_gauge, gauge, Counter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::{atomic::Ordering, OnceLock};

pub const OPEN_STREAMS: &str = "sse_open_streams";
pub const SUBSCRIBERS: &str = "sse_hub_subscribers";
pub const HISTORY_LENGTH: &str = "sse_history_events";
pub const STREAMS_OPENED: &str = "sse_streams_opened_total";
pub const STREAMS_WRITTEN: &str = "sse_streams_written_total";
pub const STREAMS_REFUSED: &str = "sse_streams_refused_total";
pub const STREAMS_CLOSED: &str = "sse_streams_closed_total";
pub const EVENTS_PUBLISHED: &str = "sse_events_published_total";
pub const DELIVERIES: &str = "sse_deliveries_total";
pub const DROPPED_LAGGING: &str = "sse_subscribers_dropped_lagging_total";
pub const DROPPED_STALLED: &str = "sse_connections_dropped_stalled_total";
pub const RESUMES: &str = "sse_resumes_total";
pub const CONNECTIONS_REFUSED: &str = "sse_connections_refused_total";

/// Why a stream ended, the `reason` label of [`STREAMS_CLOSED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The server is stopping; the client reconnects to the next process.
    Shutdown,
    /// The subscriber fell behind the hub's buffer; it resumes from the history.
    Lagging,
    /// The hub went away (never while serving).
    HubClosed,
    /// The viewer's token expired; the client renews it and resumes.
    Expired,
    /// The body was dropped before it ended: the client closed or reset the connection, a
    /// write failed, or the write deadline passed. Dead clients show up here.
    ClientGone,
}

impl Ended {
    fn label(self) -> &'static str {
        match self {
            Ended::Shutdown => "shutdown",
            Ended::Lagging => "lagging",
            Ended::HubClosed => "hub_closed",
            Ended::ClientGone => "client_gone",
            Ended::Expired => "expired",
        }
    }
}

/// Installs the global recorder once per process (a second [`crate::serve`] in the same
/// process shares it). `None` when another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => {
                describe();
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics are off: cannot install the recorder");
                None
            }
        })
        .clone()
}

/// Help lines, and every counter registered at zero so a scrape shows the whole set from the
/// first request (a counter that appears late breaks `rate()` over its first interval).
fn describe() {
    describe_gauge!(OPEN_STREAMS, "Event streams open right now");
    describe_gauge!(SUBSCRIBERS, "Receivers attached to the hub's broadcast");
    describe_gauge!(
        HISTORY_LENGTH,
        "Events held for resuming with Last-Event-ID"
    );
    describe_counter!(STREAMS_OPENED, "Event streams opened");
    describe_counter!(
        STREAMS_WRITTEN,
        "Event streams by writer (direct: a task owning the socket; hyper: HTTP/2, or a stream after another request on its connection)"
    );
    describe_counter!(
        STREAMS_REFUSED,
        "Event streams refused at EVENTS_MAX_STREAMS or EVENTS_MAX_STREAMS_PER_ADDR"
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections refused at EVENTS_MAX_CONNECTIONS or EVENTS_MAX_CONNECTIONS_PER_ADDR"
    );
    describe_counter!(STREAMS_CLOSED, "Event streams ended, by reason");
    describe_counter!(EVENTS_PUBLISHED, "Events published (every source)");
    describe_counter!(
        DELIVERIES,
        "Events written to a stream (one per subscriber)"
    );
    describe_counter!(
        DROPPED_LAGGING,
        "Streams ended because the subscriber fell behind the hub"
    );
    describe_counter!(
        DROPPED_STALLED,
        "Connections dropped because a write made no progress within EVENTS_WRITE_TIMEOUT"
    );
    describe_counter!(
        RESUMES,
        "Streams opened with a Last-Event-ID, by outcome (continued: no gap; gap: reset sent)"
    );
    for name in [
        STREAMS_OPENED,
        STREAMS_REFUSED,
        CONNECTIONS_REFUSED,
        EVENTS_PUBLISHED,
        DELIVERIES,
        DROPPED_LAGGING,
        DROPPED_STALLED,
    ] {
        counter!(name).absolute(0);
    }
    for reason in [
        Ended::Shutdown,
        Ended::Lagging,
        Ended::HubClosed,
        Ended::ClientGone,
        Ended::Expired,
    ] {
        counter!(STREAMS_CLOSED, "reason" => reason.label()).absolute(0);
    }
    for writer in ["direct", "hyper"] {
        counter!(STREAMS_WRITTEN, "writer" => writer).absolute(0);
    }
    for outcome in ["continued", "gap"] {
        counter!(RESUMES, "outcome" => outcome).absolute(0);
    }
}

/// The delivery counter, looked up once per stream: each delivery is then one atomic add.
pub fn deliveries() -> Counter {
    counter!(DELIVERIES)
}

pub fn stream_closed(reason: Ended) {
    counter!(STREAMS_CLOSED, "reason" => reason.label()).increment(1);
    if reason == Ended::Lagging {
        counter!(DROPPED_LAGGING).increment(1);
    }
}

/// `gap` is whether the client's position could not be continued (a `reset` was sent).
pub fn resumed(gap: bool) {
    let outcome = if gap { "gap" } else { "continued" };
    counter!(RESUMES, "outcome" => outcome).increment(1);
}

/// The handler. Registered only when metrics are on (`EVENTS_METRICS=off` leaves the path to
/// the fallback, a 404).
pub async fn render(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.metrics else {
        return StatusCode::NOT_FOUND.into_response();
    };
    gauge!(OPEN_STREAMS).set(state.open_streams.load(Ordering::Relaxed) as f64);
    gauge!(SUBSCRIBERS).set(state.hub.subscribers() as f64);
    gauge!(HISTORY_LENGTH).set(state.hub.history_len() as f64);
    // Counted by the hub under its lock (every source publishes through it); read here.
    counter!(EVENTS_PUBLISHED).absolute(state.hub.published());
    let mut res = handle.render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
