//! `cargo xtask bench`: the benchmark. Installs the peers' toolchains and packages,
//! builds what is missing, then runs `bench suite` (bench/src/suite.rs), which starts every
//! server fresh for every scenario, prints the table and writes the JSON (and, for a full
//! run, BENCHMARKS.md and docs/bench-delay.svg).

use std::path::{Path, PathBuf};

use crate::tools;
use crate::util::{note, run, step, Ctx, Failure, Res};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Small sizes, a few seconds per scenario: prints the table and writes the JSON but not
    /// BENCHMARKS.md, and fails if any server loses or duplicates events or refuses a stream.
    #[arg(long)]
    pub quick: bool,
    /// Which servers to run, comma-separated: ours, ours-redis (two instances on one Redis),
    /// go, node, python.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ours,ours-redis,go,node,python"
    )]
    pub servers: Vec<String>,
    /// Only these scenarios, comma-separated (fanout-1k, fanout-5k, fanout-10k, burst-1k, idle,
    /// storm-5k; with --quick: fanout-200, burst-200, idle, storm-500). BENCHMARKS.md is then
    /// left as it is: a part of a run is no report.
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Where a full run writes its report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
}

impl BenchArgs {
    /// What `cargo xtask test` runs.
    pub fn quick() -> Self {
        BenchArgs {
            quick: true,
            servers: ["ours", "ours-redis", "go", "node", "python"]
                .map(String::from)
                .to_vec(),
            scenarios: Vec::new(),
            out: PathBuf::from("BENCHMARKS.md"),
        }
    }
}

pub fn bench(ctx: &Ctx, args: &BenchArgs) -> Res<()> {
    if !cfg!(target_os = "linux") {
        return Err(Failure::new(
            "the benchmark reads /proc and binds 127.0.0.x source addresses: Linux only",
            "run it on Linux",
        ));
    }
    let bench_dir = ctx.root.join("target").join("bench");
    std::fs::create_dir_all(&bench_dir).map_err(|e| {
        Failure::new(
            format!("cannot create {} ({e})", bench_dir.display()),
            "check the permissions of target/",
        )
    })?;
    let wants = |name: &str| args.servers.iter().any(|s| s == name);

    if wants("ours") || wants("ours-redis") {
        ensure_release_server(ctx)?;
    }
    if wants("ours-redis") {
        tools::ensure_redis(ctx)?;
    }
    if wants("go") {
        tools::ensure_go(ctx)?;
        step("building the Go peer (go build)");
        run(
            ctx.cmd("go")
                .args(["build", "-o"])
                .arg(bench_dir.join("go-peer"))
                .arg(".")
                .current_dir(ctx.root.join("bench/peers/go")),
            "read the Go compiler output above; `cd bench/peers/go && go build` reproduces it",
        )?;
    }
    if wants("node") {
        tools::ensure_node_modules(ctx, "bench/peers/node", "the Node peer's packages")?;
    }
    if wants("python") {
        tools::ensure_python_venv(
            ctx,
            &bench_dir.join("venv"),
            &ctx.root.join("bench/peers/python/requirements.txt"),
        )?;
    }

    step("building the load generator (cargo build --release -p bench)");
    run(
        ctx.cmd("cargo")
            .args(["build", "--release", "-p", "bench"])
            .env("CARGO_INCREMENTAL", "0"),
        "read the compiler output above; `cargo build --release -p bench` reproduces it",
    )?;

    let command = format!(
        "cargo xtask {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let mut cmd = ctx.cmd(&ctx.root.join("target/release/bench").to_string_lossy());
    cmd.arg("suite")
        .arg("--root")
        .arg(&ctx.root)
        .arg("--servers")
        .arg(args.servers.join(","))
        .arg("--json")
        .arg(bench_dir.join("results.json"))
        .arg("--command")
        .arg(&command);
    if !args.scenarios.is_empty() {
        cmd.arg("--scenarios").arg(args.scenarios.join(","));
    }
    if args.quick {
        cmd.arg("--quick");
        note("quick mode: BENCHMARKS.md is left as it is");
    } else if !args.scenarios.is_empty() {
        note("a part of the suite: BENCHMARKS.md is left as it is");
    } else {
        cmd.arg("--markdown")
            .arg(absolute(&ctx.root, &args.out))
            .arg("--svg")
            .arg(ctx.root.join("docs").join("bench-delay.svg"));
    }
    step(if args.quick {
        "running the benchmark, quick mode (about a minute)"
    } else {
        "running the benchmark (every server, every scenario: about 10 minutes)"
    });
    run(
        &mut cmd,
        "read the error above; logs of each server are in target/bench/logs/, figures in target/bench/results.json",
    )
}

fn absolute(root: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    }
}

/// The release server, built by `cargo leptos build --release` only when it is missing.
fn ensure_release_server(ctx: &Ctx) -> Res<()> {
    step("checking the release server (target/release/server)");
    let server = ctx.root.join("target/release/server");
    if server.is_file() && ctx.root.join("target/site").is_dir() {
        note("present (run `cargo leptos build --release` to measure newer changes)");
        return Ok(());
    }
    tools::setup(ctx)?;
    step("building the release server and client (cargo leptos build --release)");
    run(
        ctx.cmd("cargo").args(["leptos", "build", "--release"]),
        "read the output above; `cargo leptos build --release` reproduces it",
    )
}
