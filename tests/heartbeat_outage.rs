//! concierge-heartbeat through a Zabbix outage: the server of the lab version under test is
//! stopped for at least three beat periods and started again; the heartbeat never exits, says
//! what failed, and its beats land again after the restart.
//!
//! This is a test binary of its own, with one test per version, because it stops a lab's Zabbix
//! server: cargo runs test binaries one at a time, so no other test of this package runs during
//! the outage, and each version's variant stops only its own server. The server is started
//! again even when the test fails (a drop guard).

use std::time::{Duration, Instant, SystemTime};

use concierge_testkit::*;

const HEARTBEAT: &str = "concierge-heartbeat";
const KEY: &str = "container.state";
const PERIOD: Duration = Duration::from_secs(2);
/// The outage lasts at least this many beat periods.
const PERIODS_DOWN: u32 = 3;

/// How many failed beats the heartbeat reported (with -v it reports each one).
fn failed_beats(stderr: &str) -> usize {
    stderr.matches("beat failed").count()
}

lab_test!(
    fn beats_resume_after_the_server_was_down_for_three_periods(lab: &Lab) {
        let host = lab.create_host(&unique_host("hb-outage"));
        let itemid = host.create_trapper_item(KEY, UNSIGNED);
        lab.wait_until_accepted(&host.name, KEY, "1");

        let mut beat = Coprocess::spawn(
            HEARTBEAT,
            &[
                "up",
                "--every",
                "2s",
                "-z",
                lab.server(),
                "-s",
                &host.name,
                "-v",
            ],
        );
        let beats_since = |lab: &Lab, t: SystemTime| -> anyhow::Result<usize> {
            let t = epoch_ns(t);
            Ok(lab
                .history(std::slice::from_ref(&itemid), UNSIGNED)?
                .iter()
                .filter(|r| r.at_ns() >= t && r.value == "1")
                .count())
        };
        let started_at = beat.started_at;
        wait_for("a first beat in history", Duration::from_secs(30), || {
            beat.assert_running("beating before the outage");
            Ok((beats_since(lab, started_at)? >= 1).then_some(()))
        });
        let before = beats_since(lab, started_at).expect("history");

        // The outage: it starts when the server is gone, and lasts until the heartbeat has failed
        // at least three beats and three periods have passed.
        let mut outage = ServerOutage::begin(lab);
        let stop_took = outage.stop_took;
        let down_since = Instant::now();
        let failed_before = failed_beats(&beat.stderr());
        let failed = wait_for(
            "three failed beats while the server is down",
            Duration::from_secs(60),
            || {
                beat.assert_running("the server is down");
                let failed = failed_beats(&beat.stderr()) - failed_before;
                let long_enough = down_since.elapsed() >= PERIOD * PERIODS_DOWN;
                Ok((failed >= PERIODS_DOWN as usize && long_enough).then_some(failed))
            },
        );
        let restart_at = SystemTime::now();
        let down_for = down_since.elapsed();
        let start_took = outage.end();
        let restarted = Instant::now();

        let recovered = wait_for(
            "a beat sent after the restart in history",
            Duration::from_secs(60),
            || {
                beat.assert_running("the server restarts");
                Ok((beats_since(lab, restart_at)? >= 1).then(|| restarted.elapsed()))
            },
        );
        wait_for(
            "\"delivered again\" on the heartbeat's stderr",
            Duration::from_secs(30),
            || {
                beat.assert_running("the server is back");
                Ok(beat.stderr().contains("delivered again").then_some(()))
            },
        );
        let stderr = beat.stderr();
        assert!(
            stderr.contains("beat failed"),
            "stderr should report the failure:\n{beat}"
        );

        let (code, stop_sig_took) = beat.terminate(Duration::from_secs(15));
        assert_eq!(code, Some(0), "exit status after SIGTERM\n{beat}");
        assert!(
            stop_sig_took < Duration::from_secs(5),
            "SIGTERM took {stop_sig_took:.2?}\n{beat}"
        );
        assert_eq!(
            beat.stdout(),
            "",
            "a coprocess prints nothing on stdout\n{beat}"
        );
        note(&format!(
        "TIMING outage {}: server-stop took {stop_took:.2?}; down {down_for:.1?} ({failed} failed beats \
         at 2 s, {before} beat(s) before); server-start took {start_took:.2?}; first beat after the \
         restart in history {recovered:.2?} after server-start returned; SIGTERM → exit 0 in \
         {stop_sig_took:.2?}",
        lab.version()
    ));
        // The first failures (the server shutting down, then gone) and the recovery, as logged.
        let mut seen = std::collections::BTreeSet::new();
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("beat failed") || l.contains("delivered again"))
            .filter(|l| seen.insert(l.split(": ").take(3).collect::<Vec<_>>().join(": ")))
            .collect();
        note(&format!("outage stderr: {lines:#?}"));
    }
);
