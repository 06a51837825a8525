//! Several server instances sharing their events through one real Redis (a `redis-server`
//! started by each test on a loopback port of its own, without persistence).
//!
//! - Publish to A, receive on B and the other way round, with identical ids and order.
//! - An instance killed mid-stream: its clients resume on the other one, every event once.
//! - Redis stopped and restarted during a stream: heartbeats go on, publishing answers 503,
//!   then everything resumes with no duplicate and ids still growing.
//! - Publishers racing on both instances: one order, the same on every subscriber.
//! - An instance cut off from Redis while the stream was trimmed past its position: its
//!   streams end and its clients get a `reset`, never a silent gap.
//! - Presence across instances: each counts the other's watchers, and stops counting an
//!   instance that stopped, cleanly or killed.
//! - The publish → receive delay through Redis against the in-process hub (`--nocapture`).

mod common;

use common::{spawn, Options, Server, PATIENCE};
use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    pin::Pin,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A `redis-server` on 127.0.0.1:`port`, killed when dropped.
struct Redis {
    port: u16,
    child: Option<Child>,
}

fn redis_server_path() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!("redis-server is not installed (not on PATH): run `cargo xtask setup`, which installs Debian's redis-server")
    })
}

impl Redis {
    fn start() -> Redis {
        let mut redis = Redis {
            port: common::free_port(),
            child: None,
        };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it (again, on the same port) and waits until it answers PING.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(redis_server_path())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while !self.pong() {
            assert!(
                start.elapsed() < PATIENCE,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pong(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends one command to Redis and returns its answer's first line (enough for the test's
/// own bookkeeping commands).
fn redis_command(port: u16, args: &[&str]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    let _ = s.set_read_timeout(Some(PATIENCE));
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).expect("send");
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while s.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
        answer.push(byte[0]);
    }
    String::from_utf8_lossy(&answer).trim().to_string()
}

/// A TCP relay in front of Redis that the test can cut: while cut, its connections are closed
/// and new ones are closed as soon as they are accepted, as if Redis were gone for the
/// instances behind it and only for them.
struct Relay {
    port: u16,
    open: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(to: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let port = listener.local_addr().expect("addr").port();
        let (open, _) = tokio::sync::watch::channel(true);
        let watch = open.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut is_open = watch.subscribe();
                if !*is_open.borrow() {
                    continue; // dropped: closed at once
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = is_open.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Relay { port, open }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }
}

fn instance(redis: &Redis, name: &str) -> Server {
    spawn(
        Options::new()
            .env("EVENTS_REDIS_URL", &redis.url())
            .env("EVENTS_INSTANCE", name),
    )
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// A stream whose end or breakage is an item, not a panic (an instance may be killed).
async fn open(server_base: &str, last_event_id: Option<&str>) -> Result<Events, String> {
    open_url(&format!("{server_base}/api/events"), last_event_id).await
}

async fn open_url(url: &str, last_event_id: Option<&str>) -> Result<Events, String> {
    let mut req = common::client().get(url);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let res = req.send().await.map_err(|e| e.to_string())?;
    if res.status() != 200 {
        return Err(format!("status {}", res.status()));
    }
    Ok(Box::pin(
        res.bytes_stream()
            .eventsource()
            .map(|e| e.map_err(|e| e.to_string())),
    ))
}

/// The next event, skipping `ping`s (and `ready` unless asked for).
async fn next(stream: &mut Events, with_ready: bool) -> Event {
    // One deadline for the whole wait: pings must not extend it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let ev = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("an event within the time limit")
            .expect("the stream is open")
            .expect("the stream is intact");
        if ev.event == "ping" || (ev.event == "ready" && !with_ready) {
            continue;
        }
        return ev;
    }
}

async fn try_publish(server: &Server, text: &str) -> (u16, serde_json::Value) {
    let res = common::client()
        .post(server.url("/api/publish"))
        .json(&serde_json::json!({ "topic": "chat", "text": text }))
        .send()
        .await
        .expect("publish request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

fn json(ev: &Event) -> serde_json::Value {
    serde_json::from_str(&ev.data).expect("JSON data")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_see_the_same_events_with_the_same_ids() {
    let redis = Redis::start();
    let a = instance(&redis, "a");
    let b = instance(&redis, "b");
    // The page names the instance that served it, for the client to show.
    for (server, name) in [(&a, "a"), (&b, "b")] {
        let page = common::page_text(&server.url("/")).await;
        assert!(
            page.contains(&format!(r#"<meta name="instance" content="{name}""#)),
            "{page}"
        );
    }
    let mut on_a = open(&a.base, None).await.expect("stream on a");
    let mut on_b = open(&b.base, None).await.expect("stream on b");
    for (stream, name) in [(&mut on_a, "a"), (&mut on_b, "b")] {
        let ready = next(stream, true).await;
        assert_eq!(ready.event, "ready");
        assert_eq!(
            json(&ready)["instance"],
            name,
            "the ready event names the instance"
        );
    }

    let mut published = Vec::new();
    for i in 0..20 {
        let to = if i % 2 == 0 { &a } else { &b };
        let id = to.publish("chat", &format!("m{i}")).await;
        published.push((id, format!("m{i}")));
    }
    assert!(
        published.windows(2).all(|w| w[0].0 < w[1].0),
        "ids grow across instances: {published:?}"
    );
    for stream in [&mut on_a, &mut on_b] {
        let mut got = Vec::new();
        for _ in 0..published.len() {
            let ev = next(stream, false).await;
            got.push((
                ev.id.parse::<u64>().expect("numeric id"),
                common::text_of(&ev),
            ));
        }
        assert_eq!(got, published);
    }

    // A client resumes on the other instance exactly where it stopped.
    let (mid, _) = published[9];
    let mut resumed = open(&b.base, Some(&mid.to_string()))
        .await
        .expect("resume on b");
    let first = next(&mut resumed, false).await;
    assert_ne!(first.event, "reset");
    assert_eq!(first.id, published[10].0.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_on_both_instances_give_one_order_everywhere() {
    const PUBLISHERS: usize = 4;
    const EACH: usize = 100;
    let redis = Redis::start();
    let a = std::sync::Arc::new(instance(&redis, "a"));
    let b = std::sync::Arc::new(instance(&redis, "b"));
    let mut streams = Vec::new();
    for server in [&a, &b, &a, &b] {
        let mut s = open(&server.base, None).await.expect("stream");
        next(&mut s, true).await;
        streams.push(s);
    }
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let to = if p % 2 == 0 { a.clone() } else { b.clone() };
        publishers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EACH {
                ids.push(to.publish("chat", &format!("p{p}-{i}")).await);
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for p in publishers {
        all.extend(p.await.expect("publisher"));
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), PUBLISHERS * EACH, "every publish got its own id");
    for (n, stream) in streams.iter_mut().enumerate() {
        let mut got = Vec::new();
        while got.len() < all.len() {
            got.push(next(stream, false).await.id.parse::<u64>().expect("id"));
        }
        assert_eq!(got, all, "subscriber {n}: every event once, in id order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_instance_resume_on_another_and_miss_nothing() {
    const CLIENTS: usize = 5;
    const EVENTS: usize = 300;
    let redis = Redis::start();
    let mut a = instance(&redis, "a");
    let b = instance(&redis, "b");
    let (a_base, b_base) = (a.base.clone(), b.base.clone());

    // Each client reads from A, and when A goes, reconnects to B with its last id, as a
    // browser behind a load balancer would; it stops at the last event.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let mut clients = Vec::new();
    for me in 0..CLIENTS {
        let (a_base, b_base) = (a_base.clone(), b_base.clone());
        let (ready_tx, seen_tx) = (ready_tx.clone(), seen_tx.clone());
        clients.push(tokio::spawn(async move {
            let mut ids: Vec<u64> = Vec::new();
            let mut last: Option<String> = None;
            let mut reconnects = 0;
            let mut base = a_base;
            loop {
                let mut stream = match open(&base, last.as_deref()).await {
                    Ok(s) => s,
                    Err(_) => {
                        base = b_base.clone();
                        reconnects += 1;
                        assert!(reconnects < 20, "client {me} cannot reconnect");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                while let Some(Ok(ev)) = stream.next().await {
                    match ev.event.as_str() {
                        "ping" => {}
                        "ready" => {
                            let _ = ready_tx.send(me);
                            last = Some(ev.id.clone());
                        }
                        "reset" => panic!("client {me} got a reset: {}", ev.data),
                        _ => {
                            ids.push(ev.id.parse().expect("numeric id"));
                            last = Some(ev.id.clone());
                            let _ = seen_tx.send(me);
                            if common::text_of(&ev) == "last" {
                                return (ids, reconnects);
                            }
                        }
                    }
                }
                base = b_base.clone();
                reconnects += 1;
            }
        }));
    }
    for _ in 0..CLIENTS {
        tokio::time::timeout(PATIENCE, ready_rx.recv())
            .await
            .expect("every client connects to a")
            .expect("open");
    }

    // Publishing goes through B the whole time.
    let publisher = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..EVENTS {
            let text = if i + 1 == EVENTS {
                "last".to_string()
            } else {
                format!("e{i}")
            };
            let (status, body) = try_publish(&b, &text).await;
            assert_eq!(status, 201, "publish through b: {body}");
            ids.push(body["id"].as_u64().expect("id"));
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        (ids, b)
    });

    // Kill A (SIGKILL: no goodbye) once every client has a good part of the events.
    let mut seen = 0;
    while seen < CLIENTS * 50 {
        tokio::time::timeout(PATIENCE, seen_rx.recv())
            .await
            .expect("events arrive on a")
            .expect("open");
        seen += 1;
    }
    a.child.kill().expect("kill a");
    let _ = a.child.wait();

    let (published, b) = tokio::time::timeout(PATIENCE * 6, publisher)
        .await
        .expect("publishing ends")
        .expect("publisher");
    for (me, client) in clients.into_iter().enumerate() {
        let (ids, reconnects) = tokio::time::timeout(PATIENCE * 6, client)
            .await
            .expect("the client gets the last event")
            .expect("client");
        assert!(reconnects >= 1, "client {me} was moved to b");
        assert_eq!(ids.len(), published.len(), "client {me}: every event once");
        assert_eq!(ids, published, "client {me}: in order, none twice");
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_and_coming_back() {
    let mut redis = Redis::start();
    let heartbeat = |o: Options| o.env("EVENTS_HEARTBEAT", "200ms");
    let mut a = spawn(heartbeat(
        Options::new()
            .env("EVENTS_REDIS_URL", &redis.url())
            .env("EVENTS_INSTANCE", "a"),
    ));
    let b = spawn(heartbeat(
        Options::new()
            .env("EVENTS_REDIS_URL", &redis.url())
            .env("EVENTS_INSTANCE", "b"),
    ));
    let mut on_a = open(&a.base, None).await.expect("stream on a");
    let mut on_b = open(&b.base, None).await.expect("stream on b");
    let mut expected = Vec::new();
    for i in 0..5 {
        let id = a.publish("chat", &format!("before{i}")).await;
        expected.push((id, format!("before{i}")));
    }

    redis.stop();
    // Publishing answers 503 with a clear message (once the connection has noticed).
    let start = Instant::now();
    loop {
        let (status, body) = try_publish(&a, "during").await;
        if status == 503 {
            let message = body["error"].as_str().unwrap_or_default();
            assert!(
                message.starts_with("event store (Redis) unavailable:"),
                "{body}"
            );
            break;
        }
        assert_eq!(status, 201, "either stored or refused: {body}");
        expected.push((body["id"].as_u64().expect("id"), "during".to_string()));
        assert!(start.elapsed() < PATIENCE, "publishing never noticed");
    }
    let (status, _) = try_publish(&b, "during").await;
    assert_eq!(status, 503, "b notices too");
    a.wait_for_log(&["event store (Redis) unavailable"]).await;
    // The streams stay open and breathe: pings keep coming. Events read meanwhile (those
    // published before) are kept for the check at the end.
    let mut got = [Vec::new(), Vec::new()];
    for (stream, got) in [&mut on_a, &mut on_b].into_iter().zip(got.iter_mut()) {
        let mut pings = 0;
        while pings < 3 {
            let ev = tokio::time::timeout(PATIENCE, stream.next())
                .await
                .expect("something within the time limit")
                .expect("still open")
                .expect("intact");
            match ev.event.as_str() {
                "ping" => pings += 1,
                "ready" => {}
                _ => got.push((ev.id.parse::<u64>().expect("id"), common::text_of(&ev))),
            }
        }
    }
    // A stream opened meanwhile works too.
    let mut late = open(&b.base, None).await.expect("stream during the outage");
    assert_eq!(next(&mut late, true).await.event, "ready");

    // Back, empty (no persistence): once each instance's reader has seen it back, publishing
    // works again at once, and ids still grow.
    redis.restart();
    let restarted = Instant::now();
    a.wait_for_log(&["event store (Redis) reachable again"])
        .await;
    b.wait_for_log(&["event store (Redis) reachable again"])
        .await;
    println!(
        "both readers back {:.2} s after Redis answered again",
        restarted.elapsed().as_secs_f64()
    );
    for i in 0..6 {
        let to = if i % 2 == 0 { &b } else { &a };
        let text = format!("after{i}");
        let (status, body) = try_publish(to, &text).await;
        assert_eq!(status, 201, "publish after the restart: {body}");
        expected.push((body["id"].as_u64().expect("id"), text));
    }
    assert!(
        expected.windows(2).all(|w| w[0].0 < w[1].0),
        "ids keep growing over the restart: {expected:?}"
    );
    a.wait_for_log(&["event store (Redis) reachable again"])
        .await;
    let outage_lines = a
        .logs
        .lock()
        .expect("logs")
        .iter()
        .filter(|l| l.contains("retrying until it is back"))
        .count();
    assert_eq!(outage_lines, 1, "one line per outage, not one per retry");

    // Every subscriber has everything once, in order: nothing lost, nothing twice.
    for (stream, mut got) in [&mut on_a, &mut on_b].into_iter().zip(got) {
        while got.len() < expected.len() {
            let ev = next(stream, false).await;
            assert_ne!(ev.event, "reset", "{}", ev.data);
            got.push((ev.id.parse::<u64>().expect("id"), common::text_of(&ev)));
        }
        assert_eq!(got, expected);
    }
    let mut late_got = Vec::new();
    while late_got.len() < 6 {
        let ev = next(&mut late, false).await;
        late_got.push((ev.id.parse::<u64>().expect("id"), common::text_of(&ev)));
    }
    assert_eq!(
        late_got,
        expected[expected.len() - 6..],
        "the six published after"
    );
    assert!(
        a.child.try_wait().expect("status").is_none(),
        "a is running"
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_missed_trimmed_events_resets_its_clients() {
    let redis = Redis::start();
    let relay = Relay::start(redis.port).await;
    let history = |o: Options| {
        o.env("EVENTS_HISTORY", "5")
            .env("EVENTS_HEARTBEAT", "200ms")
    };
    let a = spawn(history(
        Options::new()
            .env("EVENTS_REDIS_URL", &relay.url())
            .env("EVENTS_INSTANCE", "a"),
    ));
    let b = spawn(history(
        Options::new()
            .env("EVENTS_REDIS_URL", &redis.url())
            .env("EVENTS_INSTANCE", "b"),
    ));
    let mut on_a = open(&a.base, None).await.expect("stream on a");
    let mut last_seen = String::new();
    for i in 0..3 {
        b.publish("chat", &format!("seen{i}")).await;
        last_seen = next(&mut on_a, false).await.id;
    }

    // A loses Redis; meanwhile B publishes more than the history and the stream is trimmed
    // (exactly: MAXLEN ~ alone trims whole nodes of about 100 entries).
    relay.set_open(false);
    a.wait_for_log(&["retrying until it is back"]).await;
    let mut published = Vec::new();
    for i in 0..20 {
        published.push(b.publish("chat", &format!("missed{i}")).await);
    }
    assert_eq!(
        redis_command(redis.port, &["XTRIM", "sse-live:events", "MAXLEN", "5"]),
        ":18"
    );

    // Back: A sees that it cannot continue, ends its streams, and a client that reconnects
    // with its last id gets a reset and the history, never a silent gap.
    relay.set_open(true);
    a.wait_for_log(&["were trimmed from the Redis stream"])
        .await;
    let end = tokio::time::timeout(PATIENCE, async {
        while let Some(item) = on_a.next().await {
            let ev = item.expect("ends cleanly");
            assert!(ev.event == "ping", "nothing after the gap: {ev:?}");
        }
    })
    .await;
    assert!(end.is_ok(), "a's stream ended");
    let mut resumed = open(&a.base, Some(&last_seen))
        .await
        .expect("reconnect to a");
    let reset = next(&mut resumed, false).await;
    assert_eq!(reset.event, "reset", "{}", reset.data);
    let mut replay = Vec::new();
    while replay.len() < 5 {
        replay.push(
            next(&mut resumed, false)
                .await
                .id
                .parse::<u64>()
                .expect("id"),
        );
    }
    assert_eq!(
        replay,
        published[15..],
        "the newest five, as the stream holds them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_older_than_the_local_history_is_served_from_the_stream() {
    // `MAXLEN ~ 5` trims whole nodes of the stream (about 100 entries), so Redis still holds
    // what the instance's ring of five has already dropped.
    let redis = Redis::start();
    let a = spawn(
        Options::new()
            .env("EVENTS_REDIS_URL", &redis.url())
            .env("EVENTS_HISTORY", "5"),
    );
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(a.publish("chat", &format!("e{i}")).await);
    }
    let mut resumed = open(&a.base, Some(&ids[2].to_string()))
        .await
        .expect("resume");
    let mut got = Vec::new();
    while got.len() < 17 {
        let ev = next(&mut resumed, false).await;
        assert_ne!(ev.event, "reset", "{}", ev.data);
        got.push(ev.id.parse::<u64>().expect("id"));
    }
    assert_eq!(got, ids[3..]);
    // Trimmed away for real: a reset, then the history.
    assert_eq!(
        redis_command(redis.port, &["XTRIM", "sse-live:events", "MAXLEN", "5"]),
        ":15"
    );
    let mut too_old = open(&a.base, Some(&ids[2].to_string()))
        .await
        .expect("resume");
    assert_eq!(next(&mut too_old, false).await.event, "reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_it_starts_streams_and_answers_publishes_with_503() {
    // Nothing listens on this port: Redis is away from the start.
    let nowhere = format!("redis://127.0.0.1:{}/", common::free_port());
    let server = spawn(
        Options::new()
            .env("EVENTS_REDIS_URL", &nowhere)
            .env("EVENTS_HEARTBEAT", "200ms"),
    );
    let mut stream = open(&server.base, None)
        .await
        .expect("a stream all the same");
    assert_eq!(next(&mut stream, true).await.event, "ready");
    let (status, body) = try_publish(&server, "x").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("event store (Redis) unavailable:")),
        "{body}"
    );
    // The page's form (its server function) says the same, with the same status.
    let form = server
        .request(reqwest::Method::POST, "/api/publish_event")
        .header("Accept", "application/json")
        .header("Origin", server.origin())
        .form(&[("topic", "chat"), ("text", "from the page")])
        .send()
        .await
        .expect("form post");
    assert_eq!(form.status(), 503);
    let text = form.text().await.expect("text");
    assert!(text.contains("event store (Redis) unavailable"), "{text}");
    // Still breathing.
    let ping = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("a ping")
        .expect("open")
        .expect("intact");
    assert_eq!(ping.event, "ping");
    server
        .wait_for_log(&[
            "event store (Redis) unavailable",
            "retrying until it is back",
        ])
        .await;
}

/// The publish script's ids, straight against Redis: never before the caller's floor nor the
/// stream's last entry, and `seq` never past 999 (the SSE id mapping needs it below 1000).
#[tokio::test]
async fn the_publish_script_keeps_ids_growing_and_seq_below_1000() {
    use server::bus::{redis::PUBLISH_SCRIPT, stream_id::StreamId};
    let redis = Redis::start();
    let client = ::redis::Client::open(redis.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let script = ::redis::Script::new(PUBLISH_SCRIPT);
    let key = "test:ids";
    let mut publish = async |floor: StreamId| -> StreamId {
        let id: String = script
            .key(key)
            .arg(100)
            .arg(floor.ms)
            .arg(floor.seq)
            .arg("chat")
            .arg("x")
            .arg(1)
            .invoke_async(&mut conn)
            .await
            .expect("script");
        StreamId::parse(&id).expect("a stream id")
    };
    // A floor ahead of Redis's clock (an instance that saw later ids) wins.
    let future = StreamId::from_sse(9_000_000_000_000_998);
    let a = publish(future).await;
    assert_eq!(a.to_string(), "9000000000000-999");
    // The 1,000th of a millisecond moves on to the next one.
    let b = publish(a).await;
    assert_eq!(b.to_string(), "9000000000001-0");
    // The stream's last entry counts too, whatever the caller's floor.
    let c = publish(StreamId::from_sse(0)).await;
    assert_eq!(c.to_string(), "9000000000001-1");
    // An emptied stream (Redis restarted without persistence): the floor still holds.
    assert_eq!(redis_command(redis.port, &["DEL", key]), ":1");
    let d = publish(c).await;
    assert!(d > c && d.to_sse().is_some(), "{d}");
    // With no floor and no entries: Redis's clock, now.
    assert_eq!(redis_command(redis.port, &["DEL", key]), ":1");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let e = publish(StreamId::from_sse(0)).await;
    assert!(e.ms.abs_diff(now_ms) < 60_000 && e.seq == 0, "{e}");
}

/// Publish → receive on another instance through Redis, against publish → receive on one
/// in-process server; sequential publishes, so each figure is one event's whole trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_receive_delay_redis_against_in_process() {
    const N: usize = 200;
    async fn measure(publish_to: &Server, receive_from: &Server) -> Vec<f64> {
        let mut stream = open(&receive_from.base, None).await.expect("stream");
        next(&mut stream, true).await;
        let mut delays = Vec::new();
        for i in 0..N {
            let start = Instant::now();
            publish_to.publish("chat", &format!("d{i}")).await;
            let ev = next(&mut stream, false).await;
            assert_eq!(common::text_of(&ev), format!("d{i}"));
            delays.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        delays.sort_by(f64::total_cmp);
        delays
    }
    let pct = |d: &[f64], p: f64| d[((d.len() - 1) as f64 * p).round() as usize];
    let local = spawn(Options::new());
    let in_process = measure(&local, &local).await;
    let redis = Redis::start();
    let a = instance(&redis, "a");
    let b = instance(&redis, "b");
    let through_redis = measure(&a, &b).await;
    for (name, d) in [
        ("in-process (one server)", &in_process),
        ("Redis (publish to a, receive on b)", &through_redis),
    ] {
        println!(
            "publish -> receive, {name}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({N} events)",
            pct(d, 0.5),
            pct(d, 0.9),
            pct(d, 0.99),
            pct(d, 1.0)
        );
    }
}

/// The `watching` of the next `presence` event that satisfies `ok`, within [`PATIENCE`].
async fn watching_until(stream: &mut Events, ok: impl Fn(u64) -> bool) -> u64 {
    // A killed instance's figures count until they expire in Redis (5 s): room for that.
    let deadline = tokio::time::Instant::now() + 2 * PATIENCE;
    loop {
        let ev = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the presence figure changed in time")
            .expect("the stream is open")
            .expect("the stream is intact");
        if ev.event != "presence" {
            continue;
        }
        let watching = json(&ev)["watching"].as_u64().expect("watching");
        if ok(watching) {
            return watching;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_every_instance_and_forgets_one_that_stopped() {
    let redis = Redis::start();
    let a = instance(&redis, "a");
    let b = instance(&redis, "b");
    let c = instance(&redis, "c");
    let mut on_a = open_url(&a.url("/api/events?presence=1"), None)
        .await
        .expect("stream on a");
    let _on_b = open(&b.base, None).await.expect("stream on b");
    let _on_c = open(&c.base, None).await.expect("stream on c");
    watching_until(&mut on_a, |n| n == 3).await;
    // Each instance reads the others' figures once a second: b's catch up.
    let deadline = Instant::now() + PATIENCE;
    let report = loop {
        let report: serde_json::Value = common::client()
            .get(b.url("/api/presence"))
            .send()
            .await
            .expect("presence request")
            .json()
            .await
            .expect("presence report");
        if report["watching"] == 3 || Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(report["watching"], 3, "{report}");
    assert_eq!(report["instances"], 3, "{report}");
    assert_eq!(report["topics"]["chat"]["watching"], 3, "{report}");

    // Killed: no goodbye; its figures expire in Redis.
    drop(c);
    let started = Instant::now();
    watching_until(&mut on_a, |n| n == 2).await;
    println!(
        "a killed instance stopped counting after {:?}",
        started.elapsed()
    );
    // Stopped cleanly: it says goodbye.
    let started = Instant::now();
    b.stop();
    watching_until(&mut on_a, |n| n == 1).await;
    println!(
        "a stopped instance stopped counting after {:?}",
        started.elapsed()
    );
}
