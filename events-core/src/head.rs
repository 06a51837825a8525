//! The request head of a new connection, read to decide whether it is a plain event-stream
//! request (which the server's direct writer serves) or anything else (handed to hyper).
//!
//! Here, and not in the server, so that the fuzz targets reach it without a web framework:
//! these bytes come straight from anyone who can open a connection. Parsing is `httparse`'s,
//! hyper's own parser; this module only says when to parse and what qualifies.

/// Whether `buf` holds the blank line that ends a request head, CRLF or bare LF style (which
/// `httparse`, like hyper, accepts). `from` is where the bytes not yet scanned start, so a head
/// that arrives a byte at a time is scanned once, not once per byte.
pub fn ends_head(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2);
    let tail = buf.get(start..).unwrap_or_default();
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// Whether the bytes so far can still be the start of a `GET` request.
pub fn may_be_get(buf: &[u8]) -> bool {
    let start = &buf[..buf.len().min(4)];
    b"GET ".starts_with(start)
}

/// A plain stream request: what the direct writer needs of the head.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamHead<'b> {
    /// The request target as sent (`/live/api/events?topic=chat`).
    pub target: &'b str,
    /// HTTP/1.1 (else 1.0).
    pub http11: bool,
}

/// Most header lines a stream request may have (more: hyper takes it).
pub const MAX_HEADERS: usize = 64;

/// The head in `buf` when it is a complete `GET {base}/api/events` over HTTP/1.x with no body
/// and no upgrade; `header` sees each header line. `None` for anything else.
pub fn stream_head<'b>(
    buf: &'b [u8],
    base: &str,
    mut header: impl FnMut(&'b str, &'b [u8]),
) -> Option<StreamHead<'b>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(parsed.parse(buf), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let target = parsed.path?;
    let route = target.split_once('?').map_or(target, |(p, _)| p);
    if parsed.method? != "GET" || !is_stream_path(route, base) {
        return None;
    }
    let http11 = parsed.version? == 1;
    for h in parsed.headers.iter() {
        let has_body = (h.name.eq_ignore_ascii_case("content-length")
            && h.value.iter().any(|b| *b != b'0'))
            || h.name.eq_ignore_ascii_case("transfer-encoding");
        if has_body || h.name.eq_ignore_ascii_case("upgrade") {
            return None;
        }
        header(h.name, h.value);
    }
    Some(StreamHead { target, http11 })
}

/// `{base}/api/events`, the base matched without case (ASP.NET matches the application's path
/// that way, and so does the rest of the server).
pub fn is_stream_path(path: &str, base: &str) -> bool {
    path.len() == base.len() + "/api/events".len()
        && path.is_char_boundary(base.len())
        && path[..base.len()].eq_ignore_ascii_case(base)
        && &path[base.len()..] == "/api/events"
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
    fn a_head_ends_with_a_blank_line_in_either_style() {
        let crlf = b"GET /api/events HTTP/1.1\r\nHost: a\r\n\r\n";
        let lf = b"GET /api/events HTTP/1.1\nHost: a\n\n";
        assert!(ends_head(crlf, 0) && ends_head(lf, 0));
        assert!(!ends_head(b"GET /api/events HTTP/1.1\r\nHost: a\r\n", 0));
        // Scanned from where the last read ended, the end is still found across the seam.
        assert!(ends_head(lf, lf.len() - 1));
        assert!(ends_head(crlf, crlf.len() - 1));
        for head in [&crlf[..], &lf[..]] {
            let mut names = Vec::new();
            let parsed = stream_head(head, "", |n, _| names.push(n)).expect("a stream request");
            assert_eq!(
                parsed,
                StreamHead {
                    target: "/api/events",
                    http11: true
                }
            );
            assert_eq!(names, ["Host"]);
        }
    }

    #[test]
    fn only_plain_stream_requests_qualify() {
        let ok = |h: &str| stream_head(h.as_bytes(), "/live", |_, _| {}).is_some();
        assert!(ok("GET /live/api/events?topic=a HTTP/1.0\r\n\r\n"));
        assert!(!ok("GET /live/api/events HTTP/1.1\r\n"), "incomplete");
        assert!(!ok("POST /live/api/events HTTP/1.1\r\n\r\n"));
        assert!(!ok("GET /api/events HTTP/1.1\r\n\r\n"), "outside the base");
        assert!(!ok(
            "GET /live/api/events HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
        ));
        assert!(ok(
            "GET /live/api/events HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!ok(
            "GET /live/api/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!ok(
            "GET /live/api/events HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(may_be_get(b"GE") && may_be_get(b"GET /") && !may_be_get(b"PRI * HTTP/2.0"));
    }
}
