//! concierge-heartbeat against each real Zabbix lab (6.0 and 7.0): self-registration through an
//! autoregistration action, the beat cadence, the 0 on SIGTERM and the "state is 0" trigger,
//! the nodata triggers after a SIGKILL, the one-shot, and PID 1 in a `FROM scratch` container.
//! Each test has its own host (and action), deleted at the end even when it fails. Without the
//! lab these tests print SKIPPED and return, unless CONCIERGE_REQUIRE_LAB=1.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail};
use concierge_testkit::docker::{self, docker};
use concierge_testkit::*;
use serde_json::{json, Value};

const HEARTBEAT: &str = "concierge-heartbeat";
const KEY: &str = "container.state";
/// A stop well inside Docker's default 10 s timeout.
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// A wait after which a stop is surely broken (the process is then killed and the test fails).
const KILL_AFTER: Duration = Duration::from_secs(15);

/// The history of `container.state` on host `hostid`, oldest first.
fn states_of(lab: &Lab, hostid: &str) -> anyhow::Result<Vec<HistoryRow>> {
    let items = lab.call(
        "item.get",
        json!({"output": ["itemid"], "hostids": [hostid], "filter": {"key_": [KEY]}}),
    )?;
    let itemid = items
        .pointer("/0/itemid")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no {KEY} item on host {hostid} yet"))?;
    lab.history(&[itemid.to_string()], UNSIGNED)
}

/// The history of `container.state` on `host`, oldest first.
fn states(host: &Host) -> anyhow::Result<Vec<HistoryRow>> {
    states_of(&host.lab, &host.hostid)
}

/// The values that arrived at or after `since` (wall clock).
fn since(rows: &[HistoryRow], since: SystemTime) -> Vec<HistoryRow> {
    let t = epoch_ns(since);
    rows.iter().filter(|r| r.at_ns() >= t).cloned().collect()
}

/// Wait until `n` values of 1 sent by `beat` (clock after its start) are in history.
fn wait_for_beats(host: &Host, beat: &mut Coprocess, n: usize, limit: Duration) -> Vec<HistoryRow> {
    wait_for_beats_of(&host.lab, &host.hostid, beat, n, limit)
}

/// [`wait_for_beats`] for host `hostid`.
fn wait_for_beats_of(
    lab: &Lab,
    hostid: &str,
    beat: &mut Coprocess,
    n: usize,
    limit: Duration,
) -> Vec<HistoryRow> {
    let started_at = beat.started_at;
    wait_for(
        &format!("{n} beats of host {hostid} in history"),
        limit,
        || {
            beat.assert_running("beating");
            let rows = since(&states_of(lab, hostid)?, started_at);
            if let Some(bad) = rows.iter().find(|r| r.value != "1") {
                bail!("unexpected value while beating: {bad:?}");
            }
            Ok((rows.len() >= n).then_some(rows))
        },
    )
}

/// Wait until a 0 that arrived after `after` is in history, and return the whole history.
fn wait_for_goodbye(host: &Host, after: SystemTime) -> Vec<HistoryRow> {
    wait_for(
        &format!("the 0 of {} in history", host.name),
        Duration::from_secs(30),
        || {
            let rows = states(host)?;
            let zero = since(&rows, after).iter().any(|r| r.value == "0");
            Ok(zero.then_some(rows))
        },
    )
}

/// The last value by clock (and ns).
fn last_value(rows: &[HistoryRow]) -> String {
    rows.iter()
        .max_by_key(|r| r.at_ns())
        .map(|r| r.value.clone())
        .unwrap_or_default()
}

/// A host linked to the heartbeat template, with host macros `macros`; returns it once the
/// server accepts values for container.state.
fn heartbeat_host(lab: &Lab, prefix: &str, macros: Value) -> Host {
    let template = lab.heartbeat_template();
    let host = lab.create_host_with(
        &unique_host(prefix),
        json!({"templates": [{"templateid": template}], "macros": macros}),
    );
    lab.wait_until_accepted(&host.name, KEY, "1");
    host
}

/// `concierge-heartbeat up --every <every> -z <the lab's server> -s <host> -v`, plus `extra`.
fn beat(lab: &Lab, host: &str, every: &str, extra: &[&str]) -> Coprocess {
    let mut args = vec!["up", "--every", every, "-z", lab.server(), "-s", host, "-v"];
    args.extend_from_slice(extra);
    Coprocess::spawn(HEARTBEAT, &args)
}

/// Wait until the server registers hosts announcing `metadata` (its configuration cache has
/// the action): announce a fresh probe host (each name is new to the server, so 7.0 does not
/// ignore it) every 2 s until one exists. The probes go into `probes`, deleted on drop.
fn wait_until_registering(lab: &Lab, metadata: &str, probes: &mut HostNamed) -> Duration {
    let start = Instant::now();
    let mut last_announce: Option<Instant> = None;
    wait_for(
        "the autoregistration action to reach the server",
        Duration::from_secs(60),
        || {
            if !probes.names.is_empty() {
                let found = lab.call(
                    "host.get",
                    json!({"output": ["hostid"], "filter": {"host": probes.names}}),
                )?;
                if found.as_array().is_some_and(|a| !a.is_empty()) {
                    return Ok(Some(()));
                }
            }
            if last_announce.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
                let probe = unique_host("hb-probe");
                probes.names.push(probe.clone());
                lab.announce(&probe, metadata)?;
                last_announce = Some(Instant::now());
            }
            Ok(None)
        },
    );
    start.elapsed()
}

/// SIGTERM, which must end the coprocess with exit 0 inside STOP_LIMIT, and nothing on stdout.
fn stop(beat: &mut Coprocess) -> Duration {
    let (code, took) = beat.terminate(KILL_AFTER);
    assert_eq!(code, Some(0), "exit status after SIGTERM\n{beat}");
    assert!(took < STOP_LIMIT, "SIGTERM took {took:.2?}\n{beat}");
    assert_eq!(
        beat.stdout(),
        "",
        "a coprocess prints nothing on stdout\n{beat}"
    );
    took
}

lab_test!(
    fn registration_creates_the_host_and_links_the_template(lab: &Lab) {
        let template = lab.heartbeat_template();
        let name = unique_host("hb-register");
        let token = format!("concierge-e2e-{}", &name["hb-register-".len()..]);
        // Dropped last: the host that the server creates, whatever happens.
        let _registered = HostNamed::new(lab, &name);
        let _action = lab.create_registration_action(&token, &template);
        let metadata = format!("app=demo {token}");
        // Zabbix 7.0 ignores an unknown host's identical re-announce for 120 s after the first
        // one, so the action must be in the server's configuration cache before the heartbeat's
        // first announce (concierge-setup creates it before anything else for this reason).
        let mut probes = HostNamed {
            lab: lab.clone(),
            names: Vec::new(),
        };
        let action_took = wait_until_registering(lab, &metadata, &mut probes);
        // Announcing again only every 60 s: the host must come from the first announce, well
        // within the limit below (and the 120 s a lost first announce costs on 7.0).
        let mut beat = beat(
            lab,
            &name,
            "1s",
            &[
                "--register",
                "--register-every",
                "60s",
                "--metadata",
                &metadata,
            ],
        );
        let host = wait_for(
            "the registered host with the heartbeat template",
            Duration::from_secs(30),
            || {
                beat.assert_running("registering");
                let Some(h) = lab.host_by_name(&name)? else {
                    return Ok(None);
                };
                let linked = h["parentTemplates"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t["host"] == HEARTBEAT_TEMPLATE));
                Ok(linked.then_some(h))
            },
        );
        let registered_after = beat.started.elapsed();
        let groups: Vec<&str> = host["groups"]
            .as_array()
            .map(|g| g.iter().filter_map(|g| g["name"].as_str()).collect())
            .unwrap_or_default();
        let group = lab.facts().lab_group();
        assert!(groups.contains(&group), "groups of {name}: {groups:?}");

        let hostid = host["hostid"].as_str().expect("hostid");
        let beats = wait_for_beats_of(lab, hostid, &mut beat, 1, Duration::from_secs(60));
        let first_beat_after = beat.started.elapsed();
        assert!(
            beat.stderr().contains("registration requested"),
            "the heartbeat should say it asked for registration\n{beat}"
        );
        let stop_took = stop(&mut beat);
        note(&format!(
            "TIMING registration on {}: action effective {action_took:.2?} after creation; host \
             with template {registered_after:.2?} after start, first beat in history \
             {first_beat_after:.2?} after start ({} beat(s) then), SIGTERM → exit 0 in \
             {stop_took:.2?}",
            lab.api_version(),
            beats.len()
        ));
    }
);

lab_test!(
    fn beats_land_on_a_steady_cadence_and_stop_sends_zero(lab: &Lab) {
        let host = heartbeat_host(lab, "hb-cadence", json!([]));
        let mut beat = beat(lab, &host.name, "2s", &[]);
        // Seven beats take 12 s: about the 14 s of the brief, and at least 6 intervals.
        let beats = wait_for_beats(&host, &mut beat, 7, Duration::from_secs(60));
        let ran = beat.started.elapsed();
        let stop_requested = SystemTime::now();
        let stop_took = stop(&mut beat);

        let gaps: Vec<f64> = beats
            .windows(2)
            .map(|w| (w[1].at_ns() - w[0].at_ns()) as f64 / 1e9)
            .collect();
        assert!(gaps.len() >= 6, "intervals: {gaps:?}");
        for g in &gaps {
            assert!(
                (1.6..=2.4).contains(g),
                "interval {g:.3} s is not within ±20 % of 2 s; all: {gaps:?}\n{beat}"
            );
        }
        let rows = wait_for_goodbye(&host, stop_requested);
        assert_eq!(last_value(&rows), "0", "last value by clock: {rows:?}");
        let (min, max) = gaps
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), g| (a.min(*g), b.max(*g)));
        note(&format!(
            "TIMING cadence: {} beats in {ran:.1?}, intervals {min:.3}–{max:.3} s (2 s ± 20 %), \
         SIGTERM → exit 0 in {stop_took:.2?}, last value 0",
            beats.len()
        ));
    }
);

lab_test!(
    fn sigterm_sends_zero_and_the_state_is_0_trigger_fires(lab: &Lab) {
        // Short windows, so that "No heartbeat" and "unreachable" would fire within a minute
        // (as in the SIGKILL test) if "Container stopped" did not suppress them.
        let host = heartbeat_host(
            lab,
            "hb-sigterm",
            json!([
                {"macro": "{$HEARTBEAT_NODATA}", "value": "30s"},
                {"macro": "{$UNREACHABLE_NODATA}", "value": "30s"}
            ]),
        );
        let mut beat = beat(lab, &host.name, "1s", &[]);
        wait_for_beats(&host, &mut beat, 1, Duration::from_secs(30));
        let stopped = Instant::now();
        let stop_took = stop(&mut beat);
        let problem = wait_for(
            "the problem \"Concierge: Container stopped\"",
            Duration::from_secs(60),
            || {
                let problems = lab.problems(&host.hostid)?;
                let found = problems
                    .iter()
                    .find(|p| p["name"].as_str() == Some("Concierge: Container stopped"));
                match found {
                    Some(p) => Ok(Some(p["name"].as_str().unwrap_or_default().to_string())),
                    None => Err(anyhow!(
                        "open problems: {problems}",
                        problems = json!(problems)
                    )),
                }
            },
        );
        let opened = stopped.elapsed();
        // The dependent triggers stay quiet: poll until well past the moment they fire after a
        // SIGKILL (window 30 s, nodata evaluated every 30 s), failing at the first one.
        let quiet_until = stopped + Duration::from_secs(100);
        while Instant::now() < quiet_until {
            let problems = lab.problems(&host.hostid).expect("problem.get");
            let names: Vec<&str> = problems.iter().filter_map(|p| p["name"].as_str()).collect();
            assert_eq!(
                names,
                ["Concierge: Container stopped"],
                "a stopped container suppresses \"No heartbeat\" and \"silent\""
            );
            std::thread::sleep(Duration::from_secs(5));
        }
        note(&format!(
            "TIMING sigterm: exit 0 in {stop_took:.2?}; problem {problem:?} open {opened:.2?} \
             after SIGTERM; no dependent problem in the 100 s after"
        ));
    }
);

lab_test!(
    fn sigkill_makes_the_nodata_triggers_fire(lab: &Lab) {
        // The template's windows are 2m and 1m; the host macros shorten both to 30 s.
        let host = heartbeat_host(
            lab,
            "hb-sigkill",
            json!([
                {"macro": "{$HEARTBEAT_NODATA}", "value": "30s"},
                {"macro": "{$UNREACHABLE_NODATA}", "value": "30s"}
            ]),
        );
        let mut beat = beat(lab, &host.name, "1s", &[]);
        wait_for_beats(&host, &mut beat, 3, Duration::from_secs(30));
        beat.kill();
        let killed = Instant::now();
        let (status, _) = beat.wait_exit(KILL_AFTER);
        assert_eq!(status.code(), None, "SIGKILL leaves no exit code\n{beat}");
        let rows = states(&host).expect("history");
        assert_eq!(last_value(&rows), "1", "SIGKILL sends no goodbye: {rows:?}");

        let mut no_heartbeat: Option<Duration> = None;
        let mut unreachable: Option<Duration> = None;
        wait_for(
            "the \"No heartbeat\" and \"both unreachable\" problems",
            Duration::from_secs(240),
            || {
                let problems = lab.problems(&host.hostid)?;
                let names: Vec<&str> = problems.iter().filter_map(|p| p["name"].as_str()).collect();
                if no_heartbeat.is_none()
                    && names
                        .iter()
                        .any(|n| n.starts_with("Concierge: No heartbeat for"))
                {
                    no_heartbeat = Some(killed.elapsed());
                }
                if unreachable.is_none()
                    && names
                        .iter()
                        .any(|n| n.starts_with("Concierge: Push and pull checks both silent"))
                {
                    unreachable = Some(killed.elapsed());
                }
                if no_heartbeat.is_some() && unreachable.is_some() {
                    Ok(Some(()))
                } else {
                    Err(anyhow!("open problems so far: {names:?}"))
                }
            },
        );
        let (a, b) = (
            no_heartbeat.unwrap_or_default(),
            unreachable.unwrap_or_default(),
        );
        note(&format!(
            "TIMING nodata (windows 30s): \"No heartbeat\" {a:.1?} and \"Push and pull … both \
         unreachable\" {b:.1?} after SIGKILL"
        ));
    }
);

lab_test!(
    fn one_shot_down_sends_zero(lab: &Lab) {
        let host = lab.create_host(&unique_host("hb-oneshot"));
        host.create_trapper_item(KEY, UNSIGNED);
        lab.wait_until_accepted(&host.name, KEY, "1");
        let before = SystemTime::now();
        let run = run_tool(
            HEARTBEAT,
            &["down", "-z", lab.server(), "-s", &host.name],
            None,
            Duration::from_secs(30),
        );
        let secs = run.assert_success();
        let rows = wait_for_goodbye(&host, before);
        assert_eq!(last_value(&rows), "0", "{rows:?}\n{run}");
        note(&format!(
            "TIMING one-shot down: printed {secs} s, took {:.3?}",
            run.elapsed
        ));
    }
);

// ---------------------------------------------------------------------------------------------
// PID 1 in a container
// ---------------------------------------------------------------------------------------------

/// A container that is removed (`docker rm -f`) when dropped.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        if let Err(e) = docker(&["rm", "-f", &self.0]) {
            note(&format!("could not remove container {}: {e:#}", self.0));
        }
    }
}

/// The process's PID in its innermost PID namespace, from /proc/<pid>/status (NSpid).
fn pid_in_namespace(host_pid: &str) -> Option<String> {
    let status = std::fs::read_to_string(Path::new("/proc").join(host_pid).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_string)
}

lab_test!(
    fn pid_1_in_a_scratch_container_stops_cleanly(lab: &Lab) {
        if !docker::available(&current_test()) {
            return;
        }
        let image = docker::heartbeat_image();
        let host = lab.create_host(&unique_host("hb-docker"));
        host.create_trapper_item(KEY, UNSIGNED);
        lab.wait_until_accepted(&host.name, KEY, "1");

        let container = Container(unique_host("concierge-hb-e2e"));
        let started_at = SystemTime::now();
        let started = Instant::now();
        docker(&[
            "run",
            "-d",
            "--network",
            "host",
            "--name",
            &container.0,
            image,
            "up",
            "--every",
            "1s",
            "-z",
            lab.server(),
            "-s",
            &host.name,
            "-v",
        ])
        .unwrap_or_else(|e| panic!("{e:#}"));
        let logs = || docker(&["logs", &container.0]).unwrap_or_else(|e| format!("{e:#}"));
        let host_pid = docker(&["inspect", "-f", "{{.State.Pid}}", &container.0])
            .expect("docker inspect")
            .trim()
            .to_string();
        // Where the engine's processes are visible (a local engine), prove the heartbeat is PID 1.
        let pid1 = match pid_in_namespace(&host_pid) {
            Some(pid) => {
                assert_eq!(pid, "1", "the heartbeat should be PID 1 in its container");
                "PID 1 checked (NSpid)"
            }
            None => "PID 1 not checked (no /proc entry for the container's process)",
        };
        wait_for("beats from the container", Duration::from_secs(30), || {
            let running = docker(&["inspect", "-f", "{{.State.Running}}", &container.0])?;
            if running.trim() != "true" {
                panic!("the container stopped while beating:\n{}", logs());
            }
            let rows = since(&states(&host)?, started_at);
            Ok((rows.len() >= 2).then_some(()))
        });
        let first_beats = started.elapsed();

        let stop_requested = SystemTime::now();
        let t = Instant::now();
        docker(&["stop", "-t", "10", &container.0]).unwrap_or_else(|e| panic!("{e:#}"));
        let stop_took = t.elapsed();
        let code =
            docker(&["inspect", "-f", "{{.State.ExitCode}}", &container.0]).expect("inspect");
        assert!(
            stop_took < STOP_LIMIT,
            "docker stop took {stop_took:.2?}: PID 1 did not handle SIGTERM\n{}",
            logs()
        );
        assert_eq!(code.trim(), "0", "exit code of the container\n{}", logs());
        let rows = wait_for_goodbye(&host, stop_requested);
        assert_eq!(last_value(&rows), "0", "{rows:?}\n{}", logs());
        note(&format!(
            "TIMING docker: {pid1}, 2 beats in history {first_beats:.2?} after docker run, \
         docker stop -t 10 returned in {stop_took:.2?}, exit code 0, last value 0"
        ));
    }
);
