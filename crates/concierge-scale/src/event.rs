//! The record of every decision: one JSON line per call in the event log (append-only), and
//! the talk's human line, `<date>: Scaled X from A to B`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

use crate::state::unix_ms;

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The engine scaled the service.
    Scaled,
    /// The bounds (--min/--max) left nothing to do.
    Clamped,
    /// The service already had the asked count.
    Noop,
    /// A scaling happened less than --cooldown ago.
    Cooldown,
    /// --dry-run: this is what would have been done.
    DryRun,
    /// The engine (or the state) failed.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Scaled => "scaled",
            Outcome::Clamped => "clamped",
            Outcome::Noop => "noop",
            Outcome::Cooldown => "cooldown",
            Outcome::DryRun => "dry-run",
            Outcome::Failed => "failed",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decision, as logged.
#[derive(Debug, Clone)]
pub struct Event {
    pub time: SystemTime,
    pub service: String,
    pub engine: String,
    /// up, down or to.
    pub action: String,
    /// The step of up/down.
    pub step: Option<u32>,
    /// The target of to.
    pub target: Option<u32>,
    /// CURRENT as the caller gave it.
    pub hint: Option<u32>,
    /// Where `from` came from: engine, hint.
    pub count_source: Option<&'static str>,
    pub from: Option<u32>,
    pub to: Option<u32>,
    pub outcome: Outcome,
    /// Why the call was made (--reason, else the action and its number).
    pub reason: String,
    /// Remarks on the way (the caller's CURRENT differs, the engine could not be asked).
    pub notes: Vec<String>,
    /// Why the outcome (a bound, the cooldown left, already there).
    pub decision: String,
    /// What failed, with the engine's stderr.
    pub error: Option<String>,
    pub dry_run: bool,
    /// The scaling command (run, or that would have run).
    pub command: Option<Vec<String>>,
    /// The push of the new count to Zabbix: "sent", or what went wrong.
    pub zabbix: Option<String>,
}

impl Event {
    /// The event as one JSON line (with its newline), fields in a fixed, readable order.
    pub fn json_line(&self) -> String {
        let num = |n: Option<u32>| n.map_or(Value::Null, Value::from);
        let text = |s: Option<&str>| s.map_or(Value::Null, Value::from);
        let fields: [(&str, Value); 18] = [
            ("time", Value::from(rfc3339(self.time))),
            ("service", Value::from(self.service.as_str())),
            ("engine", Value::from(self.engine.as_str())),
            ("action", Value::from(self.action.as_str())),
            ("step", num(self.step)),
            ("target", num(self.target)),
            ("hint", num(self.hint)),
            ("count_source", text(self.count_source)),
            ("from", num(self.from)),
            ("to", num(self.to)),
            ("outcome", Value::from(self.outcome.as_str())),
            ("reason", Value::from(self.reason.as_str())),
            ("detail", Value::from(self.detail())),
            ("error", text(self.error.as_deref())),
            ("dry_run", Value::from(self.dry_run)),
            (
                "command",
                self.command.as_ref().map_or(Value::Null, |c| {
                    Value::Array(c.iter().map(|a| Value::from(a.as_str())).collect())
                }),
            ),
            ("zabbix", text(self.zabbix.as_deref())),
            ("pid", Value::from(std::process::id())),
        ];
        let mut line = String::from("{");
        for (i, (k, v)) in fields.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&Value::from(*k).to_string());
            line.push(':');
            line.push_str(&v.to_string());
        }
        line.push_str("}\n");
        line
    }

    /// Notes and decision, as the event log's `detail`.
    pub fn detail(&self) -> String {
        let mut parts: Vec<&str> = self.notes.iter().map(String::as_str).collect();
        if !self.decision.is_empty() {
            parts.push(&self.decision);
        }
        parts.join("; ")
    }

    /// The talk's line, `<date>: Scaled X from A to B`, and its siblings for the other
    /// outcomes (with its newline).
    pub fn human_line(&self) -> String {
        let date = rfc3339(self.time);
        let s = &self.service;
        let n = |c: Option<u32>| c.map_or_else(|| "?".to_string(), |c| c.to_string());
        let (from, to) = (n(self.from), n(self.to));
        let body = match self.outcome {
            Outcome::Scaled => format!("Scaled {s} from {from} to {to}"),
            Outcome::DryRun => format!("Would scale {s} from {from} to {to} (dry run)"),
            Outcome::Clamped | Outcome::Noop | Outcome::Cooldown => {
                format!("Kept {s} at {from} ({}: {})", self.outcome, self.decision)
            }
            Outcome::Failed => format!(
                "Failed to scale {s} from {from} to {to}: {}",
                self.error
                    .as_deref()
                    .and_then(|e| e.lines().next())
                    .unwrap_or("unknown error")
            ),
        };
        format!("{date}: {body}\n")
    }
}

/// An append-only log file, opened once (before any engine runs, so an unusable path is
/// found before anything changes).
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
}

/// A log that cannot be opened or written.
#[derive(Debug)]
pub struct LogError {
    pub path: PathBuf,
    pub doing: &'static str,
    pub error: io::Error,
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.doing,
            self.path.display(),
            self.error
        )
    }
}

impl std::error::Error for LogError {}

impl LogFile {
    /// Open `path` for appending, creating it (not its directory).
    pub fn open(path: &Path) -> Result<Self, LogError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|error| LogError {
                path: path.to_path_buf(),
                doing: "open the log",
                error,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Append one line in a single write (O_APPEND keeps concurrent writers' lines whole).
    pub fn append(&mut self, line: &str) -> Result<(), LogError> {
        self.file
            .write_all(line.as_bytes())
            .map_err(|error| LogError {
                path: self.path.clone(),
                doing: "append to",
                error,
            })
    }
}

/// `t` as RFC 3339 in UTC with milliseconds: `2026-05-09T12:34:56.789Z`.
pub fn rfc3339(t: SystemTime) -> String {
    rfc3339_ms(unix_ms(t))
}

/// Milliseconds since the epoch as RFC 3339 in UTC.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01), after Howard
/// Hinnant's `civil_from_days`.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d and m are in range by construction.
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_ms(1_709_251_199_000), "2024-02-29T23:59:59.000Z");
        assert_eq!(rfc3339_ms(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(2_147_483_648_000), "2038-01-19T03:14:08.000Z");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
        // Every day of 400 years follows the previous one.
        let mut prev = civil_from_days(0);
        for day in 1..146_097 {
            let cur = civil_from_days(day);
            let next_day = (prev.0, prev.1, prev.2 + 1);
            let next_month = if prev.1 == 12 {
                (prev.0 + 1, 1, 1)
            } else {
                (prev.0, prev.1 + 1, 1)
            };
            assert!(cur == next_day || cur == next_month, "{prev:?} -> {cur:?}");
            prev = cur;
        }
    }

    fn event() -> Event {
        Event {
            time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
            service: "web".into(),
            engine: "compose-v1".into(),
            action: "up".into(),
            step: Some(1),
            target: None,
            hint: Some(1),
            count_source: Some("engine"),
            from: Some(1),
            to: Some(2),
            outcome: Outcome::Scaled,
            reason: "load high".into(),
            notes: vec!["CURRENT 2 differs".into()],
            decision: String::new(),
            error: None,
            dry_run: false,
            command: Some(vec!["docker-compose".into(), "up".into()]),
            zabbix: None,
        }
    }

    #[test]
    fn json_line_is_one_line_of_ordered_fields() {
        let mut e = event();
        e.error = Some("line 1\nline \"2\"".into());
        let line = e.json_line();
        assert!(line.ends_with("}\n"));
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.starts_with(r#"{"time":"2023-11-14T22:13:20.250Z","service":"web","#));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["from"], 1);
        assert_eq!(v["to"], 2);
        assert_eq!(v["outcome"], "scaled");
        assert_eq!(v["error"], "line 1\nline \"2\"");
        assert_eq!(v["target"], Value::Null);
        assert_eq!(v["command"][0], "docker-compose");
        assert_eq!(v["detail"], "CURRENT 2 differs");
    }

    #[test]
    fn human_lines() {
        let mut e = event();
        assert_eq!(
            e.human_line(),
            "2023-11-14T22:13:20.250Z: Scaled web from 1 to 2\n"
        );
        e.outcome = Outcome::Clamped;
        e.to = Some(1);
        e.decision = "already at max 1".into();
        assert_eq!(
            e.human_line(),
            "2023-11-14T22:13:20.250Z: Kept web at 1 (clamped: already at max 1)\n"
        );
        e.outcome = Outcome::Failed;
        e.to = Some(2);
        e.error = Some("`docker-compose up` failed (exit 1): boom\nmore".into());
        assert_eq!(
            e.human_line(),
            "2023-11-14T22:13:20.250Z: Failed to scale web from 1 to 2: \
             `docker-compose up` failed (exit 1): boom\n"
        );
    }
}
