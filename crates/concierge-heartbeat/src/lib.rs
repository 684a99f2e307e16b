//! concierge-heartbeat: tell Zabbix a container is alive.
//!
//! One shot, it sends `container.state` once and prints the elapsed seconds (or a failure code),
//! like the courier. With `--every`, it runs as a coprocess: a beat of 1 on a fixed cadence, kept
//! up through Zabbix outages, and a 0 when the container stops (SIGTERM/SIGINT) — the talk's
//! `postStop` built in — so `nodata()` and "state is 0" triggers see dead containers.

pub mod schedule;

use std::time::{Duration, Instant};

use clap::Parser;
use concierge_core::cli::{self, Connection, ConnectionArgs, SpoolArgs};
use concierge_core::deadline::Deadline;
use concierge_core::outcome::{self, Context, Failure, UsageError};
use concierge_core::signals::{self, Signal, Signals};
use concierge_core::spool::{self, Spool};
use concierge_core::system;
use concierge_core::zabbix::active::{self, Announcement, Registration, MAX_METADATA_CHARS};
use concierge_core::zabbix::key;
use concierge_core::zabbix::route::Route;
use concierge_core::zabbix::sender::{self, DeliveryError, Summary, Timestamp, Value};

use schedule::Schedule;

/// The tool's name in messages.
pub const TOOL: &str = "concierge-heartbeat";

/// The item key of the talk's heartbeat.
pub const DEFAULT_KEY: &str = "container.state";

/// Longest time the goodbye (the 0 on stop) may take, so a 10 s stop timeout is never reached.
pub const GOODBYE_BUDGET: Duration = Duration::from_secs(3);

/// Shortest `--every`: a faster cadence only loads the server (its `nodata()` triggers work in
/// seconds), and a 0 or 1 ms period would make the coprocess a busy loop.
pub const MIN_EVERY: Duration = Duration::from_millis(100);

/// Command line of concierge-heartbeat.
#[derive(Debug, Parser)]
#[command(
    name = TOOL,
    version = concierge_core::version::SHORT,
    long_version = concierge_core::version::LONG,
    about = "Push container.state to Zabbix: once, or on a cadence with 0 on stop.",
    after_help = after_help()
)]
pub struct Cli {
    /// State to send: up (1), down (0) or a whole number (container.state is an unsigned item).
    /// With --every, the beat value (0 is sent on stop).
    #[arg(default_value = "up", value_name = "up|down|VALUE")]
    pub state: String,

    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Item key to send to.
    #[arg(short = 'k', long = "key", default_value = DEFAULT_KEY)]
    pub key: String,

    /// Run as a coprocess: beat on this cadence (10s, 2s, 500ms; at least 100ms) until SIGTERM
    /// or SIGINT, then send 0 and exit.
    #[arg(long, value_name = "DURATION", value_parser = parse_every)]
    pub every: Option<Duration>,

    /// Announce the host to Zabbix (active-checks request) so autoregistration actions create
    /// it: before the first beat, then every --register-every, and again (at most every 10 s)
    /// while Zabbix refuses the beats of an unknown host. Create the autoregistration action
    /// before the container starts: Zabbix 7.0 ignores a host's identical re-announce for 120 s
    /// after the first one, so a host that announced before the action existed registers only
    /// then (6.0 acts on every announce).
    #[arg(long)]
    pub register: bool,

    /// Host metadata for autoregistration actions to match (default: HostMetadata from -c).
    #[arg(long, value_name = "TEXT", requires = "register")]
    pub metadata: Option<String>,

    /// IP or DNS name for the registered host's agent interface (default: the connection's
    /// source address as the server sees it).
    #[arg(long, value_name = "ADDRESS", requires = "register")]
    pub interface: Option<String>,

    /// With --every --register: how often to announce again (Zabbix 7.0 acts on an unchanged
    /// announce at most every 120 s).
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration, default_value = "60s")]
    pub register_every: Duration,

    /// Log every beat on stderr, not only changes.
    #[arg(short = 'v', long)]
    pub verbose: bool,

    #[command(flatten)]
    pub spool: SpoolArgs,
}

fn after_help() -> String {
    format!(
        "{}\nWith --every nothing is printed on stdout; problems and recoveries go to stderr,\n\
         and the exit status is 0 once the 0 was delivered on stop.\n\
         Host name: -s, else Hostname from -c, else the system host name extended with the\n\
         container id (unique per container even with network_mode: host).\n\n\
         Examples:\n\
         \x20 # one beat (container.state=1) for host shop-1; prints the elapsed seconds\n\
         \x20 concierge-heartbeat up -z 127.0.0.1 -s shop-1\n\
         \x20 # the coprocess: register the container, beat every 10 s, send 0 on SIGTERM\n\
         \x20 concierge-heartbeat up --every 10s --register --metadata \"concierge service=shop\" -c /etc/zabbix/zabbix_agentd.conf\n\
         \x20 # tell Zabbix now that the container is going down\n\
         \x20 concierge-heartbeat down -c /etc/zabbix/zabbix_agentd.conf",
        Failure::help_table(&Failure::SENDING)
    )
}

impl Cli {
    /// True when the run is a coprocess (no value line on stdout).
    pub fn is_coprocess(&self) -> bool {
        self.every.is_some()
    }
}

/// `--every`: a duration of at least [`MIN_EVERY`] (checked while parsing, so a too-short
/// period is a usage error like any other bad argument: -7).
pub fn parse_every(text: &str) -> Result<Duration, String> {
    let every = cli::parse_duration(text)?;
    if every < MIN_EVERY {
        return Err(format!(
            "{text:?} is below the minimum of {}ms",
            MIN_EVERY.as_millis()
        ));
    }
    Ok(every)
}

/// The value a state word stands for.
pub fn state_value(state: &str) -> Result<String, UsageError> {
    match state.to_ascii_lowercase().as_str() {
        "up" => Ok("1".into()),
        "down" => Ok("0".into()),
        _ => state
            .parse::<u64>()
            .map(|n| n.to_string())
            .map_err(|_| UsageError(format!("state {state:?} is not up, down or a whole number"))),
    }
}

/// Everything a run needs, resolved from the command line and the agent configuration.
struct Heart {
    conn: Connection,
    /// Where each destination's nodes sent the host: kept from beat to beat, so beats go
    /// straight to the proxy a redirect named until a reset or a failure sends them back.
    routes: Vec<Route>,
    key: String,
    value: String,
    announcement: Option<Announcement>,
    verbose: bool,
    /// Beats (and the 0) no destination took, for the next send that reaches Zabbix.
    spool: Option<Spool>,
    /// Whether the next send says what it kept (once per outage, or every beat with -v).
    tell_kept: bool,
}

/// Run one shot or the coprocess, as the command line says.
pub fn run(cli: &Cli, started: Instant) -> outcome::Result<()> {
    // Signals must be blocked before any thread exists, so every thread inherits the mask.
    let signals = match cli.every {
        Some(_) => Some(Signals::block()?),
        None => None,
    };
    let mut heart = prepare(cli, started)?;
    match (cli.every, signals) {
        (Some(period), Some(signals)) => heart.beat_every(period, cli.register_every, &signals),
        _ => heart.once(),
    }
}

fn prepare(cli: &Cli, started: Instant) -> outcome::Result<Heart> {
    let value = state_value(&cli.state)?;
    key::validate(&cli.key)?;
    let conn = cli
        .connection
        .resolve_with(started, true, system::instance_name)?;
    if conn.to_stdout {
        return Err(UsageError("-z - is not supported: the heartbeat always sends".into()).into());
    }
    let announcement = if cli.register {
        let metadata = cli
            .metadata
            .clone()
            .or_else(|| conn.config.host_metadata.clone());
        if metadata
            .as_ref()
            .is_some_and(|m| m.chars().count() > MAX_METADATA_CHARS)
        {
            return Err(UsageError(format!(
                "host metadata is longer than {MAX_METADATA_CHARS} characters"
            ))
            .into());
        }
        Some(Announcement {
            host: conn.host.clone(),
            metadata,
            interface: cli.interface.clone(),
        })
    } else {
        None
    };
    let spool = cli.spool.open(TOOL, &conn)?;
    Ok(Heart {
        spool,
        tell_kept: true,
        routes: conn.destinations.iter().map(Route::new).collect(),
        conn,
        key: cli.key.clone(),
        value,
        announcement,
        verbose: cli.verbose,
    })
}

impl Heart {
    /// Send the value once (after registering, if asked) inside the run's deadline.
    fn once(&mut self) -> outcome::Result<()> {
        let deadline = self.conn.deadline;
        // A destination that cannot take the announce may still take the beat, and the others
        // both: the value is sent (or spooled) whatever the announce said, and the run fails
        // with the first error.
        let announced = match self.announcement.clone() {
            Some(a) => self.announce(&a, &deadline),
            None => Ok(()),
        };
        let value = self.value.clone();
        self.send(&value, &deadline).map_err(|e| {
            let (dests, connect) = (&self.conn.destinations, &self.conn.sender.connect);
            active::explain(e, &self.conn.host, dests, &deadline, connect)
        })?;
        announced
    }

    /// Beat until a stop signal, then say goodbye with a 0.
    fn beat_every(
        &mut self,
        period: Duration,
        register_every: Duration,
        signals: &Signals,
    ) -> outcome::Result<()> {
        // Each beat, retries included, must be over before the next is due.
        let beat_budget = self.conn.deadline.budget().min(period.mul_f64(0.8));
        let schedule = Schedule::new(Instant::now(), period);
        let mut failures = 0u64;
        let mut last_announce: Option<Instant> = None;
        self.log(&format!(
            "beating {}={} for host {:?} every {period:?}",
            self.key, self.value, self.conn.host
        ));
        loop {
            let deadline = Deadline::after(beat_budget);
            if let Some(a) = self.announcement.clone() {
                if last_announce.is_none_or(|t| t.elapsed() >= register_every) {
                    last_announce = Some(Instant::now());
                    if let Err(e) = self.announce(&a, &deadline) {
                        self.log(&format!("registration failed: {e:#}"));
                    }
                }
            }
            let value = self.value.clone();
            self.tell_kept = failures == 0 || self.verbose;
            match self.send(&value, &deadline) {
                Ok(summary) => {
                    if failures > 0 {
                        self.log(&format!("beats delivered again after {failures} failed"));
                    } else if self.verbose {
                        self.log(&format!("beat: {summary}"));
                    }
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || self.verbose {
                        self.log(&format!("beat failed (will keep beating): {e:#}"));
                    }
                    // The server no longer knows the host or item: announce again soon.
                    if matches!(e, DeliveryError::Partial { .. }) && self.announcement.is_some() {
                        let soon = register_every.min(Duration::from_secs(10));
                        if last_announce.is_some_and(|t| t.elapsed() >= soon) {
                            last_announce = None;
                        }
                    }
                }
            }
            let next = schedule.next_after(Instant::now());
            if let Some(sig) = wait_until(signals, next) {
                return self.goodbye(sig);
            }
        }
    }

    /// Send 0, trying again until the stop budget ends; a 0 that never arrived is spooled
    /// with the stop's clock, for the next run (the container's next start) to deliver.
    fn goodbye(&mut self, sig: i32) -> outcome::Result<()> {
        let stopped = Timestamp::now();
        self.log(&format!("signal {sig}: sending {}=0", self.key));
        let budget = self.conn.deadline.budget().min(GOODBYE_BUDGET);
        let deadline = Deadline::after(budget);
        let spool = self.spool.take();
        let mut attempts = 0u32;
        let result = loop {
            attempts += 1;
            let live = vec![self.value_now("0")];
            // The spool's backlog rides along with the first attempt only, so it cannot
            // slow the retries of the 0.
            let from = if attempts == 1 { spool.as_ref() } else { None };
            match self.send_values(from, live, stopped, &deadline, false) {
                Ok(summary) => break Ok(summary),
                // Answered: the server has the 0 (and refused it); asking again cannot help.
                Err(e @ DeliveryError::Partial { .. }) => break Err((e, true)),
                Err(e) => {
                    let pause = Duration::from_millis(250).min(deadline.remaining());
                    if deadline.expired() || pause < Duration::from_millis(50) {
                        break Err((e, false));
                    }
                    std::thread::sleep(pause);
                }
            }
        };
        self.spool = spool;
        let result = match result {
            Ok(summary) => Ok(summary),
            Err((e, true)) => Err(e),
            Err((e, false)) => {
                if let Some(s) = &self.spool {
                    let zero = [self.value_now("0")];
                    match s.store(&zero, stopped) {
                        Ok(_) => self.log(&format!(
                            "the 0 was not delivered in {attempts} attempt(s): kept in the \
                             spool {} with the stop's clock for the next run",
                            s.path().display()
                        )),
                        Err(se) => self.log(&format!("{se}: the 0 is lost")),
                    }
                }
                Err(e)
            }
        };
        let summary = result.context("the stop state (0) was not delivered")?;
        if self.verbose {
            self.log(&format!("goodbye: {summary}"));
        }
        Ok(())
    }

    /// A value of this host's item; the clock is left to the server unless it is spooled.
    fn value_now(&self, value: &str) -> Value {
        Value {
            host: self.conn.host.as_str().into(),
            key: self.key.clone(),
            value: value.to_string(),
            clock: None,
        }
    }

    /// Send `value` now (the spool's values ahead of it, and it kept there on failure).
    fn send(&mut self, value: &str, deadline: &Deadline) -> Result<Summary, DeliveryError> {
        let now = Timestamp::now();
        let live = vec![self.value_now(value)];
        let spool = self.spool.take();
        let result = self.send_values(spool.as_ref(), live, now, deadline, true);
        self.spool = spool;
        result
    }

    fn send_values(
        &mut self,
        spool: Option<&Spool>,
        live: Vec<Value>,
        at: Timestamp,
        deadline: &Deadline,
        keep: bool,
    ) -> Result<Summary, DeliveryError> {
        let before = self.places();
        let sent = spool::send(
            spool,
            &mut self.routes,
            live,
            keep.then_some(at),
            deadline,
            &self.conn.sender,
            spool::Tell {
                tool: TOOL,
                kept: self.tell_kept,
            },
        );
        self.log_moves(&before);
        match sent {
            Ok(sent) => {
                let from_spool = sent.delivered_from_spool();
                if from_spool > 0 {
                    self.log(&format!(
                        "delivered {from_spool} spooled value(s) with their clocks"
                    ));
                }
                if let Some(loss) = &sent.loss {
                    self.log(&loss.to_string());
                }
                sent.delivery.into_result()
            }
            Err(e) => Err(DeliveryError::Failed(sender::SendError::Transport(e))),
        }
    }

    /// Where each destination's redirect points now.
    fn places(&self) -> Vec<Option<String>> {
        self.routes
            .iter()
            .map(|r| r.redirected(&self.conn.host).map(ToString::to_string))
            .collect()
    }

    /// Say where a redirect moved the host, or that a redirect was forgotten.
    fn log_moves(&self, before: &[Option<String>]) {
        for (route, was) in self.routes.iter().zip(before) {
            let now = route.redirected(&self.conn.host).map(ToString::to_string);
            if now == *was {
                continue;
            }
            let d = route.destination();
            match &now {
                Some(to) => self.log(&format!(
                    "{d}: redirected: host {:?} is at {to}",
                    self.conn.host
                )),
                None => self.log(&format!("{d}: redirect forgotten")),
            }
        }
    }

    fn announce(&mut self, who: &Announcement, deadline: &Deadline) -> outcome::Result<()> {
        let before = self.places();
        let connect = self.conn.sender.connect.clone();
        let mut result = Ok(());
        // Every destination is asked, each on its own: one that is down keeps the host out of
        // itself only. The first error is the run's.
        for i in 0..self.routes.len() {
            let d = self.routes[i].destination().clone();
            let answer = match active::announce(&mut self.routes[i], who, deadline, &connect) {
                Ok(a) => a,
                Err(e) => {
                    if result.is_ok() {
                        result = Err(e);
                    }
                    continue;
                }
            };
            match answer {
                Registration::Requested => self.log(&format!(
                    "{d}: host {:?} not known yet: registration requested",
                    who.host
                )),
                Registration::Known if self.verbose => {
                    self.log(&format!("{d}: host {:?} known", who.host))
                }
                Registration::Known => {}
            }
        }
        self.log_moves(&before);
        result.map_err(Into::into)
    }

    fn log(&self, msg: &str) {
        outcome::warn(TOOL, msg);
    }
}

/// Sleep until `due`, reaping children on SIGCHLD; returns the stop signal if one arrives.
fn wait_until(signals: &Signals, due: Instant) -> Option<i32> {
    loop {
        let now = Instant::now();
        if now >= due {
            return None;
        }
        match signals.wait(due - now) {
            Some(Signal::Stop(sig)) => return Some(sig),
            Some(Signal::Child) => {
                signals::reap_children();
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_words_and_numbers() {
        assert_eq!(state_value("up").unwrap(), "1");
        assert_eq!(state_value("DOWN").unwrap(), "0");
        assert_eq!(state_value("2").unwrap(), "2");
        assert!(state_value("0.5").is_err());
        assert!(state_value("-1").is_err());
        assert!(state_value("NaN").is_err());
        assert!(state_value("alive").is_err());
    }

    #[test]
    fn every_has_a_floor_of_100ms() {
        assert_eq!(parse_every("100ms"), Ok(MIN_EVERY));
        assert_eq!(parse_every("10s"), Ok(Duration::from_secs(10)));
        for short in ["99ms", "1ms", "0.05"] {
            let e = parse_every(short).unwrap_err();
            assert!(e.contains("below the minimum of 100ms"), "{short}: {e}");
        }
        assert!(parse_every("0s").is_err());
    }
}
