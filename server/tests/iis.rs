//! The ASP.NET Core Module's contract, spoken directly to the real binary: the pairing token,
//! the shutdown request, the path base and the forwarded client address.

mod common;

use common::{client, next_any, next_event, raw::Ending, raw::RawStream, spawn, Options, PATIENCE};
use reqwest::Method;
use std::time::{Duration, Instant};

const TOKEN: &str = "0b4f6a5e-9d7c-4b3a-8e21-6f0d9c2a7b14";

#[tokio::test]
async fn under_the_module_it_listens_on_ipv4_loopback() {
    let server = spawn(Options::new().aspnetcore(TOKEN, "/"));
    assert!(
        server.base.starts_with("http://127.0.0.1:"),
        "{}",
        server.base
    );
    server
        .wait_for_log(&["listening on", "frontend=AspNetCoreModule"])
        .await;
}

#[tokio::test]
async fn requests_without_the_right_token_get_400_and_an_empty_body() {
    let server = spawn(Options::new().aspnetcore(TOKEN, "/"));
    for path in [
        "/",
        "/api/events",
        "/pkg/sse-live.js",
        "/iisintegration",
        "/nope",
    ] {
        let missing = client()
            .get(server.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(missing.status(), 400, "{path} without a token");
        assert_eq!(missing.text().await.expect("body"), "", "{path}");
        let wrong = client()
            .get(server.url(path))
            .header("MS-ASPNETCORE-TOKEN", "not-the-token")
            .send()
            .await
            .expect("request");
        assert_eq!(wrong.status(), 400, "{path} with a wrong token");
    }
    let publish = client()
        .post(server.url("/api/publish"))
        .json(&serde_json::json!({"topic": "chat", "text": "sneaky"}))
        .send()
        .await
        .expect("request");
    assert_eq!(publish.status(), 400);
    // With the token everything works.
    let page = server.request(Method::GET, "/").send().await.expect("page");
    assert_eq!(page.status(), 200);
    let mut s = server.stream("/api/events", None).await;
    assert_eq!(next_any(&mut s).await.event, "ready");
    let id = server.publish("chat", "through IIS").await;
    assert_eq!(next_event(&mut s).await.id, id.to_string());
    server
        .wait_for_log(&[
            "request refused",
            "not forwarded by the ASP.NET Core Module",
        ])
        .await;
}

#[tokio::test]
async fn the_forwarded_address_is_logged_only_with_a_valid_token() {
    let server = spawn(Options::new().aspnetcore(TOKEN, "/"));
    let res = server
        .request(Method::POST, "/api/publish")
        .header("X-Forwarded-For", "6.6.6.6, 203.0.113.9:50123")
        .header("X-Forwarded-Proto", "https")
        .json(&serde_json::json!({"topic": "chat", "text": "hi"}))
        .send()
        .await
        .expect("publish");
    assert_eq!(res.status(), 201);
    server
        .wait_for_log(&["published", "client=203.0.113.9:50123 (https)"])
        .await;

    // Without the module, the header is anyone's to forge: the socket's address is logged.
    let direct = spawn(Options::new());
    let res = client()
        .post(direct.url("/api/publish"))
        .header("X-Forwarded-For", "203.0.113.9:50123")
        .json(&serde_json::json!({"topic": "chat", "text": "hi"}))
        .send()
        .await
        .expect("publish");
    assert_eq!(res.status(), 201);
    let line = direct
        .wait_for_log(&["published", "client=127.0.0.1:"])
        .await;
    assert!(!line.contains("203.0.113.9"), "{line}");
}

/// The module's shutdown request, exactly as it sends it: a trailing space, no body.
async fn shutdown_request(server: &common::Server) -> u16 {
    server
        .request(Method::POST, "/iisintegration")
        .header("MS-ASPNETCORE-EVENT", "shutdown ")
        .send()
        .await
        .expect("shutdown request")
        .status()
        .as_u16()
}

async fn wait_exit(server: &mut common::Server, started: Instant) {
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(status.success(), "clean exit: {status:?}");
            return;
        }
        assert!(started.elapsed() < PATIENCE, "the process did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_modules_shutdown_request_gets_202_and_ends_every_stream() {
    let mut server = spawn(Options::new().aspnetcore(TOKEN, "/"));
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut s = server.stream("/api/events", None).await;
        assert_eq!(next_any(&mut s).await.event, "ready");
        streams.push(s);
    }
    // A wrong token is refused like any other request and stops nothing.
    let refused = client()
        .post(server.url("/iisintegration"))
        .header("MS-ASPNETCORE-TOKEN", "wrong")
        .header("MS-ASPNETCORE-EVENT", "shutdown ")
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 400);
    assert!(server.child.try_wait().expect("wait").is_none());

    let started = Instant::now();
    assert_eq!(shutdown_request(&server).await, 202);
    for s in &mut streams {
        let end = tokio::time::timeout(PATIENCE, futures::StreamExt::next(s))
            .await
            .expect("the stream ends instead of hanging");
        assert!(end.is_none());
    }
    wait_exit(&mut server, started).await;
    server
        .wait_for_log(&["the ASP.NET Core Module asked for shutdown"])
        .await;
}

#[tokio::test]
async fn everything_works_under_a_path_base() {
    let mut server = spawn(Options::new().aspnetcore(TOKEN, "/live"));
    assert!(server.base.ends_with("/live"), "{}", server.base);

    let page = server.request(Method::GET, "/").send().await.expect("page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(
        html.contains(r#"href="/live/pkg/sse-live.css""#),
        "stylesheet under the base"
    );
    assert!(
        html.contains(r#"("/live", "pkg", "sse-live""#),
        "hydration script under the base"
    );
    assert!(
        html.contains(r#"action="/live/api/publish_event""#),
        "form posts under the base"
    );

    let mut s = server.stream("/api/events", None).await;
    assert_eq!(next_any(&mut s).await.event, "ready");
    let id = server.publish("chat", "under /live").await;
    assert_eq!(next_event(&mut s).await.id, id.to_string());

    // The page's form endpoint, as the hydrated page posts it.
    let form = server
        .request(Method::POST, "/api/publish_event")
        .header("Accept", "application/json")
        .form(&[("topic", "alert"), ("text", "from the form")])
        .send()
        .await
        .expect("form post");
    assert_eq!(form.status(), 200, "{:?}", form.text().await);
    let ev = next_event(&mut s).await;
    assert_eq!(ev.event, "alert");

    // IIS matches the application name without case; so do we.
    let origin = server.origin();
    let upper = client()
        .get(format!("{origin}/LIVE/api/events"))
        .header("MS-ASPNETCORE-TOKEN", TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(upper.status(), 200);
    assert_eq!(upper.headers()["content-type"], "text/event-stream");

    // Outside the base there is nothing.
    let outside = client()
        .get(format!("{origin}/api/events"))
        .header("MS-ASPNETCORE-TOKEN", TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(outside.status(), 404);

    let started = Instant::now();
    let res = client()
        .post(format!("{origin}/live/iisintegration"))
        .header("MS-ASPNETCORE-TOKEN", TOKEN)
        .header("MS-ASPNETCORE-EVENT", "shutdown")
        .send()
        .await
        .expect("shutdown");
    assert_eq!(res.status(), 202);
    wait_exit(&mut server, started).await;
}

/// The module waits `shutdownTimeLimit` (10 s by default) before it kills the process: with
/// thousands of streams open, the server must still end them all and exit well inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_thousands_of_streams_is_prompt() {
    const STREAMS: usize = 2000;
    let mut server = spawn(Options::new().aspnetcore(TOKEN, "/"));
    let addr = server.addr();
    let mut streams = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        // Each from a viewer of its own, as the module forwards them (one address may hold
        // only EVENTS_MAX_STREAMS_PER_ADDR streams).
        let viewer = format!("10.0.{}.{}:50000", i / 250, i % 250);
        let headers = [("MS-ASPNETCORE-TOKEN", TOKEN), ("X-Forwarded-For", &viewer)];
        let mut s = RawStream::open(&addr, "/api/events", &headers).await;
        // The `ready` event: the stream is open at the server.
        s.until_event("ready").await;
        streams.push(s);
    }
    server
        .wait_for_log(&["stream opened", &format!("open={STREAMS}")])
        .await;

    let started = Instant::now();
    assert_eq!(shutdown_request(&server).await, 202);
    // Every stream ends: its last chunk (`0\r\n\r\n`) or the connection's close.
    let endings = futures::future::join_all(streams.iter_mut().map(RawStream::end)).await;
    let all_ended = started.elapsed();
    assert!(
        endings.iter().all(|e| *e != Ending::NotYet),
        "every stream ends"
    );
    wait_exit(&mut server, started).await;
    let exited = started.elapsed();
    println!("shutdown with {STREAMS} streams: all ended after {all_ended:?}, process exited after {exited:?}");
    assert!(
        exited < Duration::from_secs(5),
        "well inside the module's 10 s: {exited:?}"
    );
}
