//! Reads the parts of `zabbix_agentd.conf` the tools use, as `zabbix_sender -c` does:
//! non-strict (unknown parameters ignored), with `Include` of files, directories and globs.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// Zabbix refuses deeper Include nesting than this (`ZBX_MAX_INCLUDE_LEVEL`).
const MAX_INCLUDE_DEPTH: usize = 10;

/// The agent settings the tools honour. Later definitions override earlier ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentConfig {
    /// `ServerActive`: where values go (`,` destinations, `;` HA nodes).
    pub server_active: Option<String>,
    /// `Hostname`: the first name of the (6.0: comma-separated) list.
    pub hostname: Option<String>,
    /// `SourceIP`: the local address to connect from.
    pub source_ip: Option<String>,
    /// `Timeout` in seconds (1-30): the agent kills slower commands.
    pub timeout: Option<u32>,
    /// `HostMetadata`: matched by autoregistration actions.
    pub host_metadata: Option<String>,
    /// `TLSConnect`: only `unencrypted` is supported; anything else is refused clearly.
    pub tls_connect: Option<String>,
}

/// A configuration file that cannot be read or holds an invalid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.path.display(), self.reason),
            None => write!(f, "{}: {}", self.path.display(), self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}

impl AgentConfig {
    /// Read `path` and everything it includes.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut cfg = AgentConfig::default();
        cfg.load_file(path, 0)?;
        Ok(cfg)
    }

    fn load_file(&mut self, path: &Path, depth: usize) -> Result<(), ConfigError> {
        let err = |line, reason: String| ConfigError {
            path: path.to_path_buf(),
            line,
            reason,
        };
        if depth > MAX_INCLUDE_DEPTH {
            return Err(err(None, "Include nested too deeply (a loop?)".into()));
        }
        let bytes = fs::read(path).map_err(|e| err(None, format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|_| err(None, "not valid UTF-8".into()))?;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(err(
                    Some(i + 1),
                    format!("expected Parameter=value, got {line:?}"),
                ));
            };
            let (key, value) = (key.trim(), value.trim());
            let value_opt = (!value.is_empty()).then(|| value.to_string());
            match key {
                "ServerActive" => self.server_active = value_opt,
                "Hostname" => {
                    self.hostname = value
                        .split(',')
                        .map(str::trim)
                        .find(|h| !h.is_empty())
                        .map(str::to_string)
                }
                "SourceIP" => self.source_ip = value_opt,
                "HostMetadata" => self.host_metadata = value_opt,
                "TLSConnect" => self.tls_connect = value_opt,
                "Timeout" => {
                    let t = value
                        .parse::<u32>()
                        .ok()
                        .filter(|t| (1..=30).contains(t))
                        .ok_or_else(|| {
                            err(Some(i + 1), format!("Timeout must be 1-30, got {value:?}"))
                        })?;
                    self.timeout = Some(t);
                }
                "Include" => {
                    for file in expand_include(value).map_err(|r| err(Some(i + 1), r))? {
                        self.load_file(&file, depth + 1)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The files an `Include` value names: a file, every file of a directory, or a `*` pattern in
/// the last path component (`/etc/zabbix/zabbix_agentd.d/*.conf`), sorted for a stable order.
fn expand_include(value: &str) -> Result<Vec<PathBuf>, String> {
    let path = Path::new(value);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name.contains('*') {
        let dir = path.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if dir.to_string_lossy().contains('*') {
            return Err(format!(
                "Include {value:?}: '*' is only allowed in the file name"
            ));
        }
        let mut files = list_files(dir).map_err(|e| format!("Include {value:?}: {e}"))?;
        files.retain(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| wildcard_match(name, n))
        });
        return Ok(files);
    }
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => list_files(path).map_err(|e| format!("Include {value:?}: {e}")),
        Ok(_) => Ok(vec![path.to_path_buf()]),
        Err(e) => Err(format!("Include {value:?}: {e}")),
    }
}

fn list_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() || entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// `*` matches any run of characters (Zabbix's Include wildcard); everything else literally.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = parts.split_first().expect("split yields one part");
    let Some(mut tail) = name.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return tail.is_empty();
    };
    for part in middle {
        match tail.find(part) {
            Some(i) => tail = &tail[i + part.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory of one test, removed (with its files) when dropped.
    struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = Path;

        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!(
            "concierge-agent-config-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    #[test]
    fn reads_the_parameters_and_ignores_the_rest() {
        let d = scratch("basic");
        let f = d.join("zabbix_agentd.conf");
        fs::write(
            &f,
            "# comment\nServer=127.0.0.1\nServerActive=127.0.0.1:10051;127.0.0.2,other\n\
             Hostname = web-01 , web-02\nSourceIP=127.0.0.1\nTimeout=7\nUserParameter=a[*],echo $1\n\
             HostMetadata=concierge app\n",
        )
        .unwrap();
        let c = AgentConfig::load(&f).unwrap();
        assert_eq!(
            c.server_active.as_deref(),
            Some("127.0.0.1:10051;127.0.0.2,other")
        );
        assert_eq!(c.hostname.as_deref(), Some("web-01"));
        assert_eq!(c.source_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(c.timeout, Some(7));
        assert_eq!(c.host_metadata.as_deref(), Some("concierge app"));
    }

    #[test]
    fn include_file_directory_and_glob_later_wins() {
        let d = scratch("include");
        let inc = d.join("conf.d");
        fs::create_dir_all(&inc).unwrap();
        fs::write(inc.join("10-a.conf"), "Hostname=from-a\nTimeout=4\n").unwrap();
        fs::write(inc.join("20-b.conf"), "Hostname=from-b\n").unwrap();
        fs::write(inc.join("30-c.txt"), "Hostname=from-txt\n").unwrap();
        fs::write(d.join("one.conf"), "ServerActive=from-file\n").unwrap();
        let main = d.join("main.conf");
        fs::write(
            &main,
            format!(
                "Hostname=main\nInclude={}\nInclude={}/*.conf\n",
                d.join("one.conf").display(),
                inc.display()
            ),
        )
        .unwrap();
        let c = AgentConfig::load(&main).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("from-b"));
        assert_eq!(c.server_active.as_deref(), Some("from-file"));
        assert_eq!(c.timeout, Some(4));
        // A whole directory includes every file in it, the .txt too.
        fs::write(&main, format!("Include={}\n", inc.display())).unwrap();
        assert_eq!(
            AgentConfig::load(&main).unwrap().hostname.as_deref(),
            Some("from-txt")
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let d = scratch("errors");
        let f = d.join("bad.conf");
        fs::write(&f, "Hostname=x\nTimeout=99\n").unwrap();
        let e = AgentConfig::load(&f).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().contains("Timeout must be 1-30"), "{e}");
        fs::write(&f, "just words\n").unwrap();
        assert!(AgentConfig::load(&f).is_err());
        fs::write(&f, format!("Include={}\n", f.display())).unwrap();
        assert!(AgentConfig::load(&f).unwrap_err().reason.contains("nested"));
        assert!(AgentConfig::load(&d.join("missing.conf")).is_err());
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.conf", "a.conf"));
        assert!(wildcard_match("*", "x"));
        assert!(wildcard_match("a*b*c", "aXbYc"));
        assert!(!wildcard_match("*.conf", "a.conf.bak"));
        assert!(!wildcard_match("a*a", "a"));
        assert!(wildcard_match("exact", "exact"));
    }
}
