//! What the page's server functions reach: the hub, through the app crate's `EventBackend`.

use crate::{config::Config, hub::Hub};
use app::{api::EventBackend, event::LiveEvent, event::PageData};
use std::sync::Arc;

pub struct PageBackend {
    pub hub: Arc<Hub>,
    pub config: Arc<Config>,
}

impl EventBackend for PageBackend {
    fn publish(&self, topic: &str, text: &str, client: &str) -> Result<LiveEvent, String> {
        match self.hub.publish(topic, text) {
            Ok(frame) => {
                tracing::info!(%client, id = frame.event.id, topic = %frame.event.topic, bytes = frame.event.text.len(), via = "form", "published");
                Ok(frame.event.clone())
            }
            Err(e) => {
                tracing::warn!(%client, error = %e, via = "form", "publish refused");
                Err(e.to_string())
            }
        }
    }

    fn page_data(&self) -> PageData {
        PageData {
            topics: self.config.topics.clone(),
            events: self.hub.recent(self.config.page_rows),
            max_rows: self.config.page_rows,
            base: self.config.path_base.clone(),
        }
    }
}
