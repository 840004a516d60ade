//! Token buckets for requests/min and tokens/min limits.

use std::time::{Duration, Instant};

/// A token bucket refilled continuously at `per_minute / 60` per second, holding at most
/// `per_minute`. Taking may drive it below zero (a debt) when actual usage exceeds the
/// estimate taken up front; the debt delays later requests.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket allowing `per_minute` per minute.
    pub fn per_minute(per_minute: u64, now: Instant) -> Self {
        let capacity = per_minute.max(1) as f64;
        Self {
            capacity,
            per_sec: capacity / 60.0,
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.capacity);
        self.last = now;
    }

    /// How long until `n` can be taken (zero when it can be now). A request larger than the
    /// bucket waits until the bucket is full.
    pub fn wait_for(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        let need = (n as f64).min(self.capacity);
        if self.tokens >= need {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((need - self.tokens) / self.per_sec)
        }
    }

    /// Takes `n` (call after [`TokenBucket::wait_for`] returned zero).
    pub fn take(&mut self, n: u64, now: Instant) {
        self.refill(now);
        self.tokens -= n as f64;
    }

    /// Corrects an earlier take by `delta` (positive: more was used than taken).
    pub fn adjust(&mut self, delta: i64, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens - delta as f64).min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_at_rate_and_carries_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_minute(60, t0);
        assert_eq!(b.wait_for(60, t0), Duration::ZERO);
        b.take(60, t0);
        let w = b.wait_for(1, t0);
        assert!((w.as_secs_f64() - 1.0).abs() < 1e-6, "{w:?}");
        assert_eq!(b.wait_for(1, t0 + Duration::from_secs(1)), Duration::ZERO);
        b.adjust(30, t0 + Duration::from_secs(1));
        let w = b.wait_for(1, t0 + Duration::from_secs(1));
        assert!((w.as_secs_f64() - 30.0).abs() < 1e-6, "{w:?}");
    }
}
