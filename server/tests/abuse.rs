//! Abuse, one test per class: each replays an attack that could cost the server far more than
//! it should against the real binary, over loopback TCP, and asserts the bound that the
//! setting named in its doc comment keeps. Figures are printed (`--nocapture`).
//!
//! Several tests bind their client sockets to other loopback addresses (all of 127.0.0.0/8
//! is loopback on Linux) so that the per-address caps see distinct clients.

mod common;

use common::{
    raw::{self, find, Head, RawStream, Reader},
    rss_kib, spawn, Options, Server, PATIENCE,
};
use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    time::timeout,
};

/// Each test's whole run, beyond which it fails rather than hangs.
const TEST_LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Helpers: raw connections (read with tests/common/raw.rs), the server's resources from /proc.
// ---------------------------------------------------------------------------------------------

fn target(server: &Server) -> SocketAddr {
    server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address")
}

/// A connection from `source` (any address of 127.0.0.0/8), optionally with a small receive
/// buffer (a client that stops reading then stops the server's writes early).
async fn connect_from(source: Ipv4Addr, to: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).expect("receive buffer");
    }
    socket
        .bind(SocketAddr::from((source, 0)))
        .unwrap_or_else(|e| panic!("bind to {source}: {e}"));
    socket
        .connect(to)
        .await
        .unwrap_or_else(|e| panic!("connect from {source}: {e}"))
}

async fn connect(to: SocketAddr) -> TcpStream {
    connect_from(Ipv4Addr::LOCALHOST, to, None).await
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Reads until the peer closes (end of file or an error): what a closed connection looks like
/// to a client, whichever way the server closed it.
async fn closed(rd: &mut (impl AsyncRead + Unpin)) {
    let mut scratch = vec![0u8; 16 * 1024];
    loop {
        match rd.read(&mut scratch).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Opens a stream on a raw connection and, when it is answered 200, reads up to its `ready`
/// event.
async fn raw_stream(tcp: TcpStream, path: &str, headers: &[(&str, &str)]) -> RawStream {
    let mut stream = RawStream::send(tcp, raw::get(path, headers).as_bytes()).await;
    if stream.head.status == 200 {
        stream.until_event("ready").await;
    }
    stream
}

/// `GET {path}` with `Connection: close` on a new connection from `source`: status and body.
async fn get_from(source: Ipv4Addr, to: SocketAddr, path: &str) -> io::Result<(u16, Vec<u8>)> {
    let mut tcp = connect_from(source, to, None).await;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut reader = Reader::new(tcp);
    let head = reader.head().await?;
    let body = reader.body(&head).await?;
    Ok((head.status, body))
}

/// The server's CPU time so far (user and system), from /proc/<pid>/stat (Linux).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // After the command name in parentheses: field 3 (state) onwards; utime and stime are
    // fields 14 and 15.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The peak of the server's resident memory over `span` (sampled; a measurement, not a wait
/// for anything).
async fn peak_rss(pid: u32, span: Duration) -> u64 {
    let until = Instant::now() + span;
    let mut peak = rss_kib(pid);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(rss_kib(pid));
    }
    peak
}

/// Log lines holding every one of `parts`.
fn log_lines(server: &Server, parts: &[&str]) -> Vec<String> {
    server
        .logs
        .lock()
        .expect("logs")
        .iter()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .cloned()
        .collect()
}

/// Waits until a "stream opened" line says `open=N`.
async fn wait_for_open(server: &Server, n: usize) {
    let end = format!(" open={n}");
    let deadline = Instant::now() + PATIENCE * 3;
    while !log_lines(server, &["stream opened"])
        .iter()
        .any(|l| l.trim_end().ends_with(&end))
    {
        assert!(
            Instant::now() < deadline,
            "never {n} streams open; the last lines: {:#?}",
            server
                .logs
                .lock()
                .expect("logs")
                .iter()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const HISTORY: usize = 200;
/// Under the default EVENTS_MAX_TEXT of 64 KiB, and nothing in it is escaped.
const LARGE_TEXT: usize = 60 * 1024;

/// A server whose history holds [`HISTORY`] events of [`LARGE_TEXT`] bytes (12 MiB).
async fn large_history() -> Server {
    let server = spawn(
        Options::new()
            .env("EVENTS_PUBLISH_RATE", "0")
            .env("EVENTS_HISTORY", &HISTORY.to_string()),
    );
    let text = "x".repeat(LARGE_TEXT);
    for _ in 0..HISTORY {
        server.publish("chat", &text).await;
    }
    server
}

// ---------------------------------------------------------------------------------------------
// 1. Replay memory.
// ---------------------------------------------------------------------------------------------

/// Replay memory, bounded by EVENTS_MAX_REPLAY (8 MiB) and by replays written from the
/// history's shared frames; EVENTS_MAX_TEXT is measured JSON-escaped, as on the wire.
///
/// Before: with a history of large events (a text of 64 Ki NUL characters was accepted, six
/// times that on the wire), ~40 streams resuming from an id no longer held (`Last-Event-ID:
/// 1`: a `reset` and the whole history) whose clients do not read aborted the process on a
/// failed allocation: each stream copied the whole history (40 × 12 MiB here, 480 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_streams_that_do_not_read_share_the_history() {
    timeout(TEST_LIMIT, async {
        const STREAMS: usize = 40;
        let server = large_history().await;
        let pid = server.child.id();
        let to = target(&server);
        let before = rss_kib(pid);
        let mut held = Vec::new();
        for _ in 0..STREAMS {
            let mut tcp = connect_from(Ipv4Addr::LOCALHOST, to, Some(4096)).await;
            tcp.write_all(b"GET /api/events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\r\n\r\n")
                .await
                .expect("stream request");
            held.push(tcp);
        }
        wait_for_open(&server, STREAMS).await;
        // The replays are being written now, and stop where the clients' buffers fill.
        let peak = peak_rss(pid, Duration::from_secs(1)).await;
        let growth_mib = peak.saturating_sub(before) as f64 / 1024.0;
        let history_mib = (HISTORY * LARGE_TEXT) as f64 / 1048576.0;
        let opened = log_lines(&server, &["stream opened", "reset=true"]);
        println!(
            "replay: {STREAMS} non-reading streams resuming from id 1 over a {history_mib:.1} MiB \
             history: resident memory {before} KiB -> peak {peak} KiB (+{growth_mib:.1} MiB; a \
             copy per stream would be {:.0} MiB); e.g. {:?}",
            STREAMS as f64 * history_mib,
            opened
                .last()
                .map(|l| l.split("stream opened").nth(1).unwrap_or(l))
        );
        assert_eq!(opened.len(), STREAMS, "every stream got a reset");
        // Each was given the newest events that fit in EVENTS_MAX_REPLAY (8 MiB): 136 of them.
        for line in &opened {
            let replayed: usize = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("replayed="))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no replayed= in {line}"));
            assert!(
                replayed >= 100 && replayed * (LARGE_TEXT + 64) <= 8 * 1024 * 1024,
                "{line}"
            );
        }
        // Less than half of a single stream's replay for all of them: none holds a copy.
        assert!(
            growth_mib < 4.0,
            "resident memory grew by {growth_mib:.1} MiB for {STREAMS} replays"
        );

        // Still serving.
        let page = server
            .request(reqwest::Method::GET, "/")
            .send()
            .await
            .expect("page");
        assert_eq!(
            page.status(),
            200,
            "the page, with {STREAMS} stalled replays"
        );
        server.publish("chat", "still publishing").await;

        // 64 Ki NUL characters: 64 KiB as UTF-8, six times that JSON-escaped on the wire.
        let res = server
            .request(reqwest::Method::POST, "/api/publish")
            .json(&serde_json::json!({"topic": "chat", "text": "\u{0}".repeat(65536)}))
            .send()
            .await
            .expect("publish");
        let status = res.status();
        let body: serde_json::Value = res.json().await.expect("JSON error");
        let error = body["error"].as_str().unwrap_or_default().to_string();
        println!("replay: 64 Ki NULs refused with {status}: {error}");
        assert_eq!(status, 400, "{body}");
        assert!(
            error.contains("65536"),
            "the error names the limit: {error}"
        );
        drop(held);
    })
    .await
    .expect("within the test's time limit");
}

// ---------------------------------------------------------------------------------------------
// 2. Page size.
// ---------------------------------------------------------------------------------------------

/// `GET /`: the body, and how long it took.
async fn page(server: &Server) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let res = server
        .request(reqwest::Method::GET, "/")
        .send()
        .await
        .expect("page");
    assert_eq!(res.status(), 200, "GET /");
    let body = res.bytes().await.expect("page body").to_vec();
    (body, started.elapsed())
}

/// The page's first render, bounded by EVENTS_PAGE_BYTES (1 MiB of events, counted as the
/// page carries them: each event's row and its entry in the page data, both escaped).
///
/// Before: the page rendered its whole list of rows whatever their size; with this history it
/// was a 71 MiB response. Then, with a budget counted as the stream encodes events, a history
/// of `<` (`&lt;` in the row, `\u003c` in the page data: ten bytes per byte) made a 4.7 MiB
/// page; the budget now counts the page's own escaping, so both stay under about 1 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_render_of_a_large_history_is_bounded() {
    timeout(TEST_LIMIT, async {
        const MIB: f64 = 1048576.0;
        let server = large_history().await;
        let (body, took) = page(&server).await;
        let text = "x".repeat(LARGE_TEXT);
        let shown = String::from_utf8_lossy(&body).matches(&text).count();
        println!(
            "page: {} bytes ({:.2} MiB) in {took:?} with a history of {HISTORY} events of \
             {LARGE_TEXT} B of 'x'; {shown} copies of a text in it",
            body.len(),
            body.len() as f64 / MIB
        );
        assert!(shown >= 1, "the page shows the newest events");
        assert!(
            body.len() < 3 * 1024 * 1024 / 2,
            "the page is {} bytes",
            body.len()
        );

        // The newest events (enough to fill the page's budget) made of the character the
        // page expands most.
        let angles = "<".repeat(LARGE_TEXT);
        for _ in 0..10 {
            server.publish("chat", &angles).await;
        }
        let (body, took) = page(&server).await;
        let page_text = String::from_utf8_lossy(&body);
        let rows = page_text.matches(&"&lt;".repeat(LARGE_TEXT)).count();
        let data = page_text.matches(&"\\u003c".repeat(LARGE_TEXT)).count();
        println!(
            "page: {} bytes ({:.2} MiB) in {took:?} with the newest events {LARGE_TEXT} B of '<': \
             {rows} rows of '&lt;' x {LARGE_TEXT}, {data} of '\\u003c' x {LARGE_TEXT} in the page data",
            body.len(),
            body.len() as f64 / MIB,
        );
        assert!(rows >= 1, "the page shows the newest events");
        assert!(
            body.len() < 3 * 1024 * 1024 / 2,
            "the page is {} bytes",
            body.len()
        );
    })
    .await
    .expect("within the test's time limit");
}

// ---------------------------------------------------------------------------------------------
// 3. Idle and slow connections.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Idle {
    /// Connects and sends nothing.
    Silent,
    /// A stream request's head without its blank line (the direct path reads it).
    UnfinishedGet,
    /// A publish's head without its blank line (hyper reads it).
    UnfinishedPost,
    /// A head a byte every 200 ms, never ending: a `GET` (the direct path).
    DripGet,
    /// The same with a `POST` (hyper).
    DripPost,
    /// The HTTP/2 preface and nothing after it.
    Http2Preface,
    /// One whole request answered (`GET /metrics`), then quiet on the kept-alive connection.
    KeptAlive,
}

const IDLE_KINDS: [Idle; 7] = [
    Idle::Silent,
    Idle::UnfinishedGet,
    Idle::UnfinishedPost,
    Idle::DripGet,
    Idle::DripPost,
    Idle::Http2Preface,
    Idle::KeptAlive,
];

/// How long after connecting the server closed it.
async fn held_for(kind: Idle, source: Ipv4Addr, to: SocketAddr) -> Duration {
    let tcp = connect_from(source, to, None).await;
    let connected = Instant::now();
    let (rd, mut wr) = tcp.into_split();
    let mut reader = Reader::new(rd);
    let mut drip: Box<dyn Iterator<Item = u8> + Send> = match kind {
        Idle::Silent => Box::new(std::iter::empty()),
        Idle::UnfinishedGet => {
            let _ = wr
                .write_all(b"GET /api/events HTTP/1.1\r\nHost: x\r\n")
                .await;
            Box::new(std::iter::empty())
        }
        Idle::UnfinishedPost => {
            let _ = wr
                .write_all(b"POST /api/publish HTTP/1.1\r\nHost: x\r\n")
                .await;
            Box::new(std::iter::empty())
        }
        Idle::DripGet => Box::new(
            b"GET /api/events HTTP/1.1\r\nHost: x\r\nX-Slow: "
                .iter()
                .copied()
                .chain(std::iter::repeat(b'a')),
        ),
        Idle::DripPost => Box::new(
            b"POST /api/publish HTTP/1.1\r\nHost: x\r\nX-Slow: "
                .iter()
                .copied()
                .chain(std::iter::repeat(b'a')),
        ),
        Idle::Http2Preface => {
            let _ = wr.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            Box::new(std::iter::empty())
        }
        Idle::KeptAlive => {
            wr.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("request");
            let head = reader.head().await.expect("the metrics answer");
            assert_eq!(head.status, 200, "GET /metrics");
            reader.body(&head).await.expect("the metrics body");
            Box::new(std::iter::empty())
        }
    };
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    let mut dripping = matches!(kind, Idle::DripGet | Idle::DripPost);
    loop {
        tokio::select! {
            read = reader.more() => match read {
                Ok(0) | Err(_) => break,
                // An answer (408) before the close.
                Ok(_) => {}
            },
            _ = ticks.tick(), if dripping => {
                let byte = drip.next().unwrap_or(b'a');
                // A failed write: the server closed (and reset) the connection.
                if wr.write_all(&[byte]).await.is_err() {
                    dripping = false;
                }
            }
        }
    }
    connected.elapsed()
}

/// Idle and slow connections, bounded by EVENTS_HEADER_TIMEOUT (a head must be complete in
/// time; default 10 s) and EVENTS_IDLE_TIMEOUT (a connection with no request in flight is
/// closed; default 60 s), here 1 s and 2 s.
///
/// Before: connections that sent nothing, dripped one byte at a time, sent an unfinished
/// head or only the HTTP/2 preface were held for over a minute (2,000 of them were held).
///
/// A bare HTTP/2 preface never answers the ping of hyper's graceful shutdown; the server cuts
/// an idle connection that has not closed a second after being told to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed() {
    timeout(TEST_LIMIT, async {
        const EACH: usize = 200;
        const BOUND: Duration = Duration::from_secs(15);
        let server = spawn(
            Options::new()
                .env("EVENTS_HEADER_TIMEOUT", "1s")
                .env("EVENTS_IDLE_TIMEOUT", "2s"),
        );
        let to = target(&server);
        let mut tasks = Vec::new();
        for (i, kind) in IDLE_KINDS.into_iter().enumerate() {
            // An address per kind: EVENTS_MAX_CONNECTIONS_PER_ADDR (1000) is not what is tested.
            let source = Ipv4Addr::new(127, 0, 1, 1 + i as u8);
            for _ in 0..EACH {
                tasks.push((kind, tokio::spawn(held_for(kind, source, to))));
            }
        }
        // A legitimate request meanwhile.
        let started = Instant::now();
        let (status, _) = timeout(PATIENCE, get_from(Ipv4Addr::LOCALHOST, to, "/metrics"))
            .await
            .expect("a fresh request is answered in time")
            .expect("a fresh request is answered");
        let fresh = started.elapsed();
        assert_eq!(status, 200, "a fresh GET /metrics");
        let mut longest = vec![Duration::ZERO; IDLE_KINDS.len()];
        let mut shortest = vec![Duration::MAX; IDLE_KINDS.len()];
        for (kind, task) in tasks {
            let held = timeout(BOUND + PATIENCE, task)
                .await
                .unwrap_or_else(|_| panic!("a {kind:?} connection still open after {BOUND:?}"))
                .expect("the connection's task");
            let i = kind as usize;
            longest[i] = longest[i].max(held);
            shortest[i] = shortest[i].min(held);
        }
        for (i, kind) in IDLE_KINDS.iter().enumerate() {
            println!(
                "idle: {EACH} {kind:?} connections closed after {:?} .. {:?}",
                shortest[i], longest[i]
            );
        }
        println!("idle: a fresh GET /metrics meanwhile answered in {fresh:?}");
        for (i, kind) in IDLE_KINDS.iter().enumerate() {
            assert!(
                longest[i] < BOUND,
                "a {kind:?} connection was held for {:?}",
                longest[i]
            );
        }
    })
    .await
    .expect("within the test's time limit");
}

/// Reads a stream past three idle timeouts; the pings received after that mark, and the
/// whole time it stayed open.
async fn outlives(stream: &mut RawStream, idle: Duration) -> (usize, Duration) {
    let opened = Instant::now();
    let mut pings = 0;
    // Each wait fails the test if the stream ends (or goes quiet) instead.
    while opened.elapsed() < idle * 3 {
        stream.until_event("ping").await;
        pings += 1;
    }
    // And it is still open after the mark.
    stream.until_event("ping").await;
    (pings + 1, opened.elapsed())
}

/// Idle timeout (EVENTS_IDLE_TIMEOUT, 2 s here) against open streams: a stream is a request in
/// flight for as long as it lasts, so the idle timeout never closes it, on the direct path or
/// on a connection hyper serves (a stream after another request on its connection).
///
/// Before the idle timeout existed, nothing closed idle connections (see above); this test
/// guards that the new timeout did not start closing streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_outlive_the_idle_timeout() {
    timeout(TEST_LIMIT, async {
        let idle = Duration::from_secs(2);
        let server = spawn(
            Options::new()
                .env("EVENTS_STREAM_WRITER", "direct")
                .env("EVENTS_HEADER_TIMEOUT", "1s")
                .env("EVENTS_IDLE_TIMEOUT", "2s")
                .env("EVENTS_HEARTBEAT", "500ms"),
        );
        let to = target(&server);
        let direct = async {
            let mut stream = raw_stream(connect(to).await, "/api/events", &[]).await;
            assert_eq!(stream.head.status, 200, "the direct stream");
            let (pings, open) = outlives(&mut stream, idle).await;
            // Held until the end: a stream closed here would be the client's doing.
            (pings, open, stream)
        };
        let through_hyper = async {
            let mut reader = Reader::new(connect(to).await);
            reader
                .rd
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("page request");
            let head = reader.head().await.expect("the page's answer");
            assert_eq!(head.status, 200, "GET /");
            let page = reader.body(&head).await.expect("the page");
            assert!(!page.is_empty(), "a page");
            reader
                .rd
                .write_all(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("stream request");
            let mut stream = RawStream::answer(reader)
                .await
                .expect("the stream's answer");
            assert_eq!(stream.head.status, 200, "the stream after the page");
            stream.until_event("ready").await;
            let (pings, open) = outlives(&mut stream, idle).await;
            (pings, open, stream)
        };
        let ((direct_pings, direct_open, _held), (hyper_pings, hyper_open, _held_too)) =
            tokio::join!(direct, through_hyper);
        println!(
            "idle: a direct stream open {direct_open:?} ({direct_pings} pings), a stream on a \
             connection hyper serves open {hyper_open:?} ({hyper_pings} pings), past an idle \
             timeout of {idle:?}"
        );
        server.wait_for_log(&["stream opened", "open=2"]).await;
        assert!(
            log_lines(&server, &["stream closed"]).is_empty(),
            "no stream was closed"
        );
    })
    .await
    .expect("within the test's time limit");
}

// ---------------------------------------------------------------------------------------------
// 4. Connection caps.
// ---------------------------------------------------------------------------------------------

/// Reads a refusal at the connection caps: `HTTP/1.1 503` and the close, without sending.
async fn refused(tcp: TcpStream) -> (Head, Duration) {
    let started = Instant::now();
    let mut reader = Reader::new(tcp);
    let head = reader
        .head()
        .await
        .expect("an answer to a refused connection");
    let _ = reader.body(&head).await;
    let _ = reader.end().await;
    (head, started.elapsed())
}

/// Connection caps: EVENTS_MAX_CONNECTIONS (in total) and EVENTS_MAX_CONNECTIONS_PER_ADDR
/// (default 1000), here 120 and 50; past either a new connection gets a 503 and is closed.
///
/// Before: nothing capped connections: one address could open them until the process ran
/// out of descriptors, and then accept failed for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_address_and_in_total() {
    timeout(TEST_LIMIT, async {
        const PER_ADDR: usize = 50;
        const TOTAL: usize = 120;
        let server = spawn(
            Options::new()
                .env("EVENTS_MAX_CONNECTIONS_PER_ADDR", &PER_ADDR.to_string())
                .env("EVENTS_MAX_CONNECTIONS", &TOTAL.to_string())
                // The held connections must not be closed as idle while the test runs.
                .env("EVENTS_HEADER_TIMEOUT", "120s")
                .env("EVENTS_IDLE_TIMEOUT", "120s"),
        );
        let to = target(&server);
        let a = Ipv4Addr::new(127, 0, 0, 2);
        let mut held = Vec::new();
        for _ in 0..PER_ADDR {
            held.push(connect_from(a, to, None).await);
        }
        // The next from the same address: a 503, then the close.
        let (head, took) = refused(connect_from(a, to, None).await).await;
        println!(
            "caps: connection {} from {a} refused with {} in {took:?}",
            PER_ADDR + 1,
            head.status
        );
        assert_eq!(head.status, 503, "past EVENTS_MAX_CONNECTIONS_PER_ADDR");
        assert_eq!(head.header("retry-after"), Some("10"));
        server
            .wait_for_log(&[
                "connection refused",
                "EVENTS_MAX_CONNECTIONS_PER_ADDR",
                "127.0.0.2:",
            ])
            .await;
        // The first ones were admitted (the accept loop takes connections in order: any
        // refusal of theirs would be logged before this one).
        assert_eq!(
            log_lines(&server, &["connection refused"]).len(),
            1,
            "only the one past the cap was refused"
        );

        // Another address is served: a kept-alive connection, held open from now on.
        let b = Ipv4Addr::new(127, 0, 0, 3);
        let (rd, mut wr) = connect_from(b, to, None).await.into_split();
        let mut kept = Reader::new(rd);
        wr.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let head = kept.head().await.expect("answer");
        assert_eq!(head.status, 200, "another address while {a} is at its cap");
        kept.body(&head).await.expect("metrics");

        // Up to the total from other addresses: 50 + 1 + 50 + 19.
        let c = Ipv4Addr::new(127, 0, 0, 4);
        let d = Ipv4Addr::new(127, 0, 0, 5);
        let mut from_c = Vec::new();
        for _ in 0..PER_ADDR {
            from_c.push(connect_from(c, to, None).await);
        }
        for _ in 0..TOTAL - 2 * PER_ADDR - 1 {
            held.push(connect_from(d, to, None).await);
        }
        let e = Ipv4Addr::new(127, 0, 0, 6);
        let (head, took) = refused(connect_from(e, to, None).await).await;
        println!(
            "caps: connection {} in total (from {e}) refused with {} in {took:?}",
            TOTAL + 1,
            head.status
        );
        assert_eq!(head.status, 503, "past EVENTS_MAX_CONNECTIONS");
        server
            .wait_for_log(&[
                "connection refused",
                "at the EVENTS_MAX_CONNECTIONS cap",
                "127.0.0.6:",
            ])
            .await;
        assert_eq!(
            log_lines(&server, &["connection refused"]).len(),
            2,
            "only the two past the caps were refused"
        );
        // A connection already open is still served at the cap.
        wr.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let head = kept.head().await.expect("answer");
        assert_eq!(head.status, 200, "an open connection at the total cap");
        let metrics = String::from_utf8(kept.body(&head).await.expect("metrics")).expect("text");
        assert_eq!(
            common::figure(&metrics, "sse_connections_refused_total"),
            Some(2.0),
            "{metrics}"
        );

        // Closing some gives their places back (once the server sees the close).
        drop(from_c.drain(..10));
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match get_from(e, to, "/metrics").await {
                Ok((200, _)) => break,
                other => {
                    let status = other
                        .map(|(s, _)| s.to_string())
                        .unwrap_or_else(|e| e.to_string());
                    assert!(
                        started.elapsed() < PATIENCE,
                        "no connection admitted after 10 were closed: {status}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        println!(
            "caps: after closing 10, a new connection from {e} was served in {:?} ({attempts} \
             attempt(s))",
            started.elapsed()
        );
        drop((held, from_c));
    })
    .await
    .expect("within the test's time limit");
}

// ---------------------------------------------------------------------------------------------
// 5. Streams per address.
// ---------------------------------------------------------------------------------------------

/// Opens `n` streams from `source`, the `i`th with `X-Forwarded-For: forwarded_for(i)` when
/// that is some; each held open, or with a refusal's whole body read.
async fn streams_from(
    to: SocketAddr,
    source: Ipv4Addr,
    n: usize,
    forwarded_for: impl Fn(usize) -> Option<String>,
) -> Vec<RawStream> {
    let mut out = Vec::new();
    for i in 0..n {
        let forwarded = forwarded_for(i);
        let headers: Vec<_> = forwarded
            .iter()
            .map(|f| ("X-Forwarded-For", f.as_str()))
            .collect();
        let tcp = connect_from(source, to, None).await;
        let mut stream = raw_stream(tcp, "/api/events", &headers).await;
        if stream.head.status != 200 {
            stream.body().await;
        }
        // Kept: closing the connection (even only its write half) closes the stream.
        out.push(stream);
    }
    out
}

/// Streams per address: EVENTS_MAX_STREAMS_PER_ADDR (default 1000), here 5; behind a proxy
/// in EVENTS_TRUSTED_PROXIES, the forwarded client's address is the one counted.
///
/// Before: one address could take every stream slot (EVENTS_MAX_STREAMS) from everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_capped_per_client_address() {
    timeout(TEST_LIMIT, async {
        const CAP: usize = 5;
        let options = || Options::new().env("EVENTS_MAX_STREAMS_PER_ADDR", &CAP.to_string());
        let server = spawn(options());
        let to = target(&server);
        let a = Ipv4Addr::new(127, 0, 0, 2);
        let opened = streams_from(to, a, CAP + 1, |_| None).await;
        for (i, stream) in opened[..CAP].iter().enumerate() {
            assert_eq!(stream.head.status, 200, "stream {} from {a}", i + 1);
        }
        let head = &opened[CAP].head;
        let body = String::from_utf8_lossy(opened[CAP].received());
        println!(
            "streams: stream {} from {a}: {} retry-after={:?} {body}",
            CAP + 1,
            head.status,
            head.header("retry-after")
        );
        assert_eq!(head.status, 503, "past EVENTS_MAX_STREAMS_PER_ADDR");
        let retry: u64 = head
            .header("retry-after")
            .expect("a Retry-After")
            .parse()
            .expect("seconds");
        assert!((1..=20).contains(&retry), "retry-after {retry}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|e| e.contains("this address")),
            "{body}"
        );
        let other = streams_from(to, Ipv4Addr::new(127, 0, 0, 3), 1, |_| None).await;
        assert_eq!(other[0].head.status, 200, "another address is not affected");

        // Behind a trusted proxy: each forwarded client is counted apart.
        let forwarded = |i: usize| Some(format!("203.0.113.{}:5000", i + 1));
        let behind = spawn(options().env("EVENTS_TRUSTED_PROXIES", "127.0.0.1"));
        let statuses: Vec<u16> = streams_from(target(&behind), Ipv4Addr::LOCALHOST, 10, forwarded)
            .await
            .iter()
            .map(|s| s.head.status)
            .collect();
        println!("streams: 10 forwarded clients behind a trusted proxy: {statuses:?}");
        assert_eq!(statuses, [200; 10], "each forwarded client has its own cap");
        // Without the setting the header is anyone's to forge: one address for all ten.
        let untrusted = spawn(options());
        let statuses: Vec<u16> =
            streams_from(target(&untrusted), Ipv4Addr::LOCALHOST, 10, forwarded)
                .await
                .iter()
                .map(|s| s.head.status)
                .collect();
        println!("streams: the same 10 without EVENTS_TRUSTED_PROXIES: {statuses:?}");
        assert_eq!(statuses[..CAP], [200; CAP]);
        assert_eq!(statuses[CAP..], [503; 10 - CAP]);
        drop(opened);
    })
    .await
    .expect("within the test's time limit");
}

// ---------------------------------------------------------------------------------------------
// 6. Topic filter.
// ---------------------------------------------------------------------------------------------

/// The topic filter, deduplicated when the stream opens (and a list naming every topic means
/// all), so a stream keeps one entry per distinct topic whatever its query repeats.
///
/// Before: `?topic=chat,chat,...` with 13,000 entries cost 760 KB per stream and 20 times the
/// CPU per event (the list was kept and scanned whole); with the 3,000 here, about 170 KB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_topic_costs_one_entry() {
    timeout(TEST_LIMIT, async {
        const WARM: usize = 10;
        const STREAMS: usize = 50;
        let server = spawn(Options::new());
        let pid = server.child.id();
        let to = target(&server);
        // 15,000 bytes: under the direct path's 16 KiB head.
        let path = format!("/api/events?topic={}", "chat,".repeat(3000));
        let mut streams = Vec::new();
        // The first few pay for what every process allocates once.
        for _ in 0..WARM {
            let stream = raw_stream(connect(to).await, &path, &[]).await;
            assert_eq!(
                stream.head.status, 200,
                "a stream with 3,000 repeats of one topic"
            );
            streams.push(stream);
        }
        let before = rss_kib(pid);
        for _ in 0..STREAMS {
            let stream = raw_stream(connect(to).await, &path, &[]).await;
            assert_eq!(
                stream.head.status, 200,
                "a stream with 3,000 repeats of one topic"
            );
            streams.push(stream);
        }
        let after = rss_kib(pid);
        let per_stream = after.saturating_sub(before) as f64 / STREAMS as f64;
        println!(
            "topics: {STREAMS} streams with ?topic= 3,000 × chat: resident memory {before} KiB \
             -> {after} KiB ({per_stream:.1} KiB per stream)"
        );
        assert!(per_stream < 32.0, "{per_stream:.1} KiB per stream");

        // Each receives a chat event exactly once, and no other topic.
        server.publish("chat", "once").await;
        server.publish("alert", "not asked for").await;
        server.publish("chat", "last").await;
        for stream in &mut streams {
            stream.until(|got| find(got, b"\"last\"").is_some()).await;
            let got = stream.received();
            assert_eq!(
                count(got, b"event: chat\n"),
                2,
                "{:?}",
                String::from_utf8_lossy(got)
            );
            assert_eq!(count(got, b"\"once\""), 1);
            assert_eq!(count(got, b"event: alert\n"), 0);
        }
    })
    .await
    .expect("within the test's time limit");
}

// ---------------------------------------------------------------------------------------------
// 7. Client bytes on an open stream.
// ---------------------------------------------------------------------------------------------

/// Opens a direct stream, sends `garbage` bytes on it and waits for the server's close.
async fn send_on_stream(to: SocketAddr, garbage: usize) -> Duration {
    let stream = raw_stream(connect(to).await, "/api/events", &[]).await;
    assert_eq!(stream.head.status, 200, "the stream");
    let (mut rd, mut wr) = stream.reader.rd.into_split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let junk = vec![b'z'; garbage];
        // Fails once the server has closed: the expected outcome.
        let _ = wr.write_all(&junk).await;
        wr
    });
    closed(&mut rd).await;
    let took = started.elapsed();
    writer.abort();
    took
}

/// Client bytes on an open stream: the direct writer closes the stream at the first byte a
/// client sends after its request (the answer says `connection: close`).
///
/// Before: the bytes were read and discarded 64 at a time for as long as they came; 300 MiB
/// cost 6.4 s of a core (the 400 MiB here would cost about 8.5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sent_on_an_open_stream_close_it() {
    timeout(TEST_LIMIT, async {
        const CONNECTIONS: usize = 50;
        const EACH: usize = 8 * 1024 * 1024;
        let server = spawn(Options::new().env("EVENTS_STREAM_WRITER", "direct"));
        let pid = server.child.id();
        let to = target(&server);
        let one = timeout(PATIENCE, send_on_stream(to, 1024 * 1024))
            .await
            .expect("the stream is closed after 1 MiB of garbage");
        server
            .wait_for_log(&["client sent bytes on its open stream"])
            .await;

        let cpu_before = cpu_time(pid);
        let started = Instant::now();
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|_| tokio::spawn(send_on_stream(to, EACH)))
            .collect();
        let mut longest = Duration::ZERO;
        for task in tasks {
            let took = timeout(PATIENCE * 2, task)
                .await
                .expect("every stream closed in time")
                .expect("task");
            longest = longest.max(took);
        }
        let cpu = cpu_time(pid).saturating_sub(cpu_before);
        println!(
            "bytes on a stream: closed {one:?} after 1 MiB of garbage; {CONNECTIONS} streams each \
             sending {} MiB: all closed in {:?} (the slowest {longest:?} after its garbage), \
             server CPU {cpu:?} (streams' opening included)",
            EACH >> 20,
            started.elapsed()
        );
        assert!(
            longest < Duration::from_secs(5),
            "a stream closed after {longest:?}"
        );
        assert!(
            cpu < Duration::from_secs(1),
            "the server spent {cpu:?} of CPU"
        );
    })
    .await
    .expect("within the test's time limit");
}

// ---------------------------------------------------------------------------------------------
// 8. Log injection.
// ---------------------------------------------------------------------------------------------

/// Log injection: every log record is written as one line, its control characters escaped
/// (`\r`, `\n`, `\xNN`), whatever a client put in its fields.
///
/// Before: CR/LF from a client (an unknown topic, an unknown JSON field's name) went raw into
/// the log, and started a forged line of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_text_cannot_forge_log_lines() {
    timeout(TEST_LIMIT, async {
        let server = spawn(Options::new());
        let to = target(&server);
        let (status, body) = get_from(
            Ipv4Addr::LOCALHOST,
            to,
            "/api/events?topic=x%0D%0AINFO%20forged",
        )
        .await
        .expect("an answer");
        println!(
            "log: ?topic=x%0D%0AINFO%20forged: {status} {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(status, 400, "an unknown topic");

        let res = server
            .request(reqwest::Method::POST, "/api/publish")
            .json(&serde_json::json!({"topic": "chat", "text": "a", "x\r\nINFO forged": 1}))
            .send()
            .await
            .expect("publish");
        let status = res.status();
        let text = res.text().await.expect("body");
        println!("log: a publish with the field \"x\\r\\nINFO forged\": {status} {text}");
        assert!(
            status.is_client_error(),
            "an unknown field is refused: {status}"
        );

        let topic = server
            .wait_for_log(&["unknown topic", "x\\r\\nINFO forged"])
            .await;
        let field = server
            .wait_for_log(&["unknown field", "x\\r\\nINFO forged"])
            .await;
        println!("log: {topic}\nlog: {field}");
        let logs = server.logs.lock().expect("logs").clone();
        for line in &logs {
            assert!(
                !line.trim_start().starts_with("INFO forged") && !line.contains('\r'),
                "a forged or split line: {line:?}"
            );
        }
    })
    .await
    .expect("within the test's time limit");
}

// ---------------------------------------------------------------------------------------------
// 9. A head ending in bare LF.
// ---------------------------------------------------------------------------------------------

/// A request head whose lines end in a bare LF, as `httparse` (and hyper) accept, on the
/// direct path: its end is found (`\n\n`) and the stream is answered at once, not at the
/// EVENTS_HEADER_TIMEOUT.
///
/// Before: `GET /api/events HTTP/1.1\nHost: x\n\n` waited the full 10 s on the direct path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_in_bare_lf_is_answered_at_once() {
    timeout(TEST_LIMIT, async {
        let server = spawn(Options::new().env("EVENTS_STREAM_WRITER", "direct"));
        let tcp = connect(target(&server)).await;
        let started = Instant::now();
        let (head, ready) = timeout(PATIENCE, async {
            let mut stream = RawStream::send(tcp, b"GET /api/events HTTP/1.1\nHost: x\n\n").await;
            let head_at = started.elapsed();
            stream.until_event("ready").await;
            (stream.head, head_at)
        })
        .await
        .expect("an answer before the header timeout");
        let took = started.elapsed();
        println!(
            "bare LF: answered {} in {ready:?}, `ready` in {took:?}",
            head.status
        );
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-type"), Some("text/event-stream"));
        assert!(took < Duration::from_secs(3), "answered after {took:?}");
    })
    .await
    .expect("within the test's time limit");
}

// ---------------------------------------------------------------------------------------------
// 10. Refusals close cleanly.
// ---------------------------------------------------------------------------------------------

/// Refusals on the direct path close cleanly: the answer is written whole, our side is shut
/// for writing, and what the client still sends is read and dropped for a moment before the
/// close (up to 64 KiB for 1 s), so the close is a FIN.
///
/// Before: a refusal closed the socket with the client's input unread, and the kernel sent a
/// reset instead, which can destroy the answer before the client reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_end_with_a_clean_close() {
    timeout(TEST_LIMIT, async {
        const TOKEN: &str = "0b4f6a5e-9d7c-4b3a-8e21-6f0d9c2a7b14";
        const ROUNDS: usize = 20;
        let server = spawn(
            Options::new()
                .aspnetcore(TOKEN, "/")
                .env("EVENTS_STREAM_WRITER", "direct"),
        );
        let to = target(&server);
        let mut request = b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        request.extend(std::iter::repeat_n(b'j', 64 * 1024));
        let mut longest = Duration::ZERO;
        for round in 0..ROUNDS {
            let (rd, mut wr) = connect(to).await.into_split();
            let started = Instant::now();
            let request = request.clone();
            // One write: the head and the junk the server never asked for.
            let writer = tokio::spawn(async move {
                wr.write_all(&request)
                    .await
                    .expect("the request and its junk");
                wr
            });
            let mut reader = Reader::new(rd);
            let head = timeout(PATIENCE, reader.head())
                .await
                .expect("an answer in time")
                .unwrap_or_else(|e| panic!("round {round}: no whole answer: {e}"));
            assert_eq!(head.status, 400, "round {round}: no token");
            let body = reader.body(&head).await.expect("the whole body");
            assert!(body.is_empty(), "round {round}: {body:?}");
            timeout(PATIENCE, reader.end())
                .await
                .expect("the close in time")
                .unwrap_or_else(|e| panic!("round {round}: not a clean end of file: {e}"));
            longest = longest.max(started.elapsed());
            drop(writer.await.expect("writer"));
        }
        println!(
            "refusals: {ROUNDS} token-less stream requests with 64 KiB of junk each: 400 and a \
             clean end of file every time (the slowest in {longest:?})"
        );
    })
    .await
    .expect("within the test's time limit");
}
