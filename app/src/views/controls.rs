use super::live::ViewState;
use crate::stream::Feed;
use leptos::prelude::*;

/// Pause/resume of the view and the topic filter. The stream keeps running while paused;
/// resuming shows everything that came meanwhile.
#[component]
pub(super) fn Controls(feed: Feed, view_state: ViewState, topics: Vec<String>) -> impl IntoView {
    let ViewState {
        paused,
        frozen,
        hidden,
    } = view_state;
    let toggle = move |_| {
        if paused.get_untracked() {
            frozen.set(None);
            paused.set(false);
        } else {
            frozen.set(Some(feed.log.get_untracked()));
            paused.set(true);
        }
    };
    let waiting = move || {
        let now = feed.log.with(|l| l.received);
        frozen.with(|f| f.as_ref().map_or(0, |f| now.saturating_sub(f.received)))
    };
    view! {
        <div class="controls">
            <button class="pause" data-testid="pause" on:click=toggle>
                {move || if paused.get() { "Resume" } else { "Pause" }}
            </button>
            {move || paused.get().then(|| view! {
                <span class="waiting" data-testid="waiting">{waiting}" new"</span>
            })}
            <fieldset class="topics">
                <legend>"Topics"</legend>
                {topics
                    .into_iter()
                    .map(|topic| {
                        let name = topic.clone();
                        let shown = {
                            let name = name.clone();
                            move || !hidden.with(|h| h.contains(&name))
                        };
                        // From the box's own state rather than a flip of ours: a click before
                        // the page hydrated changed the box but not the list, and the next
                        // change brings the two back together.
                        let set = move |ev| {
                            let show = event_target_checked(&ev);
                            hidden.update(|h| {
                                h.retain(|t| *t != name);
                                if !show {
                                    h.push(name.clone());
                                }
                            })
                        };
                        view! {
                            <label class="topic-toggle">
                                <input type="checkbox" checked=shown on:change=set
                                    data-testid=format!("filter-{topic}")/>
                                {topic.clone()}
                            </label>
                        }
                    })
                    .collect_view()}
            </fieldset>
        </div>
    }
}
