//! Low-level discovery documents: the JSON a discovery rule receives, one row per metric.

/// The LLD document `{"data":[{"{#TIMER}":"a"},…]}` with one row per name, in the given order.
/// The `{"data":[…]}` form is accepted by every Zabbix since 2.0; strings are escaped by
/// serde_json, written straight into the output (no intermediate JSON tree). The macro is not
/// checked here: see [`is_valid_macro`].
pub fn document<'a>(lld_macro: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    let mut macro_json = Vec::with_capacity(lld_macro.len() + 2);
    json_string(&mut macro_json, lld_macro);
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"data\":[");
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        out.extend_from_slice(&macro_json);
        out.push(b':');
        json_string(&mut out, name);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    // Only JSON punctuation and serde_json-escaped UTF-8 strings were written.
    String::from_utf8(out).unwrap_or_default()
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// True when `m` is a name Zabbix accepts for an LLD macro: `{#` + one or more of
/// `[A-Z0-9._]` + `}` (upper case only).
pub fn is_valid_macro(m: &str) -> bool {
    m.strip_prefix("{#")
        .and_then(|rest| rest.strip_suffix('}'))
        .is_some_and(|inner| {
            !inner.is_empty()
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_data_form() {
        assert_eq!(
            document("{#TIMER}", ["a", "b"]),
            r#"{"data":[{"{#TIMER}":"a"},{"{#TIMER}":"b"}]}"#
        );
        assert_eq!(document("{#TIMER}", []), r#"{"data":[]}"#);
    }

    #[test]
    fn escapes_values_and_parses_back() {
        let names = [
            "say \"hi\"",
            "back\\slash",
            "tab\tnew\nline",
            "ünï代码",
            "a,b]",
            "\u{1}",
        ];
        let doc = document("{#METER}", names.iter().copied());
        assert!(doc.contains(r#""say \"hi\"""#), "{doc}");
        assert!(doc.contains(r#""back\\slash""#), "{doc}");
        assert!(doc.contains(r#""tab\tnew\nline""#), "{doc}");
        assert!(doc.contains("\"ünï代码\""), "{doc}");
        assert!(doc.contains(r#""\u0001""#), "{doc}");
        let parsed: serde_json::Value = serde_json::from_str(&doc).unwrap();
        let rows = parsed["data"].as_array().unwrap();
        assert_eq!(rows.len(), names.len());
        for (row, name) in rows.iter().zip(names) {
            assert_eq!(row["{#METER}"], *name);
        }
    }

    #[test]
    fn macro_names() {
        for ok in ["{#TIMER}", "{#A}", "{#APP.METRIC_2}"] {
            assert!(is_valid_macro(ok), "{ok}");
        }
        for bad in [
            "{#}",
            "{#timer}",
            "{TIMER}",
            "#TIMER",
            "{#TIMER",
            "{#TI-MER}",
            "{#TIMER}x",
            "",
        ] {
            assert!(!is_valid_macro(bad), "{bad}");
        }
    }
}
