//! The durable event log behind the ASP.NET Core Module imitation (tests/common/ancm.rs), with
//! no Redis: an overlapped recycle loses nothing, repeats nothing and resets no one, and with
//! `processesPerApplication="2"` every stream sees every event once, whichever process it and
//! the publisher reached. The published folder's `data\` (web.config's EVENTS_DATA_DIR) is
//! what the processes share.

mod common;

use common::ancm::{Handler, Module, Published};
use common::{client, next_any, text_of, PATIENCE};
use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::watch;

const TEST_LIMIT: Duration = Duration::from_secs(120);

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {TEST_LIMIT:?}"));
}

fn quiet(tag: &str) -> Published {
    let folder = Published::new(tag);
    folder.set_env("EVENTS_TICK", "off");
    folder.set_env("EVENTS_PUBLISH_RATE", "0");
    folder
}

/// What a browser does: follow the stream through the front, reconnect with the last id seen
/// whenever it ends, until the event `until` (once known) has arrived. Returns every event
/// id and text in the order seen; a `reset` fails the test.
async fn follow(
    module: Arc<tokio::sync::RwLock<Module>>,
    mut until: watch::Receiver<u64>,
    connected: tokio::sync::mpsc::Sender<()>,
) -> (Vec<(u64, String)>, usize) {
    let mut seen: Vec<(u64, String)> = Vec::new();
    let mut connections = 0;
    loop {
        let last = seen.last().map(|(id, _)| id.to_string());
        let mut stream = {
            let module = module.read().await;
            module.stream("/api/events", last.as_deref()).await
        };
        connections += 1;
        loop {
            let reached = |seen: &[(u64, String)], target: u64| {
                target != 0 && seen.last().is_some_and(|(id, _)| *id >= target)
            };
            let event = tokio::select! {
                e = futures::StreamExt::next(&mut stream) => e,
                _ = until.changed() => {
                    if reached(&seen, *until.borrow_and_update()) {
                        return (seen, connections);
                    }
                    continue;
                }
                _ = tokio::time::sleep(PATIENCE) => panic!(
                    "no event within {PATIENCE:?} on connection {connections}, after {:?}",
                    seen.last()
                ),
            };
            let Some(event) = event else { break };
            assert_ne!(
                event.event, "reset",
                "a reset across the recycle: {}",
                event.data
            );
            if event.event == "ready" {
                if connections == 1 {
                    let _ = connected.send(()).await;
                }
                continue;
            }
            if event.event != "chat" {
                continue;
            }
            let id: u64 = event.id.parse().expect("id");
            seen.push((id, text_of(&event)));
            if reached(&seen, *until.borrow_and_update()) {
                return (seen, connections);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapped_recycle_loses_nothing_repeats_nothing_and_resets_no_one() {
    const CLIENTS: usize = 20;
    bounded(async {
        let folder = quiet("log-recycle");
        let module = Module::start(&folder, Handler::site_root()).await;
        let mut before = Vec::new();
        for n in 0..5 {
            before.push(module.publish("chat", &format!("before {n}")).await);
        }
        let module = Arc::new(tokio::sync::RwLock::new(module));
        let (until_tx, until) = watch::channel(0u64);
        let (connected_tx, mut connected) = tokio::sync::mpsc::channel(CLIENTS);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(follow(module.clone(), until.clone(), connected_tx.clone())))
            .collect();
        for _ in 0..CLIENTS {
            connected.recv().await.expect("a client connected");
        }

        // A publisher that keeps going through the recycle, through the front.
        let publisher = {
            let url = module.read().await.url("/api/publish");
            tokio::spawn(async move {
                let http = client();
                let mut ids = Vec::new();
                for n in 0..60 {
                    let res = http
                        .post(&url)
                        .json(
                            &serde_json::json!({ "topic": "chat", "text": format!("during {n}") }),
                        )
                        .send()
                        .await
                        .expect("publish");
                    assert_eq!(res.status(), 201, "{:?}", res.text().await);
                    let body: serde_json::Value = res.json().await.expect("answer");
                    ids.push(body["id"].as_u64().expect("id"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                ids
            })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (old_port, stopped) = {
            let mut module = module.write().await;
            let old_port = module.port;
            (old_port, module.recycle_overlapped().await)
        };
        assert_eq!(stopped.shutdown_status, Some(202), "{stopped:?}");
        assert!(!stopped.killed, "{stopped:?}");
        let mut published = publisher.await.expect("publisher");
        let last = module.read().await.publish("chat", "after").await;
        published.push(last);
        until_tx.send_replace(last);
        assert_ne!(module.read().await.port, old_port, "a new process");

        for client in clients {
            let (seen, connections) = client.await.expect("client");
            assert!(connections >= 2, "the client reconnected after the recycle");
            let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
            assert!(
                ids.windows(2).all(|w| w[1] == w[0] + 1),
                "nothing lost or repeated: {ids:?}"
            );
            assert_eq!(ids.first().copied(), published.first().copied());
            assert_eq!(ids.last().copied(), Some(last));
            assert_eq!(seen.last().map(|(_, t)| t.as_str()), Some("after"));
        }

        // The new process's first page shows the events from before the recycle.
        let page = common::page_text(&module.read().await.url("/")).await;
        assert!(
            page.contains("before 4") && page.contains("during 59"),
            "the page lost the history"
        );
        let stopped = module.write().await.stop().await;
        assert_eq!(stopped.shutdown_status, Some(202), "{stopped:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_per_application_deliver_every_event_to_every_stream_once() {
    const STREAMS: usize = 10;
    const EVENTS: usize = 40;
    bounded(async {
        let folder = quiet("log-two");
        folder.set_attribute("processesPerApplication", "2");
        let mut module = Module::start(&folder, Handler::site_root()).await;
        assert_eq!(module.ports().len(), 2, "two processes");
        // Streams are spread over both processes by the front's round robin.
        let mut streams = Vec::new();
        for _ in 0..STREAMS {
            let mut s = module.stream("/api/events", None).await;
            assert_eq!(next_any(&mut s).await.event, "ready");
            streams.push(s);
        }
        let started = Instant::now();
        let mut published = Vec::new();
        for n in 0..EVENTS {
            published.push(module.publish("chat", &format!("event {n}")).await);
        }
        let mut sorted = published.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, published, "ids in publish order, one per event");
        for mut s in streams {
            let mut seen = Vec::new();
            while seen.len() < EVENTS {
                let e = common::next_event(&mut s).await;
                seen.push((e.id.parse::<u64>().expect("id"), text_of(&e)));
            }
            let expected: Vec<(u64, String)> = published
                .iter()
                .enumerate()
                .map(|(n, id)| (*id, format!("event {n}")))
                .collect();
            assert_eq!(
                seen, expected,
                "every event once, in one order, with the same ids"
            );
        }
        println!(
            "{EVENTS} events through 2 processes to {STREAMS} streams in {} ms",
            started.elapsed().as_millis()
        );
        let stopped = module.stop().await;
        assert_eq!(stopped.shutdown_status, Some(202), "{stopped:?}");
    })
    .await;
}
