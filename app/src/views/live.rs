use super::{
    controls::Controls, delay_chart::DelayChart, event_list::EventList, instance::InstanceLine,
    publish_form::PublishForm, status::StatusBar,
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

/// The page's one timer: browser time and the events of the last second, updated once a
/// second in the browser (so old points slide out of the chart and the rate counts); both 0
/// in the server-rendered page.
#[derive(Clone, Copy)]
pub(super) struct Clock {
    pub now_ms: RwSignal<f64>,
    pub rate: RwSignal<u64>,
}

impl Clock {
    fn start(feed: stream::Feed) -> Clock {
        let clock = Clock {
            now_ms: RwSignal::new(0.0),
            rate: RwSignal::new(0),
        };
        Effect::new(move |_| {
            #[cfg(feature = "hydrate")]
            {
                let received = move || feed.log.with_untracked(|l| l.received);
                let previous = std::cell::Cell::new(received());
                clock.now_ms.set(js_sys::Date::now());
                if let Ok(handle) = set_interval_with_handle(
                    move || {
                        clock.now_ms.set(js_sys::Date::now());
                        let now = received();
                        clock.rate.set(now.saturating_sub(previous.replace(now)));
                    },
                    std::time::Duration::from_secs(1),
                ) {
                    on_cleanup(move || handle.clear());
                }
            }
            #[cfg(not(feature = "hydrate"))]
            let _ = feed;
        });
        clock
    }
}

#[component]
fn Live(data: PageData) -> impl IntoView {
    let PageData {
        topics,
        publish_topics,
        viewer,
        scope,
        events,
        max_rows,
        base,
        form_error,
        presence,
    } = data;
    let feed = stream::connect(base, scope, topics.clone(), max_rows, events, presence);
    let view_state = ViewState {
        paused: RwSignal::new(false),
        frozen: RwSignal::new(None),
        hidden: RwSignal::new(Vec::new()),
    };
    let clock = Clock::start(feed);
    view! {
        <StatusBar feed clock/>
        <InstanceLine feed viewer/>
        <section class="panel">
            <PublishForm topics=publish_topics form_error/>
            <Controls feed view_state topics/>
        </section>
        <DelayChart feed clock/>
        <EventList feed view_state/>
    }
}
