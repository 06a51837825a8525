//! A restart does not bring every viewer back in the same instant: each connection got its
//! own `retry:` (the base ± 25 %), and clients that honour it, as browsers do, come back
//! spread over seconds.

mod common;

use common::{free_port, spawn, Options, PATIENCE};
use futures::StreamExt;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const CLIENTS: usize = 200;

fn options(port: u16) -> Options {
    Options::new()
        .env("LEPTOS_SITE_ADDR", &format!("127.0.0.1:{port}"))
        .env("EVENTS_RETRY", "4s")
        .env("EVENTS_MAX_STREAMS", "1000")
}

/// What a browser's EventSource does: connect, remember `retry:`, read until the stream ends,
/// wait `retry`, reconnect (and after a failed attempt, wait again). Reports each successful
/// connection.
async fn viewer(url: String, connected: mpsc::UnboundedSender<(usize, Instant)>, me: usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut retry = Duration::from_secs(4);
    for _ in 0..2 {
        loop {
            match client.get(&url).send().await {
                Ok(res) if res.status() == 200 => {
                    let _ = connected.send((me, Instant::now()));
                    let mut body = res.bytes_stream();
                    let mut seen = Vec::new();
                    while let Some(Ok(chunk)) = body.next().await {
                        if seen.len() < 64 {
                            seen.extend_from_slice(&chunk);
                            if let Some(ms) = String::from_utf8_lossy(&seen)
                                .strip_prefix("retry: ")
                                .and_then(|r| r.split_once('\n'))
                                .and_then(|(ms, _)| ms.parse::<u64>().ok())
                            {
                                retry = Duration::from_millis(ms);
                            }
                        }
                    }
                    break;
                }
                _ => tokio::time::sleep(retry).await,
            }
        }
        tokio::time::sleep(retry).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_spreads_the_reconnects_over_seconds() {
    let port = free_port();
    let mut first = spawn(options(port));
    let url = first.url("/api/events");
    let (tx, mut rx) = mpsc::unbounded_channel();
    for me in 0..CLIENTS {
        tokio::spawn(viewer(url.clone(), tx.clone(), me));
    }
    for _ in 0..CLIENTS {
        tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("every viewer connects")
            .expect("open");
    }

    // Stop as a service manager does, then start the next process on the same port.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &first.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let stopped = Instant::now();
    let _ = first.child.wait();
    let _second = spawn(options(port));
    let started = stopped.elapsed();

    let mut back = Vec::with_capacity(CLIENTS);
    while back.len() < CLIENTS {
        let (_, at) = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("every viewer comes back")
            .expect("open");
        back.push(at.duration_since(stopped));
    }
    back.sort();
    let (min, max) = (back[0], back[CLIENTS - 1]);
    let spread = max - min;
    let per_half_second: Vec<usize> = (0..12)
        .map(|i| {
            let lo = Duration::from_millis(500 * i);
            back.iter()
                .filter(|t| **t >= lo && **t < lo + Duration::from_millis(500))
                .count()
        })
        .collect();
    println!(
        "reconnect storm: {CLIENTS} viewers, retry 4 s ± 25 %, next process up {started:?} \
         after SIGTERM; back between {min:?} and {max:?} (spread {spread:?}); per 500 ms: \
         {per_half_second:?}"
    );
    assert!(
        spread >= Duration::from_secs(1),
        "reconnects bunched within {spread:?}"
    );
}
