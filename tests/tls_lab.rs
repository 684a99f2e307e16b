//! TLS to each real Zabbix lab (6.0 and 7.0), issue #12: a host that accepts only PSK takes the
//! courier's and the heartbeat's values over PSK and refuses them plain (code -14; on 7.0 at
//! times -4, see `assert_plain_refused`); a wrong key
//! and an unknown identity fail the handshake (-10); a malformed PSK file is -13; certificates
//! from the lab's CA (scripts/lab-tls.sh) are delivered, and a server certificate from another CA
//! (-11), or with another issuer or subject than required (-12), is refused. A peer that stalls
//! in the middle of the handshake cannot hold a run past -t (no lab needed for that one).
//! With autoregistration set by concierge-setup to require PSK, a container registers over PSK
//! and the attack (a plain announce with the service's metadata) registers nothing.
//! Every test has its own host and PSK identity (an identity is global on a server), deleted
//! at the end. Without the lab these tests print SKIPPED, unless CONCIERGE_REQUIRE_LAB=1.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use concierge_testkit::*;
use serde_json::json;

const COURIER: &str = "concierge-courier";
const HEARTBEAT: &str = "concierge-heartbeat";
const KEY: &str = "tls.test";
const KILL_AFTER: Duration = Duration::from_secs(20);
/// The lab's CA, server and client material (scripts/lab-tls.sh, made by `zabbix-lab.sh up`).
const TLS_DIR: &str = "/etc/concierge-lab/tls";
const CA_DN: &str = "CN=Concierge Lab CA,O=Concierge Lab";
const SERVER_DN: &str = "CN=concierge-lab-server,O=Concierge Lab";
const CLIENT_DN: &str = "CN=concierge-client,O=Concierge Lab";

fn material(name: &str) -> String {
    let p = Path::new(TLS_DIR).join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/zabbix-lab.sh up (it makes the lab's TLS material)",
        p.display()
    );
    p.display().to_string()
}

/// 32 random bytes as hex: a fresh PSK.
fn random_hex() -> String {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A PSK file (0600) holding `hex`.
fn psk_file(dir: &Path, name: &str, hex: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{hex}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

/// A host that accepts only PSK (identity unique to the test), with a trapper item `tls.test`
/// and `container.state`.
struct PskHost {
    host: Host,
    identity: String,
    psk: String,
}

fn psk_host(lab: &Lab, prefix: &str) -> PskHost {
    let name = unique_host(prefix);
    let identity = format!("{name}-psk");
    let psk = random_hex();
    let host = lab.create_host_with(
        &name,
        json!({"tls_accept": 2, "tls_psk_identity": identity, "tls_psk": psk}),
    );
    host.create_trapper_item(KEY, UNSIGNED);
    host.create_trapper_item("container.state", UNSIGNED);
    PskHost {
        host,
        identity,
        psk,
    }
}

fn courier_args<'a>(host: &'a Host, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "-z",
        host.lab.server(),
        "-s",
        host.name.as_str(),
        "-t",
        "5s",
        "-i",
        "-",
    ];
    a.extend_from_slice(extra);
    a
}

fn send(host: &Host, value: &str, extra: &[&str]) -> Run {
    let line = format!("- {KEY} {value}\n");
    run_tool(
        COURIER,
        &courier_args(host, extra),
        Some(line.as_bytes()),
        KILL_AFTER,
    )
}

/// Send until the server has loaded the host's TLS settings into its cache (about 1 s).
fn send_until_processed(host: &Host, value: &str, extra: &[&str]) -> Run {
    wait_for(
        "a TLS delivery to be processed",
        Duration::from_secs(60),
        || {
            let run = send(host, value, extra);
            match run.code {
                Some(0) => Ok(Some(run)),
                _ => Err(anyhow!("not yet: {run}")),
            }
        },
    )
}

fn assert_value_arrived(host: &Host, key: &str, value: &str) {
    let itemid = host.item_id(key).expect("item id");
    wait_for(
        &format!("{key}={value} in the history of {}", host.name),
        Duration::from_secs(30),
        || {
            let rows = host.lab.history(std::slice::from_ref(&itemid), UNSIGNED)?;
            Ok(rows.iter().any(|r| r.value == value).then_some(()))
        },
    );
}

fn assert_fails(run: &Run, code: i32, words: &str) {
    assert_eq!(run.value_line(), code.to_string(), "code {code}:\n{run}");
    assert_eq!(run.code, Some(1), "exit status 1:\n{run}");
    assert!(
        run.stderr.contains(words),
        "stderr should say {words:?}:\n{run}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "one line on stderr:\n{run}");
}

/// A plain delivery to a host that accepts only TLS was refused. 6.0 answers the active-checks
/// question that follows with `connection of type "unencrypted" is not allowed`, so the code is
/// -14; 7.0 answers it so only at times (else with success: the host is known), and then only
/// the sender reply's `failed: 1` tells: -4.
fn assert_plain_refused(lab: &Lab, run: &Run) {
    const WORDS: &str = "the server refused an unencrypted connection for this host";
    if lab.at_least(7, 0) && run.value_line() == "-4" {
        assert!(
            run.stderr.contains("processed: 0; failed: 1"),
            "refused:\n{run}"
        );
    } else {
        assert_fails(run, -14, WORDS);
    }
}

lab_test!(
    fn a_psk_host_takes_courier_and_heartbeat_over_psk_and_refuses_them_plain(lab: &Lab) {
        let h = psk_host(lab, "tls-psk");
        let dir = temp_dir("tls-psk");
        let file = psk_file(dir.path(), "psk", &h.psk);
        let psk = [
            "--tls-connect",
            "psk",
            "--tls-psk-identity",
            h.identity.as_str(),
            "--tls-psk-file",
            file.as_str(),
        ];
        send_until_processed(&h.host, "41", &psk).assert_success();
        assert_value_arrived(&h.host, KEY, "41");

        // The same from the agent config (-c with TLS* keys).
        let conf = dir.path().join("agent.conf");
        std::fs::write(
            &conf,
            format!(
                "ServerActive={}\nHostname={}\nTLSConnect=psk\nTLSPSKIdentity={}\nTLSPSKFile={file}\n\
                 TLSAccept=cert\nTLSCAFile=/nonexistent/only-for-TLSAccept.crt\n",
                lab.server(),
                h.host.name,
                h.identity
            ),
        )
        .unwrap();
        let conf = conf.display().to_string();
        let run = run_tool(
            COURIER,
            &["-c", conf.as_str(), "-i", "-"],
            Some(format!("- {KEY} 42\n").as_bytes()),
            KILL_AFTER,
        );
        run.assert_success();
        assert_value_arrived(&h.host, KEY, "42");

        let mut beat_args = vec!["up", "-z", lab.server(), "-s", h.host.name.as_str()];
        beat_args.extend_from_slice(&psk);
        let beat = run_tool(HEARTBEAT, &beat_args, None, KILL_AFTER);
        beat.assert_success();
        assert_value_arrived(&h.host, "container.state", "1");

        // Plain: the server's reply to the active-checks question names the refusal.
        assert_plain_refused(lab, &send(&h.host, "43", &[]));
        let beat = run_tool(
            HEARTBEAT,
            &["up", "-z", lab.server(), "-s", h.host.name.as_str()],
            None,
            KILL_AFTER,
        );
        assert_plain_refused(lab, &beat);
        let beat = run_tool(
            HEARTBEAT,
            &[
                "up",
                "--register",
                "-z",
                lab.server(),
                "-s",
                h.host.name.as_str(),
            ],
            None,
            KILL_AFTER,
        );
        assert_plain_refused(lab, &beat);
        let itemid = h.host.item_id(KEY).unwrap();
        let rows = lab.history(&[itemid], UNSIGNED).unwrap();
        assert!(
            !rows.iter().any(|r| r.value == "43"),
            "the plain value never arrived: {rows:?}"
        );
    }
);

lab_test!(
    fn a_wrong_psk_or_identity_fails_the_handshake_and_a_bad_psk_file_is_named(lab: &Lab) {
        let h = psk_host(lab, "tls-wrongpsk");
        let dir = temp_dir("tls-wrongpsk");
        let right = psk_file(dir.path(), "right", &h.psk);
        // Wait until the server knows the host's key, so the failures below are the key's.
        send_until_processed(
            &h.host,
            "1",
            &[
                "--tls-connect",
                "psk",
                "--tls-psk-identity",
                &h.identity,
                "--tls-psk-file",
                &right,
            ],
        );
        let wrong = psk_file(dir.path(), "wrong", &random_hex());
        let run = send(
            &h.host,
            "2",
            &[
                "--tls-connect",
                "psk",
                "--tls-psk-identity",
                &h.identity,
                "--tls-psk-file",
                &wrong,
            ],
        );
        assert_fails(&run, -10, "TLS handshake with");
        let stranger = format!("{}-stranger", h.identity);
        let run = send(
            &h.host,
            "3",
            &[
                "--tls-connect",
                "psk",
                "--tls-psk-identity",
                &stranger,
                "--tls-psk-file",
                &right,
            ],
        );
        assert_fails(&run, -10, "does not know the identity or its key differs");
        let bad = psk_file(dir.path(), "bad", "not-a-key");
        let run = send(
            &h.host,
            "4",
            &[
                "--tls-connect",
                "psk",
                "--tls-psk-identity",
                &h.identity,
                "--tls-psk-file",
                &bad,
            ],
        );
        assert_fails(&run, -13, "not hex digits");
        let missing = dir.path().join("missing").display().to_string();
        let run = send(
            &h.host,
            "5",
            &[
                "--tls-connect",
                "psk",
                "--tls-psk-identity",
                &h.identity,
                "--tls-psk-file",
                &missing,
            ],
        );
        assert_fails(&run, -13, "cannot read");
        // The host never got any of those values.
        let itemid = h.host.item_id(KEY).unwrap();
        let rows = lab.history(&[itemid], UNSIGNED).unwrap();
        assert!(
            rows.iter().all(|r| r.value == "1"),
            "only the PSK value arrived: {rows:?}"
        );
    }
);

fn cert_args(ca: &str, issuer: &str, subject: &str) -> Vec<String> {
    [
        "--tls-connect",
        "cert",
        "--tls-ca-file",
        ca,
        "--tls-cert-file",
        &material("client.crt"),
        "--tls-key-file",
        &material("client.key"),
        "--tls-server-cert-issuer",
        issuer,
        "--tls-server-cert-subject",
        subject,
    ]
    .map(str::to_string)
    .to_vec()
}

lab_test!(
    fn certificates_from_the_lab_ca_deliver_and_each_mismatch_is_refused(lab: &Lab) {
        let name = unique_host("tls-cert");
        let host = lab.create_host_with(
            &name,
            json!({"tls_accept": 4, "tls_issuer": CA_DN, "tls_subject": CLIENT_DN}),
        );
        host.create_trapper_item(KEY, UNSIGNED);
        let ca = material("ca.crt");
        let good = cert_args(&ca, CA_DN, SERVER_DN);
        let refs: Vec<&str> = good.iter().map(String::as_str).collect();
        send_until_processed(&host, "7", &refs).assert_success();
        assert_value_arrived(&host, KEY, "7");

        let rogue = material("rogue-ca.crt");
        for (args, code, words) in [
            (cert_args(&rogue, CA_DN, SERVER_DN), -11, "is not trusted"),
            (
                cert_args(&ca, "CN=Another CA,O=Concierge Lab", SERVER_DN),
                -12,
                "certificate issuer of",
            ),
            (
                cert_args(&ca, CA_DN, "CN=someone-else,O=Concierge Lab"),
                -12,
                "certificate subject of",
            ),
        ] {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = send(&host, "8", &refs);
            assert_fails(&run, code, words);
        }
        // A client certificate from a CA the server does not trust: the server ends the
        // handshake.
        let mut args = cert_args(&ca, CA_DN, SERVER_DN);
        args[5] = material("rogue-client.crt");
        args[7] = material("rogue-client.key");
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = send(&host, "9", &refs);
        assert_fails(&run, -10, "TLS handshake with");
        let itemid = host.item_id(KEY).unwrap();
        let rows = lab.history(&[itemid], UNSIGNED).unwrap();
        assert!(
            rows.iter().all(|r| r.value == "7"),
            "only the trusted delivery arrived: {rows:?}"
        );
    }
);

/// A peer that accepts TLS connections, reads the ClientHello and then says nothing.
struct Staller {
    port: u16,
    _thread: std::thread::JoinHandle<()>,
}

fn staller() -> Staller {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 4096];
            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = conn.read(&mut buf);
            // Half a ServerHello record header, then nothing: the client is mid-handshake.
            let _ = conn.write_all(&[0x16, 0x03]);
            held.push(conn);
        }
    });
    Staller {
        port,
        _thread: thread,
    }
}

#[test]
fn a_peer_that_stalls_mid_handshake_cannot_hold_the_run_past_its_deadline() {
    let peer = staller();
    let server = format!("127.0.0.1:{}", peer.port);
    let dir = temp_dir("tls-stall");
    let file = psk_file(dir.path(), "psk", &random_hex());
    let ca = dir.path().join("ca.crt");
    // Any certificate will do as a CA file: the handshake never gets that far.
    std::fs::write(&ca, STALL_CA).unwrap();
    let ca = ca.display().to_string();
    let cert_mode: PathBuf = Path::new(TLS_DIR).join("client.crt");
    let mut cases = vec![vec![
        "--tls-connect".to_string(),
        "psk".into(),
        "--tls-psk-identity".into(),
        "stall".into(),
        "--tls-psk-file".into(),
        file.clone(),
    ]];
    if cert_mode.is_file() {
        cases.push(vec![
            "--tls-connect".into(),
            "cert".into(),
            "--tls-ca-file".into(),
            ca,
            "--tls-cert-file".into(),
            material("client.crt"),
            "--tls-key-file".into(),
            material("client.key"),
        ]);
    }
    for tls in cases {
        for tool in [COURIER, HEARTBEAT] {
            let mut args: Vec<&str> = if tool == COURIER {
                vec!["-i", "-"]
            } else {
                vec!["up"]
            };
            args.extend(["-z", server.as_str(), "-s", "stall-host", "-t", "1s"]);
            args.extend(tls.iter().map(String::as_str));
            let started = Instant::now();
            let run = run_tool(
                tool,
                &args,
                Some(format!("- {KEY} 1\n").as_bytes()),
                KILL_AFTER,
            );
            let took = started.elapsed();
            assert_eq!(run.value_line(), "-6", "deadline exceeded:\n{run}");
            assert!(
                run.stderr.contains("in the TLS handshake with"),
                "stderr names the handshake:\n{run}"
            );
            assert!(
                took < Duration::from_millis(1800),
                "{tool} took {took:?} against a -t 1s deadline:\n{run}"
            );
        }
    }
}

/// A self-signed certificate (any will do for a CA file that is never used).
const STALL_CA: &str = include_str!("fixtures/tls-any-ca.crt");

lab_test!(
    fn setup_requires_psk_for_registration_and_a_plain_announce_registers_nothing(lab: &Lab) {
        let token = unique_host("tls-autoreg");
        let template = lab.heartbeat_template();
        let _action = lab.create_registration_action(&token, &template);
        let dir = temp_dir("tls-autoreg");
        let identity = format!("{token}-autoreg");
        let file = psk_file(dir.path(), "autoreg.psk", &random_hex());
        let attacker = format!("{token}-attacker");
        let container = format!("{token}-container");
        let _hosts = HostNamed {
            lab: lab.clone(),
            names: vec![attacker.clone(), container.clone()],
        };

        let _restore = PlainAutoregistration(lab.clone());
        let (user, password) = lab.facts().credentials();
        let imports = template_imports_lock();
        let setup = run_command(
            std::process::Command::new(bin("concierge-setup"))
                .args(["--api", lab.api_url(), "--user", user])
                .args(["--autoreg-psk-identity", identity.as_str()])
                .args(["--autoreg-psk-file", file.as_str()])
                .env("ZABBIX_PASSWORD", password),
            Duration::from_secs(120),
        );
        drop(imports);
        assert_eq!(setup.code, Some(0), "setup:\n{setup}");
        assert!(
            setup.stdout.contains("autoregistration"),
            "setup reports the change:\n{setup}"
        );

        let metadata = format!("concierge service=attack {token}");
        let psk = [
            "--tls-connect",
            "psk",
            "--tls-psk-identity",
            identity.as_str(),
            "--tls-psk-file",
            file.as_str(),
        ];
        let announce = |host: &str, tls: &[&str]| {
            let mut args = vec![
                "up",
                "--register",
                "--metadata",
                metadata.as_str(),
                "-z",
                lab.server(),
                "-s",
                host,
                "-t",
                "2s",
            ];
            args.extend_from_slice(tls);
            run_tool(HEARTBEAT, &args, None, KILL_AFTER)
        };
        let registered = |host: &str| {
            wait_for(
                &format!("the PSK-registered host {host}"),
                Duration::from_secs(90),
                || {
                    if let Some(accept) = tls_accept_of(lab, host)? {
                        return Ok(Some(accept));
                    }
                    let _ = announce(host, &psk);
                    Ok(None)
                },
            )
        };
        // A container over PSK first: once it is registered, the server has the settings.
        assert_eq!(
            registered(&container),
            "2",
            "the registered host accepts only PSK"
        );

        // The attack of issue #12: a raw announce with the service's metadata, no key.
        let plain = announce(&attacker, &[]);
        assert_ne!(
            plain.code,
            Some(0),
            "a plain announce is no success:\n{plain}"
        );
        // A second container after it: once that one exists, the attacker's was handled too.
        let second = format!("{token}-second");
        let _second = HostNamed::new(lab, &second);
        assert_eq!(registered(&second), "2");
        assert_eq!(
            tls_accept_of(lab, &attacker).unwrap(),
            None,
            "the plain announce registered no host"
        );

        // The registered container beats over PSK; a plain push to it is refused (-14).
        let beat = wait_for(
            "a PSK beat of the registered container",
            Duration::from_secs(60),
            || {
                let run = run_tool(
                    HEARTBEAT,
                    &[
                        &["up", "-z", lab.server(), "-s", container.as_str()][..],
                        &psk[..],
                    ]
                    .concat(),
                    None,
                    KILL_AFTER,
                );
                Ok((run.code == Some(0)).then_some(run))
            },
        );
        beat.assert_success();
        let push = run_tool(
            HEARTBEAT,
            &["up", "-z", lab.server(), "-s", container.as_str()],
            None,
            KILL_AFTER,
        );
        assert_plain_refused(lab, &push);
    }
);
