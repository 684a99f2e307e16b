//! concierge-discover's command-line contract on the bundled sample document.

use std::io::{Read, Write};
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use assert_cmd::Command;
use predicates::prelude::*;

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/metrics.json"
);

/// prometheus_client's exposition of every type, with dotted UTF-8 names.
const PROM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../concierge-core/tests/fixtures/prometheus_every_type.utf8.om.txt"
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

#[test]
fn prometheus_rows_carry_every_macro() {
    let out = discover()
        .args([
            "prometheus",
            PROM,
            "--type",
            "counter",
            "--filter",
            "bytes_*",
        ])
        .assert()
        .success();
    assert_eq!(
        String::from_utf8(out.get_output().stdout.clone()).unwrap(),
        "{\"data\":[{\"{#METRIC}\":\"bytes_sent_bytes_total\",\"{#FAMILY}\":\"bytes_sent_bytes\",\
         \"{#TYPE}\":\"counter\",\"{#HELP}\":\"Bytes sent.\",\"{#LABELS}\":\"\",\
         \"{#SERIES}\":\"bytes_sent_bytes_total\",\"{#UNIT.RATE}\":\"Bps\",\"{#UNIT}\":\"B\"}]}\n"
    );
    // A dotted UTF-8 label name becomes {#LABEL.ZONE.NAME}; the label set is quoted.
    discover()
        .args(["prometheus", PROM, "--filter", "app.*"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            r#""{#LABELS}":"\"zone.name\"=\"eu-1\"""#,
        ))
        .stdout(predicate::str::contains(r#""{#LABEL.ZONE.NAME}":"eu-1""#))
        .stdout(predicate::str::contains(
            r#""{#SERIES}":"{\"app.dotted.metric\",\"zone.name\"=\"eu-1\"}""#,
        ));
}

#[test]
fn prometheus_types_split_the_series() {
    let count = |types: &str| {
        let out = discover()
            .args(["prometheus", PROM, "--type", types])
            .assert()
            .success();
        let doc: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
        doc["data"].as_array().unwrap().len()
    };
    let all = count("");
    let parts: usize = [
        "counter",
        "gauge,untyped,unknown",
        "histogram,gaugehistogram",
        "summary",
        "info,stateset",
    ]
    .iter()
    .map(|t| count(t))
    .sum();
    assert_eq!(parts, all);
    assert!(all > 70, "{all}");
    discover()
        .args(["prometheus", PROM, "--type", "counters"])
        .assert()
        .code(1)
        .stdout("");
    discover()
        .args(["timers", SAMPLE, "--type", "counter"])
        .assert()
        .code(1)
        .stdout("");
}

#[test]
fn a_reader_that_closes_early_is_a_clean_exit() {
    // A 300 KB LLD document (below the agent's 512 KiB, far above a pipe's 64 KiB).
    let names: Vec<String> = (0..9000)
        .map(|i| format!(r#""svc.timer.{i:05}":{{"count":1}}"#))
        .collect();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(file, r#"{{"timers":{{{}}}}}"#, names.join(",")).unwrap();
    let mut discover = StdCommand::cargo_bin("concierge-discover")
        .unwrap()
        .arg("timers")
        .arg(file.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -c 10`: read ten bytes of the real pipe, then close it.
    let mut head = [0u8; 10];
    discover
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    let out = discover.wait_with_output().unwrap();
    assert_eq!(&head, b"{\"data\":[{");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        (out.status.code(), stderr.as_ref()),
        (Some(0), ""),
        "a closed stdout is no failure"
    );
}

#[test]
fn a_huge_or_hostile_metric_name_is_shown_short_and_escaped() {
    let huge = "n".repeat(300_000);
    let doc = format!(
        r#"{{"counters":{{"{huge}":{{"count":1}},"a,\u001b[2J\\":{{"count":1}},"ok":{{"count":1}}}}}}"#
    );
    // counter[{name}]: one too long, one that needs quoting but ends with a backslash.
    let out = discover()
        .args(["counters", "-"])
        .write_stdin(doc)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"{\"data\":[{\"{#COUNTER}\":\"ok\"}]}\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr:.300}");
    assert!(lines.iter().all(|l| l.len() < 1000), "{stderr:.300}");
    assert!(
        lines.iter().any(|l| l.contains("…(300000 bytes)")),
        "{stderr:.300}"
    );
    assert!(
        lines.iter().any(|l| l.contains(r#""a,\u{1b}[2J\\""#)),
        "{stderr:.300}"
    );
}
