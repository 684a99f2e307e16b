//! The Debian package as an admin gets it: `make deb`, installed into clean Debian 12 and 13
//! roots (copies of pristine `debootstrap --variant=minbase` roots that scripts/debian-root.sh
//! makes once per machine), next to Debian's own zabbix-agent. There every tool answers
//! --version, `man concierge-courier` works, each tool does one real job, the package starts
//! nothing, the state directory belongs to user zabbix, and the root's agent runs the shipped
//! UserParameters against the lab: discovery creates the items and the courier fills them.
//!
//! Needs root (chroot, mount) and the lab; without root it prints SKIPPED, unless
//! CONCIERGE_REQUIRE_LAB=1 (make test), where a missing root is a failure. Costs: the static
//! build of `make deb` (about 2 min from cold on 2 cores, seconds when cached), the pristine
//! roots once per machine (about 90 s each, in parallel), then about 1 min per run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use concierge_testkit::*;
use serde_json::json;

/// How many tools the package ships (each in /usr/bin/concierge-*).
const TOOL_COUNT: usize = 5;
/// The courier item of the "Concierge app" template, as item.get shows it.
const COURIER_KEY: &str = "concierge.courier[all,{$METRICS_URL},{HOST.HOST}]";

/// True when this process may chroot; else a visible SKIPPED (or a failure under make test).
fn may_chroot(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().nth(1))
        == Some("0");
    let required = std::env::var("CONCIERGE_REQUIRE_LAB").as_deref() == Ok("1");
    assert!(
        root || !required,
        "{test}: needs root (debootstrap, chroot, mount)"
    );
    if !root {
        note(&format!(
            "SKIPPED {test}: not root (the package test needs chroot)"
        ));
    }
    root
}

/// `make deb`, once per test process, with this build's target directory; the package path.
fn deb() -> PathBuf {
    static DEB: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = DEB.get_or_init(|| {
        let started = Instant::now();
        let out = Command::new("make")
            .args(["--no-print-directory", "deb"])
            .current_dir(repo_root())
            .env("CARGO_TARGET_DIR", concierge_testkit::docker::target_dir())
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("starting make: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "make deb: {}\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let path = PathBuf::from(stdout.lines().last().unwrap_or_default());
        note(&format!(
            "make deb: {} in {:.1?}",
            path.display(),
            started.elapsed()
        ));
        Ok(path)
    });
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// A fresh copy of a pristine Debian root, with /proc mounted. Dropping it stops what runs
/// in it, unmounts /proc and deletes it (only if nothing is mounted below it any more).
struct Root {
    path: PathBuf,
    suite: &'static str,
}

impl Root {
    fn fresh(suite: &'static str) -> Root {
        let started = Instant::now();
        let pristine = Command::new("bash")
            .arg(repo_root().join("scripts/debian-root.sh"))
            .args(["pristine", suite])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/debian-root.sh");
        assert!(pristine.status.success(), "debian-root.sh pristine {suite}");
        let pristine = PathBuf::from(String::from_utf8_lossy(&pristine.stdout).trim());
        // Tests of one process run concurrently: each root gets its own name.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("concierge-root-{suite}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let copy = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&pristine)
            .arg(&path)
            .status()
            .expect("cp");
        assert!(copy.success(), "copying {}", pristine.display());
        let root = Root { path, suite };
        let mount = Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(root.path.join("proc"))
            .status()
            .expect("mount");
        assert!(mount.success(), "mounting proc in {}", root.path.display());
        note(&format!(
            "{suite}: fresh root {} in {:.1?}",
            root.path.display(),
            started.elapsed()
        ));
        root
    }

    /// `chroot ROOT args…` (as `user` if given), with a plain environment.
    fn command(&self, user: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new("chroot");
        if let Some(u) = user {
            cmd.arg(format!("--userspec={u}:{u}"));
        }
        cmd.arg(&self.path)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .env("HOME", "/root")
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// Run `args` in the root, within `limit`.
    fn run(&self, args: &[&str], limit: Duration) -> Run {
        run_command(&mut self.command(None, args), limit)
    }

    fn file(&self, path: &str) -> PathBuf {
        self.path.join(path.trim_start_matches('/'))
    }

    fn write(&self, path: &str, text: &str) {
        let file = self.file(path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir for {path}: {e}"));
        }
        std::fs::write(file, text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }

    /// The pids of the processes whose root directory is this root.
    fn processes(&self) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r == self.path)
            })
            .collect()
    }

    /// `owner:group mode` of a path in the root, as the root's own stat sees it.
    fn owner(&self, path: &str) -> String {
        let run = self
            .run(&["stat", "-c", "%U:%G %a", path], Duration::from_secs(10))
            .ok();
        run.stdout.trim().to_string()
    }

    fn mounts_below(&self) -> Vec<String> {
        let prefix = format!("{}/", self.path.display());
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        for pid in self.processes() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = Command::new("umount").arg(self.path.join("proc")).status();
        let left = self.mounts_below();
        if left.is_empty() {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            note(&format!(
                "{}: leaving {} in place: still mounted: {left:?}",
                self.suite,
                self.path.display()
            ));
        }
    }
}

/// Install `deb` in the root with dpkg; the run.
fn install_deb(root: &Root, deb: &Path) -> Run {
    std::fs::copy(deb, root.file("/tmp/concierge.deb")).expect("copy the .deb into the root");
    root.run(
        &["dpkg", "-i", "/tmp/concierge.deb"],
        Duration::from_secs(120),
    )
    .ok()
}

/// Debian's zabbix-agent from the root's cache (no network), kept from starting.
fn install_agent(root: &Root) {
    root.write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n");
    let policy = Command::new("chmod")
        .args(["0755"])
        .arg(root.file("/usr/sbin/policy-rc.d"))
        .status()
        .expect("chmod");
    assert!(policy.success());
    root.run(
        &[
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            "--no-download",
            "zabbix-agent",
        ],
        Duration::from_secs(300),
    )
    .ok();
}

/// What installing the package must and must not have done.
fn check_installed(root: &Root, version_line: &str) {
    assert!(
        root.processes().is_empty(),
        "{}: the package left processes running: {:?}",
        root.suite,
        root.processes()
    );
    let mut tools: Vec<String> = std::fs::read_dir(root.file("/usr/bin"))
        .expect("/usr/bin")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("concierge-"))
        .collect();
    tools.sort();
    assert_eq!(tools.len(), TOOL_COUNT, "{}: {tools:?}", root.suite);
    for tool in &tools {
        let run = root.run(&[tool, "--version"], Duration::from_secs(10)).ok();
        assert_eq!(
            run.stdout.lines().next(),
            Some(format!("{tool} {version_line}").as_str()),
            "{}: {run}",
            root.suite
        );
        assert!(
            run.stdout.contains("Zabbix protocols tested: 6.0 and 7.0"),
            "{run}"
        );
    }
    let man = root
        .run(
            &[
                "env",
                "MANPAGER=cat",
                "MANWIDTH=100",
                "man",
                "concierge-courier",
            ],
            Duration::from_secs(30),
        )
        .ok();
    for needle in ["NAME", "Collect an app's metrics", "EXAMPLES", "SEE ALSO"] {
        assert!(
            man.stdout.contains(needle),
            "{}: no {needle:?}: {man}",
            root.suite
        );
    }
    for file in [
        "/usr/share/bash-completion/completions/concierge-courier",
        "/usr/share/zsh/vendor-completions/_concierge-courier",
        "/usr/share/fish/vendor_completions.d/concierge-courier.fish",
        "/usr/share/concierge/templates/concierge_app.yaml",
        "/etc/logrotate.d/concierge",
        "/usr/lib/systemd/system/concierge-heartbeat@.service",
    ] {
        assert!(root.file(file).is_file(), "{}: no {file}", root.suite);
    }
    let userparameters = std::fs::read_to_string(
        root.file("/etc/zabbix/zabbix_agentd.conf.d/userparameter_concierge.conf"),
    )
    .expect("the UserParameter file");
    assert!(
        userparameters.contains(",/usr/bin/concierge-courier ")
            && !userparameters.contains("/usr/local/"),
        "the UserParameters must call the packaged tools:\n{userparameters}"
    );
}

/// One real job per tool that needs no lab (discover, courier, scale as user zabbix).
fn check_offline_jobs(root: &Root) {
    std::fs::copy(
        repo_root().join("tests/fixtures/metrics.json"),
        root.file("/tmp/metrics.json"),
    )
    .expect("fixture");
    let lld = root
        .run(
            &["concierge-discover", "timers", "/tmp/metrics.json"],
            Duration::from_secs(10),
        )
        .ok();
    assert!(
        lld.stdout.contains(r#"{"{#TIMER}":"my.test-timer-0"}"#),
        "{lld}"
    );
    let lines = root
        .run(
            &[
                "concierge-courier",
                "all",
                "/tmp/metrics.json",
                "--dry-run",
                "-s",
                "h",
            ],
            Duration::from_secs(10),
        )
        .ok();
    assert!(
        lines
            .stdout
            .contains(r#""h" "timer[my.test-timer-0.p95]" "#),
        "{lines}"
    );
    // The state directory is usable by user zabbix, as the server runs concierge-scale.
    let scale = run_command(
        &mut root.command(
            Some("zabbix"),
            &["concierge-scale", "up", "--dry-run", "--", "shop", "1"],
        ),
        Duration::from_secs(20),
    );
    assert_eq!(scale.code, Some(0), "{scale}");
    assert_eq!(scale.stdout, "2\n", "{scale}");
    assert_eq!(
        root.owner("/var/lib/concierge/scale-events.jsonl")
            .split(' ')
            .next(),
        Some("zabbix:zabbix"),
        "{scale}"
    );
}

/// zabbix_agentd of the root, running in it (active checks only), stopped on drop.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(root: &Root, host: &str, trapper: &str) -> Agent {
    root.write(
        "/etc/zabbix/zabbix_agentd.conf",
        &format!(
            "Hostname={host}\nServerActive={trapper}\nServer=127.0.0.1\nStartAgents=0\n\
             Timeout=4\nRefreshActiveChecks=60\nBufferSend=1\nLogType=file\n\
             LogFile=/var/log/zabbix-agent/zabbix_agentd.log\nPidFile=/run/zabbix/zabbix_agentd.pid\n\
             Include=/etc/zabbix/zabbix_agentd.conf.d/*.conf\n"
        ),
    );
    root.run(
        &[
            "install",
            "-d",
            "-o",
            "zabbix",
            "-g",
            "zabbix",
            "/run/zabbix",
        ],
        Duration::from_secs(10),
    )
    .ok();
    let child = root
        .command(
            None,
            &[
                "/usr/sbin/zabbix_agentd",
                "-f",
                "-c",
                "/etc/zabbix/zabbix_agentd.conf",
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the root's zabbix_agentd");
    Agent(child)
}

/// The latest history value of each of `keys` on `host` (keys without an item or a value
/// are absent).
fn latest(lab: &Lab, host: &Host, keys: &[&str]) -> anyhow::Result<Vec<(String, f64)>> {
    let mut found = Vec::new();
    for item in host
        .items()?
        .into_iter()
        .filter(|i| keys.contains(&i.key.as_str()))
    {
        if let Some(row) = lab
            .history(std::slice::from_ref(&item.itemid), item.value_type)?
            .pop()
        {
            found.push((item.key, row.value.parse().unwrap_or(f64::NAN)));
        }
    }
    Ok(found)
}

/// The root's agent runs the packaged UserParameters for a lab host linked to "Concierge app":
/// items are discovered and delivered; the tools' stderr log is written as user zabbix and
/// rotates with the packaged logrotate file. Then heartbeat and setup do one real call each.
fn check_against_the_lab(root: &Root, lab: &Lab) {
    // Two roots may run this at once: one template import at a time.
    static IMPORT: Mutex<()> = Mutex::new(());
    {
        let _one = IMPORT.lock().unwrap_or_else(|e| e.into_inner());
        for file in ["concierge_heartbeat.yaml", "concierge_app.yaml"] {
            lab.import_template_file(file).expect("import template");
        }
    }
    let template = lab.template_id("Concierge app").expect("app template");
    let doc = std::fs::read(repo_root().join("tests/fixtures/metrics.json")).expect("fixture");
    let server = MetricsServer::serve(doc);
    let name = unique_host(&format!("deb{}", root.suite));
    let macros: Vec<_> = [
        ("{$METRICS_URL}", server.url()),
        ("{$COURIER_INTERVAL}", "5s".into()),
        ("{$DISCOVERY_INTERVAL}", "10s".into()),
    ]
    .into_iter()
    .map(|(m, value)| json!({"macro": m, "value": value}))
    .collect();
    let host = lab.create_host_with(
        &name,
        json!({"templates": [{"templateid": template}], "macros": macros}),
    );
    let started = Instant::now();
    lab.wait_until_accepted(&name, "concierge.load", "0");
    let agent = start_agent(root, &name, lab.server());
    let p95 = "timer[my.test-timer-0.p95]";
    let values = wait_for(
        "the root's agent to discover and deliver",
        Duration::from_secs(150),
        || {
            let got = latest(lab, &host, &[COURIER_KEY, p95])?;
            let ok =
                |k: &str, f: &dyn Fn(f64) -> bool| got.iter().any(|(key, v)| key == k && f(*v));
            if ok(COURIER_KEY, &|v| v > 0.0) && ok(p95, &|v| close(v, 0.0084)) {
                return Ok(Some(got));
            }
            let log = std::fs::read_to_string(root.file("/var/log/zabbix-agent/concierge.log"))
                .unwrap_or_default();
            anyhow::bail!("latest values {got:?}; tools' log: {log:?}")
        },
    );
    let delivered_after = started.elapsed();

    // The UserParameters' log: created by the agent's user, rotated by the packaged file, and
    // opened anew by the next run.
    let log = "/var/log/zabbix-agent/concierge.log";
    assert_eq!(root.owner(log).split(' ').next(), Some("zabbix:zabbix"));
    root.run(
        &[
            "logrotate",
            "-f",
            "-s",
            "/tmp/logrotate.state",
            "/etc/logrotate.d/concierge",
        ],
        Duration::from_secs(30),
    )
    .ok();
    assert!(root.file(&format!("{log}.1")).is_file(), "not rotated");
    wait_for(
        "the next run to open a new log",
        Duration::from_secs(60),
        || Ok(root.file(log).is_file().then_some(())),
    );

    // concierge-heartbeat: one beat to the host's container.state, through "localhost" (the
    // static binary resolves names with the root's own /etc/hosts).
    let beat = root
        .run(
            &[
                "concierge-heartbeat",
                "up",
                "-z",
                &lab.server().replacen("127.0.0.1", "localhost", 1),
                "-s",
                &name,
            ],
            Duration::from_secs(10),
        )
        .assert_success();
    // concierge-setup: imports the embedded templates through the lab's API (idempotent).
    let setup = {
        let _one = IMPORT.lock().unwrap_or_else(|e| e.into_inner());
        root.run(
            &[
                "concierge-setup",
                "--api",
                lab.api_url(),
                "--user",
                lab.facts().credentials().0,
                "--password",
                lab.facts().credentials().1,
            ],
            Duration::from_secs(120),
        )
        .ok()
    };
    assert!(setup.stdout.contains("template Concierge app"), "{setup}");
    drop(agent);
    let mut summary = String::new();
    let _ = write!(
        summary,
        "{}: the root's agent discovered and delivered in {delivered_after:.1?} ({values:?}); \
         heartbeat {beat} s",
        root.suite
    );
    note(&summary);
}

/// Run `steps` on a fresh root of `suite` with the lab, unless the test must be skipped.
/// The root's own agent goes against the lab of its Zabbix version: Debian 12's 6.0 agent
/// against the 6.0 lab, Debian 13's 7.0 agent against the 7.0 lab.
fn package_test(test: &str, suite: &'static str, steps: impl FnOnce(&Root, &Lab, &Path)) {
    if !may_chroot(test) {
        return;
    }
    let version = match suite {
        "bookworm" => "6.0",
        _ => "7.0",
    };
    let Some(lab) = Lab::get(version) else { return };
    let started = Instant::now();
    let deb = deb();
    let root = Root::fresh(suite);
    steps(&root, &lab, &deb);
    note(&format!(
        "{suite}: package test done in {:.1?}",
        started.elapsed()
    ));
}

/// Debian 12: the package goes in first (no user zabbix yet: no state directory, a hint),
/// then the agent (6.0), then dpkg-reconfigure as the hint says.
#[test]
fn the_package_installs_and_works_on_debian_12_beside_its_zabbix_agent() {
    package_test(&current_test(), "bookworm", |root, lab, deb| {
        let first = install_deb(root, deb);
        assert!(
            first.stderr.contains("dpkg-reconfigure concierge"),
            "{first}"
        );
        assert!(
            !root.file("/var/lib/concierge").exists(),
            "a state dir for no user"
        );
        install_agent(root);
        root.run(&["dpkg-reconfigure", "concierge"], Duration::from_secs(60))
            .ok();
        assert_eq!(root.owner("/var/lib/concierge"), "zabbix:zabbix 750");
        check_installed(root, &version_line());
        check_offline_jobs(root);
        check_against_the_lab(root, lab);
    });
}

/// Debian 13: the agent first (7.0), then the package, which finds user zabbix; the systemd
/// unit verifies cleanly with the root's own systemd.
#[test]
fn the_package_installs_and_works_on_debian_13_beside_its_zabbix_agent() {
    package_test(&current_test(), "trixie", |root, lab, deb| {
        install_agent(root);
        let install = install_deb(root, deb);
        assert!(!install.stderr.contains("dpkg-reconfigure"), "{install}");
        assert_eq!(root.owner("/var/lib/concierge"), "zabbix:zabbix 750");
        check_installed(root, &version_line());
        check_offline_jobs(root);
        std::fs::create_dir_all(root.file("/etc/concierge/heartbeat")).expect("env dir");
        std::fs::copy(
            root.file("/usr/share/doc/concierge/examples/heartbeat.env"),
            root.file("/etc/concierge/heartbeat/shop.env"),
        )
        .expect("example env file");
        let verify = root
            .run(
                &[
                    "systemd-analyze",
                    "verify",
                    "concierge-heartbeat@shop.service",
                ],
                Duration::from_secs(60),
            )
            .ok();
        assert_eq!(verify.stderr, "", "{verify}");
        check_against_the_lab(root, lab);
    });
}

/// `<version> (git <rev>)`, as the tools built from this checkout print it after their name.
fn version_line() -> String {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo_root())
        .output()
        .expect("git");
    let rev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let rev = if out.status.success() {
        rev
    } else {
        "unknown".into()
    };
    format!("{} (git {rev})", env!("CARGO_PKG_VERSION"))
}

/// `make test` must not rewrite a Zabbix the lab did not install: in a clean Debian 12 root,
/// the lab script's guard refuses a root with someone's /etc/zabbix, passes with
/// ZLAB_TAKE_OVER=1 (and marks the lab as owner), then passes on its own; a root with no
/// Zabbix at all (a fresh CI machine) passes.
#[test]
fn the_lab_refuses_to_take_over_a_zabbix_it_did_not_install() {
    if !may_chroot(&current_test()) {
        return;
    }
    let root = Root::fresh("bookworm");
    // The lab script and what it sources, as a checkout at /tmp/lab would hold them.
    for file in ["zabbix-lab.sh", "lab-tls.sh"] {
        let text = std::fs::read_to_string(repo_root().join("scripts").join(file)).expect(file);
        root.write(&format!("/tmp/lab/scripts/{file}"), &text);
    }
    root.write(
        "/tmp/guard.sh",
        "source /tmp/lab/scripts/zabbix-lab.sh\nguard_host_zabbix\necho guard passed\n",
    );
    let guard = |env: &[&str]| {
        let mut args = vec!["env"];
        args.extend_from_slice(env);
        args.extend(["bash", "/tmp/guard.sh"]);
        root.run(&args, Duration::from_secs(30))
    };
    let mark = "/var/lib/concierge-lab/owns-host-zabbix";

    assert_eq!(
        guard(&[]).ok().stdout,
        "guard passed\n",
        "no Zabbix: a fresh machine"
    );
    std::fs::remove_file(root.file(mark)).expect("the guard marked the lab as owner");

    std::fs::create_dir_all(root.file("/etc/zabbix")).expect("mkdir /etc/zabbix");
    root.write("/etc/zabbix/zabbix_server.conf", "DBName=theirs\n");
    let refused = guard(&[]);
    assert_eq!(refused.code, Some(1), "{refused}");
    assert!(
        refused.stderr.contains("a Zabbix the lab did not install")
            && refused.stderr.contains("ZLAB_TAKE_OVER=1"),
        "{refused}"
    );
    assert!(!root.file(mark).exists(), "a refusal marks nothing");

    assert_eq!(guard(&["ZLAB_TAKE_OVER=1"]).ok().stdout, "guard passed\n");
    assert!(
        root.file(mark).exists(),
        "taking over marks the lab as owner"
    );
    assert_eq!(
        guard(&[]).ok().stdout,
        "guard passed\n",
        "the lab's own Zabbix"
    );
}
