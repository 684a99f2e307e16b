//! concierge-courier: collect an application's metrics and deliver them to Zabbix trapper
//! items in one shot over the native sender protocol, then report how long it took.

use std::io::Write;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use concierge_core::cli::{Connection, ConnectionArgs, PrometheusArgs, SpoolArgs};
use concierge_core::deadline;
use concierge_core::metrics::prometheus;
use concierge_core::metrics::{dropwizard, Kind, Metric};
use concierge_core::outcome::{self, Context, Error, Failure, NothingToSend, UsageError};
use concierge_core::source::{self, Source};
use concierge_core::spool;
use concierge_core::text::shown;
use concierge_core::zabbix::active;
use concierge_core::zabbix::input::{self, InputError, InputFormat};
use concierge_core::zabbix::key::{KeyError, KeyTemplate};
use concierge_core::zabbix::route::Route;
use concierge_core::zabbix::sender::{Timestamp, Value};

/// The tool's name in messages.
pub const TOOL: &str = "concierge-courier";

/// The KIND argument: one metric kind, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kinds {
    One(Kind),
    All,
    /// A Prometheus text or OpenMetrics endpoint: every numeric sample.
    Prometheus,
}

impl FromStr for Kinds {
    type Err = concierge_core::metrics::UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("all") {
            Ok(Kinds::All)
        } else if s.eq_ignore_ascii_case("prometheus") || s.eq_ignore_ascii_case("openmetrics") {
            Ok(Kinds::Prometheus)
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
            Kinds::Prometheus => Vec::new(),
        }
    }
}

/// Command line of concierge-courier.
#[derive(Debug, Clone, Parser)]
#[command(
    name = TOOL,
    version = concierge_core::version::SHORT,
    long_version = concierge_core::version::LONG,
    about = "Collect an app's metrics and deliver them to Zabbix trapper items in one request.",
    after_help = after_help()
)]
pub struct Cli {
    /// Metric kind: timers, counters, gauges, meters, histograms, or all (every kind, one
    /// fetch, one request); or prometheus (every numeric sample of a Prometheus text or
    /// OpenMetrics endpoint, to keys prometheus.<rule>[NAME,LABELS]).
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
    /// write one. When collecting, send each value with its collection clock (by default the
    /// server stamps arrival; spooled values and source timestamps always keep their own).
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

    #[command(flatten)]
    pub prometheus: PrometheusArgs,

    #[command(flatten)]
    pub spool: SpoolArgs,
}

fn after_help() -> String {
    format!(
        "{}\nExit status: 0 success, 1 failure, 2 partial (as zabbix_sender).\n\
         With --dry-run (or -z -) stdout carries zabbix_sender input lines instead.\n\n\
         Examples:\n\
         \x20 # every kind, one fetch, one request to the agent config's ServerActive, for host shop-1\n\
         \x20 concierge-courier all http://localhost:8080/metrics -c /etc/zabbix/zabbix_agentd.conf -s shop-1\n\
         \x20 # print the timers as zabbix_sender input lines instead of sending them\n\
         \x20 concierge-courier timers http://localhost:8080/metrics --dry-run -s shop-1\n\
         \x20 # deliver a zabbix_sender input file to an HA cluster of two nodes (zabbix_sender -i)\n\
         \x20 concierge-courier -i values.txt -z \"zbx-a;zbx-b\" -s shop-1",
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
pub fn run(cli: &Cli, started: Instant) -> outcome::Result<()> {
    let dry_run = cli.writes_lines();
    let conn = cli.connection.resolve(started, !dry_run)?;
    let format = InputFormat {
        with_timestamps: cli.with_timestamps,
        with_ns: cli.with_ns,
    };
    // Reading, parsing and turning the document into values is CPU work that watches no
    // socket: it ends by the deadline however big the document (64 MiB at most).
    let values = {
        let (cli, conn) = (cli.clone(), conn.clone());
        let d = conn.deadline;
        deadline::within(
            &d,
            Duration::ZERO,
            "reading the metrics",
            move || match &cli.input {
                Some(file) => read_input(file, format, &conn),
                None => collect(&cli, &conn),
            },
        )??
    };
    if values.is_empty() {
        return Err(NothingToSend("the source holds no values to deliver".into()).into());
    }
    let collected = Timestamp::now();
    if dry_run {
        return print_lines(&values, format);
    }
    let spool = cli.spool.open(TOOL, &conn)?;
    let mut opts = conn.sender.clone();
    opts.chunk_size = cli.chunk.map(|c| usize::try_from(c).unwrap_or(usize::MAX));
    let mut routes: Vec<Route> = conn.destinations.iter().map(Route::new).collect();
    let sent = spool::send(
        spool.as_ref(),
        &mut routes,
        values,
        Some(collected),
        &conn.deadline,
        &opts,
        spool::Tell {
            tool: TOOL,
            kept: true,
        },
    )?;
    let (delivery, values) = (sent.delivery, sent.live);
    if sent.replayed > 0 && cli.verbose {
        outcome::warn(
            TOOL,
            format_args!(
                "sent {} spooled value(s) ahead of this run's",
                sent.replayed
            ),
        );
    }
    if cli.verbose {
        for r in &delivery.reports {
            let who = r
                .answered_by
                .as_ref()
                .map_or_else(|| r.destination.to_string(), ToString::to_string);
            let then = r.error.as_ref().map(|e| format!("; then: {e}"));
            outcome::warn(
                TOOL,
                format_args!(
                    "{who}: {}/{} request(s) answered; {}{}",
                    r.requests_answered,
                    r.requests,
                    r.summary,
                    then.unwrap_or_default()
                ),
            );
        }
    }
    delivery
        .into_result()
        .map_err(|e| match single_host(&values) {
            Some(host) => active::explain(
                e,
                host,
                &conn.destinations,
                &conn.deadline,
                &conn.sender.connect,
            ),
            None => e,
        })?;
    if let Some(loss) = sent.loss {
        return Err(loss.into());
    }
    Ok(())
}

/// The host every value is for, if there is one (an input file can name several).
fn single_host(values: &[Value]) -> Option<&str> {
    let first = &values.first()?.host;
    values.iter().all(|v| v.host == *first).then_some(first)
}

/// Fetch the metrics document and turn the chosen kinds' statistics into values.
pub fn collect(cli: &Cli, conn: &Connection) -> outcome::Result<Vec<Value>> {
    let kinds = cli
        .kind
        .ok_or_else(|| UsageError("a metric KIND is required".into()))?;
    if kinds == Kinds::Prometheus {
        return collect_prometheus(cli, conn);
    }
    if cli.prometheus.any() {
        return Err(UsageError(
            "--format, --filter, --exclude and --quantiles apply to KIND prometheus".into(),
        )
        .into());
    }
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
        .collect::<outcome::Result<Vec<_>>>()?;
    let src = Source::from_str(&cli.source)?;
    let bytes = src.fetch(&conn.deadline, source::DEFAULT_MAX_BYTES)?;
    // The server stamps arrival within milliseconds; a clock per value costs it more (-T).
    let clock = cli.with_timestamps.then(Timestamp::now);
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
            outcome::warn(
                TOOL,
                format_args!(
                    "skipped {} {kind} value(s) Zabbix cannot store as numbers (first: {}.{}: {})",
                    parsed.skipped.len(),
                    shown(&first.metric),
                    shown(&first.stat),
                    first.reason
                ),
            );
        }
        if let Some(first) = parsed.unknown_units.first() {
            outcome::warn(
                TOOL,
                format_args!(
                    "{} {kind} unit field(s) name a unit with no known conversion to seconds; \
                     their values are delivered as they are (first: {}: {} {})",
                    parsed.unknown_units.len(),
                    shown(&first.metric),
                    first.field,
                    first.unit
                ),
            );
        }
        push_values(&mut values, parsed.metrics, template, &conn.host, clock);
    }
    Ok(values)
}

/// Every numeric sample of a Prometheus / OpenMetrics endpoint, keyed as the template's
/// prototypes expand (`prometheus.<rule>[{#METRIC},{#LABELS}]`), at the sample's own timestamp
/// if it has one, else at the collection time.
pub fn collect_prometheus(cli: &Cli, conn: &Connection) -> outcome::Result<Vec<Value>> {
    if cli.key_template.is_some() || !cli.stats.is_empty() {
        return Err(
            UsageError("--key-template and --stats do not apply to prometheus".into()).into(),
        );
    }
    let templates = prometheus::key_templates()?;
    let src = Source::from_str(&cli.source)?;
    let expo = prometheus::scrape(
        &src,
        &conn.deadline,
        cli.prometheus.format,
        &cli.prometheus.options(),
    )?;
    let clock = cli.with_timestamps.then(Timestamp::now);
    if let Some(w) = expo.skips.warning() {
        outcome::warn(TOOL, w);
    }
    let mut values = Vec::with_capacity(expo.series.len());
    let host: Arc<str> = conn.host.as_str().into();
    let (mut non_finite, mut unencodable) = (Vec::new(), 0usize);
    for s in &expo.series {
        let Some(value) = prometheus::format_value(s.value) else {
            non_finite.push(s);
            continue;
        };
        match templates[&expo.family_of(s).kind].render(&s.name, Some(&s.labels_text)) {
            Ok(key) => values.push(Value {
                host: Arc::clone(&host),
                key,
                value,
                clock: s
                    .clock
                    .map(|c| Timestamp {
                        clock: c.secs,
                        ns: Some(c.nanos),
                    })
                    .or(clock),
            }),
            Err(e) => {
                unencodable += 1;
                if unencodable == 1 {
                    let series = prometheus::series_text(&s.name, &s.labels_text);
                    outcome::warn(TOOL, format_args!("skipping {}: {e}", shown(&series)));
                }
            }
        }
    }
    if let Some(first) = non_finite.first() {
        let series = prometheus::series_text(&first.name, &first.labels_text);
        outcome::warn(
            TOOL,
            format_args!(
                "skipped {} value(s) Zabbix cannot store as numbers (first: {} = {})",
                non_finite.len(),
                shown(&series),
                first.value
            ),
        );
    }
    if unencodable > 1 {
        outcome::warn(
            TOOL,
            format_args!("skipped {unencodable} value(s) whose item key cannot be encoded"),
        );
    }
    Ok(values)
}

/// Append a value for every statistic of `metrics`, keyed by `template`; a metric whose key
/// cannot be encoded is left out, with a warning.
fn push_values(
    values: &mut Vec<Value>,
    metrics: Vec<Metric>,
    template: &KeyTemplate,
    host: &str,
    clock: Option<Timestamp>,
) {
    let mut unencodable = 0usize;
    // One host name for every value (the spool keeps them all until the reply).
    let host: Arc<str> = host.into();
    // Consumed metric by metric: each value string moves into its `Value`.
    for metric in metrics {
        for stat in metric.stats {
            match template.render(&metric.name, Some(&stat.name)) {
                Ok(key) => values.push(Value {
                    host: Arc::clone(&host),
                    key,
                    value: stat.value,
                    clock,
                }),
                Err(e) => {
                    unencodable += 1;
                    if unencodable == 1 {
                        outcome::warn(
                            TOOL,
                            format_args!("skipping metric {:?}: {e}", shown(&metric.name)),
                        );
                    }
                }
            }
        }
    }
    if unencodable > 1 {
        outcome::warn(
            TOOL,
            format_args!("skipped {unencodable} value(s) whose item key cannot be encoded"),
        );
    }
}

/// The key template for `kind`: the given one, checked, or the kind's default.
pub fn key_template(kind: Kind, given: Option<&str>) -> outcome::Result<KeyTemplate> {
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
) -> outcome::Result<Vec<Value>> {
    let src = Source::from_str(file)?;
    let bytes = src.fetch(&conn.deadline, source::DEFAULT_MAX_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|e| InputError {
        line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count(),
        reason: format!("input {src} is not valid UTF-8"),
    })?;
    let lines = input::parse_all(&text, format)?;
    // Lines mostly name one host (or "-"): consecutive values share it.
    let mut last: Option<Arc<str>> = None;
    Ok(lines
        .into_iter()
        .map(|l| Value {
            host: {
                let h = if l.host == "-" { &conn.host } else { &l.host };
                match &last {
                    Some(a) if **a == **h => Arc::clone(a),
                    _ => {
                        let a: Arc<str> = h.as_str().into();
                        last = Some(Arc::clone(&a));
                        a
                    }
                }
            },
            key: l.key,
            value: l.value,
            clock: l.clock.map(|clock| Timestamp { clock, ns: l.ns }),
        })
        .collect())
}

fn print_lines(values: &[Value], format: InputFormat) -> outcome::Result<()> {
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
        input::write_line(&mut out, &v.host, &v.key, &v.value, clock, ns).map_err(Error::output)?;
    }
    out.flush().map_err(Error::output)
}
