//! The benchmark harness: a load generator for SSE servers, and the suite that
//! runs our server and its peers (bench/peers/) through the same scenarios.
//!
//! `bench suite` runs everything (as `cargo xtask bench` does), `bench run` one scenario against
//! servers already running (several instances: `--server addr@pid` repeated), and `bench worker`
//! is the subscriber process the other two start (see worker.rs).

mod accounting;
mod floor;
mod hist;
mod plot;
mod procfs;
mod publisher;
mod report;
mod scenario;
mod servers;
mod sse;
mod stores;
mod suite;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bench", about = "SSE fan-out benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every server through every scenario (started fresh each time); what `cargo xtask bench` runs.
    Suite {
        /// The workspace root (servers and peers are found under it).
        #[arg(long)]
        root: PathBuf,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "ours,ours-redis,go,node,python"
        )]
        servers: Vec<String>,
        #[arg(long)]
        quick: bool,
        /// Only these scenarios, comma-separated (e.g. `idle,storm-5k`); no BENCHMARKS.md then.
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<String>,
        #[arg(long)]
        json: PathBuf,
        /// Write BENCHMARKS.md here.
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Write the delay plot here (linked from the markdown).
        #[arg(long)]
        svg: Option<PathBuf>,
        /// The command line to quote in the report.
        #[arg(long, default_value = "bench suite")]
        command: String,
    },
    /// Only the event stores' figures, printed as BENCHMARKS.md's section.
    Stores {
        #[arg(long)]
        root: PathBuf,
        /// Fewer events, shorter windows, a 20,000-event history instead of 100,000.
        #[arg(long)]
        quick: bool,
    },
    /// One scenario against servers that are already running.
    Run {
        /// `127.0.0.1:3000@<pid>` (pid optional: no CPU/memory then); repeat for instances.
        #[arg(long = "server", required = true)]
        servers: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Events per second (0: as fast as possible).
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 100)]
        payload: usize,
        /// Connect every stream at once.
        #[arg(long)]
        storm: bool,
        #[arg(long, default_value = "/api/events")]
        stream_path: String,
        #[arg(long, default_value = "/api/publish")]
        publish_path: String,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// A subscriber process (started by `suite` and `run`).
    #[command(hide = true)]
    Worker { config: String },
    /// The reference server the others are read against (floor.rs; started by `suite`).
    #[command(hide = true)]
    Floor {
        #[arg(long)]
        port: u16,
    },
}

/// Now, in Unix nanoseconds: the one clock that publisher and subscribers share.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Worker { config } => worker::main(&config),
        Cmd::Floor { port } => floor::main(port),
        Cmd::Suite {
            root,
            servers,
            quick,
            scenarios,
            json,
            markdown,
            svg,
            command,
        } => block_on(suite::run(suite::Args {
            root,
            servers,
            quick,
            only: scenarios,
            json,
            markdown,
            svg,
            command,
        })),
        Cmd::Stores { root, quick } => block_on(async {
            let figures = stores::run(&root, quick).await?;
            print!("{}", stores::markdown(&figures, quick));
            Ok(())
        }),
        Cmd::Run {
            servers,
            subscribers,
            rate,
            duration,
            payload,
            storm,
            stream_path,
            publish_path,
            json,
        } => (|| {
            let target = parse_target(&servers, stream_path, publish_path)?;
            let events = if rate > 0.0 {
                (rate * duration).round() as u64
            } else {
                1000
            };
            let s = scenario::Scenario {
                name: "run".into(),
                subscribers,
                events: if storm { 0 } else { events },
                rate: (rate > 0.0).then_some(rate),
                payload,
                publish_connections: if rate > 0.0 { 1 } else { 4 },
                storm,
                settle_ms: 0,
                quiet_ms: 3_000,
                max_drain_ms: 30_000,
                setup_timeout_ms: 60_000,
            };
            let outcome = block_on(async { scenario::run("server", &target, &s).await })?;
            print!("{}", report::table(std::slice::from_ref(&outcome)));
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&outcome).map_err(|e| e.to_string())?;
                std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Ok(())
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    tokio::task::LocalSet::new().block_on(&rt, f)
}

fn parse_target(
    servers: &[String],
    stream_path: String,
    publish_path: String,
) -> Result<scenario::Target, String> {
    let mut addrs = Vec::new();
    let mut pids = Vec::new();
    for s in servers {
        let (addr, pid) = match s.split_once('@') {
            Some((a, p)) => (a, Some(p)),
            None => (s.as_str(), None),
        };
        addrs.push(
            addr.parse::<SocketAddr>()
                .map_err(|e| format!("--server {s}: {e}"))?,
        );
        if let Some(p) = pid {
            pids.push(p.parse::<u32>().map_err(|e| format!("--server {s}: {e}"))?);
        }
    }
    Ok(scenario::Target {
        addrs,
        pids,
        stream_path,
        publish_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_with_and_without_pids() {
        let t = parse_target(
            &["127.0.0.1:3000@42".into(), "127.0.0.1:3001".into()],
            "/e".into(),
            "/p".into(),
        )
        .expect("parse");
        assert_eq!(t.addrs.len(), 2);
        assert_eq!(t.pids, vec![42]);
        assert!(parse_target(&["nope".into()], "/e".into(), "/p".into()).is_err());
    }
}
