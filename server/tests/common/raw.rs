//! HTTP/1.1 on a bare socket, for what an HTTP library hides or tidies away: the request head
//! exactly as written, the answer's framing, the chunks, and how a body ends.
//!
//! [`Reader`] reads answers off a connection, keeping what it read past the current one (a
//! kept-alive connection carries several). [`RawStream`] is one answer read as a stream: its
//! [`Head`], its body with the chunk framing removed, the SSE events in it, and its
//! [`Ending`]. Each of its reads is bounded by [`PATIENCE`]; [`Reader`]'s are not, for the tests
//! that measure how long a connection is held.

use super::PATIENCE;
use std::io;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `GET {path} HTTP/1.1` with a `Host` and `headers`, as the bytes of a request head.
pub fn get(path: &str, headers: &[(&str, &str)]) -> String {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: x\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// An answer's status line and headers.
#[derive(Clone, Debug)]
pub struct Head {
    /// As sent, e.g. `HTTP/1.1 200 OK`.
    pub status_line: String,
    pub status: u16,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn parse(text: &str) -> Option<Head> {
        let mut lines = text.split("\r\n");
        let status_line = lines.next()?.to_string();
        let status = status_line.split(' ').nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Some(Head {
            status_line,
            status,
            headers,
        })
    }
}

/// Reads HTTP/1.1 answers from a connection, keeping what it read past the current answer in
/// `buf`. Nothing here has a time limit.
pub struct Reader<R> {
    pub rd: R,
    pub buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(rd: R) -> Reader<R> {
        Reader {
            rd,
            buf: Vec::new(),
        }
    }

    /// Reads more into `buf`; `Ok(0)` at the end of the connection. Cancel-safe.
    pub async fn more(&mut self) -> io::Result<usize> {
        self.buf.reserve(8 * 1024);
        self.rd.read_buf(&mut self.buf).await
    }

    async fn need(&mut self, len: usize) -> io::Result<()> {
        while self.buf.len() < len {
            if self.more().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// The status line and headers of the next answer.
    pub async fn head(&mut self) -> io::Result<Head> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.buf[..end]).to_string();
                self.buf.drain(..end + 4);
                return Head::parse(&text)
                    .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {text:?}")));
            }
            if self.more().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "closed before a whole head: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        }
    }

    /// The next chunk's data of a chunked body once the whole chunk (size line, data, CRLF) has
    /// arrived; `None` for the last chunk, read with its trailers. Cancel-safe: nothing is
    /// consumed until a whole chunk is there.
    pub async fn chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(at) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).to_string();
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| io::Error::other(format!("not a chunk size: {line:?}")))?;
                let data = at + 2;
                if size == 0 {
                    // No trailers are expected: the blank line that ends the body.
                    if let Some(end) = find(&self.buf[at..], b"\r\n\r\n") {
                        self.buf.drain(..at + end + 4);
                        return Ok(None);
                    }
                } else if self.buf.len() >= data + size + 2 {
                    if &self.buf[data + size..data + size + 2] != b"\r\n" {
                        return Err(io::Error::other("a chunk not ended by CRLF"));
                    }
                    let chunk = self.buf[data..data + size].to_vec();
                    self.buf.drain(..data + size + 2);
                    return Ok(Some(chunk));
                }
            }
            if self.more().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed inside a chunk",
                ));
            }
        }
    }

    /// The whole body of an answer that has an end (a length, chunks, or the close).
    pub async fn body(&mut self, head: &Head) -> io::Result<Vec<u8>> {
        if let Some(len) = head.header("content-length") {
            let len: usize = len.parse().map_err(io::Error::other)?;
            self.need(len).await?;
            return Ok(self.buf.drain(..len).collect());
        }
        if chunked(head) {
            let mut body = Vec::new();
            while let Some(chunk) = self.chunk().await? {
                body.extend(chunk);
            }
            return Ok(body);
        }
        while self.more().await? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// Reads to the end of the connection: `Ok` for a clean end of file, the error otherwise.
    pub async fn end(&mut self) -> io::Result<()> {
        while self.more().await? > 0 {}
        Ok(())
    }
}

fn chunked(head: &Head) -> bool {
    head.header("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
}

/// How a body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Its own end: the last chunk, the whole `content-length`, or the close of a body that
    /// ends with its connection (an HTTP/1.0 answer).
    Clean,
    /// The connection closed or failed before that.
    Cut,
    /// Still going after [`PATIENCE`].
    NotYet,
}

/// One event of a stream: its `event:`, `id:` and `data:` fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// Empty when the event has no `event:` field.
    pub event: String,
    pub id: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl Event {
    /// An event block (without its blank line); `None` for a block of only comments or
    /// `retry:`.
    fn parse(block: &str) -> Option<Event> {
        let mut event = Event::default();
        let mut data = Vec::new();
        let mut any = false;
        for line in block.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() || line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event.event = value.to_string(),
                "id" => event.id = Some(value.to_string()),
                "data" => data.push(value),
                _ => continue,
            }
            any = true;
        }
        event.data = data.join("\n");
        any.then_some(event)
    }
}

enum Framing {
    Chunked,
    Length(usize),
    /// Up to the connection's close.
    Close,
}

/// One answer on a raw connection, read as a stream: its head, then its body as it comes.
pub struct RawStream<R = TcpStream> {
    pub head: Head,
    /// The connection; its `buf` holds what was read past the body's framing so far.
    pub reader: Reader<R>,
    framing: Framing,
    ending: Option<Ending>,
    /// The body so far, without its chunk framing.
    received: Vec<u8>,
    /// How far `received` has been taken apart into events.
    parsed: usize,
}

impl RawStream {
    /// Connects to `addr` (`host:port`), asks for `path` with `headers` and reads the answer's
    /// head.
    pub async fn open(addr: &str, path: &str, headers: &[(&str, &str)]) -> RawStream {
        let tcp = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
            .await
            .expect("connected within the time limit")
            .expect("connect");
        RawStream::send(tcp, get(path, headers).as_bytes()).await
    }

    /// Sends `request` on `tcp` exactly as given and reads the answer's head.
    pub async fn send(mut tcp: TcpStream, request: &[u8]) -> RawStream {
        tcp.write_all(request).await.expect("send the request");
        RawStream::answer(Reader::new(tcp))
            .await
            .expect("the answer's head")
    }
}

impl<R: AsyncRead + Unpin> RawStream<R> {
    /// Reads the head of the next answer on a connection whose request has been sent.
    pub async fn answer(mut reader: Reader<R>) -> io::Result<RawStream<R>> {
        let head = tokio::time::timeout(PATIENCE, reader.head())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))??;
        let framing = if chunked(&head) {
            Framing::Chunked
        } else if let Some(len) = head.header("content-length") {
            Framing::Length(len.parse().map_err(io::Error::other)?)
        } else {
            Framing::Close
        };
        Ok(RawStream {
            head,
            reader,
            framing,
            ending: None,
            received: Vec::new(),
            parsed: 0,
        })
    }

    /// The body so far, without its chunk framing.
    pub fn received(&self) -> &[u8] {
        &self.received
    }

    /// The next piece of the body (of a chunked body, the next chunk's data). Panics at the
    /// body's end or after [`PATIENCE`].
    pub async fn chunk(&mut self) -> Vec<u8> {
        let from = self.received.len();
        let deadline = Instant::now() + PATIENCE;
        self.expect_more(deadline, "another chunk").await;
        self.received[from..].to_vec()
    }

    /// Reads until `done` holds for the body so far. Panics if the body ends first, or after
    /// [`PATIENCE`].
    pub async fn until(&mut self, done: impl Fn(&[u8]) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.received) {
            self.expect_more(deadline, "the awaited bytes").await;
        }
    }

    /// The next event; `None` once the body has ended. Panics after [`PATIENCE`].
    pub async fn next_event(&mut self) -> Option<Event> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(event) = self.take_event() {
                return Some(event);
            }
            match self.more(deadline).await {
                Some(true) => {}
                Some(false) => return None,
                None => panic!("no event within {PATIENCE:?}; {}", self.so_far()),
            }
        }
    }

    /// Reads events up to the first one named `name` and returns it. Panics if the body ends
    /// first, or after [`PATIENCE`].
    pub async fn until_event(&mut self, name: &str) -> Event {
        let deadline = Instant::now() + PATIENCE;
        loop {
            while let Some(event) = self.take_event() {
                if event.event == name {
                    return event;
                }
            }
            self.expect_more(deadline, &format!("a `{name}` event"))
                .await;
        }
    }

    /// Reads the rest of the body, within [`PATIENCE`], and says how it ended.
    pub async fn end(&mut self) -> Ending {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.more(deadline).await {
                Some(true) => {}
                Some(false) => return self.ending.expect("ended"),
                None => return Ending::NotYet,
            }
        }
    }

    /// The whole body. Panics unless it ends cleanly within [`PATIENCE`].
    pub async fn body(&mut self) -> &[u8] {
        let ending = self.end().await;
        assert_eq!(ending, Ending::Clean, "the body's end; {}", self.so_far());
        &self.received
    }

    /// For a failure's message: the status line and the body's last 2 KiB.
    fn so_far(&self) -> String {
        let tail = &self.received[self.received.len().saturating_sub(2048)..];
        format!(
            "{}, then {} bytes, ending {:?}",
            self.head.status_line,
            self.received.len(),
            String::from_utf8_lossy(tail)
        )
    }

    fn take_event(&mut self) -> Option<Event> {
        while let Some(len) = find(&self.received[self.parsed..], b"\n\n") {
            let block =
                String::from_utf8_lossy(&self.received[self.parsed..self.parsed + len]).to_string();
            self.parsed += len + 2;
            if let Some(event) = Event::parse(&block) {
                return Some(event);
            }
        }
        None
    }

    async fn expect_more(&mut self, deadline: Instant, what: &str) {
        match self.more(deadline).await {
            Some(true) => {}
            Some(false) => panic!(
                "the body ended ({:?}) before {what}; {}",
                self.ending.expect("ended"),
                self.so_far()
            ),
            None => panic!("no {what} within {PATIENCE:?}; {}", self.so_far()),
        }
    }

    /// Reads more of the body by `deadline`: `Some(true)` when some arrived, `Some(false)` once
    /// the body has ended, `None` when the deadline passed first.
    async fn more(&mut self, deadline: Instant) -> Option<bool> {
        if self.ending.is_some() {
            return Some(false);
        }
        let ending = tokio::time::timeout_at(deadline, self.read_body())
            .await
            .ok()?;
        self.ending = ending;
        Some(ending.is_none())
    }

    /// One read's worth of body into `received`; the ending when there is no more.
    async fn read_body(&mut self) -> Option<Ending> {
        let reader = &mut self.reader;
        match self.framing {
            Framing::Chunked => match reader.chunk().await {
                Ok(Some(chunk)) => self.received.extend(chunk),
                Ok(None) => return Some(Ending::Clean),
                Err(_) => return Some(Ending::Cut),
            },
            Framing::Length(0) => return Some(Ending::Clean),
            Framing::Length(left) => {
                if reader.buf.is_empty() && !matches!(reader.more().await, Ok(n) if n > 0) {
                    return Some(Ending::Cut);
                }
                let n = left.min(reader.buf.len());
                self.received.extend(reader.buf.drain(..n));
                self.framing = Framing::Length(left - n);
            }
            Framing::Close => {
                if reader.buf.is_empty() {
                    match reader.more().await {
                        Ok(0) => return Some(Ending::Clean),
                        Err(_) => return Some(Ending::Cut),
                        Ok(_) => {}
                    }
                }
                self.received.append(&mut reader.buf);
            }
        }
        None
    }
}
