//! Command-line pieces the tools share: the `zabbix_sender`-style connection options and
//! duration arguments, resolved against the agent configuration (flags win).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent_config::{AgentConfig, ConfigError};
use crate::deadline::Deadline;
use crate::metrics::prometheus;
use crate::outcome::{self, UsageError};
use crate::spool::{self, Spool, SpoolConfig};
use crate::system;
use crate::text::shown;
use crate::tls;
use crate::zabbix::destination::{self, Destination};
use crate::zabbix::sender::SenderOptions;
use crate::zabbix::transport;

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
    /// data, ';' separates the nodes of one HA cluster or proxy group (tried in order; a proxy
    /// group's redirect is followed). Repeatable. Replaces ServerActive. '-' writes
    /// zabbix_sender input lines to stdout instead of sending.
    #[arg(short = 'z', long = "zabbix-server", value_name = "SERVER")]
    pub servers: Vec<String>,

    /// Port for -z entries that name none (1-65535).
    #[arg(short = 'p', long = "port", value_name = "PORT", default_value_t = destination::DEFAULT_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Technical name of the Zabbix host the values belong to. Replaces Hostname; the system
    /// host name is the last resort.
    #[arg(short = 's', long = "host", value_name = "HOST")]
    pub host: Option<String>,

    /// Local address to connect from. Replaces SourceIP.
    #[arg(short = 'I', long = "source-address", value_name = "IP")]
    pub source_address: Option<String>,

    /// Deadline for the whole run (2.5, 2500ms, 10s). Default: the agent's Timeout (from -c,
    /// else 3 s) minus 0.5 s, so the agent never kills the run: a 6.0 agent kills a
    /// UserParameter at its Timeout; a 7.0 agent at the item's timeout instead (1-600 s, global
    /// default 3 s), which the Concierge app template for 7.0 sets to 30 s, above this default.
    /// With other 7.0 items, keep -t below their timeout.
    #[arg(short = 't', long = "timeout", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// zlib-compress requests (Zabbix answers in kind). Off by default: on loopback and LANs
    /// it costs more CPU than it saves.
    #[arg(long)]
    pub compress: bool,

    /// How to connect to Zabbix: unencrypted, psk or cert. Replaces TLSConnect.
    #[arg(long = "tls-connect", value_name = "MODE", help_heading = "TLS")]
    pub tls_connect: Option<tls::Mode>,

    /// PSK identity (not secret: the key stays in the file). Replaces TLSPSKIdentity.
    #[arg(
        long = "tls-psk-identity",
        value_name = "IDENTITY",
        help_heading = "TLS"
    )]
    pub tls_psk_identity: Option<String>,

    /// File holding the PSK as 32-512 hex digits (keep it 0600). Replaces TLSPSKFile.
    #[arg(long = "tls-psk-file", value_name = "FILE", help_heading = "TLS")]
    pub tls_psk_file: Option<PathBuf>,

    /// CA certificates the server's certificate must chain to. Replaces TLSCAFile.
    #[arg(long = "tls-ca-file", value_name = "FILE", help_heading = "TLS")]
    pub tls_ca_file: Option<PathBuf>,

    /// Revoked certificates (PEM CRL), checked for the whole chain. Replaces TLSCRLFile.
    #[arg(long = "tls-crl-file", value_name = "FILE", help_heading = "TLS")]
    pub tls_crl_file: Option<PathBuf>,

    /// Required issuer of the server's certificate, RFC 4514 (CN first). Replaces
    /// TLSServerCertIssuer.
    #[arg(
        long = "tls-server-cert-issuer",
        value_name = "DN",
        help_heading = "TLS"
    )]
    pub tls_server_cert_issuer: Option<String>,

    /// Required subject of the server's certificate, RFC 4514 (CN first). Replaces
    /// TLSServerCertSubject.
    #[arg(
        long = "tls-server-cert-subject",
        value_name = "DN",
        help_heading = "TLS"
    )]
    pub tls_server_cert_subject: Option<String>,

    /// Our certificate (PEM, chain after it). Replaces TLSCertFile.
    #[arg(long = "tls-cert-file", value_name = "FILE", help_heading = "TLS")]
    pub tls_cert_file: Option<PathBuf>,

    /// Our certificate's private key (PEM). Replaces TLSKeyFile.
    #[arg(long = "tls-key-file", value_name = "FILE", help_heading = "TLS")]
    pub tls_key_file: Option<PathBuf>,
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
    /// Read the agent configuration named by `-c`, or an empty one, within
    /// [`config_deadline`] from `started`.
    pub fn load_config(&self, started: Instant) -> Result<AgentConfig, ConfigError> {
        match &self.config {
            Some(path) => AgentConfig::load_within(path, &config_deadline(started, self.timeout)),
            None => Ok(AgentConfig::default()),
        }
    }

    /// Combine flags and configuration. `started` is when the process started: the deadline
    /// counts from there. With `require_destination`, having no destination is an error.
    pub fn resolve(
        &self,
        started: Instant,
        require_destination: bool,
    ) -> outcome::Result<Connection> {
        self.resolve_with(started, require_destination, system::hostname)
    }

    /// As [`ConnectionArgs::resolve`], with `fallback_host` naming the host when neither `-s`
    /// nor Hostname does (a container uses [`system::instance_name`]).
    pub fn resolve_with(
        &self,
        started: Instant,
        require_destination: bool,
        fallback_host: fn() -> Option<String>,
    ) -> outcome::Result<Connection> {
        let config = self.load_config(started)?;
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
            .map(source_address)
            .transpose()?;
        let mut sender = SenderOptions {
            compress: self.compress,
            ..SenderOptions::default()
        };
        sender.connect.source_ip = source_ip;
        if !to_stdout {
            sender.connect.tls = tls::Client::new(&self.tls_settings(&config)?)?.map(Arc::new);
        }
        Ok(Connection {
            destinations,
            to_stdout,
            host,
            deadline,
            sender,
            config,
        })
    }

    /// The TLS settings: each flag replaces its agent config key.
    pub fn tls_settings(&self, config: &AgentConfig) -> Result<tls::Settings, UsageError> {
        let connect = match (self.tls_connect, &config.tls_connect) {
            (Some(m), _) => m,
            (None, Some(text)) => tls::Mode::parse(text).ok_or_else(|| {
                UsageError(format!(
                    "TLSConnect={:?}: use unencrypted, psk or cert",
                    shown(text)
                ))
            })?,
            (None, None) => tls::Mode::Unencrypted,
        };
        // The agent config's keys of the other mode serve its TLSAccept: ignore them. A flag
        // of the other mode is a mistake, reported by the client.
        let (psk, cert) = (connect == tls::Mode::Psk, connect == tls::Mode::Cert);
        fn pick<T: Clone>(flag: &Option<T>, key: &Option<T>, wanted: bool) -> Option<T> {
            flag.clone().or(if wanted { key.clone() } else { None })
        }
        let c = config;
        Ok(tls::Settings {
            connect,
            psk_identity: pick(&self.tls_psk_identity, &c.tls_psk_identity, psk),
            psk_file: pick(&self.tls_psk_file, &c.tls_psk_file, psk),
            ca_file: pick(&self.tls_ca_file, &c.tls_ca_file, cert),
            crl_file: pick(&self.tls_crl_file, &c.tls_crl_file, cert),
            server_cert_issuer: pick(
                &self.tls_server_cert_issuer,
                &c.tls_server_cert_issuer,
                cert,
            ),
            server_cert_subject: pick(
                &self.tls_server_cert_subject,
                &c.tls_server_cert_subject,
                cert,
            ),
            cert_file: pick(&self.tls_cert_file, &c.tls_cert_file, cert),
            key_file: pick(&self.tls_key_file, &c.tls_key_file, cert),
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
                "invalid host name {:?}: 1-128 characters of 0-9 A-Z a-z space . _ -",
                shown(&host)
            )));
        }
        Ok(host)
    }

    fn destinations(&self, config: &AgentConfig) -> outcome::Result<(Vec<Destination>, bool)> {
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

/// Where values that no destination accepted are kept for the next run (courier, heartbeat).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SpoolArgs {
    /// Keep values no destination accepted in DIR, with their collection clocks, and deliver
    /// them (oldest first) on the next run that reaches Zabbix. Default: <state dir>/spool/<tool>
    /// when the state directory ($CONCIERGE_STATE_DIR, else /var/lib/concierge) exists.
    #[arg(long, value_name = "DIR", conflicts_with = "no_spool")]
    pub spool: Option<PathBuf>,

    /// Do not spool: values no destination accepted are dropped (the failure code says so).
    #[arg(long)]
    pub no_spool: bool,

    /// Size cap per destination list (64M by default; k, M, G). When full, the oldest values
    /// are dropped, counted on stderr and reported (-4) by the run that reaches Zabbix.
    #[arg(long, value_name = "SIZE", value_parser = spool::parse_size)]
    pub spool_max: Option<u64>,
}

impl SpoolArgs {
    /// The spool to use, if any: `--spool`, else the state directory's when it exists.
    pub fn config(&self, tool: &str) -> Option<SpoolConfig> {
        if self.no_spool {
            return None;
        }
        let dir = match &self.spool {
            Some(dir) => dir.clone(),
            None => {
                let state = std::env::var_os("CONCIERGE_STATE_DIR")
                    .filter(|s| !s.is_empty())
                    .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), PathBuf::from);
                if !state.is_dir() {
                    return None;
                }
                spool::under_state_dir(&state, tool)
            }
        };
        Some(SpoolConfig {
            dir,
            max_bytes: self.spool_max.unwrap_or(spool::DEFAULT_MAX_BYTES),
        })
    }

    /// Open the spool for `conn`'s destinations. An unusable `--spool` is an error; an
    /// unusable default is told on stderr and the run goes on without one.
    pub fn open(&self, tool: &str, conn: &Connection) -> outcome::Result<Option<Spool>> {
        let Some(config) = self.config(tool) else {
            return Ok(None);
        };
        let list = conn
            .destinations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let opened = match self.spool {
            // The default's parent (<state dir>/spool) is ours to create.
            None => config
                .dir
                .parent()
                .map_or(Ok(()), spool::ensure_dir)
                .and_then(|()| Spool::open(&config, &list)),
            Some(_) => Spool::open(&config, &list),
        };
        match opened {
            Ok(s) => Ok(Some(s)),
            Err(e) if self.spool.is_none() => {
                outcome::warn(
                    tool,
                    format_args!("{e}: running without a spool (--spool DIR)"),
                );
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The tools' state directory when $CONCIERGE_STATE_DIR does not name one.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/concierge";

/// What to read from a Prometheus or OpenMetrics endpoint; shared by discover and courier,
/// which must select the same series.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PrometheusArgs {
    /// Exposition format: text (0.0.4) or openmetrics. Default: the Content-Type's, else
    /// OpenMetrics when the document ends with `# EOF`, else text.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<prometheus::Format>,

    /// Keep only metrics whose family or sample name matches one of these globs (`*` any
    /// run, `?` one character), comma-separated; repeatable. Empty keeps everything.
    #[arg(long, value_name = "GLOB,...")]
    pub filter: Vec<String>,

    /// Leave out metrics whose family or sample name matches one of these globs. Excluded
    /// buckets still feed --quantiles: `--exclude '*_bucket' --quantiles 0.95` sends p95 only.
    #[arg(long, value_name = "GLOB,...")]
    pub exclude: Vec<String>,

    /// Quantiles (0 to 1, comma-separated) to compute from every histogram's buckets, as
    /// Prometheus' histogram_quantile does: series `NAME{…,quantile="0.95"}`.
    #[arg(long, value_name = "Q,...", value_delimiter = ',', value_parser = parse_quantile)]
    pub quantiles: Vec<Option<f64>>,
}

impl PrometheusArgs {
    /// True when any Prometheus option was given (they only apply to KIND prometheus).
    pub fn any(&self) -> bool {
        self.format.is_some()
            || !self.filter.is_empty()
            || !self.exclude.is_empty()
            || !self.quantiles.is_empty()
    }

    /// The reader's options.
    pub fn options(&self) -> prometheus::Options {
        let mut quantiles: Vec<f64> = self.quantiles.iter().flatten().copied().collect();
        quantiles.sort_by(f64::total_cmp);
        quantiles.dedup();
        prometheus::Options {
            selection: prometheus::Selection::new(&self.filter, &self.exclude),
            quantiles,
        }
    }
}

/// A quantile between 0 and 1; empty (as an unset agent parameter gives) means none.
fn parse_quantile(text: &str) -> Result<Option<f64>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    match t.parse::<f64>() {
        Ok(q) if (0.0..=1.0).contains(&q) => Ok(Some(q)),
        _ => Err(format!(
            "quantile {:?} is not a number from 0 to 1",
            shown(text)
        )),
    }
}

/// The local address `-I` (or SourceIP) names, checked to be one connections can come from.
fn source_address(text: &str) -> Result<IpAddr, UsageError> {
    let ip = text.parse::<IpAddr>().map_err(|_| {
        UsageError(format!(
            "source address {:?} is not an IP address",
            shown(text)
        ))
    })?;
    transport::check_source_address(ip).map_err(|e| {
        UsageError(format!(
            "source address {ip} cannot be used: {e} (it must be an address of this machine)"
        ))
    })?;
    Ok(ip)
}

/// The deadline for reading the agent configuration: `-t` when given, else the default
/// budget (the config's own `Timeout` is not known before it has been read).
pub fn config_deadline(started: Instant, timeout: Option<Duration>) -> Deadline {
    Deadline::starting_at(
        started,
        timeout.unwrap_or_else(|| budget_below(AGENT_DEFAULT_TIMEOUT_SECS)),
    )
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
    fn the_source_address_must_be_usable() {
        assert_eq!(
            source_address("127.0.0.2").unwrap(),
            "127.0.0.2".parse::<IpAddr>().unwrap()
        );
        let e = source_address("1.2.3.4.5").unwrap_err();
        assert!(e.0.contains("is not an IP address"), "{e}");
        // TEST-NET-1 (RFC 5737) is never an address of this machine.
        let e = source_address("192.0.2.1").unwrap_err();
        assert!(
            e.0.starts_with("source address 192.0.2.1 cannot be used: "),
            "{e}"
        );
        let args = ConnectionArgs {
            servers: vec!["127.0.0.1".into()],
            host: Some("h".into()),
            source_address: Some("192.0.2.1".into()),
            ..Default::default()
        };
        let e = args.resolve(Instant::now(), true).unwrap_err();
        assert_eq!(e.failure(), Some(crate::outcome::Failure::Usage));
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
