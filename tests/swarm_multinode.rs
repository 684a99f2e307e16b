//! concierge-scale on a real multi-node swarm: three Docker-in-Docker nodes (the image
//! scripts/swarm-node-image.sh builds here from a debootstrapped Debian root with Debian's
//! docker.io: no registry, no pulls) on a bridge network this test creates, all three swarm
//! managers (so the swarm keeps its quorum with one node down). The product image is loaded
//! into each node; a service of heartbeat containers is scaled across the nodes through the
//! first node's socket, one node is stopped, the swarm reschedules its tasks on the other two,
//! and concierge-scale reads the real replica count there, scales down, and resizes (the
//! rolled tasks' containers get the limits).
//!
//! The heartbeat hosts follow, on both labs at once: each task beats (and registers, through
//! an autoregistration action of the test) as a Zabbix host of its own, named by the product's
//! default (the node's host name and the container id), to both labs' trappers through a
//! [`Forwarder`] per lab on the host's side of the test's network (the labs listen on 127.0.0.1
//! only). Checked through each lab's API: after 1 -> 3 one host per node beats; after the stop
//! the stopped node's host goes silent and the rescheduled task's host beats; after the scale
//! down and the resize exactly the running tasks' hosts beat, and the ones stopped got their 0.
//! Without a lab the tasks beat to a closed port and only the scaling is checked (SKIPPED is
//! printed per version, a failure with CONCIERGE_REQUIRE_LAB=1).
//!
//! Too slow for `make test` (it builds the node image once per machine and starts three
//! engines): `make test-swarm` runs it (`cargo test --test swarm_multinode -- --ignored`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail};
use concierge_testkit::docker::{self, docker, heartbeat_image, unique};
use concierge_testkit::{
    bin, closed_port, current_test, epoch_ns, note, repo_root, run_command, str_at, temp_dir,
    unique_host, wait_for, Action, Forwarder, HostNamed, Lab, TempDir, UNSIGNED, VERSIONS,
};
use serde_json::{json, Value};

const SCALE: &str = "concierge-scale";
/// How long any state may take to show up (node start, a join, a rescheduling).
const SETTLE: Duration = Duration::from_secs(180);
const COMMAND_LIMIT: Duration = Duration::from_secs(180);
const NODES: usize = 3;
const KEY: &str = "container.state";
/// The tasks' beat period.
const EVERY: Duration = Duration::from_secs(2);
/// A host beats when a 1 of it arrived this recently (three beat periods).
const RECENT: Duration = Duration::from_secs(6);
/// A value may still arrive this long after its container is gone (in the forwarder, in the
/// server's queue): a host is silent when nothing came later.
const IN_FLIGHT: Duration = Duration::from_secs(2);

/// One Docker-in-Docker node: its container on the host engine, its engine's socket (bind
/// mounted to a directory of the test) and its address on the test's network.
struct Node {
    name: String,
    socket: PathBuf,
    addr: String,
}

impl Node {
    /// `docker -H unix://<socket> args` against this node's engine.
    fn docker(&self, args: &[&str]) -> anyhow::Result<String> {
        let host = format!("unix://{}", self.socket.display());
        let mut all = vec!["-H", &host];
        all.extend_from_slice(args);
        docker::run("docker", &all)
    }

    fn host_arg(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

/// The test's network and nodes, removed (with their volumes) when dropped.
struct Cluster {
    network: String,
    nodes: Vec<Node>,
    /// The nodes' socket directories.
    dir: TempDir,
}

impl Cluster {
    /// The host's address on the test's network (its bridge's gateway): where the nodes, and
    /// their tasks on the host network, reach the host.
    fn gateway(&self) -> IpAddr {
        let out = docker(&[
            "network",
            "inspect",
            "--format",
            "{{(index .IPAM.Config 0).Gateway}}",
            &self.network,
        ])
        .expect("docker network inspect");
        let gw = out.trim();
        gw.parse()
            .unwrap_or_else(|e| panic!("gateway {gw:?} of {}: {e}", self.network))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            if let Err(e) = docker(&["rm", "--force", "--volumes", &n.name]) {
                note(&format!("could not remove node {}: {e:#}", n.name));
            }
        }
        if let Err(e) = docker(&["network", "rm", &self.network]) {
            note(&format!("could not remove network {}: {e:#}", self.network));
        }
    }
}

/// Build (once per machine) the node image; its name.
fn node_image() -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/swarm-node-image.sh"))
        .output()
        .expect("starting scripts/swarm-node-image.sh");
    assert!(
        out.status.success(),
        "scripts/swarm-node-image.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Start the network and the nodes, and wait for each engine to answer.
fn start_cluster(image: &str) -> Cluster {
    let network = unique("engines-swarm-net");
    docker(&["network", "create", "--driver", "bridge", &network]).expect("docker network create");
    let mut cluster = Cluster {
        network: network.clone(),
        nodes: Vec::new(),
        dir: temp_dir("swarm-nodes"),
    };
    for i in 1..=NODES {
        let name = format!("{network}-n{i}");
        let run_dir = cluster.dir.path().join(format!("n{i}"));
        std::fs::create_dir_all(&run_dir).expect("node socket dir");
        let mount = format!("type=bind,source={},target=/run/dind", run_dir.display());
        // Known to the cluster before it is created, so that a failed start is removed too.
        cluster.nodes.push(Node {
            name: name.clone(),
            socket: run_dir.join("docker.sock"),
            addr: String::new(),
        });
        docker(&[
            "run",
            "--detach",
            // Not --privileged (see scripts/swarm-node-image.sh): what it would grant, less
            // the capability this engine lacks.
            "--cap-add",
            "ALL",
            "--cap-drop",
            "SYS_RESOURCE",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--security-opt",
            "systempaths=unconfined",
            "--name",
            &name,
            "--hostname",
            &format!("n{i}"),
            "--network",
            &network,
            "--mount",
            &mount,
            "--volume",
            "/var/lib/docker",
            image,
            "--host",
            "unix:///run/dind/docker.sock",
        ])
        .expect("docker run node");
        let addr = docker(&[
            "inspect",
            "--format",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            &name,
        ])
        .expect("node address")
        .trim()
        .to_string();
        if let Some(n) = cluster.nodes.last_mut() {
            n.addr = addr;
        }
    }
    for n in &cluster.nodes {
        wait_for(&format!("the engine of {}", n.name), SETTLE, || {
            n.docker(&["info", "--format", "{{.ServerVersion}}"])
                .map(Some)
        });
    }
    cluster
}

/// The nodes' swarm view: hostname → status, from a manager.
fn node_status(manager: &Node) -> anyhow::Result<Vec<(String, String)>> {
    let out = manager.docker(&["node", "ls", "--format", "{{.Hostname}} {{.Status}}"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(h, s)| (h.to_string(), s.to_string()))
        .collect())
}

/// The service's running tasks: the node of each.
fn running_tasks(manager: &Node, service: &str) -> anyhow::Result<Vec<String>> {
    let out = manager.docker(&[
        "service",
        "ps",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}} {{.CurrentState}}",
        service,
    ])?;
    Ok(out
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("Running"))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect())
}

fn wait_tasks(manager: &Node, service: &str, n: usize, on: &BTreeSet<&str>) -> Vec<String> {
    wait_for(
        &format!("{n} running tasks of {service} on {on:?}"),
        SETTLE,
        || {
            let nodes = running_tasks(manager, service)?;
            let all_on = nodes.iter().all(|x| on.contains(x.as_str()));
            if nodes.len() == n && all_on {
                Ok(Some(nodes))
            } else {
                bail!("running on {nodes:?}")
            }
        },
    )
}

fn events(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("scale-events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("event"))
        .filter(|e: &Value| e["outcome"] != "started")
        .collect()
}

/// One task of the service as a manager sees it.
#[derive(Debug, Clone)]
struct Task {
    /// The node's host name (n1, n2, n3).
    node: String,
    /// Its container's id (empty before the node created it).
    container: String,
    /// Desired and current state both running.
    running: bool,
}

impl Task {
    /// The Zabbix host the task beats as: concierge-heartbeat's default name in a container
    /// on the host network, the system host name (the node's) and the short container id.
    fn host(&self) -> String {
        format!("{}-{}", self.node, &self.container[..12])
    }
}

/// Every task of `service` the manager still lists (history included).
fn tasks(manager: &Node, service: &str) -> anyhow::Result<Vec<Task>> {
    let out = manager.docker(&[
        "service",
        "ps",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Node}} {{.DesiredState}} {{.CurrentState}}",
        service,
    ])?;
    // A task not assigned yet has no node: it is not running either way.
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|r| !r.is_empty())
        .collect();
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec![
        "inspect",
        "--type",
        "task",
        "--format",
        "{{.Status.ContainerStatus.ContainerID}}",
    ];
    args.extend(rows.iter().map(|r| r[0]));
    let containers = manager.docker(&args)?;
    Ok(rows
        .iter()
        .zip(containers.lines())
        .map(|(r, container)| Task {
            node: r.get(1).copied().unwrap_or_default().to_string(),
            container: container.trim().to_string(),
            running: r.get(2) == Some(&"Running") && r.get(3) == Some(&"Running"),
        })
        .collect())
}

/// The running tasks' hosts, once exactly `n` run (with their containers known).
fn running_hosts(manager: &Node, service: &str, n: usize) -> BTreeSet<String> {
    wait_for(&format!("{n} running tasks of {service}"), SETTLE, || {
        let t = tasks(manager, service)?;
        let running: Vec<&Task> = t.iter().filter(|t| t.running).collect();
        if running.len() == n && running.iter().all(|t| t.container.len() >= 12) {
            Ok(Some(running.iter().map(|t| t.host()).collect()))
        } else {
            bail!("tasks: {t:?}")
        }
    })
}

/// One lab's side of the test: its registration action (metadata `token`), the hosts that the
/// tasks register there (deleted when dropped, after the cluster is gone), and the forwarder
/// the tasks reach its trapper through.
struct Watch {
    lab: Lab,
    token: String,
    hosts: HostNamed,
    _action: Action,
    forward: Option<Forwarder>,
}

impl Watch {
    /// The action, live on the server: probe hosts (fresh names, so 7.0 never ignores an
    /// announce) are announced every 2 s until one gets created.
    fn new(lab: Lab) -> Watch {
        let token = unique_host("concierge-e2e-swarm");
        let template = lab.heartbeat_template();
        let hosts = HostNamed {
            lab: lab.clone(),
            names: Vec::new(),
        };
        let action = lab.create_registration_action(&token, &template);
        let mut w = Watch {
            lab,
            token,
            hosts,
            _action: action,
            forward: None,
        };
        let mut last: Option<Instant> = None;
        wait_for(
            &format!("the registration action on {}", w.lab.version()),
            Duration::from_secs(60),
            || {
                let found = w.lab.call(
                    "host.get",
                    json!({"output": ["hostid"], "filter": {"host": w.hosts.names}}),
                )?;
                if !w.hosts.names.is_empty() && found.as_array().is_some_and(|a| !a.is_empty()) {
                    return Ok(Some(()));
                }
                if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
                    let probe = unique_host("swarm-probe");
                    w.hosts.names.push(probe.clone());
                    w.lab.announce(&probe, &w.token)?;
                    last = Some(Instant::now());
                }
                Ok(None)
            },
        );
        w
    }

    /// Remember `names` for the deletion at the end.
    fn track<'a>(&mut self, names: impl IntoIterator<Item = &'a String>) {
        for n in names {
            if !self.hosts.names.contains(n) {
                self.hosts.names.push(n.clone());
            }
        }
    }

    /// The container.state values of hosts `names` that arrived from `from` on: host → rows,
    /// oldest first (a host or item not there yet has none).
    fn values(
        &self,
        names: &BTreeSet<String>,
        from: SystemTime,
    ) -> anyhow::Result<BTreeMap<String, Vec<(i128, String)>>> {
        let hosts = self.lab.call(
            "host.get",
            json!({"output": ["host"], "filter": {"host": names},
                   "selectItems": ["itemid", "key_"]}),
        )?;
        let mut item_host = BTreeMap::new();
        for h in hosts.as_array().into_iter().flatten() {
            let items = h["items"].as_array().into_iter().flatten();
            if let Some(item) = items.into_iter().find(|i| i["key_"] == KEY) {
                item_host.insert(str_at(item, "/itemid")?, str_at(h, "/host")?);
            }
        }
        let mut out: BTreeMap<String, Vec<(i128, String)>> =
            names.iter().map(|n| (n.clone(), Vec::new())).collect();
        if item_host.is_empty() {
            return Ok(out);
        }
        let from_s = i64::try_from(epoch_ns(from) / 1_000_000_000)?;
        let rows = self.lab.call(
            "history.get",
            json!({"output": "extend", "history": UNSIGNED,
                   "itemids": item_host.keys().collect::<Vec<_>>(), "time_from": from_s,
                   "sortfield": "clock", "sortorder": "ASC"}),
        )?;
        for r in rows.as_array().into_iter().flatten() {
            let clock: i128 = str_at(r, "/clock")?.parse()?;
            let ns: i128 = str_at(r, "/ns")?.parse()?;
            let at = clock * 1_000_000_000 + ns;
            if let Some(host) = item_host.get(&str_at(r, "/itemid")?) {
                if at >= epoch_ns(from) {
                    out.entry(host.clone())
                        .or_default()
                        .push((at, str_at(r, "/value")?));
                }
            }
        }
        Ok(out)
    }

    /// Of `names`, the hosts that beat: a 1 of theirs arrived in the last [`RECENT`].
    fn beating(&self, names: &BTreeSet<String>) -> anyhow::Result<BTreeSet<String>> {
        let recent = self.values(names, SystemTime::now() - RECENT)?;
        Ok(recent
            .into_iter()
            .filter(|(_, rows)| rows.iter().any(|(_, v)| v == "1"))
            .map(|(h, _)| h)
            .collect())
    }

    /// Wait until, of the hosts in `all`, exactly those of `want` beat.
    fn wait_beating(&self, all: &BTreeSet<String>, want: &BTreeSet<String>) {
        wait_for(
            &format!("exactly {want:?} beating on {}", self.lab.version()),
            SETTLE,
            || {
                let beating = self.beating(all)?;
                if beating == *want {
                    Ok(Some(()))
                } else {
                    bail!("beating: {beating:?}")
                }
            },
        );
    }

    /// Assert that no 1 of `host` arrived later than [`IN_FLIGHT`] after `gone` (when its
    /// container was surely stopped), after watching for three beat periods more; its last
    /// value.
    fn assert_silent(&self, host: &str, gone: SystemTime) -> String {
        let after = gone + IN_FLIGHT;
        let until = after + 3 * EVERY;
        let one: BTreeSet<String> = [host.to_string()].into();
        wait_for(
            &format!("{host} silent on {}", self.lab.version()),
            SETTLE,
            || {
                let late = self.values(&one, after)?;
                let beats: Vec<_> = late[host].iter().filter(|(_, v)| v == "1").collect();
                assert!(
                    beats.is_empty(),
                    "{host} beat on {} after its container was gone: {beats:?}",
                    self.lab.version()
                );
                Ok((SystemTime::now() >= until).then_some(()))
            },
        );
        let all = self.values(&one, SystemTime::UNIX_EPOCH).expect("history");
        all[host].last().map(|(_, v)| v.clone()).unwrap_or_default()
    }

    /// How long after `from` the first 1 of `host` arrived (it has arrived).
    fn first_beat(&self, host: &str, from: SystemTime) -> Duration {
        let one: BTreeSet<String> = [host.to_string()].into();
        let rows = self.values(&one, from).expect("history");
        let first = rows[host]
            .iter()
            .find(|(_, v)| v == "1")
            .map(|(at, _)| at - epoch_ns(from))
            .unwrap_or_else(|| panic!("no beat of {host} since {from:?}: {rows:?}"));
        Duration::from_nanos(u64::try_from(first).unwrap_or_default())
    }

    /// Wait until a 0 of `host` arrived from `from` on (its task was stopped cleanly).
    fn wait_goodbye(&self, host: &str, from: SystemTime) {
        let one: BTreeSet<String> = [host.to_string()].into();
        wait_for(
            &format!("the 0 of {host} on {}", self.lab.version()),
            Duration::from_secs(60),
            || {
                let rows = self.values(&one, from)?;
                match rows[host].iter().any(|(_, v)| v == "0") {
                    true => Ok(Some(())),
                    false => bail!("since the stop: {:?}", rows[host]),
                }
            },
        );
    }
}

#[test]
#[ignore = "multi-node swarm (three Docker-in-Docker nodes): make test-swarm"]
fn a_service_scales_across_three_nodes_and_survives_one_stopped() {
    if !docker::available(&current_test()) {
        return;
    }
    let started = Instant::now();
    let image = node_image();
    note(&format!(
        "node image {image} ready after {:.1?}",
        started.elapsed()
    ));
    let app = heartbeat_image();
    // Each lab's action and hosts: declared before the cluster, so dropped after it (no task
    // is left to register a host again once they are deleted).
    let mut watches: Vec<Watch> = VERSIONS
        .iter()
        .filter_map(|v| Lab::get(v))
        .map(Watch::new)
        .collect();
    let cluster = start_cluster(&image);
    let [n1, n2, n3] = &cluster.nodes[..] else {
        unreachable!()
    };
    let gateway = cluster.gateway();
    for w in &mut watches {
        let (host, port) = w.lab.facts().server_addr();
        let target: SocketAddr = format!("{host}:{port}").parse().expect("trapper address");
        w.forward = Some(Forwarder::start(gateway, target).expect("forwarder"));
    }
    note(&format!(
        "{NODES} engines up after {:.1?}",
        started.elapsed()
    ));

    // The swarm: three managers.
    n1.docker(&["swarm", "init", "--advertise-addr", &n1.addr])
        .expect("swarm init");
    let token = n1
        .docker(&["swarm", "join-token", "--quiet", "manager"])
        .expect("join token");
    for n in [n2, n3] {
        n.docker(&[
            "swarm",
            "join",
            "--advertise-addr",
            &n.addr,
            "--token",
            token.trim(),
            &format!("{}:2377", n1.addr),
        ])
        .expect("swarm join");
    }
    wait_for("three ready nodes", SETTLE, || {
        let st = node_status(n1)?;
        match st.iter().filter(|(_, s)| s == "Ready").count() {
            NODES => Ok(Some(())),
            _ => Err(anyhow!("{st:?}")),
        }
    });
    // The product image on every node (no registry).
    let tar = temp_dir("swarm-image");
    let file = tar.path().join("image.tar");
    let file_s = file.display().to_string();
    docker(&["save", "--output", &file_s, app]).expect("docker save");
    for n in &cluster.nodes {
        n.docker(&["load", "--input", &file_s])
            .expect("docker load");
    }
    note(&format!(
        "swarm of {NODES} with the image after {:.1?}",
        started.elapsed()
    ));

    // A service of one heartbeat task, beating to (and registering with) every lab through
    // its forwarder, or to a closed port without a lab.
    let service = unique("engines-swarm-svc");
    let mut dests: Vec<String> = watches
        .iter()
        .filter_map(|w| w.forward.as_ref().map(Forwarder::address))
        .collect();
    if dests.is_empty() {
        note("no lab: the tasks beat to a closed port; only the scaling is checked");
        dests.push(format!("127.0.0.1:{}", closed_port()));
    }
    let tokens = watches
        .iter()
        .map(|w| w.token.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    n1.docker(&[
        "service",
        "create",
        "--detach",
        "--name",
        &service,
        "--replicas",
        "1",
        "--network",
        "host",
        "--stop-grace-period",
        "5s",
        app,
        "--every",
        &format!("{}s", EVERY.as_secs()),
        "-z",
        &dests.join(","),
        "--register",
        "--metadata",
        &format!("concierge {tokens}"),
    ])
    .expect("service create");
    let all: BTreeSet<&str> = ["n1", "n2", "n3"].into();
    wait_tasks(n1, &service, 1, &all);
    let first = running_hosts(n1, &service, 1);
    for w in &mut watches {
        w.track(&first);
    }

    let state = temp_dir("swarm-state");
    let scale = |args: &[&str]| {
        let mut c = Command::new(bin(SCALE));
        c.args(["--engine", "swarm", "-H", &n1.host_arg(), "--state-dir"])
            .arg(state.path())
            .args(args);
        run_command(&mut c, COMMAND_LIMIT)
    };
    // Up by 2 from 1 (the caller's CURRENT, 5, is stale: the swarm's count wins).
    let up_at = SystemTime::now();
    let r = scale(&["up", "--", &service, "5", "2"]).ok();
    assert_eq!(r.stdout, "3\n", "{r}");
    let spread = wait_tasks(n1, &service, 3, &all);
    let nodes: BTreeSet<&str> = spread.iter().map(String::as_str).collect();
    assert_eq!(nodes, all, "one task per node: {spread:?}");
    note(&format!(
        "scaled across {nodes:?} after {:.1?}",
        started.elapsed()
    ));
    // One host per node beats, on every lab.
    let three = running_hosts(n1, &service, 3);
    let mut known = three.clone();
    for w in &mut watches {
        w.track(&three);
        w.wait_beating(&known, &three);
        let took = three.iter().map(|h| w.first_beat(h, up_at)).max();
        note(&format!(
            "TIMING swarm on {}: the 3 tasks' hosts {three:?} all beat {:.1?} after the scale \
             up",
            w.lab.api_version(),
            took.unwrap_or_default()
        ));
    }
    let on_n3 = three
        .iter()
        .find(|h| h.starts_with("n3-"))
        .cloned()
        .expect("a host of n3");

    // One node stopped: the swarm (two managers of three: still a quorum) marks it down and
    // puts its task on the other two.
    let t_stop = Instant::now();
    let stop_at = SystemTime::now();
    docker(&["stop", "--time", "5", &n3.name]).expect("docker stop n3");
    // Every process of the node is gone once docker stop has returned.
    let n3_gone = SystemTime::now();
    wait_for("n3 down", SETTLE, || {
        let st = node_status(n1)?;
        match st.iter().any(|(h, s)| h == "n3" && s == "Down") {
            true => Ok(Some(())),
            false => Err(anyhow!("{st:?}")),
        }
    });
    let two: BTreeSet<&str> = ["n1", "n2"].into();
    let moved = wait_tasks(n1, &service, 3, &two);
    note(&format!(
        "n3 stopped: 3 tasks on {moved:?} {:.1?} later",
        t_stop.elapsed()
    ));
    // The hosts follow: the rescheduled task's host beats (from n1 or n2) with the two that
    // never moved, and n3's host is silent.
    let moved_hosts = running_hosts(n1, &service, 3);
    let new: Vec<&String> = moved_hosts.difference(&three).collect();
    assert!(
        new.len() == 1 && !new[0].starts_with("n3-"),
        "one new task, not on n3: {three:?} -> {moved_hosts:?}"
    );
    known.extend(moved_hosts.iter().cloned());
    for w in &mut watches {
        w.track(&moved_hosts);
        w.wait_beating(&known, &moved_hosts);
        let took = w.first_beat(new[0], stop_at);
        let last = w.assert_silent(&on_n3, n3_gone);
        note(&format!(
            "TIMING swarm on {}: the rescheduled task's host {} beat {took:.1?} after docker stop \
             of n3; n3's host {on_n3} silent (last value {last:?})",
            w.lab.api_version(),
            new[0]
        ));
    }

    // concierge-scale reads the real count (3, not the caller's 9) and scales down.
    let scaled_down = SystemTime::now();
    let r = scale(&["down", "--", &service, "9"]).ok();
    assert_eq!(r.stdout, "2\n", "{r}");
    wait_tasks(n1, &service, 2, &two);
    // Exactly the two running tasks' hosts beat; the removed one's got its 0 (SIGTERM).
    let kept = running_hosts(n1, &service, 2);
    let removed: Vec<&String> = moved_hosts.difference(&kept).collect();
    assert_eq!(removed.len(), 1, "{moved_hosts:?} -> {kept:?}");
    for w in &watches {
        w.wait_goodbye(removed[0], scaled_down);
        w.wait_beating(&known, &kept);
    }
    let replicas = n1
        .docker(&[
            "service",
            "inspect",
            "--format",
            "{{.Spec.Mode.Replicated.Replicas}}",
            &service,
        ])
        .expect("service inspect");
    assert_eq!(replicas.trim(), "2");
    let ev = events(state.path());
    let steps: Vec<(u64, u64)> = ev
        .iter()
        .map(|e| (e["from"].as_u64().unwrap(), e["to"].as_u64().unwrap()))
        .collect();
    assert_eq!(steps, [(1, 3), (3, 2)], "{ev:?}");
    assert!(ev.iter().all(|e| e["count_source"] == "engine"), "{ev:?}");
    assert!(
        ev[1]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("CURRENT 9 from the caller differs from the 3 that swarm reports"),
        "{}",
        ev[1]
    );
    // Vertical: the limits go into the task template; the swarm rolls the tasks on the nodes
    // left, and each task's container has them.
    let resized = SystemTime::now();
    let r = scale(&["resize", &service, "--cpus", "0.5", "--memory", "64m"]).ok();
    assert_eq!(r.stdout, "cpus=0.5 memory=64m\n", "{r}");
    let limits = n1
        .docker(&[
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.Resources.Limits.NanoCPUs}} \
             {{.Spec.TaskTemplate.Resources.Limits.MemoryBytes}}",
            &service,
        ])
        .expect("service inspect");
    assert_eq!(limits.trim(), format!("500000000 {}", 64 << 20));
    wait_for("2 running tasks with the new limits", SETTLE, || {
        let mut seen = Vec::new();
        for n in [n1, n2] {
            let ids = n.docker(&[
                "ps",
                "--quiet",
                "--filter",
                "status=running",
                "--filter",
                &format!("label=com.docker.swarm.service.name={service}"),
            ])?;
            for id in ids.lines() {
                let l = n.docker(&[
                    "inspect",
                    "--format",
                    "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}",
                    id,
                ])?;
                seen.push(l.trim().to_string());
            }
        }
        let want = format!("500000000 {}", 64 << 20);
        if seen.len() == 2 && seen.iter().all(|l| *l == want) {
            Ok(Some(()))
        } else {
            Err(anyhow!("running tasks' limits: {seen:?}"))
        }
    });
    let ev = events(state.path());
    assert_eq!(ev[2]["outcome"], "resized", "{ev:?}");
    // The rolled tasks are new containers, so new hosts: they beat, the replaced ones said 0.
    let rolled = running_hosts(n1, &service, 2);
    assert!(rolled.is_disjoint(&kept), "{kept:?} -> {rolled:?}");
    known.extend(rolled.iter().cloned());
    for w in &mut watches {
        w.track(&rolled);
        w.wait_beating(&known, &rolled);
        for old in &kept {
            w.wait_goodbye(old, resized);
        }
    }
    let _ = n1.docker(&["service", "rm", &service]);
    drop(cluster);
    for w in &watches {
        let f = w.forward.as_ref().expect("forwarder");
        note(&format!(
            "{}: {} connections relayed to {}",
            w.lab.version(),
            f.relayed(),
            f.target()
        ));
    }
    note(&format!(
        "multi-node swarm test took {:.1?}",
        started.elapsed()
    ));
}
