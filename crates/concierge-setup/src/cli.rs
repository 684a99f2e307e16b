//! The command line, and the plan it stands for once every value is checked locally (before
//! any request reaches Zabbix).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use concierge_core::cli::parse_duration;
use concierge_core::outcome::UsageError;
use concierge_core::system;
use concierge_core::zabbix::destination::{self, Destination};

use crate::check;
use crate::command::ScriptSettings;
use crate::TOOL;

/// The API endpoint when `--api` is not given (the frontend's usual place).
pub const DEFAULT_API: &str = "http://localhost/zabbix/api_jsonrpc.php";
/// Where the Zabbix server finds concierge-scale.
pub const DEFAULT_SCALE_COMMAND: &str = "/usr/local/bin/concierge-scale";
/// concierge-scale's state directory (locks, cooldown state, logs).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/concierge";
/// Largest count, step or bound accepted (concierge-scale's own limit).
pub const MAX_COUNT: u32 = 1_000_000;

const AFTER_HELP: &str = "\
Always: imports the templates Concierge heartbeat, Concierge app and Concierge service
(embedded in this binary, or read from --templates DIR) with configuration.import.

With --service NAME, also (idempotently: found by name and updated, else created):
  host groups   --group (Concierge/NAME, the containers) and Concierge/services
  host          --service-host (NAME-service), template Concierge service, with the macros
                {$SERVICE_HOSTGROUP} {$SERVICE_NAME} {$COMPOSE_FILE} {$COMPOSE_PROJECT}, and
                {$SCALE_MIN} {$SCALE_MAX} {$SCALE_STEP} {$SCALE_COOLDOWN} {$LOAD_HIGH}
                {$LOAD_LOW} {$AGGREGATE_INTERVAL} when given (others are left as they are)
  timers        --timer names sent to the host's LLD rule service.timers.discovery
  scripts       Concierge: scale up NAME / Concierge: scale down NAME (global scripts, one
                pair per service), run by the server: <scale-command> up|down ... with every
                macro quoted
  actions       Concierge: register NAME (autoregistration on --metadata: add host, add
                to --group, link Concierge app), Concierge: scale up NAME / scale down NAME
                (the load triggers of the service host, outside maintenance; the command
                repeats every --repeat-every while the problem lasts)

stdout: one line per object, `created|updated|unchanged <kind> <name> (<id>)`.
stderr: one line per error. Exit status: 0 done, 1 failed (objects already reported stay).";

/// Command line of concierge-setup.
#[derive(Debug, Parser)]
#[command(
    name = TOOL,
    version,
    about = "Import the Concierge templates into Zabbix 6.0 and wire a service: its host, \
             autoregistration, and the scale-up / scale-down actions that run concierge-scale.",
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

    /// concierge-scale on the Zabbix server (written unquoted into the script: path
    /// characters only).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SCALE_COMMAND, requires = "service",
          help_heading = "Scripts (one pair per service)")]
    pub scale_command: String,

    /// concierge-scale's state directory on the Zabbix server; scale.log goes there too.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR, requires = "service",
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
    /// What the scripts' command text is made of.
    pub script: ScriptSettings,
    /// Where --timer names go.
    pub destinations: Vec<Destination>,
}

impl Cli {
    /// Check every value and build the plan; nothing is sent anywhere yet.
    pub fn plan(&self) -> Result<Plan, UsageError> {
        let credentials = match (&self.token, &self.password) {
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
        check::api_url(&self.api)?;
        let templates = match &self.templates {
            Some(dir) => TemplateSource::Dir(dir.clone()),
            None => TemplateSource::Embedded,
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
        })
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
        let mut optional = |m: &str, v: Option<String>| {
            if let Some(v) = v {
                macros.push((m.to_string(), v));
            }
        };
        if let (Some(min), Some(max)) = (self.min, self.max) {
            if min > max {
                return Err(UsageError(format!("--min {min} is above --max {max}")));
            }
        }
        optional("{$SCALE_MIN}", self.min.map(|n| n.to_string()));
        optional("{$SCALE_MAX}", self.max.map(|n| n.to_string()));
        optional("{$SCALE_STEP}", self.step.map(|n| n.to_string()));
        let cooldown = self.cooldown.as_deref().map(check::cooldown).transpose()?;
        optional("{$SCALE_COOLDOWN}", cooldown);
        let high = self
            .load_high
            .map(|x| check::load("--load-high", x))
            .transpose()?;
        let low = self
            .load_low
            .map(|x| check::load("--load-low", x))
            .transpose()?;
        if let (Some(h), Some(l)) = (self.load_high, self.load_low) {
            if l >= h {
                return Err(UsageError(format!(
                    "--load-low {l} must be below --load-high {h}, or the service would scale up and down in turn"
                )));
            }
        }
        optional("{$LOAD_HIGH}", high);
        optional("{$LOAD_LOW}", low);
        let interval = self
            .aggregate_interval
            .as_deref()
            .map(|t| check::interval("--aggregate-interval", t, 1, 86_400))
            .transpose()?;
        optional("{$AGGREGATE_INTERVAL}", interval);
        let repeat_every = check::interval("--repeat-every", &self.repeat_every, 60, 604_800)?;

        let mut timers: Vec<String> = Vec::new();
        for t in &self.timers {
            check::timer_name(t)?;
            if !timers.contains(t) {
                timers.push(t.clone());
            }
        }

        let script =
            ScriptSettings::new(&self.scale_command, &self.state_dir, &self.zabbix_server)?;
        let destinations = destination::parse_list(&self.zabbix_server, destination::DEFAULT_PORT)
            .map_err(|e| UsageError(format!("--zabbix-server: {e}")))?;
        Ok(ServicePlan {
            name: name.to_string(),
            group,
            host,
            metadata,
            macros,
            timers,
            repeat_every,
            script,
            destinations,
        })
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
