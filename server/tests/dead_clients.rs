//! Clients that vanish without a goodbye (a reset, a dropped network, a killed browser) have
//! their streams freed, with their memory.
//!
//! Two ways a vanished client shows up. Straight to the server, a reset arrives on the
//! server's own socket and the connection ends at once. Behind the ASP.NET Core Module it does
//! not: the module only marks the request and closes its backend connection at the backend's
//! next write (ANCM.md), so there the heartbeat is what finds a dead stream. The second
//! round imitates that: the test plays the module, holds each backend connection, and resets
//! it only when the server next writes to it.

mod common;

use common::{raw::RawStream, rss_kib, spawn, Options, Server, PATIENCE};
use std::time::{Duration, Instant};

const CLIENTS: usize = 500;
const OPEN: &str = "sse_open_streams";
const GONE: &str = "sse_streams_closed_total{reason=\"client_gone\"}";

/// [`CLIENTS`] raw HTTP/1.1 streams, each read up to its `ready` event, whose chunk is read
/// whole: the next bytes are a heartbeat.
async fn open_all(server: &Server) -> Vec<RawStream> {
    let mut streams = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut s = RawStream::open(&server.addr(), "/api/events", &[]).await;
        s.until_event("ready").await;
        assert!(
            s.head.status_line.starts_with("HTTP/1.1 200"),
            "{:?}",
            s.head
        );
        streams.push(s);
    }
    server.wait_for_figure(OPEN, |v| v == CLIENTS as f64).await;
    streams
}

/// SO_LINGER 0: closing sends a reset, not a FIN, as when a client's machine or network goes
/// away and a middlebox answers for it.
fn reset(s: impl std::os::fd::AsFd) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("linger 0");
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_clients_are_dropped_within_a_heartbeat() {
    let server = spawn(Options::new().env("EVENTS_HEARTBEAT", "1s"));
    let pid = server.child.id();
    assert_eq!(server.figure(OPEN).await, 0.0);
    let before = rss_kib(pid);

    // Round 1: the clients reset their own connections.
    let streams = open_all(&server).await;
    let peak1 = rss_kib(pid);
    let start = Instant::now();
    streams.into_iter().for_each(|s| reset(s.reader.rd));
    server.wait_for_figure(OPEN, |v| v == 0.0).await;
    let direct = start.elapsed();
    assert_eq!(server.figure(GONE).await, CLIENTS as f64);
    let after1 = rss_kib(pid);

    // Round 2: behind the module. Its clients are gone, but each backend connection stays
    // open until the server writes to it again.
    let streams = open_all(&server).await;
    let peak2 = rss_kib(pid);
    let start = Instant::now();
    let mut lazy = Vec::with_capacity(CLIENTS);
    for mut s in streams {
        lazy.push(tokio::spawn(async move {
            // The server's next write, whatever it is.
            let _ = tokio::time::timeout(PATIENCE, s.reader.more()).await;
            reset(s.reader.rd);
        }));
    }
    server.wait_for_figure(OPEN, |v| v == 0.0).await;
    let behind_module = start.elapsed();
    for task in lazy {
        task.await.expect("reset task");
    }
    assert_eq!(server.figure(GONE).await, 2.0 * CLIENTS as f64);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after2 = rss_kib(pid);

    println!(
        "dead clients: {CLIENTS} streams reset by their clients dropped in {direct:?}; \
         {CLIENTS} behind a module that closes at the next write dropped in {behind_module:?} \
         (heartbeat 1 s). Resident memory KiB: before {before}, peak {peak1}, after {after1}; \
         second round peak {peak2}, after {after2}"
    );
    // Heartbeat + 1 s is the goal; the bound leaves room for a loaded CI machine.
    assert!(direct < Duration::from_secs(5), "took {direct:?}");
    assert!(
        behind_module < Duration::from_secs(5),
        "took {behind_module:?}"
    );
    // The allocator keeps freed pages for reuse rather than returning them, so resident memory
    // need not fall back to `before`; what matters is that a dead stream leaves nothing behind:
    // the second round of 500 reuses the first round's memory instead of adding to it.
    let round = peak1.saturating_sub(before).max(1);
    assert!(
        after2 <= after1 + round / 2 + 2048,
        "memory grew round after round: before {before}, after one round {after1}, after two {after2} KiB"
    );
}
