//! The scaling profile beyond "load high / load low": predictive pre-scaling (the template's
//! trigger on the load's forecast also starts the scale-up action) and the upstream check
//! (`--upstream SERVICE`: while that service's own aggregated p95 is above
//! `{$UPSTREAM_P95_HIGH}`, the scale-up triggers wait, through a Zabbix trigger dependency).

use clap::Args;
use concierge_core::outcome::{self, UsageError};
use concierge_core::zabbix::api::Api;
use serde_json::{json, Value};

use crate::check;
use crate::objects::{self, text, CONDITION_TRIGGER, OP_EQUALS};
use crate::report::{Change, Reporter};
use crate::SetupError;

/// The template's predictive trigger: the load's linear trend over `{$LOAD_FORECAST_WINDOW}`
/// reaches `{$LOAD_HIGH}` within `{$LOAD_FORECAST_HORIZON}`.
pub const PREDICTIVE_TRIGGER: &str = "Service {HOST.NAME}: load rising";
/// The service host's calculated item with the upstream service's aggregated p95 (`--upstream`).
pub const UPSTREAM_ITEM: &str = "service.upstream.p95";
/// The service host's trigger "the upstream is slow", which the scale-up triggers depend on.
pub const UPSTREAM_TRIGGER: &str = "Service {HOST.NAME}: upstream slow";

/// The command-line options of the scaling profile (flattened into [`crate::Cli`]).
#[derive(Debug, Clone, Default, Args)]
pub struct ProfileArgs {
    /// Predictive pre-scaling: the period whose load trend is extrapolated
    /// ({$LOAD_FORECAST_WINDOW}; the template's default is 10m).
    #[arg(
        long,
        value_name = "INTERVAL",
        requires = "service",
        help_heading = "Scaling profile"
    )]
    pub load_forecast_window: Option<String>,

    /// Predictive pre-scaling: scale up when the trend reaches --load-high this far ahead
    /// ({$LOAD_FORECAST_HORIZON}; the template's default is 5m).
    #[arg(
        long,
        value_name = "INTERVAL",
        requires = "service",
        help_heading = "Scaling profile"
    )]
    pub load_forecast_horizon: Option<String>,

    /// The service this one calls (its service host, NAME-service, must exist: set it up
    /// first, with its --timer names). While its aggregated p95 is above --upstream-p95-high,
    /// scale-up waits: more of us would only feed its bottleneck.
    #[arg(
        long,
        value_name = "SERVICE",
        requires = "service",
        help_heading = "Scaling profile"
    )]
    pub upstream: Option<String>,

    /// The upstream's p95 (seconds, the highest of its timers) above which scale-up waits
    /// ({$UPSTREAM_P95_HIGH}; the template's default is 1).
    #[arg(
        long,
        value_name = "SECONDS",
        requires = "upstream",
        help_heading = "Scaling profile"
    )]
    pub upstream_p95_high: Option<f64>,
}

/// The upstream service whose latency gates scale-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its service name.
    pub service: String,
    /// Its service host's technical name.
    pub host: String,
}

impl ProfileArgs {
    /// The host macros for the options given, checked.
    pub fn macros(&self) -> Result<Vec<(String, String)>, UsageError> {
        let interval = |what, t: &Option<String>| {
            t.as_deref()
                .map(|t| check::interval(what, t, 10, 604_800))
                .transpose()
        };
        let p95 = match self.upstream_p95_high {
            Some(x) if x.is_finite() && x > 0.0 => Some(check::load("--upstream-p95-high", x)?),
            Some(x) => {
                return Err(UsageError(format!(
                    "--upstream-p95-high {x} must be a positive number of seconds"
                )))
            }
            None => None,
        };
        let given = [
            (
                "{$LOAD_FORECAST_WINDOW}",
                interval("--load-forecast-window", &self.load_forecast_window)?,
            ),
            (
                "{$LOAD_FORECAST_HORIZON}",
                interval("--load-forecast-horizon", &self.load_forecast_horizon)?,
            ),
            ("{$UPSTREAM_P95_HIGH}", p95),
        ];
        Ok(given
            .into_iter()
            .filter_map(|(m, v)| v.map(|v| (m.to_string(), v)))
            .collect())
    }

    /// The upstream of service `service`, checked (not itself).
    pub fn upstream(&self, service: &str) -> Result<Option<Upstream>, UsageError> {
        let Some(up) = &self.upstream else {
            return Ok(None);
        };
        check::service_name(up).map_err(|e| UsageError(format!("--upstream: {e}")))?;
        if up == service {
            return Err(UsageError(format!(
                "--upstream {up:?} is the service itself"
            )));
        }
        Ok(Some(Upstream {
            service: up.clone(),
            host: format!("{up}-service"),
        }))
    }
}

/// The scale-up action `action` (from [`objects::scale_action`]) also starts on the
/// triggers `extra`: conditions of one type are or-ed (evaltype 0, and/or), so any of them
/// starts it, and the "not suppressed" condition still applies to all.
pub fn also_on(action: &mut Value, extra: &[String]) {
    if let Some(conditions) = action["filter"]["conditions"].as_array_mut() {
        for id in extra {
            conditions.push(
                json!({"conditiontype": CONDITION_TRIGGER, "operator": OP_EQUALS, "value": id}),
            );
        }
    }
}

/// The calculated formula of the upstream p95: the highest p95 of the upstream service host's
/// timer aggregates (`service.timer.p95[*]`, one per --timer it was set up with).
pub fn upstream_formula(upstream_host: &str) -> String {
    format!("max(last_foreach(/{upstream_host}/service.timer.p95[*]))")
}

/// The expression of the "upstream slow" trigger on service host `host`.
pub fn upstream_expression(host: &str) -> String {
    format!("last(/{host}/{UPSTREAM_ITEM})>{{$UPSTREAM_P95_HIGH}}")
}

/// On service host `hostid` (technical name `host`): the upstream p95 item, the "upstream slow"
/// trigger, and a dependency of each of `dependents` (the scale-up triggers) on it. Zabbix
/// keeps a dependent trigger from firing while the trigger it depends on is in PROBLEM.
pub fn ensure_upstream(
    api: &Api,
    hostid: &str,
    host: &str,
    upstream: &Upstream,
    dependents: &[String],
    out: &mut Reporter,
) -> outcome::Result<()> {
    let found = api.call(
        "host.get",
        json!({"output": ["hostid"], "filter": {"host": [upstream.host]}}),
    )?;
    if found.get(0).is_none() {
        return Err(SetupError(format!(
            "--upstream {}: there is no service host {:?}; set that service up first \
             (concierge-setup --service {} --timer NAME ...)",
            upstream.service, upstream.host, upstream.service
        ))
        .into());
    }
    ensure_upstream_item(api, hostid, upstream, out)?;
    let trigger = ensure_upstream_trigger(api, hostid, host, out)?;
    for dependent in dependents {
        ensure_dependency(api, dependent, &trigger, out)?;
    }
    Ok(())
}

fn ensure_upstream_item(
    api: &Api,
    hostid: &str,
    upstream: &Upstream,
    out: &mut Reporter,
) -> outcome::Result<String> {
    let want = json!({
        "name": format!("Service: upstream {} p95", upstream.service),
        "type": "15",
        "value_type": "0",
        "delay": "{$AGGREGATE_INTERVAL}",
        "history": "30d",
        "units": "s",
        "params": upstream_formula(&upstream.host),
        "description": format!(
            "The highest p95 of the timers of the upstream service host {}: while it is above \
             {{$UPSTREAM_P95_HIGH}}, scale-up waits (made by concierge-setup --upstream).",
            upstream.host
        ),
    });
    let fields = [
        "name",
        "type",
        "value_type",
        "delay",
        "history",
        "units",
        "params",
        "description",
    ];
    let found = api.call(
        "item.get",
        json!({"output": ["itemid", "name", "type", "value_type", "delay", "history", "units",
                          "params", "description"],
               "hostids": [hostid], "filter": {"key_": [UPSTREAM_ITEM]}}),
    )?;
    if let Some(existing) = found.get(0) {
        let id = text(&existing["itemid"]);
        if fields
            .iter()
            .all(|f| text(&existing[*f]) == text(&want[*f]))
        {
            out.push(Change::Unchanged, "item", UPSTREAM_ITEM, &id);
        } else {
            let mut update = want;
            update["itemid"] = Value::String(id.clone());
            update.as_object_mut().map(|o| o.remove("type"));
            update.as_object_mut().map(|o| o.remove("value_type"));
            api.call("item.update", update)?;
            out.push(Change::Updated, "item", UPSTREAM_ITEM, &id);
        }
        return Ok(id);
    }
    let mut create = want;
    create["hostid"] = Value::String(hostid.to_string());
    create["key_"] = Value::String(UPSTREAM_ITEM.to_string());
    let created = api.call("item.create", create)?;
    let id = first(&created, "itemids", "item.create")?;
    out.push(Change::Created, "item", UPSTREAM_ITEM, &id);
    Ok(id)
}

fn ensure_upstream_trigger(
    api: &Api,
    hostid: &str,
    host: &str,
    out: &mut Reporter,
) -> outcome::Result<String> {
    let expression = upstream_expression(host);
    let comments = "The upstream service's own latency is the problem: scale-up waits while \
                    this is a problem (the scale-up triggers depend on it), so scaling does not \
                    feed a bottleneck.";
    let found = api.call(
        "trigger.get",
        json!({"output": ["triggerid", "expression", "priority", "comments"],
               "expandExpression": true, "hostids": [hostid],
               "filter": {"description": [UPSTREAM_TRIGGER]}}),
    )?;
    if let Some(existing) = found.get(0) {
        let id = text(&existing["triggerid"]);
        if text(&existing["expression"]) == expression
            && text(&existing["priority"]) == "2"
            && text(&existing["comments"]) == comments
        {
            out.push(Change::Unchanged, "trigger", UPSTREAM_TRIGGER, &id);
        } else {
            api.call(
                "trigger.update",
                json!({"triggerid": id, "expression": expression, "priority": "2",
                       "comments": comments}),
            )?;
            out.push(Change::Updated, "trigger", UPSTREAM_TRIGGER, &id);
        }
        return Ok(id);
    }
    let created = api.call(
        "trigger.create",
        json!({"description": UPSTREAM_TRIGGER, "expression": expression, "priority": "2",
               "comments": comments, "tags": [{"tag": "scale", "value": "wait"}]}),
    )?;
    let id = first(&created, "triggerids", "trigger.create")?;
    out.push(Change::Created, "trigger", UPSTREAM_TRIGGER, &id);
    Ok(id)
}

/// Trigger `dependent` depends on `on` (the dependencies it has besides stay).
fn ensure_dependency(
    api: &Api,
    dependent: &str,
    on: &str,
    out: &mut Reporter,
) -> outcome::Result<()> {
    let found = api.call(
        "trigger.get",
        json!({"output": ["triggerid", "description"], "triggerids": [dependent],
               "selectDependencies": ["triggerid"]}),
    )?;
    let t = found
        .get(0)
        .ok_or_else(|| outcome::Error::from(SetupError(format!("trigger {dependent} vanished"))))?;
    let name = format!("{} on {UPSTREAM_TRIGGER}", text(&t["description"]));
    let mut deps: Vec<String> = t["dependencies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| text(&d["triggerid"]))
        .collect();
    if deps.iter().any(|d| d == on) {
        out.push(Change::Unchanged, "trigger dependency", &name, dependent);
        return Ok(());
    }
    deps.push(on.to_string());
    let deps: Vec<Value> = deps.iter().map(|d| json!({"triggerid": d})).collect();
    api.call(
        "trigger.update",
        json!({"triggerid": dependent, "dependencies": deps}),
    )?;
    out.push(Change::Created, "trigger dependency", &name, dependent);
    Ok(())
}

fn first(result: &Value, field: &str, method: &str) -> outcome::Result<String> {
    result[field]
        .get(0)
        .map(text)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| SetupError(format!("{method} returned no {field}")).into())
}

/// The scale-up triggers of service host `hostid`: "load high", then "load rising".
pub fn scale_up_triggers(api: &Api, hostid: &str, high: &str) -> outcome::Result<Vec<String>> {
    Ok(vec![
        high.to_string(),
        objects::trigger_id(api, hostid, PREDICTIVE_TRIGGER)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{canonical_action, scale_action};

    #[test]
    fn the_scale_up_action_starts_on_either_trigger_outside_maintenance() {
        let mut a = scale_action("n", "1", "2", "60s");
        also_on(&mut a, &["3".to_string()]);
        let conditions = a["filter"]["conditions"].as_array().unwrap();
        assert_eq!(
            a["filter"]["evaltype"], "0",
            "same-type conditions are or-ed"
        );
        let triggers: Vec<&Value> = conditions
            .iter()
            .filter(|c| c["conditiontype"] == CONDITION_TRIGGER)
            .map(|c| &c["value"])
            .collect();
        assert_eq!(triggers, [&json!("1"), &json!("3")]);
        assert!(conditions.iter().any(|c| c["conditiontype"] == "16"));
        // An action with only "load high" is seen as different, so a rerun updates it.
        assert_ne!(
            canonical_action(&a),
            canonical_action(&scale_action("n", "1", "2", "60s"))
        );
    }

    #[test]
    fn the_upstream_objects_name_the_hosts_literally() {
        assert_eq!(
            upstream_formula("db-service"),
            "max(last_foreach(/db-service/service.timer.p95[*]))"
        );
        assert_eq!(
            upstream_expression("web-service"),
            "last(/web-service/service.upstream.p95)>{$UPSTREAM_P95_HIGH}"
        );
    }

    #[test]
    fn options_become_checked_macros() {
        let args = ProfileArgs {
            load_forecast_window: Some("30s".into()),
            load_forecast_horizon: Some("2m".into()),
            upstream: Some("db".into()),
            upstream_p95_high: Some(0.25),
        };
        assert_eq!(
            args.macros().unwrap(),
            [
                ("{$LOAD_FORECAST_WINDOW}".to_string(), "30s".to_string()),
                ("{$LOAD_FORECAST_HORIZON}".to_string(), "2m".to_string()),
                ("{$UPSTREAM_P95_HIGH}".to_string(), "0.25".to_string()),
            ]
        );
        assert_eq!(
            args.upstream("web").unwrap(),
            Some(Upstream {
                service: "db".into(),
                host: "db-service".into()
            })
        );
        assert!(args.upstream("db").is_err(), "not its own upstream");
        for bad in [
            ProfileArgs {
                load_forecast_window: Some("5s".into()),
                ..Default::default()
            },
            ProfileArgs {
                load_forecast_horizon: Some("soon".into()),
                ..Default::default()
            },
            ProfileArgs {
                upstream_p95_high: Some(-1.0),
                ..Default::default()
            },
        ] {
            assert!(bad.macros().is_err(), "{bad:?}");
        }
        let bad_name = ProfileArgs {
            upstream: Some("a b".into()),
            ..Default::default()
        };
        assert!(bad_name.upstream("web").is_err());
        assert_eq!(ProfileArgs::default().macros().unwrap(), []);
    }
}
