//! Starting and stopping: one clear line for a bad setting, a clean exit on a signal.

mod common;

use common::{command, next_any, spawn, Options, TempDir, PATIENCE};
use std::time::{Duration, Instant};

fn start_with(env: &[(&str, &str)]) -> (i32, String) {
    let site = TempDir::new("startup");
    let data = TempDir::new("startup-data");
    let mut cmd = command();
    cmd.env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .env("LEPTOS_SITE_ROOT", &site.0)
        .env("EVENTS_DATA_DIR", &data.0)
        .env("EVENTS_TICK", "off");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the server");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_access_rules_and_token_settings_stop_the_start_with_one_line() {
    let dir = TempDir::new("access-bad");
    let file = dir.0.join("access.toml");
    std::fs::write(&file, "[topic.opz]\nread = [\"everyone\"]\n").expect("write");
    let file = file.to_str().expect("path");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("EVENTS_ACCESS_FILE", file)], "no topic 'opz'"),
        (
            &[("EVENTS_ACCESS_FILE", "/no/such/access.toml")],
            "cannot read",
        ),
        (&[("EVENTS_TOKEN_SECRET", "short")], "at least 32 bytes"),
        (&[("EVENTS_TOKEN_PUBLIC_KEY", file)], "not a PEM"),
        (&[("EVENTS_ANONYMOUS", "maybe")], "EVENTS_ANONYMOUS"),
        (&[("EVENTS_PRESENCE_NAMES", "yes")], "EVENTS_PRESENCE_NAMES"),
        (&[("EVENTS_TOKEN_COOKIE", "a;b")], "EVENTS_TOKEN_COOKIE"),
    ];
    for (env, needle) in cases {
        let (code, stderr) = start_with(env);
        assert_ne!(code, 0, "{env:?} must fail");
        assert_eq!(stderr.trim().lines().count(), 1, "{env:?}: {stderr:?}");
        assert!(
            stderr.contains(needle),
            "{env:?}: {stderr:?} should name {needle}"
        );
    }
}

#[test]
fn a_bad_setting_prints_one_line_and_exits_non_zero() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("ASPNETCORE_PORT", "eighty")], "ASPNETCORE_PORT"),
        (&[("ASPNETCORE_PORT", "70000")], "ASPNETCORE_PORT"),
        (&[("HTTP_PLATFORM_PORT", "-1")], "HTTP_PLATFORM_PORT"),
        (&[("LEPTOS_SITE_ADDR", "nowhere")], "LEPTOS_SITE_ADDR"),
        (&[("LEPTOS_SITE_ROOT", "/no/such/site")], "site folder"),
        (&[("EVENTS_HEARTBEAT", "often")], "EVENTS_HEARTBEAT"),
        (&[("EVENTS_HISTORY", "0")], "EVENTS_HISTORY"),
        (&[("EVENTS_HISTORY", "many")], "history"),
        (&[("EVENTS_TOPICS", "a b")], "EVENTS_TOPICS"),
        (&[("RUST_LOG", "server=loud")], "RUST_LOG"),
        (
            &[("EVENTS_REQUEST_TIMEOUT", "50ms")],
            "EVENTS_REQUEST_TIMEOUT",
        ),
        (&[("EVENTS_METRICS", "maybe")], "EVENTS_METRICS"),
        (&[("EVENTS_CORS_ORIGINS", "*")], "EVENTS_CORS_ORIGINS"),
    ];
    for (env, needle) in cases {
        let (code, stderr) = start_with(env);
        assert_ne!(code, 0, "{env:?} must fail");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{env:?}: one line, got {stderr:?}"
        );
        assert!(stderr.starts_with("error: "), "{stderr:?}");
        assert!(
            stderr.contains(needle),
            "{env:?}: {stderr:?} should name {needle}"
        );
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let (code, stderr) = start_with(&[("ASPNETCORE_PORT", &port)]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn help_lists_every_setting() {
    let out = command().arg("--help").output().expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "LEPTOS_SITE_ADDR",
        "ASPNETCORE_APPL_PATH",
        "LEPTOS_SITE_ROOT",
        "EVENTS_TICK",
        "EVENTS_HEARTBEAT",
        "EVENTS_RETRY",
        "EVENTS_HISTORY",
        "EVENTS_TOPICS",
        "EVENTS_PAGE_ROWS",
        "EVENTS_MAX_TEXT",
        "EVENTS_SUBSCRIBER_BUFFER",
        "RUST_LOG",
        "ASPNETCORE_PORT",
        "HTTP_PLATFORM_PORT",
    ] {
        assert!(help.contains(var), "--help should mention {var}");
    }
}

/// A graceful shutdown that waited for streams to finish would never end: ours ends them.
#[cfg(unix)]
#[tokio::test]
async fn sigterm_ends_open_streams_and_exits_promptly() {
    let mut server = spawn(Options::new());
    let mut streams = Vec::new();
    for _ in 0..50 {
        let mut s = server.stream("/api/events", None).await;
        assert_eq!(next_any(&mut s).await.event, "ready");
        streams.push(s);
    }
    let pid = server.child.id().to_string();
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    for s in &mut streams {
        let end = tokio::time::timeout(PATIENCE, futures::StreamExt::next(s))
            .await
            .expect("the stream ends instead of hanging");
        assert!(end.is_none(), "no more events after shutdown");
    }
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(status.success(), "clean exit: {status:?}");
            break;
        }
        assert!(started.elapsed() < PATIENCE, "the process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.wait_for_log(&["stopping", "SIGTERM"]).await;
}
