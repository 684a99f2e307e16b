//! A service's Zabbix objects, each found by name and updated, else created: host groups,
//! the service host, the global scripts and the actions.

use std::collections::BTreeMap;

use concierge_core::outcome;
use concierge_core::text::shown;
use concierge_core::zabbix::api::Api;
use serde_json::{json, Value};

use crate::cli::{AgentInterface, ScriptRunner};
use crate::report::{Change, Reporter};
use crate::version::ZabbixVersion;
use crate::SetupError;

/// Action condition: trigger (equals).
pub const CONDITION_TRIGGER: &str = "2";
/// Action condition: problem is suppressed (6.0's successor of "maintenance status"; its
/// operators are 10 "yes" and 11 "no", and it takes no value).
pub const CONDITION_SUPPRESSED: &str = "16";
/// Action condition: host metadata (autoregistration).
pub const CONDITION_HOST_METADATA: &str = "24";
/// Action condition: host group (equals).
pub const CONDITION_HOST_GROUP: &str = "0";
/// Action condition: event tag name.
pub const CONDITION_TAG: &str = "25";
/// The tag of the heartbeat template's trigger "Container gone ...: retire its host".
pub const RETIRE_TAG: &str = "concierge.retire";
/// Operator "equals".
pub const OP_EQUALS: &str = "0";
/// Operator "contains".
pub const OP_CONTAINS: &str = "2";
/// Operator "no" (for "problem is suppressed": the problem is not suppressed, i.e. the host is
/// not in maintenance).
pub const OP_NO: &str = "11";

/// The group's id, creating the group when it does not exist.
pub fn ensure_group(api: &Api, name: &str, out: &mut Reporter) -> outcome::Result<String> {
    if let Some(id) = api.find_id("hostgroup.get", "groupid", json!({"name": [name]}))? {
        out.push(Change::Unchanged, "host group", name, &id);
        return Ok(id);
    }
    let created = api.call("hostgroup.create", json!({"name": name}))?;
    let id = first_id(&created, "groupids", "hostgroup.create")?;
    out.push(Change::Created, "host group", name, &id);
    Ok(id)
}

/// The service host as it should be: in `groupid`, linked to `templateid`, with `macros`
/// (others it has are left alone) and, when the scripts run on an agent, that agent as its main
/// agent interface.
#[derive(Debug, Clone)]
pub struct HostSpec<'a> {
    /// Technical name.
    pub host: &'a str,
    /// A group it must be in.
    pub groupid: &'a str,
    /// A template it must be linked to.
    pub templateid: &'a str,
    /// Host macros it must have, with these values.
    pub macros: &'a [(String, String)],
    /// The agent that runs the scripts, if not the server.
    pub agent: Option<&'a AgentInterface>,
    /// Accept values only over TLS-PSK with this identity and key (hex); `None` leaves the
    /// host's TLS settings as they are.
    pub psk: Option<(&'a str, &'a str)>,
}

/// The `host.create` / `host.update` fields that make a host accept only PSK.
fn psk_fields((identity, key): (&str, &str)) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("tls_accept".into(), json!(2));
    m.insert("tls_psk_identity".into(), json!(identity));
    m.insert("tls_psk".into(), json!(key));
    m
}

/// The `hostinterface` fields of an agent interface.
fn interface_fields(a: &AgentInterface) -> Value {
    let (ip, dns) = if a.is_ip() {
        (a.address.as_str(), "")
    } else {
        ("", a.address.as_str())
    };
    json!({"type": "1", "useip": if a.is_ip() { "1" } else { "0" }, "ip": ip, "dns": dns,
           "port": a.port.to_string()})
}

/// The service host's id, creating it or adding what it lacks.
pub fn ensure_host(
    api: &Api,
    version: ZabbixVersion,
    spec: &HostSpec<'_>,
    out: &mut Reporter,
) -> outcome::Result<String> {
    // 6.2 renamed selectGroups (and the result's "groups") after splitting host groups off.
    let (select_groups, groups_key) = if version.splits_groups() {
        ("selectHostGroups", "hostgroups")
    } else {
        ("selectGroups", "groups")
    };
    let mut params = json!({
        "output": ["hostid", "host", "tls_accept"],
        "filter": {"host": [spec.host]},
        "selectParentTemplates": ["templateid"],
        "selectMacros": ["hostmacroid", "macro", "value", "type"],
        "selectInterfaces": ["interfaceid", "type", "main", "useip", "ip", "dns", "port"],
    });
    params[select_groups] = json!(["groupid"]);
    let found = api.call("host.get", params)?;
    let Some(existing) = found.get(0) else {
        let macros: Vec<Value> = spec
            .macros
            .iter()
            .map(|(m, v)| json!({"macro": m, "value": v}))
            .collect();
        let mut create = json!({
            "host": spec.host,
            "groups": [{"groupid": spec.groupid}],
            "templates": [{"templateid": spec.templateid}],
            "macros": macros,
        });
        if let Some(a) = spec.agent {
            let mut interface = interface_fields(a);
            interface["main"] = json!("1");
            create["interfaces"] = json!([interface]);
        }
        if let (Some(psk), Some(o)) = (spec.psk, create.as_object_mut()) {
            o.extend(psk_fields(psk));
        }
        let created = api.call("host.create", create)?;
        let id = first_id(&created, "hostids", "host.create")?;
        out.push(Change::Created, "host", spec.host, &id);
        return Ok(id);
    };
    let hostid = text(&existing["hostid"]);
    let linked = link_host(api, &hostid, existing, groups_key, spec)?;
    let macros = set_macros(api, &hostid, existing, spec.macros)?;
    let interface = match spec.agent {
        Some(a) => ensure_agent_interface(api, &hostid, &existing["interfaces"], a)?,
        None => false,
    };
    // The key is write-only in the API, so it cannot be compared: it is set on every run
    // (a rotated key reaches the host); the host counts as updated when it accepted more.
    let tls = match spec.psk {
        Some(psk) => {
            let mut update = psk_fields(psk);
            update.insert("hostid".into(), json!(hostid));
            api.call("host.update", Value::Object(update))?;
            text(&existing["tls_accept"]) != "2"
        }
        None => false,
    };
    let change = if linked || macros || interface || tls {
        Change::Updated
    } else {
        Change::Unchanged
    };
    out.push(change, "host", spec.host, &hostid);
    Ok(hostid)
}

/// Add the host `existing` (from host.get, its groups under `groups_key`) to the spec's group
/// and template where it is not yet; true when that changed anything.
fn link_host(
    api: &Api,
    hostid: &str,
    existing: &Value,
    groups_key: &str,
    spec: &HostSpec<'_>,
) -> outcome::Result<bool> {
    let has = |list: &str, field: &str, id: &str| {
        existing[list]
            .as_array()
            .is_some_and(|a| a.iter().any(|o| text(&o[field]) == id))
    };
    let mut add = serde_json::Map::new();
    if !has(groups_key, "groupid", spec.groupid) {
        add.insert("groups".into(), json!([{"groupid": spec.groupid}]));
    }
    if !has("parentTemplates", "templateid", spec.templateid) {
        add.insert("templates".into(), json!([{"templateid": spec.templateid}]));
    }
    if add.is_empty() {
        return Ok(false);
    }
    add.insert("hosts".into(), json!([{"hostid": hostid}]));
    api.call("host.massadd", Value::Object(add))?;
    Ok(true)
}

/// Give the host `existing` (from host.get) each of `macros` with its value, as a plain text
/// macro; others it has stay. True when that changed anything.
fn set_macros(
    api: &Api,
    hostid: &str,
    existing: &Value,
    macros: &[(String, String)],
) -> outcome::Result<bool> {
    let current: BTreeMap<String, (String, String, String)> = existing["macros"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                text(&m["macro"]),
                (text(&m["hostmacroid"]), text(&m["value"]), text(&m["type"])),
            )
        })
        .collect();
    let mut changed = false;
    for (name, value) in macros {
        match current.get(name) {
            Some((_, v, t)) if v == value && t == "0" => {}
            Some((id, _, _)) => {
                api.call(
                    "usermacro.update",
                    json!({"hostmacroid": id, "value": value, "type": 0}),
                )?;
                changed = true;
            }
            None => {
                api.call(
                    "usermacro.create",
                    json!({"hostid": hostid, "macro": name, "value": value}),
                )?;
                changed = true;
            }
        }
    }
    Ok(changed)
}

/// Make `agent` the host's main agent interface (updating the one it has, else adding one);
/// true when something changed.
fn ensure_agent_interface(
    api: &Api,
    hostid: &str,
    interfaces: &Value,
    agent: &AgentInterface,
) -> outcome::Result<bool> {
    let want = interface_fields(agent);
    let main = list(interfaces).find(|i| text(&i["type"]) == "1" && text(&i["main"]) == "1");
    match main {
        Some(i)
            if ["useip", "ip", "dns", "port"]
                .iter()
                .all(|f| text(&i[*f]) == text(&want[*f])) =>
        {
            Ok(false)
        }
        Some(i) => {
            let mut update = want;
            update["interfaceid"] = i["interfaceid"].clone();
            api.call("hostinterface.update", update)?;
            Ok(true)
        }
        None => {
            let mut create = want;
            create["hostid"] = Value::String(hostid.to_string());
            create["main"] = json!("1");
            api.call("hostinterface.create", create)?;
            Ok(true)
        }
    }
}

/// The API's words when a server refuses scripts of its own (Zabbix 7.0, EnableGlobalScripts=0).
const GLOBAL_SCRIPTS_DISABLED: &str = "global script execution on Zabbix server is disabled";

/// `error`, or what to do about it when the server refuses scripts of its own.
fn explain_refusal(name: &str, error: impl Into<outcome::Error>) -> outcome::Error {
    let error = error.into();
    if !error.to_string().contains(GLOBAL_SCRIPTS_DISABLED) {
        return error;
    }
    SetupError(format!(
        "the Zabbix server refuses to run script {name:?} itself (EnableGlobalScripts=0, the \
         default of new Zabbix 7.0 installations): give --scale-agent HOST[:PORT] to run \
         concierge-scale on the Docker host's Zabbix agent, or set EnableGlobalScripts=1 in \
         zabbix_server.conf and restart the server"
    ))
    .into()
}

/// `execute_on` for scripts run by `runner`: 1 the server, 0 the agent.
fn execute_on(runner: &ScriptRunner) -> &'static str {
    match runner {
        ScriptRunner::Server => "1",
        ScriptRunner::Agent(_) => "0",
    }
}

/// The global script's id: an action-operation script (scope 1) of type script (0) with
/// `command`, run by the server or by the service host's agent as `runner` says.
pub fn ensure_script(
    api: &Api,
    name: &str,
    command: &str,
    runner: &ScriptRunner,
    out: &mut Reporter,
) -> outcome::Result<String> {
    let want = json!({"command": command, "scope": "1", "type": "0",
                      "execute_on": execute_on(runner)});
    let found = api.call(
        "script.get",
        json!({"output": ["scriptid", "command", "scope", "type", "execute_on"],
               "filter": {"name": [name]}}),
    )?;
    if let Some(existing) = found.get(0) {
        let id = text(&existing["scriptid"]);
        let same = ["command", "scope", "type", "execute_on"]
            .iter()
            .all(|f| text(&existing[*f]) == text(&want[*f]));
        if same {
            out.push(Change::Unchanged, "script", name, &id);
        } else {
            let mut update = want;
            update["scriptid"] = Value::String(id.clone());
            api.call("script.update", update)
                .map_err(|e| explain_refusal(name, e))?;
            out.push(Change::Updated, "script", name, &id);
        }
        return Ok(id);
    }
    let mut create = want;
    create["name"] = Value::String(name.to_string());
    let created = api
        .call("script.create", create)
        .map_err(|e| explain_refusal(name, e))?;
    let id = first_id(&created, "scriptids", "script.create")?;
    out.push(Change::Created, "script", name, &id);
    Ok(id)
}

/// The trigger of host `hostid` whose (unexpanded) name is `description`.
pub fn trigger_id(api: &Api, hostid: &str, description: &str) -> outcome::Result<String> {
    let found = api.call(
        "trigger.get",
        json!({"output": ["triggerid"], "hostids": [hostid], "filter": {"description": [description]}}),
    )?;
    found
        .get(0)
        .map(|t| text(&t["triggerid"]))
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            SetupError(format!(
                "the service host has no trigger {description:?}: is the template \"Concierge service\" linked and current?"
            ))
            .into()
        })
}

/// The autoregistration action: hosts whose metadata contains `metadata` are added, put in
/// `groupid` and linked to `templateid`.
pub fn register_action(name: &str, metadata: &str, groupid: &str, templateid: &str) -> Value {
    json!({
        "name": name,
        "eventsource": "2",
        "status": "0",
        "filter": {
            "evaltype": "0",
            "conditions": [
                {"conditiontype": CONDITION_HOST_METADATA, "operator": OP_CONTAINS, "value": metadata},
            ],
        },
        "operations": [
            {"operationtype": "2"},
            {"operationtype": "4", "opgroup": [{"groupid": groupid}]},
            {"operationtype": "6", "optemplate": [{"templateid": templateid}]},
        ],
    })
}

/// A scaling action: when trigger `triggerid` fires outside maintenance, run script
/// `scriptid` on the trigger's host, and again every `esc_period` while the problem lasts.
pub fn scale_action(name: &str, triggerid: &str, scriptid: &str, esc_period: &str) -> Value {
    json!({
        "name": name,
        "eventsource": "0",
        "status": "0",
        "esc_period": esc_period,
        "filter": {
            "evaltype": "0",
            "conditions": [
                {"conditiontype": CONDITION_TRIGGER, "operator": OP_EQUALS, "value": triggerid},
                {"conditiontype": CONDITION_SUPPRESSED, "operator": OP_NO},
            ],
        },
        "operations": [{
            "operationtype": "1",
            "esc_step_from": "1",
            "esc_step_to": "0",
            "opcommand": {"scriptid": scriptid},
            "opcommand_hst": [{"hostid": "0"}],
        }],
    })
}

/// The retire action: when a container of group `groupid` is gone (the trigger tagged
/// [`RETIRE_TAG`]) outside maintenance, run script `scriptid` on host `runner_hostid` (the
/// service host: on 7.0 its agent interface is the agent that runs the scripts; the container
/// has none), and again every `esc_period` while the problem lasts (if a run failed).
pub fn retire_action(
    name: &str,
    groupid: &str,
    scriptid: &str,
    runner_hostid: &str,
    esc_period: &str,
) -> Value {
    json!({
        "name": name,
        "eventsource": "0",
        "status": "0",
        "esc_period": esc_period,
        "filter": {
            "evaltype": "0",
            "conditions": [
                {"conditiontype": CONDITION_HOST_GROUP, "operator": OP_EQUALS, "value": groupid},
                {"conditiontype": CONDITION_TAG, "operator": OP_EQUALS, "value": RETIRE_TAG},
                {"conditiontype": CONDITION_SUPPRESSED, "operator": OP_NO},
            ],
        },
        "operations": [{
            "operationtype": "1",
            "esc_step_from": "1",
            "esc_step_to": "0",
            "opcommand": {"scriptid": scriptid},
            "opcommand_hst": [{"hostid": runner_hostid}],
        }],
    })
}

/// The action `want` (from [`register_action`] or [`scale_action`]): created, or updated when
/// what it does differs.
pub fn ensure_action(api: &Api, want: &Value, out: &mut Reporter) -> outcome::Result<String> {
    let name = text(&want["name"]);
    let found = api.call(
        "action.get",
        json!({"output": "extend", "selectFilter": "extend", "selectOperations": "extend",
               "filter": {"name": [name]}}),
    )?;
    let Some(existing) = found.get(0) else {
        let created = api.call("action.create", want.clone())?;
        let id = first_id(&created, "actionids", "action.create")?;
        out.push(Change::Created, "action", &name, &id);
        return Ok(id);
    };
    let id = text(&existing["actionid"]);
    if text(&existing["eventsource"]) != text(&want["eventsource"]) {
        return Err(SetupError(format!(
            "action {name:?} ({}) exists for another kind of event (eventsource {}): rename or delete it",
            shown(&id),
            shown(&text(&existing["eventsource"]))
        ))
        .into());
    }
    if canonical_action(existing) == canonical_action(want) {
        out.push(Change::Unchanged, "action", &name, &id);
        return Ok(id);
    }
    let mut update = want.clone();
    if let Some(o) = update.as_object_mut() {
        o.remove("eventsource");
        o.remove("name");
        o.insert("actionid".into(), Value::String(id.clone()));
    }
    api.call("action.update", update)?;
    out.push(Change::Updated, "action", &name, &id);
    Ok(id)
}

/// What an action does, in a form that compares equal for equal behaviour: the API's
/// answer (strings, extra fields, any order) and our request reduce to the same value.
pub fn canonical_action(a: &Value) -> Value {
    let source = text(&a["eventsource"]);
    let escalates = source == "0";
    let mut conditions: Vec<Value> = list(&a["filter"]["conditions"])
        .map(|c| {
            json!([
                text(&c["conditiontype"]),
                text(&c["operator"]),
                text(&c["value"])
            ])
        })
        .collect();
    conditions.sort_by_key(Value::to_string);
    let ids = |v: &Value, field: &str| {
        let mut ids: Vec<String> = list(v).map(|o| text(&o[field])).collect();
        ids.sort();
        ids
    };
    let mut operations: Vec<Value> = list(&a["operations"])
        .map(|o| {
            let mut c = json!({
                "type": text(&o["operationtype"]),
                "script": text(&o["opcommand"]["scriptid"]),
                "hosts": ids(&o["opcommand_hst"], "hostid"),
                "host_groups": ids(&o["opcommand_grp"], "groupid"),
                "groups": ids(&o["opgroup"], "groupid"),
                "templates": ids(&o["optemplate"], "templateid"),
                "message": !o["opmessage"].is_null()
                    || o["opmessage_grp"].as_array().is_some_and(|a| !a.is_empty())
                    || o["opmessage_usr"].as_array().is_some_and(|a| !a.is_empty()),
                "conditions": list(&o["opconditions"]).count(),
            });
            if escalates {
                c["from"] = Value::String(or(&o["esc_step_from"], "1"));
                c["to"] = Value::String(or(&o["esc_step_to"], "1"));
                c["period"] = Value::String(or(&o["esc_period"], "0"));
            }
            c
        })
        .collect();
    operations.sort_by_key(Value::to_string);
    let mut c = json!({
        "eventsource": source,
        "status": or(&a["status"], "0"),
        "evaltype": or(&a["filter"]["evaltype"], "0"),
        "conditions": conditions,
        "operations": operations,
    });
    if escalates {
        c["esc_period"] = Value::String(text(&a["esc_period"]));
    }
    c
}

fn list(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// A JSON string or number as text; anything else is empty.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn or(v: &Value, default: &str) -> String {
    match text(v) {
        s if s.is_empty() => default.to_string(),
        s => s,
    }
}

fn first_id(result: &Value, field: &str, method: &str) -> outcome::Result<String> {
    result[field]
        .get(0)
        .map(text)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            SetupError(format!(
                "{method} returned no {field}: {}",
                shown(&result.to_string())
            ))
            .into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_server_script_says_what_to_change() {
        let refusal = SetupError(
            "Zabbix API script.create: Invalid parameter \"/1/execute_on\": global script \
             execution on Zabbix server is disabled by server configuration."
                .to_string(),
        );
        let e = explain_refusal("Concierge: scale up web", refusal).to_string();
        for says in [
            "EnableGlobalScripts=1",
            "--scale-agent",
            "zabbix_server.conf",
        ] {
            assert!(e.contains(says), "{e}");
        }
        let other = explain_refusal("x", SetupError("No permissions".into())).to_string();
        assert_eq!(other, "No permissions");
    }

    #[test]
    fn a_psk_host_accepts_only_psk_with_the_fleet_key() {
        let f = Value::Object(psk_fields(("fleet", "ab12")));
        assert_eq!(
            f,
            json!({"tls_accept": 2, "tls_psk_identity": "fleet", "tls_psk": "ab12"})
        );
    }

    #[test]
    fn agent_interfaces_use_an_ip_or_a_name() {
        let ip = interface_fields(&AgentInterface::parse("127.0.0.1:10060").unwrap());
        assert_eq!(
            ip,
            json!({"type": "1", "useip": "1", "ip": "127.0.0.1", "dns": "", "port": "10060"})
        );
        let name = interface_fields(&AgentInterface::parse("docker-01").unwrap());
        assert_eq!(
            name,
            json!({"type": "1", "useip": "0", "ip": "", "dns": "docker-01", "port": "10050"})
        );
        assert!(AgentInterface::parse("a:1,b:2").is_err());
        assert_eq!(execute_on(&ScriptRunner::Server), "1");
        assert_eq!(
            execute_on(&ScriptRunner::Agent(AgentInterface::parse("::1").unwrap())),
            "0"
        );
    }

    /// What 6.0.14's action.get returned for an action made from `scale_action`.
    fn stored_scale_action() -> Value {
        json!({
            "actionid": "12", "name": "Concierge: scale up web", "eventsource": "0",
            "status": "0", "esc_period": "5m", "pause_suppressed": "1", "notify_if_canceled": "1",
            "filter": {"evaltype": "0", "formula": "", "eval_formula": "A and B", "conditions": [
                {"conditiontype": "16", "operator": "11", "value": "", "value2": "", "formulaid": "B"},
                {"conditiontype": "2", "operator": "0", "value": "23001", "value2": "", "formulaid": "A"},
            ]},
            "operations": [{
                "operationid": "26", "actionid": "12", "operationtype": "1", "esc_period": "0",
                "esc_step_from": "1", "esc_step_to": "0", "evaltype": "0", "opconditions": [],
                "opcommand": {"scriptid": "5"}, "opcommand_hst": [{"hostid": "0"}],
                "opcommand_grp": [],
            }],
        })
    }

    #[test]
    fn a_stored_action_equals_the_request_that_made_it() {
        let want = scale_action("Concierge: scale up web", "23001", "5", "5m");
        assert_eq!(
            canonical_action(&stored_scale_action()),
            canonical_action(&want)
        );
    }

    #[test]
    fn differences_in_behaviour_are_seen() {
        let base = canonical_action(&stored_scale_action());
        for want in [
            scale_action("n", "23002", "5", "5m"),
            scale_action("n", "23001", "6", "5m"),
            scale_action("n", "23001", "5", "10m"),
        ] {
            assert_ne!(base, canonical_action(&want), "{want}");
        }
        let mut disabled = stored_scale_action();
        disabled["status"] = json!("1");
        assert_ne!(base, canonical_action(&disabled));
        let mut once = stored_scale_action();
        once["operations"][0]["esc_step_to"] = json!("1");
        assert_ne!(base, canonical_action(&once));
        let mut extra = stored_scale_action();
        extra["operations"][0]["opmessage_grp"] = json!([{"usrgrpid": "7"}]);
        assert_ne!(base, canonical_action(&extra));
    }

    #[test]
    fn autoregistration_ignores_escalation_fields() {
        let want = register_action(
            "Concierge: register web",
            "concierge service=web",
            "30",
            "10500",
        );
        let stored = json!({
            "actionid": "13", "name": "Concierge: register web", "eventsource": "2",
            "status": "0", "esc_period": "1h",
            "filter": {"evaltype": "0", "conditions": [
                {"conditiontype": "24", "operator": "2", "value": "concierge service=web", "value2": ""}]},
            "operations": [
                {"operationtype": "6", "esc_step_from": "1", "esc_step_to": "1", "esc_period": "0",
                 "opconditions": [], "optemplate": [{"templateid": "10500"}]},
                {"operationtype": "2", "esc_step_from": "1", "esc_step_to": "1", "opconditions": []},
                {"operationtype": "4", "esc_step_from": "1", "esc_step_to": "1", "opconditions": [],
                 "opgroup": [{"groupid": "30"}]},
            ],
        });
        assert_eq!(canonical_action(&stored), canonical_action(&want));
        let other = register_action(
            "Concierge: register web",
            "concierge service=web",
            "31",
            "10500",
        );
        assert_ne!(canonical_action(&stored), canonical_action(&other));
    }

    #[test]
    fn retire_actions_run_on_the_service_host_for_the_retire_tag_of_the_group() {
        let want = retire_action("Concierge: retire web", "30", "7", "10501", "5m");
        let op = &want["operations"][0];
        assert_eq!(op["opcommand_hst"], json!([{"hostid": "10501"}]));
        assert_eq!(op["opcommand"]["scriptid"], "7");
        // What action.get returns for it: the same behaviour.
        let stored = json!({
            "actionid": "14", "name": "Concierge: retire web", "eventsource": "0",
            "status": "0", "esc_period": "5m",
            "filter": {"evaltype": "0", "conditions": [
                {"conditiontype": "25", "operator": "0", "value": "concierge.retire", "value2": ""},
                {"conditiontype": "16", "operator": "11", "value": "", "value2": ""},
                {"conditiontype": "0", "operator": "0", "value": "30", "value2": ""},
            ]},
            "operations": [{
                "operationtype": "1", "esc_period": "0", "esc_step_from": "1", "esc_step_to": "0",
                "opconditions": [], "opcommand": {"scriptid": "7"},
                "opcommand_hst": [{"hostid": "10501"}], "opcommand_grp": [],
            }],
        });
        assert_eq!(canonical_action(&stored), canonical_action(&want));
        let other_group = retire_action("Concierge: retire web", "31", "7", "10501", "5m");
        assert_ne!(canonical_action(&stored), canonical_action(&other_group));
    }

    #[test]
    fn scale_actions_repeat_on_the_current_host_outside_maintenance() {
        let a = scale_action("n", "1", "2", "60s");
        let op = &a["operations"][0];
        assert_eq!(op["esc_step_to"], "0", "repeats while the problem lasts");
        assert_eq!(op["opcommand_hst"], json!([{"hostid": "0"}]));
        let conditions = a["filter"]["conditions"].as_array().unwrap();
        assert!(conditions.iter().any(|c| c["conditiontype"] == "16"
            && c["operator"] == "11"
            && c.get("value").is_none()));
    }
}
