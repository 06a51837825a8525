//! The stream's write path for plain HTTP/1 connections: most streams, and all of the cost
//! that grows with the number of viewers.
//!
//! Why this is hand-written: carried through hyper, every open stream keeps hyper's connection
//! state, its read and write buffers and axum's body machinery (about 10 KiB per idle stream
//! measured here), and every delivery goes through the body stream, hyper's chunked encoder
//! and a flush. A task that owns the socket and writes the shared, pre-encoded frame itself
//! keeps about 1 KiB per stream and makes one `writev` per delivery (BENCHMARKS.md has the
//! figures). No crate offers "answer this one request, then keep the socket"; hyper's
//! upgrade mechanism needs a 101 response, which an `EventSource` does not accept.
//!
//! What is *not* hand-written: the request still goes through the whole axum router (the
//! module's token check, the path base, CORS, the topic filter, the resume position, the
//! stream cap, every header of the answer), as [`crate::sse::events`]. Only its 200 answer's
//! body is written here. So the stream's contract lives in one place, and this file only
//! parses the request head (with `httparse`, hyper's own parser) and writes bytes.
//!
//! A connection whose first request is anything else (a page, a publish, HTTP/2, an upgrade,
//! a head that does not parse) is handed to hyper untouched, the bytes already read included.

use crate::{
    hub::Frame,
    listener::{Deadline, Peer, Rewind},
    metrics::Ended,
    sse::{Handoff, Plan},
    wire,
};
use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{header, Method, Request, Response, StatusCode, Version},
    Router,
};
use bytes::{Bytes, BytesMut};
use std::{
    future::poll_fn,
    io::{self, IoSlice},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};
use tokio::{
    net::TcpStream,
    sync::{broadcast::error::RecvError, broadcast::error::TryRecvError, mpsc},
    time::MissedTickBehavior,
};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// A request head longer than this is left to hyper (which answers 431 past its own limit).
const MAX_HEAD: usize = 16 * 1024;
/// How long a new connection may take to send its request head before hyper is given it.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Events taken from the hub per write when a subscriber is behind (one `writev`).
const MAX_BATCH: usize = 32;
/// The longest the last chunk may wait for room in the socket's buffer.
const FINISH_LIMIT: Duration = Duration::from_secs(1);
/// An error answer's body is read whole before it is written; none is near this.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// What the accept loop needs to route a new connection.
#[derive(Clone)]
pub struct Direct {
    pub router: Router,
    /// `""` or `/live`: the stream's path is `{base}/api/events`.
    pub path_base: Arc<str>,
    pub write_timeout: Duration,
    /// Connections for hyper (everything that is not a plain stream request).
    pub hyper: mpsc::Sender<(Deadline, SocketAddr)>,
    /// `EVENTS_STREAM_WRITER=hyper`: every connection goes to hyper unread.
    pub enabled: bool,
    /// The server waits for these when it stops.
    pub streams: TaskTracker,
}

impl Direct {
    /// Reads the first request head and either serves the stream or hands the connection on.
    pub async fn serve(self, tcp: TcpStream, peer: SocketAddr) {
        if !self.enabled {
            let io = Deadline::new(Rewind::new(Bytes::new(), tcp), peer, self.write_timeout);
            let _ = self.hyper.send((io, peer)).await;
            return;
        }
        let mut buf = BytesMut::with_capacity(1024);
        let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&tcp, &mut buf)).await;
        let request = match head {
            Ok(Ok(Head::Complete)) => self.stream_request(&buf, peer),
            Ok(Ok(Head::Other)) | Err(_) => None,
            // Closed or reset before a whole head arrived: nothing to answer.
            Ok(Ok(Head::Closed)) | Ok(Err(_)) => return,
        };
        let Some((request, chunked)) = request else {
            let io = Deadline::new(Rewind::new(buf.freeze(), tcp), peer, self.write_timeout);
            // Closed only when the server is stopping: the connection is dropped then.
            let _ = self.hyper.send((io, peer)).await;
            return;
        };
        drop(buf);
        // Boxed: the router's future is large (every layer's state), and unboxed it would be
        // part of this task's state, so of every open stream's memory, for the stream's life.
        let Ok(mut response) = Box::pin(self.router.oneshot(request)).await;
        let plan = response
            .extensions_mut()
            .remove::<Handoff>()
            .filter(|_| response.status() == StatusCode::OK)
            .and_then(|h| h.take());
        let out = Out {
            tcp,
            write_timeout: self.write_timeout,
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
                // A task of its own: this one's state (the request, the router's answer)
                // would otherwise stay allocated for as long as the stream lasts.
                self.streams.spawn(stream(out, head, plan));
            }
            None => Box::pin(out.answer(response)).await,
        }
    }

    /// The request as axum sees it, when it is a stream request this path serves: `GET`,
    /// HTTP/1.x, the stream's path, no body, no upgrade. `None` hands it to hyper.
    fn stream_request(&self, buf: &[u8], peer: SocketAddr) -> Option<(Request<Body>, bool)> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        if !matches!(parsed.parse(buf), Ok(httparse::Status::Complete(_))) {
            return None;
        }
        let path = parsed.path?;
        let route = path.split_once('?').map_or(path, |(p, _)| p);
        if parsed.method? != "GET" || !is_stream_path(route, &self.path_base) {
            return None;
        }
        let version = match parsed.version? {
            0 => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(path)
            .version(version);
        for h in parsed.headers.iter() {
            let name = h.name;
            let has_body = (name.eq_ignore_ascii_case("content-length")
                && h.value.iter().any(|b| *b != b'0'))
                || name.eq_ignore_ascii_case("transfer-encoding");
            if has_body || name.eq_ignore_ascii_case("upgrade") {
                return None;
            }
            builder = builder.header(name, h.value);
        }
        let mut request = builder.body(Body::empty()).ok()?;
        request.extensions_mut().insert(ConnectInfo(Peer(peer)));
        Some((request, version == Version::HTTP_11))
    }
}

/// `{base}/api/events`, the base matched without case as everywhere else (see `iis.rs`).
fn is_stream_path(path: &str, base: &str) -> bool {
    path.len() == base.len() + "/api/events".len()
        && path.is_char_boundary(base.len())
        && path[..base.len()].eq_ignore_ascii_case(base)
        && &path[base.len()..] == "/api/events"
}

enum Head {
    /// A whole request head that may be a stream request.
    Complete,
    /// Anything else: not a `GET`, too long, or not HTTP/1 (the HTTP/2 preface).
    Other,
    Closed,
}

async fn read_head(tcp: &TcpStream, buf: &mut BytesMut) -> io::Result<Head> {
    loop {
        tcp.readable().await?;
        match tcp.try_read_buf(buf) {
            Ok(0) => return Ok(Head::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        let start = &buf[..buf.len().min(4)];
        if !b"GET ".starts_with(start) {
            return Ok(Head::Other);
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Head::Complete);
        }
        if buf.len() > MAX_HEAD {
            return Ok(Head::Other);
        }
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
struct Out {
    tcp: TcpStream,
    write_timeout: Duration,
    /// HTTP/1.1: each write is one chunk. HTTP/1.0: the body ends when the connection does.
    chunked: bool,
}

impl Out {
    /// Writes `raw` as it is, then `body` as one chunk.
    async fn send(&self, raw: &[u8], body: &[&[u8]]) -> io::Result<()> {
        match self.try_send(raw, body)? {
            None => Ok(()),
            Some(rest) => Box::pin(self.send_rest(rest)).await,
        }
    }

    /// Writes frames (and the padding, if any) as one chunk.
    async fn send_frames(&self, frames: &[Arc<Frame>], pad: Option<&[u8]>) -> io::Result<()> {
        // Built and used in this synchronous part only, so the array is not kept in every
        // connection's future between deliveries.
        let rest = {
            let mut parts: [&[u8]; MAX_BATCH + 1] = [&[]; MAX_BATCH + 1];
            let mut n = 0;
            for bytes in frames.iter().map(|f| &f.bytes[..]).chain(pad) {
                parts[n] = bytes;
                n += 1;
            }
            self.try_send(&[], &parts[..n])?
        };
        match rest {
            None => Ok(()),
            // Boxed: the wait and its timer are the rare case, and would otherwise take room
            // in every stream's state.
            Some(rest) => Box::pin(self.send_rest(rest)).await,
        }
    }

    /// The socket's buffer was full: waits for room, at most the write deadline each time.
    async fn send_rest(&self, rest: Vec<u8>) -> io::Result<()> {
        let mut at = 0;
        while at < rest.len() {
            match tokio::time::timeout(self.write_timeout, self.tcp.writable()).await {
                Err(_) => {
                    metrics::counter!(crate::metrics::DROPPED_STALLED).increment(1);
                    return Err(io::ErrorKind::TimedOut.into());
                }
                Ok(ready) => ready?,
            }
            match self.tcp.try_write(&rest[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes what the socket takes now and returns the rest (copied: a full send buffer is
    /// the rare case, and the rest must outlive the frames the caller holds).
    fn try_send(&self, raw: &[u8], body: &[&[u8]]) -> io::Result<Option<Vec<u8>>> {
        let len: usize = body.iter().map(|b| b.len()).sum();
        let mut size = [0u8; 20];
        let (open, close): (&[u8], &[u8]) = if self.chunked && len > 0 {
            (chunk_size(len, &mut size), b"\r\n")
        } else {
            (&[], &[])
        };
        let mut slices = [IoSlice::new(&[]); MAX_BATCH + 4];
        let mut n = 0;
        for part in [raw, open]
            .into_iter()
            .chain(body.iter().copied())
            .chain([close])
        {
            if !part.is_empty() {
                slices[n] = IoSlice::new(part);
                n += 1;
            }
        }
        let mut bufs = &mut slices[..n];
        while !bufs.is_empty() {
            match self.tcp.try_write_vectored(bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => IoSlice::advance_slices(&mut bufs, written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Some(bufs.iter().flat_map(|b| b.iter().copied()).collect()));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Any answer but the stream (the token check's 400, the cap's 503, a bad topic's 400):
    /// written whole with its length, then the connection is closed.
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
        let _ = out.send(&head, &[&body]).await;
    }

    /// Ends the body (the last chunk), waiting at most [`FINISH_LIMIT`] for room: a client
    /// still taking its backlog gets a clean end, one that stopped reading does not hold the
    /// task. The connection is closed right after.
    async fn finish(&self) {
        if self.chunked {
            let _ = tokio::time::timeout(FINISH_LIMIT, self.send(b"0\r\n\r\n", &[])).await;
        }
    }
}

/// `1a\r\n` for 26 bytes.
fn chunk_size(len: usize, buf: &mut [u8; 20]) -> &[u8] {
    use std::io::Write;
    let mut cursor = io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{len:x}\r\n");
    let end = cursor.position() as usize;
    &buf[..end]
}

/// Writes the stream until the client goes, the server stops or the subscriber falls behind.
async fn stream(out: Out, head: Bytes, mut plan: Plan) {
    plan.written_by("direct");
    // In a block, so the head and the replay are freed once written, not kept for the stream.
    let opened = {
        let first = std::mem::take(&mut plan.first);
        out.send(&head, &[&first]).await
    };
    drop(head);
    if let Err(e) = opened {
        tracing::debug!(client = %plan.guard.client(), error = %e, "stream closed before its first write");
        return;
    }
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
    let ended = loop {
        let written = tokio::select! {
            biased;
            _ = &mut stopping => break Some(Ended::Shutdown),
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
                        Some(out.send_frames(&batch, plan.pad.as_deref()).await)
                    };
                    plan.guard.delivered(batch.len() as u64);
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
                out.send(&[], &[&wire::ping()]).await
            }
            // The client sends nothing after its request; readable means closed or reset.
            _ = poll_fn(|cx| out.tcp.poll_read_ready(cx)) => {
                let mut scratch = [0u8; 64];
                match out.tcp.try_read(&mut scratch) {
                    Ok(0) => break None,
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => break None,
                    _ => continue,
                }
            }
        };
        if let Err(e) = written {
            if e.kind() == io::ErrorKind::TimedOut {
                tracing::warn!(client = %plan.guard.client(), "client stopped reading: write deadline passed; dropping its connection");
            }
            break None;
        }
        wrote = true;
    };
    if let Some(why) = ended {
        plan.guard.end(why);
        out.finish().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_path_is_matched_under_the_base_only() {
        assert!(is_stream_path("/api/events", ""));
        assert!(is_stream_path("/live/api/events", "/live"));
        assert!(is_stream_path("/LIVE/api/events", "/live"));
        assert!(!is_stream_path("/live/api/events/", "/live"));
        assert!(!is_stream_path("/api/events", "/live"));
        assert!(!is_stream_path("/x/api/events", ""));
        assert!(!is_stream_path("/livE/API/events", "/live"));
        assert!(!is_stream_path("/é/api/events", "/a"));
    }

    #[test]
    fn chunk_sizes_are_hex() {
        let mut buf = [0u8; 20];
        assert_eq!(chunk_size(26, &mut buf), b"1a\r\n");
        assert_eq!(chunk_size(8192, &mut buf), b"2000\r\n");
        assert_eq!(chunk_size(usize::MAX, &mut buf), b"ffffffffffffffff\r\n");
    }
}
