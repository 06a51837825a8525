use super::fixed;
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
pub(super) fn DelayChart(feed: Feed) -> impl IntoView {
    // Browser time, ticking once a second so old points slide out; 0 on the server.
    let now = RwSignal::new(0.0f64);
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        {
            now.set(js_sys::Date::now());
            if let Ok(handle) = set_interval_with_handle(
                move || now.set(js_sys::Date::now()),
                std::time::Duration::from_secs(1),
            ) {
                on_cleanup(move || handle.clear());
            }
        }
    });
    let samples = Memo::new(move |_| {
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
    });
    // Re-assessed as events arrive, not only on the clock: a burst is named as it lands.
    let verdict = Memo::new(move |_| {
        let latest = samples.with(|s| s.iter().map(|s| s.arrived_ms).fold(0.0, f64::max));
        assess(&samples.get(), now.get().max(latest), WINDOW_MS)
    });
    // One path of zero-length segments with round caps, a dot per event: one attribute to
    // set per update instead of an element per event (the page may take hundreds a second).
    let points = move || {
        let now = now.get();
        samples.with(|samples| {
            let mut d = String::new();
            for s in samples.iter().filter(|s| now - s.arrived_ms <= WINDOW_MS) {
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
        })
    };
    let summary = move || {
        let mut delays: Vec<f64> =
            samples.with(|s| s.iter().map(|s| s.arrived_ms - s.sent_ms).collect());
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
    let verdict_class = move || match verdict.get() {
        Verdict::Measuring => "measuring",
        Verdict::Live => "live",
        Verdict::Buffered { .. } => "buffered",
    };
    let verdict_text = move || match verdict.get() {
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
