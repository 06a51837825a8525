//! HTTP/2 without TLS (h2c, prior knowledge), as a proxy that speaks HTTP/2 to its backend
//! uses it: the stream answers without the HTTP/1.1 connection headers HTTP/2 forbids
//! (RFC 9113 §8.2.2: a response carrying them is malformed and the client drops it), and
//! events flow.

mod common;

use common::{next_any, next_event, spawn, text_of, Options};
use eventsource_stream::Eventsource;
use futures::StreamExt;

#[tokio::test]
async fn the_stream_speaks_h2c_without_connection_headers() {
    let server = spawn(Options::new());
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let res = h2
        .get(server.url("/api/events"))
        .send()
        .await
        .expect("stream over h2c");
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    for name in [
        "connection",
        "keep-alive",
        "content-length",
        "transfer-encoding",
    ] {
        assert!(h.get(name).is_none(), "{name} on an HTTP/2 stream: {h:?}");
    }
    assert_eq!(h["content-type"], "text/event-stream");
    let mut events = Box::pin(
        res.bytes_stream()
            .eventsource()
            .map(|e| e.expect("a well-formed event")),
    );
    assert_eq!(next_any(&mut events).await.event, "ready");

    // Publishing over the same HTTP/2 connection, multiplexed beside the open stream.
    for i in 0..3 {
        let res = h2
            .post(server.url("/api/publish"))
            .json(&serde_json::json!({"topic": "chat", "text": format!("h2 {i}")}))
            .send()
            .await
            .expect("publish over h2c");
        assert_eq!(res.version(), reqwest::Version::HTTP_2);
        assert_eq!(res.status(), 201);
    }
    for i in 0..3 {
        let ev = next_event(&mut events).await;
        assert_eq!(text_of(&ev), format!("h2 {i}"));
    }
}
