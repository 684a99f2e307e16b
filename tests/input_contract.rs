//! The contract for hostile input (issue 15), for courier and discover: configuration files
//! that are devices, FIFOs or huge; a 64 MiB document at `-t 2.5`; a number beyond f64.
//! No Zabbix lab needed: the trapper is [`FakeTrapper`] and the sources are files.
//! Each test reproduces a fault the issue found; peak memory is measured with
//! `/usr/bin/time -v` (GNU time), which reports the child's maximum resident set size.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use concierge_testkit::*;

const COURIER: &str = "concierge-courier";
const DISCOVER: &str = "concierge-discover";
/// Longest any run here may take before the test kills it.
const KILL_AFTER: Duration = Duration::from_secs(60);
/// Slack allowed past a deadline (process start, the watchdog's grace, printing).
const SLACK: Duration = Duration::from_millis(500);

fn run(tool: &str, args: &[&str]) -> Run {
    run_tool(tool, args, None, KILL_AFTER)
}

/// `args`, plus a destination and a host for the courier (discover takes neither).
fn with_destination<'a>(tool: &str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    if tool == COURIER {
        all.extend(["-z", "127.0.0.1", "-s", "h"]);
    }
    all
}

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success(), "mkfifo {}", path.display());
}

/// A run measured by GNU time: the run and its peak RSS in KiB.
fn measured(tool: &str, args: &[&str]) -> (Run, u64) {
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "GNU time (/usr/bin/time) is needed to measure peak memory"
    );
    let mut cmd = Command::new(time);
    cmd.arg("-v").arg(bin(tool)).args(args);
    let mut r = run_command(&mut cmd, KILL_AFTER);
    let rss = r
        .stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in the output of time -v:\n{r}"));
    // Keep the tool's own stderr only: time's report starts with "\tCommand being timed".
    let own = r
        .stderr
        .split("\tCommand being timed")
        .next()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("Command exited with non-zero status"))
        .map(|l| format!("{l}\n"))
        .collect();
    r.stderr = own;
    (r, rss)
}

/// A Dropwizard document of just under `bytes` of timers with every field (242k timers for
/// 64 MiB, 2.7 million values).
fn big_document(bytes: usize) -> Vec<u8> {
    const FIELDS: &str = r#""count":12345,"max":812.3,"mean":45.1,"min":2.07,"p50":31.0,"p75":52.9,"p95":140.25,"p98":210.0,"p99":388.1,"p999":812.3,"stddev":60.42,"m15_rate":2.1,"m1_rate":3.4,"m5_rate":2.7,"mean_rate":2.05,"duration_units":"milliseconds","rate_units":"calls/second""#;
    let mut doc = Vec::with_capacity(bytes);
    doc.extend_from_slice(br#"{"version":"4.0.0","timers":{"#);
    for i in 0.. {
        let entry = format!(
            "{}\"app.timer.{i}\":{{{FIELDS}}}",
            if i > 0 { "," } else { "" }
        );
        if doc.len() + entry.len() + 2 > bytes {
            break;
        }
        doc.extend_from_slice(entry.as_bytes());
    }
    doc.extend_from_slice(b"}}");
    doc
}

#[test]
fn a_device_as_config_is_refused_at_once_without_growing() {
    // Issue 15: `-c /dev/zero` grew to 22.7 GB until the kernel killed it.
    for tool in [COURIER, DISCOVER] {
        let (r, rss) = measured(
            tool,
            &with_destination(tool, &["timers", "-", "-c", "/dev/zero"]),
        );
        assert_eq!(r.code, Some(1), "{r}");
        assert!(
            r.stderr
                .contains("/dev/zero: cannot read: not a regular file"),
            "{r}"
        );
        assert_eq!(r.stderr.lines().count(), 1, "{r}");
        if tool == COURIER {
            assert_eq!(r.value_line(), "-7");
        }
        assert!(rss < 64 * 1024, "{tool}: peak RSS {rss} KiB");
        assert!(r.elapsed < Duration::from_secs(2), "{r}");
    }
}

#[test]
fn a_fifo_as_config_or_include_does_not_hold_the_run() {
    // Issue 15: nothing ever writes to the FIFO, and the run hung past -t.
    let dir = temp_dir("fifo-config");
    let fifo = dir.path().join("agent.conf");
    mkfifo(&fifo);
    let main = dir.path().join("main.conf");
    fs::write(&main, format!("Hostname=h\nInclude={}\n", fifo.display())).unwrap();
    let fifo = fifo.display().to_string();
    let main = main.display().to_string();
    for config in [&fifo, &main] {
        for tool in [COURIER, DISCOVER] {
            let started = Instant::now();
            let r = run(
                tool,
                &with_destination(tool, &["timers", "-", "-c", config, "-t", "1"]),
            );
            assert!(started.elapsed() < Duration::from_secs(1) + SLACK, "{r}");
            assert_eq!(r.code, Some(1), "{r}");
            assert!(r.stderr.contains("not a regular file (a FIFO)"), "{r}");
            assert!(r.stderr.contains(&fifo), "the FIFO is named:\n{r}");
            if tool == COURIER {
                assert_eq!(r.value_line(), "-7");
            }
        }
    }
}

#[test]
fn a_config_over_1_mib_is_refused() {
    let dir = temp_dir("big-config");
    let big = dir.path().join("big.conf");
    let mut f = fs::File::create(&big).unwrap();
    let line = format!("# {}\n", "x".repeat(1000));
    for _ in 0..1100 {
        f.write_all(line.as_bytes()).unwrap();
    }
    drop(f);
    let big = big.display().to_string();
    let r = run(
        COURIER,
        &["timers", "-", "-c", &big, "-z", "127.0.0.1", "-s", "h"],
    );
    r.assert_code(1, "-7");
    assert!(r.stderr.contains("larger than 1024 KiB"), "{r}");
}

#[test]
fn a_64_mib_document_ends_by_the_deadline_in_bounded_memory() {
    // Issue 15: 64 MiB at -t 2.5 ran 5.3 s and took 1.34 GB (3.5 GB with a long host name).
    let dir = temp_dir("big-doc");
    let doc = big_document(source_max_bytes());
    let path = dir.path().join("metrics.json");
    fs::write(&path, &doc).unwrap();
    let path = path.display().to_string();
    let trapper = FakeTrapper::start();
    let long_host = "h".repeat(128);
    for host in ["h", long_host.as_str()] {
        let args = [
            "timers",
            &path,
            "-z",
            &trapper.address(),
            "-s",
            host,
            "-t",
            "2.5",
        ];
        let (r, rss) = measured(COURIER, &args);
        note(&format!(
            "64 MiB document, host of {} chars: {} after {:.2?}, peak RSS {} MiB",
            host.len(),
            r.stdout.trim(),
            r.elapsed,
            rss / 1024
        ));
        assert!(
            r.elapsed <= Duration::from_millis(2500) + SLACK,
            "past the deadline:\n{r}"
        );
        // Either it was delivered in time, or the deadline ended it: never anything else.
        let line = r.value_line();
        assert!(line == "-6" || r.code == Some(0), "{r}");
        // A generous bound: eight times the document.
        assert!(
            rss < 8 * 64 * 1024,
            "peak RSS {rss} KiB for a 64 MiB document:\n{r}"
        );
    }
    // discover, too, ends by its deadline.
    let (r, rss) = measured(DISCOVER, &["timers", &path, "-t", "2.5"]);
    assert!(r.elapsed <= Duration::from_millis(2500) + SLACK, "{r}");
    assert!(rss < 8 * 64 * 1024, "discover peak RSS {rss} KiB");
}

#[test]
fn a_whole_run_stays_within_a_multiple_of_the_document() {
    // The same shape of document, small enough to be delivered in full by a debug build:
    // parsing, the values and the request together. The request is streamed to the socket,
    // never held whole; before that, a 128-character host name took 25 times the document.
    let dir = temp_dir("doc-memory");
    let doc = big_document(4 << 20);
    let path = dir.path().join("metrics.json");
    fs::write(&path, &doc).unwrap();
    let path = path.display().to_string();
    let trapper = FakeTrapper::start();
    let long_host = "h".repeat(128);
    for host in ["h", long_host.as_str()] {
        let args = [
            "timers",
            &path,
            "-z",
            &trapper.address(),
            "-s",
            host,
            "-t",
            "50",
        ];
        let (r, rss) = measured(COURIER, &args);
        r.assert_success();
        let ratio = rss as f64 / (doc.len() / 1024) as f64;
        note(&format!(
            "4 MiB document delivered, host of {} chars: {:.2?}, peak RSS {} MiB = {ratio:.1}x",
            host.len(),
            r.elapsed,
            rss / 1024
        ));
        // 17.3x before the spool landed, then 21.4x with a 128-char host name (the spool
        // keeps the run's values until the reply, and each value owned its host name and was
        // moved into a second vector). The values now share one host name and are moved, not
        // copied: 12.2x measured for both host names (debug build), 11.6x once a plain run no
        // longer initialises OpenSSL; the bound leaves a margin.
        assert!(
            ratio < 14.0,
            "peak RSS {rss} KiB = {ratio:.1}x the document:\n{r}"
        );
    }
    let sent: usize = trapper
        .requests()
        .iter()
        .map(|q| q["data"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(sent % 2, 0);
    assert!(sent > 2 * 100_000, "{sent} values");
}

/// The size limit of a metrics document (the sources' cap).
fn source_max_bytes() -> usize {
    64 * 1024 * 1024
}

#[test]
fn a_number_beyond_f64_is_one_skipped_value_for_courier_and_discover() {
    // Issue 15: the courier rejected the whole document (-2) while discover accepted it.
    let doc = br#"{"version":"4.0.0","timers":{
        "app.a":{"count":1e400,"max":2.5,"mean":1,"min":0,"p50":1,"p75":1,"p95":1,"p98":1,
                 "p99":1,"p999":1,"stddev":0,"mean_rate":-1e999},
        "app.b":{"count":7}}}"#;
    let dir = temp_dir("range");
    let path = dir.path().join("metrics.json");
    fs::write(&path, doc).unwrap();
    let path = path.display().to_string();
    let trapper = FakeTrapper::start();
    let r = run(
        COURIER,
        &[
            "timers",
            &path,
            "-z",
            &trapper.address(),
            "-s",
            "h",
            "-t",
            "5",
        ],
    );
    r.assert_success();
    assert!(
        r.stderr.contains("skipped 2 timers value(s)")
            && r.stderr.contains("number out of range: 1e400"),
        "one warning counts them:\n{r}"
    );
    let requests = trapper.requests();
    let keys: Vec<&str> = requests[0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["key"].as_str().unwrap())
        .collect();
    assert!(!keys.contains(&"timer[app.a.count]"), "{keys:?}");
    assert!(!keys.contains(&"timer[app.a.mean_rate]"), "{keys:?}");
    assert!(keys.contains(&"timer[app.a.max]") && keys.contains(&"timer[app.b.count]"));
    // Eleven default statistics of app.a but the two out of range, and app.b's count.
    assert_eq!(keys.len(), 9 + 1, "{keys:?}");
    // discover finds both timers in the same document.
    let r = run(DISCOVER, &["timers", &path]);
    assert_eq!(r.code, Some(0), "{r}");
    let lld: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(lld["data"].as_array().unwrap().len(), 2, "{r}");
}
