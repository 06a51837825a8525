//! How the processes sharing one log wake each other: after each commit the writer sends a
//! one-byte datagram over the loopback interface to every other process registered in the
//! `peers` table, and each process's reader, woken, reads what is new from the file.
//!
//! Why loopback UDP and not another mechanism:
//! - it is the same code on Windows (the published `server.exe`, Wine) and Linux, and needs
//!   no privilege, no named object and no extra crate;
//! - while idle it costs nothing: the reader sleeps in `recv`, and the only other work is a
//!   fallback read once per [`POLL`] and a heartbeat row every [`HEARTBEAT`];
//! - a wake is delivered in microseconds. Polling the file (`PRAGMA data_version`) would
//!   cost a wakeup per poll in every idle process, and watching it for changes
//!   (`ReadDirectoryChangesW`, inotify) is late or silent on Windows for a file held open,
//!   as SQLite holds its WAL;
//! - a datagram carries nothing the reader trusts: it only says "read the file". A lost one
//!   (or one from a process that registered after the publish) is made up by the poll, and a
//!   forged one costs one read. Order and exactly-once come from the ids in the file, never
//!   from the wakes, so no event is delivered twice or out of order whatever arrives.
//!
//! Windows reports an ICMP "port unreachable" for a datagram sent to a process that has gone
//! (`WSAECONNRESET` on the sending socket's next receive): the writer's socket never
//! receives, and the reader's never sends.

use rusqlite::{params, Connection};
use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

/// A reader reads the file this often even when nothing woke it.
pub const POLL: Duration = Duration::from_secs(1);
/// How often a process renews its row in `peers`.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A row not renewed for this long is a process that has gone: no longer woken, then removed.
const PEER_TTL_MS: u64 = 60_000;

/// The reader's end: what other processes send to.
pub struct Wakes {
    socket: tokio::net::UdpSocket,
}

impl Wakes {
    pub async fn bind() -> std::io::Result<Wakes> {
        let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        Ok(Wakes { socket })
    }

    pub fn port(&self) -> u16 {
        self.socket.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Returns when a wake arrives (several queued ones count as one: the reader reads
    /// everything new anyway).
    pub async fn next(&self) {
        let mut buf = [0u8; 16];
        match self.socket.recv_from(&mut buf).await {
            Ok(_) => while self.socket.try_recv_from(&mut buf).is_ok() {},
            Err(e) => {
                // Nothing to act on: the poll keeps the reader going; do not spin.
                tracing::debug!(error = %e, "wake socket");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The writer's end: sends the wakes.
pub struct Waker {
    socket: Option<UdpSocket>,
}

impl Waker {
    pub fn bind() -> Waker {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| tracing::warn!(error = %e, "cannot make the wake socket; other processes sharing the log see new events within {POLL:?}"))
            .ok();
        Waker { socket }
    }

    /// One datagram to each port; a full buffer or a gone peer is not an error here.
    pub fn wake(&self, ports: &[u16]) {
        let Some(socket) = &self.socket else { return };
        for &port in ports {
            let _ = socket.send_to(&[1], SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
    }
}

/// Adds or renews this process's row and removes rows of processes gone for long.
pub fn register(conn: &Connection, port: u16, now_ms: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO peers (port, pid, seen_ms) VALUES (?1, ?2, ?3) \
         ON CONFLICT (port) DO UPDATE SET pid = excluded.pid, seen_ms = excluded.seen_ms",
        params![port, std::process::id(), now_ms as i64],
    )?;
    conn.execute(
        "DELETE FROM peers WHERE seen_ms < ?1",
        [now_ms.saturating_sub(PEER_TTL_MS) as i64],
    )?;
    Ok(())
}

pub fn unregister(conn: &Connection, port: u16) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM peers WHERE port = ?1", [port])
        .map(|_| ())
}

/// The ports of the other live processes.
pub fn others(conn: &Connection, own: u16, now_ms: u64) -> rusqlite::Result<Vec<u16>> {
    let mut stmt =
        conn.prepare_cached("SELECT port FROM peers WHERE port != ?1 AND seen_ms >= ?2")?;
    let rows = stmt.query_map(
        params![own, now_ms.saturating_sub(PEER_TTL_MS) as i64],
        |r| r.get::<_, u16>(0),
    )?;
    rows.collect()
}
