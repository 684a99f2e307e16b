//! One deadline per run, and the jittered exponential backoff that lives inside it.
//!
//! A Zabbix agent kills a UserParameter that outlives its `Timeout`, so every tool computes one
//! [`Deadline`] at start-up and bounds every connect, read, write and sleep by what is left of it.

use std::fmt;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::outcome::{Classify, Failure};

/// How long after the deadline [`within`] may wait for work that watches the deadline itself
/// (every socket does), so that its own, more precise error (unreachable, timed out while
/// sending) is the one reported. Well inside the half second the default deadline keeps below
/// the agent's `Timeout`.
pub const WATCHDOG_GRACE: Duration = Duration::from_millis(150);

/// The run's deadline passed while `doing` something that does not watch it (parsing a
/// document, building a request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub doing: String,
}

impl fmt::Display for Expired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "deadline exceeded while {}", self.doing)
    }
}

impl std::error::Error for Expired {}

impl Classify for Expired {
    fn failure(&self) -> Failure {
        Failure::DeadlineExceeded
    }
}

/// Runs `work` on a helper thread and waits for it until `deadline` plus `grace` (zero for
/// CPU work, [`WATCHDOG_GRACE`] for work that watches the deadline itself), so CPU-bound work
/// (parsing 64 MiB, building values) cannot hold a run past it. Then the thread is abandoned:
/// the caller is about to end the process, which ends it.
pub fn within<T, F>(
    deadline: &Deadline,
    grace: Duration,
    doing: &str,
    work: F,
) -> crate::outcome::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("concierge-work".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|error| crate::outcome::SystemError {
            doing: "start a worker thread",
            error,
        })?;
    rx.recv_timeout(deadline.remaining() + grace).map_err(|_| {
        Expired {
            doing: doing.to_string(),
        }
        .into()
    })
}

/// The instant by which the whole run must be over.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    start: Instant,
    end: Instant,
}

impl Deadline {
    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        let start = Instant::now();
        Self {
            start,
            end: start + budget,
        }
    }

    /// A deadline `budget` after an earlier `start` (the process start, say).
    pub fn starting_at(start: Instant, budget: Duration) -> Self {
        Self {
            start,
            end: start + budget,
        }
    }

    /// Time left before the deadline; zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    /// True once the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.end
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The whole budget this deadline was created with.
    pub fn budget(&self) -> Duration {
        self.end - self.start
    }

    /// The remaining time as a socket timeout: `None` means "already expired", because std
    /// rejects a zero timeout rather than treating it as "no time left".
    pub fn socket_timeout(&self) -> Option<Duration> {
        let left = self.remaining();
        (!left.is_zero()).then_some(left)
    }
}

/// Jittered exponential backoff ("full jitter"): attempt n waits a random time in
/// `[base·2ⁿ / 2, base·2ⁿ]`, capped at `max`, so many containers retrying at once spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: XorShift,
}

impl Backoff {
    /// Backoff starting at `base`, doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
            rng: XorShift::seeded(),
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = exp / 2;
        let span = (exp - half).as_nanos() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.rng.next() % (span + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Forget past failures (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A tiny xorshift generator: jitter needs spread, not cryptographic quality, and a crate for
/// it would not earn its place.
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        let seed = nanos ^ (u64::from(std::process::id()) << 32) ^ 0x2545_F491_4F6C_DD1D;
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_shrinks_and_saturates() {
        let d = Deadline::after(Duration::from_millis(30));
        assert!(d.remaining() <= Duration::from_millis(30));
        assert!(!d.expired());
        std::thread::sleep(Duration::from_millis(40));
        assert!(d.expired());
        assert_eq!(d.remaining(), Duration::ZERO);
        assert_eq!(d.socket_timeout(), None);
    }

    #[test]
    fn within_returns_the_work_or_gives_up_at_the_deadline() {
        let d = Deadline::after(Duration::from_secs(5));
        assert_eq!(within(&d, Duration::ZERO, "adding", || 2 + 2).unwrap(), 4);
        let d = Deadline::after(Duration::from_millis(100));
        let started = Instant::now();
        let e = within(&d, Duration::ZERO, "spinning", || {
            std::thread::sleep(Duration::from_secs(5))
        });
        let e = e.unwrap_err();
        assert_eq!(e.to_string(), "deadline exceeded while spinning");
        assert_eq!(e.failure(), Some(Failure::DeadlineExceeded));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn backoff_grows_within_jitter_bounds_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let expected_caps = [100u64, 200, 400, 800, 800, 800];
        for cap in expected_caps {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(cap / 2), "{d:?} < {cap}/2");
            assert!(d <= Duration::from_millis(cap), "{d:?} > {cap}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn backoff_jitter_spreads() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
            std::thread::sleep(Duration::from_micros(50));
            seen.insert(b.next_delay());
        }
        assert!(seen.len() > 10, "jitter should differ between instances");
    }
}
