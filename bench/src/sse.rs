//! The load generator's side of the stream: cut the body into frames, find the marker.
//!
//! Hand-written on purpose: the generator shares two cores with the server it measures, so
//! per delivery it does only what it must: find where a frame ends (a blank line) and one
//! marker in it. Measured on our server's frames (`cargo run --release -p bench --example
//! splitter_cost`): about 70 ns per frame here, against about 1,300 ns with the
//! `eventsource-stream` crate (a `String` per field and per event), which would add about half
//! again to the generator's whole cost per delivery (about 3 µs with hyper and the syscalls).
//! Frames end at an empty line after LF or CRLF (every server measured here sends LF); a lone
//! CR is not treated as a line end.

use memchr::memchr_iter;
use memchr::memmem;

/// The publisher's stamp inside an event's text: `t=<unix ns>;s=<seq>;`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    pub sent_ns: u64,
    pub seq: u64,
}

/// The text a publish carries: the marker, then `x` up to `size` bytes (never shorter than the
/// marker itself).
pub fn marker_text(sent_ns: u64, seq: u64, size: usize) -> String {
    let mut text = format!("t={sent_ns};s={seq};");
    if text.len() < size {
        text.extend(std::iter::repeat_n('x', size - text.len()));
    }
    text
}

/// The first well-formed marker in `frame`, wherever the server's wrapper puts the text.
pub fn find_marker(frame: &[u8]) -> Option<Marker> {
    let finder = memmem::Finder::new(b"t=");
    let mut from = 0;
    while let Some(at) = finder.find(&frame[from..]) {
        let start = from + at + 2;
        if let Some(marker) = parse_after_t(&frame[start..]) {
            return Some(marker);
        }
        from = start;
    }
    None
}

/// `<digits>;s=<digits>;` at the start of `rest`.
fn parse_after_t(rest: &[u8]) -> Option<Marker> {
    let (sent_ns, rest) = digits(rest)?;
    let rest = rest.strip_prefix(b";s=")?;
    let (seq, rest) = digits(rest)?;
    rest.starts_with(b";").then_some(Marker { sent_ns, seq })
}

fn digits(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    let value = s[..n]
        .iter()
        .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
    Some((value, &s[n..]))
}

/// Does the frame carry a `data` field, i.e. would a browser dispatch it as an event? The
/// `retry:`-only frame our server sends first and comment-only pings do not.
pub fn has_data(frame: &[u8]) -> bool {
    frame
        .split(|&b| b == b'\n')
        .any(|line| line.starts_with(b"data"))
}

/// Cuts a byte stream into frames (the bytes before each blank line), across chunk boundaries.
#[derive(Default)]
pub struct FrameSplitter {
    /// The start of a frame whose end has not arrived yet.
    pending: Vec<u8>,
}

impl FrameSplitter {
    /// Calls `on_frame` with every frame that `chunk` completes; empty frames are skipped.
    pub fn push(&mut self, chunk: &[u8], mut on_frame: impl FnMut(&[u8])) {
        if self.pending.is_empty() {
            // The usual case: whole frames in one chunk, no copy.
            let used = split(chunk, &mut on_frame);
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let used = split(&self.pending, &mut on_frame);
            self.pending.drain(..used);
        }
    }
}

/// Emits each complete frame of `data`; returns how many bytes were consumed.
fn split(data: &[u8], on_frame: &mut impl FnMut(&[u8])) -> usize {
    let mut frame_start = 0;
    let mut line_start = 0;
    for nl in memchr_iter(b'\n', data) {
        let line = &data[line_start..nl];
        if line.is_empty() || line == b"\r" {
            if line_start > frame_start {
                on_frame(&data[frame_start..line_start]);
            }
            frame_start = nl + 1;
        }
        line_start = nl + 1;
    }
    frame_start
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &[u8] = b"retry: 2000\n\nid: 0\nevent: ready\ndata: {\"head\":0,\"heartbeat_ms\":15000}\n\nid: 7\nevent: tick\ndata: {\"id\":7,\"topic\":\"tick\",\"text\":\"t=1700000000123456789;s=42;xxxx\",\"sent_ms\":1700000000123}\n\nevent: ping\ndata: \n\n";

    fn frames_of(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut splitter = FrameSplitter::default();
        let mut out = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |f| out.push(f.to_vec()));
        }
        out
    }

    #[test]
    fn splits_frames_at_blank_lines() {
        let frames = frames_of(&[OURS]);
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0], b"retry: 2000\n");
        assert!(frames[1].starts_with(b"id: 0\nevent: ready\n"));
        assert_eq!(frames[3], b"event: ping\ndata: \n");
    }

    #[test]
    fn every_chunking_gives_the_same_frames_and_one_marker() {
        let whole = frames_of(&[OURS]);
        // Every split point, and byte-by-byte.
        for cut in 0..=OURS.len() {
            assert_eq!(
                frames_of(&[&OURS[..cut], &OURS[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = OURS.chunks(1).collect();
        let frames = frames_of(&bytes);
        assert_eq!(frames, whole);
        let markers: Vec<Marker> = frames.iter().filter_map(|f| find_marker(f)).collect();
        assert_eq!(
            markers,
            [Marker {
                sent_ns: 1_700_000_000_123_456_789,
                seq: 42
            }]
        );
    }

    #[test]
    fn crlf_frames_split_too() {
        let frames = frames_of(&[
            b"event: ready\r\ndata: {}\r\n\r\ndata: t=5;s=1;\r\n",
            b"\r\n",
        ]);
        assert_eq!(frames.len(), 2);
        assert_eq!(find_marker(&frames[1]), Some(Marker { sent_ns: 5, seq: 1 }));
    }

    #[test]
    fn an_unfinished_frame_waits_for_its_end() {
        assert!(frames_of(&[b"data: t=5;s=1;"]).is_empty());
        assert!(frames_of(&[b"data: t=5;s=1;\n"]).is_empty());
    }

    #[test]
    fn marker_needs_its_whole_shape() {
        assert_eq!(
            find_marker(b"data: {\"text\":\"t=12;s=3;\"}"),
            Some(Marker {
                sent_ns: 12,
                seq: 3
            })
        );
        // A `t=` that is not a marker before the real one.
        assert_eq!(
            find_marker(b"data: at=x t=9;s=8;"),
            Some(Marker { sent_ns: 9, seq: 8 })
        );
        assert_eq!(find_marker(b"data: t=12;s=3"), None, "no closing ;");
        assert_eq!(find_marker(b"data: t=;s=3;"), None);
        assert_eq!(
            find_marker(b"data: t=99999999999999999999;s=3;"),
            None,
            "overflow"
        );
        assert_eq!(find_marker(b"event: ready\ndata: {}"), None);
    }

    #[test]
    fn marker_text_is_padded_to_size() {
        let text = marker_text(123, 4, 100);
        assert_eq!(text.len(), 100);
        assert!(text.starts_with("t=123;s=4;x"));
        assert_eq!(
            find_marker(text.as_bytes()),
            Some(Marker {
                sent_ns: 123,
                seq: 4
            })
        );
        assert_eq!(marker_text(123, 4, 3), "t=123;s=4;");
    }

    #[test]
    fn data_frames_are_events_retry_and_comments_are_not() {
        assert!(!has_data(b"retry: 2000\n"));
        assert!(!has_data(b": ping\n"));
        assert!(has_data(b"event: ready\ndata: {}\n"));
        assert!(has_data(b"event: ping\ndata: \n"));
    }
}
