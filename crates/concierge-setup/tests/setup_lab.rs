//! concierge-setup against each real Zabbix lab (6.0 and 7.0, `make lab`): two runs for a fresh
//! service (the second changes nothing), a third with an API token, then everything it made is
//! read back through the API and checked against what the loop needs. Where the lab's server
//! refuses scripts of its own (7.0's stock EnableGlobalScripts=0) the scripts run on the lab's
//! agent (--scale-agent), and a last run without it must fail saying what to change; where the
//! server allows them, that run moves the scripts to the server. Expected values are
//! written out here, not taken from the crate, and the lab is reached through the test kit, not
//! the crate's API client. Without a lab its test prints SKIPPED and passes, unless
//! CONCIERGE_REQUIRE_LAB=1.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use concierge_setup::cli::{scale_command_beside, FALLBACK_SCALE_COMMAND};
use concierge_testkit::{lab_test, Lab};
use serde_json::{json, Value};

const TIMER: &str = "my.test-timer-0";

/// Deletes what the test's service got (actions, its scripts, service host, containers'
/// group). Concierge/services is shared by every service: it stays.
struct Cleanup {
    api: Lab,
    service: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let s = &self.service;
        let names = [
            format!("Concierge: register {s}"),
            format!("Concierge: scale up {s}"),
            format!("Concierge: scale down {s}"),
            format!("Concierge: escalate {s}"),
            format!("Concierge: heal {s}"),
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
    let _imports = concierge_testkit::template_imports_lock();
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

/// The text of `field` in each object of the array `list`.
fn each<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|o| s(&o[field]))
        .collect()
}

/// The text of `names` in `v`, in order.
fn fields<'a>(v: &'a Value, names: &[&str]) -> Vec<&'a str> {
    names.iter().map(|n| s(&v[*n])).collect()
}

fn one(api: &Lab, method: &str, params: Value) -> Value {
    let found = api.call(method, params.clone()).expect(method);
    assert_eq!(
        found.as_array().map(Vec::len),
        Some(1),
        "{method} {params}: {found}"
    );
    found[0].clone()
}

lab_test!(
    fn a_rejected_token_says_so(api: &Lab) {
        let bogus = "0123456789abcdef".repeat(4);
        let out = setup(&["--api", api.api_url()], &[("ZABBIX_API_TOKEN", &bogus)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert_eq!(stderr.lines().count(), 1, "{}", show(&out));
        assert!(
            stderr.contains("the API token was rejected")
                && stderr.contains("check it under Users > API tokens"),
            "{}",
            show(&out)
        );
    }
);

lab_test!(
    fn setup_wires_a_service_idempotently(api: &Lab) {
        let (user, password) = api.facts().credentials();
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
        // Server scripts where the lab allows them, else its agent (EnableGlobalScripts=0).
        let on_server = api.facts().global_scripts();
        let agent = api.facts().agent();
        let mut args = vec![
            "--api",
            api.api_url(),
            "--user",
            user,
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
            "--escalate-after",
            "2m",
            "--timer",
            TIMER,
            "-z",
            api.server(),
        ];
        let server_args = args.clone();
        if !on_server {
            args.extend(["--scale-agent", agent]);
        }

        // First run: everything of the service is new.
        let first = setup(&args, &[("ZABBIX_PASSWORD", password)]);
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
            format!("created script Concierge: escalate {service} ("),
            format!("created script Concierge: heal {service} ("),
            format!("created action Concierge: heal {service} ("),
        ] {
            assert!(
                lines(&first).iter().any(|l| l.starts_with(&expected)),
                "no line {expected:?}\n{}",
                show(&first)
            );
        }
        assert_eq!(lines(&first).len(), 15, "{}", show(&first));

        // Second run: nothing to create or change.
        let second = setup(&args, &[("ZABBIX_PASSWORD", password)]);
        assert!(second.status.success(), "{}", show(&second));
        assert_eq!(lines(&second).len(), 15, "{}", show(&second));
        for l in lines(&second) {
            assert!(
                l.starts_with("unchanged "),
                "second run: {l}\n{}",
                show(&second)
            );
        }

        // Third run, with a token (a session id works as one) instead of a password.
        let token = api
            .call_anonymous(
                "user.login",
                json!({"username": user, "password": password}),
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

        // The service host: group, template, macros, interfaces. 6.2 renamed selectGroups to
        // selectHostGroups (and 7.0 returns only the fields asked for).
        let (select, key) = if api.at_least(6, 2) {
            ("selectHostGroups", "hostgroups")
        } else {
            ("selectGroups", "groups")
        };
        let mut params = json!({"output": ["hostid", "host"], "filter": {"host": [host]},
               "selectParentTemplates": ["host"], "selectMacros": ["macro", "value"],
               "selectInterfaces": ["type", "main", "useip", "ip", "port"]});
        params[select] = json!(["name"]);
        let h = one(api, "host.get", params);
        let hostid = s(&h["hostid"]).to_string();
        // 6.0 adds the groupid to what was asked for; 7.0 does not.
        let groups = each(&h[key], "name");
        assert_eq!(groups, ["Concierge/services"], "{h}");
        let (agent_ip, agent_port) = agent.rsplit_once(':').expect("agent host:port");
        let interfaces = if on_server {
            json!([])
        } else {
            json!([{"type": "1", "main": "1", "useip": "1", "ip": agent_ip, "port": agent_port}])
        };
        assert_eq!(h["interfaces"], interfaces, "{h}");
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
            ("{$SCALE_ESCALATE_AFTER}", "2m"),
        ]
        .into_iter()
        .collect();
        assert_eq!(macros, expected);

        // The timer's aggregate was discovered on the service host.
        let item = one(
            api,
            "item.get",
            json!({"output": ["itemid", "key_", "flags"], "hostids": [hostid],
               "filter": {"key_": [format!("service.timer.p95[{TIMER}]")]}}),
        );
        assert_eq!(item["flags"], "4", "a discovered item: {item}");

        // The scripts: action-operation scripts on the server or the agent, every macro quoted.
        let execute_on = if on_server { "1" } else { "0" };
        let mut script_ids = BTreeMap::new();
        for dir in ["up", "down"] {
            let script = one(
                api,
                "script.get",
                json!({"output": "extend", "filter": {"name": [format!("Concierge: scale {dir} {service}")]}}),
            );
            assert_eq!(
                fields(&script, &["scope", "type", "execute_on"]),
                ["1", "0", execute_on],
                "{script}"
            );
            let command = s(&script["command"]);
            // Without --scale-command: the concierge-scale beside the concierge-setup that ran.
            let scale = scale_command_beside(Path::new(env!("CARGO_BIN_EXE_concierge-setup")))
                .unwrap_or_else(|| FALLBACK_SCALE_COMMAND.to_string());
            assert!(command.starts_with(&format!("{scale} {dir} ")), "{command}");
            for quoted in [
            "--reason \"Zabbix event {EVENT.ID}: {TRIGGER.NAME}\"",
            "-f \"{$COMPOSE_FILE}\"",
            "-p \"{$COMPOSE_PROJECT}\"",
            "--min \"{$SCALE_MIN}\"",
            "--max \"{$SCALE_MAX}\"",
            "--cooldown \"{$SCALE_COOLDOWN}\"",
            // Explicit, so a call ends inside the server's Timeout whatever the default.
            &format!("--engine-timeout {}s", concierge_core::scaling::ENGINE_TIMEOUT_SECS),
            "--state-dir \"/var/lib/concierge\"",
            "--human-log \"/var/lib/concierge/scale.log\"",
            "--zabbix-item service.scale.target",
            &format!("-z \"{}\"", api.server()),
            "-s \"{HOST.HOST}\"",
            "-- \"{$SERVICE_NAME}\" \"{?last(/{HOST.HOST}/service.containers.running)}\" \"{$SCALE_STEP}\"",
        ] {
            assert!(command.contains(quoted), "{quoted} missing from {command}");
        }
            script_ids.insert(dir, s(&script["scriptid"]).to_string());
        }
        // The escalated scale-up, and heal (which restores a decision: no cooldown, no STEP).
        for (name, starts, says) in [
            (
                "escalate",
                " up --step-times 2 --reason ",
                "\"{$SCALE_STEP}\"",
            ),
            (
                "heal",
                " heal --reason \"heal: Zabbix event {EVENT.ID}: {EVENT.NAME} on {HOST.HOST}\" ",
                "-- \"{$SERVICE_NAME}\"",
            ),
        ] {
            let script = one(
                api,
                "script.get",
                json!({"output": "extend", "filter": {"name": [format!("Concierge: {name} {service}")]}}),
            );
            assert_eq!(
                fields(&script, &["scope", "type", "execute_on"]),
                ["1", "0", execute_on],
                "{script}"
            );
            let command = s(&script["command"]);
            assert!(command.contains(starts), "{command}");
            assert!(command.ends_with(says), "{command}");
            assert_eq!(
                command.contains("--cooldown"),
                name == "escalate",
                "{command}"
            );
            script_ids.insert(name, s(&script["scriptid"]).to_string());
        }

        // The autoregistration action.
        let containers_group = one(
            api,
            "hostgroup.get",
            json!({"output": ["groupid"], "filter": {"name": [group]}}),
        );
        let register = one(
            api,
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

        // The scaling actions: the service host's load triggers (scale-up: "load high" or the
        // predictive "load rising"), not in maintenance, the script on the current host,
        // repeated while the problem lasts.
        for (dir, levels) in [("up", &["high", "rising"][..]), ("down", &["low"][..])] {
            let action = one(
                api,
                "action.get",
                json!({"output": "extend", "selectFilter": "extend", "selectOperations": "extend",
                   "filter": {"name": [format!("Concierge: scale {dir} {service}")]}}),
            );
            assert_eq!(
                fields(&action, &["eventsource", "status", "esc_period"]),
                ["0", "0", "60s"],
                "{action}"
            );
            assert_eq!(action["filter"]["evaltype"], "0");
            let conditions = action["filter"]["conditions"]
                .as_array()
                .expect("conditions");
            assert_eq!(conditions.len(), levels.len() + 1, "{action}");
            let mut names: Vec<String> = Vec::new();
            for trigger in conditions.iter().filter(|c| c["conditiontype"] == "2") {
                assert_eq!(trigger["operator"], "0");
                let t = one(
                    api,
                    "trigger.get",
                    json!({"output": ["description"], "triggerids": [trigger["value"]],
                       "selectHosts": ["hostid"]}),
                );
                assert_eq!(
                    t["hosts"],
                    json!([{"hostid": hostid}]),
                    "the trigger belongs to the service host"
                );
                names.push(s(&t["description"]).to_string());
            }
            names.sort();
            let mut expected: Vec<String> = levels
                .iter()
                .map(|l| format!("Service {{HOST.NAME}}: load {l}"))
                .collect();
            expected.sort();
            assert_eq!(names, expected, "{action}");
            assert!(
                conditions
                    .iter()
                    .any(|c| c["conditiontype"] == "16" && c["operator"] == "11"),
                "no 'not suppressed' condition: {action}"
            );
            // Scale-up escalates: STEP at steps 1-2 (0 and 60 s), 2 x STEP from step 3 (the
            // 2 min of --escalate-after) while the problem lasts. Scale-down keeps one STEP.
            let mut ops: Vec<&Value> = action["operations"]
                .as_array()
                .expect("operations")
                .iter()
                .collect();
            ops.sort_by_key(|o| s(&o["esc_step_from"]).parse::<u32>().unwrap_or(0));
            let expected: &[(&str, &str, &str)] = match dir {
                "up" => &[("1", "2", "up"), ("3", "0", "escalate")],
                _ => &[("1", "0", "down")],
            };
            assert_eq!(ops.len(), expected.len(), "{action}");
            for (op, (from, to, script)) in ops.iter().zip(expected) {
                assert_eq!(
                    fields(op, &["operationtype", "esc_step_from", "esc_step_to"]),
                    ["1", *from, *to],
                    "{op}"
                );
                assert_eq!(op["opcommand"]["scriptid"], script_ids[*script].as_str());
                let hosts = each(&op["opcommand_hst"], "hostid");
                assert_eq!(hosts, ["0"], "the current host: {op}");
            }
        }

        // Healing: a stopped or silent container of the service's group runs heal on the
        // service host, a few times, not for as long as the problem lasts.
        let heal = one(
            api,
            "action.get",
            json!({"output": "extend", "selectFilter": "extend", "selectOperations": "extend",
                   "filter": {"name": [format!("Concierge: heal {service}")]}}),
        );
        let conditions: BTreeSet<(String, String, String)> = heal["filter"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .map(|c| {
                (
                    s(&c["conditiontype"]).to_string(),
                    s(&c["operator"]).to_string(),
                    s(&c["value"]).to_string(),
                )
            })
            .collect();
        let expected: BTreeSet<(String, String, String)> = [
            ("0", "0", s(&containers_group["groupid"])),
            ("16", "11", ""),
            ("3", "2", "Concierge: Container stopped"),
            ("3", "2", "Concierge: No heartbeat"),
        ]
        .into_iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
        assert_eq!(conditions, expected, "{heal}");
        let op = &heal["operations"][0];
        assert_eq!(
            fields(op, &["operationtype", "esc_step_from", "esc_step_to"]),
            ["1", "1", "3"],
            "{op}"
        );
        assert_eq!(op["opcommand"]["scriptid"], script_ids["heal"].as_str());
        assert_eq!(each(&op["opcommand_hst"], "hostid"), [hostid.as_str()]);

        // Last, the other way of running the scripts. Where the server allows scripts of its
        // own, --scale-agent moves them to the agent (the host gets its interface); where it
        // does not, leaving --scale-agent out is refused, saying what to change.
        let scripts_on = |expected: &str| {
            for name in ["scale up", "scale down", "escalate", "heal"] {
                let script = one(
                    api,
                    "script.get",
                    json!({"output": ["execute_on"],
                           "filter": {"name": [format!("Concierge: {name} {service}")]}}),
                );
                assert_eq!(s(&script["execute_on"]), expected, "{script}");
            }
        };
        if on_server {
            let mut with_agent = server_args.clone();
            with_agent.extend(["--scale-agent", agent]);
            let moved = setup(&with_agent, &[("ZABBIX_PASSWORD", password)]);
            assert!(moved.status.success(), "{}", show(&moved));
            let changed: Vec<String> = lines(&moved)
                .into_iter()
                .filter(|l| !l.starts_with("unchanged "))
                .collect();
            let expected: Vec<String> = [
                format!("updated host {host} ({hostid})"),
                format!(
                    "updated script Concierge: scale up {service} ({})",
                    script_ids["up"]
                ),
                format!(
                    "updated script Concierge: scale down {service} ({})",
                    script_ids["down"]
                ),
                format!(
                    "updated script Concierge: escalate {service} ({})",
                    script_ids["escalate"]
                ),
                format!(
                    "updated script Concierge: heal {service} ({})",
                    script_ids["heal"]
                ),
            ]
            .into();
            assert_eq!(changed, expected, "{}", show(&moved));
            scripts_on("0");
        } else {
            let refused = setup(&server_args, &[("ZABBIX_PASSWORD", password)]);
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
            for says in [
                "EnableGlobalScripts=1",
                "--scale-agent",
                "zabbix_server.conf",
            ] {
                assert!(stderr.contains(says), "{says}: {}", show(&refused));
            }
            assert_eq!(stderr.lines().count(), 1, "{}", show(&refused));
            scripts_on("0");
        }
    }
);
