//! The heartbeat's command-line contract, and its stop behaviour while Zabbix is unreachable
//! (fault injection: a closed port). Behaviour against a real server is in the workspace's
//! tests/heartbeat_lab.rs.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command as StdCommand, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use assert_cmd::Command;
use predicates::prelude::*;

fn heartbeat() -> Command {
    let mut c = Command::cargo_bin("concierge-heartbeat").unwrap();
    // Off the machine's state directory, where the default spool would be.
    c.env("CONCIERGE_STATE_DIR", "/nonexistent/concierge-tests-state");
    c
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
        // Below the 100 ms floor: a busy loop against the server (issue 15).
        vec!["up", "-z", "127.0.0.1", "-s", "h", "--every", "1ms"],
        vec!["up", "-z", "127.0.0.1", "-s", "h", "--every", "99ms"],
        vec!["up", "-z", "127.0.0.1", "-s", "h", "-p", "0"],
        vec!["up", "-z", "127.0.0.1", "-s", "h", "-I", "192.0.2.1"],
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
        .map(|mut c| {
            c.env("CONCIERGE_STATE_DIR", "/nonexistent/concierge-tests-state");
            c
        })
        .unwrap()
        .args(["up", "--every", "500ms", "-s", "h", "-t", "2s", "-z"])
        .arg(format!("127.0.0.1:{}", closed_port()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // stderr, line by line, as it comes.
    let (tx, lines) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Readiness: the first beat has failed (so the stop signals are blocked and the outage is
    // under way), said on stderr.
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("beat failed (will keep beating)"))
    {
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("no failed beat within 10 s ({e}): {seen:?}"),
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "beats on through the outage"
    );
    let status = StdCommand::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let pid = child.id().to_string();
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    let Ok(out) = exited.recv_timeout(Duration::from_secs(6)) else {
        let _ = StdCommand::new("kill").args(["-KILL", &pid]).status();
        panic!("still running 6 s after SIGTERM: {seen:?}");
    };
    let out = out.unwrap();
    // stderr is closed now: the reader has everything.
    reader.join().unwrap();
    seen.extend(lines.try_iter());
    let stderr = seen.join("\n");
    // The goodbye could not be delivered: a failure, said on stderr; nothing on stdout.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("sending container.state=0"), "{stderr}");
    assert!(stderr.contains("was not delivered"), "{stderr}");
}
