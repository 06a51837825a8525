//! Who serves a connection. The first request's head is read (with a deadline) to see what it
//! asks for: a plain HTTP/1 `GET {base}/api/events` goes through the router as any request,
//! and its 200 answer's body is written by the stream's direct writer
//! (`stream/direct_writer.rs`), which owns the socket; anything else (a page, a publish,
//! HTTP/2, an upgrade, a head that does not parse) is handed to hyper (`http.rs`) with the bytes
//! already read. Also here: the connection's IO as hyper sees it, with its write deadline.
//!
//! A client that stops reading (a frozen tab, a proxy that holds the stream, a peer that
//! vanished without a FIN) leaves its socket's send buffer full; hyper then waits on that write
//! forever and the stream's task is never polled again, so no lag check inside the stream can
//! see it. A write that makes no progress for `write_timeout` fails the connection instead
//! (tokio-io-timeout arms the timer inside `poll_write`), the stream is dropped and its slot
//! freed, and a log line names the client.

use crate::{http::Hyper, stream::direct_writer};
use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request, Version},
    Router,
};
use bytes::{Bytes, BytesMut};
use events_core::head;
use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_io_timeout::TimeoutStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

/// A request head longer than this is left to hyper (which answers 431 past its own limit).
const MAX_HEAD: usize = 16 * 1024;

/// The connection's remote address, as `ConnectInfo`.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// What the accept loop needs to route a new connection.
#[derive(Clone)]
pub struct Dispatch {
    pub router: Router,
    /// `""` or `/live`: the stream's path is `{base}/api/events`.
    pub path_base: Arc<str>,
    pub write_timeout: Duration,
    /// How long a new connection may take to send its request head.
    pub header_timeout: Duration,
    /// Everything that is not a plain stream request.
    pub hyper: Hyper,
    /// `EVENTS_STREAM_WRITER=hyper`: every connection goes to hyper unread.
    pub enabled: bool,
    /// Every connection's task and every direct stream's: the server waits for them when it
    /// stops.
    pub connections: TaskTracker,
    /// Who writes the direct streams once they are open (`stream/shard.rs`).
    pub shards: Arc<crate::stream::shard::Shards>,
    pub stop: CancellationToken,
}

impl Dispatch {
    /// Reads the first request head and either serves the stream or hands the connection on.
    /// `slot` (the connection's place under the caps) is held for as long as it is open.
    pub async fn serve<S: Send + 'static>(self, tcp: TcpStream, peer: SocketAddr, slot: S) {
        if !self.enabled {
            return self.hand_to_hyper(Bytes::new(), tcp, peer).await;
        }
        let mut buf = BytesMut::with_capacity(1024);
        let head = tokio::time::timeout(self.header_timeout, read_head(&tcp, &mut buf)).await;
        let request = match head {
            Ok(Ok(Head::Complete)) => self.stream_request(&buf, peer),
            Ok(Ok(Head::Other)) => None,
            // Closed or reset before a whole head arrived: nothing to answer.
            Ok(Ok(Head::Closed)) | Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!(client = %peer, "no complete request head in time; closing");
                let _ = tcp.try_write(REQUEST_TIMEOUT);
                return;
            }
        };
        let Some((request, chunked)) = request else {
            return self.hand_to_hyper(buf.freeze(), tcp, peer).await;
        };
        drop(buf);
        // Boxed: the router's future is large (every layer's state), and unboxed it would be
        // part of this task's state, so of every open stream's memory, for the stream's life.
        let Ok(response) = Box::pin(self.router.oneshot(request)).await;
        direct_writer::serve(
            tcp,
            response,
            chunked,
            self.write_timeout,
            &self.connections,
            &self.shards,
            slot,
        )
        .await;
    }

    /// Hyper serves the connection, the bytes already read first. Boxed: hyper's connection
    /// state would otherwise be part of every direct stream's task too.
    async fn hand_to_hyper(self, read: Bytes, tcp: TcpStream, peer: SocketAddr) {
        let io = Deadline::new(Rewind::new(read, tcp), peer, self.write_timeout);
        Box::pin(self.hyper.serve(io, peer, self.router, self.stop)).await
    }

    /// The request as axum sees it, when it is a stream request this path serves: `GET`,
    /// HTTP/1.x, the stream's path, no body, no upgrade. `None` hands it to hyper.
    fn stream_request(&self, buf: &[u8], peer: SocketAddr) -> Option<(Request<Body>, bool)> {
        let mut builder = Request::builder().method(Method::GET);
        let parsed = head::stream_head(buf, &self.path_base, |name, value| {
            builder = std::mem::take(&mut builder).header(name, value);
        })?;
        let version = if parsed.http11 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        let mut request = builder
            .uri(parsed.target)
            .version(version)
            .body(Body::empty())
            .ok()?;
        request.extensions_mut().insert(ConnectInfo(Peer(peer)));
        Some((request, parsed.http11))
    }
}

/// Sent to a connection that opened and did not send a whole head in time.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

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
        let scanned = buf.len();
        match tcp.try_read_buf(buf) {
            Ok(0) => return Ok(Head::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        if !head::may_be_get(buf) {
            return Ok(Head::Other);
        }
        if head::ends_head(buf, scanned) {
            return Ok(Head::Complete);
        }
        if buf.len() > MAX_HEAD {
            return Ok(Head::Other);
        }
    }
}

/// A connection whose first bytes were already read (to see what it asks for), given back
/// to the reader before the socket's own.
pub struct Rewind {
    read: Bytes,
    tcp: TcpStream,
}

impl Rewind {
    pub fn new(read: Bytes, tcp: TcpStream) -> Rewind {
        Rewind { read, tcp }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// After our side of a connection is shut, how long (and how many bytes) of the client's input
/// is read and dropped before the socket is closed.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 8 * 1024 * 1024;

/// A lingering close, as Apache and nginx do it. Closing a socket with unread input makes the
/// kernel send a reset, which can destroy the answer before the client has read it: a client
/// still sending a body we refused (413 after the first 64 KiB of two megabytes) saw a broken
/// pipe instead of the 413. So once our side is shut for writing (the client reads the end of
/// the answer, then end-of-file), what it still sends is read and dropped until it closes too,
/// `LINGER` passes or `LINGER_BYTES` have been read.
pub struct Linger {
    until: Pin<Box<tokio::time::Sleep>>,
    left: usize,
}

impl Linger {
    pub fn new() -> Linger {
        Linger {
            until: Box::pin(tokio::time::sleep(LINGER)),
            left: LINGER_BYTES,
        }
    }

    /// Ready when the client has closed, an error or a bound ended the wait. Never fails: the
    /// answer is already written, and all that is left to do is to close.
    pub fn poll_drain<R: AsyncRead + ?Sized>(
        &mut self,
        mut io: Pin<&mut R>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let mut scratch = [0u8; 8 * 1024];
        loop {
            if self.until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match io.as_mut().poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {
                    self.left = self.left.saturating_sub(buf.filled().len());
                    if self.left == 0 {
                        return Poll::Ready(());
                    }
                }
            }
        }
    }
}

/// A socket whose writes must progress within the deadline, and whose close lingers.
pub struct Deadline {
    io: Pin<Box<TimeoutStream<Rewind>>>,
    peer: SocketAddr,
    /// Set once our side is shut: hyper's `poll_shutdown` then waits on it.
    linger: Option<Linger>,
}

impl Deadline {
    pub fn new(io: Rewind, peer: SocketAddr, write_timeout: Duration) -> Deadline {
        let mut io = TimeoutStream::new(io);
        io.set_write_timeout(Some(write_timeout));
        Deadline {
            io: Box::pin(io),
            peer,
            linger: None,
        }
    }
}

impl AsyncRead for Deadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Deadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let peer = self.peer;
        self.io
            .as_mut()
            .poll_write(cx, buf)
            .map_err(|e| stalled(e, peer))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let peer = self.peer;
        self.io
            .as_mut()
            .poll_write_vectored(cx, bufs)
            .map_err(|e| stalled(e, peer))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let peer = self.peer;
        self.io
            .as_mut()
            .poll_flush(cx)
            .map_err(|e| stalled(e, peer))
    }

    /// Hyper shuts the connection when it is done with it (a `connection: close` answer, an
    /// unread body, an idle or stopping server): see `Linger` for why that lingers.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let linger = match &mut this.linger {
            Some(linger) => linger,
            None => {
                std::task::ready!(this.io.as_mut().poll_shutdown(cx))?;
                this.linger.insert(Linger::new())
            }
        };
        linger.poll_drain(this.io.as_mut(), cx).map(Ok)
    }
}

fn stalled(e: io::Error, peer: SocketAddr) -> io::Error {
    if e.kind() == io::ErrorKind::TimedOut {
        stalled_client(&peer);
    }
    e
}

/// The one rule for a write that made no progress within the deadline, whoever wrote: counted
/// and logged here, and the caller drops the connection.
pub fn stalled_client(client: &dyn std::fmt::Display) {
    metrics::counter!(crate::metrics::DROPPED_STALLED).increment(1);
    tracing::warn!(client = %client, "client stopped reading: write deadline passed; dropping its connection");
}
