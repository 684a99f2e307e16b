//! `concierge-scale resize SERVICE --cpus N --memory SIZE`: vertical scaling over the same
//! engines as the count, with the same guarantees: bounded (`--min-cpus` … `--max-memory`),
//! under the service's lock, refused inside `--cooldown` (a resize has a cooldown of its own:
//! a scaling does not hold one back, nor the other way), logged (`started`, then `resized` or
//! `failed`) and `--dry-run`. The limits before are read from the engine; a resize that
//! changes nothing is a no-op.
//!
//! Compose's `docker update` changes only the containers that exist, so the limits are kept in
//! `<key>.resize` and applied to the containers a later `up` of concierge-scale creates
//! ([`reapply`]); swarm and Kubernetes keep them in the service's own definition.

use std::time::SystemTime;

use concierge_core::outcome::{self, UsageError};

use crate::cli::Cli;
use crate::engine::{Engine, EngineError, Resources, Runner, SystemRunner};
use crate::event::{Event, Outcome};
use crate::plan::Action;
use crate::resources::{self, Limits, ResizePlan, ResourceBounds};
use crate::state::{self, LastResize, StateDir};
use crate::{clock, failed, note, print_result, Records, ScaleError};

/// The options of `resize`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Resize (resize SERVICE --cpus N --memory SIZE)")]
pub struct ResizeArgs {
    /// The CPU limit, in CPUs (0.5, 2; at most 3 decimals).
    #[arg(long, value_name = "N", value_parser = resources::parse_cpus)]
    pub cpus: Option<u64>,

    /// The memory limit, as docker writes it (256m, 1g, 1.5g; binary units b, k, m, g, t).
    #[arg(long, value_name = "SIZE", value_parser = resources::parse_memory)]
    pub memory: Option<u64>,

    /// Lowest CPU limit a resize sets.
    #[arg(long, value_name = "N", default_value = "0.1", value_parser = resources::parse_cpus)]
    pub min_cpus: u64,

    /// Highest CPU limit a resize sets.
    #[arg(long, value_name = "N", default_value = "4", value_parser = resources::parse_cpus)]
    pub max_cpus: u64,

    /// Lowest memory limit a resize sets.
    #[arg(long, value_name = "SIZE", default_value = "64m", value_parser = resources::parse_memory)]
    pub min_memory: u64,

    /// Highest memory limit a resize sets.
    #[arg(long, value_name = "SIZE", default_value = "4g", value_parser = resources::parse_memory)]
    pub max_memory: u64,
}

/// A resize request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResizeRequest {
    pub service: String,
    /// What was asked (a `None` field is left alone).
    pub wanted: Limits,
    pub bounds: ResourceBounds,
}

impl ResizeRequest {
    /// Validate `resize SERVICE` and its options.
    pub fn from_cli(cli: &Cli) -> Result<Self, UsageError> {
        cli.engine
            .validate_service(&cli.service)
            .map_err(|e| UsageError(e.to_string()))?;
        if cli.current.is_some() || cli.amount.is_some() {
            return Err(UsageError(
                "resize takes no CURRENT or STEP: resize SERVICE --cpus N --memory SIZE".into(),
            ));
        }
        let a = &cli.resize;
        if a.cpus.is_none() && a.memory.is_none() {
            return Err(UsageError(
                "resize needs --cpus N, --memory SIZE or both".into(),
            ));
        }
        if a.min_cpus > a.max_cpus {
            return Err(UsageError(format!(
                "--min-cpus {} is above --max-cpus {}",
                resources::cpus_text(a.min_cpus),
                resources::cpus_text(a.max_cpus)
            )));
        }
        if a.min_memory > a.max_memory {
            return Err(UsageError(format!(
                "--min-memory {} is above --max-memory {}",
                resources::memory_text(a.min_memory),
                resources::memory_text(a.max_memory)
            )));
        }
        if cli.zabbix.zabbix_item.is_some() {
            return Err(UsageError(
                "--zabbix-item does not apply to resize (it pushes a count)".into(),
            ));
        }
        Ok(Self {
            service: cli.service.clone(),
            wanted: Limits {
                nano_cpus: a.cpus,
                memory: a.memory,
            },
            bounds: ResourceBounds {
                min_nano_cpus: a.min_cpus,
                max_nano_cpus: a.max_cpus,
                min_memory: a.min_memory,
                max_memory: a.max_memory,
            },
        })
    }
}

/// What a resize decided: the limits after the call (printed) and how.
#[derive(Debug)]
pub struct ResizeReport {
    pub limits: Limits,
    pub outcome: Outcome,
    /// A failure after the engine resized (the state or the log): exit status 2.
    pub late_error: Option<ScaleError>,
}

/// Run `resize` with the system's processes and print the limits after it.
pub fn run(cli: &Cli) -> outcome::Result<()> {
    let runner = SystemRunner::new(cli.engine_timeout, cli.verbose);
    let report = run_with(cli, &runner)?;
    print_result(report.limits, report.late_error)
}

/// Run `resize` with `runner` answering for the engine.
pub fn run_with(cli: &Cli, runner: &dyn Runner) -> outcome::Result<ResizeReport> {
    let req = ResizeRequest::from_cli(cli)?;
    cli.check_engine_options()?;
    let dir = StateDir::new(cli.state_dir());
    let mut records = Records::open(cli, &dir)?;
    let engine = cli.engine(runner);
    let key = state::key(cli.engine.family(), cli.scope(), &req.service);
    let reason = cli
        .reason
        .clone()
        .unwrap_or_else(|| format!("resize to {}", req.wanted));
    let mut ev = Event {
        resources: Some((Limits::default(), req.wanted)),
        ..Event::new(
            &req.service,
            engine.name(),
            Action::Resize.to_string(),
            reason,
            cli.dry_run,
        )
    };
    match decide(
        cli,
        &req,
        engine.as_ref(),
        runner,
        &dir,
        &key,
        &mut ev,
        &mut records,
    ) {
        Err(e) => Err(failed(&mut records, &mut ev, e)),
        Ok((limits, late)) => {
            let mut late_error = late;
            if let Err(le) = records.log(&mut ev) {
                late_error.get_or_insert(le);
            }
            Ok(ResizeReport {
                limits,
                outcome: ev.outcome,
                late_error: late_error.map(|cause| match ev.outcome {
                    Outcome::Resized => ScaleError::UnrecordedResize {
                        service: ev.service.clone(),
                        limits: limits.to_string(),
                        cause: Box::new(cause),
                    },
                    _ => cause,
                }),
            })
        }
    }
}

/// Lock, read the limits, plan, resize, record; fills `ev`. Returns the limits after the call
/// and a failure that came after the resize.
#[allow(clippy::too_many_arguments)]
fn decide(
    cli: &Cli,
    req: &ResizeRequest,
    engine: &dyn Engine,
    runner: &dyn Runner,
    dir: &StateDir,
    key: &str,
    ev: &mut Event,
    records: &mut Records,
) -> Result<(Limits, Option<ScaleError>), ScaleError> {
    // The same lock as the count's: a resize and a scaling of one service take turns.
    let _lock = crate::service_lock(cli, runner, dir, key)?;
    let last = dir.last_resize(key).map_err(ScaleError::State)?;
    let now = engine
        .resources(runner, &req.service)
        .map_err(|error| ScaleError::Engine {
            service: req.service.clone(),
            doing: "cannot read the resource limits".into(),
            error,
        })?;
    if let Some(n) = &now.note {
        note(&format!("{}: {n}", req.service));
        ev.notes.push(n.clone());
    }
    if let Some(l) = last.filter(|l| l.pending.is_some()) {
        let msg = format!(
            "call {} recorded at {} that it was resizing to {} and did not finish; the engine \
             reports {}",
            l.pending.unwrap_or_default(),
            clock::rfc3339_ms(l.at_ms),
            l.to,
            now.limits
        );
        note(&format!("{}: {msg}", req.service));
        ev.notes.push(msg);
    }
    let from = now.limits;
    let to = match resources::plan(req.wanted, from, req.bounds) {
        ResizePlan::Keep {
            clamped,
            to,
            detail,
        } => {
            ev.resources = Some((from, to));
            ev.outcome = if clamped {
                Outcome::Clamped
            } else {
                Outcome::Noop
            };
            ev.decision = detail;
            return Ok((from, None));
        }
        ResizePlan::Resize { to, detail } => {
            ev.decision = detail;
            to
        }
    };
    ev.resources = Some((from, to));
    if let (Some(cd), Some(l)) = (cli.cooldown, last) {
        if let Some(left) = l.cooldown_left(cd, SystemTime::now()) {
            ev.outcome = Outcome::Cooldown;
            ev.decision = format!(
                "last resized {} to {}; {:.0}s of the {cd:?} cooldown left; would set {}",
                clock::rfc3339_ms(l.at_ms),
                l.to,
                left.as_secs_f64().ceil(),
                to.over(from)
            );
            return Ok((from, None));
        }
    }
    let inv = engine.resize_invocation(&req.service, &to, &now);
    ev.command = inv.as_ref().map(|i| i.argv());
    if inv.is_none() {
        let msg = "no containers to update: the limits apply to those the next up creates";
        note(&format!("{}: {msg}", req.service));
        ev.notes.push(msg.into());
    }
    if cli.dry_run {
        if let Some(i) = &inv {
            note(&format!("dry run: would run: {i}"));
        }
        ev.outcome = Outcome::DryRun;
        return Ok((to.over(from), None));
    }
    let intent = LastResize {
        at_ms: clock::unix_ms(SystemTime::now()),
        from,
        to,
        pending: Some(std::process::id()),
    };
    dir.record_resize(key, &req.service, &intent)
        .map_err(ScaleError::State)?;
    let mut started = ev.clone();
    started.outcome = Outcome::Started;
    if let Err(e) = records.log_intent(&mut started) {
        let _ = dir.restore_resize(key, &req.service, last.as_ref());
        return Err(e);
    }
    if let Err(error) = engine.resize(runner, &req.service, &to, &now) {
        if !matches!(error, EngineError::TimedOut { .. }) {
            if let Err(e) = dir.restore_resize(key, &req.service, last.as_ref()) {
                note(&e.to_string());
            }
        }
        return Err(ScaleError::Engine {
            service: req.service.clone(),
            doing: format!("cannot resize to {}", to.over(from)),
            error,
        });
    }
    ev.outcome = Outcome::Resized;
    let done = LastResize {
        at_ms: clock::unix_ms(SystemTime::now()),
        pending: None,
        ..intent
    };
    let late = dir.record_resize(key, &req.service, &done).err().map(|e| {
        ev.error = Some(format!("the resize was not recorded: {e}"));
        ScaleError::State(e)
    });
    Ok((to.over(from), late))
}

/// After a scaling created containers: give them the last resize's limits where the engine's
/// service definition does not (compose). Called holding the service's lock; the failure, if
/// any, comes after the scaling (exit status 2).
pub(crate) fn reapply(
    engine: &dyn Engine,
    runner: &dyn Runner,
    dir: &StateDir,
    key: &str,
    service: &str,
    ev: &mut Event,
) -> Option<ScaleError> {
    if engine.limits_follow_new_containers() {
        return None;
    }
    let last = match dir.last_resize(key) {
        Ok(Some(l)) => l,
        Ok(None) => return None,
        Err(e) => return Some(ScaleError::State(e)),
    };
    let engine_error = |error| ScaleError::Engine {
        service: service.to_string(),
        doing: format!(
            "cannot apply the last resize ({}) to the new containers",
            last.to
        ),
        error,
    };
    let now: Resources = match engine.resources(runner, service) {
        Ok(n) => n,
        Err(e) => return Some(engine_error(e)),
    };
    let same = |asked: Option<u64>, had: Option<u64>| asked.is_none() || asked == had;
    if same(last.to.nano_cpus, now.limits.nano_cpus) && same(last.to.memory, now.limits.memory) {
        return None;
    }
    match engine.resize(runner, service, &last.to, &now) {
        Ok(_) => {
            ev.notes.push(format!(
                "applied the last resize ({}) to the service's {} containers",
                last.to.over(now.limits),
                now.containers.len()
            ));
            None
        }
        Err(e) => Some(engine_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{fail, ok, Scripted};
    use clap::Parser;
    use serde_json::Value as Json;

    fn cli(dir: &std::path::Path, args: &[&str]) -> Result<Cli, clap::Error> {
        let mut argv = vec![
            "concierge-scale".to_string(),
            "--state-dir".into(),
            dir.display().to_string(),
            "--human-log".into(),
            dir.join("human.log").display().to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        Cli::try_parse_from(argv)
    }

    fn events(dir: &std::path::Path) -> Vec<Json> {
        std::fs::read_to_string(dir.join(crate::EVENT_LOG_NAME))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    const SWARM: [&str; 2] = ["--engine", "swarm"];

    #[test]
    fn bad_sizes_and_missing_limits_are_usage_errors() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in [
            &["resize", "web", "--cpus", "0"][..],
            &["resize", "web", "--cpus", "-1"],
            &["resize", "web", "--cpus", "lots"],
            &["resize", "web", "--memory", "12q"],
            &["resize", "web", "--memory", "0"],
            &["resize", "web", "--max-memory", "1.3b", "--memory", "1g"],
        ] {
            let e = cli(tmp.path(), bad).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad:?}");
        }
        for (args, msg) in [
            (
                &["resize", "web"][..],
                "resize needs --cpus N, --memory SIZE or both",
            ),
            (&["resize", "web", "2"], "resize takes no CURRENT or STEP"),
            (
                &["resize", "web", "--cpus", "1", "--min-cpus", "5"],
                "--min-cpus 5 is above --max-cpus 4",
            ),
            (
                &["resize", "web", "--memory", "1g", "--max-memory", "32m"],
                "--min-memory 64m is above --max-memory 32m",
            ),
            (
                &["resize", "--", "--help", "--cpus", "1"],
                "looks like an option",
            ),
        ] {
            let c = cli(tmp.path(), args).unwrap();
            let e = ResizeRequest::from_cli(&c).unwrap_err();
            assert!(e.0.contains(msg), "{args:?}: {e}");
        }
        // Nothing was created for a refused call.
        assert!(events(tmp.path()).is_empty());
    }

    #[test]
    fn swarm_resize_reads_sets_records_and_logs() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cli(
            tmp.path(),
            &[
                &SWARM[..],
                &["resize", "web", "--cpus", "0.5", "--memory", "128m"],
            ]
            .concat(),
        )
        .unwrap();
        let r = Scripted::new(vec![ok("null\n"), ok("")]);
        let rep = run_with(&c, &r).unwrap();
        assert_eq!(rep.outcome, Outcome::Resized);
        assert_eq!(rep.limits.to_string(), "cpus=0.5 memory=128m");
        let seen = r.seen_args();
        assert_eq!(
            seen[1],
            [
                "docker",
                "service",
                "update",
                "--detach",
                "--limit-cpu=0.5",
                "--limit-memory=128m",
                "--",
                "web"
            ]
        );
        let ev = events(tmp.path());
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!(ev[0]["outcome"], "started");
        assert_eq!(ev[1]["outcome"], "resized");
        assert_eq!(ev[1]["action"], "resize");
        assert_eq!(ev[1]["resources"]["from"]["nano_cpus"], 0);
        assert_eq!(ev[1]["resources"]["to"]["nano_cpus"], 500_000_000);
        assert_eq!(ev[1]["resources"]["to"]["memory_bytes"], 128 << 20);
        let human = std::fs::read_to_string(tmp.path().join("human.log")).unwrap();
        assert!(
            human.ends_with(
                ": Resized web from cpus=unlimited memory=unlimited to cpus=0.5 memory=128m\n"
            ),
            "{human}"
        );
        let last = StateDir::new(tmp.path())
            .last_resize(&state::key("swarm", None, "web"))
            .unwrap()
            .unwrap();
        assert_eq!(last.to.nano_cpus, Some(500_000_000));
        assert_eq!(last.pending, None);

        // Again inside the cooldown: refused, nothing run but the read.
        let c = cli(
            tmp.path(),
            &[
                &SWARM[..],
                &["--cooldown", "5m", "resize", "web", "--cpus", "1"],
            ]
            .concat(),
        )
        .unwrap();
        let r = Scripted::new(vec![ok(
            r#"{"Limits":{"NanoCPUs":500000000,"MemoryBytes":134217728}}"#,
        )]);
        let rep = run_with(&c, &r).unwrap();
        assert_eq!(rep.outcome, Outcome::Cooldown);
        assert_eq!(rep.limits.to_string(), "cpus=0.5 memory=128m");
        assert_eq!(r.seen_args().len(), 1);
        // Already there: a no-op, whatever the cooldown.
        let c = cli(
            tmp.path(),
            &[&SWARM[..], &["resize", "web", "--memory", "128m"]].concat(),
        )
        .unwrap();
        let r = Scripted::new(vec![ok(
            r#"{"Limits":{"NanoCPUs":500000000,"MemoryBytes":134217728}}"#,
        )]);
        assert_eq!(run_with(&c, &r).unwrap().outcome, Outcome::Noop);
        let ev = events(tmp.path());
        assert_eq!(ev[2]["outcome"], "cooldown");
        assert_eq!(ev[3]["outcome"], "noop");
        assert_eq!(ev[3]["detail"], "already at cpus=0.5 memory=128m");
    }

    #[test]
    fn bounds_clamp_a_resize() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cli(
            tmp.path(),
            &[
                &SWARM[..],
                &[
                    "--dry-run",
                    "resize",
                    "web",
                    "--cpus",
                    "8",
                    "--max-cpus",
                    "2",
                ],
            ]
            .concat(),
        )
        .unwrap();
        let r = Scripted::new(vec![ok("null")]);
        let rep = run_with(&c, &r).unwrap();
        assert_eq!(rep.outcome, Outcome::DryRun);
        let ev = events(tmp.path());
        assert_eq!(ev[0]["detail"], "cpus 8 is above max 2: clamped to 2");
        assert_eq!(ev[0]["command"][4], "--limit-cpu=2");
        // The dry run ran nothing but the read.
        assert_eq!(r.seen_args().len(), 1);
    }

    #[test]
    fn a_failed_resize_restores_the_state_and_logs_the_engine() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cli(
            tmp.path(),
            &[
                &SWARM[..],
                &["--cooldown", "5m", "resize", "web", "--cpus", "1"],
            ]
            .concat(),
        )
        .unwrap();
        let r = Scripted::new(vec![
            ok("null"),
            fail(
                1,
                "Error response from daemon: rpc error: no such service\n",
            ),
        ]);
        let e = run_with(&c, &r).unwrap_err();
        assert!(e.to_string().contains("cannot resize to cpus=1"), "{e}");
        let ev = events(tmp.path());
        assert_eq!(ev[1]["outcome"], "failed");
        assert!(
            ev[1]["error"].as_str().unwrap().contains("no such service"),
            "{}",
            ev[1]
        );
        // No cooldown started by a failure.
        assert!(StateDir::new(tmp.path())
            .last_resize(&state::key("swarm", None, "web"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn compose_up_gives_new_containers_the_last_resize() {
        let tmp = tempfile::tempdir().unwrap();
        let base = ["--engine", "compose-v1", "-p", "shop"];
        let c = cli(
            tmp.path(),
            &[
                &base[..],
                &["resize", "web", "--cpus", "0.5", "--memory", "128m"],
            ]
            .concat(),
        )
        .unwrap();
        // One container, no limits; docker update of it.
        let r = Scripted::new(vec![ok("aaaa\n"), ok("aaaa 0 0\n"), ok("")]);
        assert_eq!(run_with(&c, &r).unwrap().outcome, Outcome::Resized);
        assert_eq!(
            r.seen_args()[2],
            [
                "docker",
                "update",
                "--cpus=0.5",
                "--memory=128m",
                "--memory-swap=128m",
                "--",
                "aaaa"
            ]
        );
        // up 1 -> 2: the count, the scaling, then the limits of both containers and an update
        // of them.
        let c = cli(tmp.path(), &[&base[..], &["up", "web"]].concat()).unwrap();
        let r = Scripted::new(vec![
            ok("aaaa\n"),
            ok("aaaaffff\n"),
            ok(""),
            ok("aaaa\nbbbb\n"),
            ok("aaaa 500000000 134217728\nbbbb 0 0\n"),
            ok(""),
        ]);
        let rep = crate::run_with(&c, &r).unwrap();
        assert_eq!((rep.count, rep.outcome), (2, Outcome::Scaled));
        assert!(rep.late_error.is_none());
        assert_eq!(
            r.seen_args()[5],
            [
                "docker",
                "update",
                "--cpus=0.5",
                "--memory=128m",
                "--memory-swap=128m",
                "--",
                "aaaa",
                "bbbb"
            ]
        );
        let ev = events(tmp.path());
        let last = ev.last().unwrap();
        assert_eq!(last["outcome"], "scaled");
        assert!(
            last["detail"].as_str().unwrap().contains(
                "applied the last resize (cpus=0.5 memory=128m) to the service's 2 containers"
            ),
            "{last}"
        );
        // A failure there is a late one: scaled, exit 2.
        let r = Scripted::new(vec![
            ok("aaaa\nbbbb\n"),
            ok("aaaaffff\nbbbbffff\n"),
            ok(""),
            ok("aaaa\nbbbb\ncccc\n"),
            ok("aaaa 500000000 134217728\nbbbb 500000000 134217728\ncccc 0 0\n"),
            fail(1, "Error response from daemon: boom\n"),
        ]);
        let rep = crate::run_with(&c, &r).unwrap();
        assert_eq!(rep.count, 3);
        let late = rep.late_error.expect("late error");
        assert!(
            late.to_string().contains("cannot apply the last resize"),
            "{late}"
        );
    }
}
