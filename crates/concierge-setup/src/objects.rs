//! A service's Zabbix objects, each found by name and updated, else created: host groups,
//! the service host, the global scripts and the actions.

use std::collections::BTreeMap;

use concierge_core::zabbix::api::Api;
use serde_json::{json, Value};

use crate::report::{Change, Reporter};
use crate::SetupError;

/// Action condition: trigger (equals).
pub const CONDITION_TRIGGER: &str = "2";
/// Action condition: problem is suppressed (6.0's successor of "maintenance status"; its
/// operators are 10 "yes" and 11 "no", and it takes no value).
pub const CONDITION_SUPPRESSED: &str = "16";
/// Action condition: host metadata (autoregistration).
pub const CONDITION_HOST_METADATA: &str = "24";
/// Operator "equals".
pub const OP_EQUALS: &str = "0";
/// Operator "contains".
pub const OP_CONTAINS: &str = "2";
/// Operator "no" (for "problem is suppressed": the problem is not suppressed, i.e. the host is
/// not in maintenance).
pub const OP_NO: &str = "11";

/// The group's id, creating the group when it does not exist.
pub fn ensure_group(api: &Api, name: &str, out: &mut Reporter) -> anyhow::Result<String> {
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
/// (others it has are left alone).
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
}

/// The service host's id, creating it or adding what it lacks.
pub fn ensure_host(api: &Api, spec: &HostSpec<'_>, out: &mut Reporter) -> anyhow::Result<String> {
    let found = api.call(
        "host.get",
        json!({
            "output": ["hostid", "host"],
            "filter": {"host": [spec.host]},
            "selectGroups": ["groupid"],
            "selectParentTemplates": ["templateid"],
            "selectMacros": ["hostmacroid", "macro", "value", "type"],
        }),
    )?;
    let Some(existing) = found.get(0) else {
        let macros: Vec<Value> = spec
            .macros
            .iter()
            .map(|(m, v)| json!({"macro": m, "value": v}))
            .collect();
        let created = api.call(
            "host.create",
            json!({
                "host": spec.host,
                "groups": [{"groupid": spec.groupid}],
                "templates": [{"templateid": spec.templateid}],
                "macros": macros,
            }),
        )?;
        let id = first_id(&created, "hostids", "host.create")?;
        out.push(Change::Created, "host", spec.host, &id);
        return Ok(id);
    };
    let hostid = text(&existing["hostid"]);
    let mut changed = false;
    let has = |list: &str, field: &str, id: &str| {
        existing[list]
            .as_array()
            .is_some_and(|a| a.iter().any(|o| text(&o[field]) == id))
    };
    let mut add = serde_json::Map::new();
    if !has("groups", "groupid", spec.groupid) {
        add.insert("groups".into(), json!([{"groupid": spec.groupid}]));
    }
    if !has("parentTemplates", "templateid", spec.templateid) {
        add.insert("templates".into(), json!([{"templateid": spec.templateid}]));
    }
    if !add.is_empty() {
        add.insert("hosts".into(), json!([{"hostid": hostid}]));
        api.call("host.massadd", Value::Object(add))?;
        changed = true;
    }
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
    for (name, value) in spec.macros {
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
    let change = if changed {
        Change::Updated
    } else {
        Change::Unchanged
    };
    out.push(change, "host", spec.host, &hostid);
    Ok(hostid)
}

/// The global script's id: an action-operation script (scope 1) of type script (0) that the
/// server runs (execute_on 1), with `command`.
pub fn ensure_script(
    api: &Api,
    name: &str,
    command: &str,
    out: &mut Reporter,
) -> anyhow::Result<String> {
    let want = json!({"command": command, "scope": "1", "type": "0", "execute_on": "1"});
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
            api.call("script.update", update)?;
            out.push(Change::Updated, "script", name, &id);
        }
        return Ok(id);
    }
    let mut create = want;
    create["name"] = Value::String(name.to_string());
    let created = api.call("script.create", create)?;
    let id = first_id(&created, "scriptids", "script.create")?;
    out.push(Change::Created, "script", name, &id);
    Ok(id)
}

/// The trigger of host `hostid` whose (unexpanded) name is `description`.
pub fn trigger_id(api: &Api, hostid: &str, description: &str) -> anyhow::Result<String> {
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

/// The action `want` (from [`register_action`] or [`scale_action`]): created, or updated when
/// what it does differs.
pub fn ensure_action(api: &Api, want: &Value, out: &mut Reporter) -> anyhow::Result<String> {
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
            "action {name:?} ({id}) exists for another kind of event (eventsource {}): rename or delete it",
            text(&existing["eventsource"])
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

fn first_id(result: &Value, field: &str, method: &str) -> anyhow::Result<String> {
    result[field]
        .get(0)
        .map(text)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| SetupError(format!("{method} returned no {field}: {result}")).into())
}

#[cfg(test)]
mod tests {
    use super::*;

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
