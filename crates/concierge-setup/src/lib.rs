//! concierge-setup: give Zabbix 6.0 the Concierge side in one command.
//!
//! It imports the three templates (heartbeat → app → service) with `configuration.import`,
//! and for a `--service` creates or updates, through the JSON-RPC API, everything the loop
//! needs: the containers' host group, the service host with its macros, the timer list, the
//! global scripts that run concierge-scale, and the autoregistration and scaling actions.
//! Every object is found by name first, so a second run changes nothing and says so.

#![warn(missing_docs)]

pub mod check;
pub mod cli;
pub mod command;
pub mod objects;
pub mod report;
pub mod templates;
pub mod timers;

use std::fmt;

use concierge_core::zabbix::api::Api;

pub use cli::{Cli, Credentials, Plan, ServicePlan, TemplateSource};
use command::Direction;
use objects::HostSpec;
use report::Reporter;

/// The tool's name in messages.
pub const TOOL: &str = "concierge-setup";

/// Host group of the service hosts.
pub const SERVICES_GROUP: &str = "Concierge/services";

/// Something Zabbix did not do as expected (beyond an API error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError(pub String);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

/// Validate the command line, then configure Zabbix, printing a line per object.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    let plan = cli.plan()?;
    let files = match &plan.templates {
        TemplateSource::Embedded => templates::embedded(),
        TemplateSource::Dir(dir) => templates::from_dir(dir)?,
    };
    let api = connect(&plan)?;
    apply(&api, &plan, &files, &mut Reporter::stdout())
}

/// Log in as the plan says.
pub fn connect(plan: &Plan) -> anyhow::Result<Api> {
    let api = Api::new(&plan.api, plan.api_timeout);
    Ok(match &plan.credentials {
        Credentials::Token(t) => api.with_token(t),
        Credentials::Password { user, password } => api.login(user, password)?,
    })
}

/// Import the templates, then wire the service if there is one.
pub fn apply(
    api: &Api,
    plan: &Plan,
    files: &[templates::TemplateFile],
    out: &mut Reporter,
) -> anyhow::Result<()> {
    let ids = templates::import_all(api, files, out)?;
    let Some(svc) = &plan.service else {
        return Ok(());
    };
    let template = |name: &str| {
        ids.get(name)
            .cloned()
            .ok_or_else(|| SetupError(format!("template {name:?} was not imported")))
    };
    let (app, service) = (template(templates::APP)?, template(templates::SERVICE)?);

    // 1. Host groups: the containers', and the service hosts'.
    let containers = objects::ensure_group(api, &svc.group, out)?;
    let services = objects::ensure_group(api, SERVICES_GROUP, out)?;

    // 2. The service host, with its macros.
    let hostid = objects::ensure_host(
        api,
        &HostSpec {
            host: &svc.host,
            groupid: &services,
            templateid: &service,
            macros: &svc.macros,
        },
        out,
    )?;

    // 3. The timers it aggregates.
    timers::ensure(api, &hostid, &svc.host, &svc.timers, &svc.destinations, out)?;

    // 4. The service's scripts.
    let mut scripts = Vec::new();
    for d in Direction::BOTH {
        scripts.push(objects::ensure_script(
            api,
            &d.script_name(&svc.name),
            &svc.script.command(d),
            out,
        )?);
    }

    // 5. The actions.
    let register = objects::register_action(
        &format!("Concierge: register {}", svc.name),
        &svc.metadata,
        &containers,
        &app,
    );
    objects::ensure_action(api, &register, out)?;
    for (d, scriptid) in Direction::BOTH.into_iter().zip(&scripts) {
        let trigger = objects::trigger_id(api, &hostid, d.trigger_name())?;
        let action = objects::scale_action(
            &d.script_name(&svc.name),
            &trigger,
            scriptid,
            &svc.repeat_every,
        );
        objects::ensure_action(api, &action, out)?;
    }
    Ok(())
}
