//! The agent path, end to end: a real zabbix_agentd with the shipped UserParameter file runs
//! concierge-discover and concierge-courier for a host linked to the "Concierge app" template;
//! the items are discovered and values arrive; a slow endpoint fires SLOW and a stopped one
//! fires FAILED with the documented code (-1).

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const APP_TEMPLATE: &str = "Concierge app";
const COURIER_SLOW: f64 = 1.5;
/// The courier item's key as item.get shows it: as the template wrote it, macros unexpanded.
const COURIER_KEY: &str = "concierge.courier[all,{$METRICS_URL},{HOST.HOST}]";

/// A zabbix_agentd of the test's own (active checks only, no listening port), stopped on drop.
struct Agent {
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped UserParameter file with its three installation paths pointed at this
/// checkout's binaries, the test's agent config and a log in `dir`. Fails if the shipped file
/// no longer has the shape the replacements expect.
fn userparameters(dir: &Path, agent_conf: &Path, tool_log: &Path) -> String {
    let shipped =
        std::fs::read_to_string(repo_root().join("zabbix-templates/userparameter_concierge.conf"))
            .expect("shipped UserParameter file");
    let bin_dir = bin("concierge-courier")
        .parent()
        .expect("target dir")
        .to_path_buf();
    let mut text = shipped.clone();
    for (from, to) in [
        ("/usr/local/bin/", format!("{}/", bin_dir.display())),
        (
            "/etc/zabbix/zabbix_agentd.conf",
            agent_conf.display().to_string(),
        ),
        (
            "/var/log/zabbix-agent/concierge.log",
            tool_log.display().to_string(),
        ),
    ] {
        assert!(
            text.contains(from),
            "the shipped UserParameter file no longer mentions {from}"
        );
        text = text.replace(from, &to);
    }
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("UserParameter="))
        .collect();
    assert_eq!(lines.len(), 2, "{shipped}");
    let path = dir.join("userparameter_concierge.conf");
    std::fs::write(&path, &text).expect("write UserParameter file");
    path.display().to_string()
}

fn start_agent(host: &str) -> Agent {
    let dir = std::env::temp_dir().join(format!("concierge-agent-{host}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("agent dir");
    let conf = dir.join("zabbix_agentd.conf");
    let log = dir.join("zabbix_agentd.log");
    let tool_log = dir.join("concierge.log");
    let include = userparameters(&dir, &conf, &tool_log);
    std::fs::write(
        &conf,
        format!(
            "Hostname={host}\nServerActive=127.0.0.1:10051\nServer=127.0.0.1\nStartAgents=0\n\
             AllowRoot=1\nTimeout=4\nRefreshActiveChecks=60\nBufferSend=1\n\
             LogType=file\nLogFile={}\nPidFile={}\nInclude={include}\n",
            log.display(),
            dir.join("zabbix_agentd.pid").display(),
        ),
    )
    .expect("agent conf");
    let child = Command::new("/usr/sbin/zabbix_agentd")
        .args(["-f", "-c"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start zabbix_agentd (installed by the lab)");
    note(&format!("agent log: {}", log.display()));
    Agent { child }
}

fn last_value(lab: &Lab, host: &Host, key: &str, value_type: u8) -> anyhow::Result<Option<f64>> {
    let id = match host.item_id(key) {
        Ok(id) => id,
        Err(_) => return Ok(None),
    };
    let rows = history(lab, &[id], value_type)?;
    Ok(rows
        .last()
        .map(|r| r.value.parse::<f64>().unwrap_or(f64::NAN)))
}

fn wait_problem(
    lab: &Lab,
    host: &Host,
    what: &str,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> String {
    wait_for(what, limit, || {
        let problems = lab.problems(&host.hostid)?;
        let names: Vec<&str> = problems.iter().filter_map(|p| p["name"].as_str()).collect();
        match names.iter().find(|n| pred(n)) {
            Some(n) => Ok(Some(n.to_string())),
            None => {
                let courier = last_value(lab, host, COURIER_KEY, FLOAT)?;
                anyhow::bail!("open problems {names:?}; last courier value {courier:?}")
            }
        }
    })
}

#[test]
fn the_agent_runs_discover_and_courier_and_the_triggers_watch_delivery() {
    let Some(lab) = Lab::get() else { return };
    lab.import_template_file("concierge_heartbeat.yaml")
        .expect("import heartbeat template");
    lab.import_template_file("concierge_app.yaml")
        .expect("import app template");
    let template = lab.template_id(APP_TEMPLATE).expect("app template");
    let doc = std::fs::read(repo_root().join("tests/fixtures/metrics.json")).expect("fixture");
    let server = MetricsServer::serve(doc);
    let name = unique_host("agentpath");
    let host = lab.create_host_with(
        &name,
        json!({
            "templates": [{"templateid": template}],
            "macros": [
                {"macro": "{$METRICS_URL}", "value": server.url()},
                {"macro": "{$COURIER_INTERVAL}", "value": "5s"},
                {"macro": "{$DISCOVERY_INTERVAL}", "value": "10s"},
                {"macro": "{$COURIER_SLOW}", "value": COURIER_SLOW.to_string()},
            ]
        }),
    );
    let started = Instant::now();
    // The agent asks for its active checks at start and then only every 60 s: start it once
    // the server's configuration cache knows the host (its trapper item takes a value).
    wait_until_accepted(&name, "concierge.load", "0");
    let agent = start_agent(&name);

    // Discovery: 4 timers x 11, 1 histogram x 10, 1 meter x 5, 2 counters, and 4 gauges (the
    // NaN one is a number that is briefly undefined; the version string is left out).
    let expected_discovered = 44 + 10 + 5 + 2 + 4;
    wait_for(
        "the LLD rules to create every item",
        Duration::from_secs(120),
        || {
            let discovered = host.items()?.iter().filter(|i| i.flags == 4).count();
            if discovered == expected_discovered {
                return Ok(Some(()));
            }
            let rules: Vec<String> = lab
                .call(
                    "discoveryrule.get",
                    json!({"hostids": [host.hostid], "output": ["key_", "state", "error"]}),
                )?
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("{} state {} {}", r["key_"], r["state"], r["error"]))
                .collect();
            anyhow::bail!("{discovered} of {expected_discovered} discovered; rules: {rules:?}")
        },
    );
    let discovered_after = started.elapsed();

    // Delivery: the courier item reports elapsed seconds and the values land in history.
    let secs = wait_for(
        "a successful courier run (value > 0)",
        Duration::from_secs(120),
        || Ok(last_value(&lab, &host, COURIER_KEY, FLOAT)?.filter(|v| *v > 0.0)),
    );
    assert!(secs < COURIER_SLOW, "courier took {secs} s");
    for (key, want) in [
        ("timer[my.test-timer-0.p95]", 0.0084),
        ("timer[\"GET /api/users,list.count\"]", 1611.0),
        ("counter[app.sessions.active]", 17.0),
        ("gauge[jvm.threads.count]", 42.0),
        ("meter[app.requests.m1_rate]", 14.02),
        ("histogram[app.request.size.p99]", 32768.0),
    ] {
        let vt = host
            .items()
            .expect("items")
            .into_iter()
            .find(|i| i.key == key)
            .unwrap_or_else(|| panic!("no item {key}"))
            .value_type;
        let got = wait_for(
            &format!("a value for {key}"),
            Duration::from_secs(60),
            || last_value(&lab, &host, key, vt),
        );
        assert!(close(got, want), "{key}: got {got}, want {want}");
    }
    let delivered_after = started.elapsed();

    // SLOW: the endpoint answers after 2 s; the courier still delivers (deadline 3.5 s).
    server.set_delay(Duration::from_secs(2));
    let slow = wait_problem(
        &lab,
        &host,
        "the SLOW problem",
        Duration::from_secs(90),
        |n| n.starts_with("Concierge::courier::metric::collection>"),
    );
    let slow_secs = last_value(&lab, &host, COURIER_KEY, FLOAT)
        .expect("history")
        .expect("a courier value");
    assert!(slow_secs > COURIER_SLOW, "{slow}: {slow_secs}");
    server.set_delay(Duration::ZERO);

    // FAILED: the endpoint is gone; the item value is the documented code -1.
    drop(server);
    let failed = wait_problem(
        &lab,
        &host,
        "the FAILED problem",
        Duration::from_secs(90),
        |n| n.contains("FAILED (CODE=-1)"),
    );
    assert_eq!(
        last_value(&lab, &host, COURIER_KEY, FLOAT).expect("history"),
        Some(-1.0),
        "{failed}"
    );
    note(&format!(
        "agent path: items discovered after {discovered_after:.1?}, values delivered after \
         {delivered_after:.1?}, SLOW and FAILED fired, total {:.1?}",
        started.elapsed()
    ));
    drop(agent);
}
