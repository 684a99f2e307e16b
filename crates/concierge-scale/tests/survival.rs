//! concierge-scale when it is killed, when its engine hangs, and when its state directory is
//! not its own (issue 15). The engine is a fake `docker` (swarm mode) that each test writes:
//! `service inspect` prints the count from a file, `service scale` writes the new count there
//! and then does what the test needs (hang, leave a child holding the pipes).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use assert_cmd::Command;
use serde_json::Value;

/// A state directory and a fake engine inside a temporary directory (removed when dropped);
/// every process the fake engine started is killed when dropped.
struct Fixture {
    root: tempfile::TempDir,
}

impl Fixture {
    /// A fake docker whose `service scale` runs `after_scale` (shell) once the count is written.
    fn new(count: u32, after_scale: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let d = root.path();
        fs::write(d.join("count"), format!("{count}\n")).unwrap();
        let script = format!(
            "#!/bin/sh\n\
             d='{dir}'\n\
             case \"$1 $2\" in\n\
             'service inspect') cat \"$d/count\" ;;\n\
             'service scale') echo $$ >\"$d/engine.pid\"; echo \"${{5#*=}}\" >\"$d/count\"\n{after_scale}\n ;;\n\
             *) exit 3 ;;\n\
             esac\n",
            dir = d.display()
        );
        let docker = d.join("docker");
        fs::write(&docker, script).unwrap();
        fs::set_permissions(&docker, fs::Permissions::from_mode(0o755)).unwrap();
        Self { root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn state(&self) -> PathBuf {
        self.path("state")
    }

    fn count(&self) -> Option<u32> {
        fs::read_to_string(self.path("count"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn events(&self) -> Vec<Value> {
        fs::read_to_string(self.state().join("scale-events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn outcomes(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e["outcome"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--engine".into(),
            "swarm".into(),
            "--docker".into(),
            self.path("docker").display().to_string(),
            "--state-dir".into(),
            self.state().display().to_string(),
        ]
    }

    fn scale(&self) -> Command {
        let mut c = Command::cargo_bin("concierge-scale").unwrap();
        c.args(self.args()).timeout(Duration::from_secs(60));
        c
    }

    /// Kill what the fake engine started (its process group), if it still runs.
    fn kill_engine(&self) {
        if let Ok(pid) = fs::read_to_string(self.path("engine.pid")) {
            let _ = StdCommand::new("kill")
                .args(["-KILL", "--", &format!("-{}", pid.trim())])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.kill_engine();
    }
}

/// Poll `cond` every 20 ms for up to `limit`.
fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` is gone (or a zombie nobody reaped: it runs nothing any more).
fn dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn a_call_killed_mid_scaling_leaves_its_event_and_cooldown_and_the_next_reconciles() {
    // The engine scales, then hangs as docker-compose waiting on a container would, until the
    // Zabbix server's Timeout kills the call (here: SIGKILL from the test).
    let fx = Fixture::new(1, "sleep 60");
    let mut call = StdCommand::cargo_bin("concierge-scale").unwrap();
    call.args(fx.args())
        .args(["--cooldown", "1h", "--engine-timeout", "50s", "up", "web"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = call.spawn().unwrap();
    wait_for(Duration::from_secs(20), "the engine to scale to 2", || {
        fx.count() == Some(2) && fx.path("engine.pid").exists()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    fx.kill_engine();
    // The killed call left its intent in the event log...
    let events = fx.events();
    assert_eq!(fx.outcomes(), ["started"], "{events:?}");
    assert_eq!(
        (events[0]["from"].clone(), events[0]["to"].clone()),
        (1.into(), 2.into())
    );
    // ...and the next call (an action step repeating) is refused by the cooldown that the
    // intent started, after reconciling with the engine's real count.
    let out = fx
        .scale()
        .args(["--cooldown", "1h", "up", "web"])
        .assert()
        .success()
        .stdout("2\n")
        .get_output()
        .clone();
    assert_eq!(fx.count(), Some(2), "scaled again inside the cooldown");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not finish; the engine reports 2"),
        "{err}"
    );
    let events = fx.events();
    assert_eq!(
        fx.outcomes(),
        ["started", "interrupted", "cooldown"],
        "{events:?}"
    );
    assert_eq!(
        (events[1]["from"].clone(), events[1]["to"].clone()),
        (1.into(), 2.into())
    );
    let state: Value =
        serde_json::from_str(&fs::read_to_string(fx.state().join("swarm.%.web.state")).unwrap())
            .unwrap();
    assert_eq!(
        (state["to"].clone(), state["pending"].clone()),
        (2.into(), Value::Null)
    );
}

#[test]
fn the_engine_timeout_kills_the_whole_group_even_when_a_child_holds_the_pipes() {
    // The engine starts a child that inherits stdout and stderr and outlives it (issue 15:
    // a 2 s timeout returned after 40 s), and then hangs itself.
    let fx = Fixture::new(1, "sleep 60 &\necho $! >\"$d/child.pid\"\nsleep 60");
    let started = Instant::now();
    let out = fx
        .scale()
        .args(["--engine-timeout", "2s", "up", "web"])
        .assert()
        .code(1)
        .stdout("")
        .get_output()
        .clone();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(took < Duration::from_secs(4), "took {took:?}: {err}");
    assert!(err.contains("did not finish within 2s: killed"), "{err}");
    let child: u32 = fs::read_to_string(fx.path("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let engine: u32 = fs::read_to_string(fx.path("engine.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for(Duration::from_secs(5), "the engine's group to die", || {
        dead(child) && dead(engine)
    });
    // A command that ran out of time may have scaled: its intent stays for the next call.
    assert_eq!(fx.outcomes(), ["started", "failed"]);
}

#[test]
fn the_budget_is_the_whole_call_not_each_command() {
    // Each inspect takes 1.5 s; a 2 s budget cannot cover inspect + scale + anything more.
    let fx = Fixture::new(1, "sleep 60");
    let docker = fx.path("docker");
    let text = fs::read_to_string(&docker).unwrap().replace(
        "'service inspect') cat",
        "'service inspect') sleep 1.5; cat",
    );
    fs::write(&docker, text).unwrap();
    let started = Instant::now();
    fx.scale()
        .args(["--engine-timeout", "2s", "up", "web"])
        .assert()
        .code(1);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_default_engine_timeout_fits_inside_a_30s_server_timeout() {
    let out = Command::cargo_bin("concierge-scale")
        .unwrap()
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .clone();
    let help = String::from_utf8_lossy(&out.stdout);
    let default = format!(
        "[default: {}s]",
        concierge_core::scaling::ENGINE_TIMEOUT_SECS
    );
    let at = help.find("--engine-timeout").expect("documented");
    let next = help[at..]
        .find("[default:")
        .map(|i| &help[at + i..])
        .unwrap();
    assert!(
        next.starts_with(&default),
        "{}",
        &next[..40.min(next.len())]
    );
    // Budget plus the push's own (2.5 s) plus start-up stays under 30 s.
    assert!(concierge_core::scaling::ENGINE_TIMEOUT_SECS as f64 + 2.5 < 29.0);
}

/// The uid this test runs as: the owner of a directory it just created.
fn my_uid(dir: &Path) -> u32 {
    fs::metadata(dir).unwrap().uid()
}

#[test]
fn a_state_directory_others_can_write_or_own_is_refused() {
    let fx = Fixture::new(1, "true");
    let state = fx.state();
    fs::create_dir(&state).unwrap();
    for mode in [0o777, 0o1777, 0o770, 0o720] {
        fs::set_permissions(&state, fs::Permissions::from_mode(mode)).unwrap();
        let out = fx
            .scale()
            .args(["up", "web"])
            .assert()
            .code(1)
            .stdout("")
            .get_output()
            .clone();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refusing the state directory") && err.contains("others can write"),
            "{mode:o}: {err}"
        );
    }
    assert_eq!(fx.count(), Some(1), "the engine must not run");
    assert!(!fx.path("engine.pid").exists());
    // Owned by another user (only root can hand it over).
    fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
    if my_uid(fx.root.path()) == 0 {
        std::os::unix::fs::chown(&state, Some(65534), None).unwrap();
        let out = fx
            .scale()
            .args(["up", "web"])
            .assert()
            .code(1)
            .get_output()
            .clone();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("owned by uid 65534"), "{err}");
        std::os::unix::fs::chown(&state, Some(0), None).unwrap();
    } else {
        eprintln!("NOTE: not root: the other-owner case is checked by root runs only");
    }
    // Ours and private: used, and every file it creates is 0600.
    fx.scale()
        .args(["up", "web"])
        .assert()
        .success()
        .stdout("2\n");
    for f in fs::read_dir(&state).unwrap() {
        let f = f.unwrap();
        let mode = f.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.path().display());
    }
}

#[test]
fn symlinks_planted_in_the_state_directory_are_never_followed() {
    let fx = Fixture::new(1, "true");
    let state = fx.state();
    fs::create_dir(&state).unwrap();
    let victim = fx.path("victim");
    fs::write(&victim, "precious\n").unwrap();
    for name in [
        "scale-events.jsonl",
        "swarm.%.web.lock",
        "swarm.%.web.state",
    ] {
        let link = state.join(name);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let out = fx
            .scale()
            .args(["up", "web"])
            .assert()
            .code(1)
            .get_output()
            .clone();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        fs::remove_file(&link).unwrap();
    }
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(fx.count(), Some(1), "the engine must not scale");
    // The human log too.
    std::os::unix::fs::symlink(&victim, state.join("scale.log")).unwrap();
    fx.scale()
        .arg("--human-log")
        .arg(state.join("scale.log"))
        .args(["up", "web"])
        .assert()
        .code(1);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
}
