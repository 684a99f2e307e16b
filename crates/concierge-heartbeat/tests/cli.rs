//! The heartbeat's command-line contract, and its stop behaviour while Zabbix is unreachable
//! (fault injection: a closed port). Behaviour against a real server is in the workspace's
//! tests/heartbeat_lab.rs.

use std::net::TcpListener;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use assert_cmd::Command;
use predicates::prelude::*;

fn heartbeat() -> Command {
    Command::cargo_bin("concierge-heartbeat").unwrap()
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn usage_errors_print_minus_seven() {
    for args in [
        vec!["alive", "-z", "127.0.0.1", "-s", "h"],
        vec!["0.5", "-z", "127.0.0.1", "-s", "h"],
        vec!["up", "-z", "-", "-s", "h"],
        vec!["up", "-s", "h"],
        vec!["up", "-z", "127.0.0.1", "-s", "h", "--key", "bad key"],
        vec!["up", "-z", "127.0.0.1", "-s", "h", "--every", "0s"],
    ] {
        heartbeat()
            .args(&args)
            .assert()
            .code(1)
            .stdout("-7\n")
            .stderr(predicate::function(|e: &str| e.lines().count() == 1));
    }
}

#[test]
fn one_shot_to_a_closed_port_is_unreachable_within_the_deadline() {
    let t = Instant::now();
    heartbeat()
        .args(["up", "-s", "h", "-t", "1s", "-z"])
        .arg(format!("127.0.0.1:{}", closed_port()))
        .assert()
        .code(1)
        .stdout("-3\n");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn sigterm_during_an_outage_ends_the_coprocess_promptly() {
    let mut child = StdCommand::cargo_bin("concierge-heartbeat")
        .unwrap()
        .args(["up", "--every", "500ms", "-s", "h", "-t", "2s", "-z"])
        .arg(format!("127.0.0.1:{}", closed_port()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "beats on through the outage"
    );
    let status = StdCommand::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let t = Instant::now();
    let out = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "still running 6 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The goodbye could not be delivered: a failure, said on stderr; nothing on stdout.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("sending container.state=0"), "{stderr}");
    assert!(stderr.contains("was not delivered"), "{stderr}");
}
