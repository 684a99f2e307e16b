//! The whole Concierge loop on real components: a compose service of heartbeat containers
//! registers itself with Zabbix, the "Concierge service" aggregates count it, a high load
//! fires the scale-up trigger whose action runs concierge-scale, the new container registers
//! and beats, "nodes scaled to 2" is recorded, and a low load scales back to one — but only
//! once the cooldown has passed. Everything is configured by concierge-setup.
//!
//! Needs the lab (`make lab`: the server runs actions as user zabbix, in group docker) and the
//! Docker engine; prints SKIPPED without them unless CONCIERGE_REQUIRE_LAB/DOCKER=1.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use serde_json::{json, Value};
use support::docker::{self, Project};
use support::*;

/// The cooldown concierge-scale keeps between two scalings of the service.
const COOLDOWN: Duration = Duration::from_secs(45);
/// How often the actions repeat their command while the load trigger stays in PROBLEM (the
/// API's minimum).
const REPEAT: &str = "60s";
const SETTLE: Duration = Duration::from_secs(120);

/// Deletes, when dropped, everything concierge-setup and autoregistration made for `service`.
struct Cleanup {
    lab: Lab,
    service: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::env::var("CONCIERGE_KEEP_HOSTS").as_deref() == Ok("1") {
            return;
        }
        let names: Vec<String> = ["register", "scale up", "scale down"]
            .iter()
            .map(|a| format!("Concierge: {a} {}", self.service))
            .collect();
        if let Ok(found) = self.lab.call(
            "action.get",
            json!({"output": ["actionid"], "filter": {"name": names}}),
        ) {
            let ids: Vec<Value> = ids_of(&found, "actionid");
            if !ids.is_empty() {
                let _ = self.lab.call("action.delete", Value::Array(ids));
            }
        }
        // The service's scripts carry its scaling actions' names.
        if let Ok(found) = self.lab.call(
            "script.get",
            json!({"output": ["scriptid"], "filter": {"name": names[1..].to_vec()}}),
        ) {
            let ids: Vec<Value> = ids_of(&found, "scriptid");
            if !ids.is_empty() {
                let _ = self.lab.call("script.delete", Value::Array(ids));
            }
        }
        let mut ids = Vec::new();
        let group = self.group_id(&format!("Concierge/{}", self.service));
        if let Some(g) = &group {
            if let Ok(found) = self
                .lab
                .call("host.get", json!({"output": ["hostid"], "groupids": [g]}))
            {
                ids.extend(ids_of(&found, "hostid"));
            }
        }
        if let Ok(svc) = self.lab.call(
            "host.get",
            json!({"output": ["hostid"],
                   "filter": {"host": [format!("{}-service", self.service)]}}),
        ) {
            ids.extend(ids_of(&svc, "hostid"));
        }
        if !ids.is_empty() {
            let _ = self.lab.call("host.delete", Value::Array(ids));
        }
        if let Some(g) = group {
            let _ = self.lab.call("hostgroup.delete", json!([g]));
        }
    }
}

impl Cleanup {
    fn group_id(&self, name: &str) -> Option<String> {
        self.lab
            .call(
                "hostgroup.get",
                json!({"output": ["groupid"], "filter": {"name": [name]}}),
            )
            .ok()?
            .get(0)?
            .get("groupid")?
            .as_str()
            .map(str::to_string)
    }
}

fn ids_of(found: &Value, field: &str) -> Vec<Value> {
    found
        .as_array()
        .map(|a| a.iter().map(|o| o[field].clone()).collect())
        .unwrap_or_default()
}

/// The technical names of the hosts in `group`.
fn hosts_in(lab: &Lab, group: &str) -> anyhow::Result<BTreeSet<String>> {
    let g = lab.call(
        "hostgroup.get",
        json!({"output": ["groupid"], "filter": {"name": [group]}}),
    )?;
    let Some(gid) = g[0]["groupid"].as_str() else {
        return Ok(BTreeSet::new());
    };
    let found = lab.call("host.get", json!({"output": ["host"], "groupids": [gid]}))?;
    Ok(found
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["host"].as_str().map(str::to_string))
        .collect())
}

/// The last value of `key` on host `hostid` (item.get lastvalue), once it has one.
fn last_value(lab: &Lab, hostid: &str, key: &str) -> anyhow::Result<Option<String>> {
    let found = lab.call(
        "item.get",
        json!({"output": ["lastvalue", "lastclock", "state", "error"], "hostids": [hostid],
               "filter": {"key_": [key]}}),
    )?;
    let item = &found[0];
    if item.is_null() {
        bail!("no item {key} yet");
    }
    if item["lastclock"].as_str() == Some("0") {
        return Ok(None);
    }
    Ok(item["lastvalue"].as_str().map(str::to_string))
}

/// Wait until the service host's `service.containers.running` is `n`.
fn wait_running_aggregate(lab: &Lab, hostid: &str, n: u32) {
    wait_for(
        &format!("service.containers.running = {n}"),
        SETTLE,
        || match last_value(lab, hostid, "service.containers.running")? {
            Some(v) if v == n.to_string() => Ok(Some(())),
            other => bail!("last value {other:?}"),
        },
    );
}

/// The names of the problem events (any state) of `hostid` since `since` (unix seconds).
fn event_names(lab: &Lab, hostid: &str, since: u64) -> anyhow::Result<Vec<String>> {
    let found = lab.call(
        "event.get",
        json!({"output": ["name", "clock", "value"], "hostids": [hostid], "source": 0,
               "object": 0, "value": 1, "time_from": since}),
    )?;
    Ok(found
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_string))
        .collect())
}

/// The scale events concierge-scale logged, as JSON values.
fn scale_events(project: &Project) -> Vec<Value> {
    std::fs::read_to_string(project.dir().join("state/scale-events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Wait for the event of a scaling to `to`.
fn wait_scale_event(project: &Project, to: u32) -> Value {
    wait_for(&format!("the event of the scaling to {to}"), SETTLE, || {
        let events = scale_events(project);
        match events
            .iter()
            .find(|e| e["outcome"] == "scaled" && e["to"] == to)
        {
            Some(e) => Ok(Some(e.clone())),
            None => bail!("events so far: {events:?}"),
        }
    })
}

/// Push `value` to concierge.load of every host in `hosts`.
fn push_load(hosts: &BTreeSet<String>, value: &str) {
    for h in hosts {
        wait_until_accepted(h, "concierge.load", value);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[test]
fn load_scales_the_service_up_and_back_down_through_zabbix() {
    let Some(lab) = Lab::get() else { return };
    if !docker::available("load_scales_the_service_up_and_back_down_through_zabbix") {
        return;
    }
    let t0 = Instant::now();
    let since = unix_now();
    let service = docker::unique("loop");
    let group = format!("Concierge/{service}");
    let metadata = format!("concierge service={service}");
    let _cleanup = Cleanup {
        lab: lab.clone(),
        service: service.clone(),
    };
    let command: Vec<String> = [
        "up",
        "--every",
        "2s",
        "--register",
        "--register-every",
        "5s",
        "--metadata",
        &metadata,
        "-z",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let project = Project::new(&service, docker::heartbeat_image(), &command);
    let state_dir = project.dir().join("state");
    std::fs::create_dir_all(&state_dir).expect("state dir");
    // The server runs concierge-scale as user zabbix.
    let chown = Command::new("chown")
        .arg("zabbix:zabbix")
        .arg(&state_dir)
        .status()
        .expect("chown");
    assert!(chown.success());

    // Zabbix side, by the setup tool: templates, service host, autoregistration and scaling.
    let setup = run_tool(
        "concierge-setup",
        &[
            "--api",
            API_URL,
            "--user",
            "Admin",
            "--password",
            "zabbix",
            "--service",
            &service,
            "--compose-file",
            &project.file.to_string_lossy(),
            "--project",
            &project.name,
            "--scale-command",
            &bin("concierge-scale").to_string_lossy(),
            "--state-dir",
            &state_dir.to_string_lossy(),
            "--min",
            "1",
            "--max",
            "2",
            "--cooldown",
            &format!("{}s", COOLDOWN.as_secs()),
            "--aggregate-interval",
            "2s",
            "--repeat-every",
            REPEAT,
            "--zabbix-server",
            "127.0.0.1",
        ],
        None,
        Duration::from_secs(120),
    );
    assert_eq!(setup.code, Some(0), "{setup}");
    let service_host = lab
        .host_by_name(&format!("{service}-service"))
        .expect("host.get")
        .expect("the service host");
    let service_hostid = service_host["hostid"].as_str().expect("hostid").to_string();
    let configured = t0.elapsed();

    // One container: it registers and beats; the aggregate counts it.
    project.start(1, SETTLE);
    let first = wait_for("the container to register", SETTLE, || {
        let hosts = hosts_in(&lab, &group)?;
        Ok((hosts.len() == 1).then_some(hosts))
    });
    wait_running_aggregate(&lab, &service_hostid, 1);
    let one_running = t0.elapsed();

    // High load: the scale-up trigger fires, its action runs concierge-scale, two containers.
    push_load(&first, "5");
    let load_high_at = Instant::now();
    project.wait_running(2, SETTLE);
    let scaled_up = load_high_at.elapsed();
    let both = wait_for("both containers to register", SETTLE, || {
        let hosts = hosts_in(&lab, &group)?;
        Ok((hosts.len() == 2).then_some(hosts))
    });
    wait_running_aggregate(&lab, &service_hostid, 2);
    let aggregate_two = load_high_at.elapsed();
    let nodes = wait_for("the 'nodes scaled to 2' event", SETTLE, || {
        let names = event_names(&lab, &service_hostid, since)?;
        match names.iter().find(|n| n.ends_with("nodes scaled to 2")) {
            Some(n) => Ok(Some(n.clone())),
            None => bail!("events so far: {names:?}"),
        }
    });
    let up = wait_scale_event(&project, 2);
    assert_eq!(up["from"], 1, "{up}");
    // concierge-scale --zabbix-item pushed the new count to the service host.
    wait_for("service.scale.target = 2", SETTLE, || {
        match last_value(&lab, &service_hostid, "service.scale.target")? {
            Some(v) if v == "2" => Ok(Some(())),
            other => bail!("last value {other:?}"),
        }
    });
    let up_done = Instant::now();

    // Low load: back to one, but not before the cooldown since the scale-up has passed.
    push_load(&both, "0.1");
    project.wait_running(1, Duration::from_secs(240));
    let down_after = up_done.elapsed();
    assert!(
        down_after >= COOLDOWN.saturating_sub(Duration::from_secs(5)),
        "scaled down {down_after:?} after scaling up, inside the {COOLDOWN:?} cooldown"
    );
    // The container stops before docker-compose returns and concierge-scale logs the event.
    let down = wait_scale_event(&project, 1);
    assert_eq!(down["from"], 2, "{down}");
    let events = scale_events(&project);
    let refused = events.iter().filter(|e| e["outcome"] == "cooldown").count();
    wait_running_aggregate(&lab, &service_hostid, 1);
    wait_for("the 'nodes scaled to 1' event", SETTLE, || {
        let names = event_names(&lab, &service_hostid, since)?;
        Ok(names
            .iter()
            .any(|n| n.ends_with("nodes scaled to 1"))
            .then_some(()))
    });
    note(&format!(
        "loop: configured in {configured:.1?}; one container counted at {one_running:.1?}; \
         high load -> 2 containers in {scaled_up:.1?}, aggregate 2 in {aggregate_two:.1?} \
         ({nodes:?}); low load -> 1 container {down_after:.1?} after the scale-up \
         ({refused} attempt(s) refused by the {COOLDOWN:?} cooldown); total {:.1?}",
        t0.elapsed()
    ));
}
