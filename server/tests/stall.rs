//! Subscribers that stop reading must not make the server hold an unbounded queue for them,
//! nor slow anyone else down.

mod common;

use common::{next_any, rss_kib, spawn, Options, PATIENCE};
use futures::StreamExt;
use std::{
    io::Write,
    net::TcpStream,
    time::{Duration, Instant},
};

const STALLED: usize = 20;
const EVENTS: usize = 1_500;
/// Large enough that a stalled client's kernel buffers (a 4 KiB receive buffer, a send buffer
/// of up to 4 MiB) fill long before the run ends, so the server sees writes stop.
const TEXT_BYTES: usize = 8 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscribers_cost_bounded_memory_and_slow_no_one() {
    let server = spawn(
        Options::new()
            .env("EVENTS_PUBLISH_RATE", "0")
            .env("EVENTS_SUBSCRIBER_BUFFER", "256")
            .env("EVENTS_HISTORY", "100")
            .env("EVENTS_WRITE_TIMEOUT", "1s"),
    );
    let pid = server.child.id();
    let addr = server.base.trim_start_matches("http://").to_string();
    let before = rss_kib(pid);

    // Clients that ask for the stream and then never read a byte.
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .set_recv_buffer_size(4096)
            .expect("small receive buffer");
        let target: std::net::SocketAddr = addr.parse().expect("addr");
        socket.connect(&target.into()).expect("connect");
        let mut s: TcpStream = socket.into();
        s.write_all(b"GET /api/events HTTP/1.1\r\nHost: test\r\n\r\n")
            .expect("request");
        stalled.push(s);
    }
    // One reader that keeps up, measuring each event's delay.
    let mut reader = server.stream("/api/events", None).await;
    assert_eq!(next_any(&mut reader).await.event, "ready");

    let text = "x".repeat(TEXT_BYTES);
    let client = common::client();
    let mut delays = Vec::with_capacity(EVENTS);
    let mut peak = before;
    for i in 0..EVENTS {
        let sent = Instant::now();
        let res = client
            .post(server.url("/api/publish"))
            .json(&serde_json::json!({"topic": "chat", "text": text}))
            .send()
            .await
            .expect("publish");
        assert_eq!(res.status(), 201, "publishing is never slowed into failure");
        let ev = tokio::time::timeout(PATIENCE, reader.next())
            .await
            .expect("the reader keeps receiving")
            .expect("open");
        assert_eq!(ev.event, "chat");
        delays.push(sent.elapsed());
        if i % 100 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    peak = peak.max(rss_kib(pid));
    delays.sort();
    let p50 = delays[delays.len() / 2];
    let p99 = delays[delays.len() * 99 / 100];
    let growth_mib = (peak.saturating_sub(before)) as f64 / 1024.0;
    // Unbounded queues would hold STALLED × EVENTS × ~8 KiB ≈ 240 MiB; the hub's shared ring
    // and the per-connection buffers keep it to a few MiB.
    let unbounded_mib = (STALLED * EVENTS * (TEXT_BYTES + 100)) as f64 / 1048576.0;
    println!(
        "stall: {STALLED} stalled subscribers, {EVENTS} events of {TEXT_BYTES} B: resident memory \
         {before} KiB -> peak {peak} KiB (+{growth_mib:.1} MiB; unbounded queues would need \
         {unbounded_mib:.0} MiB); the reading subscriber's publish->receive p50 {p50:?}, p99 {p99:?}"
    );
    assert!(
        growth_mib < 64.0,
        "resident memory grew by {growth_mib:.1} MiB"
    );
    assert!(
        p99 < Duration::from_millis(500),
        "the reader was slowed: p99 {p99:?}"
    );
    // The stalled ones were found and dropped: their writes stopped making progress.
    server
        .wait_for_log(&["client stopped reading", "dropping its connection"])
        .await;
    // All of them: only the reading subscriber is left open.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let closed_to_one = server
            .logs
            .lock()
            .expect("logs")
            .iter()
            .any(|l| l.contains("stream closed") && l.trim_end().ends_with("open=1"));
        if closed_to_one {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled streams were not all dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stalled);
}
