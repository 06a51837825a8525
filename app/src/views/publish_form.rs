use crate::api::FORM_PATH;
use leptos::{html, prelude::*};

/// What the last publish from this form came to: the new event's id, or the server's refusal.
type Outcome = Option<Result<u64, String>>;

/// Publishes through the server's form endpoint (`{base}/api/publish_event`). It is a plain
/// form post, so it works before the client has hydrated (the server redirects back to the
/// page, with the refusal if there was one); once hydrated, a submit is sent with `fetch` in
/// the background and the answer shown beside the button.
#[component]
pub(super) fn PublishForm(topics: Vec<String>, form_error: Option<String>) -> impl IntoView {
    let outcome = RwSignal::<Outcome>::new(form_error.map(Err));
    let pending = RwSignal::new(false);
    let topic_ref = NodeRef::<html::Select>::new();
    let text_ref = NodeRef::<html::Input>::new();
    let action = format!("{}{FORM_PATH}", crate::path_base());
    let on_submit = {
        let url = action.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            let (Some(topic), Some(text)) = (topic_ref.get(), text_ref.get()) else {
                return;
            };
            if pending.get_untracked() {
                return;
            }
            pending.set(true);
            let (url, topic) = (url.clone(), topic.value());
            leptos::task::spawn_local(async move {
                let result = post(&url, &topic, &text.value()).await;
                if result.is_ok() {
                    // Cleared once published, ready for the next one.
                    text.set_value("");
                }
                outcome.set(Some(result));
                pending.set(false);
            });
        }
    };
    let shown = move || {
        // One element whose class and text change: a view per case costs the client more.
        outcome.get().map(|result| {
            let (class, text) = match result {
                Ok(id) => ("ok", format!("published #{id}")),
                Err(e) => ("error", e),
            };
            view! { <span class=class data-testid="publish-result">{text}</span> }
        })
    };
    let default_topic = topics
        .iter()
        .find(|t| *t != "tick")
        .cloned()
        .unwrap_or_default();
    // A viewer who may publish on no topic gets no form (hidden, not left out: a view that
    // may or may not be there costs the client more than an attribute).
    let nothing_to_publish = topics.is_empty();
    view! {
        <form class="publish" method="post" action=action on:submit=on_submit hidden=nothing_to_publish>
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
            <button type="submit" data-testid="publish-submit" disabled=move || pending.get()>
                "Publish"
            </button>
            {shown}
        </form>
    }
}

/// Posts the form as `application/x-www-form-urlencoded`, asking for JSON: `{"id": N}` when
/// published, `{"error": "..."}` with the refusal's status otherwise.
#[cfg(feature = "hydrate")]
async fn post(url: &str, topic: &str, text: &str) -> Result<u64, String> {
    use crate::json;
    use wasm_bindgen::{JsCast, JsValue};
    use wasm_bindgen_futures::JsFuture;
    let failed = |e: JsValue| {
        e.as_string()
            .or_else(|| {
                e.dyn_ref::<js_sys::Error>()
                    .map(|e| String::from(e.message()))
            })
            .unwrap_or_else(|| "the request failed".into())
    };
    let params = web_sys::UrlSearchParams::new().map_err(failed)?;
    params.append("topic", topic);
    params.append("text", text);
    let headers = web_sys::Headers::new().map_err(failed)?;
    headers.set("Accept", "application/json").map_err(failed)?;
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&params);
    let window = web_sys::window().ok_or("no window")?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str_and_init(url, &init))
        .await
        .map_err(failed)?
        .unchecked_into();
    let body = match response.json() {
        Ok(promise) => JsFuture::from(promise).await.unwrap_or(JsValue::UNDEFINED),
        Err(_) => JsValue::UNDEFINED,
    };
    if response.ok() {
        json::number(&body, "id").ok_or_else(|| "the server's answer has no id".into())
    } else {
        Err(json::string(&body, "error").unwrap_or_else(|| format!("HTTP {}", response.status())))
    }
}

/// On the server a submit never happens: the page is rendered, not used.
#[cfg(not(feature = "hydrate"))]
async fn post(_url: &str, _topic: &str, _text: &str) -> Result<u64, String> {
    Err("the page is not running in a browser".into())
}
