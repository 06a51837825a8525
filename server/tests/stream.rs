//! The stream's contract, end to end against the real binary.

mod common;

use common::{client, next_any, next_event, spawn, text_of, Options};

#[tokio::test]
async fn the_stream_has_the_headers_proxies_need_and_is_never_compressed() {
    let server = spawn(Options::new());
    let res = client()
        .get(server.url("/api/events"))
        .header("Accept-Encoding", "gzip, br")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    assert!(h.get("content-encoding").is_none(), "{h:?}");
    assert!(h.get("content-length").is_none(), "{h:?}");
}

#[tokio::test]
async fn a_new_stream_starts_with_retry_and_ready() {
    let server = spawn(Options::new().env("EVENTS_RETRY", "3s"));
    let before = server.publish("chat", "earlier").await;
    let first = server.raw_stream("/api/events").await.chunk().await;
    let first = String::from_utf8_lossy(&first).to_string();
    let retry: u64 = first
        .strip_prefix("retry: ")
        .and_then(|rest| rest.split_once("\n\n"))
        .and_then(|(ms, _)| ms.parse().ok())
        .unwrap_or_else(|| panic!("the stream starts with a retry hint: {first:?}"));
    assert!((2250..=3750).contains(&retry), "3 s ± 25 %: {retry}");

    let mut events = server.stream("/api/events", None).await;
    let ready = next_any(&mut events).await;
    assert_eq!(ready.event, "ready");
    assert_eq!(ready.id, before.to_string(), "ready carries the head id");
    let data: serde_json::Value = serde_json::from_str(&ready.data).expect("json");
    assert_eq!(data["head"], before);
    assert_eq!(data["heartbeat_ms"], 15000);
}

#[tokio::test]
async fn published_events_arrive_in_order_with_their_ids() {
    let server = spawn(Options::new());
    let mut events = server.stream("/api/events", None).await;
    assert_eq!(next_any(&mut events).await.event, "ready");
    let mut ids = Vec::new();
    for (i, topic) in ["chat", "alert", "chat"].iter().enumerate() {
        ids.push(server.publish(topic, &format!("message {i}")).await);
    }
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    for (i, (id, topic)) in ids.iter().zip(["chat", "alert", "chat"]).enumerate() {
        let ev = next_event(&mut events).await;
        assert_eq!(ev.id, id.to_string());
        assert_eq!(ev.event, topic);
        let data: serde_json::Value = serde_json::from_str(&ev.data).expect("json");
        assert_eq!(data["id"], *id);
        assert_eq!(data["topic"], topic);
        assert_eq!(data["text"], format!("message {i}"));
        let sent = data["sent_ms"].as_u64().expect("sent_ms");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        assert!(
            sent <= now && now - sent < 60_000,
            "sent_ms {sent} vs now {now}"
        );
    }
}

#[tokio::test]
async fn every_subscriber_sees_every_event_once() {
    let server = spawn(Options::new());
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut s = server.stream("/api/events", None).await;
        assert_eq!(next_any(&mut s).await.event, "ready");
        streams.push(s);
    }
    let mut published = Vec::new();
    for i in 0..20 {
        published.push(server.publish("chat", &i.to_string()).await.to_string());
    }
    for s in &mut streams {
        let mut seen = Vec::new();
        for _ in 0..20 {
            seen.push(next_event(s).await.id);
        }
        assert_eq!(seen, published);
    }
}

#[tokio::test]
async fn resume_replays_what_was_missed_by_header_or_query() {
    let server = spawn(Options::new());
    let first = server.publish("chat", "one").await;
    let second = server.publish("chat", "two").await;
    let third = server.publish("alert", "three").await;

    // Header (what a browser sends on its own reconnect).
    let mut s = server.stream("/api/events", Some(&first.to_string())).await;
    let a = next_any(&mut s).await;
    let b = next_any(&mut s).await;
    let ready = next_any(&mut s).await;
    assert_eq!(text_of(&b), "three");
    assert_eq!((a.id, b.id), (second.to_string(), third.to_string()));
    assert_eq!(ready.event, "ready");
    assert_eq!(ready.id, third.to_string());

    // Query (what a new EventSource can do).
    let mut s = server
        .stream(&format!("/api/events?lastEventId={second}"), None)
        .await;
    assert_eq!(next_any(&mut s).await.id, third.to_string());
    assert_eq!(next_any(&mut s).await.event, "ready");

    // An empty header says nothing: the query's position is used.
    let mut s = server
        .stream(&format!("/api/events?lastEventId={second}"), Some(""))
        .await;
    assert_eq!(next_any(&mut s).await.id, third.to_string());

    // The header wins over the query: it is the newer position.
    let mut s = server
        .stream(
            &format!("/api/events?lastEventId={first}"),
            Some(&third.to_string()),
        )
        .await;
    assert_eq!(next_any(&mut s).await.event, "ready");

    // Up to date: straight to ready, then live.
    let mut s = server.stream("/api/events", Some(&third.to_string())).await;
    assert_eq!(next_any(&mut s).await.event, "ready");
    let fourth = server.publish("chat", "four").await;
    assert_eq!(next_any(&mut s).await.id, fourth.to_string());
}

#[tokio::test]
async fn a_position_older_than_the_history_gets_a_reset_first() {
    let server = spawn(Options::new().env("EVENTS_HISTORY", "5"));
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(server.publish("chat", &i.to_string()).await);
    }
    let mut s = server
        .stream("/api/events", Some(&ids[0].to_string()))
        .await;
    let reset = next_any(&mut s).await;
    assert_eq!(reset.event, "reset");
    let data: serde_json::Value = serde_json::from_str(&reset.data).expect("json");
    assert_eq!(data["requested"], ids[0].to_string());
    assert_eq!(data["oldest"], ids[5]);
    for id in &ids[5..] {
        assert_eq!(next_any(&mut s).await.id, id.to_string());
    }
    assert_eq!(next_any(&mut s).await.event, "ready");
}

#[tokio::test]
async fn odd_last_event_ids_never_fail_the_stream() {
    let server = spawn(Options::new());
    let id = server.publish("chat", "x").await;
    for odd in [
        "abc",
        "-1",
        "99999999999999999999999999",
        "1e3",
        "18446744073709551615",
    ] {
        let mut s = server.stream("/api/events", Some(odd)).await;
        let first = next_any(&mut s).await;
        assert_eq!(first.event, "reset", "{odd}");
        assert_eq!(
            next_any(&mut s).await.id,
            id.to_string(),
            "{odd}: history follows"
        );
        assert_eq!(next_any(&mut s).await.event, "ready", "{odd}");
    }
}

#[tokio::test]
async fn hostile_texts_round_trip_exactly() {
    let server = spawn(Options::new());
    let mut s = server.stream("/api/events", None).await;
    assert_eq!(next_any(&mut s).await.event, "ready");
    let long_line = "x".repeat(60 * 1024);
    let texts = [
        "line one\nline two",
        "crlf\r\nand lone cr\rend",
        "ends with cr\r",
        "\n\nleading newlines",
        "data: injected\n\nevent: alert\nid: 1",
        "quotes \" ' and \\ backslash",
        "<script>alert(1)</script> & <b>html</b>",
        "emoji 😀👩‍👩‍👧 and RTL \u{202E}text",
        "nul \u{0} and bell \u{7} and \u{2028}\u{2029}",
        ":looks like a comment",
        long_line.as_str(),
    ];
    for text in texts {
        server.publish("chat", text).await;
    }
    for text in texts {
        let ev = next_event(&mut s).await;
        assert_eq!(ev.event, "chat", "the topic survives {text:?}");
        assert_eq!(text_of(&ev), text);
    }
}

#[tokio::test]
async fn the_topic_filter_keeps_only_those_topics() {
    let server = spawn(Options::new());
    let mut s = server.stream("/api/events?topic=alert,tick", None).await;
    assert_eq!(next_any(&mut s).await.event, "ready");
    server.publish("chat", "not for us").await;
    let wanted = server.publish("alert", "for us").await;
    let ev = next_event(&mut s).await;
    assert_eq!(ev.id, wanted.to_string());

    let res = client()
        .get(server.url("/api/events?topic=nope"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.expect("json error");
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("unknown topic 'nope'"),
        "{body}"
    );
}

#[tokio::test]
async fn the_tick_source_publishes_at_its_interval() {
    let server = spawn(Options::new().env("EVENTS_TICK", "100ms"));
    let mut s = server.stream("/api/events?topic=tick", None).await;
    let a = next_event(&mut s).await;
    let b = next_event(&mut s).await;
    assert_eq!(a.event, "tick");
    assert!(text_of(&a).starts_with("Hello, world #"), "{}", a.data);
    let (ia, ib): (u64, u64) = (a.id.parse().expect("id"), b.id.parse().expect("id"));
    assert!(ib > ia);
}

#[tokio::test]
async fn keep_alive_comments_flow_on_a_quiet_stream() {
    let server = spawn(Options::new().env("EVENTS_HEARTBEAT", "200ms"));
    let mut raw = server.raw_stream("/api/events").await;
    raw.until(|seen| String::from_utf8_lossy(seen).contains("event: ping\ndata: \n\n"))
        .await;
}

#[tokio::test]
async fn connects_and_disconnects_are_logged_with_the_client_address() {
    // A server learns that a client left when a write fails: the heartbeat is that write.
    let server = spawn(Options::new().env("EVENTS_HEARTBEAT", "200ms"));
    {
        let mut s = server.stream("/api/events", None).await;
        assert_eq!(next_any(&mut s).await.event, "ready");
        server
            .wait_for_log(&["stream opened", "client=127.0.0.1:"])
            .await;
    }
    server
        .wait_for_log(&["stream closed", "client=127.0.0.1:"])
        .await;
    server.publish("chat", "logged").await;
    server
        .wait_for_log(&["published", "client=127.0.0.1:", "topic=chat"])
        .await;
}

#[tokio::test]
async fn behind_http_platform_handler_each_event_is_padded_past_its_buffer() {
    let port = common::free_port().to_string();
    let server = spawn(Options::new().env("HTTP_PLATFORM_PORT", &port));
    server
        .wait_for_log(&["padding every event", "bytes=8192"])
        .await;
    let mut raw = server.raw_stream("/api/events").await;
    // The first write: retry, ready, then the padding.
    raw.until(|r| r.len() >= 8192).await;
    let id = server.publish("chat", "padded").await;
    let before = raw.received().len();
    raw.until(|r| r.len() >= before + 8192).await;
    let event = String::from_utf8_lossy(&raw.received()[before..]).to_string();
    assert!(
        event.starts_with(&format!("id: {id}\nevent: chat\n")),
        "{:?}",
        &event[..80]
    );
    assert!(
        event.trim_end().ends_with(':'),
        "the event is followed by the padding comment"
    );
}
