//! A correctness soak: hundreds of subscribers, tens of thousands of events, some subscribers
//! dropping and resuming mid-way. Every subscriber must see every id exactly once, in order.

mod common;

use common::{spawn, Options, PATIENCE};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use std::time::{Duration, Instant};

const SUBSCRIBERS: usize = 200;
const EVENTS: u64 = 12_000;
const PUBLISHERS: u64 = 4;
/// Every fifth subscriber drops its connection this many times and resumes.
const DROPS: usize = 3;

#[derive(Default)]
struct Tally {
    ids: Vec<u64>,
    resumes: usize,
    resets: usize,
}

/// Reads until it has seen `last`, resuming with Last-Event-ID whenever its stream ends or it
/// decides to drop it.
async fn subscriber(base: String, index: usize, first: u64, last: u64) -> Tally {
    let mut tally = Tally::default();
    let mut position: Option<u64> = None;
    let drop_every = (index % 5 == 0).then_some((last - first) / (DROPS as u64 + 1));
    let client = common::client();
    // A bound on a hang, not a speed goal: the soak takes about a minute on a quiet 2-core
    // machine and twice that while another build shares the cores (two CI runs at once went
    // past the two minutes this bound once was).
    let deadline = Instant::now() + Duration::from_secs(300);
    'connect: while tally.ids.last().copied() != Some(last) {
        assert!(
            Instant::now() < deadline,
            "subscriber {index} ran out of time"
        );
        let mut req = client.get(format!("{base}/api/events?topic=chat"));
        if let Some(p) = position {
            req = req.header("Last-Event-ID", p.to_string());
            tally.resumes += 1;
        }
        let res = req.send().await.expect("stream");
        assert_eq!(res.status(), 200);
        let mut events = Box::pin(res.bytes_stream().eventsource());
        let mut since_connect = 0u64;
        while let Ok(Some(ev)) = tokio::time::timeout(PATIENCE, events.next()).await {
            let Ok(ev) = ev else { continue 'connect };
            match ev.event.as_str() {
                "ready" => position = ev.id.parse().ok().or(position),
                "reset" => tally.resets += 1,
                "chat" => {
                    let id: u64 = ev.id.parse().expect("numeric id");
                    position = Some(id);
                    if id >= first {
                        tally.ids.push(id);
                    }
                    since_connect += 1;
                    if tally.ids.last().copied() == Some(last) {
                        break 'connect;
                    }
                    if drop_every
                        .is_some_and(|every| since_connect >= every && tally.resumes < DROPS)
                    {
                        continue 'connect; // drop this connection mid-stream and resume
                    }
                }
                _ => {}
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_sees_every_event_once_in_order_across_resumes() {
    let server = spawn(
        Options::new()
            .env("EVENTS_PUBLISH_RATE", "0")
            // The history covers the whole run: a slow reader that falls behind the per-subscriber
            // buffer is cut and must resume without any loss, never with a reset.
            .env("EVENTS_HISTORY", "20000")
            .env("EVENTS_MAX_STREAMS", "1000"),
    );
    // The first id, learned by publishing it.
    let first = server.publish("chat", "start").await;
    let last = first + EVENTS - 1;
    let started = Instant::now();
    let mut readers = Vec::new();
    for index in 0..SUBSCRIBERS {
        // Resume from just before the first event, so every reader is owed the same range.
        let base = server.base.clone();
        readers.push(tokio::spawn(async move {
            subscriber(base, index, first, last).await
        }));
    }
    // Publish the rest from several concurrent publishers: the hub orders them.
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let base = server.base.clone();
        publishers.push(tokio::spawn(async move {
            let client = common::client();
            let mut n = p;
            while n < EVENTS - 1 {
                let res = client
                    .post(format!("{base}/api/publish"))
                    .json(&serde_json::json!({"topic": "chat", "text": format!("event {n}")}))
                    .send()
                    .await
                    .expect("publish");
                assert_eq!(res.status(), 201);
                n += PUBLISHERS;
            }
        }));
    }
    for p in publishers {
        p.await.expect("publisher");
    }
    let published = started.elapsed();
    let mut checked = 0u64;
    let (mut resumes, mut resets) = (0, 0);
    for (index, reader) in readers.into_iter().enumerate() {
        let tally = reader.await.expect("reader");
        resumes += tally.resumes;
        resets += tally.resets;
        // Subscribers that joined after the first event began with the next one they saw live;
        // from there on the sequence must be complete and in order.
        let start = *tally.ids.first().expect("saw events");
        let expected: Vec<u64> = (start..=last).collect();
        assert_eq!(tally.ids.len(), expected.len(), "subscriber {index}: count");
        assert!(
            tally.ids == expected,
            "subscriber {index}: a gap, a duplicate or disorder"
        );
        checked += tally.ids.len() as u64;
    }
    assert_eq!(resets, 0, "every resume was within the history");
    assert!(
        resumes >= (SUBSCRIBERS / 5) * DROPS,
        "the droppers resumed: {resumes}"
    );
    println!(
        "soak: {SUBSCRIBERS} subscribers, {EVENTS} events published in {published:?}, \
         {checked} deliveries checked, {resumes} resumes, {resets} resets, total {:?}",
        started.elapsed()
    );
}
