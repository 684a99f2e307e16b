//! Polling for the state a test expects, with a generous limit (never sleep-and-hope).

use std::time::{Duration, Instant};

/// Poll `f` every 200 ms until it returns `Ok(Some(v))`, and return `v`. `Ok(None)` means
/// "not yet"; `Err(e)` also means "not yet" and is kept as the last observation. Panics after
/// `limit`, naming `what` and the last observation.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> T {
    let start = Instant::now();
    let mut last = String::from("(nothing observed yet)");
    let mut polls = 0u32;
    loop {
        polls += 1;
        match f() {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() >= limit {
            panic!(
                "timed out after {:.1?} ({polls} polls) waiting for {what}; last observation: {last}",
                start.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
