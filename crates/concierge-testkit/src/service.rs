//! A whole Concierge service on the lab, as the loop tests run it: a compose project of
//! heartbeat containers that register themselves, wired to Zabbix by concierge-setup (whose
//! actions run concierge-scale on the server or on the lab's agent, and whose retire action
//! deletes the hosts of containers gone for {$CONCIERGE.RETIRE_AFTER}), and everything setup
//! and autoregistration made deleted when dropped.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use serde_json::{json, Value};

use crate::docker::{self, Project};
use crate::{bin, run_tool, wait_for, Lab};

/// Generous limit for one step of the loop (a trigger, an action, a registration).
pub const SETTLE: Duration = Duration::from_secs(120);

/// The actions (and the scripts of the same names) concierge-setup makes for `service`.
pub fn action_names(service: &str) -> Vec<String> {
    [
        "register",
        "scale up",
        "scale down",
        "escalate",
        "heal",
        "retire",
    ]
    .iter()
    .map(|a| format!("Concierge: {a} {service}"))
    .collect()
}

/// A service wired by concierge-setup, its containers in [`Project`].
pub struct Service {
    pub lab: Lab,
    /// The compose service (and the `--service` of setup).
    pub name: String,
    /// The containers' host group.
    pub group: String,
    /// The service host's id.
    pub hostid: String,
    pub project: Project,
}

impl Service {
    /// A new service `prefix<pid><n>` of heartbeat containers (beating every 2 s, registering
    /// with `--register-every 5s`), configured by concierge-setup with the common arguments and
    /// `policy` (--min, --max, --cooldown, --repeat-every...). Panics with what to do when the
    /// lab cannot see this checkout.
    pub fn setup(lab: &Lab, prefix: &str, policy: &[&str]) -> Service {
        let name = docker::unique(prefix);
        let project = heartbeat_project(lab, &name, &[], &[]);
        let user = lab.facts().run_user();
        let mut service = Service {
            lab: lab.clone(),
            group: format!("Concierge/{name}"),
            name,
            hostid: String::new(),
            project,
        };
        let paths = ScalePaths::of(lab, &service.project);
        // The retire script logs in with an API token it reads where the scripts run.
        retire_token(
            lab,
            &token_name(&service.name),
            &service.project.dir().join("api.token"),
            user,
        );
        let token_file = paths.in_project("api.token");
        let setup_command = lab
            .facts()
            .lab_path(&bin("concierge-setup"))
            .expect("the lab sees concierge-setup")
            .to_string_lossy()
            .into_owned();
        let mut args = paths.setup_args(lab, &service.name, &service.project.name);
        args.extend([
            "--aggregate-interval",
            "2s",
            "--zabbix-server",
            lab.server(),
            "--retire-token-file",
            &token_file,
            "--retire-command",
            &setup_command,
        ]);
        args.extend_from_slice(policy);
        if !lab.facts().global_scripts() {
            args.extend(["--scale-agent", lab.facts().agent()]);
        }
        let setup = {
            let _imports = crate::template_imports_lock();
            run_tool("concierge-setup", &args, None, Duration::from_secs(120))
        };
        assert_eq!(setup.code, Some(0), "{setup}");
        let host = lab
            .host_by_name(&format!("{}-service", service.name))
            .expect("host.get")
            .expect("the service host");
        service.hostid = host["hostid"].as_str().expect("hostid").to_string();
        service
    }

    /// "server" or "agent": where the actions' scripts run.
    pub fn scripts_on(&self) -> &'static str {
        if self.lab.facts().global_scripts() {
            "server"
        } else {
            "agent"
        }
    }

    /// The technical names of the containers' hosts.
    pub fn hosts(&self) -> anyhow::Result<BTreeSet<String>> {
        hosts_in(&self.lab, &self.group)
    }

    /// Wait until `n` containers have registered; their host names.
    pub fn wait_hosts(&self, n: usize) -> BTreeSet<String> {
        wait_for(&format!("{n} containers to register"), SETTLE, || {
            let hosts = self.hosts()?;
            Ok((hosts.len() == n).then_some(hosts))
        })
    }

    /// The last value of `key` on the service host.
    pub fn last_value(&self, key: &str) -> anyhow::Result<Option<String>> {
        last_value(&self.lab, &self.hostid, key)
    }

    /// Wait until the service host's `service.containers.running` is `n`.
    pub fn wait_running_aggregate(&self, n: u32) {
        wait_running_aggregate(&self.lab, &self.hostid, n, SETTLE);
    }

    /// The names of the service host's problem events since `since` (unix seconds).
    pub fn event_names(&self, since: u64) -> anyhow::Result<Vec<String>> {
        event_names(&self.lab, &self.hostid, since)
    }

    /// The events concierge-scale logged, as JSON values.
    pub fn scale_events(&self) -> Vec<Value> {
        scale_events(&self.project)
    }

    /// Wait for the first logged event that `pick` accepts.
    pub fn wait_scale_event(
        &self,
        what: &str,
        limit: Duration,
        pick: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_scale_event(&self.project, what, limit, pick)
    }

    /// Wait for the event of a scaling (any action) to `to`.
    pub fn wait_scaled_to(&self, to: u32) -> Value {
        wait_scaled_to(&self.project, to, SETTLE)
    }

    /// Push `value` to concierge.load of every host in `hosts`.
    pub fn push_load(&self, hosts: &BTreeSet<String>, value: &str) {
        for h in hosts {
            self.lab.wait_until_accepted(h, "concierge.load", value);
        }
    }

    /// Give the container host `host` the macro `name` = `value` (e.g. a shorter
    /// {$HEARTBEAT_NODATA}; the server sees it at its next configuration sync).
    pub fn set_host_macro(&self, host: &str, name: &str, value: &str) {
        let found = self
            .lab
            .host_by_name(host)
            .expect("host.get")
            .unwrap_or_else(|| panic!("no host {host}"));
        self.lab
            .call(
                "usermacro.create",
                json!({"hostid": found["hostid"], "macro": name, "value": value}),
            )
            .expect("usermacro.create");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        clean_up(&self.lab, &self.name, Some(&self.hostid));
    }
}

/// Deletes, when dropped, everything concierge-setup and autoregistration made for `service`,
/// as [`Service`] does: for a service a test set up in its own way (PSK options, a project of
/// its own, no setup at all).
pub struct ServiceCleanup {
    pub lab: Lab,
    pub service: String,
}

impl ServiceCleanup {
    pub fn new(lab: &Lab, service: &str) -> Self {
        ServiceCleanup {
            lab: lab.clone(),
            service: service.to_string(),
        }
    }
}

impl Drop for ServiceCleanup {
    fn drop(&mut self) {
        clean_up(&self.lab, &self.service, None);
    }
}

/// Delete what setup and autoregistration made for `service`: its API token, actions,
/// scripts, service host (`hostid`, else found by name) and its containers' hosts and group.
/// Nothing with CONCIERGE_KEEP_HOSTS=1.
fn clean_up(lab: &Lab, service: &str, hostid: Option<&str>) {
    if std::env::var("CONCIERGE_KEEP_HOSTS").as_deref() == Ok("1") {
        return;
    }
    if let Ok(found) = lab.call(
        "token.get",
        json!({"output": ["tokenid"], "filter": {"name": [token_name(service)]}}),
    ) {
        let ids = ids_of(&found, "tokenid");
        if !ids.is_empty() {
            let _ = lab.call("token.delete", Value::Array(ids));
        }
    }
    let names = action_names(service);
    if let Ok(found) = lab.call(
        "action.get",
        json!({"output": ["actionid"], "filter": {"name": names}}),
    ) {
        let ids = ids_of(&found, "actionid");
        if !ids.is_empty() {
            let _ = lab.call("action.delete", Value::Array(ids));
        }
    }
    // The service's scripts carry its actions' names (register has none).
    if let Ok(found) = lab.call(
        "script.get",
        json!({"output": ["scriptid"], "filter": {"name": names[1..].to_vec()}}),
    ) {
        let ids = ids_of(&found, "scriptid");
        if !ids.is_empty() {
            let _ = lab.call("script.delete", Value::Array(ids));
        }
    }
    // The service host on its own: a failure with the containers' hosts (one a container
    // re-announced meanwhile) must not keep it (seen once on 6.0).
    let service_host = match hostid {
        Some(id) if !id.is_empty() => vec![Value::from(id)],
        Some(_) => Vec::new(),
        None => lab
            .call(
                "host.get",
                json!({"output": ["hostid"],
                       "filter": {"host": [format!("{service}-service")]}}),
            )
            .map(|found| ids_of(&found, "hostid"))
            .unwrap_or_default(),
    };
    if !service_host.is_empty() {
        let _ = lab.call("host.delete", Value::Array(service_host));
    }
    let group = group_id(lab, &format!("Concierge/{service}"));
    if let Some(g) = &group {
        if let Ok(found) = lab.call("host.get", json!({"output": ["hostid"], "groupids": [g]})) {
            let ids = ids_of(&found, "hostid");
            if !ids.is_empty() {
                let _ = lab.call("host.delete", Value::Array(ids));
            }
        }
    }
    if let Some(g) = group {
        let _ = lab.call("hostgroup.delete", json!([g]));
    }
}

/// A compose project `name` of heartbeat containers (beating every 2 s, registering with
/// `--register-every 5s` and the metadata `concierge service=NAME`, then `extra` arguments),
/// with each of `read_only` mounted, and a state directory the lab's run user (the server or
/// agent that runs concierge-scale) can write.
pub fn heartbeat_project(lab: &Lab, name: &str, extra: &[&str], read_only: &[&str]) -> Project {
    let metadata = format!("concierge service={name}");
    let command: Vec<String> = [
        "up",
        "--every",
        "2s",
        "--register",
        "--register-every",
        "5s",
        "--metadata",
        &metadata,
        "-z",
        lab.server(),
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    let project = Project::with_mounts(name, docker::heartbeat_image(), &command, read_only);
    let state_dir = project.state_dir();
    std::fs::create_dir_all(&state_dir).expect("state dir");
    // The server (or agent) runs concierge-scale as user zabbix.
    let user = lab.facts().run_user();
    let chown = Command::new("chown")
        .arg(format!("{user}:{user}"))
        .arg(&state_dir)
        .status()
        .expect("chown");
    assert!(chown.success());
    project
}

/// Where the actions' scripts see concierge-scale and a project: concierge-scale runs where
/// they run, on the server where it allows scripts of its own, else (7.0's stock
/// EnableGlobalScripts=0) on the lab's agent; both must see this checkout's binary, the
/// compose file and the state directory.
pub struct ScalePaths {
    /// `--scale-command`.
    pub scale_command: String,
    /// `--compose-file`.
    pub compose_file: String,
    /// `--state-dir`.
    pub state_dir: String,
    /// The project directory as the lab sees it.
    pub project_dir: PathBuf,
}

impl ScalePaths {
    /// The paths of `project` in the lab. Panics with what to do when the lab cannot see this
    /// checkout.
    pub fn of(lab: &Lab, project: &Project) -> ScalePaths {
        let (Some(scale), Some(project_dir)) = (
            lab.facts().lab_path(&bin("concierge-scale")),
            lab.facts().lab_path(project.dir()),
        ) else {
            panic!(
                "the {} lab does not see {} or {} (it shares {}): run this checkout's \
                 scripts/zabbix-lab.sh up (it shares the checkout; ZLAB_SHARE=\"DIR ...\" adds \
                 directories)",
                lab.version(),
                bin("concierge-scale").display(),
                project.dir().display(),
                lab.facts().shared_dirs()
            )
        };
        ScalePaths {
            scale_command: scale.to_string_lossy().into_owned(),
            compose_file: project_dir
                .join(project.file.file_name().expect("compose file name"))
                .to_string_lossy()
                .into_owned(),
            state_dir: project_dir.join("state").to_string_lossy().into_owned(),
            project_dir,
        }
    }

    /// The arguments a test's concierge-setup starts with: the lab's API and login, then
    /// `service` (compose project `project`) scaled with these paths.
    pub fn setup_args<'a>(
        &'a self,
        lab: &'a Lab,
        service: &'a str,
        project: &'a str,
    ) -> Vec<&'a str> {
        let (api_user, api_password) = lab.facts().credentials();
        vec![
            "--api",
            lab.api_url(),
            "--user",
            api_user,
            "--password",
            api_password,
            "--service",
            service,
            "--compose-file",
            &self.compose_file,
            "--project",
            project,
            "--scale-command",
            &self.scale_command,
            "--state-dir",
            &self.state_dir,
        ]
    }

    /// `file` in the project directory, as the lab sees it.
    pub fn in_project(&self, file: &str) -> String {
        self.project_dir.join(file).to_string_lossy().into_owned()
    }
}

/// The name of the API token the retire script of `service` logs in with.
fn token_name(service: &str) -> String {
    format!("concierge-{service}")
}

/// An API token of the lab's user named `name`, written 0600 to `path` for `user` (the retire
/// script reads it where the scripts run).
fn retire_token(lab: &Lab, name: &str, path: &std::path::Path, user: &str) {
    use std::os::unix::fs::PermissionsExt;
    let (api_user, _) = lab.facts().credentials();
    let users = lab
        .call(
            "user.get",
            json!({"output": ["userid"], "filter": {"username": [api_user]}}),
        )
        .expect("user.get");
    let userid = users[0]["userid"].as_str().expect("userid").to_string();
    let created = lab
        .call("token.create", json!({"name": name, "userid": userid}))
        .expect("token.create");
    let generated = lab
        .call("token.generate", json!([created["tokenids"][0].clone()]))
        .expect("token.generate");
    let token = generated[0]["token"].as_str().expect("token");
    std::fs::write(path, format!("{token}\n")).expect("write token file");
    let chown = Command::new("chown")
        .arg(format!("{user}:{user}"))
        .arg(path)
        .status()
        .expect("chown");
    assert!(chown.success());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// How many of `hosts` have the heartbeat template's retire trigger (tag concierge.retire).
pub fn with_retire_trigger(lab: &Lab, hosts: &BTreeSet<String>) -> anyhow::Result<usize> {
    let found = lab.call(
        "trigger.get",
        json!({"output": ["triggerid"], "selectHosts": ["host"],
               "tags": [{"tag": "concierge.retire", "operator": 4}]}),
    )?;
    Ok(found
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            t["hosts"][0]["host"]
                .as_str()
                .is_some_and(|h| hosts.contains(h))
        })
        .count())
}

fn group_id(lab: &Lab, name: &str) -> Option<String> {
    lab.call(
        "hostgroup.get",
        json!({"output": ["groupid"], "filter": {"name": [name]}}),
    )
    .ok()?
    .get(0)?
    .get("groupid")?
    .as_str()
    .map(str::to_string)
}

/// The `field` of every object in an API result.
pub fn ids_of(found: &Value, field: &str) -> Vec<Value> {
    found
        .as_array()
        .map(|a| a.iter().map(|o| o[field].clone()).collect())
        .unwrap_or_default()
}

/// The technical names of the hosts in `group`.
pub fn hosts_in(lab: &Lab, group: &str) -> anyhow::Result<BTreeSet<String>> {
    let Some(gid) = group_id(lab, group) else {
        return Ok(BTreeSet::new());
    };
    let found = lab.call("host.get", json!({"output": ["host"], "groupids": [gid]}))?;
    Ok(found
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["host"].as_str().map(str::to_string))
        .collect())
}

/// The last value of `key` on host `hostid` (item.get lastvalue), once it has one.
pub fn last_value(lab: &Lab, hostid: &str, key: &str) -> anyhow::Result<Option<String>> {
    let found = lab.call(
        "item.get",
        json!({"output": ["lastvalue", "lastclock", "state", "error"], "hostids": [hostid],
               "filter": {"key_": [key]}}),
    )?;
    let item = &found[0];
    if item.is_null() {
        bail!("no item {key} yet");
    }
    if item["lastclock"].as_str() == Some("0") {
        return Ok(None);
    }
    Ok(item["lastvalue"].as_str().map(str::to_string))
}

/// The names of the problem events (any state) of `hostid` since `since` (unix seconds).
pub fn event_names(lab: &Lab, hostid: &str, since: u64) -> anyhow::Result<Vec<String>> {
    let found = lab.call(
        "event.get",
        json!({"output": ["name", "clock", "value"], "hostids": [hostid], "source": 0,
               "object": 0, "value": 1, "time_from": since}),
    )?;
    Ok(found
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_string))
        .collect())
}

/// Wait until the `service.containers.running` of service host `hostid` is `n`.
pub fn wait_running_aggregate(lab: &Lab, hostid: &str, n: u32, limit: Duration) {
    wait_for(
        &format!("service.containers.running = {n}"),
        limit,
        || match last_value(lab, hostid, "service.containers.running")? {
            Some(v) if v == n.to_string() => Ok(Some(())),
            other => bail!("last value {other:?}"),
        },
    );
}

/// The events concierge-scale logged in `project`'s state directory, as JSON values.
pub fn scale_events(project: &Project) -> Vec<Value> {
    std::fs::read_to_string(project.state_dir().join("scale-events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Wait for the first event logged in `project` that `pick` accepts.
pub fn wait_scale_event(
    project: &Project,
    what: &str,
    limit: Duration,
    pick: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, limit, || {
        let events = scale_events(project);
        match events.iter().find(|e| pick(e)) {
            Some(e) => Ok(Some(e.clone())),
            None => bail!("events so far: {events:?}"),
        }
    })
}

/// Wait for the event logged in `project` of a scaling (any action) to `to`.
pub fn wait_scaled_to(project: &Project, to: u32, limit: Duration) -> Value {
    wait_scale_event(
        project,
        &format!("the event of the scaling to {to}"),
        limit,
        |e| e["outcome"] == "scaled" && e["to"] == to,
    )
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
