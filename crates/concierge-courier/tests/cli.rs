//! The courier's command-line contract, without Zabbix: dry runs, usage errors and input files.

use std::io::Write;
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use assert_cmd::Command;
use predicates::prelude::*;

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/metrics.json"
);

fn courier() -> Command {
    let mut c = Command::cargo_bin("concierge-courier").unwrap();
    // Off the machine's state directory, where the default spool would be.
    c.env("CONCIERGE_STATE_DIR", "/nonexistent/concierge-tests-state");
    c
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
        vec!["timers", SAMPLE, "-z", "127.0.0.1", "-p", "0"],
        vec!["timers", SAMPLE, "-z", "127.0.0.1", "-sh", "-I127.0.0.1x"],
        // TEST-NET-1 (RFC 5737): an IP address, but none of this machine's.
        vec!["timers", SAMPLE, "-z", "127.0.0.1", "-sh", "-I192.0.2.1"],
        vec!["timers", SAMPLE, "-z", "127.0.0.1", "-s", "bad/host"],
        vec!["timers", SAMPLE, "-z", "127.0.0.1", "-t", "forever"],
        // An empty SOURCE is an argument error, whatever else the line says.
        vec!["timers", "", "-s", "x"],
        vec!["timers", "", "-s", "x", "-z", "127.0.0.1"],
        vec!["-i", "", "-s", "x", "-z", "127.0.0.1"],
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
fn clap_tips_survive_the_one_line_rendering() {
    courier()
        .args(["timers", SAMPLE, "--dry-run", "-s", "h", "--stat", "p99"])
        .assert()
        .code(1)
        .stdout("-7\n")
        .stderr(
            "concierge-courier: unexpected argument '--stat' found \
             (tip: a similar argument exists: '--stats'; see --help)\n",
        );
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
fn an_input_file_that_is_not_utf8_is_unparsable() {
    courier()
        .args(["-i", "-", "-z", "127.0.0.1:1", "-s", "h"])
        .write_stdin(&b"h k 1\nh k \xff\n"[..])
        .assert()
        .code(1)
        .stdout("-2\n")
        .stderr(predicate::str::contains(
            "input line 2: input stdin is not valid UTF-8",
        ));
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

const PROM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../concierge-core/tests/fixtures/prometheus_every_type.om.txt"
);

#[test]
fn prometheus_samples_go_to_their_series_keys() {
    let out = courier()
        .args([
            "prometheus",
            PROM,
            "--dry-run",
            "-s",
            "app",
            "--filter",
            "http_*,task_state",
        ])
        .assert()
        .success()
        .stderr("");
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            r#""app" "prometheus.counter[http_requests_total,\"code=\\\"200\\\",method=\\\"GET\\\"\"]" "1027""#,
            r#""app" "prometheus.counter[http_requests_total,\"code=\\\"500\\\",method=\\\"POST\\\"\"]" "3""#,
            r#""app" "prometheus.state[task_state,task_state=\"starting\"]" "0""#,
            r#""app" "prometheus.state[task_state,task_state=\"running\"]" "1""#,
            r#""app" "prometheus.state[task_state,task_state=\"stopped\"]" "0""#,
        ]
    );
}

#[test]
fn prometheus_non_numbers_are_counted_and_quantiles_computed() {
    courier()
        .args(["prometheus", PROM, "--dry-run", "-s", "app", "--filter", "not_a_number,request_duration_seconds"])
        .args(["--exclude", "*_bucket", "--quantiles", "0.5"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            r#""app" "prometheus.histogram[request_duration_seconds,\"quantile=\\\"0.5\\\",route=\\\"/api\\\"\"]" "0.1""#,
        ))
        .stderr("concierge-courier: skipped 1 value(s) Zabbix cannot store as numbers (first: not_a_number = NaN)\n");
}

#[test]
fn prometheus_errors_are_one_line_with_their_code() {
    // An OpenMetrics document cut short: unparsable (-2), nothing sent.
    courier()
        .args([
            "prometheus",
            "-",
            "-z",
            "127.0.0.1:9",
            "-s",
            "app",
            "--format",
            "openmetrics",
        ])
        .write_stdin("# TYPE a gauge\na 1\n")
        .assert()
        .code(1)
        .stdout("-2\n")
        .stderr(
            predicate::str::contains("does not end with # EOF")
                .and(predicate::function(|e: &str| e.lines().count() == 1)),
        );
    // Prometheus options with a Dropwizard kind, and Dropwizard options with prometheus.
    for args in [
        vec!["timers", SAMPLE, "--filter", "x"],
        vec!["prometheus", PROM, "--stats", "count"],
        vec!["prometheus", PROM, "--quantiles", "1.5"],
    ] {
        courier()
            .args(&args)
            .args(["-z", "127.0.0.1:9", "-s", "app"])
            .assert()
            .code(1)
            .stdout("-7\n");
    }
}

#[test]
fn a_reader_that_closes_early_is_a_clean_exit() {
    // 3000 timers: 33,000 input lines, far more than a pipe holds, so writes hit EPIPE.
    let timers: Vec<String> = (0..3000)
        .map(|i| format!(r#""app.timer-{i}":{{"count":{i},"max":1.5,"mean":0.5,"p95":1.2}}"#))
        .collect();
    let doc = format!(r#"{{"timers":{{{}}}}}"#, timers.join(","));
    let mut courier = StdCommand::cargo_bin("concierge-courier")
        .map(|mut c| {
            c.env("CONCIERGE_STATE_DIR", "/nonexistent/concierge-tests-state");
            c
        })
        .unwrap()
        .args(["all", "-", "--dry-run", "-s", "h"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = courier.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(doc.as_bytes()));
    // `| head -1`: a real pipe whose reader exits after the first line.
    let head = StdCommand::new("head")
        .arg("-1")
        .stdin(Stdio::from(courier.stdout.take().unwrap()))
        .output()
        .unwrap();
    let out = courier.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout).lines().count(), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn a_huge_metric_name_is_shown_short() {
    let doc = format!(
        r#"{{"timers":{{"{}":{{"count":1}}}}}}"#,
        "n".repeat(300_000)
    );
    let out = courier()
        .args(["timers", "-", "--dry-run", "-s", "h"])
        .write_stdin(doc)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.len() < 2000, "{stderr:.300}");
    assert!(
        stderr.contains("skipping metric \"nnn") && stderr.contains("…(300000 bytes)"),
        "{stderr:.300}"
    );
}
