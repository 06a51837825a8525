use super::live::Clock;
use crate::stream::Feed;
use leptos::prelude::*;

/// The badge and the counters: connection state, events received, events per second.
#[component]
pub(super) fn StatusBar(feed: Feed, clock: Clock) -> impl IntoView {
    let status = feed.status;
    // Plain closures, not memos: cheap to recompute, and each memo type costs the client code.
    let received = move || feed.log.with(|l| l.received);
    let resets = move || feed.log.with(|l| l.resets);
    let rate = clock.rate;
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
