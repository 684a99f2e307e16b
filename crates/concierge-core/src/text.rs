//! Showing text that came from a peer or a document (a metric name, a server's reply, an
//! engine's stderr) in a message: control characters escaped, so it cannot break the one-line
//! contract or drive a terminal, and cut to a sane length, so a 300 KB name never becomes a
//! 300 KB log line.

use std::fmt::{self, Write};

/// Most characters of one piece of outside text shown in a message.
pub const MAX_SHOWN: usize = 200;

/// Most characters of a whole stderr line (a message holds several pieces and contexts).
pub const MAX_LINE: usize = 2000;

/// `text` as it may be shown: `{}` escapes control characters (`\n`, `\u{1b}`) and invisible
/// direction marks; `{:?}` also quotes it and escapes `"` and `\`, like `str`'s `Debug`. Past
/// [`MAX_SHOWN`] characters it ends with `…` and the full size.
pub fn shown(text: &str) -> Shown<'_> {
    Shown::new(text, MAX_SHOWN)
}

/// The start of `bytes` from a peer (a reply that is not what was expected) as text, invalid
/// UTF-8 replaced: enough for [`shown`], which the caller still applies (with the size).
pub fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    // A character is at most four bytes.
    String::from_utf8_lossy(&bytes[..bytes.len().min(4 * MAX_SHOWN)])
}

/// Outside text with its display rules; see [`shown`].
#[derive(Clone, Copy)]
pub struct Shown<'a> {
    text: &'a str,
    limit: usize,
}

impl<'a> Shown<'a> {
    /// `text`, cut after `limit` characters.
    pub fn new(text: &'a str, limit: usize) -> Self {
        Self { text, limit }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, quoted: bool) -> fmt::Result {
        if quoted {
            f.write_char('"')?;
        }
        let mut cut = None;
        for (n, (at, c)) in self.text.char_indices().enumerate() {
            if n == self.limit {
                cut = Some(at);
                break;
            }
            match c {
                '"' | '\\' if quoted => {
                    f.write_char('\\')?;
                    f.write_char(c)?;
                }
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if is_hidden(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        if quoted {
            f.write_char('"')?;
        }
        if cut.is_some() {
            write!(f, "…({} bytes)", self.text.len())?;
        }
        Ok(())
    }
}

/// Control characters, and the format characters that reorder or hide text on a terminal.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}')
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, false)
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            shown("a\nb\tc\r\u{1b}[31m").to_string(),
            r"a\nb\tc\r\u{1b}[31m"
        );
        assert_eq!(shown("\u{7f}\u{202e}x").to_string(), r"\u{7f}\u{202e}x");
        assert_eq!(shown("ünï 代码").to_string(), "ünï 代码");
    }

    #[test]
    fn debug_quotes_like_str() {
        for s in ["plain", "say \"hi\"", "back\\slash", "new\nline", "tab\t"] {
            assert_eq!(format!("{:?}", shown(s)), format!("{s:?}"), "{s}");
        }
    }

    #[test]
    fn bytes_are_read_only_as_far_as_they_are_shown() {
        let garbage = [b'x'; 100_000];
        assert_eq!(lossy(&garbage).len(), 4 * MAX_SHOWN);
        assert_eq!(lossy(b"ok\xff"), "ok\u{fffd}");
    }

    #[test]
    fn long_text_is_cut_with_its_size() {
        let long = "x".repeat(300_000);
        let s = shown(&long).to_string();
        assert_eq!(s, format!("{}…(300000 bytes)", "x".repeat(MAX_SHOWN)));
        let q = format!("{:?}", shown(&long));
        assert!(
            q.starts_with("\"xxx") && q.ends_with("\"…(300000 bytes)"),
            "{q}"
        );
        // Characters count, not bytes, and a cut never splits one.
        let wide = "é".repeat(MAX_SHOWN + 1);
        assert_eq!(
            shown(&wide).to_string(),
            format!("{}…({} bytes)", "é".repeat(MAX_SHOWN), wide.len())
        );
        assert_eq!(
            shown(&"é".repeat(MAX_SHOWN)).to_string(),
            "é".repeat(MAX_SHOWN)
        );
    }
}
