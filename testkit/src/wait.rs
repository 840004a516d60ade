//! Waiting in tests for a condition that no event announces (a record another process
//! writes, a status read over HTTP), instead of a hand-written polling loop in each test.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// The first pause between two checks; it doubles up to [`EVENTUALLY_PAUSE_MAX`].
pub const EVENTUALLY_PAUSE_MIN: Duration = Duration::from_millis(5);
/// The longest pause between two checks.
pub const EVENTUALLY_PAUSE_MAX: Duration = Duration::from_millis(100);

/// What one check of [`eventually`] found: `Some`/`Ok` ends the wait; `None` goes on, and so
/// does `Err`, whose text the panic at the deadline shows (the last state seen).
pub trait Outcome {
    /// What the wait returns.
    type Value;
    /// The value, or what was seen instead.
    fn into_outcome(self) -> Result<Self::Value, Option<String>>;
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_outcome(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Display> Outcome for Result<T, E> {
    type Value = T;
    fn into_outcome(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(e.to_string()))
    }
}

/// Checks `check` until it yields `Some` (or `Ok`), pausing 5 ms, then twice as long each
/// time, up to 100 ms, and returns what it yielded. Panics when `within` passes first,
/// naming `what` and, when the check returns `Err`, the last state it saw.
///
/// Use it where nothing can be awaited; where an event, a channel or a notification exists,
/// await that instead.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// let started = std::time::Instant::now();
/// let waited = aios_testkit::eventually("20 ms to pass", Duration::from_secs(5), || async {
///     let t = started.elapsed();
///     if t >= Duration::from_millis(20) { Ok(t) } else { Err(format!("{t:?} so far")) }
/// })
/// .await;
/// assert!(waited >= Duration::from_millis(20));
/// # });
/// ```
pub async fn eventually<O, F, Fut>(what: &str, within: Duration, mut check: F) -> O::Value
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = EVENTUALLY_PAUSE_MIN;
    loop {
        let last = match check().await.into_outcome() {
            Ok(done) => return done,
            Err(seen) => seen,
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            match last {
                Some(seen) => panic!("not within {within:?}: {what}; last seen: {seen}"),
                None => panic!("not within {within:?}: {what}"),
            }
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(EVENTUALLY_PAUSE_MAX);
    }
}
