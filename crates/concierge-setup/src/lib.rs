//! concierge-setup: give Zabbix 6.0 or 7.0 the Concierge side in one command.
//!
//! It imports the three templates (heartbeat → app → service) with `configuration.import`,
//! and for a `--service` creates or updates, through the JSON-RPC API, everything the loop
//! needs: the containers' host group and autoregistration action, the service host with its
//! macros, the timer list, the global scripts that run concierge-scale (on the server, or on
//! the Docker host's agent), and the scaling actions. Every object is found by name first, so a
//! second run changes nothing and says so. What differs between versions (import rules,
//! template files, group selectors) follows `apiinfo.version`.

#![warn(missing_docs)]

pub mod check;
pub mod cli;
pub mod command;
pub mod escalation;
pub mod heal;
pub mod objects;
pub mod profile;
pub mod report;
pub mod retire;
pub mod templates;
pub mod timers;
pub mod version;

use std::fmt;
use std::sync::Arc;

use concierge_core::outcome::{self, Classify, Failure};
use concierge_core::tls;
use concierge_core::zabbix::api::Api;
use serde_json::json;

pub use cli::{Cli, Credentials, Plan, ScriptRunner, ServicePlan, TemplateSource};
use command::Direction;
use objects::HostSpec;
use report::Reporter;
use version::ZabbixVersion;

/// The tool's name in messages.
pub const TOOL: &str = "concierge-setup";

/// Host group of the service hosts.
pub const SERVICES_GROUP: &str = "Concierge/services";

/// Something Zabbix did not do as expected (beyond an API error): class "Zabbix refused".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError(pub String);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

impl Classify for SetupError {
    fn failure(&self) -> Failure {
        Failure::ZabbixRefused
    }
}

/// Validate the command line, then configure Zabbix, printing a line per object.
pub fn run(cli: &Cli) -> outcome::Result<()> {
    if let Some(cli::SubCommand::Retire { trigger, group }) = &cli.command {
        return retire_run(cli, trigger, group);
    }
    let plan = cli.plan()?;
    if let TemplateSource::Dir(dir) = &plan.templates {
        // A bad --templates is a usage error before any request (its 6.0 files must be there).
        templates::from_dir(dir, ZabbixVersion::V6_0)?;
    }
    let api = connect(&plan)?;
    let version = ZabbixVersion::parse(&api.version()?)?;
    let files = match &plan.templates {
        TemplateSource::Embedded => templates::embedded(version),
        TemplateSource::Dir(dir) => templates::from_dir(dir, version)?,
    };
    let applied = apply(&api, version, &plan, &files, &mut Reporter::stdout());
    // A session from user.login would otherwise stay open on the server until it expires.
    let logout = api.logout();
    applied?;
    Ok(logout?)
}

/// `retire`: log in and delete the gone container's host.
fn retire_run(cli: &Cli, trigger: &str, group: &str) -> outcome::Result<()> {
    if cli.service.is_some() {
        return Err(outcome::UsageError("retire takes no --service".into()).into());
    }
    check::api_url(&cli.api)?;
    let plan = Plan {
        api: cli.api.clone(),
        api_timeout: cli.api_timeout,
        credentials: cli.credentials()?,
        templates: TemplateSource::Embedded,
        service: None,
        autoreg_psk: None,
        autoreg_psk_file: None,
    };
    let api = connect(&plan)?;
    let done = retire::run(&api, trigger, group, &mut Reporter::stdout());
    let logout = api.logout();
    done?;
    Ok(logout?)
}

/// Log in as the plan says.
pub fn connect(plan: &Plan) -> outcome::Result<Api> {
    let api = Api::new(&plan.api, plan.api_timeout);
    Ok(match &plan.credentials {
        Credentials::Token(t) => api.with_token(t),
        Credentials::Password { user, password } => api.login(user, password)?,
    })
}

/// Import the templates, then wire the service if there is one.
pub fn apply(
    api: &Api,
    version: ZabbixVersion,
    plan: &Plan,
    files: &[templates::TemplateFile],
    out: &mut Reporter,
) -> outcome::Result<()> {
    let ids = templates::import_all(api, version, files, out)?;
    if let Some((identity, psk)) = &plan.autoreg_psk {
        // 2 = PSK only: an announce without the key registers nothing, and the hosts created
        // get the same PSK settings, so their values must come over PSK too.
        api.call(
            "autoregistration.update",
            json!({"tls_accept": 2, "tls_psk_identity": identity, "tls_psk": psk}),
        )?;
        out.push(
            report::Change::Updated,
            "autoregistration",
            "PSK only, identity",
            identity,
        );
    }
    let Some(svc) = &plan.service else {
        return Ok(());
    };
    let template = |name: &str| {
        ids.get(name)
            .cloned()
            .ok_or_else(|| SetupError(format!("template {name:?} was not imported")))
    };
    let (app, service) = (template(templates::APP)?, template(templates::SERVICE)?);

    // 1. The containers' group and their autoregistration, before anything else: Zabbix 7.0
    //    ignores an unknown host's identical re-announce for 120 s after its first one, so a
    //    container that announces before the action exists registers two minutes late.
    let containers = objects::ensure_group(api, &svc.group, out)?;
    let register = objects::register_action(
        &format!("Concierge: register {}", svc.name),
        &svc.metadata,
        &containers,
        &app,
    );
    objects::ensure_action(api, &register, out)?;

    // 2. The service host, with its macros (and the agent that runs its scripts).
    let services = objects::ensure_group(api, SERVICES_GROUP, out)?;
    let agent = match &svc.runner {
        ScriptRunner::Agent(a) => Some(a),
        ScriptRunner::Server => None,
    };
    let hostid = objects::ensure_host(
        api,
        version,
        &HostSpec {
            host: &svc.host,
            groupid: &services,
            templateid: &service,
            macros: &svc.macros,
            agent,
            // The service host's trapper items (the count, the timer list) then take values
            // only from holders of the fleet's key, like the containers' hosts.
            psk: plan
                .autoreg_psk
                .as_ref()
                .map(|(identity, key)| (identity.as_str(), key.as_str())),
        },
        out,
    )?;

    // 3. The timers it aggregates.
    let tls = match (&plan.autoreg_psk, &plan.autoreg_psk_file) {
        (Some((identity, _)), Some(file)) => tls::Client::new(&tls::Settings {
            connect: tls::Mode::Psk,
            psk_identity: Some(identity.clone()),
            psk_file: Some(file.clone()),
            ..Default::default()
        })?
        .map(Arc::new),
        _ => None,
    };
    timers::ensure(
        api,
        &hostid,
        &svc.host,
        &svc.timers,
        &svc.destinations,
        tls,
        out,
    )?;

    // 4. The service's scripts.
    let mut scripts = Vec::new();
    for d in Direction::BOTH {
        scripts.push(objects::ensure_script(
            api,
            &d.script_name(&svc.name),
            &svc.script.command(d),
            &svc.runner,
            out,
        )?);
    }

    let escalated = match svc.escalate_at {
        Some(at) => Some((
            objects::ensure_script(
                api,
                &escalation::script_name(&svc.name),
                &svc.script.escalated_command(escalation::FACTOR),
                &svc.runner,
                out,
            )?,
            at,
        )),
        None => None,
    };
    let healer = objects::ensure_script(
        api,
        &heal::name(&svc.name),
        &svc.script.heal_command(&svc.host),
        &svc.runner,
        out,
    )?;

    // 5. The scaling actions (scale-up escalates, also fires on the predictive trigger, and
    //    both scale-up triggers wait for a slow upstream: see profile), and healing.
    for (d, scriptid) in Direction::BOTH.into_iter().zip(&scripts) {
        let trigger = objects::trigger_id(api, &hostid, d.trigger_name())?;
        let name = d.script_name(&svc.name);
        let mut action = match d {
            Direction::Up => escalation::up_action(
                &name,
                &trigger,
                scriptid,
                escalated.as_ref().map(|(id, at)| (id.as_str(), *at)),
                &svc.repeat_every,
            ),
            Direction::Down => objects::scale_action(&name, &trigger, scriptid, &svc.repeat_every),
        };
        if d == Direction::Up {
            let triggers = profile::scale_up_triggers(api, &hostid, &trigger)?;
            if let Some(upstream) = &svc.upstream {
                profile::ensure_upstream(api, &hostid, &svc.host, upstream, &triggers, out)?;
            }
            profile::also_on(&mut action, &triggers[1..]);
        }
        objects::ensure_action(api, &action, out)?;
    }
    let heal = heal::action(&svc.name, &containers, &hostid, &healer, &svc.repeat_every);
    objects::ensure_action(api, &heal, out)?;

    // 6. Retiring the hosts of containers that are gone.
    if let Some(retire) = &svc.retire {
        let name = command::retire_name(&svc.name);
        let scriptid = objects::ensure_script(api, &name, &retire.command(), &svc.runner, out)?;
        let action =
            objects::retire_action(&name, &containers, &scriptid, &hostid, &svc.repeat_every);
        objects::ensure_action(api, &action, out)?;
    }
    Ok(())
}
