//! The courier's command-line contract, without Zabbix: dry runs, usage errors and input files.

use assert_cmd::Command;
use predicates::prelude::*;

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/metrics.json"
);

fn courier() -> Command {
    Command::cargo_bin("concierge-courier").unwrap()
}

#[test]
fn help_documents_every_failure_code() {
    let out = courier().arg("--help").assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for code in ["0", "-1", "-2", "-3", "-4", "-5", "-6", "-7"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{code} "))),
            "--help lacks code {code}:\n{text}"
        );
    }
}

#[test]
fn dry_run_writes_quoted_sender_lines_for_the_talks_eleven_stats() {
    let out = courier()
        .args(["timers", SAMPLE, "--dry-run", "-s", "demo-app"])
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4 * 11, "{text}");
    assert!(lines.contains(&r#""demo-app" "timer[my.test-timer-0.p95]" "0.0084""#));
    // A name with a comma is quoted inside the key exactly as Zabbix quotes it.
    assert!(lines.contains(&r#""demo-app" "timer[\"GET /api/users,list.count\"]" "1611""#));
    assert!(!text.contains(".p50]"), "p50 is not among the defaults");
}

#[test]
fn a_dash_destination_is_a_dry_run_and_stats_can_be_chosen() {
    courier()
        .args([
            "timers",
            SAMPLE,
            "-z",
            "-",
            "-s",
            "h",
            "--stats",
            "p99,count",
        ])
        .assert()
        .success()
        .stdout(predicate::function(|s: &str| s.lines().count() == 8))
        .stdout(predicate::str::contains(
            r#""h" "timer[my.test-timer-2.p99]" "0.03174""#,
        ));
}

#[test]
fn dry_run_with_timestamps_round_trips_through_input_files() {
    let out = courier()
        .args(["gauges", SAMPLE, "--dry-run", "-s", "h", "-T", "-N"])
        .assert()
        .success();
    let lines = out.get_output().stdout.clone();
    // The string gauge and the NaN gauge are skipped: three numbers remain.
    assert_eq!(String::from_utf8_lossy(&lines).lines().count(), 3);
    courier()
        .args(["-i", "-", "-T", "-N", "--dry-run", "-s", "h"])
        .write_stdin(lines.clone())
        .assert()
        .success()
        .stdout(String::from_utf8(lines).unwrap());
}

#[test]
fn usage_errors_print_code_minus_seven_and_one_line() {
    for args in [
        vec!["bogus", SAMPLE, "-z", "127.0.0.1"],
        vec!["timers", SAMPLE, "-s", "h"],
        vec!["timers", SAMPLE, "-z", "127.0.0.1", "--stats", "p42"],
        vec![
            "timers",
            SAMPLE,
            "-z",
            "127.0.0.1",
            "--key-template",
            "timer[{name}]",
        ],
        vec!["timers", SAMPLE, "-z", "127.0.0.1:0"],
        vec!["timers", SAMPLE, "-z", "127.0.0.1", "-s", "bad/host"],
        vec!["timers", SAMPLE, "-z", "127.0.0.1", "-t", "forever"],
    ] {
        courier()
            .args(&args)
            .assert()
            .code(1)
            .stdout("-7\n")
            .stderr(predicate::function(|e: &str| e.lines().count() == 1));
    }
}

#[test]
fn a_failed_dry_run_leaves_stdout_empty_for_the_pipeline() {
    courier()
        .args(["timers", SAMPLE, "-z", "-", "--stats", "p42"])
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains("unknown statistic"));
}

#[test]
fn a_bad_input_line_is_unparsable_and_nothing_is_sent() {
    courier()
        .args(["-i", "-", "-z", "127.0.0.1:1", "-s", "h"])
        .write_stdin("h k 1\nh \"unterminated 2\n")
        .assert()
        .code(1)
        .stdout("-2\n")
        .stderr(predicate::str::contains("line 2"));
}

#[test]
fn an_empty_source_is_nothing_to_send() {
    courier()
        .args(["timers", "-", "-z", "127.0.0.1:1", "-s", "h"])
        .write_stdin(r#"{"version":"4.0.0","timers":{}}"#)
        .assert()
        .code(1)
        .stdout("0\n");
}

#[test]
fn all_kinds_go_out_from_one_fetch() {
    let out = courier()
        .args(["all", SAMPLE, "--dry-run", "-s", "h"])
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    // 3 numeric gauges + 2 counters + 10 histogram stats + 5 meter rates + 4 timers x 11.
    assert_eq!(text.lines().count(), 3 + 2 + 10 + 5 + 44, "{text}");
    for key in [
        "gauge[jvm.threads.count]",
        "counter[app.jobs.queued]",
        "histogram[app.request.size.p99]",
        "meter[app.requests.m1_rate]",
        "timer[my.test-timer-1.p75]",
    ] {
        assert!(
            text.contains(&format!("\"{key}\"")),
            "{key} missing:\n{text}"
        );
    }
    courier()
        .args(["all", SAMPLE, "-z", "127.0.0.1", "--stats", "p99"])
        .assert()
        .code(1)
        .stdout("-7\n");
}
