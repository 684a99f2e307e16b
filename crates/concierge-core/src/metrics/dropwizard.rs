//! Dropwizard (Codahale) metrics JSON, as the metrics-json 3.x/4.x servlet writes it.
//!
//! The document is an object with optional `gauges`, `counters`, `histograms`, `meters` and
//! `timers` sections, each mapping a metric name to an object of statistics. Only JSON numbers
//! are delivered; anything else is reported in [`Metrics::skipped`]. Metrics come out in the
//! iteration order of serde_json's `Map`: sorted by name (byte order), since this crate builds
//! serde_json without `preserve_order`; deterministic either way.

use std::fmt;

use serde_json::{Map, Value};

use super::{Kind, Metric, Metrics, Skipped, Stat};

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
                "invalid metrics JSON at line {line}, column {column}: {message}"
            ),
            ParseError::NotAnObject => f.write_str(
                "not a Dropwizard metrics document: the top level or the metric section is not \
                 a JSON object",
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// A parsed Dropwizard document, so several kinds can be read from one parse.
#[derive(Debug, Clone)]
pub struct Document {
    root: Value,
}

impl Document {
    /// Parse `doc` (retrying once with bare NaN/Infinity tokens nulled, as older Jackson
    /// writes them).
    pub fn parse(doc: &[u8]) -> Result<Self, ParseError> {
        Ok(Self {
            root: parse_json(doc)?,
        })
    }

    /// The metrics of `kind`, each with the statistics named in `stats` in that order (for
    /// gauges and counters `stats` is ignored: `value` / `count`). A missing section gives no
    /// metrics; statistics a metric lacks are left out silently; non-numeric values and metric
    /// entries that are not objects (stat `*`) are recorded in `skipped`.
    pub fn metrics(&self, kind: Kind, stats: &[&str]) -> Result<Metrics, ParseError> {
        let Some(section) = section(&self.root, kind)? else {
            return Ok(Metrics::default());
        };
        let stats = if kind.single_valued() {
            kind.all_stats()
        } else {
            stats
        };
        let mut out = Metrics {
            metrics: Vec::with_capacity(section.len()),
            skipped: Vec::new(),
        };
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
                stats: Vec::with_capacity(stats.len()),
            };
            for &stat in stats {
                match fields.get(stat) {
                    None => {}
                    Some(Value::Number(n)) => metric.stats.push(Stat {
                        name: stat.to_string(),
                        value: n.to_string(),
                    }),
                    Some(other) => out.skipped.push(Skipped {
                        metric: name.clone(),
                        stat: stat.to_string(),
                        reason: format!("not a number: {}", describe(other)),
                    }),
                }
            }
            out.metrics.push(metric);
        }
        Ok(out)
    }

    /// The names of the metrics of `kind`, for discovery: the entries worth an item, in the
    /// same order as [`Document::metrics`].
    pub fn names(&self, kind: Kind) -> Result<Vec<String>, ParseError> {
        Ok(section(&self.root, kind)?
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

/// The metrics of `kind` in `doc` (one parse; see [`Document::metrics`]).
pub fn parse(doc: &[u8], kind: Kind, stats: &[&str]) -> Result<Metrics, ParseError> {
    Document::parse(doc)?.metrics(kind, stats)
}

/// The names of the metrics of `kind` in `doc` (one parse; see [`Document::names`]).
pub fn names(doc: &[u8], kind: Kind) -> Result<Vec<String>, ParseError> {
    Document::parse(doc)?.names(kind)
}

/// Whether discovery should create items for this entry: every metric object, except a gauge
/// whose value can never be a number (a version string, a list), which would only yield items
/// that never receive data. NaN, infinities and null count as numbers that are briefly undefined.
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

/// The section of `kind`: `None` when absent (or `null`), an error when not an object.
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

/// A short description of a non-numeric value for a skip reason.
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

/// Parses strictly first; only if that fails, retries once with bare `NaN`, `Infinity` and
/// `-Infinity` (written by older Jackson) replaced by `null`, so they become skipped values.
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
                ("p95", "140.25"),
                ("count", "3120"),
                ("mean", "45.1"),
                ("stddev", "60.42")
            ]
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
}
