//! The `text/event-stream` wire format.
//!
//! Written here rather than with axum's `sse::Event` because each event is encoded **once**,
//! when it is published, and the same bytes are then written to every subscriber and kept in
//! the history for replay; axum's `Event` is built and serialised per subscriber, which costs
//! about 1.7× the CPU per delivery at 10k subscribers (measured by `cargo xtask bench`,
//! BENCHMARKS.md). The format itself is tiny (WHATWG HTML, "Server-sent events": fields are
//! `name: value` lines, an event ends with a blank line, and CR, LF and CRLF all end a line).

use bytes::{BufMut, Bytes, BytesMut};

/// One event as the stream carries it. `event` must be a single line (topics are validated
/// to a safe alphabet); `data` may contain any line breaks: each line becomes its own `data:`
/// field, which the client joins back with `\n`.
pub fn encode(id: Option<u64>, event: Option<&str>, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 48);
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.to_string().as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(event) = event {
        debug_assert!(!event.contains(['\r', '\n']), "event names are one line");
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_u8(b'\n');
    }
    for line in split_lines(data) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// The length of `text` once JSON-escaped as serde_json escapes a string (without the
/// quotes): `"` and `\\` take two bytes, the control characters below U+0020 two (`\n`, `\t`,
/// ...) or six (`\u0000`), everything else its UTF-8 length. Counted, not encoded, so a
/// publish is checked without a copy.
pub fn json_escaped_len(text: &str) -> usize {
    text.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// The `retry:` hint: how long a browser waits before reconnecting on its own.
pub fn retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// The keep-alive: keeps proxies from timing out an idle stream, makes a vanished client show
/// up as a failed write, and lets the client's watchdog see the stream is alive (see
/// `crate::event::PING_EVENT` for why it is an event, not a comment).
pub fn ping() -> Bytes {
    Bytes::from_static(PING)
}

/// The bytes of [`ping`].
pub const PING: &[u8] = b"event: ping\ndata: \n\n";

/// The `expired` event (`event::EXPIRED_EVENT`), a stream's last words at its token's expiry.
pub const EXPIRED: &[u8] =
    b"event: expired\ndata: {\"reason\":\"the token this stream was opened with has expired\"}\n\n";

/// Bytes of padding that push an event through HttpPlatformHandler's output buffer (about
/// 8 KB, measured by an ASP.NET maintainer in aspnet/IISIntegration#7): whatever the buffer
/// already holds, writing this much after an event fills it at least once past the event's
/// last byte, so the event is sent at once.
pub const PAD_BYTES: usize = 8192;

/// A comment of exactly [`PAD_BYTES`] bytes (invisible to the EventSource API).
pub fn padding() -> Bytes {
    let mut out = BytesMut::with_capacity(PAD_BYTES);
    out.put_slice(b":");
    out.put_bytes(b' ', PAD_BYTES - 3);
    out.put_slice(b"\n\n");
    out.freeze()
}

/// Splits on CRLF, CR and LF, as an SSE parser does. An empty string is one empty line, so an
/// empty payload still produces a `data:` field and therefore an event.
fn split_lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    use proptest::prelude::*;

    /// Parses bytes with a real SSE client parser (not ours), as a browser would.
    fn parse(bytes: Bytes) -> Vec<eventsource_stream::Event> {
        let stream =
            futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]).eventsource();
        futures::executor::block_on(stream.collect::<Vec<_>>())
            .into_iter()
            .map(|r| r.expect("parses"))
            .collect()
    }

    proptest! {
        #[test]
        fn the_escaped_length_is_serde_jsons(text in any::<String>()) {
            let json = serde_json::to_string(&text).expect("a string serialises");
            prop_assert_eq!(json_escaped_len(&text), json.len() - 2);
        }
    }

    #[test]
    fn a_plain_event() {
        let b = encode(Some(7), Some("chat"), "{\"a\":1}");
        assert_eq!(&b[..], b"id: 7\nevent: chat\ndata: {\"a\":1}\n\n");
    }

    #[test]
    fn line_breaks_become_data_lines() {
        let b = encode(None, None, "a\r\nb\rc\nd\n");
        assert_eq!(&b[..], b"data: a\ndata: b\ndata: c\ndata: d\ndata: \n\n");
        let events = parse(b);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "a\nb\nc\nd\n");
    }

    #[test]
    fn a_lone_cr_at_the_end_cannot_swallow_the_next_event() {
        let mut both = BytesMut::new();
        both.extend_from_slice(&encode(Some(1), Some("t"), "x\r"));
        both.extend_from_slice(&encode(Some(2), Some("t"), "y"));
        let events = parse(both.freeze());
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].id, "2");
        assert_eq!(events[1].data, "y");
    }

    #[test]
    fn padding_is_one_invisible_comment_of_the_stated_size() {
        let pad = padding();
        assert_eq!(pad.len(), PAD_BYTES);
        let mut both = BytesMut::from(&pad[..]);
        both.extend_from_slice(&encode(Some(1), Some("t"), "x"));
        let events = parse(both.freeze());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "x");
    }

    #[test]
    fn control_frames() {
        assert_eq!(&retry(2000)[..], b"retry: 2000\n\n");
        let pings = parse(ping());
        assert_eq!(pings.len(), 1);
        assert_eq!(
            (
                pings[0].event.as_str(),
                pings[0].data.as_str(),
                pings[0].id.as_str()
            ),
            ("ping", "", "")
        );
    }

    proptest! {
        /// Whatever the text, JSON-encoded the way the hub does it, a real parser gets it back
        /// byte for byte, with the id and event name intact.
        #[test]
        fn any_text_round_trips(text in any::<String>(), id in any::<u64>()) {
            let data = serde_json::to_string(&text).expect("json");
            let events = parse(encode(Some(id), Some("chat"), &data));
            prop_assert_eq!(events.len(), 1);
            prop_assert_eq!(&events[0].id, &id.to_string());
            prop_assert_eq!(&events[0].event, "chat");
            let back: String = serde_json::from_str(&events[0].data).expect("json back");
            prop_assert_eq!(back, text);
        }

        /// Raw data with arbitrary line breaks also survives, up to the normalisation the
        /// format itself does (every line break arrives as LF).
        #[test]
        fn raw_data_round_trips(data in "[a-z\r\n\u{0}\u{2028}é😀]{0,40}") {
            let events = parse(encode(Some(1), Some("t"), &data));
            prop_assert_eq!(events.len(), 1);
            let normalised = data.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(&events[0].data, &normalised);
        }
    }
}
