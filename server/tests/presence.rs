//! Who is watching, against the real binary: the `presence` events a stream asks for, the
//! page's figure, and `GET /api/presence` per topic, with names only when the setting allows
//! them and per topic only for topics the asker may read.

mod common;

use common::{next_any, open_stream, Options, Server, TempDir};
use futures::Stream;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SECRET: &str = "thirty-two bytes of test secret!";
const RULES: &str = r#"
[default]
read = ["everyone"]
publish = ["signed-in"]

[topic.ops]
read = ["user:bob"]
publish = ["user:bob"]
"#;
const PATIENCE: Duration = Duration::from_secs(20);

struct Site {
    server: Server,
    _rules: TempDir,
}

fn start(names: &str) -> Site {
    let rules = TempDir::new("presence-rules");
    let file = rules.0.join("access.toml");
    std::fs::write(&file, RULES).expect("write the rules");
    let server = common::spawn(
        Options::new()
            .env("EVENTS_TOPICS", "chat,ops")
            .env("EVENTS_ACCESS_FILE", file.to_str().expect("path"))
            .env("EVENTS_TOKEN_SECRET", SECRET)
            .env("EVENTS_PRESENCE_NAMES", names),
    );
    Site {
        server,
        _rules: rules,
    }
}

fn token_for(sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": sub, "exp": exp }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode")
}

fn as_who(s: &Server, path: &str, who: Option<&str>) -> reqwest::RequestBuilder {
    let req = s.request(Method::GET, path);
    match who {
        Some(who) => req.bearer_auth(token_for(who)),
        None => req,
    }
}

type Events = std::pin::Pin<Box<dyn Stream<Item = eventsource_stream::Event> + Send>>;

async fn watch(s: &Server, path: &str, who: Option<&str>) -> Events {
    open_stream(as_who(s, path, who), None).await
}

/// The next `presence` event's data, skipping everything else.
async fn next_presence(stream: &mut Events) -> Value {
    loop {
        let ev = next_any(stream).await;
        if ev.event == "presence" {
            return serde_json::from_str(&ev.data).expect("presence JSON");
        }
    }
}

/// Reads presence events until one satisfies `ok` (figures change in steps as streams come
/// and go); fails after [`PATIENCE`].
async fn presence_until(stream: &mut Events, ok: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let left = PATIENCE.saturating_sub(start.elapsed());
        let got = tokio::time::timeout(left, next_presence(stream))
            .await
            .expect("the presence figure changed in time");
        if ok(&got) {
            return got;
        }
    }
}

async fn report(s: &Server, who: Option<&str>) -> Value {
    let res = as_who(s, "/api/presence", who)
        .send()
        .await
        .expect("presence request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers().get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    res.json().await.expect("presence report")
}

/// Asks until the report satisfies `ok`; fails after [`PATIENCE`].
async fn report_until(s: &Server, who: Option<&str>, ok: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let got = report(s, who).await;
        if ok(&got) {
            return got;
        }
        assert!(start.elapsed() < PATIENCE, "the report stayed at {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_are_counted_per_topic_with_their_names_live() {
    let site = start("on");
    let s = &site.server;

    // Bob's page, which asks for presence; then alice and an anonymous viewer on chat.
    let mut bob = watch(s, "/api/events?presence=1", Some("bob")).await;
    let first = presence_until(&mut bob, |p| p["watching"] == 1).await;
    assert_eq!(first, json!({ "watching": 1, "names": ["bob"] }));
    let alice = watch(s, "/api/events?topic=chat", Some("alice")).await;
    let anonymous = watch(s, "/api/events?topic=chat", None).await;
    let all = presence_until(&mut bob, |p| p["watching"] == 3).await;
    assert_eq!(all, json!({ "watching": 3, "names": ["alice", "bob"] }));

    // Per topic, for bob, who may read both.
    let r = report_until(s, Some("bob"), |r| r["watching"] == 3).await;
    assert_eq!(r["names"], json!(["alice", "bob"]));
    assert_eq!(r["instances"], 1);
    assert_eq!(
        r["topics"]["chat"],
        json!({ "watching": 3, "names": ["alice", "bob"] })
    );
    assert_eq!(
        r["topics"]["ops"],
        json!({ "watching": 1, "names": ["bob"] })
    );
    // Anonymous may not read ops: not even who watches it.
    let r = report(s, None).await;
    assert!(r["topics"].get("ops").is_none(), "{r}");
    assert_eq!(r["topics"]["chat"]["watching"], 3);

    // The page renders the figure it was served with.
    let page = as_who(s, "/", Some("carol"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("page text");
    assert!(page.contains("3 watching: alice, bob"), "{page}");

    // Leaving is seen live, however the stream ends.
    drop(alice);
    let left = presence_until(&mut bob, |p| p["watching"] == 2).await;
    assert_eq!(left, json!({ "watching": 2, "names": ["bob"] }));
    drop(anonymous);
    presence_until(&mut bob, |p| p["watching"] == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_setting_names_are_never_shown_and_streams_not_asking_get_no_presence() {
    let site = start("off");
    let s = &site.server;
    let mut page = watch(s, "/api/events?presence=1", Some("bob")).await;
    // The figure as it stands comes right after `ready`, with no `id:` of its own (the
    // parser keeps the last one it saw), so it does not move the resume position.
    let ready = next_any(&mut page).await;
    assert_eq!(ready.event, "ready");
    let now = next_any(&mut page).await;
    assert_eq!((now.event.as_str(), &now.id), ("presence", &ready.id));
    let mut plain = watch(s, "/api/events?topic=chat", Some("alice")).await;
    let p = presence_until(&mut page, |p| p["watching"] == 2).await;
    assert_eq!(p, json!({ "watching": 2 }));
    let r = report_until(s, Some("bob"), |r| r["watching"] == 2).await;
    assert!(r.get("names").is_none(), "{r}");
    assert_eq!(r["topics"]["chat"], json!({ "watching": 2 }));

    // The stream that did not ask: after its `ready`, the next thing is the event published
    // after both streams were counted, not a presence event.
    assert_eq!(next_any(&mut plain).await.event, "ready");
    let publish = s
        .request(Method::POST, "/api/publish")
        .bearer_auth(token_for("bob"));
    let id = common::publish_with(publish, "chat", "hello").await;
    let next = next_any(&mut plain).await;
    assert_eq!((next.event.as_str(), next.id), ("chat", id.to_string()));

    // A bad value is the client's mistake, said plainly.
    let res = s
        .request(Method::GET, "/api/events?presence=yes")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.expect("body").contains("presence=yes"));
}
