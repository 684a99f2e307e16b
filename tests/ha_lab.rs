//! An HA cluster, for real: the lab's server is node a of a two-node cluster (node b started
//! for the test). With the cluster written as ServerActive `a;b`, the courier and the heartbeat
//! keep delivering while node a stops and node b takes over, and again once node a is back.
//! Node a is stopped only here, for as short a time as the takeover allows, and the lab is left
//! as it was found (node a active) even when the test fails.

use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use concierge_testkit::*;
use serde_json::json;

const COURIER: &str = "concierge-courier";
const HEARTBEAT: &str = "concierge-heartbeat";
const STATE: &str = "container.state";
const LINE: &str = "ha.line";
const KILL_AFTER: Duration = Duration::from_secs(60);
/// Node b's takeover: HA managers look every 5 s, then the server starts its processes.
const TAKEOVER: Duration = Duration::from_secs(60);

/// Deliver `value` for `host` with the courier reading ServerActive from `config`, retrying
/// while no node answers; the run that delivered it.
fn deliver(config: &str, value: u32) -> Run {
    let line = format!("- {LINE} {value}\n");
    wait_for(
        &format!("the courier to deliver {value} to the cluster"),
        TAKEOVER,
        || {
            let run = run_tool(
                COURIER,
                &["-c", config, "-t", "5s", "-v", "-i", "-"],
                Some(line.as_bytes()),
                KILL_AFTER,
            );
            match run.code {
                Some(0) => Ok(Some(run)),
                _ => Err(anyhow!("{}", run.stderr.trim())),
            }
        },
    )
}

lab_test!(
    fn courier_and_heartbeat_ride_out_an_ha_failover(lab: &Lab) {
        let host = lab.create_host_with(
            &unique_host("ha"),
            json!({"templates": [{"templateid": lab.heartbeat_template()}]}),
        );
        host.create_trapper_item(LINE, FLOAT);
        host.wait_until_stored_via(lab.server(), LINE);
        let dir = temp_dir("ha");
        let config = dir.path().join("zabbix_agentd.conf");
        std::fs::write(
            &config,
            format!(
                "ServerActive={}\nHostname={}\nTimeout=10\n",
                lab.facts().ha_nodes(),
                host.name
            ),
        )
        .expect("write the agent config");
        let config = config.to_str().expect("UTF-8 path");
        let (a, b) = (lab.facts().ha_node('a'), lab.facts().ha_node('b'));

        let mut cluster = lab.ha_failover();
        let mut hb = Coprocess::spawn(HEARTBEAT, &["up", "--every", "1s", "-c", config, "-v"]);
        let started_at = hb.started_at;
        host.wait_for_beat(&mut hb, started_at, TAKEOVER);
        let run = deliver(config, 1);
        assert!(run.stderr.contains(a), "node a answered:\n{run}");

        let stopping = std::time::Instant::now();
        cluster.fail_over(TAKEOVER);
        let took_over = SystemTime::now();
        let takeover = stopping.elapsed();
        let run = deliver(config, 2);
        assert!(run.stderr.contains(b), "node b answered:\n{run}");
        host.wait_for_beat(&mut hb, took_over, TAKEOVER);
        // Node a back as soon as node b has shown it delivers.
        let restoring = std::time::Instant::now();
        cluster.restore(TAKEOVER);
        let handback = restoring.elapsed();
        let back = SystemTime::now();
        let run = deliver(config, 3);
        assert!(run.stderr.contains(a), "node a answered again:\n{run}");
        host.wait_for_beat(&mut hb, back, TAKEOVER);

        let (code, _) = hb.terminate(Duration::from_secs(15));
        assert_eq!(code, Some(0), "{hb}");
        host.wait_for_values(STATE, UNSIGNED, &["0".into()], TAKEOVER);
        host.wait_for_values(LINE, FLOAT, &["1".into(), "2".into(), "3".into()], TAKEOVER);
        note(&format!(
            "TIMING HA {}: node b active {takeover:.1?} after node a was told to stop; node a \
             active again {handback:.1?} after the hand-back began; node a's trapper closed for \
             {:.1?}",
            lab.version(),
            back.duration_since(took_over).unwrap_or_default() + takeover
        ));
    }
);

// A session's end or a machine stopped under the lab kills the server without its shutdown: its
// ha_node row stays "active", and for the failover delay (60 s) a restart used to exit with
// "found active duplicate node" (the CI run that started `make test` on such a machine failed).
lab_test!(
    fn a_server_killed_without_its_shutdown_starts_again_at_once(lab: &Lab) {
        lab.wait_active('a', Duration::from_secs(60));
        lab.kill_server();
        let a = lab.facts().ha_node_names()[0].to_string();
        let status = lab.ha_node_status().expect("hanode.get");
        assert!(
            status.iter().any(|(n, s)| *n == a && *s == 3),
            "the killed node should still be recorded active (else the test proves nothing): {status:?}"
        );
        let started = std::time::Instant::now();
        let result = lab.start_server();
        if let Err(e) = result {
            // Leave the lab serving for the tests after this one (the stale row ages out after
            // the failover delay), then fail.
            wait_for(
                "the server to start again",
                Duration::from_secs(120),
                || Ok(lab.start_server().is_ok().then_some(())),
            );
            panic!("server-start after SIGKILL: {e:#}");
        }
        lab.wait_active('a', Duration::from_secs(60));
        note(&format!(
            "{}: node a killed with SIGKILL, active again {:.1?} after server-start",
            lab.version(),
            started.elapsed()
        ));
    }
);

// The lab's verbs serialise on flocks in its state directory; a daemon started while the script
// held them would hold them for ever (PostgreSQL did: every later `up` and server-stop waited).
lab_test!(
    fn no_daemon_of_the_lab_holds_its_locks(lab: &Lab) {
        let state = std::path::PathBuf::from(lab.facts().get("ZABBIX_LAB_STATE_DIR"));
        let mut holders = Vec::new();
        for proc_entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let is_lock = target.parent() == Some(state.as_path())
                    && target
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("lock"));
                if is_lock {
                    let comm =
                        std::fs::read_to_string(proc_entry.path().join("comm")).unwrap_or_default();
                    holders.push((comm.trim().to_string(), target));
                }
            }
        }
        // A verb running now (another test's) holds them with its short-lived children (flock,
        // sleep, psql...); the lab's daemons never may.
        const DAEMONS: [&str; 6] = [
            "postgres",
            "zabbix_server",
            "zabbix_proxy",
            "zabbix_agentd",
            "php-fpm",
            "nginx",
        ];
        let daemons: Vec<_> = holders
            .iter()
            .filter(|(comm, _)| DAEMONS.iter().any(|d| comm.starts_with(d)))
            .collect();
        assert!(
            daemons.is_empty(),
            "daemons holding the lab's locks: {daemons:?}"
        );
        note(&format!("{}: lock holders now {holders:?}", lab.version()));
    }
);
