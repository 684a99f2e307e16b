//! The scaling profile beyond "load high" on real components (issue 17), configured by
//! concierge-setup, with heartbeat containers of a compose service as in loop_lab:
//!
//! - predictive pre-scaling: a load rising slowly towards {$LOAD_HIGH} fires the "load rising"
//!   trigger (forecast() over {$LOAD_FORECAST_WINDOW}), and the second container runs while
//!   the pushed load is still below {$LOAD_HIGH}; a flat load below it first does nothing;
//! - the upstream check: with `--upstream`, a high load does not scale while the upstream
//!   service's aggregated p95 is above {$UPSTREAM_P95_HIGH}, and does once it is healthy.
//!
//! Runs against each lab version (6.0 and 7.0). Needs the lab and the Docker engine; prints
//! SKIPPED without them unless CONCIERGE_REQUIRE_LAB/DOCKER=1.

use std::time::{Duration, Instant};

use anyhow::bail;
use concierge_testkit::docker::{self, Project};
use concierge_testkit::service::{
    heartbeat_project, hosts_in, scale_events, unix_now, wait_scaled_to, ScalePaths, ServiceCleanup,
};
use concierge_testkit::*;
use serde_json::{json, Value};

const SETTLE: Duration = Duration::from_secs(120);
/// The template's {$LOAD_HIGH}, which these tests leave as it is.
const LOAD_HIGH: f64 = 0.8;

/// The last value and its clock of `key` on host `hostid`, once it has one.
fn last_value(lab: &Lab, hostid: &str, key: &str) -> anyhow::Result<Option<(String, u64)>> {
    let found = lab.call(
        "item.get",
        json!({"output": ["lastvalue", "lastclock"], "hostids": [hostid],
               "filter": {"key_": [key]}}),
    )?;
    let item = &found[0];
    if item.is_null() {
        bail!("no item {key} yet");
    }
    let clock: u64 = item["lastclock"].as_str().unwrap_or("0").parse()?;
    if clock == 0 {
        return Ok(None);
    }
    Ok(item["lastvalue"].as_str().map(|v| (v.to_string(), clock)))
}

/// Wait until `key` on `hostid` has a last value `want` (compared as numbers).
fn wait_value(lab: &Lab, hostid: &str, key: &str, want: f64) -> u64 {
    wait_for(&format!("{key} = {want}"), SETTLE, || {
        match last_value(lab, hostid, key)? {
            Some((v, clock)) if (v.parse::<f64>()? - want).abs() < 1e-6 => Ok(Some(clock)),
            other => bail!("last value {other:?}"),
        }
    })
}

/// The service host's triggers that matter here, found by what they test (not by name, which
/// the template may word differently): (load high, load rising, upstream slow if any).
fn triggers(lab: &Lab, hostid: &str) -> (String, String, Option<String>) {
    let found = lab
        .call(
            "trigger.get",
            json!({"output": ["triggerid", "expression"], "hostids": [hostid],
                   "expandExpression": true}),
        )
        .expect("trigger.get");
    let find = |what: &dyn Fn(&str) -> bool| {
        found
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| what(t["expression"].as_str().unwrap_or_default()))
            .and_then(|t| t["triggerid"].as_str().map(str::to_string))
    };
    // expandExpression also expands the macros: "last(/HOST/service.load)>0.8".
    let high = find(&|e| e.starts_with("last(") && e.contains("/service.load)>"))
        .expect("a load high trigger");
    let rising = find(&|e| e.starts_with("forecast(")).expect("a load rising trigger");
    (high, rising, find(&|e| e.contains("service.upstream.p95")))
}

/// The state (0 OK, 1 PROBLEM) of trigger `triggerid`.
fn trigger_value(lab: &Lab, triggerid: &str) -> anyhow::Result<String> {
    let found = lab.call(
        "trigger.get",
        json!({"output": ["value"], "triggerids": [triggerid]}),
    )?;
    match found[0]["value"].as_str() {
        Some(v) => Ok(v.to_string()),
        None => bail!("no trigger {triggerid}"),
    }
}

fn wait_trigger(lab: &Lab, triggerid: &str, value: &str) {
    wait_for(
        &format!("trigger {triggerid} to be {value}"),
        SETTLE,
        || {
            let v = trigger_value(lab, triggerid)?;
            if v == value {
                Ok(Some(()))
            } else {
                bail!("value {v}")
            }
        },
    );
}

/// The problem events of trigger `triggerid` since `since` (unix seconds): (event id, name).
fn problems_of(lab: &Lab, triggerid: &str, since: u64) -> Vec<(String, String)> {
    let found = lab
        .call(
            "event.get",
            json!({"output": ["eventid", "name"], "objectids": [triggerid], "source": 0,
                   "object": 0, "value": 1, "time_from": since}),
        )
        .expect("event.get");
    found
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let field = |f: &str| e[f].as_str().unwrap_or_default().to_string();
            (field("eventid"), field("name"))
        })
        .collect()
}

/// The Zabbix event id in a scale event's reason ("Zabbix event ID: TRIGGER NAME").
fn reason_event(event: &Value) -> String {
    let reason = event["reason"].as_str().unwrap_or_default();
    reason
        .strip_prefix("Zabbix event ")
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("reason {reason:?} names no event"))
        .to_string()
}

/// Run concierge-setup for `service` (scaled by `project` when given, else a compose file
/// nobody runs) with `extra` options; the service host's id.
fn setup(lab: &Lab, service: &str, project: Option<&Project>, extra: &[&str]) -> String {
    let (paths, project_name) = match project {
        Some(p) => (ScalePaths::of(lab, p), p.name.clone()),
        None => {
            let scale = lab
                .facts()
                .lab_path(&bin("concierge-scale"))
                .expect("the lab sees this checkout's concierge-scale (ZLAB_SHARE)");
            let paths = ScalePaths {
                scale_command: scale.to_string_lossy().into_owned(),
                compose_file: format!("/nonexistent/{service}/docker-compose.yml"),
                state_dir: "/nonexistent/concierge-state".to_string(),
                project_dir: "/nonexistent".into(),
            };
            (paths, service.to_string())
        }
    };
    let mut args = paths.setup_args(lab, service, &project_name);
    args.extend([
        "--min",
        "1",
        "--max",
        "2",
        "--cooldown",
        "45s",
        "--aggregate-interval",
        "2s",
        "--repeat-every",
        "60s",
        "--zabbix-server",
        lab.server(),
    ]);
    if !lab.facts().global_scripts() {
        args.extend(["--scale-agent", lab.facts().agent()]);
    }
    args.extend_from_slice(extra);
    let run = {
        let _imports = template_imports_lock();
        run_tool("concierge-setup", &args, None, Duration::from_secs(120))
    };
    assert_eq!(run.code, Some(0), "{run}");
    let host = lab
        .host_by_name(&format!("{service}-service"))
        .expect("host.get")
        .expect("the service host");
    host["hostid"].as_str().expect("hostid").to_string()
}

/// Start one container of `project` and wait until it is registered and counted; its host.
fn one_container(lab: &Lab, project: &Project, service: &str, hostid: &str) -> String {
    project.start(1, SETTLE);
    let group = format!("Concierge/{service}");
    let hosts = wait_for("the container to register", SETTLE, || {
        let hosts = hosts_in(lab, &group)?;
        Ok((hosts.len() == 1).then_some(hosts))
    });
    wait_value(lab, hostid, "service.containers.running", 1.0);
    hosts.into_iter().next().expect("one host")
}

lab_test!(
    fn a_rising_load_scales_up_before_it_is_high(lab: &Lab) {
        if !docker::available(&current_test()) {
            return;
        }
        let t0 = Instant::now();
        let since = unix_now();
        let service = docker::unique("rise");
        let _cleanup = ServiceCleanup::new(lab, &service);
        let project = heartbeat_project(lab, &service, &[], &[]);
        let hostid = setup(
            lab,
            &service,
            Some(&project),
            &[
                "--load-forecast-window",
                "30s",
                "--load-forecast-horizon",
                "60s",
            ],
        );
        let container = one_container(lab, &project, &service, &hostid);
        let (high, rising, _) = triggers(lab, &hostid);

        // A flat load below {$LOAD_HIGH}: the trend reaches nothing, nothing fires, one runs.
        lab.wait_until_accepted(&container, "concierge.load", "0.5");
        let flat_from = wait_value(lab, &hostid, "service.load", 0.5);
        wait_for("10 aggregates of the flat load", SETTLE, || {
            assert_eq!(trigger_value(lab, &rising)?, "0", "a flat load");
            assert_eq!(project.running()?.len(), 1, "a flat load scaled");
            match last_value(lab, &hostid, "service.load")? {
                Some((_, clock)) if clock >= flat_from + 20 => Ok(Some(())),
                other => bail!("last {other:?}"),
            }
        });

        // A rising load, 0.004 per second from 0.5: {$LOAD_HIGH} 0.8 would be reached after
        // 75 s; the forecast over 30 s sees it 60 s ahead, so the second container runs first.
        let ramp = Instant::now();
        let mut last = 0.5;
        let mut pushed = 0;
        let mut pushed_at = ramp;
        let second = wait_for("the second container (predictive scale-up)", SETTLE, || {
            let running = project.running()?;
            if running.len() == 2 {
                return Ok(Some(ramp.elapsed()));
            }
            // One value a second (each container pushes its own load about as often).
            if pushed_at.elapsed() >= Duration::from_secs(1) {
                last = (0.5 + 0.004 * ramp.elapsed().as_secs_f64()).min(0.95);
                lab.wait_until_accepted(&container, "concierge.load", &format!("{last:.3}"));
                pushed += 1;
                pushed_at = Instant::now();
            }
            bail!("{} running, load pushed {last:.3}", running.len())
        });
        assert!(
            last < LOAD_HIGH,
            "the second container ran {second:.1?} into the ramp, at load {last} (not below \
             {LOAD_HIGH}): not predictive"
        );
        let up = wait_scaled_to(&project, 2, SETTLE);
        assert_eq!(up["from"], 1, "{up}");
        let reason = up["reason"].as_str().unwrap_or_default().to_string();
        // The action ran for a problem of the predictive trigger, and "load high" never fired.
        let predicted = problems_of(lab, &rising, since);
        assert!(
            predicted.iter().any(|(id, _)| *id == reason_event(&up)),
            "{up} not for a problem of the predictive trigger: {predicted:?}"
        );
        let overloaded = problems_of(lab, &high, since);
        assert!(overloaded.is_empty(), "load high fired: {overloaded:?}");
        note(&format!(
            "predictive on {}: flat 0.5 for 20 s did nothing; ramp 0.004/s from 0.5 -> second \
             container after {second:.1?} ({pushed} values pushed), at load {last:.3} < \
             {LOAD_HIGH}; reason {reason:?}; total {:.1?}",
            lab.api_version(),
            t0.elapsed()
        ));
    }
);

lab_test!(
    fn a_slow_upstream_holds_scale_up_until_it_is_healthy(lab: &Lab) {
        if !docker::available(&current_test()) {
            return;
        }
        let t0 = Instant::now();
        let since = unix_now();
        let service = docker::unique("front");
        let upstream = docker::unique("back");
        let _cleanup = [
            ServiceCleanup::new(lab, &service),
            ServiceCleanup::new(lab, &upstream),
        ];
        const TIMER: &str = "db.query";
        let key = format!("timer[{TIMER}.p95]");

        // The upstream service: its service host aggregates TIMER's p95 over its group, where
        // one host (standing for its containers) reports it.
        let upstream_hostid = setup(lab, &upstream, None, &["--timer", TIMER]);
        let group = lab
            .call(
                "hostgroup.get",
                json!({"output": ["groupid"], "filter": {"name": [format!("Concierge/{upstream}")]}}),
            )
            .expect("hostgroup.get")[0]["groupid"]
            .clone();
        let backend = format!("{upstream}-1");
        let made = lab
            .call(
                "host.create",
                json!({"host": backend, "groups": [{"groupid": group}]}),
            )
            .expect("host.create");
        lab.call(
            "item.create",
            json!({"hostid": made["hostids"][0], "name": key, "key_": key, "type": 2,
                   "value_type": 0}),
        )
        .expect("item.create");
        lab.wait_until_accepted(&backend, &key, "2.5");
        let upstream_p95 = format!("service.timer.p95[{TIMER}]");
        wait_value(lab, &upstream_hostid, &upstream_p95, 2.5);

        // Our service, with the upstream check.
        let project = heartbeat_project(lab, &service, &[], &[]);
        let hostid = setup(
            lab,
            &service,
            Some(&project),
            &["--upstream", &upstream, "--upstream-p95-high", "1"],
        );
        wait_value(lab, &hostid, "service.upstream.p95", 2.5);
        let (high, rising, slow) = triggers(lab, &hostid);
        let slow = slow.expect("setup made the upstream trigger");
        wait_trigger(lab, &slow, "1");
        let container = one_container(lab, &project, &service, &hostid);

        // High load while the upstream is slow: both scale-up triggers wait, nothing scales,
        // over 20 s of aggregates (ten evaluations).
        lab.wait_until_accepted(&container, "concierge.load", "5");
        let high_from = wait_value(lab, &hostid, "service.load", 5.0);
        wait_for("20 s of high load with a slow upstream", SETTLE, || {
            for t in [&high, &rising] {
                assert_eq!(trigger_value(lab, t)?, "0", "scale-up trigger {t} fired");
            }
            assert_eq!(trigger_value(lab, &slow)?, "1");
            assert_eq!(project.running()?.len(), 1, "scaled with a slow upstream");
            match last_value(lab, &hostid, "service.load")? {
                Some((_, clock)) if clock >= high_from + 20 => Ok(Some(())),
                other => bail!("last {other:?}"),
            }
        });
        assert!(
            scale_events(&project).is_empty(),
            "{:?}",
            scale_events(&project)
        );

        // The upstream recovers: the held load now scales.
        lab.wait_until_accepted(&backend, &key, "0.2");
        let healthy = Instant::now();
        wait_trigger(lab, &slow, "0");
        project.wait_running(2, SETTLE);
        let scaled = healthy.elapsed();
        let up = wait_scaled_to(&project, 2, SETTLE);
        assert_eq!(up["from"], 1, "{up}");
        // The scaling was for a problem of a scale-up trigger; the upstream trigger had one.
        let event = reason_event(&up);
        let after: Vec<(String, String)> = [&high, &rising]
            .iter()
            .flat_map(|t| problems_of(lab, t, since))
            .collect();
        assert!(
            after.iter().any(|(id, _)| *id == event),
            "{up}: not a scale-up problem {after:?}"
        );
        assert!(!problems_of(lab, &slow, since).is_empty());
        note(&format!(
            "upstream on {}: load 5 held 20 s with upstream p95 2.5 > 1; upstream p95 0.2 -> \
             second container {scaled:.1?} later (reason {:?}); total {:.1?}",
            lab.api_version(),
            up["reason"],
            t0.elapsed()
        ));
    }
);
