//! Through Zabbix's proxies, for real (the lab's proxies, scripts/zabbix-lab.sh): the courier
//! (metrics and -i) and the heartbeat (beats, --register, the 0 on stop) through a plain proxy
//! into the server's history, on 6.0 and 7.0; on 7.0 a proxy group's redirects (values sent to
//! the member that does not hold the host, or to the server, land through the one that does)
//! and its failover (the holder stopped: the group moves the host, the courier follows the new
//! redirect, and every value a reply counted as processed is in history). Each test has its own
//! hosts, deleted at the end; a stopped proxy is started again even when a test fails.

use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use concierge_testkit::*;
use serde_json::json;

const COURIER: &str = "concierge-courier";
const HEARTBEAT: &str = "concierge-heartbeat";
const LINE: &str = "dist.line";
const KILL_AFTER: Duration = Duration::from_secs(60);
/// How long values take from a proxy to the server's history (DataSenderFrequency=1).
const TO_HISTORY: Duration = Duration::from_secs(60);

/// The trapper items of these tests: container.state (from the heartbeat template) and a float
/// item for -i lines.
fn items(lab: &Lab) -> serde_json::Value {
    json!({"templates": [{"templateid": lab.heartbeat_template()}]})
}

fn add_line_item(host: &Host) {
    host.create_trapper_item(LINE, FLOAT);
}

/// `concierge-courier -i -` with `lines` through `server` for `host` (-s); the run.
fn courier_lines(server: &str, host: &str, lines: &str) -> Run {
    run_tool(
        COURIER,
        &["-z", server, "-s", host, "-t", "10s", "-v", "-i", "-"],
        Some(lines.as_bytes()),
        KILL_AFTER,
    )
}

/// The heartbeat coprocess for `host` through `server`, beating every second.
fn beating(server: &str, host: &str, extra: &[&str]) -> Coprocess {
    let mut args = vec!["up", "--every", "1s", "-z", server, "-s", host, "-v"];
    args.extend_from_slice(extra);
    Coprocess::spawn(HEARTBEAT, &args)
}

/// The heartbeat's log says it learnt that `host` lives at `place`.
fn assert_learnt(hb: &Coprocess, host: &Host, place: &str) {
    let said = format!("redirected: host \"{}\" is at {place}", host.name);
    assert!(hb.stderr().contains(&said), "{hb}");
}

lab_test!(
    fn courier_and_heartbeat_deliver_through_a_proxy(lab: &Lab) {
        let (proxy, proxy_name) = lab.facts().proxy();
        let host = lab.create_host_on_proxy(&unique_host("via-proxy"), proxy_name, items(lab));
        let timer = "dist.timer";
        for stat in default_timer_stats() {
            host.create_trapper_item(&timer_key(timer, stat), FLOAT);
        }
        // Made last: once a value for it is stored, proxy and server have every item.
        add_line_item(&host);
        host.wait_until_stored_via(proxy, LINE);

        let (doc, expected) = dropwizard_timers(&[timer]);
        let metrics = MetricsServer::serve(doc);
        let run = run_tool(
            COURIER,
            &[
                "timers",
                &metrics.url(),
                "-z",
                proxy,
                "-s",
                &host.name,
                "-t",
                "10s",
            ],
            None,
            KILL_AFTER,
        );
        run.assert_success();
        let lines = format!("- {LINE} 1\n{} {LINE} 2\n", host.name);
        courier_lines(proxy, &host.name, &lines).assert_success();
        for (key, value) in expected_by_key(&expected) {
            wait_for(&format!("{key} = {value} in history"), TO_HISTORY, || {
                let rows = host.history_of(&key, FLOAT)?;
                if rows
                    .iter()
                    .any(|r| close(r.value.parse().unwrap_or(f64::NAN), value))
                {
                    Ok(Some(()))
                } else {
                    Err(anyhow!("history: {rows:?}"))
                }
            });
        }
        host.wait_for_values(LINE, FLOAT, &["1".into(), "2".into()], TO_HISTORY);

        let started = SystemTime::now();
        let mut hb = beating(proxy, &host.name, &[]);
        host.wait_for_beat(&mut hb, started, TO_HISTORY);
        host.stop_and_wait_for_zero(&mut hb, TO_HISTORY);
    }
);

/// Wait until the server runs the registration action for metadata `token`: a probe host
/// announced to the server itself gets created (and is deleted again). A 7.0 proxy forwards a
/// host's announcement once in 120 s, and a server without the action in its configuration
/// cache drops it, so the action must be live before the heartbeat announces.
fn action_is_live(lab: &Lab, name: &str, token: &str) {
    let probe = format!("{name}-probe");
    let _delete = HostNamed::new(lab, &probe);
    wait_for(
        "the registration action to create a probe host",
        Duration::from_secs(60),
        || {
            lab.announce(&probe, token)?;
            Ok(lab.host_by_name(&probe)?.map(|_| ()))
        },
    );
}

lab_test!(
    fn heartbeat_registers_through_a_proxy(lab: &Lab) {
        let (proxy, proxy_name) = lab.facts().proxy();
        let template = lab.heartbeat_template();
        let name = unique_host("reg-proxy");
        let token = format!("concierge-e2e-{}", &name["reg-proxy-".len()..]);
        let _registered = HostNamed::new(lab, &name);
        let _action = lab.create_registration_action(&token, &template);
        action_is_live(lab, &name, &token);
        let started = SystemTime::now();
        let mut hb = beating(
            proxy,
            &name,
            &["--register", "--register-every", "2s", "--metadata", &token],
        );
        let proxy_field = if lab.at_least(7, 0) {
            "proxyid"
        } else {
            "proxy_hostid"
        };
        let proxyid = lab.proxy_id(proxy_name).expect("proxy id");
        let hostid = wait_for(
            "the host registered through the proxy",
            Duration::from_secs(90),
            || {
                hb.assert_running("registering");
                let found = lab.call(
                    "host.get",
                    json!({"output": ["hostid", proxy_field], "filter": {"host": [name]},
                           "selectParentTemplates": ["host"]}),
                )?;
                let Some(h) = found.as_array().and_then(|a| a.first()) else {
                    return Ok(None);
                };
                if h[proxy_field] != proxyid.as_str() {
                    return Err(anyhow!("not (yet) monitored by {proxy_name}: {h}"));
                }
                let linked = h["parentTemplates"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t["host"] == HEARTBEAT_TEMPLATE));
                Ok(linked.then(|| h["hostid"].as_str().unwrap_or_default().to_string()))
            },
        );
        let host = Host {
            lab: lab.clone(),
            name: name.clone(),
            hostid,
        };
        host.wait_for_beat(&mut hb, started, TO_HISTORY);
        assert!(hb.stderr().contains("registration requested"), "{hb}");
        host.stop_and_wait_for_zero(&mut hb, TO_HISTORY);
    }
);

/// The group member that does not hold a host held by `holder`.
fn other_member(lab: &Lab, holder: &str) -> String {
    lab.facts()
        .proxy_group_members()
        .into_iter()
        .map(|(address, _)| address.to_string())
        .find(|a| a != holder)
        .expect("a group of two")
}

/// A host of the proxy group with the heartbeat template and the -i item, once its holder and
/// the server both know every item; the host and its holder's trapper and name.
fn group_host(lab: &Lab, prefix: &str) -> (Host, (String, String)) {
    let host = lab.create_host_in_proxy_group(&unique_host(prefix), items(lab));
    add_line_item(&host);
    let holder = lab.wait_assigned(&host, Duration::from_secs(60));
    host.wait_until_stored_via(&holder.0, LINE);
    (host, holder)
}

lab_test!(
    [zabbix_7_0]
    fn proxy_group_redirects_land_the_values(lab: &Lab) {
        let (host, (holder, _)) = group_host(lab, "via-group");
        let wrong = other_member(lab, &holder);
        // Sent to the member that does not hold the host: redirected, taken by the holder.
        let run = courier_lines(&wrong, &host.name, &format!("- {LINE} 1\n"));
        run.assert_success();
        assert!(run.stderr.contains(&holder), "answered by the holder:\n{run}");

        // To the server, a file for two hosts: one the server monitors, one of the group.
        // The server judges a request by its first value's host, so each host goes alone.
        let own = lab.create_host(&unique_host("via-server"));
        add_line_item(&own);
        lab.wait_until_accepted(&own.name, LINE, "0");
        let lines = format!(
            "{own} {LINE} 5\n{grp} {LINE} 2\n{own} {LINE} 6\n",
            own = own.name,
            grp = host.name
        );
        let run = courier_lines(lab.server(), &host.name, &lines);
        run.assert_success();

        // The heartbeat, one shot through the wrong member and as a coprocess through the server.
        let beat = run_tool(
            HEARTBEAT,
            &["up", "-z", &wrong, "-s", &host.name, "-t", "10s"],
            None,
            KILL_AFTER,
        );
        beat.assert_success();
        let started = SystemTime::now();
        let mut hb = beating(lab.server(), &host.name, &[]);
        host.wait_for_beat(&mut hb, started, TO_HISTORY);
        assert_learnt(&hb, &host, &holder);
        host.stop_and_wait_for_zero(&mut hb, TO_HISTORY);
        host.wait_for_values(LINE, FLOAT, &["1".into(), "2".into()], TO_HISTORY);
        own.wait_for_values(LINE, FLOAT, &["5".into(), "6".into()], TO_HISTORY);
    }
);

lab_test!(
    [zabbix_7_0]
    fn a_stopped_proxy_moves_its_hosts_and_the_courier_follows(lab: &Lab) {
        let (host, (holder, holder_name)) = group_host(lab, "failover");
        let next = other_member(lab, &holder);
        let started = SystemTime::now();
        let mut hb = beating(lab.server(), &host.name, &[]);
        host.wait_for_beat(&mut hb, started, TO_HISTORY);

        // One value per run through the server, each run its own number: the runs that end 0
        // had their value counted as processed, and those values must all reach history.
        let mut counted = Vec::new();
        let runs = std::cell::Cell::new(0u32);
        let run_once = |to: &str, counted: &mut Vec<String>| {
            runs.set(runs.get() + 1);
            let n = runs.get();
            let run = courier_lines(lab.server(), &host.name, &format!("- {LINE} {n}\n"));
            if run.code == Some(0) {
                run.assert_success();
                assert!(run.stderr.contains(to), "taken by {to}:\n{run}");
                counted.push(n.to_string());
            }
            run
        };
        for _ in 0..3 {
            assert_eq!(run_once(&holder, &mut counted).code, Some(0));
        }
        // A proxy's "processed" means it holds the value. Values it has not forwarded when it
        // stops are sent when it starts again, and Zabbix 7.0 then drops them if the group has
        // moved the host meanwhile (proxy_item_validator): so stop it once they are stored.
        host.wait_for_values(LINE, FLOAT, &counted, TO_HISTORY);
        let stopped = lab.stop_proxy(&holder_name);
        let stopped_at = std::time::Instant::now();
        let mut failed = 0u32;
        let delay = lab.facts().proxy_group_failover_delay();
        wait_for(
            "a run through the server to be taken by the host's new proxy",
            delay + Duration::from_secs(90),
            || {
                let run = run_once(&next, &mut counted);
                if run.code == Some(0) {
                    return Ok(Some(()));
                }
                failed += 1;
                Err(anyhow!("{}", run.stderr.trim()))
            },
        );
        for _ in 0..3 {
            assert_eq!(run_once(&next, &mut counted).code, Some(0));
        }
        let moved_after = stopped_at.elapsed();
        assert_eq!(lab.assigned_proxy(&host).unwrap().map(|p| p.0), Some(next.clone()));
        // The coprocess was sent back by the dead proxy and learnt the new place by itself.
        let moved = SystemTime::now();
        host.wait_for_beat(&mut hb, moved, TO_HISTORY);
        assert_learnt(&hb, &host, &next);
        host.stop_and_wait_for_zero(&mut hb, TO_HISTORY);
        stopped.start();
        host.wait_for_values(LINE, FLOAT, &counted, TO_HISTORY);
        note(&format!(
            "TIMING proxy group failover: {holder_name} stopped, host moved to {next} and the \
             courier delivered there {moved_after:.1?} later (failover delay {delay:?}); {failed} \
             run(s) refused meanwhile, {} value(s) counted and all in history",
            counted.len()
        ));
    }
);
