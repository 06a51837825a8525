//! Subscribers: one process holds up to [`crate::scenario::CONNS_PER_WORKER`] streams on one
//! thread (the generator must stay cheap: it shares the cores with the server under test).
//!
//! The parent starts it as `bench worker '<WorkerConfig json>'` and they talk in JSON lines:
//! the worker prints [`WorkerMsg::Ready`] once every stream has its first event (or failed),
//! the parent writes a [`Command`] line when publishing is over, the worker waits for the
//! events to arrive, prints [`WorkerMsg::Report`] and exits (closing every stream).

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;

use crate::accounting::SeqSet;
use crate::hist::{self, Buckets};
use crate::sse::{find_marker, has_data, FrameSplitter};
use crate::unix_ns;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// The server's instances: connection `i` goes to `targets[i % len]`.
    pub targets: Vec<SocketAddr>,
    pub path: String,
    pub conns: usize,
    /// The global index of this worker's first connection (source address and instance).
    pub first_index: usize,
    /// Source addresses 127.0.0.2 .. 127.0.0.(1 + n).
    pub source_addrs: u8,
    /// Connections in flight at once until they have their first event; 0: all at once (storm).
    pub connect_concurrency: usize,
    /// When to start connecting (Unix ns), so several workers start together.
    pub start_at_ns: u64,
    /// Give up on the streams that have no first event after this long.
    pub setup_timeout_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Publishing is over: `published` events (seq 0..published) should arrive everywhere.
    /// Wait for them until no stream makes progress for `quiet_ms`, at most `max_wait_ms`.
    Drain {
        published: u64,
        quiet_ms: u64,
        max_wait_ms: u64,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SetupFigures {
    pub established: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    /// How long connect() took: past a second means a dropped SYN retried (the listen
    /// backlog overflowed).
    #[serde(default)]
    pub connect: Buckets,
    /// From the start of connect() to the first body byte.
    pub first_byte: Buckets,
    /// From the start of connect() to the first event (a frame with data: the `ready`).
    pub first_event: Buckets,
    /// From the common start instant to the first event (the storm's "until all").
    pub first_event_since_start: Buckets,
    /// This worker's own CPU seconds so far (the generator's cost).
    #[serde(default)]
    pub cpu_s: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DeliveryFigures {
    /// Marked events received (duplicates included).
    pub deliveries: u64,
    pub duplicates: u64,
    pub lost: u64,
    /// Streams the server ended (or broke) before the report.
    pub closed: u64,
    pub delay: Buckets,
    pub last_delivery_ns: u64,
    /// This worker's own CPU seconds at the end.
    #[serde(default)]
    pub cpu_s: f64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum WorkerMsg {
    Ready(SetupFigures),
    Report(DeliveryFigures),
}

/// What all the streams of this process share (one thread: `Rc<RefCell>`, no locks).
struct State {
    started: Instant,
    pending_setup: usize,
    established: u64,
    failed: u64,
    errors: Vec<String>,
    connect: Histogram<u64>,
    first_byte: Histogram<u64>,
    first_event: Histogram<u64>,
    first_event_since_start: Histogram<u64>,
    seqs: Vec<SeqSet>,
    /// Has its first event and is still open.
    alive: Vec<bool>,
    /// Had its first event (open or not): these must receive every event.
    established_at: Vec<bool>,
    deliveries: u64,
    closed: u64,
    delay: Histogram<u64>,
    last_delivery_ns: u64,
}

impl State {
    fn fail(&mut self, error: String) {
        self.failed += 1;
        self.pending_setup -= 1;
        if self.errors.len() < 5 && !self.errors.contains(&error) {
            self.errors.push(error);
        }
    }
}

type Shared = Rc<RefCell<State>>;

pub fn main(config_json: &str) -> Result<(), String> {
    let config: WorkerConfig =
        serde_json::from_str(config_json).map_err(|e| format!("bad worker config: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(config))
}

async fn run(config: WorkerConfig) -> Result<(), String> {
    let state: Shared = Rc::new(RefCell::new(State {
        started: Instant::now(),
        pending_setup: config.conns,
        established: 0,
        failed: 0,
        errors: Vec::new(),
        connect: hist::new(),
        first_byte: hist::new(),
        first_event: hist::new(),
        first_event_since_start: hist::new(),
        seqs: vec![SeqSet::default(); config.conns],
        alive: vec![false; config.conns],
        established_at: vec![false; config.conns],
        deliveries: 0,
        closed: 0,
        delay: hist::new(),
        last_delivery_ns: 0,
    }));

    let wait = config.start_at_ns.saturating_sub(unix_ns());
    tokio::time::sleep(Duration::from_nanos(wait)).await;
    let start_ns = unix_ns();
    state.borrow_mut().started = Instant::now();
    let permits = std::sync::Arc::new(Semaphore::new(if config.connect_concurrency == 0 {
        Semaphore::MAX_PERMITS
    } else {
        config.connect_concurrency
    }));
    let config = Rc::new(config);
    for local in 0..config.conns {
        let (config, state, permits) = (config.clone(), state.clone(), permits.clone());
        tokio::task::spawn_local(async move {
            let permit = permits.acquire_owned().await.ok();
            subscribe(local, &config, &state, start_ns, permit).await;
        });
    }

    // Setup: until every stream has its first event or failed, or the timeout.
    let deadline = Instant::now() + Duration::from_millis(config.setup_timeout_ms);
    while state.borrow().pending_setup > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup = {
        let mut s = state.borrow_mut();
        let late = s.pending_setup;
        if late > 0 {
            s.failed += late as u64;
            s.errors
                .push(format!("{late} streams had no first event in time"));
            s.pending_setup = 0;
        }
        SetupFigures {
            established: s.established,
            failed: s.failed,
            errors: s.errors.clone(),
            connect: hist::to_buckets(&s.connect),
            first_byte: hist::to_buckets(&s.first_byte),
            first_event: hist::to_buckets(&s.first_event),
            first_event_since_start: hist::to_buckets(&s.first_event_since_start),
            cpu_s: own_cpu(),
        }
    };
    say(&WorkerMsg::Ready(setup));

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let line = match lines.next_line().await {
        Ok(Some(line)) => line,
        _ => return Ok(()), // the parent went away: nothing to report to
    };
    let Command::Drain {
        published,
        quiet_ms,
        max_wait_ms,
    } = serde_json::from_str(&line).map_err(|e| format!("bad command {line:?}: {e}"))?;
    drain(&state, published, quiet_ms, max_wait_ms).await;
    let s = state.borrow();
    // Every stream that had its first event before publishing began should have every event,
    // including the ones the server closed.
    let lost = s
        .seqs
        .iter()
        .zip(&s.established_at)
        .filter(|(_, established)| **established)
        .map(|(seqs, _)| seqs.lost(published))
        .sum();
    say(&WorkerMsg::Report(DeliveryFigures {
        deliveries: s.deliveries,
        duplicates: s.seqs.iter().map(SeqSet::duplicates).sum(),
        lost,
        closed: s.closed,
        delay: hist::to_buckets(&s.delay),
        last_delivery_ns: s.last_delivery_ns,
        cpu_s: own_cpu(),
    }));
    Ok(())
}

/// Waits until every open stream has all `published` events, or nothing arrives for
/// `quiet_ms`, or `max_wait_ms` has passed.
async fn drain(state: &Shared, published: u64, quiet_ms: u64, max_wait_ms: u64) {
    let started = Instant::now();
    let mut last = (u64::MAX, Instant::now());
    loop {
        let (distinct, wanted) = {
            let s = state.borrow();
            let open = s.alive.iter().filter(|a| **a).count() as u64;
            let distinct: u64 = s
                .seqs
                .iter()
                .zip(&s.alive)
                .filter(|(_, a)| **a)
                .map(|(seqs, _)| published - seqs.lost(published))
                .sum();
            (distinct, open * published)
        };
        if distinct >= wanted || started.elapsed() > Duration::from_millis(max_wait_ms) {
            return;
        }
        if distinct != last.0 {
            last = (distinct, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(quiet_ms) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn own_cpu() -> f64 {
    crate::procfs::cpu_seconds(std::process::id())
        .map(|c| c.total())
        .unwrap_or(0.0)
}

fn say(msg: &WorkerMsg) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, msg);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// The source address of global connection `index`.
pub fn source_addr(index: usize, source_addrs: u8) -> Ipv4Addr {
    let n = usize::from(source_addrs.clamp(1, 250));
    Ipv4Addr::new(127, 0, 0, 2 + (index % n) as u8)
}

async fn subscribe(
    local: usize,
    config: &WorkerConfig,
    state: &Shared,
    start_ns: u64,
    mut permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let index = config.first_index + local;
    let target = config.targets[index % config.targets.len()];
    let began = Instant::now();
    let mut body = match open(config, index, target, state).await {
        Ok(body) => body,
        Err(e) => {
            state.borrow_mut().fail(e);
            return;
        }
    };
    let mut splitter = FrameSplitter::default();
    let mut first_byte = true;
    let mut first_event = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let now = Instant::now();
        let now_ns = unix_ns();
        let mut s = state.borrow_mut();
        if first_byte {
            first_byte = false;
            hist::record_us(&mut s.first_byte, (now - began).as_micros() as u64);
        }
        splitter.push(data, |frame| {
            if first_event && has_data(frame) {
                first_event = false;
                s.established += 1;
                s.pending_setup -= 1;
                s.alive[local] = true;
                s.established_at[local] = true;
                hist::record_us(&mut s.first_event, (now - began).as_micros() as u64);
                hist::record_us(
                    &mut s.first_event_since_start,
                    now_ns.saturating_sub(start_ns) / 1000,
                );
                permit.take();
            }
            if let Some(marker) = find_marker(frame) {
                s.deliveries += 1;
                s.seqs[local].insert(marker.seq);
                hist::record_us(&mut s.delay, now_ns.saturating_sub(marker.sent_ns) / 1000);
                s.last_delivery_ns = now_ns;
            }
        });
    }
    let mut s = state.borrow_mut();
    if first_event {
        s.fail("the stream ended before its first event".into());
    } else {
        s.alive[local] = false;
        s.closed += 1;
    }
}

async fn open(
    config: &WorkerConfig,
    index: usize,
    target: SocketAddr,
    state: &Shared,
) -> Result<hyper::body::Incoming, String> {
    let began = Instant::now();
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    // A port of an earlier run's connection may still be in TIME_WAIT.
    socket
        .set_reuseaddr(true)
        .map_err(|e| format!("SO_REUSEADDR: {e}"))?;
    let source = SocketAddr::V4(SocketAddrV4::new(
        source_addr(index, config.source_addrs),
        0,
    ));
    socket
        .bind(source)
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = tokio::time::timeout(Duration::from_secs(30), socket.connect(target))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    hist::record_us(
        &mut state.borrow_mut().connect,
        began.elapsed().as_micros() as u64,
    );
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    let request = Request::get(config.path.as_str())
        .header(hyper::header::HOST, target.to_string())
        .header(hyper::header::ACCEPT, "text/event-stream")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    Ok(response.into_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_rotate_from_127_0_0_2() {
        assert_eq!(source_addr(0, 8), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_addr(7, 8), Ipv4Addr::new(127, 0, 0, 9));
        assert_eq!(source_addr(8, 8), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_addr(5, 0), Ipv4Addr::new(127, 0, 0, 2));
    }

    #[test]
    fn commands_and_messages_are_json_lines() {
        let cmd: Command =
            serde_json::from_str(r#"{"cmd":"drain","published":10,"quiet_ms":1,"max_wait_ms":2}"#)
                .expect("parse");
        assert!(matches!(cmd, Command::Drain { published: 10, .. }));
        let line = serde_json::to_string(&WorkerMsg::Ready(SetupFigures::default())).expect("json");
        assert!(line.starts_with(r#"{"msg":"ready""#), "{line}");
        assert!(!line.contains('\n'));
    }
}
