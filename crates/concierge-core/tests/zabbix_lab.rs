//! The Zabbix client against the real labs (`make lab`, both versions): refused API credentials
//! are said as such, and the active-checks question tells an unknown host from missing items.
//! Without a lab the tests print SKIPPED and pass, unless CONCIERGE_REQUIRE_LAB=1.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use concierge_core::deadline::Deadline;
use concierge_core::outcome::{Classify, Failure};
use concierge_core::zabbix::active;
use concierge_core::zabbix::api::{Api, ApiError, Credentials};
use concierge_core::zabbix::destination::parse_list;
use concierge_core::zabbix::sender::{self, DeliveryError, Refusal, SenderOptions, Value};
use concierge_testkit::{lab_test, Lab};
use serde_json::json;

/// The core API client (the code under test) on the lab's API.
fn client(lab: &Lab) -> Api {
    Api::new(lab.api_url(), Duration::from_secs(30))
}

fn rejected(e: &ApiError) -> Option<Credentials> {
    match e {
        ApiError::Rejected { credentials, .. } => Some(*credentials),
        _ => None,
    }
}

lab_test!(
    fn refused_credentials_say_so(lab: &Lab) {
        let api = client(lab);
        let (user, password) = lab.facts().credentials();
        // A well-formed token no one issued (6.0 takes 64 hex digits as a token, else a session).
        let token = api.clone().with_token(&"0123456789abcdef".repeat(4));
        let e = token.call("template.get", json!({"limit": 1})).unwrap_err();
        assert_eq!(rejected(&e), Some(Credentials::Token), "{e}");
        assert!(
            e.to_string().starts_with(
                "Zabbix API template.get: the API token was rejected (Not authorized.)"
            ),
            "{e}"
        );
        assert_eq!(e.failure(), Failure::Usage);
        // A user that does not exist: a wrong password for Admin would count towards blocking the
        // lab's shared account.
        let e = api
            .clone()
            .login("concierge-no-such-user", "x")
            .unwrap_err();
        assert_eq!(rejected(&e), Some(Credentials::Password), "{e}");
        // Another error of a logged-in session is the API's own.
        let session = api.login(user, password).expect("the lab's user logs in");
        let e = session
            .call("host.update", json!({"hostid": "0", "name": "x"}))
            .unwrap_err();
        assert!(matches!(e, ApiError::Api { .. }), "{e}");
        assert_eq!(e.failure(), Failure::ZabbixRefused);
    }
);

/// Send one value for `host` to an item no host has, and ask why it was refused.
fn why_refused(lab: &Lab, host: &str) -> Refusal {
    let dests = parse_list(lab.server(), 10051).unwrap();
    let opts = SenderOptions::default();
    let deadline = Deadline::after(Duration::from_secs(5));
    let values = [Value {
        host: host.into(),
        key: "concierge.no.such.item".to_string(),
        value: "1".to_string(),
        clock: None,
    }];
    let refused = sender::send(&dests, &values, &deadline, &opts)
        .expect("send")
        .into_result()
        .expect_err("the value is refused");
    match active::explain(refused, host, &dests, &deadline, &opts.connect) {
        DeliveryError::Partial { why, .. } => *why,
        other => panic!("not a partial delivery: {other}"),
    }
}

lab_test!(
    fn an_unknown_host_and_missing_items_are_told_apart(lab: &Lab) {
        let (user, password) = lab.facts().credentials();
        let api = client(lab)
            .login(user, password)
            .expect("the lab's user logs in");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("concierge-why-{}-{nanos}", std::process::id());
        assert!(
            matches!(why_refused(lab, &name), Refusal::UnknownHost { ref host, .. } if *host == name),
            "a host Zabbix never heard of"
        );
        // The same name as a host without items, once the server's configuration cache has it.
        let group = api
            .find_id(
                "hostgroup.get",
                "groupid",
                json!({"name": ["Discovered hosts"]}),
            )
            .expect("hostgroup.get")
            .expect("the default group Discovered hosts");
        let made = api
            .call(
                "host.create",
                json!({"host": name, "groups": [{"groupid": group}]}),
            )
            .expect("host.create");
        let hostid = made["hostids"][0].clone();
        let start = Instant::now();
        let why = loop {
            match why_refused(lab, &name) {
                Refusal::UnknownHost { .. } if start.elapsed() < Duration::from_secs(60) => {
                    std::thread::sleep(Duration::from_millis(500))
                }
                why => break why,
            }
        };
        let _ = api.call("host.delete", json!([hostid]));
        assert_eq!(why, Refusal::ItemsMissing { host: name });
    }
);
