//! The page's data: what the server hands the app crate (through its `EventBackend`) for the
//! page's first render. The page's publish form posts to `crate::publish::form`.

use crate::{
    access::{Action, Identity, Viewer},
    state::AppState,
};
use app::{api::EventBackend, event::PageData};
use axum::{extract::Query, http::request::Parts};
use std::collections::HashMap;

/// The query parameter that carries a refused plain form post's error back to the page.
pub const FORM_ERROR_PARAM: &str = "publish_error";

/// An event's bytes in the page: its row (the text HTML-escaped) and its entry in the page
/// data the client hydrates from (JSON-escaped, and `<` as `\u003c` so no text can end the
/// script element), plus the few fields around them. Counted, so a history of `<` cannot make
/// the page ten times what `EVENTS_PAGE_BYTES` says.
fn page_cost(event: &app::event::LiveEvent) -> usize {
    const FIELDS: usize = 160;
    let text = &event.text;
    let html: usize = text
        .bytes()
        .map(|b| match b {
            b'<' | b'>' => 4,
            b'&' => 5,
            b'"' | b'\'' => 6,
            _ => 1,
        })
        .sum();
    let lt = text.bytes().filter(|&b| b == b'<').count();
    html + events_core::wire::json_escaped_len(text) + 5 * lt + FIELDS
}

pub struct PageBackend {
    pub state: AppState,
}

impl EventBackend for PageBackend {
    fn page_data(&self) -> PageData {
        let config = &self.state.config;
        let form_error = leptos::prelude::use_context::<Parts>().and_then(|parts| {
            Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
                .ok()
                .and_then(|Query(mut q)| q.remove(FORM_ERROR_PARAM))
        });
        // `admit_to_page` has already answered a refused token; this is the viewer it let by.
        let viewer = leptos::prelude::use_context::<Parts>()
            .and_then(|parts| {
                let identity = parts.extensions.get::<Identity>()?;
                identity.viewer().ok().cloned()
            })
            .unwrap_or_else(Viewer::anonymous);
        let access = &config.access;
        let topics = access.topics(&viewer, Action::Read, &config.hub.topics);
        PageData {
            events: self.state.hub.recent_within(
                config.site.page_rows,
                config.site.page_bytes,
                |event| topics.contains(&event.topic),
                page_cost,
            ),
            publish_topics: access.topics(&viewer, Action::Publish, &config.hub.topics),
            scope: viewer.scope(),
            viewer: viewer.name,
            topics,
            max_rows: config.site.page_rows,
            base: config.iis.path_base.clone(),
            form_error,
            presence: self.state.presence.line(),
        }
    }
}
