//! What -4 tells the admin, against the real Zabbix labs (`make lab`, both versions): the courier asks the
//! server about a host it refused every value for (the cases are told apart in concierge-core's
//! zabbix_lab.rs). Without the lab the test prints SKIPPED and passes, unless
//! CONCIERGE_REQUIRE_LAB=1.

use std::process::Command;

use concierge_testkit::lab_test;
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/metrics.json"
);

lab_test!(
    fn minus_four_names_an_unknown_host_and_the_remedy(lab: &Lab) {
        let trapper = lab.server();
        let host = format!("concierge-refusal-{}-{}", std::process::id(), lab.version());
        let out = Command::new(env!("CARGO_BIN_EXE_concierge-courier"))
            .args(["timers", SAMPLE, "-z", trapper, "-s", &host, "-t", "5s"])
            .output()
            .expect("run concierge-courier");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "-4\n", "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(
                "concierge-courier: Zabbix refused 44 of 44 values (processed: 0; failed: 44;"
            ),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("Zabbix at {trapper} does not know host {host:?}"))
                && stderr.contains("concierge-heartbeat --register"),
            "{stderr}"
        );
    }
);
