//! concierge-courier when something is broken or faked: no Zabbix lab needed, so these always
//! run. Each test checks the value line (the failure code), the exit status, the single stderr
//! line and, where a deadline is involved, that the run ended within it.

use std::collections::BTreeMap;
use std::time::Duration;

use concierge_testkit::*;

const COURIER: &str = "concierge-courier";
/// Longest any run here may take before the test kills it.
const KILL_AFTER: Duration = Duration::from_secs(30);
/// Slack allowed past a deadline (process start, printing).
const SLACK: Duration = Duration::from_secs(1);

fn courier(args: &[&str]) -> Run {
    run_tool(COURIER, args, None, KILL_AFTER)
}

fn two_timers() -> MetricsServer {
    let (doc, _) = dropwizard_timers(&["app.a", "app.b"]);
    MetricsServer::serve(doc)
}

/// A failing value-line run prints its code on stdout and exactly one line on stderr.
fn assert_failure(run: &Run, exit: i32, code: &str) {
    run.assert_code(exit, code);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line:\n{run}");
    assert!(lines[0].starts_with("concierge-courier: "), "{run}");
}

/// The run waited (nearly) the whole `deadline`, and not longer than it plus the slack.
fn assert_took_the_deadline(run: &Run, deadline: Duration) {
    assert!(run.elapsed <= deadline + SLACK, "too slow:\n{run}");
    assert!(
        run.elapsed >= deadline.saturating_sub(Duration::from_millis(200)),
        "too fast:\n{run}"
    );
}

#[test]
fn closed_zabbix_port_is_unreachable_within_the_deadline() {
    let source = two_timers();
    let port = closed_port();
    let z = format!("127.0.0.1:{port}");
    let run = courier(&[
        "timers",
        &source.url(),
        "-z",
        &z,
        "-s",
        "faults",
        "-t",
        "2s",
    ]);
    assert_failure(&run, 1, "-3");
    assert!(
        run.stderr.contains(&port.to_string()),
        "stderr should name the endpoint:\n{run}"
    );
    assert!(
        run.elapsed <= Duration::from_secs(2) + SLACK,
        "too slow:\n{run}"
    );
}

#[test]
fn stalled_zabbix_is_deadline_exceeded_within_the_deadline() {
    let source = two_timers();
    let (_listener, port) = stalled_listener();
    let z = format!("127.0.0.1:{port}");
    let run = courier(&[
        "timers",
        &source.url(),
        "-z",
        &z,
        "-s",
        "faults",
        "-t",
        "1500ms",
    ]);
    assert_failure(&run, 1, "-6");
    // It did wait for an answer (not some early, unrelated failure).
    assert_took_the_deadline(&run, Duration::from_millis(1500));
    assert_eq!(source.requests(), 1, "the source was read once");
}

#[test]
fn source_down_is_source_unreachable() {
    let url = format!("http://127.0.0.1:{}/metrics", closed_port());
    let z = format!("127.0.0.1:{}", closed_port());
    let run = courier(&["timers", &url, "-z", &z, "-s", "faults", "-t", "2s"]);
    assert_failure(&run, 1, "-1");
    assert!(
        run.elapsed <= Duration::from_secs(2) + SLACK,
        "too slow:\n{run}"
    );
}

#[test]
fn source_http_error_is_source_unreachable() {
    let source = MetricsServer::with_status(500, b"{\"error\":\"boom\"}".to_vec());
    let z = format!("127.0.0.1:{}", closed_port());
    let run = courier(&[
        "timers",
        &source.url(),
        "-z",
        &z,
        "-s",
        "faults",
        "-t",
        "2s",
    ]);
    assert_failure(&run, 1, "-1");
    assert!(
        run.stderr.contains("500"),
        "stderr should name the status:\n{run}"
    );
}

#[test]
fn source_serving_garbage_is_unparsable() {
    let source = MetricsServer::serve(b"<html>this is not a metrics document</html>".to_vec());
    let z = format!("127.0.0.1:{}", closed_port());
    let run = courier(&[
        "timers",
        &source.url(),
        "-z",
        &z,
        "-s",
        "faults",
        "-t",
        "2s",
    ]);
    assert_failure(&run, 1, "-2");
}

#[test]
fn stalled_source_is_deadline_exceeded_within_the_deadline() {
    let source = MetricsServer::stalled();
    let z = format!("127.0.0.1:{}", closed_port());
    let run = courier(&[
        "timers",
        &source.url(),
        "-z",
        &z,
        "-s",
        "faults",
        "-t",
        "1500ms",
    ]);
    assert_failure(&run, 1, "-6");
    assert_took_the_deadline(&run, Duration::from_millis(1500));
}

#[test]
fn no_timers_is_nothing_to_send() {
    let (doc, _) = dropwizard_timers(&[]);
    let source = MetricsServer::serve(doc);
    let trapper = FakeTrapper::start();
    let run = courier(&[
        "timers",
        &source.url(),
        "-z",
        &trapper.address(),
        "-s",
        "faults",
        "-t",
        "2s",
    ]);
    assert_failure(&run, 1, "0");
    assert!(trapper.requests().is_empty(), "nothing may be sent");
}

/// The values one fake-trapper request carried, as key → value, after checking each row's
/// host and that no key repeats.
fn rows_by_key(request: &serde_json::Value, host: &str) -> BTreeMap<String, String> {
    assert_eq!(request["request"], "sender data", "{request}");
    let rows = request["data"].as_array().expect("data array");
    let mut out = BTreeMap::new();
    for row in rows {
        assert_eq!(row["host"], host, "{row}");
        let key = row["key"].as_str().expect("key").to_string();
        let value = row["value"]
            .as_str()
            .expect("value is a JSON string")
            .to_string();
        assert!(
            out.insert(key.clone(), value).is_none(),
            "key {key} sent twice"
        );
    }
    out
}

fn thousand_names() -> Vec<String> {
    (0..1000)
        .map(|i| match i % 10 {
            0 => format!("GET /api/items-{i},page"),
            5 => format!("weird]{i}"),
            _ => format!("svc.request-{i}"),
        })
        .collect()
}

#[test]
fn thousand_timers_go_in_one_request_with_the_right_keys_and_values() {
    let names = thousand_names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (doc, expected) = dropwizard_timers(&refs);
    let want = expected_by_key(&expected);
    assert_eq!(want.len(), 11_000);
    let source = MetricsServer::serve(doc);
    let trapper = FakeTrapper::start();
    let run = courier(&[
        "timers",
        &source.url(),
        "-z",
        &trapper.address(),
        "-s",
        "fake-host",
        "-t",
        "10s",
        "-v",
    ]);
    run.assert_success();
    assert!(
        run.stderr
            .lines()
            .any(|l| l
                .contains(": 1/1 request(s) answered; processed: 11000; failed: 0; total: 11000;")),
        "verbose counts:\n{run}"
    );
    let requests = trapper.requests();
    assert_eq!(requests.len(), 1, "one request, one connection");
    let got = rows_by_key(&requests[0], "fake-host");
    let got_keys: std::collections::BTreeSet<String> = got.keys().cloned().collect();
    let want_keys = want.keys().cloned().collect();
    assert!(got_keys == want_keys, "{}", key_diff(&want_keys, &got_keys));
    for (key, text) in &got {
        let v: f64 = text
            .parse()
            .unwrap_or_else(|_| panic!("{key}: {text:?} is not a number"));
        assert!(
            close(v, want[key]),
            "{key}: sent {text}, document says {}",
            want[key]
        );
    }
}

#[test]
fn chunk_splits_requests() {
    let names = thousand_names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (doc, expected) = dropwizard_timers(&refs);
    let source = MetricsServer::serve(doc);
    let trapper = FakeTrapper::start();
    let run = courier(&[
        "timers",
        &source.url(),
        "-z",
        &trapper.address(),
        "-s",
        "fake-host",
        "-t",
        "10s",
        "--chunk",
        "250",
    ]);
    run.assert_success();
    let requests = trapper.requests();
    let sizes: Vec<usize> = requests
        .iter()
        .map(|r| r["data"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, vec![250; 44], "44 requests of 250 values");
    let mut all = BTreeMap::new();
    for r in &requests {
        all.extend(rows_by_key(r, "fake-host"));
    }
    assert_eq!(all.len(), expected.len(), "every value exactly once");
}

#[test]
fn slow_source_within_the_deadline_is_delivered() {
    let (doc, expected) = dropwizard_timers(&["app.slow"]);
    let source = MetricsServer::slow(doc, Duration::from_millis(400));
    let trapper = FakeTrapper::start();
    let run = courier(&[
        "timers",
        &source.url(),
        "-z",
        &trapper.address(),
        "-s",
        "fake-host",
        "-t",
        "3s",
    ]);
    let secs = run.assert_success();
    assert!(
        secs >= 0.4,
        "reported {secs} s, but the source alone took 0.4 s:\n{run}"
    );
    assert!(
        secs <= run.elapsed.as_secs_f64(),
        "reported more than the run took:\n{run}"
    );
    let requests = trapper.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(rows_by_key(&requests[0], "fake-host").len(), expected.len());
}

#[test]
fn stdin_source_and_input_file_reach_the_trapper_intact() {
    // Metrics from stdin.
    let (doc, expected) = dropwizard_timers(&["from.stdin"]);
    let trapper = FakeTrapper::start();
    let run = run_tool(
        COURIER,
        &[
            "timers",
            "-",
            "-z",
            &trapper.address(),
            "-s",
            "fake-host",
            "-t",
            "3s",
        ],
        Some(&doc),
        KILL_AFTER,
    );
    run.assert_success();
    let got = rows_by_key(&trapper.requests()[0], "fake-host");
    let want = expected_by_key(&expected);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );

    // A zabbix_sender input line carrying an LLD document with quotes and backslashes.
    let lld = lld_json("{#TIMER}", &["say \"hi\"", "back\\slash", "a,b]", "ünï"]);
    let line = format!("- concierge.discover.timers {}\n", input_quote(&lld));
    let trapper = FakeTrapper::start();
    let run = run_tool(
        COURIER,
        &[
            "-z",
            &trapper.address(),
            "-s",
            "fake-host",
            "-t",
            "3s",
            "-i",
            "-",
        ],
        Some(line.as_bytes()),
        KILL_AFTER,
    );
    run.assert_success();
    let got = rows_by_key(&trapper.requests()[0], "fake-host");
    assert_eq!(got.get("concierge.discover.timers"), Some(&lld), "{run}");
}
