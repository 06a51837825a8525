//! The published server behind an imitation of IIS (tests/common/ancm.rs), driven by the real
//! web.config: started, fed and recycled as the ASP.NET Core Module does it, and, for contrast,
//! behind an imitation of HttpPlatformHandler, whose 8 KB buffer is the original symptom.
//!
//! Set `PUBLISHED_DIR` to test a folder made by `cargo xtask publish --target
//! x86_64-unknown-linux-gnu`; otherwise the folder is laid out from this build. Run with
//! `--nocapture` to see the measured figures.

mod common;

use common::ancm::{self, Handler, Module, Published, WebConfig, HTTP_PLATFORM_BUFFER};
use common::{client, next_any, next_event, text_of, PATIENCE};
use futures::StreamExt;
use std::{
    future::Future,
    time::{Duration, Instant},
};

/// The longest any one test here may run: a hang fails, it does not stall the suite.
const TEST_LIMIT: Duration = Duration::from_secs(90);

/// The published workload: this many small events, this far apart.
const EVENTS: usize = 10;
const GAP: Duration = Duration::from_millis(300);

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {TEST_LIMIT:?}"));
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// A published folder whose web.config has no tick (the tests publish what they expect).
fn quiet(tag: &str) -> Published {
    let folder = Published::new(tag);
    folder.set_env("EVENTS_TICK", "off");
    folder
}

#[test]
fn web_config_is_read_as_the_module_reads_it() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../web.config");
    let config = WebConfig::load(std::path::Path::new(path));
    assert_eq!(config.process_path, r".\server.exe");
    assert_eq!(
        ancm::linux_process_path(&config.process_path),
        std::path::PathBuf::from("server")
    );
    assert!(config.stdout_log_enabled);
    assert_eq!(config.startup_time_limit, Duration::from_secs(60));
    assert_eq!(config.shutdown_time_limit, Duration::from_secs(10));
    assert_eq!(config.request_timeout, Duration::from_secs(300));
    assert_eq!(config.env_var("EVENTS_TICK"), Some("1s"));
    assert_eq!(config.env_var("LEPTOS_SITE_ROOT"), Some("site"));
    assert!(
        config.request_timeout > Duration::from_secs(15) * 2,
        "the heartbeat must come well inside requestTimeout"
    );

    // A test's modified copy: replaced in place, or added; the rest untouched.
    let xml = std::fs::read_to_string(path).expect("web.config");
    let changed = ancm::with_env(&xml, "EVENTS_TICK", "off");
    let changed = ancm::with_env(&changed, "EVENTS_PAD", "off");
    let c = WebConfig::parse(&changed);
    assert_eq!(c.env_var("EVENTS_TICK"), Some("off"));
    assert_eq!(c.env_var("EVENTS_PAD"), Some("off"));
    assert_eq!(c.env.len(), config.env.len() + 1);
    assert_eq!(c.process_path, config.process_path);

    // Defaults of the module when attributes are missing.
    let bare =
        WebConfig::parse(r#"<configuration><aspNetCore processPath="x.exe"/></configuration>"#);
    assert_eq!(bare.startup_time_limit, Duration::from_secs(120));
    assert_eq!(bare.shutdown_time_limit, Duration::from_secs(10));
    assert_eq!(bare.request_timeout, Duration::from_secs(120));

    assert_eq!(ancm::timespan("1.00:00:30"), Duration::from_secs(86_430));
    let env = [("HOME".to_string(), "/h".to_string())]
        .into_iter()
        .collect();
    assert_eq!(ancm::expand("%home%/x %NOPE% 50%", &env), "/h/x %NOPE% 50%");
    assert_eq!(ancm::utc_stamp(1_764_074_096), "20251125123456");
    let token = ancm::guid();
    assert_eq!(token.len(), 36);
    assert!(token
        .chars()
        .all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_lowercase()));
    assert_ne!(token, ancm::guid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_starts_the_published_server_as_shipped() {
    bounded(async {
        // The web.config exactly as shipped (1 s tick).
        let folder = Published::new("startup");
        let mut module = Module::start(&folder, Handler::site_root()).await;
        println!(
            "ready {} ms after start (polled every 250 ms), attempt {}",
            ms(module.ready_after),
            module.attempts
        );
        assert!(
            module.ready_after < Duration::from_secs(10),
            "{:?}",
            module.ready_after
        );
        assert_eq!(module.attempts, 1);
        module
            .wait_for_log(&[
                "listening on http://127.0.0.1:",
                "frontend=AspNetCoreModule",
            ])
            .await;

        // stdoutLogEnabled: the same lines in logs/stdout_<UTC time>_<pid>.log.
        let file = module.log_file.clone().expect("stdoutLogEnabled is on");
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        assert!(
            name.starts_with("stdout_") && name.ends_with(&format!("_{}.log", std::process::id())),
            "{name}"
        );
        assert_eq!(folder.log_files(), vec![file.clone()]);
        let written = std::fs::read_to_string(&file).expect("stdout log");
        assert!(written.contains("frontend=AspNetCoreModule"), "{written}");

        // Around the front, without the module's token (or with a forged one): 400, empty.
        for path in ["/", "/api/events", "/iisintegration"] {
            let res = client()
                .get(module.backend_url(path))
                .send()
                .await
                .expect("request");
            assert_eq!(res.status(), 400, "{path} straight to the backend");
            assert_eq!(res.text().await.expect("body"), "");
            let forged = client()
                .get(module.backend_url(path))
                .header("MS-ASPNETCORE-TOKEN", ancm::guid())
                .send()
                .await
                .expect("request");
            assert_eq!(forged.status(), 400, "{path} with a forged token");
        }

        // Through the front: the page, and web.config's tick on the stream.
        let page = client().get(module.url("/")).send().await.expect("page");
        assert_eq!(page.status(), 200);
        let mut s = module.stream("/api/events?topic=tick", None).await;
        assert_eq!(next_any(&mut s).await.event, "ready");
        let tick = next_event(&mut s).await;
        assert_eq!(tick.event, "tick");
        assert!(text_of(&tick).starts_with("Hello, world #"));

        let stopped = module.stop().await;
        assert_eq!(stopped.shutdown_status, Some(202), "{stopped:?}");
        assert!(!stopped.killed && !stopped.signalled, "{stopped:?}");
    })
    .await;
}

/// Publish → receive delay of each of [`EVENTS`] small events published [`GAP`] apart through
/// the front, read by a client of `/api/events` through the same front; and the moments they
/// were received. The same workload for both modules. One 8 KB event closes it: it changes
/// nothing through the ASP.NET Core Module, and through HttpPlatformHandler it is what finally
/// pushes the small events out of the 8 KB buffer (without it they would not arrive at all
/// until the stream ends).
async fn small_events_through(module: &Module) -> (Vec<Duration>, Vec<Instant>) {
    let mut stream = module.stream("/api/events?topic=chat", None).await;
    // Subscribed: the handler has run. (Its `ready` event may still sit in a buffer.)
    module.wait_for_log(&["stream opened"]).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            if ev.event == "chat" {
                let _ = tx.send((text_of(&ev), Instant::now()));
            }
        }
    });
    let start = Instant::now();
    let mut sent = Vec::new();
    for i in 0..EVENTS {
        sent.push(Instant::now());
        module.publish("chat", &format!("small {i}")).await;
        tokio::time::sleep_until((start + GAP * (i as u32 + 1)).into()).await;
    }
    module
        .publish("chat", &"x".repeat(HTTP_PLATFORM_BUFFER))
        .await;
    let mut received: Vec<Option<Instant>> = vec![None; EVENTS];
    while received.iter().any(Option::is_none) {
        let (text, at) = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("events missing after {PATIENCE:?}: {received:?}"))
            .expect("the stream is still open");
        if let Some(i) = text
            .strip_prefix("small ")
            .and_then(|n| n.parse::<usize>().ok())
        {
            received[i] = Some(at);
        }
    }
    reader.abort();
    let received: Vec<Instant> = received.into_iter().flatten().collect();
    let delays = received.iter().zip(&sent).map(|(r, s)| *r - *s).collect();
    (delays, received)
}

fn figures(delays: &[Duration]) -> String {
    delays.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_live_through_the_module() {
    bounded(async {
        let folder = quiet("live");
        let module = Module::start(&folder, Handler::site_root()).await;
        let (delays, received) = small_events_through(&module).await;
        let max = delays.iter().max().copied().unwrap_or_default();
        println!(
            "ASP.NET Core Module: publish → receive per event (ms): {}",
            figures(&delays)
        );
        for (i, d) in delays.iter().enumerate() {
            assert!(
                *d < Duration::from_secs(1),
                "event {i} took {d:?} through the module"
            );
        }
        // One by one as published, not together.
        let spread = received[EVENTS - 1] - received[0];
        assert!(
            spread >= GAP * (EVENTS as u32 - 2),
            "received within {spread:?}"
        );
        println!("ASP.NET Core Module: slowest {} ms", ms(max));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpplatformhandler_holds_the_same_events_back_and_delivers_a_burst() {
    bounded(async {
        let folder = quiet("hph");
        // The symptom itself, whatever the server may later do to work around it.
        folder.set_env("EVENTS_PAD", "off");
        let module = Module::start(&folder, Handler::HttpPlatformHandler).await;
        assert!(module.token.is_none());
        module
            .wait_for_log(&[
                "listening on http://127.0.0.1:",
                "frontend=HttpPlatformHandler",
            ])
            .await;
        let (delays, received) = small_events_through(&module).await;
        println!(
            "HttpPlatformHandler: publish → receive per event (ms): {}",
            figures(&delays)
        );
        // The first event waits until 8 KB have accumulated behind it: seconds, not ms.
        assert!(
            delays[0] > Duration::from_secs(1),
            "first event after {:?}",
            delays[0]
        );
        let late = delays
            .iter()
            .filter(|d| **d >= Duration::from_secs(1))
            .count();
        assert!(
            late > EVENTS / 2,
            "only {late} of {EVENTS} events ≥ 1 s late: {delays:?}"
        );
        // ...and then all of them at once.
        let spread = received[EVENTS - 1] - received[0];
        assert!(
            spread < Duration::from_millis(200),
            "not one burst: spread {spread:?}"
        );
        println!(
            "HttpPlatformHandler: all {EVENTS} in one burst, spread {} ms",
            ms(spread)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_works_as_a_sub_application() {
    bounded(async {
        let folder = quiet("subapp");
        let mut module = Module::start(&folder, Handler::application("/live")).await;
        module
            .wait_for_log(&["listening on http://127.0.0.1:", "/live/"])
            .await;

        let page = client()
            .get(module.front_url("/live/"))
            .send()
            .await
            .expect("page");
        assert_eq!(page.status(), 200);
        let html = page.text().await.expect("html");
        assert!(
            html.contains("/live/pkg/"),
            "client files under /live: {html}"
        );

        assert_eq!(
            module.url("/api/events"),
            module.front_url("/live/api/events")
        );
        let mut s = module.stream("/api/events", None).await;
        assert_eq!(next_any(&mut s).await.event, "ready");
        let id = module.publish("chat", "under /live").await; // POST /live/api/publish
        let ev = next_event(&mut s).await;
        assert_eq!(
            (ev.id.clone(), text_of(&ev)),
            (id.to_string(), "under /live".into())
        );

        let outside = client()
            .get(module.front_url("/api/events"))
            .send()
            .await
            .expect("request");
        assert_eq!(outside.status(), 404, "nothing outside the application");

        // The module's shutdown request goes to /live/iisintegration.
        let stopped = module.stop().await;
        assert_eq!(stopped.shutdown_status, Some(202), "{stopped:?}");
        assert!(!stopped.killed, "{stopped:?}");
        assert!(tokio::time::timeout(PATIENCE, s.next())
            .await
            .expect("ends")
            .is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logged_client_is_the_modules_own_forwarded_entry() {
    bounded(async {
        let folder = quiet("xff");
        let module = Module::start(&folder, Handler::site_root()).await;
        let res = client()
            .post(module.url("/api/publish"))
            .header("X-Forwarded-For", "6.6.6.6")
            // A client cannot pass a token of its own: the front replaces it.
            .header("MS-ASPNETCORE-TOKEN", "forged")
            .json(&serde_json::json!({ "topic": "chat", "text": "who am I" }))
            .send()
            .await
            .expect("publish through the front");
        assert_eq!(res.status(), 201);
        let body: serde_json::Value = res.json().await.expect("answer");
        let id = body["id"].as_u64().expect("id");

        let sent = module
            .forwarded()
            .into_iter()
            .find(|f| f.path == "/api/publish")
            .expect("the front forwarded the publish");
        let own = sent
            .x_forwarded_for
            .rsplit(", ")
            .next()
            .expect("an entry")
            .to_string();
        assert!(sent.x_forwarded_for.starts_with("6.6.6.6, "), "{sent:?}");
        assert!(own.starts_with("127.0.0.1:"), "{own}");
        let line = module
            .wait_for_log(&["published", &format!("id={id}")])
            .await;
        println!(
            "X-Forwarded-For sent: {}; logged: {line}",
            sent.x_forwarded_for
        );
        assert!(line.contains(&format!("client={own} (http)")), "{line}");
        assert!(!line.contains("6.6.6.6"), "{line}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recycle_with_200_open_streams_ends_them_all_and_exits_in_time() {
    const STREAMS: usize = 200;
    bounded(async {
        let folder = quiet("recycle");
        let mut module = Module::start(&folder, Handler::site_root()).await;
        let opened = futures::future::join_all((0..STREAMS).map(|_| async {
            let mut s = module.stream("/api/events", None).await;
            assert_eq!(next_any(&mut s).await.event, "ready");
            s
        }))
        .await;
        module.wait_for_log(&["stream opened", &format!("open={STREAMS}")]).await;

        let start = Instant::now();
        let ends: Vec<_> = opened
            .into_iter()
            .map(|mut s| {
                tokio::spawn(async move {
                    let end = tokio::time::timeout(PATIENCE, s.next()).await;
                    (matches!(end, Ok(None)), Instant::now())
                })
            })
            .collect();
        let stopped = module.stop().await;
        let mut last_end = start;
        for end in ends {
            let (ended, at) = end.await.expect("watcher");
            assert!(ended, "a stream did not end cleanly within {PATIENCE:?}");
            last_end = last_end.max(at);
        }
        println!(
            "recycle with {STREAMS} streams: shutdown answered {:?}, every stream ended after {} ms, \
             process exited after {} ms (shutdownTimeLimit {:?}), killed: {}",
            stopped.shutdown_status,
            ms(last_end - start),
            ms(stopped.exited_after),
            module.config.shutdown_time_limit,
            stopped.killed
        );
        assert_eq!(stopped.shutdown_status, Some(202), "{stopped:?}");
        assert!(!stopped.signalled && !stopped.killed, "{stopped:?}");
        assert!(stopped.exit.is_some_and(|s| s.success()), "{stopped:?}");
        assert!(
            stopped.exited_after < module.config.shutdown_time_limit / 2,
            "exit took {:?}",
            stopped.exited_after
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapped_recycle_resumes_on_the_new_process_with_a_reset() {
    bounded(async {
        let folder = quiet("overlap");
        let mut old = Module::start(&folder, Handler::site_root()).await;
        let mut s = old.stream("/api/events", None).await;
        assert_eq!(next_any(&mut s).await.event, "ready");
        let last = old.publish("chat", "before the recycle").await;
        assert_eq!(next_event(&mut s).await.id, last.to_string());

        // The new process starts while the old one still runs: its own port and token.
        let mut new = Module::start(&folder, Handler::site_root()).await;
        assert_ne!(old.port, new.port);
        assert_ne!(old.token, new.token);
        assert_ne!(old.pid(), new.pid());
        // Each process accepts only its own token.
        let crossed = client()
            .get(old.backend_url("/"))
            .header("MS-ASPNETCORE-TOKEN", new.token.clone().expect("token"))
            .send()
            .await
            .expect("request");
        assert_eq!(crossed.status(), 400);

        let stopped = old.stop().await;
        assert_eq!(stopped.shutdown_status, Some(202), "{stopped:?}");
        assert!(!stopped.killed, "{stopped:?}");
        let end = tokio::time::timeout(PATIENCE, s.next())
            .await
            .expect("the old stream ends");
        assert!(end.is_none());

        // The browser reconnects (now reaching the new process) with the last id it saw.
        let mut s = new.stream("/api/events", Some(&last.to_string())).await;
        let reset = next_any(&mut s).await;
        assert_eq!(reset.event, "reset", "{reset:?}");
        let data: serde_json::Value = serde_json::from_str(&reset.data).expect("reset JSON");
        assert_eq!(data["requested"], last.to_string());
        assert!(data["head"].as_u64().expect("head") > last, "{data}");
        assert_eq!(next_any(&mut s).await.event, "ready");
        let id = new.publish("chat", "after the recycle").await;
        assert!(id > last);
        assert_eq!(next_event(&mut s).await.id, id.to_string());

        let stopped = new.stop().await;
        assert_eq!(stopped.shutdown_status, Some(202), "{stopped:?}");
    })
    .await;
}

/// ANCM.md: "`requestTimeout` ... is an **idle** timeout per receive from the backend, not a
/// total: a stream that sends nothing for that long is cut. Heartbeats must come well inside it."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_cuts_a_silent_stream_and_keep_alives_prevent_it() {
    bounded(async {
        // Keep-alives every 15 s as shipped, but requestTimeout 1 s: cut after the silence.
        let folder = quiet("silent");
        folder.set_attribute("requestTimeout", "00:00:01");
        let module = Module::start(&folder, Handler::site_root()).await;
        assert_eq!(module.config.request_timeout, Duration::from_secs(1));
        let res = client()
            .get(module.url("/api/events"))
            .send()
            .await
            .expect("stream");
        assert_eq!(res.status(), 200);
        let mut body = res.bytes_stream();
        let start = Instant::now();
        let cut = loop {
            match tokio::time::timeout(PATIENCE, body.next()).await {
                Ok(Some(Ok(_))) => continue, // `retry:` and `ready`
                Ok(Some(Err(_))) => break start.elapsed(),
                Ok(None) => panic!("the stream ended cleanly instead of being cut"),
                Err(_) => panic!("the silent stream was not cut within {PATIENCE:?}"),
            }
        };
        println!(
            "requestTimeout 1 s: the silent stream was cut after {} ms",
            ms(cut)
        );
        assert!(cut >= Duration::from_millis(900), "cut after {cut:?}");

        // The same limit with keep-alives every 300 ms: the stream lives on and still carries
        // events (a cut would fail the test inside `stream`).
        let folder = quiet("heartbeat");
        folder
            .set_attribute("requestTimeout", "00:00:01")
            .set_env("EVENTS_HEARTBEAT", "300ms");
        let module = Module::start(&folder, Handler::site_root()).await;
        let mut s = module.stream("/api/events", None).await;
        assert_eq!(next_any(&mut s).await.event, "ready");
        // Whatever form the keep-alives take (comments, or events a parser shows), the stream
        // must stay open through 2.5 s of them.
        let until = Instant::now() + Duration::from_millis(2500);
        while let Ok(next) = tokio::time::timeout_at(until.into(), s.next()).await {
            assert!(next.is_some(), "the stream ended during the keep-alives");
        }
        let id = module.publish("chat", "still here").await;
        loop {
            let ev = next_any(&mut s).await;
            if ev.event == "chat" {
                assert_eq!(ev.id, id.to_string());
                break;
            }
        }
    })
    .await;
}
