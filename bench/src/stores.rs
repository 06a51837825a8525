//! The event stores side by side in one run, on the same workload. Our
//! server three ways: the in-memory store (one process), the event log (two processes sharing
//! one data folder) and Redis (two instances on one Redis, as `ours-redis`).
//!
//! - publish -> receive delay, with one subscriber on the process published to ("same") and
//!   one on the other process ("cross"), events published one at a time at a steady pace;
//! - publishes per second one publisher gets (one keep-alive connection, one request at a
//!   time, each waiting for its 201);
//! - startup with a full history: the log prefilled with `history` events, then the time from
//!   starting the process to its port accepting;
//! - idle CPU of the pair (both processes together), in % of one core.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::hist;
use crate::procfs;
use crate::publisher::{self, Plan, Sender};
use crate::servers::{self, Running};
use crate::sse::{find_marker, FrameSplitter};
use crate::unix_ns;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StoreFigures {
    pub store: String,
    pub same_p50_ms: Option<f64>,
    pub same_p99_ms: Option<f64>,
    pub cross_p50_ms: Option<f64>,
    pub cross_p99_ms: Option<f64>,
    pub publishes_per_s: Option<f64>,
    /// Start to listening, with `startup_events` in the store.
    pub startup_ms: Option<f64>,
    pub startup_events: u64,
    pub idle_cpu_pct: Option<f64>,
    pub errors: Vec<String>,
}

struct Sizes {
    events: u64,
    interval: Duration,
    rate_for: Duration,
    history: u64,
    idle_for: Duration,
}

fn sizes(quick: bool) -> Sizes {
    if quick {
        Sizes {
            events: 100,
            interval: Duration::from_millis(20),
            rate_for: Duration::from_secs(2),
            history: 20_000,
            idle_for: Duration::from_secs(3),
        }
    } else {
        Sizes {
            events: 500,
            interval: Duration::from_millis(20),
            rate_for: Duration::from_secs(5),
            history: 100_000,
            idle_for: Duration::from_secs(10),
        }
    }
}

pub async fn run(root: &Path, quick: bool) -> Result<Vec<StoreFigures>, String> {
    let sizes = sizes(quick);
    let mut out = Vec::new();
    for store in ["memory", "log", "redis"] {
        eprintln!("==> stores: {store}");
        let mut running = start(store, root, None)?;
        let mut figures = StoreFigures {
            store: store.into(),
            ..StoreFigures::default()
        };
        let measured = measure(&running, &sizes, &mut figures).await;
        servers::stop(&mut running);
        if let Err(e) = measured {
            figures.errors.push(e);
        }
        if store == "log" {
            match startup(root, &sizes).await {
                Ok(ms) => {
                    figures.startup_ms = Some(ms);
                    figures.startup_events = sizes.history;
                }
                Err(e) => figures.errors.push(e),
            }
        }
        out.push(figures);
    }
    Ok(out)
}

/// The store's processes: one for memory, two for the log (one folder) and Redis.
fn start(store: &str, root: &Path, history: Option<u64>) -> Result<Running, String> {
    let data = root.join("target/bench").join(format!("stores-{store}"));
    let ours = |port: u16| -> Result<Command, String> {
        let mut cmd = servers::command("ours", root, port)?;
        cmd.env("EVENTS_DATA_DIR", &data);
        if let Some(h) = history {
            cmd.env("EVENTS_HISTORY", h.to_string());
        }
        Ok(cmd)
    };
    match store {
        "redis" => servers::start("ours-redis", root, "stores"),
        "memory" | "log" => {
            if history.is_none() {
                let _ = std::fs::remove_dir_all(&data);
            }
            let count = if store == "memory" { 1 } else { 2 };
            let mut running = Running {
                children: Vec::new(),
                addrs: Vec::new(),
            };
            for n in 0..count {
                let port = servers::free_port()?;
                let mut cmd = ours(port)?;
                if store == "memory" {
                    cmd.env("EVENTS_STORE", "memory");
                }
                match servers::start_one(cmd, &format!("ours-{store}-{n}"), root, port, "stores") {
                    Ok((child, addr)) => {
                        running.children.push(child);
                        running.addrs.push(addr);
                    }
                    Err(e) => {
                        servers::stop(&mut running);
                        return Err(e);
                    }
                }
            }
            Ok(running)
        }
        other => Err(format!("unknown store {other}")),
    }
}

async fn measure(
    running: &Running,
    sizes: &Sizes,
    figures: &mut StoreFigures,
) -> Result<(), String> {
    let first = running.addrs[0];
    let other = running.addrs.get(1).copied();
    let same = tokio::task::spawn_local(subscribe(first, sizes.events));
    let cross = other.map(|addr| tokio::task::spawn_local(subscribe(addr, sizes.events)));
    // Both subscribers are in before the first event (their `ready` came).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut publisher = Publisher::connect(first).await?;
    let start = Instant::now();
    for seq in 0..sizes.events {
        tokio::time::sleep_until((start + sizes.interval * seq as u32).into()).await;
        publisher.publish(seq).await?;
    }
    let summary = |h: &hdrhistogram::Histogram<u64>| {
        let s = hist::summary(h);
        (s.p50, s.p99)
    };
    let same = same.await.map_err(|e| e.to_string())??;
    (figures.same_p50_ms, figures.same_p99_ms) = {
        let (a, b) = summary(&same);
        (Some(a), Some(b))
    };
    if let Some(cross) = cross {
        let cross = cross.await.map_err(|e| e.to_string())??;
        let (a, b) = summary(&cross);
        (figures.cross_p50_ms, figures.cross_p99_ms) = (Some(a), Some(b));
    }

    // One publisher, one request at a time.
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < sizes.rate_for {
        publisher.publish(1_000_000 + n).await?;
        n += 1;
    }
    figures.publishes_per_s = Some(n as f64 / started.elapsed().as_secs_f64());

    // Idle: nothing published, every stream closed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pids = running.pids();
    let before = procfs::total_cpu(&pids);
    let at = Instant::now();
    tokio::time::sleep(sizes.idle_for).await;
    let used = procfs::total_cpu(&pids).since(&before).total();
    figures.idle_cpu_pct = Some(100.0 * used / at.elapsed().as_secs_f64());
    Ok(())
}

/// Reads one stream until `events` marked events came; their delays.
async fn subscribe(addr: SocketAddr, events: u64) -> Result<hdrhistogram::Histogram<u64>, String> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    let _ = tcp.set_nodelay(true);
    tcp.write_all(
        format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .map_err(|e| format!("subscribe: {e}"))?;
    let mut h = hist::new();
    let mut seen = 0u64;
    let mut splitter = FrameSplitter::default();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < events {
        let n = tokio::time::timeout_at(deadline.into(), tcp.read(&mut buf))
            .await
            .map_err(|_| format!("{addr}: {seen} of {events} events within 120 s"))?
            .map_err(|e| format!("subscribe: {e}"))?;
        if n == 0 {
            return Err(format!("{addr}: the stream ended after {seen} events"));
        }
        let now = unix_ns();
        splitter.push(&buf[..n], |frame| {
            if let Some(m) = find_marker(frame) {
                if m.seq < 1_000_000 {
                    hist::record_us(&mut h, now.saturating_sub(m.sent_ns) / 1000);
                    seen += 1;
                }
            }
        });
    }
    Ok(h)
}

/// One publisher connection, one request at a time (the load generator's own publish).
struct Publisher {
    plan: Plan,
    sender: Option<Sender>,
}

impl Publisher {
    async fn connect(target: SocketAddr) -> Result<Publisher, String> {
        let mut p = Publisher {
            plan: Plan {
                target,
                path: "/api/publish".into(),
                topic: "chat".into(),
                events: 0,
                interval: None,
                payload: 100,
                connections: 1,
            },
            sender: None,
        };
        // The connection is made now, not inside the first measured publish.
        p.publish(3_000_000).await?;
        Ok(p)
    }

    async fn publish(&mut self, seq: u64) -> Result<(), String> {
        publisher::send(&mut self.sender, &self.plan, seq).await
    }
}

/// The log prefilled with `history` events (eight publishers at once), then a new process
/// on that folder, timed from its start to its port accepting.
async fn startup(root: &Path, sizes: &Sizes) -> Result<f64, String> {
    let data = root.join("target/bench/stores-log");
    let _ = std::fs::remove_dir_all(&data);
    let mut filling = start("log", root, Some(sizes.history))?;
    let target = filling.addrs[0];
    let per = sizes.history.div_ceil(8);
    let fills: Vec<_> = (0..8)
        .map(|_| {
            tokio::task::spawn_local(async move {
                let mut p = Publisher::connect(target).await?;
                for seq in 0..per {
                    p.publish(2_000_000 + seq).await?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for f in fills {
        f.await.map_err(|e| e.to_string())??;
    }
    servers::stop(&mut filling);
    let port = servers::free_port()?;
    let mut cmd = servers::command("ours", root, port)?;
    cmd.env("EVENTS_DATA_DIR", &data)
        .env("EVENTS_HISTORY", sizes.history.to_string());
    let started = Instant::now();
    let (child, addr) = servers::start_polling(
        cmd,
        "ours-log-startup",
        root,
        port,
        "stores",
        Duration::from_millis(2),
    )?;
    // The port accepts before the log is loaded (it is bound first): ready is when a stream
    // gets its `ready` event.
    let ready = first_ready(addr).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut running = Running {
        children: vec![child],
        addrs: Vec::new(),
    };
    servers::stop(&mut running);
    ready.map(|()| ms)
}

/// Opens a stream and reads until its `ready` event.
async fn first_ready(addr: SocketAddr) -> Result<(), String> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("startup: {e}"))?;
    tcp.write_all(format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("startup: {e}"))?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(12).any(|w| w == b"event: ready") {
        let n = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf))
            .await
            .map_err(|_| "startup: no ready event within 30 s".to_string())?
            .map_err(|e| format!("startup: {e}"))?;
        if n == 0 {
            return Err("startup: the stream ended before ready".into());
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// The section of BENCHMARKS.md.
pub fn markdown(figures: &[StoreFigures], quick: bool) -> String {
    let ms = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.2}"));
    let mut out = String::from(
        "\n## Event stores\n\nOur server with each store, in one run: `memory` one \
         process, `log` two processes sharing one data folder, `redis` two instances on one \
         Redis. Delays are publish -> receive for events published one at a time every 20 ms, \
         to a subscriber on the process published to (same) and on the other one (cross). \
         Publishes/s: one publisher, one request at a time. Idle CPU: both processes together, \
         nothing published, no stream open, in % of one core.\n\n",
    );
    if quick {
        out.push_str(
            "(quick mode: fewer events, a shorter rate and idle window, a smaller history)\n\n",
        );
    }
    out.push_str("| store | same p50 ms | same p99 ms | cross p50 ms | cross p99 ms | publishes/s | startup ms (events) | idle CPU % |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for f in figures {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            f.store,
            ms(f.same_p50_ms),
            ms(f.same_p99_ms),
            ms(f.cross_p50_ms),
            ms(f.cross_p99_ms),
            f.publishes_per_s
                .map_or("n/a".into(), |v| format!("{v:.0}")),
            f.startup_ms
                .map_or("n/a".into(), |v| format!("{v:.0} ({})", f.startup_events)),
            f.idle_cpu_pct.map_or("n/a".into(), |v| format!("{v:.2}")),
        ));
    }
    out.push_str(&goals_table(figures));
    for f in figures.iter().filter(|f| !f.errors.is_empty()) {
        out.push_str(&format!("\n{}: {}\n", f.store, f.errors.join("; ")));
    }
    out
}

/// The log's goals, measured in this run.
fn goals_table(figures: &[StoreFigures]) -> String {
    let log = figures.iter().find(|f| f.store == "log");
    let memory = figures.iter().find(|f| f.store == "memory");
    let mut rows: Vec<(String, String, Option<bool>)> = Vec::new();
    let same = log
        .and_then(|l| l.same_p50_ms)
        .zip(memory.and_then(|m| m.same_p50_ms));
    rows.push((
        "same-process p50 within 1 ms of the memory store".into(),
        same.map_or("n/a".into(), |(l, m)| {
            format!("{l:.2} ms vs {m:.2} ms ({:+.2} ms)", l - m)
        }),
        same.map(|(l, m)| l - m <= 1.0),
    ));
    let cross = log.and_then(|l| l.cross_p50_ms);
    rows.push((
        "cross-process p50 <= 5 ms".into(),
        cross.map_or("n/a".into(), |v| format!("{v:.2} ms")),
        cross.map(|v| v <= 5.0),
    ));
    let rate = log.and_then(|l| l.publishes_per_s);
    rows.push((
        ">= 5,000 publishes/s, one publisher".into(),
        rate.map_or("n/a".into(), |v| format!("{v:.0}/s")),
        rate.map(|v| v >= 5000.0),
    ));
    let startup = log.and_then(|l| l.startup_ms.map(|ms| (ms, l.startup_events)));
    rows.push((
        "startup with 100,000 stored events <= 1 s".into(),
        startup.map_or("n/a".into(), |(ms, n)| {
            format!("{ms:.0} ms with {n} events")
        }),
        // Below 100,000 stored events (quick mode) the goal is not measured.
        startup
            .filter(|(_, n)| *n >= 100_000)
            .map(|(ms, _)| ms <= 1000.0),
    ));
    let idle = log.and_then(|l| l.idle_cpu_pct);
    rows.push((
        "two idle processes <= 1 % of one core together".into(),
        idle.map_or("n/a".into(), |v| format!("{v:.2} %")),
        idle.map(|v| v <= 1.0),
    ));
    let mut out = String::from("\n| goal (the log) | measured | met |\n| --- | --- | --- |\n");
    for (goal, measured, met) in rows {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "n/a (quick mode)",
        };
        out.push_str(&format!("| {goal} | {measured} | {met} |\n"));
    }
    out
}
