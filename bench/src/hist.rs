//! Latency histograms: recorded in microseconds, shipped between processes as raw bucket
//! counts (JSON-friendly, exact: each count is re-recorded into the same bucket), summarised
//! in milliseconds.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One histogram's non-empty buckets: (value in µs, count).
pub type Buckets = Vec<(u64, u64)>;

/// 1 µs to an hour, 3 significant digits.
pub fn new() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

pub fn record_us(h: &mut Histogram<u64>, micros: u64) {
    h.saturating_record(micros.max(1));
}

pub fn to_buckets(h: &Histogram<u64>) -> Buckets {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

pub fn merge(into: &mut Histogram<u64>, buckets: &[(u64, u64)]) {
    for &(value, count) in buckets {
        into.saturating_record_n(value, count);
    }
}

/// Percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

pub fn summary(h: &Histogram<u64>) -> Summary {
    if h.is_empty() {
        return Summary::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Summary {
        count: h.len(),
        p50: ms(h.value_at_quantile(0.5)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_buckets_give_the_percentiles_of_all_samples() {
        let (mut a, mut b, mut all) = (new(), new(), new());
        for v in 1..=10_000u64 {
            let us = v * 37 % 50_000 + 1;
            if v % 3 == 0 {
                record_us(&mut a, us);
            } else {
                record_us(&mut b, us);
            }
            record_us(&mut all, us);
        }
        record_us(&mut b, 2_500_000); // one slow outlier in one worker
        record_us(&mut all, 2_500_000);
        let mut merged = new();
        merge(&mut merged, &to_buckets(&a));
        merge(&mut merged, &to_buckets(&b));
        assert_eq!(summary(&merged), summary(&all));
        assert_eq!(merged.len(), 10_001);
        let s = summary(&merged);
        assert!((s.max - 2500.0).abs() < 2.0, "{s:?}");
        assert!((20.0..30.0).contains(&s.p50), "{s:?}");
    }

    #[test]
    fn buckets_survive_json() {
        let mut h = new();
        record_us(&mut h, 1234);
        record_us(&mut h, 0);
        let json = serde_json::to_string(&to_buckets(&h)).expect("json");
        let back: Buckets = serde_json::from_str(&json).expect("parse");
        let mut again = new();
        merge(&mut again, &back);
        assert_eq!(summary(&again), summary(&h));
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(summary(&new()), Summary::default());
    }
}
