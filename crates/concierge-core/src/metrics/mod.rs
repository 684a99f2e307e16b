//! One metric model for every source format, and the parsers that fill it.

pub mod dropwizard;
pub mod prometheus;

use std::fmt;
use std::str::FromStr;

use crate::outcome::{Classify, Failure};
use crate::text::shown;

/// A kind of metric in a Dropwizard registry; each kind has its own LLD macro and item key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Gauges,
    Counters,
    Histograms,
    Meters,
    Timers,
}

impl Kind {
    /// Every kind, in the order Dropwizard writes them.
    pub const ALL: [Kind; 5] = [
        Kind::Gauges,
        Kind::Counters,
        Kind::Histograms,
        Kind::Meters,
        Kind::Timers,
    ];

    /// The section name in a Dropwizard document and on the command line (`timers`).
    pub fn section(self) -> &'static str {
        match self {
            Kind::Gauges => "gauges",
            Kind::Counters => "counters",
            Kind::Histograms => "histograms",
            Kind::Meters => "meters",
            Kind::Timers => "timers",
        }
    }

    /// The LLD macro that carries a metric name of this kind (`{#TIMER}`).
    pub fn lld_macro(self) -> &'static str {
        match self {
            Kind::Gauges => "{#GAUGE}",
            Kind::Counters => "{#COUNTER}",
            Kind::Histograms => "{#HISTOGRAM}",
            Kind::Meters => "{#METER}",
            Kind::Timers => "{#TIMER}",
        }
    }

    /// The default item key template: the talk's `timer[{name}.{stat}]` and its siblings.
    /// Single-value kinds (gauges, counters) have no `{stat}`.
    pub fn default_key_template(self) -> &'static str {
        match self {
            Kind::Gauges => "gauge[{name}]",
            Kind::Counters => "counter[{name}]",
            Kind::Histograms => "histogram[{name}.{stat}]",
            Kind::Meters => "meter[{name}.{stat}]",
            Kind::Timers => "timer[{name}.{stat}]",
        }
    }

    /// Every numeric statistic a metric of this kind carries, in Dropwizard's field names.
    pub fn all_stats(self) -> &'static [&'static str] {
        match self {
            Kind::Gauges => &["value"],
            Kind::Counters => &["count"],
            Kind::Histograms => &[
                "count", "max", "mean", "min", "p50", "p75", "p95", "p98", "p99", "p999", "stddev",
            ],
            Kind::Meters => &["count", "m15_rate", "m1_rate", "m5_rate", "mean_rate"],
            Kind::Timers => &[
                "count",
                "max",
                "mean",
                "min",
                "p50",
                "p75",
                "p95",
                "p98",
                "p99",
                "p999",
                "stddev",
                "m15_rate",
                "m1_rate",
                "m5_rate",
                "mean_rate",
            ],
        }
    }

    /// The statistics delivered when `--stats` is not given. For timers these are the talk's
    /// eleven (count, max, mean, mean_rate, min, p75, p95, p98, p99, p999, stddev).
    pub fn default_stats(self) -> &'static [&'static str] {
        match self {
            Kind::Gauges => &["value"],
            Kind::Counters => &["count"],
            Kind::Histograms => &[
                "count", "max", "mean", "min", "p75", "p95", "p98", "p99", "p999", "stddev",
            ],
            Kind::Meters => &["count", "m1_rate", "m5_rate", "m15_rate", "mean_rate"],
            Kind::Timers => &[
                "count",
                "max",
                "mean",
                "mean_rate",
                "min",
                "p75",
                "p95",
                "p98",
                "p99",
                "p999",
                "stddev",
            ],
        }
    }

    /// True when a metric of this kind has one value and its key has no `{stat}`.
    pub fn single_valued(self) -> bool {
        matches!(self, Kind::Gauges | Kind::Counters)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.section())
    }
}

/// The error for a KIND argument that names no kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKind(pub String);

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown metric kind {:?} (expected timers, counters, gauges, meters or histograms)",
            shown(&self.0)
        )
    }
}

impl std::error::Error for UnknownKind {}

impl Classify for UnknownKind {
    fn failure(&self) -> Failure {
        Failure::Usage
    }
}

impl FromStr for Kind {
    type Err = UnknownKind;

    /// Accepts the plural section name and the singular (`timers`, `timer`), any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let plural = lower.strip_suffix('s').unwrap_or(&lower);
        Kind::ALL
            .into_iter()
            .find(|k| k.section().strip_suffix('s') == Some(plural))
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// One named metric with the statistics a source reported for it, values already formatted
/// the way Zabbix stores numbers (plain decimal or exponent notation; never NaN or infinity).
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub stats: Vec<Stat>,
}

/// One numeric statistic of a metric (`p95` of a timer, `value` of a gauge).
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    pub name: String,
    pub value: String,
}

/// The metrics of one kind read from a document, and how many values were left out because
/// Zabbix could not store them as numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub metrics: Vec<Metric>,
    pub skipped: Vec<Skipped>,
    /// Unit fields whose unit is not known: their values were delivered as they are.
    pub unknown_units: Vec<UnknownUnit>,
}

/// A unit field (`duration_units`, `rate_units`, `units`) naming a unit no conversion is known
/// for: for the warning on stderr.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownUnit {
    pub metric: String,
    pub field: String,
    /// The field's value, quoted (or described when it is not a string).
    pub unit: String,
}

/// A value that was not delivered, and why: for the warning on stderr.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub metric: String,
    pub stat: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_in_singular_and_plural() {
        assert_eq!("timers".parse::<Kind>().unwrap(), Kind::Timers);
        assert_eq!("Timer".parse::<Kind>().unwrap(), Kind::Timers);
        assert_eq!("gauges".parse::<Kind>().unwrap(), Kind::Gauges);
        assert_eq!("histogram".parse::<Kind>().unwrap(), Kind::Histograms);
        assert!("timerss".parse::<Kind>().is_err());
        assert!("".parse::<Kind>().is_err());
    }

    #[test]
    fn timer_defaults_are_the_talks_eleven() {
        assert_eq!(Kind::Timers.default_stats().len(), 11);
        for s in Kind::Timers.default_stats() {
            assert!(Kind::Timers.all_stats().contains(s));
        }
    }
}
