//! What a test makes or reads in a lab through the API: hosts, items, history, templates,
//! actions and problems. Every object a test creates is deleted again when its guard drops
//! (unless `CONCIERGE_KEEP_HOSTS=1`), even when the test fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use serde_json::{json, Value};

use crate::lab::Lab;
use crate::{note, repo_root};

/// Item value types (`items.value_type`).
pub const FLOAT: u8 = 0;
pub const UNSIGNED: u8 = 3;

/// The name of the heartbeat template in zabbix-templates/concierge_heartbeat.yaml.
pub const HEARTBEAT_TEMPLATE: &str = "Concierge heartbeat";

fn keep_hosts() -> bool {
    std::env::var("CONCIERGE_KEEP_HOSTS").as_deref() == Ok("1")
}

/// The string at JSON `pointer` in `v`.
pub fn str_at(v: &Value, pointer: &str) -> anyhow::Result<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no string at {pointer} in {v}"))
}

fn num_at<T: std::str::FromStr>(v: &Value, field: &str) -> anyhow::Result<T> {
    let s = v[field]
        .as_str()
        .ok_or_else(|| anyhow!("no {field} in {v}"))?;
    s.parse()
        .map_err(|_| anyhow!("{field} {s:?} is not a number in {v}"))
}

/// Each row of `method`'s array result, read by `row`.
fn each_row<T>(
    rows: &Value,
    method: &str,
    row: impl Fn(&Value) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    rows.as_array()
        .ok_or_else(|| anyhow!("{method} returned {rows}"))?
        .iter()
        .map(row)
        .collect()
}

/// The strings of a JSON array (ids of a `*.create` result).
pub fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A host name no other test (or earlier run) uses: prefix, pid, time and a counter, in the
/// characters Zabbix allows, at most 64 long.
pub fn unique_host(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let suffix = format!(
        "-{}-{}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64 - suffix.len())
        .collect();
    format!("{clean}{suffix}")
}

/// Nanoseconds since the epoch, as history's `clock`/`ns` count them.
pub fn epoch_ns(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_default()
}

/// One item as `item.get` shows it (plain or discovered).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    pub key: String,
    pub itemid: String,
    pub value_type: u8,
    /// 0 = normal, 1 = not supported.
    pub state: u8,
    pub error: String,
    /// 0 = plain item, 4 = discovered by LLD.
    pub flags: u8,
}

/// One history row.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub itemid: String,
    pub clock: i64,
    pub ns: i64,
    pub value: String,
}

impl HistoryRow {
    /// `clock` and `ns` as one nanosecond count.
    pub fn at_ns(&self) -> i128 {
        i128::from(self.clock) * 1_000_000_000 + i128::from(self.ns)
    }
}

/// A host that exists for one test. Dropping it deletes it, with everything on it.
pub struct Host {
    pub lab: Lab,
    pub name: String,
    pub hostid: String,
}

impl Lab {
    /// The id of the host group every test host goes into (created when missing).
    pub fn group_id(&self) -> anyhow::Result<String> {
        let group = self.facts().lab_group();
        self.cached("group", || {
            let found = self.call(
                "hostgroup.get",
                json!({"output": ["groupid"], "filter": {"name": [group]}}),
            )?;
            match found[0]["groupid"].as_str() {
                Some(id) => Ok(id.to_string()),
                None => {
                    let made = self.call("hostgroup.create", json!({"name": group}))?;
                    str_at(&made, "/groupids/0")
                }
            }
        })
    }

    /// A new host named `name` in the lab's group, deleted again when the guard drops.
    /// Trapper items need no interface.
    pub fn create_host(&self, name: &str) -> Host {
        self.create_host_with(name, json!({}))
    }

    /// Like [`Lab::create_host`], with more `host.create` parameters (`templates`, `macros`…).
    pub fn create_host_with(&self, name: &str, extra: Value) -> Host {
        let group = self.group_id().expect("the lab's host group");
        let mut params = json!({"host": name, "groups": [{"groupid": group}]});
        if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        let made = self
            .call("host.create", params)
            .unwrap_or_else(|e| panic!("creating host {name} on {}: {e:#}", self.version()));
        Host {
            lab: self.clone(),
            name: name.to_string(),
            hostid: str_at(&made, "/hostids/0").expect("host.create hostids"),
        }
    }

    /// A new action (`action.create` with `params`), deleted again when the guard drops.
    pub fn create_action(&self, params: Value) -> Action {
        let name = params["name"].as_str().unwrap_or("?").to_string();
        let made = self
            .call("action.create", params)
            .unwrap_or_else(|e| panic!("creating action {name:?}: {e:#}"));
        Action {
            lab: self.clone(),
            name,
            actionid: str_at(&made, "/actionids/0").expect("action.create actionids"),
        }
    }

    /// An autoregistration action for hosts whose metadata contains `token`: it creates the
    /// host in the lab's group and links `templateid`; deleted again when the guard drops.
    pub fn create_registration_action(&self, token: &str, templateid: &str) -> Action {
        self.create_action(json!({
            "name": format!("concierge e2e registration {token}"),
            "eventsource": 2,
            "status": 0,
            "filter": {"evaltype": 0, "conditions": [
                {"conditiontype": 24, "operator": 2, "value": token}
            ]},
            "operations": [
                {"operationtype": 2},
                {"operationtype": 4, "opgroup": [{"groupid": self.group_id().expect("group")}]},
                {"operationtype": 6, "optemplate": [{"templateid": templateid}]}
            ]
        }))
    }

    /// The host named `name` with its parent templates and groups (`groups`, on every version:
    /// 6.2 renamed `selectGroups` to `selectHostGroups`), if it exists.
    pub fn host_by_name(&self, name: &str) -> anyhow::Result<Option<Value>> {
        let (select, key) = if self.at_least(6, 2) {
            ("selectHostGroups", "hostgroups")
        } else {
            ("selectGroups", "groups")
        };
        let mut params = json!({"output": ["hostid", "host"], "filter": {"host": [name]},
                                "selectParentTemplates": ["templateid", "host"]});
        params[select] = json!(["groupid", "name"]);
        let found = self.call("host.get", params)?;
        Ok(found
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .map(|mut h| {
                if let Some(o) = h.as_object_mut() {
                    let groups = o.remove(key).unwrap_or_default();
                    o.insert("groups".into(), groups);
                }
                h
            }))
    }

    /// The open problems of host `hostid` (problem.get, output extend).
    pub fn problems(&self, hostid: &str) -> anyhow::Result<Vec<Value>> {
        let found = self.call(
            "problem.get",
            json!({"output": "extend", "hostids": [hostid]}),
        )?;
        found
            .as_array()
            .cloned()
            .ok_or_else(|| anyhow!("problem.get returned {found}"))
    }

    /// The history of `itemids` (all of one `value_type`), oldest first.
    pub fn history(&self, itemids: &[String], value_type: u8) -> anyhow::Result<Vec<HistoryRow>> {
        let rows = self.call(
            "history.get",
            json!({"output": "extend", "history": value_type, "itemids": itemids,
                   "sortfield": "clock", "sortorder": "ASC", "limit": 1_000_000}),
        )?;
        each_row(&rows, "history.get", |r| {
            let (itemid, value) = (str_at(r, "/itemid")?, str_at(r, "/value")?);
            let (clock, ns) = (num_at(r, "clock")?, num_at(r, "ns")?);
            Ok(HistoryRow {
                itemid,
                clock,
                ns,
                value,
            })
        })
    }

    /// The id of the template whose technical name is `name`.
    pub fn template_id(&self, name: &str) -> anyhow::Result<String> {
        let found = self.call(
            "template.get",
            json!({"output": ["templateid"], "filter": {"host": [name]}}),
        )?;
        str_at(&found, "/0/templateid").with_context(|| format!("template {name:?}"))
    }

    /// `configuration.import` rules that create and update groups and templates and make
    /// items, triggers and discovery rules exactly the file's. 6.2 split the `groups` rule into
    /// `host_groups` and `template_groups`.
    pub fn import_rules(&self) -> Value {
        let both = json!({"createMissing": true, "updateExisting": true});
        let all = json!({"createMissing": true, "updateExisting": true, "deleteMissing": true});
        let mut rules = json!({"templates": both, "items": all, "triggers": all,
                               "discoveryRules": all, "valueMaps": all, "graphs": all,
                               "templateDashboards": all,
                               "templateLinkage": {"createMissing": true}});
        if self.at_least(6, 2) {
            rules["template_groups"] = both.clone();
            rules["host_groups"] = both;
        } else {
            rules["groups"] = both;
        }
        rules
    }

    /// The export of `zabbix-templates/<file>` this version imports: the one under `7.0/` from
    /// Zabbix 7.0 on, where there is one (agent items with timeouts of their own).
    pub fn template_path(&self, file: &str) -> std::path::PathBuf {
        let dir = repo_root().join("zabbix-templates");
        let newer = dir.join("7.0").join(file);
        if self.at_least(7, 0) && newer.is_file() {
            newer
        } else {
            dir.join(file)
        }
    }

    /// Import this version's export of `zabbix-templates/<file>`. Importing again is a no-op.
    pub fn import_template_file(&self, file: &str) -> anyhow::Result<()> {
        let path = self.template_path(file);
        let yaml = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let _one_at_a_time = template_imports_lock();
        self.call(
            "configuration.import",
            json!({"format": "yaml", "source": yaml, "rules": self.import_rules()}),
        )
        .with_context(|| format!("importing {} into {}", path.display(), self.version()))?;
        Ok(())
    }

    /// Import template files (in order) once per test process, retrying a few times (another
    /// process may import the same files at the same moment); the id of template `name`.
    pub fn imported_template(&self, files: &[&str], name: &str) -> String {
        let key = format!("template {name}");
        self.cached(&key, || {
            let mut tries = 0;
            loop {
                tries += 1;
                let imported = files
                    .iter()
                    .try_for_each(|f| self.import_template_file(f))
                    .and_then(|()| self.template_id(name));
                match imported {
                    Ok(id) => break Ok(id),
                    Err(e) if tries < 5 => {
                        note(&format!("template import failed (retrying): {e:#}"));
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    Err(e) => break Err(e),
                }
            }
        })
        .unwrap_or_else(|e| panic!("template {name} on {}: {e:#}", self.version()))
    }

    /// The heartbeat template, imported once per test process; returns its id.
    pub fn heartbeat_template(&self) -> String {
        self.imported_template(&["concierge_heartbeat.yaml"], HEARTBEAT_TEMPLATE)
    }
}

impl Host {
    /// A trapper LLD rule with key `key`; returns its item id.
    pub fn create_trapper_lld_rule(&self, key: &str) -> String {
        let made = self
            .lab
            .call(
                "discoveryrule.create",
                json!({"hostid": self.hostid, "name": key, "key_": key, "type": 2, "lifetime": "1h"}),
            )
            .unwrap_or_else(|e| panic!("creating LLD rule {key} on {}: {e:#}", self.name));
        str_at(&made, "/itemids/0").expect("discoveryrule.create itemids")
    }

    /// Trapper item prototypes on rule `ruleid`, one per key; returns their ids.
    pub fn create_trapper_prototypes(
        &self,
        ruleid: &str,
        keys: &[String],
        value_type: u8,
    ) -> Vec<String> {
        let params: Vec<Value> = keys
            .iter()
            .map(|k| {
                json!({"hostid": self.hostid, "ruleid": ruleid, "name": k, "key_": k,
                       "type": 2, "value_type": value_type})
            })
            .collect();
        let made = self
            .lab
            .call("itemprototype.create", Value::Array(params))
            .unwrap_or_else(|e| panic!("creating item prototypes on {}: {e:#}", self.name));
        ids(&made["itemids"])
    }

    /// A plain trapper item; returns its id.
    pub fn create_trapper_item(&self, key: &str, value_type: u8) -> String {
        let made = self
            .lab
            .call(
                "item.create",
                json!({"hostid": self.hostid, "name": key, "key_": key, "type": 2, "value_type": value_type}),
            )
            .unwrap_or_else(|e| panic!("creating item {key} on {}: {e:#}", self.name));
        str_at(&made, "/itemids/0").expect("item.create itemids")
    }

    /// Every item on the host, plain and discovered (item.get returns both; prototypes and
    /// LLD rules are not items here).
    pub fn items(&self) -> anyhow::Result<Vec<ItemRow>> {
        let rows = self.lab.call(
            "item.get",
            json!({"output": ["itemid", "key_", "value_type", "state", "error", "flags"],
                   "hostids": [self.hostid]}),
        )?;
        each_row(&rows, "item.get", |r| {
            Ok(ItemRow {
                key: str_at(r, "/key_")?,
                itemid: str_at(r, "/itemid")?,
                value_type: num_at(r, "value_type")?,
                state: num_at(r, "state")?,
                error: str_at(r, "/error")?,
                flags: num_at(r, "flags")?,
            })
        })
    }

    /// How many items the host has (cheap enough to poll with 11,000 items).
    pub fn item_count(&self) -> anyhow::Result<usize> {
        let n = self.lab.call(
            "item.get",
            json!({"countOutput": true, "hostids": [self.hostid]}),
        )?;
        n.as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("item.get countOutput returned {n}"))
    }

    /// The id of the item with key `key` on this host (plain or from a template).
    pub fn item_id(&self, key: &str) -> anyhow::Result<String> {
        self.items()?
            .into_iter()
            .find(|i| i.key == key)
            .map(|i| i.itemid)
            .ok_or_else(|| anyhow!("no item {key} on {}", self.name))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if keep_hosts() {
            note(&format!("kept host {} ({})", self.name, self.hostid));
            return;
        }
        if let Err(e) = self.lab.call("host.delete", json!([self.hostid])) {
            note(&format!("could not delete host {}: {e:#}", self.name));
        }
    }
}

/// An action that exists for one test. Dropping it deletes it.
pub struct Action {
    pub lab: Lab,
    pub name: String,
    pub actionid: String,
}

impl Drop for Action {
    fn drop(&mut self) {
        if let Err(e) = self.lab.call("action.delete", json!([self.actionid])) {
            note(&format!("could not delete action {:?}: {e:#}", self.name));
        }
    }
}

/// Deletes the hosts named `names`, if they exist by then, when dropped: for hosts that the
/// server creates (autoregistration) rather than the test.
pub struct HostNamed {
    pub lab: Lab,
    pub names: Vec<String>,
}

impl HostNamed {
    /// A guard for the one host `name`.
    pub fn new(lab: &Lab, name: &str) -> Self {
        HostNamed {
            lab: lab.clone(),
            names: vec![name.to_string()],
        }
    }
}

impl Drop for HostNamed {
    fn drop(&mut self) {
        if keep_hosts() || self.names.is_empty() {
            return;
        }
        let found = self.lab.call(
            "host.get",
            json!({"output": ["hostid"], "filter": {"host": self.names}}),
        );
        let hostids: Vec<Value> = match found {
            Ok(v) => v
                .as_array()
                .map(|a| a.iter().map(|h| h["hostid"].clone()).collect())
                .unwrap_or_default(),
            Err(e) => {
                note(&format!("could not look up hosts {:?}: {e:#}", self.names));
                return;
            }
        };
        if !hostids.is_empty() {
            if let Err(e) = self.lab.call("host.delete", Value::Array(hostids)) {
                note(&format!("could not delete hosts {:?}: {e:#}", self.names));
            }
        }
    }
}

/// Templates imported under names of their own for one test (other worktrees import their
/// own copies of the shipped templates into the shared lab at any time). Dropping it deletes
/// them.
pub struct PrivateTemplates {
    pub lab: Lab,
    /// Shipped name → private name.
    pub names: Vec<(String, String)>,
    pub templateids: Vec<String>,
}

impl PrivateTemplates {
    /// The id of the private copy of shipped template `shipped`.
    pub fn id(&self, shipped: &str) -> &str {
        let at = self
            .names
            .iter()
            .position(|(s, _)| s == shipped)
            .unwrap_or_else(|| panic!("no private copy of {shipped}"));
        &self.templateids[at]
    }
}

impl Drop for PrivateTemplates {
    fn drop(&mut self) {
        if keep_hosts() || self.templateids.is_empty() {
            return;
        }
        let ids: Vec<Value> = self.templateids.iter().map(|i| json!(i)).collect();
        if let Err(e) = self.lab.call("template.delete", Value::Array(ids)) {
            note(&format!(
                "could not delete templates {:?}: {e:#}",
                self.names
            ));
        }
    }
}

/// A fresh random UUIDv4 in Zabbix's form (32 lower-case hex digits).
fn uuid4() -> String {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Lab {
    /// Import this version's export of each of `files` (`(file, template name)`, in order)
    /// as a private copy: every template name gets `suffix`, everywhere in every file (links,
    /// trigger expressions, dashboards), and every object but the shared template group a new
    /// UUID, so the copies are new templates that nobody else's import touches.
    pub fn import_private_copies(&self, files: &[(&str, &str)], suffix: &str) -> PrivateTemplates {
        let mut private = PrivateTemplates {
            lab: self.clone(),
            names: files
                .iter()
                .map(|(_, n)| (n.to_string(), format!("{n} {suffix}")))
                .collect(),
            templateids: Vec::new(),
        };
        for (file, _) in files {
            let path = self.template_path(file);
            let mut yaml = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            for (shipped, own) in &private.names {
                yaml = yaml
                    .replace(&format!("'{shipped}'"), &format!("'{own}'"))
                    .replace(&format!("/{shipped}/"), &format!("/{own}/"))
                    .replace(&format!(": {shipped}\n"), &format!(": '{own}'\n"));
            }
            let yaml: String = yaml
                .lines()
                .map(|l| match l.split_once("uuid: ") {
                    Some((_, "54758ea95cfe4e6b81c3ee0792aef7e3")) | None => l.to_string(),
                    Some((head, _)) => format!("{head}uuid: {}", uuid4()),
                })
                .collect::<Vec<_>>()
                .join("\n");
            self.call(
                "configuration.import",
                json!({"format": "yaml", "source": yaml, "rules": self.import_rules()}),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "importing a private copy of {} into {}: {e:#}",
                    path.display(),
                    self.version()
                )
            });
            // Known at once, so that a later failure still deletes it.
            let own = &private.names[private.templateids.len()].1;
            let id = self
                .template_id(own)
                .unwrap_or_else(|e| panic!("the private template {own}: {e:#}"));
            private.templateids.push(id);
        }
        private
    }
}

/// Puts the server's autoregistration back to unencrypted when dropped (other tests register
/// plain).
pub struct PlainAutoregistration(pub Lab);

impl Drop for PlainAutoregistration {
    fn drop(&mut self) {
        if let Err(e) = self
            .0
            .call("autoregistration.update", json!({"tls_accept": 1}))
        {
            note(&format!("could not restore plain autoregistration: {e:#}"));
        }
    }
}

/// The `tls_accept` of host `name`, `None` when there is no such host.
pub fn tls_accept_of(lab: &Lab, name: &str) -> anyhow::Result<Option<String>> {
    let found = lab.call(
        "host.get",
        json!({"output": ["hostid", "tls_accept"], "filter": {"host": [name]}}),
    )?;
    Ok(found
        .pointer("/0/tls_accept")
        .and_then(|v| v.as_str())
        .map(str::to_string))
}

/// Held while a test imports templates, directly or through concierge-setup: two imports of one
/// template at once fail in the server's SQL (seen on 6.0: "SQL statement execution has failed
/// \"UPDATE items ..."), so every test process on this machine imports one at a time. An
/// exclusive `flock` on a file in the temporary directory; released when dropped.
pub struct TemplateImportsLock(#[allow(dead_code)] std::fs::File);

/// Wait for [`TemplateImportsLock`] (no limit: an import holds it for seconds at most, and a
/// process that dies releases it).
pub fn template_imports_lock() -> TemplateImportsLock {
    use std::os::fd::AsRawFd;
    let path = std::env::temp_dir().join("concierge-lab-template-imports.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    loop {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return TemplateImportsLock(file);
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::Interrupted,
            "flock {}: {err}",
            path.display()
        );
    }
}
