//! Dropwizard (Codahale) metrics JSON, as the metrics-json 3.x/4.x servlet writes it.
//!
//! The document is an object with optional `gauges`, `counters`, `histograms`, `meters` and
//! `timers` sections, each mapping a metric name to an object of statistics. Only JSON numbers
//! are delivered; anything else is reported in [`Metrics::skipped`].
//!
//! The document is read in one streaming pass (serde visitors driving serde_json's
//! deserializer), without building a tree: of the requested sections, each entry's name and
//! the requested statistics are kept; everything else (other sections, other fields, the
//! `units` strings) is skipped as [`IgnoredAny`], which checks JSON syntax only, not number
//! ranges, string encodings or nesting depth.
//!
//! Durations are delivered in seconds and rates per second, whatever unit the entry's
//! `duration_units` (timers), `rate_units` (timers) or `units` (meters) names: every
//! `java.util.concurrent.TimeUnit` Dropwizard writes, `nanoseconds` to `days`, and rates such
//! as `calls/second` or `events/minute`. A unit this module does not know leaves the values as
//! they are and is reported in [`Metrics::unknown_units`]; a missing one means seconds.
//!
//! Metrics come out sorted by name (byte order), whatever the document order, as when this
//! module read the document into serde_json's `Map` (a `BTreeMap`). As with that map, when a
//! name occurs more than once in a section its last entry counts (the earlier ones are neither
//! delivered nor reported as skipped), and when a section occurs more than once its last
//! occurrence counts.

use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use super::{Kind, Metric, Metrics, Skipped, Stat, UnknownUnit};
use crate::outcome::{Classify, Failure};
use crate::text::shown;

/// Why a document could not be read as Dropwizard metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not valid JSON (even after replacing bare `NaN`/`Infinity` tokens). Line and column are
    /// 1-based and refer to the original document.
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    /// The top level, or the section of the requested kind, is not a JSON object.
    NotAnObject,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Json {
                line,
                column,
                message,
            } => write!(
                f,
                "invalid metrics JSON at line {line}, column {column}: {}",
                // serde_json quotes what it found, and that comes from the document.
                shown(message)
            ),
            ParseError::NotAnObject => f.write_str(
                "not a Dropwizard metrics document: the top level or the metric section is not \
                 a JSON object",
            ),
        }
    }
}

impl std::error::Error for ParseError {}

impl Classify for ParseError {
    fn failure(&self) -> Failure {
        match self {
            ParseError::Json { .. } | ParseError::NotAnObject => Failure::SourceUnparsable,
        }
    }
}

/// The metrics of `kind` in `doc`, each with the statistics named in `stats` in that order (for
/// gauges and counters `stats` is ignored: `value` / `count`). A missing (or `null`) section
/// gives no metrics; statistics a metric lacks are left out silently; non-numeric values and
/// metric entries that are not objects (stat `*`) are recorded in `skipped`.
pub fn parse(doc: &[u8], kind: Kind, stats: &[&str]) -> Result<Metrics, ParseError> {
    parse_kinds(doc, &[(kind, stats)])?
        .pop()
        .expect("one result per requested kind")
}

/// Several kinds in one pass over `doc`: one result per `(kind, stats)` pair, in that order,
/// each as [`parse`] would give it. The outer error is the document's (invalid JSON); a kind's
/// own result is [`ParseError::NotAnObject`] when the top level or its section is not an
/// object, so the caller can say which kind failed.
pub fn parse_kinds(
    doc: &[u8],
    wanted: &[(Kind, &[&str])],
) -> Result<Vec<Result<Metrics, ParseError>>, ParseError> {
    let wants: Vec<_> = wanted
        .iter()
        .map(|&(kind, stats)| (kind, Want::Metrics(stats)))
        .collect();
    Ok(read(doc, &wants)?
        .into_iter()
        .map(|got| {
            got.map(|got| match got {
                Got::Metrics(m) => m,
                Got::Names(_) => unreachable!("only metrics were requested"),
            })
        })
        .collect())
}

/// The names of the metrics of `kind` in `doc`, for discovery: the entries worth an item, in
/// the same order as [`parse`]. Only the names (and, for gauges, the kind of `value`) are
/// read; every statistic is skipped unparsed.
pub fn names(doc: &[u8], kind: Kind) -> Result<Vec<String>, ParseError> {
    match read(doc, &[(kind, Want::Names)])?.pop() {
        Some(Ok(Got::Names(names))) => Ok(names),
        Some(Err(e)) => Err(e),
        _ => unreachable!("one names result was requested"),
    }
}

/// What a statistic measures, and so which unit field of its entry applies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// A time span, delivered in seconds.
    Duration,
    /// Events per time, delivered per second.
    Rate,
}

impl Dimension {
    /// The dimension of statistic `stat` of a `kind` metric: `None` for counts and for
    /// histograms and gauges, whose values have no unit Dropwizard knows.
    pub fn of(kind: Kind, stat: &str) -> Option<Dimension> {
        match kind {
            Kind::Timers | Kind::Meters if stat.ends_with("_rate") => Some(Dimension::Rate),
            Kind::Timers if Kind::Timers.all_stats().contains(&stat) && stat != "count" => {
                Some(Dimension::Duration)
            }
            _ => None,
        }
    }

    /// The entry field that names this dimension's unit in a `kind` metric.
    pub fn unit_field(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (Dimension::Duration, _) => "duration_units",
            (Dimension::Rate, Kind::Meters) => "units",
            (Dimension::Rate, _) => "rate_units",
        }
    }

    /// The Zabbix item unit of values of this dimension as delivered.
    pub fn zabbix_unit(self) -> &'static str {
        match self {
            Dimension::Duration => "s",
            Dimension::Rate => "rps",
        }
    }
}

/// How a value in some unit becomes one in seconds (or per second): exact powers of ten and
/// the seconds of a minute, hour and day, applied by one multiplication or one division so that
/// 199 ms is 0.199 s exactly as written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    Same,
    Times(f64),
    Over(f64),
}

impl Scale {
    fn apply(self, x: f64) -> f64 {
        match self {
            Scale::Same => x,
            Scale::Times(k) => x * k,
            Scale::Over(k) => x / k,
        }
    }

    fn inverse(self) -> Scale {
        match self {
            Scale::Same => Scale::Same,
            Scale::Times(k) => Scale::Over(k),
            Scale::Over(k) => Scale::Times(k),
        }
    }
}

/// Seconds per `unit`, a `TimeUnit` name as Dropwizard writes it (plural, or singular as in
/// rate units), any case: `None` for anything else.
pub fn seconds_per(unit: &str) -> Option<Scale> {
    // Asked once per value: compared in place, not lowered into a new string.
    let unit = unit.trim();
    let unit = unit
        .strip_suffix('s')
        .or_else(|| unit.strip_suffix('S'))
        .unwrap_or(unit);
    const UNITS: [(&str, Scale); 7] = [
        ("nanosecond", Scale::Over(1e9)),
        ("microsecond", Scale::Over(1e6)),
        ("millisecond", Scale::Over(1e3)),
        ("second", Scale::Same),
        ("minute", Scale::Times(60.0)),
        ("hour", Scale::Times(3600.0)),
        ("day", Scale::Times(86400.0)),
    ];
    UNITS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
        .map(|&(_, scale)| scale)
}

/// How to bring a value of `dimension` in `unit` (a field's text) to seconds or per second.
pub fn scale(dimension: Dimension, unit: &str) -> Option<Scale> {
    match dimension {
        Dimension::Duration => seconds_per(unit),
        // "calls/second", "events/minute": whatever is counted, per a time unit.
        Dimension::Rate => seconds_per(unit.rsplit_once('/')?.1).map(Scale::inverse),
    }
}

/// A unit field of one entry as the pass found it: absent, a string, or something else
/// (described for the warning).
pub(crate) type UnitField<'a> = Option<Result<&'a str, String>>;

/// The value of statistic `stat` as delivered: `n` converted by the entry's unit for its
/// dimension (`duration`/`rate` are its unit fields). `Err` when the converted value is no
/// longer a finite number; `unknown` is set to the dimension whose unit is not known (the
/// value is then delivered as it is).
pub(crate) fn deliver(
    kind: Kind,
    stat: &str,
    n: &Number,
    duration: &UnitField<'_>,
    rate: &UnitField<'_>,
    unknown: &mut [bool; 2],
) -> Result<String, String> {
    let Some(dim) = Dimension::of(kind, stat) else {
        return Ok(n.to_string());
    };
    let (field, i) = match dim {
        Dimension::Duration => (duration, 0),
        Dimension::Rate => (rate, 1),
    };
    let unit = match field {
        None => return Ok(n.to_string()),
        Some(Ok(unit)) => *unit,
        Some(Err(_)) => {
            unknown[i] = true;
            return Ok(n.to_string());
        }
    };
    match scale(dim, unit) {
        None => {
            unknown[i] = true;
            Ok(n.to_string())
        }
        Some(Scale::Same) => Ok(n.to_string()),
        Some(s) => {
            let x = n.as_f64().map(|x| s.apply(x));
            match x.and_then(Number::from_f64) {
                Some(v) => Ok(v.to_string()),
                None => Err(format!("out of range in seconds: {n} {unit}")),
            }
        }
    }
}

/// The unknown units [`deliver`] flagged for `metric`, as reported.
pub(crate) fn unknown_units(
    kind: Kind,
    metric: &str,
    duration: &UnitField<'_>,
    rate: &UnitField<'_>,
    unknown: [bool; 2],
) -> Vec<UnknownUnit> {
    [
        (Dimension::Duration, duration, unknown[0]),
        (Dimension::Rate, rate, unknown[1]),
    ]
    .into_iter()
    .filter(|(_, _, flagged)| *flagged)
    .map(|(dim, field, _)| UnknownUnit {
        metric: metric.to_string(),
        field: dim.unit_field(kind).to_string(),
        unit: match field {
            Some(Ok(u)) => format!("{:?}", shown(u)),
            Some(Err(d)) => d.clone(),
            None => String::new(),
        },
    })
    .collect()
}

/// The Zabbix unit of a gauge, from its name: `B` where the name says bytes (`…bytes…`, or
/// the JVM memory gauges of metrics-jvm, `jvm.memory.….used|committed|max|init`, which are in
/// bytes), none otherwise. Discovery passes it to the item prototype as `{#UNIT}`.
pub fn gauge_unit(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    let jvm_memory = lower.starts_with("jvm.memory.")
        && [".used", ".committed", ".max", ".init"]
            .iter()
            .any(|s| lower.ends_with(s));
    if lower.contains("bytes") || jvm_memory {
        "B"
    } else {
        ""
    }
}

/// What a caller wants from one kind's section.
enum Want<'s> {
    /// Each metric with these statistics (see [`parse`]).
    Metrics(&'s [&'s str]),
    /// The discoverable names (see [`names`]).
    Names,
}

/// What a [`Want`] gave.
enum Got {
    Metrics(Metrics),
    Names(Vec<String>),
}

/// Whether discovery should create items for this entry: every metric object, except a gauge
/// whose value can never be a number (a version string, a list), which would only yield items
/// that never receive data. NaN, infinities and null count as numbers that are briefly
/// undefined. `value` is the entry's `value` field when the entry is a gauge object.
fn discoverable(kind: Kind, is_object: bool, value: Option<&Scalar>) -> bool {
    if !is_object {
        return false;
    }
    if kind != Kind::Gauges {
        return true;
    }
    match value {
        Some(Scalar::Number(_) | Scalar::Null | Scalar::OutOfRange(_)) => true,
        Some(Scalar::Str(s)) => matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity"),
        _ => false,
    }
}

/// A value the pass kept where a number was expected: the number, or what a skip reason says
/// about anything else (containers are skipped, not kept).
enum Scalar {
    Number(Number),
    Str(String),
    Null,
    Bool(bool),
    Array,
    Object,
    /// A JSON number beyond f64's range (`1e400`): valid JSON, but no value Zabbix can store.
    OutOfRange(String),
}

/// A short description of a non-numeric value for a skip reason.
fn describe(v: &Scalar) -> String {
    const MAX: usize = 40;
    match v {
        Scalar::Str(s) if s.chars().count() > MAX => {
            let cut: String = s.chars().take(MAX).collect();
            format!("{:?}…", cut)
        }
        Scalar::Str(s) => format!("{s:?}"),
        Scalar::Null => "null".to_string(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Number(n) => n.to_string(),
        Scalar::Array => "array".to_string(),
        Scalar::Object => "object".to_string(),
        Scalar::OutOfRange(n) if n.chars().count() > MAX => {
            let cut: String = n.chars().take(MAX).collect();
            format!("{cut}…")
        }
        Scalar::OutOfRange(n) => n.clone(),
    }
}

/// Reads `doc` strictly first; only if that fails, once more with bare `NaN`, `Infinity` and
/// `-Infinity` (written by older Jackson) replaced by `null`, so they become skipped values.
fn read(
    doc: &[u8],
    wants: &[(Kind, Want<'_>)],
) -> Result<Vec<Result<Got, ParseError>>, ParseError> {
    let plans = plans(wants);
    let strict = match pass(doc, &plans) {
        Ok(root) => return Ok(results(root, plans, wants.len())),
        Err(e) => e,
    };
    let Some((patched, edits)) = replace_non_finite(doc) else {
        return Err(json_error(&strict, &[]));
    };
    match pass(&patched, &plans) {
        Ok(root) => Ok(results(root, plans, wants.len())),
        Err(e) => Err(json_error(&e, &edits)),
    }
}

/// How one pass reads one kind's section, for every want of that kind.
struct Plan<'s> {
    kind: Kind,
    /// The fields of an entry to keep, each once (matched by exact name).
    fields: Vec<&'s str>,
    outputs: Vec<Output<'s>>,
}

/// One want of a [`Plan`]: `want` is its index in the caller's list.
struct Output<'s> {
    want: usize,
    what: OutputKind<'s>,
}

enum OutputKind<'s> {
    /// The statistics to deliver in order, and for each its index in [`Plan::fields`].
    Metrics {
        stats: &'s [&'s str],
        slots: Vec<usize>,
        /// The indexes of the duration and rate unit fields, for kinds that have them.
        units: [Option<usize>; 2],
    },
    /// Names; for gauges, the index of `value` in [`Plan::fields`].
    Names { value_slot: Option<usize> },
}

/// One plan per kind asked for, with the union of the fields its wants need.
fn plans<'s>(wants: &[(Kind, Want<'s>)]) -> Vec<Plan<'s>> {
    fn slot<'s>(fields: &mut Vec<&'s str>, name: &'s str) -> usize {
        fields.iter().position(|f| *f == name).unwrap_or_else(|| {
            fields.push(name);
            fields.len() - 1
        })
    }
    let mut plans: Vec<Plan<'s>> = Vec::new();
    for (want, (kind, what)) in wants.iter().enumerate() {
        let kind = *kind;
        let i = match plans.iter().position(|p| p.kind == kind) {
            Some(i) => i,
            None => {
                plans.push(Plan {
                    kind,
                    fields: Vec::new(),
                    outputs: Vec::new(),
                });
                plans.len() - 1
            }
        };
        let plan = &mut plans[i];
        let what = match *what {
            Want::Metrics(stats) => {
                let stats = if kind.single_valued() {
                    kind.all_stats()
                } else {
                    stats
                };
                let slots = stats.iter().map(|s| slot(&mut plan.fields, s)).collect();
                let units = [Dimension::Duration, Dimension::Rate].map(|d| {
                    let has = kind
                        .all_stats()
                        .iter()
                        .any(|s| Dimension::of(kind, s) == Some(d));
                    has.then(|| slot(&mut plan.fields, d.unit_field(kind)))
                });
                OutputKind::Metrics {
                    stats,
                    slots,
                    units,
                }
            }
            Want::Names => OutputKind::Names {
                value_slot: (kind == Kind::Gauges).then(|| slot(&mut plan.fields, "value")),
            },
        };
        plan.outputs.push(Output { want, what });
    }
    plans
}

/// A section after the pass; a later occurrence of a section replaces an earlier one.
enum Found {
    Absent,
    NotAnObject,
    /// One result per [`Plan::outputs`].
    Read(Vec<Got>),
}

/// One streaming pass over `doc`: what it found of each plan's section (every section is
/// [`Found::NotAnObject`] when the top level is not an object).
fn pass(doc: &[u8], plans: &[Plan<'_>]) -> Result<Vec<Found>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(doc);
    let root = Shape(RootObject { plans }).deserialize(&mut de)?;
    de.end()?;
    Ok(match root {
        Shaped::Object(found) => found,
        Shaped::Other(_) => plans.iter().map(|_| Found::NotAnObject).collect(),
    })
}

/// The caller's results, in the order of its wants.
fn results(found: Vec<Found>, plans: Vec<Plan<'_>>, wants: usize) -> Vec<Result<Got, ParseError>> {
    let mut out: Vec<Option<Result<Got, ParseError>>> = (0..wants).map(|_| None).collect();
    for (plan, found) in plans.into_iter().zip(found) {
        match found {
            Found::NotAnObject => {
                for o in &plan.outputs {
                    out[o.want] = Some(Err(ParseError::NotAnObject));
                }
            }
            Found::Absent => {
                for o in &plan.outputs {
                    out[o.want] = Some(Ok(match o.what {
                        OutputKind::Metrics { .. } => Got::Metrics(Metrics::default()),
                        OutputKind::Names { .. } => Got::Names(Vec::new()),
                    }));
                }
            }
            Found::Read(gots) => {
                for (o, got) in plan.outputs.iter().zip(gots) {
                    out[o.want] = Some(Ok(got));
                }
            }
        }
    }
    out.into_iter()
        .map(|r| r.expect("every want has a plan"))
        .collect()
}

/// A JSON value read as an object by an [`ObjectVisitor`], or anything else as a [`Scalar`].
enum Shaped<T> {
    Object(T),
    Other(Scalar),
}

/// Reads the entries of a JSON object (all of them, or the map access fails).
trait ObjectVisitor<'de> {
    type Out;
    fn visit_object<A: MapAccess<'de>>(self, map: A) -> Result<Self::Out, A::Error>;
}

/// Seed and visitor for one JSON value: objects go to the [`ObjectVisitor`], other values
/// become a [`Scalar`] (arrays skipped as [`IgnoredAny`]). Numbers arrive as serde_json's
/// `Value` receives them, so they format the same.
struct Shape<V>(V);

impl<'de, V: ObjectVisitor<'de>> DeserializeSeed<'de> for Shape<V> {
    type Value = Shaped<V::Out>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, V: ObjectVisitor<'de>> Visitor<'de> for Shape<V> {
    type Value = Shaped<V::Out>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Shaped::Other(Scalar::Bool(v)))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Shaped::Other(Scalar::Number(v.into())))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Shaped::Other(Scalar::Number(v.into())))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // serde_json never gives a non-finite float; `Value` would make it null, as here.
        Ok(Shaped::Other(
            Number::from_f64(v).map_or(Scalar::Null, Scalar::Number),
        ))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Shaped::Other(Scalar::Str(v.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Shaped::Other(Scalar::Str(v)))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Shaped::Other(Scalar::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Shaped::Other(Scalar::Array))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_object(map).map(Shaped::Object)
    }
}

/// Skips an object's entries.
struct SkipObject;

impl<'de> ObjectVisitor<'de> for SkipObject {
    type Out = ();

    fn visit_object<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// A map key, matched without allocating: the index the closure finds for it, if any.
struct KeyIndex<F>(F);

impl<'de, F: FnOnce(&str) -> Option<usize>> DeserializeSeed<'de> for KeyIndex<F> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, F: FnOnce(&str) -> Option<usize>> Visitor<'de> for KeyIndex<F> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok((self.0)(v))
    }
}

/// The top-level object: the planned sections are read, all else skipped.
struct RootObject<'p, 's> {
    plans: &'p [Plan<'s>],
}

impl<'de> ObjectVisitor<'de> for RootObject<'_, '_> {
    type Out = Vec<Found>;

    fn visit_object<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Found>, A::Error> {
        let plans = self.plans;
        let mut found: Vec<Found> = plans.iter().map(|_| Found::Absent).collect();
        while let Some(key) = map.next_key_seed(KeyIndex(|k: &str| {
            plans.iter().position(|p| p.kind.section() == k)
        }))? {
            let Some(i) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            found[i] = match map.next_value_seed(Shape(SectionObject { plan: &plans[i] }))? {
                Shaped::Object(got) => Found::Read(got),
                Shaped::Other(Scalar::Null) => Found::Absent,
                Shaped::Other(_) => Found::NotAnObject,
            };
        }
        Ok(found)
    }
}

/// One planned section: every entry is recorded for each of the plan's outputs.
struct SectionObject<'p, 's> {
    plan: &'p Plan<'s>,
}

/// The entries of a section recorded for one output, in document order.
enum Records {
    Metrics(Vec<MetricRecord>),
    /// Each name, and whether it is [`discoverable`].
    Names(Vec<(String, bool)>),
}

/// One entry for a metrics output: its statistics (`None` when it is not an object) and
/// what was skipped of it.
struct MetricRecord {
    name: String,
    stats: Option<Vec<Stat>>,
    skipped: Vec<Skipped>,
    unknown_units: Vec<UnknownUnit>,
}

impl<'de> ObjectVisitor<'de> for SectionObject<'_, '_> {
    type Out = Vec<Got>;

    fn visit_object<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Got>, A::Error> {
        let plan = self.plan;
        let mut values: Vec<Option<Scalar>> = plan.fields.iter().map(|_| None).collect();
        let mut records: Vec<Records> = plan
            .outputs
            .iter()
            .map(|o| match o.what {
                OutputKind::Metrics { .. } => Records::Metrics(Vec::new()),
                OutputKind::Names { .. } => Records::Names(Vec::new()),
            })
            .collect();
        while let Some(mut name) = map.next_key::<String>()? {
            values.iter_mut().for_each(|v| *v = None);
            let entry = map.next_value_seed(Shape(EntryObject {
                fields: &plan.fields,
                values: &mut values,
            }))?;
            let n = plan.outputs.len();
            for (i, (output, records)) in plan.outputs.iter().zip(&mut records).enumerate() {
                let name = if i + 1 < n {
                    name.clone()
                } else {
                    std::mem::take(&mut name)
                };
                record(plan.kind, output, name, &entry, &values, records);
            }
        }
        Ok(records.into_iter().map(finish).collect())
    }
}

/// One section entry: the planned fields are kept in `values` (a later duplicate field
/// replaces an earlier one), all others skipped.
struct EntryObject<'p, 's> {
    fields: &'p [&'s str],
    values: &'p mut [Option<Scalar>],
}

impl<'de> ObjectVisitor<'de> for EntryObject<'_, '_> {
    type Out = ();

    fn visit_object<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let EntryObject { fields, values } = self;
        if fields.is_empty() {
            return SkipObject.visit_object(map);
        }
        while let Some(slot) =
            map.next_key_seed(KeyIndex(|k: &str| fields.iter().position(|f| *f == k)))?
        {
            match slot {
                Some(i) => values[i] = Some(read_field(&mut map)?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Reads one planned field of an entry. The value is first taken as raw JSON (checked for
/// syntax only), so that a number beyond f64's range becomes one skipped value instead of a
/// serde_json error that would reject the whole document (what discovery, which does not read
/// the number, accepts).
fn read_field<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Scalar, A::Error> {
    let raw: &'de serde_json::value::RawValue = map.next_value()?;
    let text = raw.get();
    let mut de = serde_json::Deserializer::from_str(text);
    match Shape(SkipObject).deserialize(&mut de) {
        Ok(Shaped::Object(())) => Ok(Scalar::Object),
        Ok(Shaped::Other(v)) => Ok(v),
        Err(e) if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
            // The raw value is valid JSON, so a number that fails to convert is out of range.
            debug_assert!(e.to_string().contains("out of range"), "{e}");
            Ok(Scalar::OutOfRange(text.to_string()))
        }
        Err(e) => Err(serde::de::Error::custom(e)),
    }
}

/// Records one entry (`entry` is `Object` when it is one, its fields then in `values`).
fn record(
    kind: Kind,
    output: &Output<'_>,
    name: String,
    entry: &Shaped<()>,
    values: &[Option<Scalar>],
    records: &mut Records,
) {
    match (&output.what, records) {
        (OutputKind::Names { value_slot }, Records::Names(names)) => {
            let value = value_slot.and_then(|i| values[i].as_ref());
            let keep = discoverable(kind, matches!(entry, Shaped::Object(())), value);
            names.push((name, keep));
        }
        (
            OutputKind::Metrics {
                stats,
                slots,
                units,
            },
            Records::Metrics(metrics),
        ) => {
            let mut skipped = Vec::new();
            let mut unknown_units = Vec::new();
            let stats = match entry {
                Shaped::Other(v) => {
                    skipped.push(Skipped {
                        metric: name.clone(),
                        stat: "*".to_string(),
                        reason: format!("not an object: {}", describe(v)),
                    });
                    None
                }
                Shaped::Object(()) => {
                    let [duration, rate] = units.map(|slot| {
                        slot.and_then(|i| values[i].as_ref()).map(|v| match v {
                            Scalar::Str(s) => Ok(s.as_str()),
                            other => Err(describe(other)),
                        })
                    });
                    let mut unknown = [false; 2];
                    let mut out = Vec::with_capacity(stats.len());
                    for (&stat, &slot) in stats.iter().zip(slots) {
                        match &values[slot] {
                            None => {}
                            Some(Scalar::Number(n)) => {
                                match deliver(kind, stat, n, &duration, &rate, &mut unknown) {
                                    Ok(value) => out.push(Stat {
                                        name: stat.to_string(),
                                        value,
                                    }),
                                    Err(reason) => skipped.push(Skipped {
                                        metric: name.clone(),
                                        stat: stat.to_string(),
                                        reason,
                                    }),
                                }
                            }
                            Some(n @ Scalar::OutOfRange(_)) => skipped.push(Skipped {
                                metric: name.clone(),
                                stat: stat.to_string(),
                                reason: format!("number out of range: {}", describe(n)),
                            }),
                            Some(other) => skipped.push(Skipped {
                                metric: name.clone(),
                                stat: stat.to_string(),
                                reason: format!("not a number: {}", describe(other)),
                            }),
                        }
                    }
                    unknown_units =
                        super::dropwizard::unknown_units(kind, &name, &duration, &rate, unknown);
                    Some(out)
                }
            };
            metrics.push(MetricRecord {
                name,
                stats,
                skipped,
                unknown_units,
            });
        }
        _ => unreachable!("records are made for their output"),
    }
}

/// An output's result from its records: sorted by name, the last entry of each name.
fn finish(records: Records) -> Got {
    match records {
        Records::Metrics(mut records) => {
            last_of_each_name(&mut records, |r| &r.name);
            let mut out = Metrics {
                metrics: Vec::with_capacity(records.len()),
                ..Metrics::default()
            };
            for r in records {
                out.skipped.extend(r.skipped);
                out.unknown_units.extend(r.unknown_units);
                if let Some(stats) = r.stats {
                    out.metrics.push(Metric {
                        name: r.name,
                        stats,
                    });
                }
            }
            Got::Metrics(out)
        }
        Records::Names(mut names) => {
            last_of_each_name(&mut names, |r| &r.0);
            Got::Names(names.into_iter().filter(|r| r.1).map(|r| r.0).collect())
        }
    }
}

/// Sorts `records` by name (byte order, stable) and keeps only the last of each name, as
/// inserting them one by one into a map would.
fn last_of_each_name<T>(records: &mut Vec<T>, name: impl Fn(&T) -> &str) {
    records.sort_by(|a, b| name(a).cmp(name(b)));
    // `dedup_by` removes the later of two equal neighbours; swapping first keeps its content.
    records.dedup_by(|later, kept| {
        let same = name(later) == name(kept);
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
}

/// A replacement made by [`replace_non_finite`]: on `line`, text ending at `end_column`
/// (1-based, in the patched document) is `delta` bytes longer than the original.
struct Edit {
    line: usize,
    end_column: usize,
    delta: isize,
}

/// Converts a serde_json error into [`ParseError::Json`], mapping the column back through
/// `edits` so it points into the original document.
fn json_error(e: &serde_json::Error, edits: &[Edit]) -> ParseError {
    let (line, column) = (e.line(), e.column());
    let shift: isize = edits
        .iter()
        .filter(|ed| ed.line == line && ed.end_column <= column)
        .map(|ed| ed.delta)
        .sum();
    let message = e.to_string();
    let suffix = format!(" at line {line} column {column}");
    let message = message
        .strip_suffix(&suffix)
        .unwrap_or(&message)
        .to_string();
    ParseError::Json {
        line,
        column: column.saturating_add_signed(-shift),
        message,
    }
}

/// Copies `doc` with each bare `NaN`, `Infinity` or `-Infinity` outside strings replaced by
/// `null`; `None` when there is none. Tracks string and escape state byte by byte (UTF-8
/// continuation bytes never look like `"` or `\`).
fn replace_non_finite(doc: &[u8]) -> Option<(Vec<u8>, Vec<Edit>)> {
    const TOKENS: [&[u8]; 3] = [b"-Infinity", b"Infinity", b"NaN"];
    let mut out = Vec::new();
    let mut edits = Vec::new();
    let (mut in_string, mut escaped) = (false, false);
    let (mut line, mut line_start) = (1usize, 0usize);
    let mut copied = 0;
    let mut i = 0;
    while i < doc.len() {
        let b = doc[i];
        if b == b'\n' {
            line += 1;
            line_start = out.len() + (i + 1 - copied);
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if let Some(token) = TOKENS.iter().find(|t| doc[i..].starts_with(t)) {
            let follows = doc.get(i + token.len());
            if !follows.is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
                out.extend_from_slice(&doc[copied..i]);
                out.extend_from_slice(b"null");
                edits.push(Edit {
                    line,
                    end_column: out.len() - line_start,
                    delta: 4 - token.len() as isize,
                });
                i += token.len();
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    if edits.is_empty() {
        return None;
    }
    out.extend_from_slice(&doc[copied..]);
    Some((out, edits))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What metrics-json 4.x writes for a small service, with the awkward cases mixed in.
    const SAMPLE: &str = r#"{
  "version": "4.0.0",
  "gauges": {
    "jvm.memory.heap.used": { "value": 187695432 },
    "jvm.memory.heap.usage": { "value": 0.3512 },
    "app.build.version": { "value": "1.4.2" },
    "cache.hit.ratio": { "value": "NaN" },
    "jvm.threads.deadlocks": { "value": [] }
  },
  "counters": {
    "io.dropwizard.jetty.MutableServletContextHandler.active-requests": { "count": 3 },
    "queue[orders,priority]": { "count": 17 }
  },
  "histograms": {
    "response.size": {
      "count": 1204, "max": 51200, "mean": 1034.72, "min": 12, "p50": 980.0, "p75": 1250.5,
      "p95": 4096.0, "p98": 8192.0, "p99": 16384.0, "p999": 51200.0, "stddev": 1530.2
    }
  },
  "meters": {
    "ch.qos.logback.core.Appender.error": {
      "count": 2, "m15_rate": 0.0021, "m1_rate": 1.2e-7, "m5_rate": 0.0, "mean_rate": 5.5e-4,
      "units": "events/second"
    }
  },
  "timers": {
    "GET /orders/{id},v2]": {
      "count": 3120, "max": 812.3, "mean": 45.1, "min": 2.07, "p50": 31.0, "p75": 52.9,
      "p95": 140.25, "p98": 210.0, "p99": 388.1, "p999": 812.3, "stddev": 60.42,
      "m15_rate": 2.1, "m1_rate": 3.4, "m5_rate": 2.7, "mean_rate": 2.05,
      "duration_units": "milliseconds", "rate_units": "calls/second"
    },
    "db.query": {
      "count": 0, "max": 0.0, "mean": "NaN", "min": 0.0, "p50": 0.0, "p75": 0.0, "p95": 0.0,
      "p98": 0.0, "p99": 0.0, "p999": 0.0, "stddev": null, "m15_rate": 0.0, "m1_rate": 0.0,
      "m5_rate": 0.0, "mean_rate": 0.0,
      "duration_units": "milliseconds", "rate_units": "calls/second"
    },
    "broken": 42
  },
  "extra-section": { "x": 1 }
}"#;

    fn stat_map(m: &Metric) -> Vec<(&str, &str)> {
        m.stats
            .iter()
            .map(|s| (s.name.as_str(), s.value.as_str()))
            .collect()
    }

    fn skip(metric: &str, stat: &str, reason: &str) -> Skipped {
        Skipped {
            metric: metric.into(),
            stat: stat.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn gauges_deliver_numbers_and_skip_the_rest() {
        let m = parse(SAMPLE.as_bytes(), Kind::Gauges, &["ignored"]).unwrap();
        let names: Vec<_> = m.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "app.build.version",
                "cache.hit.ratio",
                "jvm.memory.heap.usage",
                "jvm.memory.heap.used",
                "jvm.threads.deadlocks"
            ]
        );
        assert_eq!(stat_map(&m.metrics[2]), [("value", "0.3512")]);
        assert_eq!(stat_map(&m.metrics[3]), [("value", "187695432")]);
        assert!(m.metrics[0].stats.is_empty());
        assert_eq!(
            m.skipped,
            [
                skip("app.build.version", "value", r#"not a number: "1.4.2""#),
                skip("cache.hit.ratio", "value", r#"not a number: "NaN""#),
                skip("jvm.threads.deadlocks", "value", "not a number: array"),
            ]
        );
    }

    #[test]
    fn counters_keep_awkward_names() {
        let m = parse(SAMPLE.as_bytes(), Kind::Counters, &[]).unwrap();
        assert_eq!(m.metrics[1].name, "queue[orders,priority]");
        assert_eq!(stat_map(&m.metrics[1]), [("count", "17")]);
        assert!(m.skipped.is_empty());
    }

    #[test]
    fn timers_follow_the_requested_stat_order() {
        let m = parse(
            SAMPLE.as_bytes(),
            Kind::Timers,
            &["p95", "count", "mean", "stddev", "nonexistent"],
        )
        .unwrap();
        assert_eq!(m.metrics.len(), 2, "the non-object entry is not a metric");
        assert_eq!(m.metrics[0].name, "GET /orders/{id},v2]");
        assert_eq!(
            stat_map(&m.metrics[0]),
            [
                ("p95", "0.14025"),
                ("count", "3120"),
                ("mean", "0.0451"),
                ("stddev", "0.06042")
            ],
            "milliseconds are delivered in seconds"
        );
        assert_eq!(stat_map(&m.metrics[1]), [("p95", "0.0"), ("count", "0")]);
        assert_eq!(
            m.skipped,
            [
                skip("broken", "*", "not an object: 42"),
                skip("db.query", "mean", r#"not a number: "NaN""#),
                skip("db.query", "stddev", "not a number: null"),
            ]
        );
    }

    /// A timer and a meter in `duration`/`rate` units, with p95 199 and rates of 120.
    fn in_units(duration: &str, rate: &str) -> Vec<u8> {
        format!(
            r#"{{"timers":{{"t":{{"count":7,"p95":199,"max":1.5,"m1_rate":120,
                "duration_units":"{duration}","rate_units":"calls/{rate}"}}}},
              "meters":{{"m":{{"count":7,"m1_rate":120,"units":"events/{rate}"}}}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn every_time_unit_becomes_seconds_and_per_second() {
        for (duration, p95, max) in [
            ("nanoseconds", "1.99e-7", "1.5e-9"),
            ("microseconds", "0.000199", "1.5e-6"),
            ("milliseconds", "0.199", "0.0015"),
            ("seconds", "199", "1.5"),
            ("minutes", "11940.0", "90.0"),
            ("hours", "716400.0", "5400.0"),
            ("days", "17193600.0", "129600.0"),
            ("MILLISECONDS", "0.199", "0.0015"),
        ] {
            let rate = duration.trim_end_matches(['s', 'S']);
            let per_second = match rate {
                "nanosecond" => "120000000000.0",
                "microsecond" => "120000000.0",
                "millisecond" | "MILLISECOND" => "120000.0",
                "second" => "120",
                "minute" => "2.0",
                "hour" => "0.03333333333333333",
                _ => "0.001388888888888889",
            };
            let doc = in_units(duration, rate);
            let t = parse(&doc, Kind::Timers, &["count", "p95", "max", "m1_rate"]).unwrap();
            assert_eq!(
                stat_map(&t.metrics[0]),
                [
                    ("count", "7"),
                    ("p95", p95),
                    ("max", max),
                    ("m1_rate", per_second)
                ],
                "{duration}"
            );
            let m = parse(&doc, Kind::Meters, &["count", "m1_rate"]).unwrap();
            assert_eq!(
                stat_map(&m.metrics[0]),
                [("count", "7"), ("m1_rate", per_second)],
                "events/{rate}"
            );
            assert!(t.unknown_units.is_empty() && m.unknown_units.is_empty());
            compare_with_tree(&doc);
        }
    }

    #[test]
    fn unknown_units_are_reported_and_the_values_kept() {
        let doc = br#"{"timers":{"t":{"count":1,"p95":199,"m1_rate":3,
            "duration_units":"fortnights","rate_units":"calls"}},
            "meters":{"m":{"m1_rate":3,"units":42},"n":{"m1_rate":4}}}"#;
        let t = parse(doc, Kind::Timers, &["p95", "m1_rate"]).unwrap();
        assert_eq!(stat_map(&t.metrics[0]), [("p95", "199"), ("m1_rate", "3")]);
        assert_eq!(
            t.unknown_units,
            [
                UnknownUnit {
                    metric: "t".into(),
                    field: "duration_units".into(),
                    unit: r#""fortnights""#.into()
                },
                UnknownUnit {
                    metric: "t".into(),
                    field: "rate_units".into(),
                    unit: r#""calls""#.into()
                }
            ]
        );
        // Only the units of delivered statistics count; a missing unit means seconds.
        let t = parse(doc, Kind::Timers, &["count"]).unwrap();
        assert!(t.unknown_units.is_empty(), "{:?}", t.unknown_units);
        let m = parse(doc, Kind::Meters, &["m1_rate"]).unwrap();
        assert_eq!(stat_map(&m.metrics[1]), [("m1_rate", "4")]);
        assert_eq!(m.unknown_units.len(), 1);
        assert_eq!(m.unknown_units[0].field, "units");
        assert_eq!(m.unknown_units[0].unit, "42");
        compare_with_tree(doc);
    }

    #[test]
    fn gauges_named_for_bytes_are_in_bytes() {
        for (name, unit) in [
            ("jvm.memory.heap.used", "B"),
            ("jvm.memory.pools.Metaspace.committed", "B"),
            ("jvm.memory.heap.usage", ""),
            ("http.response.bytes", "B"),
            ("cache.size_BYTES", "B"),
            ("queue.depth", ""),
        ] {
            assert_eq!(gauge_unit(name), unit, "{name}");
        }
    }

    #[test]
    fn a_value_out_of_range_in_seconds_is_skipped() {
        let doc = br#"{"timers":{"t":{"p95":1e304,"p99":1,"duration_units":"days"}}}"#;
        let t = parse(doc, Kind::Timers, &["p95", "p99"]).unwrap();
        assert_eq!(stat_map(&t.metrics[0]), [("p99", "86400.0")]);
        assert_eq!(t.skipped.len(), 1);
        assert!(
            t.skipped[0].reason.contains("out of range"),
            "{:?}",
            t.skipped
        );
    }

    #[test]
    fn floats_format_like_zabbix_numbers() {
        let m = parse(SAMPLE.as_bytes(), Kind::Meters, Kind::Meters.all_stats()).unwrap();
        assert_eq!(
            stat_map(&m.metrics[0]),
            [
                ("count", "2"),
                ("m15_rate", "0.0021"),
                ("m1_rate", "1.2e-7"),
                ("m5_rate", "0.0"),
                ("mean_rate", "0.00055")
            ]
        );
        let doc =
            br#"{"histograms":{"h":{"min":-3,"max":18446744073709551615,"mean":1e300,"p50":0.1}}}"#;
        let m = parse(doc, Kind::Histograms, &["min", "max", "mean", "p50"]).unwrap();
        assert_eq!(
            stat_map(&m.metrics[0]),
            [
                ("min", "-3"),
                ("max", "18446744073709551615"),
                ("mean", "1e+300"),
                ("p50", "0.1")
            ]
        );
    }

    #[test]
    fn names_for_discovery() {
        assert_eq!(
            names(SAMPLE.as_bytes(), Kind::Timers).unwrap(),
            ["GET /orders/{id},v2]", "db.query"]
        );
        assert_eq!(
            names(SAMPLE.as_bytes(), Kind::Histograms).unwrap(),
            ["response.size"]
        );
        assert!(names(b"{}", Kind::Meters).unwrap().is_empty());
        // Gauges that can never be numbers get no items; briefly undefined ones do (sorted).
        assert_eq!(
            names(SAMPLE.as_bytes(), Kind::Gauges).unwrap(),
            [
                "cache.hit.ratio",
                "jvm.memory.heap.usage",
                "jvm.memory.heap.used"
            ]
        );
    }

    #[test]
    fn missing_or_null_section_is_empty_and_unknowns_are_ignored() {
        for doc in [
            &br#"{"version":"3.0.0"}"#[..],
            br#"{"timers":null,"odd":[1]}"#,
        ] {
            assert_eq!(
                parse(doc, Kind::Timers, &["count"]).unwrap(),
                Metrics::default()
            );
        }
        // Another kind's section being odd does not matter.
        assert!(parse(br#"{"gauges":[],"timers":{}}"#, Kind::Timers, &[]).is_ok());
    }

    #[test]
    fn shape_errors() {
        for doc in [
            &b"[]"[..],
            b"42",
            b"null",
            br#"{"timers":[]}"#,
            br#"{"timers":"x"}"#,
        ] {
            assert_eq!(
                parse(doc, Kind::Timers, &["count"]),
                Err(ParseError::NotAnObject),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
        assert_eq!(names(b"[]", Kind::Timers), Err(ParseError::NotAnObject));
    }

    #[test]
    fn json_errors_carry_position() {
        let err = parse(b"{\n  \"timers\": {,}\n}", Kind::Timers, &[]).unwrap_err();
        assert_eq!(
            err,
            ParseError::Json {
                line: 2,
                column: 14,
                message: "key must be a string".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "invalid metrics JSON at line 2, column 14: key must be a string"
        );
        assert!(matches!(
            parse(b"", Kind::Timers, &[]),
            Err(ParseError::Json { .. })
        ));
    }

    #[test]
    fn bare_non_finite_tokens_are_skipped_not_fatal() {
        let doc = br#"{"gauges":{"a":{"value":NaN},"b":{"value":-Infinity},"c":{"value":Infinity},
            "d":{"value":"keep NaN \"Infinity\" \\"},"e":{"value":1.5}}}"#;
        let m = parse(doc, Kind::Gauges, &[]).unwrap();
        assert_eq!(m.metrics.len(), 5);
        assert_eq!(stat_map(&m.metrics[4]), [("value", "1.5")]);
        assert_eq!(
            m.skipped,
            [
                skip("a", "value", "not a number: null"),
                skip("b", "value", "not a number: null"),
                skip("c", "value", "not a number: null"),
                skip("d", "value", r#"not a number: "keep NaN \"Infinity\" \\""#),
            ]
        );
        // "d" holds a string that is never a number: discovery leaves it out.
        assert_eq!(names(doc, Kind::Gauges).unwrap(), ["a", "b", "c", "e"]);
        // Strings are never touched, and bare words that merely start like a token stay invalid.
        assert_eq!(
            replace_non_finite(br#"{"NaN":"Infinity"}"#).map(|p| p.0),
            None
        );
        assert!(parse(br#"{"gauges":{"a":{"value":NaNx}}}"#, Kind::Gauges, &[]).is_err());
    }

    #[test]
    fn error_after_a_replaced_token_points_into_the_original() {
        // Without the edit mapping, the column would be off by one (NaN -> null) on this line.
        let doc = b"{\"gauges\":{\"a\":{\"value\":NaN}} x}";
        match parse(doc, Kind::Gauges, &[]).unwrap_err() {
            ParseError::Json { line, column, .. } => {
                assert_eq!((line, column), (1, 31));
                assert_eq!(doc[column - 1], b'x');
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A metrics-json style document with `n` timers carrying all 17 fields.
    fn big_timer_doc(n: usize) -> Vec<u8> {
        let mut timers = serde_json::Map::new();
        for i in 0..n {
            let f = i as f64;
            timers.insert(
                format!("com.example.resources.OrderResource.endpoint{i}.requests"),
                serde_json::json!({
                    "count": 1000 + i,
                    "max": 812.345_678_9 + f, "mean": 45.123_456_78 + f / 7.0,
                    "min": 0.123_456_7 + f / 1000.0,
                    "p50": 31.234_567_8 + f, "p75": 52.901_234_5 + f, "p95": 140.256_789 + f,
                    "p98": 210.987_654_3 + f, "p99": 388.123_456_7 + f, "p999": 799.999_999 + f,
                    "stddev": 60.424_242_42 + f / 3.0,
                    "m15_rate": 2.112_233_445_566 / (f + 1.0), "m1_rate": 3.456_789_012_3,
                    "m5_rate": 2.731_828_459_1, "mean_rate": 2.052_631_578_947,
                    "duration_units": "milliseconds", "rate_units": "calls/second"
                }),
            );
        }
        serde_json::to_vec_pretty(&serde_json::json!({
            "version": "4.0.0", "gauges": {}, "counters": {}, "histograms": {}, "meters": {},
            "timers": timers
        }))
        .unwrap()
    }

    #[test]
    fn a_thousand_timers_give_eleven_thousand_values() {
        let doc = big_timer_doc(1000);
        let m = parse(&doc, Kind::Timers, Kind::Timers.default_stats()).unwrap();
        assert_eq!(m.metrics.len(), 1000);
        assert_eq!(
            m.metrics.iter().map(|m| m.stats.len()).sum::<usize>(),
            1000 * 11
        );
        assert!(m.skipped.is_empty());
        assert_eq!(names(&doc, Kind::Timers).unwrap().len(), 1000);
    }

    /// `cargo test --release -p concierge-core -- --ignored --nocapture timing`
    #[test]
    #[ignore = "timing report, run by hand in release mode"]
    fn timing_of_a_thousand_timers() {
        let doc = big_timer_doc(1000);
        let runs = 50;
        let start = std::time::Instant::now();
        for _ in 0..runs {
            let m = parse(&doc, Kind::Timers, Kind::Timers.default_stats()).unwrap();
            assert_eq!(m.metrics.len(), 1000);
        }
        println!(
            "parse of {} KiB, 1000 timers: {:?} per run",
            doc.len() / 1024,
            start.elapsed() / runs
        );
    }

    /// The reader this module had before it streamed: the whole document into serde_json's
    /// `Value` tree, then the section's `Map`. Kept as the oracle for the streaming pass.
    mod tree {
        use serde_json::{Map, Value};

        use super::super::{
            deliver, json_error, replace_non_finite, unknown_units, Dimension, ParseError,
        };
        use crate::metrics::{Kind, Metric, Metrics, Skipped, Stat};

        fn parse_json(doc: &[u8]) -> Result<Value, ParseError> {
            let strict = match serde_json::from_slice::<Value>(doc) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let Some((patched, edits)) = replace_non_finite(doc) else {
                return Err(json_error(&strict, &[]));
            };
            serde_json::from_slice::<Value>(&patched).map_err(|e| json_error(&e, &edits))
        }

        fn section(root: &Value, kind: Kind) -> Result<Option<&Map<String, Value>>, ParseError> {
            let Value::Object(root) = root else {
                return Err(ParseError::NotAnObject);
            };
            match root.get(kind.section()) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Object(section)) => Ok(Some(section)),
                Some(_) => Err(ParseError::NotAnObject),
            }
        }

        fn describe(v: &Value) -> String {
            const MAX: usize = 40;
            match v {
                Value::String(s) if s.chars().count() > MAX => {
                    let cut: String = s.chars().take(MAX).collect();
                    format!("{:?}…", cut)
                }
                Value::String(s) => format!("{s:?}"),
                Value::Null => "null".to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Array(_) => "array".to_string(),
                Value::Object(_) => "object".to_string(),
            }
        }

        fn discoverable(kind: Kind, entry: &Value) -> bool {
            let Value::Object(fields) = entry else {
                return false;
            };
            if kind != Kind::Gauges {
                return true;
            }
            match fields.get("value") {
                Some(Value::Number(_) | Value::Null) => true,
                Some(Value::String(s)) => matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity"),
                _ => false,
            }
        }

        pub fn parse(doc: &[u8], kind: Kind, stats: &[&str]) -> Result<Metrics, ParseError> {
            let root = parse_json(doc)?;
            let Some(section) = section(&root, kind)? else {
                return Ok(Metrics::default());
            };
            let stats = if kind.single_valued() {
                kind.all_stats()
            } else {
                stats
            };
            let mut out = Metrics::default();
            for (name, entry) in section {
                let Value::Object(fields) = entry else {
                    out.skipped.push(Skipped {
                        metric: name.clone(),
                        stat: "*".to_string(),
                        reason: format!("not an object: {}", describe(entry)),
                    });
                    continue;
                };
                let mut metric = Metric {
                    name: name.clone(),
                    stats: Vec::new(),
                };
                let unit = |d: Dimension| {
                    let has = kind
                        .all_stats()
                        .iter()
                        .any(|s| Dimension::of(kind, s) == Some(d));
                    let field = fields.get(d.unit_field(kind)).filter(|_| has)?;
                    Some(match field {
                        Value::String(s) => Ok(s.as_str()),
                        other => Err(describe(other)),
                    })
                };
                let (duration, rate) = (unit(Dimension::Duration), unit(Dimension::Rate));
                let mut unknown = [false; 2];
                for &stat in stats {
                    match fields.get(stat) {
                        None => {}
                        Some(Value::Number(n)) => {
                            match deliver(kind, stat, n, &duration, &rate, &mut unknown) {
                                Ok(value) => metric.stats.push(Stat {
                                    name: stat.to_string(),
                                    value,
                                }),
                                Err(reason) => out.skipped.push(Skipped {
                                    metric: name.clone(),
                                    stat: stat.to_string(),
                                    reason,
                                }),
                            }
                        }
                        Some(other) => out.skipped.push(Skipped {
                            metric: name.clone(),
                            stat: stat.to_string(),
                            reason: format!("not a number: {}", describe(other)),
                        }),
                    }
                }
                out.unknown_units
                    .extend(unknown_units(kind, name, &duration, &rate, unknown));
                out.metrics.push(metric);
            }
            Ok(out)
        }

        pub fn names(doc: &[u8], kind: Kind) -> Result<Vec<String>, ParseError> {
            let root = parse_json(doc)?;
            Ok(section(&root, kind)?
                .map(|section| {
                    section
                        .iter()
                        .filter(|(_, entry)| discoverable(kind, entry))
                        .map(|(name, _)| name.clone())
                        .collect()
                })
                .unwrap_or_default())
        }
    }

    /// Documents for the comparisons with the tree reader: the samples, duplicates, odd shapes.
    fn oracle_documents() -> Vec<Vec<u8>> {
        let mut docs: Vec<Vec<u8>> = [
            SAMPLE,
            r#"{"gauges":{"a":{"value":NaN},"b":{"value":-Infinity},"c":{"value":Infinity},
                "d":{"value":"keep NaN \"Infinity\" \\"},"e":{"value":1.5}}}"#,
            // Unsorted and duplicate names: sorted, the last entry of a name counts.
            r#"{"timers":{"z":{"count":1},"b":{"count":2,"max":"x"},"a":{"count":3},
                "b":{"count":4,"max":5.5,"count":6},"a":7},
                "gauges":{"g":{"value":"1.0"},"h":{"value":1},"g":{"value":null},"h":{"value":[]}}}"#,
            // Duplicate sections: the last occurrence counts.
            r#"{"timers":{"a":{"count":1}},"timers":{"b":{"count":2}}}"#,
            r#"{"timers":[],"timers":{"b":{"count":2}}}"#,
            r#"{"timers":{"b":{"count":2}},"timers":[1,{"x":2}]}"#,
            r#"{"timers":{"b":{"count":2}},"timers":null}"#,
            // Values of every shape where numbers are expected, and escaped names.
            r#"{"counters":{"c\"1":{"count":true},"c\\2":{"count":{"n":1}},"c\u00e93":{"count":-0},
                "c4":{"count":-12},"c5":{"count":1e-7},"c6":{"count":123456789012345678901234},
                "c7":{"count":"Infinity"},"c8":"text","c9":null,"c10":[1],"c11":false,"c12":1.5e300,
                "c13":{"count":"a string of more than forty characters, to be cut short"}},
                "meters":{"m":{"count":1,"units":"events/second","m1_rate":-1.25E+2}},
                "histograms":{"h":{"count":0,"p50":[],"min":{},"max":null}}}"#,
            "[]",
            "42",
            "null",
            r#""timers""#,
            r#"{"timers":"x"}"#,
            "{}",
            "{\"version\":\"4.0.0\",\"gauges\":{},\"odd\":[1,[2,{\"timers\":{\"a\":{}}}]]}",
        ]
        .iter()
        .map(|d| d.as_bytes().to_vec())
        .collect();
        docs.push(big_timer_doc(50));
        docs
    }

    /// Every way of asking, for one document: each kind with several stat lists, and names.
    fn compare_with_tree(doc: &[u8]) {
        let shown = String::from_utf8_lossy(doc);
        for kind in Kind::ALL {
            for stats in [
                kind.all_stats(),
                kind.default_stats(),
                &[
                    "p95",
                    "count",
                    "count",
                    "nonexistent",
                    "units",
                    "max",
                    "min",
                    "p50",
                ][..],
                &[],
            ] {
                assert_eq!(
                    parse(doc, kind, stats),
                    tree::parse(doc, kind, stats),
                    "{kind} {stats:?} of {shown}"
                );
            }
            assert_eq!(
                names(doc, kind),
                tree::names(doc, kind),
                "{kind} names of {shown}"
            );
        }
        // One pass for all kinds gives what one pass per kind gives.
        let wanted: Vec<(Kind, &[&str])> = Kind::ALL.iter().map(|&k| (k, k.all_stats())).collect();
        match parse_kinds(doc, &wanted) {
            Ok(all) => {
                for ((kind, stats), got) in wanted.iter().zip(all) {
                    assert_eq!(got, tree::parse(doc, *kind, stats), "{kind} of {shown}");
                }
            }
            Err(e) => assert_eq!(Err(e), tree::parse(doc, Kind::Timers, &[]), "{shown}"),
        }
    }

    #[test]
    fn streaming_gives_what_the_tree_reader_gave() {
        for doc in oracle_documents() {
            compare_with_tree(&doc);
        }
    }

    #[test]
    fn duplicates_keep_the_last_entry_and_section() {
        let doc = br#"{"timers":{"b":{"count":2,"max":"x"},"a":{"count":3},
            "b":{"count":4,"max":5.5}},
            "gauges":{"g":{"value":"1.0"},"g":{"value":null},"h":{"value":1},"h":{"value":[]}}}"#;
        let m = parse(doc, Kind::Timers, &["count", "max"]).unwrap();
        assert_eq!(m.metrics.len(), 2);
        assert_eq!(m.metrics[0].name, "a");
        assert_eq!(stat_map(&m.metrics[1]), [("count", "4"), ("max", "5.5")]);
        assert!(
            m.skipped.is_empty(),
            "the first \"b\" is forgotten: {:?}",
            m.skipped
        );
        assert_eq!(names(doc, Kind::Gauges).unwrap(), ["g"]);
        let doc = br#"{"timers":{"a":{"count":1}},"timers":{"b":{"count":2}}}"#;
        assert_eq!(names(doc, Kind::Timers).unwrap(), ["b"]);
        let doc = br#"{"timers":{"a":{"count":1}},"timers":[]}"#;
        assert_eq!(names(doc, Kind::Timers), Err(ParseError::NotAnObject));
    }

    #[test]
    fn one_pass_serves_several_kinds() {
        let got = parse_kinds(
            SAMPLE.as_bytes(),
            &[
                (Kind::Timers, &["count"]),
                (Kind::Counters, &[]),
                (Kind::Timers, &["p95", "count"]),
            ],
        )
        .unwrap();
        assert_eq!(got.len(), 3);
        let timers = got[0].as_ref().unwrap();
        assert_eq!(stat_map(&timers.metrics[0]), [("count", "3120")]);
        assert_eq!(got[1].as_ref().unwrap().metrics.len(), 2);
        let timers = got[2].as_ref().unwrap();
        assert_eq!(
            stat_map(&timers.metrics[0]),
            [("p95", "0.14025"), ("count", "3120")]
        );
        // A section that is not an object fails its kind only; invalid JSON fails the call.
        let got = parse_kinds(
            br#"{"timers":[],"counters":{"c":{"count":1}}}"#,
            &[(Kind::Timers, &[]), (Kind::Counters, &[])],
        )
        .unwrap();
        assert_eq!(got[0], Err(ParseError::NotAnObject));
        assert_eq!(got[1].as_ref().unwrap().metrics.len(), 1);
        assert!(parse_kinds(b"{", &[(Kind::Timers, &[])]).is_err());
    }

    /// The byte offset serde_json's (line, column) stands for: column counts the bytes of the
    /// line before the error.
    fn offset(doc: &[u8], line: usize, column: usize) -> usize {
        let start = doc
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(line.wrapping_sub(2))
            .map_or(0, |(i, _)| i + 1);
        if line == 1 {
            column
        } else {
            start + column
        }
    }

    /// Whether the streaming pass failed as the tree reader did. They differ only inside
    /// content the pass skips, where serde_json's `IgnoredAny` names some errors differently
    /// and stops at a control character in a string where `Value` stops just after it.
    fn same_failure(doc: &[u8], stream: &ParseError, tree: &ParseError) -> bool {
        const RENAMED: [(&str, &str); 4] = [
            ("EOF while parsing a value", "EOF while parsing an object"),
            ("EOF while parsing a value", "invalid number"),
            ("trailing comma", "expected value"),
            ("trailing comma", "key must be a string"),
        ];
        let (
            ParseError::Json {
                line,
                column,
                message,
            },
            ParseError::Json {
                line: l,
                column: c,
                message: m,
            },
        ) = (stream, tree)
        else {
            return stream == tree;
        };
        let (s, t) = (offset(doc, *line, *column), offset(doc, *l, *c));
        (s == t || (t == s + 1 && doc[s] < 0x20))
            && (message == m || RENAMED.contains(&(m.as_str(), message.as_str())))
    }

    /// Whether the tree reader refused `doc` for a number out of f64 range, which the
    /// streaming pass does not notice where it skips the number (it then reads on: to the end,
    /// or to a later error).
    fn out_of_range(tree: &Result<impl fmt::Debug, ParseError>) -> bool {
        matches!(tree, Err(ParseError::Json { message, .. }) if message == "number out of range")
    }

    #[test]
    fn broken_documents_fail_where_the_tree_reader_failed() {
        let (mut checked, mut renamed) = (0, 0);
        for doc in oracle_documents().iter().take(3) {
            let mut variants: Vec<Vec<u8>> = (0..doc.len()).map(|n| doc[..n].to_vec()).collect();
            // Four of these bytes in turn at each position.
            let bytes = b",}]\"x1{[:.e\\";
            for i in 0..doc.len() {
                for k in 0..4 {
                    let mut d = doc.clone();
                    d[i] = bytes[(i + 3 * k) % bytes.len()];
                    variants.push(d);
                }
            }
            for (n, d) in variants.iter().enumerate() {
                let shown = String::from_utf8_lossy(d);
                // Every kind for the truncations; one kind in turn for the replacements.
                let kinds = if n < doc.len() {
                    &Kind::ALL[..]
                } else {
                    &Kind::ALL[n % 5..][..1]
                };
                for &kind in kinds {
                    let stats = kind.all_stats();
                    let (stream, tree) = (parse(d, kind, stats), tree::parse(d, kind, stats));
                    match (&stream, &tree) {
                        _ if out_of_range(&tree) => {}
                        (Err(s), Err(t)) => {
                            assert!(same_failure(d, s, t), "{s:?} vs {t:?} on {shown}");
                            renamed += usize::from(s != t);
                        }
                        _ => assert_eq!(stream, tree, "{kind} of {shown}"),
                    }
                    let (stream, tree) = (names(d, kind), tree::names(d, kind));
                    match (&stream, &tree) {
                        _ if out_of_range(&tree) => {}
                        (Err(s), Err(t)) => assert!(same_failure(d, s, t), "{s:?} vs {t:?}"),
                        _ => assert_eq!(stream, tree, "{kind} names of {shown}"),
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 5_000, "{checked}");
        assert!(renamed < checked / 10, "{renamed} of {checked}");
    }

    #[test]
    fn skipped_content_is_checked_for_syntax_only() {
        // The tree reader refused these; content that is never read no longer matters.
        for doc in [
            &br#"{"version":1e400,"timers":{"a":{"count":1}}}"#[..],
            b"{\"version\":\"\xff\",\"timers\":{\"a\":{\"count\":1}}}",
            br#"{"version":"\ud800","timers":{"a":{"count":1}}}"#,
            br#"{"timers":{"a":{"count":1,"p50":1e400}}}"#,
        ] {
            assert!(tree::parse(doc, Kind::Timers, &["count"]).is_err());
            assert_eq!(names(doc, Kind::Timers).unwrap(), ["a"]);
            assert_eq!(
                stat_map(&parse(doc, Kind::Timers, &["count"]).unwrap().metrics[0]),
                [("count", "1")]
            );
        }
        // A number out of f64's range where it is read is one skipped value (issue 15: it
        // used to reject the whole document, which discovery accepted).
        let m = parse(
            br#"{"timers":{"a":{"count":1e400,"max":-1e999},"b":{"count":2}}}"#,
            Kind::Timers,
            &["count", "max"],
        )
        .unwrap();
        assert_eq!(stat_map(&m.metrics[0]), []);
        assert_eq!(stat_map(&m.metrics[1]), [("count", "2")]);
        assert_eq!(
            m.skipped,
            [
                skip("a", "count", "number out of range: 1e400"),
                skip("a", "max", "number out of range: -1e999"),
            ]
        );
        let gauge = br#"{"gauges":{"g":{"value":1e400}}}"#;
        assert_eq!(names(gauge, Kind::Gauges).unwrap(), ["g"]);
        // What is read is checked as before.
        assert!(parse(b"{\"timers\":{\"\xff\":{}}}", Kind::Timers, &["count"]).is_err());
    }
}
