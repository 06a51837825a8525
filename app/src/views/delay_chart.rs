use super::{fixed, live::Clock};
use crate::{
    buffering::{assess, Sample, Verdict},
    stream::Feed,
};
use leptos::prelude::*;

const WINDOW_MS: f64 = 60_000.0;
/// Delays above this are drawn at the top of the chart.
const CEILING_MS: f64 = 5_000.0;
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 120.0;

/// The delivery delay of the last minute, and the verdict of the buffering detector.
#[component]
pub(super) fn DelayChart(feed: Feed, clock: Clock) -> impl IntoView {
    let now = clock.now_ms;
    // A closure, not a memo: a few hundred rows are cheap to walk, and each memo type costs
    // the client code.
    let samples = move || {
        feed.log.with(|log| {
            log.rows
                .iter()
                .filter_map(|r| {
                    r.delay_ms.map(|d| Sample {
                        sent_ms: r.event.sent_ms as f64,
                        arrived_ms: r.event.sent_ms as f64 + d,
                    })
                })
                .collect::<Vec<_>>()
        })
    };
    // Re-assessed as events arrive, not only on the clock: a burst is named as it lands. A
    // closure its three readers each call (once per render at most, see `stream::Sink`).
    let verdict = move || {
        let samples = samples();
        let latest = samples.iter().map(|s| s.arrived_ms).fold(0.0, f64::max);
        assess(&samples, now.get().max(latest), WINDOW_MS)
    };
    // One path of zero-length segments with round caps, a dot per event: one attribute to
    // set per update instead of an element per event (the page may take hundreds a second).
    let points = move || {
        let now = now.get();
        let mut d = String::new();
        for s in samples().iter().filter(|s| now - s.arrived_ms <= WINDOW_MS) {
            let delay = (s.arrived_ms - s.sent_ms).clamp(0.0, CEILING_MS);
            let x = WIDTH * (1.0 - (now - s.arrived_ms).max(0.0) / WINDOW_MS);
            let y = HEIGHT - 8.0 - (HEIGHT - 16.0) * (delay / CEILING_MS).sqrt();
            d.push('M');
            d.push_str(&fixed(x, 1));
            d.push(' ');
            d.push_str(&fixed(y, 1));
            d.push_str("h0");
        }
        d
    };
    let summary = move || {
        let mut delays: Vec<f64> = samples().iter().map(|s| s.arrived_ms - s.sent_ms).collect();
        if delays.is_empty() {
            return "no live events yet".to_string();
        }
        crate::buffering::sort_by_key_f64(&mut delays, |d| *d);
        let p50 = delays[delays.len() / 2];
        let max = delays[delays.len() - 1];
        format!(
            "median {} ms · max {} ms over {} events",
            fixed(p50, 0),
            fixed(max, 0),
            delays.len()
        )
    };
    let verdict_class = move || match verdict() {
        Verdict::Measuring => "measuring",
        Verdict::Live => "live",
        Verdict::Buffered { .. } => "buffered",
    };
    let verdict_text = move || match verdict() {
        Verdict::Measuring => "Measuring the delivery…".to_string(),
        Verdict::Live => "Events arrive as they are sent.".to_string(),
        Verdict::Buffered {
            count,
            sent_span_ms,
            arrival_span_ms,
        } => format!(
            "Buffered: {count} events sent over {} s arrived within {} ms. \
             Something between the server and this browser holds the stream: \
             HttpPlatformHandler (use the ASP.NET Core Module), IIS dynamic compression, or a \
             proxy's response buffering. See \"Troubleshooting\" in the README.",
            fixed(sent_span_ms / 1000.0, 1),
            fixed(arrival_span_ms, 0),
        ),
    };
    view! {
        <section class="delay-chart">
            <h2>"Delivery delay, last minute"</h2>
            // The chart's frame is written out: WIDTH × HEIGHT, the axis 8 above the bottom.
            <svg class="chart" viewBox="0 0 600 120" role="img"
                aria-label="Delivery delay of each live event over the last minute">
                <line class="axis" x1="0" y1="112" x2="600" y2="112"/>
                <text class="tick" x="2" y="12">"5 s"</text>
                <text class="tick" x="2" y="110">"0"</text>
                <text class="tick" x="574" y="120">"now"</text>
                <path class="points" d=points/>
            </svg>
            <p class="delay-summary" data-testid="delay-summary">{summary}</p>
            <p class=move || format!("verdict {}", verdict_class()) data-testid="buffering"
                data-verdict=verdict_class>{verdict_text}</p>
        </section>
    }
}
