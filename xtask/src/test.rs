//! `cargo xtask test`: the whole check, in the order CI runs it, with a timing table at the end.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::{self, fmt_duration, fmt_kb, note, run, step, table, Ctx, Failure, Res};
use crate::{bench, publish, tools};

/// The release client's gzip budget (1 KB = 1024 bytes): what a page that must go live fast on
/// a slow link may download. BENCHMARKS.md lists each step that brought the client under it,
/// and `twiggy` on the wasm before wasm-bindgen shows where new bytes come from.
pub const CLIENT_GZIP_BUDGET: u64 = 100 * 1024;
/// `output-name` of the leptos project (`[[workspace.metadata.leptos]] name`).
pub const OUTPUT_NAME: &str = "sse-live";

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Only formatting, clippy, the debug build and `cargo test` (no browser, no release build).
    #[arg(long)]
    quick: bool,
    /// Skip the browser tests (Playwright) against both builds.
    #[arg(long)]
    skip_browser: bool,
    /// Skip the release build, its browser tests and the client size check.
    #[arg(long)]
    skip_release: bool,
    /// Skip the Windows cross-build and its run under Wine.
    #[arg(long)]
    skip_windows: bool,
    /// Skip the benchmark's quick mode (after the release build).
    #[arg(long)]
    skip_bench: bool,
    /// Skip the fuzz targets (built with nightly and cargo-fuzz, each run for 20 s).
    #[arg(long)]
    skip_fuzz: bool,
}

/// The test files of the stream's contract, run a second time with hyper writing the streams
/// (`EVENTS_STREAM_WRITER=hyper`): the direct writer (server/src/stream/direct_writer.rs) serves most
/// streams, and both must keep the same contract.
pub const HYPER_WRITER_TESTS: &[&str] = &[
    "stream",
    "writers",
    "iis",
    "iis_module",
    "cors",
    "bad_input",
    "limits",
    "stall",
    "dead_clients",
    "reconnect_storm",
    "access",
    "presence",
];

/// How long each fuzz target runs in the test.
pub const FUZZ_SECONDS: u32 = 20;
/// The cargo-fuzz targets in fuzz/.
pub const FUZZ_TARGETS: &[&str] = &["wire", "publish", "head"];

/// Runs named steps, remembers how long each took, prints the table at the end (also on failure).
struct Steps {
    done: Vec<(String, Duration, &'static str)>,
    started: Instant,
}

impl Steps {
    fn new() -> Self {
        Steps {
            done: Vec::new(),
            started: Instant::now(),
        }
    }

    fn run(&mut self, name: &str, f: impl FnOnce() -> Res<()>) -> Res<()> {
        self.run_with(name, f)
    }

    /// Like `run`, for a step that produces something.
    fn run_with<T>(&mut self, name: &str, f: impl FnOnce() -> Res<T>) -> Res<T> {
        step(name);
        let t = Instant::now();
        let result = f();
        let status = if result.is_ok() { "ok" } else { "FAILED" };
        self.done.push((name.to_string(), t.elapsed(), status));
        if result.is_err() {
            self.print();
        }
        result
    }

    fn print(&self) {
        println!();
        print!("{}", timing_table(&self.done, self.started.elapsed()));
    }
}

/// The wall time of each step and the total.
pub fn timing_table(steps: &[(String, Duration, &str)], total: Duration) -> String {
    let mut rows: Vec<Vec<String>> = steps
        .iter()
        .map(|(name, d, status)| vec![name.clone(), fmt_duration(*d), status.to_string()])
        .collect();
    rows.push(vec!["total".into(), fmt_duration(total), String::new()]);
    table(&["step", "time", "result"], &rows)
}

pub fn test(ctx: &Ctx, args: &TestArgs) -> Res<()> {
    let browser = !(args.quick || args.skip_browser);
    let release = !(args.quick || args.skip_release);
    let mut steps = Steps::new();

    steps.run("setting up the build tools", || tools::setup(ctx))?;
    if cfg!(target_os = "linux") {
        steps.run("setting up nginx for the nginx example's test", || {
            tools::ensure_nginx(ctx)
        })?;
    }
    if browser {
        steps.run("setting up the browser-test tools", || {
            tools::ensure_chromium(ctx)?;
            tools::ensure_e2e_node_modules(ctx)
        })?;
    }

    steps.run("checking formatting (cargo fmt --all --check)", || {
        run(
            ctx.cmd("cargo").args(["fmt", "--all", "--check"]),
            "run `cargo fmt --all` and commit the result",
        )
    })?;
    steps.run("running clippy on the workspace", || {
        run(
            ctx.cmd("cargo").args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
            "fix the clippy warnings above (they are errors with -D warnings)",
        )
    })?;
    steps.run("running clippy on the wasm client (hydrate)", || {
        run(
            ctx.cmd("cargo").args([
                "clippy",
                "-p",
                "app",
                "--lib",
                "--target",
                tools::WASM_TARGET,
                "--features",
                "hydrate",
                "--",
                "-D",
                "warnings",
            ]),
            "fix the clippy warnings above in the client code (cfg feature = \"hydrate\")",
        )
    })?;

    let site = ctx.root.join("target").join("site");
    let debug_server = server_bin(ctx, "debug");
    let release_server = server_bin(ctx, "release");

    steps.run(
        "building the debug server and client (cargo leptos build)",
        || {
            run(
                ctx.cmd("cargo").args(["leptos", "build"]),
                "read the compiler output above; `cargo leptos build` reproduces it",
            )
        },
    )?;
    steps.run("running the Rust tests (cargo test --workspace)", || {
        run(
            ctx.cmd("cargo")
                .args(["test", "--workspace"])
                .env("SITE_ROOT", &site)
                .env("SERVER_BIN", &debug_server),
            &format!(
                "read the failing tests above; rerun with SITE_ROOT={} SERVER_BIN={} cargo test --workspace",
                site.display(),
                debug_server.display()
            ),
        )
    })?;
    steps.run(
        "running the stream's tests again with hyper writing the streams",
        || {
            let mut cmd = ctx.cmd("cargo");
            // `--workspace`, as the run above: the same features, so nothing is rebuilt.
            cmd.args(["test", "--workspace"]);
            for file in HYPER_WRITER_TESTS {
                cmd.args(["--test", file]);
            }
            run(
                cmd.env("SITE_ROOT", &site)
                    .env("SERVER_BIN", &debug_server)
                    .env("SSE_TEST_STREAM_WRITER", "hyper"),
                "the stream behaves differently when hyper writes it (EVENTS_STREAM_WRITER=hyper); \
                 rerun with SSE_TEST_STREAM_WRITER=hyper cargo test -p server --test <file>",
            )
        },
    )?;
    if args.quick || args.skip_fuzz {
        note("skipping the fuzz targets");
    } else {
        fuzz(ctx, &mut steps)?;
    }
    if browser {
        steps.run("running the browser tests against the debug build", || {
            playwright(ctx, &debug_server, &site)
        })?;
    }

    if release {
        steps.run("building the release server and client (cargo leptos build --release)", || {
            run(
                ctx.cmd("cargo").args(["leptos", "build", "--release"]),
                "read the output above; `cargo leptos build --release` reproduces it (wasm-opt must be npm's binaryen 132: `cargo xtask setup`)",
            )
        })?;
        if browser {
            steps.run(
                "running the browser tests against the release build",
                || playwright(ctx, &release_server, &site),
            )?;
        }
        steps.run("checking the release client size", || client_size(&site))?;
        if args.skip_bench {
            note("skipping the benchmark's quick mode");
        } else {
            steps.run(
                "the benchmark in quick mode (cargo xtask bench --quick)",
                || bench::bench(ctx, &bench::BenchArgs::quick()),
            )?;
        }
        iis_proof(ctx, args, &mut steps)?;
    } else {
        note("skipping the release build, its browser tests and the size check");
    }
    if !browser {
        note("skipped the browser tests");
    }

    steps.print();
    Ok(())
}

/// The published folders themselves: the Linux one under the ASP.NET Core Module imitation,
/// the Windows one (cross-built) under Wine, each started the way the module starts it.
fn iis_proof(ctx: &Ctx, args: &TestArgs, steps: &mut Steps) -> Res<()> {
    let host = tools::host_triple(ctx)?;
    let linux = steps.run_with("publishing the folder for this machine", || {
        publish::publish_with(
            ctx,
            &publish::PublishArgs {
                target: Some(host.clone()),
                out: Some(ctx.root.join("dist").join("host")),
            },
            publish::Client::AlreadyBuilt,
        )
    })?;
    steps.run(
        "the published folder under the ASP.NET Core Module imitation",
        || {
            run(
                ctx.cmd("cargo")
                    .args(["test", "-p", "server", "--test", "iis_module"])
                    .env("PUBLISHED_DIR", &linux),
                &format!(
                    "read the failing tests above; rerun with PUBLISHED_DIR={} cargo test -p server --test iis_module",
                    linux.display()
                ),
            )
        },
    )?;
    if args.skip_windows || !cfg!(target_os = "linux") {
        note("skipping the Windows folder under Wine");
        return Ok(());
    }
    let windows = steps.run_with("publishing the Windows folder (cross-build)", || {
        publish::publish_with(
            ctx,
            &publish::PublishArgs {
                target: Some("x86_64-pc-windows-gnu".into()),
                out: Some(ctx.root.join("dist").join("iis")),
            },
            publish::Client::AlreadyBuilt,
        )
    })?;
    steps.run("the published server.exe under Wine", || {
        tools::ensure_wine(ctx)?;
        run(
            ctx.cmd("cargo")
                .args(["test", "-p", "server", "--test", "windows_exe", "--", "--ignored"])
                .env("WINDOWS_SERVER_DIR", &windows),
            &format!(
                "read the failing test above; rerun with WINDOWS_SERVER_DIR={} cargo test -p server --test windows_exe -- --ignored --nocapture",
                windows.display()
            ),
        )
    })
}

/// Each cargo-fuzz target for [`FUZZ_SECONDS`], without a sanitizer (the targets are safe
/// Rust: a finding is a panic or a failed assertion, which libFuzzer catches without one, and
/// the build is much shorter). Its own target directory (fuzz/target): other flags, other
/// toolchain.
fn fuzz(ctx: &Ctx, steps: &mut Steps) -> Res<()> {
    steps.run("setting up fuzzing (nightly, cargo-fuzz)", || {
        tools::ensure_fuzzing(ctx)
    })?;
    let fuzz_dir = ctx.root.join("fuzz");
    let toolchain = format!("+{}", tools::FUZZ_TOOLCHAIN);
    steps.run("building the fuzz targets (cargo +nightly fuzz build)", || {
        run(
            ctx.cmd("cargo")
                .args([toolchain.as_str(), "fuzz", "build", "-O", "--sanitizer", "none"])
                .current_dir(&fuzz_dir)
                .env_remove("CARGO_TARGET_DIR"),
            "read the compiler output above; `cd fuzz && cargo +nightly fuzz build -O --sanitizer none` reproduces it",
        )
    })?;
    for target in FUZZ_TARGETS {
        let max_time = format!("-max_total_time={FUZZ_SECONDS}");
        steps.run(
            &format!("fuzzing `{target}` for {FUZZ_SECONDS} s"),
            || {
                run(
                    ctx.cmd("cargo")
                        .args([toolchain.as_str(), "fuzz", "run", "-O", "--sanitizer", "none", target, "--", &max_time])
                        .current_dir(&fuzz_dir)
                        .env_remove("CARGO_TARGET_DIR"),
                    &format!(
                        "a finding (unless the output above says `failed to build fuzz script`: then the build broke, see the compiler output): the input is in fuzz/artifacts/{target}/; reproduce with `cd fuzz && cargo +nightly fuzz run --sanitizer none {target} artifacts/{target}/<file>`, fix, and add a unit test for it"
                    ),
                )
            },
        )?;
    }
    Ok(())
}

fn server_bin(ctx: &Ctx, profile: &str) -> PathBuf {
    let name = if cfg!(windows) {
        "server.exe"
    } else {
        "server"
    };
    ctx.root.join("target").join(profile).join(name)
}

fn playwright(ctx: &Ctx, server: &Path, site: &Path) -> Res<()> {
    if !server.is_file() {
        return Err(Failure::new(
            format!("{} does not exist", server.display()),
            "the cargo leptos build step should have built it; run `cargo leptos build` and check its output",
        ));
    }
    let e2e = ctx.root.join("end2end");
    run(
        ctx.cmd("npx")
            .args(["playwright", "test"])
            .current_dir(&e2e)
            .env("SERVER_BIN", server)
            .env("SITE_ROOT", site),
        &format!(
            "read the failures above (traces in end2end/test-results/; `npx playwright show-report` in end2end/); rerun with SERVER_BIN={} SITE_ROOT={} npx playwright test",
            server.display(),
            site.display()
        ),
    )
}

/// Raw and gzip sizes of the release client; fails if the wasm and its js loader together
/// are over the gzip budget (a browser downloads both before the page is live).
fn client_size(site: &Path) -> Res<()> {
    let pkg = site.join("pkg");
    let mut rows = Vec::new();
    for ext in ["wasm", "js"] {
        let file = pkg.join(format!("{OUTPUT_NAME}.{ext}"));
        let bytes = util::read_built(&file)?;
        rows.push(SizeRow {
            name: format!("{OUTPUT_NAME}.{ext}"),
            raw: bytes.len() as u64,
            gzip: Some(gzip_size(&bytes)),
        });
    }
    let total: u64 = rows.iter().filter_map(|r| r.gzip).sum();
    rows.push(SizeRow {
        name: "together".into(),
        raw: rows.iter().map(|r| r.raw).sum(),
        gzip: Some(total),
    });
    print!("{}", size_table(&rows));
    if total < CLIENT_GZIP_BUDGET {
        note(format!(
            "the client (wasm + js) is {} gzip, under the {} budget",
            fmt_kb(total),
            fmt_kb(CLIENT_GZIP_BUDGET)
        ));
        Ok(())
    } else {
        Err(Failure::new(
            format!(
                "the release client (wasm + js) is {} gzip, over the {} budget",
                fmt_kb(total),
                fmt_kb(CLIENT_GZIP_BUDGET)
            ),
            "look for new dependencies of app (hydrate) and keep lib-profile-release = \"wasm-release\" (opt-level z, lto)",
        ))
    }
}

/// `bytes` gzip'd at the best level, as the budget counts it. flate2's Rust backend makes the
/// wasm about 1 % larger than `gzip -9` does (93.5 KB against 92.6 KB), so the check errs on
/// the safe side.
fn gzip_size(bytes: &[u8]) -> u64 {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(bytes);
    gz.finish().map_or(0, |out| out.len() as u64)
}

pub struct SizeRow {
    pub name: String,
    pub raw: u64,
    pub gzip: Option<u64>,
}

pub fn size_table(rows: &[SizeRow]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                fmt_kb(r.raw),
                r.gzip.map(fmt_kb).unwrap_or_else(|| "n/a".into()),
            ]
        })
        .collect();
    table(&["file", "raw", "gzip"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_table_lists_raw_and_gzip() {
        let t = size_table(&[
            SizeRow {
                name: "sse-live.wasm".into(),
                raw: 132_096,
                gzip: Some(54_886),
            },
            SizeRow {
                name: "sse-live.js".into(),
                raw: 14_336,
                gzip: None,
            },
        ]);
        assert_eq!(
            t,
            "file                raw     gzip\n\
             sse-live.wasm  129.0 KB  53.6 KB\n\
             sse-live.js     14.0 KB      n/a\n"
        );
    }

    #[test]
    fn timing_table_ends_with_the_total() {
        let t = timing_table(
            &[
                ("fmt".into(), Duration::from_millis(800), "ok"),
                (
                    "cargo leptos build".into(),
                    Duration::from_secs(130),
                    "FAILED",
                ),
            ],
            Duration::from_secs(131),
        );
        assert_eq!(
            t,
            "step                 time  result\n\
             fmt                  0.8s      ok\n\
             cargo leptos build  2m10s  FAILED\n\
             total               2m11s\n"
        );
    }
}
