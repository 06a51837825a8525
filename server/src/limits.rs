//! What keeps one client from taking the server: the caps on connections and streams (in
//! total and per address) and the publish rate limit. Their answers carry a jittered
//! `Retry-After`, so a crowd turned away together does not come back together.

use crate::error::ApiError;
use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::{
    collections::HashMap,
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

/// A duration spread by ±25 % at random.
pub fn jitter(base: Duration) -> Duration {
    base.mul_f64(0.75 + fastrand::f64() * 0.5)
}

/// 503 for a stream past the cap: the browser's EventSource gives up on a non-200 answer, our
/// client retries with backoff, and other clients honour `Retry-After`.
pub fn too_many_streams(open: usize) -> Response {
    let retry = retry_after();
    tracing::warn!(
        open,
        retry_after = retry,
        "stream refused: at the EVENTS_MAX_STREAMS cap"
    );
    unavailable("too many open streams; retry later", retry)
}

/// 503 for a stream past the per-address cap.
pub fn too_many_streams_from(client: IpAddr, open: usize) -> Response {
    let retry = retry_after();
    tracing::warn!(
        %client,
        open,
        retry_after = retry,
        "stream refused: at the EVENTS_MAX_STREAMS_PER_ADDR cap"
    );
    unavailable(
        "too many open streams from this address; retry later",
        retry,
    )
}

/// About ten seconds, jittered, in whole seconds.
fn retry_after() -> u64 {
    jitter(Duration::from_secs(10)).as_secs().max(1)
}

/// 503 with `{"error"}` and `Retry-After`.
fn unavailable(error: &str, retry: u64) -> Response {
    let mut res = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({ "error": error })),
    )
        .into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry));
    res
}

/// Whether `ip` is in one of `nets` (an IPv4 address mapped into IPv6 counts as IPv4).
pub fn is_listed(nets: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|n| n.contains(&ip))
}

/// Counts what each address holds open (connections, or streams) against a cap. One lock per
/// open and per close, none per delivery; an address's entry is removed when its count
/// returns to zero, so the map holds only addresses with something open.
#[derive(Clone, Default)]
pub struct PerAddress {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One thing held open by an address; given back when dropped.
pub struct Slot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerAddress {
    /// A slot for `ip` if it holds fewer than `max` (0: no limit); else what it holds.
    pub fn acquire(&self, ip: IpAddr, max: usize) -> Result<Slot, usize> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if max > 0 && *count >= max {
            return Err(*count);
        }
        *count += 1;
        Ok(Slot {
            open: self.open.clone(),
            ip,
        })
    }

    /// What `ip` holds now.
    pub fn count(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Publishes per client address, with the `governor` crate's GCRA (a token bucket without a
/// timer per key). Keys are evicted by `retain_recent`, called as publishes happen.
pub struct PublishLimit {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl PublishLimit {
    pub fn new(per_second: u32) -> PublishLimit {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        PublishLimit { limiter }
    }

    pub fn check(&self, client: IpAddr) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        limiter.check_key(&client).map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "publishing too fast from this address; slow down",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_secs(4)).as_secs_f64();
            assert!((3.0..=5.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn slots_are_counted_per_address_and_given_back() {
        let per = PerAddress::default();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = per.acquire(a, 2).expect("first");
        let second = per.acquire(mapped, 2).expect("the same address, mapped");
        assert_eq!(per.acquire(a, 2).err(), Some(2), "at the cap");
        assert!(per.acquire(b, 2).is_ok(), "another address is not affected");
        drop(first);
        assert_eq!(per.count(a), 1);
        let third = per.acquire(a, 2).expect("room again");
        drop((second, third));
        assert_eq!(per.count(a), 0);
        assert!(
            per.open.lock().expect("lock").is_empty(),
            "no entry is left behind"
        );
        let many: Vec<_> = (0..100)
            .map(|_| per.acquire(a, 0).expect("no limit"))
            .collect();
        assert_eq!(per.count(a), many.len());
    }

    #[test]
    fn listed_addresses_match_exactly_or_by_prefix() {
        let nets: Vec<ipnet::IpNet> = ["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32"]
            .iter()
            .map(|n| n.parse().expect("net"))
            .collect();
        let yes = ["127.0.0.1", "10.200.3.4", "::ffff:10.1.1.1", "2001:db8::7"];
        let no = ["127.0.0.2", "11.0.0.1", "2001:db9::1", "::1"];
        for ip in yes {
            assert!(is_listed(&nets, ip.parse().expect("ip")), "{ip}");
        }
        for ip in no {
            assert!(!is_listed(&nets, ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn the_limit_is_per_address_and_allows_a_burst() {
        let limit = PublishLimit::new(5);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let allowed = (0..50).filter(|_| limit.check(a).is_ok()).count();
        assert_eq!(allowed, 10, "a burst of twice the rate, then refusals");
        assert!(limit.check(b).is_ok(), "another address is not affected");
        assert!(PublishLimit::new(0).check(a).is_ok(), "0 turns it off");
    }
}
