//! concierge-scale against this machine's real Docker engine: a compose project per test
//! (unique project name, `docker-compose down` when dropped), whose image is built here from
//! `FROM scratch` and one static binary of ours, with `network_mode: host`. The count is always
//! checked with `docker ps`, independently of the tool. A single-node swarm is created (and
//! left) for the swarm test when the engine is not in one already.
//!
//! Every compose test runs twice, once per compose (`compose_test!`): v1 (Debian 12's
//! `docker-compose`) and v2 (the `docker compose` plugin, Debian 13's, which `make test`
//! installs with scripts/install-compose-plugin.sh); each project is started and taken down by
//! the compose it tests. The resize tests read the containers' limits with `docker inspect`
//! (HostConfig.NanoCpus, .Memory) and the swarm service's with `docker service inspect`.
//!
//! Without a Docker engine these tests print SKIPPED and return, unless
//! CONCIERGE_REQUIRE_DOCKER=1.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use concierge_testkit::docker::{self, docker, heartbeat_image, unique, Compose, Project};
use concierge_testkit::{
    bin, closed_port, current_test, note, run_command, start_command, temp_dir, wait_for, Run,
};
use serde_json::Value;

const SCALE: &str = "concierge-scale";
const SERVICE: &str = "app";
/// How long any state may take to show up before the test fails.
const SETTLE: Duration = Duration::from_secs(90);
/// Longest a single command may run before it is killed and the test fails.
const COMMAND_LIMIT: Duration = Duration::from_secs(180);

/// The arguments of the test containers' concierge-heartbeat (the image's entrypoint). Beats
/// go to a loopback port nobody listens on: the heartbeat keeps beating (and backing off)
/// without a Zabbix, and answers SIGTERM at once.
fn payload() -> Vec<String> {
    static PORT: OnceLock<u16> = OnceLock::new();
    let port = *PORT.get_or_init(closed_port);
    vec![
        "--every".into(),
        "2s".into(),
        "-z".into(),
        format!("127.0.0.1:{port}"),
    ]
}

fn run(cmd: &mut Command) -> Run {
    run_command(cmd, COMMAND_LIMIT)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/scale")
        .join(name)
}

/// True when the Docker engine and docker-compose answer (see [`docker::available`]).
fn docker_available() -> bool {
    docker::available(&current_test())
}

/// One test per compose: `fn name(c: Compose) { … }` becomes `name::compose_v1` and
/// `name::compose_v2`, each skipped (or failed, with CONCIERGE_REQUIRE_DOCKER=1) when its
/// compose is not there.
macro_rules! compose_test {
    (fn $name:ident($c:ident: Compose) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($c: Compose) $body

            #[test]
            fn compose_v1() {
                if docker::available_with(&current_test(), Compose::V1) {
                    body(Compose::V1);
                }
            }

            #[test]
            fn compose_v2() {
                if docker::available_with(&current_test(), Compose::V2) {
                    body(Compose::V2);
                }
            }
        }
    };
}

/// The decisions in an event log. Each engine call's intent (`started`) must come right before
/// its result (`scaled`, `resized` or `failed`, same pid and target); the intents are checked and dropped.
fn read_events(path: &Path) -> Vec<Value> {
    let all: Vec<Value> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event {l:?}: {e}")))
        .collect();
    let mut decisions = Vec::new();
    let mut intent: Option<&Value> = None;
    for ev in &all {
        if let Some(started) = intent.take() {
            assert!(
                matches!(
                    ev["outcome"].as_str(),
                    Some("scaled" | "resized" | "failed")
                ) && ev["pid"] == started["pid"]
                    && ev["to"] == started["to"],
                "an intent without its result: {started} then {ev}"
            );
        }
        if ev["outcome"] == "started" {
            intent = Some(ev);
        } else {
            decisions.push(ev.clone());
        }
    }
    assert!(intent.is_none(), "the log ends with an intent: {all:?}");
    decisions
}

/// A compose project of service `app` running the payload, run by `c`.
fn project(c: Compose) -> Project {
    Project::new(SERVICE, heartbeat_image(), &payload()).using(c)
}

/// concierge-scale on a compose project, and what it logged.
trait Scale {
    fn command(&self, args: &[&str]) -> Command;
    fn scale(&self, args: &[&str]) -> Run;
    fn events(&self) -> Vec<Value>;
    /// The running containers, by `docker ps`.
    fn ps(&self) -> BTreeSet<String>;
}

impl Scale for Project {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin(SCALE));
        c.args(["--engine", self.compose.engine(), "--file"])
            .arg(&self.file)
            .args(["--project-name", &self.name, "--state-dir"])
            .arg(self.state_dir())
            .args(args);
        c
    }

    fn scale(&self, args: &[&str]) -> Run {
        run(&mut self.command(args))
    }

    fn events(&self) -> Vec<Value> {
        read_events(&self.state_dir().join("scale-events.jsonl"))
    }

    fn ps(&self) -> BTreeSet<String> {
        self.running().expect("docker ps")
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

compose_test! {
    fn up_from_one_to_three(c: Compose) {
        let p = project(c);
        let before = p.start(1, SETTLE);
        // The talk's order: action, service, current scale, increment; the daemon named as the
        // talk did (--host), here the local socket.
        let r = p
            .scale(&["-H", "unix:///var/run/docker.sock", "up", SERVICE, "1", "2"])
            .ok();
        let after = p.wait_running(3, SETTLE);
        assert!(
            before.is_subset(&after),
            "the running container must be kept"
        );
        let ev = p.events();
        assert_eq!(ev.len(), 1);
        assert_scaled(&r, 1, 3, &ev[0]);
        assert_eq!(ev[0]["outcome"], "scaled");
        assert_eq!(ev[0]["engine"], c.engine());
        assert_eq!(ev[0]["count_source"], "engine");
        assert_eq!(ev[0]["command"][1], "--host=unix:///var/run/docker.sock");
        assert!(
            r.stderr
                .contains(&format!(": Scaled {SERVICE} from 1 to 3")),
            "the talk's line on stderr: {r}"
        );
        note(&format!("up 1→3 took {:.2?}", r.elapsed));
    }
}

compose_test! {
    fn down_from_three_to_two(c: Compose) {
        let p = project(c);
        let before = p.start(3, SETTLE);
        // A stale hint (5): the engine's count (3) wins, and the mismatch is logged.
        let r = p.scale(&["down", SERVICE, "5"]).ok();
        let after = p.wait_running(2, SETTLE);
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
}

compose_test! {
    fn clamped_at_max_and_at_min(c: Compose) {
        let p = project(c);
        let two = p.start(2, SETTLE);
        let r = p.scale(&["--max", "2", "up", SERVICE]).ok();
        assert_eq!(r.stdout, "2\n", "{r}");
        let r = p.scale(&["--min", "2", "down", SERVICE, "2", "3"]).ok();
        assert_eq!(r.stdout, "2\n", "{r}");
        // A step cut short by the bound still scales, as far as the bound.
        let r = p.scale(&["--max", "3", "up", SERVICE, "2", "5"]).ok();
        assert_eq!(r.stdout, "3\n", "{r}");
        p.wait_running(3, SETTLE);
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
        assert!(two.is_subset(&p.ps()));
    }
}

compose_test! {
    fn refused_inside_the_cooldown(c: Compose) {
        let p = project(c);
        p.start(1, SETTLE);
        let r = p.scale(&["--cooldown", "10m", "up", SERVICE]).ok();
        assert_eq!(r.stdout, "2\n", "{r}");
        let two = p.wait_running(2, SETTLE);
        let r = p.scale(&["--cooldown", "10m", "up", SERVICE]).ok();
        assert_eq!(r.stdout, "2\n", "{r}");
        assert_eq!(p.ps(), two, "nothing may change inside the cooldown");
        let ev = p.events();
        assert_eq!(ev[1]["outcome"], "cooldown");
        assert!(
            ev[1]["detail"].as_str().unwrap().contains("cooldown left"),
            "{}",
            ev[1]
        );
    }
}

compose_test! {
    fn two_concurrent_ups_end_exactly_two_steps_up(c: Compose) {
        let p = project(c);
        p.start(1, SETTLE);
        let a = start_command(&mut p.command(&["up", SERVICE]));
        let b = start_command(&mut p.command(&["up", SERVICE]));
        let (a, b) = (a.finish(COMMAND_LIMIT).ok(), b.finish(COMMAND_LIMIT).ok());
        let printed: BTreeSet<&str> = [a.stdout.trim(), b.stdout.trim()].into();
        assert_eq!(printed, ["2", "3"].into(), "{a}\n{b}");
        let ev = p.events();
        let steps: BTreeSet<(u64, u64)> = ev
            .iter()
            .map(|e| (e["from"].as_u64().unwrap(), e["to"].as_u64().unwrap()))
            .collect();
        assert_eq!(steps, [(1, 2), (2, 3)].into(), "{ev:?}");
        p.wait_running(3, SETTLE);
        note(&format!(
            "two concurrent ups took {:.2?} and {:.2?}",
            a.elapsed, b.elapsed
        ));
    }
}

compose_test! {
    fn a_broken_compose_file_fails_with_the_engines_error(c: Compose) {
        let dir = temp_dir("broken");
        let file = fixture("broken-compose.yml");
        // What docker-compose itself says about the file.
        let (program, pre) = c.command();
        let own = run(Command::new(program)
            .args(pre)
            .arg("--file")
            .arg(&file)
            .arg("config"));
        assert_ne!(own.code, Some(0), "the fixture must be broken: {own}");
        let own_error = own
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .expect("compose explains")
            .trim()
            .to_string();
        let r = run(Command::new(bin(SCALE))
            .args(["--engine", c.engine(), "--file"])
            .arg(&file)
            .args(["--project-name", &unique("cscalebroken"), "--state-dir"])
            .arg(dir.path())
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
        let ev = read_events(&dir.path().join("scale-events.jsonl"));
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
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".state")), "{names:?}");
    }
}

compose_test! {
    fn dry_run_changes_nothing(c: Compose) {
        let p = project(c);
        let one = p.start(1, SETTLE);
        let r = p.scale(&["--dry-run", "up", SERVICE, "1", "2"]).ok();
        assert_eq!(r.stdout, "3\n", "{r}");
        let (program, pre) = c.command();
        let shown = [&[program][..], pre].concat().join(" ");
        assert!(r.stderr.contains(&format!("would run: {shown} ")), "{r}");
        // compose's up is synchronous: had the dry run scaled, the containers would exist now.
        assert_eq!(p.ps(), one);
        let all = docker(&[
            "ps",
            "--all",
            "--quiet",
            "--filter",
            &format!("label=com.docker.compose.project={}", p.name),
        ])
        .expect("docker ps");
        assert_eq!(all.lines().count(), 1, "{all}");
        let ev = p.events();
        assert_eq!(ev[0]["outcome"], "dry-run");
        assert_eq!(ev[0]["dry_run"], true);
        assert!(!p
            .state_dir()
            .join(format!("compose.{}.{SERVICE}.state", p.name))
            .exists());
    }
}

/// Each container's (NanoCpus, Memory), by `docker inspect` (not through any tool of ours).
fn limits_of(ids: &BTreeSet<String>) -> Vec<(u64, u64)> {
    let mut args = vec![
        "inspect",
        "--type",
        "container",
        "--format",
        "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}",
    ];
    args.extend(ids.iter().map(String::as_str));
    docker(&args)
        .expect("docker inspect")
        .lines()
        .map(|l| {
            let (c, m) = l.split_once(' ').expect("two numbers");
            (c.parse().expect("NanoCpus"), m.parse().expect("Memory"))
        })
        .collect()
}

const HALF_CPU: u64 = 500_000_000;
const MIB_128: u64 = 128 << 20;

compose_test! {
    fn resize_sets_the_limits_of_every_container(c: Compose) {
        let p = project(c);
        let two = p.start(2, SETTLE);
        assert_eq!(limits_of(&two), [(0, 0), (0, 0)], "the fixture has no limits");
        let r = p
            .scale(&["--cooldown", "10m", "resize", SERVICE, "--cpus", "0.5", "--memory", "128m"])
            .ok();
        assert_eq!(r.stdout, "cpus=0.5 memory=128m\n", "{r}");
        assert_eq!(limits_of(&two), [(HALF_CPU, MIB_128); 2]);
        assert_eq!(p.ps(), two, "resized in place: the same containers, running");
        assert!(
            r.stderr.contains(&format!(
                ": Resized {SERVICE} from cpus=unlimited memory=unlimited to cpus=0.5 memory=128m"
            )),
            "{r}"
        );
        // Inside the cooldown: refused, nothing changes.
        let r = p
            .scale(&["--cooldown", "10m", "resize", SERVICE, "--cpus", "1"])
            .ok();
        assert_eq!(r.stdout, "cpus=0.5 memory=128m\n", "{r}");
        assert_eq!(limits_of(&two), [(HALF_CPU, MIB_128); 2]);
        // A scaling has a cooldown of its own, and gives the container it creates the limits.
        let r = p.scale(&["--cooldown", "10m", "up", SERVICE]).ok();
        assert_eq!(r.stdout, "3\n", "{r}");
        let three = p.wait_running(3, SETTLE);
        assert_eq!(limits_of(&three), [(HALF_CPU, MIB_128); 3]);
        // Bounded: 1g is cut to --max-memory; the CPUs are left alone.
        let r = p
            .scale(&["resize", SERVICE, "--memory", "1g", "--max-memory", "256m"])
            .ok();
        assert_eq!(r.stdout, "cpus=0.5 memory=256m\n", "{r}");
        assert_eq!(limits_of(&three), [(HALF_CPU, 256 << 20); 3]);
        // A bad size is a usage error (exit 1) before anything runs.
        let r = p.scale(&["resize", SERVICE, "--memory", "lots"]);
        assert_eq!(r.code, Some(1), "{r}");
        assert!(r.stderr.contains("--memory"), "{r}");
        let ev = p.events();
        let outcomes: Vec<&str> = ev.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, ["resized", "cooldown", "scaled", "resized"], "{ev:?}");
        assert_eq!(ev[0]["action"], "resize");
        assert_eq!(ev[0]["engine"], c.engine());
        assert_eq!(ev[0]["resources"]["from"]["nano_cpus"], 0);
        assert_eq!(ev[0]["resources"]["to"]["nano_cpus"], HALF_CPU);
        assert_eq!(ev[0]["resources"]["to"]["memory_bytes"], MIB_128);
        assert_eq!(ev[0]["command"][1], "update");
        assert!(
            ev[2]["detail"].as_str().unwrap().contains("applied the last resize"),
            "{}",
            ev[2]
        );
        assert!(
            ev[3]["detail"].as_str().unwrap().contains("memory 1g is above max 256m"),
            "{}",
            ev[3]
        );
        note(&format!("{}: resize of 2 containers verified", c.engine()));
    }
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
        let state =
            docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]).expect("docker info");
        match state.trim() {
            "active" => Ok(Self { joined_here: false }),
            "inactive" => match docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]) {
                Ok(_) => Ok(Self { joined_here: true }),
                Err(e) => Err(format!("docker swarm init failed: {e:#}")),
            },
            other => Err(format!("swarm state {other:?}")),
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if self.joined_here {
            if let Err(e) = docker(&["swarm", "leave", "--force"]) {
                note(&format!("could not leave the swarm: {e:#}"));
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
        .expect("docker ps")
        .lines()
        .count()
    }

    fn wait_running(&self, n: usize) {
        wait_for(
            &format!("{n} running tasks of {}", self.0),
            SETTLE,
            || match self.running() {
                c if c == n => Ok(Some(())),
                c => Err(anyhow!("{c} running")),
            },
        )
    }

    fn running_ids(&self) -> BTreeSet<String> {
        docker(&[
            "ps",
            "--quiet",
            "--filter",
            "status=running",
            "--filter",
            &format!("label=com.docker.swarm.service.name={}", self.0),
        ])
        .expect("docker ps")
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// The task template's (NanoCPUs, MemoryBytes) limits.
    fn limits(&self) -> (u64, u64) {
        let out = docker(&[
            "service",
            "inspect",
            "--format",
            "{{json .Spec.TaskTemplate.Resources.Limits}}",
            &self.0,
        ])
        .expect("docker service inspect");
        let v: Value = serde_json::from_str(out.trim()).expect("JSON");
        (
            v["NanoCPUs"].as_u64().unwrap_or(0),
            v["MemoryBytes"].as_u64().unwrap_or(0),
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
        .expect("docker service inspect")
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
    let image = heartbeat_image();
    let swarm = match Swarm::get() {
        Ok(s) => s,
        Err(why) => {
            docker::skip(&current_test(), &format!("no swarm: {why}"));
            return;
        }
    };
    let args = payload();
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
    docker(&create).expect("docker service create");
    svc.wait_running(1);
    let dir = temp_dir("swarm");
    let scale = |args: &[&str]| {
        run(Command::new(bin(SCALE))
            .args(["--engine", "swarm", "--state-dir"])
            .arg(dir.path())
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
    // Resize: the task template's limits, and the tasks the swarm rolls get them.
    let r = scale(&["resize", &svc.0, "--cpus", "0.5", "--memory", "128m"]);
    assert_eq!(r.stdout, "cpus=0.5 memory=128m\n", "{r}");
    assert_eq!(svc.limits(), (HALF_CPU, MIB_128));
    wait_for("2 running tasks with the new limits", SETTLE, || {
        let ids = svc.running_ids();
        let limits = limits_of(&ids);
        if ids.len() == 2 && limits.iter().all(|l| *l == (HALF_CPU, MIB_128)) {
            Ok(Some(()))
        } else {
            Err(anyhow!("running tasks' limits: {limits:?}"))
        }
    });
    let ev = read_events(&dir.path().join("scale-events.jsonl"));
    let steps: Vec<(u64, u64)> = ev[..2]
        .iter()
        .map(|e| (e["from"].as_u64().unwrap(), e["to"].as_u64().unwrap()))
        .collect();
    assert_eq!(steps, [(1, 3), (3, 2)]);
    assert!(ev.iter().all(|e| e["engine"] == "swarm"));
    assert_eq!(ev[2]["outcome"], "resized");
    assert_eq!(ev[2]["resources"]["to"]["memory_bytes"], MIB_128);
    drop(svc);
    drop(swarm);
}
