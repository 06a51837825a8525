//! The servers under test: how each is started (a fresh process per scenario) and stopped.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ALL: &[&str] = &["floor", "ours", "ours-redis", "go", "node", "python"];

/// The reference row (floor.rs): what the machine allows, not a server anyone would deploy.
pub const FLOOR: &str = "floor";

/// Ours in another setting (compared with "ours", not counted as a peer).
pub fn is_ours(name: &str) -> bool {
    name == "ours" || name.starts_with("ours-")
}

/// A server people would use instead of ours: neither ours nor the floor.
pub fn is_peer(name: &str) -> bool {
    !is_ours(name) && name != FLOOR
}

/// What runs for one server under test: one process, or (ours-redis) two instances of ours
/// sharing a redis-server of their own.
pub struct Running {
    /// Every process whose CPU and memory count, the servers first.
    pub children: Vec<Child>,
    /// Where subscribers connect (round robin); publishes go to the first.
    pub addrs: Vec<SocketAddr>,
}

impl Running {
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

/// The command for server `name` on `port`, with every path relative to the workspace `root`.
pub fn command(name: &str, root: &Path, port: u16) -> Result<Command, String> {
    let bench = root.join("target").join("bench");
    let mut cmd = match name {
        "ours" | "ours-redis" => {
            let mut c = Command::new(root.join("target/release/server"));
            // A new event log for every run: a history left by an earlier scenario would be
            // replayed into this one.
            let data = bench.join(format!("data-{port}"));
            let _ = std::fs::remove_dir_all(&data);
            c.env("EVENTS_DATA_DIR", &data)
                .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
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
        FLOOR => {
            let mut c = Command::new(
                std::env::current_exe().map_err(|e| format!("the bench binary's path: {e}"))?,
            );
            c.args(["floor", "--port", &port.to_string()]);
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

/// Starts `name` and waits until it accepts connections.
pub fn start(name: &str, root: &Path, scenario: &str) -> Result<Running, String> {
    if name != "ours-redis" {
        let port = free_port()?;
        let (child, addr) = start_one(command(name, root, port)?, name, root, port, scenario)?;
        return Ok(Running {
            children: vec![child],
            addrs: vec![addr],
        });
    }
    // The web-farm setting: two instances on one Redis, each with half the
    // subscribers; an event published to the first reaches the second through Redis.
    let redis_port = free_port()?;
    let mut redis = Command::new("redis-server");
    redis.args([
        "--port",
        &redis_port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    let (redis, _) = start_one(redis, "redis", root, redis_port, scenario)?;
    let mut running = Running {
        children: Vec::new(),
        addrs: Vec::new(),
    };
    for instance in ["a", "b"] {
        let port = free_port()?;
        let mut cmd = command(name, root, port)?;
        cmd.env(
            "EVENTS_REDIS_URL",
            format!("redis://127.0.0.1:{redis_port}/"),
        )
        .env("EVENTS_INSTANCE", instance);
        match start_one(cmd, &format!("{name}-{instance}"), root, port, scenario) {
            Ok((child, addr)) => {
                running.children.push(child);
                running.addrs.push(addr);
            }
            Err(e) => {
                running.children.push(redis);
                stop(&mut running);
                return Err(e);
            }
        }
    }
    running.children.push(redis);
    Ok(running)
}

/// Starts one process listening on `port` and waits until it accepts connections.
pub fn start_one(
    cmd: Command,
    name: &str,
    root: &Path,
    port: u16,
    scenario: &str,
) -> Result<(Child, SocketAddr), String> {
    let started = start_polling(cmd, name, root, port, scenario, Duration::from_millis(50))?;
    // Let the runtime finish starting before the baseline memory is read.
    std::thread::sleep(Duration::from_millis(300));
    Ok(started)
}

/// Starts one process and returns as soon as `port` accepts, polling every `poll` (a measured
/// start polls often).
pub fn start_polling(
    mut cmd: Command,
    name: &str,
    root: &Path,
    port: u16,
    scenario: &str,
    poll: Duration,
) -> Result<(Child, SocketAddr), String> {
    let log = log_path(root, name, scenario);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = cmd
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Listening, and still our process (a server that could not bind has exited).
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            && matches!(child.try_wait(), Ok(None))
        {
            return Ok((child, addr));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{name} exited at start ({status}); see {}",
                log.display()
            ));
        }
        if Instant::now() > deadline {
            stop_child(&mut child);
            return Err(format!("{name} did not listen on {addr} within 30 s"));
        }
        std::thread::sleep(poll);
    }
}

/// Stops every process, servers first (Redis last, so the servers do not log its absence).
pub fn stop(running: &mut Running) {
    for child in &mut running.children {
        stop_child(child);
    }
}

/// SIGTERM, then SIGKILL after 5 s.
fn stop_child(child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
}
