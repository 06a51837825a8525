//! A reconnect storm served from the history: 300 clients come back at once, each about 500
//! events behind (history 1000), while a publisher keeps publishing and a live subscriber
//! measures the publish→receive delay. Every returning client gets exactly what it missed, then
//! the live events (no gap, no duplicate, no reset), and the live subscriber is not held up.
//!
//! Run with `--nocapture` to see the figures.

mod common;

use common::{client, next_any, spawn, Options};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

const HISTORY: usize = 1000;
const CLIENTS: usize = 300;
const BEHIND: usize = 500;
/// Live publishing during the storm: one event per `GAP` for `LIVE_EVENTS` events.
const LIVE_EVENTS: usize = 200;
const GAP: Duration = Duration::from_millis(10);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_is_served_from_the_history_without_holding_up_live_events() {
    let server = Arc::new(spawn(
        Options::new()
            .env("EVENTS_HISTORY", &HISTORY.to_string())
            .env("EVENTS_PUBLISH_RATE", "0")
            .env("EVENTS_HEARTBEAT", "30s")
            .env("RUST_LOG", "info,server::sse=warn,server::publish=warn"),
    ));

    // A full history.
    let mut ids = Vec::with_capacity(HISTORY);
    for i in 0..HISTORY {
        ids.push(server.publish("chat", &format!("history {i}")).await);
    }

    // The live subscriber, connected before the storm.
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Default::default();
    let mut live = server.stream("/api/events", None).await;
    assert_eq!(next_any(&mut live).await.event, "ready");

    // The returning clients: each from its own position, 450-549 events behind.
    let http = client();
    let go = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let mut returning = Vec::new();
    for c in 0..CLIENTS {
        let from = ids[HISTORY - BEHIND - 50 + (c * 37) % 100];
        let (http, go, url) = (http.clone(), go.clone(), server.url("/api/events"));
        returning.push(tokio::spawn(async move {
            go.wait().await;
            let started = Instant::now();
            let res = http
                .get(url)
                .header("Last-Event-ID", from.to_string())
                .send()
                .await
                .expect("reconnect");
            assert_eq!(res.status(), 200);
            let mut events = res.bytes_stream().eventsource();
            let mut seen = Vec::new();
            let mut first_after = None;
            while let Some(ev) = events.next().await {
                let ev = ev.expect("a well-formed event");
                match ev.event.as_str() {
                    "reset" => panic!("client {c} from {from}: reset {}", ev.data),
                    "ready" | "ping" => {}
                    _ => {
                        if first_after.is_none() {
                            first_after = Some(started.elapsed());
                        }
                        let id: u64 = ev.id.parse().expect("numeric id");
                        seen.push(id);
                        if ev.event == "alert" && ev.data.contains("\"last\"") {
                            break;
                        }
                    }
                }
            }
            (from, seen, first_after.unwrap_or_default())
        }));
    }

    // The live publisher: starts with the storm, keeps going, ends with a marked last event.
    let publisher = {
        let (server, sent) = (server.clone(), sent.clone());
        let go = go.clone();
        tokio::spawn(async move {
            go.wait().await;
            let mut last = 0;
            for i in 0..LIVE_EVENTS {
                let text = if i + 1 == LIVE_EVENTS {
                    "last".to_string()
                } else {
                    format!("live {i}")
                };
                let topic = if i + 1 == LIVE_EVENTS {
                    "alert"
                } else {
                    "chat"
                };
                let at = Instant::now();
                let id = server.publish(topic, &text).await;
                sent.lock().expect("sent").insert(id, at);
                last = id;
                tokio::time::sleep(GAP).await;
            }
            last
        })
    };

    let storm_started = Instant::now();
    let mut delays = Vec::new();
    let mut live_ids = Vec::new();
    let received_all = async {
        loop {
            let ev = next_any(&mut live).await;
            let now = Instant::now();
            if ev.event == "ping" {
                continue;
            }
            let id: u64 = ev.id.parse().expect("id");
            live_ids.push(id);
            // The publisher records the time once its POST returns; the event may come first.
            let start = loop {
                if let Some(at) = sent.lock().expect("sent").get(&id).copied() {
                    break at;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            delays.push(now - start);
            if ev.event == "alert" {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), received_all)
        .await
        .expect("the live subscriber got every live event within 2 minutes");
    let last = publisher.await.expect("publisher");
    let live_span = storm_started.elapsed();

    let mut firsts = Vec::new();
    let mut delivered = 0usize;
    for task in returning {
        let (from, seen, first) = tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("every returning client reaches the last event")
            .expect("client task");
        let expected: Vec<u64> = (from + 1..=last).collect();
        assert_eq!(
            seen.len(),
            expected.len(),
            "client from {from}: {} events, expected {}",
            seen.len(),
            expected.len()
        );
        assert_eq!(seen, expected, "client from {from}: a gap or a duplicate");
        delivered += seen.len();
        firsts.push(first);
    }
    let first_live = live_ids.first().copied().expect("live events");
    assert_eq!(
        live_ids,
        (first_live..=last).collect::<Vec<_>>(),
        "the live subscriber saw every live event once, in order"
    );

    delays.sort();
    firsts.sort();
    let (p50, p99, max) = (
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        *delays.last().expect("delays"),
    );
    println!(
        "storm: {CLIENTS} clients resumed ~{BEHIND} behind (history {HISTORY}), {delivered} events \
         delivered to them; {LIVE_EVENTS} live events over {:.1} s",
        live_span.as_secs_f64()
    );
    println!(
        "returning clients, from the storm's start to their first replayed event: p50 {}, p99 {}, max {}",
        ms(percentile(&firsts, 0.5)),
        ms(percentile(&firsts, 0.99)),
        ms(*firsts.last().expect("firsts"))
    );
    println!(
        "live subscriber publish→receive: p50 {}, p99 {}, max {}",
        ms(p50),
        ms(p99),
        ms(max)
    );
    assert!(p99 < Duration::from_secs(1), "live p99 {}", ms(p99));
}
