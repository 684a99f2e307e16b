//! concierge-setup's command line, without Zabbix: every invalid value is refused before
//! any request, with one line on stderr, nothing on stdout and exit status 1.

use std::process::{Command, Output};

/// A port nothing listens on: a request would fail with a connection error, not a usage one.
const NOWHERE: &str = "http://127.0.0.1:9/api_jsonrpc.php";

fn setup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_concierge-setup"))
        .args(args)
        .env_remove("ZABBIX_PASSWORD")
        .env_remove("ZABBIX_API_TOKEN")
        .output()
        .expect("run concierge-setup")
}

fn refused(args: &[&str], says: &str) {
    let out = setup(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", out.stdout);
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("concierge-setup: "), "{stderr}");
    assert!(
        stderr.contains(says),
        "{args:?}: expected {says:?} in {stderr}"
    );
}

fn service(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec![
        "--api",
        NOWHERE,
        "--password",
        "x",
        "--service",
        "web",
        "--compose-file",
        "/srv/web/compose.yml",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn credentials_are_required() {
    refused(&["--api", NOWHERE], "no credentials");
    refused(
        &["--api", NOWHERE, "--password", "a", "--token", "b"],
        "cannot be used with",
    );
}

#[test]
fn service_options_need_a_service_and_a_compose_file() {
    refused(
        &["--api", NOWHERE, "--password", "x", "--min", "2"],
        "--service",
    );
    refused(
        &["--api", NOWHERE, "--password", "x", "--service", "web"],
        "--compose-file",
    );
}

#[test]
fn shell_hazards_never_reach_the_script() {
    refused(
        &service(&["--scale-command", "/bin/scale\""]),
        "--scale-command",
    );
    refused(
        &service(&["--scale-command", "/bin/sca le"]),
        "--scale-command",
    );
    refused(&service(&["--state-dir", "/var/$(id)"]), "--state-dir");
    refused(&service(&["--state-dir", "/var/`id`"]), "--state-dir");
    refused(&service(&["--state-dir", "/var\\x"]), "--state-dir");
    refused(&service(&["--state-dir", "/var\nx"]), "--state-dir");
    refused(&service(&["-z", "zbx\"; rm -rf /"]), "--zabbix-server");
    refused(&service(&["--project", "a\"b"]), "project");
    refused(&service(&["--service-host", "a\"b"]), "service host");
    let mut bad_file = service(&[]);
    bad_file[7] = "/srv/$HOME/compose.yml";
    refused(&bad_file, "--compose-file");
    let mut bad_name = service(&[]);
    bad_name[5] = "we\"b";
    refused(&bad_name, "service name");
}

#[test]
fn numbers_and_intervals_are_checked_locally() {
    refused(
        &service(&["--min", "3", "--max", "2"]),
        "--min 3 is above --max 2",
    );
    refused(&service(&["--step", "0"]), "--step");
    refused(&service(&["--max", "-1"]), "--max");
    refused(&service(&["--cooldown", "5d"]), "--cooldown");
    refused(
        &service(&["--load-high", "0.2", "--load-low", "0.5"]),
        "--load-low",
    );
    refused(&service(&["--load-high", "NaN"]), "--load-high");
    refused(
        &service(&["--aggregate-interval", "0s"]),
        "--aggregate-interval",
    );
    refused(&service(&["--repeat-every", "30s"]), "--repeat-every");
    refused(&service(&["--repeat-every", "1.5m"]), "--repeat-every");
    refused(&service(&["-z", "zbx:0"]), "--zabbix-server");
    refused(&service(&["--timer", ""]), "--timer");
    refused(
        &service(&["--scale-agent", "docker-01,docker-02"]),
        "one agent address",
    );
    refused(&service(&["--scale-agent", "docker-01:0"]), "--scale-agent");
    refused(
        &["--api", NOWHERE, "--password", "x", "--scale-agent", "d"],
        "--service",
    );
}

#[test]
fn an_unreachable_api_is_one_line_and_exit_1() {
    let out = setup(&service(&[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("user.login"), "{stderr}");
}
