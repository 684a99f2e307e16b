//! A mutation fuzzer for the Prometheus/OpenMetrics reader, run by `cargo test` for a few
//! seconds' worth of cases (more with `CONCIERGE_FUZZ_CASES=N`): random edits of real
//! expositions must never panic, must fail with a line inside the document, and whatever is
//! read must survive a round trip through the text format unchanged. `REGRESSIONS` holds
//! edge cases checked first; a case the fuzzer finds failing goes there (the message says so).

use concierge_core::metrics::prometheus::{self, series_text, Format, Options, Role, Selection};

const SEEDS: &[&str] = &[
    include_str!("fixtures/prometheus_every_type.txt"),
    include_str!("fixtures/prometheus_every_type.om.txt"),
    include_str!("fixtures/prometheus_every_type.utf8.om.txt"),
    "# TYPE \"my.metric\" gauge\n{\"my.metric\",\"a b\"=\"x\\\\y\\n\\\"z\"} 1 1700000000000\n",
    "# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.7\nh_count 2\n# EOF\n",
];

/// Edge cases at the lexer's boundaries, and any failing case the fuzzer reports.
const REGRESSIONS: &[&[u8]] = &[
    // A multi-byte character right after a backslash in a quoted string.
    b"a{b=\"\\\xc3\xa9\"} 1\n",
    // A quoted name that is only an escape.
    b"{\"\\\"} 1\n",
    // `?`-like bytes at the end of a line with no value.
    b"a{} \n",
    // A timestamp of i64::MIN milliseconds.
    b"a 1 -9223372036854775808\n",
];

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"\"",
    b"=",
    b",",
    b"\\",
    b"\\\\",
    b"\\n",
    b"\\\"",
    b"#",
    b" ",
    b"\t",
    b"\n",
    b"# EOF\n",
    b"# TYPE x counter\n",
    b"# HELP x y\n",
    b"# UNIT x_seconds seconds\n",
    b"NaN",
    b"+Inf",
    b"-Inf",
    b"1e308",
    b"1e-400",
    b"-0",
    b"0x1p3",
    b"_total",
    b"_bucket",
    b"{le=\"+Inf\"}",
    b"{quantile=\"0.5\"}",
    b"\xff",
    b"\xc3",
    "é".as_bytes(),
    b"\r",
    b"\0",
    b"99999999999999999999",
    b"1.5",
    b"{\"q.name\"",
    b" # {a=\"b\"} 1 2",
];

fn mutate(rng: &mut Rng, doc: &[u8]) -> Vec<u8> {
    let mut d = doc.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(d.len() + 1);
        match rng.below(6) {
            0 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                d.splice(at..at, t.iter().copied());
            }
            1 if !d.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(d.len());
                d.drain(at.min(d.len() - 1)..end);
            }
            2 if at < d.len() => d[at] = (rng.next() & 0xff) as u8,
            3 => d.truncate(at),
            4 => {
                // Duplicate a line.
                let start = d[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = d[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(d.len(), |i| at + i + 1);
                let line = d[start..end].to_vec();
                d.splice(end..end, line);
            }
            _ => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let end = (at + t.len()).min(d.len());
                d.splice(at..end, t.iter().copied());
            }
        }
    }
    d
}

/// Writes what was read back as a text-format document, one sample per series.
fn render(e: &prometheus::Exposition) -> String {
    let mut out = String::new();
    for s in e.series.iter().filter(|s| s.role != Role::Quantile) {
        out.push_str(&series_text(&s.name, &s.labels_text));
        out.push_str(&format!(" {}\n", s.value));
    }
    out
}

fn key(e: &prometheus::Exposition) -> Vec<(String, String, u64)> {
    let mut v: Vec<_> = e
        .series
        .iter()
        .filter(|s| s.role != Role::Quantile)
        .map(|s| {
            let bits = if s.value.is_nan() {
                f64::NAN.to_bits()
            } else {
                s.value.to_bits()
            };
            (s.name.clone(), s.labels_text.clone(), bits)
        })
        .collect();
    v.sort();
    v
}

fn check(doc: &[u8]) {
    let options = Options {
        selection: Selection::default(),
        quantiles: vec![0.0, 0.5, 0.99, 1.0],
    };
    let lines = doc.split(|&b| b == b'\n').count();
    for format in [Format::Text, Format::OpenMetrics] {
        match prometheus::read(doc, format, &options) {
            Err(e) => {
                assert!(
                    e.line >= 1 && e.line <= lines + 1,
                    "{e} in {lines} lines: {:?}",
                    String::from_utf8_lossy(doc)
                );
                let msg = e.to_string();
                assert!(!msg.contains('\n') && msg.chars().count() < 300, "{msg:?}");
            }
            Ok(e) => {
                for s in &e.series {
                    assert_eq!(s.labels_text, prometheus::canonical_labels(&s.labels));
                    assert!(
                        s.labels.windows(2).all(|w| w[0].0 < w[1].0),
                        "sorted, unique: {:?}",
                        s.labels
                    );
                }
                let text = render(&e);
                let again = prometheus::read(text.as_bytes(), Format::Text, &Options::default())
                    .unwrap_or_else(|err| panic!("round trip failed: {err}\n{text}"));
                assert_eq!(
                    key(&again),
                    key(&e),
                    "round trip of {:?}",
                    String::from_utf8_lossy(doc)
                );
            }
        }
    }
}

#[test]
fn regressions_stay_fixed() {
    for doc in REGRESSIONS {
        check(doc);
    }
    for doc in SEEDS {
        check(doc.as_bytes());
    }
}

#[test]
fn random_edits_never_break_the_reader() {
    let cases: usize = std::env::var("CONCIERGE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ cases as u64);
    for i in 0..cases {
        let seed = SEEDS[i % SEEDS.len()].as_bytes();
        let doc = mutate(&mut rng, seed);
        let result = std::panic::catch_unwind(|| check(&doc));
        if result.is_err() {
            panic!(
                "case {i} failed; add it to REGRESSIONS: {:?}",
                String::from_utf8_lossy(&doc)
            );
        }
    }
}
