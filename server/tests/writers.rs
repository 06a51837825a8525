//! The stream has two writers (src/stream/direct_writer.rs for a plain HTTP/1 stream request,
//! hyper for a stream asked for on a connection that carried another request first, and HTTP/2);
//! a client must not be able to tell them apart by anything but the framing.
//!
//! `cargo xtask test` also runs the stream's other test files with `SSE_TEST_STREAM_WRITER=
//! hyper`, so the whole contract is checked under both writers.

mod common;

use common::{spawn, Options, Server, PATIENCE};
use std::collections::BTreeMap;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const STREAM: &[u8] = b"GET /api/events HTTP/1.1\r\nHost: test\r\n\r\n";

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Reads until `done` holds for everything read so far (bounded by [`PATIENCE`]).
async fn read_until(s: &mut TcpStream, got: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
    let mut buf = [0u8; 8192];
    while !done(got) {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
            .await
            .expect("bytes within the time limit")
            .expect("read");
        assert!(
            n > 0,
            "closed early; got {:?}",
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Splits an answer into its lower-cased headers and its body.
fn split(answer: &[u8]) -> (String, BTreeMap<String, String>, Vec<u8>) {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head");
    let head = String::from_utf8_lossy(&answer[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().expect("status line").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, answer[end + 4..].to_vec())
}

/// Whether `got` holds a whole answer with a `content-length`.
fn whole_answer(got: &[u8]) -> bool {
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let (_, headers, _) = split(got);
    let len: usize = headers["content-length"].parse().expect("length");
    got.len() >= end + 4 + len
}

/// The payload of a chunked body (as far as it has arrived).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(at) = body.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&body[..at]).expect("size"), 16)
            .expect("hex size");
        let data = &body[at + 2..];
        if size == 0 || data.len() < size + 2 {
            break;
        }
        out.extend_from_slice(&data[..size]);
        assert_eq!(&data[size..size + 2], b"\r\n", "chunk end");
        body = &data[size + 2..];
    }
    out
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
    let mut direct = connect(&server).await;
    direct.write_all(STREAM).await.expect("request");
    let mut first = Vec::new();
    read_until(&mut direct, &mut first, |g| contains(g, "event: ready")).await;

    // A connection that asked for something else first, then for the stream.
    let mut reused = connect(&server).await;
    reused
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("request");
    let mut metrics = Vec::new();
    read_until(&mut reused, &mut metrics, whole_answer).await;
    reused.write_all(STREAM).await.expect("request");
    let mut second = Vec::new();
    read_until(&mut reused, &mut second, |g| contains(g, "event: ready")).await;

    let id = server.publish("chat", "same bytes for both").await;
    let frame = format!("id: {id}\nevent: chat\n");
    read_until(&mut direct, &mut first, |g| contains(g, &frame)).await;
    read_until(&mut reused, &mut second, |g| contains(g, &frame)).await;

    let (status1, mut h1, body1) = split(&first);
    let (status2, mut h2, body2) = split(&second);
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
    let event = |body: &[u8]| {
        let text = String::from_utf8(dechunk(body)).expect("UTF-8");
        let at = text.find(&frame).expect("the event");
        let end = text[at..].find("\n\n").expect("event end") + at + 2;
        (
            text[..at].contains("event: ready"),
            text[at..end].to_string(),
        )
    };
    assert_eq!(event(&body1), event(&body2));
    assert!(event(&body1).0, "ready came first");

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
    let mut s = connect(&server).await;
    s.write_all(b"GET /api/events HTTP/1.0\r\n\r\n")
        .await
        .expect("request");
    let mut got = Vec::new();
    read_until(&mut s, &mut got, |g| contains(g, "event: ready")).await;
    let id = server.publish("chat", "for an old client").await;
    let frame = format!("id: {id}\nevent: chat\n");
    read_until(&mut s, &mut got, |g| contains(g, &frame)).await;
    let (status, headers, body) = split(&got);
    // As hyper answers an HTTP/1.0 request.
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert!(
        !headers.contains_key("transfer-encoding"),
        "HTTP/1.0 has no chunked encoding: {headers:?}"
    );
    let body = String::from_utf8(body).expect("UTF-8");
    assert!(body.starts_with("retry: "), "raw frames: {body:?}");
    assert!(body.contains("data: {"), "{body:?}");
}

#[tokio::test]
async fn refusals_on_a_fresh_connection_are_whole_answers() {
    let server = spawn(Options::new());
    let mut s = connect(&server).await;
    s.write_all(b"GET /api/events?topic=nope HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("request");
    let mut got = Vec::new();
    read_until(&mut s, &mut got, whole_answer).await;
    let (status, headers, body) = split(&got);
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert_eq!(headers["content-length"], body.len().to_string());
    assert_eq!(headers["content-type"], "application/json");
    let error: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown topic 'nope'")),
        "{error}"
    );
    // Nothing else changed: a good stream still opens.
    let mut ok = connect(&server).await;
    ok.write_all(STREAM).await.expect("request");
    let mut got = Vec::new();
    read_until(&mut ok, &mut got, |g| contains(g, "event: ready")).await;
}
