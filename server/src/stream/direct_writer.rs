//! The stream's writer for plain HTTP/1 connections: most streams, and all of the cost that
//! grows with the number of viewers.
//!
//! Why this is hand-written: carried through hyper, every open stream keeps hyper's connection
//! state, its read and write buffers and axum's body machinery (about 10 KiB per idle stream
//! measured here), and every delivery goes through the body stream, hyper's chunked encoder
//! and a flush. Here the socket is kept bare: this file writes the answer's head, the opening
//! and the replay, then hands the stream to a shard (`shard.rs`), which writes the shared,
//! pre-encoded frames itself, one write per delivery, at about 1.6 KB per open stream
//! (BENCHMARKS.md has the figures). No crate offers "answer this one request, then keep the
//! socket"; hyper's upgrade mechanism needs a 101 response, which an `EventSource` does not
//! accept.
//!
//! What is *not* hand-written: the request still goes through the whole axum router (the
//! module's token check, the path base, CORS, the topic filter, the resume position, the
//! stream cap, every header of the answer), as [`super::events`]. Only its 200 answer's body
//! is written here (and any other answer, whole, with its length). So the stream's contract
//! lives in one place, and this file only writes bytes.

use super::{
    plan::{Handoff, Plan},
    shard::{Joining, Shards},
};
use crate::{
    connection::{stalled_client, Linger},
    hub::Frame,
    metrics::Ended,
    wire,
};
use axum::{
    body::Body,
    http::{header, Response, StatusCode},
};
use bytes::{Bytes, BytesMut};
use std::{
    future::poll_fn,
    io::{self, IoSlice},
    sync::Arc,
    time::Duration,
};
use tokio::{
    net::TcpStream,
    sync::{broadcast::error::RecvError, broadcast::error::TryRecvError},
    time::MissedTickBehavior,
};
use tokio_util::task::TaskTracker;

/// Events taken from the hub per write when a subscriber is behind (one `writev`).
pub(super) const MAX_BATCH: usize = 32;
/// The longest the last chunk may wait for room in the socket's buffer.
pub(super) const FINISH_LIMIT: Duration = Duration::from_secs(1);
/// An error answer's body is read whole before it is written; none is near this.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// Writes the router's answer to a stream request on `tcp`: the stream itself, opened in a task
/// of its own and then written by one of the `shards`, holding `slot` for as long as it lasts,
/// or any other answer (a refusal) whole.
pub async fn serve<S: Send + 'static>(
    tcp: TcpStream,
    mut response: Response<Body>,
    chunked: bool,
    write_timeout: Duration,
    connections: &TaskTracker,
    shards: &Arc<Shards>,
    slot: S,
) {
    let plan = response
        .extensions_mut()
        .remove::<Handoff>()
        .filter(|_| response.status() == StatusCode::OK)
        .and_then(|h| h.take());
    let out = Out {
        tcp: Arc::new(tcp),
        write_timeout,
        chunked,
    };
    match plan {
        Some(plan) => {
            let framing = if chunked {
                "transfer-encoding: chunked\r\n"
            } else {
                ""
            };
            let head = response_head(&response, chunked, framing);
            drop(response);
            // A task of its own: the caller's state (the request, the router's answer)
            // would otherwise stay allocated for as long as the stream lasts.
            connections.spawn(stream(out, head, plan, slot, shards.clone()));
        }
        None => Box::pin(out.answer(response)).await,
    }
}

/// The answer's status line and headers, as hyper would write them, with `framing` (the
/// body's length or encoding header, or nothing for a body that ends with the connection).
fn response_head(response: &Response<Body>, http11: bool, framing: &str) -> Bytes {
    let mut head = BytesMut::with_capacity(256);
    let status = response.status();
    head.extend_from_slice(
        format!(
            "HTTP/1.{} {} {}\r\n",
            u8::from(http11),
            status.as_str(),
            status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    for (name, value) in response.headers() {
        if [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::CONNECTION,
        ]
        .contains(name)
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !response.headers().contains_key(header::DATE) {
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(framing.as_bytes());
    // The stream is this connection's only answer: a client must not queue a request behind it.
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head.freeze()
}

/// The socket, written without buffering: each delivery is one `writev` of the shared frame.
/// Shared with the stream's watcher while a shard writes it (`shard.rs`).
pub(super) struct Out {
    pub(super) tcp: Arc<TcpStream>,
    pub(super) write_timeout: Duration,
    /// HTTP/1.1: each write is one chunk. HTTP/1.0: the body ends when the connection does.
    pub(super) chunked: bool,
}

/// `frames` as one chunk (or, unchunked, as they are), in one buffer.
pub(super) fn framed(frames: &[Arc<Frame>], chunked: bool) -> Bytes {
    let len: usize = frames.iter().map(|f| f.bytes.len()).sum();
    let mut out = BytesMut::with_capacity(len + 24);
    let mut size = [0u8; 20];
    let (open, close) = framing(chunked, len, &mut size);
    out.extend_from_slice(open);
    for frame in frames {
        out.extend_from_slice(&frame.bytes);
    }
    out.extend_from_slice(close);
    out.freeze()
}

/// What goes before and after a body of `len` bytes: a chunk's size line and its CRLF, or
/// nothing (unchunked, or an empty body, which as a chunk would end the stream).
fn framing(chunked: bool, len: usize, size: &mut [u8; 20]) -> (&[u8], &'static [u8]) {
    if chunked && len > 0 {
        (chunk_size(len, size), b"\r\n")
    } else {
        (&[], &[])
    }
}

/// Most slices handed to one `writev` (well under every system's `IOV_MAX`).
const MAX_SLICES: usize = MAX_BATCH + 4;

impl Out {
    /// Writes `raw` as it is, then `body` as one chunk: one `writev` when the socket takes it
    /// all, which is the common case. Otherwise the rest is written as room appears, from the
    /// same shared bytes (`Bytes` clones: reference counts, never a copy of a frame), each
    /// wait bounded by the write deadline.
    async fn send(&self, raw: &Bytes, body: &[&Bytes]) -> io::Result<()> {
        let rest = self.write_now(raw, body)?;
        self.send_rest(rest).await
    }

    /// One buffer, written as far as the socket takes it now (0 when it is full). Straight to
    /// the socket, not through tokio's `try_write`: that checks the socket's readiness first,
    /// one cache miss per socket (5% of a 10,000-stream fan-out's time, measured with perf).
    /// Skipping it leaves tokio's readiness unchanged when the socket is full; the shard then
    /// writes the rest with `try_write_from`, which clears it, before it waits.
    pub(super) fn send_now(&self, bytes: &[u8]) -> io::Result<usize> {
        loop {
            match socket2::SockRef::from(&*self.tcp).send(bytes) {
                Ok(0) if !bytes.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
                Ok(sent) => return Ok(sent),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// What [`Out::send`] writes at once; what is left of it, when the socket did not take it
    /// all, as owned pieces and how far into them it got.
    pub(super) fn write_now(
        &self,
        raw: &Bytes,
        body: &[&Bytes],
    ) -> io::Result<Option<(Vec<Bytes>, usize)>> {
        let len: usize = body.iter().map(|b| b.len()).sum();
        let mut size = [0u8; 20];
        let (open, close) = framing(self.chunked, len, &mut size);
        // In a block of its own: the slices are not kept in the stream's state between
        // deliveries.
        let rest = {
            let mut parts: [&[u8]; MAX_SLICES] = [&[]; MAX_SLICES];
            let mut n = 0;
            for part in [&raw[..], open]
                .into_iter()
                .chain(body.iter().map(|b| &b[..]))
                .chain([close])
            {
                if n < MAX_SLICES && !part.is_empty() {
                    parts[n] = part;
                    n += 1;
                }
            }
            let total: usize = parts[..n].iter().map(|p| p.len()).sum();
            let written = self.try_write_from(&parts[..n], 0)?;
            (written < total).then_some(written)
        };
        Ok(rest.map(|written| (self.pieces(raw, body), written)))
    }

    /// `raw` and `body` as one chunk, as owned pieces (`Bytes` clones of the shared frames),
    /// for a write that has to wait.
    pub(super) fn pieces(&self, raw: &Bytes, body: &[&Bytes]) -> Vec<Bytes> {
        let len: usize = body.iter().map(|b| b.len()).sum();
        let mut size = [0u8; 20];
        let (open, close) = framing(self.chunked, len, &mut size);
        [raw.clone(), Bytes::copy_from_slice(open)]
            .into_iter()
            .chain(body.iter().map(|b| (*b).clone()))
            .chain([Bytes::from_static(close)])
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// Finishes what [`Out::write_now`] left, if anything. Boxed: the wait and its timer are
    /// the rare case, and would otherwise take room in every stream's state.
    async fn send_rest(&self, rest: Option<(Vec<Bytes>, usize)>) -> io::Result<()> {
        match rest {
            None => Ok(()),
            Some((pieces, written)) => Box::pin(self.wait_and_write(pieces, written)).await,
        }
    }

    /// Frames (and the padding, if any) as one chunk.
    async fn send_frames(&self, frames: &[Arc<Frame>], pad: Option<&Bytes>) -> io::Result<()> {
        // In a block: the slices do not wait in the stream's state when the socket is full.
        let rest = {
            let mut body: [&Bytes; MAX_BATCH + 1] = [&EMPTY; MAX_BATCH + 1];
            let mut n = 0;
            for bytes in frames.iter().map(|f| &f.bytes).chain(pad) {
                if n < body.len() {
                    body[n] = bytes;
                    n += 1;
                }
            }
            self.write_now(&EMPTY, &body[..n])?
        };
        self.send_rest(rest).await
    }

    /// The socket's buffer was full: waits for room, at most the write deadline each time.
    pub(super) async fn wait_and_write(
        &self,
        pieces: Vec<Bytes>,
        mut done: usize,
    ) -> io::Result<()> {
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        let parts: Vec<&[u8]> = pieces.iter().map(|p| &p[..]).collect();
        while done < total {
            match tokio::time::timeout(self.write_timeout, self.tcp.writable()).await {
                Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                Ok(ready) => ready?,
            }
            done = self.try_write_from(&parts, done)?;
        }
        Ok(())
    }

    /// Writes what the socket takes now of `parts`, after the first `done` bytes; how far it
    /// got (all of it, or as far as the socket's buffer allowed).
    pub(super) fn try_write_from(&self, parts: &[&[u8]], mut done: usize) -> io::Result<usize> {
        loop {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut n = 0;
            let mut skip = done;
            for part in parts {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                if n == MAX_SLICES {
                    break;
                }
                slices[n] = IoSlice::new(&part[skip..]);
                skip = 0;
                n += 1;
            }
            if n == 0 {
                return Ok(done);
            }
            match self.tcp.try_write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => done += written,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(done),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Any answer but the stream (the token check's 400, the cap's 503, a bad topic's 400):
    /// written whole with its length, then the connection is closed cleanly.
    async fn answer(self, response: Response<Body>) {
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        let response = Response::from_parts(parts, Body::empty());
        let length = format!("content-length: {}\r\n", body.len());
        let head = response_head(&response, self.chunked, &length);
        let out = Out {
            chunked: false,
            ..self
        };
        if out.send(&head, &[&body]).await.is_ok() {
            out.close().await;
        }
    }

    /// Ends the body (the last chunk), waiting at most [`FINISH_LIMIT`] for room: a client
    /// still taking its backlog gets a clean end, one that stopped reading does not hold the
    /// task. Then closes.
    pub(super) async fn finish(self, farewell: Option<&Bytes>) {
        if let Some(farewell) = farewell {
            let sent = tokio::time::timeout(FINISH_LIMIT, self.send(&EMPTY, &[farewell])).await;
            if !matches!(sent, Ok(Ok(()))) {
                return;
            }
        }
        if self.chunked {
            let last = Bytes::from_static(b"0\r\n\r\n");
            let sent = tokio::time::timeout(FINISH_LIMIT, self.send(&last, &[])).await;
            if !matches!(sent, Ok(Ok(()))) {
                return;
            }
        }
        self.close().await;
    }

    /// A clean close: our side is shut for writing, then the close lingers (`Linger` says
    /// why).
    /// (A shard's stream is closed once its watcher let go of the socket.)
    async fn close(self) {
        use tokio::io::AsyncWriteExt;
        let Ok(mut tcp) = Arc::try_unwrap(self.tcp) else {
            return;
        };
        if tcp.shutdown().await.is_err() {
            return;
        }
        let mut linger = Linger::new();
        poll_fn(|cx| linger.poll_drain(std::pin::Pin::new(&mut tcp), cx)).await;
    }
}

pub(super) static EMPTY: Bytes = Bytes::from_static(b"");
pub(super) static PING: Bytes = Bytes::from_static(wire::PING);
pub(super) static EXPIRED: Bytes = Bytes::from_static(wire::EXPIRED);

/// `1a\r\n` for 26 bytes.
fn chunk_size(len: usize, buf: &mut [u8; 20]) -> &[u8] {
    use std::io::Write;
    let mut cursor = io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{len:x}\r\n");
    let end = cursor.position() as usize;
    &buf[..end]
}

/// The response head, the opening, the replay and `ready`, in as few writes as it takes: with
/// nothing to replay, one.
async fn open(
    out: &Out,
    head: &Bytes,
    opening: Bytes,
    replay: Vec<Arc<Frame>>,
    ready: Bytes,
) -> io::Result<()> {
    let pieces: Vec<&Bytes> = std::iter::once(&opening)
        .chain(replay.iter().map(|f| &f.bytes))
        .chain([&ready])
        .collect();
    let mut raw = head;
    for group in pieces.chunks(MAX_BATCH + 1) {
        out.send(raw, group).await?;
        raw = &EMPTY;
    }
    Ok(())
}

/// Opens the stream, then hands it to a shard (`shard.rs`), which writes it from then on;
/// `slot` is held until it ends.
///
/// Not an `async fn`: one keeps its arguments in its state and, beside them, the locals it
/// moves them into (rust-lang/rust#62958), and this state is what every opening stream costs.
/// The block below uses what it captured in place, and the spawn takes this future itself,
/// not one that wraps it.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would keep its arguments twice (the doc comment above)"
)]
fn stream<S: Send + 'static>(
    out: Out,
    head: Bytes,
    mut plan: Plan,
    slot: S,
    shards: Arc<Shards>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        plan.written_by("direct");
        // Boxed, and freed once written: the opening's state is needed once.
        let opened = Box::pin(open(
            &out,
            &head,
            std::mem::take(&mut plan.opening),
            std::mem::take(&mut plan.replay),
            std::mem::take(&mut plan.ready),
        ))
        .await;
        drop(head);
        if let Err(e) = opened {
            if e.kind() == io::ErrorKind::TimedOut {
                stalled_client(&plan.guard.client());
            }
            tracing::debug!(client = %plan.guard.client(), error = %e, "stream closed before its opening was written");
            return;
        }
        let joining = Box::new(Joining {
            out,
            plan,
            slot: Box::new(slot),
        });
        if let Err(joining) = shards.join(joining) {
            let Joining { out, plan, slot } = *joining;
            Box::pin(alone(out, plan, slot)).await;
        }
    }
}

/// Writes an opened stream in a task of its own until the client goes, the server stops or the
/// subscriber falls behind; `slot` is held until then. For the streams no shard takes (the
/// server is stopping, or the stream's feed is newer than its shard's after a cut).
pub(super) async fn alone(out: Out, mut plan: Plan, slot: Box<dyn Send>) {
    {
        let tcp = &out.tcp;
        let shutdown = plan.guard.shutdown().clone();
        // Made once and polled in every round (a new one per round would take the token's lock
        // twice per delivery).
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        // Ticks twice per heartbeat: a stream that wrote nothing for a whole tick gets a ping, so
        // the gap between writes never passes the heartbeat the `ready` event announced, and a
        // busy stream does not re-arm a timer on each delivery.
        let half = (plan.heartbeat / 2).max(Duration::from_millis(1));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + half, half);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut wrote = true;
        let mut batch: Vec<Arc<Frame>> = Vec::new();
        let mut expiry = plan.expiry.take();
        let ended = loop {
            let written = tokio::select! {
                biased;
                _ = &mut stopping => break Some(Ended::Shutdown),
                _ = super::plan::expired(&mut expiry) => break Some(Ended::Expired),
                received = plan.live.recv() => match received {
                    Ok(frame) => {
                        batch.push(frame);
                        // Whatever else is already published goes in the same write.
                        let mut lagged = None;
                        while batch.len() < MAX_BATCH {
                            match plan.live.try_recv() {
                                Ok(frame) => batch.push(frame),
                                Err(TryRecvError::Lagged(missed)) => {
                                    lagged = Some(missed);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        batch.retain(|f| plan.wants(f));
                        // Events of other topics are not writes: the stream may still need pings.
                        let sent = if batch.is_empty() {
                            None
                        } else {
                            Some(out.send_frames(&batch, plan.pad.as_ref()).await)
                        };
                        let events = batch.iter().filter(|f| !f.is_announcement()).count();
                        plan.guard.delivered(events as u64);
                        batch.clear();
                        if let Some(missed) = lagged {
                            plan.guard.lagged(missed);
                            break Some(Ended::Lagging);
                        }
                        match sent {
                            Some(sent) => sent,
                            None => continue,
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        plan.guard.lagged(missed);
                        break Some(Ended::Lagging);
                    }
                    Err(RecvError::Closed) => break Some(Ended::HubClosed),
                },
                _ = ticks.tick() => {
                    if wrote {
                        wrote = false;
                        continue;
                    }
                    out.send(&EMPTY, &[&PING]).await
                }
                // The client sends nothing after its request (the answer says `connection:
                // close`); readable means closed, reset, or a client sending what it should not,
                // which is closed at once rather than read and dropped for as long as it sends.
                _ = poll_fn(|cx| tcp.poll_read_ready(cx)) => {
                    let mut scratch = [0u8; 1];
                    match tcp.try_read(&mut scratch) {
                        Ok(0) => break None,
                        Ok(_) => {
                            tracing::info!(client = %plan.guard.client(), "client sent bytes on its open stream; closing it");
                            break None;
                        }
                        Err(e) if e.kind() != io::ErrorKind::WouldBlock => break None,
                        Err(_) => continue,
                    }
                }
            };
            if let Err(e) = written {
                if e.kind() == io::ErrorKind::TimedOut {
                    stalled_client(&plan.guard.client());
                }
                break None;
            }
            wrote = true;
        };
        if let Some(why) = ended {
            plan.guard.end(why);
            let farewell = (why == Ended::Expired).then_some(&EXPIRED);
            // Boxed: it runs once, at the end, and its timers would otherwise take room in
            // every open stream's state.
            Box::pin(out.finish(farewell)).await;
        }
        drop(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream's future is what every open stream keeps for its life (most of the 2 KiB an
    /// idle stream may cost, BENCHMARKS.md): arguments kept twice, or a rare path's state not
    /// boxed, once made it 1.4 KiB, and an idle stream cost 2.9 KB.
    #[tokio::test]
    async fn an_open_stream_keeps_a_small_state() {
        use crate::{hub::HubSettings, limits::PerAddress, presence::Presence};
        use events_core::hub::{Hub, Resume};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tcp, _) = tokio::join!(listener.accept(), TcpStream::connect(addr));
        let (tcp, peer) = tcp.expect("accept");
        let hub = Hub::new(HubSettings {
            topics: vec!["a".into()],
            history: 10,
            max_text: 100,
            subscriber_buffer: 16,
        });
        let plan = Plan {
            opening: Bytes::new(),
            replay: Vec::new(),
            ready: Bytes::new(),
            live: hub.subscribe(&Resume::Fresh).live,
            heartbeat: Duration::from_secs(15),
            lag_limit: 16,
            filter: None,
            presence: false,
            pad: None,
            expiry: None,
            guard: super::super::plan::Guard::new(
                // This stream, counted as the handler counts it.
                Arc::new(std::sync::atomic::AtomicUsize::new(1)),
                tokio_util::sync::CancellationToken::new(),
                peer.to_string(),
                crate::metrics::deliveries(),
                PerAddress::default()
                    .acquire(peer.ip(), 0)
                    .expect("no limit"),
                Presence::new(vec!["a".into()], false).seat(None, None),
            ),
        };
        let out = Out {
            tcp: Arc::new(tcp),
            write_timeout: Duration::from_secs(1),
            chunked: true,
        };
        let shards = Arc::new(Shards::new(TaskTracker::new()));
        let future = stream(out, Bytes::new(), plan, (), shards);
        let size = std::mem::size_of_val(&future);
        assert!(size <= 1024, "an open stream's state is {size} bytes");
    }

    #[test]
    fn chunk_sizes_are_hex() {
        let mut buf = [0u8; 20];
        assert_eq!(chunk_size(26, &mut buf), b"1a\r\n");
        assert_eq!(chunk_size(8192, &mut buf), b"2000\r\n");
        assert_eq!(chunk_size(usize::MAX, &mut buf), b"ffffffffffffffff\r\n");
    }
}
