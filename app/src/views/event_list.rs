use super::live::ViewState;
use crate::stream::{Feed, Received};
use leptos::prelude::*;

/// The live list, newest first, as bounded as the log it reads.
///
/// Rendered as a plain list that is updated row by row in place, not with `<For>`: `<For>`
/// gives every row a reactive owner, and Leptos 0.8 keeps a weak reference to each in the
/// parent owner for the parent's life, so at hundreds of events a second the client's memory
/// grew by about 90 bytes per event (`end2end/tests/load.spec.ts` measured it). Updating
/// in place also touches only the text and attributes that changed.
#[component]
pub(super) fn EventList(feed: Feed, view_state: ViewState) -> impl IntoView {
    let rows = move || {
        let hidden = view_state.hidden.get();
        let pick = |log: &crate::stream::EventLog| -> Vec<Received> {
            log.rows
                .iter()
                .filter(|r| !hidden.contains(&r.event.topic))
                .cloned()
                .collect()
        };
        match view_state.frozen.with(|f| f.as_ref().map(pick)) {
            Some(rows) => rows,
            None => feed.log.with(pick),
        }
    };
    view! {
        <ol class="events" data-testid="events">
            {move || rows().into_iter().map(|row| view! { <EventRow row/> }).collect_view()}
        </ol>
    }
}

#[component]
fn EventRow(row: Received) -> impl IntoView {
    let Received { event, delay_ms } = row;
    let delay = match delay_ms {
        Some(ms) => format!("{} ms", super::fixed(ms.max(0.0), 0)),
        None => "—".to_string(),
    };
    let delay_attr = delay_ms.map(|ms| super::fixed(ms, 1)).unwrap_or_default();
    let topic = event.topic.clone();
    view! {
        <li class="event" data-id=event.id data-topic=topic data-delay=delay_attr>
            <span class="topic">{event.topic}</span>
            <span class="id">"#"{event.id}</span>
            <span class="text">{event.text}</span>
            <span class="delay" title="Delivery delay: browser clock minus the server's send time">{delay}</span>
        </li>
    }
}
