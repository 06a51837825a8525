//! What the page's server functions reach: the event bus, through the app crate's `EventBackend`,
//! with the same checks as `POST /api/publish` except the publish key, which the page's own
//! users do not have: the form takes same-origin browser posts instead (see [`same_origin`]).

use crate::{listener::Peer, state::AppState};
use app::{
    api::{EventBackend, PublishFuture, Refusal},
    event::PageData,
};
use axum::{
    extract::ConnectInfo,
    http::{header, request::Parts, HeaderMap},
};
use std::net::SocketAddr;

pub struct PageBackend {
    pub state: AppState,
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

impl EventBackend for PageBackend {
    fn publish(&self, topic: String, text: String) -> PublishFuture {
        // The request is read from the context now, before anything awaits.
        let request = leptos::prelude::use_context::<Parts>()
            .ok_or_else(|| refuse(500, "server misconfigured: no request in context"))
            .and_then(|parts| {
                let peer = parts
                    .extensions
                    .get::<ConnectInfo<Peer>>()
                    .map(|c| c.0 .0)
                    .ok_or_else(|| refuse(500, "server misconfigured: no peer address"))?;
                Ok((
                    self.state.client_addr(peer, &parts.headers),
                    self.check(&parts.headers, peer),
                ))
            });
        let bus = self.state.bus.clone();
        Box::pin(async move {
            let (client, checked) = request?;
            let outcome = match checked {
                Ok(()) => bus
                    .publish(&topic, &text)
                    .await
                    .map_err(|e| refuse(e.status(), e.to_string())),
                Err(refusal) => Err(refusal),
            };
            match outcome {
                Ok(event) => {
                    tracing::info!(%client, id = event.id, topic = %event.topic, bytes = event.text.len(), via = "form", "published");
                    Ok(event)
                }
                Err(refusal) => {
                    tracing::warn!(%client, status = refusal.status, error = %refusal.message, via = "form", "publish refused");
                    Err(refusal)
                }
            }
        })
    }

    fn page_data(&self) -> PageData {
        let config = &self.state.config;
        PageData {
            topics: config.topics.clone(),
            events: self.state.hub.recent(config.page_rows),
            max_rows: config.page_rows,
            base: config.path_base.clone(),
        }
    }
}

impl PageBackend {
    fn check(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<(), Refusal> {
        if self.state.config.publish_key.is_some() && !same_origin(headers) {
            return Err(refuse(
                403,
                "with a publish key set, the form takes posts from this site's own pages only",
            ));
        }
        self.state
            .publish_limit
            .check(self.state.client_ip(peer, headers))
            .map_err(|e| refuse(e.status.as_u16(), e.message))
    }
}

/// A post made by a page of this site: browsers send `Origin` with every form post and
/// `fetch` (and `Sec-Fetch-Site`); a script elsewhere cannot make a browser send ours.
/// Compared with `Host`, which IIS's module passes through unchanged.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        return host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host));
    }
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "same-origin")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn only_this_sites_pages_are_same_origin() {
        assert!(same_origin(&headers(&[
            ("host", "example.org"),
            ("origin", "https://example.org")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:3000"),
            ("origin", "http://127.0.0.1:3000")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "example.org"),
            ("origin", "https://evil.test")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "example.org"),
            ("origin", "null")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "example.org"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "example.org"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(
            !same_origin(&headers(&[("host", "example.org")])),
            "curl: no browser headers"
        );
    }
}
