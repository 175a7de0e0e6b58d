//! Waiting for something to become true, with a deadline: the one polling schedule the tests
//! use, so that no test sleeps a fixed time hoping it was long enough, and none spins.
//!
//! The schedule: look at once, again after 20 ms, then twice as long each time, at most 200 ms
//! between looks, and a last look at the deadline. A quick condition is seen quickly; a probe
//! that sends a request does not flood the handler (and its trace-level output) during a wait
//! of many seconds.

use std::future::Future;
use std::time::{Duration, Instant};

/// The first pause between two looks.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
/// The longest pause between two looks.
const LONGEST_PAUSE: Duration = Duration::from_millis(200);

/// The pauses between looks, up to a deadline.
struct Schedule {
    deadline: Instant,
    pause: Duration,
}

impl Schedule {
    fn new(timeout: Duration) -> Schedule {
        Schedule {
            deadline: Instant::now() + timeout,
            pause: FIRST_PAUSE,
        }
    }

    /// How long to pause before the next look, or `None` once the deadline has passed.
    fn next_pause(&mut self) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        let pause = self.pause.min(left);
        self.pause = (self.pause * 2).min(LONGEST_PAUSE);
        Some(pause)
    }
}

/// Calls `probe` until it returns `Some`, for at most `timeout`; `None` if it never did.
pub(crate) async fn poll<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let mut schedule = Schedule::new(timeout);
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        tokio::time::sleep(schedule.next_pause()?).await;
    }
}

/// Waits until `condition` holds and returns how long that took; panics naming `what` if it
/// does not hold within `timeout`.
pub(crate) async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    poll(timeout, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
    .unwrap_or_else(|| panic!("waited {timeout:?} for {what}"));
    started.elapsed()
}

/// [`poll`] for a thread that may block (no runtime): calls `probe` until it returns `Some`,
/// for at most `timeout`.
pub(crate) fn poll_blocking<T>(
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let mut schedule = Schedule::new(timeout);
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        std::thread::sleep(schedule.next_pause()?);
    }
}
