use crate::stream::Feed;
use leptos::prelude::*;

/// The badge and the counters: connection state, events received, events per second.
#[component]
pub(super) fn StatusBar(feed: Feed) -> impl IntoView {
    let status = feed.status;
    // Plain closures, not memos: cheap to recompute, and each memo type costs the client code.
    let received = move || feed.log.with(|l| l.received);
    let resets = move || feed.log.with(|l| l.resets);
    let rate = RwSignal::new(0u64);
    // Counted in the browser once a second; the server-rendered page shows 0.
    Effect::new(move |_| {
        let previous = std::cell::Cell::new(untrack(received));
        if let Ok(handle) = set_interval_with_handle(
            move || {
                let now = untrack(received);
                rate.set(now.saturating_sub(previous.replace(now)));
            },
            std::time::Duration::from_secs(1),
        ) {
            on_cleanup(move || handle.clear());
        }
    });
    view! {
        <div class="status-bar">
            <span class=move || format!("badge {}", status.get().class()) data-testid="status"
                title=move || status.get().hint()>
                {move || status.get().label()}
            </span>
            <span class="counter">
                <b data-testid="received">{received}</b>" received"
            </span>
            <span class="counter">
                <b data-testid="rate">{move || rate.get()}</b>" /s"
            </span>
            {move || (resets() > 0).then(|| view! {
                <span class="counter warn" title="The server no longer held the events this page missed">
                    <b data-testid="resets">{resets}</b>" history reset"
                </span>
            })}
        </div>
    }
}
