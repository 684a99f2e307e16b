//! concierge-discover as a Zabbix agent runs it: the exact LLD document on stdout from a
//! served document, a file and stdin, for all five kinds; on failure nothing on stdout, one line
//! on stderr, exit 1.

use std::time::Duration;

use concierge_testkit::*;
use serde_json::json;

const DISCOVER: &str = "concierge-discover";
const KILL_AFTER: Duration = Duration::from_secs(30);

fn discover(args: &[&str], stdin: Option<&[u8]>) -> Run {
    run_tool(DISCOVER, args, stdin, KILL_AFTER)
}

/// A successful run prints exactly `doc` and a newline, and nothing on stderr.
fn assert_document(run: &Run, doc: &str) {
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.stdout, format!("{doc}\n"), "{run}");
    assert!(run.stderr.is_empty(), "{run}");
}

/// A failed run prints nothing on stdout and one line on stderr, and exits 1.
fn assert_failed(run: &Run) {
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stdout.is_empty(), "stdout must stay empty:\n{run}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one stderr line:\n{run}");
    assert!(lines[0].starts_with("concierge-discover: "), "{run}");
}

/// A document with every kind: two gauges, one counter, one histogram, two meters, one timer.
fn five_kinds() -> Vec<u8> {
    let (timers, _) = dropwizard_timers(&["t.one"]);
    let timers: serde_json::Value = serde_json::from_slice(&timers).expect("timers doc");
    let doc = json!({
        "version": "4.0.0",
        "gauges": {"g.one": {"value": 1.5}, "g.two": {"value": 7}},
        "counters": {"c.one": {"count": 3}},
        "histograms": {"h.one": {"count": 2400, "max": 65536, "mean": 2311.4, "min": 12,
            "p50": 1024.0, "p75": 2048.0, "p95": 8192.0, "p98": 16384.0, "p99": 32768.0,
            "p999": 65536.0, "stddev": 3120.7}},
        "meters": {
            "m.one": {"count": 98231, "m15_rate": 12.31, "m1_rate": 14.02, "m5_rate": 12.9,
                      "mean_rate": 11.7, "units": "events/second"},
            "m.two": {"count": 5, "m15_rate": 0.1, "m1_rate": 0.2, "m5_rate": 0.15,
                      "mean_rate": 0.12, "units": "events/second"}
        },
        "timers": timers["timers"],
    });
    serde_json::to_vec_pretty(&doc).expect("serialize")
}

const FIVE_KINDS_LLD: [(&str, &str); 5] = [
    (
        "gauges",
        r#"{"data":[{"{#GAUGE}":"g.one","{#UNIT}":""},{"{#GAUGE}":"g.two","{#UNIT}":""}]}"#,
    ),
    ("counters", r#"{"data":[{"{#COUNTER}":"c.one"}]}"#),
    ("histograms", r#"{"data":[{"{#HISTOGRAM}":"h.one"}]}"#),
    (
        "meters",
        r#"{"data":[{"{#METER}":"m.one"},{"{#METER}":"m.two"}]}"#,
    ),
    ("timers", r#"{"data":[{"{#TIMER}":"t.one"}]}"#),
];

#[test]
fn served_timers_give_the_exact_lld_document() {
    // Names in byte order, so the document's order and a sorted order agree.
    let names = [
        " leading space",
        "\"quoted\"",
        "GET /a,b",
        "plain.name-1",
        "weird]name",
        "ünï",
    ];
    let (doc, _) = dropwizard_timers(&names);
    let source = MetricsServer::serve(doc);
    let run = discover(&["timers", &source.url()], None);
    assert_document(
        &run,
        r#"{"data":[{"{#TIMER}":" leading space"},{"{#TIMER}":"\"quoted\""},{"{#TIMER}":"GET /a,b"},{"{#TIMER}":"plain.name-1"},{"{#TIMER}":"weird]name"},{"{#TIMER}":"ünï"}]}"#,
    );
    assert_eq!(source.requests(), 1);
}

#[test]
fn every_kind_from_a_file_has_its_macro() {
    let dir = temp_dir("discover");
    let file = dir.path().join("metrics.json");
    std::fs::write(&file, five_kinds()).expect("write");
    let path = file.to_str().expect("utf-8 path");
    for (kind, want) in FIVE_KINDS_LLD {
        assert_document(&discover(&[kind, path], None), want);
    }
}

#[test]
fn every_kind_from_stdin_and_http_has_its_macro() {
    let doc = five_kinds();
    let source = MetricsServer::serve(doc.clone());
    for (kind, want) in FIVE_KINDS_LLD {
        assert_document(&discover(&[kind, "-"], Some(&doc)), want);
        assert_document(&discover(&[kind, &source.url()], None), want);
    }
}

#[test]
fn an_empty_section_gives_an_empty_list() {
    let (doc, _) = dropwizard_timers(&[]);
    assert_document(&discover(&["timers", "-"], Some(&doc)), r#"{"data":[]}"#);
}

#[test]
fn names_whose_keys_cannot_be_encoded_are_left_out() {
    let (doc, _) = dropwizard_timers(&["ok.name", "trailing\\", "x,y\\"]);
    // Default template timer[{name}.{stat}]: ".stat" follows the name, so all three encode.
    assert_document(
        &discover(&["timers", "-"], Some(&doc)),
        r#"{"data":[{"{#TIMER}":"ok.name"},{"{#TIMER}":"trailing\\"},{"{#TIMER}":"x,y\\"}]}"#,
    );
    // With the name last, "x,y\" needs quoting and ends with a backslash: Zabbix cannot
    // quote it, so discovery must not create items that could never receive data.
    let run = discover(
        &["timers", "-", "--key-template", "timer[{stat},{name}]"],
        Some(&doc),
    );
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(
        run.stdout, "{\"data\":[{\"{#TIMER}\":\"ok.name\"},{\"{#TIMER}\":\"trailing\\\\\"}]}\n",
        "{run}"
    );
    assert!(run.stderr.contains("leaving out"), "{run}");
}

#[test]
fn source_down_fails_with_one_line() {
    let url = format!("http://127.0.0.1:{}/metrics", closed_port());
    assert_failed(&discover(&["timers", &url], None));
}

#[test]
fn garbage_fails_with_one_line() {
    let source = MetricsServer::serve(b"<html>not metrics</html>".to_vec());
    assert_failed(&discover(&["timers", &source.url()], None));
    assert_failed(&discover(&["timers", "-"], Some(b"{\"timers\": [1, 2")));
}

#[test]
fn missing_file_fails_with_one_line() {
    let dir = temp_dir("discover");
    let path = dir.path().join("no-such-metrics-file.json");
    assert_failed(&discover(&["timers", path.to_str().expect("utf-8")], None));
}

#[test]
fn stalled_source_fails_within_the_deadline() {
    let source = MetricsServer::stalled();
    let run = discover(&["timers", &source.url(), "-t", "1s"], None);
    assert_failed(&run);
    assert!(run.elapsed <= Duration::from_secs(2), "too slow:\n{run}");
}
