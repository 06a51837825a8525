//! `GET /metrics`: the figures move as the server works, they sit behind the module's token
//! like everything else, and they can be turned off.

mod common;

use common::{client, next_any, next_event, spawn, Options, PATIENCE};
use std::{
    io::{Read, Write},
    net::TcpStream,
};

const OPEN: &str = "sse_open_streams";
const OPENED: &str = "sse_streams_opened_total";
const PUBLISHED: &str = "sse_events_published_total";
const DELIVERIES: &str = "sse_deliveries_total";
const HISTORY: &str = "sse_history_events";
const CONTINUED: &str = "sse_resumes_total{outcome=\"continued\"}";
const GAP: &str = "sse_resumes_total{outcome=\"gap\"}";
const CLIENT_GONE: &str = "sse_streams_closed_total{reason=\"client_gone\"}";
const LAGGING: &str = "sse_subscribers_dropped_lagging_total";
const CLOSED_LAGGING: &str = "sse_streams_closed_total{reason=\"lagging\"}";
const STALLED: &str = "sse_connections_dropped_stalled_total";

#[tokio::test]
async fn the_figures_follow_streams_publishes_and_resumes() {
    let server = spawn(Options::new().env("EVENTS_HISTORY", "3"));
    let res = server
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics");
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .expect("text")
            .starts_with("text/plain; version=0.0.4"),
        "the Prometheus text format"
    );
    let text = res.text().await.expect("text");
    assert!(text.contains("# HELP sse_open_streams"), "{text}");
    for key in [OPEN, OPENED, PUBLISHED, DELIVERIES, HISTORY, CONTINUED, GAP] {
        assert_eq!(common::figure(&text, key), Some(0.0), "{key} in:\n{text}");
    }

    // Two live streams, three events: each event delivered to each stream.
    let mut a = server.stream("/api/events", None).await;
    let mut b = server.stream("/api/events", None).await;
    assert_eq!(next_any(&mut a).await.event, "ready");
    assert_eq!(next_any(&mut b).await.event, "ready");
    assert_eq!(server.figure(OPEN).await, 2.0);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(server.publish("chat", &format!("m{i}")).await);
    }
    for s in [&mut a, &mut b] {
        for id in &ids {
            assert_eq!(next_event(s).await.id, id.to_string());
        }
    }
    assert_eq!(server.figure(PUBLISHED).await, 3.0);
    assert_eq!(server.figure(DELIVERIES).await, 6.0);
    assert_eq!(server.figure(HISTORY).await, 3.0);

    // A resume the history covers: two replayed deliveries, no gap.
    let mut c = server
        .stream("/api/events", Some(&ids[0].to_string()))
        .await;
    assert_eq!(next_any(&mut c).await.id, ids[1].to_string());
    assert_eq!(next_any(&mut c).await.id, ids[2].to_string());
    assert_eq!(next_any(&mut c).await.event, "ready");
    assert_eq!(server.figure(CONTINUED).await, 1.0);
    assert_eq!(server.figure(GAP).await, 0.0);

    // Two more: three live streams get them; the history (3) no longer holds ids[1].
    for i in 3..5 {
        ids.push(server.publish("chat", &format!("m{i}")).await);
    }
    for s in [&mut a, &mut b, &mut c] {
        for id in &ids[3..] {
            assert_eq!(next_event(s).await.id, id.to_string());
        }
    }
    let mut d = server
        .stream("/api/events", Some(&ids[0].to_string()))
        .await;
    assert_eq!(next_any(&mut d).await.event, "reset");
    for id in &ids[2..] {
        assert_eq!(next_any(&mut d).await.id, id.to_string());
    }
    assert_eq!(server.figure(GAP).await, 1.0);
    assert_eq!(server.figure(CONTINUED).await, 1.0);
    assert_eq!(server.figure(PUBLISHED).await, 5.0);
    // 6 + 2 replayed + 3 × 2 live + 3 replayed after the gap.
    assert_eq!(server.figure(DELIVERIES).await, 17.0);
    assert_eq!(server.figure(HISTORY).await, 3.0);
    assert_eq!(server.figure(OPEN).await, 4.0);
    assert_eq!(server.figure(OPENED).await, 4.0);

    // A client that goes away is counted out.
    drop(a);
    server.wait_for_figure(OPEN, |v| v == 3.0).await;
    assert_eq!(server.figure(CLIENT_GONE).await, 1.0);
    drop((b, c, d));
    server.wait_for_figure(OPEN, |v| v == 0.0).await;
    println!("{}", server.scrape().await);
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let server = spawn(Options::new().env("EVENTS_METRICS", "off"));
    let res = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn metrics_sit_under_the_path_base_behind_the_token() {
    let token = "6d3b1a9e-0000-4000-8000-000000000001";
    let server = spawn(Options::new().aspnetcore(token, "/live"));
    assert!(server.base.ends_with("/live"), "{}", server.base);
    let res = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 400, "no token, no figures");
    assert!(server.scrape().await.contains("sse_open_streams 0"));
    let res = client()
        .get(format!("{}/metrics", server.origin()))
        .header("MS-ASPNETCORE-TOKEN", token)
        .send()
        .await
        .expect("request");
    assert_eq!(
        res.status(),
        404,
        "under the path base, not at the site root"
    );
}

/// A client asking for the stream with a tiny receive buffer, reading nothing yet.
fn silent_client(server: &common::Server) -> TcpStream {
    let addr: std::net::SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    socket.connect(&addr.into()).expect("connect");
    let mut s: TcpStream = socket.into();
    s.write_all(b"GET /api/events HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("request");
    s
}

/// More than a socket's send buffer (4 MiB at most here) can hold for a client that reads
/// nothing, so the server's writes to it stop.
async fn flood(server: &common::Server) {
    let text = "x".repeat(60_000);
    for _ in 0..150 {
        server.publish("chat", &text).await;
    }
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_counted_as_lagging() {
    let server = spawn(
        Options::new()
            .env("EVENTS_SUBSCRIBER_BUFFER", "1")
            .env("EVENTS_PUBLISH_RATE", "0")
            .env("EVENTS_HISTORY", "10"),
    );
    let mut slow = silent_client(&server);
    server.wait_for_figure(OPEN, |v| v == 1.0).await;
    flood(&server).await;
    // The stream falls behind while its writes are blocked (the hub keeps one event for it);
    // reading again lets the server write, poll the stream, and find it behind, if it had
    // not noticed already.
    let reader = std::thread::spawn(move || {
        let mut sink = [0u8; 64 * 1024];
        let _ = slow.set_read_timeout(Some(PATIENCE));
        while matches!(slow.read(&mut sink), Ok(n) if n > 0) {}
    });
    server.wait_for_figure(LAGGING, |v| v == 1.0).await;
    assert_eq!(server.figure(CLOSED_LAGGING).await, 1.0);
    server.wait_for_figure(OPEN, |v| v == 0.0).await;
    drop(server);
    let _ = reader.join();
}

#[tokio::test]
async fn a_connection_whose_writes_stall_is_counted() {
    let server = spawn(
        Options::new()
            .env("EVENTS_WRITE_TIMEOUT", "200ms")
            .env("EVENTS_PUBLISH_RATE", "0")
            .env("EVENTS_HISTORY", "10"),
    );
    let stuck = silent_client(&server);
    server.wait_for_figure(OPEN, |v| v == 1.0).await;
    flood(&server).await;
    server.wait_for_figure(STALLED, |v| v == 1.0).await;
    server.wait_for_figure(OPEN, |v| v == 0.0).await;
    assert_eq!(server.figure(CLIENT_GONE).await, 1.0);
    drop(stuck);
}
