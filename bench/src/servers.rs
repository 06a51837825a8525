//! The servers under test: how each is started (a fresh process per scenario) and stopped.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ALL: &[&str] = &["ours", "go", "node", "python"];

pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
}

/// The command for server `name` on `port`, with every path relative to the workspace `root`.
pub fn command(name: &str, root: &Path, port: u16) -> Result<Command, String> {
    let bench = root.join("target").join("bench");
    let mut cmd = match name {
        "ours" => {
            let mut c = Command::new(root.join("target/release/server"));
            c.env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
                .env("LEPTOS_SITE_ROOT", root.join("target/site"))
                .env("EVENTS_TICK", "off")
                .env("RUST_LOG", "warn")
                .env("EVENTS_MAX_STREAMS", "30000")
                // 0 turns the per-address publish limit off (server/src/limits.rs).
                .env("EVENTS_PUBLISH_RATE", "0")
                .env("EVENTS_METRICS", "off")
                .env_remove("ASPNETCORE_PORT")
                .env_remove("HTTP_PLATFORM_PORT");
            c
        }
        "go" => Command::new(bench.join("go-peer")),
        "node" => {
            let mut c = Command::new("node");
            c.arg(root.join("bench/peers/node/server.js"));
            c
        }
        "python" => {
            let mut c = Command::new(bench.join("venv/bin/python"));
            c.arg(root.join("bench/peers/python/server.py"));
            c
        }
        other => {
            return Err(format!(
                "unknown server {other:?} (known: {})",
                ALL.join(", ")
            ))
        }
    };
    cmd.env("PORT", port.to_string());
    Ok(cmd)
}

pub fn log_path(root: &Path, name: &str, scenario: &str) -> PathBuf {
    root.join("target/bench/logs")
        .join(format!("{name}-{scenario}.log"))
}

/// A port nothing listens on now (the kernel's pick): fixed ports would collide with another
/// run on the same machine, and the readiness check would then talk to the wrong server.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Starts `name` on `port` and waits until it accepts connections.
pub fn start(name: &str, root: &Path, port: u16, scenario: &str) -> Result<Running, String> {
    let log = log_path(root, name, scenario);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let child = command(name, root, port)?
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut running = Running { child, addr };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Listening, and still our process (a server that could not bind has exited).
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            && matches!(running.child.try_wait(), Ok(None))
        {
            // Let the runtime finish starting before the baseline memory is read.
            std::thread::sleep(Duration::from_millis(300));
            return Ok(running);
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            return Err(format!(
                "{name} exited at start ({status}); see {}",
                log.display()
            ));
        }
        if Instant::now() > deadline {
            stop(&mut running);
            return Err(format!("{name} did not listen on {addr} within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, then SIGKILL after 5 s.
pub fn stop(running: &mut Running) {
    let pid = running.child.id() as libc::pid_t;
    // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = running.child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = running.child.kill();
    let _ = running.child.wait();
}
