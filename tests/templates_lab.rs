//! The shipped templates on both lab versions: each version imports its export (the 6.0 files,
//! or the one under zabbix-templates/7.0/ where there is one), and the objects they make are
//! then the same through the API: templates, groups, macros, links, items, triggers, discovery
//! rules and their prototypes, field by field. The one difference is 7.0's own: every item the
//! agent runs has a timeout of its own there (30 s, above the tools' default deadline).
//!
//! Needs both labs; without one it prints SKIPPED (unless CONCIERGE_REQUIRE_LAB=1).

use std::collections::BTreeMap;
use std::time::Duration;

use concierge_testkit::*;
use serde_json::{json, Value};

/// The templates in import order (app links heartbeat), with their files.
const TEMPLATES: [(&str, &str); 3] = [
    ("concierge_heartbeat.yaml", "Concierge heartbeat"),
    ("concierge_app.yaml", "Concierge app"),
    ("concierge_service.yaml", "Concierge service"),
];

/// Item fields both versions have (7.0 adds timeout, which is compared on its own).
const ITEM_FIELDS: [&str; 11] = [
    "name",
    "key_",
    "type",
    "value_type",
    "delay",
    "history",
    "trends",
    "units",
    "description",
    "status",
    "params",
];
const RULE_FIELDS: [&str; 7] = [
    "name",
    "key_",
    "type",
    "delay",
    "lifetime",
    "description",
    "status",
];
const TRIGGER_FIELDS: [&str; 12] = [
    "description",
    "expression",
    "recovery_mode",
    "recovery_expression",
    "priority",
    "comments",
    "type",
    "manual_close",
    "opdata",
    "event_name",
    "status",
    "correlation_mode",
];

/// `method` for the template's own objects (not those of linked templates), each reduced to
/// `fields` plus tags, keyed and sorted by `key`.
fn own(lab: &Lab, method: &str, filter: Value, fields: &[&str], key: &str) -> Value {
    let mut params = json!({"output": fields, "inherited": false, "selectTags": ["tag", "value"]});
    if method.starts_with("trigger") {
        params["expandExpression"] = json!(true);
        params["selectDependencies"] = json!(["description"]);
    }
    if method.starts_with("item") {
        params["selectValueMap"] = json!(["name", "mappings"]);
        params["selectPreprocessing"] = json!(["type", "params", "error_handler"]);
    }
    if method == "discoveryrule.get" {
        params["selectFilter"] = json!("extend");
        params.as_object_mut().expect("object").remove("selectTags");
    }
    if let (Some(p), Some(f)) = (params.as_object_mut(), filter.as_object()) {
        p.extend(f.clone());
    }
    let found = lab
        .call(method, params)
        .unwrap_or_else(|e| panic!("{} {method}: {e:#}", lab.version()));
    let mut by_key = BTreeMap::new();
    for mut o in found.as_array().cloned().unwrap_or_default() {
        let k = o[key].as_str().unwrap_or_default().to_string();
        if let Some(tags) = o.get_mut("tags").and_then(Value::as_array_mut) {
            tags.sort_by_key(Value::to_string);
        }
        if let Some(deps) = o.get_mut("dependencies").and_then(Value::as_array_mut) {
            for d in deps.iter_mut().filter_map(Value::as_object_mut) {
                d.retain(|f, _| !f.ends_with("id"));
            }
        }
        if let Some(map) = o.get_mut("valuemap").and_then(Value::as_object_mut) {
            map.retain(|f, _| !f.ends_with("id"));
        }
        if let Some(obj) = o.as_object_mut() {
            obj.retain(|f, _| !f.ends_with("id") || f == "key_");
        }
        by_key.insert(k, o);
    }
    json!(by_key)
}

/// Everything one template is, as the API shows it, in a form both versions share.
fn template_objects(lab: &Lab, name: &str) -> Value {
    let groups = if lab.at_least(6, 2) {
        "selectTemplateGroups"
    } else {
        "selectGroups"
    };
    let mut params = json!({"output": ["host", "name", "description"], "filter": {"host": [name]},
                            "selectParentTemplates": ["host"], "selectTags": ["tag", "value"],
                            "selectMacros": ["macro", "value", "description", "type"]});
    params[groups] = json!(["name"]);
    let found = lab.call("template.get", params).expect("template.get");
    let t = found[0].clone();
    assert!(t.is_object(), "{}: no template {name}", lab.version());
    let id = t["templateid"].as_str().expect("templateid").to_string();
    let names = |list: &Value, field: &str| -> Vec<String> {
        let mut v: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o[field].as_str().map(str::to_string))
            .collect();
        v.sort();
        v
    };
    let groups_key = if lab.at_least(6, 2) {
        "templategroups"
    } else {
        "groups"
    };
    let mut macros = t["macros"].as_array().cloned().unwrap_or_default();
    for m in &mut macros {
        if let Some(o) = m.as_object_mut() {
            o.retain(|f, _| !f.ends_with("id"));
        }
    }
    macros.sort_by_key(Value::to_string);
    let rules = own(
        lab,
        "discoveryrule.get",
        json!({"templateids": [id]}),
        &RULE_FIELDS,
        "key_",
    );
    let mut prototypes = BTreeMap::new();
    let rule_ids = lab
        .call(
            "discoveryrule.get",
            json!({"output": ["itemid", "key_"], "templateids": [id], "inherited": false}),
        )
        .expect("discoveryrule.get");
    for r in rule_ids.as_array().into_iter().flatten() {
        let filter = json!({"discoveryids": [r["itemid"]]});
        prototypes.insert(
            r["key_"].as_str().unwrap_or_default().to_string(),
            json!({
                "items": own(lab, "itemprototype.get", filter.clone(), &ITEM_FIELDS, "key_"),
                "triggers": own(lab, "triggerprototype.get", filter, &TRIGGER_FIELDS, "description"),
            }),
        );
    }
    json!({
        "template": {"host": t["host"], "name": t["name"], "description": t["description"],
                     "tags": t["tags"]},
        "groups": names(&t[groups_key], "name"),
        "linked": names(&t["parentTemplates"], "host"),
        "macros": macros,
        "items": own(lab, "item.get", json!({"templateids": [id]}), &ITEM_FIELDS, "key_"),
        "triggers": own(lab, "trigger.get", json!({"templateids": [id]}), &TRIGGER_FIELDS, "description"),
        "discovery": rules,
        "prototypes": prototypes,
    })
}

/// The timeouts 7.0 gives the template's own items and discovery rules, by key.
fn timeouts(lab: &Lab, name: &str) -> BTreeMap<String, (String, String)> {
    let id = lab.template_id(name).expect("template id");
    let mut out = BTreeMap::new();
    for method in ["item.get", "discoveryrule.get"] {
        let found = lab
            .call(
                method,
                json!({"output": ["key_", "type", "timeout"], "templateids": [id],
                       "inherited": false}),
            )
            .expect(method);
        for o in found.as_array().into_iter().flatten() {
            let field = |f: &str| o[f].as_str().unwrap_or_default().to_string();
            out.insert(field("key_"), (field("type"), field("timeout")));
        }
    }
    out
}

/// Zabbix agent (0) and Zabbix agent (active) (7): the items an agent runs.
fn is_agent_item(item_type: &str) -> bool {
    item_type == "0" || item_type == "7"
}

#[test]
fn the_templates_make_the_same_objects_in_6_0_and_7_0() {
    let (Some(old), Some(new)) = (Lab::get("6.0"), Lab::get("7.0")) else {
        return;
    };
    for lab in [&old, &new] {
        for (file, _) in TEMPLATES {
            lab.import_template_file(file)
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
    }
    let mut compared = Vec::new();
    for (file, name) in TEMPLATES {
        let (a, b) = (template_objects(&old, name), template_objects(&new, name));
        let count = |part: &str| a[part].as_object().map_or(0, |o| o.len());
        let prototypes: usize = a["prototypes"]
            .as_object()
            .into_iter()
            .flat_map(|rules| rules.values())
            .map(|r| r["items"].as_object().map_or(0, |o| o.len()))
            .sum();
        assert!(count("items") > 0, "{name}: no items read: {a}");
        compared.push(format!(
            "{name}: {} items, {} triggers, {} rules, {prototypes} item prototypes",
            count("items"),
            count("triggers"),
            count("discovery")
        ));
        for part in [
            "template",
            "groups",
            "linked",
            "macros",
            "items",
            "triggers",
            "discovery",
            "prototypes",
        ] {
            assert_eq!(
                a[part],
                b[part],
                "{name}: {part} differ between 6.0 ({}) and 7.0 ({})",
                old.template_path(file).display(),
                new.template_path(file).display()
            );
        }
        // 7.0: every item the agent runs (the UserParameters) has its own timeout above any
        // default deadline of the tools (at most 29.5 s); nothing else has one.
        for (key, (item_type, timeout)) in timeouts(&new, name) {
            let want = if is_agent_item(&item_type) && key.starts_with("concierge.") {
                "30s"
            } else {
                ""
            };
            assert_eq!(timeout, want, "7.0 {name} {key} (type {item_type})");
        }
    }
    note(&format!(
        "templates: the 6.0 and 7.0 imports make the same objects ({})",
        compared.join("; ")
    ));
}

/// The names `method` lists for `params` (field `field`), sorted.
fn names_of(lab: &Lab, method: &str, params: Value, field: &str) -> Vec<String> {
    let found = lab
        .call(method, params)
        .unwrap_or_else(|e| panic!("{} {method}: {e:#}", lab.version()));
    let mut v: Vec<String> = found
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o[field].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// One look at hosts linked to the templates as this checkout has them (panics on a mismatch);
/// the note to print.
fn linked_host_objects(lab: &Lab) -> String {
    let app_id = lab.template_id("Concierge app").expect("app template");
    let service_id = lab
        .template_id("Concierge service")
        .expect("service template");
    let app = lab.create_host_with(
        &unique_host("tpl-app"),
        json!({"templates": [{"templateid": app_id}]}),
    );
    let service = lab.create_host_with(
        &unique_host("tpl-svc"),
        json!({"templates": [{"templateid": service_id}]}),
    );
    // Graphs and graph prototypes, inherited by the hosts.
    let graphs = |host: &Host| {
        names_of(
            lab,
            "graph.get",
            json!({"output": ["name"], "hostids": [host.hostid]}),
            "name",
        )
    };
    assert_eq!(
        graphs(&app),
        [
            "Concierge: Courier delivery time",
            "Concierge: Courier status",
            "Concierge: Heartbeats per minute"
        ]
    );
    assert_eq!(
        graphs(&service),
        [
            "Service: Average load",
            "Service: Containers running and scaling target"
        ]
    );
    let prototypes = names_of(
        lab,
        "graphprototype.get",
        json!({"output": ["name"], "hostids": [app.hostid]}),
        "name",
    );
    assert_eq!(
        prototypes,
        [
            "Meter {#METER}: rate",
            "Timer {#TIMER}: calls",
            "Timer {#TIMER}: latency"
        ]
    );
    // The timer latency prototype draws p95, p99 and mean.
    let latency = lab
        .call(
            "graphprototype.get",
            json!({"output": ["name"], "hostids": [app.hostid],
                       "filter": {"name": ["Timer {#TIMER}: latency"]},
                       "selectGraphItems": ["itemid"], "selectItems": ["key_"]}),
        )
        .expect("graphprototype.get");
    let keys: Vec<&str> = latency[0]["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["key_"].as_str())
        .collect();
    for want in [
        "timer[{#TIMER}.p95]",
        "timer[{#TIMER}.p99]",
        "timer[{#TIMER}.mean]",
    ] {
        assert!(keys.contains(&want), "latency graph items {keys:?}");
    }
    // Value maps (they stay on their templates) and the host's items that use them.
    let heartbeat_id = lab
        .template_id("Concierge heartbeat")
        .expect("heartbeat template");
    let maps = names_of(
        lab,
        "valuemap.get",
        json!({"output": ["name"], "hostids": [app_id, heartbeat_id]}),
        "name",
    );
    assert_eq!(
        maps,
        ["Concierge container state", "Concierge courier status"]
    );
    let items = lab
        .call(
            "item.get",
            json!({"output": ["key_", "units", "value_type"], "hostids": [app.hostid],
                       "selectValueMap": ["name"]}),
        )
        .expect("item.get");
    let item = |key: &str| {
        items
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["key_"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("no item {key}"))
    };
    assert_eq!(
        item("concierge.courier.status")["valuemap"]["name"],
        "Concierge courier status"
    );
    assert_eq!(
        item("container.state")["valuemap"]["name"],
        "Concierge container state"
    );
    assert_eq!(item("concierge.courier.time")["units"], "s");
    // Every prototype has its unit: s for durations, rps for rates, none for counts.
    let protos = lab
        .call(
            "itemprototype.get",
            json!({"output": ["key_", "units"], "hostids": [app.hostid]}),
        )
        .expect("itemprototype.get");
    let mut checked = 0;
    for p in protos.as_array().into_iter().flatten() {
        let key = p["key_"].as_str().unwrap_or_default();
        let units = p["units"].as_str().unwrap_or_default();
        let want = if key.starts_with("timer[") && key.contains("_rate]")
            || key.starts_with("meter[") && key.contains("_rate]")
        {
            "rps"
        } else if key.starts_with("timer[") && !key.ends_with(".count]") {
            "s"
        } else if key.starts_with("gauge[") {
            "{#UNIT}"
        } else {
            ""
        };
        assert_eq!(units, want, "{key}");
        checked += 1;
    }
    assert_eq!(checked, 28);
    // Template dashboards (shown on every linked host), template tags, macro descriptions.
    for (id, name, widgets) in [
        (&app_id, "Concierge app", 5),
        (&service_id, "Concierge service", 3),
    ] {
        let dash = lab
            .call(
                "templatedashboard.get",
                json!({"output": ["name"], "templateids": [id], "selectPages": "extend"}),
            )
            .expect("templatedashboard.get");
        assert_eq!(dash[0]["name"], name, "{}", lab.version());
        let count: usize = dash[0]["pages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["widgets"].as_array().map_or(0, Vec::len))
            .sum();
        assert_eq!(count, widgets, "{name}: {dash}");
    }
    // Other worktrees' tests import their own (older) copies of these templates into the
    // shared lab, which replaces tags: import ours again until one reading sees them.
    for (file, name) in TEMPLATES {
        let t = wait_for(
            &format!("{name}'s tags and macros"),
            Duration::from_secs(60),
            || {
                lab.import_template_file(file)?;
                let t = lab.call(
                    "template.get",
                    json!({"output": ["host"], "filter": {"host": [name]},
                               "selectTags": ["tag", "value"],
                               "selectMacros": ["macro", "description"]}),
                )?;
                let tagged = t[0]["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t["tag"] == "class"));
                if tagged {
                    Ok(Some(t))
                } else {
                    anyhow::bail!("tags {}", t[0]["tags"])
                }
            },
        );
        for m in t[0]["macros"].as_array().into_iter().flatten() {
            assert!(
                m["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{name}: macro {} has no description",
                m["macro"]
            );
        }
    }
    format!(
        "{}: linked hosts have 3 + 2 graphs, 3 graph prototypes, 2 value maps, both \
             dashboards, template tags, {checked} item prototypes with their units",
        lab.version()
    )
}

lab_test!(
    fn a_linked_host_has_the_graphs_dashboards_value_maps_and_units(lab: &Lab) {
        // Other worktrees' tests import their own (older) copies of these templates into the
        // shared lab at any time: import ours and look again, a few times, until one look
        // sees them whole.
        let mut tries = 0;
        let seen = loop {
            tries += 1;
            for (file, _) in TEMPLATES {
                lab.import_template_file(file)
                    .unwrap_or_else(|e| panic!("{e:#}"));
            }
            match std::panic::catch_unwind(|| linked_host_objects(lab)) {
                Ok(seen) => break seen,
                Err(e) if tries >= 5 => std::panic::resume_unwind(e),
                Err(_) => note(&format!("{}: look {tries} disturbed, again", lab.version())),
            }
        };
        note(&seen);
    }
);
