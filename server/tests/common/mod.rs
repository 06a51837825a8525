//! Starts the real server binary on a free loopback port and talks HTTP to it.

#![allow(dead_code)] // each test file uses a different part of this

pub mod ancm;
pub mod raw;

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Generous: these bound behaviour, they do not measure speed (the benchmark does).
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct Server {
    pub child: Child,
    pub base: String,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// The pairing token the server was started with, sent on every request of the helpers.
    pub token: Option<String>,
    _site: Option<TempDir>,
    _data: Option<TempDir>,
}

/// A folder removed when the test ends.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("sse-live-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("pkg")).expect("create temp site");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Options {
    pub env: Vec<(String, String)>,
}

impl Options {
    pub fn new() -> Options {
        // No tick by default: tests publish what they expect to see.
        Options {
            env: vec![("EVENTS_TICK".into(), "off".into())],
        }
    }

    /// Started the way the ASP.NET Core Module starts it: port, token and path base in the
    /// environment (`base` is `/` at the site root).
    pub fn aspnetcore(self, token: &str, base: &str) -> Options {
        self.env("ASPNETCORE_PORT", &free_port().to_string())
            .env("ASPNETCORE_TOKEN", token)
            .env("ASPNETCORE_APPL_PATH", base)
    }

    pub fn env(mut self, key: &str, value: &str) -> Options {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A port free right now (the module picks one the same way, then passes it on).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_server"));
    // Nothing from the environment that runs the tests may change what the server does.
    for key in [
        "ASPNETCORE_PORT",
        "ASPNETCORE_TOKEN",
        "ASPNETCORE_APPL_PATH",
        "HTTP_PLATFORM_PORT",
        "LEPTOS_SITE_ADDR",
        "LEPTOS_SITE_ROOT",
        "RUST_LOG",
    ] {
        cmd.env_remove(key);
    }
    // `cargo xtask test` runs the stream's tests a second time with hyper as the writer.
    cmd.env(
        "EVENTS_STREAM_WRITER",
        std::env::var("SSE_TEST_STREAM_WRITER").unwrap_or_else(|_| "direct".into()),
    );
    cmd
}

/// Starts the server with `opts` on 127.0.0.1 and a port the OS picks, and waits for its
/// "listening on" line. The site folder is `SITE_ROOT` when set (the built client), else an
/// empty one.
pub fn spawn(opts: Options) -> Server {
    let (site, site_path) = match std::env::var("SITE_ROOT") {
        Ok(p) if !p.is_empty() => (None, PathBuf::from(p)),
        _ => {
            let t = TempDir::new("site");
            let p = t.0.clone();
            (Some(t), p)
        }
    };
    // A data folder of its own, unless the test shares one between servers: the default,
    // beside the test build of the server, would be shared by every test running at once.
    let data =
        (!opts.env.iter().any(|(k, _)| k == "EVENTS_DATA_DIR")).then(|| TempDir::new("data"));
    let mut cmd = command();
    cmd.env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .env("LEPTOS_SITE_ROOT", &site_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(data) = &data {
        cmd.env("EVENTS_DATA_DIR", &data.0);
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start the server binary");
    let stdout = child.stdout.take().expect("stdout");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let logs = logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(pos) = line.find("listening on http://") {
                    let url: String = line[pos + "listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .trim_end_matches('/')
                        .to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url);
                    }
                }
                logs.lock().expect("logs").push(line);
            }
        });
    }
    let base = match rx.recv_timeout(PATIENCE) {
        Ok(url) => url,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "the server did not start; its log: {:?}",
                logs.lock().expect("logs")
            );
        }
    };
    let token = opts
        .env
        .iter()
        .find(|(k, _)| k == "ASPNETCORE_TOKEN")
        .map(|(_, v)| v.clone());
    Server {
        child,
        base,
        logs,
        token,
        _site: site,
        _data: data,
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with the pairing token, when there is one.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = client().request(method, self.url(path));
        match &self.token {
            Some(t) => req.header("MS-ASPNETCORE-TOKEN", t),
            None => req,
        }
    }

    /// `host:port`, for a raw connection.
    pub fn addr(&self) -> String {
        let origin = self.origin();
        origin[origin.find("://").map_or(0, |i| i + 3)..].to_string()
    }

    /// `scheme://host:port` without the path base.
    pub fn origin(&self) -> String {
        let after_scheme = self.base.find("://").map_or(0, |i| i + 3);
        match self.base[after_scheme..].find('/') {
            Some(i) => self.base[..after_scheme + i].to_string(),
            None => self.base.clone(),
        }
    }

    pub async fn publish(&self, topic: &str, text: &str) -> u64 {
        publish_with(
            self.request(reqwest::Method::POST, "/api/publish"),
            topic,
            text,
        )
        .await
    }

    /// Opens the stream (with optional headers) and returns it parsed by a real SSE client parser.
    pub async fn stream(
        &self,
        path_and_query: &str,
        last_event_id: Option<&str>,
    ) -> impl Stream<Item = Event> + Unpin + Send {
        open_stream(
            self.request(reqwest::Method::GET, path_and_query),
            last_event_id,
        )
        .await
    }

    /// The stream on a raw connection (with the token, when there is one), for what an SSE
    /// parser hides (`retry:`, padding, framing).
    pub async fn raw_stream(&self, path: &str) -> raw::RawStream {
        let path = self.url(path)[self.origin().len()..].to_string();
        let token: Vec<_> = self
            .token
            .iter()
            .map(|t| ("MS-ASPNETCORE-TOKEN", t.as_str()))
            .collect();
        let stream = raw::RawStream::open(&self.addr(), &path, &token).await;
        assert_eq!(stream.head.status, 200, "stream");
        stream
    }

    /// The text of `GET /metrics`.
    pub async fn scrape(&self) -> String {
        let res = self
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .expect("metrics request");
        assert_eq!(res.status(), 200, "GET /metrics");
        res.text().await.expect("metrics text")
    }

    /// One figure of `GET /metrics`, e.g. `sse_open_streams` or
    /// `sse_resumes_total{outcome="gap"}`.
    pub async fn figure(&self, key: &str) -> f64 {
        let text = self.scrape().await;
        figure(&text, key).unwrap_or_else(|| panic!("no {key} in /metrics:\n{text}"))
    }

    /// Stops the server as IIS does when it recycles it (SIGTERM: the module's shutdown
    /// request and a console close end the same way), and waits for it.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `figure(key)` satisfies `ok`; returns the value.
    pub async fn wait_for_figure(&self, key: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let start = Instant::now();
        loop {
            let v = self.figure(key).await;
            if ok(v) {
                return v;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{key} stayed at {v}; /metrics:\n{}",
                self.scrape().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a log line contains every one of `parts` (async: the test's own connections
    /// must keep running meanwhile).
    pub async fn wait_for_log(&self, parts: &[&str]) -> String {
        wait_for_line(&self.logs, parts).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST /api/publish` with the given request (URL and headers set); the new event's id.
pub async fn publish_with(req: reqwest::RequestBuilder, topic: &str, text: &str) -> u64 {
    let res = req
        .json(&serde_json::json!({ "topic": topic, "text": text }))
        .send()
        .await
        .expect("publish request");
    assert_eq!(res.status(), 201, "publish {topic}");
    let body: serde_json::Value = res.json().await.expect("publish answer");
    body["id"].as_u64().expect("id in the answer")
}

/// Sends a stream request (URL and headers set) and parses the answer with a real SSE client
/// parser. A broken body fails the test: streams must end cleanly.
pub async fn open_stream(
    mut req: reqwest::RequestBuilder,
    last_event_id: Option<&str>,
) -> std::pin::Pin<Box<dyn Stream<Item = Event> + Send>> {
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let res = req.send().await.expect("stream request");
    assert_eq!(res.status(), 200, "stream");
    Box::pin(res.bytes_stream().eventsource().map(|e| match e {
        Ok(event) => event,
        Err(e) => panic!("the stream broke instead of ending: {e}"),
    }))
}

/// Waits until a line of `logs` contains every one of `parts`, within [`PATIENCE`].
pub async fn wait_for_line(logs: &Mutex<Vec<String>>, parts: &[&str]) -> String {
    let start = Instant::now();
    loop {
        if let Some(line) = logs
            .lock()
            .expect("logs")
            .iter()
            .find(|l| parts.iter().all(|p| l.contains(p)))
        {
            return line.clone();
        }
        if start.elapsed() > PATIENCE {
            let logs = logs.lock().expect("logs");
            let tail: Vec<&String> = logs.iter().rev().take(20).rev().collect();
            panic!("no log line with {parts:?}; the last lines: {tail:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the sample named exactly `key` (name and labels) in a Prometheus text page.
pub fn figure(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Resident memory of a process in KiB, from /proc (Linux).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The text of `GET url` (the page, as a first visit gets it).
pub async fn page_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("page text")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// The next event that is not `ready`, within [`PATIENCE`].
pub async fn next_event(stream: &mut (impl Stream<Item = Event> + Unpin)) -> Event {
    loop {
        let ev = next_any(stream).await;
        if ev.event != "ready" {
            return ev;
        }
    }
}

/// The next event of any kind, within [`PATIENCE`].
pub async fn next_any(stream: &mut (impl Stream<Item = Event> + Unpin)) -> Event {
    tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("an event within the time limit")
        .expect("the stream is still open")
}

pub fn text_of(event: &Event) -> String {
    let v: serde_json::Value = serde_json::from_str(&event.data).expect("JSON data");
    v["text"].as_str().expect("text").to_string()
}
