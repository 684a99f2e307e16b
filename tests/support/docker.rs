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

use super::{note, repo_root, wait_for};

/// The target of the static builds (static-pie with `+crt-static`).
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// The heartbeat image every Docker test runs: `FROM scratch` + static concierge-heartbeat.
pub const HEARTBEAT_IMAGE: &str = "concierge-heartbeat:e2e";

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
        build_image("concierge-heartbeat", HEARTBEAT_IMAGE).map_err(|e| format!("{e:#}"))
    });
    if let Err(e) = result {
        panic!("building {HEARTBEAT_IMAGE}: {e}");
    }
    HEARTBEAT_IMAGE
}

/// `target/` of this checkout (the test executable lives in target/<profile>/deps).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// Build workspace crate `krate` statically and an image `tag` whose entrypoint it is.
fn build_image(krate: &str, tag: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let target = target_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo_root())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["build", "--release", "--target", STATIC_TARGET, "-p", krate])
        .arg("--target-dir")
        .arg(&target)
        .output()
        .context("starting cargo")?;
    if !out.status.success() {
        bail!(
            "static build of {krate} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let binary = target.join(STATIC_TARGET).join("release").join(krate);
    let ctx = TempDir::new("image");
    std::fs::copy(&binary, ctx.path().join(krate))
        .with_context(|| format!("copying {}", binary.display()))?;
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM scratch\nCOPY {krate} /{krate}\nENTRYPOINT [\"/{krate}\"]\n"),
    )?;
    docker(&["build", "-q", "-t", tag, &ctx.path().to_string_lossy()])?;
    note(&format!(
        "built {tag} (FROM scratch + static {krate}) in {:.1?}",
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

/// A temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system's temp dir.
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(unique(&format!("concierge-e2e-{tag}-")));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create a temporary directory");
        Self(p)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A compose project of its own with one service `service` running `image` with `command`
/// (`network_mode: host`), taken down (containers removed) when dropped.
pub struct Project {
    pub name: String,
    pub service: String,
    pub file: PathBuf,
    dir: TempDir,
}

impl Project {
    /// Write the compose file (from tests/fixtures/scale/compose.yml) for a new project.
    pub fn new(service: &str, image: &str, command: &[String]) -> Self {
        let dir = TempDir::new("project");
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
        // The Zabbix server runs concierge-scale as user zabbix: it must read the file.
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(dir.path())
            .status();
        Self {
            name: unique("cproj"),
            service: service.to_string(),
            file,
            dir,
        }
    }

    /// The project's own directory (for state and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `dir()/state`, the state directory for concierge-scale (not created here).
    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("state")
    }

    /// `docker-compose -f FILE -p NAME args`.
    pub fn compose(&self, args: &[&str]) -> anyhow::Result<String> {
        let file = self.file.to_string_lossy();
        let mut all = vec!["--file", &file, "--project-name", &self.name];
        all.extend_from_slice(args);
        run("docker-compose", &all)
    }

    /// The service's running containers, by `docker ps` (not through any tool of ours).
    pub fn running(&self) -> anyhow::Result<BTreeSet<String>> {
        let out = docker(&[
            "ps",
            "--quiet",
            "--no-trunc",
            "--filter",
            "status=running",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
            "--filter",
            &format!("label=com.docker.compose.service={}", self.service),
        ])?;
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
        .expect("docker-compose up");
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
