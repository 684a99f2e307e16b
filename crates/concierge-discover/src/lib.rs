//! concierge-discover: read an application's metrics and print the Zabbix low-level discovery
//! document of one kind, for an agent UserParameter behind an LLD rule.

use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use concierge_core::agent_config::AgentConfig;
use concierge_core::cli::{self, AGENT_DEFAULT_TIMEOUT_SECS};
use concierge_core::deadline::Deadline;
use concierge_core::metrics::{dropwizard, Kind};
use concierge_core::source::{self, Source};
use concierge_core::zabbix::key::KeyTemplate;
use concierge_core::zabbix::lld;

/// The tool's name in messages.
pub const TOOL: &str = "concierge-discover";

/// The agent truncates nothing but refuses item output of 512 KiB or more.
pub const AGENT_OUTPUT_LIMIT: usize = 512 * 1024;

/// Command line of concierge-discover.
#[derive(Debug, Parser)]
#[command(
    name = TOOL,
    version,
    about = "Print the Zabbix low-level discovery document of an app's metrics.",
    after_help = "Prints {\"data\":[{\"{#TIMER}\":\"name\"},…]} (macro per kind: {#TIMER}, {#COUNTER}, \
                  {#GAUGE}, {#METER}, {#HISTOGRAM}) and exits 0.\nOn failure prints one line on stderr, \
                  nothing on stdout, and exits 1, so the LLD rule fails visibly."
)]
pub struct Cli {
    /// Metric kind: timers, counters, gauges, meters or histograms.
    pub kind: Kind,

    /// Where the metrics come from: an http(s) URL, a file, or - for stdin.
    #[arg(default_value = source::DEFAULT_URL)]
    pub source: String,

    /// Zabbix agent configuration file; only Timeout is used (to stay below it).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Deadline for the whole run (2.5, 2500ms, 10s). Default: the agent's Timeout minus 0.5 s.
    #[arg(short = 't', long = "timeout", value_name = "DURATION", value_parser = cli::parse_duration)]
    pub timeout: Option<Duration>,

    /// Item key template the courier uses; names whose keys it cannot encode are left out
    /// (with a warning), so discovery never creates items that can receive no data.
    #[arg(long, value_name = "TEMPLATE")]
    pub key_template: Option<String>,
}

/// Fetch, parse and print the discovery document.
pub fn run(cli: &Cli, started: Instant) -> anyhow::Result<()> {
    let config = match &cli.config {
        Some(p) => AgentConfig::load(p)?,
        None => AgentConfig::default(),
    };
    let budget = cli
        .timeout
        .unwrap_or_else(|| cli::budget_below(config.timeout.unwrap_or(AGENT_DEFAULT_TIMEOUT_SECS)));
    let deadline = Deadline::starting_at(started, budget);
    let template = KeyTemplate::from_str(
        cli.key_template
            .as_deref()
            .unwrap_or(cli.kind.default_key_template()),
    )?;
    let src = Source::from_str(&cli.source)?;
    let doc = src.fetch(&deadline, source::DEFAULT_MAX_BYTES)?;
    let names = dropwizard::names(&doc, cli.kind)
        .with_context(|| format!("cannot parse the metrics from {src}"))?;
    drop(doc);
    let stats = cli.kind.all_stats();
    let mut kept = Vec::with_capacity(names.len());
    for name in &names {
        // A key can only fail for a name with a backslash (a quoted parameter cannot end
        // with one) or a very long name; any other name renders like the first statistic.
        let check = if name.contains('\\') || name.len() > 512 {
            stats
        } else {
            &stats[..1]
        };
        match check
            .iter()
            .try_for_each(|s| template.render(name, Some(s)).map(drop))
        {
            Ok(()) => kept.push(name.as_str()),
            Err(e) => eprintln!("{TOOL}: leaving out {name:?}: {e}"),
        }
    }
    let document = lld::document(cli.kind.lld_macro(), kept);
    if document.len() >= AGENT_OUTPUT_LIMIT {
        eprintln!(
            "{TOOL}: warning: the document is {} bytes; a Zabbix agent refuses item output of 512 KiB or more",
            document.len()
        );
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{document}")?;
    out.flush()?;
    Ok(())
}
