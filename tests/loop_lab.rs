//! The whole Concierge loop on real components: a compose service of heartbeat containers
//! registers itself with Zabbix, the "Concierge service" aggregates count it, a high load
//! fires the scale-up trigger whose action runs concierge-scale, the new container registers
//! and beats, "nodes scaled to 2" is recorded, and a low load scales back to one — but only
//! once the cooldown has passed, and the container that scale-down stopped is not healed back;
//! its host is retired (deleted by the retire action) within its grace,
//! {$CONCIERGE.RETIRE_AFTER}, and the aggregate says 1.
//! A sustained high load escalates: one STEP, then 2 x STEP, never above --max. Everything is
//! configured by concierge-setup.
//!
//! Runs against each lab version (6.0 and 7.0). Needs the lab (`make lab`: actions run as user
//! zabbix, in group docker) and the Docker engine; prints SKIPPED without them unless
//! CONCIERGE_REQUIRE_LAB/DOCKER=1.

use std::time::{Duration, Instant};

use anyhow::bail;
use concierge_testkit::docker;
use concierge_testkit::service::{unix_now, with_retire_trigger, Service, SETTLE};
use concierge_testkit::*;

/// The cooldown concierge-scale keeps between two scalings of the service.
const COOLDOWN: Duration = Duration::from_secs(45);
/// How often the actions repeat their command while the load trigger stays in PROBLEM (the
/// API's minimum).
const REPEAT: &str = "60s";
/// The grace after a container's last heartbeat before its host is retired (the host macro
/// {$CONCIERGE.RETIRE_AFTER}; the template's default is 10m).
const RETIRE_AFTER: Duration = Duration::from_secs(30);
/// How late after the grace the host may still be there: the server evaluates nodata() about
/// every 30 s, then the action's script runs.
const RETIRE_SLACK: Duration = Duration::from_secs(150);

lab_test!(
    fn load_scales_the_service_up_and_back_down_through_zabbix(lab: &Lab) {
        if !docker::available(&current_test()) {
            return;
        }
        let t0 = Instant::now();
        let since = unix_now();
        let cooldown = format!("{}s", COOLDOWN.as_secs());
        let svc = Service::setup(
            lab,
            "loop",
            &[
                "--min",
                "1",
                "--max",
                "2",
                "--cooldown",
                &cooldown,
                "--repeat-every",
                REPEAT,
            ],
        );
        let configured = t0.elapsed();

        // One container: it registers and beats; the aggregate counts it.
        svc.project.start(1, SETTLE);
        let first = svc.wait_hosts(1);
        svc.wait_running_aggregate(1);
        let one_running = t0.elapsed();

        // High load: the scale-up trigger fires, its action runs concierge-scale, two containers.
        svc.push_load(&first, "5");
        let load_high_at = Instant::now();
        svc.project.wait_running(2, SETTLE);
        let scaled_up = load_high_at.elapsed();
        let both = svc.wait_hosts(2);
        svc.wait_running_aggregate(2);
        for h in &both {
            svc.set_host_macro(
                h,
                "{$CONCIERGE.RETIRE_AFTER}",
                &format!("{}s", RETIRE_AFTER.as_secs()),
            );
        }
        assert_eq!(
            with_retire_trigger(lab, &both).expect("trigger.get"),
            2,
            "the containers' hosts have no retire trigger"
        );
        let aggregate_two = load_high_at.elapsed();
        let nodes = wait_for("the 'nodes scaled to 2' event", SETTLE, || {
            let names = svc.event_names(since)?;
            match names.iter().find(|n| n.ends_with("nodes scaled to 2")) {
                Some(n) => Ok(Some(n.clone())),
                None => bail!("events so far: {names:?}"),
            }
        });
        let up = svc.wait_scaled_to(2);
        assert_eq!(up["from"], 1, "{up}");
        // concierge-scale --zabbix-item pushed the new count to the service host.
        wait_for("service.scale.target = 2", SETTLE, || {
            match svc.last_value("service.scale.target")? {
                Some(v) if v == "2" => Ok(Some(())),
                other => bail!("last value {other:?}"),
            }
        });
        let up_done = Instant::now();

        // Low load: back to one, but not before the cooldown since the scale-up has passed.
        svc.push_load(&both, "0.1");
        svc.project.wait_running(1, Duration::from_secs(240));
        let down_after = up_done.elapsed();
        assert!(
            down_after >= COOLDOWN.saturating_sub(Duration::from_secs(5)),
            "scaled down {down_after:?} after scaling up, inside the {COOLDOWN:?} cooldown"
        );
        // The container stops before docker-compose returns and concierge-scale logs the event.
        let down = svc.wait_scaled_to(1);
        assert_eq!(down["from"], 2, "{down}");
        let down_at = Instant::now();
        let events = svc.scale_events();
        let refused = events.iter().filter(|e| e["outcome"] == "cooldown").count();
        svc.wait_running_aggregate(1);
        wait_for("the 'nodes scaled to 1' event", SETTLE, || {
            let names = svc.event_names(since)?;
            Ok(names
                .iter()
                .any(|n| n.ends_with("nodes scaled to 1"))
                .then_some(()))
        });
        // The stopped container said state 0 on its way out: its "Container stopped" problem
        // ran heal, which found the count the scale-down decided and left it alone.
        let healed = svc.wait_scale_event("heal's no-op after the scale-down", SETTLE, |e| {
            e["action"] == "heal"
        });
        assert_eq!(healed["outcome"], "noop", "{healed}");
        assert_eq!(
            (healed["from"].clone(), healed["target"].clone()),
            (1.into(), 1.into())
        );
        assert!(
            healed["reason"]
                .as_str()
                .is_some_and(|r| r.contains("Concierge: Container stopped")),
            "{healed}"
        );
        assert_eq!(svc.project.running().expect("docker ps").len(), 1);
        // The removed container's host is retired within the grace; the survivor keeps its own
        // (it beats every 2 s) and the aggregate keeps saying 1.
        let survivor = wait_for(
            "the scaled-away container's host to be retired",
            RETIRE_AFTER + RETIRE_SLACK,
            || {
                let hosts = svc.hosts()?;
                Ok((hosts.len() == 1).then_some(hosts))
            },
        );
        let retired_after = down_at.elapsed();
        assert!(survivor.is_subset(&both), "{survivor:?} not of {both:?}");
        svc.wait_running_aggregate(1);
        note(&format!(
            "loop on {} (scripts on the {}, engine {}): configured in {configured:.1?}; one \
             container counted at {one_running:.1?}; high load -> 2 containers in \
             {scaled_up:.1?}, aggregate 2 in {aggregate_two:.1?} ({nodes:?}); low load -> 1 \
             container {down_after:.1?} after the scale-up ({refused} attempt(s) refused by the \
             {COOLDOWN:?} cooldown), heal a no-op; its host retired {retired_after:.1?} after \
             the scale-down (grace {RETIRE_AFTER:?}); total {:.1?}",
            lab.api_version(),
            svc.scripts_on(),
            up["engine"],
            t0.elapsed()
        ));
    }
);

/// The escalation test's bound.
const ESCALATION_MAX: usize = 4;

lab_test!(
    fn a_sustained_high_load_escalates_to_larger_steps_within_max(lab: &Lab) {
        if !docker::available(&current_test()) {
            return;
        }
        let t0 = Instant::now();
        // Step 1 at once adds STEP (1), step 2 after --escalate-after (one period) adds 2 x
        // STEP, step 3 would add 2 more but --max holds.
        let max = ESCALATION_MAX.to_string();
        let svc = Service::setup(
            lab,
            "escal",
            &[
                "--min",
                "1",
                "--max",
                &max,
                "--step",
                "1",
                "--cooldown",
                "30s",
                "--repeat-every",
                REPEAT,
                "--escalate-after",
                REPEAT,
            ],
        );
        svc.project.start(1, SETTLE);
        let first = svc.wait_hosts(1);
        svc.wait_running_aggregate(1);

        // The load stays high: only the first container reports it, the others add none.
        svc.push_load(&first, "5");
        let high_at = Instant::now();
        let mut most = 0;
        let mut watch = |what: &str, pick: &dyn Fn(&serde_json::Value) -> bool| {
            wait_for(what, Duration::from_secs(240), || {
                let running = svc.project.running()?.len();
                most = most.max(running);
                assert!(
                    running <= ESCALATION_MAX,
                    "{running} containers, above --max {ESCALATION_MAX}"
                );
                let events = svc.scale_events();
                match events.iter().find(|e| pick(e)) {
                    Some(e) => Ok(Some((e.clone(), high_at.elapsed()))),
                    None => bail!("{running} running; events so far: {events:?}"),
                }
            })
        };
        let (first_step, at1) = watch("the first step (1 -> 2)", &|e| {
            e["outcome"] == "scaled" && e["from"] == 1
        });
        assert_eq!(
            (first_step["to"].clone(), first_step["step"].clone()),
            (2.into(), 1.into())
        );
        let (second_step, at2) = watch("the escalated step (2 -> 4)", &|e| {
            e["outcome"] == "scaled" && e["from"] == 2
        });
        assert_eq!(
            (second_step["to"].clone(), second_step["step"].clone()),
            (4.into(), 2.into()),
            "{second_step}"
        );
        assert!(
            second_step["detail"]
                .as_str()
                .is_some_and(|d| d.contains("escalated step: 2 x STEP")),
            "{second_step}"
        );
        assert!(
            at2 - at1 >= Duration::from_secs(50),
            "the escalated step came {:?} after the first, inside the action's {REPEAT} step",
            at2 - at1
        );
        // The next escalated step finds the service at --max: a clamp, not a fifth container.
        let (held, at3) = watch("the escalated step held at --max", &|e| {
            e["outcome"] == "clamped" && e["from"] == 4
        });
        assert!(
            held["detail"]
                .as_str()
                .is_some_and(|d| d.contains("above max 4")),
            "{held}"
        );
        svc.project.wait_running(ESCALATION_MAX, SETTLE);
        note(&format!(
            "escalation on {} (scripts on the {}): high load -> 1 to 2 after {at1:.1?}, 2 to 4 \
             (2 x STEP) after {at2:.1?}, held at --max {ESCALATION_MAX} after {at3:.1?}; at most \
             {most} running; total {:.1?}",
            lab.api_version(),
            svc.scripts_on(),
            t0.elapsed()
        ));
    }
);
