//! Nothing lost across a real Zabbix outage (issue 15): the server of the lab version under
//! test is stopped; the courier runs more than three periods during the outage and the
//! heartbeat is stopped inside it; after the restart two couriers sharing the spool and the
//! heartbeat's next start deliver what was spooled. Counted through the API: every value
//! collected during the outage is in history exactly once, at its collection clock, and the
//! heartbeat's 0 arrived, at the clock of its stop.
//!
//! A test binary of its own, one test per version (each stops only its own server; cargo runs
//! test binaries one at a time). The server is started again even when the test fails (a
//! drop guard), and the outage is kept short: other tests share the servers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use concierge_testkit::*;

const COURIER: &str = "concierge-courier";
const HEARTBEAT: &str = "concierge-heartbeat";
const STATE: &str = "container.state";
const STATS: [&str; 3] = ["count", "max", "p95"];
/// The courier's period during the outage.
const PERIOD: Duration = Duration::from_secs(1);
/// Courier runs during the outage: more than three periods.
const OUTAGE_RUNS: usize = 4;
const KILL_AFTER: Duration = Duration::from_secs(60);

/// A Dropwizard document with one timer whose statistics say which run collected them.
fn document(run: usize) -> String {
    let r = run as f64;
    format!(
        r#"{{"timers":{{"spool.t":{{"count":{run},"max":{},"p95":{},"mean":1,"min":0}}}}}}"#,
        r + 0.5,
        r + 0.25
    )
}

/// The value history shows for `stat` of run `run`.
fn expected(stat: &str, run: usize) -> f64 {
    let r = run as f64;
    match stat {
        "count" => r,
        "max" => r + 0.5,
        _ => r + 0.25,
    }
}

fn key(stat: &str) -> String {
    format!("timer[spool.t.{stat}]")
}

/// One courier run from `doc` with the spool in `spool`.
fn courier(lab: &Lab, host: &str, doc: &std::path::Path, spool: &std::path::Path) -> Run {
    let (doc, spool) = (doc.to_str().unwrap(), spool.to_str().unwrap());
    let args = [
        "timers",
        doc,
        "--stats",
        "count,max,p95",
        "-z",
        lab.server(),
        "-s",
        host,
        "-t",
        "2s",
        "--spool",
        spool,
        "-v",
    ];
    run_tool(COURIER, &args, None, KILL_AFTER)
}

lab_test!(
    fn nothing_collected_during_an_outage_is_lost(lab: &Lab) {
        let host = lab.create_host(&unique_host("spool-outage"));
        let items: BTreeMap<String, String> = STATS
            .iter()
            .map(|s| (s.to_string(), host.create_trapper_item(&key(s), FLOAT)))
            .collect();
        let state_item = host.create_trapper_item(STATE, UNSIGNED);
        for s in STATS {
            lab.wait_until_accepted(&host.name, &key(s), "0");
        }
        lab.wait_until_accepted(&host.name, STATE, "1");
        let dir = temp_dir("spool-outage");
        let doc = dir.path().join("metrics.json");
        let spool = dir.path().join("courier-spool");
        let hb_spool = dir.path().join("heartbeat-spool");

        // Before the outage: a run that reaches Zabbix, and a beating heartbeat.
        std::fs::write(&doc, document(1)).unwrap();
        courier(lab, &host.name, &doc, &spool).assert_success();
        let hb_args = [
            "up",
            "--every",
            "2s",
            "-z",
            lab.server(),
            "-s",
            host.name.as_str(),
            "--spool",
            hb_spool.to_str().unwrap(),
            "-v",
        ];
        let mut beat = Coprocess::spawn(HEARTBEAT, &hb_args);
        wait_for(
            "the heartbeat's first beat",
            Duration::from_secs(30),
            || {
                beat.assert_running("beating before the outage");
                Ok(beat.stderr().contains("beat: processed: 1").then_some(()))
            },
        );

        // The outage: more than three courier periods, the heartbeat stopped inside it.
        let mut outage = ServerOutage::begin(lab);
        let down_since = Instant::now();
        let mut windows = Vec::new();
        for run in 2..2 + OUTAGE_RUNS {
            let due = down_since + PERIOD * (run as u32 - 2);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            std::fs::write(&doc, document(run)).unwrap();
            let from = epoch_ns(SystemTime::now());
            let r = courier(lab, &host.name, &doc, &spool);
            let to = epoch_ns(SystemTime::now());
            r.assert_code(1, "-3");
            assert!(
                r.stderr.contains("kept 3 value(s) in the spool")
                    || r.stderr
                        .contains(&format!("kept {} value(s)", 3 * (run - 1))),
                "the spooled values are told: {r}"
            );
            windows.push((run, from, to));
        }
        assert!(down_since.elapsed() >= PERIOD * 3, "three periods down");
        let stop_from = epoch_ns(SystemTime::now());
        let (code, took) = beat.terminate(Duration::from_secs(15));
        let stop_to = epoch_ns(SystemTime::now());
        assert_eq!(
            code,
            Some(1),
            "the 0 could not be delivered in the outage\n{beat}"
        );
        assert!(
            took < Duration::from_secs(5),
            "stopped in {took:.2?}\n{beat}"
        );
        assert!(
            beat.stderr().contains("kept in the spool"),
            "the 0 is spooled\n{beat}"
        );
        let down_for = down_since.elapsed();
        note(&format!("outage phase done after {down_for:.1?}"));
        let _ = outage.end();
        note(&format!(
            "server-start returned after {:.1?}",
            down_since.elapsed()
        ));
        let restarted = Instant::now();
        lab.wait_until_accepted(&host.name, STATE, "1");
        note(&format!(
            "accepting again after {:.1?}",
            down_since.elapsed()
        ));

        // After the restart: two couriers sharing the spool at once, then the heartbeat's next
        // start. Only one of the couriers can claim the spool; both deliver their own values.
        std::fs::write(&doc, document(90)).unwrap();
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| courier(lab, &host.name, &doc, &spool));
            let b = s.spawn(|| courier(lab, &host.name, &doc, &spool));
            (a.join().unwrap(), b.join().unwrap())
        });
        a.assert_success();
        b.assert_success();
        let replayed: Vec<&Run> = [&a, &b]
            .into_iter()
            .filter(|r| r.stderr.contains("spooled value(s) ahead"))
            .collect();
        assert!(
            !replayed.is_empty(),
            "one of the couriers replays the spool\n{a}\n{b}"
        );
        let hb = run_tool(
            HEARTBEAT,
            &[
                "up",
                "-z",
                lab.server(),
                "-s",
                &host.name,
                "--spool",
                hb_spool.to_str().unwrap(),
            ],
            None,
            KILL_AFTER,
        );
        hb.assert_success();

        // Counted through the API: every outage value exactly once, at its collection clock.
        let mut outage_values = 0;
        for s in STATS {
            let rows = wait_for(
                &format!("{} outage values of {}", OUTAGE_RUNS, key(s)),
                Duration::from_secs(60),
                || {
                    let rows = lab.history(std::slice::from_ref(&items[s]), FLOAT)?;
                    let n = rows
                        .iter()
                        .filter(|r| {
                            windows
                                .iter()
                                .any(|w| r.value.parse::<f64>().ok() == Some(expected(s, w.0)))
                        })
                        .count();
                    Ok((n >= OUTAGE_RUNS).then_some(rows))
                },
            );
            for &(run, from, to) in &windows {
                let hits: Vec<&HistoryRow> = rows
                    .iter()
                    .filter(|r| r.value.parse::<f64>().ok() == Some(expected(s, run)))
                    .collect();
                assert_eq!(
                    hits.len(),
                    1,
                    "{} of run {run} exactly once: {hits:?}",
                    key(s)
                );
                let at = hits[0].at_ns();
                assert!(
                    (from..=to).contains(&at),
                    "{} of run {run} at its collection clock {at}, not in {from}..{to}",
                    key(s)
                );
                outage_values += 1;
            }
            let live = rows
                .iter()
                .filter(|r| r.value.parse::<f64>().ok() == Some(expected(s, 90)))
                .count();
            assert_eq!(live, 2, "{}: each courier's own value once", key(s));
        }
        assert_eq!(outage_values, STATS.len() * OUTAGE_RUNS);

        let zero = wait_for(
            "the heartbeat's 0 in history",
            Duration::from_secs(60),
            || {
                let rows = lab.history(std::slice::from_ref(&state_item), UNSIGNED)?;
                let zeros: Vec<HistoryRow> = rows.into_iter().filter(|r| r.value == "0").collect();
                Ok((!zeros.is_empty()).then_some(zeros))
            },
        );
        // At least once: a 0 whose reply was lost in the server's going down is sent again.
        let at_stop = zero
            .iter()
            .filter(|r| (stop_from..=stop_to).contains(&r.at_ns()))
            .count();
        assert!(
            at_stop >= 1,
            "the 0 at the clock of the stop ({stop_from}..{stop_to}): {zero:?}\n{beat}\n{hb}"
        );
        note(&format!(
            "heartbeat zeros {zero:?}; stop window {stop_from}..{stop_to}\n{beat}"
        ));
        note(&format!(
            "SPOOL outage {}: down {down_for:.1?}, {OUTAGE_RUNS} courier runs at {PERIOD:?} and the \
             heartbeat's stop inside it; {outage_values} outage values in history exactly once at \
             their collection clocks, the 0 at its stop clock; replayed {:.1?} after server-start",
            lab.version(),
            restarted.elapsed()
        ));
    }
);
