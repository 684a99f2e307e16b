//! Command-line pieces the tools share: the `zabbix_sender`-style connection options and
//! duration arguments, resolved against the agent configuration (flags win).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::agent_config::{AgentConfig, ConfigError};
use crate::deadline::Deadline;
use crate::outcome::UsageError;
use crate::system;
use crate::zabbix::destination::{self, Destination};
use crate::zabbix::sender::SenderOptions;

/// The agent's `Timeout` when the config does not set one.
pub const AGENT_DEFAULT_TIMEOUT_SECS: u32 = 3;

/// Connection options, named as `zabbix_sender` names them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectionArgs {
    /// Zabbix agent configuration file; ServerActive, Hostname, SourceIP, Timeout and
    /// HostMetadata are read from it (Include is followed). Flags override it.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Zabbix server or proxy, host[:port]. ',' separates destinations that each get all the
    /// data, ';' separates the nodes of one HA cluster (tried in order). Repeatable. Replaces
    /// ServerActive. '-' writes zabbix_sender input lines to stdout instead of sending.
    #[arg(short = 'z', long = "zabbix-server", value_name = "SERVER")]
    pub servers: Vec<String>,

    /// Port for -z entries that name none.
    #[arg(short = 'p', long = "port", value_name = "PORT", default_value_t = destination::DEFAULT_PORT)]
    pub port: u16,

    /// Technical name of the Zabbix host the values belong to. Replaces Hostname; the system
    /// host name is the last resort.
    #[arg(short = 's', long = "host", value_name = "HOST")]
    pub host: Option<String>,

    /// Local address to connect from. Replaces SourceIP.
    #[arg(short = 'I', long = "source-address", value_name = "IP")]
    pub source_address: Option<String>,

    /// Deadline for the whole run (2.5, 2500ms, 10s). Default: the agent's Timeout (from -c,
    /// else 3 s) minus 0.5 s, so the agent never kills the run.
    #[arg(short = 't', long = "timeout", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// zlib-compress requests (Zabbix answers in kind). Off by default: on loopback and LANs
    /// it costs more CPU than it saves.
    #[arg(long)]
    pub compress: bool,
}

/// Where and how values go, after flags and configuration are combined.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Destinations to send to; empty when values go to stdout instead.
    pub destinations: Vec<Destination>,
    /// True when `-z -` asked for zabbix_sender input lines on stdout.
    pub to_stdout: bool,
    /// The host name values are sent for.
    pub host: String,
    /// The run's deadline.
    pub deadline: Deadline,
    /// Sender settings (source address, compression).
    pub sender: SenderOptions,
    /// The agent configuration that was read (empty without `-c`).
    pub config: AgentConfig,
}

impl ConnectionArgs {
    /// Read the agent configuration named by `-c`, or an empty one.
    pub fn load_config(&self) -> Result<AgentConfig, ConfigError> {
        match &self.config {
            Some(path) => AgentConfig::load(path),
            None => Ok(AgentConfig::default()),
        }
    }

    /// Combine flags and configuration. `started` is when the process started: the deadline
    /// counts from there. With `require_destination`, having no destination is an error.
    pub fn resolve(
        &self,
        started: Instant,
        require_destination: bool,
    ) -> anyhow::Result<Connection> {
        self.resolve_with(started, require_destination, system::hostname)
    }

    /// As [`ConnectionArgs::resolve`], with `fallback_host` naming the host when neither `-s`
    /// nor Hostname does (a container uses [`system::instance_name`]).
    pub fn resolve_with(
        &self,
        started: Instant,
        require_destination: bool,
        fallback_host: fn() -> Option<String>,
    ) -> anyhow::Result<Connection> {
        let config = self.load_config()?;
        if let Some(tls) = &config.tls_connect {
            if !tls.eq_ignore_ascii_case("unencrypted") {
                return Err(UsageError(format!(
                    "TLSConnect={tls} is not supported yet: use an unencrypted trapper or a local proxy"
                ))
                .into());
            }
        }
        let deadline = Deadline::starting_at(started, self.budget(&config));
        let host = self.host_name_with(&config, fallback_host)?;
        let (destinations, to_stdout) = self.destinations(&config)?;
        if require_destination && destinations.is_empty() && !to_stdout {
            return Err(UsageError(
                "no Zabbix destination: give -z SERVER, or -c with ServerActive (or --dry-run)"
                    .into(),
            )
            .into());
        }
        let source_ip = self
            .source_address
            .as_deref()
            .or(config.source_ip.as_deref())
            .map(|s| {
                s.parse::<IpAddr>()
                    .map_err(|_| UsageError(format!("source address {s:?} is not an IP address")))
            })
            .transpose()?;
        let mut sender = SenderOptions {
            compress: self.compress,
            ..SenderOptions::default()
        };
        sender.connect.source_ip = source_ip;
        Ok(Connection {
            destinations,
            to_stdout,
            host,
            deadline,
            sender,
            config,
        })
    }

    /// The run's time budget: `-t`, else just under the agent's Timeout.
    pub fn budget(&self, config: &AgentConfig) -> Duration {
        self.timeout
            .unwrap_or_else(|| budget_below(config.timeout.unwrap_or(AGENT_DEFAULT_TIMEOUT_SECS)))
    }

    /// The host name: `-s`, else the config's Hostname, else the system host name.
    pub fn host_name(&self, config: &AgentConfig) -> Result<String, UsageError> {
        self.host_name_with(config, system::hostname)
    }

    fn host_name_with(
        &self,
        config: &AgentConfig,
        fallback: fn() -> Option<String>,
    ) -> Result<String, UsageError> {
        let host = self
            .host
            .clone()
            .or_else(|| config.hostname.clone())
            .or_else(fallback)
            .ok_or_else(|| UsageError("no host name: give -s HOST or Hostname in -c".into()))?;
        if !system::is_valid_host_name(&host) {
            return Err(UsageError(format!(
                "invalid host name {host:?}: 1-128 characters of 0-9 A-Z a-z space . _ -"
            )));
        }
        Ok(host)
    }

    fn destinations(&self, config: &AgentConfig) -> anyhow::Result<(Vec<Destination>, bool)> {
        if self.servers.iter().any(|s| s == "-") {
            if self.servers.len() > 1 {
                return Err(UsageError("-z - cannot be combined with other servers".into()).into());
            }
            return Ok((Vec::new(), true));
        }
        let mut out = Vec::new();
        if self.servers.is_empty() {
            if let Some(list) = &config.server_active {
                out = destination::parse_list(list, destination::DEFAULT_PORT)?;
            }
        } else {
            for s in &self.servers {
                out.extend(destination::parse_list(s, self.port)?);
            }
        }
        Ok((out, false))
    }
}

/// A deadline safely below an agent `Timeout` of `secs`: half a second less, but never less
/// than half of it.
pub fn budget_below(secs: u32) -> Duration {
    let t = Duration::from_secs(u64::from(secs.max(1)));
    (t.saturating_sub(Duration::from_millis(500))).max(t / 2)
}

/// Parse a duration: a number of seconds (`2.5`) or a number with `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (examples: 2.5, 500ms, 10s, 2m)"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 * 365.0 {
        return Err(format!(
            "duration {text:?} must be positive and under a year"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        for bad in ["", "x", "0", "-1", "5d", "1e400", "NaN"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn budget_stays_below_the_agent_timeout() {
        assert_eq!(budget_below(3), Duration::from_millis(2500));
        assert_eq!(budget_below(1), Duration::from_millis(500));
        assert_eq!(budget_below(30), Duration::from_millis(29500));
    }

    #[test]
    fn flags_override_config() {
        let args = ConnectionArgs {
            servers: vec!["127.0.0.1:1;127.0.0.2".into(), "127.0.0.3".into()],
            port: 2,
            host: Some("from-flag".into()),
            ..Default::default()
        };
        let cfg = AgentConfig {
            server_active: Some("ignored".into()),
            hostname: Some("from-config".into()),
            timeout: Some(10),
            ..Default::default()
        };
        let (d, stdout) = args.destinations(&cfg).unwrap();
        assert!(!stdout);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].nodes[1].port, 2);
        assert_eq!(args.host_name(&cfg).unwrap(), "from-flag");
        assert_eq!(args.budget(&cfg), Duration::from_millis(9500));
        let from_cfg = ConnectionArgs::default();
        assert_eq!(from_cfg.host_name(&cfg).unwrap(), "from-config");
        assert_eq!(
            from_cfg.destinations(&cfg).unwrap().0[0].nodes[0].host,
            "ignored"
        );
        let bad = ConnectionArgs {
            host: Some("a/b".into()),
            ..Default::default()
        };
        assert!(bad.host_name(&cfg).is_err());
    }
}
