//! The published server behind an imitation of IIS (tests/common/ancm.rs), driven by the real
//! web.config: started, fed and recycled as the ASP.NET Core Module does it, and, for contrast,
//! behind an imitation of HttpPlatformHandler, whose 8 KB buffer is the original symptom.
//!
//! Set `PUBLISHED_DIR` to test a folder made by `cargo xtask publish --target
//! x86_64-unknown-linux-gnu`; otherwise the folder is laid out from this build. Run with
//! `--nocapture` to see the measured figures.

mod common;

use common::ancm::{self, Gzip, Handler, Iis, Module, Published, WebConfig, HTTP_PLATFORM_BUFFER};
use common::{client, next_any, next_event, text_of, PATIENCE};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use std::{
    future::Future,
    io::Read,
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
    // What the app asks of IIS's compression; a server-level lock can override it.
    assert_eq!(config.do_dynamic_compression, Some(false));
    // A fresh IIS: 5000 requests in flight, compression as web.config says.
    assert_eq!(Iis::default().app_concurrent_request_limit, 5000);
    assert!(!Iis::default().dynamic_compression_locked_on);
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

/// With `EVENTS_STORE=memory` each process has its own history: what the durable log (the
/// default, tests/iis_log.rs) is for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapped_recycle_with_the_memory_store_resumes_with_a_reset() {
    bounded(async {
        let folder = quiet("overlap");
        folder.set_env("EVENTS_STORE", "memory");
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

/// `n` streams through the front, each past its `ready` event (so each is open at the server).
async fn open_streams(
    module: &Module,
    n: usize,
) -> Vec<impl futures::Stream<Item = eventsource_stream::Event> + Unpin + Send> {
    futures::future::join_all((0..n).map(|_| async {
        let mut s = module.stream("/api/events", None).await;
        assert_eq!(next_any(&mut s).await.event, "ready");
        s
    }))
    .await
}

/// The requests for `/api/events` the front forwarded to the backend, in order.
fn streams_forwarded(module: &Module) -> Vec<ancm::Forwarded> {
    module
        .forwarded()
        .into_iter()
        .filter(|f| f.path.starts_with("/api/events"))
        .collect()
}

/// ANCM.md: "IIS counts every open stream as a request: ... `appConcurrentRequestLimit` ...
/// makes IIS answer 503.2 itself beyond that". Under the module the server's own cap sits below
/// it (4500 under 5000 by default), so the refusal a client gets is ours, with `Retry-After`.
/// The same order here at a small scale: our cap 50 under IIS's 60.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_stream_cap_answers_before_iis_concurrent_request_limit() {
    const CAP: usize = 50;
    bounded(async {
        let folder = quiet("cap-first");
        folder.set_env("EVENTS_MAX_STREAMS", &CAP.to_string());
        let iis = Iis {
            app_concurrent_request_limit: 60,
            ..Iis::default()
        };
        let module = Module::start_with(&folder, Handler::site_root(), iis).await;
        let _open = open_streams(&module, CAP).await;
        assert_eq!(module.in_flight(), CAP, "IIS counts every open stream");

        let res = client()
            .get(module.url("/api/events"))
            .send()
            .await
            .expect("stream request");
        assert_eq!(res.status(), 503);
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .expect("our 503 carries Retry-After in seconds");
        assert!(retry_after >= 1, "Retry-After: {retry_after}");
        let body: serde_json::Value = res.json().await.expect("a JSON body");
        assert_eq!(body["error"], "too many open streams; retry later");

        // The server answered it: forwarded, and answered 503 by the backend, not by IIS.
        let sent = streams_forwarded(&module);
        assert_eq!(sent.len(), CAP + 1, "{sent:?}");
        assert_eq!(sent.last().and_then(|f| f.status), Some(503));
        assert_eq!(module.refused(), 0, "IIS refused nothing");
    })
    .await;
}

/// Nothing set: under the module the server's cap defaults to 4500, below IIS's default
/// `appConcurrentRequestLimit` of 5000, so that with both as shipped the refusal is ours. Not
/// under the module (HttpPlatformHandler here), IIS's limit is not the module's to know: 10000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_module_the_stream_cap_defaults_below_iis_own_limit() {
    bounded(async {
        let folder = quiet("cap-default");
        assert_eq!(folder.web_config().env_var("EVENTS_MAX_STREAMS"), None);
        let module = Module::start(&folder, Handler::site_root()).await;
        let line = module
            .wait_for_log(&["listening on http://127.0.0.1:", "max_streams="])
            .await;
        assert!(line.contains("max_streams=4500"), "{line}");
        assert!(4500 < module.iis.app_concurrent_request_limit);

        let folder = quiet("cap-default-hph");
        let module = Module::start(&folder, Handler::HttpPlatformHandler).await;
        let line = module
            .wait_for_log(&["listening on http://127.0.0.1:", "max_streams="])
            .await;
        assert!(line.contains("max_streams=10000"), "{line}");
    })
    .await;
}

/// The other order: the server's cap (100) above IIS's limit (60). IIS refuses the 61st request
/// itself, 503.2 without `Retry-After`, and the server never sees it; any request, not only a
/// stream, since every request in flight counts. A stream counts until its client goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_app_concurrent_request_limit_iis_answers_503_2_itself() {
    const LIMIT: usize = 60;
    bounded(async {
        let folder = quiet("iis-limit");
        folder.set_env("EVENTS_MAX_STREAMS", "100");
        let iis = Iis {
            app_concurrent_request_limit: LIMIT,
            ..Iis::default()
        };
        let module = Module::start_with(&folder, Handler::site_root(), iis).await;
        let mut open = open_streams(&module, LIMIT).await;
        assert_eq!(module.in_flight(), LIMIT);

        let res = client()
            .get(module.url("/api/events"))
            .send()
            .await
            .expect("stream request");
        assert_eq!(res.status(), 503);
        assert!(
            res.headers().get("retry-after").is_none(),
            "IIS's 503.2 has no Retry-After: {:?}",
            res.headers()
        );
        let text = res.text().await.expect("body");
        assert!(text.contains("503.2"), "{text}");
        assert_eq!(streams_forwarded(&module).len(), LIMIT, "never forwarded");
        assert_eq!(module.refused(), 1);

        // A publish and the page are requests too.
        let publish = client()
            .post(module.url("/api/publish"))
            .json(&serde_json::json!({ "topic": "chat", "text": "refused" }))
            .send()
            .await
            .expect("publish request");
        assert_eq!(publish.status(), 503);
        let page = client().get(module.url("/")).send().await.expect("page");
        assert_eq!(page.status(), 503);
        assert_eq!(module.refused(), 3);
        assert_eq!(
            module.forwarded().len(),
            LIMIT,
            "the backend saw none of them"
        );

        // One client goes: its stream stops counting, and a new stream gets through.
        drop(open.pop());
        let start = Instant::now();
        loop {
            let res = client()
                .get(module.url("/api/events"))
                .send()
                .await
                .expect("stream request");
            if res.status() == 200 {
                break;
            }
            assert_eq!(res.status(), 503);
            assert!(
                start.elapsed() < PATIENCE,
                "still refused {PATIENCE:?} after a client went (in flight: {})",
                module.in_flight()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sent = streams_forwarded(&module);
        assert_eq!(sent.len(), LIMIT + 1);
        assert_eq!(sent.last().and_then(|f| f.status), Some(200));
    })
    .await;
}

/// IIS with dynamic compression locked on at server level (ANCM.md: "the only defence left to
/// the app is a `Content-Encoding` header on the stream"): web.config's
/// `doDynamicCompression="false"` is overruled, and the stream still arrives live because it
/// says `Content-Encoding: identity`. The request asks for gzip, as every browser's
/// `EventSource` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_iis_compression_locked_on_the_stream_says_identity_and_stays_live() {
    bounded(async {
        let folder = quiet("gzip-stream");
        assert_eq!(
            folder.web_config().do_dynamic_compression,
            Some(false),
            "web.config turns it off; the lock overrules that"
        );
        let iis = Iis {
            dynamic_compression_locked_on: true,
            ..Iis::default()
        };
        let module = Module::start_with(&folder, Handler::site_root(), iis).await;
        // Raw: reqwest here has no gzip feature, so it shows the headers as sent and would
        // hand a gzipped body to the SSE parser undecoded.
        let res = client()
            .get(module.url("/api/events?topic=chat"))
            .header("accept-encoding", "gzip, deflate, br")
            .send()
            .await
            .expect("stream request");
        assert_eq!(res.status(), 200);
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        assert_eq!(header("content-encoding").as_deref(), Some("identity"));
        assert!(
            header("content-type").is_some_and(|t| t.starts_with("text/event-stream")),
            "{:?}",
            res.headers()
        );
        let sent = streams_forwarded(&module);
        assert_eq!(sent.len(), 1);
        assert!(
            !sent[0].gzipped,
            "the front left the stream alone: {sent:?}"
        );

        let mut s = Box::pin(res.bytes_stream().eventsource().map(|e| match e {
            Ok(event) => event,
            Err(e) => panic!("the stream broke: {e}"),
        }));
        assert_eq!(next_any(&mut s).await.event, "ready");
        // Each event arrives before the next is published: none is held behind another.
        for i in 0..5 {
            let text = format!("live {i}");
            let id = module.publish("chat", &text).await;
            let ev = tokio::time::timeout(Duration::from_secs(5), next_event(&mut s))
                .await
                .unwrap_or_else(|_| panic!("event {i} did not arrive within 5 s"));
            assert_eq!((ev.id.clone(), text_of(&ev)), (id.to_string(), text));
        }
    })
    .await;
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a whole gzip body");
    out
}

/// The contrast to the test above: through the same locked-on front, a `text/*` answer that
/// has no `Content-Encoding` IS gzipped, whatever web.config says; one the server compressed
/// itself (the page) is left alone, as the stream's `identity` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iis_compression_locked_on_gzips_text_that_has_no_content_encoding() {
    bounded(async {
        let folder = quiet("gzip-text");
        // Too small for the server's own compression (tower-http skips bodies under 32 bytes):
        // a text/* answer without Content-Encoding.
        let css = "body{color:red}";
        std::fs::write(folder.path().join("site/pkg/tiny.css"), css).expect("write tiny.css");
        let iis = Iis {
            dynamic_compression_locked_on: true,
            ..Iis::default()
        };
        let module = Module::start_with(&folder, Handler::site_root(), iis).await;
        let token = module.token.clone().expect("token");

        // The server's own answer: text/css, no Content-Encoding.
        let direct = client()
            .get(module.backend_url("/pkg/tiny.css"))
            .header("ms-aspnetcore-token", &token)
            .header("accept-encoding", "gzip")
            .send()
            .await
            .expect("straight to the backend");
        assert_eq!(direct.status(), 200);
        assert!(
            direct.headers().get("content-encoding").is_none(),
            "{direct:?}"
        );
        assert!(
            direct
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("text/css")),
            "{direct:?}"
        );
        assert_eq!(direct.text().await.expect("css"), css);

        // Through the front: gzipped, its length gone, and it decodes to the same bytes.
        let res = client()
            .get(module.url("/pkg/tiny.css"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .expect("through the front");
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers().get("content-encoding").map(|v| v.as_bytes()),
            Some(&b"gzip"[..]),
            "{res:?}"
        );
        assert!(res.headers().get("content-length").is_none(), "{res:?}");
        let body = res.bytes().await.expect("body");
        assert_ne!(&body[..], css.as_bytes());
        assert_eq!(gunzip(&body), css.as_bytes());
        let tiny = |module: &Module| {
            module
                .forwarded()
                .into_iter()
                .filter(|f| f.path == "/pkg/tiny.css")
                .collect::<Vec<_>>()
        };
        assert!(tiny(&module).last().is_some_and(|f| f.gzipped));

        // A client that does not take gzip gets it as the server sent it: IIS compresses only
        // for a client that asks.
        let res = client()
            .get(module.url("/pkg/tiny.css"))
            .send()
            .await
            .expect("through the front");
        assert!(res.headers().get("content-encoding").is_none(), "{res:?}");
        assert_eq!(res.text().await.expect("css"), css);
        assert!(tiny(&module).last().is_some_and(|f| !f.gzipped));

        // The page: the server compressed it itself, so IIS leaves it alone: one decoding gives
        // the HTML.
        let res = client()
            .get(module.url("/"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .expect("page");
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers().get("content-encoding").map(|v| v.as_bytes()),
            Some(&b"gzip"[..]),
            "{res:?}"
        );
        let html = String::from_utf8(gunzip(&res.bytes().await.expect("body"))).expect("utf-8");
        assert!(html.to_ascii_lowercase().contains("<html"), "{html}");
        let page = module
            .forwarded()
            .into_iter()
            .rfind(|f| f.path == "/")
            .expect("the page was forwarded");
        assert!(!page.gzipped, "compressed twice: {page:?}");
    })
    .await;
}

/// What the locked-on compressor does to a stream that does not say `identity`: small events go
/// in and nothing comes out (beyond gzip's 10-byte header) until the compressor's buffer fills;
/// then they come out in a burst. Checked on the imitation's compressor itself, by bytes, not by
/// time: ANCM.md's "events arrive 'one behind'" under IIS's dynamic compression.
#[test]
fn the_imitated_compressor_holds_small_events_back_until_its_buffer_fills() {
    const GZIP_HEADER: usize = 10;
    let mut gzip = Gzip::new();
    let mut sent = Vec::new();
    let mut out = Vec::new();
    let mut held_events = 0;
    for id in 1..=1_000_000u64 {
        let event = format!(
            "id: {id}\nevent: chat\ndata: {{\"topic\":\"chat\",\"text\":\"small {id}\"}}\n\n"
        );
        sent.extend_from_slice(event.as_bytes());
        out.extend_from_slice(&gzip.push(event.as_bytes()));
        if out.len() > GZIP_HEADER {
            break;
        }
        held_events += 1;
    }
    println!(
        "the compressor held {held_events} small events ({} bytes) before letting anything out",
        sent.len()
    );
    assert!(
        held_events >= 100,
        "only {held_events} events held: not the compressor IIS is"
    );
    out.extend_from_slice(&gzip.finish());
    assert_eq!(gunzip(&out), sent, "everything comes out at the end");
}
