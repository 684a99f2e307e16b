//! The one mapping from errors to failure codes and exit statuses.
//!
//! A Zabbix agent ignores exit statuses and stores whatever the command prints, so the tools
//! that feed an item print exactly one line on stdout: the elapsed seconds on success, or a
//! failure code ≤ 0 that a trigger can show. Shells and pipelines get exit status 0 (success),
//! 1 (failure) or 2 (partial, as `zabbix_sender`). Every tool ends through [`finish`].
//!
//! # Adding an error type
//!
//! 1. Write the type with `Debug`, a one-line `Display` and `std::error::Error`. Text that came
//!    from a peer or a document goes through [`crate::text::shown`].
//! 2. `impl Classify for TheError`: match every variant (no catch-all `_ =>` arm), so a later
//!    variant must be classed too. Pick an existing [`Failure`]; a new class needs a code of
//!    its own (the tests compare every pair), a place in [`Failure::ALL`] and a line in the
//!    README's table.
//! 3. Return it with `?` from anything that returns [`Result`]. [`Context::context`] adds
//!    words to the message and keeps the class.
//!
//! [`Error`] is only built from a type that implements [`Classify`], so `?` on an error
//! without a class does not compile: nothing ends up as "internal error" by accident.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::text;

/// A class of failure, with its code (printed as the item value) and exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    /// Something failed that no argument or peer explains (a bug, or the system itself).
    Internal,
    /// A container engine or orchestrator command (docker-compose, docker, kubectl) failed.
    Engine,
    /// The TLS handshake with Zabbix failed (for PSK: unknown identity or wrong key).
    TlsHandshake,
    /// The server's certificate does not chain to the CA file (or is revoked or expired).
    TlsUntrusted,
    /// The server's certificate issuer or subject is not the one required.
    TlsMismatch,
    /// The PSK file cannot be read or does not hold a valid key.
    TlsPsk,
    /// Zabbix refused the connection type for the host: an unencrypted connection to a host
    /// that accepts only PSK or certificates, say (told by the server's reply).
    ConnectionTypeRefused,
}

impl Failure {
    /// Every class, in code order, for `--help` and the README.
    pub const ALL: [Failure; 15] = [
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
        Failure::TlsHandshake,
        Failure::TlsUntrusted,
        Failure::TlsMismatch,
        Failure::TlsPsk,
        Failure::ConnectionTypeRefused,
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
            Failure::TlsHandshake => -10,
            Failure::TlsUntrusted => -11,
            Failure::TlsMismatch => -12,
            Failure::TlsPsk => -13,
            Failure::ConnectionTypeRefused => -14,
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
            Failure::TlsHandshake => "TLS handshake failed (PSK: identity or key)",
            Failure::TlsUntrusted => "server certificate not trusted",
            Failure::TlsMismatch => "server certificate issuer or subject mismatch",
            Failure::TlsPsk => "PSK file unreadable or malformed",
            Failure::ConnectionTypeRefused => {
                "the server refused this connection type for the host (e.g. unencrypted)"
            }
        }
    }

    /// The classes a tool that collects and delivers values can end with (courier).
    pub const DELIVERY: [Failure; 14] = [
        Failure::NothingToSend,
        Failure::SourceUnreachable,
        Failure::SourceUnparsable,
        Failure::ZabbixUnreachable,
        Failure::Partial,
        Failure::ZabbixRefused,
        Failure::DeadlineExceeded,
        Failure::Usage,
        Failure::Internal,
        Failure::TlsHandshake,
        Failure::TlsUntrusted,
        Failure::TlsMismatch,
        Failure::TlsPsk,
        Failure::ConnectionTypeRefused,
    ];

    /// The classes a tool that only sends to Zabbix can end with (heartbeat).
    pub const SENDING: [Failure; 11] = [
        Failure::ZabbixUnreachable,
        Failure::Partial,
        Failure::ZabbixRefused,
        Failure::DeadlineExceeded,
        Failure::Usage,
        Failure::Internal,
        Failure::TlsHandshake,
        Failure::TlsUntrusted,
        Failure::TlsMismatch,
        Failure::TlsPsk,
        Failure::ConnectionTypeRefused,
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

/// An error that states its own failure class: the only kind [`Error`] is made from.
pub trait Classify: std::error::Error + Send + Sync + 'static {
    /// The class, hence the failure code and exit status, a run that ends with this error gets.
    fn failure(&self) -> Failure;
}

/// Why a run ended early: a classed error, with the contexts added on its way up.
///
/// It deliberately implements neither [`Classify`] nor `std::error::Error`, so it cannot be
/// wrapped again and lose its class. A classed error converts with `?`:
///
/// ```
/// use concierge_core::outcome::{Context, Failure, Result, UsageError};
///
/// fn check(n: u32) -> Result<u32> {
///     if n == 0 {
///         return Err(UsageError("--step must be at least 1".into()).into());
///     }
///     Ok(n)
/// }
///
/// fn run() -> Result<u32> {
///     check(0).context("reading --step")
/// }
///
/// let e = run().unwrap_err();
/// assert_eq!(e.failure(), Some(Failure::Usage));
/// assert_eq!(e.to_string(), "reading --step: --step must be at least 1");
/// ```
///
/// An error that states no class does not:
///
/// ```compile_fail
/// fn run() -> concierge_core::outcome::Result<Vec<u8>> {
///     Ok(std::fs::read("/etc/hostname")?) // io::Error has no class
/// }
/// ```
pub struct Error {
    end: End,
    inner: anyhow::Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Failed(Failure),
    /// The reader of stdout went away (`| head`): not a failure, as in ripgrep and hyperfine.
    StdoutClosed,
}

/// The result every tool's `run` returns.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl<E: Classify> From<E> for Error {
    fn from(e: E) -> Self {
        Error {
            end: End::Failed(e.failure()),
            inner: anyhow::Error::new(e),
        }
    }
}

impl Error {
    /// The class of the failure; `None` when the run only stopped because stdout was closed.
    pub fn failure(&self) -> Option<Failure> {
        match self.end {
            End::Failed(f) => Some(f),
            End::StdoutClosed => None,
        }
    }

    /// The same error, its message preceded by `context` (`context: message`).
    pub fn context<C>(self, context: C) -> Self
    where
        C: fmt::Display + Send + Sync + 'static,
    {
        Error {
            end: self.end,
            inner: self.inner.context(context),
        }
    }

    /// An error writing the tool's own output: a closed pipe ends the run quietly with exit
    /// status 0; anything else is a failure.
    pub fn output(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Error {
                end: End::StdoutClosed,
                inner: anyhow::Error::new(e),
            }
        } else {
            SystemError {
                doing: "write to stdout",
                error: e,
            }
            .into()
        }
    }
}

impl fmt::Display for Error {
    /// Every context and the error, outermost first, joined with ": ".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.inner)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {:#}", self.end, self.inner)
    }
}

/// Adds words to an error on its way up, keeping its class (as anyhow's `Context`, for
/// [`Error`]).
pub trait Context<T> {
    /// `context: error`.
    fn context<C>(self, context: C) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static;

    /// As [`Context::context`], the words made only when there is an error.
    fn with_context<C, F>(self, context: F) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> C;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context<C>(self, context: C) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
    {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C, F>(self, context: F) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> C,
    {
        self.map_err(|e| e.into().context(context()))
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

impl Classify for UsageError {
    fn failure(&self) -> Failure {
        Failure::Usage
    }
}

/// The source held nothing to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NothingToSend(pub String);

impl fmt::Display for NothingToSend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NothingToSend {}

impl Classify for NothingToSend {
    fn failure(&self) -> Failure {
        Failure::NothingToSend
    }
}

/// The system refused what no argument or peer explains: writing stdout (other than a
/// closed pipe, see [`Error::output`]), blocking signals.
#[derive(Debug)]
pub struct SystemError {
    /// What was refused, as in "cannot {doing}".
    pub doing: &'static str,
    pub error: io::Error,
}

impl fmt::Display for SystemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SystemError { doing, error } = self;
        write!(f, "cannot {doing}: {error}")
    }
}

impl std::error::Error for SystemError {}

impl Classify for SystemError {
    fn failure(&self) -> Failure {
        Failure::Internal
    }
}

/// How a tool talks to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// Exactly one line on stdout: the seconds since `started`, or a failure code (courier,
    /// heartbeat).
    ValueLine { started: Instant },
    /// The tool prints its own output on success and nothing on failure (discover, scale,
    /// setup).
    Document,
}

/// Format elapsed seconds for the value line: six decimals, never `0.000000`.
pub fn format_elapsed(d: Duration) -> String {
    format!("{:.6}", d.as_secs_f64().max(0.000001))
}

/// End the run: print the value line (for [`Contract::ValueLine`]) and the error as one line
/// on stderr, and return the exit status of the error's class. A closed stdout ends quietly
/// with status 0.
pub fn finish(tool: &str, contract: Contract, result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => {
            if let Contract::ValueLine { started } = contract {
                print_line(&format_elapsed(started.elapsed()));
            }
            ExitCode::SUCCESS
        }
        Err(err) => match err.end {
            End::StdoutClosed => ExitCode::SUCCESS,
            End::Failed(failure) => fail(tool, contract, failure, &err.to_string()),
        },
    }
}

/// Report a failure of class `failure` with `message`, and return its exit status.
fn fail(tool: &str, contract: Contract, failure: Failure, message: &str) -> ExitCode {
    if let Contract::ValueLine { .. } = contract {
        print_line(&failure.code().to_string());
    }
    warn(tool, message);
    ExitCode::from(failure.exit_status())
}

/// One line on stderr, `tool: message`: line breaks become spaces, other control characters
/// are escaped, and the line is cut to [`text::MAX_LINE`] characters.
pub fn warn(tool: &str, message: impl fmt::Display) {
    let message = message.to_string().replace(['\r', '\n'], " ");
    let line = text::Shown::new(&message, text::MAX_LINE);
    let _ = writeln!(io::stderr(), "{tool}: {line}");
}

/// Parse the command line. A usage error prints one line (and the value line's code) and
/// gives exit status 1, `--help`/`--version` print and give 0: never clap's exit status 2,
/// which would read as "partial" to a caller. `Err` is the exit status for `main` to return.
pub fn parse_args<C: clap::Parser>(tool: &str, contract: Contract) -> Result<C, ExitCode> {
    parse_args_from(tool, contract, std::env::args_os())
}

/// As [`parse_args`], from `args` (the first one is the program's name).
pub fn parse_args_from<C, I, T>(tool: &str, contract: Contract, args: I) -> Result<C, ExitCode>
where
    C: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    C::try_parse_from(args).map_err(|e| {
        use clap::error::ErrorKind;
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            // A closed stdout (`--help | head -1`) is no reason to fail.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        fail(tool, contract, Failure::Usage, &usage_message(&e))
    })
}

/// clap's error as one line: its first paragraph, and the tips ("a similar argument exists:
/// '--max'") that follow it, without the usage and the pointer to `--help` (said once).
pub fn usage_message(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut paragraphs = rendered.split("\n\n").map(|p| {
        p.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    });
    let first = paragraphs.next().unwrap_or_default();
    let first = match first.trim_start_matches("error: ") {
        "" => "invalid arguments",
        f => f,
    };
    let tips: Vec<String> = paragraphs.filter(|p| p.starts_with("tip:")).collect();
    if tips.is_empty() {
        format!("{first} (see --help)")
    } else {
        format!("{first} ({}; see --help)", tips.join("; "))
    }
}

fn print_line(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn every_code_is_unique_and_non_positive() {
        let mut seen = BTreeMap::new();
        for f in Failure::ALL {
            assert!(f.code() <= 0, "{f:?}");
            if let Some(other) = seen.insert(f.code(), f) {
                panic!("{f:?} and {other:?} share code {}", f.code());
            }
        }
        // ALL really holds every class: each appears once.
        let classes: std::collections::BTreeSet<_> = Failure::ALL.into_iter().collect();
        assert_eq!(classes.len(), Failure::ALL.len());
        assert_eq!(Failure::Partial.exit_status(), 2);
        assert_eq!(Failure::ZabbixUnreachable.exit_status(), 1);
    }

    #[test]
    fn context_keeps_the_class_and_shows_in_the_message() {
        let e: Result<()> = Err(UsageError("bad".into())).context("outer");
        let e = e.unwrap_err().context("outermost");
        assert_eq!(e.failure(), Some(Failure::Usage));
        assert_eq!(e.to_string(), "outermost: outer: bad");
        let e: Result<()> = Err(NothingToSend("empty".into())).with_context(|| "reading x");
        assert_eq!(e.unwrap_err().failure(), Some(Failure::NothingToSend));
    }

    #[test]
    fn a_closed_pipe_is_no_failure_but_other_output_errors_are() {
        let closed = Error::output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(closed.failure(), None);
        let full = Error::output(io::Error::from_raw_os_error(28));
        assert_eq!(full.failure(), Some(Failure::Internal));
        assert!(full.to_string().starts_with("cannot write to stdout: "));
    }

    #[derive(Debug, clap::Parser)]
    struct Args {
        #[arg(long)]
        max: Option<u32>,
        #[arg(long)]
        verbose: bool,
        name: String,
    }

    #[test]
    fn clap_errors_become_one_line_with_their_tip() {
        let e = <Args as clap::Parser>::try_parse_from(["t", "x", "--verbos"]).unwrap_err();
        assert_eq!(
            usage_message(&e),
            "unexpected argument '--verbos' found (tip: a similar argument exists: '--verbose'; \
             see --help)"
        );
        let e = <Args as clap::Parser>::try_parse_from(["t"]).unwrap_err();
        let msg = usage_message(&e);
        assert!(
            msg.starts_with("the following required arguments were not provided: <NAME>"),
            "{msg}"
        );
        assert!(msg.ends_with("(see --help)"), "{msg}");
        assert!(!msg.contains("Usage:"), "{msg}");
    }

    #[test]
    fn help_and_usage_errors_are_exit_statuses_not_exits() {
        let ok = parse_args_from::<Args, _, _>("t", Contract::Document, ["t", "x"]).unwrap();
        assert_eq!(ok.name, "x");
        let usage = parse_args_from::<Args, _, _>("t", Contract::Document, ["t"]).unwrap_err();
        assert_eq!(usage, ExitCode::from(1));
        let help = parse_args_from::<Args, _, _>("t", Contract::Document, ["t", "-h"]);
        assert_eq!(help.unwrap_err(), ExitCode::SUCCESS);
    }

    #[test]
    fn elapsed_is_never_zero() {
        assert_eq!(format_elapsed(Duration::ZERO), "0.000001");
        assert_eq!(format_elapsed(Duration::from_micros(4213)), "0.004213");
    }
}
