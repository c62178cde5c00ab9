//! Request rate limits: per API key (requests per second) and per tenant
//! (runs started per minute), each a `governor` keyed limiter (GCRA, which
//! behaves as a token bucket refilled at the rate up to the burst). Over a
//! limit: 429 with `Retry-After`, the whole seconds until one more would
//! pass (at least 1). Kept in memory per host.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};

use super::ApiError;

/// Operator settings.
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// Sustained requests per second per key (bursts up to twice that).
    pub requests_per_second: f64,
    /// Runs a tenant may start per minute (bursts up to that many at once).
    pub runs_per_minute: f64,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            requests_per_second: 100.0,
            runs_per_minute: 1200.0,
        }
    }
}

/// Keys a limiter holds before it forgets the idle ones.
const MAX_KEYS: usize = 100_000;

pub struct Limiter {
    pub limits: RateLimits,
    /// Keyed by API key id (or a JWT's tenant and signing key).
    requests: DefaultKeyedRateLimiter<String>,
    /// Keyed by tenant id.
    runs: DefaultKeyedRateLimiter<String>,
}

impl Limiter {
    pub fn new(limits: RateLimits) -> Self {
        let rate = limits.requests_per_second;
        let per_minute = limits.runs_per_minute;
        Self {
            limits,
            requests: DefaultKeyedRateLimiter::keyed(quota(rate, rate * 2.0)),
            runs: DefaultKeyedRateLimiter::keyed(quota(per_minute / 60.0, per_minute)),
        }
    }

    pub fn request(&self, key_id: &str) -> Result<(), ApiError> {
        take(&self.requests, key_id)
    }

    pub fn start_run(&self, tenant: &str) -> Result<(), ApiError> {
        take(&self.runs, tenant)
    }
}

/// Refilled at `per_second`, holding at most `burst` (at least one).
fn quota(per_second: f64, burst: f64) -> Quota {
    let period = Duration::try_from_secs_f64(1.0 / per_second)
        .unwrap_or(Duration::MAX)
        .max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(burst.floor().clamp(1.0, f64::from(u32::MAX)) as u32)
        .unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| unreachable!("the period is at least 1 ns"))
        .allow_burst(burst)
}

fn take(limiter: &DefaultKeyedRateLimiter<String>, key: &str) -> Result<(), ApiError> {
    if limiter.len() > MAX_KEYS {
        limiter.retain_recent();
    }
    limiter.check_key(&key.to_owned()).map_err(|not_until| {
        let wait = not_until.wait_time_from(limiter.clock().now());
        ApiError::TooManyRequests {
            retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{Limiter, RateLimits};
    use crate::api::ApiError;

    fn retry_after(result: Result<(), ApiError>) -> Option<u64> {
        match result {
            Ok(()) => None,
            Err(ApiError::TooManyRequests { retry_after }) => Some(retry_after),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn bursts_pass_then_429_says_when_to_retry() {
        let limiter = Limiter::new(RateLimits {
            requests_per_second: 2.0,
            runs_per_minute: 3.0,
        });
        let requests: Vec<_> = (0..5).map(|_| retry_after(limiter.request("k"))).collect();
        assert_eq!(requests, [None, None, None, None, Some(1)]);
        assert_eq!(retry_after(limiter.request("another key")), None);
        let runs: Vec<_> = (0..4)
            .map(|_| retry_after(limiter.start_run("t")))
            .collect();
        assert_eq!(runs, [None, None, None, Some(20)]);
    }

    #[test]
    fn a_rate_below_one_per_second_still_lets_one_request_through() {
        let limiter = Limiter::new(RateLimits {
            requests_per_second: 0.1,
            runs_per_minute: 1.0,
        });
        assert_eq!(retry_after(limiter.request("k")), None);
        assert_eq!(retry_after(limiter.request("k")), Some(10));
        assert_eq!(retry_after(limiter.start_run("t")), None);
        assert_eq!(retry_after(limiter.start_run("t")), Some(60));
    }
}
