//! The command line, without a container engine: validation, exit statuses, dry runs with
//! kubectl's argument vectors, engines that fail, and the Zabbix push. Where a program must
//! "succeed" as an engine, `/bin/true` stands in for docker (it ignores its arguments); where
//! it must fail, `/bin/false`, a missing program, or the real kubectl against a closed
//! loopback port.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

/// A test's state directory, left for concierge-scale to create (a refused call must not),
/// inside a temporary directory that is removed when dropped.
struct Tmp {
    _root: tempfile::TempDir,
    dir: PathBuf,
}

impl Tmp {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        Self { _root: root, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn assert_untouched(&self) {
        assert!(
            !self.dir.exists(),
            "nothing may be created for a refused call"
        );
    }

    fn events(&self) -> Vec<Value> {
        fs::read_to_string(self.path("scale-events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn scale(tmp: &Tmp) -> Command {
    let mut c = Command::cargo_bin("concierge-scale").unwrap();
    c.arg("--state-dir")
        .arg(&tmp.dir)
        .timeout(Duration::from_secs(60));
    c
}

fn one_line(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes).into_owned();
    assert_eq!(s.lines().count(), 1, "expected one line: {s:?}");
    s
}

/// Run with `args`, expecting a refusal: exit status 1, nothing on stdout; its stderr line.
fn refused(tmp: &Tmp, args: &[&str]) -> String {
    let out = scale(tmp).args(args).assert().code(1).stdout("");
    one_line(&out.get_output().stderr)
}

#[test]
fn help_documents_exit_statuses_and_files() {
    let tmp = Tmp::new();
    scale(&tmp).arg("--help").assert().success().stdout(
        predicate::str::contains("Exit status:")
            .and(predicate::str::contains(
                "2  scaled, but recording it failed",
            ))
            .and(predicate::str::contains("--project-name"))
            .and(predicate::str::contains("--zabbix-port"))
            .and(predicate::str::contains(
                concierge_core::scaling::STATE_DIR_ENV,
            ))
            .and(predicate::str::contains(concierge_core::scaling::STATE_DIR)),
    );
}

#[test]
fn option_like_and_invalid_service_names_are_refused_before_anything_runs() {
    let tmp = Tmp::new();
    // A program that would leave a trace if it ran.
    let trace = tmp.path("never-created").display().to_string();
    for bad in ["--help", "-f/etc/x", "web;reboot", "a b", "_x", "../x", ""] {
        let engine = ["--engine", "compose-v1", "--docker-compose", &trace];
        let err = refused(&tmp, &[&engine[..], &["up", "--", bad]].concat());
        assert!(
            err.starts_with("concierge-scale: invalid service name"),
            "{bad:?}: {err}"
        );
    }
    // Without "--", a name that is not a known option still lands in SERVICE and is refused.
    scale(&tmp)
        .args(["up", "-f/etc/x"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("looks like an option"));
    tmp.assert_untouched();
}

#[test]
fn a_mistyped_option_is_named_not_taken_for_a_count() {
    let tmp = Tmp::new();
    let err = refused(&tmp, &["up", "svc", "--mx", "3"]);
    assert!(
        err.starts_with("concierge-scale: unexpected argument '--mx' found"),
        "{err}"
    );
    assert!(!err.contains("CURRENT"), "{err}");
    // clap's "did you mean" survives the one-line rendering.
    let err = refused(&tmp, &["up", "svc", "--cooldwn", "5m"]);
    assert!(
        err.contains("tip: a similar argument exists: '--cooldown'"),
        "{err}"
    );
    tmp.assert_untouched();
}

#[test]
fn numbers_are_validated() {
    let tmp = Tmp::new();
    for (args, msg) in [
        (
            vec!["up", "web", "-1"],
            "CURRENT \"-1\" must not be negative",
        ),
        (
            vec!["up", "web", "1", "-2"],
            "STEP \"-2\" must not be negative",
        ),
        (vec!["up", "web", "1", "0"], "STEP must be at least 1"),
        (vec!["up", "web", "99999999999999999999"], "too large"),
        (
            vec!["to", "web", "1", "1.5"],
            "TARGET \"1.5\" is not a whole number",
        ),
        (vec!["to", "web"], "to needs a TARGET"),
        (
            vec!["--min", "4", "--max", "3", "up", "web"],
            "--min 4 is above --max 3",
        ),
        (vec!["--max", "-1", "up", "web"], "--max"),
        (vec!["--max", "2000000", "up", "web"], "--max"),
        (vec!["--cooldown=-5s", "up", "web"], "must be positive"),
        (vec!["--cooldown", "5d", "up", "web"], "--cooldown"),
    ] {
        let err = refused(&tmp, &args);
        assert!(err.contains(msg), "{args:?}: {err}");
    }
}

#[test]
fn kubectl_dry_run_shows_the_argument_vector_and_changes_nothing() {
    let tmp = Tmp::new();
    let out = scale(&tmp)
        .args(["--engine", "kubectl", "--kubectl"])
        .arg(tmp.path("no-kubectl"))
        .args([
            "--kubeconfig",
            "/etc/kube/cfg",
            "--context",
            "lab",
            "-n",
            "shop",
        ])
        .args([
            "--dry-run",
            "--reason",
            "load high",
            "up",
            "statefulset/db",
            "2",
            "3",
        ])
        .assert()
        .success()
        .stdout("5\n")
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("using CURRENT 2"), "{err}");
    assert!(
        err.contains(": Would scale statefulset/db from 2 to 5 (dry run)"),
        "{err}"
    );
    let ev = tmp.events();
    assert_eq!(ev.len(), 1);
    let e = &ev[0];
    assert_eq!(e["outcome"], "dry-run");
    assert_eq!(e["engine"], "kubectl");
    assert_eq!(e["reason"], "load high");
    assert_eq!(e["count_source"], "hint");
    let argv: Vec<&str> = e["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        argv[1..],
        [
            "--kubeconfig=/etc/kube/cfg",
            "--context=lab",
            "--namespace=shop",
            "scale",
            "statefulset/db",
            "--replicas=5"
        ]
    );
    let files: Vec<_> = fs::read_dir(&tmp.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["scale-events.jsonl"], "a dry run keeps no state");
}

#[test]
fn real_kubectl_failure_is_passed_through() {
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        // Straight to fd 2: libtest captures eprintln!, and a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED real_kubectl_failure_is_passed_through: no kubectl installed"
        );
        return;
    }
    let tmp = Tmp::new();
    fs::create_dir_all(&tmp.dir).unwrap();
    // A cluster on a loopback port nobody listens on.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = tmp.path("kubeconfig");
    fs::write(
        &cfg,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {{server: \"https://127.0.0.1:{port}\"}}\n  name: c\n\
             contexts:\n- context: {{cluster: c, user: u}}\n  name: x\ncurrent-context: x\n\
             users:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .unwrap();
    let out = scale(&tmp)
        .env("HOME", &tmp.dir)
        .args(["--engine", "kubectl", "--kubeconfig"])
        .arg(&cfg)
        .args(["up", "web"])
        .assert()
        .code(1)
        .stdout("")
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("concierge-scale: web: cannot read the current count"),
        "{err}"
    );
    assert!(
        err.contains(&format!("127.0.0.1:{port}")),
        "kubectl's stderr: {err}"
    );
    let e = &tmp.events()[0];
    assert_eq!(e["outcome"], "failed");
    assert!(e["error"].as_str().unwrap().contains("refused"), "{e}");
}

#[test]
fn a_missing_engine_without_a_hint_fails_and_with_one_the_scale_fails() {
    let tmp = Tmp::new();
    scale(&tmp)
        .args([
            "--engine",
            "swarm",
            "--docker",
            "/nonexistent/docker",
            "up",
            "web",
        ])
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains("cannot run /nonexistent/docker"));
    // /bin/false as docker: the count falls back to the hint, the scaling fails.
    scale(&tmp)
        .args([
            "--engine",
            "swarm",
            "--docker",
            "/bin/false",
            "up",
            "web",
            "2",
        ])
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains("web: cannot scale from 2 to 3"));
    let outcomes: Vec<_> = tmp.events().iter().map(|e| e["outcome"].clone()).collect();
    // The second call's intent ("started") is logged before its engine fails.
    assert_eq!(outcomes, ["failed", "started", "failed"]);
}

#[test]
fn unusable_logs_stop_the_call_before_the_engine() {
    let tmp = Tmp::new();
    scale(&tmp)
        .args(["--engine", "swarm", "--docker", "/bin/true"])
        .args([
            "--event-log",
            "/nonexistent/dir/events.jsonl",
            "up",
            "web",
            "1",
        ])
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains(
            "cannot open the log /nonexistent/dir/events.jsonl",
        ));
    assert!(!tmp.path("swarm.%.web.state").exists());
}

#[test]
fn cooldown_bounds_and_human_log_through_the_cli() {
    let tmp = Tmp::new();
    // /bin/true as docker: it prints no count (so CURRENT is used) and "scales" fine.
    let run = |args: &[&str]| {
        let mut c = scale(&tmp);
        c.args(["--engine", "swarm", "--docker", "/bin/true", "--max", "3"])
            .args(["--cooldown", "1h", "--human-log"])
            .arg(tmp.path("scheduler_output"))
            .args(args);
        c
    };
    run(&["up", "web", "1", "1"])
        .assert()
        .success()
        .stdout("2\n");
    run(&["up", "web", "2", "1"])
        .assert()
        .success()
        .stdout("2\n");
    run(&["up", "web", "3", "1"])
        .assert()
        .success()
        .stdout("3\n");
    run(&["down", "web", "1", "1"])
        .assert()
        .success()
        .stdout("1\n");
    let outcomes: Vec<_> = tmp.events().iter().map(|e| e["outcome"].clone()).collect();
    assert_eq!(
        outcomes,
        ["started", "scaled", "cooldown", "clamped", "clamped"]
    );
    let human = fs::read_to_string(tmp.path("scheduler_output")).unwrap();
    let lines: Vec<&str> = human.lines().collect();
    assert_eq!(lines.len(), 4, "{human}");
    assert!(lines[0].ends_with("Z: Scaled web from 1 to 2"), "{human}");
    assert!(
        lines[1].contains(": Kept web at 2 (cooldown: last scaled "),
        "{human}"
    );
    assert!(
        lines[2].contains("Kept web at 3 (clamped: 4 is above max 3"),
        "{human}"
    );
}

/// A one-shot fake Zabbix trapper: answers one sender request, returns its JSON.
fn trapper(reply: &'static str) -> (u16, std::thread::JoinHandle<Value>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut header = [0u8; 13];
        s.read_exact(&mut header).unwrap();
        assert_eq!(&header[..5], b"ZBXD\x01");
        let len = u32::from_le_bytes(header[5..9].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        let mut frame = b"ZBXD\x01".to_vec();
        frame.extend_from_slice(&(reply.len() as u32).to_le_bytes());
        frame.extend_from_slice(&0u32.to_le_bytes());
        frame.extend_from_slice(reply.as_bytes());
        s.write_all(&frame).unwrap();
        serde_json::from_slice(&body).unwrap()
    });
    (port, h)
}

#[test]
fn the_new_count_is_pushed_to_zabbix() {
    let tmp = Tmp::new();
    let (port, got) = trapper(
        r#"{"response":"success","info":"processed: 1; failed: 0; total: 1; seconds spent: 0.000055"}"#,
    );
    scale(&tmp)
        .args(["--engine", "swarm", "--docker", "/bin/true"])
        .args(["--zabbix-item", "service.scale[web]", "-z"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-s", "scaler host", "up", "web", "1", "2"])
        .assert()
        .success()
        .stdout("3\n");
    let req = got.join().unwrap();
    assert_eq!(req["request"], "sender data");
    assert_eq!(req["data"][0]["host"], "scaler host");
    assert_eq!(req["data"][0]["key"], "service.scale[web]");
    assert_eq!(req["data"][0]["value"], "3");
    assert_eq!(tmp.events()[0]["outcome"], "started");
    assert_eq!(tmp.events()[1]["zabbix"], "sent");
}

#[test]
fn a_failed_push_after_a_scaling_exits_2_and_still_prints_the_count() {
    let tmp = Tmp::new();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = scale(&tmp)
        .args(["--engine", "swarm", "--docker", "/bin/true"])
        .args(["--zabbix-item", "service.scale[web]", "-s", "h", "-z"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["up", "web", "1"])
        .assert()
        .code(2)
        .stdout("2\n")
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .last()
            .unwrap_or_default()
            .starts_with("concierge-scale: web: scaled to 2, but the count did not reach Zabbix"),
        "{err}"
    );
    let e = &tmp.events()[1];
    assert_eq!(e["outcome"], "scaled");
    assert!(
        e["zabbix"].as_str().unwrap().contains("cannot reach"),
        "{e}"
    );
    // A dry run never pushes.
    scale(&tmp)
        .args(["--engine", "swarm", "--docker", "/bin/true", "--dry-run"])
        .args(["--zabbix-item", "k", "-s", "h", "-z"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["up", "web", "1"])
        .assert()
        .success()
        .stdout("2\n");
}

#[test]
fn zabbix_options_need_an_item_and_are_cores() {
    let tmp = Tmp::new();
    for opt in [["-z", "127.0.0.1"], ["-s", "h"], ["--zabbix-timeout", "2s"]] {
        scale(&tmp)
            .args(opt)
            .args(["up", "web"])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("--zabbix-item"));
    }
    // The checks of concierge-core's connection options hold here too.
    for (opt, says) in [
        (["--zabbix-port", "0"], "--zabbix-port"),
        (
            ["-I", "192.0.2.1"],
            "source address 192.0.2.1 cannot be used",
        ),
    ] {
        let push = ["--zabbix-item", "k", "-z", "127.0.0.1", "-s", "h"];
        let err = refused(&tmp, &[&push[..], &opt, &["up", "web", "1"]].concat());
        assert!(err.contains(says), "{opt:?}: {err}");
    }
    tmp.assert_untouched();
}

#[test]
fn bad_resize_sizes_are_refused_before_anything_runs() {
    let tmp = Tmp::new();
    for (args, says) in [
        (&["--cpus", "0"][..], "CPUs \"0\" must be more than 0"),
        (&["--cpus", "-1"], "--cpus"),
        (&["--cpus", "0.0005"], "more than 3 decimals"),
        (&["--memory", "12q"], "unknown unit"),
        (&["--memory", "0"], "must be more than 0"),
        (&[], "resize needs --cpus N, --memory SIZE or both"),
        (
            &["--memory", "1g", "--min-memory", "2g", "--max-memory", "1g"],
            "--min-memory 2g is above --max-memory 1g",
        ),
    ] {
        let err = refused(
            &tmp,
            &[&["--engine", "swarm", "resize", "web"][..], args].concat(),
        );
        assert!(
            err.starts_with("concierge-scale: ") && err.contains(says),
            "{args:?}: {err}"
        );
    }
    tmp.assert_untouched();
}
