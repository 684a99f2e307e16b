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
pub mod clock;
pub mod engine;
pub mod event;
pub mod plan;
pub mod resize;
pub mod resources;
pub mod state;

use std::fmt;
use std::io::Write;
use std::time::{Instant, SystemTime};

use concierge_core::cli::Connection;
use concierge_core::deadline::Deadline;
use concierge_core::outcome::{self, Classify, Error, Failure, UsageError};
use concierge_core::zabbix::sender::{self, Timestamp, Value};
use concierge_core::zabbix::{active, key};

pub use cli::{parse_count_arg, Cli, Request, ZabbixArgs};
use engine::{Engine, EngineError, Runner, SystemRunner};
use event::{Event, LogError, LogFile, Outcome};
use plan::{Action, Plan};
use state::{LastScaling, StateDir, StateError};

/// The tool's name in messages.
pub const TOOL: &str = "concierge-scale";

/// --max when not given: enough for a lab, small enough that a runaway trigger cannot exhaust
/// a host. Set it for production.
pub const DEFAULT_MAX: u32 = 10;

/// The event log's name inside the state directory.
pub const EVENT_LOG_NAME: &str = "scale-events.jsonl";

/// Why a run failed, beyond invalid arguments.
#[derive(Debug)]
pub enum ScaleError {
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
    /// The new count did not reach Zabbix.
    Push(Error),
    /// The service was scaled, but `cause` kept it from being recorded: exit status 2, as the
    /// documentation says, with the count still printed.
    Unrecorded {
        service: String,
        count: u32,
        cause: Box<ScaleError>,
    },
    /// The service was resized, but `cause` kept it from being recorded (exit status 2).
    UnrecordedResize {
        service: String,
        limits: String,
        cause: Box<ScaleError>,
    },
}

impl fmt::Display for ScaleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaleError::Engine {
                service,
                doing,
                error,
            } => write!(f, "{service}: {doing}: {error}"),
            ScaleError::State(e) => e.fmt(f),
            ScaleError::Log(e) => e.fmt(f),
            ScaleError::Push(e) => write!(f, "the count did not reach Zabbix: {e}"),
            ScaleError::Unrecorded {
                service,
                count,
                cause,
            } => write!(f, "{service}: scaled to {count}, but {cause}"),
            ScaleError::UnrecordedResize {
                service,
                limits,
                cause,
            } => write!(f, "{service}: resized to {limits}, but {cause}"),
        }
    }
}

impl std::error::Error for ScaleError {}

impl Classify for ScaleError {
    fn failure(&self) -> Failure {
        match self {
            ScaleError::Engine { .. } => Failure::Engine,
            ScaleError::State(StateError::LockTimeout { .. }) => Failure::DeadlineExceeded,
            ScaleError::State(_) | ScaleError::Log(_) => Failure::Usage,
            ScaleError::Push(_)
            | ScaleError::Unrecorded { .. }
            | ScaleError::UnrecordedResize { .. } => Failure::Partial,
        }
    }
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

/// The event log and the human log, opened before any engine runs: an unusable path must
/// stop the call before anything changes.
struct Records {
    events: LogFile,
    human: HumanLog,
}

impl Records {
    fn open(cli: &Cli, dir: &StateDir) -> Result<Self, ScaleError> {
        let event_path = cli
            .event_log
            .clone()
            .unwrap_or_else(|| dir.path().join(EVENT_LOG_NAME));
        if !cli.dry_run || cli.event_log.is_none() {
            dir.create().map_err(ScaleError::State)?;
        } else {
            dir.check().map_err(ScaleError::State)?;
        }
        let events = LogFile::open(&event_path).map_err(ScaleError::Log)?;
        let human = match &cli.human_log {
            Some(p) => HumanLog::File(LogFile::open(p).map_err(ScaleError::Log)?),
            None => HumanLog::Stderr,
        };
        Ok(Self { events, human })
    }

    /// Append `ev` to the event log only, stamped now (the intent before a scaling: the
    /// human line follows with the result).
    fn log_intent(&mut self, ev: &mut Event) -> Result<(), ScaleError> {
        ev.time = SystemTime::now();
        self.events.append(&ev.json_line()).map_err(ScaleError::Log)
    }

    /// Append `ev` to both logs, stamped now.
    fn log(&mut self, ev: &mut Event) -> Result<(), ScaleError> {
        ev.time = SystemTime::now();
        let json = self.events.append(&ev.json_line());
        // On stderr a failure is already told by the summary line that ends the run.
        let line = match (&self.human, ev.outcome) {
            (HumanLog::Stderr, Outcome::Failed) => Ok(()),
            _ => self.human.write(&ev.human_line()),
        };
        json.and(line).map_err(ScaleError::Log)
    }
}

fn note(msg: &str) {
    outcome::warn(TOOL, msg);
}

/// Run the command line with the system's processes, and print the count. A failure after a
/// scaling comes back as the error, the count printed all the same.
pub fn run(cli: &Cli) -> outcome::Result<()> {
    if cli.action == Action::Resize {
        return resize::run(cli);
    }
    let runner = SystemRunner::new(cli.engine_timeout, cli.verbose);
    let report = run_with(cli, &runner)?;
    print_result(report.count, report.late_error)
}

/// Print what a call left (the count, the limits) on stdout; a failure that came after the
/// change is the error all the same, the result printed first.
fn print_result(result: impl fmt::Display, late_error: Option<ScaleError>) -> outcome::Result<()> {
    let mut out = std::io::stdout().lock();
    let printed = writeln!(out, "{result}")
        .and_then(|()| out.flush())
        .map_err(Error::output);
    match late_error {
        Some(e) => Err(e.into()),
        None => printed,
    }
}

/// Run the command line with `runner` answering for the engine.
pub fn run_with(cli: &Cli, runner: &dyn Runner) -> outcome::Result<Report> {
    // 1. Everything that can be checked without side effects.
    let req = Request::from_cli(cli)?;
    cli.check_engine_options()?;
    let zabbix = zabbix_target(&cli.zabbix)?;
    // 2. The records.
    let dir = StateDir::new(cli.state_dir());
    let mut records = Records::open(cli, &dir)?;
    // 3. The engine, the lock, the decision; then the records and the push.
    let engine = cli.engine(runner);
    let mut ev = new_event(cli, &req, engine.name());
    let key = state::key(cli.engine.family(), cli.scope(), &req.service);
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
        Ok((count, late)) => Ok(decided(&mut records, ev, zabbix.as_ref(), count, late)),
    }
}

/// The event of this call, before anything is known of the count.
fn new_event(cli: &Cli, req: &Request, engine: &str) -> Event {
    let reason = cli.reason.clone().unwrap_or_else(|| match req.action {
        Action::Heal => "heal".to_string(),
        _ => format!("{} {}", req.action, req.amount),
    });
    Event {
        step: matches!(req.action, Action::Up | Action::Down).then_some(req.amount),
        // heal's target is the recorded count, known once the lock is held.
        target: (req.action == Action::To).then_some(req.amount),
        hint: req.hint,
        notes: match cli.step_times {
            1 => Vec::new(),
            k => vec![format!("escalated step: {k} x STEP")],
        },
        ..Event::new(
            &req.service,
            engine,
            req.action.to_string(),
            reason,
            cli.dry_run,
        )
    }
}

/// Log a failed call, pass the engine's stderr through, and return the error that ends it.
fn failed(records: &mut Records, ev: &mut Event, e: ScaleError) -> Error {
    ev.outcome = Outcome::Failed;
    ev.error = Some(match &e {
        ScaleError::Engine { error, .. } if !error.engine_stderr().is_empty() => {
            format!("{error}\n{}", error.engine_stderr())
        }
        other => other.to_string(),
    });
    // The failure is what the caller needs to hear about; a log error is secondary.
    if let Err(le) = records.log(ev) {
        note(&le.to_string());
    }
    // The engine's own words first; the summary line ends the run.
    if let ScaleError::Engine { error, .. } = &e {
        engine::pass_through(error.engine_stderr());
    }
    e.into()
}

/// After a decision: push a new count to Zabbix, log, and report. `late` is a failure that
/// came after the scaling; a later one (push, log) is kept if there is none.
fn decided(
    records: &mut Records,
    mut ev: Event,
    zabbix: Option<&ZabbixTarget>,
    count: u32,
    late: Option<ScaleError>,
) -> Report {
    let mut late_error = late;
    if let (Outcome::Scaled, None, Some(z)) = (ev.outcome, &late_error, zabbix) {
        match push(z, count) {
            Ok(()) => ev.zabbix = Some("sent".into()),
            Err(e) => {
                ev.zabbix = Some(e.to_string());
                late_error = Some(ScaleError::Push(e));
            }
        }
    }
    if let Err(le) = records.log(&mut ev) {
        late_error.get_or_insert(le);
    }
    let late_error = late_error.map(|cause| match ev.outcome {
        Outcome::Scaled => ScaleError::Unrecorded {
            service: ev.service.clone(),
            count,
            cause: Box::new(cause),
        },
        _ => cause,
    });
    Report {
        service: ev.service,
        count,
        outcome: ev.outcome,
        late_error,
    }
}

/// The service's lock, unless the call is a dry run (which changes nothing). The wait shares
/// the engine budget.
fn service_lock(
    cli: &Cli,
    runner: &dyn Runner,
    dir: &StateDir,
    key: &str,
) -> Result<Option<state::ServiceLock>, ScaleError> {
    match cli.dry_run {
        true => Ok(None),
        false => dir
            .lock(key, runner.time_left().unwrap_or(cli.engine_timeout))
            .map(Some)
            .map_err(ScaleError::State),
    }
}

/// Lock, read, plan, scale, record. Fills `ev`; returns the count after the call and a
/// failure that came after the scaling (the state not recorded). The intent is recorded (state
/// file and event log) before the engine scales, so a call killed there still started the
/// cooldown and left a trace; the next call reconciles it.
#[allow(clippy::too_many_arguments)]
fn decide(
    cli: &Cli,
    req: &Request,
    engine: &dyn Engine,
    runner: &dyn Runner,
    dir: &StateDir,
    key: &str,
    ev: &mut Event,
    records: &mut Records,
) -> Result<(u32, Option<ScaleError>), ScaleError> {
    // Held until the end of this function: read-count → scale → record.
    let _lock = service_lock(cli, runner, dir, key)?;
    let mut last = dir.last_scaling(key).map_err(ScaleError::State)?;
    let (from, counted) = read_count(req, engine, runner, ev)?;
    if let (Some(l), false) = (last, cli.dry_run) {
        if l.pending.is_some() {
            last = Some(reconcile(records, dir, key, ev, l, from)?);
        }
    }
    ev.from = Some(from);
    ev.to = Some(from);
    let Some((to, cut)) = target(cli, req, from, last, ev) else {
        return Ok((from, None));
    };
    let inv = engine.scale_invocation(&req.service, to, counted.then_some(from));
    ev.command = Some(inv.argv());
    ev.to = Some(to);
    if cli.dry_run {
        note(&format!("dry run: would run: {inv}"));
        (ev.outcome, ev.decision) = (Outcome::DryRun, cut);
        return Ok((to, None));
    }
    // The intent: if this call is killed from here on, the cooldown has started and the
    // event log says what was under way.
    // A heal restores a decision already made: the cooldown keeps counting from that one.
    let kept = last.filter(|_| req.action == Action::Heal).map(|l| l.at_ms);
    let intent = LastScaling {
        at_ms: kept.unwrap_or_else(|| clock::unix_ms(SystemTime::now())),
        from,
        to,
        pending: Some(std::process::id()),
    };
    dir.record(key, &req.service, &intent)
        .map_err(ScaleError::State)?;
    let mut started = ev.clone();
    (started.outcome, started.decision) = (Outcome::Started, cut.clone());
    if let Err(e) = records.log_intent(&mut started) {
        let _ = dir.restore(key, &req.service, last.as_ref());
        return Err(e);
    }
    let done = engine.scale(runner, &req.service, to, counted.then_some(from));
    if let Err(error) = done {
        // A command that ran out of time may have scaled: its intent stays, for the next call
        // to reconcile (and the cooldown holds). One that failed outright changed nothing.
        if !matches!(error, EngineError::TimedOut { .. }) {
            if let Err(e) = dir.restore(key, &req.service, last.as_ref()) {
                note(&e.to_string());
            }
        }
        return Err(ScaleError::Engine {
            service: req.service.clone(),
            doing: format!("cannot scale from {from} to {to}"),
            error,
        });
    }
    (ev.outcome, ev.decision) = (Outcome::Scaled, cut);
    let at_ms = kept.unwrap_or_else(|| clock::unix_ms(SystemTime::now()));
    let done = LastScaling {
        at_ms,
        from,
        to,
        pending: None,
    };
    let recorded = dir.record(key, &req.service, &done);
    let late = recorded.err().map(|e| {
        ev.error = Some(format!(
            "the scaling was not recorded (the cooldown counts from its start): {e}"
        ));
        ScaleError::State(e)
    });
    // Containers this scaling created get the last resize's limits (compose).
    let late = late.or_else(|| {
        (to > from)
            .then(|| resize::reapply(engine, runner, dir, key, &req.service, ev))
            .flatten()
    });
    Ok((to, late))
}

/// A call recorded its intent and never its result (it was killed: this call holds the lock
/// it held). Log what happened as far as the engine tells (`now` is its count), and record it
/// as a scaling at the intent's time, so the cooldown runs from there.
fn reconcile(
    records: &mut Records,
    dir: &StateDir,
    key: &str,
    ev: &mut Event,
    intent: LastScaling,
    now: u32,
) -> Result<LastScaling, ScaleError> {
    let pid = intent.pending.unwrap_or_default();
    let detail = format!(
        "call {pid} recorded at {} that it was scaling from {} to {} and did not finish",
        clock::rfc3339_ms(intent.at_ms),
        intent.from,
        intent.to
    );
    let mut gone = ev.clone();
    gone.from = Some(intent.from);
    gone.to = Some(now);
    gone.outcome = Outcome::Interrupted;
    gone.decision = detail.clone();
    gone.reason = format!("reconciled by call {}", std::process::id());
    gone.command = None;
    if let Err(e) = records.log(&mut gone) {
        note(&e.to_string());
    }
    let msg = format!("{detail}; the engine reports {now}");
    note(&format!("{}: {msg}", ev.service));
    ev.notes.push(msg);
    let settled = LastScaling {
        at_ms: intent.at_ms,
        from: intent.from,
        to: now,
        pending: None,
    };
    dir.record(key, &ev.service, &settled)
        .map_err(ScaleError::State)?;
    Ok(settled)
}

/// The count to start from, and whether the engine told it (else it is the caller's
/// CURRENT): a mismatch or a fallback is noted.
fn read_count(
    req: &Request,
    engine: &dyn Engine,
    runner: &dyn Runner,
    ev: &mut Event,
) -> Result<(u32, bool), ScaleError> {
    let mut note_both = |msg: String| {
        note(&format!("{}: {msg}", req.service));
        ev.notes.push(msg);
    };
    match (engine.current(runner, &req.service), req.hint) {
        (Ok(n), hint) => {
            if let Some(h) = hint.filter(|h| *h != n) {
                note_both(format!(
                    "CURRENT {h} from the caller differs from the {n} that {} reports; using {n}",
                    engine.name()
                ));
            }
            ev.count_source = Some("engine");
            Ok((n, true))
        }
        (Err(e), Some(h)) => {
            note_both(format!("cannot read the count ({e}); using CURRENT {h}"));
            ev.count_source = Some("hint");
            Ok((h, false))
        }
        (Err(e), None) => Err(ScaleError::Engine {
            service: req.service.clone(),
            doing: "cannot read the current count (and no CURRENT was given)".into(),
            error: e,
        }),
    }
}

/// Where to go from `from`, with what a bound cut off; `None` when the bounds or the cooldown
/// keep the count where it is (the event's outcome and decision say why).
fn target(
    cli: &Cli,
    req: &Request,
    from: u32,
    last: Option<LastScaling>,
    ev: &mut Event,
) -> Option<(u32, String)> {
    let amount = match req.action {
        Action::Heal => {
            let (decided, said) = match last {
                Some(l) => (l.to, format!("the last scaling decided {}", l.to)),
                None => (
                    req.bounds.min,
                    format!("no scaling recorded: --min {}", req.bounds.min),
                ),
            };
            ev.target = Some(decided);
            ev.notes.push(said);
            decided
        }
        _ => req.amount,
    };
    let (to, cut) = match plan::plan(req.action, amount, from, req.bounds) {
        Plan::Clamped { detail } => {
            (ev.outcome, ev.decision) = (Outcome::Clamped, detail);
            return None;
        }
        Plan::Noop { detail } => {
            (ev.outcome, ev.decision) = (Outcome::Noop, detail);
            return None;
        }
        Plan::Scale { to, detail } => (to, detail),
    };
    // heal restores a decision already made, which the cooldown already let through.
    if let (Some(cd), Some(l), false) = (cli.cooldown, last, req.action == Action::Heal) {
        if let Some(left) = l.cooldown_left(cd, SystemTime::now()) {
            ev.outcome = Outcome::Cooldown;
            ev.decision = format!(
                "last scaled {} (from {} to {}); {:.0}s of the {:?} cooldown left; would go to {to}",
                clock::rfc3339_ms(l.at_ms),
                l.from,
                l.to,
                left.as_secs_f64().ceil(),
                cd
            );
            return None;
        }
    }
    Some((to, cut))
}

/// The Zabbix destination for the push, checked up front.
struct ZabbixTarget {
    conn: Connection,
    key: String,
}

fn zabbix_target(args: &ZabbixArgs) -> outcome::Result<Option<ZabbixTarget>> {
    let Some(item) = &args.zabbix_item else {
        return Ok(None);
    };
    key::validate(item)?;
    let conn = args.connection.resolve(Instant::now(), true)?;
    if conn.to_stdout {
        return Err(UsageError("-z - is not supported: stdout carries the count".into()).into());
    }
    Ok(Some(ZabbixTarget {
        conn,
        key: item.clone(),
    }))
}

/// Push `count` to the item, within a budget of its own (the scaling may have taken longer
/// than the agent's Timeout).
fn push(z: &ZabbixTarget, count: u32) -> outcome::Result<()> {
    let deadline = Deadline::after(z.conn.deadline.budget());
    let values = [Value {
        host: z.conn.host.as_str().into(),
        key: z.key.clone(),
        value: count.to_string(),
        clock: Some(Timestamp::now()),
    }];
    let (dests, connect) = (&z.conn.destinations, &z.conn.sender.connect);
    sender::send(dests, &values, &deadline, &z.conn.sender)?
        .into_result()
        .map_err(|e| active::explain(e, &z.conn.host, dests, &deadline, connect))?;
    Ok(())
}

#[cfg(test)]
mod tests;
