//! zabbix_sender input files (`-i FILE`): read them with zabbix_sender's own rules and write
//! them so zabbix_sender (and [`parse_line`]) read back exactly what was meant.
//!
//! A line is `<host> <key> [<timestamp> [<ns>]] <value>`. Host, key, timestamp and ns are
//! unquoted (up to the next space or tab) or double-quoted with only `\"`, `\\` and `\n` as
//! escapes. The value is the rest of the line as it is, unless it starts with `"`.

use std::fmt;
use std::io::{self, Write};

use crate::outcome::{Classify, Failure};
use crate::text::shown;

/// Which optional columns a file has: `-T` (timestamps) and `-N` (nanoseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputFormat {
    /// `-T`: a Unix timestamp column after the key.
    pub with_timestamps: bool,
    /// `-N`: a nanoseconds column after the timestamp. Ignored without `with_timestamps`,
    /// as in zabbix_sender's parser.
    pub with_ns: bool,
}

/// One parsed line. `host` is returned as written, so `-` (meaning "the default host") is left
/// for the caller to substitute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputLine {
    /// The host name as written; `-` means the default host.
    pub host: String,
    /// The item key, not yet validated (see [`super::key::validate`]).
    pub key: String,
    /// The value text, possibly empty.
    pub value: String,
    /// The Unix timestamp, present with `-T`.
    pub clock: Option<u32>,
    /// The nanoseconds, present with `-T -N`.
    pub ns: Option<u32>,
}

/// A line zabbix_sender would reject; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with the line.
    pub reason: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "input line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for InputError {}

impl Classify for InputError {
    fn failure(&self) -> Failure {
        Failure::SourceUnparsable
    }
}

/// Largest timestamp zabbix_sender accepts (`is_uint31`).
const MAX_CLOCK: u64 = 0x7FFF_FFFF;
/// Largest nanoseconds value zabbix_sender accepts.
const MAX_NS: u64 = 999_999_999;

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// zabbix_sender's `get_string`: reads one field from `s` and returns it with the rest of the
/// line after the separating spaces/tabs. `Err` carries the reason.
fn get_string(s: &str) -> Result<(String, &str), String> {
    let s = s.trim_start_matches(is_blank);
    let Some(quoted) = s.strip_prefix('"') else {
        let end = s.find(is_blank).unwrap_or(s.len());
        return Ok((s[..end].to_string(), s[end..].trim_start_matches(is_blank)));
    };
    let mut out = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let rest = &quoted[i + 1..];
                if !rest.is_empty() && !rest.starts_with(is_blank) {
                    return Err(
                        "a closing quote must be followed by a space, a tab or the end of the line"
                            .to_string(),
                    );
                }
                return Ok((out, rest.trim_start_matches(is_blank)));
            }
            '\\' => match quoted[i + 1..].chars().next() {
                Some(e @ ('"' | '\\')) => {
                    out.push(e);
                    chars.next();
                }
                Some('n') => {
                    out.push('\n');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            _ => out.push(c),
        }
    }
    Err("missing closing quote".to_string())
}

/// Reads a required field, with zabbix_sender's "'X' required" check for a missing or empty one.
fn required<'a>(rest: &'a str, what: &str) -> Result<(String, &'a str), String> {
    if rest.is_empty() {
        return Err(format!("{what} required"));
    }
    let (field, rest) = get_string(rest).map_err(|why| format!("{what}: {why}"))?;
    if field.is_empty() {
        return Err(format!("{what} required"));
    }
    Ok((field, rest))
}

/// Parses an unsigned decimal (digits only, as zabbix's `is_uint_n_range`) up to `max`.
fn parse_uint(text: &str, max: u64) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: u64 = 0;
    for b in text.bytes() {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        if v > max {
            return None;
        }
    }
    u32::try_from(v).ok()
}

fn parse_fields(line: &str, format: InputFormat) -> Result<InputLine, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (host, rest) = required(line, "host")?;
    let (key, mut rest) = required(rest, "key")?;
    let (mut clock, mut ns) = (None, None);
    if format.with_timestamps {
        let (text, r) = required(rest, "timestamp")?;
        clock = Some(parse_uint(&text, MAX_CLOCK).ok_or_else(|| {
            format!(
                "invalid timestamp {:?} (expected 0 to {MAX_CLOCK})",
                shown(&text)
            )
        })?);
        rest = r;
        if format.with_ns {
            let (text, r) = required(rest, "nanoseconds")?;
            ns = Some(parse_uint(&text, MAX_NS).ok_or_else(|| {
                format!(
                    "invalid nanoseconds {:?} (expected 0 to {MAX_NS})",
                    shown(&text)
                )
            })?);
            rest = r;
        }
    }
    let value = if rest.is_empty() {
        return Err("value required (write an empty value as \"\")".to_string());
    } else if !rest.starts_with('"') {
        rest.to_string()
    } else {
        let (value, after) = get_string(rest).map_err(|why| format!("value: {why}"))?;
        if !after.is_empty() {
            return Err("too many parameters (text after the quoted value)".to_string());
        }
        value
    };
    Ok(InputLine {
        host,
        key,
        value,
        clock,
        ns,
    })
}

/// Parses one line with zabbix_sender's rules (trailing CR/LF stripped first). An error
/// reports line 1; [`parse_all`] reports the real line number.
pub fn parse_line(line: &str, format: InputFormat) -> Result<InputLine, InputError> {
    parse_fields(line, format).map_err(|reason| InputError { line: 1, reason })
}

/// Parses a whole input file. Every line is data, as for zabbix_sender: a blank line is an
/// error ("host required"), except the empty remainder after a final newline. Stops at the
/// first bad line, like zabbix_sender.
pub fn parse_all(text: &str, format: InputFormat) -> Result<Vec<InputLine>, InputError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    body.split('\n')
        .enumerate()
        .map(|(i, line)| {
            parse_fields(line, format).map_err(|reason| InputError {
                line: i + 1,
                reason,
            })
        })
        .collect()
}

/// Appends `s` in double quotes, escaping `\`, `"` and newline.
fn push_quoted(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
}

/// Writes one input line (with its newline) in a single `write_all`: host, key and value always
/// quoted, then `clock` and `ns` unquoted when present (`ns` only together with `clock`).
pub fn write_line(
    out: &mut impl Write,
    host: &str,
    key: &str,
    value: &str,
    clock: Option<u32>,
    ns: Option<u32>,
) -> io::Result<()> {
    let mut line = String::with_capacity(host.len() + key.len() + value.len() + 32);
    push_quoted(&mut line, host);
    line.push(' ');
    push_quoted(&mut line, key);
    line.push(' ');
    if let Some(clock) = clock {
        line.push_str(&clock.to_string());
        line.push(' ');
        if let Some(ns) = ns {
            line.push_str(&ns.to_string());
            line.push(' ');
        }
    }
    push_quoted(&mut line, value);
    line.push('\n');
    out.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: InputFormat = InputFormat {
        with_timestamps: false,
        with_ns: false,
    };
    const TS: InputFormat = InputFormat {
        with_timestamps: true,
        with_ns: false,
    };
    const TS_NS: InputFormat = InputFormat {
        with_timestamps: true,
        with_ns: true,
    };

    fn line(host: &str, key: &str, value: &str) -> InputLine {
        InputLine {
            host: host.into(),
            key: key.into(),
            value: value.into(),
            clock: None,
            ns: None,
        }
    }

    fn err(text: &str, format: InputFormat) -> String {
        parse_line(text, format).unwrap_err().reason
    }

    #[test]
    fn unquoted_value_is_the_rest_of_the_line() {
        assert_eq!(
            parse_line("web01 app.load  1.5 and more  \r\n", PLAIN).unwrap(),
            line("web01", "app.load", "1.5 and more  ")
        );
        assert_eq!(
            parse_line("-\tk[a,b]\t\tv", PLAIN).unwrap(),
            line("-", "k[a,b]", "v")
        );
        // A quote inside an unquoted field or value is just a character.
        assert_eq!(
            parse_line("h k[a\"b] say \"hi\"", PLAIN).unwrap(),
            line("h", "k[a\"b]", "say \"hi\"")
        );
    }

    #[test]
    fn quoted_fields_have_three_escapes() {
        assert_eq!(
            parse_line(r#""my host" "k[\"a b\"]" "x\ty\\z\n\q""#, PLAIN).unwrap(),
            line("my host", "k[\"a b\"]", "x\\ty\\z\n\\q")
        );
        assert_eq!(parse_line("h k \"\"", PLAIN).unwrap(), line("h", "k", ""));
        assert_eq!(
            parse_line("h k \"v\"  \t", PLAIN).unwrap(),
            line("h", "k", "v")
        );
    }

    #[test]
    fn timestamps_and_nanoseconds() {
        let got = parse_line("h k 1700000000 42", TS).unwrap();
        assert_eq!(
            (got.clock, got.ns, got.value.as_str()),
            (Some(1_700_000_000), None, "42")
        );
        let got = parse_line("h k \"2147483647\" 999999999 v", TS_NS).unwrap();
        assert_eq!(
            (got.clock, got.ns),
            (Some(2_147_483_647), Some(999_999_999))
        );
        assert!(err("h k 2147483648 v", TS).contains("invalid timestamp"));
        assert!(err("h k +5 v", TS).contains("invalid timestamp"));
        assert!(err("h k -1 v", TS).contains("invalid timestamp"));
        assert!(err("h k 1 1000000000 v", TS_NS).contains("invalid nanoseconds"));
        assert!(err("h k 1 5", TS_NS).starts_with("value required"));
        assert_eq!(err("h k", TS), "timestamp required");
        // -N without -T: the ns column is not read.
        let ns_only = InputFormat {
            with_timestamps: false,
            with_ns: true,
        };
        assert_eq!(
            parse_line("h k 5 v", ns_only).unwrap(),
            line("h", "k", "5 v")
        );
    }

    #[test]
    fn rejects_what_zabbix_sender_rejects() {
        assert_eq!(err("", PLAIN), "host required");
        assert_eq!(err("   ", PLAIN), "host required");
        assert_eq!(err("\"\" k v", PLAIN), "host required");
        assert_eq!(err("h", PLAIN), "key required");
        assert_eq!(err("h \"\" v", PLAIN), "key required");
        assert!(err("h k", PLAIN).starts_with("value required"));
        assert!(err("h k  \r\n", PLAIN).starts_with("value required"));
        assert!(err("\"h\"k v", PLAIN).contains("closing quote must be followed"));
        assert!(err("h \"k v", PLAIN).contains("missing closing quote"));
        assert!(err("h k \"v\" extra", PLAIN).contains("too many parameters"));
        assert!(err("h k \"v\"x", PLAIN).contains("closing quote must be followed"));
        assert!(err("h k \"v\\\"", PLAIN).contains("missing closing quote"));
        assert_eq!(
            parse_line("h", PLAIN).unwrap_err().to_string(),
            "input line 1: key required"
        );
    }

    #[test]
    fn parse_all_numbers_lines_and_rejects_blank_ones() {
        assert_eq!(parse_all("", PLAIN).unwrap(), vec![]);
        assert_eq!(
            parse_all("a k 1\nb k 2\n", PLAIN).unwrap(),
            vec![line("a", "k", "1"), line("b", "k", "2")]
        );
        assert_eq!(parse_all("a k 1\r\nb k 2", PLAIN).unwrap().len(), 2);
        let e = parse_all("a k 1\n\nb k 2\n", PLAIN).unwrap_err();
        assert_eq!(e.to_string(), "input line 2: host required");
        let e = parse_all("a k 1\nb k 2\nc k\n", PLAIN).unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(parse_all("\n", PLAIN).unwrap_err().line, 1);
        assert_eq!(parse_all("a k 1\n\n", PLAIN).unwrap_err().line, 2);
    }

    #[test]
    fn write_then_parse_round_trips_awkward_strings() {
        let awkward = [
            "plain",
            "two words",
            " leading and trailing ",
            "\ttab\t",
            "say \"hi\"",
            "\"",
            "back\\slash\\",
            "\\\"",
            "\\n literal",
            "multi\nline\n",
            "crlf\r\n",
            "ünï代码 🚀",
            "k[\"a,b\",c]",
            "-",
        ];
        let mut values: Vec<&str> = awkward.to_vec();
        values.push("");
        for (i, host) in awkward.iter().enumerate() {
            let key = awkward[(i + 3) % awkward.len()];
            for value in &values {
                for (clock, ns) in [
                    (None, None),
                    (Some(1_700_000_000), None),
                    (Some(0), Some(5)),
                ] {
                    let mut buf = Vec::new();
                    write_line(&mut buf, host, key, value, clock, ns).unwrap();
                    let text = String::from_utf8(buf).unwrap();
                    assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
                    let format = InputFormat {
                        with_timestamps: clock.is_some(),
                        with_ns: ns.is_some(),
                    };
                    let got = parse_all(&text, format).unwrap();
                    let want = InputLine {
                        host: host.to_string(),
                        key: key.to_string(),
                        value: value.to_string(),
                        clock,
                        ns,
                    };
                    assert_eq!(got, vec![want], "{text:?}");
                }
            }
        }
    }

    #[test]
    fn writer_quotes_everything_and_drops_ns_without_clock() {
        let mut buf = Vec::new();
        write_line(&mut buf, "h", "k[a]", "v \"x\"\n", Some(7), Some(9)).unwrap();
        write_line(&mut buf, "h", "k", "", None, Some(9)).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "\"h\" \"k[a]\" 7 9 \"v \\\"x\\\"\\n\"\n\"h\" \"k\" \"\"\n"
        );
    }
}
