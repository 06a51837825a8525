//! What every handler shares.

use crate::{config::Config, hub::Hub};
use axum::{extract::FromRef, http::HeaderMap};
use leptos::config::LeptosOptions;
use std::{
    net::SocketAddr,
    sync::{atomic::AtomicUsize, Arc},
};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct AppState {
    /// This process's fan-out core: history ring and broadcast (read by metrics and the page).
    pub hub: Arc<Hub>,
    /// Where events are published and subscriptions come from (the hub itself, or Redis).
    pub bus: crate::bus::Bus,
    pub config: Arc<Config>,
    /// Shared: axum clones the state for every request (each extractor and middleware), and
    /// the options are a dozen strings; a connect storm paid for copying them.
    pub leptos: Arc<LeptosOptions>,
    /// Cancelled when the server starts to stop: every open stream ends at once.
    pub shutdown: CancellationToken,
    /// Streams open right now.
    pub open_streams: Arc<AtomicUsize>,
    /// Who is watching: each stream's seat, and the figures.
    pub presence: Arc<crate::presence::Presence>,
    /// Streams open right now, by client address (`EVENTS_MAX_STREAMS_PER_ADDR`).
    pub streams_per_addr: crate::limits::PerAddress,
    pub publish_limit: Arc<crate::limits::PublishLimit>,
    /// The Prometheus recorder's handle; `None` with `EVENTS_METRICS=off`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> LeptosOptions {
        (*state.leptos).clone()
    }
}

impl AppState {
    /// The address a request is attributed to in the logs.
    pub fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> String {
        crate::iis::client_addr(self.forwarded_by_proxy(peer), peer, headers)
    }

    /// The client's IP, for per-client limits (publish rate, streams per address).
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> std::net::IpAddr {
        crate::iis::client_ip(self.forwarded_by_proxy(peer), peer, headers)
    }

    /// Whether the request's `X-Forwarded-For` was written by a proxy we trust: the module
    /// (with a token set, only requests that carried it get this far) or a listed proxy.
    fn forwarded_by_proxy(&self, peer: SocketAddr) -> bool {
        self.config.iis.token.is_some() || self.is_trusted_proxy(peer.ip())
    }

    /// A peer listed in `EVENTS_TRUSTED_PROXIES`.
    pub fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        crate::limits::is_listed(&self.config.connections.trusted_proxies, ip)
    }
}
