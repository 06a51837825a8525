//! The published Windows `server.exe`, started under Wine the way the ASP.NET Core Module starts
//! it: working directory the application folder, port, token and path base in the environment,
//! the variables of web.config's `<environmentVariables>`, readiness seen as an IPv4 listener
//! on 127.0.0.1, and the module's shutdown request at the end.
//!
//! Ignored by default: it needs Wine 8 (`/usr/lib/wine/wine64`, or the loader named by `WINE`),
//! `x86_64-w64-mingw32-gcc` and the Windows build. `cargo xtask test` runs it.
//!
//! - `WINDOWS_SERVER_DIR`: a published folder (`server.exe`, `site/`, `web.config`), as
//!   `cargo xtask publish` lays it out; relative to the workspace root. When unset or empty
//!   the test lays one out from `target/x86_64-pc-windows-gnu/release/server.exe`, the site
//!   folder `SITE_ROOT` (or an empty one) and the workspace's web.config.
//! - The Wine prefix is cached in `target/wine-prefix` (the first run creates it, 30-60 s).
//!
//! Wine 8.0 lacks `ProcessPrng` (bcryptprimitives.dll), which Rust's std calls on Windows: the
//! test builds a stand-in from `tests/wine/bcryptprimitives.c` into its OWN copy of the folder.
//! It never goes into the published folder; real Windows has the DLL.

mod common;

use common::{client, free_port, next_any, text_of, TempDir, PATIENCE};
use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::Method;
use std::{
    io::{BufRead, BufReader, Read},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How long the module gives the server to listen (web.config says 60 s; the default is
/// 120 s). Wine's first start in a prefix also starts its own services, hence the default.
const STARTUP_LIMIT: Duration = Duration::from_secs(120);
/// Creating a Wine prefix from nothing.
const PREFIX_LIMIT: Duration = Duration::from_secs(300);
/// web.config's shutdownTimeLimit is 10 s; Wine's process teardown gets some slack on top.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(20);
/// The module polls the listener table this often.
const POLL: Duration = Duration::from_millis(250);

const TOKEN: &str = "6a1c2f0e-3b7d-4e59-9c84-d20f5b7a8e31";

/// One test at a time in the shared prefix: a test's end kills every Wine process of the
/// prefix (`wineserver -k`), and with it another test's `server.exe`.
static PREFIX_IN_USE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const DLL: &str = "bcryptprimitives.dll";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the server crate is inside the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

fn non_empty_env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// The Wine loader and its wineserver.
struct WineTools {
    loader: PathBuf,
    server: PathBuf,
}

fn wine_tools() -> WineTools {
    let loader = PathBuf::from(non_empty_env("WINE").unwrap_or("/usr/lib/wine/wine64".into()));
    assert!(
        loader.is_file(),
        "{} not found: apt-get install -y --no-install-recommends wine64 (or set WINE to the loader)",
        loader.display()
    );
    let beside = loader.with_file_name("wineserver");
    let server = if beside.is_file() {
        beside
    } else {
        PathBuf::from("wineserver")
    };
    WineTools { loader, server }
}

/// The Wine environment, from a clean slate: nothing from the shell that runs the tests (a
/// `LEPTOS_OUTPUT_NAME` from cargo's `[env]`, a `RUST_LOG`, an `ASPNETCORE_PORT`) reaches the
/// server, as nothing of the kind reaches it under IIS.
fn wine_command(program: &Path, prefix: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for key in ["PATH", "HOME", "USER", "LOGNAME", "LANG", "TMPDIR"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        // No Mono or Gecko installer and no desktop menu entries: nothing here needs them.
        .env("WINEDLLOVERRIDES", "mscoree,mshtml=;winemenubuilder.exe=d")
        .stdin(Stdio::null());
    cmd
}

/// Waits for `child` up to `limit`; kills it when the time is up.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cached prefix, created the first time (timed: it is most of a first run).
fn wine_prefix(wine: &WineTools) -> PathBuf {
    let prefix = target_dir().join("wine-prefix");
    if prefix.join("system.reg").is_file() {
        return prefix;
    }
    std::fs::create_dir_all(&prefix).expect("create the Wine prefix folder");
    let started = Instant::now();
    let mut boot = wine_command(&wine.loader, &prefix)
        .args(["wineboot", "--init"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run wineboot");
    let status = wait_bounded(&mut boot, PREFIX_LIMIT);
    // wineboot returns before the prefix is written out; the wineserver's exit means it is.
    let _ = wine_command(&wine.server, &prefix).arg("-w").status();
    assert!(
        status.is_some_and(|s| s.success()) && prefix.join("system.reg").is_file(),
        "creating the Wine prefix {} failed ({status:?})",
        prefix.display()
    );
    eprintln!(
        "wine prefix {} created in {:.1?}",
        prefix.display(),
        started.elapsed()
    );
    prefix
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a folder in the copy");
    for entry in std::fs::read_dir(from).expect("read the published folder") {
        let entry = entry.expect("read the published folder");
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).expect("copy a published file");
        }
    }
}

/// The application folder the test runs: a copy of `WINDOWS_SERVER_DIR`, or one laid out the
/// way `cargo xtask publish` does.
fn application_folder(dest: &Path) {
    match non_empty_env("WINDOWS_SERVER_DIR") {
        Some(dir) => {
            let dir = workspace_root().join(dir);
            assert!(
                dir.join("server.exe").is_file(),
                "WINDOWS_SERVER_DIR={} has no server.exe (cargo xtask publish lays it out)",
                dir.display()
            );
            assert!(
                !dir.join(DLL).exists(),
                "{DLL} is in the published folder {}: it is a Wine stand-in for the tests and must not ship",
                dir.display()
            );
            copy_dir(&dir, dest);
        }
        None => {
            let exe = target_dir()
                .join("x86_64-pc-windows-gnu")
                .join("release")
                .join("server.exe");
            assert!(
                exe.is_file(),
                "{} not found: cargo build --release -p server --target x86_64-pc-windows-gnu \
                 (or set WINDOWS_SERVER_DIR to a published folder)",
                exe.display()
            );
            std::fs::create_dir_all(dest).expect("create the application folder");
            std::fs::copy(&exe, dest.join("server.exe")).expect("copy server.exe");
            std::fs::copy(workspace_root().join("web.config"), dest.join("web.config"))
                .expect("copy web.config");
            match non_empty_env("SITE_ROOT") {
                Some(site) => copy_dir(&workspace_root().join(site), &dest.join("site")),
                None => std::fs::create_dir_all(dest.join("site").join("pkg"))
                    .expect("create an empty site"),
            }
            std::fs::create_dir_all(dest.join("logs")).expect("create logs");
        }
    }
}

/// Builds the stand-in DLL into the test's copy, beside the exe.
fn build_stand_in_dll(app: &Path) {
    mingw(
        &app.join(DLL),
        &["-shared"],
        &["bcryptprimitives.c", "bcryptprimitives.def"],
        &["-ladvapi32"],
    );
}

/// Builds `tests/wine/winauth.c`, the module's part in a Windows sign-in, into the test's copy.
fn build_winauth(app: &Path) -> PathBuf {
    let exe = app.join("winauth.exe");
    mingw(&exe, &[], &["winauth.c"], &["-lws2_32", "-ladvapi32"]);
    exe
}

/// `x86_64-w64-mingw32-gcc` on files of `tests/wine/`, into `out`.
fn mingw(out: &Path, flags: &[&str], sources: &[&str], libs: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("wine");
    let built = Command::new("x86_64-w64-mingw32-gcc")
        .args(flags)
        .args(["-O2", "-s", "-o"])
        .arg(out)
        .args(sources.iter().map(|f| src.join(f)))
        .args(libs)
        .output()
        .expect("run x86_64-w64-mingw32-gcc (apt-get install -y gcc-mingw-w64-x86-64)");
    assert!(
        built.status.success(),
        "building {} failed: {}",
        out.display(),
        String::from_utf8_lossy(&built.stderr)
    );
}

/// What every test here starts with: its turn in the prefix, Wine, and its own copy of the
/// application folder with the stand-in DLL. The turn and the copy last as long as the value
/// (the turn is dropped last, after the copy is removed).
struct Setup {
    wine: WineTools,
    prefix: PathBuf,
    app: PathBuf,
    _tmp: TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

async fn setup(tag: &str) -> Setup {
    let turn = PREFIX_IN_USE.lock().await;
    let wine = wine_tools();
    let prefix = wine_prefix(&wine);
    let tmp = TempDir::new(tag);
    let app = tmp.0.join("app");
    application_folder(&app);
    build_stand_in_dll(&app);
    Setup {
        wine,
        prefix,
        app,
        _tmp: tmp,
        _turn: turn,
    }
}

/// What the module reads from web.config: the program, its arguments and the environment.
struct AspNetCore {
    process_path: String,
    arguments: Vec<String>,
    env: Vec<(String, String)>,
}

fn read_web_config(app: &Path) -> AspNetCore {
    let text = std::fs::read_to_string(app.join("web.config")).expect("read web.config");
    let doc = roxmltree::Document::parse(&text).expect("web.config is XML");
    let node = doc
        .descendants()
        .find(|n| n.has_tag_name("aspNetCore"))
        .expect("web.config has an <aspNetCore> element");
    assert_eq!(
        node.attribute("hostingModel")
            .map(|h| h.to_ascii_lowercase()),
        Some("outofprocess".into())
    );
    let process_path = node
        .attribute("processPath")
        .expect("processPath")
        .trim_start_matches(".\\")
        .trim_start_matches("./")
        .to_string();
    let arguments = node
        .attribute("arguments")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let env = node
        .descendants()
        .filter(|n| n.has_tag_name("environmentVariable"))
        .filter_map(|n| Some((n.attribute("name")?.into(), n.attribute("value")?.into())))
        .collect();
    AspNetCore {
        process_path,
        arguments,
        env,
    }
}

/// `server.exe` under Wine. Dropping it kills the process and the prefix's wineserver (and with
/// it every Wine process of the prefix), so nothing lingers whatever the test's outcome.
struct WineServer {
    child: Child,
    server: PathBuf,
    prefix: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

impl WineServer {
    fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    fn has_log(&self, needle: &str) -> bool {
        self.logs().iter().any(|l| l.contains(needle))
    }
}

impl Drop for WineServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // -k kills every process of the prefix; -w then waits for the wineserver to be gone.
        for flag in ["-k", "-w"] {
            if let Ok(mut c) = wine_command(&self.server, &self.prefix)
                .arg(flag)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                wait_bounded(&mut c, Duration::from_secs(10));
            }
        }
        if std::thread::panicking() {
            eprintln!("server.exe output:\n{}", self.logs().join("\n"));
        }
    }
}

fn collect_lines(from: impl Read + Send + 'static, logs: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            logs.lock().expect("logs").push(line);
        }
    });
}

fn start(wine: &WineTools, prefix: &Path, app: &Path, port: u16) -> WineServer {
    let config = read_web_config(app);
    assert!(
        app.join(&config.process_path).is_file(),
        "web.config's processPath {} is not in the folder",
        config.process_path
    );
    let mut cmd = wine_command(&wine.loader, prefix);
    cmd.current_dir(app)
        .arg(&config.process_path)
        .args(&config.arguments);
    // web.config's variables win over the inherited environment; the test paces the tick
    // source faster so that it sees a few.
    for (k, v) in &config.env {
        cmd.env(k, v);
    }
    cmd.env("LEPTOS_SITE_ROOT", "site")
        .env("EVENTS_TICK", "200ms")
        .env("ASPNETCORE_PORT", port.to_string())
        .env("ASPNETCORE_TOKEN", TOKEN)
        .env("ASPNETCORE_APPL_PATH", "/")
        .env("ASPNETCORE_IIS_HTTPAUTH", "anonymous;")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start wine64 server.exe");
    let logs = Arc::new(Mutex::new(Vec::new()));
    collect_lines(child.stdout.take().expect("stdout"), logs.clone());
    collect_lines(child.stderr.take().expect("stderr"), logs.clone());
    WineServer {
        child,
        server: wine.server.clone(),
        prefix: prefix.to_path_buf(),
        logs,
    }
}

/// Polls for an IPv4 listener on 127.0.0.1:`port`, as the module does.
fn wait_listening(server: &mut WineServer, port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, POLL).is_ok() {
            return;
        }
        if let Some(status) = server.child.try_wait().expect("wait") {
            panic!("server.exe exited before listening: {status}");
        }
        assert!(
            started.elapsed() < STARTUP_LIMIT,
            "server.exe did not listen on {addr} within {STARTUP_LIMIT:?}"
        );
        std::thread::sleep(POLL);
    }
}

async fn next_named(stream: &mut (impl Stream<Item = Event> + Unpin), name: &str) -> Event {
    let started = Instant::now();
    loop {
        let ev = next_any(stream).await;
        if ev.event == name {
            return ev;
        }
        assert!(started.elapsed() < PATIENCE, "no {name} event");
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Wine and the Windows build: run by cargo xtask test"]
async fn the_published_exe_runs_as_the_module_starts_it() {
    let setup = setup("wine").await;
    let (wine, prefix, app) = (&setup.wine, &setup.prefix, &setup.app);
    let site_has_client = app.join("site/pkg/sse-live.js").is_file();

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let launched = Instant::now();
    let mut server = start(wine, prefix, app, port);
    wait_listening(&mut server, port);
    let startup = launched.elapsed();
    eprintln!("server.exe listening on {base} after {startup:.1?} under Wine");

    let with_token = |method: Method, path: &str| {
        client()
            .request(method, format!("{base}{path}"))
            .header("MS-ASPNETCORE-TOKEN", TOKEN)
    };

    // The page, through the module.
    let page = with_token(Method::GET, "/").send().await.expect("page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(
        html.contains("/pkg/sse-live.js"),
        "hydration script: {html}"
    );
    if site_has_client {
        // The site folder was found relative to the exe, with Windows paths.
        let js = with_token(Method::GET, "/pkg/sse-live.js")
            .send()
            .await
            .expect("client script");
        assert_eq!(js.status(), 200);
    }

    // Not through the module: refused.
    let direct = client().get(format!("{base}/")).send().await.expect("page");
    assert_eq!(direct.status(), 400);
    assert_eq!(direct.text().await.expect("body"), "");

    // The stream: ready, then the tick source's events, then a published one.
    let res = with_token(Method::GET, "/api/events")
        .send()
        .await
        .expect("stream request");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut stream = Box::pin(
        res.bytes_stream()
            .eventsource()
            .map(|e| e.expect("a well-formed event")),
    );
    assert_eq!(next_any(&mut stream).await.event, "ready");
    let first = next_named(&mut stream, "tick").await;
    let second = next_named(&mut stream, "tick").await;
    assert!(text_of(&first).starts_with("Hello, world #"), "{first:?}");
    assert_ne!(first.id, second.id);

    let published = with_token(Method::POST, "/api/publish")
        .json(&serde_json::json!({"topic": "chat", "text": "from wine"}))
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), 201);
    let id = published.json::<serde_json::Value>().await.expect("answer")["id"]
        .as_u64()
        .expect("id");
    let chat = next_named(&mut stream, "chat").await;
    assert_eq!(chat.id, id.to_string());
    assert_eq!(text_of(&chat), "from wine");

    // The module's shutdown request, exactly as it sends it.
    let stopping = Instant::now();
    let res = with_token(Method::POST, "/iisintegration")
        .header("MS-ASPNETCORE-EVENT", "shutdown ")
        .send()
        .await
        .expect("shutdown request");
    assert_eq!(res.status(), 202);
    loop {
        match tokio::time::timeout(PATIENCE, stream.next()).await {
            Ok(Some(_)) => continue, // a tick already on its way
            Ok(None) => break,
            Err(_) => panic!("the stream did not end on shutdown"),
        }
    }
    let stream_ended = stopping.elapsed();
    let status = tokio::task::block_in_place(|| wait_bounded(&mut server.child, SHUTDOWN_LIMIT));
    let shutdown = stopping.elapsed();
    let status =
        status.unwrap_or_else(|| panic!("server.exe did not exit within {SHUTDOWN_LIMIT:?}"));
    assert!(status.success(), "clean exit: {status}");
    eprintln!(
        "shutdown: stream ended after {stream_ended:.1?}, process exited after {shutdown:.1?}"
    );
    // The readers see the pipes' last lines shortly after the exit.
    let logged = Instant::now();
    while !server.has_log("stopped") && logged.elapsed() < PATIENCE {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for needle in [
        "frontend=AspNetCoreModule",
        "the ASP.NET Core Module asked for shutdown",
        "stopped",
    ] {
        assert!(server.has_log(needle), "no log line with {needle:?}");
    }
    // stdout is a pipe (a log file under IIS): no colour codes.
    assert!(
        !server.logs().iter().any(|l| l.contains('\x1b')),
        "ANSI codes in the log"
    );
    drop(server);

    // The history is in data\events.db beside the exe: a new process (a recycle) resumes a
    // client exactly where it stopped, with no reset.
    assert!(
        app.join("data").join("events.db").is_file(),
        "no data\\events.db"
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = start(wine, prefix, app, port);
    wait_listening(&mut server, port);
    let res = client()
        .get(format!("{base}/api/events"))
        .header("MS-ASPNETCORE-TOKEN", TOKEN)
        .header("Last-Event-ID", &first.id)
        .send()
        .await
        .expect("stream request");
    assert_eq!(res.status(), 200);
    let mut stream = Box::pin(
        res.bytes_stream()
            .eventsource()
            .map(|e| e.expect("a well-formed event")),
    );
    let mut replayed = Vec::new();
    loop {
        let ev = next_any(&mut stream).await;
        assert_ne!(ev.event, "reset", "a reset after the restart: {}", ev.data);
        if ev.event == "ready" {
            break;
        }
        replayed.push(ev);
    }
    assert_eq!(
        replayed.first().map(|e| &e.id),
        Some(&second.id),
        "resumed right after the last id seen"
    );
    let ids: Vec<u64> = replayed.iter().map(|e| e.id.parse().expect("id")).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "nothing lost: {ids:?}"
    );
    assert!(
        replayed
            .iter()
            .any(|e| e.id == id.to_string() && text_of(e) == "from wine"),
        "the published event survived the restart"
    );
    eprintln!(
        "restarted under Wine: {} events replayed from data\\events.db, no reset",
        replayed.len()
    );
    drop(server);
}

/// The module's Windows sign-in, as far as Wine can play it: `winauth.exe` (tests/wine) opens
/// its own token, duplicates it into `server.exe` and sends the handle with the pairing token,
/// as the module does for a request IIS authenticated. The page must name the Wine user, and
/// the handle must be closed once the answer is written. Not covered here, because Wine has
/// no IIS: the Kerberos/NTLM handshake itself, and a domain account's groups.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Wine and the Windows build: run by cargo xtask test"]
async fn a_windows_sign_in_from_the_module_is_read_and_its_handle_closed() {
    let setup = setup("wine-auth").await;
    let (wine, prefix, app) = (&setup.wine, &setup.prefix, &setup.app);
    let helper = build_winauth(app);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = start(wine, prefix, app, port);
    wait_listening(&mut server, port);

    let mut run = wine_command(&wine.loader, prefix)
        .current_dir(app)
        .arg(&helper)
        .args([&port.to_string(), TOKEN, "/"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run winauth.exe");
    let mut stdout = run.stdout.take().expect("stdout");
    let mut stderr = run.stderr.take().expect("stderr");
    let output = tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        (out, err)
    });
    let status = tokio::task::block_in_place(|| wait_bounded(&mut run, STARTUP_LIMIT));
    let (out, err) = output.await.expect("winauth output");
    assert!(
        status.is_some_and(|s| s.success()),
        "winauth.exe failed ({status:?}): {err}"
    );
    // Its stdout is in text mode under Wine: lines end in \r\n.
    let (before, out) = out.split_once('\n').unwrap_or_default();
    assert_eq!(
        before.trim_end(),
        "before: still open",
        "the probe cannot see the handle open before the request"
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let shown = out
        .split("signed in as ")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| panic!("no 'signed in as' on the page: {out}"));
    // Wine maps the Windows user to the Unix one that runs it.
    let unix_user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    assert!(
        shown.to_lowercase().contains(&unix_user.to_lowercase()),
        "the page says signed in as {shown:?}, expected the Wine user {unix_user}"
    );
    assert!(
        out.contains("handle: closed"),
        "the server left the handle open: {out}"
    );
    eprintln!("Windows sign-in under Wine: the page says 'signed in as {shown}', handle closed");

    // A handle value that names nothing of ours: 401 saying so, and the server carries on.
    let bogus = client()
        .get(format!("{base}/"))
        .header("MS-ASPNETCORE-TOKEN", TOKEN)
        .header("MS-ASPNETCORE-WINAUTHTOKEN", "7ffe0badc0de")
        .send()
        .await
        .expect("page");
    assert_eq!(bogus.status(), 401);
    let body = bogus.text().await.expect("body");
    assert!(body.contains("Windows sign-in could not be read"), "{body}");
    // Without the pairing token the header never reaches anyone: the request is refused.
    let direct = client()
        .get(format!("{base}/"))
        .header("MS-ASPNETCORE-WINAUTHTOKEN", "4")
        .send()
        .await
        .expect("page");
    assert_eq!(direct.status(), 400);
    let page = client()
        .get(format!("{base}/"))
        .header("MS-ASPNETCORE-TOKEN", TOKEN)
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains(">anonymous<"));
    drop(server);
}
