//! concierge-scale: scale a service from a Zabbix action, safely.
//!
//! The talk's scheduler "basically just runs docker-compose scale" with the action, the
//! service, the current scale and an increment. This does the same over one [`Engine`] trait
//! (compose v1/v2, swarm, kubectl), but reads the real count from the engine, keeps to
//! `--min/--max`, refuses inside a `--cooldown`, takes a per-service lock so concurrent calls
//! never overshoot, can `--dry-run`, and logs every decision (JSON lines plus the talk's
//! `Scaled X from A to B`). Flow: validate → open logs → lock → read count → plan → scale →
//! record → push to Zabbix → log → print the count.

pub mod cli;
pub mod engine;
pub mod event;
pub mod plan;
pub mod state;

use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use concierge_core::cli::Connection;
use concierge_core::deadline::Deadline;
use concierge_core::outcome::{self, Contract, Failure, UsageError};
use concierge_core::zabbix::key;
use concierge_core::zabbix::sender::{self, Timestamp, Value};

pub use cli::{parse_count_arg, Cli, Request, ZabbixArgs};
use engine::{Engine, EngineError, Runner, SystemRunner};
use event::{Event, LogError, LogFile, Outcome};
use plan::{Action, Plan};
use state::{LastScaling, StateDir, StateError};

/// The tool's name in messages.
pub const TOOL: &str = "concierge-scale";

/// Largest count, step or bound accepted: anything bigger is a typo, not a plan.
pub const MAX_COUNT: u32 = 1_000_000;

/// --max when not given: enough for a lab, small enough that a runaway trigger cannot exhaust
/// a host. Set it for production.
pub const DEFAULT_MAX: u32 = 10;

/// The environment variable that moves the state directory.
pub const STATE_DIR_ENV: &str = "CONCIERGE_STATE_DIR";

/// The event log's name inside the state directory.
pub const EVENT_LOG_NAME: &str = "scale-events.jsonl";

/// Why a run failed.
#[derive(Debug)]
pub enum ScaleError {
    /// Invalid arguments or configuration, found before anything ran.
    Usage(anyhow::Error),
    /// The engine failed (nothing was scaled, or it is unknown whether it was).
    Engine {
        service: String,
        doing: String,
        error: EngineError,
    },
    /// The state directory (or the lock) failed.
    State(StateError),
    /// A log could not be opened or written.
    Log(LogError),
    /// The scaling happened, but the new count did not reach Zabbix.
    Push(anyhow::Error),
}

impl fmt::Display for ScaleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaleError::Usage(e) => write!(f, "{e:#}"),
            ScaleError::Engine {
                service,
                doing,
                error,
            } => write!(f, "{service}: {doing}: {error}"),
            ScaleError::State(e) => e.fmt(f),
            ScaleError::Log(e) => e.fmt(f),
            ScaleError::Push(e) => write!(f, "the count did not reach Zabbix: {e:#}"),
        }
    }
}

impl std::error::Error for ScaleError {}

impl ScaleError {
    /// The failure class, whose exit status concierge-core's outcome module owns.
    pub fn failure(&self) -> Failure {
        match self {
            ScaleError::Usage(e) => outcome::classify(e),
            ScaleError::Engine { .. } => Failure::Engine,
            ScaleError::State(StateError::LockTimeout { .. }) => Failure::DeadlineExceeded,
            ScaleError::State(_) | ScaleError::Log(_) => Failure::Usage,
            ScaleError::Push(_) => Failure::Partial,
        }
    }
}

fn usage(msg: String) -> ScaleError {
    ScaleError::Usage(UsageError(msg).into())
}

/// What a run decided.
#[derive(Debug)]
pub struct Report {
    pub service: String,
    /// The count after the call, printed on stdout.
    pub count: u32,
    pub outcome: Outcome,
    /// A failure after the service was scaled (Zabbix push, state, log): the count is still
    /// printed, and the exit status is the failure's.
    pub late_error: Option<ScaleError>,
}

/// Where the human lines go.
enum HumanLog {
    Stderr,
    File(LogFile),
}

impl HumanLog {
    fn write(&mut self, line: &str) -> Result<(), LogError> {
        match self {
            HumanLog::Stderr => {
                let _ = std::io::stderr().write_all(line.as_bytes());
                Ok(())
            }
            HumanLog::File(f) => f.append(line),
        }
    }
}

fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{TOOL}: {msg}");
}

/// Run the command line with the system's processes.
pub fn run(cli: &Cli) -> Result<Report, ScaleError> {
    let runner = SystemRunner {
        timeout: cli.engine_timeout,
        verbose: cli.verbose,
    };
    run_with(cli, &runner)
}

/// Run the command line with `runner` answering for the engine.
pub fn run_with(cli: &Cli, runner: &dyn Runner) -> Result<Report, ScaleError> {
    // 1. Everything that can be checked without side effects.
    let req = Request::from_cli(cli).map_err(|e| ScaleError::Usage(e.into()))?;
    cli.check_engine_options()
        .map_err(|e| ScaleError::Usage(e.into()))?;
    let zabbix = zabbix_target(&cli.zabbix)?;

    // 2. The records, before any engine runs: an unusable path must stop us before a change.
    let dir = StateDir::new(cli.state_dir());
    let event_path = cli
        .event_log
        .clone()
        .unwrap_or_else(|| dir.path().join(EVENT_LOG_NAME));
    if !cli.dry_run || cli.event_log.is_none() {
        dir.create().map_err(ScaleError::State)?;
    }
    let mut events = LogFile::open(&event_path).map_err(ScaleError::Log)?;
    let mut human = match &cli.human_log {
        Some(p) => HumanLog::File(LogFile::open(p).map_err(ScaleError::Log)?),
        None => HumanLog::Stderr,
    };

    // 3. The engine, the lock, the last scaling.
    let engine = cli.engine(runner);
    let mut ev = Event {
        time: SystemTime::now(),
        service: req.service.clone(),
        engine: engine.name().to_string(),
        action: req.action.to_string(),
        step: (req.action != Action::To).then_some(req.amount),
        target: (req.action == Action::To).then_some(req.amount),
        hint: req.hint,
        count_source: None,
        from: None,
        to: None,
        outcome: Outcome::Failed,
        reason: cli
            .reason
            .clone()
            .unwrap_or_else(|| format!("{} {}", req.action, req.amount)),
        notes: Vec::new(),
        decision: String::new(),
        error: None,
        dry_run: cli.dry_run,
        command: None,
        zabbix: None,
    };
    let key = state::key(cli.engine.family(), cli.scope(), &req.service);
    let mut log = |ev: &mut Event| -> Result<(), ScaleError> {
        ev.time = SystemTime::now();
        let json = events.append(&ev.json_line());
        // On stderr a failure is already told by the summary line that ends the run.
        let line = match (&human, ev.outcome) {
            (HumanLog::Stderr, Outcome::Failed) => Ok(()),
            _ => human.write(&ev.human_line()),
        };
        json.and(line).map_err(ScaleError::Log)
    };
    let decided = decide(cli, &req, engine.as_ref(), runner, &dir, &key, &mut ev);
    match decided {
        Err(e) => {
            ev.outcome = Outcome::Failed;
            ev.error = Some(match &e {
                ScaleError::Engine { error, .. } if !error.engine_stderr().is_empty() => {
                    format!("{error}\n{}", error.engine_stderr())
                }
                other => other.to_string(),
            });
            // The failure is what the caller needs to hear about; a log error is secondary.
            if let Err(le) = log(&mut ev) {
                note(&le.to_string());
            }
            Err(e)
        }
        Ok((count, late)) => {
            let mut late_error = late;
            if ev.outcome == Outcome::Scaled && late_error.is_none() {
                if let Some(z) = &zabbix {
                    match push(z, count) {
                        Ok(()) => ev.zabbix = Some("sent".into()),
                        Err(e) => {
                            ev.zabbix = Some(format!("{e:#}"));
                            late_error = Some(ScaleError::Push(e));
                        }
                    }
                }
            }
            if let Err(le) = log(&mut ev) {
                late_error.get_or_insert(le);
            }
            Ok(Report {
                service: req.service.clone(),
                count,
                outcome: ev.outcome,
                late_error,
            })
        }
    }
}

/// Lock, read, plan, scale, record. Fills `ev`; returns the count after the call and a
/// failure that came after the scaling (the state not recorded).
fn decide(
    cli: &Cli,
    req: &Request,
    engine: &dyn Engine,
    runner: &dyn Runner,
    dir: &StateDir,
    key: &str,
    ev: &mut Event,
) -> Result<(u32, Option<ScaleError>), ScaleError> {
    // Held until the end of this function: read-count → scale → record.
    let _lock = if cli.dry_run {
        None
    } else {
        Some(
            dir.lock(key, cli.engine_timeout)
                .map_err(ScaleError::State)?,
        )
    };
    let last = dir.last_scaling(key).map_err(ScaleError::State)?;

    let (from, counted) = match engine.current(runner, &req.service) {
        Ok(n) => {
            if let Some(h) = req.hint.filter(|h| *h != n) {
                let msg = format!(
                    "CURRENT {h} from the caller differs from the {n} that {} reports; using {n}",
                    engine.name()
                );
                note(&format!("{}: {msg}", req.service));
                ev.notes.push(msg);
            }
            ev.count_source = Some("engine");
            (n, true)
        }
        Err(e) => match req.hint {
            Some(h) => {
                let msg = format!("cannot read the count ({e}); using CURRENT {h}");
                note(&format!("{}: {msg}", req.service));
                ev.notes.push(msg);
                ev.count_source = Some("hint");
                (h, false)
            }
            None => {
                return Err(ScaleError::Engine {
                    service: req.service.clone(),
                    doing: "cannot read the current count (and no CURRENT was given)".into(),
                    error: e,
                })
            }
        },
    };
    ev.from = Some(from);
    ev.to = Some(from);

    let finish = |ev: &mut Event, outcome, decision: String| {
        ev.outcome = outcome;
        ev.decision = decision;
    };
    let (to, cut) = match plan::plan(req.action, req.amount, from, req.bounds) {
        Plan::Clamped { detail } => {
            finish(ev, Outcome::Clamped, detail);
            return Ok((from, None));
        }
        Plan::Noop { detail } => {
            finish(ev, Outcome::Noop, detail);
            return Ok((from, None));
        }
        Plan::Scale { to, detail } => (to, detail),
    };
    if let (Some(cd), Some(l)) = (cli.cooldown, last) {
        if let Some(left) = l.cooldown_left(cd, SystemTime::now()) {
            let detail = format!(
                "last scaled {} (from {} to {}); {:.0}s of the {:?} cooldown left; would go to {to}",
                event::rfc3339_ms(l.at_ms),
                l.from,
                l.to,
                left.as_secs_f64().ceil(),
                cd
            );
            finish(ev, Outcome::Cooldown, detail);
            return Ok((from, None));
        }
    }
    let inv = engine.scale_invocation(&req.service, to, counted.then_some(from));
    ev.command = Some(inv.argv());
    ev.to = Some(to);
    if cli.dry_run {
        note(&format!("dry run: would run: {inv}"));
        finish(ev, Outcome::DryRun, cut);
        return Ok((to, None));
    }
    let done = engine.scale(runner, &req.service, to, counted.then_some(from));
    if let Err(error) = done {
        return Err(ScaleError::Engine {
            service: req.service.clone(),
            doing: format!("cannot scale from {from} to {to}"),
            error,
        });
    }
    finish(ev, Outcome::Scaled, cut);
    let recorded = dir.record(
        key,
        &req.service,
        &LastScaling {
            at_ms: state::unix_ms(SystemTime::now()),
            from,
            to,
        },
    );
    let late = recorded.err().map(|e| {
        ev.error = Some(format!("the scaling was not recorded (no cooldown): {e}"));
        ScaleError::State(e)
    });
    Ok((to, late))
}

/// The Zabbix destination for the push, checked up front.
struct ZabbixTarget {
    conn: Connection,
    key: String,
}

fn zabbix_target(args: &ZabbixArgs) -> Result<Option<ZabbixTarget>, ScaleError> {
    let Some(item) = &args.zabbix_item else {
        return Ok(None);
    };
    key::validate(item).map_err(|e| ScaleError::Usage(e.into()))?;
    let conn = args
        .connection_args()
        .resolve(Instant::now(), true)
        .map_err(ScaleError::Usage)?;
    if conn.to_stdout {
        return Err(usage(
            "-z - is not supported: stdout carries the count".into(),
        ));
    }
    Ok(Some(ZabbixTarget {
        conn,
        key: item.clone(),
    }))
}

/// Push `count` to the item, within a budget of its own (the scaling may have taken longer
/// than the agent's Timeout).
fn push(z: &ZabbixTarget, count: u32) -> anyhow::Result<()> {
    let deadline = Deadline::after(z.conn.deadline.budget());
    let values = [Value {
        host: z.conn.host.clone(),
        key: z.key.clone(),
        value: count.to_string(),
        clock: Some(Timestamp::now()),
    }];
    sender::send(&z.conn.destinations, &values, &deadline, &z.conn.sender)?.into_result()?;
    Ok(())
}

/// Print the outcome as the contract says, and return the exit status: a failure after a
/// scaling is "partial" (exit 2), with the count still printed.
pub fn finish(result: Result<Report, ScaleError>) -> ExitCode {
    match result {
        Ok(r) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", r.count);
            let _ = out.flush();
            match r.late_error {
                None => ExitCode::SUCCESS,
                Some(e) if r.outcome == Outcome::Scaled => {
                    let msg = format!("{}: scaled to {}, but {e}", r.service, r.count);
                    outcome::fail(TOOL, Contract::Document, Failure::Partial, &msg)
                }
                Some(e) => outcome::fail(TOOL, Contract::Document, e.failure(), &e.to_string()),
            }
        }
        Err(e) => {
            if let ScaleError::Engine { error, .. } = &e {
                let passed = error.engine_stderr();
                if !passed.is_empty() {
                    let _ = writeln!(std::io::stderr(), "{passed}");
                }
            }
            outcome::fail(TOOL, Contract::Document, e.failure(), &e.to_string())
        }
    }
}

#[cfg(test)]
mod tests;
