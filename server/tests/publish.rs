//! `POST /api/publish`: what it accepts, and a clear answer for everything it refuses.

mod common;

use common::{client, next_any, next_event, spawn, Options};

async fn post(server: &common::Server, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let res = client()
        .post(server.url("/api/publish"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.text().await.expect("body"))
}

#[tokio::test]
async fn a_good_request_answers_201_with_the_id() {
    let server = spawn(Options::new());
    let (status, body) = post(
        &server,
        "application/json",
        br#"{"topic":"chat","text":"hi"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(v["id"].as_u64().is_some(), "{v}");
    assert_eq!(v["topic"], "chat");
}

#[tokio::test]
async fn bad_requests_get_a_clear_status_and_change_nothing() {
    let server = spawn(Options::new().env("EVENTS_MAX_TEXT", "100"));
    let json = "application/json";
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            json,
            b"{\"topic\":".to_vec(),
            400,
            "parse",
        ),
        (
            "not an object",
            json,
            b"[1,2]".to_vec(),
            422,
            "invalid type",
        ),
        (
            "missing text",
            json,
            br#"{"topic":"chat"}"#.to_vec(),
            422,
            "missing field `text`",
        ),
        (
            "missing topic",
            json,
            br#"{"text":"x"}"#.to_vec(),
            422,
            "missing field `topic`",
        ),
        (
            "unknown field",
            json,
            br#"{"topic":"chat","text":"x","x":1}"#.to_vec(),
            422,
            "unknown field",
        ),
        (
            "text not a string",
            json,
            br#"{"topic":"chat","text":5}"#.to_vec(),
            422,
            "invalid type",
        ),
        (
            "invalid UTF-8",
            json,
            b"{\"topic\":\"chat\",\"text\":\"\xff\xfe\"}".to_vec(),
            400,
            "",
        ),
        (
            "empty topic",
            json,
            br#"{"topic":"","text":"x"}"#.to_vec(),
            400,
            "topic must not be empty",
        ),
        (
            "long topic",
            json,
            format!(r#"{{"topic":"{}","text":"x"}}"#, "a".repeat(40)).into_bytes(),
            400,
            "longer than 32",
        ),
        (
            "topic with a newline",
            json,
            br#"{"topic":"chat\nid: 5","text":"x"}"#.to_vec(),
            400,
            "topic contains",
        ),
        (
            "unknown topic",
            json,
            br#"{"topic":"other","text":"x"}"#.to_vec(),
            400,
            "unknown topic 'other'",
        ),
        (
            "reserved topic",
            json,
            br#"{"topic":"ready","text":"x"}"#.to_vec(),
            400,
            "reserved",
        ),
        (
            "blank text",
            json,
            br#"{"topic":"chat","text":" \n "}"#.to_vec(),
            400,
            "only spaces",
        ),
        (
            "empty text",
            json,
            br#"{"topic":"chat","text":""}"#.to_vec(),
            400,
            "text must not be empty",
        ),
        (
            "text too long",
            json,
            format!(r#"{{"topic":"chat","text":"{}"}}"#, "x".repeat(101)).into_bytes(),
            400,
            "longer than 100 bytes",
        ),
        ("body too large", json, vec![b' '; 2 * 1024 * 1024], 413, ""),
        (
            "wrong content type",
            "text/plain",
            br#"{"topic":"chat","text":"x"}"#.to_vec(),
            415,
            "Content-Type",
        ),
    ];
    let mut stream = server.stream("/api/events", None).await;
    assert_eq!(next_any(&mut stream).await.event, "ready");
    for (name, content_type, body, status, message) in cases {
        let (got, text) = post(&server, content_type, body).await;
        assert_eq!(got, status, "{name}: {text}");
        if status != 413 {
            let v: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name}: the error is JSON ({e}): {text}"));
            let error = v["error"].as_str().unwrap_or_default();
            assert!(
                error.contains(message),
                "{name}: {error:?} lacks {message:?}"
            );
        }
    }
    // Nothing was published by any of them, and the server still works.
    let id = server.publish("chat", "after the storm").await;
    let ev = next_event(&mut stream).await;
    assert_eq!(
        ev.id,
        id.to_string(),
        "the first event seen is the good one"
    );
    server
        .wait_for_log(&["request refused", "status=422"])
        .await;
}
