//! The shipped Zabbix templates and the code agree: every item prototype of "Concierge app"
//! (its 6.0 export and its 7.0 one) is the key the courier delivers to, for every kind and
//! default statistic, under the LLD macro discover emits. A drift on either side would leave
//! items that never get data.

use concierge_core::metrics::Kind;
use concierge_core::zabbix::key::KeyTemplate;
use concierge_core::zabbix::lld;

const APPS: [(&str, &str); 2] = [
    (
        "concierge_app.yaml",
        include_str!("../../../zabbix-templates/concierge_app.yaml"),
    ),
    (
        "7.0/concierge_app.yaml",
        include_str!("../../../zabbix-templates/7.0/concierge_app.yaml"),
    ),
];

#[test]
fn every_default_key_has_its_prototype_in_the_app_template() {
    for (file, app) in APPS {
        check(file, app);
    }
}

fn check(file: &str, app: &str) {
    for kind in Kind::ALL {
        assert!(
            lld::is_valid_macro(kind.lld_macro()),
            "{}",
            kind.lld_macro()
        );
        let template: KeyTemplate = kind.default_key_template().parse().unwrap();
        assert!(
            app.contains(&format!(
                "key: 'concierge.discover[{kind},{{$METRICS_URL}}]'"
            )),
            "{file}: no LLD rule for {kind}"
        );
        for stat in kind.default_stats() {
            let prototype = template.lld_prototype(kind.lld_macro(), Some(stat));
            assert!(
                app.contains(&format!("key: '{prototype}'")),
                "{file} lacks the prototype {prototype}"
            );
        }
    }
}

const PROMETHEUS: &str = include_str!("../../../zabbix-templates/concierge_prometheus.yaml");
const USERPARAMETERS: &str = include_str!("../../../zabbix-templates/userparameter_concierge.conf");

/// Every `key: '…'` in a template.
fn keys(yaml: &str) -> Vec<&str> {
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix("key: '"))
        .filter_map(|k| k.strip_suffix('\''))
        .collect()
}

#[test]
fn the_prometheus_template_has_one_rule_and_prototype_per_type_group() {
    use concierge_core::metrics::prometheus::{item_key_template, MetricType};
    let keys = keys(PROMETHEUS);
    let mut covered = Vec::new();
    for rule in keys
        .iter()
        .filter(|k| k.starts_with("concierge.prometheus.discover["))
    {
        // concierge.prometheus.discover[{$PROM.URL},TYPES,"{$PROM.FILTER}",…]
        let types = rule
            .split_once(',')
            .unwrap()
            .1
            .split(",\"{$PROM.FILTER}\"")
            .next()
            .unwrap()
            .trim_matches('"');
        let types: Vec<MetricType> = types.split(',').map(|t| t.parse().unwrap()).collect();
        let group = types[0].group();
        assert!(types.iter().all(|t| t.group() == group), "{rule}");
        covered.extend(types.iter().copied());
        let template: KeyTemplate = item_key_template(types[0]).parse().unwrap();
        let prototype = template.lld_prototype("{#METRIC}", Some("{#LABELS}"));
        assert!(
            keys.contains(&prototype.as_str()),
            "no prototype {prototype} for {rule}"
        );
    }
    covered.sort_by_key(|t| t.name());
    let mut all = MetricType::ALL.to_vec();
    all.sort_by_key(|t| t.name());
    assert_eq!(covered, all, "each metric type in exactly one rule");
    // Counters also get their rate, and every item prototype has a unit macro.
    assert!(keys.contains(&"prometheus.rate[{#METRIC},{#LABELS}]"));
    assert!(PROMETHEUS.contains("type: CHANGE_PER_SECOND"));
    assert!(PROMETHEUS.contains("units: '{#UNIT.RATE}'"));
    // The agent items are the shipped UserParameters.
    for prefix in [
        "concierge.prometheus.discover[",
        "concierge.prometheus.courier[",
    ] {
        assert!(keys.iter().any(|k| k.starts_with(prefix)));
        let name = prefix.trim_end_matches('[');
        assert!(
            USERPARAMETERS.contains(&format!("UserParameter={name}[*],")),
            "no UserParameter {name}"
        );
    }
}

#[test]
fn every_template_object_has_its_own_uuid_v4() {
    let mut seen = std::collections::BTreeMap::new();
    for (file, yaml) in [
        ("concierge_app.yaml", APPS[0].1),
        ("concierge_prometheus.yaml", PROMETHEUS),
        (
            "concierge_heartbeat.yaml",
            include_str!("../../../zabbix-templates/concierge_heartbeat.yaml"),
        ),
        (
            "concierge_service.yaml",
            include_str!("../../../zabbix-templates/concierge_service.yaml"),
        ),
    ] {
        for uuid in yaml.lines().filter_map(|l| {
            l.trim()
                .strip_prefix("- uuid: ")
                .or(l.trim().strip_prefix("uuid: "))
        }) {
            let b = uuid.as_bytes();
            assert!(
                b.len() == 32
                    && b.iter()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
                    && b[12] == b'4'
                    && matches!(b[16], b'8' | b'9' | b'a' | b'b'),
                "{file}: {uuid} is not a UUIDv4"
            );
            // The shared host group is the same object in every file.
            if let Some(other) = seen.insert(uuid, file) {
                assert!(
                    uuid == "54758ea95cfe4e6b81c3ee0792aef7e3",
                    "{uuid} in {file} and {other}"
                );
            }
        }
    }
}

/// The macro every trapper item takes its Allowed hosts from (issue #12).
const ALLOWED_HOSTS: &str = "{$CONCIERGE.ALLOWED_HOSTS}";

#[test]
fn every_trapper_item_prototype_and_rule_takes_its_senders_from_the_macro() {
    let heartbeat = include_str!("../../../zabbix-templates/concierge_heartbeat.yaml");
    for (file, yaml, defines) in [
        ("concierge_heartbeat.yaml", heartbeat, true),
        // Links "Concierge heartbeat", which defines the macro for it.
        ("concierge_app.yaml", APPS[0].1, false),
        ("7.0/concierge_app.yaml", APPS[1].1, false),
        ("concierge_prometheus.yaml", PROMETHEUS, true),
        (
            "concierge_service.yaml",
            include_str!("../../../zabbix-templates/concierge_service.yaml"),
            true,
        ),
    ] {
        let lines: Vec<&str> = yaml.lines().collect();
        let mut traps = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.trim().trim_start_matches("- ") != "type: TRAP" {
                continue;
            }
            traps += 1;
            assert_eq!(
                lines[i + 1].trim(),
                format!("allowed_hosts: '{ALLOWED_HOSTS}'"),
                "{file}:{}: a trapper without Allowed hosts",
                i + 1
            );
        }
        assert!(traps > 0, "{file} has trapper items");
        assert_eq!(
            yaml.contains(&format!("- macro: '{ALLOWED_HOSTS}'")),
            defines,
            "{file}: where the macro is defined"
        );
    }
    assert!(APPS[0].1.contains("- name: 'Concierge heartbeat'"));
}
