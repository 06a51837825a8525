//! The page's data: what the server hands the app crate (through its `EventBackend`) for the
//! page's first render. The page's publish form posts to `crate::publish::form`.

use crate::state::AppState;
use app::{api::EventBackend, event::PageData};
use axum::{extract::Query, http::request::Parts};
use std::collections::HashMap;

/// The query parameter that carries a refused plain form post's error back to the page.
pub const FORM_ERROR_PARAM: &str = "publish_error";

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
        PageData {
            topics: config.topics.clone(),
            events: self
                .state
                .hub
                .recent_within(config.page_rows, config.page_bytes),
            max_rows: config.page_rows,
            base: config.path_base.clone(),
            form_error,
        }
    }
}
