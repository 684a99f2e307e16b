//! The command line, and the plan it stands for once every value is checked locally (before
//! any request reaches Zabbix).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use concierge_core::cli::parse_duration;
use concierge_core::outcome::UsageError;
use concierge_core::scaling::{MAX_COUNT, STATE_DIR};
use concierge_core::system;
use concierge_core::zabbix::destination::{self, Destination};

use crate::check;
use crate::command::{RetireSettings, ScriptSettings};
use crate::TOOL;

/// The API endpoint when `--api` is not given (the frontend's usual place).
pub const DEFAULT_API: &str = "http://localhost/zabbix/api_jsonrpc.php";
/// Where the Zabbix server finds concierge-scale when it is not beside concierge-setup.
pub const FALLBACK_SCALE_COMMAND: &str = "/usr/local/bin/concierge-scale";
/// Where the retire script finds concierge-setup when this program's path is unknown.
pub const FALLBACK_SETUP_COMMAND: &str = "/usr/local/bin/concierge-setup";

const AFTER_HELP: &str = "\
Always: imports the templates Concierge heartbeat, Concierge app and Concierge service
(embedded in this binary, or read from --templates DIR) with configuration.import, in the
export format of the server's version (6.0 files; DIR/7.0/ ones from Zabbix 7.0 on).

With --service NAME, also (idempotently: found by name and updated, else created), in this order:
  host group    --group (Concierge/NAME, the containers)
  action        Concierge: register NAME (autoregistration on --metadata: add host, add to
                --group, link Concierge app). It comes first: Zabbix 7.0 ignores a host's
                identical re-announce for 120 s, so it must exist before a container announces.
  host group    Concierge/services
  host          --service-host (NAME-service), template Concierge service, with the macros
                {$SERVICE_HOSTGROUP} {$SERVICE_NAME} {$COMPOSE_FILE} {$COMPOSE_PROJECT}, and
                {$SCALE_MIN} {$SCALE_MAX} {$SCALE_STEP} {$SCALE_COOLDOWN} {$LOAD_HIGH}
                {$LOAD_LOW} {$AGGREGATE_INTERVAL} when given (others are left as they are),
                and {$SCALE_ESCALATE_AFTER}; with --scale-agent, that agent as its agent
                interface; with --autoreg-psk-*, it accepts values only over that PSK (the
                scripts and --timer use it)
  timers        --timer names sent to the host's LLD rule service.timers.discovery
  scripts       Concierge: scale up NAME / Concierge: scale down NAME (global scripts, one
                set per service): <scale-command> up|down ... with every macro quoted, run by
                the server, or with --scale-agent by that agent; Concierge: escalate NAME
                (up --step-times 2, unless --escalate-after 0) and Concierge: heal NAME (heal)
  actions       Concierge: scale up NAME / scale down NAME (the load triggers of the service
                host, outside maintenance; the command repeats every --repeat-every while the
                problem lasts; from --escalate-after on, scale-up runs the escalate script).
                Scale-up starts on load high or on load rising (the load's forecast reaches
                {$LOAD_HIGH} within {$LOAD_FORECAST_HORIZON}; with --load-forecast-window/
                -horizon, the host gets those macros too);
                Concierge: heal NAME (\"Container stopped\" or \"No heartbeat\" on a host of
                --group: heal on the service host, three times at most per problem; heal
                restores the last scaling's count, so a scale-down's stopped container stays)
  retiring      with --retire-token-file: script and action Concierge: retire NAME, on the
                heartbeat trigger tagged concierge.retire (no container.state for
                {$CONCIERGE.RETIRE_AFTER}) of hosts in --group: `concierge-setup retire`
                deletes the container's host where the scripts run
  upstream      with --upstream SERVICE: item service.upstream.p95 (SERVICE-service's highest
                timer p95) and trigger upstream slow on the service host; both scale-up
                triggers depend on it, so scale-up waits while the upstream is slow
                (above {$UPSTREAM_P95_HIGH}, set by --upstream-p95-high)

concierge-setup [API options] retire --trigger ID --group GROUP: delete the host of trigger ID
if it is in GROUP and the trigger is still a problem (what the retire action runs).

A Zabbix 7.0 server installed new refuses scripts of its own (EnableGlobalScripts=0): give
--scale-agent, or set EnableGlobalScripts=1 in zabbix_server.conf and restart the server.

stdout: one line per object, `created|updated|unchanged|deleted <kind> <name> (<id>)`.
stderr: one line per error. Exit status: 0 done, 1 failed (objects already reported stay).

Examples:
  # import (or update) the three templates through the frontend at localhost/zabbix
  concierge-setup --password zabbix
  # through another frontend, and wire compose service shop: host, autoregistration, scaling
  concierge-setup --api http://127.0.0.1:8088/api_jsonrpc.php --password zabbix --service shop --compose-file /srv/shop/docker-compose.yml --max 6 --cooldown 2m";

/// Command line of concierge-setup.
#[derive(Debug, Parser)]
#[command(
    name = TOOL,
    version = concierge_core::version::SHORT,
    long_version = concierge_core::version::LONG,
    about = "Import the Concierge templates into Zabbix 6.0 or 7.0 and wire a service: its host, \
             autoregistration, and the scale-up / scale-down / heal actions that run concierge-scale.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// The Zabbix API endpoint.
    #[arg(long, value_name = "URL", default_value = DEFAULT_API, help_heading = "Zabbix API")]
    pub api: String,

    /// API user (with --password).
    #[arg(
        long,
        value_name = "USER",
        default_value = "Admin",
        help_heading = "Zabbix API"
    )]
    pub user: String,

    /// API password.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "ZABBIX_PASSWORD",
        hide_env_values = true,
        conflicts_with = "token",
        help_heading = "Zabbix API"
    )]
    pub password: Option<String>,

    /// API token (Users > API tokens), instead of --user/--password.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "ZABBIX_API_TOKEN",
        hide_env_values = true,
        help_heading = "Zabbix API"
    )]
    pub token: Option<String>,

    /// Read the API password from the first line of FILE (keep it 0600), so it is never on a
    /// command line that `ps` shows. ZABBIX_PASSWORD does the same from the environment.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["token", "password"],
        help_heading = "Zabbix API"
    )]
    pub password_file: Option<PathBuf>,

    /// Read the API token from the first line of FILE (keep it 0600) instead of --token.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["token", "password", "password_file"],
        help_heading = "Zabbix API"
    )]
    pub token_file: Option<PathBuf>,

    /// Make autoregistration accept only TLS-PSK with this identity (a plain announce then
    /// registers nothing); the hosts it creates accept only that PSK. With
    /// --autoreg-psk-file.
    #[arg(
        long,
        value_name = "IDENTITY",
        requires = "autoreg_psk_file",
        help_heading = "Secure registration"
    )]
    pub autoreg_psk_identity: Option<String>,

    /// The autoregistration PSK: 32-512 hex digits on the first line of FILE (keep it 0600;
    /// the containers' --tls-psk-file holds the same key).
    #[arg(
        long,
        value_name = "FILE",
        requires = "autoreg_psk_identity",
        help_heading = "Secure registration"
    )]
    pub autoreg_psk_file: Option<PathBuf>,

    /// With --service: the same PSK file as the scripts' concierge-scale reads it where it runs
    /// (the Zabbix server, or the --scale-agent host, as their user, zabbix): the service host
    /// accepts only PSK, so the new count is pushed over PSK. Default: --autoreg-psk-file, made
    /// absolute.
    #[arg(
        long,
        value_name = "FILE",
        requires_all = ["autoreg_psk_identity", "service"],
        help_heading = "Secure registration"
    )]
    pub scale_psk_file: Option<PathBuf>,

    /// Time limit for each API call (configuration.import can take a few seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s",
          help_heading = "Zabbix API")]
    pub api_timeout: Duration,

    /// Read concierge_heartbeat.yaml, concierge_app.yaml and concierge_service.yaml from DIR
    /// instead of the copies embedded in this binary.
    #[arg(long, value_name = "DIR", help_heading = "Templates")]
    pub templates: Option<PathBuf>,

    /// The compose service to wire (its containers' host group, service host and actions).
    #[arg(
        long,
        value_name = "NAME",
        requires = "compose_file",
        help_heading = "Service"
    )]
    pub service: Option<String>,

    /// The service's compose file, as the Zabbix server sees it (made absolute).
    #[arg(
        long,
        value_name = "FILE",
        requires = "service",
        help_heading = "Service"
    )]
    pub compose_file: Option<PathBuf>,

    /// Compose project name. Default: the service NAME.
    #[arg(
        long,
        value_name = "NAME",
        requires = "service",
        help_heading = "Service"
    )]
    pub project: Option<String>,

    /// Host group of the service's containers. Default: Concierge/NAME.
    #[arg(
        long,
        value_name = "GROUP",
        requires = "service",
        help_heading = "Service"
    )]
    pub group: Option<String>,

    /// Technical name of the service host. Default: NAME-service.
    #[arg(
        long,
        value_name = "HOST",
        requires = "service",
        help_heading = "Service"
    )]
    pub service_host: Option<String>,

    /// Host metadata the containers register with (the autoregistration condition:
    /// "contains"). Default: "concierge service=NAME".
    #[arg(
        long,
        value_name = "TEXT",
        requires = "service",
        help_heading = "Service"
    )]
    pub metadata: Option<String>,

    /// Timer whose p95 the service host aggregates (repeatable).
    #[arg(
        long = "timer",
        value_name = "NAME",
        requires = "service",
        help_heading = "Service"
    )]
    pub timers: Vec<String>,

    /// {$SCALE_MIN}: never scale below this.
    #[arg(long, value_name = "N", allow_negative_numbers = true, requires = "service", help_heading = "Scaling policy (host macros)",
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_COUNT)))]
    pub min: Option<u32>,

    /// {$SCALE_MAX}: never scale above this.
    #[arg(long, value_name = "N", allow_negative_numbers = true, requires = "service", help_heading = "Scaling policy (host macros)",
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_COUNT)))]
    pub max: Option<u32>,

    /// {$SCALE_STEP}: containers added or removed per action.
    #[arg(long, value_name = "N", allow_negative_numbers = true, requires = "service", help_heading = "Scaling policy (host macros)",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_COUNT)))]
    pub step: Option<u32>,

    /// {$SCALE_COOLDOWN}: minimum time between two scalings (30s, 2m), as concierge-scale
    /// reads it.
    #[arg(
        long,
        value_name = "DURATION",
        requires = "service",
        help_heading = "Scaling policy (host macros)"
    )]
    pub cooldown: Option<String>,

    /// {$LOAD_HIGH}: average load above which the service scales up.
    #[arg(
        long,
        value_name = "X",
        requires = "service",
        allow_negative_numbers = true,
        help_heading = "Scaling policy (host macros)"
    )]
    pub load_high: Option<f64>,

    /// {$LOAD_LOW}: average load below which the service scales down.
    #[arg(
        long,
        value_name = "X",
        requires = "service",
        allow_negative_numbers = true,
        help_heading = "Scaling policy (host macros)"
    )]
    pub load_low: Option<f64>,

    /// {$AGGREGATE_INTERVAL}: how often the aggregates are calculated (Zabbix interval: 30s,
    /// 1m; 1s to 1d).
    #[arg(
        long,
        value_name = "INTERVAL",
        requires = "service",
        help_heading = "Scaling policy (host macros)"
    )]
    pub aggregate_interval: Option<String>,

    /// How often a scaling action repeats its command while the load problem lasts (the
    /// action's step duration: 60s to 7d).
    #[arg(
        long,
        value_name = "INTERVAL",
        default_value = "5m",
        requires = "service",
        help_heading = "Scaling policy (host macros)"
    )]
    pub repeat_every: String,

    /// {$SCALE_ESCALATE_AFTER}: while the load stays high this long, each scale-up step adds
    /// 2 x {$SCALE_STEP} (still bounded by --max); 0 never escalates. Rounded up to whole
    /// --repeat-every periods (the action's steps).
    #[arg(
        long,
        value_name = "INTERVAL",
        default_value = "10m",
        requires = "service",
        help_heading = "Scaling policy (host macros)"
    )]
    pub escalate_after: String,

    /// Run the scripts on the Zabbix agent at this address (the Docker host's; port 10050 unless
    /// given) instead of on the Zabbix server: the service host gets it as its agent interface.
    /// For servers that refuse global scripts (EnableGlobalScripts=0, the default of new Zabbix
    /// 7.0 installations) or that do not run beside the Docker engine. That agent must allow
    /// the server (Server=) and the command (AllowKey=system.run[*], or a pattern for it).
    #[arg(
        long,
        value_name = "HOST[:PORT]",
        requires = "service",
        help_heading = "Scripts (one pair per service)"
    )]
    pub scale_agent: Option<String>,

    /// concierge-scale where the scripts run, the Zabbix server or the --scale-agent host
    /// (written unquoted into the script: path characters only). Default: the concierge-scale
    /// beside this program (the package and `make install` put them together: /usr/bin,
    /// /usr/local/bin), else /usr/local/bin's.
    #[arg(
        long,
        value_name = "PATH",
        requires = "service",
        help_heading = "Scripts (one pair per service)"
    )]
    pub scale_command: Option<String>,

    /// concierge-scale's state directory where the scripts run; scale.log goes there too.
    #[arg(long, value_name = "DIR", default_value = STATE_DIR, requires = "service",
          help_heading = "Scripts (one pair per service)")]
    pub state_dir: String,

    /// Zabbix server or proxy trapper(s), as ServerActive: where --timer names go, and where
    /// concierge-scale pushes the new count.
    #[arg(
        short = 'z',
        long = "zabbix-server",
        value_name = "SERVER",
        default_value = "127.0.0.1",
        requires = "service",
        help_heading = "Scripts (one pair per service)"
    )]
    pub zabbix_server: String,

    /// Retire the hosts of containers gone for {$CONCIERGE.RETIRE_AFTER} (template macro, 10m):
    /// a script and an action "Concierge: retire NAME" run `concierge-setup retire` where the
    /// scale scripts run, which logs in with the API token in FILE (as that machine sees it,
    /// readable by the user running the scripts) and deletes the host.
    #[arg(
        long,
        value_name = "FILE",
        requires = "service",
        help_heading = "Retiring hosts"
    )]
    pub retire_token_file: Option<String>,

    /// The API endpoint as the retire script reaches it. Default: --api.
    #[arg(
        long,
        value_name = "URL",
        requires = "retire_token_file",
        help_heading = "Retiring hosts"
    )]
    pub retire_api: Option<String>,

    /// concierge-setup where the retire script runs. Default: this program's path.
    #[arg(
        long,
        value_name = "PATH",
        requires = "retire_token_file",
        help_heading = "Retiring hosts"
    )]
    pub retire_command: Option<String>,

    /// Predictive pre-scaling and the upstream check.
    #[command(flatten)]
    pub profile: crate::profile::ProfileArgs,

    /// What to do instead of configuring (the retire script's own command).
    #[command(subcommand)]
    pub command: Option<SubCommand>,
}

/// The subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SubCommand {
    /// Delete the host of a "Container gone ... retire its host" trigger, if that trigger is
    /// still a problem and the host is in --group (what the retire action runs).
    Retire {
        /// The trigger's id ({TRIGGER.ID} in the action's script).
        #[arg(long, value_name = "ID")]
        trigger: String,
        /// The service's container group: hosts elsewhere are never deleted.
        #[arg(long, value_name = "GROUP")]
        group: String,
    },
}

/// How to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `user.login` with a user name and password.
    Password {
        /// The user name.
        user: String,
        /// Its password.
        password: String,
    },
    /// An API token (or a session id) in every call.
    Token(String),
}

/// Where the three templates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    /// The copies built into the binary.
    Embedded,
    /// The files in this directory.
    Dir(PathBuf),
}

/// Everything the run does, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The API endpoint.
    pub api: String,
    /// Limit for each API call.
    pub api_timeout: Duration,
    /// How to log in.
    pub credentials: Credentials,
    /// Where the templates come from.
    pub templates: TemplateSource,
    /// The service to wire, if any.
    pub service: Option<ServicePlan>,
    /// Autoregistration only over TLS-PSK: the identity and the key in hex.
    pub autoreg_psk: Option<(String, String)>,
    /// The file that key came from (setup sends the timer list over PSK with it).
    pub autoreg_psk_file: Option<PathBuf>,
}

/// Where the scripts run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptRunner {
    /// On the Zabbix server (`execute_on` 1), for the trigger's host.
    Server,
    /// On the Zabbix agent of the service host's agent interface (`execute_on` 0).
    Agent(AgentInterface),
}

/// A Zabbix agent interface (`hostinterface` type 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInterface {
    /// An IP address (then `useip` is 1) or a DNS name.
    pub address: String,
    /// The agent's port.
    pub port: u16,
}

impl AgentInterface {
    /// The agent's default port.
    pub const DEFAULT_PORT: u16 = 10050;

    /// `HOST`, `HOST:PORT`, `[IPv6]:PORT` or a bare IPv6 address.
    pub fn parse(text: &str) -> Result<Self, UsageError> {
        let list = destination::parse_list(text, Self::DEFAULT_PORT)
            .map_err(|e| UsageError(format!("--scale-agent: {e}")))?;
        match list.as_slice() {
            [one] if one.nodes.len() == 1 => Ok(AgentInterface {
                address: one.nodes[0].host.clone(),
                port: one.nodes[0].port,
            }),
            _ => Err(UsageError(format!(
                "--scale-agent {text:?}: one agent address, not a list"
            ))),
        }
    }

    /// True when the address is an IP address (Zabbix's `useip`).
    pub fn is_ip(&self) -> bool {
        self.address.parse::<std::net::IpAddr>().is_ok()
    }
}

/// A service's objects, validated.
#[derive(Debug, Clone)]
pub struct ServicePlan {
    /// The compose service.
    pub name: String,
    /// The containers' host group.
    pub group: String,
    /// The service host's technical name.
    pub host: String,
    /// The autoregistration metadata ("contains").
    pub metadata: String,
    /// Host macros to set, in order: (`{$NAME}`, value).
    pub macros: Vec<(String, String)>,
    /// Timer names for the LLD rule, in order, without duplicates.
    pub timers: Vec<String>,
    /// The actions' step duration.
    pub repeat_every: String,
    /// The first step of the scale-up action that adds 2 x STEP (none: never).
    pub escalate_at: Option<u32>,
    /// What the scripts' command text is made of.
    pub script: ScriptSettings,
    /// Where the scripts run.
    pub runner: ScriptRunner,
    /// Where --timer names go.
    pub destinations: Vec<Destination>,
    /// The retire script's command text, when hosts are retired.
    pub retire: Option<RetireSettings>,
    /// The upstream service whose latency gates scale-up (--upstream).
    pub upstream: Option<crate::profile::Upstream>,
}

/// The concierge-scale in the directory of `exe`, if there is one there.
pub fn scale_command_beside(exe: &Path) -> Option<String> {
    let scale = exe.parent()?.join("concierge-scale");
    scale
        .is_file()
        .then(|| scale.to_str().map(str::to_string))?
}

/// The first line of a secret file, without its line end (at most 4 KiB are read).
fn read_first_line(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = Vec::new();
    std::fs::File::open(path)?
        .take(4096)
        .read_to_end(&mut text)?;
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line =
        String::from_utf8(line.to_vec()).map_err(|_| std::io::Error::other("not valid UTF-8"))?;
    if line.is_empty() {
        return Err(std::io::Error::other("empty first line"));
    }
    Ok(line)
}

impl Cli {
    /// Check every value and build the plan; nothing is sent anywhere yet.
    pub fn plan(&self) -> Result<Plan, UsageError> {
        let credentials = self.credentials()?;
        check::api_url(&self.api)?;
        let templates = match &self.templates {
            Some(dir) => TemplateSource::Dir(dir.clone()),
            None => TemplateSource::Embedded,
        };
        let autoreg_psk = match (&self.autoreg_psk_identity, &self.autoreg_psk_file) {
            (Some(identity), Some(file)) => {
                if identity.is_empty() || identity.len() > 128 {
                    return Err(UsageError(
                        "--autoreg-psk-identity must be 1-128 bytes".into(),
                    ));
                }
                let key = concierge_core::tls::read_psk(file)
                    .map_err(|e| UsageError(format!("--autoreg-psk-file: {e}")))?;
                let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                Some((identity.clone(), hex))
            }
            _ => None,
        };
        let service = self
            .service
            .as_deref()
            .map(|name| self.service_plan(name))
            .transpose()?;
        Ok(Plan {
            api: self.api.clone(),
            api_timeout: self.api_timeout,
            credentials,
            templates,
            service,
            autoreg_psk,
            autoreg_psk_file: self.autoreg_psk_file.clone(),
        })
    }

    /// How to log in, from the options and secret files.
    pub fn credentials(&self) -> Result<Credentials, UsageError> {
        if let Some(path) = &self.token_file {
            let token = read_first_line(path)
                .map_err(|e| UsageError(format!("--token-file {}: {e}", path.display())))?;
            return Ok(Credentials::Token(token));
        }
        let from_file = match &self.password_file {
            Some(path) => Some(
                read_first_line(path)
                    .map_err(|e| UsageError(format!("--password-file {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let credentials = match (&self.token, from_file.as_ref().or(self.password.as_ref())) {
            (Some(t), _) if !t.is_empty() => Credentials::Token(t.clone()),
            (_, Some(p)) => Credentials::Password {
                user: self.user.clone(),
                password: p.clone(),
            },
            _ => {
                return Err(UsageError(
                    "no credentials: give --password (or ZABBIX_PASSWORD) or --token (or \
                     ZABBIX_API_TOKEN)"
                        .into(),
                ))
            }
        };
        Ok(credentials)
    }

    fn service_plan(&self, name: &str) -> Result<ServicePlan, UsageError> {
        check::service_name(name)?;
        let group = self
            .group
            .clone()
            .unwrap_or_else(|| format!("Concierge/{name}"));
        check::group_name(&group)?;
        let host = self
            .service_host
            .clone()
            .unwrap_or_else(|| format!("{name}-service"));
        if !system::is_valid_host_name(&host) {
            return Err(UsageError(format!(
                "invalid service host name {host:?}: 1-128 characters of 0-9 A-Z a-z space . _ -"
            )));
        }
        let metadata = self
            .metadata
            .clone()
            .unwrap_or_else(|| format!("concierge service={name}"));
        check::metadata(&metadata)?;
        let project = self.project.clone().unwrap_or_else(|| name.to_string());
        check::project_name(&project)?;
        let compose_file = compose_file(self.compose_file.as_deref())?;

        let mut macros = vec![
            ("{$SERVICE_HOSTGROUP}".to_string(), group.clone()),
            ("{$SERVICE_NAME}".to_string(), name.to_string()),
            ("{$COMPOSE_FILE}".to_string(), compose_file),
            ("{$COMPOSE_PROJECT}".to_string(), project),
        ];
        macros.extend(self.policy_macros()?);
        macros.extend(self.profile.macros()?);
        let upstream = self.profile.upstream(name)?;
        let repeat_every = check::interval("--repeat-every", &self.repeat_every, 60, 604_800)?;
        let escalate_after = check::interval("--escalate-after", &self.escalate_after, 0, 604_800)?;
        let escalate_at = crate::escalation::first_step(
            check::seconds(&escalate_after).unwrap_or(0),
            check::seconds(&repeat_every).unwrap_or(60),
        );
        macros.push(("{$SCALE_ESCALATE_AFTER}".to_string(), escalate_after));
        let mut timers: Vec<String> = Vec::new();
        for t in &self.timers {
            check::timer_name(t)?;
            if !timers.contains(t) {
                timers.push(t.clone());
            }
        }

        let scale_command = match &self.scale_command {
            Some(c) => c.clone(),
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| scale_command_beside(&exe))
                .unwrap_or_else(|| FALLBACK_SCALE_COMMAND.to_string()),
        };
        let mut script = ScriptSettings::new(&scale_command, &self.state_dir, &self.zabbix_server)?;
        if let (Some(identity), Some(file)) = (&self.autoreg_psk_identity, &self.autoreg_psk_file) {
            let file = self.scale_psk_file.as_deref().unwrap_or(file);
            let abs = std::path::absolute(file).map_err(|e| {
                UsageError(format!(
                    "--scale-psk-file {}: cannot make it absolute: {e}",
                    file.display()
                ))
            })?;
            let text = abs.to_str().ok_or_else(|| {
                UsageError(format!(
                    "--scale-psk-file {}: not valid UTF-8",
                    abs.display()
                ))
            })?;
            script = script.with_psk(identity, text)?;
        }
        let runner = match &self.scale_agent {
            Some(a) => ScriptRunner::Agent(AgentInterface::parse(a)?),
            None => ScriptRunner::Server,
        };
        let destinations = destination::parse_list(&self.zabbix_server, destination::DEFAULT_PORT)
            .map_err(|e| UsageError(format!("--zabbix-server: {e}")))?;
        let retire = match &self.retire_token_file {
            Some(token_file) => {
                let command = match &self.retire_command {
                    Some(c) => c.clone(),
                    None => std::env::current_exe()
                        .ok()
                        .and_then(|p| p.to_str().map(str::to_string))
                        .unwrap_or_else(|| FALLBACK_SETUP_COMMAND.to_string()),
                };
                let api = self.retire_api.as_deref().unwrap_or(&self.api);
                check::api_url(api)?;
                Some(RetireSettings::new(&command, api, token_file, &group)?)
            }
            None => None,
        };
        Ok(ServicePlan {
            retire,
            name: name.to_string(),
            group,
            host,
            metadata,
            macros,
            timers,
            repeat_every,
            escalate_at,
            script,
            runner,
            destinations,
            upstream,
        })
    }

    /// The scaling policy's macros, for the options given (others are left as they are on
    /// the host), checked against each other.
    fn policy_macros(&self) -> Result<Vec<(String, String)>, UsageError> {
        if let (Some(min), Some(max)) = (self.min, self.max) {
            if min > max {
                return Err(UsageError(format!("--min {min} is above --max {max}")));
            }
        }
        if let (Some(h), Some(l)) = (self.load_high, self.load_low) {
            if l >= h {
                return Err(UsageError(format!(
                    "--load-low {l} must be below --load-high {h}, or the service would scale up and down in turn"
                )));
            }
        }
        let number = |n: Option<u32>| n.map(|n| n.to_string());
        let load = |what, x: Option<f64>| x.map(|x| check::load(what, x)).transpose();
        let interval = self
            .aggregate_interval
            .as_deref()
            .map(|t| check::interval("--aggregate-interval", t, 1, 86_400))
            .transpose()?;
        let given = [
            ("{$SCALE_MIN}", number(self.min)),
            ("{$SCALE_MAX}", number(self.max)),
            ("{$SCALE_STEP}", number(self.step)),
            (
                "{$SCALE_COOLDOWN}",
                self.cooldown.as_deref().map(check::cooldown).transpose()?,
            ),
            ("{$LOAD_HIGH}", load("--load-high", self.load_high)?),
            ("{$LOAD_LOW}", load("--load-low", self.load_low)?),
            ("{$AGGREGATE_INTERVAL}", interval),
        ];
        Ok(given
            .into_iter()
            .filter_map(|(m, v)| v.map(|v| (m.to_string(), v)))
            .collect())
    }
}

/// The compose file as an absolute, shell-safe path.
fn compose_file(path: Option<&Path>) -> Result<String, UsageError> {
    let path = path.ok_or_else(|| UsageError("--service needs --compose-file".into()))?;
    if path.as_os_str().is_empty() {
        return Err(UsageError("--compose-file is empty".into()));
    }
    let abs = std::path::absolute(path).map_err(|e| {
        UsageError(format!(
            "--compose-file {}: cannot make it absolute: {e}",
            path.display()
        ))
    })?;
    let text = abs
        .to_str()
        .ok_or_else(|| UsageError(format!("--compose-file {}: not valid UTF-8", abs.display())))?;
    check::macro_value("--compose-file", text)?;
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_command_is_the_one_beside_setup_when_there_is_one() {
        let dir = std::env::temp_dir().join(format!("concierge-beside-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let setup = dir.join("concierge-setup");
        assert_eq!(scale_command_beside(&setup), None);
        std::fs::write(dir.join("concierge-scale"), "").unwrap();
        assert_eq!(
            scale_command_beside(&setup).as_deref(),
            dir.join("concierge-scale").to_str()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn retire_is_a_subcommand_with_a_token_file_and_wiring_it_needs_a_service() {
        use clap::Parser;
        let dir = std::env::temp_dir().join(format!("concierge-retire-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "abc123\n").unwrap();
        let cli = Cli::try_parse_from([
            "concierge-setup",
            "--token-file",
            token.to_str().unwrap(),
            "retire",
            "--trigger",
            "42",
            "--group",
            "Concierge/web",
        ])
        .unwrap();
        assert_eq!(
            cli.credentials().unwrap(),
            Credentials::Token("abc123".into())
        );
        assert!(matches!(
            cli.command,
            Some(SubCommand::Retire { ref trigger, ref group })
                if trigger == "42" && group == "Concierge/web"
        ));
        // The retire action belongs to a service.
        assert!(Cli::try_parse_from(["concierge-setup", "--retire-token-file", "/t"]).is_err());
        let plan = Cli::try_parse_from([
            "concierge-setup",
            "--password",
            "p",
            "--service",
            "web",
            "--compose-file",
            "/srv/web.yml",
            "--retire-token-file",
            "/etc/concierge/api.token",
            "--retire-command",
            "/usr/bin/concierge-setup",
        ])
        .unwrap()
        .plan()
        .unwrap();
        let retire = plan.service.unwrap().retire.unwrap().command();
        assert!(
            retire.starts_with("/usr/bin/concierge-setup --api \"http://localhost/zabbix/"),
            "{retire}"
        );
        assert!(retire.ends_with("--group \"Concierge/web\""), "{retire}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn escalation_starts_at_the_step_after_the_delay() {
        use clap::Parser;
        let plan = |extra: &[&str]| {
            let mut argv = vec![
                "concierge-setup",
                "--password",
                "p",
                "--service",
                "web",
                "--compose-file",
                "/srv/web/docker-compose.yml",
                "--repeat-every",
                "60s",
            ];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).unwrap().plan()
        };
        let svc = |extra: &[&str]| plan(extra).unwrap().service.unwrap();
        let s = svc(&[]);
        assert_eq!(s.escalate_at, Some(11), "10m by default: step 11 at 10 min");
        assert!(s
            .macros
            .contains(&("{$SCALE_ESCALATE_AFTER}".to_string(), "10m".to_string())));
        assert_eq!(svc(&["--escalate-after", "2m"]).escalate_at, Some(3));
        assert_eq!(svc(&["--escalate-after", "90s"]).escalate_at, Some(3));
        assert_eq!(svc(&["--escalate-after", "0"]).escalate_at, None);
        let e = plan(&["--escalate-after", "soon"]).unwrap_err().to_string();
        assert!(e.contains("--escalate-after"), "{e}");
    }

    #[test]
    fn secrets_come_from_files_and_a_bad_psk_file_is_named() {
        use clap::Parser;
        let dir = std::env::temp_dir().join(format!("concierge-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "s3cret\nignored\n").unwrap();
        let psk = dir.join("psk");
        std::fs::write(&psk, format!("{}\n", "AB".repeat(16))).unwrap();
        let (pw_s, psk_s) = (pw.to_str().unwrap(), psk.to_str().unwrap());
        let cli = Cli::try_parse_from([
            "concierge-setup",
            "--password-file",
            pw_s,
            "--autoreg-psk-identity",
            "fleet",
            "--autoreg-psk-file",
            psk_s,
        ])
        .unwrap();
        let plan = cli.plan().unwrap();
        assert_eq!(
            plan.credentials,
            Credentials::Password {
                user: "Admin".into(),
                password: "s3cret".into()
            }
        );
        assert_eq!(
            plan.autoreg_psk,
            Some(("fleet".to_string(), "ab".repeat(16)))
        );
        std::fs::write(&psk, "xyz\n").unwrap();
        let e = cli.plan().unwrap_err();
        assert!(e.0.starts_with("--autoreg-psk-file: TLS: PSK file"), "{e}");
        // The identity needs its key file.
        assert!(Cli::try_parse_from(["concierge-setup", "--autoreg-psk-identity", "x"]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
