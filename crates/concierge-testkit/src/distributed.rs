//! The lab's distributed parts (zabbix-lab.sh: HA node b, the proxies, 7.0's proxy group): their
//! facts, hosts they monitor, and stopping one part for a failover test, started again when the
//! guard drops (the lab is left as it was found).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::{json, Value};
use std::time::SystemTime;

use crate::facts::Facts;
use crate::lab::Lab;
use crate::objects::{epoch_ns, str_at, HistoryRow, Host};
use crate::process::Coprocess;
use crate::trapper::trapper_request;
use crate::wait::wait_for;
use crate::{note, repo_root};

impl Facts {
    /// Both nodes of the server's HA cluster, as ServerActive lists them (`a;b`).
    pub fn ha_nodes(&self) -> &str {
        self.get("ZABBIX_HA_NODES")
    }

    /// One HA node's trapper, `a` (the lab's server) or `b`.
    pub fn ha_node(&self, node: char) -> &str {
        let nodes: Vec<&str> = self.ha_nodes().split(';').collect();
        match node {
            'a' => nodes[0],
            'b' => nodes[1],
            _ => panic!("HA nodes are a and b, not {node}"),
        }
    }

    /// The HA node names, `a` first.
    pub fn ha_node_names(&self) -> Vec<&str> {
        self.get("ZABBIX_HA_NODE_NAMES").split(';').collect()
    }

    /// The proxy of its own (no group): its trapper and its name.
    pub fn proxy(&self) -> (&str, &str) {
        (self.get("ZABBIX_PROXY"), self.get("ZABBIX_PROXY_NAME"))
    }

    /// The proxy group's name (7.0 on), or `None`.
    pub fn proxy_group(&self) -> Option<&str> {
        Some(self.get("ZABBIX_PROXY_GROUP")).filter(|g| !g.is_empty())
    }

    /// The members of the proxy group: `(trapper, name)` each.
    pub fn proxy_group_members(&self) -> Vec<(&str, &str)> {
        let list = |name| {
            self.get(name)
                .split(',')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        };
        list("ZABBIX_PROXY_GROUP_MEMBERS")
            .into_iter()
            .zip(list("ZABBIX_PROXY_GROUP_MEMBER_NAMES"))
            .collect()
    }

    /// How long the group waits before it moves the hosts of a proxy that went offline.
    pub fn proxy_group_failover_delay(&self) -> Duration {
        Duration::from_secs(
            self.get("ZABBIX_PROXY_GROUP_FAILOVER_DELAY")
                .parse()
                .unwrap_or(0),
        )
    }
}

/// A lab part stopped by a test; started again when dropped (or by [`Stopped::start`]).
pub struct Stopped {
    version: String,
    verb: &'static str,
    part: String,
    running: bool,
}

impl Stopped {
    /// Start the part again now.
    pub fn start(mut self) {
        self.start_now();
    }

    fn start_now(&mut self) {
        if !self.running {
            self.running = true;
            if let Err(e) = lab_script(&[self.verb, &self.version, &self.part]) {
                note(&format!("could not start {} again: {e:#}", self.part));
            }
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.start_now();
    }
}

/// While it lives, the Zabbix server of one lab version is stopped (`zabbix-lab.sh
/// server-stop`); [`ServerOutage::end`], or the drop, starts it again, so a failing test never
/// leaves the shared lab without its server. For the outage tests, which are test binaries of
/// their own (cargo runs those one at a time) and stop only their own version's server.
pub struct ServerOutage {
    version: String,
    restarted: bool,
    /// How long stopping the server took.
    pub stop_took: Duration,
}

impl ServerOutage {
    /// Stop the server of `lab`'s version; panics when the script fails.
    pub fn begin(lab: &Lab) -> Self {
        let version = lab.version().to_string();
        let started = Instant::now();
        lab_script(&["server-stop", &version]).unwrap_or_else(|e| panic!("{e:#}"));
        ServerOutage {
            version,
            restarted: false,
            stop_took: started.elapsed(),
        }
    }

    /// Start the server again now; returns how long that took. Panics when the script fails.
    pub fn end(&mut self) -> Duration {
        self.restarted = true;
        let started = Instant::now();
        lab_script(&["server-start", &self.version]).unwrap_or_else(|e| panic!("{e:#}"));
        started.elapsed()
    }
}

impl Drop for ServerOutage {
    fn drop(&mut self) {
        if !self.restarted {
            if let Err(e) = lab_script(&["server-start", &self.version]) {
                note(&format!(
                    "COULD NOT RESTART THE ZABBIX {} SERVER: {e:#}",
                    self.version
                ));
            }
        }
    }
}

/// A failover test's hold on the lab's HA cluster. Made by [`Lab::ha_failover`], which starts
/// node b as standby (the lab runs it only while an HA test needs it); [`HaFailover::fail_over`]
/// stops node a so that node b takes over; [`HaFailover::restore`] (or the drop) makes node a
/// the active node again and leaves node b as it was found, as every other test expects.
pub struct HaFailover {
    lab: Lab,
    b_was_up: bool,
    restored: bool,
}

impl HaFailover {
    /// Stop node a and wait until node b is active and answers.
    pub fn fail_over(&mut self, limit: Duration) {
        lab_script(&["node-stop", self.lab.version(), "a"]).unwrap_or_else(|e| panic!("{e:#}"));
        self.lab.wait_active('b', limit);
    }

    /// Node a active again (started as standby; node b stopped, so that a takes over), and
    /// node b as it was found; returns once node a answers.
    pub fn restore(&mut self, limit: Duration) {
        self.restored = true;
        let v = self.lab.version().to_string();
        let steps = || -> anyhow::Result<()> {
            lab_script(&["node-start", &v, "a"])?;
            lab_script(&["node-stop", &v, "b"])?;
            self.lab.wait_active('a', limit);
            if self.b_was_up {
                lab_script(&["node-start", &v, "b"])?;
            }
            Ok(())
        };
        if let Err(e) = steps() {
            note(&format!("could not make HA node a active again: {e:#}"));
        }
    }
}

impl Drop for HaFailover {
    fn drop(&mut self) {
        if !self.restored {
            self.restore(Duration::from_secs(60));
        }
    }
}

/// Run `scripts/zabbix-lab.sh` with `args` (an argument vector, no shell).
fn lab_script(args: &[&str]) -> anyhow::Result<()> {
    let script = repo_root().join("scripts/zabbix-lab.sh");
    let script = script
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 checkout path"))?;
    let argv: Vec<&str> = std::iter::once(script)
        .chain(args.iter().copied())
        .collect();
    crate::docker::run("bash", &argv).map(drop)
}

impl Lab {
    /// Hold the HA cluster for a failover test: node a active, node b started as standby.
    pub fn ha_failover(&self) -> HaFailover {
        let limit = Duration::from_secs(60);
        self.wait_active('a', limit);
        let b = self.facts().ha_node_names()[1].to_string();
        let status_of_b = |lab: &Lab| -> anyhow::Result<Option<u8>> {
            Ok(lab
                .ha_node_status()?
                .into_iter()
                .find(|(n, _)| *n == b)
                .map(|(_, s)| s))
        };
        let b_was_up = status_of_b(self).ok().flatten() == Some(0);
        let guard = HaFailover {
            lab: self.clone(),
            b_was_up,
            restored: false,
        };
        lab_script(&["node-start", self.version(), "b"]).unwrap_or_else(|e| panic!("{e:#}"));
        wait_for(&format!("HA node {b} to be standby"), limit, || {
            Ok((status_of_b(self)? == Some(0)).then_some(()))
        });
        guard
    }

    /// Stop the proxy `name` (as env names it) until the guard drops.
    pub fn stop_proxy(&self, name: &str) -> Stopped {
        self.stop_part("proxy-stop", "proxy-start", name)
    }

    fn stop_part(&self, stop: &str, start: &'static str, part: &str) -> Stopped {
        lab_script(&[stop, self.version(), part]).unwrap_or_else(|e| panic!("{e:#}"));
        Stopped {
            version: self.version().to_string(),
            verb: start,
            part: part.to_string(),
            running: false,
        }
    }

    /// The id of the proxy named `name`.
    pub fn proxy_id(&self, name: &str) -> anyhow::Result<String> {
        self.cached(&format!("proxy {name}"), || {
            let field = if self.at_least(7, 0) { "name" } else { "host" };
            let found = self.call(
                "proxy.get",
                json!({"output": ["proxyid"], "filter": {field: [name]}}),
            )?;
            str_at(&found, "/0/proxyid")
        })
    }

    /// The id of the lab's proxy group.
    pub fn proxy_group_id(&self) -> anyhow::Result<String> {
        let group = self
            .facts()
            .proxy_group()
            .ok_or_else(|| anyhow!("Zabbix {} has no proxy groups", self.version()))?;
        self.cached("proxy group", || {
            let found = self.call(
                "proxygroup.get",
                json!({"output": ["proxy_groupid"], "filter": {"name": [group]}}),
            )?;
            str_at(&found, "/0/proxy_groupid")
        })
    }

    /// A new host monitored by the proxy `proxy` (its name).
    pub fn create_host_on_proxy(&self, name: &str, proxy: &str, extra: Value) -> Host {
        let id = self.proxy_id(proxy).expect("the proxy's id");
        let mut params = if self.at_least(7, 0) {
            json!({"monitored_by": 1, "proxyid": id})
        } else {
            json!({"proxy_hostid": id})
        };
        merge(&mut params, extra);
        self.create_host_with(name, params)
    }

    /// A new host monitored by the lab's proxy group (7.0 on).
    pub fn create_host_in_proxy_group(&self, name: &str, extra: Value) -> Host {
        let id = self.proxy_group_id().expect("the proxy group's id");
        let mut params = json!({"monitored_by": 2, "proxy_groupid": id});
        merge(&mut params, extra);
        self.create_host_with(name, params)
    }

    /// The trapper and name of the group member that holds `host`, once the group has
    /// assigned it.
    pub fn assigned_proxy(&self, host: &Host) -> anyhow::Result<Option<(String, String)>> {
        let found = self.call(
            "host.get",
            json!({"output": ["assigned_proxyid"], "hostids": [host.hostid]}),
        )?;
        let id = str_at(&found, "/0/assigned_proxyid")?;
        for (address, name) in self.facts().proxy_group_members() {
            if self.proxy_id(name)? == id {
                return Ok(Some((address.to_string(), name.to_string())));
            }
        }
        Ok(None)
    }

    /// Wait until the group has assigned `host` to a member; its trapper and name.
    pub fn wait_assigned(&self, host: &Host, limit: Duration) -> (String, String) {
        wait_for(
            &format!("the proxy group to assign {}", host.name),
            limit,
            || self.assigned_proxy(host),
        )
    }

    /// Kill node a (the lab's server) as a machine stopped under it would: SIGKILL to its whole
    /// process group, no shutdown, so its ha_node row stays "active". Returns once it is gone.
    pub fn kill_server(&self) {
        let pid_file = self.facts().get("ZABBIX_SERVER_PID_FILE");
        let pid = std::fs::read_to_string(pid_file)
            .unwrap_or_else(|e| panic!("{pid_file}: {e}"))
            .trim()
            .to_string();
        assert!(
            pid.bytes().all(|b| b.is_ascii_digit()) && !pid.is_empty(),
            "pid {pid:?}"
        );
        // The server and its children share one process group (it daemonizes with setsid).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_else(|e| panic!("the server (pid {pid}) is not running: {e}"));
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .unwrap_or_else(|| panic!("/proc/{pid}/stat: {stat:?}"))
            .to_string();
        crate::docker::run("kill", &["-KILL", "--", &format!("-{pgrp}")])
            .unwrap_or_else(|e| panic!("kill the {} server: {e:#}", self.version()));
        // Every process of the group, not only the main one, must be gone before a restart:
        // once (CI, 6.0) trappers of the killed server still answered the proxy seconds later
        // and the new server exited at once. Kill again whatever is left, until none is.
        wait_for(
            "every process of the killed server to end",
            Duration::from_secs(30),
            || {
                let left = group_members(&pgrp);
                if left.is_empty() {
                    return Ok(Some(()));
                }
                let _ = crate::docker::run("kill", &["-KILL", "--", &format!("-{pgrp}")]);
                anyhow::bail!("still running in process group {pgrp}: {left:?}")
            },
        );
        let trapper = self.server().to_string();
        wait_for(
            "the killed server's trapper to close",
            Duration::from_secs(30),
            || {
                Ok(std::net::TcpStream::connect(&trapper)
                    .is_err()
                    .then_some(()))
            },
        );
    }

    /// `zabbix-lab.sh server-start VERSION`, as `up` starts the server.
    pub fn start_server(&self) -> anyhow::Result<()> {
        lab_script(&["server-start", self.version()])
    }

    /// The status of every HA node by name: 0 standby, 1 stopped, 2 unavailable, 3 active.
    pub fn ha_node_status(&self) -> anyhow::Result<Vec<(String, u8)>> {
        let nodes = self.call("hanode.get", json!({"output": ["name", "status"]}))?;
        nodes
            .as_array()
            .ok_or_else(|| anyhow!("hanode.get returned {nodes}"))?
            .iter()
            .map(|n| {
                let status = str_at(n, "/status")?.parse()?;
                Ok((str_at(n, "/name")?, status))
            })
            .collect()
    }

    /// Wait until HA node `node` is the active one and its trapper answers.
    pub fn wait_active(&self, node: char, limit: Duration) {
        let names = self.facts().ha_node_names();
        let name = names[if node == 'a' { 0 } else { 1 }].to_string();
        let trapper = self.facts().ha_node(node).to_string();
        wait_for(&format!("HA node {name} to be active"), limit, || {
            let status = self.ha_node_status()?;
            let active = status.iter().any(|(n, s)| *n == name && *s == 3);
            if !active {
                bail!("nodes: {status:?}");
            }
            trapper_request(&trapper, &json!({"request": "sender data", "data": []}))?;
            Ok(Some(()))
        });
    }

    /// Send `value` for `host`'s `key` to the trapper at `server` until it is processed there
    /// (its configuration has reached that proxy or server).
    pub fn wait_until_accepted_at(&self, server: &str, host: &str, key: &str, value: &str) {
        wait_for(
            &format!("{server} to accept {key} on {host}"),
            Duration::from_secs(60),
            || {
                let request = json!({"request": "sender data",
                                     "data": [{"host": host, "key": key, "value": value}]});
                let reply = trapper_request(server, &request)?;
                let info = reply["info"].as_str().unwrap_or_default();
                if reply["response"] == "success" && info.starts_with("processed: 1;") {
                    Ok(Some(()))
                } else {
                    bail!("{reply}")
                }
            },
        );
    }
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(p), Value::Object(e)) = (into.as_object_mut(), extra) {
        p.extend(e);
    }
}

impl Host {
    /// The history of the item `key` on this host (its `value_type`), oldest first.
    pub fn history_of(&self, key: &str, value_type: u8) -> anyhow::Result<Vec<HistoryRow>> {
        let id = self.item_id(key)?;
        self.lab.history(&[id], value_type)
    }

    /// Wait until every value of `values` is in the history of `key` (as text); the history.
    pub fn wait_for_values(
        &self,
        key: &str,
        value_type: u8,
        values: &[String],
        limit: Duration,
    ) -> Vec<HistoryRow> {
        wait_for(
            &format!(
                "{} value(s) of {key} on {} in history",
                values.len(),
                self.name
            ),
            limit,
            || {
                let rows = self.history_of(key, value_type)?;
                let missing: Vec<&String> = values
                    .iter()
                    .filter(|v| !rows.iter().any(|r| r.value == **v))
                    .collect();
                if missing.is_empty() {
                    Ok(Some(rows))
                } else {
                    bail!("missing {missing:?}")
                }
            },
        )
    }
}

impl Host {
    /// Send probe values (negative numbers) for the float item `key` through `trapper` until
    /// one is in the server's history: then the proxy and the server both know every item
    /// made before `key` (a proxy can take a value for an item the server's configuration cache
    /// has not loaded yet, and the server then drops it).
    pub fn wait_until_stored_via(&self, trapper: &str, key: &str) {
        let mut probe = 0u32;
        wait_for(
            &format!(
                "a probe of {key} on {} through {trapper} in history",
                self.name
            ),
            Duration::from_secs(90),
            || {
                probe += 1;
                let request = json!({"request": "sender data",
                                     "data": [{"host": self.name, "key": key,
                                               "value": format!("-{probe}")}]});
                trapper_request(trapper, &request)?;
                let rows = self.history_of(key, crate::FLOAT)?;
                Ok(rows.iter().any(|r| r.value.starts_with('-')).then_some(()))
            },
        );
    }
}

impl Host {
    /// Wait until a heartbeat value of 1 sent at or after `after` is in the history of
    /// container.state, while `hb` keeps running.
    pub fn wait_for_beat(&self, hb: &mut Coprocess, after: SystemTime, limit: Duration) {
        wait_for(
            &format!("a beat of {} in history", self.name),
            limit,
            || {
                hb.assert_running("beating");
                let rows = self.history_of("container.state", crate::UNSIGNED)?;
                let t = epoch_ns(after);
                if rows.iter().any(|r| r.value == "1" && r.at_ns() >= t) {
                    return Ok(Some(()));
                }
                Err(anyhow!("history {rows:?}; heartbeat: {hb}"))
            },
        );
    }

    /// SIGTERM `hb`, which must exit 0, and wait until its 0 is in the history of
    /// container.state.
    pub fn stop_and_wait_for_zero(&self, hb: &mut Coprocess, limit: Duration) {
        let stopped_at = SystemTime::now();
        let (code, _) = hb.terminate(Duration::from_secs(15));
        assert_eq!(code, Some(0), "{hb}");
        wait_for(&format!("the 0 of {} in history", self.name), limit, || {
            let rows = self.history_of("container.state", crate::UNSIGNED)?;
            // The 0 carries the clock of the moment it was sent, just after the signal.
            let t = epoch_ns(stopped_at) - 1_000_000_000;
            Ok(rows
                .iter()
                .any(|r| r.value == "0" && r.at_ns() >= t)
                .then_some(()))
        });
    }
}

/// The pids of the live processes in process group `pgrp` (zombies count as gone).
fn group_members(pgrp: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let mut fields = stat
                    .rsplit_once(')')
                    .map_or("", |(_, r)| r)
                    .split_whitespace();
                let state = fields.next();
                state != Some("Z") && fields.nth(1) == Some(pgrp)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::facts::{Facts, VERSIONS};

    #[test]
    fn the_lab_script_lists_the_distributed_parts() {
        for v in VERSIONS {
            let f = Facts::of(v).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                f.ha_node('a'),
                f.server(),
                "{v}: node a is the lab's server"
            );
            assert_ne!(f.ha_node('a'), f.ha_node('b'), "{v}");
            assert_eq!(f.ha_node_names().len(), 2, "{v}");
            let (proxy, name) = f.proxy();
            assert!(proxy.starts_with("127.0.0.1:") && !name.is_empty(), "{v}");
            let members = f.proxy_group_members();
            match f.proxy_group() {
                Some(_) => {
                    assert_eq!(members.len(), 2, "{v}: {members:?}");
                    assert!(!f.proxy_group_failover_delay().is_zero(), "{v}");
                }
                None => assert!(members.is_empty(), "{v}: {members:?}"),
            }
        }
        assert!(Facts::of("6.0").unwrap().proxy_group().is_none());
        assert!(Facts::of("7.0").unwrap().proxy_group().is_some());
    }
}
