//! Who may see what, against the real binary: tokens in a header and in a cookie, the topic
//! rules file, private topics in the live feed, the replay and the page, publishing with and
//! without the grant, the publish key beside tokens, and anonymous viewers refused.

mod common;

use common::{next_event, open_stream, text_of, Options, Server, TempDir};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::json;

const SECRET: &str = "thirty-two bytes of test secret!";
const KEY: &str = "the-publish-key";

const RULES: &str = r#"
[default]
read = ["everyone"]
publish = ["signed-in"]

[topic.ops]
read = ["user:bob"]
publish = ["user:bob"]
"#;

struct Site {
    server: Server,
    _rules: TempDir,
}

fn start(extra: &[(&str, &str)]) -> Site {
    let rules = TempDir::new("access-rules");
    let file = rules.0.join("access.toml");
    std::fs::write(&file, RULES).expect("write the rules");
    let mut opts = Options::new()
        .env("EVENTS_TOPICS", "chat,ops,alert")
        .env("EVENTS_ACCESS_FILE", file.to_str().expect("path"))
        .env("EVENTS_TOKEN_SECRET", SECRET)
        .env("EVENTS_TOKEN_AUDIENCE", "sse-live");
    for (k, v) in extra {
        opts = opts.env(k, v);
    }
    Site {
        server: common::spawn(opts),
        _rules: rules,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn token(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode")
}

fn token_for(sub: &str) -> String {
    token(json!({ "sub": sub, "name": sub.to_uppercase(), "aud": "sse-live", "exp": now() + 600 }))
}

fn bearer(site: &Site, method: Method, path: &str, who: &str) -> reqwest::RequestBuilder {
    site.server
        .request(method, path)
        .bearer_auth(token_for(who))
}

async fn publish(req: reqwest::RequestBuilder, topic: &str, text: &str) -> (StatusCode, String) {
    let res = req
        .json(&json!({ "topic": topic, "text": text }))
        .send()
        .await
        .expect("publish");
    (res.status(), res.text().await.expect("body"))
}

async fn status_and_body(req: reqwest::RequestBuilder) -> (StatusCode, String, Option<String>) {
    let res = req.send().await.expect("request");
    let auth = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or("").to_string());
    (res.status(), res.text().await.expect("body"), auth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_topic_reaches_only_streams_that_may_read_it_live_and_in_the_replay() {
    let site = start(&[]);
    let s = &site.server;

    // Asking for it by name: 401 for anonymous (with how to authenticate), 403 for alice.
    let (status, body, auth) =
        status_and_body(s.request(Method::GET, "/api/events?topic=ops")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("'ops'"), "{body}");
    assert!(auth.is_some_and(|a| a.starts_with("Bearer")));
    let (status, body, _) = status_and_body(bearer(
        &site,
        Method::GET,
        "/api/events?topic=chat,ops",
        "alice",
    ))
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("alice may not read topic 'ops'"), "{body}");

    // Bob reads ops with a header, and with a cookie as a browser sends it.
    let mut anonymous = s.stream("/api/events", None).await;
    let mut bob = open_stream(bearer(&site, Method::GET, "/api/events", "bob"), None).await;
    let cookie = format!("events_token={}", token_for("bob"));
    let mut bob_cookie = open_stream(
        s.request(Method::GET, "/api/events?topic=ops")
            .header("cookie", &cookie),
        None,
    )
    .await;
    // Carol's own token grants her ops, beside the rules.
    let carol = token(
        json!({ "sub": "carol", "aud": "sse-live", "exp": now() + 600,
        "mercure": { "subscribe": ["ops"] } }),
    );
    let mut carol = open_stream(
        s.request(Method::GET, "/api/events?topic=ops")
            .bearer_auth(carol),
        None,
    )
    .await;

    let before = s.publish_as("bob", "chat", "before").await;
    let secret = s.publish_as("bob", "ops", "the secret").await;
    let after = s.publish_as("bob", "chat", "after").await;

    assert_eq!(text_of(&next_event(&mut anonymous).await), "before");
    // The private event is skipped: the next one anonymous gets is the one after it.
    assert_eq!(text_of(&next_event(&mut anonymous).await), "after");
    for who in [&mut bob] {
        assert_eq!(text_of(&next_event(who).await), "before");
        assert_eq!(text_of(&next_event(who).await), "the secret");
        assert_eq!(text_of(&next_event(who).await), "after");
    }
    assert_eq!(text_of(&next_event(&mut bob_cookie).await), "the secret");
    assert_eq!(text_of(&next_event(&mut carol).await), "the secret");

    // Resuming from before all three: the replay goes through the same filter.
    let mut anonymous = s.stream("/api/events", Some(&before.to_string())).await;
    let replayed = next_event(&mut anonymous).await;
    assert_eq!(replayed.id, after.to_string(), "anonymous skips {secret}");
    let mut bob = open_stream(
        bearer(&site, Method::GET, "/api/events", "bob"),
        Some(&before.to_string()),
    )
    .await;
    assert_eq!(next_event(&mut bob).await.id, secret.to_string());
    assert_eq!(next_event(&mut bob).await.id, after.to_string());

    // The page: anonymous sees neither the event nor the topic; bob sees both, and his name.
    let page = s.request(Method::GET, "/").send().await.expect("page");
    let page = page.text().await.expect("page text");
    assert!(page.contains("after") && !page.contains("the secret"));
    assert!(
        !page.contains(r#"<option value="ops""#),
        "anonymous offered ops"
    );
    assert!(
        !page.contains(r#"<option value="chat""#),
        "anonymous may not publish"
    );
    let page = s
        .request(Method::GET, "/")
        .header("cookie", &cookie)
        .send()
        .await
        .expect("page");
    let page = page.text().await.expect("page text");
    assert!(page.contains("the secret") && page.contains("signed in as BOB"));
    assert!(page.contains(r#"<option value="ops""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_needs_the_rule_the_grant_or_the_key() {
    let site = start(&[("EVENTS_PUBLISH_KEY", KEY)]);
    let s = &site.server;
    // Bob may read every topic: what he sees is what was published.
    let mut bob = open_stream(bearer(&site, Method::GET, "/api/events", "bob"), None).await;

    // Anonymous, no key: 401 as before tokens existed.
    let (status, body) = publish(s.request(Method::POST, "/api/publish"), "chat", "x").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // Signed in: the rules say who may publish where.
    let (status, body) = publish(
        bearer(&site, Method::POST, "/api/publish", "alice"),
        "chat",
        "hi",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = publish(
        bearer(&site, Method::POST, "/api/publish", "alice"),
        "ops",
        "x",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("alice may not publish on topic 'ops'"),
        "{body}"
    );
    // A grant for another topic is not a grant for this one.
    let granted = token(json!({ "sub": "svc", "aud": "sse-live", "exp": now() + 600,
        "mercure": { "publish": ["alert"] } }));
    let req = || {
        s.request(Method::POST, "/api/publish")
            .bearer_auth(&granted)
    };
    assert_eq!(publish(req(), "alert", "x").await.0, StatusCode::CREATED);
    // The key vouches for any topic, as a header or as the bearer.
    let req = s
        .request(Method::POST, "/api/publish")
        .header("x-publish-key", KEY);
    assert_eq!(publish(req, "ops", "by key").await.0, StatusCode::CREATED);
    let req = s.request(Method::POST, "/api/publish").bearer_auth(KEY);
    assert_eq!(publish(req, "ops", "by key").await.0, StatusCode::CREATED);

    // Tokens that are not good: each says why, and nothing is published.
    let wrong_audience = token(json!({ "sub": "bob", "aud": "other", "exp": now() + 600 }));
    let expired = token(json!({ "sub": "bob", "aud": "sse-live", "exp": now() - 600 }));
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": "bob", "aud": "sse-live", "exp": now() + 600 }),
        &EncodingKey::from_secret(b"not the secret, but just as long"),
    )
    .expect("encode");
    for (token, why) in [
        (wrong_audience, "audience"),
        (expired, "expired"),
        (forged, "signature"),
        ("x".repeat(9000), "more than"),
    ] {
        let req = s.request(Method::POST, "/api/publish").bearer_auth(&token);
        let (status, body) = publish(req, "ops", "must not appear").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
        assert!(body.contains(why), "{why}: {body}");
    }
    let mut texts = Vec::new();
    for _ in 0..4 {
        texts.push(text_of(&next_event(&mut bob).await));
    }
    assert_eq!(texts, ["hi", "x", "by key", "by key"].map(String::from));
    // The server carries on, and logged the refusals without the tokens.
    s.wait_for_log(&["token refused", "audience"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_anonymous_off_only_known_viewers_get_the_page_and_the_stream() {
    let site = start(&[("EVENTS_ANONYMOUS", "off")]);
    let s = &site.server;
    for path in ["/", "/api/events"] {
        let (status, body, auth) = status_and_body(s.request(Method::GET, path)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert!(body.contains("sign in"), "{path}: {body}");
        assert!(auth.is_some(), "{path}");
        let (status, body, _) = status_and_body(
            s.request(Method::GET, path)
                .header("cookie", "events_token=not-a-token"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert!(body.contains("malformed"), "{path}: {body}");
    }
    let (status, _, _) = status_and_body(bearer(&site, Method::GET, "/", "alice")).await;
    assert_eq!(status, StatusCode::OK);
    // The client's files are not guarded: they hold nothing private.
    let (status, _, _) = status_and_body(s.request(Method::GET, "/favicon.svg")).await;
    assert_ne!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_takes_a_signed_in_post_only_from_this_sites_pages() {
    let site = start(&[]);
    let s = &site.server;
    let cookie = format!("events_token={}", token_for("alice"));
    let form = |origin: &str| {
        s.request(Method::POST, "/api/publish_event")
            .header("cookie", &cookie)
            .header("accept", "application/json")
            .header("origin", origin)
            .form(&[("topic", "chat"), ("text", "from the form")])
    };
    let (status, body, _) = status_and_body(form("https://evil.example")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body, _) = status_and_body(form(&s.origin())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Anonymous may read chat but not publish on it (publish = ["signed-in"]).
    let (status, body, _) = status_and_body(
        s.request(Method::POST, "/api/publish_event")
            .header("accept", "application/json")
            .header("origin", s.origin())
            .form(&[("topic", "chat"), ("text", "x")]),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body.contains("anonymous viewer may not publish on topic 'chat'"),
        "{body}"
    );
}

trait PublishAs {
    async fn publish_as(&self, who: &str, topic: &str, text: &str) -> u64;
}

impl PublishAs for Server {
    async fn publish_as(&self, who: &str, topic: &str, text: &str) -> u64 {
        common::publish_with(
            self.request(Method::POST, "/api/publish")
                .bearer_auth(token_for(who)),
            topic,
            text,
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_token_expires_and_a_renewed_token_resumes_with_nothing_lost() {
    let site = start(&[]);
    let s = &site.server;
    // Seconds are the claim's unit: this token has two to three seconds left.
    let short = token(json!({ "sub": "bob", "aud": "sse-live", "exp": now() + 3 }));
    let mut stream = open_stream(
        s.request(Method::GET, "/api/events?topic=ops")
            .bearer_auth(&short),
        None,
    )
    .await;
    let first = s.publish_as("bob", "ops", "before the expiry").await;
    assert_eq!(next_event(&mut stream).await.id, first.to_string());
    let expired = next_event(&mut stream).await;
    assert_eq!(expired.event, "expired", "{expired:?}");
    assert!(expired.data.contains("expired"), "{expired:?}");
    let end = tokio::time::timeout(common::PATIENCE, futures::StreamExt::next(&mut stream)).await;
    assert!(matches!(end, Ok(None)), "the stream ends after `expired`");

    // Published while the client renews.
    let missed = s.publish_as("bob", "ops", "while renewing").await;
    // The old token no longer opens a stream.
    let (status, body, _) = status_and_body(
        s.request(Method::GET, "/api/events?topic=ops")
            .bearer_auth(&short),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("expired"), "{body}");
    // A renewed one resumes from the last id it had: nothing lost, nothing twice.
    let mut renewed = open_stream(
        bearer(&site, Method::GET, "/api/events?topic=ops", "bob"),
        Some(&first.to_string()),
    )
    .await;
    let next = next_event(&mut renewed).await;
    assert_eq!(next.id, missed.to_string());
    assert_eq!(text_of(&next), "while renewing");
    s.wait_for_log(&["stream opened", "viewer=bob"]).await;
    assert!(
        s.scrape().await.contains(r#"reason="expired""#),
        "streams closed by expiry are counted"
    );
}
