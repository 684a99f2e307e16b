//! Issue #12's attack, through "no scaling", on each lab version (6.0 and 7.0): with a fleet
//! set up the secure way (concierge-setup with PSK-only autoregistration, so the containers'
//! hosts and the service host accept only the fleet's PSK), a raw plain "active checks"
//! announce with the metadata `concierge service=SERVICE` registers no host, and plain pushes
//! of concierge.load 5 and -1e300 (and of the service host's trapper items) from any sender
//! run no scaling action for a minute: no load problem, no action alert, no scale event, one
//! container. As a control, the container registered and beats over PSK, setup sent its timer
//! list over PSK, and the same load pushed over PSK scales the service to two, whose count
//! concierge-scale pushes to the service host over PSK.
//!
//! Autoregistration's TLS is one setting per server: this binary's test sets it to PSK only and
//! puts it back to unencrypted at the end, so it has a binary of its own (cargo runs test
//! binaries one after another). Needs the lab and the Docker engine; prints SKIPPED without
//! them unless CONCIERGE_REQUIRE_LAB/DOCKER=1.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use concierge_testkit::docker;
use concierge_testkit::service::*;
use concierge_testkit::*;
use serde_json::{json, Value};

/// How often the actions repeat their command while the load trigger stays in PROBLEM (the
/// API's minimum).
const REPEAT: &str = "60s";

/// 32 random bytes as hex: a fresh PSK.
fn random_hex() -> String {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `hex` in a new 0600 file `path` owned by `owner` (user:group).
fn key_file(path: &std::path::Path, hex: &str, owner: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{hex}\n")).expect("write PSK file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let chown = Command::new("chown")
        .args([owner, &path.to_string_lossy()])
        .status()
        .expect("chown");
    assert!(chown.success(), "chown {owner} {}", path.display());
    path.to_string_lossy().into_owned()
}

/// The ids of the service's two scaling actions.
fn scale_action_ids(lab: &Lab, service: &str) -> Vec<Value> {
    let names: Vec<String> = ["up", "down"]
        .iter()
        .map(|d| format!("Concierge: scale {d} {service}"))
        .collect();
    let found = lab
        .call(
            "action.get",
            json!({"output": ["actionid"], "filter": {"name": names}}),
        )
        .expect("action.get");
    let ids = ids_of(&found, "actionid");
    assert_eq!(ids.len(), 2, "both scaling actions exist: {found}");
    ids
}

lab_test!(
    fn a_fleet_set_up_with_psk_cannot_be_registered_into_or_scaled_by_plain_senders(lab: &Lab) {
        // Issue #12's attack, against a fleet set up the secure way: a raw plain "active
        // checks" announce with the service's metadata registers nothing, and plain pushes of
        // concierge.load (5, then -1e300) from any sender to any host run no scaling; the
        // same push over the fleet's PSK does.
        if !docker::available(&current_test()) {
            return;
        }
        let service = docker::unique("trust");
        let group = format!("Concierge/{service}");
        let metadata = format!("concierge service={service}");
        let identity = format!("{service}-fleet");
        let _cleanup = ServiceCleanup::new(lab, &service);
        let attacker = format!("{service}-attacker");
        let _attacker = HostNamed::new(lab, &attacker);
        let _restore = PlainAutoregistration(lab.clone());
        let key = random_hex();

        // The containers read their copy of the key as nobody (the image's user), mounted
        // read-only at the same path.
        let keys = temp_dir("trust-keys");
        let container_key = key_file(&keys.path().join("container.psk"), &key, "65534:65534");
        let project = heartbeat_project(
            lab,
            &service,
            &[
                "--tls-connect",
                "psk",
                "--tls-psk-identity",
                &identity,
                "--tls-psk-file",
                &container_key,
            ],
            &[&container_key],
        );
        let user = lab.facts().run_user();
        let owner = format!("{user}:{user}");
        // concierge-scale (as zabbix, where the scripts run) pushes the count with its copy.
        key_file(&project.dir().join("scale.psk"), &key, &owner);
        // Setup's own copy, which the test's PSK sends use too.
        let setup_key = key_file(&keys.path().join("setup.psk"), &key, "root:root");
        let paths = ScalePaths::of(lab, &project);
        let scale_key = paths.in_project("scale.psk");
        let (api_user, api_password) = lab.facts().credentials();
        let mut setup = Command::new(bin("concierge-setup"));
        setup
            .args(["--api", lab.api_url(), "--user", api_user])
            .args(["--service", &service, "--compose-file", &paths.compose_file])
            .args(["--project", &project.name])
            .args(["--scale-command", &paths.scale_command])
            .args(["--state-dir", &paths.state_dir])
            .args(["--min", "1", "--max", "2", "--cooldown", "10s"])
            .args(["--aggregate-interval", "2s", "--repeat-every", REPEAT])
            .args(["--zabbix-server", lab.server()])
            .args(["--timer", "trust.timer"])
            .args(["--autoreg-psk-identity", &identity])
            .args(["--autoreg-psk-file", &setup_key])
            .args(["--scale-psk-file", &scale_key])
            .env("ZABBIX_PASSWORD", api_password);
        if !lab.facts().global_scripts() {
            setup.args(["--scale-agent", lab.facts().agent()]);
        }
        let setup = {
            let _imports = template_imports_lock();
            run_command(&mut setup, Duration::from_secs(120))
        };
        assert_eq!(setup.code, Some(0), "{setup}");
        // The timer list went to the PSK-only service host over PSK.
        assert!(
            setup.stdout.contains("created timer trust.timer"),
            "{setup}"
        );
        let service_host = lab
            .call(
                "host.get",
                json!({"output": ["hostid", "tls_accept"],
                       "filter": {"host": [format!("{service}-service")]}}),
            )
            .expect("host.get");
        assert_eq!(
            service_host[0]["tls_accept"], "2",
            "the service host accepts only PSK"
        );
        let service_hostid = service_host[0]["hostid"]
            .as_str()
            .expect("hostid")
            .to_string();
        let actions = scale_action_ids(lab, &service);

        // One container registers and beats over PSK; the aggregate counts it.
        project.start(1, SETTLE);
        let fleet = wait_for("the container to register over PSK", SETTLE, || {
            let hosts = hosts_in(lab, &group)?;
            Ok((hosts.len() == 1).then_some(hosts))
        });
        wait_running_aggregate(lab, &service_hostid, 1, SETTLE);
        let container = fleet.iter().next().expect("one host").clone();

        // The attack, for a generous window: announces and plain pushes, again and again.
        let since = unix_now();
        let window = Instant::now();
        let service_host_name = format!("{service}-service");
        let mut rounds = 0;
        while window.elapsed() < Duration::from_secs(60) {
            rounds += 1;
            // The reply does not matter (7.0 answers some plain questions with success);
            // whether a host appears does.
            lab.announce(&attacker, &metadata).expect("announce");
            for value in ["5", "-1e300"] {
                for (host, key) in [
                    (container.as_str(), "concierge.load"),
                    (attacker.as_str(), "concierge.load"),
                    (service_host_name.as_str(), "service.scale.target"),
                    (service_host_name.as_str(), "service.timers.discovery"),
                ] {
                    let (processed, _) = lab.trapper_send(host, key, value).expect("send");
                    assert_eq!(processed, 0, "plain {key}={value} to {host} was processed");
                }
            }
            std::thread::sleep(Duration::from_secs(3));
            // Nothing moved: no host, no load problem, no action run, no scaling.
            let hosts = hosts_in(lab, &group).expect("hosts");
            assert_eq!(hosts, fleet, "the plain announce registered no host");
            assert_eq!(
                tls_accept_of(lab, &attacker).expect("host.get"),
                None,
                "no host {attacker}"
            );
            let events = event_names(lab, &service_hostid, since).expect("events");
            assert!(
                !events.iter().any(|n| n.contains("::load::")),
                "no load problem: {events:?}"
            );
            let alerts = lab
                .call(
                    "alert.get",
                    json!({"output": ["alertid", "message"], "actionids": actions,
                           "time_from": since}),
                )
                .expect("alert.get");
            assert_eq!(alerts, json!([]), "no scaling action ran");
            assert_eq!(scale_events(&project), Vec::<Value>::new(), "no scaling");
            assert_eq!(project.running().expect("docker ps").len(), 1);
        }

        // The control: the same push over the fleet's PSK scales the service up.
        let courier = run_tool(
            "concierge-courier",
            &[
                "-z",
                lab.server(),
                "-s",
                &container,
                "-t",
                "5s",
                "--tls-connect",
                "psk",
                "--tls-psk-identity",
                &identity,
                "--tls-psk-file",
                &setup_key,
                "-i",
                "-",
            ],
            Some(b"- concierge.load 5\n"),
            Duration::from_secs(20),
        );
        courier.assert_success();
        let pushed = Instant::now();
        project.wait_running(2, SETTLE);
        let up = wait_scaled_to(&project, 2, SETTLE);
        assert_eq!(up["from"], 1, "{up}");
        // concierge-scale pushed the count to the PSK-only service host over PSK.
        wait_for("service.scale.target = 2", SETTLE, || {
            match last_value(lab, &service_hostid, "service.scale.target")? {
                Some(v) if v == "2" => Ok(Some(())),
                other => bail!("last value {other:?}"),
            }
        });
        let alerts = lab
            .call(
                "alert.get",
                json!({"output": ["alertid"], "actionids": actions, "time_from": since}),
            )
            .expect("alert.get");
        assert!(
            alerts.as_array().is_some_and(|a| !a.is_empty()),
            "the scale-up action ran"
        );
        note(&format!(
            "trust on {}: {rounds} rounds of plain announces and pushes in 60 s moved nothing; \
             the PSK push scaled to 2 in {:.1?}",
            lab.api_version(),
            pushed.elapsed()
        ));
    }
);
