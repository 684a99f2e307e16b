//! Self-healing on real components: a service scaled to two containers by Zabbix (the load
//! trigger's action), one container SIGKILLed (`docker kill -s KILL`: no goodbye, its heartbeat
//! just stops), its "No heartbeat" problem runs the heal action set up by concierge-setup,
//! concierge-scale heal brings the service back to the two containers the last scaling
//! decided, and the event log says why. The heal comes from heal, not from the load: the load
//! is back between its thresholds before the kill.
//!
//! Runs against each lab version (6.0 and 7.0). Needs the lab (actions run as user zabbix, in
//! group docker) and the Docker engine; prints SKIPPED without them unless
//! CONCIERGE_REQUIRE_LAB/DOCKER=1.

use std::time::{Duration, Instant};

use anyhow::bail;
use concierge_testkit::docker;
use concierge_testkit::service::{Service, SETTLE};
use concierge_testkit::*;

/// {$HEARTBEAT_NODATA} on the containers' hosts: how long a silent container takes to be a
/// problem (the template's 2m, shortened; the server sees it at its next configuration sync).
const NODATA: &str = "30s";

lab_test!(
    fn a_killed_container_comes_back_through_zabbix(lab: &Lab) {
        if !docker::available(&current_test()) {
            return;
        }
        let t0 = Instant::now();
        let svc = Service::setup(
            lab,
            "heal",
            &[
                "--min",
                "1",
                "--max",
                "2",
                "--cooldown",
                "45s",
                "--repeat-every",
                "60s",
            ],
        );
        svc.project.start(1, SETTLE);
        let first = svc.wait_hosts(1);
        for h in &first {
            svc.set_host_macro(h, "{$HEARTBEAT_NODATA}", NODATA);
        }
        svc.wait_running_aggregate(1);

        // The last scaling decides two containers.
        svc.push_load(&first, "5");
        svc.project.wait_running(2, SETTLE);
        let up = svc.wait_scaled_to(2);
        assert_eq!(
            (up["action"].clone(), up["from"].clone()),
            ("up".into(), 1.into())
        );
        let both = svc.wait_hosts(2);
        for h in both.difference(&first) {
            svc.set_host_macro(h, "{$HEARTBEAT_NODATA}", NODATA);
        }
        // Neither high nor low (0.2 < 0.5 < 0.7): no load action scales from here on.
        svc.push_load(&both, "0.5");
        svc.wait_running_aggregate(2);
        wait_for("the load problem to resolve", SETTLE, || {
            let problems = lab.problems(&svc.hostid)?;
            match problems
                .iter()
                .find(|p| p["name"].as_str().is_some_and(|n| n.contains("load::high")))
            {
                Some(p) => bail!("still {p}"),
                None => Ok(Some(())),
            }
        });

        // SIGKILL one container: it cannot say state 0; only its silence tells.
        let before = svc.project.running().expect("docker ps");
        let victim = before.iter().next().expect("a container").clone();
        docker::docker(&["kill", "--signal", "KILL", &victim]).expect("docker kill");
        let killed_at = Instant::now();
        svc.project.wait_running(1, Duration::from_secs(30));
        let healed = svc.wait_scale_event("the heal back to 2", Duration::from_secs(300), |e| {
            e["action"] == "heal" && e["outcome"] == "scaled"
        });
        let back = svc.project.wait_running(2, SETTLE);
        let took = killed_at.elapsed();
        assert_eq!(
            (
                healed["from"].clone(),
                healed["to"].clone(),
                healed["target"].clone()
            ),
            (1.into(), 2.into(), 2.into()),
            "{healed}"
        );
        let reason = healed["reason"].as_str().unwrap_or_default().to_string();
        assert!(
            reason.starts_with("heal: Zabbix event ") && reason.contains("Concierge: No heartbeat"),
            "{healed}"
        );
        assert!(
            healed["detail"]
                .as_str()
                .is_some_and(|d| d.contains("the last scaling decided 2")),
            "{healed}"
        );
        // The count reached the service host's service.scale.target (named literally: in the
        // heal script {HOST.HOST} is the container's, which the reason names).
        assert_eq!(healed["zabbix"], "sent", "{healed}");
        let killed_host = svc
            .hosts()
            .expect("hosts")
            .into_iter()
            .find(|h| reason.ends_with(&format!(" on {h}")));
        assert!(
            killed_host.is_some(),
            "{reason} names none of the containers"
        );
        // The same container was started again (compose --no-recreate), so its host beats again.
        assert!(back.contains(&victim), "{victim} not among {back:?}");
        // Nothing but heal scaled after the kill.
        let events = svc.scale_events();
        let scalings: Vec<_> = events
            .iter()
            .filter(|e| e["outcome"] == "scaled")
            .map(|e| e["action"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(scalings, ["up", "heal"], "{events:?}");
        let human =
            std::fs::read_to_string(svc.project.state_dir().join("scale.log")).unwrap_or_default();
        assert!(
            human.contains(&format!("Healed {} from 1 to 2 (heal: ", svc.name)),
            "{human}"
        );
        note(&format!(
            "heal on {} (scripts on the {}, engine {}): SIGKILLed container back in {took:.1?} \
             ({{$HEARTBEAT_NODATA}} {NODATA}): {reason:?}; total {:.1?}",
            lab.api_version(),
            svc.scripts_on(),
            healed["engine"],
            t0.elapsed()
        ));
    }
);
