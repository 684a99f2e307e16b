//! The beat cadence: due times on a fixed grid from the start, so beats never drift, and a
//! beat that overran skips the due times it missed instead of firing them in a burst.

use std::time::{Duration, Instant};

/// Due times `start + k·period`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    period: Duration,
}

impl Schedule {
    /// A cadence of `period` whose first beat is due at `start`.
    pub fn new(start: Instant, period: Duration) -> Self {
        Self {
            start,
            period: period.max(Duration::from_millis(1)),
        }
    }

    /// The first due time strictly after `now`.
    pub fn next_after(&self, now: Instant) -> Instant {
        let since = now.saturating_duration_since(self.start);
        let k = since.as_nanos() / self.period.as_nanos() + 1;
        let k = u32::try_from(k).unwrap_or(u32::MAX);
        self.start + self.period * k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_sit_on_a_grid_and_missed_ones_are_skipped() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, Duration::from_secs(10));
        assert_eq!(s.next_after(t0), t0 + Duration::from_secs(10));
        // A beat that took 300 ms does not push the next one back (no drift).
        assert_eq!(
            s.next_after(t0 + Duration::from_millis(10_300)),
            t0 + Duration::from_secs(20)
        );
        // A beat that overran three periods skips to the next future slot (no pile-up).
        assert_eq!(
            s.next_after(t0 + Duration::from_millis(35_000)),
            t0 + Duration::from_secs(40)
        );
        // Exactly on a due time: the next one.
        assert_eq!(
            s.next_after(t0 + Duration::from_secs(20)),
            t0 + Duration::from_secs(30)
        );
    }
}
