//! concierge-scale on a real multi-node swarm: three Docker-in-Docker nodes (the image
//! scripts/swarm-node-image.sh builds here from a debootstrapped Debian root with Debian's
//! docker.io: no registry, no pulls) on a bridge network this test creates, all three swarm
//! managers (so the swarm keeps its quorum with one node down). The product image is loaded
//! into each node; a service of heartbeat containers is scaled across the nodes through the
//! first node's socket, one node is stopped, the swarm reschedules its tasks on the other two,
//! and concierge-scale reads the real replica count there, scales down, and resizes (the
//! rolled tasks' containers get the limits).
//!
//! Too slow for `make test` (it builds the node image once per machine and starts three
//! engines): `make test-swarm` runs it (`cargo test --test swarm_multinode -- --ignored`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use concierge_testkit::docker::{self, docker, heartbeat_image, unique};
use concierge_testkit::{
    bin, closed_port, current_test, note, repo_root, run_command, temp_dir, wait_for, TempDir,
};
use serde_json::Value;

const SCALE: &str = "concierge-scale";
/// How long any state may take to show up (node start, a join, a rescheduling).
const SETTLE: Duration = Duration::from_secs(180);
const COMMAND_LIMIT: Duration = Duration::from_secs(180);
const NODES: usize = 3;

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
    let cluster = start_cluster(&image);
    let [n1, n2, n3] = &cluster.nodes[..] else {
        unreachable!()
    };
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

    // A service of one heartbeat task, beating to a closed port (no Zabbix here).
    let service = unique("engines-swarm-svc");
    let port = closed_port().to_string();
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
        "2s",
        "-z",
        &format!("127.0.0.1:{port}"),
    ])
    .expect("service create");
    let all: BTreeSet<&str> = ["n1", "n2", "n3"].into();
    wait_tasks(n1, &service, 1, &all);

    let state = temp_dir("swarm-state");
    let scale = |args: &[&str]| {
        let mut c = Command::new(bin(SCALE));
        c.args(["--engine", "swarm", "-H", &n1.host_arg(), "--state-dir"])
            .arg(state.path())
            .args(args);
        run_command(&mut c, COMMAND_LIMIT)
    };
    // Up by 2 from 1 (the caller's CURRENT, 5, is stale: the swarm's count wins).
    let r = scale(&["up", "--", &service, "5", "2"]).ok();
    assert_eq!(r.stdout, "3\n", "{r}");
    let spread = wait_tasks(n1, &service, 3, &all);
    let nodes: BTreeSet<&str> = spread.iter().map(String::as_str).collect();
    assert_eq!(nodes, all, "one task per node: {spread:?}");
    note(&format!(
        "scaled across {nodes:?} after {:.1?}",
        started.elapsed()
    ));

    // One node stopped: the swarm (two managers of three: still a quorum) marks it down and
    // puts its task on the other two.
    let t_stop = Instant::now();
    docker(&["stop", "--time", "5", &n3.name]).expect("docker stop n3");
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

    // concierge-scale reads the real count (3, not the caller's 9) and scales down.
    let r = scale(&["down", "--", &service, "9"]).ok();
    assert_eq!(r.stdout, "2\n", "{r}");
    wait_tasks(n1, &service, 2, &two);
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
    let _ = n1.docker(&["service", "rm", &service]);
    drop(cluster);
    note(&format!(
        "multi-node swarm test took {:.1?}",
        started.elapsed()
    ));
}
