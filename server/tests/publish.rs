//! `POST /api/publish`: what it accepts, and a clear answer for everything it refuses.

mod common;

use common::{client, spawn, Options};

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

// Every request it refuses is in the table of tests/bad_input.rs.
