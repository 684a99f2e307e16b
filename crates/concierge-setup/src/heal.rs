//! Self-healing: the action "Concierge: heal NAME" runs `concierge-scale heal` (script of the
//! same name) on the service host when one of the service's containers reports state 0
//! ("Concierge: Container stopped") or stops beating ("Concierge: No heartbeat for ..."):
//! template "Concierge heartbeat"'s problems, on a host of the containers' group.
//!
//! heal only scales back up to the count the last scaling decided. A scale-down records its
//! lower count before it stops a container (under the lock heal waits for), so the "stopped"
//! problem of the container a scale-down removed finds nothing to heal: a no-op in the event
//! log, not a container brought back.

use serde_json::{json, Value};

use crate::objects::{CONDITION_SUPPRESSED, OP_CONTAINS, OP_EQUALS, OP_NO};

/// Action condition: host group.
pub const CONDITION_HOST_GROUP: &str = "0";
/// Action condition: event name (the trigger's name, expanded).
pub const CONDITION_EVENT_NAME: &str = "3";

/// The names of template "Concierge heartbeat"'s problems that heal (as their events start).
pub const PROBLEMS: [&str; 2] = ["Concierge: Container stopped", "Concierge: No heartbeat"];

/// How many times the heal command runs for one problem: at once, then after one and two
/// action periods, in case the engine was busy. A container a scale-down removed keeps its
/// problem (its host stays), so heal must not repeat for as long as the problem lasts.
pub const TRIES: u32 = 3;

/// The name of service `service`'s heal script and action.
pub fn name(service: &str) -> String {
    format!("Concierge: heal {service}")
}

/// The heal action: a problem of [`PROBLEMS`] on a host of `groupid`, outside maintenance,
/// runs `scriptid` on the service host `service_hostid` ([`TRIES`] times while it lasts).
pub fn action(
    service: &str,
    groupid: &str,
    service_hostid: &str,
    scriptid: &str,
    esc_period: &str,
) -> Value {
    // evaltype 0 (and/or): conditions of one type are or-ed, of different types and-ed.
    let mut conditions = vec![
        json!({"conditiontype": CONDITION_HOST_GROUP, "operator": OP_EQUALS, "value": groupid}),
        json!({"conditiontype": CONDITION_SUPPRESSED, "operator": OP_NO}),
    ];
    for p in PROBLEMS {
        conditions.push(
            json!({"conditiontype": CONDITION_EVENT_NAME, "operator": OP_CONTAINS, "value": p}),
        );
    }
    json!({
        "name": name(service),
        "eventsource": "0",
        "status": "0",
        "esc_period": esc_period,
        "filter": {"evaltype": "0", "conditions": conditions},
        "operations": [{
            "operationtype": "1",
            "esc_step_from": "1",
            "esc_step_to": TRIES.to_string(),
            "opcommand": {"scriptid": scriptid},
            "opcommand_hst": [{"hostid": service_hostid}],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::canonical_action;

    #[test]
    fn heal_runs_on_the_service_host_for_the_containers_problems() {
        let a = action("web", "30", "10600", "7", "60s");
        assert_eq!(a["name"], "Concierge: heal web");
        let op = &a["operations"][0];
        assert_eq!(op["opcommand_hst"], json!([{"hostid": "10600"}]));
        assert_eq!(op["esc_step_to"], "3", "a few tries, not forever");
        let conditions = a["filter"]["conditions"].as_array().unwrap();
        let names: Vec<&str> = conditions
            .iter()
            .filter(|c| c["conditiontype"] == CONDITION_EVENT_NAME)
            .map(|c| c["value"].as_str().unwrap())
            .collect();
        assert_eq!(names, PROBLEMS);
        assert!(conditions
            .iter()
            .any(|c| c["conditiontype"] == CONDITION_HOST_GROUP && c["value"] == "30"));
        // Another group or service host is another action.
        let other = action("web", "31", "10600", "7", "60s");
        assert_ne!(canonical_action(&a), canonical_action(&other));
        let other = action("web", "30", "10601", "7", "60s");
        assert_ne!(canonical_action(&a), canonical_action(&other));
    }

    #[test]
    fn the_problem_names_are_the_templates() {
        let template = include_str!("../../../zabbix-templates/concierge_heartbeat.yaml");
        for p in PROBLEMS {
            assert!(template.contains(&format!("name: '{p}")), "{p}");
        }
    }
}
