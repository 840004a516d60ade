//! Retries with exponential backoff and full jitter, honouring the provider's `Retry-After`.

use std::future::Future;
use std::time::Duration;

use super::LlmError;

/// The most attempts a [`RetryPolicy`] may make (the bound on every retry loop).
pub const RETRY_ATTEMPTS_MAX: u32 = 16;

/// How a provider retries a failed request: rate limits (429/529), server errors (5xx),
/// timeouts and dropped connections. Other errors are returned at once.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry; at most [`RETRY_ATTEMPTS_MAX`]).
    pub attempts_max: u32,
    /// The first backoff.
    pub backoff_min: Duration,
    /// The cap on one backoff, and on a provider's `Retry-After`.
    pub backoff_max: Duration,
    /// Full jitter: each backoff is drawn uniformly from `[backoff/2, backoff]`.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// 5 attempts, backoff 250 ms doubling to at most 20 s, with jitter.
    fn default() -> Self {
        Self {
            attempts_max: 5,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(20),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        Self {
            attempts_max: 1,
            ..Self::default()
        }
    }

    /// Checks the bounds.
    ///
    /// # Errors
    /// Names the field that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.attempts_max == 0 || self.attempts_max > RETRY_ATTEMPTS_MAX {
            return Err(format!(
                "retry.attempts_max must be 1..={RETRY_ATTEMPTS_MAX}, got {}",
                self.attempts_max
            ));
        }
        if self.backoff_min > self.backoff_max {
            return Err(format!(
                "retry.backoff_min ({:?}) must not exceed retry.backoff_max ({:?})",
                self.backoff_min, self.backoff_max
            ));
        }
        Ok(())
    }

    /// The wait before attempt `attempt + 1` after attempt `attempt` (1-based) failed with
    /// `error`: the provider's `Retry-After` when it gave one (capped), else exponential
    /// backoff with jitter.
    pub fn delay(&self, attempt: u32, error: &LlmError) -> Duration {
        if let LlmError::RateLimited {
            retry_after_ms: Some(ms),
            ..
        } = error
        {
            return Duration::from_millis(*ms).min(self.backoff_max);
        }
        let shift = attempt.saturating_sub(1).min(20);
        let backoff = self
            .backoff_min
            .saturating_mul(1u32 << shift)
            .min(self.backoff_max);
        if self.jitter {
            let half = backoff / 2;
            half + backoff.saturating_sub(half).mul_f64(fastrand::f64())
        } else {
            backoff
        }
    }

    /// Runs `attempt` until it succeeds, fails with an error that is not retryable, or the
    /// attempts run out; returns the last error then.
    ///
    /// # Errors
    /// The last attempt's error.
    pub async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<T, LlmError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, LlmError>>,
    {
        let attempts_max = self.attempts_max.clamp(1, RETRY_ATTEMPTS_MAX);
        let mut n = 1;
        loop {
            match attempt(n).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && n < attempts_max => {
                    let wait = self.delay(n, &e);
                    tracing::debug!(attempt = n, wait_ms = wait.as_millis() as u64, error = %e, "retrying LLM request");
                    tokio::time::sleep(wait).await;
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads a `Retry-After` header value given in seconds (fractions allowed). HTTP dates are
/// not honoured (backoff applies instead).
pub(crate) fn retry_after_from_header(value: &str) -> Option<u64> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).round() as u64)
}

/// Finds a wait in a rate-limit message such as "Please try again in 2.5s" or "try again in
/// 250ms"; returns milliseconds.
pub fn retry_after_from_message(message: &str) -> Option<u64> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("try again in")? + "try again in".len();
    let rest = lower[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let number: f64 = rest[..end].parse().ok()?;
    let unit = rest[end..].trim_start();
    let ms = if unit.starts_with("ms") {
        number
    } else if unit.starts_with('s') {
        number * 1000.0
    } else if unit.starts_with('m') {
        number * 60_000.0
    } else {
        return None;
    };
    (ms.is_finite() && ms >= 0.0).then(|| ms.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_retry_after_in_all_its_shapes() {
        assert_eq!(retry_after_from_header("2"), Some(2000));
        assert_eq!(retry_after_from_header(" 0.05 "), Some(50));
        assert_eq!(
            retry_after_from_header("Wed, 21 Oct 2015 07:28:00 GMT"),
            None
        );
        assert_eq!(
            retry_after_from_message("Rate limit reached. Please try again in 2.5s. Visit ..."),
            Some(2500)
        );
        assert_eq!(retry_after_from_message("try again in 250ms"), Some(250));
        assert_eq!(retry_after_from_message("Try again in 1m30s"), Some(60_000));
        assert_eq!(retry_after_from_message("slow down"), None);
    }

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        let p = RetryPolicy {
            attempts_max: 5,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
            jitter: false,
        };
        let server = LlmError::Server {
            provider: "p".into(),
            status: 500,
            message: String::new(),
        };
        assert_eq!(p.delay(1, &server), Duration::from_millis(100));
        assert_eq!(p.delay(2, &server), Duration::from_millis(200));
        assert_eq!(p.delay(3, &server), Duration::from_millis(350));
        let limited = LlmError::RateLimited {
            provider: "p".into(),
            retry_after_ms: Some(20),
            message: String::new(),
        };
        assert_eq!(p.delay(1, &limited), Duration::from_millis(20));
        let jittered = RetryPolicy { jitter: true, ..p };
        for _ in 0..100 {
            let d = jittered.delay(2, &server);
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(200));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn run_stops_on_non_retryable_and_after_attempts_max() {
        let p = RetryPolicy {
            attempts_max: 3,
            ..RetryPolicy::default()
        };
        let mut calls = 0;
        let r: Result<(), _> = p
            .run(|_| {
                calls += 1;
                async {
                    Err(LlmError::Server {
                        provider: "p".into(),
                        status: 503,
                        message: String::new(),
                    })
                }
            })
            .await;
        assert!(matches!(r, Err(LlmError::Server { status: 503, .. })));
        assert_eq!(calls, 3);
        let mut calls = 0;
        let r: Result<(), _> = p
            .run(|_| {
                calls += 1;
                async {
                    Err(LlmError::Authentication {
                        provider: "p".into(),
                        message: String::new(),
                    })
                }
            })
            .await;
        assert!(matches!(r, Err(LlmError::Authentication { .. })));
        assert_eq!(calls, 1);
    }
}
