use crate::{stream::Feed, Instance};
use leptos::prelude::*;

/// Which server instance rendered the page and which one the stream is connected to: with
/// several instances behind a load balancer (a web farm on one Redis), the two may differ,
/// and the stream's changes on reconnect.
#[component]
pub(super) fn InstanceLine(feed: Feed, viewer: Option<String>) -> impl IntoView {
    let page = use_context::<Instance>().unwrap_or_default().0;
    let stream = move || feed.log.with(|l| l.instance.clone());
    // One stream per browser (the tabs share it), so on the page this counts browsers.
    let watching = move || {
        feed.log.with(|l| {
            let mut line = format!("{} watching", l.presence.watching);
            for (i, name) in l.presence.names.iter().enumerate() {
                line.push_str(if i == 0 { ": " } else { ", " });
                line.push_str(name);
            }
            line
        })
    };
    view! {
        <p class="instances">
            "Page served by "<b data-testid="served-by">{page}</b>
            " · stream from "
            <b data-testid="stream-from">{move || stream().unwrap_or_else(|| "…".into())}</b>
            " · "
            <span data-testid="viewer">{viewer.map_or("anonymous".into(), |v| format!("signed in as {v}"))}</span>
            " · "
            <span data-testid="presence">{watching}</span>
        </p>
    }
}
