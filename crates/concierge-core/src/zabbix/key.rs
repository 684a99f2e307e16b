//! Zabbix item keys, built byte for byte the way a Zabbix 6.0 server builds them.
//!
//! The server matches trapper values to items by exact key text, so a key we send must equal the
//! key the server made when it expanded an LLD item prototype: same parameter quoting
//! (`quote_key_param`), same untouched separators. [`KeyTemplate`] precomputes that expansion and
//! [`validate`] ports the server's `parse_key` syntax check.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::outcome::{Classify, Failure};
use crate::text::shown;

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
            KeyError::Invalid { key, reason } => {
                write!(f, "invalid item key {:?}: {reason}", shown(key))
            }
            KeyError::Unencodable { param } => write!(
                f,
                "item key parameter {:?} needs quoting but ends with a backslash, \
                 which Zabbix cannot quote",
                shown(param)
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

impl Classify for KeyError {
    fn failure(&self) -> Failure {
        match self {
            KeyError::InvalidTemplate(_)
            | KeyError::Invalid { .. }
            | KeyError::Unencodable { .. }
            | KeyError::TooLong { .. }
            | KeyError::MissingStat => Failure::Usage,
        }
    }
}

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
    push_escaped(out, param);
    out.push('"');
}

/// Appends `text` with each `"` escaped as `\"`.
fn push_escaped(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(at) = rest.find('"') {
        out.push_str(&rest[..at]);
        out.push_str("\\\"");
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
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

/// The syntax part of [`validate`]; `Err` carries the reason.
fn check_syntax(key: &str) -> Result<(), String> {
    tokenize(key, |_| {})
}

/// One top-level parameter of a key, found by [`tokenize`]: bytes `start..end` of the key,
/// quotes and brackets included (empty for an empty parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Param {
    start: usize,
    end: usize,
    kind: ParamKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamKind {
    Unquoted,
    Quoted,
    Array,
}

/// Reads `key` as the server's `parse_key` does, handing each top-level parameter to `emit`
/// (the parameters `replace_key_params_dyn` substitutes into); `Err` carries the reason. Works
/// on bytes: every syntax character is ASCII, and UTF-8 continuation bytes never look like
/// one.
fn tokenize(key: &str, mut emit: impl FnMut(Param)) -> Result<(), String> {
    let b = key.as_bytes();
    let name_len = b.iter().take_while(|&&c| is_key_char(c)).count();
    if name_len == 0 {
        return Err(match key.chars().next() {
            None => "empty key".to_string(),
            Some(c) => format!("key name must start with one of [0-9A-Za-z._-], not {c:?}"),
        });
    }
    match b.get(name_len) {
        None => return Ok(()),
        Some(b'[') => {}
        Some(_) => {
            let c = key[name_len..].chars().next().unwrap_or('?');
            return Err(format!(
                "invalid character {c:?} in key name (allowed: [0-9A-Za-z._-], then optional [params])"
            ));
        }
    }
    let mut scan = Scan {
        key,
        b,
        i: name_len + 1,
    };
    scan.list(true, &mut emit)?;
    // `i` is at the closing ']'.
    if scan.i + 1 != b.len() {
        return Err(format!(
            "text after the closing ']' at position {}",
            position(key, scan.i + 1)
        ));
    }
    Ok(())
}

/// The reading position in a key's parameters.
struct Scan<'a> {
    key: &'a str,
    b: &'a [u8],
    i: usize,
}

/// What follows a quoted parameter or an array.
enum Next {
    /// Another parameter (the ',' is read).
    Param,
    /// The list's closing ']' (not read).
    Close,
}

impl Scan<'_> {
    /// Reads parameters up to the ']' that closes the list (one level of arrays below the
    /// top), leaving `i` there. Only top-level parameters are emitted: an array is one.
    fn list(&mut self, top: bool, emit: &mut dyn FnMut(Param)) -> Result<(), String> {
        let mut emit_top = |p: Param| {
            if top {
                emit(p)
            }
        };
        loop {
            let start = self.i;
            let Some(&c) = self.b.get(start) else {
                return Err("missing closing ']'".to_string());
            };
            let next = match c {
                b' ' => {
                    self.i += 1;
                    continue;
                }
                b',' | b']' => {
                    emit_top(Param::empty(start));
                    if c == b']' {
                        return Ok(());
                    }
                    self.i += 1;
                    continue;
                }
                b'[' if !top => {
                    return Err(format!(
                        "nested array at position {} (only one level is allowed)",
                        position(self.key, start)
                    ))
                }
                b'[' => {
                    self.i += 1;
                    self.list(false, &mut |_| {})?;
                    self.i += 1;
                    emit_top(Param::new(start, self.i, ParamKind::Array));
                    self.after(|at| describe_at(self.key, at))?
                }
                b'"' => {
                    self.quoted()?;
                    emit_top(Param::new(start, self.i, ParamKind::Quoted));
                    let key = self.key;
                    self.after(|at| format!("after a closing quote: {}", describe_at(key, at)))?
                }
                _ => {
                    while !matches!(self.b.get(self.i), None | Some(b',' | b']')) {
                        self.i += 1;
                    }
                    emit_top(Param::new(start, self.i, ParamKind::Unquoted));
                    match self.b.get(self.i) {
                        Some(b',') => Next::Param,
                        Some(_) => Next::Close,
                        None => return Err("missing closing ']'".to_string()),
                    }
                }
            };
            match next {
                Next::Param => self.i += 1,
                Next::Close => return Ok(()),
            }
        }
    }

    /// From an opening quote to just after its closing one; `\"` is the only escape.
    fn quoted(&mut self) -> Result<(), String> {
        self.i += 1;
        loop {
            match self.b.get(self.i) {
                None => {
                    return Err(
                        "unterminated quoted parameter (a quoted parameter cannot end \
                                with a backslash)"
                            .to_string(),
                    )
                }
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') if self.b.get(self.i + 1) == Some(&b'"') => self.i += 2,
                Some(_) => self.i += 1,
            }
        }
    }

    /// After a quoted parameter or an array: spaces, then ',' (read) or ']' (not read).
    fn after(&mut self, unexpected: impl FnOnce(usize) -> String) -> Result<Next, String> {
        while self.b.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b',') => Ok(Next::Param),
            Some(b']') => Ok(Next::Close),
            _ => Err(unexpected(self.i)),
        }
    }
}

impl Param {
    fn new(start: usize, end: usize, kind: ParamKind) -> Self {
        Self { start, end, kind }
    }

    fn empty(at: usize) -> Self {
        Self::new(at, at, ParamKind::Unquoted)
    }
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
        let invalid = |why: &str| KeyError::InvalidTemplate(format!("{:?}: {why}", shown(text)));
        let name_len = text.bytes().take_while(|&c| is_key_char(c)).count();
        if text.as_bytes().get(name_len) == Some(&b'{') {
            return Err(invalid(
                "placeholders are allowed only inside [parameters], not in the key name",
            ));
        }
        let mut params = Vec::new();
        tokenize(text, |p| params.push(p)).map_err(|why| invalid(&why))?;
        if params.iter().any(|p| p.kind == ParamKind::Array) {
            return Err(invalid(
                "array parameters are not supported in key templates",
            ));
        }
        Ok(KeyTemplate::from_params(text, &params))
    }
}

impl KeyTemplate {
    /// The template made of `text` and its top-level parameters: literal text between the
    /// parameters that hold a placeholder. Like the server, a parameter without one is left
    /// exactly as written.
    fn from_params(text: &str, params: &[Param]) -> Self {
        let mut pieces = Vec::new();
        let (mut lit_start, mut fixed_len, mut has_stat) = (0, 0, false);
        for p in params {
            let raw = &text[p.start..p.end];
            let quoted = p.kind == ParamKind::Quoted;
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
            if !unquoted.contains(NAME) && !unquoted.contains(STAT) {
                continue;
            }
            let parts = split_placeholders(&unquoted);
            has_stat |= parts.contains(&Part::Stat);
            let literal = &text[lit_start..p.start];
            let text_len: usize = parts
                .iter()
                .map(|part| match part {
                    Part::Text(t) => t.len(),
                    _ => 0,
                })
                .sum();
            fixed_len += literal.len() + 2 + text_len;
            pieces.push(Piece::Literal(literal.to_string()));
            pieces.push(Piece::Param {
                parts,
                quoted,
                raw: raw.to_string(),
            });
            lit_start = p.end;
        }
        let tail = &text[lit_start..];
        fixed_len += tail.len();
        pieces.push(Piece::Literal(tail.to_string()));
        pieces.retain(|p| !matches!(p, Piece::Literal(l) if l.is_empty()));
        KeyTemplate {
            text: text.to_string(),
            pieces,
            has_stat,
            fixed_len,
        }
    }

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
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Param { parts, quoted, .. } => {
                    // The parameter's value is the parts one after another: decided and
                    // written part by part, never put together first (one key per value).
                    let texts = || {
                        parts.iter().map(|part| match part {
                            Part::Text(t) => t.as_str(),
                            Part::Name => name,
                            Part::Stat => stat,
                        })
                    };
                    let first = texts().flat_map(str::bytes).next();
                    let quote = *quoted
                        || matches!(first, Some(b'"' | b' ' | b'['))
                        || texts().flat_map(str::bytes).any(|b| b == b',' || b == b']');
                    if !quote {
                        texts().for_each(|t| out.push_str(t));
                        continue;
                    }
                    if texts()
                        .rfind(|t| !t.is_empty())
                        .is_some_and(|t| t.ends_with('\\'))
                    {
                        return Err(KeyError::Unencodable {
                            param: texts().collect(),
                        });
                    }
                    out.push('"');
                    texts().for_each(|t| push_escaped(&mut out, t));
                    out.push('"');
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

    /// The part-by-part render is the server's rule applied to the whole parameter: the value
    /// put together, then `quote_key_param`.
    #[test]
    fn render_equals_quoting_the_whole_parameter() {
        let names = [
            "", "a", "a.b", "a,b", "]", "[x", " x", "\"q", "q\"", "x\\", "\\", "a, b]", "代码,",
        ];
        for template in [
            "t[{name}.{stat}]",
            "t[{stat}{name}]",
            "t[\"{name}\",{stat}]",
            "t[{name}]",
        ] {
            let t: KeyTemplate = template.parse().unwrap();
            for name in names {
                for stat in ["", "p95", ",", "\\", " "] {
                    let expected = (|| {
                        let mut out = String::new();
                        for piece in &t.pieces {
                            match piece {
                                Piece::Literal(text) => out.push_str(text),
                                Piece::Param { parts, quoted, .. } => {
                                    let value: String = parts
                                        .iter()
                                        .map(|p| match p {
                                            Part::Text(t) => t.as_str(),
                                            Part::Name => name,
                                            Part::Stat => stat,
                                        })
                                        .collect();
                                    push_param(&mut out, &value, *quoted)?;
                                }
                            }
                        }
                        Ok(out)
                    })();
                    assert_eq!(
                        t.render(name, Some(stat)),
                        expected,
                        "{template} {name:?} {stat:?}"
                    );
                }
            }
        }
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
