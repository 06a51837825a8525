//! The page's server functions. They run in the server process and reach the hub through the
//! [`EventBackend`] the server puts in the Leptos context, so this crate never depends on the
//! server crate (the server depends on it).

use crate::event::PageData;
use leptos::prelude::*;

/// What the server functions need from the server: publishing and the recent history.
/// The server implements it on its event bus; both the page's form and `POST /api/publish`
/// go through the same bus, so every subscriber sees every event once, in order.
#[cfg(feature = "ssr")]
pub trait EventBackend: Send + Sync + 'static {
    /// Checks the request (read from the Leptos context when called, before the returned
    /// future first awaits), validates and publishes. A future because publishing may go
    /// through a shared event store (Redis).
    fn publish(&self, topic: String, text: String) -> PublishFuture;
    /// Everything the page needs for its first render.
    fn page_data(&self) -> PageData;
}

/// What [`EventBackend::publish`] returns.
#[cfg(feature = "ssr")]
pub type PublishFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<crate::event::LiveEvent, Refusal>> + Send>,
>;

/// Why a publish was refused: the HTTP status to answer and a message for the sender.
#[cfg(feature = "ssr")]
#[derive(Clone, Debug)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
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
    // Read from the context before the first await.
    let backend = backend()?;
    let plain_form_post = use_context::<axum::http::request::Parts>().is_some_and(|p| {
        p.headers
            .get(axum::http::header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
    });
    let response = use_context::<leptos_axum::ResponseOptions>();
    backend
        .0
        .publish(topic, text)
        .await
        .map(|event| event.id)
        .map_err(|refusal| {
            // A refusal is the sender's mistake (400, 403, 429) or the event store being away
            // (503), as `POST /api/publish` answers it. A plain form post (no JavaScript yet)
            // is the exception: Leptos answers it with a redirect back to the page, error
            // attached, which a status of ours would break.
            if let (false, Some(response), Ok(status)) = (
                plain_form_post,
                response,
                axum::http::StatusCode::from_u16(refusal.status),
            ) {
                response.set_status(status);
            }
            ServerFnError::new(refusal.message)
        })
}
