//! The accept side: an explicit backlog, `TCP_NODELAY`, and a deadline on every write.
//!
//! A client that stops reading (a frozen tab, a proxy that holds the stream, a peer that
//! vanished without a FIN) leaves its socket's send buffer full; hyper then waits on that write
//! forever and the stream's task is never polled again, so no lag check inside the stream can
//! see it. A write that makes no progress for `write_timeout` fails the connection instead
//! (tokio-io-timeout arms the timer inside `poll_write`), the stream is dropped and its slot
//! freed, and a log line names the client.

use axum::{extract::connect_info::Connected, serve::IncomingStream};
use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpSocket, TcpStream},
};
use tokio_io_timeout::TimeoutStream;

/// The connection's remote address, as `ConnectInfo` (axum provides it only for a plain
/// `TcpListener`).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, StreamListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, StreamListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

pub struct StreamListener {
    inner: TcpListener,
    write_timeout: Duration,
}

impl StreamListener {
    /// Binds with an explicit backlog: a reconnect storm past the default one drops SYNs, and
    /// the client retries only after a full second.
    pub fn bind(addr: SocketAddr, write_timeout: Duration) -> Result<StreamListener, String> {
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
        let inner = socket
            .listen(4096)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        Ok(StreamListener {
            inner,
            write_timeout,
        })
    }
}

impl axum::serve::Listener for StreamListener {
    type Io = Deadline;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Deadline, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((tcp, peer)) => {
                    // Small event writes must not wait for the previous response's ACK.
                    let _ = tcp.set_nodelay(true);
                    let mut io = TimeoutStream::new(tcp);
                    io.set_write_timeout(Some(self.write_timeout));
                    return (
                        Deadline {
                            io: Box::pin(io),
                            peer,
                        },
                        peer,
                    );
                }
                // Out of descriptors and the like: back off instead of spinning (as axum's
                // own listener does), and keep serving the connections already open.
                Err(e) => {
                    tracing::error!(error = %e, "accept failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A socket whose writes must progress within the deadline.
pub struct Deadline {
    io: Pin<Box<TimeoutStream<TcpStream>>>,
    peer: SocketAddr,
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
        metrics::counter!(crate::metrics::DROPPED_STALLED).increment(1);
        tracing::warn!(client = %peer, "client stopped reading: write deadline passed; dropping its connection");
    }
    e
}
