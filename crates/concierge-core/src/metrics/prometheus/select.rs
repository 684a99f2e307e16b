//! Which metrics to keep: shell-style globs on metric names (`node_cpu_*`, `go_gc_*_seconds`).
//!
//! Globs rather than regular expressions: they say what admins mean for metric names, cannot
//! blow up on hostile names, and need no dependency. `*` matches any run of characters
//! (also none), `?` one character; everything else matches itself, whole name only.

/// Patterns to keep and to drop. A metric is kept when no `include` pattern is given or one
/// matches, and no `exclude` pattern matches. A pattern matches a sample when it matches the
/// sample's name (`http_requests_total`, `rpc_seconds_bucket`) or its family's name
/// (`rpc_seconds`), so a family's pattern keeps all of its samples.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Selection {
    /// From `--filter` and `--exclude` values; each may hold several patterns separated by
    /// commas, and empty patterns are ignored (so `--filter ""` keeps everything).
    pub fn new(include: &[String], exclude: &[String]) -> Self {
        let split = |v: &[String]| -> Vec<String> {
            v.iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        };
        Self {
            include: split(include),
            exclude: split(exclude),
        }
    }

    /// True when a sample named `sample` of the family `family` is kept.
    pub fn matches(&self, family: &str, sample: &str) -> bool {
        let any = |patterns: &[String]| {
            patterns.iter().any(|p| {
                glob(p.as_bytes(), family.as_bytes()) || glob(p.as_bytes(), sample.as_bytes())
            })
        };
        (self.include.is_empty() || any(&self.include)) && !any(&self.exclude)
    }
}

/// Whole-name glob match in O(pattern × name) at worst: the usual greedy scan that backs up
/// only to the last `*`.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(b'?') => {
                // One character, not one byte.
                p += 1;
                n += utf8_len(name[n]);
            }
            Some(&c) if c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    let next = sn + utf8_len(name[sn]);
                    star = Some((sp, next));
                    p = sp + 1;
                    n = next;
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*') && n == name.len()
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        for (p, n, want) in [
            ("node_cpu_*", "node_cpu_seconds_total", true),
            ("node_cpu_*", "node_cpus", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("a?c", "abc", true),
            ("a?c", "aéc", true),
            ("a?c", "ac", false),
            ("go_*_seconds", "go_gc_duration_seconds", true),
            ("go_*_seconds", "go_gc_duration_seconds_sum", false),
            ("*_total", "a_total_total", true),
            ("**a", "bba", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob(p.as_bytes(), n.as_bytes()), want, "{p} ~ {n}");
        }
    }

    #[test]
    fn hostile_patterns_stay_fast() {
        let name = "a".repeat(5000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!glob(pattern.as_bytes(), name.as_bytes()));
    }

    #[test]
    fn include_and_exclude() {
        let s = Selection::new(&["node_cpu_*,node_load1".into()], &["*_guest_*".into()]);
        assert!(s.matches("node_cpu_seconds_total", "node_cpu_seconds_total"));
        assert!(s.matches("node_load1", "node_load1"));
        assert!(!s.matches("node_memory_x", "node_memory_x"));
        assert!(!s.matches(
            "node_cpu_guest_seconds_total",
            "node_cpu_guest_seconds_total"
        ));
        // The family's name keeps its samples.
        let s = Selection::new(&["rpc_seconds".into()], &[]);
        assert!(s.matches("rpc_seconds", "rpc_seconds_bucket"));
        assert!(!s.matches("rpc_other", "rpc_other_bucket"));
        assert!(Selection::new(&["".into()], &[" ".into()]).matches("x", "x"));
        assert!(Selection::default().matches("x", "y"));
    }
}
