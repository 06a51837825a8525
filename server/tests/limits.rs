//! The limits that keep one client from taking the server, and the headers every answer carries.

mod common;

use common::{client, next_any, spawn, Options};
use reqwest::Method;

#[tokio::test]
async fn past_the_stream_cap_new_streams_get_503_with_a_retry_after() {
    let server = spawn(Options::new().env("EVENTS_MAX_STREAMS", "3"));
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = server.stream("/api/events", None).await;
        assert_eq!(next_any(&mut s).await.event, "ready");
        open.push(s);
    }
    let refused = client()
        .get(server.url("/api/events"))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 503);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((7..=13).contains(&retry), "10 s ± 25 %: {retry}");
    server
        .wait_for_log(&["stream refused", "EVENTS_MAX_STREAMS"])
        .await;
    // Publishing and the page still work at the cap.
    server.publish("chat", "at the cap").await;
    drop(open.pop());
    // A slot frees once the server notices the closed stream (at its next write).
    server.publish("chat", "frees a slot").await;
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let res = client()
            .get(server.url("/api/events"))
            .send()
            .await
            .expect("request");
        if res.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn each_connection_gets_its_own_retry_hint() {
    let server = spawn(Options::new().env("EVENTS_RETRY", "4s"));
    let mut hints = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let mut body = client()
            .get(server.url("/api/events"))
            .send()
            .await
            .expect("request");
        let chunk = body.chunk().await.expect("bytes").expect("first chunk");
        let text = String::from_utf8_lossy(&chunk).to_string();
        let ms: u64 = text
            .strip_prefix("retry: ")
            .and_then(|t| t.split('\n').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("starts with retry: {text:?}"));
        assert!((3000..=5000).contains(&ms), "4 s ± 25 %: {ms}");
        hints.insert(ms);
    }
    assert!(hints.len() > 1, "jittered, not all equal: {hints:?}");
}

#[tokio::test]
async fn publishing_too_fast_gets_429_per_address() {
    let server = spawn(Options::new().env("EVENTS_PUBLISH_RATE", "5"));
    let mut statuses = Vec::new();
    for i in 0..30 {
        let res = client()
            .post(server.url("/api/publish"))
            .json(&serde_json::json!({"topic": "chat", "text": format!("n{i}")}))
            .send()
            .await
            .expect("request");
        statuses.push(res.status().as_u16());
    }
    let accepted = statuses.iter().filter(|s| **s == 201).count();
    assert!(
        (10..=13).contains(&accepted),
        "a burst of 10, then a trickle: {statuses:?}"
    );
    assert!(statuses.contains(&429));
    server
        .wait_for_log(&["request refused", "status=429"])
        .await;
}

#[tokio::test]
async fn a_publish_key_guards_the_api_but_not_the_pages_own_form() {
    let server = spawn(Options::new().env("EVENTS_PUBLISH_KEY", "s3cret"));
    let body = serde_json::json!({"topic": "chat", "text": "keyed"});
    let post = |key: Option<&str>| {
        let mut req = client().post(server.url("/api/publish")).json(&body);
        if let Some(k) = key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        req.send()
    };
    assert_eq!(post(None).await.expect("req").status(), 401);
    assert_eq!(post(Some("nope")).await.expect("req").status(), 401);
    assert_eq!(post(Some("s3cret")).await.expect("req").status(), 201);
    let alt = client()
        .post(server.url("/api/publish"))
        .header("X-Publish-Key", "s3cret")
        .json(&body)
        .send()
        .await
        .expect("req");
    assert_eq!(alt.status(), 201);

    // The form: a same-origin browser post works without the key…
    let origin = server.origin();
    let form = |origin_header: Option<String>| {
        let mut req = server
            .request(Method::POST, "/api/publish_event")
            .header("Accept", "application/json")
            .form(&[("topic", "chat"), ("text", "from the page")]);
        if let Some(o) = origin_header {
            req = req.header("Origin", o);
        }
        req.send()
    };
    assert_eq!(form(Some(origin.clone())).await.expect("req").status(), 200);
    // …a post from another site or from a script without browser headers does not.
    assert_eq!(
        form(Some("https://evil.example".into()))
            .await
            .expect("req")
            .status(),
        403
    );
    assert_eq!(form(None).await.expect("req").status(), 403);
    // Said at startup, so an operator reading the log knows what the key does not cover.
    server
        .wait_for_log(&[
            "EVENTS_PUBLISH_KEY guards POST /api/publish",
            "EVENTS_PUBLISH_FORM=off",
        ])
        .await;
}

/// The key does not guard the form (anyone who can load the page can post through it): an
/// operator who wants the key to be the only way to publish turns the form off.
#[tokio::test]
async fn with_the_form_off_only_the_key_publishes() {
    let server = spawn(
        Options::new()
            .env("EVENTS_PUBLISH_KEY", "s3cret")
            .env("EVENTS_PUBLISH_FORM", "off"),
    );
    let res = server
        .request(Method::POST, "/api/publish_event")
        .header("Accept", "application/json")
        .header("Origin", server.origin())
        .form(&[("topic", "chat"), ("text", "from the page")])
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = res.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("EVENTS_PUBLISH_FORM=off")),
        "{body}"
    );
    let keyed = client()
        .post(server.url("/api/publish"))
        .header("Authorization", "Bearer s3cret")
        .json(&serde_json::json!({"topic": "chat", "text": "keyed"}))
        .send()
        .await
        .expect("req");
    assert_eq!(keyed.status(), 201);
}

#[tokio::test]
async fn pages_carry_a_nonce_csp_and_every_answer_nosniff() {
    let server = spawn(Options::new());
    let page = client().get(server.url("/")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("text")
        .to_string();
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert!(page.headers().get("server").is_none(), "no version banner");
    let html = page.text().await.expect("html");
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a nonce in the policy");
    assert!(
        html.contains(&format!("nonce=\"{nonce}\"")),
        "the page's scripts carry it"
    );
    assert!(csp.contains("connect-src 'self';"), "{csp}");
    for path in ["/api/events", "/nope", "/favicon.svg"] {
        let res = client()
            .get(server.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff", "{path}");
    }
}
