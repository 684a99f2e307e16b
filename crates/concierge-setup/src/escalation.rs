//! Escalation steps of the scale-up action: while the load stays high, the action's first
//! steps add {$SCALE_STEP} each, and from {$SCALE_ESCALATE_AFTER} on each step adds twice as
//! many (script "Concierge: escalate NAME", `concierge-scale up --step-times 2`), always
//! bounded by {$SCALE_MAX}. Zabbix counts an action's steps in periods of its `esc_period`
//! (--repeat-every), so the delay becomes the first step number of the larger operation.

use serde_json::{json, Value};

use crate::objects;

/// How many times {$SCALE_STEP} an escalated step adds.
pub const FACTOR: u32 = 2;

/// The name of service `service`'s escalated scale-up script.
pub fn script_name(service: &str) -> String {
    format!("Concierge: escalate {service}")
}

/// The first action step that escalates, for a problem lasting `after_secs` with a step every
/// `period_secs`: step 1 runs at once and step n at (n - 1) periods, so the first step at or
/// after the delay (never the first one). `None` when `after_secs` is 0: no escalation.
pub fn first_step(after_secs: u64, period_secs: u64) -> Option<u32> {
    if after_secs == 0 {
        return None;
    }
    let periods = after_secs.div_ceil(period_secs.max(1)).max(1);
    Some(u32::try_from(periods.saturating_add(1)).unwrap_or(u32::MAX))
}

/// The scale-up action: `scriptid` for steps 1 to `escalate_at - 1`, then `escalated` for every
/// later step while the problem lasts; without `escalate_at`, [`objects::scale_action`].
pub fn up_action(
    name: &str,
    triggerid: &str,
    scriptid: &str,
    escalated: Option<(&str, u32)>,
    esc_period: &str,
) -> Value {
    let mut action = objects::scale_action(name, triggerid, scriptid, esc_period);
    let Some((escalated, at)) = escalated else {
        return action;
    };
    let op = |script: &str, from: u32, to: u32| {
        json!({
            "operationtype": "1",
            "esc_step_from": from.to_string(),
            "esc_step_to": to.to_string(),
            "opcommand": {"scriptid": script},
            "opcommand_hst": [{"hostid": "0"}],
        })
    };
    action["operations"] = json!([op(scriptid, 1, at - 1), op(escalated, at, 0)]);
    action
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_becomes_a_step_number() {
        assert_eq!(first_step(0, 60), None);
        assert_eq!(first_step(60, 60), Some(2));
        assert_eq!(first_step(1, 60), Some(2));
        assert_eq!(first_step(61, 60), Some(3));
        assert_eq!(first_step(600, 300), Some(3));
    }

    #[test]
    fn later_steps_run_the_escalated_script_while_the_problem_lasts() {
        let a = up_action("n", "1", "5", Some(("6", 3)), "60s");
        let ops = a["operations"].as_array().unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(
            (&ops[0]["esc_step_from"], &ops[0]["esc_step_to"]),
            (&json!("1"), &json!("2"))
        );
        assert_eq!(ops[0]["opcommand"]["scriptid"], "5");
        assert_eq!(
            (&ops[1]["esc_step_from"], &ops[1]["esc_step_to"]),
            (&json!("3"), &json!("0"))
        );
        assert_eq!(ops[1]["opcommand"]["scriptid"], "6");
        assert_eq!(a["esc_period"], "60s");
        // A different delay is a different action.
        let b = up_action("n", "1", "5", Some(("6", 2)), "60s");
        assert_ne!(objects::canonical_action(&a), objects::canonical_action(&b));
        assert_eq!(
            objects::canonical_action(&up_action("n", "1", "5", None, "60s")),
            objects::canonical_action(&objects::scale_action("n", "1", "5", "60s"))
        );
    }
}
