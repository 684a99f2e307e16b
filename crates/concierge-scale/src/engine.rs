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
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
        write!(f, "invalid service name {:?}: {}", self.name, self.reason)
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

/// Spawns real processes, each limited to `timeout` (killed after it).
#[derive(Debug, Clone)]
pub struct SystemRunner {
    pub timeout: Duration,
    /// Echo each command and its stderr to our stderr.
    pub verbose: bool,
}

impl Runner for SystemRunner {
    fn run(&self, inv: &Invocation) -> Result<Output, EngineError> {
        if self.verbose {
            eprintln!("{}: running: {inv}", crate::TOOL);
        }
        let mut child = Command::new(&inv.program)
            .args(&inv.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| EngineError::Spawn {
                program: inv.program.to_string_lossy().into_owned(),
                reason: e.to_string(),
            })?;
        let out = child.stdout.take().map(drain);
        let err = child.stderr.take().map(drain);
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if started.elapsed() >= self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(EngineError::Spawn {
                        program: inv.program.to_string_lossy().into_owned(),
                        reason: format!("cannot wait for it: {e}"),
                    });
                }
            }
        };
        let stdout = collect(out);
        let stderr = collect(err);
        if self.verbose && !stderr.trim().is_empty() {
            eprint!("{stderr}");
        }
        match status {
            Some(s) => Ok(Output {
                status: s.code(),
                stdout,
                stderr,
            }),
            None => Err(EngineError::TimedOut {
                command: inv.to_string(),
                after: self.timeout,
                stderr: clip(&stderr),
            }),
        }
    }
}

fn drain<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn collect(h: Option<JoinHandle<Vec<u8>>>) -> String {
    h.and_then(|h| h.join().ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
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
                    Some(l) => write!(f, ": {l}"),
                    None => Ok(()),
                }
            }
            EngineError::Unexpected {
                command,
                output,
                why,
            } => write!(f, "`{command}` answered {output:?}: {why}"),
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
        let r = SystemRunner {
            timeout: Duration::from_secs(10),
            verbose: false,
        };
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
        let r = SystemRunner {
            timeout: Duration::from_millis(200),
            verbose: false,
        };
        let started = Instant::now();
        let e = r.run(&Invocation::new("sleep").arg("30")).unwrap_err();
        assert!(matches!(e, EngineError::TimedOut { .. }), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
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
