//! concierge-discover's command-line contract on the bundled sample document.

use assert_cmd::Command;
use predicates::prelude::*;

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/metrics.json"
);

fn discover() -> Command {
    Command::cargo_bin("concierge-discover").unwrap()
}

#[test]
fn prints_one_lld_document_per_kind() {
    discover()
        .args(["timers", SAMPLE])
        .assert()
        .success()
        .stdout(
            "{\"data\":[{\"{#TIMER}\":\"GET /api/users,list\"},{\"{#TIMER}\":\"my.test-timer-0\"},\
         {\"{#TIMER}\":\"my.test-timer-1\"},{\"{#TIMER}\":\"my.test-timer-2\"}]}\n",
        );
    discover()
        .args(["counter", SAMPLE])
        .assert()
        .success()
        .stdout("{\"data\":[{\"{#COUNTER}\":\"app.jobs.queued\"},{\"{#COUNTER}\":\"app.sessions.active\"}]}\n");
}

#[test]
fn gauges_that_are_never_numbers_are_left_out() {
    discover()
        .args(["gauges", SAMPLE])
        .assert()
        .success()
        .stdout(predicate::str::contains("jvm.threads.count"))
        .stdout(predicate::str::contains("app.cache.hit-ratio"))
        .stdout(predicate::str::contains("app.build.version").not());
}

#[test]
fn failures_leave_stdout_empty() {
    for args in [
        vec!["timers", "/nonexistent/metrics.json"],
        vec!["bogus", SAMPLE],
    ] {
        discover()
            .args(&args)
            .assert()
            .code(1)
            .stdout("")
            .stderr(predicate::function(|e: &str| e.lines().count() == 1));
    }
}
