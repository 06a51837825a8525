use super::{
    controls::Controls, delay_chart::DelayChart, event_list::EventList, instance::InstanceLine,
    publish_form::PublishForm, status::StatusBar,
};
use crate::{api::load_page, event::PageData, stream};
use leptos::prelude::*;
use std::collections::BTreeSet;

/// The route: loads the page data (during server rendering; the client reads it back from the
/// page) and then shows the live view.
#[component]
pub fn LivePage() -> impl IntoView {
    let data = OnceResource::new(load_page());
    view! {
        <main class="live">
            <header class="top">
                <h1>"Live events"</h1>
                <p class="lede">"Server-Sent Events from a Rust server, rendered live by WebAssembly."</p>
            </header>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match data.await {
                        Ok(data) => view! { <Live data/> }.into_any(),
                        Err(e) => view! {
                            <p class="error">"The server could not load the events: " {e.to_string()}</p>
                        }.into_any(),
                    }
                })}
            </Suspense>
        </main>
    }
}

/// View state that belongs to the page, not the stream: pausing and the topic filter.
#[derive(Clone, Copy)]
pub(super) struct ViewState {
    pub paused: RwSignal<bool>,
    /// The log as it was when the view was paused; the stream keeps filling the live one.
    pub frozen: RwSignal<Option<stream::EventLog>>,
    /// Topics the reader has switched off.
    pub hidden: RwSignal<BTreeSet<String>>,
}

#[component]
fn Live(data: PageData) -> impl IntoView {
    let PageData {
        topics,
        events,
        max_rows,
        base,
    } = data;
    let feed = stream::connect(base, topics.clone(), max_rows, events);
    let view_state = ViewState {
        paused: RwSignal::new(false),
        frozen: RwSignal::new(None),
        hidden: RwSignal::new(BTreeSet::new()),
    };
    view! {
        <StatusBar feed/>
        <InstanceLine feed/>
        <section class="panel">
            <PublishForm topics=topics.clone()/>
            <Controls feed view_state topics/>
        </section>
        <DelayChart feed/>
        <EventList feed view_state/>
    }
}
