//! What the page needs from the server while it renders. The server puts an [`EventBackend`]
//! in the Leptos context, so this crate never depends on the server crate (the server depends
//! on it). The form and the stream are plain HTTP endpoints of the server, not server
//! functions: the client only needs `fetch` and `EventSource`.

use crate::event::PageData;

/// The path the publish form posts to, under the path base: a plain form post (no JavaScript
/// yet) is redirected back to the page; a `fetch` with `Accept: application/json` gets JSON.
pub const FORM_PATH: &str = "/api/publish_event";

/// What the page's first render needs from the server.
#[cfg(feature = "ssr")]
pub trait EventBackend: Send + Sync + 'static {
    /// Everything the page needs for its first render (read the request from the Leptos
    /// context for the form's error).
    fn page_data(&self) -> PageData;
}

/// How the server hands its backend to the page (through `provide_context`).
#[cfg(feature = "ssr")]
#[derive(Clone)]
pub struct Backend(pub std::sync::Arc<dyn EventBackend>);

/// The page data for this render: from the server's backend; `None` in the browser (the
/// client reads it from the page instead).
pub fn page_data() -> Option<PageData> {
    #[cfg(feature = "ssr")]
    {
        leptos::prelude::use_context::<Backend>().map(|b| b.0.page_data())
    }
    #[cfg(not(feature = "ssr"))]
    {
        None
    }
}
