//! The page's server functions. They run in the server process and reach the hub through the
//! [`EventBackend`] the server puts in the Leptos context, so this crate never depends on the
//! server crate (the server depends on it).

use crate::event::PageData;
use leptos::prelude::*;

/// What the server functions need from the server: publishing and the recent history.
/// The server implements it on its hub; both the page's form and `POST /api/publish` go
/// through the same hub, so every subscriber sees every event once, in order.
#[cfg(feature = "ssr")]
pub trait EventBackend: Send + Sync + 'static {
    /// Validates and publishes; the error text is meant for the person who sent it.
    fn publish(
        &self,
        topic: &str,
        text: &str,
        client: &str,
    ) -> Result<crate::event::LiveEvent, String>;
    /// Everything the page needs for its first render.
    fn page_data(&self) -> PageData;
}

/// How the server hands its backend to the server functions (through `provide_context`).
#[cfg(feature = "ssr")]
#[derive(Clone)]
pub struct Backend(pub std::sync::Arc<dyn EventBackend>);

#[cfg(feature = "ssr")]
fn backend() -> Result<Backend, ServerFnError> {
    use_context::<Backend>()
        .ok_or_else(|| ServerFnError::new("server misconfigured: no event backend in context"))
}

/// The recent events and settings for the first render; called during server rendering and
/// serialised into the page for hydration, so the client starts with the same rows.
#[server(endpoint = "load_page")]
pub async fn load_page() -> Result<PageData, ServerFnError> {
    Ok(backend()?.0.page_data())
}

/// The page's publish form. Same validation and hub as `POST /api/publish`.
#[server(endpoint = "publish_event")]
pub async fn publish_event(topic: String, text: String) -> Result<u64, ServerFnError> {
    let client = client_address().await;
    backend()?
        .0
        .publish(&topic, &text, &client)
        .map(|event| event.id)
        .map_err(|refusal| {
            // A refusal is the sender's mistake: 400, as `POST /api/publish` answers, not 500.
            if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
                response.set_status(axum::http::StatusCode::BAD_REQUEST);
            }
            ServerFnError::new(refusal)
        })
}

/// The peer address for the log line, as the server recorded it for this request.
#[cfg(feature = "ssr")]
async fn client_address() -> String {
    use_context::<ClientAddr>()
        .map(|c| c.0)
        .unwrap_or_else(|| "unknown".to_string())
}

/// The address the server attributes a request to (set per request by the server).
#[cfg(feature = "ssr")]
#[derive(Clone, Debug)]
pub struct ClientAddr(pub String);
