//! A lab version's facts, read from `scripts/zabbix-lab.sh env VERSION` once per process: the one
//! source of truth for its URLs, ports, credentials, binaries and paths (no constants here).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::repo_root;

/// The lab versions every lab test runs against.
pub const VERSIONS: [&str; 2] = ["6.0", "7.0"];

/// The assignments `zabbix-lab.sh env` printed for one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    vars: BTreeMap<String, String>,
}

static CACHE: [OnceLock<Result<Facts, String>>; VERSIONS.len()] =
    [OnceLock::new(), OnceLock::new()];

impl Facts {
    /// The facts of `version` (cached per process), or why they could not be read.
    pub fn of(version: &str) -> Result<&'static Facts, String> {
        let i = VERSIONS
            .iter()
            .position(|v| *v == version)
            .ok_or_else(|| format!("no lab version {version:?} (known: {VERSIONS:?})"))?;
        CACHE[i]
            .get_or_init(|| Self::read(version))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Run the lab script's `env` verb (an argument vector, no shell) and parse what it prints.
    fn read(version: &str) -> Result<Facts, String> {
        let script = repo_root().join("scripts/zabbix-lab.sh");
        let out = Command::new("bash")
            .arg(&script)
            .args(["env", version])
            .output()
            .map_err(|e| format!("cannot run bash {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} env {version}: {}: {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let facts = Self::parse(&String::from_utf8_lossy(&out.stdout))?;
        if facts.vars.get("ZABBIX_VERSION").map(String::as_str) != Some(version) {
            return Err(format!(
                "zabbix-lab.sh env {version} printed ZABBIX_VERSION={:?}",
                facts.vars.get("ZABBIX_VERSION")
            ));
        }
        Ok(facts)
    }

    /// Parse `NAME='value'` lines (the script never prints a quote inside a value).
    pub fn parse(text: &str) -> Result<Facts, String> {
        let mut vars = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let parsed = line.split_once('=').and_then(|(name, v)| {
                let value = v.strip_prefix('\'')?.strip_suffix('\'')?;
                let name_ok = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                (name_ok && !value.contains('\'')).then(|| (name.to_string(), value.to_string()))
            });
            let (name, value) = parsed.ok_or_else(|| format!("not NAME='value': {line:?}"))?;
            vars.insert(name, value);
        }
        Ok(Facts { vars })
    }

    /// The value of `name`; panics (naming it) when the lab script does not print it.
    pub fn get(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("zabbix-lab.sh env prints no {name}"))
    }

    /// `6.0` or `7.0`.
    pub fn version(&self) -> &str {
        self.get("ZABBIX_VERSION")
    }

    /// The JSON-RPC endpoint.
    pub fn api_url(&self) -> &str {
        self.get("ZABBIX_API_URL")
    }

    /// The trapper, `host:port`, as `-z` takes it.
    pub fn server(&self) -> &str {
        self.get("ZABBIX_SERVER")
    }

    /// The trapper's host and port.
    pub fn server_addr(&self) -> (String, u16) {
        split_addr(self.server())
    }

    /// The lab agent, `host:port`.
    pub fn agent(&self) -> &str {
        self.get("ZABBIX_AGENT")
    }

    /// The API user and password.
    pub fn credentials(&self) -> (&str, &str) {
        (self.get("ZABBIX_USER"), self.get("ZABBIX_PASSWORD"))
    }

    /// The host the lab creates, whose agent is [`Facts::agent`].
    pub fn lab_host(&self) -> &str {
        self.get("ZABBIX_LAB_HOST")
    }

    /// The host group every test host goes into.
    pub fn lab_group(&self) -> &str {
        self.get("ZABBIX_LAB_GROUP")
    }

    /// This version's zabbix_sender, runnable on the host.
    pub fn sender(&self) -> PathBuf {
        PathBuf::from(self.get("ZABBIX_SENDER"))
    }

    /// This version's zabbix_agentd, runnable on the host.
    pub fn agentd(&self) -> PathBuf {
        PathBuf::from(self.get("ZABBIX_AGENTD"))
    }

    /// The user the server and agent run commands as.
    pub fn run_user(&self) -> &str {
        self.get("ZABBIX_RUN_USER")
    }

    /// Whether the server may run global scripts itself (7.0's EnableGlobalScripts).
    pub fn global_scripts(&self) -> bool {
        self.get("ZABBIX_GLOBAL_SCRIPTS") == "1"
    }

    /// The server's log file on the host.
    pub fn server_log(&self) -> PathBuf {
        PathBuf::from(self.get("ZABBIX_SERVER_LOG"))
    }

    /// True when the lab's daemons see `path` at the same path as the host (its root shares it).
    pub fn shares(&self, path: &Path) -> bool {
        self.get("ZABBIX_SHARED")
            .split(':')
            .filter(|s| !s.is_empty())
            .any(|dir| path.starts_with(dir))
    }

    /// `path` as the lab's daemons can open it: itself when shared, else its canonical form when
    /// that is (a checkout reached through a symlink is shared by its real path), else `None`.
    pub fn lab_path(&self, path: &Path) -> Option<PathBuf> {
        if self.shares(path) {
            return Some(path.to_path_buf());
        }
        let real = std::fs::canonicalize(path).ok()?;
        self.shares(&real).then_some(real)
    }

    /// The directories the lab's root shares with the host, for messages.
    pub fn shared_dirs(&self) -> &str {
        self.get("ZABBIX_SHARED")
    }
}

/// `host:port` into its parts; a missing or bad port is 10051 (Zabbix's default).
pub fn split_addr(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(10051)),
        None => (addr.to_string(), 10051),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_parse_and_anything_else_is_refused() {
        let f = Facts::parse(
            "ZABBIX_VERSION='7.0'\nZABBIX_SERVER='127.0.0.1:10061'\nZABBIX_SHARED='/tmp:/srv/src'\n",
        )
        .unwrap();
        assert_eq!(f.version(), "7.0");
        assert_eq!(f.server_addr(), ("127.0.0.1".to_string(), 10061));
        assert!(f.shares(Path::new("/tmp/x/y")));
        assert!(f.shares(Path::new("/srv/src")));
        assert!(!f.shares(Path::new("/srv/srcs")));
        assert!(!f.shares(Path::new("/opt/x")));
        for bad in ["X=unquoted", "x='lower'", "X='a'b'", "='v'", "X='open"] {
            assert!(Facts::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_path_through_a_symlink_is_shared_by_its_real_path() {
        let real =
            std::env::temp_dir().join(format!("concierge-facts-real-{}", std::process::id()));
        let link =
            std::env::temp_dir().join(format!("concierge-facts-link-{}", std::process::id()));
        std::fs::create_dir_all(real.join("bin")).unwrap();
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let real = std::fs::canonicalize(&real).unwrap();
        let f = Facts::parse(&format!("ZABBIX_SHARED='{}'", real.display())).unwrap();
        assert!(!f.shares(&link.join("bin")));
        assert_eq!(f.lab_path(&link.join("bin")), Some(real.join("bin")));
        assert_eq!(f.lab_path(Path::new("/nonexistent/x")), None);
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir_all(&real).unwrap();
    }

    #[test]
    fn the_root_filesystem_shares_everything() {
        let f = Facts::parse("ZABBIX_SHARED='/'").unwrap();
        assert!(f.shares(Path::new("/home/me/concierge/target/debug/concierge-scale")));
    }

    #[test]
    fn the_lab_script_prints_every_fact_for_every_version() {
        for v in VERSIONS {
            let f = Facts::of(v).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(f.version(), v);
            assert!(
                f.api_url().starts_with("http://127.0.0.1:"),
                "{}",
                f.api_url()
            );
            let (host, port) = f.server_addr();
            assert_eq!(host, "127.0.0.1");
            assert_ne!(port, 0);
            for name in [
                "ZABBIX_USER",
                "ZABBIX_PASSWORD",
                "ZABBIX_AGENT",
                "ZABBIX_LAB_HOST",
                "ZABBIX_LAB_GROUP",
                "ZABBIX_SENDER",
                "ZABBIX_AGENTD",
                "ZABBIX_ROOT",
                "ZABBIX_SHARED",
                "ZABBIX_SERVER_CONF",
                "ZABBIX_SERVER_LOG",
                "ZABBIX_GLOBAL_SCRIPTS",
                "ZABBIX_RUN_USER",
            ] {
                assert!(!f.get(name).is_empty(), "{v}: {name} is empty");
            }
        }
        assert_ne!(
            Facts::of("6.0").unwrap().server(),
            Facts::of("7.0").unwrap().server(),
            "each version has its own trapper"
        );
    }
}
