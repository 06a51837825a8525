//! `GET {base}/api/presence`: who is watching, in total and per topic, for whoever may open
//! the page; per topic only for the topics the asker may read, so a private topic's watchers
//! are not shown to someone who may not read it.

use super::Count;
use crate::{
    access::{Action, Viewer},
    error::ApiError,
    state::AppState,
};
use axum::{
    extract::State,
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize)]
struct Report {
    /// Open streams on every instance counted.
    watching: u64,
    /// The signed-in watchers, sorted; absent unless `EVENTS_PRESENCE_NAMES=on`.
    #[serde(skip_serializing_if = "Option::is_none")]
    names: Option<Vec<String>>,
    /// Instances whose figures are in these (several on one Redis).
    instances: usize,
    topics: BTreeMap<String, TopicReport>,
}

#[derive(Serialize)]
struct TopicReport {
    watching: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    names: Option<Vec<String>>,
}

pub async fn api(State(state): State<AppState>, viewer: Viewer) -> Result<Response, ApiError> {
    let access = &state.config.access;
    access.admit(&viewer)?;
    let figures = state.presence.current();
    let shown = |names: &BTreeMap<String, u64>| {
        state
            .presence
            .shows_names()
            .then(|| names.keys().cloned().collect())
    };
    let topics = access
        .topics(&viewer, Action::Read, state.hub.topics())
        .into_iter()
        .map(|topic| {
            let empty = Count::default();
            let count = figures.tally.topics.get(&topic).unwrap_or(&empty);
            let report = TopicReport {
                watching: count.watching,
                names: shown(&count.names),
            };
            (topic, report)
        })
        .collect();
    let report = Report {
        watching: figures.tally.watching,
        names: shown(&figures.tally.names),
        instances: figures.instances,
        topics,
    };
    let mut response = Json(report).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
