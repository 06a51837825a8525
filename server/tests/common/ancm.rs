//! A test-side imitation of IIS in front of the server: the ASP.NET Core Module
//! (AspNetCoreModuleV2, out-of-process) and, for contrast, HttpPlatformHandler.
//!
//! It is driven by the REAL `web.config` of the repository (or of a folder made by
//! `cargo xtask publish`): `processPath`, `arguments`, `startupTimeLimit`, `shutdownTimeLimit`,
//! `requestTimeout` and `<environmentVariables>` come from there. What it does with them follows
//! what the module does, as read from its source (`docs/ANCM.md`, quoted below as
//! "ANCM.md: ..."). Linux stands in for Windows where it must: `.\server.exe` runs as
//! `./server`, SIGTERM stands in for Ctrl-Break and SIGKILL for `TerminateProcess`.
//!
//! Two settings of IIS itself, which live in applicationHost.config and not in web.config, are
//! passed to [`Module::start_with`] as [`Iis`]: `appConcurrentRequestLimit`, and dynamic
//! compression locked on at server level.
//!
//! Several processes: `processesPerApplication` from web.config starts that many, each with its
//! own port and token, and the front round-robins requests over them; an overlapped recycle
//! ([`Module::recycle_overlapped`]) starts the new process, sends new requests to it, and only
//! then stops the old one.
//!
//! Not imitated: the job object, HTTPS, Windows authentication, `app_offline.htm`, restarting
//! a process that exited, and the module's lazy closing of a backend connection whose client
//! went away (here the backend connection closes as soon as the client's does).

use super::TempDir;
use bytes::{Bytes, BytesMut};
use eventsource_stream::Event;
use futures::Stream;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::{
    body::{Frame, Incoming},
    header::{HeaderMap, HeaderName, HeaderValue},
    Request, Response, StatusCode,
};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
};
use std::{
    collections::BTreeMap,
    convert::Infallible,
    hash::{BuildHasher, Hasher},
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    process::{ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
    task::JoinHandle,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type FrontBody = UnsyncBoxBody<Bytes, BoxError>;

/// ANCM.md: "the module polls the IPv4 listener table every 250 ms".
const READY_POLL: Duration = Duration::from_millis(250);
/// ANCM.md, HttpPlatformHandler: "Its output path holds about 8 KB before sending".
pub const HTTP_PLATFORM_BUFFER: usize = 8192;
/// ANCM.md: "`appConcurrentRequestLimit` (5,000 by default, set in applicationHost.config)".
pub const APP_CONCURRENT_REQUEST_LIMIT: usize = 5000;

// ---------------------------------------------------------------------------------------------
// web.config
// ---------------------------------------------------------------------------------------------

/// What the module reads from `<aspNetCore>`.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// As written, e.g. `.\server.exe`.
    pub process_path: String,
    pub arguments: String,
    pub stdout_log_enabled: bool,
    /// As written, e.g. `.\logs\stdout` (a prefix: the module adds `_<time>_<pid>.log`).
    pub stdout_log_file: String,
    pub startup_time_limit: Duration,
    pub shutdown_time_limit: Duration,
    /// An idle timeout between two reads from the backend, not a total (ANCM.md).
    pub request_timeout: Duration,
    /// `processesPerApplication` (1 to 100, default 1).
    pub processes_per_application: usize,
    /// `<environmentVariables>`, in document order.
    pub env: Vec<(String, String)>,
    /// `<urlCompression doDynamicCompression>`, when web.config sets it. What IIS does with it
    /// depends on the server level: [`Iis::dynamic_compression_locked_on`] ignores it.
    pub do_dynamic_compression: Option<bool>,
}

impl WebConfig {
    pub fn load(path: &Path) -> WebConfig {
        let xml = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        WebConfig::parse(&xml)
    }

    /// Missing attributes take the module's defaults: startupTimeLimit 120 s,
    /// shutdownTimeLimit 10 s, requestTimeout 2 minutes (ANCM.md).
    pub fn parse(xml: &str) -> WebConfig {
        let doc = roxmltree::Document::parse(xml).expect("web.config is well-formed XML");
        let node = doc
            .descendants()
            .find(|n| n.has_tag_name("aspNetCore"))
            .expect("web.config has an <aspNetCore> element");
        let attr = |name: &str| node.attribute(name).map(str::trim);
        let seconds = |name: &str, default: u64| {
            attr(name).map_or(Duration::from_secs(default), |v| {
                Duration::from_secs(v.parse().unwrap_or_else(|_| panic!("{name}='{v}'")))
            })
        };
        let env = node
            .descendants()
            .filter(|n| n.has_tag_name("environmentVariable"))
            .map(|n| {
                let name = n.attribute("name").expect("environmentVariable name");
                (name.to_string(), n.attribute("value").unwrap_or("").into())
            })
            .collect();
        WebConfig {
            process_path: attr("processPath")
                .expect("<aspNetCore processPath>")
                .to_string(),
            arguments: attr("arguments").unwrap_or("").to_string(),
            stdout_log_enabled: attr("stdoutLogEnabled")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            stdout_log_file: attr("stdoutLogFile")
                .unwrap_or(r".\logs\stdout")
                .to_string(),
            startup_time_limit: seconds("startupTimeLimit", 120),
            shutdown_time_limit: seconds("shutdownTimeLimit", 10),
            request_timeout: attr("requestTimeout").map_or(Duration::from_secs(120), timespan),
            processes_per_application: attr("processesPerApplication").map_or(1, |v| {
                v.parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .unwrap_or_else(|| panic!("processesPerApplication='{v}'"))
            }),
            env,
            do_dynamic_compression: doc
                .descendants()
                .find(|n| n.has_tag_name("urlCompression"))
                .and_then(|n| n.attribute("doDynamicCompression"))
                .map(|v| v.trim().eq_ignore_ascii_case("true")),
        }
    }

    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A .NET TimeSpan as IIS writes it: `hh:mm:ss` (optionally `d.hh:mm:ss` and `.fff`).
pub fn timespan(value: &str) -> Duration {
    let bad = || -> ! { panic!("requestTimeout='{value}' is not hh:mm:ss") };
    let number = |s: &str| s.parse::<u64>().unwrap_or_else(|_| bad());
    let (days, rest) = match value.split_once('.') {
        Some((d, rest)) if !d.contains(':') => (number(d), rest),
        _ => (0, value),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let [h, m, s] = parts.as_slice() else { bad() };
    let s: f64 = s.parse().unwrap_or_else(|_| bad());
    Duration::from_secs((days * 24 + number(h)) * 3600 + number(m) * 60)
        + Duration::from_secs_f64(s)
}

/// A copy of `xml` with one `<environmentVariable>` set (replaced, or added at the end of
/// `<environmentVariables>`). For tests that need a different setting: the module lets
/// web.config win over everything, so the only honest way to change a setting is the file.
pub fn with_env(xml: &str, name: &str, value: &str) -> String {
    let doc = roxmltree::Document::parse(xml).expect("web.config is well-formed XML");
    let element = format!(
        r#"<environmentVariable name="{}" value="{}" />"#,
        escape(name),
        escape(value)
    );
    if let Some(existing) = doc.descendants().find(|n| {
        n.has_tag_name("environmentVariable")
            && n.attribute("name")
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
    }) {
        let r = existing.range();
        return format!("{}{element}{}", &xml[..r.start], &xml[r.end..]);
    }
    let list = doc
        .descendants()
        .find(|n| n.has_tag_name("environmentVariables"))
        .expect("web.config has <environmentVariables>");
    let r = list.range();
    let close = xml[r.clone()]
        .rfind("</environmentVariables>")
        .map(|i| r.start + i)
        .expect("<environmentVariables> is not self-closing");
    format!("{}  {element}\n        {}", &xml[..close], &xml[close..])
}

/// A copy of `xml` with one attribute of `<aspNetCore>` changed (e.g. `requestTimeout`).
pub fn with_attribute(xml: &str, name: &str, value: &str) -> String {
    let doc = roxmltree::Document::parse(xml).expect("web.config is well-formed XML");
    let node = doc
        .descendants()
        .find(|n| n.has_tag_name("aspNetCore"))
        .expect("web.config has an <aspNetCore> element");
    let attr = node
        .attributes()
        .find(|a| a.name() == name)
        .unwrap_or_else(|| panic!("<aspNetCore> has no {name}"));
    let r = attr.range_value();
    format!("{}{}{}", &xml[..r.start], escape(value), &xml[r.end..])
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// `%VAR%` in a web.config value is expanded from the environment the process gets
/// (ANCM.md: "`%VAR%` in them is expanded"); an unknown `%NAME%` stays as written, as
/// Windows' `ExpandEnvironmentStrings` leaves it.
pub fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('%') {
            Some(end) if end > 0 => {
                let name = &after[..end];
                match env.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                    Some((_, v)) => out.push_str(v),
                    None => {
                        out.push('%');
                        out.push_str(name);
                        out.push('%');
                    }
                }
                rest = &after[end + 1..];
            }
            _ => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// The published folder
// ---------------------------------------------------------------------------------------------

/// A folder laid out as `cargo xtask publish` lays it out (`server`, `site/`, `web.config`,
/// `logs/`), private to one test and removed after it.
#[derive(Clone)]
pub struct Published {
    dir: Arc<TempDir>,
}

impl Published {
    /// A copy of `PUBLISHED_DIR` when set (made by `cargo xtask publish --target
    /// x86_64-unknown-linux-gnu`); otherwise the test build of the server, `SITE_ROOT` (or an
    /// empty `site/pkg/`), the repository's web.config and an empty `logs/`.
    pub fn new(tag: &str) -> Published {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("sse-live-iis-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create the published folder");
        let dir = TempDir(path.clone());
        match std::env::var_os("PUBLISHED_DIR").filter(|v| !v.is_empty()) {
            Some(source) => copy_dir(Path::new(&source), &path),
            None => {
                link_or_copy(
                    Path::new(env!("CARGO_BIN_EXE_server")),
                    &path.join("server"),
                );
                match std::env::var_os("SITE_ROOT").filter(|v| !v.is_empty()) {
                    Some(site) => copy_dir(Path::new(&site), &path.join("site")),
                    None => std::fs::create_dir_all(path.join("site").join("pkg"))
                        .expect("create site/pkg"),
                }
                let web_config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web.config");
                std::fs::copy(&web_config, path.join("web.config")).expect("copy web.config");
                std::fs::create_dir_all(path.join("logs")).expect("create logs/");
            }
        }
        for needed in ["server", "site", "web.config", "logs"] {
            assert!(
                path.join(needed).exists(),
                "the published folder {} has no {needed}",
                path.display()
            );
        }
        Published { dir: Arc::new(dir) }
    }

    pub fn path(&self) -> &Path {
        &self.dir.0
    }

    pub fn web_config_path(&self) -> PathBuf {
        self.path().join("web.config")
    }

    pub fn web_config(&self) -> WebConfig {
        WebConfig::load(&self.web_config_path())
    }

    /// Writes a modified web.config into this (temporary) folder: test-only.
    pub fn set_env(&self, name: &str, value: &str) -> &Self {
        self.rewrite(|xml| with_env(xml, name, value))
    }

    /// Writes web.config with one attribute of `<aspNetCore>` changed: test-only.
    pub fn set_attribute(&self, name: &str, value: &str) -> &Self {
        self.rewrite(|xml| with_attribute(xml, name, value))
    }

    fn rewrite(&self, change: impl FnOnce(&str) -> String) -> &Self {
        let path = self.web_config_path();
        let xml = std::fs::read_to_string(&path).expect("read web.config");
        let changed = change(&xml);
        // Removed first: never write through a link into the original.
        std::fs::remove_file(&path).expect("remove web.config");
        std::fs::write(&path, changed).expect("write web.config");
        self
    }

    /// The stdout log files the module wrote into `logs/`.
    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.path().join("logs"))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}

/// The server binary is hundreds of MB in a debug build: a hard link when the file system
/// allows it (nothing ever writes to it), a copy otherwise.
fn link_or_copy(from: &Path, to: &Path) {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create folder");
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.expect("folder entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() == "server" {
            link_or_copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The module
// ---------------------------------------------------------------------------------------------

/// Which IIS module is imitated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handler {
    /// AspNetCoreModuleV2, out-of-process; `appl_path` is `/` at the site root or `/live`
    /// under an application (ANCM.md: "leading slash, no trailing slash").
    AspNetCoreModule { appl_path: String },
    /// HttpPlatformHandler: port in `HTTP_PLATFORM_PORT`, no token, and about 8 KB of the
    /// response held before anything is sent.
    HttpPlatformHandler,
}

impl Handler {
    pub fn site_root() -> Handler {
        Handler::AspNetCoreModule {
            appl_path: "/".into(),
        }
    }

    pub fn application(path: &str) -> Handler {
        Handler::AspNetCoreModule {
            appl_path: path.into(),
        }
    }
}

/// What one request through the front looked like to the backend (for assertions).
#[derive(Clone, Debug)]
pub struct Forwarded {
    pub path: String,
    pub x_forwarded_for: String,
    pub status: Option<u16>,
    /// The front gzipped the answer on its way to the client
    /// ([`Iis::dynamic_compression_locked_on`]).
    pub gzipped: bool,
}

/// Settings of IIS itself (applicationHost.config, the server level), which web.config cannot
/// change. [`Iis::default`] is a fresh installation's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iis {
    /// `system.webServer/serverRuntime` `appConcurrentRequestLimit`. ANCM.md: "IIS counts every
    /// open stream as a request ... [and] answer[s] 503.2 itself beyond that, before the server
    /// sees the request". Every request in flight counts, from its arrival until its response
    /// body has ended or its client has gone: an open stream counts for as long as it is open.
    /// (A client that goes stops counting here at once; under IIS the module notices only at the
    /// backend's next write, ANCM.md, so a dead stream counts until the next heartbeat.)
    pub app_concurrent_request_limit: usize,
    /// Dynamic compression locked on by an admin at server level: the front gzips every
    /// `text/*` answer that has no `Content-Encoding`, whatever web.config's `<urlCompression
    /// doDynamicCompression="false" />` says (ANCM.md: "Where an admin has locked compression on
    /// at server level, the only defence left to the app is a `Content-Encoding` header ... IIS
    /// compresses `text/*` unless one is present"). As IIS does, only for a client whose
    /// `Accept-Encoding` takes gzip (every browser's does, an `EventSource`'s included). The
    /// compressor holds output back until its buffer fills ([`Gzip`]): the events "one behind"
    /// of aspnet/AspNetCoreModule#16.
    pub dynamic_compression_locked_on: bool,
}

impl Default for Iis {
    fn default() -> Iis {
        Iis {
            app_concurrent_request_limit: APP_CONCURRENT_REQUEST_LIMIT,
            dynamic_compression_locked_on: false,
        }
    }
}

/// What happened when the module stopped the process.
#[derive(Clone, Debug)]
pub struct Stopped {
    /// Status of `POST .../iisintegration` (`None`: no answer, or HttpPlatformHandler).
    pub shutdown_status: Option<u16>,
    /// From sending the shutdown request to the process's exit.
    pub exited_after: Duration,
    /// The answer was not 202, so the stand-in for Ctrl-Break (SIGTERM) was sent.
    pub signalled: bool,
    /// `shutdownTimeLimit` ran out and the process was killed.
    pub killed: bool,
    pub exit: Option<ExitStatus>,
}

/// One started process and the "IIS front" that forwards to it.
pub struct Module {
    pub handler: Handler,
    pub config: WebConfig,
    /// The backend's port (`ASPNETCORE_PORT` / `HTTP_PLATFORM_PORT`).
    pub port: u16,
    /// `ASPNETCORE_TOKEN`; `None` under HttpPlatformHandler.
    pub token: Option<String>,
    /// Where clients connect: the imitation of IIS's binding.
    pub front: SocketAddr,
    /// From starting the process to the first accepted readiness probe.
    pub ready_after: Duration,
    /// Start attempts used (the module makes two, each on a new port).
    pub attempts: u32,
    /// Every line the process wrote to stdout and stderr.
    pub logs: Arc<Mutex<Vec<String>>>,
    /// `logs/stdout_<UTC time>_<pid>.log`, when `stdoutLogEnabled`.
    pub log_file: Option<PathBuf>,
    /// The IIS settings the front applies.
    pub iis: Iis,
    forwarded: Arc<Mutex<Vec<Forwarded>>>,
    counts: Arc<Counts>,
    child: Child,
    /// The processes after the first (`processesPerApplication` above 1).
    others: Vec<Launch>,
    /// Where the front sends each new request.
    routes: Arc<Routes>,
    accept: JoinHandle<()>,
    folder: Published,
}

/// The processes requests go to, taken in turn.
#[derive(Default)]
struct Routes {
    backends: Mutex<Vec<(u16, Option<String>)>>,
    next: AtomicUsize,
}

impl Routes {
    fn set(&self, backends: Vec<(u16, Option<String>)>) {
        *self.backends.lock().expect("routes") = backends;
    }

    fn pick(&self) -> (u16, Option<String>) {
        let backends = self.backends.lock().expect("routes");
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        backends[n % backends.len()].clone()
    }
}

impl Module {
    /// Starts the server in `folder` as the module would, waits for it to listen, and opens
    /// the front, with IIS as freshly installed ([`Iis::default`]). Panics (the browser's
    /// 502.5) when both start attempts fail.
    pub async fn start(folder: &Published, handler: Handler) -> Module {
        Module::start_with(folder, handler, Iis::default()).await
    }

    /// [`Module::start`] behind an IIS with the given server-level settings.
    pub async fn start_with(folder: &Published, handler: Handler, iis: Iis) -> Module {
        let config = folder.web_config();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let log_file = stdout_log_path(folder.path(), &config);
        let mut failures = Vec::new();
        // ANCM.md: "Two start attempts, each on a new port".
        for attempt in 1..=2 {
            let started =
                Launch::new(folder, &config, &handler, log_file.clone(), logs.clone()).await;
            match started {
                Ok(launch) => {
                    let mut others = Vec::new();
                    for _ in 1..config.processes_per_application {
                        others
                            .push(Launch::start(folder, &config, &handler, &log_file, &logs).await);
                    }
                    let routes = Arc::new(Routes::default());
                    routes.set(
                        std::iter::once(&launch)
                            .chain(&others)
                            .map(|l| (l.port, l.token.clone()))
                            .collect(),
                    );
                    let forwarded = Arc::new(Mutex::new(Vec::new()));
                    let counts = Arc::new(Counts::default());
                    let front = Front {
                        handler: handler.clone(),
                        routes: routes.clone(),
                        request_timeout: config.request_timeout,
                        iis: iis.clone(),
                        client: backend_client(),
                        forwarded: forwarded.clone(),
                        counts: counts.clone(),
                    };
                    let (front_addr, accept) = front.listen().await;
                    return Module {
                        handler,
                        config,
                        port: launch.port,
                        token: launch.token,
                        front: front_addr,
                        ready_after: launch.ready_after,
                        attempts: attempt,
                        logs,
                        log_file,
                        iis,
                        forwarded,
                        counts,
                        child: launch.child,
                        others,
                        routes,
                        accept,
                        folder: folder.clone(),
                    };
                }
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "HTTP Error 502.5 - ANCM Out-Of-Process Startup Failure: {failures:?}; the log: {:?}",
            logs.lock().expect("logs")
        );
    }

    /// `http://front{path}`, the path as the browser sends it.
    pub fn front_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.front)
    }

    /// A URL inside the application: `/api/events` is `/live/api/events` under `/live`.
    pub fn url(&self, path: &str) -> String {
        self.front_url(&format!("{}{path}", self.base()))
    }

    /// Straight to the backend, around the front (and without the token).
    pub fn backend_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}{path}", self.port, self.base())
    }

    /// `""` or `/live`.
    fn base(&self) -> &str {
        match &self.handler {
            Handler::AspNetCoreModule { appl_path } => appl_path.trim_end_matches('/'),
            Handler::HttpPlatformHandler => "",
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn forwarded(&self) -> Vec<Forwarded> {
        self.forwarded.lock().expect("forwarded").clone()
    }

    /// Requests IIS holds in flight right now, as `appConcurrentRequestLimit` counts them.
    pub fn in_flight(&self) -> usize {
        self.counts.in_flight.load(Ordering::SeqCst)
    }

    /// Requests IIS answered with its own 503.2, never forwarded to the backend.
    pub fn refused(&self) -> usize {
        self.counts.refused.load(Ordering::SeqCst)
    }

    /// Publishes through the front; the event's id.
    pub async fn publish(&self, topic: &str, text: &str) -> u64 {
        super::publish_with(super::client().post(self.url("/api/publish")), topic, text).await
    }

    /// Opens `/api/events...` through the front (at the application's path), parsed by a real
    /// SSE client parser. An error in the body (a cut stream) fails the test: streams must end
    /// cleanly.
    pub async fn stream(
        &self,
        path_and_query: &str,
        last_event_id: Option<&str>,
    ) -> impl Stream<Item = Event> + Unpin + Send {
        super::open_stream(super::client().get(self.url(path_and_query)), last_event_id).await
    }

    /// Waits (up to `PATIENCE`) for a log line containing every one of `parts`.
    pub async fn wait_for_log(&self, parts: &[&str]) -> String {
        super::wait_for_line(&self.logs, parts).await
    }

    /// Recycles the way the module does (ANCM.md, "Stopping the server"): new requests stop
    /// reaching this process; `POST {appl path}/iisintegration` with `MS-ASPNETCORE-EVENT:
    /// shutdown ` and the token on a new connection, expecting 202; otherwise Ctrl-Break
    /// (SIGTERM here); then up to `shutdownTimeLimit` for the exit, and `TerminateProcess`
    /// (SIGKILL) after that. Under HttpPlatformHandler there is no handshake to imitate: the
    /// process is ended.
    pub async fn stop(&mut self) -> Stopped {
        self.accept.abort();
        if self.handler == Handler::HttpPlatformHandler {
            let started = Instant::now();
            let _ = self.child.kill().await;
            return Stopped {
                shutdown_status: None,
                exited_after: started.elapsed(),
                signalled: false,
                killed: true,
                exit: self.child.try_wait().ok().flatten(),
            };
        }
        let (limit, path) = self.shutdown_contract();
        for mut other in std::mem::take(&mut self.others) {
            shut_down(
                limit,
                &path,
                &mut other.child,
                other.port,
                other.token.as_deref(),
            )
            .await;
        }
        let token = self.token.clone();
        shut_down(limit, &path, &mut self.child, self.port, token.as_deref()).await
    }

    /// `shutdownTimeLimit` and the path of the shutdown request.
    fn shutdown_contract(&self) -> (Duration, String) {
        (
            self.config.shutdown_time_limit,
            format!("{}/iisintegration", self.base()),
        )
    }

    /// The ports of every process requests go to.
    pub fn ports(&self) -> Vec<u16> {
        std::iter::once(self.port)
            .chain(self.others.iter().map(|l| l.port))
            .collect()
    }

    /// An overlapped recycle (ANCM.md: "During an overlapped recycle the old and the new
    /// process run side by side for a moment, each with its own port and token"): the new
    /// process is started and ready, new requests go to it, and only then is the old one
    /// stopped as [`Module::stop`] stops it. Open streams stay on the old process until it
    /// ends them. Returns how the old one stopped.
    pub async fn recycle_overlapped(&mut self) -> Stopped {
        assert!(self.others.is_empty(), "one process at a time here");
        let config = self.folder.web_config();
        let new = Launch::start(
            &self.folder,
            &config,
            &self.handler,
            &self.log_file,
            &self.logs,
        )
        .await;
        self.routes.set(vec![(new.port, new.token.clone())]);
        let mut old = std::mem::replace(&mut self.child, new.child);
        let old_port = std::mem::replace(&mut self.port, new.port);
        let old_token = std::mem::replace(&mut self.token, new.token);
        self.ready_after = new.ready_after;
        let (limit, path) = self.shutdown_contract();
        shut_down(limit, &path, &mut old, old_port, old_token.as_deref()).await
    }
}

/// The module's stop of one process (see [`Module::stop`]).
async fn shut_down(
    limit: Duration,
    path: &str,
    child: &mut Child,
    port: u16,
    token: Option<&str>,
) -> Stopped {
    let started = Instant::now();
    let shutdown_status = tokio::time::timeout(
        limit,
        shutdown_request(port, path, token.unwrap_or_default()),
    )
    .await
    .ok()
    .flatten();
    let mut signalled = false;
    if shutdown_status != Some(202) {
        signalled = true;
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    let remaining = limit.saturating_sub(started.elapsed());
    let (exit, killed) = match tokio::time::timeout(remaining, child.wait()).await {
        Ok(status) => (status.ok(), false),
        Err(_) => {
            let _ = child.kill().await;
            (child.try_wait().ok().flatten(), true)
        }
    };
    Stopped {
        shutdown_status,
        exited_after: started.elapsed(),
        signalled,
        killed,
        exit,
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        self.accept.abort();
        // `kill_on_drop` ends the process if the test did not stop it.
    }
}

/// `POST {path}` on a connection of its own, as the module sends it; the status, if any.
async fn shutdown_request(port: u16, path: &str, token: &str) -> Option<u16> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::post(path)
        .header("host", format!("127.0.0.1:{port}"))
        // ANCM.md: "`MS-ASPNETCORE-EVENT:shutdown ` (note the trailing space: trim it)".
        .header("ms-aspnetcore-event", "shutdown ")
        .header("ms-aspnetcore-token", token)
        .header("content-length", "0")
        .body(Empty::<Bytes>::new())
        .ok()?;
    let res = send.send_request(req).await.ok()?;
    Some(res.status().as_u16())
}

/// One start attempt that got as far as a listening process.
struct Launch {
    child: Child,
    port: u16,
    token: Option<String>,
    ready_after: Duration,
}

impl Launch {
    /// A process of several (or the new one of a recycle): both start attempts, or a panic.
    async fn start(
        folder: &Published,
        config: &WebConfig,
        handler: &Handler,
        log_file: &Option<PathBuf>,
        logs: &Arc<Mutex<Vec<String>>>,
    ) -> Launch {
        let mut failures = Vec::new();
        for _ in 1..=2 {
            match Launch::new(folder, config, handler, log_file.clone(), logs.clone()).await {
                Ok(launch) => return launch,
                Err(why) => failures.push(why),
            }
        }
        panic!("HTTP Error 502.5 - ANCM Out-Of-Process Startup Failure: {failures:?}");
    }

    async fn new(
        folder: &Published,
        config: &WebConfig,
        handler: &Handler,
        log_file: Option<PathBuf>,
        logs: Arc<Mutex<Vec<String>>>,
    ) -> Result<Launch, String> {
        // ANCM.md: "`ASPNETCORE_PORT` (random in 10000-48000 unless web.config fixes one)".
        let port = match config.env_var("ASPNETCORE_PORT") {
            Some(p) if matches!(handler, Handler::AspNetCoreModule { .. }) => {
                p.parse().map_err(|_| format!("ASPNETCORE_PORT='{p}'"))?
            }
            _ => random_free_port(),
        };
        let mut env: BTreeMap<String, String> = std::env::vars()
            // The test runner's environment is not w3wp's: nothing of ours leaks in.
            .filter(|(k, _)| {
                let k = k.to_ascii_uppercase();
                !(k.starts_with("ASPNETCORE_")
                    || k.starts_with("HTTP_PLATFORM_")
                    || k.starts_with("LEPTOS_")
                    || k.starts_with("EVENTS_")
                    || k == "RUST_LOG")
            })
            .collect();
        let token = match handler {
            Handler::AspNetCoreModule { appl_path } => {
                let token = guid();
                env.insert("ASPNETCORE_PORT".into(), port.to_string());
                env.insert("ASPNETCORE_TOKEN".into(), token.clone());
                env.insert("ASPNETCORE_APPL_PATH".into(), appl_path.clone());
                env.insert("ASPNETCORE_IIS_HTTPAUTH".into(), "anonymous;".into());
                Some(token)
            }
            Handler::HttpPlatformHandler => {
                env.insert("HTTP_PLATFORM_PORT".into(), port.to_string());
                None
            }
        };
        // ANCM.md: "web.config `<environmentVariables>` win over the inherited environment,
        // and `%VAR%` in them is expanded"; the application path is the module's ("a
        // web.config value is ignored").
        for (name, value) in &config.env {
            if name.eq_ignore_ascii_case("ASPNETCORE_APPL_PATH") {
                continue;
            }
            let value = expand(value, &env);
            env.retain(|k, _| !k.eq_ignore_ascii_case(name));
            env.insert(name.clone(), value);
        }

        let program = folder.path().join(linux_process_path(&config.process_path));
        let mut cmd = Command::new(&program);
        cmd.args(config.arguments.split_whitespace())
            // ANCM.md: "Working directory: the application folder."
            .current_dir(folder.path())
            .env_clear()
            .envs(&env)
            // Not the module's doing: `cargo xtask test` runs these tests with either writer.
            .envs(
                std::env::var("SSE_TEST_STREAM_WRITER")
                    .map(|w| ("EVENTS_STREAM_WRITER", w))
                    .ok(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = spawn_retrying(&mut cmd)
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let file = log_file.map(|path| {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            Arc::new(Mutex::new(f))
        });
        if let Some(out) = child.stdout.take() {
            collect_lines(out, logs.clone(), file.clone());
        }
        if let Some(err) = child.stderr.take() {
            collect_lines(err, logs.clone(), file);
        }

        // ANCM.md: "the module polls ... every 250 ms until `startupTimeLimit` ... for a
        // listener on the port ... It then connects to `127.0.0.1` only." A connect to the
        // IPv4 loopback stands in for reading the listener table.
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the process exited during startup: {status}"));
            }
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(Launch {
                    child,
                    port,
                    token,
                    ready_after: started.elapsed(),
                });
            }
            if started.elapsed() >= config.startup_time_limit {
                let _ = child.kill().await;
                return Err(format!(
                    "nothing listened on 127.0.0.1:{port} within startupTimeLimit ({:?})",
                    config.startup_time_limit
                ));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }
}

/// A copy of a large binary made while another test thread forks can make `exec` fail with
/// ETXTBSY for a moment (the forked child briefly holds the copy's write descriptor).
fn spawn_retrying(cmd: &mut Command) -> std::io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(26) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn collect_lines(
    from: impl AsyncRead + Unpin + Send + 'static,
    logs: Arc<Mutex<Vec<String>>>,
    file: Option<Arc<Mutex<std::fs::File>>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(from).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(f) = &file {
                let _ = writeln!(f.lock().expect("log file"), "{line}");
            }
            logs.lock().expect("logs").push(line);
        }
    });
}

/// `.\server.exe` → `server`: the Windows path of web.config, as the Linux build names it.
pub fn linux_process_path(process_path: &str) -> PathBuf {
    let p = process_path.trim().replace('\\', "/");
    let p = p.trim_start_matches("./");
    let p = p.strip_suffix(".exe").unwrap_or(p);
    PathBuf::from(p)
}

/// ANCM.md: "stdout log files ... are named `stdout_<UTC yyyyMMddHHmmss>_<w3wp pid>.log` in the
/// folder that `stdoutLogFile` names" (our own pid stands in for w3wp's).
fn stdout_log_path(folder: &Path, config: &WebConfig) -> Option<PathBuf> {
    if !config.stdout_log_enabled {
        return None;
    }
    let prefix = linux_process_path(&config.stdout_log_file);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = format!(
        "{}_{}_{}.log",
        prefix.file_name()?.to_string_lossy(),
        utc_stamp(secs),
        std::process::id()
    );
    Some(folder.join(prefix.parent()?).join(name))
}

/// `yyyyMMddHHmmss` in UTC (Howard Hinnant's civil-from-days).
pub fn utc_stamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Random bits from the standard library's randomly keyed hasher (no extra dependency).
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// ANCM.md: "`ASPNETCORE_TOKEN` (a lowercase GUID, one per process)".
pub fn guid() -> String {
    let (a, b) = (random_u64(), random_u64());
    // Version 4, RFC 4122 variant, like `Guid.NewGuid()`.
    let a = (a & !0xf000) | 0x4000;
    let b = (b & !(0xc << 60)) | (0x8 << 60);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// ANCM.md: "random in 10000-48000": a random port there that is free right now.
fn random_free_port() -> u16 {
    for _ in 0..1000 {
        let port = 10_000 + (random_u64() % 38_001) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 10000-48000");
}

// ---------------------------------------------------------------------------------------------
// The front: what IIS plus the module do to each request
// ---------------------------------------------------------------------------------------------

/// Backend connections are pooled HTTP/1.1 keep-alive (ANCM.md). `TCP_NODELAY` so that the
/// imitation itself adds no Nagle delay to what is measured through it.
fn backend_client() -> Client<HttpConnector, Incoming> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

#[derive(Clone)]
struct Front {
    handler: Handler,
    routes: Arc<Routes>,
    request_timeout: Duration,
    iis: Iis,
    client: Client<HttpConnector, Incoming>,
    forwarded: Arc<Mutex<Vec<Forwarded>>>,
    counts: Arc<Counts>,
}

/// What `appConcurrentRequestLimit` counts.
#[derive(Default)]
struct Counts {
    in_flight: AtomicUsize,
    refused: AtomicUsize,
}

/// One request in flight; given back when dropped, which is when its response body has ended
/// or been dropped (hyper drops it when the client goes), or when its client went before the
/// answer.
struct InFlight(Arc<Counts>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted until it ends.
struct Counted {
    body: FrontBody,
    _in_flight: InFlight,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Hop-by-hop headers: a proxy never forwards them.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Front {
    async fn listen(self) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the front");
        let addr = listener.local_addr().expect("front address");
        let front = Arc::new(self);
        let accept = tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let front = front.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let front = front.clone();
                        async move {
                            let Some(in_flight) = front.admit() else {
                                return Ok::<_, Infallible>(concurrent_request_limit_exceeded());
                            };
                            let res = front.forward(peer, req).await;
                            Ok(res.map(|body| {
                                Counted {
                                    body,
                                    _in_flight: in_flight,
                                }
                                .boxed_unsync()
                            }))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        (addr, accept)
    }

    /// `appConcurrentRequestLimit`: counts the request in, or `None` (and counts a refusal)
    /// when that many are in flight already.
    fn admit(&self) -> Option<InFlight> {
        let counts = &self.counts;
        let before = counts.in_flight.fetch_add(1, Ordering::SeqCst);
        let in_flight = InFlight(counts.clone());
        if before >= self.iis.app_concurrent_request_limit {
            drop(in_flight);
            counts.refused.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        Some(in_flight)
    }

    async fn forward(&self, peer: SocketAddr, req: Request<Incoming>) -> Response<FrontBody> {
        let (mut parts, body) = req.into_parts();
        let client_takes_gzip = accepts_gzip(&parts.headers);
        let head_only = parts.method == hyper::Method::HEAD;
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let (port, token) = self.routes.pick();
        // ANCM.md: "The backend sees the full path **with** the application prefix".
        parts.uri = format!("http://127.0.0.1:{port}{path}")
            .parse()
            .expect("backend uri");
        parts.version = hyper::Version::HTTP_11;
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        // ANCM.md: "Every incoming `MS-ASPNETCORE-*` header is removed, then
        // `MS-ASPNETCORE-TOKEN` is set". `Host` stays the client's.
        let ours: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("ms-aspnetcore-"))
            .cloned()
            .collect();
        for name in ours {
            headers.remove(name);
        }
        if let Some(token) = &token {
            headers.insert(
                "ms-aspnetcore-token",
                HeaderValue::from_str(token).expect("token"),
            );
        }
        // ANCM.md: "`X-Forwarded-For` is **appended**: existing value, `, `, then the client's
        // `address:port` (IPv6 as `[addr]:port`)", and `X-Forwarded-Proto` the same way.
        let xff = append_forwarded(headers, "x-forwarded-for", &peer.to_string());
        append_forwarded(headers, "x-forwarded-proto", "http");

        let backend = Request::from_parts(parts, body);
        // requestTimeout bounds each wait for the backend, the response head included.
        let result = tokio::time::timeout(self.request_timeout, self.client.request(backend)).await;
        let note = |status: Option<u16>| Forwarded {
            path: path.clone(),
            x_forwarded_for: xff.clone(),
            status,
            gzipped: false,
        };
        let res = match result {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => {
                self.forwarded.lock().expect("forwarded").push(note(None));
                return plain(StatusCode::BAD_GATEWAY, format!("502.3 Bad Gateway: {e}"));
            }
            Err(_) => {
                self.forwarded.lock().expect("forwarded").push(note(None));
                return plain(
                    StatusCode::BAD_GATEWAY,
                    "502.3 Bad Gateway: requestTimeout elapsed".into(),
                );
            }
        };
        let (mut parts, body) = res.into_parts();
        // ANCM.md: "From the response, `Transfer-Encoding`, `Date` and `Connection` are
        // dropped and the body is re-chunked by IIS" (hyper re-chunks and dates it here).
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove("date");
        // ANCM.md: "IIS compresses `text/*` unless [a `Content-Encoding`] is present".
        let gzip = self.iis.dynamic_compression_locked_on
            && client_takes_gzip
            && !head_only
            && !matches!(parts.status.as_u16(), 204 | 304)
            && !parts.headers.contains_key("content-encoding")
            && parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/"));
        if gzip {
            parts
                .headers
                .insert("content-encoding", HeaderValue::from_static("gzip"));
            parts.headers.remove("content-length");
            parts
                .headers
                .append("vary", HeaderValue::from_static("Accept-Encoding"));
        }
        self.forwarded.lock().expect("forwarded").push(Forwarded {
            gzipped: gzip,
            ..note(Some(parts.status.as_u16()))
        });
        let hold = match self.handler {
            Handler::AspNetCoreModule { .. } => None,
            Handler::HttpPlatformHandler => Some(HTTP_PLATFORM_BUFFER),
        };
        let relay = Relay {
            body,
            idle: self.request_timeout,
            gzip: gzip.then(Gzip::new),
            hold,
            held: BytesMut::new(),
            done: false,
        };
        Response::from_parts(parts, StreamBody::new(relay.into_stream()).boxed_unsync())
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<String> = headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .copied()
        .chain(listed.iter().map(String::as_str))
    {
        headers.remove(name);
    }
}

/// Appends `value` to a comma-separated header (several header lines count as one list);
/// the header's new value.
fn append_forwarded(headers: &mut HeaderMap, name: &'static str, value: &str) -> String {
    let mut list: Vec<String> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    list.push(value.to_string());
    let joined = list.join(", ");
    headers.insert(name, HeaderValue::from_str(&joined).expect("header value"));
    joined
}

/// Whether `Accept-Encoding` takes gzip (named, or `*`, with a weight above zero).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all("accept-encoding")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let item = item.to_ascii_lowercase();
            let mut fields = item.split(';');
            let coding = fields.next().unwrap_or("").trim();
            let weight = fields
                .filter_map(|f| f.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (coding == "gzip" || coding == "*") && weight > 0.0
        })
}

/// IIS's own answer past `appConcurrentRequestLimit`: 503, substatus 2, and no `Retry-After`
/// (ANCM.md: "IIS answer[s] 503.2 itself beyond that, before the server sees the request").
fn concurrent_request_limit_exceeded() -> Response<FrontBody> {
    let mut res = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "HTTP Error 503.2 - Service Unavailable\r\n\
         The serverRuntime@appConcurrentRequestLimit setting is being exceeded."
            .into(),
    );
    res.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn plain(status: StatusCode, text: String) -> Response<FrontBody> {
    let mut res = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *res.status_mut() = status;
    res
}

/// The response body on its way from the backend to the client.
struct Relay {
    body: Incoming,
    /// `requestTimeout`: the longest silence between two reads from the backend.
    idle: Duration,
    /// IIS's dynamic compression, before anything else holds the output.
    gzip: Option<Gzip>,
    /// `None`: every read is passed on at once (ANCM.md: "it reads up to 8 KB from the
    /// backend, writes it to IIS and flushes, every read"). `Some(n)`: HttpPlatformHandler,
    /// which holds output until `n` bytes have accumulated or the response ends.
    hold: Option<usize>,
    held: BytesMut,
    done: bool,
}

impl Relay {
    fn into_stream(self) -> impl Stream<Item = Result<Frame<Bytes>, BoxError>> + Send {
        futures::stream::unfold(self, |mut relay| async move {
            if relay.done {
                return None;
            }
            loop {
                let read = tokio::time::timeout(relay.idle, relay.body.frame()).await;
                match read {
                    Err(_) => {
                        // The stream is cut, as the module cuts it: an aborted response.
                        relay.done = true;
                        let e: BoxError = format!(
                            "requestTimeout: nothing from the backend for {:?}",
                            relay.idle
                        )
                        .into();
                        return Some((Err(e), relay));
                    }
                    Ok(None) => {
                        relay.done = true;
                        if let Some(gzip) = relay.gzip.take() {
                            relay.held.extend_from_slice(&gzip.finish());
                        }
                        if relay.held.is_empty() {
                            return None;
                        }
                        let rest = relay.held.split().freeze();
                        return Some((Ok(Frame::data(rest)), relay));
                    }
                    Ok(Some(Err(e))) => {
                        relay.done = true;
                        return Some((Err(e.into()), relay));
                    }
                    Ok(Some(Ok(frame))) => {
                        let Ok(mut data) = frame.into_data() else {
                            continue; // trailers: IIS does not pass them on
                        };
                        if let Some(gzip) = &mut relay.gzip {
                            data = gzip.push(&data);
                            if data.is_empty() {
                                continue; // held in the compressor
                            }
                        }
                        match relay.hold {
                            None => return Some((Ok(Frame::data(data)), relay)),
                            Some(limit) => {
                                relay.held.extend_from_slice(&data);
                                if relay.held.len() >= limit {
                                    let out = relay.held.split().freeze();
                                    return Some((Ok(Frame::data(out)), relay));
                                }
                            }
                        }
                    }
                }
            }
        })
    }
}

/// IIS's dynamic compression as the stream sees it: a gzip encoder that is never flushed. What
/// goes in comes out only when the compressor's own buffer fills, in bursts, or when the body
/// ends (ANCM.md: "with it on, events arrive 'one behind'", aspnet/AspNetCoreModule#16).
pub struct Gzip {
    encoder: flate2::write::GzEncoder<Vec<u8>>,
}

impl Gzip {
    pub fn new() -> Gzip {
        Gzip {
            encoder: flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()),
        }
    }

    /// Takes `data` in; what the compressor lets out now (often nothing).
    pub fn push(&mut self, data: &[u8]) -> Bytes {
        self.encoder
            .write_all(data)
            .expect("gzip into memory cannot fail");
        Bytes::from(std::mem::take(self.encoder.get_mut()))
    }

    /// The end of the body: everything still held, and gzip's trailer.
    pub fn finish(self) -> Bytes {
        Bytes::from(self.encoder.finish().expect("gzip into memory cannot fail"))
    }
}

impl Default for Gzip {
    fn default() -> Gzip {
        Gzip::new()
    }
}
