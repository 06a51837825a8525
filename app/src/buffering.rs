//! Diagnoses the original report's symptom from what the page receives: events sent at a
//! steady pace that arrive in bursts (a silence, then several at once) were held somewhere
//! between the server and the browser — HttpPlatformHandler, IIS dynamic compression, or a
//! proxy's response buffering.
//!
//! It compares send times with arrival times *within* a burst, so a clock difference between
//! the server and the browser (which shifts every delay alike) does not fool it.

/// One live delivery: the server's send time and the browser's arrival time, both in Unix ms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub sent_ms: f64,
    pub arrived_ms: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Too few live events to tell.
    Measuring,
    /// Events arrive as they are sent.
    Live,
    /// `count` events sent over `sent_span_ms` arrived within `arrival_span_ms`.
    Buffered {
        count: usize,
        sent_span_ms: f64,
        arrival_span_ms: f64,
    },
}

/// Arrivals this close together count as one burst.
const BURST_GAP_MS: f64 = 100.0;
/// A burst must hold events whose sending was spread over at least this long: a publisher
/// that really sent them at once is not a sign of buffering.
const MIN_SENT_SPAN_MS: f64 = 1000.0;
const MIN_BURST: usize = 3;

/// Looks at the samples of the last `window_ms` before `now_ms`.
pub fn assess(samples: &[Sample], now_ms: f64, window_ms: f64) -> Verdict {
    let mut recent: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.arrived_ms >= now_ms - window_ms)
        .collect();
    if recent.len() < MIN_BURST {
        return Verdict::Measuring;
    }
    sort_by_key_f64(&mut recent, |s| s.arrived_ms);
    let mut worst: Option<Verdict> = None;
    let mut start = 0;
    for end in 1..=recent.len() {
        let split = end == recent.len()
            || recent[end].arrived_ms - recent[end - 1].arrived_ms > BURST_GAP_MS;
        if !split {
            continue;
        }
        let group = &recent[start..end];
        start = end;
        if group.len() < MIN_BURST {
            continue;
        }
        let sent_min = group
            .iter()
            .map(|s| s.sent_ms)
            .fold(f64::INFINITY, f64::min);
        let sent_max = group
            .iter()
            .map(|s| s.sent_ms)
            .fold(f64::NEG_INFINITY, f64::max);
        let sent_span_ms = sent_max - sent_min;
        if sent_span_ms < MIN_SENT_SPAN_MS {
            continue;
        }
        let arrival_span_ms = group[group.len() - 1].arrived_ms - group[0].arrived_ms;
        let bigger = match &worst {
            Some(Verdict::Buffered { count, .. }) => group.len() > *count,
            _ => true,
        };
        if bigger {
            worst = Some(Verdict::Buffered {
                count: group.len(),
                sent_span_ms,
                arrival_span_ms,
            });
        }
    }
    worst.unwrap_or(Verdict::Live)
}

/// Sorts by an `f64` key (`total_cmp` order), stable. An insertion sort: the page's samples
/// come nearly in order (newest first, reversed) and are at most a few hundred, and the
/// standard library's sort is several kilobytes of the WebAssembly client.
pub fn sort_by_key_f64<T: Copy>(items: &mut [T], key: impl Fn(&T) -> f64) {
    for i in 1..items.len() {
        let item = items[i];
        let k = key(&item);
        let mut j = i;
        while j > 0 && key(&items[j - 1]).total_cmp(&k).is_gt() {
            items[j] = items[j - 1];
            j -= 1;
        }
        items[j] = item;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(n: usize, every: f64, delay: impl Fn(usize) -> f64) -> Vec<Sample> {
        (0..n)
            .map(|i| {
                let sent_ms = 1_000_000.0 + i as f64 * every;
                Sample {
                    sent_ms,
                    arrived_ms: sent_ms + delay(i),
                }
            })
            .collect()
    }

    #[test]
    fn steady_arrivals_are_live_whatever_the_clock_offset() {
        let s = steady(20, 1000.0, |_| 3.0);
        assert_eq!(assess(&s, 1_020_000.0, 60_000.0), Verdict::Live);
        // The browser's clock 5 s behind: every delay is off, the verdict is not.
        let s = steady(20, 1000.0, |_| -5000.0);
        assert_eq!(assess(&s, 1_015_000.0, 60_000.0), Verdict::Live);
    }

    #[test]
    fn held_then_released_is_buffering() {
        // Sent every second, released eight at a time (as an 8 KB buffer does).
        let s = steady(16, 1000.0, |i| (7 - (i % 8)) as f64 * 1000.0 + 2.0);
        match assess(&s, 1_016_000.0, 60_000.0) {
            Verdict::Buffered {
                count,
                sent_span_ms,
                arrival_span_ms,
            } => {
                assert_eq!(count, 8);
                assert_eq!(sent_span_ms, 7000.0);
                assert!(arrival_span_ms < BURST_GAP_MS);
            }
            v => panic!("expected buffering, got {v:?}"),
        }
    }

    #[test]
    fn a_real_burst_from_the_publisher_is_not_buffering() {
        // Fifty events published in 200 ms arrive together, as they should.
        let s = steady(50, 4.0, |_| 2.0);
        assert_eq!(assess(&s, 1_000_300.0, 60_000.0), Verdict::Live);
    }

    #[test]
    fn the_insertion_sort_sorts() {
        let mut v = [3.0, -1.0, 2.5, 2.5, 10.0, 0.0, -7.25];
        sort_by_key_f64(&mut v, |x| *x);
        assert_eq!(v, [-7.25, -1.0, 0.0, 2.5, 2.5, 3.0, 10.0]);
        let mut pairs = [(1.0, 'a'), (0.0, 'b'), (1.0, 'c')];
        sort_by_key_f64(&mut pairs, |p| p.0);
        assert_eq!(pairs, [(0.0, 'b'), (1.0, 'a'), (1.0, 'c')], "stable");
    }

    #[test]
    fn too_little_data_and_old_data() {
        assert_eq!(assess(&[], 0.0, 60_000.0), Verdict::Measuring);
        let s = steady(16, 1000.0, |i| (7 - (i % 8)) as f64 * 1000.0);
        assert_eq!(assess(&s, 2_000_000.0, 60_000.0), Verdict::Measuring);
    }
}
