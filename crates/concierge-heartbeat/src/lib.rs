//! concierge-heartbeat: tell Zabbix a container is alive.
//!
//! One shot, it sends `container.state` once and prints the elapsed seconds (or a failure code),
//! like the courier. With `--every`, it runs as a coprocess: a beat of 1 on a fixed cadence, kept
//! up through Zabbix outages, and a 0 when the container stops (SIGTERM/SIGINT) — the talk's
//! `postStop` built in — so `nodata()` and "state is 0" triggers see dead containers.

pub mod schedule;

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use concierge_core::cli::{self, Connection, ConnectionArgs};
use concierge_core::deadline::Deadline;
use concierge_core::outcome::{Failure, UsageError};
use concierge_core::signals::{self, Signal, Signals};
use concierge_core::system;
use concierge_core::zabbix::active::{self, Announcement, Registration, MAX_METADATA_CHARS};
use concierge_core::zabbix::key;
use concierge_core::zabbix::sender::{self, DeliveryError, Summary, Timestamp, Value};

use schedule::Schedule;

/// The tool's name in messages.
pub const TOOL: &str = "concierge-heartbeat";

/// The item key of the talk's heartbeat.
pub const DEFAULT_KEY: &str = "container.state";

/// Longest time the goodbye (the 0 on stop) may take, so a 10 s stop timeout is never reached.
pub const GOODBYE_BUDGET: Duration = Duration::from_secs(3);

/// Command line of concierge-heartbeat.
#[derive(Debug, Parser)]
#[command(
    name = TOOL,
    version,
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

    /// Run as a coprocess: beat on this cadence (10s, 2s, 500ms) until SIGTERM or SIGINT,
    /// then send 0 and exit.
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
    pub every: Option<Duration>,

    /// Announce the host to Zabbix (active-checks request) so autoregistration actions create
    /// it: before the first beat, then every --register-every, and again when Zabbix stops
    /// knowing the host.
    #[arg(long)]
    pub register: bool,

    /// Host metadata for autoregistration actions to match (default: HostMetadata from -c).
    #[arg(long, value_name = "TEXT", requires = "register")]
    pub metadata: Option<String>,

    /// IP or DNS name for the registered host's agent interface (default: the connection's
    /// source address as the server sees it).
    #[arg(long, value_name = "ADDRESS", requires = "register")]
    pub interface: Option<String>,

    /// With --every --register: how often to announce again.
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration, default_value = "60s")]
    pub register_every: Duration,

    /// Log every beat on stderr, not only changes.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

fn after_help() -> String {
    format!(
        "{}\nWith --every nothing is printed on stdout; problems and recoveries go to stderr,\n\
         and the exit status is 0 once the 0 was delivered on stop.\n\
         Host name: -s, else Hostname from -c, else the system host name extended with the\n\
         container id (unique per container even with network_mode: host).",
        Failure::help_table(&Failure::SENDING)
    )
}

impl Cli {
    /// True when the run is a coprocess (no value line on stdout).
    pub fn is_coprocess(&self) -> bool {
        self.every.is_some()
    }
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
    key: String,
    value: String,
    announcement: Option<Announcement>,
    verbose: bool,
}

/// Run one shot or the coprocess, as the command line says.
pub fn run(cli: &Cli, started: Instant) -> anyhow::Result<()> {
    // Signals must be blocked before any thread exists, so every thread inherits the mask.
    let signals = match cli.every {
        Some(_) => Some(Signals::block().context("cannot block stop signals")?),
        None => None,
    };
    let heart = prepare(cli, started)?;
    match (cli.every, signals) {
        (Some(period), Some(signals)) => heart.beat_every(period, cli.register_every, &signals),
        _ => heart.once(),
    }
}

fn prepare(cli: &Cli, started: Instant) -> anyhow::Result<Heart> {
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
    Ok(Heart {
        conn,
        key: cli.key.clone(),
        value,
        announcement,
        verbose: cli.verbose,
    })
}

impl Heart {
    /// Send the value once (after registering, if asked) inside the run's deadline.
    fn once(&self) -> anyhow::Result<()> {
        if let Some(a) = &self.announcement {
            self.announce(a, &self.conn.deadline)?;
        }
        self.send(&self.value, &self.conn.deadline)?;
        Ok(())
    }

    /// Beat until a stop signal, then say goodbye with a 0.
    fn beat_every(
        &self,
        period: Duration,
        register_every: Duration,
        signals: &Signals,
    ) -> anyhow::Result<()> {
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
            if let Some(a) = &self.announcement {
                if last_announce.is_none_or(|t| t.elapsed() >= register_every) {
                    last_announce = Some(Instant::now());
                    if let Err(e) = self.announce(a, &deadline) {
                        self.log(&format!("registration failed: {e:#}"));
                    }
                }
            }
            match self.send(&self.value, &deadline) {
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

    /// Send 0 and report whether it arrived.
    fn goodbye(&self, sig: i32) -> anyhow::Result<()> {
        self.log(&format!("signal {sig}: sending {}=0", self.key));
        let budget = self.conn.deadline.budget().min(GOODBYE_BUDGET);
        let summary = self
            .send("0", &Deadline::after(budget))
            .context("the stop state (0) was not delivered")?;
        if self.verbose {
            self.log(&format!("goodbye: {summary}"));
        }
        Ok(())
    }

    fn send(&self, value: &str, deadline: &Deadline) -> Result<Summary, DeliveryError> {
        let v = [Value {
            host: self.conn.host.clone(),
            key: self.key.clone(),
            value: value.to_string(),
            clock: Some(Timestamp::now()),
        }];
        match sender::send(&self.conn.destinations, &v, deadline, &self.conn.sender) {
            Ok(delivery) => delivery.into_result(),
            Err(e) => Err(DeliveryError::Failed(sender::SendError::Transport(e))),
        }
    }

    fn announce(&self, who: &Announcement, deadline: &Deadline) -> anyhow::Result<()> {
        for d in &self.conn.destinations {
            match active::announce(d, who, deadline, &self.conn.sender.connect)? {
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
        Ok(())
    }

    fn log(&self, msg: &str) {
        let _ = writeln!(std::io::stderr(), "{TOOL}: {msg}");
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
}
