//! The command line: clap's definition, and the request it stands for once validated (before
//! any engine or file is touched).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use concierge_core::cli::{parse_duration, ConnectionArgs};
use concierge_core::outcome::UsageError;
use concierge_core::zabbix::destination::DEFAULT_PORT;

use crate::engine::compose::{self, Compose, Project};
use crate::engine::kubectl::Kubectl;
use crate::engine::swarm::Swarm;
use crate::engine::{DockerOptions, Engine, EngineKind, Runner};
use crate::plan::{Action, Bounds};
use crate::{state, DEFAULT_MAX, MAX_COUNT, STATE_DIR_ENV, TOOL};

const AFTER_HELP: &str = "\
Positional numbers follow the talk's scheduler (action, service, current scale, increment):
  up|down SERVICE [CURRENT [STEP]]    STEP defaults to 1
  to SERVICE [CURRENT] TARGET         with one number, it is the TARGET
CURRENT (e.g. a Zabbix macro) is only a hint: the count is read from the engine, and CURRENT
is used only when the engine cannot be asked (a mismatch is logged). '-' or '' means none.
Put -- before the positionals when they come from macros: `concierge-scale [OPTIONS] up -- web 3`.

Bounds: up never lowers the count, down never raises it; a clamp that leaves the count where
it is, is a deliberate no-op. --max defaults to 10.

stdout: the service's count after the call, one line (nothing on failure).
Exit status:
  0  scaled, or a deliberate no-op (clamped, already there, cooldown, dry run)
  1  nothing was scaled: invalid arguments, unusable state dir or log, lock wait exceeded,
     or the engine failed (its stderr is passed through, then a one-line summary)
  2  scaled, but recording it failed: the Zabbix push, the state or the event log (the
     count is still printed)

Option names: engine options are docker-compose's (-f, -p, -H); the Zabbix connection takes
zabbix_sender's -z, -s, -c, -I, with --zabbix-port and --zabbix-timeout spelled out because
-p is the compose project and -t would read as a compose timeout.

Files: <state-dir>/<engine>.<project|namespace|%>.<service>.lock (flock) and .state (last
scaling, for --cooldown); events in <state-dir>/scale-events.jsonl unless --event-log.
State dir: --state-dir, else $CONCIERGE_STATE_DIR, else /var/lib/concierge.";

/// Command line of concierge-scale.
#[derive(Debug, Parser)]
#[command(
    name = TOOL,
    version,
    about = "Scale a compose, swarm or Kubernetes service from a Zabbix action: \
             bounded, locked, with cooldown, dry run and an event log.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// up: add STEP; down: remove STEP; to: go to TARGET.
    #[arg(value_enum)]
    pub action: Action,

    /// The service: compose or swarm service name, or for kubectl NAME (a Deployment) or
    /// TYPE/NAME.
    #[arg(allow_hyphen_values = true)]
    pub service: String,

    /// The count the caller believes current; used only when the engine cannot be asked.
    #[arg(value_name = "CURRENT", allow_hyphen_values = true)]
    pub current: Option<String>,

    /// up/down: how many to add or remove (default 1); to: the target count.
    #[arg(value_name = "STEP|TARGET", allow_hyphen_values = true)]
    pub amount: Option<String>,

    /// The engine: compose (v2 if `docker compose version` answers, else docker-compose v1),
    /// compose-v1, compose-v2, swarm or kubectl.
    #[arg(long, value_enum, default_value = "compose", help_heading = "Engine")]
    pub engine: EngineKind,

    /// Compose file (repeatable, in order).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        help_heading = "Engine"
    )]
    pub files: Vec<PathBuf>,

    /// Compose project name.
    #[arg(
        short = 'p',
        long = "project-name",
        value_name = "NAME",
        help_heading = "Engine"
    )]
    pub project_name: Option<String>,

    /// Docker daemon socket, as DOCKER_HOST (unix:///var/run/docker.sock, tcp://…:2376).
    #[arg(
        short = 'H',
        long = "host",
        value_name = "DOCKER_HOST",
        help_heading = "Engine"
    )]
    pub docker_host: Option<String>,

    /// Use TLS and verify the daemon (docker --tlsverify).
    #[arg(long, help_heading = "Engine")]
    pub tlsverify: bool,

    /// Directory with ca.pem, cert.pem and key.pem (as DOCKER_CERT_PATH), passed as
    /// --tlscacert, --tlscert and --tlskey.
    #[arg(long, value_name = "DIR", help_heading = "Engine")]
    pub tlscert_path: Option<PathBuf>,

    /// kubectl (or docker) context.
    #[arg(long, value_name = "NAME", help_heading = "Engine")]
    pub context: Option<String>,

    /// kubectl namespace.
    #[arg(short = 'n', long, value_name = "NAMESPACE", help_heading = "Engine")]
    pub namespace: Option<String>,

    /// kubectl configuration file.
    #[arg(long, value_name = "FILE", help_heading = "Engine")]
    pub kubeconfig: Option<PathBuf>,

    /// The docker program.
    #[arg(
        long,
        value_name = "PROGRAM",
        default_value = "docker",
        help_heading = "Engine"
    )]
    pub docker: PathBuf,

    /// The docker-compose (v1) program.
    #[arg(
        long,
        value_name = "PROGRAM",
        default_value = "docker-compose",
        help_heading = "Engine"
    )]
    pub docker_compose: PathBuf,

    /// The kubectl program.
    #[arg(
        long,
        value_name = "PROGRAM",
        default_value = "kubectl",
        help_heading = "Engine"
    )]
    pub kubectl: PathBuf,

    /// Limit for each engine command (then it is killed), and for waiting on another call's
    /// lock.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s", help_heading = "Engine")]
    pub engine_timeout: Duration,

    /// Lowest count.
    #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_COUNT)), help_heading = "Policy")]
    pub min: u32,

    /// Highest count.
    #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = DEFAULT_MAX, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_COUNT)), help_heading = "Policy")]
    pub max: u32,

    /// After a scaling, refuse to scale this service again for this long (30s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Policy")]
    pub cooldown: Option<Duration>,

    /// Decide and log, but change nothing (no scaling, no state, no Zabbix push).
    #[arg(long, help_heading = "Policy")]
    pub dry_run: bool,

    /// Why (e.g. the trigger name); logged. Default: the action and its number.
    #[arg(long, value_name = "TEXT", help_heading = "Policy")]
    pub reason: Option<String>,

    /// Directory for locks and cooldown state (default: $CONCIERGE_STATE_DIR, else
    /// /var/lib/concierge).
    #[arg(long, value_name = "DIR", help_heading = "Records")]
    pub state_dir: Option<PathBuf>,

    /// JSON-lines event log, appended (default: <state-dir>/scale-events.jsonl).
    #[arg(long, value_name = "FILE", help_heading = "Records")]
    pub event_log: Option<PathBuf>,

    /// Append the human line ("<date>: Scaled X from A to B") here instead of stderr.
    #[arg(long, value_name = "FILE", help_heading = "Records")]
    pub human_log: Option<PathBuf>,

    /// Show engine commands and their stderr.
    #[arg(short = 'v', long, help_heading = "Records")]
    pub verbose: bool,

    #[command(flatten)]
    pub zabbix: ZabbixArgs,
}

/// The Zabbix connection, as concierge-core's `ConnectionArgs` with the names that would
/// clash with compose's spelled out.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Zabbix (push the new count after a scaling)")]
pub struct ZabbixArgs {
    /// Trapper item that receives the new count.
    #[arg(long, value_name = "KEY")]
    pub zabbix_item: Option<String>,

    /// Zabbix server or proxy, host[:port] (as zabbix_sender -z; repeatable).
    #[arg(
        short = 'z',
        long = "zabbix-server",
        value_name = "SERVER",
        requires = "zabbix_item"
    )]
    pub servers: Vec<String>,

    /// Port for -z entries that name none.
    #[arg(long = "zabbix-port", value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Zabbix host name (default: Hostname from -c, else the system host name).
    #[arg(
        short = 's',
        long = "zabbix-host",
        value_name = "HOST",
        requires = "zabbix_item"
    )]
    pub host: Option<String>,

    /// Zabbix agent configuration (ServerActive, Hostname, SourceIP, Timeout).
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        requires = "zabbix_item"
    )]
    pub config: Option<PathBuf>,

    /// Local address to connect from.
    #[arg(
        short = 'I',
        long = "source-address",
        value_name = "IP",
        requires = "zabbix_item"
    )]
    pub source_address: Option<String>,

    /// Time limit for the push (default: the agent's Timeout minus 0.5 s).
    #[arg(long = "zabbix-timeout", value_name = "DURATION", value_parser = parse_duration, requires = "zabbix_item")]
    pub timeout: Option<Duration>,
}

impl ZabbixArgs {
    /// The shared connection arguments.
    pub fn connection_args(&self) -> ConnectionArgs {
        ConnectionArgs {
            config: self.config.clone(),
            servers: self.servers.clone(),
            port: self.port,
            host: self.host.clone(),
            source_address: self.source_address.clone(),
            timeout: self.timeout,
            compress: false,
        }
    }
}

/// The request, validated: nothing here has touched an engine or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub action: Action,
    pub service: String,
    /// CURRENT, if given.
    pub hint: Option<u32>,
    /// STEP (up/down) or TARGET (to).
    pub amount: u32,
    pub bounds: Bounds,
}

/// Parse a count argument: a whole number 0..=MAX_COUNT (Zabbix may write a float item's
/// value as `3.0000`, accepted as 3).
pub fn parse_count_arg(what: &str, text: &str) -> Result<u32, UsageError> {
    let t = text.trim();
    let whole = match t.split_once('.') {
        Some((w, frac)) if !frac.is_empty() && frac.bytes().all(|b| b == b'0') => w,
        Some(_) => return Err(UsageError(format!("{what} {text:?} is not a whole number"))),
        None => t,
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        let why = if whole.starts_with('-') {
            "must not be negative"
        } else {
            "is not a whole number"
        };
        return Err(UsageError(format!("{what} {text:?} {why}")));
    }
    match whole.parse::<u32>() {
        Ok(n) if n <= MAX_COUNT => Ok(n),
        _ => Err(UsageError(format!(
            "{what} {text:?} is too large (at most {MAX_COUNT})"
        ))),
    }
}

impl Request {
    /// Validate the positionals and the bounds.
    pub fn from_cli(cli: &Cli) -> Result<Self, UsageError> {
        cli.engine
            .validate_service(&cli.service)
            .map_err(|e| UsageError(e.to_string()))?;
        if cli.min > cli.max {
            return Err(UsageError(format!(
                "--min {} is above --max {}",
                cli.min, cli.max
            )));
        }
        // No hint: empty, "-", or Zabbix's *UNKNOWN* (an expression macro such as
        // {?last(...)} over an item that has no value yet).
        let given = |s: &Option<String>| {
            s.as_deref()
                .filter(|t| !matches!(t.trim(), "" | "-" | "*UNKNOWN*"))
                .map(str::to_string)
        };
        let (hint, amount) = match (cli.action, given(&cli.current), cli.amount.as_deref()) {
            // `to web 5`: one number is the target.
            (Action::To, Some(target), None) => (None, target),
            (Action::To, _, None) => {
                return Err(UsageError(
                    "to needs a TARGET: to SERVICE [CURRENT] TARGET".into(),
                ))
            }
            (_, current, amount) => (current, amount.unwrap_or("1").to_string()),
        };
        let hint = hint.map(|h| parse_count_arg("CURRENT", &h)).transpose()?;
        let amount = match cli.action {
            Action::To => parse_count_arg("TARGET", &amount)?,
            _ => {
                let step = parse_count_arg("STEP", &amount)?;
                if step == 0 {
                    return Err(UsageError("STEP must be at least 1".into()));
                }
                step
            }
        };
        Ok(Self {
            action: cli.action,
            service: cli.service.clone(),
            hint,
            amount,
            bounds: Bounds {
                min: cli.min,
                max: cli.max,
            },
        })
    }
}

impl Cli {
    /// The state directory: --state-dir, else $CONCIERGE_STATE_DIR, else the default.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .or_else(|| {
                std::env::var_os(STATE_DIR_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(state::DEFAULT_DIR))
    }

    fn docker_options(&self) -> DockerOptions {
        DockerOptions {
            docker: self.docker.clone().into_os_string(),
            compose_v1: self.docker_compose.clone().into_os_string(),
            host: self.docker_host.clone(),
            context: self.context.clone(),
            tlsverify: self.tlsverify,
            cert_path: self.tlscert_path.clone(),
        }
    }

    /// The scope of the state key: the compose project or the kubectl namespace.
    pub fn scope(&self) -> Option<&str> {
        match self.engine {
            EngineKind::Kubectl => self.namespace.as_deref(),
            EngineKind::Swarm => None,
            _ => self.project_name.as_deref(),
        }
    }

    /// Build the engine (for `compose`, this asks `docker compose version`).
    pub fn engine(&self, runner: &dyn Runner) -> Box<dyn Engine> {
        let docker = self.docker_options();
        let project = Project {
            files: self.files.clone(),
            name: self.project_name.clone(),
        };
        let compose_with = |version| {
            Box::new(Compose {
                version,
                docker: docker.clone(),
                project: project.clone(),
            }) as Box<dyn Engine>
        };
        match self.engine {
            EngineKind::Compose => compose_with(compose::detect(runner, &docker)),
            EngineKind::ComposeV1 => compose_with(compose::Version::V1),
            EngineKind::ComposeV2 => compose_with(compose::Version::V2),
            EngineKind::Swarm => Box::new(Swarm {
                docker: docker.clone(),
            }),
            EngineKind::Kubectl => Box::new(Kubectl {
                kubectl: self.kubectl.clone().into_os_string(),
                kubeconfig: self.kubeconfig.clone(),
                context: self.context.clone(),
                namespace: self.namespace.clone(),
            }),
        }
    }

    /// Engine options that do not belong to the chosen engine, or files that are missing.
    pub fn check_engine_options(&self) -> Result<(), UsageError> {
        let kube = self.engine == EngineKind::Kubectl;
        let compose = !kube && self.engine != EngineKind::Swarm;
        let misplaced = [
            (!compose && !self.files.is_empty(), "--file"),
            (!compose && self.project_name.is_some(), "--project-name"),
            (kube && self.docker_host.is_some(), "--host"),
            (kube && self.tlsverify, "--tlsverify"),
            (kube && self.tlscert_path.is_some(), "--tlscert-path"),
            (!kube && self.namespace.is_some(), "--namespace"),
            (!kube && self.kubeconfig.is_some(), "--kubeconfig"),
        ];
        if let Some((_, flag)) = misplaced.iter().find(|(bad, _)| *bad) {
            return Err(UsageError(format!(
                "{flag} does not apply to --engine {}",
                self.engine_name()
            )));
        }
        if let Some(name) = &self.project_name {
            compose::validate_service(name)
                .map_err(|e| UsageError(format!("invalid project name {name:?}: {}", e.reason)))?;
        }
        if let Some(dir) = &self.tlscert_path {
            for f in ["ca.pem", "cert.pem", "key.pem"] {
                if !dir.join(f).is_file() {
                    return Err(UsageError(format!(
                        "--tlscert-path {}: no {f} there",
                        dir.display()
                    )));
                }
            }
        }
        Ok(())
    }

    fn engine_name(&self) -> &'static str {
        match self.engine {
            EngineKind::Compose => "compose",
            EngineKind::ComposeV1 => "compose-v1",
            EngineKind::ComposeV2 => "compose-v2",
            EngineKind::Swarm => "swarm",
            EngineKind::Kubectl => "kubectl",
        }
    }
}
