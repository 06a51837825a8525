use crate::{stream::Feed, Instance};
use leptos::prelude::*;

/// Which server instance rendered the page and which one the stream is connected to: with
/// several instances behind a load balancer (a web farm on one Redis), the two may differ,
/// and the stream's changes on reconnect.
#[component]
pub(super) fn InstanceLine(feed: Feed, viewer: Option<String>) -> impl IntoView {
    let page = use_context::<Instance>().unwrap_or_default().0;
    let stream = move || feed.log.with(|l| l.instance.clone());
    view! {
        <p class="instances">
            "Page served by "<b data-testid="served-by">{page}</b>
            " · stream from "
            <b data-testid="stream-from">{move || stream().unwrap_or_else(|| "…".into())}</b>
            " · "
            <span data-testid="viewer">{viewer.map_or("anonymous".into(), |v| format!("signed in as {v}"))}</span>
        </p>
    }
}
