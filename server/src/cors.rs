//! Cross-origin access to the stream and the publish endpoint, for pages of other sites
//! named in `EVENTS_CORS_ORIGINS` (an intranet portal embedding the live view, say).
//!
//! Credentials are allowed (an `EventSource` created `withCredentials`, a `fetch` with
//! `credentials: "include"` behind Windows authentication), and with credentials the browser
//! accepts only the exact origin echoed back, never `*`. tower-http's `CorsLayer` echoes a
//! listed origin; [`only_listed`] then takes every `access-control-*` header off answers to
//! any other origin (the layer would still send `allow-credentials` and the preflight's
//! methods and headers), so an unlisted site learns nothing and the browser blocks it.
//! Nothing else is opened cross-origin: pages, the form and files stay same-origin.

use axum::{
    extract::{Request, State},
    http::{header, HeaderName, HeaderValue, Method},
    middleware::Next,
    response::Response,
};
use std::{sync::Arc, time::Duration};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub struct Cors {
    pub layer: CorsLayer,
    /// The listed origins, for [`only_listed`].
    pub allowed: Arc<[HeaderValue]>,
}

impl Cors {
    /// `None` when no origin is configured (the default): no layer, no CORS headers.
    pub fn new(origins: &[String]) -> Option<Cors> {
        let allowed: Arc<[HeaderValue]> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        if allowed.is_empty() {
            return None;
        }
        let layer = CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed.iter().cloned()))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST])
            // What a cross-origin publisher or a resuming stream client may send.
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("x-publish-key"),
                HeaderName::from_static("last-event-id"),
            ])
            // Preflights are cached for a while instead of doubling every publish.
            .max_age(Duration::from_secs(600));
        Some(Cors { layer, allowed })
    }
}

/// Outside the `CorsLayer`: answers to a request from an unlisted origin (or none) carry no
/// `access-control-*` header.
pub async fn only_listed(
    State(allowed): State<Arc<[HeaderValue]>>,
    req: Request,
    next: Next,
) -> Response {
    let listed = req
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|o| allowed.contains(o));
    let mut res = next.run(req).await;
    if !listed {
        let headers = res.headers_mut();
        let cors: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in cors {
            headers.remove(name);
        }
    }
    res
}
