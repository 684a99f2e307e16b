//! One line of a Prometheus text (0.0.4) or OpenMetrics 1.0 exposition, taken apart.
//!
//! The grammar is line by line, so each line is read on its own: a metadata line
//! (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`), a comment, a blank line or a sample. Both formats
//! are read with the same, slightly lenient, rules: runs of blanks and tabs separate tokens,
//! names may be quoted UTF-8 strings (`{"my.metric", "my label"="x"}`), unknown escapes in
//! label values keep their backslash (as Prometheus does), and an exemplar (` # {…} 1`) or
//! anything else after a `#` following the value is ignored.

use super::{ErrorKind, Format};

/// What one line holds.
#[derive(Debug, PartialEq)]
pub(super) enum Line<'a> {
    Blank,
    /// A comment that is no metadata (text format only).
    Comment,
    Help {
        name: String,
        text: String,
    },
    Type {
        name: String,
        kind: &'a str,
    },
    Unit {
        name: String,
        unit: String,
    },
    Eof,
    Sample(RawSample),
}

/// A sample line: the name, the labels as written, the value and the timestamp text.
#[derive(Debug, PartialEq)]
pub(super) struct RawSample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp: Option<RawTimestamp>,
}

/// A timestamp as written: milliseconds (text format) or seconds (OpenMetrics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum RawTimestamp {
    /// Whole seconds and nanoseconds (nanoseconds < 1e9); seconds may be negative.
    Exact { secs: i64, nanos: u32 },
    /// Not representable: too large, or not a finite number.
    OutOfRange,
}

/// A problem found on a line: what, and the byte column (0-based) where.
pub(super) type LexError = (ErrorKind, usize);

/// Reads one line (without its line feed).
pub(super) fn line(text: &str, format: Format) -> Result<Line<'_>, LexError> {
    let mut c = Cursor::new(text);
    c.blanks();
    if c.at_end() {
        return Ok(Line::Blank);
    }
    if c.peek() == Some(b'#') {
        return metadata(c, format);
    }
    sample(c, format).map(Line::Sample)
}

fn metadata(mut c: Cursor<'_>, format: Format) -> Result<Line<'_>, LexError> {
    c.bump(); // '#'
    let comment = || match format {
        Format::Text => Ok(Line::Comment),
        Format::OpenMetrics => Err((ErrorKind::Comment, 0)),
    };
    if !c.blanks() {
        return comment();
    }
    let word_at = c.pos;
    let word = c.word();
    match word {
        "HELP" | "TYPE" | "UNIT" if word == "UNIT" && format == Format::Text => comment(),
        "HELP" | "TYPE" | "UNIT" => {
            if !c.blanks() {
                return Err((ErrorKind::Expected("a metric name"), c.pos));
            }
            let name = metric_name(&mut c)?;
            let has_blank = c.blanks();
            match word {
                "HELP" => {
                    let text = if has_blank {
                        unescape_help(c.rest(), format)
                    } else {
                        String::new()
                    };
                    if !has_blank && !c.at_end() {
                        return Err((ErrorKind::Expected("a blank after the name"), c.pos));
                    }
                    Ok(Line::Help { name, text })
                }
                "TYPE" => {
                    if !has_blank {
                        return Err((ErrorKind::Expected("a metric type"), c.pos));
                    }
                    let at = c.pos;
                    let kind = c.word();
                    c.blanks();
                    if kind.is_empty() || !c.at_end() {
                        return Err((ErrorKind::Expected("one metric type word"), at));
                    }
                    Ok(Line::Type { name, kind })
                }
                _ => {
                    let unit = c.word().to_string();
                    c.blanks();
                    if !c.at_end() {
                        return Err((ErrorKind::Expected("one unit word"), c.pos));
                    }
                    Ok(Line::Unit { name, unit })
                }
            }
        }
        "EOF" if format == Format::OpenMetrics => {
            c.blanks();
            if c.at_end() {
                Ok(Line::Eof)
            } else {
                Err((ErrorKind::Expected("nothing after # EOF"), c.pos))
            }
        }
        _ => {
            let _ = word_at;
            comment()
        }
    }
}

fn sample(mut c: Cursor<'_>, format: Format) -> Result<RawSample, LexError> {
    let mut name = None;
    if c.peek() != Some(b'{') {
        name = Some(metric_name(&mut c)?);
    }
    let mut labels = Vec::new();
    let mut blank = c.blanks();
    if c.peek() == Some(b'{') {
        c.bump();
        label_set(&mut c, &mut name, &mut labels)?;
        blank = c.blanks();
    }
    let Some(name) = name else {
        return Err((ErrorKind::Expected("a metric name"), c.pos));
    };
    if !blank {
        return Err((ErrorKind::Expected("a blank before the value"), c.pos));
    }
    let at = c.pos;
    let value = number(c.word()).ok_or((ErrorKind::BadValue, at))?;
    let mut timestamp = None;
    if c.blanks() && !c.at_end() && c.peek() != Some(b'#') {
        let at = c.pos;
        let word = c.word();
        timestamp = Some(
            match format {
                Format::Text => millis(word),
                Format::OpenMetrics => seconds(word),
            }
            .ok_or((ErrorKind::BadTimestamp, at))?,
        );
        c.blanks();
    }
    // An exemplar (` # {trace_id="…"} 1 123`) is ignored; so is nothing else.
    if !c.at_end() && c.peek() != Some(b'#') {
        return Err((
            ErrorKind::Expected("the end of the line after the value"),
            c.pos,
        ));
    }
    Ok(RawSample {
        name,
        labels,
        value,
        timestamp,
    })
}

/// The labels after `{`, up to and including `}`. A first entry that is a quoted string
/// without `=` is the metric name (the UTF-8 syntax `{"my.metric",a="b"}`).
fn label_set(
    c: &mut Cursor<'_>,
    name: &mut Option<String>,
    labels: &mut Vec<(String, String)>,
) -> Result<(), LexError> {
    let mut first = true;
    let mut starts = Vec::new();
    loop {
        c.blanks();
        match c.peek() {
            Some(b'}') => {
                c.bump();
                return no_duplicates(labels, &starts);
            }
            None => return Err((ErrorKind::Unterminated("label set"), c.pos)),
            _ => {}
        }
        let at = c.pos;
        let label = if c.peek() == Some(b'"') {
            let quoted = quoted(c, "quoted name")?;
            c.blanks();
            if c.peek() != Some(b'=') {
                if !first || name.is_some() {
                    return Err((ErrorKind::Expected("= after a quoted label name"), c.pos));
                }
                *name = Some(quoted);
                first = false;
                if !separator(c)? {
                    return no_duplicates(labels, &starts);
                }
                continue;
            }
            quoted
        } else {
            let n = c.take_while(is_label_char);
            if n.is_empty() || n.as_bytes()[0].is_ascii_digit() {
                return Err((ErrorKind::Expected("a label name"), at));
            }
            n.to_string()
        };
        first = false;
        c.blanks();
        if c.peek() != Some(b'=') {
            return Err((ErrorKind::Expected("= after the label name"), c.pos));
        }
        c.bump();
        c.blanks();
        if c.peek() != Some(b'"') {
            return Err((ErrorKind::Expected("a quoted label value"), c.pos));
        }
        let value = quoted(c, "label value")?;
        labels.push((label, value));
        starts.push(at);
        if !separator(c)? {
            return no_duplicates(labels, &starts);
        }
    }
}

/// A label name given twice is an error at its second place; sorting keeps a line of
/// thousands of labels linear-logarithmic rather than quadratic.
fn no_duplicates(labels: &[(String, String)], starts: &[usize]) -> Result<(), LexError> {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by(|&a, &b| labels[a].0.cmp(&labels[b].0).then(a.cmp(&b)));
    match order
        .windows(2)
        .filter(|w| labels[w[0]].0 == labels[w[1]].0)
        .map(|w| w[1])
        .min()
    {
        Some(i) => Err((ErrorKind::DuplicateLabel(labels[i].0.clone()), starts[i])),
        None => Ok(()),
    }
}

/// After a label: `,` (true: more may follow) or `}` (false: the set is closed).
fn separator(c: &mut Cursor<'_>) -> Result<bool, LexError> {
    c.blanks();
    match c.peek() {
        Some(b',') => {
            c.bump();
            Ok(true)
        }
        Some(b'}') => {
            c.bump();
            Ok(false)
        }
        None => Err((ErrorKind::Unterminated("label set"), c.pos)),
        _ => Err((ErrorKind::Expected(", or } after a label"), c.pos)),
    }
}

/// A metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, or a quoted UTF-8 string.
fn metric_name(c: &mut Cursor<'_>) -> Result<String, LexError> {
    if c.peek() == Some(b'"') {
        return quoted(c, "quoted name");
    }
    let at = c.pos;
    let n = c.take_while(|b| is_label_char(b) || b == b':');
    if n.is_empty() || n.as_bytes()[0].is_ascii_digit() {
        return Err((ErrorKind::Expected("a metric name"), at));
    }
    Ok(n.to_string())
}

fn is_label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A `"…"` string with `\\`, `\"` and `\n` unescaped; any other escape is kept as written.
fn quoted(c: &mut Cursor<'_>, what: &'static str) -> Result<String, LexError> {
    let start = c.pos;
    c.bump(); // '"'
    let mut out = String::new();
    let mut run = c.pos;
    loop {
        match c.peek() {
            None => return Err((ErrorKind::Unterminated(what), start)),
            Some(b'"') => {
                out.push_str(&c.text[run..c.pos]);
                c.bump();
                return Ok(out);
            }
            Some(b'\\') => {
                out.push_str(&c.text[run..c.pos]);
                c.bump();
                match c.peek() {
                    None => return Err((ErrorKind::Unterminated(what), start)),
                    Some(b'\\') => out.push('\\'),
                    Some(b'"') => out.push('"'),
                    Some(b'n') => out.push('\n'),
                    Some(_) => out.push('\\'),
                }
                if matches!(c.peek(), Some(b'\\' | b'"' | b'n')) {
                    c.bump();
                }
                run = c.pos;
            }
            Some(_) => c.bump_char(),
        }
    }
}

/// HELP text: `\\` and `\n` (and in OpenMetrics `\"`) unescaped, others kept as written.
fn unescape_help(text: &str, format: Format) -> String {
    if !text.contains('\\') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match chars.clone().next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if format == Format::OpenMetrics => out.push('"'),
            _ => {
                out.push('\\');
                continue;
            }
        }
        chars.next();
    }
    out
}

/// A sample value: a decimal or exponent number, or NaN / ±Inf in any case. Hexadecimal and
/// other forms Go's ParseFloat also takes are refused.
pub(super) fn number(word: &str) -> Option<f64> {
    let b = word.as_bytes();
    let digits = b.strip_prefix(b"+").or(b.strip_prefix(b"-")).unwrap_or(b);
    let special = [&b"inf"[..], b"infinity", b"nan"]
        .iter()
        .any(|s| digits.eq_ignore_ascii_case(s));
    let plain = !digits.is_empty()
        && digits
            .iter()
            .all(|&d| d.is_ascii_digit() || matches!(d, b'.' | b'e' | b'E' | b'+' | b'-'))
        && digits.iter().any(u8::is_ascii_digit);
    if !(special || plain) {
        return None;
    }
    word.parse().ok()
}

/// A text-format timestamp: integer milliseconds since the epoch.
fn millis(word: &str) -> Option<RawTimestamp> {
    let b = word.as_bytes();
    let digits = b.strip_prefix(b"-").or(b.strip_prefix(b"+")).unwrap_or(b);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(match word.parse::<i64>() {
        Ok(ms) => RawTimestamp::Exact {
            secs: ms.div_euclid(1000),
            nanos: (ms.rem_euclid(1000) * 1_000_000) as u32,
        },
        Err(_) => RawTimestamp::OutOfRange,
    })
}

/// An OpenMetrics timestamp: seconds since the epoch, a decimal (read exactly, to the
/// nanosecond) or any other number (through f64).
fn seconds(word: &str) -> Option<RawTimestamp> {
    let b = word.as_bytes();
    let negative = b.first() == Some(&b'-');
    let body = b.strip_prefix(b"-").or(b.strip_prefix(b"+")).unwrap_or(b);
    let (int, frac) = match body.iter().position(|&d| d == b'.') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &b""[..]),
    };
    let all_digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if !(int.is_empty() && frac.is_empty()) && all_digits(int) && all_digits(frac) {
        let whole = if int.is_empty() {
            Some(0)
        } else {
            std::str::from_utf8(int).ok()?.parse::<i64>().ok()
        };
        let Some(whole) = whole else {
            return Some(RawTimestamp::OutOfRange);
        };
        let mut nanos: u32 = 0;
        for i in 0..9 {
            nanos = nanos * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
        }
        if !negative || nanos == 0 {
            return Some(RawTimestamp::Exact {
                secs: if negative { -whole } else { whole },
                nanos,
            });
        }
        return Some(RawTimestamp::Exact {
            secs: -whole - 1,
            nanos: 1_000_000_000 - nanos,
        });
    }
    let v = number(word)?;
    if !v.is_finite() || v.abs() >= 9.0e15 {
        return Some(RawTimestamp::OutOfRange);
    }
    let secs = v.floor();
    let nanos = (((v - secs) * 1e9).round() as u32).min(999_999_999);
    Some(RawTimestamp::Exact {
        secs: secs as i64,
        nanos,
    })
}

/// A position in a line.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn bump(&mut self) {
        self.pos += 1;
    }

    /// Steps over one whole UTF-8 character.
    fn bump_char(&mut self) {
        let len = self.text[self.pos..]
            .chars()
            .next()
            .map_or(1, char::len_utf8);
        self.pos += len;
    }

    /// Skips blanks and tabs; true when there was at least one.
    fn blanks(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Everything up to the next blank or tab (or the end).
    fn word(&mut self) -> &'a str {
        self.take_while(|b| b != b' ' && b != b'\t')
    }

    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    fn rest(&mut self) -> &'a str {
        let r = &self.text[self.pos..];
        self.pos = self.text.len();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> RawSample {
        match line(text, Format::Text) {
            Ok(Line::Sample(s)) => s,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn samples_with_labels_values_and_timestamps() {
        let got = s(r#"http_requests_total{method="post",code="200"} 1027 1395066363000"#);
        assert_eq!(got.name, "http_requests_total");
        assert_eq!(got.labels, labels(&[("method", "post"), ("code", "200")]));
        assert_eq!(got.value, 1027.0);
        assert_eq!(
            got.timestamp,
            Some(RawTimestamp::Exact {
                secs: 1395066363,
                nanos: 0
            })
        );
        let got = s("  metric_without_timestamp_and_labels\t12.47  ");
        assert_eq!((got.labels.len(), got.value), (0, 12.47));
        let got = s(
            r#"msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9"#,
        );
        assert_eq!(got.labels[0].1, r"C:\DIR\FILE.TXT");
        assert_eq!(got.labels[1].1, "Cannot find file:\n\"FILE.TXT\"");
        let got = s("x{} -Inf -1500");
        assert_eq!(got.value, f64::NEG_INFINITY);
        assert_eq!(
            got.timestamp,
            Some(RawTimestamp::Exact {
                secs: -2,
                nanos: 500_000_000
            })
        );
        assert!(s("x NaN").value.is_nan());
        assert_eq!(s("x +inf").value, f64::INFINITY);
        assert_eq!(s(r#"x{a="1",} 2"#).labels, labels(&[("a", "1")]));
        assert_eq!(s(r#"x{ a = "1" , b="2" } 2"#).labels.len(), 2);
        // Unknown escapes keep their backslash, as in Prometheus.
        assert_eq!(s(r#"x{a="\d\\"} 1"#).labels[0].1, r"\d\");
    }

    #[test]
    fn quoted_utf8_names() {
        let got = s(r#"{"my.metric", "my label"="x", b="y"} 1"#);
        assert_eq!(got.name, "my.metric");
        assert_eq!(got.labels, labels(&[("my label", "x"), ("b", "y")]));
        assert_eq!(s(r#"{"only.name"} 3"#).name, "only.name");
        assert_eq!(
            s(r#"plain{"quoted label"="v"} 3"#).labels[0].0,
            "quoted label"
        );
        assert_eq!(s(r#""q.name" 3"#).name, "q.name");
        assert!(line(r#"a{"x"} 1"#, Format::Text).is_err());
        assert!(line(r#"{"x","y"} 1"#, Format::Text).is_err());
        assert_eq!(
            line(r#"# TYPE "a.b" counter"#, Format::Text),
            Ok(Line::Type {
                name: "a.b".into(),
                kind: "counter"
            })
        );
    }

    #[test]
    fn metadata_lines() {
        assert_eq!(
            line(r"# HELP x Some \\ text\nmore \q", Format::Text),
            Ok(Line::Help {
                name: "x".into(),
                text: "Some \\ text\nmore \\q".into()
            })
        );
        assert_eq!(
            line(r#"# HELP x say \"hi\""#, Format::OpenMetrics),
            Ok(Line::Help {
                name: "x".into(),
                text: "say \"hi\"".into()
            })
        );
        assert_eq!(
            line("# HELP x", Format::Text),
            Ok(Line::Help {
                name: "x".into(),
                text: String::new()
            })
        );
        assert_eq!(line("# UNIT x seconds", Format::Text), Ok(Line::Comment));
        assert_eq!(
            line("# UNIT x_seconds seconds", Format::OpenMetrics),
            Ok(Line::Unit {
                name: "x_seconds".into(),
                unit: "seconds".into()
            })
        );
        assert_eq!(line("# EOF", Format::OpenMetrics), Ok(Line::Eof));
        assert_eq!(line("# EOF", Format::Text), Ok(Line::Comment));
        assert_eq!(line("# just words", Format::Text), Ok(Line::Comment));
        assert_eq!(line("#", Format::Text), Ok(Line::Comment));
        assert!(line("# just words", Format::OpenMetrics).is_err());
        assert!(line("# TYPE x counter extra", Format::Text).is_err());
        assert!(line("# TYPE x", Format::Text).is_err());
        assert_eq!(line("   ", Format::OpenMetrics), Ok(Line::Blank));
    }

    #[test]
    fn exemplars_are_ignored() {
        let got = match line(
            r#"foo_bucket{le="0.1"} 8 # {trace_id="KOO5S4vxi0o"} 0.067 1600000000.5"#,
            Format::OpenMetrics,
        ) {
            Ok(Line::Sample(s)) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!((got.value, got.timestamp), (8.0, None));
        let got = match line(
            r#"a_total 3 1520879607.789 # {a="b"} 1"#,
            Format::OpenMetrics,
        ) {
            Ok(Line::Sample(s)) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            got.timestamp,
            Some(RawTimestamp::Exact {
                secs: 1520879607,
                nanos: 789_000_000
            })
        );
    }

    #[test]
    fn broken_lines_say_what_and_where() {
        for (text, col) in [
            (r#"x{a="unterminated} 1"#, 4),
            (r#"x{a="1" 2"#, 8),
            (r#"x{a=1} 2"#, 4),
            (r#"x{1a="1"} 2"#, 2),
            (r#"x{a="1",a="2"} 2"#, 8),
            (r#"x{b="1",a="1",c="1",a="2",b="3"} 2"#, 20),
            ("x", 1),
            ("x 1x", 2),
            ("x 0x10", 2),
            ("x 1 12.5", 4),
            ("x 1 2 3", 6),
            ("9x 1", 0),
            (r#"x{a="\"#, 4),
        ] {
            let err = line(text, Format::Text).unwrap_err();
            assert_eq!(err.1, col, "{text}: {err:?}");
        }
    }

    #[test]
    fn openmetrics_timestamps_are_exact_seconds() {
        let ts = |w| seconds(w).unwrap();
        assert_eq!(
            ts("1604676851.123456789"),
            RawTimestamp::Exact {
                secs: 1604676851,
                nanos: 123_456_789
            }
        );
        assert_eq!(ts("12"), RawTimestamp::Exact { secs: 12, nanos: 0 });
        assert_eq!(
            ts("-1.25"),
            RawTimestamp::Exact {
                secs: -2,
                nanos: 750_000_000
            }
        );
        assert_eq!(
            ts("1.5e3"),
            RawTimestamp::Exact {
                secs: 1500,
                nanos: 0
            }
        );
        assert_eq!(ts("1e300"), RawTimestamp::OutOfRange);
        assert_eq!(ts("99999999999999999999"), RawTimestamp::OutOfRange);
        assert_eq!(seconds("abc"), None);
        assert_eq!(seconds("."), None);
        assert_eq!(millis("1.5"), None);
        assert_eq!(
            millis("99999999999999999999"),
            Some(RawTimestamp::OutOfRange)
        );
    }
}
