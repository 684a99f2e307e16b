//! Zabbix item keys, built byte for byte the way a Zabbix 6.0 server builds them.
//!
//! The server matches trapper values to items by exact key text, so a key we send must equal the
//! key the server made when it expanded an LLD item prototype: same parameter quoting
//! (`quote_key_param`), same untouched separators. [`KeyTemplate`] precomputes that expansion and
//! [`validate`] ports the server's `parse_key` syntax check.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// Longest item key Zabbix stores (`ITEM_KEY_LEN`, `items.key_ varchar(2048)`), in characters.
pub const MAX_KEY_LEN: usize = 2048;

/// Why a key, a key template or a parameter was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The key template text is not a usable template; the string says why.
    InvalidTemplate(String),
    /// A key does not follow Zabbix item key syntax.
    Invalid { key: String, reason: String },
    /// A parameter needs quoting but ends with a backslash, which Zabbix cannot quote.
    Unencodable { param: String },
    /// The key is longer than [`MAX_KEY_LEN`] characters.
    TooLong { len: usize },
    /// The template has `{stat}` but no statistic was given.
    MissingStat,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::InvalidTemplate(why) => write!(f, "invalid item key template: {why}"),
            KeyError::Invalid { key, reason } => write!(f, "invalid item key {key:?}: {reason}"),
            KeyError::Unencodable { param } => write!(
                f,
                "item key parameter {param:?} needs quoting but ends with a backslash, \
                 which Zabbix cannot quote"
            ),
            KeyError::TooLong { len } => write!(
                f,
                "item key is {len} characters long; Zabbix allows at most {MAX_KEY_LEN}"
            ),
            KeyError::MissingStat => {
                f.write_str("the item key template contains {stat} but no statistic was given")
            }
        }
    }
}

impl std::error::Error for KeyError {}

/// True for the characters Zabbix allows in a key name (`is_key_char`: `[0-9A-Za-z._-]`).
fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// The server's rule for an unforced `quote_key_param`: quote when the parameter starts with `"`,
/// a space or `[`, or contains `,` or `]`.
fn needs_quoting(param: &str) -> bool {
    matches!(param.as_bytes().first(), Some(b'"' | b' ' | b'['))
        || param.bytes().any(|b| b == b',' || b == b']')
}

/// Appends `param` wrapped in `"` with each `"` escaped as `\"` (the only escape Zabbix has).
fn push_quoted(out: &mut String, param: &str) {
    out.push('"');
    let mut rest = param;
    while let Some(at) = rest.find('"') {
        out.push_str(&rest[..at]);
        out.push_str("\\\"");
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// Appends `param` to `out` exactly as [`quote_param`] would render it.
fn push_param(out: &mut String, param: &str, forced: bool) -> Result<(), KeyError> {
    if !forced && !needs_quoting(param) {
        out.push_str(param);
        return Ok(());
    }
    if param.ends_with('\\') {
        return Err(KeyError::Unencodable {
            param: param.to_string(),
        });
    }
    push_quoted(out, param);
    Ok(())
}

/// The server's `quote_key_param`: returns `param` as it must appear inside a key. Unless
/// `forced`, a parameter that needs no quoting is returned unchanged (borrowed).
pub fn quote_param(param: &str, forced: bool) -> Result<Cow<'_, str>, KeyError> {
    if !forced && !needs_quoting(param) {
        return Ok(Cow::Borrowed(param));
    }
    let mut out = String::with_capacity(param.len() + 2);
    push_param(&mut out, param, true)?;
    Ok(Cow::Owned(out))
}

/// Checks `key` against full Zabbix item key syntax (a port of the server's `parse_key`, plus
/// "nothing after the closing `]`" and the 2048-character limit). For keys that come from input
/// files or the command line.
pub fn validate(key: &str) -> Result<(), KeyError> {
    check_syntax(key).map_err(|reason| KeyError::Invalid {
        key: key.to_string(),
        reason,
    })?;
    check_len(key)
}

fn check_len(key: &str) -> Result<(), KeyError> {
    // Characters never outnumber bytes, so only long keys pay for counting.
    if key.len() > MAX_KEY_LEN {
        let len = key.chars().count();
        if len > MAX_KEY_LEN {
            return Err(KeyError::TooLong { len });
        }
    }
    Ok(())
}

/// The 1-based character position of byte offset `at`, for error messages.
fn position(key: &str, at: usize) -> usize {
    key.get(..at).map_or(at, |head| head.chars().count()) + 1
}

/// Describes the character at byte `at` for an error message.
fn describe_at(key: &str, at: usize) -> String {
    match key.get(at..).and_then(|rest| rest.chars().next()) {
        Some(c) => format!("unexpected {c:?} at position {}", position(key, at)),
        None => "unexpected end of key".to_string(),
    }
}

/// The syntax part of [`validate`]; `Err` carries the reason. Works on bytes: every syntax
/// character is ASCII, and UTF-8 continuation bytes never look like one.
fn check_syntax(key: &str) -> Result<(), String> {
    let b = key.as_bytes();
    let name_len = b.iter().take_while(|&&c| is_key_char(c)).count();
    if name_len == 0 {
        return Err(match key.chars().next() {
            None => "empty key".to_string(),
            Some(c) => format!("key name must start with one of [0-9A-Za-z._-], not {c:?}"),
        });
    }
    let mut i = name_len;
    if i == b.len() {
        return Ok(());
    }
    if b[i] != b'[' {
        let c = key[i..].chars().next().unwrap_or('?');
        return Err(format!(
            "invalid character {c:?} in key name (allowed: [0-9A-Za-z._-], then optional [params])"
        ));
    }
    // 0: before a parameter, 1: inside a quoted one, 2: inside an unquoted one.
    let mut state = 0u8;
    let mut in_array = false;
    i += 1;
    loop {
        let Some(&c) = b.get(i) else {
            return Err(if state == 1 {
                "unterminated quoted parameter (a quoted parameter cannot end with a backslash)"
                    .to_string()
            } else {
                "missing closing ']'".to_string()
            });
        };
        match state {
            0 => match c {
                b',' | b' ' => {}
                b'"' => state = 1,
                b'[' if in_array => {
                    return Err(format!(
                        "nested array at position {} (only one level is allowed)",
                        position(key, i)
                    ))
                }
                b'[' => in_array = true,
                b']' if in_array => {
                    in_array = false;
                    i += 1;
                    while b.get(i) == Some(&b' ') {
                        i += 1;
                    }
                    match b.get(i) {
                        Some(b']') => break,
                        Some(b',') => {}
                        _ => return Err(describe_at(key, i)),
                    }
                }
                b']' => break,
                _ => state = 2,
            },
            1 => match c {
                b'"' => {
                    while b.get(i + 1) == Some(&b' ') {
                        i += 1;
                    }
                    match b.get(i + 1) {
                        Some(b']') if !in_array => {
                            i += 1;
                            break;
                        }
                        Some(b',') => state = 0,
                        Some(b']') => state = 0,
                        _ => {
                            return Err(format!(
                                "after a closing quote: {}",
                                describe_at(key, i + 1)
                            ))
                        }
                    }
                }
                b'\\' if b.get(i + 1) == Some(&b'"') => i += 1,
                _ => {}
            },
            _ => match c {
                b',' => state = 0,
                b']' if in_array => {
                    // Let state 0 close the array.
                    state = 0;
                    continue;
                }
                b']' => break,
                _ => {}
            },
        }
        i += 1;
    }
    // `i` is at the closing ']'.
    if i + 1 != b.len() {
        return Err(format!(
            "text after the closing ']' at position {}",
            position(key, i + 1)
        ));
    }
    Ok(())
}

/// One piece of a parameter's unquoted text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Name,
    Stat,
}

/// The precomputed pieces of a template: literal key text, and parameters with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Param {
        parts: Vec<Part>,
        quoted: bool,
        /// The parameter as written in the template (with its quotes), for `lld_prototype`.
        raw: String,
    },
}

/// An item key with `{name}` and `{stat}` placeholders in its parameters, such as
/// `timer[{name}.{stat}]`, precomputed so [`KeyTemplate::render`] is cheap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    text: String,
    pieces: Vec<Piece>,
    has_stat: bool,
    /// Bytes of literal text, to size the output buffer.
    fixed_len: usize,
}

const NAME: &str = "{name}";
const STAT: &str = "{stat}";

/// Splits a parameter's unquoted text into text and placeholders.
fn split_placeholders(mut text: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    loop {
        let next = [(NAME, Part::Name), (STAT, Part::Stat)]
            .into_iter()
            .filter_map(|(p, part)| text.find(p).map(|at| (at, p.len(), part)))
            .min_by_key(|&(at, _, _)| at);
        let Some((at, len, part)) = next else { break };
        if at > 0 {
            parts.push(Part::Text(text[..at].to_string()));
        }
        parts.push(part);
        text = &text[at + len..];
    }
    if !text.is_empty() {
        parts.push(Part::Text(text.to_string()));
    }
    parts
}

impl FromStr for KeyTemplate {
    type Err = KeyError;

    /// Parses a template such as `timer[{name}.{stat}]` or `app.metric["{name}",{stat}]`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let b = text.as_bytes();
        let name_len = b.iter().take_while(|&&c| is_key_char(c)).count();
        if b.get(name_len) == Some(&b'{') {
            return Err(KeyError::InvalidTemplate(format!(
                "{text:?}: placeholders are allowed only inside [parameters], not in the key name"
            )));
        }
        check_syntax(text).map_err(|why| KeyError::InvalidTemplate(format!("{text:?}: {why}")))?;

        let mut pieces = Vec::new();
        let mut lit_start = 0;
        // Each parameter as (start, end, quoted); `end` is exclusive and includes the quotes.
        let mut params = Vec::new();
        // The state machine of the server's `replace_key_params_dyn`, one level deep.
        #[derive(PartialEq)]
        enum St {
            New,
            End,
            Unquoted,
            Quoted,
        }
        let mut st = St::New;
        let mut start = 0;
        let mut i = name_len + 1;
        while i < b.len() {
            let c = b[i];
            match st {
                St::New => match c {
                    b' ' => {}
                    b',' | b']' => params.push((i, i, false)),
                    b'[' => {
                        return Err(KeyError::InvalidTemplate(format!(
                            "{text:?}: array parameters are not supported in key templates"
                        )))
                    }
                    b'"' => {
                        st = St::Quoted;
                        start = i;
                    }
                    _ => {
                        st = St::Unquoted;
                        start = i;
                    }
                },
                St::End => {
                    if c == b',' {
                        st = St::New;
                    }
                }
                St::Unquoted => {
                    if c == b',' || c == b']' {
                        params.push((start, i, false));
                        st = if c == b',' { St::New } else { St::End };
                    }
                }
                St::Quoted => {
                    if c == b'"' && b[i - 1] != b'\\' {
                        params.push((start, i + 1, true));
                        st = St::End;
                    }
                }
            }
            i += 1;
        }

        let mut fixed_len = 0;
        let mut has_stat = false;
        for (start, end, quoted) in params {
            let raw = &text[start..end];
            let unquoted: Cow<'_, str> = if quoted {
                let inner = &raw[1..raw.len() - 1];
                if inner.contains("\\\"") {
                    Cow::Owned(inner.replace("\\\"", "\""))
                } else {
                    Cow::Borrowed(inner)
                }
            } else {
                Cow::Borrowed(raw)
            };
            // Like the server, leave a parameter without placeholders exactly as written.
            if !unquoted.contains(NAME) && !unquoted.contains(STAT) {
                continue;
            }
            let parts = split_placeholders(&unquoted);
            has_stat |= parts.contains(&Part::Stat);
            let literal = &text[lit_start..start];
            fixed_len += literal.len();
            pieces.push(Piece::Literal(literal.to_string()));
            fixed_len += 2 + parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => t.len(),
                    _ => 0,
                })
                .sum::<usize>();
            pieces.push(Piece::Param {
                parts,
                quoted,
                raw: raw.to_string(),
            });
            lit_start = end;
        }
        let tail = &text[lit_start..];
        fixed_len += tail.len();
        pieces.push(Piece::Literal(tail.to_string()));
        pieces.retain(|p| !matches!(p, Piece::Literal(l) if l.is_empty()));

        Ok(KeyTemplate {
            text: text.to_string(),
            pieces,
            has_stat,
            fixed_len,
        })
    }
}

impl KeyTemplate {
    /// The item key for metric `name` and statistic `stat`, exactly as the Zabbix server builds
    /// it from the matching item prototype: each parameter holding a placeholder is unquoted,
    /// substituted, then re-quoted with `quote_key_param` (forced if it was quoted in the
    /// template); everything else is kept as written.
    pub fn render(&self, name: &str, stat: Option<&str>) -> Result<String, KeyError> {
        let stat = match (self.has_stat, stat) {
            (true, None) => return Err(KeyError::MissingStat),
            (_, s) => s.unwrap_or(""),
        };
        let mut out = String::with_capacity(self.fixed_len + 2 * name.len() + stat.len() + 8);
        let mut value = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Param { parts, quoted, .. } => {
                    value.clear();
                    for part in parts {
                        value.push_str(match part {
                            Part::Text(t) => t,
                            Part::Name => name,
                            Part::Stat => stat,
                        });
                    }
                    push_param(&mut out, &value, *quoted)?;
                }
            }
        }
        check_len(&out)?;
        Ok(out)
    }

    /// True when the template has a `{stat}` placeholder (one key per statistic).
    pub fn has_stat(&self) -> bool {
        self.has_stat
    }

    /// The item prototype key an administrator puts in a Zabbix template for this key template:
    /// `{name}` becomes `lld_macro` and `{stat}` becomes `stat` (left as `{stat}` when `None`),
    /// both inserted literally. For documentation and tests: `timer[{#TIMER}.p95]`.
    pub fn lld_prototype(&self, lld_macro: &str, stat: Option<&str>) -> String {
        let mut out = String::with_capacity(self.text.len() + lld_macro.len());
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Param { raw, .. } => {
                    let with_name = raw.replace(NAME, lld_macro);
                    out.push_str(&match stat {
                        Some(s) => with_name.replace(STAT, s),
                        None => with_name,
                    });
                }
            }
        }
        out
    }
}

impl fmt::Display for KeyTemplate {
    /// The template text as given.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(p: &str) -> String {
        quote_param(p, false).unwrap().into_owned()
    }

    #[test]
    fn quoting_follows_the_servers_rule() {
        assert_eq!(q("a,b"), r#""a,b""#);
        assert_eq!(q("GET /a"), "GET /a");
        assert!(matches!(quote_param("GET /a", false), Ok(Cow::Borrowed(_))));
        assert_eq!(q(" lead"), r#"" lead""#);
        assert_eq!(q("\"x"), r#""\"x""#);
        assert_eq!(q("[x"), r#""[x""#);
        assert_eq!(q("a\"b"), "a\"b");
        assert_eq!(q("x]"), r#""x]""#);
        assert_eq!(q(r#"say "hi", ok"#), r#""say \"hi\", ok""#);
        assert_eq!(q(""), "");
        assert_eq!(q("trail\\"), "trail\\");
        assert_eq!(q("back\\slash,"), r#""back\slash,""#);
        assert_eq!(
            quote_param("needs,quote\\", false),
            Err(KeyError::Unencodable {
                param: "needs,quote\\".into()
            })
        );
    }

    #[test]
    fn forced_quoting_always_quotes() {
        assert_eq!(quote_param("plain", true).unwrap(), r#""plain""#);
        assert_eq!(quote_param("", true).unwrap(), r#""""#);
        assert_eq!(quote_param(r#"a"b"#, true).unwrap(), r#""a\"b""#);
        assert!(matches!(
            quote_param("plain\\", true),
            Err(KeyError::Unencodable { .. })
        ));
    }

    #[test]
    fn validate_accepts_zabbix_keys() {
        for key in [
            "agent.ping",
            "k[]",
            "k[,,x]",
            "k[a\"b]",
            "k[trail\\]",
            "k[a,[b,c]]",
            "k[[a] ,b]",
            "k[\"a,b\"]",
            "k[\"a\\\"b\"]",
            "k[\"a\\b\"]",
            "k[\"x\"  , y]",
            "k[\"x\"  ]",
            "k[ spaced ,  x]",
            "k[\"multi\nline ]\"]",
            "net.tcp.port[,80]",
            "my-app_1.x[üñí,代码]",
            "k[[\"q\" ,x] ]",
        ] {
            assert_eq!(validate(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn validate_rejects_what_zabbix_rejects() {
        for (key, why) in [
            ("", "empty key"),
            ("[a]", "must start"),
            ("my.app/requests[GET]", "invalid character '/'"),
            ("k[a][b]", "after the closing ']'"),
            ("k[a] ", "after the closing ']'"),
            ("k[a,[b,[c]]]", "nested array"),
            ("k[\"a\\\"]", "unterminated"),
            ("k[\"a\\\\\"]", "unterminated"),
            ("k[\"a\" b]", "after a closing quote"),
            ("k[a", "missing closing"),
            ("k[[a]x]", "unexpected 'x' at position 6"),
            ("k[é]x", "after the closing ']' at position 5"),
        ] {
            let err = validate(key).unwrap_err();
            assert!(err.to_string().contains(why), "{key}: {err}");
        }
        let long = format!("k[{}]", "x".repeat(MAX_KEY_LEN));
        assert_eq!(validate(&long), Err(KeyError::TooLong { len: 2051 }));
        // Characters, not bytes, count.
        let wide = format!("k[{}]", "é".repeat(1000));
        assert_eq!(validate(&wide), Ok(()));
    }

    #[test]
    fn render_matches_lld_expansion() {
        let t: KeyTemplate = "timer[{name}.{stat}]".parse().unwrap();
        assert!(t.has_stat());
        assert_eq!(t.render("a.b", Some("p95")).unwrap(), "timer[a.b.p95]");
        assert_eq!(t.render("a,b", Some("p95")).unwrap(), r#"timer["a,b.p95"]"#);
        assert_eq!(
            t.render(r#"GET "x" ]"#, Some("count")).unwrap(),
            r#"timer["GET \"x\" ].count"]"#
        );
        assert_eq!(
            t.render(" lead", Some("max")).unwrap(),
            r#"timer[" lead.max"]"#
        );
        assert_eq!(t.render("a\"b", Some("max")).unwrap(), "timer[a\"b.max]");
        assert_eq!(t.render("x", None), Err(KeyError::MissingStat));
        // The stat is part of the parameter, so a trailing backslash in the name is fine here...
        assert_eq!(
            t.render("a,\\", Some("max")).unwrap(),
            r#"timer["a,\.max"]"#
        );

        let c: KeyTemplate = "counter[{name}]".parse().unwrap();
        assert!(!c.has_stat());
        assert_eq!(c.render("hits", None).unwrap(), "counter[hits]");
        assert_eq!(c.render("hits", Some("ignored")).unwrap(), "counter[hits]");
        // ...but not when it ends a parameter that needs quoting.
        assert_eq!(
            c.render("a,\\", None),
            Err(KeyError::Unencodable {
                param: "a,\\".into()
            })
        );
        assert_eq!(c.render("", None).unwrap(), "counter[]");
    }

    #[test]
    fn quoted_template_params_stay_quoted() {
        let t: KeyTemplate = r#"app.metric["{name}",{stat}]"#.parse().unwrap();
        assert_eq!(
            t.render("plain", Some("p99")).unwrap(),
            r#"app.metric["plain",p99]"#
        );
        assert_eq!(
            t.render("a\"b", Some("p99")).unwrap(),
            r#"app.metric["a\"b",p99]"#
        );
        assert!(matches!(
            t.render("end\\", Some("p99")),
            Err(KeyError::Unencodable { .. })
        ));
        // Escaped quotes in the template are unquoted before substitution and re-escaped after.
        let e: KeyTemplate = r#"k["say \"{name}\""]"#.parse().unwrap();
        assert_eq!(e.render("hi", None).unwrap(), r#"k["say \"hi\""]"#);
    }

    #[test]
    fn separators_and_fixed_params_are_kept_as_written() {
        let t: KeyTemplate = r#"k[ "fixed, one" , {name} ,{stat}  , x]"#.parse().unwrap();
        assert_eq!(
            t.render("n", Some("s")).unwrap(),
            r#"k[ "fixed, one" , n ,s  , x]"#
        );
        let e: KeyTemplate = "k[,{name},]".parse().unwrap();
        assert_eq!(e.render("a b", None).unwrap(), "k[,a b,]");
        let p: KeyTemplate = "plain.key".parse().unwrap();
        assert_eq!(p.render("ignored", None).unwrap(), "plain.key");
        assert_eq!(p.to_string(), "plain.key");
    }

    #[test]
    fn rendered_keys_validate() {
        let names = ["a", "a,b", "x]", "[x", " x", "q\"", "新しい", "a b,c]d", ""];
        for tpl in [
            "timer[{name}.{stat}]",
            r#"app.metric["{name}",{stat}]"#,
            "k[{stat},{name}]",
        ] {
            let t: KeyTemplate = tpl.parse().unwrap();
            for name in names {
                let key = t.render(name, Some("p95")).unwrap();
                assert_eq!(validate(&key), Ok(()), "{tpl} {name:?} -> {key}");
            }
        }
    }

    #[test]
    fn render_enforces_the_length_limit() {
        let t: KeyTemplate = "k[{name}]".parse().unwrap();
        assert!(t.render(&"x".repeat(2045), None).is_ok());
        assert_eq!(
            t.render(&"x".repeat(2046), None),
            Err(KeyError::TooLong { len: 2049 })
        );
    }

    #[test]
    fn bad_templates_are_rejected_with_reasons() {
        for (tpl, why) in [
            ("", "empty key"),
            ("{name}[x]", "not in the key name"),
            ("timer.{name}[x]", "not in the key name"),
            ("k[[{name},b]]", "array parameters"),
            ("k[{name}]x", "after the closing ']'"),
            ("k[\"{name}\\\"]", "unterminated"),
            ("k/x[{name}]", "invalid character '/'"),
        ] {
            let err = tpl.parse::<KeyTemplate>().unwrap_err();
            assert!(matches!(err, KeyError::InvalidTemplate(_)), "{tpl}");
            assert!(err.to_string().contains(why), "{tpl}: {err}");
        }
    }

    #[test]
    fn lld_prototype_and_display() {
        let t: KeyTemplate = "timer[{name}.{stat}]".parse().unwrap();
        assert_eq!(
            t.lld_prototype("{#TIMER}", Some("p95")),
            "timer[{#TIMER}.p95]"
        );
        assert_eq!(t.lld_prototype("{#TIMER}", None), "timer[{#TIMER}.{stat}]");
        let q: KeyTemplate = r#"app.metric["{name}", {stat}]"#.parse().unwrap();
        assert_eq!(
            q.lld_prototype("{#TIMER}", Some("count")),
            r#"app.metric["{#TIMER}", count]"#
        );
        assert_eq!(q.to_string(), r#"app.metric["{name}", {stat}]"#);
    }

    #[test]
    fn errors_read_clearly() {
        assert_eq!(
            KeyError::TooLong { len: 3000 }.to_string(),
            "item key is 3000 characters long; Zabbix allows at most 2048"
        );
        assert!(KeyError::MissingStat.to_string().contains("{stat}"));
        assert_eq!(
            validate("a/b").unwrap_err().to_string(),
            "invalid item key \"a/b\": invalid character '/' in key name \
             (allowed: [0-9A-Za-z._-], then optional [params])"
        );
    }
}
