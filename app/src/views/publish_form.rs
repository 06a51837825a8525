use crate::api::PublishEvent;
use leptos::prelude::*;

/// Publishes through the page's server function; a plain form post, so it works before the
/// client has hydrated too.
#[component]
pub(super) fn PublishForm(topics: Vec<String>) -> impl IntoView {
    let publish = ServerAction::<PublishEvent>::new();
    let outcome = move || {
        publish.value().get().map(|result| match result {
            Ok(id) => {
                view! { <span class="ok" data-testid="publish-result">"published #"{id}</span> }
                    .into_any()
            }
            Err(e) => {
                view! { <span class="error" data-testid="publish-result">{e.to_string()}</span> }
                    .into_any()
            }
        })
    };
    let default_topic = topics
        .iter()
        .find(|t| *t != "tick")
        .cloned()
        .unwrap_or_default();
    view! {
        <ActionForm action=publish attr:class="publish">
            <select name="topic" data-testid="publish-topic" aria-label="Topic">
                {topics
                    .into_iter()
                    .map(|t| {
                        let selected = t == default_topic;
                        view! { <option value=t.clone() selected=selected>{t.clone()}</option> }
                    })
                    .collect_view()}
            </select>
            <input type="text" name="text" required placeholder="Say something" aria-label="Text"
                data-testid="publish-text" autocomplete="off"/>
            <button type="submit" data-testid="publish-submit" disabled=move || publish.pending().get()>
                "Publish"
            </button>
            {outcome}
        </ActionForm>
    }
}
