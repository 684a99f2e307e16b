//! concierge-courier: collect an application's metrics and deliver them to Zabbix trapper
//! items in one shot over the native sender protocol, then report how long it took.

use std::io::Write;
use std::str::FromStr;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use concierge_core::cli::{Connection, ConnectionArgs};
use concierge_core::metrics::{dropwizard, Kind};
use concierge_core::outcome::{Failure, NothingToSend, UsageError};
use concierge_core::source::{self, Source};
use concierge_core::zabbix::input::{self, InputFormat};
use concierge_core::zabbix::key::{KeyError, KeyTemplate};
use concierge_core::zabbix::sender::{self, Timestamp, Value};

/// The tool's name in messages.
pub const TOOL: &str = "concierge-courier";

/// The KIND argument: one metric kind, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kinds {
    One(Kind),
    All,
}

impl FromStr for Kinds {
    type Err = concierge_core::metrics::UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("all") {
            Ok(Kinds::All)
        } else {
            s.parse().map(Kinds::One)
        }
    }
}

impl Kinds {
    /// The kinds to collect.
    pub fn kinds(self) -> Vec<Kind> {
        match self {
            Kinds::One(k) => vec![k],
            Kinds::All => Kind::ALL.to_vec(),
        }
    }
}

/// Command line of concierge-courier.
#[derive(Debug, Parser)]
#[command(
    name = TOOL,
    version,
    about = "Collect an app's metrics and deliver them to Zabbix trapper items in one request.",
    after_help = after_help()
)]
pub struct Cli {
    /// Metric kind: timers, counters, gauges, meters, histograms, or all (every kind, one
    /// fetch, one request).
    #[arg(required_unless_present = "input")]
    pub kind: Option<Kinds>,

    /// Where the metrics come from: an http(s) URL, a file, or - for stdin.
    #[arg(default_value = source::DEFAULT_URL)]
    pub source: String,

    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Deliver zabbix_sender input lines from FILE (- for stdin) instead of reading metrics:
    /// a drop-in for `zabbix_sender -i`. Host "-" means -s / Hostname.
    #[arg(short = 'i', long = "input-file", value_name = "FILE", conflicts_with_all = ["kind", "stats", "key_template"])]
    pub input: Option<String>,

    /// Input lines carry a timestamp (<host> <key> <timestamp> <value>); with --dry-run,
    /// write one.
    #[arg(short = 'T', long = "with-timestamps")]
    pub with_timestamps: bool,

    /// Input lines also carry nanoseconds after the timestamp (needs -T).
    #[arg(short = 'N', long = "with-ns", requires = "with_timestamps")]
    pub with_ns: bool,

    /// Statistics to deliver, comma-separated. Default for timers: count, max, mean,
    /// mean_rate, min, p75, p95, p98, p99, p999, stddev.
    #[arg(long, value_delimiter = ',', value_name = "STAT,...")]
    pub stats: Vec<String>,

    /// Item key template with {name} and {stat}; must match the LLD item prototypes.
    /// Default: timer[{name}.{stat}] (histogram[…], meter[…]; counter[{name}], gauge[{name}]).
    #[arg(long, value_name = "TEMPLATE")]
    pub key_template: Option<String>,

    /// Values per request. Default: all values in one request.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk: Option<u64>,

    /// Write zabbix_sender input lines to stdout instead of sending (same as -z -).
    #[arg(long)]
    pub dry_run: bool,

    /// Report each destination's counts on stderr.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

fn after_help() -> String {
    format!(
        "{}\nExit status: 0 success, 1 failure, 2 partial (as zabbix_sender).\n\
         With --dry-run (or -z -) stdout carries zabbix_sender input lines instead.",
        Failure::help_table(&Failure::DELIVERY)
    )
}

impl Cli {
    /// True when the run writes input lines to stdout rather than one value line.
    pub fn writes_lines(&self) -> bool {
        self.dry_run || self.connection.servers.iter().any(|s| s == "-")
    }
}

/// Collect and deliver (or print, for a dry run) as the command line says.
pub fn run(cli: &Cli, started: Instant) -> anyhow::Result<()> {
    let dry_run = cli.writes_lines();
    let conn = cli.connection.resolve(started, !dry_run)?;
    let format = InputFormat {
        with_timestamps: cli.with_timestamps,
        with_ns: cli.with_ns,
    };
    let values = match &cli.input {
        Some(file) => read_input(file, format, &conn)?,
        None => collect(cli, &conn)?,
    };
    if values.is_empty() {
        return Err(NothingToSend("the source holds no values to deliver".into()).into());
    }
    if dry_run {
        return print_lines(&values, format);
    }
    let mut opts = conn.sender.clone();
    opts.chunk_size = cli.chunk.map(|c| usize::try_from(c).unwrap_or(usize::MAX));
    let delivery = sender::send(&conn.destinations, &values, &conn.deadline, &opts)?;
    if cli.verbose {
        for r in &delivery.reports {
            let who = r
                .answered_by
                .as_ref()
                .map_or_else(|| r.destination.to_string(), ToString::to_string);
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "{TOOL}: {who}: {}/{} request(s) answered; {}",
                r.requests_answered, r.requests, r.summary
            );
            let _ = match &r.error {
                None => writeln!(err),
                Some(e) => writeln!(err, "; then: {e}"),
            };
        }
    }
    delivery.into_result()?;
    Ok(())
}

/// Fetch the metrics document and turn the chosen kinds' statistics into values.
pub fn collect(cli: &Cli, conn: &Connection) -> anyhow::Result<Vec<Value>> {
    let kinds = cli
        .kind
        .ok_or_else(|| UsageError("a metric KIND is required".into()))?;
    if kinds == Kinds::All && (cli.key_template.is_some() || !cli.stats.is_empty()) {
        return Err(
            UsageError("--key-template and --stats apply to one kind, not to all".into()).into(),
        );
    }
    let plans = kinds
        .kinds()
        .into_iter()
        .map(|kind| {
            Ok((
                kind,
                key_template(kind, cli.key_template.as_deref())?,
                stats(kind, &cli.stats)?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let src = Source::from_str(&cli.source)?;
    let bytes = src.fetch(&conn.deadline, source::DEFAULT_MAX_BYTES)?;
    let clock = Timestamp::now();
    let wanted: Vec<(Kind, &[&str])> = plans
        .iter()
        .map(|(kind, _, stats)| (*kind, stats.as_slice()))
        .collect();
    // One streaming pass for every kind; the document is not needed once it has been read.
    let parsed = dropwizard::parse_kinds(&bytes, &wanted)
        .with_context(|| format!("cannot parse the metrics from {src}"))?;
    drop(bytes);
    let count: usize = parsed
        .iter()
        .flatten()
        .flat_map(|m| &m.metrics)
        .map(|m| m.stats.len())
        .sum();
    let mut values = Vec::with_capacity(count);
    for ((kind, template, _), parsed) in plans.iter().zip(parsed) {
        let parsed = parsed.with_context(|| format!("cannot parse the {kind} from {src}"))?;
        if let Some(first) = parsed.skipped.first() {
            eprintln!(
                "{TOOL}: skipped {} {kind} value(s) Zabbix cannot store as numbers (first: {}.{}: {})",
                parsed.skipped.len(),
                first.metric,
                first.stat,
                first.reason
            );
        }
        let mut unencodable = 0usize;
        // Consumed metric by metric: each value string moves into its `Value`.
        for metric in parsed.metrics {
            for stat in metric.stats {
                match template.render(&metric.name, Some(&stat.name)) {
                    Ok(key) => values.push(Value {
                        host: conn.host.clone(),
                        key,
                        value: stat.value,
                        clock: Some(clock),
                    }),
                    Err(e) => {
                        unencodable += 1;
                        if unencodable == 1 {
                            eprintln!("{TOOL}: skipping metric {:?}: {e}", metric.name);
                        }
                    }
                }
            }
        }
        if unencodable > 1 {
            eprintln!("{TOOL}: skipped {unencodable} value(s) whose item key cannot be encoded");
        }
    }
    Ok(values)
}

/// The key template for `kind`: the given one, checked, or the kind's default.
pub fn key_template(kind: Kind, given: Option<&str>) -> anyhow::Result<KeyTemplate> {
    let text = given.unwrap_or(kind.default_key_template());
    let t = KeyTemplate::from_str(text)?;
    if !text.contains("{name}") {
        return Err(KeyError::InvalidTemplate(format!("{text:?} has no {{name}}")).into());
    }
    if !kind.single_valued() && !t.has_stat() {
        return Err(KeyError::InvalidTemplate(format!(
            "{text:?} has no {{stat}}: every statistic of a {} metric would get the same key",
            kind.section().trim_end_matches('s')
        ))
        .into());
    }
    Ok(t)
}

/// The statistics to deliver: the given ones, checked against the kind, or its defaults.
pub fn stats(kind: Kind, given: &[String]) -> Result<Vec<&'static str>, UsageError> {
    if given.is_empty() || kind.single_valued() {
        return Ok(kind.default_stats().to_vec());
    }
    given
        .iter()
        .map(|s| {
            kind.all_stats()
                .iter()
                .find(|k| k.eq_ignore_ascii_case(s.trim()))
                .copied()
                .ok_or_else(|| {
                    UsageError(format!(
                        "unknown statistic {s:?} for {kind}; known: {}",
                        kind.all_stats().join(", ")
                    ))
                })
        })
        .collect()
}

/// Read zabbix_sender input lines; host "-" becomes the resolved host name. The whole file is
/// checked before anything is sent, so a bad line never leaves half a file delivered.
pub fn read_input(
    file: &str,
    format: InputFormat,
    conn: &Connection,
) -> anyhow::Result<Vec<Value>> {
    let src = Source::from_str(file)?;
    let bytes = src.fetch(&conn.deadline, source::DEFAULT_MAX_BYTES)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| UsageError(format!("input {src} is not valid UTF-8")))?;
    let lines = input::parse_all(&text, format)?;
    Ok(lines
        .into_iter()
        .map(|l| Value {
            host: if l.host == "-" {
                conn.host.clone()
            } else {
                l.host
            },
            key: l.key,
            value: l.value,
            clock: l.clock.map(|clock| Timestamp { clock, ns: l.ns }),
        })
        .collect())
}

fn print_lines(values: &[Value], format: InputFormat) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for v in values {
        let (clock, ns) = match (format.with_timestamps, v.clock) {
            (true, Some(ts)) => (Some(ts.clock), if format.with_ns { ts.ns } else { None }),
            (true, None) => {
                let now = Timestamp::now();
                (Some(now.clock), if format.with_ns { now.ns } else { None })
            }
            _ => (None, None),
        };
        input::write_line(&mut out, &v.host, &v.key, &v.value, clock, ns)?;
    }
    out.flush()?;
    Ok(())
}
