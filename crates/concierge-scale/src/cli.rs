//! The command line: clap's definition, and the request it stands for once validated (before
//! any engine or file is touched).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use concierge_core::cli::{parse_duration, ConnectionArgs};
use concierge_core::outcome::UsageError;
use concierge_core::scaling::{MAX_COUNT, STATE_DIR, STATE_DIR_ENV};
use concierge_core::text::shown;

use crate::engine::compose::{self, Compose, Project};
use crate::engine::kubectl::Kubectl;
use crate::engine::swarm::Swarm;
use crate::engine::{DockerOptions, Engine, EngineKind, Runner};
use crate::plan::{Action, Bounds};
use crate::resize::ResizeArgs;
use crate::{DEFAULT_MAX, TOOL};

const AFTER_HELP: &str = "\
Positional numbers follow the talk's scheduler (action, service, current scale, increment):
  up|down SERVICE [CURRENT [STEP]]    STEP defaults to 1
  to SERVICE [CURRENT] TARGET         with one number, it is the TARGET
  heal SERVICE [CURRENT]              back up to the count the last scaling decided
CURRENT (e.g. a Zabbix macro) is only a hint: the count is read from the engine, and CURRENT
is used only when the engine cannot be asked (a mismatch is logged). '-' or '' means none.
Put -- before the positionals when they come from macros: `concierge-scale [OPTIONS] up -- web 3`.

Bounds: up never lowers the count, down never raises it; a clamp that leaves the count where
it is, is a deliberate no-op. --max defaults to 10. --step-times K multiplies STEP (a Zabbix
action's escalated steps).

Self-healing: heal reads the count the last scaling decided from the state file (none: --min),
and scales up to it when the engine reports fewer (a container was killed or crashed). It never
lowers the count, ignores --cooldown and keeps its clock. A scale-down records its lower count
before it stops a container, under the lock heal waits for: the stopped container's 'state 0'
problem then finds nothing to heal (outcome noop).

Vertical scaling: resize SERVICE [--cpus N] [--memory SIZE] sets the CPU and memory limits
(CPUs with at most 3 decimals; SIZE as docker writes it: 256m, 1g), read back from the engine
first, clamped to --min-cpus/--max-cpus (default 0.1..4) and --min-memory/--max-memory
(default 64m..4g), under the same lock, with a cooldown of its own (--cooldown), logged like
a scaling; stdout: the limits after the call (cpus=0.5 memory=256m). A bad size is an invalid
argument (exit 1).
  compose: docker update --cpus --memory --memory-swap (= memory: no swap on top) of every
           container of the service, in place, no restart. Containers created later get the
           compose file's limits, not these: concierge-scale keeps the last resize in
           <key>.resize and applies it to the containers its own `up` creates; anything else
           that creates containers (a hand-run `up`, a recreate) does not, so put lasting
           limits in the compose file too (cpus:, mem_limit: or deploy.resources.limits).
  swarm:   docker service update --detach --limit-cpu --limit-memory (the task template:
           the swarm rolls the tasks, and later tasks have the limits)
  kubectl: kubectl set resources TYPE/NAME --limits=cpu=…,memory=… (the pod template)

stdout: the service's count after the call, one line (nothing on failure).
Exit status:
  0  scaled (or healed), or a deliberate no-op (clamped, already there or nothing to heal,
     cooldown, dry run)
  1  nothing was scaled: invalid arguments, unusable state dir or log, lock wait exceeded,
     or the engine failed (its stderr is passed through, then a one-line summary)
  2  scaled, but recording it failed: the Zabbix push, the state or the event log (the
     count is still printed)

Option names: engine options are docker-compose's (-f, -p, -H); the Zabbix connection takes
zabbix_sender's -z, -s, -c, -I, with --zabbix-port and --zabbix-timeout spelled out because
-p is the compose project and -t would read as a compose timeout.

Files: <state-dir>/<engine>.<project|namespace|%>.<service>.lock (flock), .state (last
scaling, for --cooldown) and .resize (last resize); events in <state-dir>/scale-events.jsonl
unless --event-log.
State dir: --state-dir, else $CONCIERGE_STATE_DIR, else /var/lib/concierge.

Examples:
  # what a Zabbix action runs: one more container of compose service shop, at most 6
  concierge-scale up -f /srv/shop/docker-compose.yml -p shop --max 6 --cooldown 2m -- shop
  # half a CPU and 256 MiB for every container of compose service shop, at most 1 CPU
  concierge-scale resize -f /srv/shop/docker-compose.yml -p shop --max-cpus 1 --cpus 0.5 --memory 256m -- shop
  # what the heal action runs when a container of shop stops without a scale-down
  concierge-scale heal -f /srv/shop/docker-compose.yml -p shop --min 1 --max 6 -- shop";

/// Command line of concierge-scale.
#[derive(Debug, Parser)]
#[command(
    name = TOOL,
    version = concierge_core::version::SHORT,
    long_version = concierge_core::version::LONG,
    about = "Scale a compose, swarm or Kubernetes service from a Zabbix action (its count, \
             or its CPU and memory limits): bounded, locked, with cooldown, dry run and an \
             event log.",
    after_help = AFTER_HELP,
    // zabbix_sender's names, except where compose has them: -p is the project, -H the
    // daemon, and -t would read as a compose timeout. Each needs the item to push to.
    mut_arg("port", |a| a.short(None).long("zabbix-port")),
    mut_arg("host", |a| a.long("zabbix-host").requires("zabbix_item")),
    mut_arg("timeout", |a| a
        .short(None)
        .long("zabbix-timeout")
        .help("Time limit for the push (default: the agent's Timeout minus 0.5 s)")
        .requires("zabbix_item")),
    mut_arg("servers", |a| a
        .help("Zabbix server or proxy, host[:port], as zabbix_sender -z (',' separates \
               destinations, ';' the nodes of one HA cluster; repeatable)")
        .requires("zabbix_item")),
    mut_arg("config", |a| a.requires("zabbix_item")),
    mut_arg("source_address", |a| a.requires("zabbix_item")),
    mut_arg("compress", |a| a.requires("zabbix_item")),
)]
pub struct Cli {
    /// up: add STEP; down: remove STEP; to: go to TARGET; heal: back up to the count the last
    /// scaling decided; resize: set --cpus/--memory.
    #[arg(value_enum)]
    pub action: Action,

    /// The service: compose or swarm service name, or for kubectl NAME (a Deployment) or
    /// TYPE/NAME.
    #[arg(allow_hyphen_values = true)]
    pub service: String,

    /// The count the caller believes current; used only when the engine cannot be asked.
    // Negative numbers are let through to be refused with a reason; anything else that starts
    // with '-' is an option, so a mistyped one (`--mx 3`) is named as such.
    #[arg(value_name = "CURRENT", allow_negative_numbers = true)]
    pub current: Option<String>,

    /// up/down: how many to add or remove (default 1); to: the target count; heal: none.
    #[arg(value_name = "STEP|TARGET", allow_negative_numbers = true)]
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

    /// One budget for the call's engine commands and the wait for another call's lock; when it
    /// runs out the engine's whole process group is killed. The default (25s) keeps a call,
    /// with the Zabbix push, inside a server Timeout of 30 s; keep it below the server's (or
    /// the 7.0 script's) timeout.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "25s", help_heading = "Engine")]
    pub engine_timeout: Duration,

    /// Lowest count.
    #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_COUNT)), help_heading = "Policy")]
    pub min: u32,

    /// Highest count.
    #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = DEFAULT_MAX, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_COUNT)), help_heading = "Policy")]
    pub max: u32,

    /// Multiply STEP by K: a Zabbix action's later (escalated) steps scale by more.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100), help_heading = "Policy")]
    pub step_times: u32,

    /// After a scaling, refuse to scale this service again for this long (30s, 5m); heal
    /// ignores it (it restores a decision already made) and leaves its clock alone.
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
    pub resize: ResizeArgs,

    #[command(flatten)]
    pub zabbix: ZabbixArgs,
}

/// The Zabbix push: the item, and concierge-core's connection options (renamed on [`Cli`]
/// where they would clash with compose's).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Zabbix (push the new count after a scaling)")]
pub struct ZabbixArgs {
    /// Trapper item that receives the new count.
    #[arg(long, value_name = "KEY")]
    pub zabbix_item: Option<String>,

    #[command(flatten)]
    pub connection: ConnectionArgs,
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
        Some(_) => {
            return Err(UsageError(format!(
                "{what} {:?} is not a whole number",
                shown(text)
            )))
        }
        None => t,
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        let why = if whole.starts_with('-') {
            "must not be negative"
        } else {
            "is not a whole number"
        };
        return Err(UsageError(format!("{what} {:?} {why}", shown(text))));
    }
    match whole.parse::<u32>() {
        Ok(n) if n <= MAX_COUNT => Ok(n),
        _ => Err(UsageError(format!(
            "{what} {:?} is too large (at most {MAX_COUNT})",
            shown(text)
        ))),
    }
}

impl Request {
    /// Validate the positionals and the bounds.
    pub fn from_cli(cli: &Cli) -> Result<Self, UsageError> {
        if cli.action == Action::Resize {
            return Err(UsageError("resize is run by crate::resize".into()));
        }
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
            (Action::Heal, _, Some(_)) => {
                return Err(UsageError(
                    "heal takes no STEP or TARGET (it restores the recorded count): heal \
                     SERVICE [CURRENT]"
                        .into(),
                ))
            }
            (_, current, amount) => (current, amount.unwrap_or("1").to_string()),
        };
        let hint = hint.map(|h| parse_count_arg("CURRENT", &h)).transpose()?;
        if cli.step_times != 1 && !matches!(cli.action, Action::Up | Action::Down) {
            return Err(UsageError(format!(
                "--step-times applies to up and down, not to {}",
                cli.action
            )));
        }
        let amount = match cli.action {
            Action::To => parse_count_arg("TARGET", &amount)?,
            // Read from the state file once the lock is held.
            Action::Heal => 0,
            _ => {
                let step = parse_count_arg("STEP", &amount)?;
                if step == 0 {
                    return Err(UsageError("STEP must be at least 1".into()));
                }
                step.saturating_mul(cli.step_times).min(MAX_COUNT)
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
            .unwrap_or_else(|| PathBuf::from(STATE_DIR))
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
