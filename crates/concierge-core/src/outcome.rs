//! The one mapping from errors to failure codes and exit statuses.
//!
//! A Zabbix agent ignores exit statuses and stores whatever the command prints, so the tools
//! that feed an item print exactly one line on stdout: the elapsed seconds on success, or a
//! failure code ≤ 0 that a trigger can show. Shells and pipelines get exit status 0 (success),
//! 1 (failure) or 2 (partial, as `zabbix_sender`). Every tool ends through this module.

use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use crate::agent_config::ConfigError;
use crate::metrics::dropwizard::ParseError;
use crate::metrics::UnknownKind;
use crate::source::SourceError;
use crate::zabbix::api::ApiError;
use crate::zabbix::destination::DestinationError;
use crate::zabbix::input::InputError;
use crate::zabbix::key::KeyError;
use crate::zabbix::sender::{DeliveryError, SendError};
use crate::zabbix::transport::TransportError;

/// A class of failure, with its code (printed as the item value) and exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The source held no values to deliver.
    NothingToSend,
    /// The metrics source could not be read (connection refused, HTTP error, missing file).
    SourceUnreachable,
    /// The metrics source (or input file) could not be parsed.
    SourceUnparsable,
    /// No Zabbix destination could be reached.
    ZabbixUnreachable,
    /// Zabbix refused some values, or some destinations failed while others took the data.
    Partial,
    /// Zabbix refused the request, or answered with something that is not a valid reply.
    ZabbixRefused,
    /// The run's deadline passed before it finished.
    DeadlineExceeded,
    /// Invalid arguments or configuration.
    Usage,
    /// A bug: an error no class was made for.
    Internal,
    /// A container engine or orchestrator command (docker-compose, docker, kubectl) failed.
    Engine,
}

impl Failure {
    /// Every class, in code order, for `--help` and the README.
    pub const ALL: [Failure; 10] = [
        Failure::NothingToSend,
        Failure::SourceUnreachable,
        Failure::SourceUnparsable,
        Failure::ZabbixUnreachable,
        Failure::Partial,
        Failure::ZabbixRefused,
        Failure::DeadlineExceeded,
        Failure::Usage,
        Failure::Internal,
        Failure::Engine,
    ];

    /// The code printed on stdout (always ≤ 0).
    pub fn code(self) -> i32 {
        match self {
            Failure::NothingToSend => 0,
            Failure::SourceUnreachable => -1,
            Failure::SourceUnparsable => -2,
            Failure::ZabbixUnreachable => -3,
            Failure::Partial => -4,
            Failure::ZabbixRefused => -5,
            Failure::DeadlineExceeded => -6,
            Failure::Usage => -7,
            Failure::Internal => -8,
            Failure::Engine => -9,
        }
    }

    /// The process exit status: 2 for a partial delivery, 1 for every other failure.
    pub fn exit_status(self) -> u8 {
        match self {
            Failure::Partial => 2,
            _ => 1,
        }
    }

    /// What the code means, in a few words.
    pub fn meaning(self) -> &'static str {
        match self {
            Failure::NothingToSend => "nothing to send",
            Failure::SourceUnreachable => "metrics source unreachable",
            Failure::SourceUnparsable => "metrics source unparsable",
            Failure::ZabbixUnreachable => "no Zabbix destination reachable",
            Failure::Partial => "Zabbix refused some values (partial)",
            Failure::ZabbixRefused => "Zabbix refused the request or sent an invalid reply",
            Failure::DeadlineExceeded => "deadline exceeded",
            Failure::Usage => "invalid arguments or configuration",
            Failure::Internal => "internal error",
            Failure::Engine => "container engine command failed",
        }
    }

    /// The classes a tool that collects and delivers values can end with (courier).
    pub const DELIVERY: [Failure; 9] = [
        Failure::NothingToSend,
        Failure::SourceUnreachable,
        Failure::SourceUnparsable,
        Failure::ZabbixUnreachable,
        Failure::Partial,
        Failure::ZabbixRefused,
        Failure::DeadlineExceeded,
        Failure::Usage,
        Failure::Internal,
    ];

    /// The classes a tool that only sends to Zabbix can end with (heartbeat).
    pub const SENDING: [Failure; 6] = [
        Failure::ZabbixUnreachable,
        Failure::Partial,
        Failure::ZabbixRefused,
        Failure::DeadlineExceeded,
        Failure::Usage,
        Failure::Internal,
    ];

    /// The code table as `--help` shows it, for the classes a tool can end with.
    pub fn help_table(classes: &[Failure]) -> String {
        let mut s =
            String::from("Output: elapsed seconds (> 0) on success, else a failure code:\n");
        for &f in classes {
            s.push_str(&format!(
                "  {:>3}  {} (exit {})\n",
                f.code(),
                f.meaning(),
                f.exit_status()
            ));
        }
        s
    }
}

/// An invalid argument or setting, found after argument parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The source held nothing to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NothingToSend(pub String);

impl fmt::Display for NothingToSend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NothingToSend {}

/// Classify an error by the first typed error in its chain.
pub fn classify(err: &anyhow::Error) -> Failure {
    for cause in err.chain() {
        if let Some(f) = classify_one(cause) {
            return f;
        }
    }
    Failure::Internal
}

fn classify_one(e: &(dyn std::error::Error + 'static)) -> Option<Failure> {
    if let Some(e) = e.downcast_ref::<DeliveryError>() {
        return Some(match e {
            DeliveryError::Partial { .. } => Failure::Partial,
            DeliveryError::Failed(e) => classify_send(e),
        });
    }
    if let Some(e) = e.downcast_ref::<SendError>() {
        return Some(classify_send(e));
    }
    if let Some(e) = e.downcast_ref::<TransportError>() {
        return Some(classify_transport(e));
    }
    if let Some(e) = e.downcast_ref::<SourceError>() {
        return Some(if e.is_timeout() {
            Failure::DeadlineExceeded
        } else {
            Failure::SourceUnreachable
        });
    }
    if let Some(e) = e.downcast_ref::<ApiError>() {
        return Some(match e {
            ApiError::Http { .. } => Failure::ZabbixUnreachable,
            ApiError::BadReply { .. } | ApiError::Api { .. } => Failure::ZabbixRefused,
        });
    }
    if e.is::<ParseError>() || e.is::<InputError>() {
        return Some(Failure::SourceUnparsable);
    }
    if e.is::<NothingToSend>() {
        return Some(Failure::NothingToSend);
    }
    if e.is::<UsageError>()
        || e.is::<ConfigError>()
        || e.is::<DestinationError>()
        || e.is::<KeyError>()
        || e.is::<UnknownKind>()
        || e.is::<clap::Error>()
    {
        return Some(Failure::Usage);
    }
    None
}

fn classify_send(e: &SendError) -> Failure {
    match e {
        SendError::Transport(t) => classify_transport(t),
        SendError::Refused { .. } => Failure::ZabbixRefused,
    }
}

fn classify_transport(e: &TransportError) -> Failure {
    match e {
        TransportError::Unreachable { .. } => Failure::ZabbixUnreachable,
        TransportError::Timeout { .. } => Failure::DeadlineExceeded,
        TransportError::Protocol { .. } | TransportError::Request(_) => Failure::ZabbixRefused,
    }
}

/// How a tool talks to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// Exactly one line on stdout: elapsed seconds, or a failure code (courier, heartbeat).
    ValueLine,
    /// The tool prints its own output on success and nothing on failure (discover, scale).
    Document,
}

/// Format elapsed seconds for the value line: six decimals, never `0.000000`.
pub fn format_elapsed(d: Duration) -> String {
    format!("{:.6}", d.as_secs_f64().max(0.000001))
}

/// End the run: print the value line (for [`Contract::ValueLine`]), the error as one line on
/// stderr, and return the exit status.
pub fn finish(
    tool: &str,
    contract: Contract,
    elapsed: impl FnOnce() -> Duration,
    result: anyhow::Result<()>,
) -> ExitCode {
    match result {
        Ok(()) => {
            if contract == Contract::ValueLine {
                print_line(&format_elapsed(elapsed()));
            }
            ExitCode::SUCCESS
        }
        Err(err) => fail(tool, contract, classify(&err), &format!("{err:#}")),
    }
}

/// Report a failure of class `failure` with `message`, and return its exit status.
pub fn fail(tool: &str, contract: Contract, failure: Failure, message: &str) -> ExitCode {
    if contract == Contract::ValueLine {
        print_line(&failure.code().to_string());
    }
    let one_line = message.replace('\n', " ");
    let _ = writeln!(std::io::stderr(), "{tool}: {one_line}");
    ExitCode::from(failure.exit_status())
}

/// Parse the command line; on a usage error print one line (and the value line's code) and
/// exit 1, on `--help`/`--version` print them and exit 0. Never clap's exit status 2, which
/// would read as "partial" to a caller.
pub fn parse_args<C: clap::Parser>(tool: &str, contract: Contract) -> C {
    match C::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            let rendered = e.render().to_string();
            // The first paragraph: "…were not provided:" continues on the next lines.
            let first = rendered
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let first = match first.trim_start_matches("error: ") {
                "" => "invalid arguments",
                f => f,
            };
            let _ = fail(
                tool,
                contract,
                Failure::Usage,
                &format!("{first} (see --help)"),
            );
            std::process::exit(i32::from(Failure::Usage.exit_status()));
        }
    }
}

fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn codes_are_unique_and_non_positive() {
        let mut codes: Vec<i32> = Failure::ALL.iter().map(|f| f.code()).collect();
        assert!(codes.iter().all(|c| *c <= 0));
        codes.dedup();
        assert_eq!(codes.len(), Failure::ALL.len());
        assert_eq!(Failure::Partial.exit_status(), 2);
        assert_eq!(Failure::ZabbixUnreachable.exit_status(), 1);
    }

    #[test]
    fn classification_looks_through_context() {
        let e = anyhow::Error::new(TransportError::Timeout {
            endpoint: "x".into(),
            phase: "sending to",
        })
        .context("delivering");
        assert_eq!(classify(&e), Failure::DeadlineExceeded);
        let e: anyhow::Result<()> = Err(UsageError("bad".into())).context("outer");
        assert_eq!(classify(&e.unwrap_err()), Failure::Usage);
        assert_eq!(classify(&anyhow::anyhow!("mystery")), Failure::Internal);
    }

    #[test]
    fn elapsed_is_never_zero() {
        assert_eq!(format_elapsed(Duration::ZERO), "0.000001");
        assert_eq!(format_elapsed(Duration::from_micros(4213)), "0.004213");
    }
}
