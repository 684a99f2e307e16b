//! concierge-scale against this machine's real Docker engine: a compose project per test
//! (unique project name, `docker-compose down` when dropped), whose image is built here from
//! `FROM scratch` and one static binary of ours, with `network_mode: host`. The count is always
//! checked with `docker ps`, independently of the tool. A single-node swarm is created (and
//! left) for the swarm test when the engine is not in one already.
//!
//! Without a Docker engine these tests print SKIPPED and return, unless
//! CONCIERGE_REQUIRE_DOCKER=1.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

const SCALE: &str = "concierge-scale";
const SERVICE: &str = "app";
const IMAGE: &str = "concierge-scale-e2e:payload";
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// How long any state may take to show up before the test fails.
const SETTLE: Duration = Duration::from_secs(90);
/// Longest a single command may run before it is killed and the test fails.
const COMMAND_LIMIT: Duration = Duration::from_secs(180);

/// What the test containers run: the workspace crate whose static binary is the image's
/// entrypoint, and its arguments. The one place to change the payload.
fn payload() -> (&'static str, Vec<String>) {
    // Beats go to a loopback port nobody listens on: the heartbeat keeps beating (and
    // backing off) without a Zabbix, and answers SIGTERM at once.
    static PORT: OnceLock<u16> = OnceLock::new();
    let port = *PORT.get_or_init(|| {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9)
    });
    (
        "concierge-heartbeat",
        vec![
            "--every".into(),
            "2s".into(),
            "-z".into(),
            format!("127.0.0.1:{port}"),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// Running things
// ---------------------------------------------------------------------------------------------

/// Straight to fd 2: libtest captures eprintln!, and a skip must be seen.
fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

/// What one command did.
struct Run {
    command: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` → exit {:?} after {:.2?}\n--- stdout:\n{}--- stderr:\n{}---",
            self.command, self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "{self}");
        self
    }
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Start `cmd` with piped output; `finish` collects it.
fn start(cmd: &mut Command) -> (String, Instant, std::process::Child) {
    let command = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
    (command, Instant::now(), child)
}

fn finish((command, started, mut child): (String, Instant, std::process::Child)) -> Run {
    let out = drain(child.stdout.take().expect("stdout pipe"));
    let err = drain(child.stderr.take().expect("stderr pipe"));
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if started.elapsed() > COMMAND_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command} still running after {COMMAND_LIMIT:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        command,
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    }
}

fn run(cmd: &mut Command) -> Run {
    finish(start(cmd))
}

fn docker(args: &[&str]) -> Run {
    run(Command::new("docker").args(args))
}

/// Poll `f` every 200 ms until it returns `Some`; fail after `limit` with the last observation.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    let mut polls = 0u32;
    loop {
        polls += 1;
        let last = match f() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if started.elapsed() >= limit {
            panic!(
                "timed out after {:.1?} ({polls} polls) waiting for {what}; last: {last}",
                started.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `target/<profile>/` of this test executable, and `target/` above it.
fn target_dirs() -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().expect("current_exe");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf();
    let target = profile
        .parent()
        .expect("target/<profile> has a parent")
        .to_path_buf();
    (profile, target)
}

fn bin(name: &str) -> PathBuf {
    let path = target_dirs().0.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with cargo build --workspace",
        path.display()
    );
    path
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/scale")
        .join(name)
}

/// True when the Docker engine and docker-compose answer; else a visible SKIPPED line (or a
/// failure with CONCIERGE_REQUIRE_DOCKER=1).
fn docker_available() -> bool {
    static STATE: OnceLock<Result<(), String>> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        let probe = |cmd: &mut Command| match cmd.output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "{cmd:?}: {}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("{cmd:?}: {e}")),
        };
        probe(Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]))?;
        probe(Command::new("docker-compose").arg("version"))
    });
    match state {
        Ok(()) => true,
        Err(why) => {
            if std::env::var("CONCIERGE_REQUIRE_DOCKER").as_deref() == Ok("1") {
                panic!("Docker engine not usable: {why}");
            }
            note(&format!(
                "SKIPPED {}: no Docker engine ({why})",
                current_test()
            ));
            false
        }
    }
}

/// Build the payload's static binary and the image, once per test process.
fn image() -> &'static str {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = BUILT.get_or_init(build_image) {
        panic!("building {IMAGE}: {e}");
    }
    IMAGE
}

fn build_image() -> Result<(), String> {
    let (crate_name, _) = payload();
    let (_, target_dir) = target_dirs();
    let started = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let build = run(Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["build", "--release", "--target", TARGET, "-p", crate_name])
        .arg("--target-dir")
        .arg(&target_dir));
    if build.code != Some(0) {
        return Err(format!("static build failed: {build}"));
    }
    let binary = target_dir.join(TARGET).join("release").join(crate_name);
    let ctx = TempDir::new("image");
    std::fs::copy(&binary, ctx.0.join(crate_name))
        .map_err(|e| format!("copying {}: {e}", binary.display()))?;
    std::fs::write(
        ctx.0.join("Dockerfile"),
        format!("FROM scratch\nCOPY {crate_name} /{crate_name}\nENTRYPOINT [\"/{crate_name}\"]\n"),
    )
    .map_err(|e| e.to_string())?;
    let built = docker(&["build", "-q", "-t", IMAGE, &ctx.0.to_string_lossy()]);
    if built.code != Some(0) {
        return Err(format!("docker build failed: {built}"));
    }
    note(&format!(
        "built {IMAGE} (FROM scratch + static {crate_name}) in {:.1?}",
        started.elapsed()
    ));
    Ok(())
}

/// A unique name: prefix, pid and a counter (lower case, as compose project names must be).
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(unique(&format!("concierge-scale-e2e-{tag}-")));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create a temporary directory");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event {l:?}: {e}")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A compose project
// ---------------------------------------------------------------------------------------------

/// A compose project of its own, taken down (containers removed) when dropped.
struct Project {
    name: String,
    file: PathBuf,
    dir: TempDir,
}

impl Project {
    fn new() -> Self {
        let (_, args) = payload();
        let dir = TempDir::new("project");
        let template = std::fs::read_to_string(fixture("compose.yml")).expect("compose fixture");
        let command = serde_json::to_string(&args).expect("JSON list");
        let file = dir.0.join("docker-compose.yml");
        std::fs::write(
            &file,
            template
                .replace("@SERVICE@", SERVICE)
                .replace("@IMAGE@", image())
                .replace("@COMMAND@", &command),
        )
        .expect("write compose file");
        Self {
            name: unique("cscale"),
            file,
            dir,
        }
    }

    fn compose(&self, args: &[&str]) -> Run {
        run(Command::new("docker-compose")
            .arg("--file")
            .arg(&self.file)
            .args(["--project-name", &self.name])
            .args(args))
    }

    /// The service's running containers, by `docker ps` (not through the tool).
    fn running(&self) -> BTreeSet<String> {
        let r = docker(&[
            "ps",
            "--quiet",
            "--no-trunc",
            "--filter",
            "status=running",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
            "--filter",
            &format!("label=com.docker.compose.service={SERVICE}"),
        ])
        .ok();
        r.stdout.lines().map(str::to_string).collect()
    }

    /// Wait until exactly `n` containers run; return their IDs.
    fn wait_running(&self, n: usize) -> BTreeSet<String> {
        wait_for(&format!("{n} running containers"), SETTLE, || {
            let ids = self.running();
            if ids.len() == n {
                Ok(ids)
            } else {
                Err(format!("{} running: {ids:?}", ids.len()))
            }
        })
    }

    /// Start the service with `n` containers, independently of the tool.
    fn start(&self, n: usize) -> BTreeSet<String> {
        self.compose(&["up", "--detach", "--scale", &format!("{SERVICE}={n}")])
            .ok();
        self.wait_running(n)
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.0.join("state")
    }

    fn events(&self) -> Vec<Value> {
        read_events(&self.state_dir().join("scale-events.jsonl"))
    }

    /// concierge-scale on this project.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin(SCALE));
        c.args(["--engine", "compose-v1", "--file"])
            .arg(&self.file)
            .args(["--project-name", &self.name, "--state-dir"])
            .arg(self.state_dir())
            .args(args);
        c
    }

    fn scale(&self, args: &[&str]) -> Run {
        run(&mut self.command(args))
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let down = self.compose(&["down", "--timeout", "5", "--remove-orphans"]);
        if down.code != Some(0) {
            note(&format!("could not take down {}: {down}", self.name));
        }
    }
}

/// The single event line of a run, after checking the count printed.
fn assert_scaled(run: &Run, from: u64, to: u64, ev: &Value) {
    assert_eq!(run.stdout, format!("{to}\n"), "{run}");
    assert_eq!(ev["from"], from, "{ev}");
    assert_eq!(ev["to"], to, "{ev}");
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[test]
fn up_from_one_to_three() {
    if !docker_available() {
        return;
    }
    let p = Project::new();
    let before = p.start(1);
    // The talk's order: action, service, current scale, increment; the daemon named as the
    // talk did (--host), here the local socket.
    let r = p
        .scale(&["-H", "unix:///var/run/docker.sock", "up", SERVICE, "1", "2"])
        .ok();
    let after = p.wait_running(3);
    assert!(
        before.is_subset(&after),
        "the running container must be kept"
    );
    let ev = p.events();
    assert_eq!(ev.len(), 1);
    assert_scaled(&r, 1, 3, &ev[0]);
    assert_eq!(ev[0]["outcome"], "scaled");
    assert_eq!(ev[0]["engine"], "compose-v1");
    assert_eq!(ev[0]["count_source"], "engine");
    assert_eq!(ev[0]["command"][1], "--host=unix:///var/run/docker.sock");
    assert!(
        r.stderr
            .contains(&format!(": Scaled {SERVICE} from 1 to 3")),
        "the talk's line on stderr: {r}"
    );
    note(&format!("up 1→3 took {:.2?}", r.elapsed));
}

#[test]
fn down_from_three_to_two() {
    if !docker_available() {
        return;
    }
    let p = Project::new();
    let before = p.start(3);
    // A stale hint (5): the engine's count (3) wins, and the mismatch is logged.
    let r = p.scale(&["down", SERVICE, "5"]).ok();
    let after = p.wait_running(2);
    assert!(after.is_subset(&before), "no new container on the way down");
    let ev = p.events();
    assert_scaled(&r, 3, 2, &ev[0]);
    assert_eq!(ev[0]["hint"], 5);
    assert!(
        r.stderr.contains("CURRENT 5 from the caller differs"),
        "{r}"
    );
    note(&format!("down 3→2 took {:.2?}", r.elapsed));
}

#[test]
fn clamped_at_max_and_at_min() {
    if !docker_available() {
        return;
    }
    let p = Project::new();
    let two = p.start(2);
    let r = p.scale(&["--max", "2", "up", SERVICE]).ok();
    assert_eq!(r.stdout, "2\n", "{r}");
    let r = p.scale(&["--min", "2", "down", SERVICE, "2", "3"]).ok();
    assert_eq!(r.stdout, "2\n", "{r}");
    // A step cut short by the bound still scales, as far as the bound.
    let r = p.scale(&["--max", "3", "up", SERVICE, "2", "5"]).ok();
    assert_eq!(r.stdout, "3\n", "{r}");
    p.wait_running(3);
    let ev = p.events();
    let outcomes: Vec<&str> = ev.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["clamped", "clamped", "scaled"]);
    assert!(
        ev[0]["detail"].as_str().unwrap().contains("above max 2"),
        "{}",
        ev[0]
    );
    assert!(
        ev[1]["detail"].as_str().unwrap().contains("below min 2"),
        "{}",
        ev[1]
    );
    assert!(two.is_subset(&p.running()));
}

#[test]
fn refused_inside_the_cooldown() {
    if !docker_available() {
        return;
    }
    let p = Project::new();
    p.start(1);
    let r = p.scale(&["--cooldown", "10m", "up", SERVICE]).ok();
    assert_eq!(r.stdout, "2\n", "{r}");
    let two = p.wait_running(2);
    let r = p.scale(&["--cooldown", "10m", "up", SERVICE]).ok();
    assert_eq!(r.stdout, "2\n", "{r}");
    assert_eq!(p.running(), two, "nothing may change inside the cooldown");
    let ev = p.events();
    assert_eq!(ev[1]["outcome"], "cooldown");
    assert!(
        ev[1]["detail"].as_str().unwrap().contains("cooldown left"),
        "{}",
        ev[1]
    );
}

#[test]
fn two_concurrent_ups_end_exactly_two_steps_up() {
    if !docker_available() {
        return;
    }
    let p = Project::new();
    p.start(1);
    let a = start(&mut p.command(&["up", SERVICE]));
    let b = start(&mut p.command(&["up", SERVICE]));
    let (a, b) = (finish(a).ok(), finish(b).ok());
    let printed: BTreeSet<&str> = [a.stdout.trim(), b.stdout.trim()].into();
    assert_eq!(printed, ["2", "3"].into(), "{a}\n{b}");
    let ev = p.events();
    let steps: BTreeSet<(u64, u64)> = ev
        .iter()
        .map(|e| (e["from"].as_u64().unwrap(), e["to"].as_u64().unwrap()))
        .collect();
    assert_eq!(steps, [(1, 2), (2, 3)].into(), "{ev:?}");
    p.wait_running(3);
    note(&format!(
        "two concurrent ups took {:.2?} and {:.2?}",
        a.elapsed, b.elapsed
    ));
}

#[test]
fn a_broken_compose_file_fails_with_the_engines_error() {
    if !docker_available() {
        return;
    }
    let dir = TempDir::new("broken");
    let file = fixture("broken-compose.yml");
    // What docker-compose itself says about the file.
    let own = run(Command::new("docker-compose")
        .arg("--file")
        .arg(&file)
        .arg("config"));
    assert_ne!(own.code, Some(0), "the fixture must be broken: {own}");
    let own_error = own
        .stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .expect("docker-compose explains")
        .trim()
        .to_string();
    let r = run(Command::new(bin(SCALE))
        .args(["--engine", "compose-v1", "--file"])
        .arg(&file)
        .args(["--project-name", &unique("cscalebroken"), "--state-dir"])
        .arg(&dir.0)
        .args(["up", SERVICE, "1"]));
    assert_eq!(r.code, Some(1), "{r}");
    assert_eq!(r.stdout, "", "{r}");
    assert!(
        r.stderr.contains(&own_error),
        "engine stderr passed through: {r}"
    );
    let last = r.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("{SCALE}: {SERVICE}: cannot scale from 1 to 2")),
        "{r}"
    );
    let ev = read_events(&dir.0.join("scale-events.jsonl"));
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["outcome"], "failed");
    assert!(
        ev[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains(&own_error),
        "{}",
        ev[0]
    );
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".state")), "{names:?}");
}

#[test]
fn dry_run_changes_nothing() {
    if !docker_available() {
        return;
    }
    let p = Project::new();
    let one = p.start(1);
    let r = p.scale(&["--dry-run", "up", SERVICE, "1", "2"]).ok();
    assert_eq!(r.stdout, "3\n", "{r}");
    assert!(r.stderr.contains("would run: docker-compose"), "{r}");
    // compose's up is synchronous: had the dry run scaled, the containers would exist now.
    assert_eq!(p.running(), one);
    let all = docker(&[
        "ps",
        "--all",
        "--quiet",
        "--filter",
        &format!("label=com.docker.compose.project={}", p.name),
    ])
    .ok();
    assert_eq!(all.stdout.lines().count(), 1, "{all}");
    let ev = p.events();
    assert_eq!(ev[0]["outcome"], "dry-run");
    assert_eq!(ev[0]["dry_run"], true);
    assert!(!p
        .state_dir()
        .join(format!("compose.{}.{SERVICE}.state", p.name))
        .exists());
}

// ---------------------------------------------------------------------------------------------
// Swarm
// ---------------------------------------------------------------------------------------------

/// A single-node swarm: joined here (and left when dropped) unless the engine already was in
/// one.
struct Swarm {
    joined_here: bool,
}

impl Swarm {
    fn get() -> Result<Self, String> {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]).ok();
        match state.stdout.trim() {
            "active" => Ok(Self { joined_here: false }),
            "inactive" => {
                let init = docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
                if init.code == Some(0) {
                    Ok(Self { joined_here: true })
                } else {
                    Err(format!("docker swarm init failed: {init}"))
                }
            }
            other => Err(format!("swarm state {other:?}")),
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if self.joined_here {
            let left = docker(&["swarm", "leave", "--force"]);
            if left.code != Some(0) {
                note(&format!("could not leave the swarm: {left}"));
            }
        }
    }
}

/// A swarm service, removed when dropped (before the swarm is left).
struct Service(String);

impl Service {
    fn running(&self) -> usize {
        docker(&[
            "ps",
            "--quiet",
            "--filter",
            "status=running",
            "--filter",
            &format!("label=com.docker.swarm.service.name={}", self.0),
        ])
        .ok()
        .stdout
        .lines()
        .count()
    }

    fn wait_running(&self, n: usize) {
        wait_for(
            &format!("{n} running tasks of {}", self.0),
            SETTLE,
            || match self.running() {
                c if c == n => Ok(()),
                c => Err(format!("{c} running")),
            },
        )
    }

    fn replicas(&self) -> String {
        docker(&[
            "service",
            "inspect",
            "--format",
            "{{.Spec.Mode.Replicated.Replicas}}",
            &self.0,
        ])
        .ok()
        .stdout
        .trim()
        .to_string()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = docker(&["service", "rm", &self.0]);
        // Leaving the swarm too early would orphan the tasks' containers.
        let gone = || self.running() == 0;
        let started = Instant::now();
        while !gone() && started.elapsed() < SETTLE {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn swarm_service_scales_on_a_single_node_swarm() {
    if !docker_available() {
        return;
    }
    let image = image();
    let swarm = match Swarm::get() {
        Ok(s) => s,
        Err(why) => {
            if std::env::var("CONCIERGE_REQUIRE_DOCKER").as_deref() == Ok("1") {
                panic!("no swarm: {why}");
            }
            note(&format!("SKIPPED {}: {why}", current_test()));
            return;
        }
    };
    let (_, args) = payload();
    let svc = Service(unique("cscaleswarm"));
    let mut create = vec![
        "service",
        "create",
        "--detach",
        "--name",
        &svc.0,
        "--replicas",
        "1",
        "--network",
        "host",
        "--stop-grace-period",
        "10s",
        image,
    ];
    create.extend(args.iter().map(String::as_str));
    docker(&create).ok();
    svc.wait_running(1);
    let dir = TempDir::new("swarm");
    let scale = |args: &[&str]| {
        run(Command::new(bin(SCALE))
            .args(["--engine", "swarm", "--state-dir"])
            .arg(&dir.0)
            .args(args))
        .ok()
    };
    let r = scale(&["up", &svc.0, "1", "2"]);
    assert_eq!(r.stdout, "3\n", "{r}");
    assert_eq!(svc.replicas(), "3");
    svc.wait_running(3);
    let r = scale(&["down", &svc.0]);
    assert_eq!(r.stdout, "2\n", "{r}");
    assert_eq!(svc.replicas(), "2");
    svc.wait_running(2);
    let ev = read_events(&dir.0.join("scale-events.jsonl"));
    let steps: Vec<(u64, u64)> = ev
        .iter()
        .map(|e| (e["from"].as_u64().unwrap(), e["to"].as_u64().unwrap()))
        .collect();
    assert_eq!(steps, [(1, 3), (3, 2)]);
    assert!(ev.iter().all(|e| e["engine"] == "swarm"));
    drop(svc);
    drop(swarm);
}
