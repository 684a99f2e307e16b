//! The one trait every container engine implements, and the plumbing they share: argument
//! vectors ([`Invocation`]), running them with a time limit ([`Runner`]), and engine errors.
//!
//! Engines never go through a shell: every program runs from an argument vector, so a service
//! name or a path can never be read as shell syntax.

pub mod compose;
pub mod kubectl;
pub mod swarm;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concierge_core::deadline::Deadline;
use concierge_core::outcome;
use concierge_core::text::{self, shown, Shown};

pub use crate::resources::Limits;

/// Most bytes of an engine's stderr kept for messages and the event log.
pub const MAX_STDERR: usize = 4096;

/// What scales services: docker-compose, `docker compose`, `docker service` or kubectl.
pub trait Engine {
    /// Short name for messages and the event log: `compose-v1`, `compose-v2`, `swarm`,
    /// `kubectl`.
    fn name(&self) -> &'static str;

    /// The current count of `service`: running containers (compose) or replicas (swarm,
    /// kubernetes).
    fn current(&self, runner: &dyn Runner, service: &str) -> Result<u32, EngineError>;

    /// The command that scales `service` to `to`. `from` is the count just read from the
    /// engine, when it could be read (kubectl turns it into a precondition).
    fn scale_invocation(&self, service: &str, to: u32, from: Option<u32>) -> Invocation;

    /// Scale `service` to `to`.
    fn scale(
        &self,
        runner: &dyn Runner,
        service: &str,
        to: u32,
        from: Option<u32>,
    ) -> Result<Output, EngineError> {
        run_ok(runner, &self.scale_invocation(service, to, from))
    }

    /// The service's resource limits as the engine holds them (`concierge-scale resize`).
    fn resources(&self, runner: &dyn Runner, service: &str) -> Result<Resources, EngineError>;

    /// The command that sets the limits `to` asks for (a `None` field is left alone), given
    /// what [`Engine::resources`] found; `None` when there is nothing to run it on (a compose
    /// service without containers).
    fn resize_invocation(&self, service: &str, to: &Limits, now: &Resources) -> Option<Invocation>;

    /// Set the limits `to` asks for; `None` when there was nothing to run it on.
    fn resize(
        &self,
        runner: &dyn Runner,
        service: &str,
        to: &Limits,
        now: &Resources,
    ) -> Result<Option<Output>, EngineError> {
        self.resize_invocation(service, to, now)
            .map(|inv| run_ok(runner, &inv))
            .transpose()
    }

    /// Whether the service's definition holds the limits, so that what it starts later gets
    /// them (swarm's service spec, a Kubernetes pod template). Compose's `docker update`
    /// changes only the containers that exist: concierge-scale then applies the last resize to
    /// the containers its own scalings create.
    fn limits_follow_new_containers(&self) -> bool {
        true
    }
}

/// A service's resource limits, as an engine tells them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// The limits of the whole service; a field is `None` when the engine could not tell one
    /// answer (compose containers that disagree, a quantity not understood), `Some(0)` when
    /// there is no limit.
    pub limits: Limits,
    /// The containers a resize changes (compose), as the engine named them.
    pub containers: Vec<String>,
    /// Why a limit could not be told, for the event log.
    pub note: Option<String>,
}

/// Which engine, as `--engine` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// Docker Compose: v2 (`docker compose`) when `docker compose version` answers, else v1
    /// (`docker-compose`).
    Compose,
    /// Docker Compose v1, `docker-compose`.
    #[value(name = "compose-v1")]
    ComposeV1,
    /// Docker Compose v2, `docker compose`.
    #[value(name = "compose-v2")]
    ComposeV2,
    /// Docker swarm mode, `docker service scale`.
    Swarm,
    /// Kubernetes, `kubectl scale`.
    Kubectl,
}

impl EngineKind {
    /// The family, for the state key: compose v1 and v2 scale the same projects.
    pub fn family(self) -> &'static str {
        match self {
            EngineKind::Compose | EngineKind::ComposeV1 | EngineKind::ComposeV2 => "compose",
            EngineKind::Swarm => "swarm",
            EngineKind::Kubectl => "kubectl",
        }
    }

    /// Check a service name as this engine would accept it, before any engine runs.
    pub fn validate_service(self, name: &str) -> Result<(), ServiceNameError> {
        match self {
            EngineKind::Kubectl => kubectl::validate_resource(name),
            _ => compose::validate_service(name),
        }
    }
}

/// A service name the engine would not accept (or would read as an option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNameError {
    pub name: String,
    pub reason: String,
}

impl fmt::Display for ServiceNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid service name {:?}: {}",
            shown(&self.name),
            self.reason
        )
    }
}

impl std::error::Error for ServiceNameError {}

/// Options of the docker CLI (and of docker-compose v1, which takes the same ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerOptions {
    /// The docker program.
    pub docker: OsString,
    /// The docker-compose (v1) program.
    pub compose_v1: OsString,
    /// `-H`: the daemon socket (DOCKER_HOST).
    pub host: Option<String>,
    /// `--context`.
    pub context: Option<String>,
    /// `--tlsverify`.
    pub tlsverify: bool,
    /// Directory holding ca.pem, cert.pem and key.pem (DOCKER_CERT_PATH).
    pub cert_path: Option<PathBuf>,
}

impl Default for DockerOptions {
    fn default() -> Self {
        Self {
            docker: "docker".into(),
            compose_v1: "docker-compose".into(),
            host: None,
            context: None,
            tlsverify: false,
            cert_path: None,
        }
    }
}

impl DockerOptions {
    /// The global options, in the order docker and docker-compose both take them.
    pub fn global_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        if let Some(h) = &self.host {
            a.push(flag("--host", h));
        }
        if let Some(c) = &self.context {
            a.push(flag("--context", c));
        }
        if self.tlsverify {
            a.push("--tlsverify".into());
        }
        if let Some(dir) = &self.cert_path {
            for (name, file) in [
                ("--tlscacert", "ca.pem"),
                ("--tlscert", "cert.pem"),
                ("--tlskey", "key.pem"),
            ] {
                a.push(flag(name, dir.join(file)));
            }
        }
        a
    }

    /// `docker` with the global options.
    pub fn docker(&self) -> Invocation {
        Invocation::new(&self.docker).args(self.global_args())
    }
}

/// `--name=value` as one argument, so a value that starts with '-' can never be read as an
/// option by the engine.
pub fn flag(name: &str, value: impl AsRef<OsStr>) -> OsString {
    let mut f = OsString::from(name);
    f.push("=");
    f.push(value.as_ref());
    f
}

/// One program and its argument vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub program: OsString,
    pub args: Vec<OsString>,
}

impl Invocation {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
        }
    }

    /// Add one argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    /// Add arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Program and arguments as text (lossy), for the event log.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }
}

impl fmt::Display for Invocation {
    /// Shell-like quoting, for reading only: nothing is ever run through a shell.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.argv().iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+{}".contains(&b));
            if plain {
                f.write_str(a)?;
            } else {
                write!(f, "'{}'", a.replace('\'', r"'\''"))?;
            }
        }
        Ok(())
    }
}

/// What a finished program printed, and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit status; `None` when a signal ended it.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Runs invocations. The system runner spawns processes; tests substitute canned answers.
pub trait Runner {
    /// Run `inv` to completion. `Err` only when it could not be started or did not finish in
    /// time; a non-zero exit is an `Ok` output (see [`run_ok`]).
    fn run(&self, inv: &Invocation) -> Result<Output, EngineError>;

    /// What is left of the call's engine budget, when the runner has one (the lock wait
    /// shares it).
    fn time_left(&self) -> Option<Duration> {
        None
    }
}

/// Run `inv` and require exit status 0.
pub fn run_ok(runner: &dyn Runner, inv: &Invocation) -> Result<Output, EngineError> {
    let out = runner.run(inv)?;
    if out.success() {
        Ok(out)
    } else {
        Err(EngineError::Failed {
            command: inv.to_string(),
            status: out.status,
            stderr: clip(&out.stderr),
        })
    }
}

/// How long the output pipes may stay open once the engine's process group was killed (a
/// descendant that left the group can hold them): then they are abandoned.
const PIPE_GRACE: Duration = Duration::from_millis(200);

/// How long the pipes may stay open after the engine exited by itself before its group is
/// killed (a well-behaved engine closes them as it exits).
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Spawns real processes, every one inside one budget for the whole call (`--engine-timeout`).
/// Each runs in a process group of its own, and the whole group is killed when the budget
/// runs out, so an engine's children die with it; pipes that a runaway descendant keeps open
/// are abandoned, never waited for.
#[derive(Debug, Clone)]
pub struct SystemRunner {
    /// The budget, as given (for messages).
    pub timeout: Duration,
    /// When the budget ends.
    pub deadline: Deadline,
    /// Echo each command and its stderr to our stderr.
    pub verbose: bool,
}

impl SystemRunner {
    /// A runner whose budget of `timeout` starts now.
    pub fn new(timeout: Duration, verbose: bool) -> Self {
        Self {
            timeout,
            deadline: Deadline::after(timeout),
            verbose,
        }
    }
}

/// A pipe read on a thread into a shared buffer, so that what came is kept even when the
/// pipe is abandoned.
struct Drain {
    buf: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Drain {
    fn start<R: Read + Send + 'static>(mut r: R) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = mpsc::channel();
        let shared = Arc::clone(&buf);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut b = shared.lock().unwrap_or_else(|e| e.into_inner());
                        // Keep a bounded amount: messages use MAX_STDERR of it.
                        if b.len() < 16 * MAX_STDERR {
                            b.extend_from_slice(&chunk[..n]);
                        }
                    }
                }
            }
            let _ = tx.send(());
        });
        Self { buf, done }
    }

    /// Wait until the pipe closes or `limit` passes; true if it closed.
    fn wait(&self, limit: Duration) -> bool {
        !matches!(
            self.done.recv_timeout(limit),
            Err(mpsc::RecvTimeoutError::Timeout)
        )
    }

    fn text(&self) -> String {
        let b = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&b).into_owned()
    }
}

/// SIGKILL every process of the group `pgid` (the engine and what it started).
fn kill_group(pgid: u32) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

impl Runner for SystemRunner {
    fn run(&self, inv: &Invocation) -> Result<Output, EngineError> {
        if self.verbose {
            outcome::warn(crate::TOOL, format_args!("running: {inv}"));
        }
        let timed_out = |stderr: String| EngineError::TimedOut {
            command: inv.to_string(),
            after: self.timeout,
            stderr: clip(&stderr),
        };
        if self.deadline.expired() {
            return Err(timed_out(String::new()));
        }
        let mut child = Command::new(&inv.program)
            .args(&inv.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| EngineError::Spawn {
                program: inv.program.to_string_lossy().into_owned(),
                reason: e.to_string(),
            })?;
        let pgid = child.id();
        let out = child.stdout.take().map(Drain::start);
        let err = child.stderr.take().map(Drain::start);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if self.deadline.expired() => {
                    kill_group(pgid);
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    kill_group(pgid);
                    let _ = child.wait();
                    return Err(EngineError::Spawn {
                        program: inv.program.to_string_lossy().into_owned(),
                        reason: format!("cannot wait for it: {e}"),
                    });
                }
            }
        };
        // The engine ended; its output is complete when its pipes close, which something it
        // left behind may prevent: wait for them a moment (within the budget), then kill the
        // group and wait a last moment.
        let pipes = [&out, &err];
        let grace = match status {
            Some(_) => self.deadline.remaining().min(EXIT_GRACE).max(PIPE_GRACE),
            None => PIPE_GRACE,
        };
        let mut closed = pipes
            .iter()
            .all(|p| p.as_ref().is_none_or(|d| d.wait(grace)));
        if !closed {
            kill_group(pgid);
            closed = pipes
                .iter()
                .all(|p| p.as_ref().is_none_or(|d| d.wait(PIPE_GRACE)));
        }
        let text = |d: &Option<Drain>| d.as_ref().map(Drain::text).unwrap_or_default();
        let (stdout, stderr) = (text(&out), text(&err));
        if self.verbose {
            pass_through(&stderr);
        }
        match status {
            // A leftover that held the pipes past the budget makes the result untrustworthy.
            Some(s) if closed || s.success() => Ok(Output {
                status: s.code(),
                stdout,
                stderr,
            }),
            _ => Err(timed_out(stderr)),
        }
    }

    fn time_left(&self) -> Option<Duration> {
        Some(self.deadline.remaining())
    }
}

/// An engine's stderr on ours, line by line, control characters escaped.
pub fn pass_through(stderr: &str) {
    let mut err = std::io::stderr().lock();
    for line in stderr.lines() {
        let _ = writeln!(err, "{}", Shown::new(line, text::MAX_LINE));
    }
}

/// At most [`MAX_STDERR`] bytes of `s` (on a character boundary), trailing space trimmed.
pub fn clip(s: &str) -> String {
    let s = s.trim_end();
    if s.len() <= MAX_STDERR {
        return s.to_string();
    }
    let mut end = MAX_STDERR;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// What went wrong asking an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The program could not be started (not installed, not executable).
    Spawn { program: String, reason: String },
    /// The program did not finish within the engine timeout and was killed.
    TimedOut {
        command: String,
        after: Duration,
        stderr: String,
    },
    /// The program exited non-zero (or was killed by a signal).
    Failed {
        command: String,
        status: Option<i32>,
        stderr: String,
    },
    /// The program answered something that is not what was asked.
    Unexpected {
        command: String,
        output: String,
        why: String,
    },
}

impl EngineError {
    /// The engine's own stderr, to pass through.
    pub fn engine_stderr(&self) -> &str {
        match self {
            EngineError::TimedOut { stderr, .. } | EngineError::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Spawn { program, reason } => {
                write!(f, "cannot run {program}: {reason}")
            }
            EngineError::TimedOut { command, after, .. } => {
                write!(f, "`{command}` did not finish within {after:?}: killed")
            }
            EngineError::Failed {
                command,
                status,
                stderr,
            } => {
                match status {
                    Some(s) => write!(f, "`{command}` failed (exit {s})")?,
                    None => write!(f, "`{command}` was killed by a signal")?,
                }
                match last_line(stderr) {
                    Some(l) => write!(f, ": {}", shown(l)),
                    None => Ok(()),
                }
            }
            EngineError::Unexpected {
                command,
                output,
                why,
            } => write!(f, "`{command}` answered {:?}: {why}", shown(output)),
        }
    }
}

impl std::error::Error for EngineError {}

/// The last non-empty line of an engine's stderr: usually the error itself.
pub fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// Parse a count an engine printed (`3`, `3\n`).
pub fn parse_count(inv: &Invocation, text: &str) -> Result<u32, EngineError> {
    let t = text.trim();
    t.parse::<u32>().map_err(|_| EngineError::Unexpected {
        command: inv.to_string(),
        output: clip(t),
        why: "expected a whole number of replicas".into(),
    })
}

#[cfg(test)]
pub mod testing {
    //! A runner that answers from a script and records what it was asked.

    use super::*;
    use std::cell::RefCell;

    /// Answers invocations in order from `answers`; records every invocation.
    pub struct Scripted {
        pub answers: RefCell<Vec<Result<Output, EngineError>>>,
        pub seen: RefCell<Vec<Invocation>>,
    }

    impl Scripted {
        pub fn new(answers: Vec<Result<Output, EngineError>>) -> Self {
            Self {
                answers: RefCell::new(answers),
                seen: RefCell::new(Vec::new()),
            }
        }

        pub fn seen_args(&self) -> Vec<Vec<String>> {
            self.seen.borrow().iter().map(|i| i.argv()).collect()
        }
    }

    impl Runner for Scripted {
        fn run(&self, inv: &Invocation) -> Result<Output, EngineError> {
            self.seen.borrow_mut().push(inv.clone());
            let mut a = self.answers.borrow_mut();
            assert!(!a.is_empty(), "unexpected invocation {inv}");
            a.remove(0)
        }
    }

    pub fn ok(stdout: &str) -> Result<Output, EngineError> {
        Ok(Output {
            status: Some(0),
            stdout: stdout.into(),
            stderr: String::new(),
        })
    }

    pub fn fail(status: i32, stderr: &str) -> Result<Output, EngineError> {
        Ok(Output {
            status: Some(status),
            stdout: String::new(),
            stderr: stderr.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_global_options_follow_the_talk() {
        let o = DockerOptions {
            host: Some("tcp://127.0.0.1:2376".into()),
            tlsverify: true,
            cert_path: Some("/etc/docker/certs".into()),
            ..Default::default()
        };
        assert_eq!(
            o.docker().arg("ps").argv(),
            [
                "docker",
                "--host=tcp://127.0.0.1:2376",
                "--tlsverify",
                "--tlscacert=/etc/docker/certs/ca.pem",
                "--tlscert=/etc/docker/certs/cert.pem",
                "--tlskey=/etc/docker/certs/key.pem",
                "ps"
            ]
        );
        assert_eq!(
            DockerOptions::default().global_args(),
            Vec::<OsString>::new()
        );
    }

    #[test]
    fn display_quotes_for_reading() {
        let i = Invocation::new("docker-compose").args(["-f", "/tmp/my file.yml", "it's"]);
        assert_eq!(
            i.to_string(),
            r"docker-compose -f '/tmp/my file.yml' 'it'\''s'"
        );
    }

    #[test]
    fn system_runner_captures_status_and_streams() {
        let r = SystemRunner::new(Duration::from_secs(10), false);
        let out = r
            .run(&Invocation::new("ls").arg("/nonexistent-dir"))
            .unwrap();
        assert!(!out.success());
        assert!(out.stderr.contains("nonexistent-dir"), "{out:?}");
        let e = r.run(&Invocation::new("/nonexistent/program")).unwrap_err();
        assert!(matches!(e, EngineError::Spawn { .. }), "{e:?}");
    }

    #[test]
    fn system_runner_kills_after_the_timeout() {
        let r = SystemRunner::new(Duration::from_millis(200), false);
        let started = std::time::Instant::now();
        let e = r.run(&Invocation::new("sleep").arg("30")).unwrap_err();
        assert!(matches!(e, EngineError::TimedOut { .. }), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // The budget is the call's: a second command has none left.
        let e = r.run(&Invocation::new("true")).unwrap_err();
        assert!(matches!(e, EngineError::TimedOut { .. }), "{e:?}");
    }

    #[test]
    fn a_child_holding_the_pipes_does_not_hold_the_call() {
        // The engine starts a child that keeps stdout and stderr open for 30 s (issue 15:
        // the call returned after 40 s for a 2 s timeout), then the engine itself hangs.
        let tmp = tempfile::tempdir().unwrap();
        let script = |name: &str, body: &str| {
            use std::os::unix::fs::PermissionsExt;
            let p = tmp.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let r = SystemRunner::new(Duration::from_millis(500), false);
        let started = std::time::Instant::now();
        let e = r
            .run(&Invocation::new(script("hang", "sleep 30 &\nsleep 30")))
            .unwrap_err();
        assert!(matches!(e, EngineError::TimedOut { .. }), "{e:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // An engine that exits at once but leaves a child holding the pipes.
        let r = SystemRunner::new(Duration::from_millis(500), false);
        let started = std::time::Instant::now();
        let out = r
            .run(&Invocation::new(script("leave", "echo 3\nsleep 30 &")))
            .unwrap();
        assert_eq!((out.status, out.stdout.as_str()), (Some(0), "3\n"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn failures_keep_the_engine_error_line() {
        let e = EngineError::Failed {
            command: "docker-compose up".into(),
            status: Some(1),
            stderr: "Creating x ...\nERROR: No such service: web\n\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "`docker-compose up` failed (exit 1): ERROR: No such service: web"
        );
        assert_eq!(clip(&"é".repeat(5000)).len(), MAX_STDERR + "…".len());
        // The engine's words are shown escaped and cut: they end up in one line.
        let e = EngineError::Failed {
            command: "kubectl get".into(),
            status: Some(1),
            stderr: format!("\u{1b}[31mError: {}\u{1b}[0m\n", "x".repeat(3000)),
        };
        let shown = e.to_string();
        assert!(
            shown.starts_with("`kubectl get` failed (exit 1): \\u{1b}[31mError: xxx"),
            "{shown}"
        );
        assert!(shown.len() < 400, "{shown}");
    }

    #[test]
    fn counts_parse_strictly() {
        let i = Invocation::new("x");
        assert_eq!(parse_count(&i, "3\n").unwrap(), 3);
        for bad in ["", "-1", "3.5", "<no value>", "99999999999"] {
            assert!(parse_count(&i, bad).is_err(), "{bad:?}");
        }
    }
}
