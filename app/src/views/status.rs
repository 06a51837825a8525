use crate::stream::Feed;
use leptos::prelude::*;

/// The badge and the counters: connection state, events received, events per second.
#[component]
pub(super) fn StatusBar(feed: Feed) -> impl IntoView {
    let status = feed.status;
    let received = Memo::new(move |_| feed.log.with(|l| l.received));
    let resets = Memo::new(move |_| feed.log.with(|l| l.resets));
    let rate = RwSignal::new(0u64);
    // Counted in the browser once a second; the server-rendered page shows 0.
    Effect::new(move |_| {
        let previous = std::cell::Cell::new(received.get_untracked());
        if let Ok(handle) = set_interval_with_handle(
            move || {
                let now = received.get_untracked();
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
                <b data-testid="received">{move || received.get()}</b>" received"
            </span>
            <span class="counter">
                <b data-testid="rate">{move || rate.get()}</b>" /s"
            </span>
            <Show when=move || { resets.get() > 0 }>
                <span class="counter warn" title="The server no longer held the events this page missed">
                    <b data-testid="resets">{move || resets.get()}</b>" history reset"
                </span>
            </Show>
        </div>
    }
}
