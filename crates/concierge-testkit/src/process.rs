//! Processes: the workspace binaries (refusing stale builds), one-shot runs with their output,
//! coprocesses read while they run, and daemons in a process group of their own that are
//! stopped together with every child they forked.

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The workspace binary `name`, next to the test executable's directory (`target/<profile>/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: build it with cargo build --workspace",
        path.display()
    );
    // `cargo test` builds a member's binary only when that member has integration tests of
    // its own, so an old binary could be tested silently: refuse one older than any source
    // file cargo's dep-info (`<name>.d`) says it was built from.
    if let Some(newer) = newer_dependency(&path) {
        panic!(
            "{} is older than {}: build it with cargo build --workspace",
            path.display(),
            newer.display()
        );
    }
    path
}

/// A file listed in the binary's dep-info that was modified after the binary, if any.
fn newer_dependency(binary: &std::path::Path) -> Option<PathBuf> {
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let mut dep_info = binary.as_os_str().to_owned();
    dep_info.push(".d");
    let text = std::fs::read_to_string(PathBuf::from(dep_info)).ok()?;
    // "<binary>: dep dep ...": spaces inside paths are escaped as "\ ".
    let deps = text
        .lines()
        .next()?
        .split_once(": ")?
        .1
        .replace("\\ ", "\u{0}");
    deps.split_whitespace()
        .map(|d| PathBuf::from(d.replace('\u{0}', " ")))
        .find(|d| {
            std::fs::metadata(d)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m > built)
        })
}

/// What one run of a tool did.
pub struct Run {
    pub command: String,
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` → exit {:?} after {:.3?}\n--- stdout:\n{}--- stderr:\n{}---",
            self.command, self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// The single stdout line of a value-line tool; panics unless there is exactly one.
    pub fn value_line(&self) -> &str {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert!(
            lines.len() == 1 && self.stdout.ends_with('\n'),
            "expected exactly one stdout line:\n{self}"
        );
        lines[0]
    }

    /// Asserts exit status `code` and the value line `line`.
    pub fn assert_code(&self, code: i32, line: &str) {
        assert_eq!(self.code, Some(code), "exit status:\n{self}");
        assert_eq!(self.value_line(), line, "value line:\n{self}");
    }

    /// Asserts a successful value-line run and returns the elapsed seconds it printed.
    pub fn assert_success(&self) -> f64 {
        assert_eq!(self.code, Some(0), "exit status:\n{self}");
        let secs: f64 = self
            .value_line()
            .parse()
            .unwrap_or_else(|_| panic!("value line is not a number:\n{self}"));
        assert!(
            secs > 0.0 && secs.is_finite(),
            "elapsed must be > 0:\n{self}"
        );
        secs
    }
}

impl Run {
    /// Asserts exit status 0; the run, for its output.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "{self}");
        self
    }
}

/// A program started with its output piped (and collected as it comes); [`Started::finish`]
/// waits for it.
pub struct Started {
    command: String,
    started: Instant,
    child: std::process::Child,
    feeder: Option<JoinHandle<()>>,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

impl Started {
    /// Start `cmd`, named `command` in messages, feeding it `stdin` (else stdin is closed).
    fn spawn(cmd: &mut Command, command: String, stdin: Option<&[u8]>) -> Self {
        let started = Instant::now();
        let mut child = cmd
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
        let feeder = stdin.map(|bytes| {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            let bytes = bytes.to_vec();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            })
        });
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("stdout pipe")));
        let stderr = drain(Box::new(child.stderr.take().expect("stderr pipe")));
        Started {
            command,
            started,
            child,
            feeder,
            stdout,
            stderr,
        }
    }

    /// Wait for it to exit and collect what it did; kills it (and panics) after `limit`.
    pub fn finish(mut self, limit: Duration) -> Run {
        let command = self.command;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("`{command}` still running after {limit:?}: killed");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        if let Some(f) = self.feeder {
            let _ = f.join();
        }
        let text = |h: JoinHandle<Vec<u8>>| {
            String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
        };
        Run {
            command,
            code: status.code(),
            stdout: text(self.stdout),
            stderr: text(self.stderr),
            elapsed,
        }
    }
}

/// Start any program (`cmd`, stdin closed); [`Started::finish`] collects its [`Run`].
pub fn start_command(cmd: &mut Command) -> Started {
    let command = format!("{cmd:?}");
    Started::spawn(cmd, command, None)
}

/// Run any program (`cmd`, stdin closed), killing it after `limit`.
pub fn run_command(cmd: &mut Command, limit: Duration) -> Run {
    start_command(cmd).finish(limit)
}

/// What the courier and the heartbeat get as `$CONCIERGE_STATE_DIR` in tests: a directory
/// that does not exist, so that their default spool is off and no test replays values another
/// test left in the machine's state directory. Tests of the spool name `--spool DIR`.
pub const NO_STATE_DIR: &str = "/nonexistent/concierge-tests-state";

/// `cmd` for workspace binary `name`, kept away from the machine's state directory where the
/// tool would spool by default.
fn isolated<'a>(cmd: &'a mut Command, name: &str) -> &'a mut Command {
    if matches!(name, "concierge-courier" | "concierge-heartbeat")
        && std::env::var_os("CONCIERGE_STATE_DIR").is_none()
    {
        cmd.env("CONCIERGE_STATE_DIR", NO_STATE_DIR);
    }
    cmd
}

/// Run workspace binary `name` with `args`, feeding `stdin`, killing it after `limit`.
pub fn run_tool(name: &str, args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Run {
    let path = bin(name);
    let command = std::iter::once(name.to_string())
        .chain(args.iter().map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"') {
                format!("{a:?}")
            } else {
                a.to_string()
            }
        }))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new(&path);
    isolated(&mut cmd, name).args(args);
    Started::spawn(&mut cmd, command, stdin).finish(limit)
}

/// A workspace binary running in the background, its stdout and stderr collected as they
/// come. Dropping it SIGKILLs the process if it still runs (and reaps it).
pub struct Coprocess {
    pub command: String,
    child: std::process::Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<std::process::ExitStatus>,
    /// When it was started.
    pub started: Instant,
    /// The wall-clock time it was started, for comparing with history clocks.
    pub started_at: SystemTime,
}

impl Coprocess {
    /// Start workspace binary `name` with `args` (stdin closed).
    pub fn spawn(name: &str, args: &[&str]) -> Self {
        let path = bin(name);
        let command = std::iter::once(name)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let started_at = SystemTime::now();
        let started = Instant::now();
        let mut cmd = Command::new(&path);
        let mut child = isolated(&mut cmd, name)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let collect = |mut r: Box<dyn Read + Send>, into: Arc<Mutex<Vec<u8>>>| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    into.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
            })
        };
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(
                Box::new(child.stdout.take().expect("stdout pipe")),
                Arc::clone(&stdout),
            ),
            collect(
                Box::new(child.stderr.take().expect("stderr pipe")),
                Arc::clone(&stderr),
            ),
        ];
        Coprocess {
            command,
            child,
            stdout,
            stderr,
            readers,
            status: None,
            started,
            started_at,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Its exit status, if it has exited (`try_wait`).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Panics (with its output) unless it is still running.
    pub fn assert_running(&mut self, while_doing: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited ({status}) while {while_doing}\n{self}",
                self.command
            );
        }
    }

    /// Send signal `sig` (`TERM`, `INT`…) with kill(1), an argument vector.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(
            status.success(),
            "kill -{sig} {} failed: {status}",
            self.pid()
        );
    }

    /// SIGKILL it (`Child::kill`).
    pub fn kill(&mut self) {
        self.child.kill().expect("Child::kill");
    }

    /// Wait up to `limit` for it to exit; returns the status and how long the wait took.
    /// Panics (after a SIGKILL) if it is still running then.
    pub fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                let waited = start.elapsed();
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return (status, waited);
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} still running {limit:?} later: killed\n{self}",
                    self.command
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then wait up to `limit`; returns the exit code and how long the stop took.
    pub fn terminate(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        self.signal("TERM");
        let (status, _) = self.wait_exit(limit);
        (status.code(), start.elapsed())
    }
}

impl fmt::Display for Coprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (pid, age) = (self.child.id(), self.started.elapsed());
        writeln!(f, "`{}` (pid {pid}, started {age:.1?} ago)", self.command)?;
        write!(
            f,
            "--- stdout:\n{}--- stderr:\n{}---",
            self.stdout(),
            self.stderr()
        )
    }
}

impl Drop for Coprocess {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A long-running program of the test's own (a zabbix_agentd in the foreground) in a process
/// group of its own, so that nothing it forks outlives the test: stopping it SIGTERMs the
/// leader, which ends and reaps its children, and waits until no process of the group is left.
pub struct Daemon {
    name: String,
    child: std::process::Child,
    stopped: bool,
}

impl Daemon {
    /// Start `cmd` (stdin, stdout and stderr closed: it logs to a file) as a group leader.
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        use std::os::unix::process::CommandExt;
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Daemon {
            name: name.to_string(),
            child,
            stopped: false,
        }
    }

    /// The leader's pid (also the group's id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The processes of its group other than the leader, zombies included (from /proc).
    pub fn children(&self) -> Vec<u32> {
        let pgid = self.pid();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != pgid)
            .filter(|pid| {
                // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        let rest = &s[s.rfind(')')? + 1..];
                        rest.split_whitespace().nth(2)?.parse::<u32>().ok()
                    })
                    == Some(pgid)
            })
            .collect()
    }

    /// SIGTERM the leader and wait up to `limit` until it has exited and no process of its group
    /// is left. Past the limit, SIGKILL the whole group and return what was still there.
    pub fn stop(&mut self, limit: Duration) -> Result<Duration, String> {
        self.stopped = true;
        let start = Instant::now();
        let _ = Command::new("kill")
            .args(["-s", "TERM", "--", &self.pid().to_string()])
            .status();
        loop {
            let leader_gone = matches!(self.child.try_wait(), Ok(Some(_)));
            let children = self.children();
            if leader_gone && children.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", "--", &format!("-{}", self.pid())])
                    .status();
                let _ = self.child.wait();
                return Err(format!(
                    "{} (pid {}) left after SIGTERM and {limit:?}: leader {}, children {children:?}",
                    self.name,
                    self.pid(),
                    if leader_gone { "exited" } else { "running" }
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.stopped {
            if let Err(e) = self.stop(Duration::from_secs(10)) {
                let _ = writeln!(std::io::stderr(), "{e}");
            }
        }
    }
}
