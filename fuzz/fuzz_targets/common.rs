//! Parsing with a real SSE client parser (not ours), as a browser would.

use eventsource_stream::{Event, Eventsource};
use futures::StreamExt;

pub fn parse(bytes: bytes::Bytes) -> Vec<Event> {
    let stream = futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]).eventsource();
    futures::executor::block_on(stream.collect::<Vec<_>>())
        .into_iter()
        .map(|r| r.expect("our framing always parses"))
        .collect()
}
