//! The accept side: an explicit backlog, `TCP_NODELAY`, and the caps on connections (in total
//! and per address). Each accepted connection goes to `crate::connection`, which decides who
//! serves it.

use crate::{
    connection::Dispatch,
    limits::{PerAddress, Slot},
};
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

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
/// (`crate::connection`). Past a cap the connection gets a 503 and is closed at once.
pub async fn accept(
    listener: TcpListener,
    dispatch: Dispatch,
    caps: Caps,
    stop: CancellationToken,
    connections: TaskTracker,
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
                connections.spawn(dispatch.clone().serve(tcp, peer, slot));
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
