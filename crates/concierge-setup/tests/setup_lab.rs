//! concierge-setup against the real Zabbix 6.0 lab (`make lab`): two runs for a fresh service
//! (the second changes nothing), a third with an API token, then everything it made is read
//! back through the API and checked against what the loop needs. Expected values are
//! written out here, not taken from the crate. Without the lab the test prints SKIPPED and
//! passes, unless CONCIERGE_REQUIRE_LAB=1.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use concierge_core::zabbix::api::Api;
use serde_json::{json, Value};

const API_URL: &str = "http://127.0.0.1:8088/api_jsonrpc.php";
const TIMER: &str = "my.test-timer-0";

/// The lab's API, logged in; `None` (after a visible SKIPPED line) when it does not answer.
fn lab(test: &str) -> Option<Api> {
    let api = Api::new(API_URL, Duration::from_secs(30));
    if let Err(e) = api.version() {
        if std::env::var("CONCIERGE_REQUIRE_LAB").as_deref() == Ok("1") {
            panic!(
                "CONCIERGE_REQUIRE_LAB=1 but the Zabbix lab API at {API_URL} is unreachable: {e}"
            );
        }
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: the Zabbix lab API at {API_URL} is unreachable ({e}); run `make lab`"
        );
        return None;
    }
    Some(
        api.login("Admin", "zabbix")
            .expect("the lab answers but Admin/zabbix cannot log in"),
    )
}

/// Deletes what the test's service got (actions, its scripts, service host, containers'
/// group). Concierge/services is shared by every service: it stays.
struct Cleanup {
    api: Api,
    service: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let s = &self.service;
        let names = [
            format!("Concierge: register {s}"),
            format!("Concierge: scale up {s}"),
            format!("Concierge: scale down {s}"),
        ];
        let ids = |method: &str, field: &str, filter: Value| -> Vec<Value> {
            self.api
                .call(method, json!({"output": [field], "filter": filter}))
                .ok()
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .map(|o| o[field].clone())
                .collect()
        };
        let actions = ids("action.get", "actionid", json!({"name": names}));
        if !actions.is_empty() {
            let _ = self.api.call("action.delete", Value::Array(actions));
        }
        // The scripts carry the actions' names (a script in use by an action cannot go first).
        let scripts = ids(
            "script.get",
            "scriptid",
            json!({"name": names[1..].to_vec()}),
        );
        if !scripts.is_empty() {
            let _ = self.api.call("script.delete", Value::Array(scripts));
        }
        let hosts = ids(
            "host.get",
            "hostid",
            json!({"host": [format!("{s}-service")]}),
        );
        if !hosts.is_empty() {
            let _ = self.api.call("host.delete", Value::Array(hosts));
        }
        let groups = ids(
            "hostgroup.get",
            "groupid",
            json!({"name": [format!("Concierge/{s}")]}),
        );
        if !groups.is_empty() {
            let _ = self.api.call("hostgroup.delete", Value::Array(groups));
        }
    }
}

fn setup(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_concierge-setup"));
    cmd.args(args)
        .env_remove("ZABBIX_PASSWORD")
        .env_remove("ZABBIX_API_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run concierge-setup")
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn one(api: &Api, method: &str, params: Value) -> Value {
    let found = api.call(method, params.clone()).expect(method);
    assert_eq!(
        found.as_array().map(Vec::len),
        Some(1),
        "{method} {params}: {found}"
    );
    found[0].clone()
}

#[test]
fn setup_wires_a_service_idempotently() {
    let Some(api) = lab("setup_wires_a_service_idempotently") else {
        return;
    };
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let service = format!("setup{}-{secs}", std::process::id());
    let _cleanup = Cleanup {
        api: api.clone(),
        service: service.clone(),
    };
    let compose = format!("/srv/{service}/docker-compose.yml");
    let args = [
        "--api",
        API_URL,
        "--user",
        "Admin",
        "--service",
        &service,
        "--compose-file",
        &compose,
        "--min",
        "1",
        "--max",
        "3",
        "--step",
        "2",
        "--cooldown",
        "45s",
        "--load-high",
        "0.9",
        "--load-low",
        "0.1",
        "--aggregate-interval",
        "30s",
        "--repeat-every",
        "60s",
        "--timer",
        TIMER,
        "-z",
        "127.0.0.1",
    ];

    // First run: everything of the service is new.
    let first = setup(&args, &[("ZABBIX_PASSWORD", "zabbix")]);
    assert!(first.status.success(), "{}", show(&first));
    let host = format!("{service}-service");
    for expected in [
        format!("created host group Concierge/{service} ("),
        format!("created host {host} ("),
        format!("created timer {TIMER} ("),
        format!("created action Concierge: register {service} ("),
        format!("created action Concierge: scale up {service} ("),
        format!("created action Concierge: scale down {service} ("),
        format!("created script Concierge: scale up {service} ("),
        format!("created script Concierge: scale down {service} ("),
    ] {
        assert!(
            lines(&first).iter().any(|l| l.starts_with(&expected)),
            "no line {expected:?}\n{}",
            show(&first)
        );
    }
    assert_eq!(lines(&first).len(), 12, "{}", show(&first));

    // Second run: nothing to create or change.
    let second = setup(&args, &[("ZABBIX_PASSWORD", "zabbix")]);
    assert!(second.status.success(), "{}", show(&second));
    assert_eq!(lines(&second).len(), 12, "{}", show(&second));
    for l in lines(&second) {
        assert!(
            l.starts_with("unchanged "),
            "second run: {l}\n{}",
            show(&second)
        );
    }

    // Third run, with a token (a session id works as one) instead of a password.
    let token = api
        .call(
            "user.login",
            json!({"username": "Admin", "password": "zabbix"}),
        )
        .expect("user.login");
    let third = setup(&args, &[("ZABBIX_API_TOKEN", s(&token))]);
    assert!(third.status.success(), "{}", show(&third));
    assert!(
        lines(&third).iter().all(|l| l.starts_with("unchanged ")),
        "{}",
        show(&third)
    );

    // The templates.
    let templates = api
        .call(
            "template.get",
            json!({"output": ["host"], "filter": {"host": ["Concierge heartbeat", "Concierge app", "Concierge service"]}}),
        )
        .expect("template.get");
    let template_ids: BTreeMap<String, String> = templates
        .as_array()
        .expect("templates")
        .iter()
        .map(|t| (s(&t["host"]).to_string(), s(&t["templateid"]).to_string()))
        .collect();
    assert_eq!(template_ids.len(), 3, "{templates}");

    // The service host: group, template, macros.
    let h = one(
        &api,
        "host.get",
        json!({"output": ["hostid", "host"], "filter": {"host": [host]},
               "selectGroups": ["name"], "selectParentTemplates": ["host"],
               "selectMacros": ["macro", "value"]}),
    );
    let hostid = s(&h["hostid"]).to_string();
    assert_eq!(
        h["groups"],
        json!([{"groupid": h["groups"][0]["groupid"], "name": "Concierge/services"}]),
        "{h}"
    );
    assert!(
        h["parentTemplates"]
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t["host"] == "Concierge service")),
        "{h}"
    );
    let macros: BTreeMap<&str, &str> = h["macros"]
        .as_array()
        .expect("macros")
        .iter()
        .map(|m| (s(&m["macro"]), s(&m["value"])))
        .collect();
    let group = format!("Concierge/{service}");
    let expected: BTreeMap<&str, &str> = [
        ("{$SERVICE_HOSTGROUP}", group.as_str()),
        ("{$SERVICE_NAME}", service.as_str()),
        ("{$COMPOSE_FILE}", compose.as_str()),
        ("{$COMPOSE_PROJECT}", service.as_str()),
        ("{$SCALE_MIN}", "1"),
        ("{$SCALE_MAX}", "3"),
        ("{$SCALE_STEP}", "2"),
        ("{$SCALE_COOLDOWN}", "45s"),
        ("{$LOAD_HIGH}", "0.9"),
        ("{$LOAD_LOW}", "0.1"),
        ("{$AGGREGATE_INTERVAL}", "30s"),
    ]
    .into_iter()
    .collect();
    assert_eq!(macros, expected);

    // The timer's aggregate was discovered on the service host.
    let item = one(
        &api,
        "item.get",
        json!({"output": ["itemid", "key_", "flags"], "hostids": [hostid],
               "filter": {"key_": [format!("service.timer.p95[{TIMER}]")]}}),
    );
    assert_eq!(item["flags"], "4", "a discovered item: {item}");

    // The scripts: server-side action-operation scripts, every macro quoted.
    let mut script_ids = BTreeMap::new();
    for dir in ["up", "down"] {
        let script = one(
            &api,
            "script.get",
            json!({"output": "extend", "filter": {"name": [format!("Concierge: scale {dir} {service}")]}}),
        );
        assert_eq!(
            (
                s(&script["scope"]),
                s(&script["type"]),
                s(&script["execute_on"])
            ),
            ("1", "0", "1"),
            "{script}"
        );
        let command = s(&script["command"]);
        assert!(
            command.starts_with(&format!("/usr/local/bin/concierge-scale {dir} ")),
            "{command}"
        );
        for quoted in [
            "--reason \"Zabbix event {EVENT.ID}: {TRIGGER.NAME}\"",
            "-f \"{$COMPOSE_FILE}\"",
            "-p \"{$COMPOSE_PROJECT}\"",
            "--min \"{$SCALE_MIN}\"",
            "--max \"{$SCALE_MAX}\"",
            "--cooldown \"{$SCALE_COOLDOWN}\"",
            "--state-dir \"/var/lib/concierge\"",
            "--human-log \"/var/lib/concierge/scale.log\"",
            "--zabbix-item service.scale.target",
            "-z \"127.0.0.1\"",
            "-s \"{HOST.HOST}\"",
            "-- \"{$SERVICE_NAME}\" \"{?last(/{HOST.HOST}/service.containers.running)}\" \"{$SCALE_STEP}\"",
        ] {
            assert!(command.contains(quoted), "{quoted} missing from {command}");
        }
        script_ids.insert(dir, s(&script["scriptid"]).to_string());
    }

    // The autoregistration action.
    let containers_group = one(
        &api,
        "hostgroup.get",
        json!({"output": ["groupid"], "filter": {"name": [group]}}),
    );
    let register = one(
        &api,
        "action.get",
        json!({"output": "extend", "selectFilter": "extend", "selectOperations": "extend",
               "filter": {"name": [format!("Concierge: register {service}")]}}),
    );
    assert_eq!(register["eventsource"], "2");
    assert_eq!(register["status"], "0");
    let conditions = register["filter"]["conditions"]
        .as_array()
        .expect("conditions");
    assert_eq!(conditions.len(), 1, "{register}");
    assert_eq!(
        (
            s(&conditions[0]["conditiontype"]),
            s(&conditions[0]["operator"]),
            s(&conditions[0]["value"])
        ),
        ("24", "2", format!("concierge service={service}").as_str())
    );
    let ops: BTreeMap<&str, &Value> = register["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .map(|o| (s(&o["operationtype"]), o))
        .collect();
    assert_eq!(
        ops.keys().copied().collect::<Vec<_>>(),
        ["2", "4", "6"],
        "{register}"
    );
    assert_eq!(
        ops["4"]["opgroup"],
        json!([{"groupid": containers_group["groupid"]}])
    );
    assert_eq!(
        ops["6"]["optemplate"],
        json!([{"templateid": template_ids["Concierge app"]}])
    );

    // The scaling actions: the service host's load trigger, not in maintenance, the script
    // on the current host, repeated while the problem lasts.
    for (dir, level) in [("up", "high"), ("down", "low")] {
        let action = one(
            &api,
            "action.get",
            json!({"output": "extend", "selectFilter": "extend", "selectOperations": "extend",
                   "filter": {"name": [format!("Concierge: scale {dir} {service}")]}}),
        );
        assert_eq!(
            (
                s(&action["eventsource"]),
                s(&action["status"]),
                s(&action["esc_period"])
            ),
            ("0", "0", "60s"),
            "{action}"
        );
        assert_eq!(action["filter"]["evaltype"], "0");
        let conditions = action["filter"]["conditions"]
            .as_array()
            .expect("conditions");
        assert_eq!(conditions.len(), 2, "{action}");
        let trigger = conditions
            .iter()
            .find(|c| c["conditiontype"] == "2")
            .unwrap_or_else(|| panic!("no trigger condition: {action}"));
        assert_eq!(trigger["operator"], "0");
        let t = one(
            &api,
            "trigger.get",
            json!({"output": ["description"], "triggerids": [trigger["value"]],
                   "selectHosts": ["hostid"]}),
        );
        assert_eq!(
            t["description"],
            format!("Service {{HOST.NAME}}::load::{level}::{{ITEM.VALUE}}")
        );
        assert_eq!(
            t["hosts"],
            json!([{"hostid": hostid}]),
            "the trigger belongs to the service host"
        );
        assert!(
            conditions
                .iter()
                .any(|c| c["conditiontype"] == "16" && c["operator"] == "11"),
            "no 'not suppressed' condition: {action}"
        );
        let ops = action["operations"].as_array().expect("operations");
        assert_eq!(ops.len(), 1, "{action}");
        let op = &ops[0];
        assert_eq!(
            (
                s(&op["operationtype"]),
                s(&op["esc_step_from"]),
                s(&op["esc_step_to"])
            ),
            ("1", "1", "0"),
            "{op}"
        );
        assert_eq!(op["opcommand"]["scriptid"], script_ids[dir].as_str());
        let hosts: Vec<&str> = op["opcommand_hst"]
            .as_array()
            .expect("opcommand_hst")
            .iter()
            .map(|h| s(&h["hostid"]))
            .collect();
        assert_eq!(hosts, ["0"], "the current host: {op}");
    }
}
