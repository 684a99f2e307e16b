//! Low-level discovery documents: the JSON a discovery rule receives, one row per metric.

/// The LLD document `{"data":[{"{#TIMER}":"a"},…]}` with one row per name, in the given order.
/// The `{"data":[…]}` form is accepted by every Zabbix since 2.0; strings are escaped by
/// serde_json, written straight into the output (no intermediate JSON tree). The macro is not
/// checked here: see [`is_valid_macro`].
pub fn document<'a>(lld_macro: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    rows_document(names.into_iter().map(|name| [(lld_macro, name)]))
}

/// The LLD document `{"data":[{"{#A}":"x","{#B}":"y"},…]}` with one row per item of `rows`,
/// each a list of (macro, value) pairs written in order. Like [`document`], no JSON tree.
pub fn rows_document<R, M, V>(rows: impl IntoIterator<Item = R>) -> String
where
    R: IntoIterator<Item = (M, V)>,
    M: AsRef<str>,
    V: AsRef<str>,
{
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"data\":[");
    for (i, row) in rows.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        for (j, (m, v)) in row.into_iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            json_string(&mut out, m.as_ref());
            out.push(b':');
            json_string(&mut out, v.as_ref());
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    // Only JSON punctuation and serde_json-escaped UTF-8 strings were written.
    String::from_utf8(out).unwrap_or_default()
}

/// One LLD macro per name: `{#<PREFIX><NAME>}` with the name upper-cased and every character
/// outside `[A-Z0-9._]` (after upper-casing ASCII) replaced by `_`; an empty name becomes `_`.
/// Names that map to the same macro (`a-b` and `a_b`, `Code` and `code`) are told apart by
/// order: the first keeps the macro, the next get `_2`, `_3`, … (never a macro already taken).
pub fn mapped_macros<'a>(prefix: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut taken: Vec<String> = Vec::new();
    for name in names {
        let mut base = String::with_capacity(prefix.len() + name.len() + 3);
        base.push_str("{#");
        base.push_str(prefix);
        for ch in name.chars() {
            let up = ch.to_ascii_uppercase();
            base.push(
                if up.is_ascii_uppercase() || up.is_ascii_digit() || up == '.' || up == '_' {
                    up
                } else {
                    '_'
                },
            );
        }
        if name.is_empty() {
            base.push('_');
        }
        let mut candidate = format!("{base}}}");
        let mut n = 1;
        while taken.contains(&candidate) {
            n += 1;
            candidate = format!("{base}_{n}}}");
        }
        taken.push(candidate);
    }
    taken
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
    fn rows_with_several_macros() {
        let doc = rows_document([
            vec![("{#A}", "x"), ("{#B}", "say \"hi\"")],
            vec![("{#A}", "y")],
        ]);
        assert_eq!(
            doc,
            r#"{"data":[{"{#A}":"x","{#B}":"say \"hi\""},{"{#A}":"y"}]}"#
        );
        assert_eq!(
            rows_document(Vec::<Vec<(&str, &str)>>::new()),
            r#"{"data":[]}"#
        );
    }

    #[test]
    fn label_names_map_to_valid_distinct_macros() {
        let got = mapped_macros(
            "LABEL.",
            [
                "code",
                "Code",
                "a-b",
                "a_b",
                "a_b_2",
                "zone.name",
                "ünï",
                "",
            ],
        );
        assert_eq!(
            got,
            [
                "{#LABEL.CODE}",
                "{#LABEL.CODE_2}",
                "{#LABEL.A_B}",
                "{#LABEL.A_B_2}",
                "{#LABEL.A_B_2_2}",
                "{#LABEL.ZONE.NAME}",
                "{#LABEL._N_}",
                "{#LABEL._}",
            ]
        );
        assert!(got.iter().all(|m| is_valid_macro(m)));
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
