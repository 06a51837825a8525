//! The event model (from `events-core`, shared with the server) and what the page loads.

pub use events_core::event::*;
use serde::{Deserialize, Serialize};

/// What the page needs to render and then go live, fetched once by the page's server function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageData {
    /// Topics the server accepts; the client listens for exactly these event names.
    pub topics: Vec<String>,
    /// The most recent events, oldest first, already in the server-rendered page.
    pub events: Vec<LiveEvent>,
    /// How many rows the live list keeps.
    pub max_rows: usize,
    /// The application's path base (`""` at the site root, `/live` under an IIS application).
    pub base: String,
}
