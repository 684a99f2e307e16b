//! Local validation. The Zabbix server runs the scripts' command text with `sh`, substituting
//! user macros and `{HOST.HOST}` without any shell escaping, so every value that can end up
//! inside that text is kept to characters a double-quoted shell word cannot misread.

use concierge_core::cli::parse_duration;
use concierge_core::outcome::UsageError;
use concierge_core::zabbix::key;

fn err(msg: String) -> UsageError {
    UsageError(msg)
}

/// Why `c` cannot appear inside a double-quoted shell word, if it cannot.
fn shell_hazard(c: char) -> Option<&'static str> {
    match c {
        '"' | '\'' => Some("a quote"),
        '$' => Some("'$'"),
        '`' => Some("a backtick"),
        '\\' => Some("a backslash"),
        '\n' | '\r' => Some("a newline"),
        c if c.is_control() => Some("a control character"),
        _ => None,
    }
}

/// A value that a Zabbix user macro carries into the command text, inside double quotes.
pub fn macro_value(what: &str, value: &str) -> Result<(), UsageError> {
    if let Some(why) = value.chars().find_map(shell_hazard) {
        return Err(err(format!(
            "{what} {value:?} contains {why}: the Zabbix server substitutes it unescaped into a shell command"
        )));
    }
    Ok(())
}

/// A value written literally into the command text, inside double quotes (state dir, Zabbix
/// server): as [`macro_value`], and no braces, which Zabbix would read as a macro.
pub fn literal(what: &str, value: &str) -> Result<(), UsageError> {
    if value.is_empty() {
        return Err(err(format!("{what} is empty")));
    }
    macro_value(what, value)?;
    if value.contains(['{', '}']) {
        return Err(err(format!(
            "{what} {value:?} contains a brace: Zabbix would read it as a macro"
        )));
    }
    Ok(())
}

/// The program written unquoted at the start of the command text: path characters only.
pub fn program(what: &str, value: &str) -> Result<(), UsageError> {
    literal(what, value)?;
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/._+-@%:,=".contains(*c)))
    {
        return Err(err(format!(
            "{what} {value:?} contains {c:?}: only letters, digits and / . _ + - @ % : , = are allowed (it is written unquoted)"
        )));
    }
    Ok(())
}

/// A compose service name: `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn service_name(name: &str) -> Result<(), UsageError> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(err(format!(
            "invalid service name {name:?}: 1-100 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )))
    }
}

/// A compose project name: as a service name (compose lower-cases it itself).
pub fn project_name(name: &str) -> Result<(), UsageError> {
    service_name(name).map_err(|_| {
        err(format!(
            "invalid project name {name:?}: 1-100 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        ))
    })
}

/// A host group name: it lands in calculated formulas as `group="…"`.
pub fn group_name(name: &str) -> Result<(), UsageError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed != name || name.chars().count() > 255 {
        return Err(err(format!(
            "invalid host group {name:?}: 1-255 characters without leading or trailing spaces"
        )));
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err(err(format!(
            "invalid host group {name:?}: '/' separates non-empty levels"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '"' | '\\') || c.is_control())
    {
        return Err(err(format!(
            "invalid host group {name:?}: {c:?} would break the aggregates' group filter"
        )));
    }
    Ok(())
}

/// Autoregistration metadata: what the condition looks for ("contains"), at most 255
/// characters like the agent's HostMetadata.
pub fn metadata(text: &str) -> Result<(), UsageError> {
    if text.trim().is_empty() || text.chars().count() > 255 || text.chars().any(char::is_control) {
        return Err(err(format!(
            "invalid --metadata {text:?}: 1-255 characters, no control characters"
        )));
    }
    Ok(())
}

/// A cooldown as concierge-scale's --cooldown reads it; returned trimmed.
pub fn cooldown(text: &str) -> Result<String, UsageError> {
    let t = text.trim();
    parse_duration(t).map_err(|e| err(format!("--cooldown: {e}")))?;
    macro_value("--cooldown", t)?;
    Ok(t.to_string())
}

/// A load threshold, written as Zabbix reads a number in a trigger expression.
pub fn load(what: &str, x: f64) -> Result<String, UsageError> {
    if !x.is_finite() {
        return Err(err(format!("{what} must be a finite number")));
    }
    // Display never uses an exponent, which trigger expressions would not accept.
    Ok(format!("{x}"))
}

/// A Zabbix interval (`30`, `30s`, `5m`, `1h`, `1d`, `1w`) between `min` and `max` seconds;
/// returned trimmed, as written.
pub fn interval(what: &str, text: &str, min: u64, max: u64) -> Result<String, UsageError> {
    let t = text.trim();
    match seconds(t) {
        None => Err(err(format!(
            "{what} {text:?} is not a Zabbix interval (a whole number with s, m, h, d or w: 30s, 5m)"
        ))),
        Some(s) if s < min || s > max => Err(err(format!(
            "{what} {text:?} must be between {} and {}",
            human(min),
            human(max)
        ))),
        Some(_) => Ok(t.to_string()),
    }
}

/// The seconds of a Zabbix interval (`30`, `30s`, `5m`, `1h`, `1d`, `1w`), if it is one.
pub fn seconds(text: &str) -> Option<u64> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], Some(c)),
        _ => (t, None),
    };
    let scale = match unit {
        None | Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3_600,
        Some('d') => 86_400,
        Some('w') => 604_800,
        Some(_) => 0,
    };
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && scale > 0)
        .then(|| digits.parse::<u64>().ok())
        .flatten()
        .and_then(|n| n.checked_mul(scale))
}

fn human(secs: u64) -> String {
    match secs {
        s if s % 604_800 == 0 => format!("{}w", s / 604_800),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s => format!("{s}s"),
    }
}

/// A timer name for the LLD rule: it must fit in an item key parameter.
pub fn timer_name(name: &str) -> Result<(), UsageError> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(err(format!(
            "invalid --timer {name:?}: empty or with control characters"
        )));
    }
    key::quote_param(name, false).map_err(|e| err(format!("invalid --timer {name:?}: {e}")))?;
    Ok(())
}

/// The API URL must be http(s).
pub fn api_url(url: &str) -> Result<(), UsageError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(err(format!(
            "--api {url:?} is not an http(s) URL (e.g. http://zabbix.example/api_jsonrpc.php)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_hazards_are_refused() {
        for bad in [
            "a\"b", "a'b", "$HOME", "a`id`", "a\\b", "a\nb", "a\rb", "a\u{7}",
        ] {
            assert!(macro_value("x", bad).is_err(), "{bad:?}");
            assert!(literal("x", bad).is_err(), "{bad:?}");
        }
        assert!(macro_value("x", "/srv/my app/compose.yml").is_ok());
        assert!(literal("x", "/var/lib/{$X}").is_err());
        assert!(literal("x", "").is_err());
        assert!(literal("x", "127.0.0.1:10051;10.0.0.2,zbx").is_ok());
    }

    #[test]
    fn the_program_is_path_characters_only() {
        assert!(program("p", "/usr/local/bin/concierge-scale").is_ok());
        assert!(program("p", "concierge-scale").is_ok());
        for bad in [
            "/a b", "/a;b", "a|b", "a&b", "a>b", "a*", "~/x", "a(b)", "a#b",
        ] {
            assert!(program("p", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        for ok in ["web", "my_app-2", "a.b"] {
            assert!(service_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-web", "a b", "a/b", "a\"b", &"x".repeat(101)] {
            assert!(service_name(bad).is_err(), "{bad:?}");
        }
        assert!(group_name("Concierge/web").is_ok());
        for bad in ["", " a", "a ", "/a", "a/", "a//b", "a\"b", "a\\b"] {
            assert!(group_name(bad).is_err(), "{bad:?}");
        }
        assert!(metadata("concierge service=web").is_ok());
        assert!(metadata(&"m".repeat(256)).is_err());
        assert!(metadata(" ").is_err());
    }

    #[test]
    fn intervals() {
        assert_eq!(interval("i", "5m", 60, 604_800).unwrap(), "5m");
        assert_eq!(interval("i", " 60 ", 60, 604_800).unwrap(), "60");
        assert_eq!(interval("i", "1w", 60, 604_800).unwrap(), "1w");
        for bad in [
            "59s",
            "30",
            "2w",
            "5",
            "5x",
            "m",
            "",
            "1.5m",
            "-60",
            "99999999999999999999",
        ] {
            assert!(interval("i", bad, 60, 604_800).is_err(), "{bad:?}");
        }
        assert!(interval("i", "1s", 1, 86_400).is_ok());
        assert!(interval("i", "0s", 1, 86_400).is_err());
        assert!(interval("i", "2d", 1, 86_400).is_err());
    }

    #[test]
    fn numbers_and_durations() {
        assert_eq!(load("l", 0.8).unwrap(), "0.8");
        assert_eq!(load("l", 5.0).unwrap(), "5");
        assert_eq!(load("l", 1e21).unwrap(), "1000000000000000000000");
        assert!(load("l", f64::NAN).is_err());
        assert!(load("l", f64::INFINITY).is_err());
        assert_eq!(cooldown(" 45s ").unwrap(), "45s");
        assert_eq!(cooldown("2m").unwrap(), "2m");
        for bad in ["0", "5d", "x", "\"1m\""] {
            assert!(cooldown(bad).is_err(), "{bad:?}");
        }
        assert!(timer_name("my.test-timer-0").is_ok());
        assert!(timer_name("GET /a, b]").is_ok());
        assert!(timer_name("").is_err());
        assert!(timer_name("\"a\\").is_err());
        assert!(api_url("http://127.0.0.1:8088/api_jsonrpc.php").is_ok());
        assert!(api_url("127.0.0.1").is_err());
    }
}
