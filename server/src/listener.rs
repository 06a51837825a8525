//! The accept side: an explicit backlog, `TCP_NODELAY`, the caps on connections (in total and
//! per address), the first request's head read to choose the stream's direct writer or hyper,
//! and a deadline on every write.
//!
//! A client that stops reading (a frozen tab, a proxy that holds the stream, a peer that
//! vanished without a FIN) leaves its socket's send buffer full; hyper then waits on that write
//! forever and the stream's task is never polled again, so no lag check inside the stream can
//! see it. A write that makes no progress for `write_timeout` fails the connection instead
//! (tokio-io-timeout arms the timer inside `poll_write`), the stream is dropped and its slot
//! freed, and a log line names the client.

use crate::{
    direct_stream::Direct,
    limits::{PerAddress, Slot},
};
use bytes::Bytes;
use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpSocket, TcpStream},
};
use tokio_io_timeout::TimeoutStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The connection's remote address, as `ConnectInfo`.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Binds with an explicit backlog: a reconnect storm past the default one drops SYNs, and the
/// client retries only after a full second.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("cannot open a socket: {e}"))?;
    #[cfg(not(windows))]
    let _ = socket.set_reuseaddr(true);
    socket
        .bind(addr)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    socket
        .listen(4096)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// What the accept loop counts: every open connection, and those of each address.
pub struct Caps {
    pub max: usize,
    /// 0: no limit.
    pub per_addr: usize,
    /// Peers not counted by address: trusted proxies and, under the module, the loopback it
    /// connects from (every request through IIS comes from there).
    pub exempt: Vec<ipnet::IpNet>,
}

/// Held by a connection's task (and its stream's) for as long as the connection is open.
pub struct ConnSlot {
    open: Arc<AtomicUsize>,
    _addr: Option<Slot>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts until the server stops; each connection's first request decides who serves it
/// (see `direct_stream.rs`). Past a cap the connection gets a 503 and is closed at once.
pub async fn accept(
    listener: TcpListener,
    direct: Direct,
    caps: Caps,
    stop: CancellationToken,
    streams: TaskTracker,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let per_addr = PerAddress::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // Small event writes must not wait for the previous response's ACK.
                let _ = tcp.set_nodelay(true);
                let Some(slot) = admit(&caps, &open, &per_addr, peer) else {
                    refuse(tcp);
                    continue;
                };
                streams.spawn(direct.clone().serve(tcp, peer, slot));
            }
            // Out of descriptors and the like: back off instead of spinning (as axum's own
            // listener does), and keep serving the connections already open.
            Err(e) => {
                tracing::error!(error = %e, "accept failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// A slot for a new connection from `peer`, or `None` past a cap (logged).
fn admit(
    caps: &Caps,
    open: &Arc<AtomicUsize>,
    per_addr: &PerAddress,
    peer: SocketAddr,
) -> Option<ConnSlot> {
    if open.fetch_add(1, Ordering::Relaxed) >= caps.max {
        open.fetch_sub(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::CONNECTIONS_REFUSED).increment(1);
        tracing::warn!(client = %peer, max = caps.max, "connection refused: at the EVENTS_MAX_CONNECTIONS cap");
        return None;
    }
    let mut slot = ConnSlot {
        open: open.clone(),
        _addr: None,
    };
    if crate::limits::is_listed(&caps.exempt, peer.ip()) {
        return Some(slot);
    }
    match per_addr.acquire(peer.ip(), caps.per_addr) {
        Ok(addr) => {
            slot._addr = Some(addr);
            Some(slot)
        }
        Err(held) => {
            metrics::counter!(crate::metrics::CONNECTIONS_REFUSED).increment(1);
            tracing::warn!(client = %peer, held, "connection refused: at the EVENTS_MAX_CONNECTIONS_PER_ADDR cap");
            None
        }
    }
}

/// A short 503 written without waiting, then the close: the refused client learns why, and
/// the refusal costs no task.
fn refuse(tcp: TcpStream) {
    const ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
        retry-after: 10\r\ncontent-length: 33\r\nconnection: close\r\n\r\n\
        too many connections; retry later";
    let _ = tcp.try_write(ANSWER);
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

/// A socket whose writes must progress within the deadline.
pub struct Deadline {
    io: Pin<Box<TimeoutStream<Rewind>>>,
    peer: SocketAddr,
}

impl Deadline {
    pub fn new(io: Rewind, peer: SocketAddr, write_timeout: Duration) -> Deadline {
        let mut io = TimeoutStream::new(io);
        io.set_write_timeout(Some(write_timeout));
        Deadline {
            io: Box::pin(io),
            peer,
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

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_shutdown(cx)
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
