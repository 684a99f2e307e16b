//! What the run did to each object: one stdout line per object,
//! `created|updated|unchanged|deleted <kind> <name> (<id>)`.

use std::fmt;
use std::io::Write;

use concierge_core::text::shown;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It did not exist.
    Created,
    /// It existed, and was changed.
    Updated,
    /// It existed as wanted.
    Unchanged,
    /// It existed, and was deleted (`retire`).
    Deleted,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
            Change::Deleted => "deleted",
        })
    }
}

/// One object's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// What happened.
    pub change: Change,
    /// `template`, `host group`, `host`, `timer`, `script`, `action`.
    pub kind: &'static str,
    /// The object's name.
    pub name: String,
    /// The object's id in Zabbix.
    pub id: String,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The id comes from the server: shown, so it cannot break the one-line-per-object
        // contract.
        write!(
            f,
            "{} {} {} ({})",
            self.change,
            self.kind,
            self.name,
            shown(&self.id)
        )
    }
}

/// Collects the lines, and prints each one as it comes when `print` is set (so a failure
/// later in the run still shows what was done).
#[derive(Debug, Default)]
pub struct Reporter {
    print: bool,
    /// Every line so far.
    pub lines: Vec<Line>,
}

impl Reporter {
    /// A reporter that prints to stdout.
    pub fn stdout() -> Self {
        Self {
            print: true,
            lines: Vec::new(),
        }
    }

    /// Record (and print) one object's line.
    pub fn push(&mut self, change: Change, kind: &'static str, name: &str, id: &str) {
        let line = Line {
            change,
            kind,
            name: name.to_string(),
            id: id.to_string(),
        };
        if self.print {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        self.lines.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let mut r = Reporter::default();
        r.push(Change::Unchanged, "host group", "Concierge/web", "42");
        assert_eq!(
            r.lines[0].to_string(),
            "unchanged host group Concierge/web (42)"
        );
        r.push(Change::Created, "host", "h", "7\ncreated host evil (8)");
        assert_eq!(
            r.lines[1].to_string(),
            r"created host h (7\ncreated host evil (8))"
        );
    }
}
