//! The three Concierge templates, embedded in the binary (or read from a directory), and
//! their import with `configuration.import`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use concierge_core::outcome::UsageError;
use concierge_core::zabbix::api::Api;
use serde_json::{json, Value};

use crate::report::{Change, Reporter};
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

const EMBEDDED: [&str; 3] = [
    include_str!("../../../zabbix-templates/concierge_heartbeat.yaml"),
    include_str!("../../../zabbix-templates/concierge_app.yaml"),
    include_str!("../../../zabbix-templates/concierge_service.yaml"),
];

/// The templates built into this binary.
pub fn embedded() -> Vec<TemplateFile> {
    FILES
        .iter()
        .zip(EMBEDDED)
        .map(|(&(file, name), yaml)| TemplateFile {
            file,
            name,
            yaml: yaml.to_string(),
        })
        .collect()
}

/// The three files from `dir`.
pub fn from_dir(dir: &Path) -> Result<Vec<TemplateFile>, UsageError> {
    FILES
        .iter()
        .map(|&(file, name)| {
            let path = dir.join(file);
            let yaml = std::fs::read_to_string(&path).map_err(|e| {
                UsageError(format!("--templates: cannot read {}: {e}", path.display()))
            })?;
            Ok(TemplateFile { file, name, yaml })
        })
        .collect()
}

/// The import rules: create and update groups and templates, link missing templates, and
/// make items, triggers and discovery rules (with their prototypes) exactly the file's.
pub fn import_rules() -> Value {
    let all = json!({"createMissing": true, "updateExisting": true, "deleteMissing": true});
    json!({
        "groups": {"createMissing": true, "updateExisting": true},
        "templates": {"createMissing": true, "updateExisting": true},
        "templateLinkage": {"createMissing": true},
        "items": all,
        "triggers": all,
        "discoveryRules": all,
    })
}

/// Import every template in order, reporting each as created, updated or unchanged (by
/// comparing its export before and after), and return their ids by name.
pub fn import_all(
    api: &Api,
    files: &[TemplateFile],
    out: &mut Reporter,
) -> anyhow::Result<BTreeMap<&'static str, String>> {
    let mut ids = BTreeMap::new();
    for f in files {
        let before = export(api, f.name)?;
        api.call(
            "configuration.import",
            json!({"format": "yaml", "source": f.yaml, "rules": import_rules()}),
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
fn export(api: &Api, name: &str) -> anyhow::Result<Option<(String, String)>> {
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
        let files = embedded();
        assert_eq!(files.len(), 3);
        for f in &files {
            assert!(
                f.yaml.contains(&format!("template: '{}'", f.name)),
                "{} lacks {}",
                f.file,
                f.name
            );
            assert!(f.yaml.contains("version: '6.0'"), "{}", f.file);
        }
        // The app template links the heartbeat one, which must be imported before it.
        assert!(files[1].yaml.contains("- name: 'Concierge heartbeat'"));
        assert_eq!(files[0].name, HEARTBEAT);
    }

    #[test]
    fn the_service_template_has_what_setup_relies_on() {
        let service = &embedded()[2].yaml;
        for needed in [
            "key: service.timers.discovery",
            "key: service.scale.target",
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
        let r = import_rules();
        assert!(r["groups"].get("deleteMissing").is_none());
        assert!(r["templates"].get("deleteMissing").is_none());
        assert_eq!(r["discoveryRules"]["deleteMissing"], true);
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
    fn a_missing_directory_is_a_usage_error() {
        let e = from_dir(Path::new("/nonexistent/concierge")).unwrap_err();
        assert!(e.0.contains("concierge_heartbeat.yaml"), "{e}");
    }
}
