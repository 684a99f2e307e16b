//! The Docker side of the end-to-end tests: is an engine there, a `FROM scratch` image of a
//! static binary of ours (built once per test process), and compose projects that are taken
//! down when dropped. No registry is reachable, so every image is built here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::{note, repo_root, temp_dir, wait_for};

/// The image every Docker test runs: the product image (`make image`), heartbeat as entrypoint.
pub const HEARTBEAT_IMAGE: &str = "concierge-e2e:latest";

/// True when the engine and docker-compose answer; else a visible SKIPPED line for `test`
/// (or a failure with `CONCIERGE_REQUIRE_DOCKER=1`).
pub fn available(test: &str) -> bool {
    static STATE: OnceLock<Result<(), String>> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        run("docker", &["info", "--format", "{{.ServerVersion}}"]).map_err(|e| format!("{e:#}"))?;
        run("docker-compose", &["version"]).map_err(|e| format!("{e:#}"))?;
        Ok(())
    });
    match state {
        Ok(()) => true,
        Err(why) => {
            skip(test, &format!("no Docker engine ({why})"));
            false
        }
    }
}

/// Which Docker Compose runs a [`Project`] (and which `--engine` concierge-scale is given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compose {
    /// `docker-compose`, Debian 12's 1.29.
    V1,
    /// `docker compose`, the CLI plugin (Debian 13's 2.x; scripts/install-compose-plugin.sh).
    V2,
}

impl Compose {
    /// concierge-scale's `--engine` for it.
    pub fn engine(self) -> &'static str {
        match self {
            Compose::V1 => "compose-v1",
            Compose::V2 => "compose-v2",
        }
    }

    /// The program and the arguments before compose's own.
    pub fn command(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Compose::V1 => ("docker-compose", &[]),
            Compose::V2 => ("docker", &["compose"]),
        }
    }
}

/// As [`available`], and `compose` answers too (v2: the plugin that `make test` installs).
pub fn available_with(test: &str, compose: Compose) -> bool {
    static V2: OnceLock<Result<(), String>> = OnceLock::new();
    if !available(test) {
        return false;
    }
    if compose == Compose::V1 {
        return true;
    }
    let state = V2.get_or_init(|| {
        let v = run("docker", &["compose", "version", "--short"]).map_err(|e| format!("{e:#}"))?;
        match v.trim().trim_start_matches('v').starts_with("2.") {
            true => Ok(()),
            false => Err(format!("docker compose {} is not v2", v.trim())),
        }
    });
    match state {
        Ok(()) => true,
        Err(why) => {
            skip(
                test,
                &format!("no compose v2 plugin (scripts/install-compose-plugin.sh): {why}"),
            );
            false
        }
    }
}

/// A visible `SKIPPED test: why` line, or a failure with `CONCIERGE_REQUIRE_DOCKER=1`: for
/// what a test needs of the engine beyond [`available`] (a swarm…).
pub fn skip(test: &str, why: &str) {
    if std::env::var("CONCIERGE_REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!("{test}: Docker engine not usable: {why}");
    }
    note(&format!("SKIPPED {test}: {why}"));
}

/// Run `program args` (an argument vector, never a shell); its stdout, or an error with its
/// stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("starting {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `docker args`.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    run("docker", args)
}

/// The heartbeat image, built once per test process (and cheaply again by later ones:
/// cargo and docker both cache).
pub fn heartbeat_image() -> &'static str {
    static BUILT: Mutex<Option<Result<(), String>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let result = built.get_or_insert_with(|| {
        build_image(HEARTBEAT_IMAGE.trim_end_matches(":latest")).map_err(|e| format!("{e:#}"))
    });
    if let Err(e) = result {
        panic!("building {HEARTBEAT_IMAGE}: {e}");
    }
    HEARTBEAT_IMAGE
}

/// `target/` of this checkout (the test executable lives in target/<profile>/deps).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// Build the product's image (`make image`: FROM scratch + the static binaries, the recipe in
/// packaging/Dockerfile) as `IMAGE:latest`; the tests' containers run what an admin would.
fn build_image(image: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let out = Command::new("make")
        .current_dir(repo_root())
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["--no-print-directory", "image"])
        .arg(format!("IMAGE={image}"))
        .output()
        .context("starting make image")?;
    if !out.status.success() {
        bail!(
            "make image failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    note(&format!(
        "built {image}:latest (make image) in {:.1?}",
        started.elapsed()
    ));
    Ok(())
}

/// A unique lower-case name (compose project names must be): prefix, pid and a counter.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A compose project of its own with one service `service` running `image` with `command`
/// (`network_mode: host`), taken down (containers removed) when dropped.
pub struct Project {
    pub name: String,
    pub service: String,
    pub file: PathBuf,
    /// The compose that starts and takes down the project (v1 unless [`Project::using`]).
    pub compose: Compose,
    dir: TempDir,
}

impl Project {
    /// Write the compose file (from tests/fixtures/scale/compose.yml) for a new project.
    pub fn new(service: &str, image: &str, command: &[String]) -> Self {
        Self::with_mounts(service, image, command, &[])
    }

    /// Like [`Project::new`], with each of `read_only` (absolute paths) mounted read-only at
    /// the same path in the containers (key files, say).
    pub fn with_mounts(service: &str, image: &str, command: &[String], read_only: &[&str]) -> Self {
        let dir = temp_dir("project");
        let template =
            std::fs::read_to_string(repo_root().join("tests/fixtures/scale/compose.yml"))
                .expect("compose fixture");
        let file = dir.path().join("docker-compose.yml");
        std::fs::write(
            &file,
            template
                .replace("@SERVICE@", service)
                .replace("@IMAGE@", image)
                .replace(
                    "@COMMAND@",
                    &serde_json::to_string(command).expect("JSON list"),
                ),
        )
        .expect("write compose file");
        if !read_only.is_empty() {
            let mut text = std::fs::read_to_string(&file).expect("compose file");
            text.push_str("    volumes:\n");
            for path in read_only {
                let mount = serde_json::to_string(&format!("{path}:{path}:ro")).expect("JSON");
                text.push_str(&format!("      - {mount}\n"));
            }
            std::fs::write(&file, text).expect("write compose file");
        }
        Self {
            name: unique("cproj"),
            service: service.to_string(),
            file,
            compose: Compose::V1,
            dir,
        }
    }

    /// The same project, run by `compose`.
    pub fn using(mut self, compose: Compose) -> Self {
        self.compose = compose;
        self
    }

    /// The project's own directory (for state and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `dir()/state`, the state directory for concierge-scale (not created here).
    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("state")
    }

    /// `docker-compose -f FILE -p NAME args` (or `docker compose …`).
    pub fn compose(&self, args: &[&str]) -> anyhow::Result<String> {
        let file = self.file.to_string_lossy();
        let (program, pre) = self.compose.command();
        let mut all = pre.to_vec();
        all.extend(["--file", &file, "--project-name", &self.name]);
        all.extend_from_slice(args);
        run(program, &all)
    }

    /// The service's running containers, by `docker ps` (not through any tool of ours).
    pub fn running(&self) -> anyhow::Result<BTreeSet<String>> {
        let project = format!("label=com.docker.compose.project={}", self.name);
        let service = format!("label=com.docker.compose.service={}", self.service);
        let mut args = vec!["ps", "--quiet", "--no-trunc"];
        for filter in ["status=running", &project, &service] {
            args.extend(["--filter", filter]);
        }
        let out = docker(&args)?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// Wait until exactly `n` containers run; their ids.
    pub fn wait_running(&self, n: usize, limit: Duration) -> BTreeSet<String> {
        wait_for(&format!("{n} running containers"), limit, || {
            let ids = self.running()?;
            if ids.len() == n {
                Ok(Some(ids))
            } else {
                bail!("{} running: {ids:?}", ids.len())
            }
        })
    }

    /// Start the service with `n` containers, independently of the tools.
    pub fn start(&self, n: usize, limit: Duration) -> BTreeSet<String> {
        self.compose(&[
            "up",
            "--detach",
            "--scale",
            &format!("{}={n}", self.service),
        ])
        .expect("compose up");
        self.wait_running(n, limit)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Err(e) = self.compose(&["down", "--timeout", "5", "--remove-orphans"]) {
            note(&format!("could not take down {}: {e:#}", self.name));
        }
    }
}
