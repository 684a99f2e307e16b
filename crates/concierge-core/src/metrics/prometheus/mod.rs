//! Prometheus text exposition (format 0.0.4) and OpenMetrics 1.0, read into series.
//!
//! The document is read line by line in one pass ([`lexer`]); what is kept is one [`Series`]
//! per sample (name, sorted labels, value, timestamp) and one [`Family`] per metric family
//! (type, help, unit), never a tree of the document. Rules, for both formats:
//!
//! - A syntax error anywhere (an unterminated string, a bad number, a label given twice,
//!   invalid UTF-8, a line over [`MAX_LINE`] bytes, an OpenMetrics document without its final
//!   `# EOF` or with content after it) rejects the whole document with a [`ParseError`] that
//!   names the line and column: a partial exposition must not pass for a whole one.
//! - A series (sample name and label set) seen again is a counted skip: the first one is
//!   kept, as Prometheus keeps the first. So is a sample whose timestamp Zabbix cannot store
//!   (before 1970 or after 2038).
//! - NaN and ±Inf are kept here (discovery lists them: a summary quantile is NaN until the
//!   first event) and counted as skipped when values are delivered.
//! - `_created` samples (counter, histogram and summary creation times) are recognised and
//!   left out: they are reset timestamps, not measurements.
//! - A sample belongs to the family whose name it equals, or whose name it extends by a
//!   suffix of the family's type (`_total`, `_bucket`, `_sum`, `_count`, `_gsum`, `_gcount`,
//!   `_info`); any other sample is a family of its own, of type untyped (text) or unknown
//!   (OpenMetrics). A second HELP, TYPE or UNIT line for a family is ignored in the text
//!   format and an error in OpenMetrics.
//! - Timestamps (milliseconds in the text format, seconds in OpenMetrics) become the
//!   series' [`Clock`].
//! - A label with an empty value is dropped: the data model says it is the same as none.

mod lexer;
pub mod quantile;
pub mod select;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use crate::outcome::{Classify, Failure};
use crate::text::Shown;
use crate::zabbix::key::{KeyError, KeyTemplate};
use lexer::{Line, RawSample, RawTimestamp};
pub use select::Selection;

/// The longest line read, in bytes; a longer line is an error (no real exposition has one,
/// and an item key cannot exceed 2048 characters anyway).
pub const MAX_LINE: usize = 64 * 1024;

/// The Accept header for an HTTP scrape: OpenMetrics first, then the text format, as
/// Prometheus asks.
pub const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
                          application/openmetrics-text;version=0.0.1;q=0.75,\
                          text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    Text,
    /// OpenMetrics 1.0 (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
}

impl Format {
    /// The format a Content-Type names, if it names one.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let media = content_type.split(';').next()?.trim();
        if media.eq_ignore_ascii_case("application/openmetrics-text") {
            Some(Format::OpenMetrics)
        } else if media.eq_ignore_ascii_case("text/plain") {
            Some(Format::Text)
        } else {
            None
        }
    }

    /// The format of `doc`: `forced` if given, else what `content_type` names, else
    /// OpenMetrics when the last non-blank line is `# EOF`, else the text format.
    pub fn detect(forced: Option<Format>, content_type: Option<&str>, doc: &[u8]) -> Format {
        if let Some(f) = forced.or_else(|| content_type.and_then(Format::from_content_type)) {
            return f;
        }
        let end = doc
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        let last = doc[..end]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(&doc[..end], |i| &doc[i + 1..end]);
        if last == b"# EOF" {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

impl FromStr for Format {
    type Err = String;

    /// `text` (or `prometheus`, `0.0.4`) and `openmetrics` (or `om`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" | "prometheus" | "0.0.4" => Ok(Format::Text),
            "openmetrics" | "om" => Ok(Format::OpenMetrics),
            _ => Err(format!(
                "unknown exposition format {s:?} (expected text or openmetrics)"
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Text => "text 0.0.4",
            Format::OpenMetrics => "OpenMetrics 1.0",
        })
    }
}

/// A metric family's type, as TYPE declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    /// OpenMetrics' type for samples of no declared type.
    Unknown,
    /// The text format's type for samples of no declared type.
    Untyped,
}

impl MetricType {
    /// Every type, in the order the template's discovery rules list them.
    pub const ALL: [MetricType; 9] = [
        MetricType::Counter,
        MetricType::Gauge,
        MetricType::Untyped,
        MetricType::Unknown,
        MetricType::Histogram,
        MetricType::GaugeHistogram,
        MetricType::Summary,
        MetricType::Info,
        MetricType::StateSet,
    ];

    /// The TYPE word (`counter`, `gaugehistogram`, …).
    pub fn name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
            MetricType::Untyped => "untyped",
        }
    }

    /// The template's discovery rule (and item key group) for this type: counter; gauge
    /// (also untyped and unknown); histogram (also gaugehistogram); summary; state (info
    /// and stateset).
    pub fn group(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge | MetricType::Unknown | MetricType::Untyped => "gauge",
            MetricType::Histogram | MetricType::GaugeHistogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Info | MetricType::StateSet => "state",
        }
    }

    /// The sample suffixes of this type besides the bare family name, with their roles.
    fn suffixes(self) -> &'static [(&'static str, Role)] {
        match self {
            MetricType::Counter => &[("_total", Role::Total), ("_created", Role::Created)],
            MetricType::Histogram => &[
                ("_bucket", Role::Bucket),
                ("_sum", Role::Sum),
                ("_count", Role::Count),
                ("_created", Role::Created),
            ],
            MetricType::GaugeHistogram => &[
                ("_bucket", Role::Bucket),
                ("_gsum", Role::Sum),
                ("_gcount", Role::Count),
            ],
            MetricType::Summary => &[
                ("_sum", Role::Sum),
                ("_count", Role::Count),
                ("_created", Role::Created),
            ],
            MetricType::Info => &[("_info", Role::Info)],
            _ => &[],
        }
    }

    /// The role of a sample named exactly as its family.
    fn bare_role(self, labels: &[(String, String)]) -> Role {
        match self {
            MetricType::Counter => Role::Total,
            MetricType::Summary if labels.iter().any(|(n, _)| n == "quantile") => Role::Quantile,
            MetricType::Info => Role::Info,
            MetricType::StateSet => Role::State,
            _ => Role::Value,
        }
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MetricType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MetricType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown metric type {s:?} (expected one of: {})",
                    MetricType::ALL.map(MetricType::name).join(", ")
                )
            })
    }
}

/// What a sample is within its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A gauge's, an untyped or unknown metric's value.
    Value,
    /// A counter's total.
    Total,
    /// A creation timestamp (`_created`).
    Created,
    /// A histogram bucket (`_bucket{le="…"}`).
    Bucket,
    /// A histogram's or summary's sum (`_sum`, `_gsum`).
    Sum,
    /// A histogram's or summary's count (`_count`, `_gcount`).
    Count,
    /// A summary quantile, or one computed from histogram buckets.
    Quantile,
    /// An info metric (always 1; the labels are the information).
    Info,
    /// A stateset state (1 or 0).
    State,
}

/// One metric family: TYPE, HELP and UNIT.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: MetricType,
    /// The HELP text (unescaped); empty when none was given.
    pub help: String,
    /// The UNIT (OpenMetrics); empty when none was given.
    pub unit: String,
    typed: bool,
}

/// When a sample was taken, if the exposition says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub secs: u32,
    pub nanos: u32,
}

/// One sample: a series and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Index into [`Exposition::families`].
    pub family: usize,
    /// The sample's metric name (`http_requests_total`, `rpc_seconds_bucket`).
    pub name: String,
    pub role: Role,
    /// The labels, sorted by name.
    pub labels: Vec<(String, String)>,
    /// The labels in canonical text form (see [`canonical_labels`]).
    pub labels_text: String,
    /// The value; may be NaN or infinite.
    pub value: f64,
    pub clock: Option<Clock>,
}

/// Samples left out while reading, by reason, with the first of each for the warning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Skips {
    /// A series seen again (the first is kept).
    pub duplicates: usize,
    /// A timestamp Zabbix cannot store.
    pub bad_timestamps: usize,
    /// `series: reason` of the first skip of each reason.
    pub examples: Vec<String>,
}

impl Skips {
    fn add(&mut self, series: &str, reason: &str, duplicate: bool) {
        let count = if duplicate {
            &mut self.duplicates
        } else {
            &mut self.bad_timestamps
        };
        *count += 1;
        if *count == 1 {
            self.examples
                .push(format!("{}: {reason}", cut(series, 120)));
        }
    }

    /// How many samples were left out.
    pub fn total(&self) -> usize {
        self.duplicates + self.bad_timestamps
    }

    /// The one-line warning for stderr, if anything was left out.
    pub fn warning(&self) -> Option<String> {
        (self.total() > 0).then(|| {
            format!(
                "skipped {} sample(s) ({} repeated series, {} timestamps Zabbix cannot store); first: {}",
                self.total(),
                self.duplicates,
                self.bad_timestamps,
                self.examples.join("; ")
            )
        })
    }
}

/// A document read into families and series.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposition {
    pub format: Format,
    pub families: Vec<Family>,
    /// Every selected series, in document order; computed quantiles last.
    pub series: Vec<Series>,
    pub skips: Skips,
}

/// What to read from a document.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Which metrics to keep (by family or sample name).
    pub selection: Selection,
    /// Quantiles (0 to 1) to compute from every histogram's buckets, as Prometheus'
    /// `histogram_quantile` does; each becomes a series named as the family, with a
    /// `quantile` label.
    pub quantiles: Vec<f64>,
}

/// Why a document is not a valid exposition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number (for a missing `# EOF`: the line after the last).
    pub line: usize,
    /// 1-based character column, 0 when the whole line is meant.
    pub column: usize,
    pub kind: ErrorKind,
    /// The document text at the error, escaped and cut short.
    pub near: String,
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    Expected(&'static str),
    Unterminated(&'static str),
    BadValue,
    BadTimestamp,
    DuplicateLabel(String),
    UnknownType(String),
    /// A comment line in OpenMetrics, where only HELP, TYPE, UNIT and EOF may start with `#`.
    Comment,
    DuplicateMetadata(&'static str, String),
    NotUtf8,
    LineTooLong,
    CarriageReturn,
    MissingEof,
    AfterEof,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Expected(what) => write!(f, "expected {what}"),
            ErrorKind::Unterminated(what) => write!(f, "unterminated {what}"),
            ErrorKind::BadValue => f.write_str("invalid sample value"),
            ErrorKind::BadTimestamp => f.write_str("invalid timestamp"),
            ErrorKind::DuplicateLabel(name) => {
                write!(f, "label {:?} given twice", Shown::new(name, 60))
            }
            ErrorKind::UnknownType(word) => {
                write!(f, "unknown metric type {:?}", Shown::new(word, 40))
            }
            ErrorKind::Comment => f.write_str(
                "comment line in OpenMetrics (only # HELP, # TYPE, # UNIT and # EOF are allowed)",
            ),
            ErrorKind::DuplicateMetadata(what, family) => {
                write!(f, "second {what} line for {:?}", Shown::new(family, 60))
            }
            ErrorKind::NotUtf8 => f.write_str("not valid UTF-8"),
            ErrorKind::LineTooLong => write!(f, "line longer than {MAX_LINE} bytes"),
            ErrorKind::CarriageReturn => f.write_str("carriage return in OpenMetrics"),
            ErrorKind::MissingEof => {
                f.write_str("the OpenMetrics document does not end with # EOF (cut short?)")
            }
            ErrorKind::AfterEof => f.write_str("content after # EOF"),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if self.column > 0 {
            write!(f, ", column {}", self.column)?;
        }
        write!(f, ": {}", self.kind)?;
        if !self.near.is_empty() {
            write!(f, " near {:?}", Shown::new(&self.near, 41))?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseError {}

impl Classify for ParseError {
    fn failure(&self) -> Failure {
        match self.kind {
            ErrorKind::Expected(_)
            | ErrorKind::Unterminated(_)
            | ErrorKind::BadValue
            | ErrorKind::BadTimestamp
            | ErrorKind::DuplicateLabel(_)
            | ErrorKind::UnknownType(_)
            | ErrorKind::Comment
            | ErrorKind::DuplicateMetadata(..)
            | ErrorKind::NotUtf8
            | ErrorKind::LineTooLong
            | ErrorKind::CarriageReturn
            | ErrorKind::MissingEof
            | ErrorKind::AfterEof => Failure::SourceUnparsable,
        }
    }
}

/// `text` cut to `max` characters, control characters escaped (the crate's rule for text
/// from a document).
fn cut(text: &str, max: usize) -> String {
    Shown::new(text, max).to_string()
}

/// `text` cut to `max` characters (then `…`), unescaped: for `{:?}`-quoting through
/// [`Shown`] when shown.
fn cut_raw(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Reads `doc` as `format`, keeping what `options` select.
pub fn read(doc: &[u8], format: Format, options: &Options) -> Result<Exposition, ParseError> {
    let mut reader = Reader {
        format,
        families: Vec::new(),
        by_name: HashMap::new(),
        series: Vec::new(),
        seen: HashSet::new(),
        skips: Skips::default(),
        options,
        buckets: quantile::Collector::default(),
    };
    let mut eof_at = None;
    let mut line_no = 0;
    for raw in doc.split(|&b| b == b'\n') {
        line_no += 1;
        let error = |column: usize, kind: ErrorKind, text: &str| ParseError {
            line: line_no,
            column,
            kind,
            near: text
                .get(column.saturating_sub(1)..)
                .map_or_else(String::new, |t| cut_raw(t, 40)),
        };
        if raw.len() > MAX_LINE {
            return Err(error(0, ErrorKind::LineTooLong, ""));
        }
        let Ok(mut text) = std::str::from_utf8(raw) else {
            return Err(error(0, ErrorKind::NotUtf8, ""));
        };
        if let Some(stripped) = text.strip_suffix('\r') {
            if format == Format::OpenMetrics {
                return Err(error(0, ErrorKind::CarriageReturn, ""));
            }
            text = stripped;
        }
        let parsed = lexer::line(text, format).map_err(|(kind, at)| {
            let column = text.get(..at).map_or(at, |h| h.chars().count()) + 1;
            error(column, kind, text)
        })?;
        if eof_at.is_some() && parsed != Line::Blank {
            return Err(error(0, ErrorKind::AfterEof, text));
        }
        match parsed {
            Line::Blank | Line::Comment => {}
            Line::Eof => eof_at = Some(line_no),
            Line::Help { name, text: help } => reader
                .metadata(&name, "HELP", |f| set_once(&mut f.help, help))
                .map_err(|kind| error(0, kind, text))?,
            Line::Type { name, kind } => {
                let Ok(kind) = kind.parse::<MetricType>() else {
                    return Err(error(0, ErrorKind::UnknownType(kind.into()), text));
                };
                reader
                    .metadata(&name, "TYPE", |f| {
                        let first = !f.typed;
                        if first {
                            f.kind = kind;
                            f.typed = true;
                        }
                        first
                    })
                    .map_err(|kind| error(0, kind, text))?
            }
            Line::Unit { name, unit } => reader
                .metadata(&name, "UNIT", |f| set_once(&mut f.unit, unit))
                .map_err(|kind| error(0, kind, text))?,
            Line::Sample(raw) => reader.sample(raw),
        }
    }
    if format == Format::OpenMetrics && eof_at.is_none() {
        // A document ending in a line feed has an empty last "line" after it.
        let last = if doc.ends_with(b"\n") {
            line_no
        } else {
            line_no + 1
        };
        return Err(ParseError {
            line: last,
            column: 0,
            kind: ErrorKind::MissingEof,
            near: String::new(),
        });
    }
    Ok(reader.finish())
}

/// Sets an empty `slot` to `value`; false (and no change) when it was set already.
fn set_once(slot: &mut String, value: String) -> bool {
    let first = slot.is_empty();
    if first {
        *slot = value;
    }
    first
}

/// The state of one pass.
struct Reader<'o> {
    format: Format,
    families: Vec<Family>,
    by_name: HashMap<String, usize>,
    series: Vec<Series>,
    /// `name \0 labels` of every series kept, to find duplicates.
    seen: HashSet<String>,
    skips: Skips,
    options: &'o Options,
    buckets: quantile::Collector,
}

impl Reader<'_> {
    /// Applies a HELP/TYPE/UNIT line; `set` returns false when the family already had one.
    fn metadata(
        &mut self,
        name: &str,
        what: &'static str,
        set: impl FnOnce(&mut Family) -> bool,
    ) -> Result<(), ErrorKind> {
        let i = self.family(name);
        if !set(&mut self.families[i]) && self.format == Format::OpenMetrics {
            return Err(ErrorKind::DuplicateMetadata(what, name.to_string()));
        }
        Ok(())
    }

    /// The index of the family called `name`, created (untyped) when new.
    fn family(&mut self, name: &str) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        self.families.push(Family {
            name: name.to_string(),
            kind: match self.format {
                Format::Text => MetricType::Untyped,
                Format::OpenMetrics => MetricType::Unknown,
            },
            help: String::new(),
            unit: String::new(),
            typed: false,
        });
        self.by_name
            .insert(name.to_string(), self.families.len() - 1);
        self.families.len() - 1
    }

    /// The family and role of a sample named `name`.
    fn classify(&mut self, name: &str, labels: &[(String, String)]) -> (usize, Role) {
        // The text format has no `_created` suffix: clients write creation times as gauges
        // named after the counter, histogram or summary they belong to.
        if let Some(base) = name.strip_suffix("_created") {
            let owner = [base.to_string(), format!("{base}_total")]
                .iter()
                .filter_map(|n| self.by_name.get(n.as_str()).copied())
                .find(|&i| {
                    matches!(
                        self.families[i].kind,
                        MetricType::Counter | MetricType::Histogram | MetricType::Summary
                    )
                });
            if let Some(i) = owner {
                return (i, Role::Created);
            }
        }
        if let Some(&i) = self.by_name.get(name) {
            return (i, self.families[i].kind.bare_role(labels));
        }
        for (suffix, role) in [
            ("_total", Role::Total),
            ("_created", Role::Created),
            ("_bucket", Role::Bucket),
            ("_sum", Role::Sum),
            ("_count", Role::Count),
            ("_gsum", Role::Sum),
            ("_gcount", Role::Count),
            ("_info", Role::Info),
        ] {
            let Some(base) = name.strip_suffix(suffix) else {
                continue;
            };
            if let Some(&i) = self.by_name.get(base) {
                if self.families[i]
                    .kind
                    .suffixes()
                    .iter()
                    .any(|(s, _)| *s == suffix)
                {
                    return (i, role);
                }
            }
        }
        let i = self.family(name);
        (i, Role::Value)
    }

    fn sample(&mut self, raw: RawSample) {
        let RawSample {
            name,
            mut labels,
            value,
            timestamp,
        } = raw;
        let (family, role) = self.classify(&name, &labels);
        if role == Role::Created {
            return;
        }
        let family_name = &self.families[family].name;
        let keep = self.options.selection.matches(family_name, &name);
        // Buckets feed the quantiles of a selected family even when they are not kept
        // themselves (`--exclude '*_bucket' --quantiles 0.95` sends only the quantiles).
        let feeds_quantiles = role == Role::Bucket
            && !self.options.quantiles.is_empty()
            && matches!(
                self.families[family].kind,
                MetricType::Histogram | MetricType::GaugeHistogram
            )
            && self.options.selection.matches(family_name, family_name);
        if !keep && !feeds_quantiles {
            return;
        }
        // An empty label value is the same as no label (Prometheus data model, OpenMetrics).
        labels.retain(|(_, v)| !v.is_empty());
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        let labels_text = canonical_labels(&labels);
        let id = format!("{name}\0{labels_text}");
        if self.seen.contains(&id) {
            self.skips.add(
                &series_text(&name, &labels_text),
                "series given twice",
                true,
            );
            return;
        }
        let clock = match timestamp {
            None => None,
            Some(RawTimestamp::Exact { secs, nanos })
                if (0..=i64::from(i32::MAX)).contains(&secs) =>
            {
                Some(Clock {
                    secs: secs as u32,
                    nanos,
                })
            }
            Some(_) => {
                self.skips.add(
                    &series_text(&name, &labels_text),
                    "timestamp outside 1970-2038",
                    false,
                );
                return;
            }
        };
        self.seen.insert(id);
        if feeds_quantiles {
            self.buckets.add(family, &labels, value, clock);
        }
        if !keep {
            return;
        }
        self.series.push(Series {
            family,
            name,
            role,
            labels,
            labels_text,
            value,
            clock,
        });
    }

    fn finish(mut self) -> Exposition {
        for group in self.buckets.groups() {
            let family = &self.families[group.family];
            for &q in &self.options.quantiles {
                let mut labels = group.labels.clone();
                labels.push(("quantile".to_string(), format_number(q)));
                labels.sort_by(|a, b| a.0.cmp(&b.0));
                let labels_text = canonical_labels(&labels);
                let id = format!("{}\0{labels_text}", family.name);
                if !self.seen.insert(id) {
                    self.skips.add(
                        &series_text(&family.name, &labels_text),
                        "computed quantile clashes with a sample",
                        true,
                    );
                    continue;
                }
                self.series.push(Series {
                    family: group.family,
                    name: family.name.clone(),
                    role: Role::Quantile,
                    labels,
                    labels_text,
                    value: quantile::bucket_quantile(q, &group.buckets),
                    clock: group.clock,
                });
            }
        }
        Exposition {
            format: self.format,
            families: self.families,
            series: self.series,
            skips: self.skips,
        }
    }
}

/// True for names that need no quoting: `[a-zA-Z_:][a-zA-Z0-9_:]*` (metric) or without `:`
/// (label).
fn is_legacy_name(name: &str, colons: bool) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || (colons && b == b':');
    name.bytes().next().is_some_and(|b| !b.is_ascii_digit()) && name.bytes().all(ok)
}

/// Appends `text` with `\`, `"` and line feed escaped, as label values are written.
fn push_escaped(out: &mut String, text: &str) {
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            _ => out.push(ch),
        }
    }
}

/// The canonical text of a sorted label set: `code="200",method="GET"` (values escaped as
/// in the exposition, names outside `[a-zA-Z_][a-zA-Z0-9_]*` quoted). Empty without labels.
/// This is the `{#LABELS}` macro and the second parameter of every item key.
pub fn canonical_labels(labels: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if is_legacy_name(name, false) {
            out.push_str(name);
        } else {
            out.push('"');
            push_escaped(&mut out, name);
            out.push('"');
        }
        out.push_str("=\"");
        push_escaped(&mut out, value);
        out.push('"');
    }
    out
}

/// The series as Prometheus writes it: `name{labels}`, `name`, or `{"quoted.name",labels}`.
pub fn series_text(name: &str, labels_text: &str) -> String {
    let mut out = String::with_capacity(name.len() + labels_text.len() + 4);
    if is_legacy_name(name, true) {
        out.push_str(name);
        if !labels_text.is_empty() {
            out.push('{');
            out.push_str(labels_text);
            out.push('}');
        }
    } else {
        out.push_str("{\"");
        push_escaped(&mut out, name);
        out.push('"');
        if !labels_text.is_empty() {
            out.push(',');
            out.push_str(labels_text);
        }
        out.push('}');
    }
    out
}

/// A number as Zabbix stores it: shortest round-trip decimal, exponent notation for very
/// large or small magnitudes. `None` for NaN and infinities, which Zabbix cannot store.
pub fn format_value(v: f64) -> Option<String> {
    v.is_finite().then(|| format_number(v))
}

fn format_number(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-5..1e15).contains(&a) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

impl Exposition {
    /// The family of a series.
    pub fn family_of(&self, s: &Series) -> &Family {
        &self.families[s.family]
    }

    /// The Zabbix unit of a series' value (see [`zabbix_unit`]).
    pub fn unit_of(&self, s: &Series) -> String {
        let family = self.family_of(s);
        match s.role {
            Role::Bucket | Role::Count | Role::Info | Role::State => String::new(),
            Role::Created => "unixtime".to_string(),
            _ => base_unit(family),
        }
    }
}

/// The unit of a family's measured values: its UNIT, else the unit its name ends with
/// (`_seconds`, `_bytes`, …, before any `_total`), mapped to the Zabbix unit by
/// [`zabbix_unit`]; empty when neither says.
fn base_unit(family: &Family) -> String {
    if !family.unit.is_empty() {
        return zabbix_unit(&family.unit)
            .unwrap_or(&family.unit)
            .to_string();
    }
    let name = family.name.strip_suffix("_total").unwrap_or(&family.name);
    name.rsplit('_')
        .next()
        .and_then(zabbix_unit)
        .unwrap_or("")
        .to_string()
}

/// The Zabbix unit for a Prometheus base unit name: seconds → s, bytes → B, bits → b,
/// percent → %, and the SI ones (volts → V, amperes → A, joules → J, hertz → Hz, grams → g,
/// meters → m, celsius → °C); ratio has none. `None` for names not in this list.
pub fn zabbix_unit(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "seconds" => "s",
        "bytes" => "B",
        "bits" => "b",
        "percent" => "%",
        "ratio" => "",
        "volts" => "V",
        "amperes" => "A",
        "joules" => "J",
        "hertz" => "Hz",
        "grams" => "g",
        "meters" => "m",
        "celsius" => "°C",
        _ => return None,
    })
}

/// The unit of a counter's per-second rate: Bps and bps for bytes and bits (Zabbix scales
/// those by 1024 and 1000), else the unit with `/s`; empty for a counter without a unit.
pub fn rate_unit(unit: &str) -> String {
    match unit {
        "" => String::new(),
        "B" => "Bps".to_string(),
        "b" => "bps".to_string(),
        u => format!("{u}/s"),
    }
}

/// The item key template of a series of type `kind`: `prometheus.<group>[{name},{stat}]`,
/// rendered with `{name}` = the sample name and `{stat}` = [`canonical_labels`]. The
/// template's prototypes are `prometheus.<group>[{#METRIC},{#LABELS}]` (one group per LLD
/// rule: Zabbix 7.0 wants prototype keys unique within a template), which the server expands
/// to the same key.
pub fn item_key_template(kind: MetricType) -> &'static str {
    match kind.group() {
        "counter" => "prometheus.counter[{name},{stat}]",
        "histogram" => "prometheus.histogram[{name},{stat}]",
        "summary" => "prometheus.summary[{name},{stat}]",
        "state" => "prometheus.state[{name},{stat}]",
        _ => "prometheus.gauge[{name},{stat}]",
    }
}

/// The key template of every metric type (see [`item_key_template`]).
pub fn key_templates() -> Result<HashMap<MetricType, KeyTemplate>, KeyError> {
    MetricType::ALL
        .iter()
        .map(|&t| Ok((t, item_key_template(t).parse()?)))
        .collect()
}

/// Fetches `source` (asking for OpenMetrics first) and reads it: the format is `forced`, else
/// what the answer's Content-Type names, else found from the document (`# EOF`).
pub fn scrape(
    source: &crate::source::Source,
    deadline: &crate::deadline::Deadline,
    forced: Option<Format>,
    options: &Options,
) -> crate::outcome::Result<Exposition> {
    use crate::outcome::Context;
    let doc = source.fetch_document(deadline, crate::source::DEFAULT_MAX_BYTES, ACCEPT)?;
    let format = Format::detect(forced, doc.content_type.as_deref(), &doc.body);
    read(&doc.body, format, options)
        .with_context(|| format!("cannot read {source} as a {format} exposition"))
}

#[cfg(test)]
mod tests;
