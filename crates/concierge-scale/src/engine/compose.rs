//! Docker Compose, v1 (`docker-compose`) and v2 (`docker compose`, detected by asking
//! `docker compose version`).
//!
//! The count is the number of the service's containers that are running: the containers
//! compose lists for the service (`ps -q SERVICE`, which also checks the compose file and the
//! service name), intersected with the engine's running containers of that service. Scaling
//! is `up -d --no-deps --no-recreate --scale SERVICE=N SERVICE` (the talk's `scale` command is
//! deprecated in v1 and missing from early v2): existing containers are kept, other services
//! are not touched.
//!
//! Resizing is `docker update --cpus --memory --memory-swap` of every container compose lists
//! for the service (the swap limit equal to the memory limit: no swap on top, and Docker
//! refuses a memory limit alone on a container created without one). That changes the
//! containers that exist, in place, without a restart; containers created later get the compose
//! file's limits, so concierge-scale applies the last resize to those its own scalings create
//! (see `resize`).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use super::{
    clip, flag, run_ok, DockerOptions, Engine, EngineError, Invocation, Limits, Resources, Runner,
    ServiceNameError,
};
use crate::resources::{cpus_text, memory_text};

/// Longest service name accepted.
pub const MAX_NAME: usize = 255;

/// Which Compose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `docker-compose`, the Python one of the talk.
    V1,
    /// `docker compose`, the CLI plugin.
    V2,
}

/// The project to scale in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Project {
    /// `-f`: compose files, in order.
    pub files: Vec<PathBuf>,
    /// `-p`: project name.
    pub name: Option<String>,
}

/// A compose engine.
#[derive(Debug, Clone)]
pub struct Compose {
    pub version: Version,
    pub docker: DockerOptions,
    pub project: Project,
}

/// v2 when `docker compose version` succeeds, else v1.
pub fn detect(runner: &dyn Runner, docker: &DockerOptions) -> Version {
    let probe = Invocation::new(&docker.docker).args(["compose", "version"]);
    match runner.run(&probe) {
        Ok(out) if out.success() => Version::V2,
        _ => Version::V1,
    }
}

/// Check a compose service name: `[A-Za-z0-9][A-Za-z0-9._-]*`, which also keeps names that
/// look like options (`--help`, `-f/etc/x`) away from the engine.
pub fn validate_service(name: &str) -> Result<(), ServiceNameError> {
    let err = |reason: &str| ServiceNameError {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let first = name.bytes().next().ok_or_else(|| err("it is empty"))?;
    if first == b'-' {
        return Err(err("it looks like an option"));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(err("it must start with a letter or digit"));
    }
    if name.len() > MAX_NAME {
        return Err(err("it is longer than 255 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(err(&format!(
            "{c:?} is not allowed (letters, digits, '.', '_' and '-' only)"
        )));
    }
    Ok(())
}

impl Compose {
    /// The compose command with global, file and project options: `docker-compose [docker
    /// options] [-f F]… [-p P]` or `docker [docker options] compose [-f F]… [-p P]`.
    pub fn base(&self) -> Invocation {
        let inv = match self.version {
            Version::V1 => Invocation::new(&self.docker.compose_v1).args(self.docker.global_args()),
            Version::V2 => self.docker.docker().arg("compose"),
        };
        let mut a: Vec<OsString> = Vec::new();
        for f in &self.project.files {
            a.push(flag("--file", f));
        }
        if let Some(p) = &self.project.name {
            a.push(flag("--project-name", p));
        }
        inv.args(a)
    }

    /// The service's containers as compose knows them (IDs, one a line).
    pub fn ps_invocation(&self, service: &str) -> Invocation {
        self.base().args(["ps", "--quiet", "--", service])
    }

    /// The engine's running, non-one-off containers of any project's service of this name.
    pub fn running_invocation(&self, service: &str) -> Invocation {
        self.docker.docker().args([
            "ps",
            "--quiet",
            "--no-trunc",
            "--filter",
            "status=running",
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
            "--filter",
            "label=com.docker.compose.oneoff=False",
        ])
    }
}

impl Compose {
    /// Each container's id and limits: `ID NANOCPUS MEMORY`, one a line.
    pub fn inspect_invocation(&self, containers: &[String]) -> Invocation {
        self.docker
            .docker()
            .args([
                "inspect",
                "--type",
                "container",
                "--format",
                "{{.Id}} {{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}",
                "--",
            ])
            .args(containers)
    }
}

/// One value when all agree (`None` for none at all, or a disagreement).
fn agreed(values: impl IntoIterator<Item = u64>) -> Option<u64> {
    let set: BTreeSet<u64> = values.into_iter().collect();
    match set.len() {
        1 => set.into_iter().next(),
        _ => None,
    }
}

fn ids(text: &str) -> BTreeSet<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

impl Engine for Compose {
    fn name(&self) -> &'static str {
        match self.version {
            Version::V1 => "compose-v1",
            Version::V2 => "compose-v2",
        }
    }

    fn current(&self, runner: &dyn Runner, service: &str) -> Result<u32, EngineError> {
        let listed = run_ok(runner, &self.ps_invocation(service))?;
        let mine = ids(&listed.stdout);
        if mine.is_empty() {
            return Ok(0);
        }
        let running = run_ok(runner, &self.running_invocation(service))?;
        // ps -q prints full IDs in v1 and short ones in v2: match on prefixes.
        let n = ids(&running.stdout)
            .iter()
            .filter(|full| mine.iter().any(|id| full.starts_with(id)))
            .count();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    fn scale_invocation(&self, service: &str, to: u32, _from: Option<u32>) -> Invocation {
        self.base().args([
            "up",
            "--detach",
            "--no-deps",
            "--no-recreate",
            "--scale",
            &format!("{service}={to}"),
            "--",
            service,
        ])
    }

    fn resources(&self, runner: &dyn Runner, service: &str) -> Result<Resources, EngineError> {
        let listed = run_ok(runner, &self.ps_invocation(service))?;
        let containers: Vec<String> = ids(&listed.stdout).into_iter().map(String::from).collect();
        if containers.is_empty() {
            return Ok(Resources {
                note: Some("the service has no containers".into()),
                ..Resources::default()
            });
        }
        let inv = self.inspect_invocation(&containers);
        let out = run_ok(runner, &inv)?;
        let mut each = Vec::new();
        for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f[..] {
                [_, cpus, mem] => match (cpus.parse::<u64>(), mem.parse::<u64>()) {
                    (Ok(c), Ok(m)) => each.push((c, m)),
                    _ => return Err(unexpected(&inv, line)),
                },
                _ => return Err(unexpected(&inv, line)),
            }
        }
        let limits = Limits {
            nano_cpus: agreed(each.iter().map(|e| e.0)),
            memory: agreed(each.iter().map(|e| e.1)),
        };
        let note = (limits.nano_cpus.is_none() || limits.memory.is_none())
            .then(|| format!("the {} containers' limits differ", each.len()));
        Ok(Resources {
            limits,
            containers,
            note,
        })
    }

    fn resize_invocation(
        &self,
        _service: &str,
        to: &Limits,
        now: &Resources,
    ) -> Option<Invocation> {
        if now.containers.is_empty() {
            return None;
        }
        let mut inv = self.docker.docker().arg("update");
        if let Some(c) = to.nano_cpus {
            inv = inv.arg(flag("--cpus", cpus_text(c)));
        }
        if let Some(m) = to.memory {
            let m = memory_text(m);
            inv = inv.arg(flag("--memory", &m)).arg(flag("--memory-swap", &m));
        }
        Some(inv.arg("--").args(&now.containers))
    }

    fn limits_follow_new_containers(&self) -> bool {
        false
    }
}

fn unexpected(inv: &Invocation, line: &str) -> EngineError {
    EngineError::Unexpected {
        command: inv.to_string(),
        output: clip(line),
        why: "expected a container id, its nano-CPUs and its memory limit".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{fail, ok, Scripted};
    use super::*;

    fn compose(version: Version) -> Compose {
        Compose {
            version,
            docker: DockerOptions {
                host: Some("tcp://127.0.0.1:2376".into()),
                tlsverify: true,
                cert_path: Some("/certs".into()),
                ..Default::default()
            },
            project: Project {
                files: vec!["/tmp/docker-compose.yml".into(), "over.yml".into()],
                name: Some("dockerlx".into()),
            },
        }
    }

    const TLS: [&str; 5] = [
        "--host=tcp://127.0.0.1:2376",
        "--tlsverify",
        "--tlscacert=/certs/ca.pem",
        "--tlscert=/certs/cert.pem",
        "--tlskey=/certs/key.pem",
    ];
    const PROJECT: [&str; 3] = [
        "--file=/tmp/docker-compose.yml",
        "--file=over.yml",
        "--project-name=dockerlx",
    ];
    const UP: [&str; 8] = [
        "up",
        "--detach",
        "--no-deps",
        "--no-recreate",
        "--scale",
        "web=3",
        "--",
        "web",
    ];

    #[test]
    fn v1_argv_is_the_talks_with_up_scale() {
        let c = compose(Version::V1);
        let mut want = vec!["docker-compose"];
        want.extend(TLS);
        want.extend(PROJECT);
        want.extend(UP);
        assert_eq!(c.scale_invocation("web", 3, Some(1)).argv(), want);
        assert_eq!(c.name(), "compose-v1");
    }

    #[test]
    fn v2_argv_puts_docker_options_before_compose() {
        let c = compose(Version::V2);
        let mut want = vec!["docker"];
        want.extend(TLS);
        want.push("compose");
        want.extend(PROJECT);
        want.extend(UP);
        assert_eq!(c.scale_invocation("web", 3, None).argv(), want);
        let mut ps = vec!["docker"];
        ps.extend(TLS);
        ps.push("compose");
        ps.extend(PROJECT);
        ps.extend(["ps", "--quiet", "--", "web"]);
        assert_eq!(c.ps_invocation("web").argv(), ps);
        assert_eq!(c.name(), "compose-v2");
    }

    #[test]
    fn v2_is_detected_by_asking_docker_compose_version() {
        let docker = DockerOptions {
            docker: "/usr/local/bin/docker".into(),
            host: Some("unix:///x".into()),
            ..Default::default()
        };
        let r = Scripted::new(vec![ok("Docker Compose version v2.27.0\n")]);
        assert_eq!(detect(&r, &docker), Version::V2);
        assert_eq!(
            r.seen_args(),
            [["/usr/local/bin/docker", "compose", "version"]]
        );
        let r = Scripted::new(vec![fail(1, "docker: 'compose' is not a docker command.")]);
        assert_eq!(detect(&r, &docker), Version::V1);
        let r = Scripted::new(vec![Err(EngineError::Spawn {
            program: "docker".into(),
            reason: "not found".into(),
        })]);
        assert_eq!(detect(&r, &docker), Version::V1);
    }

    #[test]
    fn count_is_the_running_containers_of_the_service() {
        let c = compose(Version::V2);
        // v2 prints short IDs; docker ps --no-trunc full ones. One of ours is stopped, and
        // another project's container of the same service name is running.
        let r = Scripted::new(vec![
            ok("aaaa1111\nbbbb2222\ncccc3333\n"),
            ok("aaaa1111ffff\ncccc3333ffff\ndddd4444ffff\n"),
        ]);
        assert_eq!(c.current(&r, "web").unwrap(), 2);
        let seen = r.seen_args();
        assert_eq!(
            seen[1][seen[1].len() - 8..],
            [
                "ps",
                "--quiet",
                "--no-trunc",
                "--filter",
                "status=running",
                "--filter",
                "label=com.docker.compose.service=web",
                "--filter",
                "label=com.docker.compose.oneoff=False"
            ][1..]
        );
        assert_eq!(seen[1][0], "docker");
        // No containers: no second question.
        let r = Scripted::new(vec![ok("")]);
        assert_eq!(c.current(&r, "web").unwrap(), 0);
        assert_eq!(r.seen_args().len(), 1);
    }

    #[test]
    fn a_compose_error_is_an_engine_failure_with_its_stderr() {
        let c = compose(Version::V1);
        let r = Scripted::new(vec![fail(1, "ERROR: No such service: web\n")]);
        match c.current(&r, "web").unwrap_err() {
            EngineError::Failed { status, stderr, .. } => {
                assert_eq!(status, Some(1));
                assert_eq!(stderr, "ERROR: No such service: web");
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn resize_updates_every_container_of_the_service() {
        let c = compose(Version::V2);
        let r = Scripted::new(vec![
            ok("aaaa\nbbbb\n"),
            ok("aaaa11 1000000000 268435456\nbbbb22 1000000000 268435456\n"),
        ]);
        let now = c.resources(&r, "web").unwrap();
        assert_eq!(
            now.limits,
            Limits {
                nano_cpus: Some(1_000_000_000),
                memory: Some(256 << 20)
            }
        );
        assert_eq!(now.note, None);
        let seen = r.seen_args();
        let mut want = vec!["docker"];
        want.extend(TLS);
        want.extend([
            "inspect",
            "--type",
            "container",
            "--format",
            "{{.Id}} {{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}",
            "--",
            "aaaa",
            "bbbb",
        ]);
        assert_eq!(seen[1], want);
        let to = Limits {
            nano_cpus: Some(500_000_000),
            memory: Some(128 << 20),
        };
        let mut want = vec!["docker"];
        want.extend(TLS);
        want.extend([
            "update",
            "--cpus=0.5",
            "--memory=128m",
            "--memory-swap=128m",
            "--",
            "aaaa",
            "bbbb",
        ]);
        assert_eq!(c.resize_invocation("web", &to, &now).unwrap().argv(), want);
        // Only the CPUs: memory is left alone.
        let cpus = Limits {
            nano_cpus: Some(2_000_000_000),
            memory: None,
        };
        let argv = c.resize_invocation("web", &cpus, &now).unwrap().argv();
        assert_eq!(
            argv[argv.len() - 4..],
            ["update", "--cpus=2", "--", "aaaa", "bbbb"][1..]
        );
        assert!(!c.limits_follow_new_containers());
    }

    #[test]
    fn resize_of_containers_that_disagree_or_are_none() {
        let c = compose(Version::V1);
        let r = Scripted::new(vec![
            ok("a\nb\n"),
            ok("a1 0 268435456\nb1 500000000 268435456\n"),
        ]);
        let now = c.resources(&r, "web").unwrap();
        assert_eq!(
            now.limits,
            Limits {
                nano_cpus: None,
                memory: Some(256 << 20)
            }
        );
        assert_eq!(now.note.as_deref(), Some("the 2 containers' limits differ"));
        let r = Scripted::new(vec![ok("")]);
        let none = c.resources(&r, "web").unwrap();
        assert!(none.containers.is_empty());
        assert_eq!(c.resize_invocation("web", &Limits::default(), &none), None);
        let r = Scripted::new(vec![ok("a\n"), ok("<no value>\n")]);
        assert!(matches!(
            c.resources(&r, "web"),
            Err(EngineError::Unexpected { .. })
        ));
    }

    #[test]
    fn service_names() {
        for good in ["web", "Web_1", "a.b-c", "9lives", &"x".repeat(255)] {
            assert!(validate_service(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "--help",
            "-f/etc/x",
            "_x",
            ".x",
            "a b",
            "a/b",
            "a;b",
            "a=b",
            "$(x)",
            "wéb",
            &"x".repeat(256),
        ] {
            assert!(validate_service(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            validate_service("--help").unwrap_err().to_string(),
            "invalid service name \"--help\": it looks like an option"
        );
    }
}
