//! The agent path, end to end: a real zabbix_agentd with the shipped UserParameter file runs
//! concierge-discover and concierge-courier for a host linked to the "Concierge app" template;
//! the items are discovered and values arrive (no "delivery failed" before discovery made the
//! items); a slow endpoint fires "delivery is slow" and a stopped one "delivery failed" with the
//! documented code (-1) in the status item, while the delivery time item never holds a code. Each lab version is tested with its own agent,
//! and the 7.0 server also with a 6.0 agent (real fleets mix them). When the test ends, the
//! agent and every process it forked are gone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use concierge_testkit::*;
use serde_json::json;

const APP_TEMPLATE: &str = "Concierge app";
const COURIER_SLOW: f64 = 1.5;
/// The test agent's Timeout: the courier's deadline is half a second less.
const AGENT_TIMEOUT: u32 = 10;
/// How long the slow endpoint takes: more than 7.0's default item timeout (3 s), so on 7.0 the
/// courier only gets to deliver because the template gives its item a timeout of its own.
const SLOW_ANSWER: Duration = Duration::from_secs(4);
/// The courier item's key as item.get shows it: as the template wrote it, macros unexpanded.
const COURIER_KEY: &str = "concierge.courier[all,{$METRICS_URL},{HOST.HOST}]";
/// The dependent items that split the courier's output: elapsed seconds, and the status.
const TIME_KEY: &str = "concierge.courier.time";
const STATUS_KEY: &str = "concierge.courier.status";
const FAILED: &str = "Concierge: Courier delivery failed";

fn last_value(lab: &Lab, host: &Host, key: &str, value_type: u8) -> anyhow::Result<Option<f64>> {
    let id = match host.item_id(key) {
        Ok(id) => id,
        Err(_) => return Ok(None),
    };
    let rows = lab.history(&[id], value_type)?;
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

/// The whole path with `agentd` against `lab`.
fn agent_path(lab: &Lab, agentd: &Path) {
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
    lab.wait_until_accepted(&name, "concierge.load", "0");
    let mut agent = Agent::start(lab, agentd, &name, AGENT_TIMEOUT);

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

    // Delivery: the delivery time item gets elapsed seconds and the values land in history.
    let secs = wait_for(
        "a successful courier run (a delivery time)",
        Duration::from_secs(120),
        || Ok(last_value(lab, &host, TIME_KEY, FLOAT)?.filter(|v| *v > 0.0)),
    );
    assert_eq!(
        last_value(lab, &host, STATUS_KEY, FLOAT).expect("history"),
        Some(1.0),
        "status OK"
    );
    // The first runs, before discovery had made the items, were partial (-4): no problem.
    let open = lab.problems(&host.hostid).expect("problem.get");
    let names: Vec<&str> = open.iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(
        !names.iter().any(|n| n.starts_with("Concierge: Courier")),
        "courier problems before or at the first discovery: {names:?}"
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
            || last_value(lab, &host, key, vt),
        );
        assert!(close(got, want), "{key}: got {got}, want {want}");
    }
    let delivered_after = started.elapsed();

    // SLOW: the endpoint answers after 4 s; the courier still delivers (its deadline is the
    // agent's Timeout less half a second), and no agent stops it first: a 6.0 agent waits its
    // Timeout, a 7.0 agent the item's own timeout (the 7.0 template's 30 s, not the global 3 s).
    server.set_delay(SLOW_ANSWER);
    let slow = wait_problem(
        lab,
        &host,
        "the SLOW problem",
        Duration::from_secs(90),
        |n| n.starts_with("Concierge: Courier delivery took "),
    );
    let slow_secs = last_value(lab, &host, TIME_KEY, FLOAT)
        .expect("history")
        .expect("a courier value");
    assert!(
        slow_secs > SLOW_ANSWER.as_secs_f64() && slow_secs < f64::from(AGENT_TIMEOUT),
        "{slow}: {slow_secs}"
    );
    server.set_delay(Duration::ZERO);

    // Failed: the endpoint is gone; the status is the documented code -1, and the delivery
    // time never holds a code (a graph of it plots no -1).
    drop(server);
    let failed = wait_problem(
        lab,
        &host,
        "the \"delivery failed\" problem",
        Duration::from_secs(90),
        |n| n.starts_with(FAILED),
    );
    for key in [COURIER_KEY, STATUS_KEY] {
        assert_eq!(
            last_value(lab, &host, key, FLOAT).expect("history"),
            Some(-1.0),
            "{key}: {failed}"
        );
    }
    let times = lab
        .history(&[host.item_id(TIME_KEY).expect("time item")], FLOAT)
        .expect("history");
    assert!(
        !times.is_empty()
            && times
                .iter()
                .all(|r| r.value.parse::<f64>().unwrap_or(-1.0) > 0.0),
        "delivery times: {:?}",
        times.iter().map(|r| &r.value).collect::<Vec<_>>()
    );
    // The agent forks a collector, listeners and active checks: all must go with it (left
    // behind, they would keep asking the server for the deleted host).
    let stop_took = agent
        .daemon
        .stop(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}"));
    note(&format!(
        "agent path on {} with {}: items discovered after {discovered_after:.1?}, values \
         delivered after {delivered_after:.1?}, slow and failed fired ({failed:?}), total {:.1?}; the agent \
         and its children stopped in {stop_took:.2?}",
        lab.api_version(),
        agentd.display(),
        started.elapsed()
    ));
}

lab_test!(
    fn the_agent_runs_discover_and_courier_and_the_triggers_watch_delivery(lab: &Lab) {
        agent_path(lab, &lab.facts().agentd());
    }
);

lab_test!([zabbix_7_0] fn a_6_0_agent_serves_a_7_0_server(lab: &Lab) {
    let agentd: PathBuf = Facts::of("6.0").expect("6.0 facts").agentd();
    agent_path(lab, &agentd);
});
