//! `concierge-setup retire`: what the action "Concierge: retire SERVICE" runs when a
//! container's "gone for {$CONCIERGE.RETIRE_AFTER}" trigger fires. It deletes the trigger's host,
//! so a container that was scaled away, stopped for good or died stops counting in the
//! service's aggregates; only a host of the service's own container group, and only while the
//! trigger is still a problem (a container that came back keeps its host).

use concierge_core::outcome;
use concierge_core::text::shown;
use concierge_core::zabbix::api::Api;
use serde_json::json;

use crate::objects::text;
use crate::report::{Change, Reporter};
use crate::SetupError;

/// Delete the host of trigger `triggerid` if it is in group `group` and the trigger is in
/// PROBLEM; say what was done (a trigger already gone with its host is no error: the action
/// may repeat).
pub fn run(api: &Api, triggerid: &str, group: &str, out: &mut Reporter) -> outcome::Result<()> {
    let found = api.call(
        "trigger.get",
        json!({"triggerids": [triggerid], "output": ["triggerid", "value"],
               "selectHosts": ["hostid", "host"]}),
    )?;
    let Some(trigger) = found.get(0) else {
        out.push(
            Change::Unchanged,
            "trigger (its host is gone)",
            triggerid,
            triggerid,
        );
        return Ok(());
    };
    let Some(host) = trigger["hosts"].get(0) else {
        return Err(SetupError(format!("trigger {} has no host", shown(triggerid))).into());
    };
    let (hostid, name) = (text(&host["hostid"]), text(&host["host"]));
    if text(&trigger["value"]) != "1" {
        out.push(Change::Unchanged, "host (it came back)", &name, &hostid);
        return Ok(());
    }
    let Some(groupid) = api.find_id("hostgroup.get", "groupid", json!({"name": [group]}))? else {
        return Err(SetupError(format!("no host group {group:?}")).into());
    };
    let member = api.call(
        "host.get",
        json!({"output": ["hostid"], "hostids": [hostid], "groupids": [groupid]}),
    )?;
    if member.get(0).is_none() {
        return Err(SetupError(format!(
            "host {name:?} is not in {group:?}: only the service's containers are retired"
        ))
        .into());
    }
    api.call("host.delete", json!([hostid]))?;
    out.push(Change::Deleted, "host", &name, &hostid);
    Ok(())
}
