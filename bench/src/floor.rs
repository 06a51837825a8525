//! `bench floor`: the reference row, not a peer. The least a server can do to fan an event
//! out on this machine, so every figure of ours can also be read against the machine's limit
//! in the same run (issue #17).
//!
//! One thread, one loop. A stream is answered with the response head and a `ready` event and
//! then kept as a bare non-blocking socket, with no task, no timer and no buffer of its own. A
//! publish encodes its frame once, with its chunk framing, and writes it to every stream's
//! socket back to back: one `write()` each. Everything a real server must do and this does
//! not is left out on purpose: a socket that cannot take the whole frame at once is dropped
//! (no backpressure, no write deadline), and there is no history, no resume, no heartbeat, no
//! topic filter, no routing beyond the two paths, no HTTP/2, no shutdown.
//!
//! Hand-written on purpose: a framework would add exactly the costs the floor must not have.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The longest request head (and publish body) read.
const MAX_REQUEST: usize = 64 * 1024;

const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";

/// The streams, as bare sockets, and the last id.
#[derive(Default)]
struct Floor {
    streams: RefCell<Vec<std::net::TcpStream>>,
    id: Cell<u64>,
}

pub fn main(port: u16) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    tokio::task::LocalSet::new().block_on(&rt, async move {
        let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
        socket
            .bind(([127, 0, 0, 1], port).into())
            .map_err(|e| format!("floor: cannot bind port {port}: {e}"))?;
        // The kernel's somaxconn here: the contract's backlog.
        let listener: TcpListener = socket.listen(4096).map_err(|e| e.to_string())?;
        let floor = Rc::new(Floor::default());
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let _ = conn.set_nodelay(true);
            tokio::task::spawn_local(serve(conn, floor.clone()));
        }
    })
}

/// One connection: a stream is handed over to the fan-out list; a publisher's requests are
/// answered for as long as it keeps the connection.
async fn serve(mut conn: TcpStream, floor: Rc<Floor>) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some(head_end) = read_head(&mut conn, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut line = head.split_whitespace();
        let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
        if method == "GET" && path.starts_with("/api/events") {
            let mut first = STREAM_HEAD.to_vec();
            first.extend_from_slice(&chunk(b"event: ready\ndata: {}\n\n"));
            if conn.write_all(&first).await.is_err() {
                return;
            }
            if let Ok(socket) = conn.into_std() {
                floor.streams.borrow_mut().push(socket);
            }
            return;
        }
        if method != "POST" || !path.starts_with("/api/publish") {
            let _ = conn
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await;
            return;
        }
        let length = content_length(&head).unwrap_or(0).min(MAX_REQUEST);
        let have = buf.len() - head_end;
        if have < length {
            let mut rest = vec![0; length - have];
            if conn.read_exact(&mut rest).await.is_err() {
                return;
            }
            buf.extend_from_slice(&rest);
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let answer = match publish(&floor, &body) {
            Some(id) => {
                let json = format!("{{\"id\":{id}}}");
                format!(
                    "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
                    json.len()
                )
            }
            None => "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n".to_string(),
        };
        if conn.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads until `buf` holds a whole request head; where its body starts.
async fn read_head(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = memchr::memmem::find(buf, b"\r\n\r\n") {
            return Some(at + 4);
        }
        if buf.len() > MAX_REQUEST {
            return None;
        }
        let mut more = [0u8; 4096];
        match conn.read(&mut more).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&more[..n]),
        }
    }
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// `{size in hex}\r\n{bytes}\r\n`: a chunk of the stream's body.
fn chunk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

/// Encodes the event once and writes it to every stream: one `write()` per socket, back to
/// back; a socket that does not take it whole is dropped. The new id, or `None` for a body
/// that is not `{"topic": .., "text": ..}`.
fn publish(floor: &Floor, body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let (topic, text) = (v["topic"].as_str()?, v["text"].as_str()?);
    let id = floor.id.get() + 1;
    floor.id.set(id);
    let sent_ms = crate::unix_ns() / 1_000_000;
    let data = serde_json::json!({ "id": id, "topic": topic, "text": text, "sent_ms": sent_ms });
    let frame = chunk(format!("id: {id}\nevent: {topic}\ndata: {data}\n\n").as_bytes());
    floor
        .streams
        .borrow_mut()
        .retain_mut(|s| matches!(s.write(&frame), Ok(n) if n == frame.len()));
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_and_lengths() {
        assert_eq!(chunk(b"abc"), b"3\r\nabc\r\n");
        assert_eq!(chunk(&[b'x'; 26])[..4], *b"1a\r\n");
        let head = "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 42\r\n\r\n";
        assert_eq!(content_length(head), Some(42));
        assert_eq!(content_length("GET / HTTP/1.1\r\n\r\n"), None);
    }
}
