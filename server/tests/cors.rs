//! Cross-origin access to the stream and publish for the origins in `EVENTS_CORS_ORIGINS`,
//! with credentials: the exact origin is echoed, never `*`; nothing for anyone else, and
//! nothing at all by default.

mod common;

use common::{client, spawn, Options};

const ALLOWED: &str = "https://portal.example.com";
const OTHER: &str = "https://evil.example.net";

async fn get_stream(server: &common::Server, origin: &str) -> reqwest::header::HeaderMap {
    let res = client()
        .get(server.url("/api/events"))
        .header("Origin", origin)
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status(), 200);
    res.headers().clone()
}

#[tokio::test]
async fn a_listed_origin_gets_its_own_origin_back_with_credentials() {
    let server = spawn(Options::new().env(
        "EVENTS_CORS_ORIGINS",
        &format!("{ALLOWED}, http://other.test:8080"),
    ));
    let h = get_stream(&server, ALLOWED).await;
    assert_eq!(h["access-control-allow-origin"], ALLOWED, "{h:?}");
    assert_eq!(h["access-control-allow-credentials"], "true", "{h:?}");
    assert_eq!(h["content-type"], "text/event-stream");

    let res = client()
        .post(server.url("/api/publish"))
        .header("Origin", ALLOWED)
        .json(&serde_json::json!({"topic": "chat", "text": "from the portal"}))
        .send()
        .await
        .expect("publish");
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["access-control-allow-origin"], ALLOWED);
    assert_eq!(res.headers()["access-control-allow-credentials"], "true");

    // The preflight a browser sends before a JSON publish.
    let res = client()
        .request(reqwest::Method::OPTIONS, server.url("/api/publish"))
        .header("Origin", ALLOWED)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type, authorization",
        )
        .send()
        .await
        .expect("preflight");
    assert!(res.status().is_success(), "{}", res.status());
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], ALLOWED, "{h:?}");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let methods = h["access-control-allow-methods"].to_str().expect("text");
    assert!(methods.contains("POST"), "{methods}");
    let headers = h["access-control-allow-headers"]
        .to_str()
        .expect("text")
        .to_ascii_lowercase();
    assert!(
        headers.contains("content-type") && headers.contains("authorization"),
        "{headers}"
    );
}

#[tokio::test]
async fn an_unlisted_origin_gets_no_cors_headers() {
    let server = spawn(Options::new().env("EVENTS_CORS_ORIGINS", ALLOWED));
    let h = get_stream(&server, OTHER).await;
    assert!(no_cors(&h), "{h:?}");
    let res = client()
        .request(reqwest::Method::OPTIONS, server.url("/api/publish"))
        .header("Origin", OTHER)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(no_cors(res.headers()), "{:?}", res.headers());
}

fn no_cors(h: &reqwest::header::HeaderMap) -> bool {
    !h.keys().any(|k| k.as_str().starts_with("access-control-"))
}

#[tokio::test]
async fn by_default_no_origin_is_allowed() {
    let server = spawn(Options::new());
    for origin in [ALLOWED, OTHER] {
        let h = get_stream(&server, origin).await;
        assert!(no_cors(&h), "{h:?}");
    }
    let res = client()
        .request(reqwest::Method::OPTIONS, server.url("/api/publish"))
        .header("Origin", ALLOWED)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(no_cors(res.headers()), "{:?}", res.headers());
}
