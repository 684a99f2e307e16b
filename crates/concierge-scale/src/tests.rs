//! The whole decision flow against a scripted engine: what is asked, in which order, what is
//! recorded and logged.

use super::*;
use crate::engine::testing::{fail, ok, Scripted};
use clap::Parser;
use serde_json::Value as Json;
use std::fs;
use std::path::Path;

/// A test's state directory, removed when dropped.
struct Tmp(tempfile::TempDir);

impl Tmp {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn dir(&self) -> &Path {
        self.0.path()
    }

    fn events(&self) -> Vec<Json> {
        fs::read_to_string(self.dir().join(EVENT_LOG_NAME))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn cli(tmp: &Tmp, args: &[&str]) -> Cli {
    let mut argv = vec![
        TOOL.to_string(),
        "--state-dir".into(),
        tmp.dir().display().to_string(),
        "--human-log".into(),
        tmp.dir().join("human.log").display().to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    Cli::try_parse_from(argv).unwrap()
}

/// compose v1 answering `ps -q` with `n` containers, all running.
fn count(n: usize) -> Vec<Result<engine::Output, EngineError>> {
    if n == 0 {
        return vec![ok("")];
    }
    let ids: String = (0..n).map(|i| format!("id{i}\n")).collect();
    let full: String = (0..n).map(|i| format!("id{i}ffff\n")).collect();
    vec![ok(&ids), ok(&full)]
}

fn script(parts: Vec<Vec<Result<engine::Output, EngineError>>>) -> Scripted {
    Scripted::new(parts.into_iter().flatten().collect())
}

#[test]
fn up_reads_the_engine_scales_records_and_logs() {
    let tmp = Tmp::new();
    let c = cli(
        &tmp,
        &[
            "--engine",
            "compose-v1",
            "-p",
            "shop",
            "up",
            "web",
            "1",
            "2",
        ],
    );
    let r = script(vec![count(1), vec![ok("")]]);
    let rep = run_with(&c, &r).unwrap();
    assert_eq!((rep.count, rep.outcome), (3, Outcome::Scaled));
    assert!(rep.late_error.is_none());
    let seen = r.seen_args();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[2],
        [
            "docker-compose",
            "--project-name=shop",
            "up",
            "--detach",
            "--no-deps",
            "--no-recreate",
            "--scale",
            "web=3",
            "--",
            "web"
        ]
    );
    let ev = tmp.events();
    assert_eq!(ev.len(), 2);
    // The intent is logged before the engine runs, the result after.
    assert_eq!(ev[0]["outcome"], "started");
    assert_eq!(ev[0]["command"], ev[1]["command"]);
    let ev = &ev[1..];
    assert_eq!(ev[0]["outcome"], "scaled");
    assert_eq!(
        (ev[0]["from"].clone(), ev[0]["to"].clone()),
        (1.into(), 3.into())
    );
    assert_eq!(ev[0]["engine"], "compose-v1");
    assert_eq!(ev[0]["count_source"], "engine");
    assert_eq!(ev[0]["step"], 2);
    assert_eq!(ev[0]["reason"], "up 2");
    let human = fs::read_to_string(tmp.dir().join("human.log")).unwrap();
    assert!(human.ends_with(": Scaled web from 1 to 3\n"), "{human}");
    let st = StateDir::new(tmp.dir())
        .last_scaling(&state::key("compose", Some("shop"), "web"))
        .unwrap()
        .unwrap();
    assert_eq!((st.from, st.to), (1, 3));
}

#[test]
fn the_engine_count_wins_over_the_hint() {
    let tmp = Tmp::new();
    let c = cli(&tmp, &["--engine", "compose-v1", "down", "web", "5"]);
    let r = script(vec![count(3), vec![ok("")]]);
    let rep = run_with(&c, &r).unwrap();
    assert_eq!(rep.count, 2);
    let ev = &tmp.events()[0];
    assert_eq!(ev["hint"], 5);
    assert_eq!(ev["from"], 3);
    assert!(ev["detail"].as_str().unwrap().contains("CURRENT 5"), "{ev}");
}

#[test]
fn the_hint_is_used_when_the_engine_cannot_be_asked() {
    let tmp = Tmp::new();
    let c = cli(
        &tmp,
        &["--engine", "kubectl", "-n", "shop", "up", "web", "2"],
    );
    let r = Scripted::new(vec![
        fail(
            1,
            "The connection to the server 127.0.0.1:6443 was refused\n",
        ),
        ok("deployment.apps/web scaled\n"),
    ]);
    let rep = run_with(&c, &r).unwrap();
    assert_eq!((rep.count, rep.outcome), (3, Outcome::Scaled));
    // No --current-replicas precondition from a hint.
    assert_eq!(
        r.seen_args()[1],
        [
            "kubectl",
            "--namespace=shop",
            "scale",
            "deployment/web",
            "--replicas=3"
        ]
    );
    let ev = &tmp.events()[0];
    assert_eq!(ev["count_source"], "hint");
    assert!(ev["detail"].as_str().unwrap().contains("refused"), "{ev}");
}

#[test]
fn kubectl_scales_with_a_precondition_on_the_count_it_read() {
    let tmp = Tmp::new();
    let c = cli(&tmp, &["--engine", "kubectl", "to", "statefulset/db", "4"]);
    let r = Scripted::new(vec![ok("2"), ok("")]);
    assert_eq!(run_with(&c, &r).unwrap().count, 4);
    assert_eq!(
        r.seen_args()[1],
        [
            "kubectl",
            "scale",
            "statefulset/db",
            "--current-replicas=2",
            "--replicas=4"
        ]
    );
}

#[test]
fn no_count_and_no_hint_is_an_engine_failure_logged_with_its_stderr() {
    let tmp = Tmp::new();
    let c = cli(&tmp, &["--engine", "compose-v1", "up", "web"]);
    let r = Scripted::new(vec![fail(1, "ERROR: No such service: web\n")]);
    let e = run_with(&c, &r).unwrap_err();
    assert_eq!(e.failure(), Some(Failure::Engine));
    assert_eq!(r.seen_args().len(), 1);
    let ev = &tmp.events()[0];
    assert_eq!(ev["outcome"], "failed");
    assert!(
        ev["error"]
            .as_str()
            .unwrap()
            .ends_with("\nERROR: No such service: web"),
        "{ev}"
    );
}

#[test]
fn a_failed_scaling_records_nothing_and_reports_the_engine() {
    let tmp = Tmp::new();
    let c = cli(
        &tmp,
        &["--engine", "compose-v1", "--cooldown", "1h", "up", "web"],
    );
    let r = script(vec![count(1), vec![fail(1, "ERROR: boom\n")]]);
    let e = run_with(&c, &r).unwrap_err();
    assert_eq!(e.failure(), Some(Failure::Engine));
    assert!(e.to_string().contains("cannot scale from 1 to 2"), "{e}");
    assert_eq!(tmp.events()[0]["to"], 2);
    // Not recorded, so no cooldown: the next call tries again.
    let r = script(vec![count(1), vec![ok("")]]);
    assert_eq!(run_with(&c, &r).unwrap().outcome, Outcome::Scaled);
}

#[test]
fn cooldown_refuses_a_second_scaling_but_not_a_no_op() {
    let tmp = Tmp::new();
    let c = cli(
        &tmp,
        &[
            "--engine",
            "compose-v1",
            "--cooldown",
            "1h",
            "--max",
            "3",
            "up",
            "web",
        ],
    );
    let r = script(vec![count(1), vec![ok("")]]);
    assert_eq!(run_with(&c, &r).unwrap().outcome, Outcome::Scaled);
    let r = script(vec![count(2)]);
    let rep = run_with(&c, &r).unwrap();
    assert_eq!((rep.count, rep.outcome), (2, Outcome::Cooldown));
    assert_eq!(r.seen_args().len(), 2, "no scaling inside the cooldown");
    let ev = &tmp.events()[2];
    assert_eq!((ev["from"].clone(), ev["to"].clone()), (2.into(), 2.into()));
    assert!(
        ev["detail"].as_str().unwrap().contains("cooldown left"),
        "{ev}"
    );
    // Another service has its own cooldown.
    let other = cli(
        &tmp,
        &["--engine", "compose-v1", "--cooldown", "1h", "up", "api"],
    );
    let r = script(vec![count(1), vec![ok("")]]);
    assert_eq!(run_with(&other, &r).unwrap().outcome, Outcome::Scaled);
}

#[test]
fn clamps_are_no_ops_that_never_call_the_engine_to_scale() {
    let tmp = Tmp::new();
    let c = cli(&tmp, &["--engine", "compose-v1", "--max", "3", "up", "web"]);
    let r = script(vec![count(3)]);
    let rep = run_with(&c, &r).unwrap();
    assert_eq!((rep.count, rep.outcome), (3, Outcome::Clamped));
    let c = cli(&tmp, &["--engine", "compose-v1", "down", "web"]);
    let r = script(vec![count(1)]);
    assert_eq!(run_with(&c, &r).unwrap().outcome, Outcome::Clamped);
    let c = cli(&tmp, &["--engine", "compose-v1", "to", "web", "1"]);
    let r = script(vec![count(1)]);
    assert_eq!(run_with(&c, &r).unwrap().outcome, Outcome::Noop);
    let outcomes: Vec<_> = tmp.events().iter().map(|e| e["outcome"].clone()).collect();
    assert_eq!(outcomes, ["clamped", "clamped", "noop"]);
}

#[test]
fn dry_run_changes_nothing_but_logs() {
    let tmp = Tmp::new();
    let c = cli(&tmp, &["--engine", "swarm", "--dry-run", "up", "web"]);
    let r = Scripted::new(vec![ok("1\n")]);
    let rep = run_with(&c, &r).unwrap();
    assert_eq!((rep.count, rep.outcome), (2, Outcome::DryRun));
    assert_eq!(r.seen_args().len(), 1, "only the count was read");
    let ev = &tmp.events()[0];
    assert_eq!(ev["dry_run"], true);
    assert_eq!(
        ev["command"][ev["command"].as_array().unwrap().len() - 1],
        "web=2"
    );
    let names: Vec<_> = fs::read_dir(tmp.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.ends_with(".state") && !n.ends_with(".lock")),
        "{names:?}"
    );
}

#[test]
fn compose_detection_is_the_first_engine_call() {
    let tmp = Tmp::new();
    let c = cli(&tmp, &["up", "web", "--docker", "/opt/docker"]);
    let r = script(vec![
        vec![ok("Docker Compose version v2.29.1\n")],
        count(1),
        vec![ok("")],
    ]);
    run_with(&c, &r).unwrap();
    let seen = r.seen_args();
    assert_eq!(seen[0], ["/opt/docker", "compose", "version"]);
    assert_eq!(seen[3][..3], ["/opt/docker", "compose", "up"]);
    assert_eq!(tmp.events()[0]["engine"], "compose-v2");
}

#[test]
fn invalid_requests_never_reach_the_engine() {
    let tmp = Tmp::new();
    for args in [
        vec!["up", "--", "--help"],
        vec!["up", "-f/etc/x"],
        vec!["up", "web;reboot"],
        vec!["up", "web", "-1"],
        vec!["up", "web", "1", "0"],
        vec!["up", "web", "1", "1.5"],
        vec!["down", "web", "1", "4294967296"],
        vec!["to", "web"],
        vec!["--min", "3", "--max", "2", "up", "web"],
        vec!["--engine", "kubectl", "up", "Web"],
        vec!["--engine", "kubectl", "-f", "x.yml", "up", "web"],
        vec!["--engine", "swarm", "-n", "x", "up", "web"],
        vec!["--tlscert-path", "/nonexistent", "up", "web"],
        vec!["-p", "my proj", "up", "web"],
        vec!["--zabbix-item", "bad key[", "up", "web"],
        vec!["--zabbix-item", "k", "-z", "-", "up", "web"],
    ] {
        let c = cli(&tmp, &args);
        let r = Scripted::new(vec![]);
        match run_with(&c, &r) {
            Err(e) => assert_eq!(e.failure(), Some(Failure::Usage), "{args:?}: {e}"),
            Ok(rep) => panic!("{args:?} was accepted: {rep:?}"),
        }
        assert!(r.seen_args().is_empty(), "{args:?}");
    }
    assert!(tmp.events().is_empty());
}

#[test]
fn counts_parse_strictly() {
    assert_eq!(parse_count_arg("X", "3").unwrap(), 3);
    assert_eq!(parse_count_arg("X", " 3.000 ").unwrap(), 3);
    assert_eq!(parse_count_arg("X", "0").unwrap(), 0);
    for bad in [
        "", "-1", "+1", "1e3", "3.5", "3.", ".0", "0x10", "１", "1000001",
    ] {
        assert!(parse_count_arg("X", bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        parse_count_arg("CURRENT", "-2").unwrap_err().to_string(),
        "CURRENT \"-2\" must not be negative"
    );
}

#[test]
fn positional_numbers_follow_the_talks_order() {
    let tmp = Tmp::new();
    let req = |args: &[&str]| Request::from_cli(&cli(&tmp, args)).unwrap();
    let r = req(&["up", "web", "2", "3"]);
    assert_eq!((r.hint, r.amount), (Some(2), 3));
    let r = req(&["down", "web", "2"]);
    assert_eq!((r.hint, r.amount), (Some(2), 1));
    let r = req(&["up", "web", "-", "2"]);
    assert_eq!((r.hint, r.amount), (None, 2));
    // What Zabbix substitutes for {?last(...)} over an item without a value yet.
    let r = req(&["up", "web", "*UNKNOWN*", "2"]);
    assert_eq!((r.hint, r.amount), (None, 2));
    let r = req(&["to", "web", "4"]);
    assert_eq!((r.hint, r.amount), (None, 4));
    let r = req(&["to", "web", "2", "4"]);
    assert_eq!((r.hint, r.amount), (Some(2), 4));
}

fn recorded(tmp: &Tmp) -> LastScaling {
    StateDir::new(tmp.dir())
        .last_scaling(&state::key("compose", Some("shop"), "web"))
        .unwrap()
        .unwrap()
}

#[test]
fn heal_restores_the_recorded_count_whatever_the_cooldown() {
    let tmp = Tmp::new();
    let args = ["--engine", "compose-v1", "-p", "shop", "--cooldown", "1h"];
    let with = |more: &[&str]| {
        let mut a = args.to_vec();
        a.extend(more);
        cli(&tmp, &a)
    };
    // A scaling to 3, then one container dies.
    run_with(
        &with(&["to", "web", "3"]),
        &script(vec![count(1), vec![ok("")]]),
    )
    .unwrap();
    let decided = recorded(&tmp);
    let r = script(vec![count(2), vec![ok("")]]);
    let rep = run_with(
        &with(&["--reason", "heal: no heartbeat", "heal", "web"]),
        &r,
    )
    .unwrap();
    assert_eq!((rep.count, rep.outcome), (3, Outcome::Scaled));
    assert!(r.seen_args()[2].contains(&"web=3".to_string()));
    let ev = tmp.events();
    let healed = ev.last().unwrap();
    assert_eq!(healed["action"], "heal");
    assert_eq!(healed["reason"], "heal: no heartbeat");
    assert_eq!(
        (healed["from"].clone(), healed["to"].clone()),
        (2.into(), 3.into())
    );
    assert_eq!(healed["target"], 3);
    assert!(healed["step"].is_null());
    assert!(healed["detail"]
        .as_str()
        .unwrap()
        .contains("the last scaling decided 3"));
    // The cooldown still counts from the decision, not from the heal.
    let after = recorded(&tmp);
    assert_eq!((after.to, after.at_ms), (3, decided.at_ms));
    let human = fs::read_to_string(tmp.dir().join("human.log")).unwrap();
    assert!(
        human.ends_with(": Healed web from 2 to 3 (heal: no heartbeat)\n"),
        "{human}"
    );
}

#[test]
fn heal_after_a_scale_down_changes_nothing() {
    let tmp = Tmp::new();
    let base = ["--engine", "compose-v1", "-p", "shop"];
    let with = |more: &[&str]| {
        let mut a = base.to_vec();
        a.extend(more);
        cli(&tmp, &a)
    };
    run_with(
        &with(&["down", "web"]),
        &script(vec![count(3), vec![ok("")]]),
    )
    .unwrap();
    // The removed container's "stopped" problem runs heal: the count is the decided one.
    let r = script(vec![count(2)]);
    let rep = run_with(&with(&["heal", "web"]), &r).unwrap();
    assert_eq!((rep.count, rep.outcome), (2, Outcome::Noop));
    assert_eq!(r.seen_args().len(), 2, "only the count is read");
    let ev = tmp.events();
    let last = ev.last().unwrap();
    assert_eq!(last["outcome"], "noop");
    assert!(last["detail"]
        .as_str()
        .unwrap()
        .contains("2 running and the last scaling decided 2: nothing to heal"));
    assert_eq!(recorded(&tmp).to, 2);
}

#[test]
fn heal_without_a_record_goes_to_min() {
    let tmp = Tmp::new();
    let c = cli(
        &tmp,
        &[
            "--engine",
            "compose-v1",
            "-p",
            "shop",
            "--min",
            "2",
            "heal",
            "web",
        ],
    );
    let rep = run_with(&c, &script(vec![count(0), vec![ok("")]])).unwrap();
    assert_eq!((rep.count, rep.outcome), (2, Outcome::Scaled));
    let ev = tmp.events();
    assert!(ev.last().unwrap()["detail"]
        .as_str()
        .unwrap()
        .contains("no scaling recorded: --min 2"));
    assert_eq!(ev.last().unwrap()["reason"], "heal");
}

#[test]
fn heal_takes_no_step_and_escalation_multiplies_it() {
    let tmp = Tmp::new();
    let parse = |args: &[&str]| Request::from_cli(&cli(&tmp, args));
    let e = parse(&["heal", "web", "2", "1"]).unwrap_err().to_string();
    assert!(e.contains("heal takes no STEP"), "{e}");
    assert!(parse(&["heal", "web", "2"]).is_ok());
    assert_eq!(
        parse(&["--step-times", "2", "up", "web", "-", "3"])
            .unwrap()
            .amount,
        6
    );
    let e = parse(&["--step-times", "2", "to", "web", "3"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--step-times applies to up and down"), "{e}");
    let c = cli(
        &tmp,
        &["--engine", "compose-v1", "--step-times", "2", "up", "web"],
    );
    let rep = run_with(&c, &script(vec![count(1), vec![ok("")]])).unwrap();
    assert_eq!(rep.count, 3);
    let ev = tmp.events();
    assert_eq!(ev.last().unwrap()["step"], 2);
    assert!(ev.last().unwrap()["detail"]
        .as_str()
        .unwrap()
        .contains("escalated step: 2 x STEP"));
}
