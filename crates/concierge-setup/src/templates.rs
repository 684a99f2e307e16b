//! The three Concierge templates, embedded in the binary (or read from a directory), and
//! their import with `configuration.import`. The files are 6.0 exports, which 6.0 and later
//! import; a file under `7.0/` replaces its 6.0 export from Zabbix 7.0 on (the app template's
//! agent items carry their own timeouts there, which a 6.0 export cannot).

use std::collections::BTreeMap;
use std::path::Path;

use concierge_core::outcome::{self, Context, UsageError};
use concierge_core::zabbix::api::Api;
use serde_json::{json, Value};

use crate::report::{Change, Reporter};
use crate::version::ZabbixVersion;
use crate::SetupError;

/// Technical name of the heartbeat template.
pub const HEARTBEAT: &str = "Concierge heartbeat";
/// Technical name of the app template (links the heartbeat one), linked to registered
/// containers.
pub const APP: &str = "Concierge app";
/// Technical name of the service template, linked to the service host.
pub const SERVICE: &str = "Concierge service";

/// One template file.
#[derive(Debug, Clone)]
pub struct TemplateFile {
    /// The file name (in zabbix-templates/ or --templates DIR).
    pub file: &'static str,
    /// The technical name of the template it holds.
    pub name: &'static str,
    /// The YAML text.
    pub yaml: String,
}

/// The files in import order: app links heartbeat, so heartbeat comes first.
pub const FILES: [(&str, &str); 3] = [
    ("concierge_heartbeat.yaml", HEARTBEAT),
    ("concierge_app.yaml", APP),
    ("concierge_service.yaml", SERVICE),
];

/// The directory of the files for Zabbix 7.0 and later, beside the 6.0 exports.
pub const DIR_7_0: &str = "7.0";

const EMBEDDED: [&str; 3] = [
    include_str!("../../../zabbix-templates/concierge_heartbeat.yaml"),
    include_str!("../../../zabbix-templates/concierge_app.yaml"),
    include_str!("../../../zabbix-templates/concierge_service.yaml"),
];

/// The 7.0 files built into this binary: (file name, YAML).
const EMBEDDED_7_0: [(&str, &str); 1] = [(
    "concierge_app.yaml",
    include_str!("../../../zabbix-templates/7.0/concierge_app.yaml"),
)];

/// Where the generated 7.0 export says it comes from.
pub const GENERATED_HEADER: &str = "\
# GENERATED from ../concierge_app.yaml by `cargo run -p xtask -- templates`: do not edit; edit
# the 6.0 export and run that again (a test of concierge-setup fails while they disagree).
#
# Concierge app for Zabbix 7.0 and later (7.0 export). What differs from the 6.0 export:
# every item the agent runs has a timeout of its own (30s): a 7.0 agent no longer stops a
# UserParameter at its Timeout but at the item's timeout (global default 3 s). The tools'
# default deadline is the agent's Timeout (at most 30 s) minus half a second, so 30 s always
# lets a tool end on its own deadline and report its code instead of being killed and turning
# unsupported. A 6.0 export cannot carry these timeouts: 7.0 drops them on import.
";

/// The 7.0 export of a 6.0 export (the app template's): format version 7.0, no date, the
/// 6.2+ `template_groups`, a `timeout: 30s` beside every `type: ZABBIX_ACTIVE`, 7.0's
/// `enabled_lifetime_type` beside every `lifetime`, and 7.0's dashboards (see
/// [`dashboard_line_7_0`]). Works
/// line by line on the layout of our files (two-space indents, one key a line).
pub fn export_7_0(yaml_6_0: &str) -> String {
    let mut out = String::from(GENERATED_HEADER);
    let body = yaml_6_0.lines().skip_while(|l| l.starts_with('#'));
    let mut in_dashboards = false;
    // The indent of the widget entries under the current `widgets:`.
    let mut widget_indent = usize::MAX;
    // Whether the current widget is a graph prototype widget, and how many there were.
    let mut prototype_widget = false;
    let mut prototypes = 0u8;
    for line in body {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        // The key's own column: after a list dash if the line opens a list entry.
        let key_indent = match trimmed.strip_prefix("- ") {
            Some(_) => format!("{indent}  "),
            None => indent.to_string(),
        };
        let key = trimmed.trim_start_matches("- ");
        if line == "      dashboards:" {
            in_dashboards = true;
        } else if !line.starts_with("       ") {
            in_dashboards = false;
        }
        if in_dashboards {
            if key == "widgets:" {
                widget_indent = key_indent.len() + 2;
            }
            let converted = dashboard_line_7_0(line, widget_indent);
            if indent.len() == widget_indent && trimmed.starts_with("- ") {
                prototype_widget = converted.trim_start() == "- type: graphprototype";
                prototypes += u8::from(prototype_widget);
            }
            out.push_str(&converted);
            out.push('\n');
            // 7.0's graph prototype widget hands its graphs a time period: without this field
            // (which 7.0 writes; a 6.0 import gets it from the import converter) every graph
            // is the error 'Invalid parameter "time_period": the parameter "from" is missing'.
            if prototype_widget && key == "fields:" && indent.len() == widget_indent + 2 {
                let f = format!("{indent}  ");
                // The widget's own reference (five capitals), which 7.0 gives every widget.
                let reference = format!("CPRO{}", char::from(b'A' + prototypes % 26));
                out.push_str(&format!(
                    "{f}- type: STRING\n{f}  name: reference\n{f}  value: {reference}\n\
                     {f}- type: STRING\n{f}  name: time_period._reference\n{f}  value: DASHBOARD._timeperiod\n"
                ));
            }
            continue;
        }
        match line {
            "  version: '6.0'" => out.push_str("  version: '7.0'\n"),
            l if l.starts_with("  date: ") => {}
            "  groups:" => out.push_str("  template_groups:\n"),
            _ => {
                out.push_str(line);
                out.push('\n');
                if key == "type: ZABBIX_ACTIVE" {
                    out.push_str(&format!("{key_indent}timeout: 30s\n"));
                } else if key.starts_with("lifetime: ") {
                    out.push_str(&format!(
                        "{key_indent}enabled_lifetime_type: DISABLE_NEVER\n"
                    ));
                }
            }
        }
    }
    out
}

/// A line of a 6.0 template dashboard as 7.0 writes it: 7.0's grid has three times the
/// columns (x and width times 3), widgets are named in lower case, and a widget's graph field
/// is the first of a list (`graphid.0`).
fn dashboard_line_7_0(line: &str, widget_indent: usize) -> String {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let (dash, key) = match trimmed.strip_prefix("- ") {
        Some(k) => ("- ", k),
        None => ("", trimmed),
    };
    for field in ["x", "width"] {
        let Some(n) = key
            .strip_prefix(&format!("{field}: '"))
            .and_then(|v| v.strip_suffix('\''))
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        return format!("{indent}{dash}{field}: '{}'", n * 3);
    }
    if key == "name: graphid" {
        return format!("{indent}{dash}name: graphid.0");
    }
    if indent.len() == widget_indent && dash == "- " {
        return widget_type_7_0(line);
    }
    line.to_string()
}

/// A 6.0 widget's type line as 7.0 writes it (`- type: GRAPH_CLASSIC` becomes
/// `- type: graph`); any other line as it is.
fn widget_type_7_0(line: &str) -> String {
    const WIDGETS: [(&str, &str); 6] = [
        ("GRAPH_CLASSIC", "graph"),
        ("GRAPH_PROTOTYPE", "graphprototype"),
        ("SVG_GRAPH", "svggraph"),
        ("PLAIN_TEXT", "plaintext"),
        ("PROBLEMS", "problems"),
        ("ITEM", "item"),
    ];
    let trimmed = line.trim_start();
    for (old, new) in WIDGETS {
        if trimmed == format!("- type: {old}") {
            return line.replace(old, new);
        }
    }
    line.to_string()
}

/// The templates built into this binary, as `version` imports them.
pub fn embedded(version: ZabbixVersion) -> Vec<TemplateFile> {
    FILES
        .iter()
        .zip(EMBEDDED)
        .map(|(&(file, name), yaml)| {
            let newer = EMBEDDED_7_0
                .iter()
                .find(|(f, _)| *f == file && version.has_item_timeouts());
            TemplateFile {
                file,
                name,
                yaml: newer.map_or(yaml, |(_, y)| y).to_string(),
            }
        })
        .collect()
}

/// The three files from `dir`, as `version` imports them (`dir/7.0/FILE` where it exists).
pub fn from_dir(dir: &Path, version: ZabbixVersion) -> Result<Vec<TemplateFile>, UsageError> {
    FILES
        .iter()
        .map(|&(file, name)| {
            let newer = dir.join(DIR_7_0).join(file);
            let path = if version.has_item_timeouts() && newer.is_file() {
                newer
            } else {
                dir.join(file)
            };
            let yaml = std::fs::read_to_string(&path).map_err(|e| {
                UsageError(format!("--templates: cannot read {}: {e}", path.display()))
            })?;
            Ok(TemplateFile { file, name, yaml })
        })
        .collect()
}

/// The import rules: create and update groups and templates, link missing templates, and
/// make items, triggers and discovery rules (with their prototypes) exactly the file's.
/// 6.2 replaced the rule `groups` with `host_groups` and `template_groups`.
pub fn import_rules(version: ZabbixVersion) -> Value {
    let both = json!({"createMissing": true, "updateExisting": true});
    let all = json!({"createMissing": true, "updateExisting": true, "deleteMissing": true});
    let mut rules = json!({
        "templates": both,
        "templateLinkage": {"createMissing": true},
        "items": all,
        "triggers": all,
        "discoveryRules": all,
        "valueMaps": all,
        "graphs": all,
        "templateDashboards": all,
    });
    if version.splits_groups() {
        rules["host_groups"] = both.clone();
        rules["template_groups"] = both;
    } else {
        rules["groups"] = both;
    }
    rules
}

/// Import every template in order, reporting each as created, updated or unchanged (by
/// comparing its export before and after), and return their ids by name.
pub fn import_all(
    api: &Api,
    version: ZabbixVersion,
    files: &[TemplateFile],
    out: &mut Reporter,
) -> outcome::Result<BTreeMap<&'static str, String>> {
    let mut ids = BTreeMap::new();
    for f in files {
        let before = export(api, f.name)?;
        api.call(
            "configuration.import",
            json!({"format": "yaml", "source": f.yaml, "rules": import_rules(version)}),
        )
        .with_context(|| format!("importing {}", f.file))?;
        let (id, after) = export(api, f.name)?.ok_or_else(|| {
            SetupError(format!(
                "{} was imported, but it holds no template named {:?}",
                f.file, f.name
            ))
        })?;
        let change = match before {
            None => Change::Created,
            Some((_, b)) if without_date(&b) == without_date(&after) => Change::Unchanged,
            Some(_) => Change::Updated,
        };
        out.push(change, "template", f.name, &id);
        ids.insert(f.name, id);
    }
    Ok(ids)
}

/// The template's id and YAML export, if it exists.
fn export(api: &Api, name: &str) -> outcome::Result<Option<(String, String)>> {
    let Some(id) = api.find_id("template.get", "templateid", json!({"host": [name]}))? else {
        return Ok(None);
    };
    let yaml = api.call(
        "configuration.export",
        json!({"format": "yaml", "options": {"templates": [id]}}),
    )?;
    let yaml = yaml.as_str().map(str::to_string).ok_or_else(|| {
        SetupError(format!(
            "configuration.export of {name:?} did not return text"
        ))
    })?;
    Ok(Some((id, yaml)))
}

/// The export without its `date:` line, which changes on every export.
fn without_date(yaml: &str) -> String {
    yaml.lines()
        .filter(|l| !l.trim_start().starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_templates_hold_their_names_in_import_order() {
        for (version, app_format) in [
            (ZabbixVersion::V6_0, "version: '6.0'"),
            (ZabbixVersion::V7_0, "version: '7.0'"),
        ] {
            let files = embedded(version);
            assert_eq!(files.len(), 3);
            for f in &files {
                assert!(
                    f.yaml.contains(&format!("template: '{}'", f.name)),
                    "{} lacks {}",
                    f.file,
                    f.name
                );
                let format = if f.name == APP {
                    app_format
                } else {
                    "version: '6.0'"
                };
                assert!(f.yaml.contains(format), "{} for {version}", f.file);
            }
            // The app template links the heartbeat one, which must be imported before it.
            assert!(files[1].yaml.contains("- name: 'Concierge heartbeat'"));
            assert_eq!(files[0].name, HEARTBEAT);
        }
    }

    #[test]
    fn the_7_0_app_template_gives_every_agent_item_a_timeout() {
        let app = &embedded(ZabbixVersion::V7_0)[1].yaml;
        let agent_items = app.matches("type: ZABBIX_ACTIVE").count();
        assert_eq!(agent_items, 6, "the courier item and five LLD rules");
        assert_eq!(app.matches("timeout: 30s").count(), agent_items);
        assert!(!embedded(ZabbixVersion::V6_0)[1].yaml.contains("timeout:"));
    }

    #[test]
    fn the_service_template_has_what_setup_relies_on() {
        let service = &embedded(ZabbixVersion::V7_0)[2].yaml;
        assert!(
            service.contains(&format!("key: {}", concierge_core::scaling::TARGET_ITEM)),
            "concierge_service.yaml lacks the item concierge-scale pushes to"
        );
        for needed in [
            "key: service.timers.discovery",
            "key: service.containers.running",
            "'{$SERVICE_HOSTGROUP}'",
            "'{$COMPOSE_FILE}'",
            "'{$COMPOSE_PROJECT}'",
            "'{$SERVICE_NAME}'",
            "'{$SCALE_MIN}'",
            "'{$SCALE_MAX}'",
            "'{$SCALE_STEP}'",
            "'{$SCALE_COOLDOWN}'",
            "'service.timer.p95[{#TIMER}]'",
        ] {
            assert!(
                service.contains(needed),
                "concierge_service.yaml lacks {needed}"
            );
        }
        for d in crate::command::Direction::BOTH {
            assert!(
                service.contains(&format!("name: '{}'", d.trigger_name())),
                "concierge_service.yaml lacks the trigger {}",
                d.trigger_name()
            );
        }
    }

    #[test]
    fn rules_never_delete_groups_or_templates() {
        let old = import_rules(ZabbixVersion::V6_0);
        assert!(old["groups"].get("deleteMissing").is_none());
        assert!(old.get("host_groups").is_none());
        let new = import_rules(ZabbixVersion::V7_0);
        assert!(new.get("groups").is_none(), "7.0 refuses the rule groups");
        for r in [&old, &new] {
            assert!(r["templates"].get("deleteMissing").is_none());
            assert_eq!(r["discoveryRules"]["deleteMissing"], true);
        }
        for g in ["host_groups", "template_groups"] {
            assert_eq!(new[g]["createMissing"], true);
            assert!(new[g].get("deleteMissing").is_none());
        }
    }

    #[test]
    fn date_lines_do_not_count_as_changes() {
        assert_eq!(
            without_date(
                "zabbix_export:\n  version: '6.0'\n  date: '2026-01-01T00:00:00Z'\n  x: 1"
            ),
            without_date(
                "zabbix_export:\n  version: '6.0'\n  date: '2027-01-01T00:00:00Z'\n  x: 1"
            )
        );
    }

    #[test]
    fn a_directory_gives_its_7_0_files_to_7_0() {
        let dir = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../zabbix-templates"
        ));
        let old = from_dir(dir, ZabbixVersion::V6_0).unwrap();
        let new = from_dir(dir, ZabbixVersion::V7_0).unwrap();
        assert!(old[1].yaml.contains("version: '6.0'"));
        assert!(new[1].yaml.contains("version: '7.0'"));
        assert_eq!(
            old[0].yaml, new[0].yaml,
            "no 7.0 file: the 6.0 export serves"
        );
        assert_eq!(new[1].yaml, embedded(ZabbixVersion::V7_0)[1].yaml);
    }

    #[test]
    fn the_committed_7_0_export_is_the_generated_one() {
        let committed = EMBEDDED_7_0[0].1;
        let generated = export_7_0(EMBEDDED[1]);
        assert!(
            committed == generated,
            "zabbix-templates/7.0/concierge_app.yaml is not what `cargo run -p xtask -- \
             templates` makes of concierge_app.yaml: run it"
        );
    }

    #[test]
    fn the_7_0_conversion_changes_only_what_7_0_needs() {
        let old = "# comment\nzabbix_export:\n  version: '6.0'\n  date: 'x'\n  groups:\n    - name: G\n  templates:\n    - uuid: u\n      items:\n        - uuid: i\n          type: ZABBIX_ACTIVE\n          key: k\n        - uuid: j\n          type: TRAP\n      discovery_rules:\n        - uuid: r\n          lifetime: 7d\n      dashboards:\n        - uuid: d\n          pages:\n            - widgets:\n                - type: GRAPH_PROTOTYPE\n                  x: '12'\n                  width: '12'\n                  fields:\n                    - type: GRAPH_PROTOTYPE\n                      name: graphid\n      valuemaps:\n        - uuid: v\n          name: graphid\n";
        let new = export_7_0(old);
        let body = new.strip_prefix(GENERATED_HEADER).unwrap();
        assert_eq!(
            body,
            "zabbix_export:\n  version: '7.0'\n  template_groups:\n    - name: G\n  templates:\n    - uuid: u\n      items:\n        - uuid: i\n          type: ZABBIX_ACTIVE\n          timeout: 30s\n          key: k\n        - uuid: j\n          type: TRAP\n      discovery_rules:\n        - uuid: r\n          lifetime: 7d\n          enabled_lifetime_type: DISABLE_NEVER\n      dashboards:\n        - uuid: d\n          pages:\n            - widgets:\n                - type: graphprototype\n                  x: '36'\n                  width: '36'\n                  fields:\n                    - type: STRING\n                      name: reference\n                      value: CPROB\n                    - type: STRING\n                      name: time_period._reference\n                      value: DASHBOARD._timeperiod\n                    - type: GRAPH_PROTOTYPE\n                      name: graphid.0\n      valuemaps:\n        - uuid: v\n          name: graphid\n"
        );
    }

    #[test]
    fn a_missing_directory_is_a_usage_error() {
        let e = from_dir(Path::new("/nonexistent/concierge"), ZabbixVersion::V7_0).unwrap_err();
        assert!(e.0.contains("concierge_heartbeat.yaml"), "{e}");
    }
}
