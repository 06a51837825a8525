//! Publishing, from both doors, over one path (check, publish on the bus, log, answer):
//!
//! - `POST {base}/api/publish`, JSON, for scripts and curl; with `EVENTS_PUBLISH_KEY` set it
//!   needs the key.
//! - `POST {base}/api/publish_event`, the page's form (`application/x-www-form-urlencoded`).
//!   The page's own users do not have the key, so the key does not guard the form: whoever can
//!   load the page can publish through it (its same-origin check, see [`same_origin`], stops
//!   other sites' pages, not a client that sets the headers itself). `EVENTS_PUBLISH_FORM=off`
//!   closes it, leaving the key as the only way to publish.
//!
//! Either way the topic rules (`crate::access`) have the last word: a publisher the key does
//! not vouch for needs the rules (or its token's grant) to allow it that topic.

use crate::{
    access::{self, Action, Viewer, Who},
    connection::Peer,
    error::ApiError,
    page::FORM_ERROR_PARAM,
    state::AppState,
};
use axum::{
    extract::{
        rejection::{FormRejection, JsonRejection},
        ConnectInfo, State,
    },
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    Form, Json,
};
use events_core::event::LiveEvent;
pub use events_core::publish::{PublishRequest, Published};
use serde::Deserialize;
use std::net::SocketAddr;

/// `POST {base}/api/publish`: 201 and the event's id, or the refusal as JSON.
pub async fn api(
    State(state): State<AppState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    viewer: Result<Viewer, ApiError>,
    body: Result<Json<PublishRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let key = state.config.publish.key.as_deref();
    // The key vouches for any topic; anyone else is who they are, and the rules decide.
    let viewer = match key {
        Some(key) if key_matches(key, &headers) => None,
        _ => {
            let viewer = viewer?;
            state.config.access.admit(&viewer)?;
            if let (Some(key), Who::Anonymous) = (key, &viewer.who) {
                check_key(key, &headers)?;
            }
            Some(viewer)
        }
    };
    state.publish_limit.check(state.client_ip(peer, &headers))?;
    let Json(request) = body?;
    if let Some(viewer) = &viewer {
        may_publish(&state, viewer, &request.topic)?;
    }
    let event = publish(&state, peer, &headers, &request.topic, &request.text, "api").await?;
    Ok((StatusCode::CREATED, Json(published(event))))
}

/// The one path both doors take once the request is allowed: publish on the bus, log, and
/// map the bus's refusal to its status (400 for the sender's mistake, 503 for an event store
/// that cannot be reached).
async fn publish(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    topic: &str,
    text: &str,
    via: &'static str,
) -> Result<LiveEvent, ApiError> {
    let client = state.client_addr(peer, headers);
    match state.bus.publish(topic, text).await {
        Ok(event) => {
            tracing::info!(%client, id = event.id, topic = %event.topic, bytes = event.text.len(), via, "published");
            Ok(event)
        }
        Err(e) => {
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            Err(ApiError::new(status, e.to_string()))
        }
    }
}

fn published(event: LiveEvent) -> Published {
    Published {
        id: event.id,
        topic: event.topic,
        sent_ms: event.sent_ms,
    }
}

/// The rules' answer for this viewer and topic. A topic this server does not have is left to
/// the bus, whose refusal names the topics it has.
fn may_publish(state: &AppState, viewer: &Viewer, topic: &str) -> Result<(), ApiError> {
    let access = &state.config.access;
    let known = state.config.hub.topics.iter().any(|t| t == topic);
    if known && !access.allows(viewer, Action::Publish, topic) {
        return Err(access.refusal(viewer, Action::Publish, topic));
    }
    Ok(())
}

fn key_matches(key: &str, headers: &HeaderMap) -> bool {
    given_key(headers).is_some_and(|given| access::is_key(given, key))
}

fn given_key(headers: &HeaderMap) -> Option<&str> {
    let header = headers.get("x-publish-key").and_then(|v| v.to_str().ok());
    access::bearer(headers).or(header)
}

/// `Authorization: Bearer <key>` or `X-Publish-Key: <key>`, compared in constant time.
fn check_key(key: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    match given_key(headers) {
        Some(_) if key_matches(key, headers) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong publish key")),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "publishing needs a key: send Authorization: Bearer <EVENTS_PUBLISH_KEY>",
        )),
    }
}

#[derive(Deserialize)]
pub struct FormPost {
    topic: String,
    text: String,
}

/// `POST {base}/api/publish_event`, `application/x-www-form-urlencoded` (`topic`, `text`).
///
/// A browser's plain form post (it accepts `text/html`: the page has no JavaScript yet) is
/// sent back to the page with `303 See Other`, the refusal in `?publish_error=`, so the page
/// it gets shows the new row or the error. The hydrated page posts with `fetch` and
/// `Accept: application/json`: `200 {"id", "topic", "sent_ms"}`, or the refusal's status and
/// `{"error"}` as `POST /api/publish` answers it.
pub async fn form(
    State(state): State<AppState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    viewer: Result<Viewer, ApiError>,
    body: Result<Form<FormPost>, FormRejection>,
) -> Response {
    let plain_form_post = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let outcome = match viewer
        .and_then(|viewer| check(&state, &headers, peer, &viewer).map(|()| viewer))
        .and_then(|viewer| {
            let Form(post) = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
            may_publish(&state, &viewer, &post.topic)?;
            Ok(post)
        }) {
        Ok(post) => publish(&state, peer, &headers, &post.topic, &post.text, "form").await,
        Err(refusal) => Err(refusal),
    };
    let page = format!("{}/", state.config.iis.path_base);
    match outcome {
        Ok(_) if plain_form_post => Redirect::to(&page).into_response(),
        Ok(event) => Json(published(event)).into_response(),
        Err(refusal) if plain_form_post => {
            let client = state.client_addr(peer, &headers);
            tracing::warn!(%client, status = refusal.status.as_u16(), error = %refusal.message, via = "form", "publish refused");
            let to = format!(
                "{page}?{FORM_ERROR_PARAM}={}",
                percent_encode(&refusal.message)
            );
            Redirect::to(&to).into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

fn check(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
    viewer: &Viewer,
) -> Result<(), ApiError> {
    if !state.config.publish.form {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this server's publish form is off (EVENTS_PUBLISH_FORM=off); publish with POST /api/publish and the publish key",
        ));
    }
    state.config.access.admit(viewer)?;
    // Against other sites' pages posting through a viewer's browser (which cannot forge these
    // headers), with its cookie or Windows sign-in too; not a password, which is why
    // EVENTS_PUBLISH_FORM exists.
    let signed_in = viewer.who != Who::Anonymous;
    if (signed_in || state.config.publish.key.is_some()) && !same_origin(headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this form takes posts from this site's own pages only",
        ));
    }
    state.publish_limit.check(state.client_ip(peer, headers))
}

/// Every byte but the unreserved ones (RFC 3986) as `%XX`: safe in a query value.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
    use axum::extract::Query;
    use std::collections::HashMap;

    #[test]
    fn a_refusal_survives_the_redirect() {
        let message = "text is longer than 16 bytes & 'quoted' é";
        let encoded = percent_encode(message);
        assert!(encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"%-_.~".contains(&b)));
        let uri: axum::http::Uri = format!("/?{FORM_ERROR_PARAM}={encoded}")
            .parse()
            .expect("uri");
        let Query(q) = Query::<HashMap<String, String>>::try_from_uri(&uri).expect("query");
        assert_eq!(q[FORM_ERROR_PARAM], message);
    }

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
