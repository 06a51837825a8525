//! What reading a stream costs the load generator per delivery: the hand-written frame
//! splitter and marker search (bench/src/sse.rs) against the `eventsource-stream` crate, on
//! the same bytes (our server's frames, 100-byte texts, cut into 16 KiB reads).
//!
//! `cargo run --release -p bench --example splitter_cost`

use std::time::Instant;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;

#[path = "../src/sse.rs"]
#[allow(dead_code)]
mod sse;

const FRAMES: u64 = 1_000_000;

fn main() {
    let mut body = Vec::new();
    for seq in 0..FRAMES {
        let text = sse::marker_text(1_700_000_000_000_000_000 + seq, seq, 100);
        body.extend_from_slice(
            format!(
                "id: {seq}\nevent: tick\ndata: {{\"id\":{seq},\"topic\":\"tick\",\"text\":\"{text}\",\"sent_ms\":1700000000000}}\n\n"
            )
            .as_bytes(),
        );
    }
    let chunks: Vec<Bytes> = body.chunks(16 * 1024).map(Bytes::copy_from_slice).collect();

    let t = Instant::now();
    let mut splitter = sse::FrameSplitter::default();
    let mut found = 0u64;
    for chunk in &chunks {
        splitter.push(chunk, |frame| {
            if sse::find_marker(frame).is_some() {
                found += 1;
            }
        });
    }
    let ours = t.elapsed();
    assert_eq!(found, FRAMES);

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let t = Instant::now();
    let found = rt.block_on(async {
        let stream =
            futures_util::stream::iter(chunks.iter().cloned().map(Ok::<_, std::io::Error>));
        let mut events = stream.eventsource();
        let mut found = 0u64;
        while let Some(event) = events.next().await {
            let event = event.expect("parses");
            if sse::find_marker(event.data.as_bytes()).is_some() {
                found += 1;
            }
        }
        found
    });
    let crate_time = t.elapsed();
    assert_eq!(found, FRAMES);

    let per = |d: std::time::Duration| d.as_nanos() as f64 / FRAMES as f64;
    println!(
        "per frame: hand-written splitter + marker {:.0} ns, eventsource-stream + marker {:.0} ns ({:.1}x)",
        per(ours),
        per(crate_time),
        per(crate_time) / per(ours)
    );
}
