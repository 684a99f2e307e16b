//! A zabbix_agentd of a test's own with the shipped UserParameter file pointed at this
//! checkout's tools: it runs concierge-discover and concierge-courier for a host linked to
//! "Concierge app", as an installed agent would.

use std::path::Path;
use std::process::Command;

use crate::{bin, note, repo_root, temp_dir, Daemon, Lab, TempDir};

/// A zabbix_agentd of the test's own (active checks only, no listening port) with its
/// directory (config, logs); stopped with its whole process group when dropped.
pub struct Agent {
    /// The daemon (stop it to check that its children go with it).
    pub daemon: Daemon,
    _dir: TempDir,
}

/// The shipped UserParameter file with its three installation paths pointed at this
/// checkout's binaries, the test's agent config and a log in `dir`. Fails if the shipped file
/// no longer has the shape the replacements expect.
pub fn userparameters(dir: &Path, agent_conf: &Path, tool_log: &Path) -> String {
    let shipped =
        std::fs::read_to_string(repo_root().join("zabbix-templates/userparameter_concierge.conf"))
            .expect("shipped UserParameter file");
    let bin_dir = bin("concierge-courier")
        .parent()
        .expect("target dir")
        .to_path_buf();
    let mut text = shipped.clone();
    for (from, to) in [
        ("/usr/local/bin/", format!("{}/", bin_dir.display())),
        (
            "/etc/zabbix/zabbix_agentd.conf",
            agent_conf.display().to_string(),
        ),
        (
            "/var/log/zabbix-agent/concierge.log",
            tool_log.display().to_string(),
        ),
    ] {
        assert!(
            text.contains(from),
            "the shipped UserParameter file no longer mentions {from}"
        );
        text = text.replace(from, &to);
    }
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("UserParameter="))
        .collect();
    assert_eq!(lines.len(), 4, "{shipped}");
    let path = dir.join("userparameter_concierge.conf");
    std::fs::write(&path, &text).expect("write UserParameter file");
    path.display().to_string()
}

impl Agent {
    /// Start `agentd` (a 6.0 or 7.0 zabbix_agentd) for `host`, reporting to `lab`'s server, with
    /// `Timeout={timeout}` (the tools' deadline is half a second less).
    pub fn start(lab: &Lab, agentd: &Path, host: &str, timeout: u32) -> Agent {
        let dir = temp_dir("agent");
        let conf = dir.path().join("zabbix_agentd.conf");
        let log = dir.path().join("zabbix_agentd.log");
        let tool_log = dir.path().join("concierge.log");
        let include = userparameters(dir.path(), &conf, &tool_log);
        std::fs::write(
            &conf,
            format!(
                "Hostname={host}\nServerActive={}\nServer=127.0.0.1\nStartAgents=0\n\
             AllowRoot=1\nTimeout={timeout}\nRefreshActiveChecks=60\nBufferSend=1\n\
             LogType=file\nLogFile={}\nPidFile={}\nInclude={include}\n",
                lab.server(),
                log.display(),
                dir.path().join("zabbix_agentd.pid").display(),
            ),
        )
        .expect("agent conf");
        let daemon = Daemon::spawn(
            &format!("zabbix_agentd for {host}"),
            Command::new(agentd).args(["-f", "-c"]).arg(&conf),
        );
        note(&format!(
            "agent {} (pid {}) log: {}",
            agentd.display(),
            daemon.pid(),
            log.display()
        ));
        Agent { daemon, _dir: dir }
    }
}
