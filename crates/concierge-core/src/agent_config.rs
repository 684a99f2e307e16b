//! Reads the parts of `zabbix_agentd.conf` the tools use, as `zabbix_sender -c` does:
//! non-strict (unknown parameters ignored), with `Include` of files, directories and globs.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::deadline::Deadline;
use crate::outcome::{Classify, Failure};
use crate::text::shown;

/// Zabbix refuses deeper Include nesting than this (`ZBX_MAX_INCLUDE_LEVEL`).
const MAX_INCLUDE_DEPTH: usize = 10;

/// Largest configuration file read: a stock `zabbix_agentd.conf` is about 16 KiB, so 1 MiB is
/// generous, and `-c /dev/zero` or a runaway file cannot grow the process.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

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
    /// `TLSConnect`: `unencrypted`, `psk` or `cert` (checked when the options are resolved).
    pub tls_connect: Option<String>,
    /// `TLSPSKIdentity`.
    pub tls_psk_identity: Option<String>,
    /// `TLSPSKFile`.
    pub tls_psk_file: Option<PathBuf>,
    /// `TLSCAFile`.
    pub tls_ca_file: Option<PathBuf>,
    /// `TLSCRLFile`.
    pub tls_crl_file: Option<PathBuf>,
    /// `TLSServerCertIssuer`.
    pub tls_server_cert_issuer: Option<String>,
    /// `TLSServerCertSubject`.
    pub tls_server_cert_subject: Option<String>,
    /// `TLSCertFile`.
    pub tls_cert_file: Option<PathBuf>,
    /// `TLSKeyFile`.
    pub tls_key_file: Option<PathBuf>,
}

/// A configuration file that cannot be read or holds an invalid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub reason: String,
    /// True when the deadline passed while reading (exit as a deadline, not as bad usage).
    pub timed_out: bool,
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

impl Classify for ConfigError {
    fn failure(&self) -> Failure {
        if self.timed_out {
            Failure::DeadlineExceeded
        } else {
            Failure::Usage
        }
    }
}

impl AgentConfig {
    /// Read `path` and everything it includes, within a generous default deadline (30 s, the
    /// longest agent `Timeout`); the tools use [`AgentConfig::load_within`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_within(path, &Deadline::after(Duration::from_secs(30)))
    }

    /// Read `path` and everything it includes, giving up once `deadline` has passed. Only
    /// regular files of at most [`MAX_CONFIG_BYTES`] are read: a FIFO, a device or a socket
    /// is refused at once (opened without blocking), so nothing can hold the run.
    pub fn load_within(path: &Path, deadline: &Deadline) -> Result<Self, ConfigError> {
        let mut cfg = AgentConfig::default();
        cfg.load_file(path, 0, deadline)?;
        Ok(cfg)
    }

    fn load_file(
        &mut self,
        path: &Path,
        depth: usize,
        deadline: &Deadline,
    ) -> Result<(), ConfigError> {
        let err = |line, reason: String| ConfigError {
            path: path.to_path_buf(),
            line,
            reason,
            timed_out: false,
        };
        if depth > MAX_INCLUDE_DEPTH {
            return Err(err(None, "Include nested too deeply (a loop?)".into()));
        }
        if deadline.expired() {
            return Err(ConfigError {
                timed_out: true,
                ..err(
                    None,
                    "deadline reached while reading the configuration".into(),
                )
            });
        }
        let bytes = read_regular(path).map_err(|r| err(None, r))?;
        let text = String::from_utf8(bytes).map_err(|_| err(None, "not valid UTF-8".into()))?;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(err(
                    Some(i + 1),
                    format!("expected Parameter=value, got {:?}", shown(line)),
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
                "TLSPSKIdentity" => self.tls_psk_identity = value_opt,
                "TLSPSKFile" => self.tls_psk_file = value_opt.map(PathBuf::from),
                "TLSCAFile" => self.tls_ca_file = value_opt.map(PathBuf::from),
                "TLSCRLFile" => self.tls_crl_file = value_opt.map(PathBuf::from),
                "TLSServerCertIssuer" => self.tls_server_cert_issuer = value_opt,
                "TLSServerCertSubject" => self.tls_server_cert_subject = value_opt,
                "TLSCertFile" => self.tls_cert_file = value_opt.map(PathBuf::from),
                "TLSKeyFile" => self.tls_key_file = value_opt.map(PathBuf::from),
                "Timeout" => {
                    let t = value
                        .parse::<u32>()
                        .ok()
                        .filter(|t| (1..=30).contains(t))
                        .ok_or_else(|| {
                            err(
                                Some(i + 1),
                                format!("Timeout must be 1-30, got {:?}", shown(value)),
                            )
                        })?;
                    self.timeout = Some(t);
                }
                "Include" => {
                    for file in expand_include(value).map_err(|r| err(Some(i + 1), r))? {
                        self.load_file(&file, depth + 1, deadline)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Reads a configuration file that is a regular file of at most [`MAX_CONFIG_BYTES`]. It is
/// opened with `O_NONBLOCK` (so opening a FIFO does not wait for a writer) and checked with
/// `fstat` on the open descriptor, so what is checked is what is read.
fn read_regular(path: &Path) -> Result<Vec<u8>, String> {
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "cannot read: not a regular file ({})",
            file_kind(&meta)
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "cannot read: larger than {} KiB",
            MAX_CONFIG_BYTES / 1024
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The size may change under us: never read more than the cap (plus one byte to tell).
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "cannot read: larger than {} KiB",
            MAX_CONFIG_BYTES / 1024
        ));
    }
    Ok(bytes)
}

/// What a non-regular file is, for the message.
fn file_kind(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
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
                "Include {:?}: '*' is only allowed in the file name",
                shown(value)
            ));
        }
        let mut files = list_files(dir).map_err(|e| format!("Include {:?}: {e}", shown(value)))?;
        files.retain(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| wildcard_match(name, n))
        });
        return Ok(files);
    }
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            list_files(path).map_err(|e| format!("Include {:?}: {e}", shown(value)))
        }
        Ok(_) => Ok(vec![path.to_path_buf()]),
        Err(e) => Err(format!("Include {:?}: {e}", shown(value))),
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

    #[test]
    fn reads_the_parameters_and_ignores_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
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
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
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
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
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
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A device that never ends (issue 15: it grew the process to 22.7 GB).
        let e = AgentConfig::load(Path::new("/dev/zero")).unwrap_err();
        assert!(
            e.reason.contains("not a regular file (a character device)"),
            "{e}"
        );
        assert_eq!(e.failure(), Failure::Usage);
        let big = d.join("big.conf");
        let f = File::create(&big).unwrap();
        f.set_len(MAX_CONFIG_BYTES + 1).unwrap();
        let e = AgentConfig::load(&big).unwrap_err();
        assert!(e.reason.contains("larger than 1024 KiB"), "{e}");
        f.set_len(MAX_CONFIG_BYTES).unwrap();
        fs::write(&big, "Hostname=h\n").unwrap();
        assert!(AgentConfig::load(&big).is_ok());
        // A FIFO, as the file and as an Include: refused at once, without a writer.
        let fifo = d.join("fifo.conf");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = std::time::Instant::now();
        let e = AgentConfig::load(&fifo).unwrap_err();
        assert!(e.reason.contains("a FIFO"), "{e}");
        let main = d.join("main.conf");
        fs::write(&main, format!("Include={}\n", fifo.display())).unwrap();
        let e = AgentConfig::load(&main).unwrap_err();
        assert!(e.reason.contains("a FIFO") && e.path == fifo, "{e}");
        // In a glob or a directory a FIFO is not a file and is skipped, as before.
        let inc = d.join("conf.d");
        fs::create_dir(&inc).unwrap();
        fs::write(inc.join("a.conf"), "Hostname=from-a\n").unwrap();
        fs::rename(&fifo, inc.join("b.conf")).unwrap();
        fs::write(&main, format!("Include={}/*.conf\n", inc.display())).unwrap();
        assert_eq!(
            AgentConfig::load(&main).unwrap().hostname.as_deref(),
            Some("from-a")
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn an_expired_deadline_is_a_deadline_failure() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.conf");
        fs::write(&f, "Hostname=h\n").unwrap();
        let e = AgentConfig::load_within(&f, &Deadline::after(Duration::ZERO)).unwrap_err();
        assert!(e.timed_out);
        assert_eq!(e.failure(), Failure::DeadlineExceeded);
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
