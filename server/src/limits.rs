//! What keeps one client from taking the server: the stream cap and the publish rate limit.
//! Their answers carry a jittered `Retry-After`, so a crowd turned away together does not come
//! back together.

use crate::error::ApiError;
use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::{net::IpAddr, num::NonZeroU32, time::Duration};

/// A duration spread by ±25 % at random.
pub fn jitter(base: Duration) -> Duration {
    base.mul_f64(0.75 + fastrand::f64() * 0.5)
}

/// 503 for a stream past the cap: the browser's EventSource gives up on a non-200 answer, our
/// client retries with backoff, and other clients honour `Retry-After`.
pub fn too_many_streams(open: usize) -> Response {
    let retry = jitter(Duration::from_secs(10)).as_secs().max(1);
    tracing::warn!(
        open,
        retry_after = retry,
        "stream refused: at the EVENTS_MAX_STREAMS cap"
    );
    let mut res = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({ "error": "too many open streams; retry later" })),
    )
        .into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry));
    res
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
