use crate::api::PublishEvent;
use leptos::{html, prelude::*};
use server_fn::ServerFn;

/// Publishes through the page's server function. It is a plain form post to
/// `{base}/api/publish_event`, so it works before the client has hydrated; once hydrated, a
/// submit is sent in the background and the answer shown beside the button.
///
/// Written out instead of Leptos' `<ActionForm>`, whose `action` is the server function's
/// path without the application's path base (wrong under an IIS application).
#[component]
pub(super) fn PublishForm(topics: Vec<String>) -> impl IntoView {
    let publish = ServerAction::<PublishEvent>::new();
    let topic_ref = NodeRef::<html::Select>::new();
    let text_ref = NodeRef::<html::Input>::new();
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (Some(topic), Some(text)) = (topic_ref.get(), text_ref.get()) else {
            return;
        };
        publish.dispatch(PublishEvent {
            topic: topic.value(),
            text: text.value(),
        });
    };
    // Clear the text once it was published, ready for the next one.
    Effect::new(move |_| {
        if let (Some(Ok(_)), Some(text)) = (publish.value().get(), text_ref.get_untracked()) {
            text.set_value("");
        }
    });
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
    let action = format!("{}{}", crate::path_base(), PublishEvent::PATH);
    view! {
        <form class="publish" method="post" action=action on:submit=on_submit>
            <select name="topic" data-testid="publish-topic" aria-label="Topic" node_ref=topic_ref>
                {topics
                    .into_iter()
                    .map(|t| {
                        let selected = t == default_topic;
                        view! { <option value=t.clone() selected=selected>{t.clone()}</option> }
                    })
                    .collect_view()}
            </select>
            <input type="text" name="text" required placeholder="Say something" aria-label="Text"
                data-testid="publish-text" autocomplete="off" node_ref=text_ref/>
            <button type="submit" data-testid="publish-submit" disabled=move || publish.pending().get()>
                "Publish"
            </button>
            {outcome}
        </form>
    }
}
