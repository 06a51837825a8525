//! Redis stream ids and SSE ids, one to one.
//!
//! A Redis stream id is `<ms>-<seq>`: the Unix time in milliseconds of the entry (Redis's
//! clock) and a sequence number within that millisecond. The SSE id (the event's `id`, the
//! browser's `Last-Event-ID`) is the single number
//!
//! ```text
//! sse = ms × 1000 + seq          with seq < 1000
//! ms  = sse / 1000,  seq = sse % 1000
//! ```
//!
//! This keeps the scale of the in-process ids (microseconds since the epoch, about 1.8 × 10^15
//! today, far below 2^53, so JavaScript reads them exactly) and their order: a later stream
//! entry always has a larger SSE id. Redis itself allows any `seq`; ours stays below 1000
//! because this server stores entries with ids it chooses (see `PUBLISH_SCRIPT` in
//! `redis.rs`): the 1001st entry of one millisecond moves on to the next millisecond.
//! An entry written by something else with `seq >= 1000` has no SSE id and is skipped.

/// The largest `seq` an SSE id can carry.
pub const MAX_SEQ: u64 = 999;

/// A stream id, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// `"1764081234567-3"`; `None` for anything else.
    pub fn parse(text: &str) -> Option<StreamId> {
        let (ms, seq) = text.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The SSE id, or `None` when `seq` is too large or the number would not fit.
    pub fn to_sse(self) -> Option<u64> {
        if self.seq > MAX_SEQ {
            return None;
        }
        self.ms.checked_mul(1000)?.checked_add(self.seq)
    }

    /// The stream id of an SSE id (every SSE id has one).
    pub fn from_sse(id: u64) -> StreamId {
        StreamId {
            ms: id / 1000,
            seq: id % 1000,
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_documented_examples() {
        let id = StreamId::parse("1764081234567-3").expect("a stream id");
        assert_eq!(
            id,
            StreamId {
                ms: 1_764_081_234_567,
                seq: 3
            }
        );
        assert_eq!(id.to_sse(), Some(1_764_081_234_567_003));
        assert_eq!(StreamId::from_sse(1_764_081_234_567_003), id);
        assert_eq!(id.to_string(), "1764081234567-3");
        assert_eq!(StreamId::parse("0-0").and_then(StreamId::to_sse), Some(0));
        // Today's ids are far below 2^53: JavaScript numbers hold them exactly.
        assert!(id.to_sse().expect("fits") < 1 << 53);
    }

    #[test]
    fn what_has_no_sse_id() {
        assert_eq!(StreamId { ms: 5, seq: 1000 }.to_sse(), None);
        assert_eq!(
            StreamId {
                ms: u64::MAX,
                seq: 0
            }
            .to_sse(),
            None
        );
        for bad in [
            "",
            "-",
            "1",
            "1-",
            "-1",
            "a-1",
            "1-b",
            "1-2-3",
            "+1-2",
            "1 -2",
            "99999999999999999999-0",
        ] {
            assert_eq!(StreamId::parse(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn sse_ids_round_trip(id in 0u64..u64::MAX / 1000 * 1000) {
            let stream = StreamId::from_sse(id);
            prop_assert!(stream.seq <= MAX_SEQ);
            prop_assert_eq!(stream.to_sse(), Some(id));
            prop_assert_eq!(StreamId::parse(&stream.to_string()), Some(stream));
        }

        #[test]
        fn the_order_is_kept(a_ms in 0u64..1 << 44, a_seq in 0..=MAX_SEQ, b_ms in 0u64..1 << 44, b_seq in 0..=MAX_SEQ) {
            let (a, b) = (StreamId { ms: a_ms, seq: a_seq }, StreamId { ms: b_ms, seq: b_seq });
            prop_assert_eq!(a.cmp(&b), a.to_sse().cmp(&b.to_sse()));
        }
    }
}
