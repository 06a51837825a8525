//! `POST /api/publish`, for scripts and curl. The page's form posts to its own endpoint
//! (`crate::backend::publish_form`) that calls the same [`Bus::publish`](crate::bus::Bus::publish).

use crate::{error::ApiError, listener::Peer, state::AppState};
use axum::{
    extract::{rejection::JsonRejection, ConnectInfo, State},
    http::{HeaderMap, StatusCode},
    Json,
};
pub use events_core::publish::{PublishRequest, Published};

pub async fn publish(
    State(state): State<AppState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Result<Json<PublishRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    if let Some(key) = &state.config.publish_key {
        check_key(key, &headers)?;
    }
    state.publish_limit.check(state.client_ip(peer, &headers))?;
    let Json(request) = body?;
    let client = state.client_addr(peer, &headers);
    let event = state
        .bus
        .publish(&request.topic, &request.text)
        .await
        .map_err(|e| {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            ApiError::new(status, e.to_string())
        })?;
    tracing::info!(%client, id = event.id, topic = %event.topic, bytes = event.text.len(), "published");
    Ok((
        StatusCode::CREATED,
        Json(Published {
            id: event.id,
            topic: event.topic,
            sent_ms: event.sent_ms,
        }),
    ))
}

/// `Authorization: Bearer <key>` or `X-Publish-Key: <key>`.
fn check_key(key: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let header = headers.get("x-publish-key").and_then(|v| v.to_str().ok());
    match bearer.or(header) {
        Some(given) if given.trim() == key => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong publish key")),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "publishing needs a key: send Authorization: Bearer <EVENTS_PUBLISH_KEY>",
        )),
    }
}
