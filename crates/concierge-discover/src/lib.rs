//! concierge-discover: read an application's metrics and print the Zabbix low-level discovery
//! document of one kind, for an agent UserParameter behind an LLD rule.

use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::Parser;
use concierge_core::agent_config::AgentConfig;
use concierge_core::cli::{self, PrometheusArgs, AGENT_DEFAULT_TIMEOUT_SECS};
use concierge_core::deadline::{self, Deadline};
use concierge_core::metrics::prometheus::{self, MetricType};
use concierge_core::metrics::{dropwizard, Kind};
use concierge_core::outcome::{self, Context, Error, UsageError};
use concierge_core::source::{self, Source};
use concierge_core::text::shown;
use concierge_core::zabbix::key::KeyTemplate;
use concierge_core::zabbix::lld;

/// The tool's name in messages.
pub const TOOL: &str = "concierge-discover";

/// The agent truncates nothing but refuses item output of 512 KiB or more.
pub const AGENT_OUTPUT_LIMIT: usize = 512 * 1024;

/// The KIND argument: a Dropwizard metric kind, or a Prometheus / OpenMetrics endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Dropwizard(Kind),
    Prometheus,
}

impl FromStr for Target {
    type Err = concierge_core::metrics::UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("prometheus") || s.eq_ignore_ascii_case("openmetrics") {
            Ok(Target::Prometheus)
        } else {
            s.parse().map(Target::Dropwizard)
        }
    }
}

/// Command line of concierge-discover.
#[derive(Debug, Clone, Parser)]
#[command(
    name = TOOL,
    version = concierge_core::version::SHORT,
    long_version = concierge_core::version::LONG,
    about = "Print the Zabbix low-level discovery document of an app's metrics.",
    after_help = "Prints {\"data\":[{\"{#TIMER}\":\"name\"},…]} (macro per kind: {#TIMER}, {#COUNTER}, \
                  {#GAUGE}, {#METER}, {#HISTOGRAM}; gauge rows add {#UNIT}: B where the name says bytes) and exits 0.\nOn failure prints one line on stderr, \
                  nothing on stdout, and exits 1, so the LLD rule fails visibly.\n\
                  prometheus: one row per series with {#METRIC} (sample name), {#FAMILY}, {#TYPE}, {#HELP}, \
                  {#UNIT}, {#UNIT.RATE} (counters), {#LABELS} (canonical label set, the key's second parameter), \
                  {#SERIES} (name{labels}, for item names) and {#LABEL.<NAME>} per label (name upper-cased, \
                  characters outside A-Z 0-9 . _ become _, clashes get _2, _3 in label order).\n\n\
                  Examples:\n\
                  \x20 # the timers' LLD document, as the UserParameter concierge.discover asks for it\n\
                  \x20 concierge-discover timers http://localhost:8080/metrics -c /etc/zabbix/zabbix_agentd.conf\n\
                  \x20 # the gauges of a saved document, within 2 s\n\
                  \x20 concierge-discover gauges metrics.json -t 2s\n\
                  \x20 # the counters of a Prometheus endpoint, as the Prometheus template asks for them\n\
                  \x20 concierge-discover prometheus http://localhost:9100/metrics --type counter"
)]
pub struct Cli {
    /// Metric kind: timers, counters, gauges, meters or histograms; or prometheus (a
    /// Prometheus text or OpenMetrics endpoint).
    pub kind: Target,

    /// Where the metrics come from: an http(s) URL, a file, or - for stdin.
    #[arg(default_value = source::DEFAULT_URL)]
    pub source: String,

    /// Zabbix agent configuration file; only Timeout is used (to stay below it).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Deadline for the whole run (2.5, 2500ms, 10s). Default: the agent's Timeout (from -c,
    /// else 3 s) minus 0.5 s: a 6.0 agent kills a UserParameter at its Timeout; a 7.0 agent at
    /// the item's timeout (1-600 s, global default 3 s), which the Concierge app template for 7.0
    /// sets to 30 s, above this default. With other 7.0 items, keep -t below their timeout.
    #[arg(short = 't', long = "timeout", value_name = "DURATION", value_parser = cli::parse_duration)]
    pub timeout: Option<Duration>,

    /// Item key template the courier uses; names whose keys it cannot encode are left out
    /// (with a warning), so discovery never creates items that can receive no data.
    #[arg(long, value_name = "TEMPLATE")]
    pub key_template: Option<String>,

    #[command(flatten)]
    pub prometheus: PrometheusArgs,

    /// prometheus: only series of these metric types (comma-separated: counter, gauge,
    /// untyped, unknown, histogram, gaugehistogram, summary, info, stateset). Empty: all.
    #[arg(long = "type", value_name = "TYPE,...", value_delimiter = ',', value_parser = parse_type)]
    pub types: Vec<Option<MetricType>>,
}

/// A metric type; empty (an unset agent parameter) means none.
fn parse_type(text: &str) -> Result<Option<MetricType>, String> {
    match text.trim() {
        "" => Ok(None),
        t => t.parse().map(Some),
    }
}

/// Fetch, parse and print the discovery document.
pub fn run(cli: &Cli, started: Instant) -> outcome::Result<()> {
    let config = match &cli.config {
        Some(p) => AgentConfig::load_within(p, &cli::config_deadline(started, cli.timeout))?,
        None => AgentConfig::default(),
    };
    let budget = cli
        .timeout
        .unwrap_or_else(|| cli::budget_below(config.timeout.unwrap_or(AGENT_DEFAULT_TIMEOUT_SECS)));
    let deadline = Deadline::starting_at(started, budget);
    // Fetching, parsing and rendering end by the deadline, however big the document.
    let cli = cli.clone();
    let document = deadline::within(
        &deadline,
        Duration::ZERO,
        "parsing the metrics",
        move || discover(&cli, &deadline),
    )??;
    print_document(&document)
}

/// The discovery document of the source.
fn discover(cli: &Cli, deadline: &Deadline) -> outcome::Result<String> {
    let kind = match cli.kind {
        Target::Prometheus => return run_prometheus(cli, deadline),
        Target::Dropwizard(kind) => kind,
    };
    if cli.prometheus.any() || !cli.types.is_empty() {
        return Err(UsageError(
            "--format, --filter, --exclude, --quantiles and --type apply to KIND prometheus".into(),
        )
        .into());
    }
    let template = KeyTemplate::from_str(
        cli.key_template
            .as_deref()
            .unwrap_or(kind.default_key_template()),
    )?;
    let src = Source::from_str(&cli.source)?;
    let doc = src.fetch(deadline, source::DEFAULT_MAX_BYTES)?;
    let names = dropwizard::names(&doc, kind)
        .with_context(|| format!("cannot parse the metrics from {src}"))?;
    drop(doc);
    let stats = kind.all_stats();
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
            Err(e) => outcome::warn(TOOL, format_args!("leaving out {:?}: {e}", shown(name))),
        }
    }
    if kind == Kind::Gauges {
        // Gauges carry their unit (B where the name says bytes) for the prototype's units.
        return Ok(lld::rows_document(kept.iter().map(|name| {
            [
                (kind.lld_macro(), *name),
                ("{#UNIT}", dropwizard::gauge_unit(name)),
            ]
        })));
    }
    Ok(lld::document(kind.lld_macro(), kept))
}

/// Writes the LLD document, warning when an agent would refuse it.
fn print_document(document: &str) -> outcome::Result<()> {
    if document.len() >= AGENT_OUTPUT_LIMIT {
        outcome::warn(
            TOOL,
            format_args!(
                "warning: the document is {} bytes; a Zabbix agent refuses item output of 512 KiB or more",
                document.len()
            ),
        );
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{document}")
        .and_then(|()| out.flush())
        .map_err(Error::output)
}

/// The longest `{#SERIES}` (for item names, which Zabbix caps at 255 characters).
pub const SERIES_NAME_MAX: usize = 200;

/// Discovery of a Prometheus / OpenMetrics endpoint: one row per series the courier delivers.
fn run_prometheus(cli: &Cli, deadline: &Deadline) -> outcome::Result<String> {
    if cli.key_template.is_some() {
        return Err(UsageError(format!(
            "--key-template does not apply to prometheus: its keys are {}",
            prometheus::item_key_template(MetricType::Gauge)
        ))
        .into());
    }
    let templates = prometheus::key_templates()?;
    let src = Source::from_str(&cli.source)?;
    let expo = prometheus::scrape(
        &src,
        deadline,
        cli.prometheus.format,
        &cli.prometheus.options(),
    )?;
    if let Some(w) = expo.skips.warning() {
        outcome::warn(TOOL, w);
    }
    let types: Vec<MetricType> = cli.types.iter().flatten().copied().collect();
    let mut rows = Vec::new();
    let mut unencodable = 0usize;
    for s in &expo.series {
        let family = expo.family_of(s);
        if !types.is_empty() && !types.contains(&family.kind) {
            continue;
        }
        if let Err(e) = templates[&family.kind].render(&s.name, Some(&s.labels_text)) {
            unencodable += 1;
            if unencodable == 1 {
                let series = prometheus::series_text(&s.name, &s.labels_text);
                outcome::warn(TOOL, format_args!("leaving out {}: {e}", shown(&series)));
            }
            continue;
        }
        rows.push(row(&expo, s));
    }
    if unencodable > 1 {
        outcome::warn(
            TOOL,
            format_args!("left out {unencodable} series whose item key cannot be encoded"),
        );
    }
    Ok(lld::rows_document(rows))
}

/// The LLD row of one series.
fn row(expo: &prometheus::Exposition, s: &prometheus::Series) -> Vec<(String, String)> {
    let family = expo.family_of(s);
    let unit = expo.unit_of(s);
    let mut series = prometheus::series_text(&s.name, &s.labels_text);
    if series.chars().count() > SERIES_NAME_MAX {
        series = series.chars().take(SERIES_NAME_MAX - 1).collect();
        series.push('…');
    }
    let mut row = vec![
        ("{#METRIC}".to_string(), s.name.clone()),
        ("{#FAMILY}".to_string(), family.name.clone()),
        ("{#TYPE}".to_string(), family.kind.name().to_string()),
        ("{#HELP}".to_string(), family.help.clone()),
        ("{#LABELS}".to_string(), s.labels_text.clone()),
        ("{#SERIES}".to_string(), series),
    ];
    if family.kind == MetricType::Counter {
        row.push(("{#UNIT.RATE}".to_string(), prometheus::rate_unit(&unit)));
    }
    row.push(("{#UNIT}".to_string(), unit));
    let macros = lld::mapped_macros("LABEL.", s.labels.iter().map(|(n, _)| n.as_str()));
    row.extend(
        macros
            .into_iter()
            .zip(s.labels.iter().map(|(_, v)| v.clone())),
    );
    row
}
