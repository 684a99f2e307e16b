//! Documents, item keys and the zabbix_sender input format, written from Zabbix's and
//! Dropwizard's rules (not from the code under test), with the values a test expects.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

/// The 11 statistics the courier delivers for a timer by default: the talk's list, as it wrote
/// them (one word each).
pub const DEFAULT_TIMER_STATS: &str = "count max mean mean_rate min p75 p95 p98 p99 p999 stddev";

/// [`DEFAULT_TIMER_STATS`], one by one.
pub fn default_timer_stats() -> impl Iterator<Item = &'static str> {
    DEFAULT_TIMER_STATS.split(' ')
}

/// Every numeric field of a Dropwizard 4.x timer, with a rank that orders them plausibly
/// (min < p50 < mean < p75 < … < max) and makes every value distinct.
const TIMER_FIELDS: [(&str, u32); 15] = [
    ("min", 1),
    ("p50", 2),
    ("mean", 3),
    ("p75", 4),
    ("p95", 5),
    ("p98", 6),
    ("p99", 7),
    ("p999", 8),
    ("max", 9),
    ("stddev", 10),
    ("m15_rate", 11),
    ("m1_rate", 12),
    ("m5_rate", 13),
    ("mean_rate", 14),
    ("count", 0),
];

/// The value of field `rank` of the `i`-th timer: unique for every (i < 10,000, field).
fn timer_value(i: usize, rank: u32) -> f64 {
    if rank == 0 {
        // count: an integer, as Dropwizard writes it.
        return (1_000_000 + i * 17) as f64;
    }
    (f64::from(rank) * 10_000.0 + i as f64) / 1000.0 + 0.000_123_4
}

/// A Dropwizard 4.x document whose `timers` hold `names` (all 17 timer fields each; the other
/// sections empty), in milliseconds as many apps write them, and the expected delivered value
/// (in seconds, per second) of each `(name, stat)` for the 11 default stats.
pub fn dropwizard_timers(names: &[&str]) -> (Vec<u8>, BTreeMap<(String, String), f64>) {
    let mut timers = serde_json::Map::new();
    let mut expected = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let mut t = serde_json::Map::new();
        for (field, rank) in TIMER_FIELDS {
            let v = timer_value(i, rank);
            let jv = if rank == 0 { json!(v as u64) } else { json!(v) };
            t.insert(field.to_string(), jv);
            if default_timer_stats().any(|s| s == field) {
                // The document is in milliseconds; the courier delivers seconds.
                let delivered = if rank == 0 || field.ends_with("_rate") {
                    v
                } else {
                    v / 1000.0
                };
                expected.insert((name.to_string(), field.to_string()), delivered);
            }
        }
        t.insert("duration_units".into(), json!("milliseconds"));
        t.insert("rate_units".into(), json!("calls/second"));
        let previous = timers.insert(name.to_string(), Value::Object(t));
        assert!(previous.is_none(), "duplicate timer name {name:?}");
    }
    let doc = json!({
        "version": "4.0.0",
        "gauges": {},
        "counters": {},
        "histograms": {},
        "meters": {},
        "timers": timers,
    });
    (
        serde_json::to_vec_pretty(&doc).expect("serialize"),
        expected,
    )
}

/// Zabbix's `quote_key_param(param, forced = 0)`: quote when the parameter starts with `"`, a
/// space or `[`, or contains `,` or `]`; quoting wraps it in `"` and escapes `"` as `\"`.
pub fn zabbix_quote(param: &str) -> String {
    let needs = param.starts_with(['"', ' ', '[']) || param.contains(',') || param.contains(']');
    assert!(
        !(needs && param.ends_with('\\')),
        "{param:?} needs quoting but ends with a backslash: Zabbix cannot encode it"
    );
    if needs {
        format!("\"{}\"", param.replace('"', "\\\""))
    } else {
        param.to_string()
    }
}

/// The key the server gives the item of prototype `timer[{#TIMER}.STAT]` for timer `name`.
pub fn timer_key(name: &str, stat: &str) -> String {
    format!("timer[{}]", zabbix_quote(&format!("{name}.{stat}")))
}

/// The expected key → value map of a timers document's expectation.
pub fn expected_by_key(expected: &BTreeMap<(String, String), f64>) -> BTreeMap<String, f64> {
    expected
        .iter()
        .map(|((name, stat), v)| (timer_key(name, stat), *v))
        .collect()
}

/// A quoted field of a zabbix_sender input line: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub fn input_quote(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

/// The LLD document `{"data":[{"<macro>":"name"},…]}` for `names`, in order.
pub fn lld_json(lld_macro: &str, names: &[&str]) -> String {
    let rows: Vec<Value> = names.iter().map(|n| json!({ lld_macro: n })).collect();
    json!({ "data": rows }).to_string()
}

/// True when `got` equals `want` within a relative 1e-9 (Zabbix stores doubles).
pub fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1e-300)
}

/// The keys in `a` and not in `b`, and in `b` and not in `a`, for assertion messages.
pub fn key_diff(a: &BTreeSet<String>, b: &BTreeSet<String>) -> String {
    let only_a: Vec<_> = a.difference(b).take(10).collect();
    let only_b: Vec<_> = b.difference(a).take(10).collect();
    format!("expected but missing: {only_a:?}; present but unexpected: {only_b:?}")
}
