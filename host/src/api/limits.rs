//! Request rate limits: token buckets per API key (requests per second) and
//! per tenant (runs started per minute). Over a limit: 429 with
//! `Retry-After`. Kept in memory per host.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

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

struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct Limiter {
    pub limits: RateLimits,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::default(),
        }
    }

    /// Takes a token from `key`'s bucket, refilled at `per_second` up to `burst`.
    fn take(&self, key: String, per_second: f64, burst: f64) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > 100_000 {
            buckets.retain(|_, b| now.duration_since(b.updated).as_secs() < 600);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        bucket.tokens = (bucket.tokens
            + now.duration_since(bucket.updated).as_secs_f64() * per_second)
            .min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / per_second).ceil().max(1.0);
            Err(ApiError::TooManyRequests {
                retry_after: wait as u64,
            })
        }
    }

    pub fn request(&self, key_id: &str) -> Result<(), ApiError> {
        let rate = self.limits.requests_per_second;
        self.take(format!("key:{key_id}"), rate, rate * 2.0)
    }

    pub fn start_run(&self, tenant: &str) -> Result<(), ApiError> {
        let per_minute = self.limits.runs_per_minute;
        self.take(format!("runs:{tenant}"), per_minute / 60.0, per_minute)
    }
}
