//! Detecting and installing the tools the build needs, each at the version it must have.
//!
//! Everything installs from crates.io, npm or Debian's packages (no GitHub downloads).
//! What is already present at the right version is left alone.

use std::cmp::Ordering;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use crate::util::{capture, cargo_home, note, run, step, Ctx, Failure, Res};

pub const WASM_TARGET: &str = "wasm32-unknown-unknown";
pub const CARGO_LEPTOS_VERSION: &str = "0.3.7";
/// npm's binaryen; never Debian's (108), whose output dies in the browser.
pub const BINARYEN_MAJOR: &str = "132";
pub const MINGW_LINKER: &str = "x86_64-w64-mingw32-gcc";

/// `cargo xtask setup`: everything `cargo leptos build` needs.
pub fn setup(ctx: &Ctx) -> Res<()> {
    ensure_rust_target(ctx, WASM_TARGET)?;
    ensure_cargo_leptos(ctx)?;
    ensure_wasm_bindgen(ctx)?;
    ensure_wasm_opt(ctx)?;
    if cfg!(target_os = "linux") {
        // Not for the build: for the tests of the Redis event bus (server/tests/redis.rs),
        // which start their own redis-server and tell whoever lacks it to run this.
        ensure_redis(ctx)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pure logic (unit-tested)
// ---------------------------------------------------------------------------------------------

/// All versions of package `name` in a Cargo.lock (exact name match).
pub fn lock_versions(lock: &str, name: &str) -> Vec<String> {
    let mut versions = Vec::new();
    for block in lock.split("[[package]]").skip(1) {
        let mut found_name = None;
        let mut found_version = None;
        for line in block.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                break; // the next table (e.g. [metadata]) ends this package
            }
            if let Some((key, value)) = line.split_once('=') {
                let value = value.trim().trim_matches('"');
                match key.trim() {
                    "name" => found_name = Some(value),
                    "version" => found_version = Some(value),
                    _ => {}
                }
            }
        }
        if let (Some(n), Some(v)) = (found_name, found_version) {
            if n == name && !versions.iter().any(|x| x == v) {
                versions.push(v.to_string());
            }
        }
    }
    versions
}

/// The first version-looking word of a `--version` output:
/// `cargo-leptos 0.3.7` → `0.3.7`, `wasm-opt version 132 (version_132)` → `132`.
pub fn extract_version(output: &str) -> Option<&str> {
    output
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        .map(|w| w.strip_prefix('v').unwrap_or(w))
        .find(|w| {
            w.starts_with(|c: char| c.is_ascii_digit())
                && w.split('.')
                    .next()
                    .is_some_and(|major| major.chars().all(|c| c.is_ascii_digit()))
        })
}

fn numeric_parts(v: &str) -> Vec<u64> {
    // `0.2.130-beta.1` and `0.3.7+build` compare on their release part.
    let release = v.split(['-', '+']).next().unwrap_or("");
    release
        .split('.')
        .map(|p| p.parse::<u64>().unwrap_or(0))
        .collect()
}

/// Numeric comparison, missing parts count as 0: `0.2.9 < 0.2.130`, `132 == 132.0.0`.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (a, b) = (numeric_parts(a), numeric_parts(b));
    let len = a.len().max(b.len());
    for i in 0..len {
        let ord = a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0));
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// Does a `--version` output report exactly `wanted`?
pub fn reports_version(output: &str, wanted: &str) -> bool {
    extract_version(output).is_some_and(|v| compare_versions(v, wanted) == Ordering::Equal)
}

// ---------------------------------------------------------------------------------------------
// Rust targets
// ---------------------------------------------------------------------------------------------

pub fn ensure_rust_target(ctx: &Ctx, triple: &str) -> Res<()> {
    step(format!("checking the Rust target {triple}"));
    let installed = capture(ctx.cmd("rustup").args(["target", "list", "--installed"]));
    if installed.is_some_and(|out| out.lines().any(|l| l.trim() == triple)) {
        note(format!("{triple}: installed"));
        return Ok(());
    }
    step(format!("installing the Rust target {triple}"));
    run(
        ctx.cmd("rustup").args(["target", "add", triple]),
        &format!("check the network, or run `rustup target add {triple}` by hand"),
    )
}

/// `x86_64-unknown-linux-gnu`, from `rustc -vV`.
pub fn host_triple(ctx: &Ctx) -> Res<String> {
    capture(ctx.cmd("rustc").arg("-vV"))
        .and_then(|out| {
            out.lines()
                .find_map(|l| l.strip_prefix("host:").map(|h| h.trim().to_string()))
        })
        .ok_or_else(|| {
            Failure::new(
                "`rustc -vV` did not report the host target",
                "install Rust with rustup (https://rustup.rs)",
            )
        })
}

// ---------------------------------------------------------------------------------------------
// cargo-leptos and the wasm-bindgen CLI
// ---------------------------------------------------------------------------------------------

fn ensure_cargo_leptos(ctx: &Ctx) -> Res<()> {
    step(format!("checking cargo-leptos {CARGO_LEPTOS_VERSION}"));
    wait_for_running_install("cargo-leptos");
    let fix = "check the network, then run `cargo install cargo-leptos --version 0.3.7 --locked --features no_downloads`";
    let found = capture(ctx.cmd("cargo").args(["leptos", "--version"]));
    let mut force = false;
    match found.as_deref() {
        Some(out) if reports_version(out, CARGO_LEPTOS_VERSION) => {
            if installed_without_feature("cargo-leptos", "no_downloads") {
                note("cargo-leptos is installed without `no_downloads` (it would download tools): reinstalling");
                force = true;
            } else {
                note(format!("cargo-leptos {CARGO_LEPTOS_VERSION}: present"));
                return Ok(());
            }
        }
        Some(out) => note(format!(
            "found `{}`, need {CARGO_LEPTOS_VERSION}",
            out.trim()
        )),
        None => note("cargo-leptos: not installed"),
    }
    step(format!(
        "installing cargo-leptos {CARGO_LEPTOS_VERSION} (about 10 minutes)"
    ));
    let mut cmd = ctx.cmd("cargo");
    cmd.args([
        "install",
        "cargo-leptos",
        "--version",
        CARGO_LEPTOS_VERSION,
        "--locked",
        "--features",
        "no_downloads",
    ]);
    if force {
        cmd.arg("--force");
    }
    run(&mut cmd, fix)?;
    verify(
        ctx,
        &["leptos", "--version"],
        "cargo",
        CARGO_LEPTOS_VERSION,
        fix,
    )
}

/// The `wasm-bindgen` version pinned in Cargo.lock: the CLI must be exactly this one.
pub fn locked_wasm_bindgen(ctx: &Ctx) -> Res<String> {
    let path = ctx.root.join("Cargo.lock");
    let lock = std::fs::read_to_string(&path).map_err(|e| {
        Failure::new(
            format!("cannot read {} ({e})", path.display()),
            "run `cargo generate-lockfile` in the workspace",
        )
    })?;
    let mut versions = lock_versions(&lock, "wasm-bindgen");
    match versions.len() {
        1 => Ok(versions.remove(0)),
        0 => Err(Failure::new(
            "Cargo.lock has no `wasm-bindgen` package",
            "build the workspace once (`cargo build -p app`) so the lock file lists it",
        )),
        _ => Err(Failure::new(
            format!("Cargo.lock has several wasm-bindgen versions ({})", versions.join(", ")),
            "pin one with `wasm-bindgen = \"=X\"` in the workspace Cargo.toml and run `cargo update -p wasm-bindgen`",
        )),
    }
}

fn ensure_wasm_bindgen(ctx: &Ctx) -> Res<()> {
    let version = locked_wasm_bindgen(ctx)?;
    step(format!(
        "checking wasm-bindgen CLI {version} (from Cargo.lock)"
    ));
    wait_for_running_install("wasm-bindgen-cli");
    let fix =
        format!("check the network, then run `cargo install wasm-bindgen-cli --version {version}`");
    match capture(ctx.cmd("wasm-bindgen").arg("--version")).as_deref() {
        Some(out) if reports_version(out, &version) => {
            note(format!("wasm-bindgen {version}: present"));
            return Ok(());
        }
        Some(out) => note(format!("found `{}`, need {version}", out.trim())),
        None => note("wasm-bindgen: not installed"),
    }
    step(format!(
        "installing wasm-bindgen-cli {version} (about 2 minutes)"
    ));
    // No --locked: its lock names a webpki-roots release the registry here lacks.
    run(
        ctx.cmd("cargo")
            .args(["install", "wasm-bindgen-cli", "--version", &version])
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
        &fix,
    )?;
    verify(ctx, &["--version"], "wasm-bindgen", &version, &fix)
}

fn verify(ctx: &Ctx, args: &[&str], program: &str, wanted: &str, fix: &str) -> Res<()> {
    let out = capture(ctx.cmd(program).args(args)).unwrap_or_default();
    if reports_version(&out, wanted) {
        note(format!("{program} {wanted}: installed"));
        Ok(())
    } else {
        Err(Failure::new(
            format!(
                "after installing, `{program} {}` reports `{}` instead of {wanted}",
                args.join(" "),
                out.trim()
            ),
            fix,
        ))
    }
}

/// True only if cargo's install record shows `krate` installed without `feature`.
fn installed_without_feature(krate: &str, feature: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(cargo_home().join(".crates2.json")) else {
        return false;
    };
    let Some(start) = text.find(&format!("\"{krate} ")) else {
        return false;
    };
    let entry = &text[start..];
    let entry = &entry[..entry.find('}').unwrap_or(entry.len())];
    match entry.find("\"features\"") {
        Some(at) => {
            let list = &entry[at..];
            let list = &list[..list.find(']').unwrap_or(list.len())];
            !list.contains(&format!("\"{feature}\""))
        }
        None => false,
    }
}

/// If another `cargo install <krate>` is running (say, a provisioning script), wait for it
/// instead of starting a second build of the same thing. Linux only (reads /proc).
fn wait_for_running_install(krate: &str) {
    let deadline = Instant::now() + Duration::from_secs(30 * 60);
    let mut announced = false;
    while let Some(pid) = running_install(krate) {
        if !announced {
            note(format!(
                "`cargo install {krate}` is already running (pid {pid}): waiting for it to finish"
            ));
            announced = true;
        }
        if Instant::now() > deadline {
            note("still running after 30 minutes: checking anyway");
            return;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    if announced {
        note(format!("the other `cargo install {krate}` has finished"));
    }
}

#[cfg(target_os = "linux")]
fn running_install(krate: &str) -> Option<u32> {
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_cargo = args.first().is_some_and(|a| {
            Path::new(a)
                .file_name()
                .is_some_and(|n| n == "cargo" || n == "cargo.exe")
        });
        let installs = args.iter().any(|a| a == "install") && args.iter().any(|a| a == krate);
        if is_cargo && installs {
            return Some(pid);
        }
    }
    None
}

#[cfg(not(target_os = "linux"))]
fn running_install(_krate: &str) -> Option<u32> {
    None
}

// ---------------------------------------------------------------------------------------------
// wasm-opt from npm, and npm itself
// ---------------------------------------------------------------------------------------------

fn ensure_wasm_opt(ctx: &Ctx) -> Res<()> {
    step(format!(
        "checking wasm-opt (npm binaryen@{BINARYEN_MAJOR}) in .tools/"
    ));
    let bin = crate::util::npm_bin_dir(&ctx.root).join(if cfg!(windows) {
        "wasm-opt.cmd"
    } else {
        "wasm-opt"
    });
    let check = || {
        if !bin.is_file() {
            return None;
        }
        capture(ctx.cmd(&bin.to_string_lossy()).arg("--version"))
    };
    match check() {
        Some(out) if extract_version(&out).is_some_and(|v| major(v) == BINARYEN_MAJOR) => {
            note(format!("{}: present", out.trim()));
            return Ok(());
        }
        Some(out) => note(format!(
            "found `{}`, need version {BINARYEN_MAJOR}",
            out.trim()
        )),
        None => note("wasm-opt: not installed in .tools/"),
    }
    ensure_npm(ctx)?;
    step(format!(
        "installing binaryen@{BINARYEN_MAJOR} from npm into .tools/"
    ));
    let tools = ctx.tools_dir();
    std::fs::create_dir_all(&tools)
        .map_err(|e| crate::util::io_failure(format!("cannot create {}", tools.display()), e))?;
    run(
        ctx.cmd("npm").args([
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            &tools.to_string_lossy(),
            &format!("binaryen@{BINARYEN_MAJOR}"),
        ]),
        "check the network and npm's registry settings, then run `npm install --prefix .tools binaryen@132`",
    )?;
    match check() {
        Some(out) if extract_version(&out).is_some_and(|v| major(v) == BINARYEN_MAJOR) => {
            note(format!("{}: installed", out.trim()));
            Ok(())
        }
        other => Err(Failure::new(
            format!(
                "after `npm install binaryen@{BINARYEN_MAJOR}`, {} reports `{}`",
                bin.display(),
                other.unwrap_or_default().trim()
            ),
            "delete .tools/ and run `cargo xtask setup` again",
        )),
    }
}

fn major(v: &str) -> &str {
    v.split('.').next().unwrap_or(v)
}

pub fn ensure_npm(ctx: &Ctx) -> Res<()> {
    if ctx.which("npm").is_some() && ctx.which("node").is_some() {
        return Ok(());
    }
    step("installing Node.js and npm");
    apt_install(ctx, &["nodejs", "npm"], "Node.js 20 with npm (nodejs.org)")?;
    if ctx.which("npm").is_none() {
        return Err(Failure::new(
            "npm is still not on PATH after installing it",
            "install Node.js 20 with npm by hand and open a new shell",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Debian packages: Chromium for the browser tests, mingw for the Windows server
// ---------------------------------------------------------------------------------------------

fn apt_available(ctx: &Ctx) -> bool {
    cfg!(target_os = "linux") && ctx.which("apt-get").is_some()
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// `apt-get install -y <packages>` (after one `apt-get update` per run). Without apt (Windows,
/// other Linux distributions) it fails with what to install by hand.
pub fn apt_install(ctx: &Ctx, packages: &[&str], by_hand: &str) -> Res<()> {
    let list = packages.join(" ");
    if !apt_available(ctx) {
        return Err(Failure::new(
            format!("{list} is missing and there is no apt-get here"),
            format!("install {by_hand} by hand, then run the command again"),
        ));
    }
    if !is_root(ctx) {
        return Err(Failure::new(
            format!("{list} is missing and installing it needs root"),
            format!("run `sudo apt-get install -y {list}`, then run the command again"),
        ));
    }
    if !APT_UPDATED.swap(true, AtomicOrdering::SeqCst) {
        step("updating the apt package lists");
        run(
            ctx.cmd("apt-get")
                .arg("update")
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "check the network and /etc/apt/sources.list, then run `apt-get update`",
        )?;
    }
    step(format!("installing {list} with apt-get"));
    run(
        ctx.cmd("apt-get")
            .args(["install", "-y"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("run `apt-get install -y {list}` by hand and read its error"),
    )
}

fn is_root(ctx: &Ctx) -> bool {
    capture(ctx.cmd("id").arg("-u")).is_some_and(|out| out.trim() == "0")
}

/// The browser the end2end config launches: `$CHROMIUM_BIN`, else /usr/bin/chromium.
pub fn ensure_chromium(ctx: &Ctx) -> Res<()> {
    step("checking Chromium for the browser tests");
    if let Some(custom) = std::env::var_os("CHROMIUM_BIN") {
        let custom = Path::new(&custom);
        if custom.is_file() {
            note(format!("CHROMIUM_BIN={}: present", custom.display()));
            return Ok(());
        }
        return Err(Failure::new(
            format!(
                "CHROMIUM_BIN points to {}, which does not exist",
                custom.display()
            ),
            "point CHROMIUM_BIN to a Chromium or Chrome executable, or unset it",
        ));
    }
    let default = Path::new("/usr/bin/chromium");
    if cfg!(target_os = "linux") {
        if default.is_file() {
            note("/usr/bin/chromium: present");
            return Ok(());
        }
        apt_install(
            ctx,
            &["chromium"],
            "Chromium so that /usr/bin/chromium exists",
        )?;
        if default.is_file() {
            return Ok(());
        }
        return Err(Failure::new(
            "apt-get installed chromium but /usr/bin/chromium is missing",
            "set CHROMIUM_BIN to the Chromium executable",
        ));
    }
    Err(Failure::new(
        "no browser for the browser tests (the end2end config defaults to /usr/bin/chromium)",
        "install Chromium or Chrome by hand and set CHROMIUM_BIN to its executable (e.g. C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe)",
    ))
}

/// `npm ci` in end2end/ when node_modules is missing or older than package-lock.json.
pub fn ensure_e2e_node_modules(ctx: &Ctx) -> Res<()> {
    ensure_node_modules(ctx, "end2end", "the browser-test packages")
}

/// `npm ci` in `dir` (relative to the workspace) when its node_modules is missing or older
/// than its package-lock.json.
pub fn ensure_node_modules(ctx: &Ctx, dir: &str, what: &str) -> Res<()> {
    step(format!("checking {dir}/node_modules"));
    let path = ctx.root.join(dir);
    let lock = path.join("package-lock.json");
    let modules = path.join("node_modules");
    // npm writes node_modules/.package-lock.json on every install: the best "installed at".
    let marker = modules.join(".package-lock.json");
    let installed = std::fs::metadata(if marker.is_file() { &marker } else { &modules })
        .and_then(|m| m.modified())
        .ok();
    let locked = std::fs::metadata(&lock)
        .and_then(|m| m.modified())
        .map_err(|e| {
            Failure::new(
                format!("cannot read {} ({e})", lock.display()),
                format!("run `npm install` in {dir}/ to create it and commit it"),
            )
        })?;
    match installed {
        Some(at) if at >= locked => {
            note(format!("{dir}/node_modules: up to date"));
            return Ok(());
        }
        Some(_) => note(format!(
            "{dir}/node_modules is older than package-lock.json"
        )),
        None => note(format!("{dir}/node_modules: missing")),
    }
    ensure_npm(ctx)?;
    step(format!("installing {what} (npm ci in {dir}/)"));
    run(
        ctx.cmd("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&path),
        &format!("check the network; if package-lock.json is out of sync with package.json, run `npm install` in {dir}/"),
    )
}

/// Go (Debian's `golang-go`, 1.19 on Debian 12), for the benchmark's Go peer.
pub fn ensure_go(ctx: &Ctx) -> Res<()> {
    step("checking Go");
    if let Some(out) = capture(ctx.cmd("go").arg("version")) {
        note(out.trim());
        return Ok(());
    }
    apt_install(ctx, &["golang-go"], "Go 1.19 or later (go.dev)")?;
    if ctx.which("go").is_none() {
        return Err(Failure::new(
            "go is still not on PATH after installing golang-go",
            "install Go by hand and open a new shell",
        ));
    }
    Ok(())
}

/// A Python venv at `venv` with `requirements` installed; pip runs again only when the
/// requirements file differs from the copy kept in the venv after the last install.
pub fn ensure_python_venv(ctx: &Ctx, venv: &Path, requirements: &Path) -> Res<()> {
    step(format!("checking the Python venv {}", venv.display()));
    let python = venv.join("bin").join("python");
    let stamp = venv.join("installed-requirements.txt");
    let wanted = std::fs::read_to_string(requirements).map_err(|e| {
        Failure::new(
            format!("cannot read {} ({e})", requirements.display()),
            "restore it from git",
        )
    })?;
    if python.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str())
    {
        note("up to date");
        return Ok(());
    }
    if !python.is_file() {
        let python3 = if ctx.which("python3").is_some() {
            "python3"
        } else {
            apt_install(ctx, &["python3", "python3-venv"], "Python 3.11 with venv")?;
            "python3"
        };
        step("creating the venv");
        run(
            ctx.cmd(python3).arg("-m").arg("venv").arg(venv),
            "install python3-venv (`apt-get install -y python3-venv`) and run again",
        )?;
    }
    step(format!("installing {} with pip", requirements.display()));
    run(
        ctx.cmd(&python.to_string_lossy())
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(requirements),
        "check the network and PyPI settings, then run the pip command above by hand",
    )?;
    std::fs::write(&stamp, wanted).map_err(|e| {
        Failure::new(
            format!("cannot write {} ({e})", stamp.display()),
            "check the permissions of target/",
        )
    })
}

/// nginx, which the test of the shipped nginx example runs in front of the server.
pub fn ensure_nginx(ctx: &Ctx) -> Res<()> {
    ensure_file(ctx, "/usr/sbin/nginx", &["nginx"], "nginx")
}

/// redis-server, started by the Redis event bus's tests (server/tests/redis.rs) on a loopback
/// port of their own.
pub fn ensure_redis(ctx: &Ctx) -> Res<()> {
    ensure_file(
        ctx,
        "/usr/bin/redis-server",
        &["redis-server"],
        "redis-server",
    )
}

/// Wine, to run the published Windows server.exe (server/tests/windows_exe.rs).
pub const WINE: &str = "/usr/lib/wine/wine64";

pub fn ensure_wine(ctx: &Ctx) -> Res<()> {
    ensure_file(
        ctx,
        WINE,
        &["--no-install-recommends", "wine64"],
        "Wine (wine64)",
    )
}

/// A program from a Debian package, installed when its file is missing (Linux only).
fn ensure_file(ctx: &Ctx, path: &str, packages: &[&str], what: &str) -> Res<()> {
    step(format!("checking {what}"));
    if Path::new(path).is_file() {
        note(format!("{path}: present"));
        return Ok(());
    }
    apt_install(ctx, packages, what)?;
    if Path::new(path).is_file() {
        return Ok(());
    }
    Err(Failure::new(
        format!("{what} was installed but {path} is missing"),
        format!("install {what} so that {path} exists"),
    ))
}

/// The linker `.cargo/config.toml` names for x86_64-pc-windows-gnu.
pub fn ensure_mingw(ctx: &Ctx) -> Res<()> {
    step(format!("checking the mingw linker {MINGW_LINKER}"));
    if ctx.which(MINGW_LINKER).is_some() {
        note(format!("{MINGW_LINKER}: present"));
        return Ok(());
    }
    apt_install(
        ctx,
        &["gcc-mingw-w64-x86-64"],
        "the mingw-w64 cross compiler (x86_64-w64-mingw32-gcc)",
    )
}

// ---------------------------------------------------------------------------------------------
// Fuzzing: the nightly toolchain and cargo-fuzz
// ---------------------------------------------------------------------------------------------

/// The toolchain `cargo fuzz` builds with (libFuzzer's coverage flags need nightly); the
/// workspace itself stays on stable.
pub const FUZZ_TOOLCHAIN: &str = "nightly";

/// What `cargo +nightly fuzz run` needs: a nightly toolchain and cargo-fuzz.
pub fn ensure_fuzzing(ctx: &Ctx) -> Res<()> {
    ensure_nightly(ctx)?;
    ensure_cargo_fuzz(ctx)
}

fn ensure_nightly(ctx: &Ctx) -> Res<()> {
    step(format!(
        "checking the {FUZZ_TOOLCHAIN} toolchain (for cargo fuzz)"
    ));
    let installed = capture(ctx.cmd("rustup").args(["toolchain", "list"]));
    let prefix = format!("{FUZZ_TOOLCHAIN}-");
    if installed.is_some_and(|out| out.lines().any(|l| l.trim().starts_with(&prefix))) {
        note(format!("{FUZZ_TOOLCHAIN}: installed"));
        return Ok(());
    }
    step(format!(
        "installing the {FUZZ_TOOLCHAIN} toolchain (minimal profile)"
    ));
    run(
        ctx.cmd("rustup")
            .args(["toolchain", "install", FUZZ_TOOLCHAIN, "--profile", "minimal"]),
        &format!(
            "check the network, or run `rustup toolchain install {FUZZ_TOOLCHAIN} --profile minimal` by hand"
        ),
    )
}

fn ensure_cargo_fuzz(ctx: &Ctx) -> Res<()> {
    step("checking cargo-fuzz");
    wait_for_running_install("cargo-fuzz");
    if let Some(out) = capture(ctx.cmd("cargo").args(["fuzz", "--version"])) {
        note(format!("{}: present", out.trim()));
        return Ok(());
    }
    step("installing cargo-fuzz (about a minute)");
    let fix = "check the network, then run `cargo install cargo-fuzz --locked`";
    run(
        ctx.cmd("cargo").args(["install", "cargo-fuzz", "--locked"]),
        fix,
    )?;
    match capture(ctx.cmd("cargo").args(["fuzz", "--version"])) {
        Some(out) => {
            note(format!("{}: installed", out.trim()));
            Ok(())
        }
        None => Err(Failure::new(
            "after installing, `cargo fuzz --version` does not run",
            fix,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"
version = 4

[[package]]
name = "wasm-bindgen"
version = "0.2.130"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "abc"
dependencies = [
 "cfg-if",
 "wasm-bindgen-macro",
]

[[package]]
name = "wasm-bindgen-macro"
version = "0.2.131"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "xtask"
version = "0.1.0"
dependencies = [
 "clap",
]

[metadata]
name = "not-a-package"
"#;

    #[test]
    fn lock_finds_the_exact_package() {
        assert_eq!(lock_versions(LOCK, "wasm-bindgen"), vec!["0.2.130"]);
        assert_eq!(lock_versions(LOCK, "wasm-bindgen-macro"), vec!["0.2.131"]);
        assert_eq!(lock_versions(LOCK, "xtask"), vec!["0.1.0"]);
        assert!(lock_versions(LOCK, "wasm").is_empty());
        assert!(lock_versions(LOCK, "not-a-package").is_empty());
        assert!(lock_versions("", "wasm-bindgen").is_empty());
    }

    #[test]
    fn lock_reports_duplicate_versions() {
        let two = format!("{LOCK}\n[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.100\"\n");
        assert_eq!(
            lock_versions(&two, "wasm-bindgen"),
            vec!["0.2.130", "0.2.100"]
        );
    }

    #[test]
    fn lock_of_this_workspace_pins_one_wasm_bindgen() {
        let lock = include_str!("../../Cargo.lock");
        assert_eq!(lock_versions(lock, "wasm-bindgen").len(), 1);
    }

    #[test]
    fn versions_are_extracted_from_tool_output() {
        assert_eq!(extract_version("cargo-leptos 0.3.7\n"), Some("0.3.7"));
        assert_eq!(extract_version("wasm-bindgen 0.2.130"), Some("0.2.130"));
        assert_eq!(
            extract_version("wasm-opt version 132 (version_132)"),
            Some("132")
        );
        assert_eq!(extract_version("v20.20.2"), Some("20.20.2"));
        assert_eq!(extract_version("no version here"), None);
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("0.2.130", "0.2.130"), Ordering::Equal);
        assert_eq!(compare_versions("0.2.9", "0.2.130"), Ordering::Less);
        assert_eq!(compare_versions("0.3.11", "0.3.7"), Ordering::Greater);
        assert_eq!(compare_versions("132", "132.0.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.0.0-beta.2", "1.0.0"), Ordering::Equal);
        assert_eq!(compare_versions("108", "132"), Ordering::Less);
    }

    #[test]
    fn version_checks_need_an_exact_match() {
        assert!(reports_version("cargo-leptos 0.3.7", "0.3.7"));
        assert!(!reports_version("cargo-leptos 0.3.11", "0.3.7"));
        assert!(!reports_version("wasm-bindgen 0.2.13", "0.2.130"));
        assert!(!reports_version("", "0.2.130"));
    }
}
