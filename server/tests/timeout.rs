//! `EVENTS_REQUEST_TIMEOUT` bounds every request except the stream: a stream lives far past
//! it, while a request that does not finish in time gets 408.

mod common;

use common::{next_any, raw::Reader, spawn, text_of, Options, PATIENCE};
use std::time::{Duration, Instant};
use tokio::{io::AsyncWriteExt, net::TcpStream};

#[tokio::test]
async fn a_stream_lives_far_past_the_request_timeout() {
    let server = spawn(
        Options::new()
            .env("EVENTS_REQUEST_TIMEOUT", "200ms")
            .env("EVENTS_HEARTBEAT", "100ms"),
    );
    let mut events = server.stream("/api/events", None).await;
    let opened = Instant::now();
    assert_eq!(next_any(&mut events).await.event, "ready");
    let mut pings = 0;
    let mut published = false;
    // Ten times the timeout, with an event published half-way through.
    while opened.elapsed() < Duration::from_millis(2500) {
        let ev = next_any(&mut events).await;
        match ev.event.as_str() {
            "ping" => pings += 1,
            "chat" => {
                assert_eq!(text_of(&ev), "still here");
                published = true;
            }
            other => panic!("unexpected {other} event"),
        }
        if !published && opened.elapsed() > Duration::from_millis(1200) && pings > 0 {
            server.publish("chat", "still here").await;
        }
    }
    assert!(published, "the published event arrived after 1.2 s");
    // A ping every 100 ms: well over ten in 2.5 s even on a slow machine.
    assert!(pings >= 10, "only {pings} pings in 2.5 s");
    // And it is still open.
    assert_eq!(next_any(&mut events).await.event, "ping");
    println!(
        "stream open {:?} past a 200 ms request timeout, {pings} pings",
        opened.elapsed()
    );
}

#[tokio::test]
async fn a_request_that_does_not_finish_in_time_gets_408() {
    let server = spawn(Options::new().env("EVENTS_REQUEST_TIMEOUT", "200ms"));
    let mut s = TcpStream::connect(server.addr()).await.expect("connect");
    // A publisher that announces 100 bytes and sends 10: the handler waits for the rest.
    s.write_all(
        b"POST /api/publish HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"topic\":",
    )
    .await
    .expect("request");
    let sent = Instant::now();
    let head = tokio::time::timeout(PATIENCE, Reader::new(s).head())
        .await
        .expect("an answer before the test's patience runs out")
        .expect("an answer");
    let waited = sent.elapsed();
    assert!(head.status_line.starts_with("HTTP/1.1 408"), "{head:?}");
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    println!("408 after {waited:?}");
}
