//! Waiting in tests for a condition that no event announces (a record another process
//! writes, a status read over HTTP), instead of a hand-written polling loop in each test.

use std::future::Future;
use std::time::Duration;

/// The first pause between two checks; it doubles up to [`EVENTUALLY_PAUSE_MAX`].
pub const EVENTUALLY_PAUSE_MIN: Duration = Duration::from_millis(5);
/// The longest pause between two checks.
pub const EVENTUALLY_PAUSE_MAX: Duration = Duration::from_millis(100);

/// Checks `check` until it yields `Some`, pausing 5 ms, then twice as long each time, up to
/// 100 ms, and returns what it yielded. Panics when `within` passes first, naming `what`.
///
/// Use it where nothing can be awaited; where an event, a channel or a notification exists,
/// await that instead.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// let started = std::time::Instant::now();
/// let waited = aios_testkit::eventually("20 ms to pass", Duration::from_secs(5), || async {
///     (started.elapsed() >= Duration::from_millis(20)).then(|| started.elapsed())
/// })
/// .await;
/// assert!(waited >= Duration::from_millis(20));
/// # });
/// ```
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = EVENTUALLY_PAUSE_MIN;
    loop {
        if let Some(done) = check().await {
            return done;
        }
        let now = tokio::time::Instant::now();
        assert!(now < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(EVENTUALLY_PAUSE_MAX);
    }
}
