//! The stream has two writers (src/stream/direct_writer.rs for a plain HTTP/1 stream request,
//! hyper for a stream asked for on a connection that carried another request first, and HTTP/2);
//! a client must not be able to tell them apart by anything but the framing.
//!
//! `cargo xtask test` also runs the stream's other test files with `SSE_TEST_STREAM_WRITER=
//! hyper`, so the whole contract is checked under both writers.

mod common;

use common::{
    raw::{self, find, RawStream},
    spawn, Options,
};
use std::collections::BTreeMap;
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// The status line and the headers in a map.
fn head(stream: &RawStream) -> (String, BTreeMap<String, String>) {
    let headers = stream.head.headers.iter().cloned().collect();
    (stream.head.status_line.clone(), headers)
}

fn expected_writer() -> &'static str {
    match std::env::var("SSE_TEST_STREAM_WRITER").as_deref() {
        Ok("hyper") => "hyper",
        _ => "direct",
    }
}

#[tokio::test]
async fn both_writers_send_the_same_headers_and_events() {
    let server = spawn(Options::new());

    // A fresh connection whose first request is the stream.
    let mut first = RawStream::open(&server.addr(), "/api/events", &[]).await;
    first.until_event("ready").await;

    // A connection that asked for something else first, then for the stream.
    let mut metrics = RawStream::open(&server.addr(), "/metrics", &[]).await;
    metrics.body().await;
    let mut reused = metrics.reader;
    reused
        .rd
        .write_all(raw::get("/api/events", &[]).as_bytes())
        .await
        .expect("request");
    let mut second = RawStream::answer(reused).await.expect("the stream's head");
    second.until_event("ready").await;

    let id = server.publish("chat", "same bytes for both").await;
    let frame = format!("id: {id}\nevent: chat\n");
    for stream in [&mut first, &mut second] {
        stream
            .until(|got| find(got, frame.as_bytes()).is_some())
            .await;
    }

    let (status1, mut h1) = head(&first);
    let (status2, mut h2) = head(&second);
    assert_eq!(status1, "HTTP/1.1 200 OK");
    assert_eq!(status2, "HTTP/1.1 200 OK");
    assert_eq!(h1["transfer-encoding"], "chunked");
    assert_eq!(h2["transfer-encoding"], "chunked");
    for framing in ["date", "transfer-encoding", "connection"] {
        h1.remove(framing);
        h2.remove(framing);
    }
    assert_eq!(h1, h2, "the same headers from both writers");
    assert_eq!(h1["content-type"], "text/event-stream");
    assert_eq!(h1["cache-control"], "no-cache");
    assert_eq!(h1["x-accel-buffering"], "no");

    // The same event, byte for byte, after the same kind of opening.
    let event = |stream: &RawStream| {
        let text = String::from_utf8(stream.received().to_vec()).expect("UTF-8");
        let at = text.find(&frame).expect("the event");
        let end = text[at..].find("\n\n").expect("event end") + at + 2;
        (
            text[..at].contains("event: ready"),
            text[at..end].to_string(),
        )
    };
    assert_eq!(event(&first), event(&second));
    assert!(event(&first).0, "ready came first");

    let writer = expected_writer();
    let direct_count = server
        .figure("sse_streams_written_total{writer=\"direct\"}")
        .await;
    let hyper_count = server
        .figure("sse_streams_written_total{writer=\"hyper\"}")
        .await;
    if writer == "direct" {
        assert_eq!((direct_count, hyper_count), (1.0, 1.0));
    } else {
        assert_eq!((direct_count, hyper_count), (0.0, 2.0));
    }
}

#[tokio::test]
async fn an_http_1_0_stream_ends_with_its_connection() {
    let server = spawn(Options::new());
    let tcp = TcpStream::connect(server.addr()).await.expect("connect");
    let mut s = RawStream::send(tcp, b"GET /api/events HTTP/1.0\r\n\r\n").await;
    s.until_event("ready").await;
    let id = server.publish("chat", "for an old client").await;
    let frame = format!("id: {id}\nevent: chat\n");
    s.until(|got| find(got, frame.as_bytes()).is_some()).await;
    let (status, headers) = head(&s);
    // As hyper answers an HTTP/1.0 request.
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert!(
        !headers.contains_key("transfer-encoding"),
        "HTTP/1.0 has no chunked encoding: {headers:?}"
    );
    let body = String::from_utf8(s.received().to_vec()).expect("UTF-8");
    assert!(body.starts_with("retry: "), "raw frames: {body:?}");
    assert!(body.contains("data: {"), "{body:?}");
}

#[tokio::test]
async fn refusals_on_a_fresh_connection_are_whole_answers() {
    let server = spawn(Options::new());
    let mut s = RawStream::open(&server.addr(), "/api/events?topic=nope", &[]).await;
    let (status, headers) = head(&s);
    let body = s.body().await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert_eq!(headers["content-length"], body.len().to_string());
    assert_eq!(headers["content-type"], "application/json");
    let error: serde_json::Value = serde_json::from_slice(body).expect("JSON");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown topic 'nope'")),
        "{error}"
    );
    // Nothing else changed: a good stream still opens.
    let mut ok = RawStream::open(&server.addr(), "/api/events", &[]).await;
    ok.until_event("ready").await;
}
