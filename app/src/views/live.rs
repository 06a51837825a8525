use super::{
    controls::Controls, delay_chart::DelayChart, event_list::EventList, publish_form::PublishForm,
    status::StatusBar,
};
use crate::{event::PageData, stream};
use leptos::{either::Either, prelude::*};

/// The page: the live view over the data the server rendered it with (see [`crate::shell`]).
#[component]
pub fn LivePage(data: Option<PageData>) -> impl IntoView {
    view! {
        <main class="live">
            <header class="top">
                <h1>"Live events"</h1>
                <p class="lede">"Server-Sent Events from a Rust server, rendered live by WebAssembly."</p>
            </header>
            {match data {
                Some(data) => Either::Left(view! { <Live data/> }),
                None => Either::Right(view! {
                    <p class="error">"The page came without its data: reload it."</p>
                }),
            }}
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
    pub hidden: RwSignal<Vec<String>>,
}

#[component]
fn Live(data: PageData) -> impl IntoView {
    let PageData {
        topics,
        events,
        max_rows,
        base,
        form_error,
    } = data;
    let feed = stream::connect(base, topics.clone(), max_rows, events);
    let view_state = ViewState {
        paused: RwSignal::new(false),
        frozen: RwSignal::new(None),
        hidden: RwSignal::new(Vec::new()),
    };
    view! {
        <StatusBar feed/>
        <section class="panel">
            <PublishForm topics=topics.clone() form_error/>
            <Controls feed view_state topics/>
        </section>
        <DelayChart feed/>
        <EventList feed view_state/>
    }
}
