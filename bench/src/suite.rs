//! `bench suite`: every server through every scenario, a fresh server process each time.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::report::{self, Meta, Results};
use crate::scenario::{self, Outcome, Scenario, Target};
use crate::servers;

pub struct Args {
    pub root: PathBuf,
    pub servers: Vec<String>,
    pub quick: bool,
    /// Only these scenarios (by name); all when empty.
    pub only: Vec<String>,
    pub json: PathBuf,
    pub markdown: Option<PathBuf>,
    pub svg: Option<PathBuf>,
    pub command: String,
}

/// A fan-out scenario with the suite's windows and payload (the tests build theirs with it too).
pub(crate) fn scenario(name: &str, subscribers: usize, events: u64, rate: Option<f64>) -> Scenario {
    Scenario {
        name: name.into(),
        subscribers,
        events,
        rate,
        payload: 100,
        publish_connections: if rate.is_some() { 1 } else { 4 },
        storm: false,
        settle_ms: 0,
        quiet_ms: 3_000,
        max_drain_ms: 30_000,
        setup_timeout_ms: 60_000,
    }
}

/// The fan-out scenarios, or (quick) the same shapes at a size that runs in seconds.
pub fn scenarios(quick: bool) -> Vec<Scenario> {
    let idle = |n: usize, settle_ms: u64| Scenario {
        settle_ms,
        ..scenario("idle", n, 0, None)
    };
    let storm = |name: &str, n: usize| Scenario {
        storm: true,
        ..scenario(name, n, 0, None)
    };
    let mut list = if quick {
        vec![
            scenario("fanout-200", 200, 100, Some(50.0)),
            scenario("burst-200", 200, 200, None),
            idle(1_000, 500),
            storm("storm-500", 500),
        ]
    } else {
        vec![
            scenario("fanout-1k", 1_000, 100, Some(10.0)),
            scenario("fanout-5k", 5_000, 100, Some(10.0)),
            scenario("fanout-10k", 10_000, 100, Some(10.0)),
            scenario("burst-1k", 1_000, 1_000, None),
            idle(19_500, 2_000),
            storm("storm-5k", 5_000),
        ]
    };
    if quick {
        for s in &mut list {
            s.quiet_ms = 1_000;
            s.max_drain_ms = 5_000;
            s.setup_timeout_ms = 10_000;
        }
    }
    list
}

pub async fn run(args: Args) -> Result<(), String> {
    for s in &args.servers {
        if !servers::ALL.contains(&s.as_str()) {
            return Err(format!(
                "unknown server {s:?} (known: {})",
                servers::ALL.join(", ")
            ));
        }
    }
    let mut list = scenarios(args.quick);
    if !args.only.is_empty() {
        let known: Vec<String> = list.iter().map(|s| s.name.clone()).collect();
        if let Some(unknown) = args.only.iter().find(|n| !known.contains(n)) {
            return Err(format!(
                "unknown scenario {unknown:?} (known: {})",
                known.join(", ")
            ));
        }
        if args.markdown.is_some() {
            return Err("--scenarios runs a part of the suite: it writes no BENCHMARKS.md".into());
        }
        list.retain(|s| args.only.contains(&s.name));
    }
    // The floor runs in every scenario, whatever is asked for: the other figures are read
    // against it.
    let names: Vec<String> = std::iter::once(servers::FLOOR.to_string())
        .chain(
            args.servers
                .iter()
                .filter(|s| *s != servers::FLOOR)
                .cloned(),
        )
        .collect();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for s in &list {
        for name in &names {
            eprintln!("==> {name}: {}", s.name);
            let mut running = servers::start(name, &args.root, &s.name)?;
            let target = Target {
                addrs: running.addrs.clone(),
                pids: running.pids(),
                stream_path: "/api/events".into(),
                publish_path: "/api/publish".into(),
            };
            let outcome = scenario::run(name, &target, s).await;
            servers::stop(&mut running);
            let outcome = outcome?;
            eprint!("{}", report::table(std::slice::from_ref(&outcome)));
            outcomes.push(outcome);
        }
    }
    // The stores' figures are our server's alone.
    let stores = if args.only.is_empty() && args.servers.iter().any(|s| s == "ours") {
        crate::stores::run(&args.root, args.quick).await?
    } else {
        Vec::new()
    };
    let results = Results {
        meta: meta(&args),
        scenarios: list,
        outcomes,
        stores,
    };
    println!("\n{}", report::table(&results.outcomes));
    print!("{}", report::floor_summary(&results.outcomes));
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&args.json, json).map_err(|e| format!("{}: {e}", args.json.display()))?;
    println!("results: {}", args.json.display());

    if let Some(md) = &args.markdown {
        let mut link = None;
        if let Some(svg) = &args.svg {
            if let Some(dir) = svg.parent() {
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            }
            crate::plot::delay_svg(&results.outcomes, &names, svg)?;
            link = Some(relative(svg, md.parent().unwrap_or(Path::new("."))));
        }
        let existing = std::fs::read_to_string(md).ok();
        let mut generated = report::markdown(&results, link.as_deref());
        if !results.stores.is_empty() {
            generated.push_str(&crate::stores::markdown(&results.stores, args.quick));
        }
        let text = report::splice(existing.as_deref(), &generated);
        std::fs::write(md, text).map_err(|e| format!("{}: {e}", md.display()))?;
        println!("report: {}", md.display());
    }

    if args.quick {
        // The floor drops a socket that cannot take a frame at once, by design: what it lost
        // is shown, not failed on.
        for o in results
            .outcomes
            .iter()
            .filter(|o| o.server == servers::FLOOR)
        {
            for p in o.problems() {
                eprintln!("note: floor {}: {p}", o.scenario);
            }
        }
        let problems: Vec<String> = results
            .outcomes
            .iter()
            .filter(|o| o.server != servers::FLOOR)
            .flat_map(|o| {
                o.problems()
                    .into_iter()
                    .map(move |p| format!("{} {}: {p}", o.server, o.scenario))
            })
            .chain(results.stores.iter().flat_map(|f| {
                f.errors
                    .iter()
                    .map(move |e| format!("stores {}: {e}", f.store))
            }))
            .collect();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
    }
    Ok(())
}

fn relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text).trim().to_string()
        })
        .unwrap_or_else(|| "n/a".into())
}

/// Whether target/release/server is older than the newest commit that touched the server's
/// sources: then the figures are an older build's, whatever HEAD says.
fn stale_server(root: &Path) -> Option<String> {
    let built = std::fs::metadata(root.join("target/release/server"))
        .and_then(|m| m.modified())
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let root_s = root.to_string_lossy();
    let last = output(
        "git",
        &[
            "-C",
            &root_s,
            "log",
            "-1",
            "--format=%h %ct",
            "--",
            "server",
            "app",
            "events-core",
        ],
    );
    let (hash, at) = last.split_once(' ')?;
    let at: u64 = at.trim().parse().ok()?;
    (built < at).then(|| {
        format!(
            "target/release/server was built before {hash}, the newest commit touching the server: \
             it measures an older build (run `cargo leptos build --release`)"
        )
    })
}

fn meta(args: &Args) -> Meta {
    let root = args.root.to_string_lossy().into_owned();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .unwrap_or("n/a")
        .trim()
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = crate::procfs::parse_status_kib(&meminfo, "MemTotal")
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "n/a".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "n/a".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let py = args.root.join("target/bench/venv/bin/python");
    let py = py.to_string_lossy();
    let pkg = |name: &str| {
        output(
            &py,
            &[
                "-c",
                &format!("import importlib.metadata as m; print(m.version('{name}'))"),
            ],
        )
    };
    let express = std::fs::read_to_string(
        args.root
            .join("bench/peers/node/node_modules/express/package.json"),
    )
    .ok()
    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    .and_then(|v| v["version"].as_str().map(String::from))
    .unwrap_or_else(|| "n/a".into());
    let mut commit = format!(
        "{} (server sources last changed in {})",
        output("git", &["-C", &root, "rev-parse", "--short", "HEAD"]),
        output(
            "git",
            &[
                "-C",
                &root,
                "log",
                "-1",
                "--format=%h, %s",
                "--",
                "server",
                "app",
                "events-core"
            ]
        )
    );
    let dirty = output(
        "git",
        &[
            "-C",
            &root,
            "status",
            "--porcelain",
            "--",
            "server",
            "app",
            "events-core",
            "Cargo.lock",
        ],
    );
    if dirty != "n/a" && !dirty.is_empty() {
        commit.push_str(" (with uncommitted changes in server/app/events-core)");
    }
    if args.servers.iter().any(|s| servers::is_ours(s)) {
        if let Some(warning) = stale_server(&args.root) {
            eprintln!("warning: {warning}");
            commit.push_str(&format!(" (warning: {warning})"));
        }
    }
    Meta {
        command: args.command.clone(),
        date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        server_commit: commit,
        quick: args.quick,
        machine: vec![
            ("CPU".into(), model),
            ("cores".into(), cores),
            ("memory".into(), mem),
            ("kernel".into(), kernel),
        ],
        versions: vec![
            ("rustc".into(), output("rustc", &["--version"])),
            ("go".into(), output("go", &["version"])),
            ("node".into(), output("node", &["--version"])),
            ("express".into(), express),
            ("python".into(), output(&py, &["--version"])),
            ("sse-starlette".into(), pkg("sse-starlette")),
            ("uvicorn".into(), pkg("uvicorn")),
            ("starlette".into(), pkg("starlette")),
        ],
    }
}
