//! The record of every decision: one JSON line per call in the event log (append-only), and
//! the talk's human line, `<date>: Scaled X from A to B`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

use crate::clock::rfc3339;
use crate::resources::Limits;

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
    /// Logged before the engine scales: the intent, so a call killed mid-scaling leaves a
    /// trace (its result follows in a `scaled` or `failed` event).
    Started,
    /// A call was killed after its intent: reconciled with the engine's count by the next.
    Interrupted,
    /// The resource limits were changed (`resize`).
    Resized,
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
            Outcome::Started => "started",
            Outcome::Interrupted => "interrupted",
            Outcome::Resized => "resized",
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
    /// A resize: the limits before (as the engine told them) and after (what was asked,
    /// bounded; a `None` field is left alone).
    pub resources: Option<(Limits, Limits)>,
}

impl Event {
    /// The event of a call of `action` on `service`, stamped now, before anything is decided:
    /// failed until the call says otherwise, nothing else known yet.
    pub fn new(service: &str, engine: &str, action: String, reason: String, dry_run: bool) -> Self {
        Event {
            time: SystemTime::now(),
            service: service.to_string(),
            engine: engine.to_string(),
            action,
            step: None,
            target: None,
            hint: None,
            count_source: None,
            from: None,
            to: None,
            outcome: Outcome::Failed,
            reason,
            notes: Vec::new(),
            decision: String::new(),
            error: None,
            dry_run,
            command: None,
            zabbix: None,
            resources: None,
        }
    }

    /// The event as one JSON line (with its newline), fields in a fixed, readable order.
    pub fn json_line(&self) -> String {
        let num = |n: Option<u32>| n.map_or(Value::Null, Value::from);
        let text = |s: Option<&str>| s.map_or(Value::Null, Value::from);
        let resources = self.resources.map_or(
            Value::Null,
            |(from, to)| serde_json::json!({ "from": from.json(), "to": to.json() }),
        );
        let fields: [(&str, Value); 19] = [
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
            ("resources", resources),
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
        if let Some((from, to)) = self.resources {
            return format!("{date}: {}\n", self.resize_line(from, to));
        }
        let s = &self.service;
        let n = |c: Option<u32>| c.map_or_else(|| "?".to_string(), |c| c.to_string());
        let (from, to) = (n(self.from), n(self.to));
        let body = match self.outcome {
            Outcome::Scaled if self.action == "heal" => {
                format!("Healed {s} from {from} to {to} ({})", self.reason)
            }
            Outcome::Scaled | Outcome::Resized => format!("Scaled {s} from {from} to {to}"),
            Outcome::DryRun => format!("Would scale {s} from {from} to {to} (dry run)"),
            Outcome::Started => format!("Scaling {s} from {from} to {to}"),
            Outcome::Interrupted => format!(
                "Interrupted scaling of {s} from {from}: the engine reports {to} ({})",
                self.decision
            ),
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

impl Event {
    /// The human line of a resize, without the date.
    fn resize_line(&self, from: Limits, to: Limits) -> String {
        let s = &self.service;
        let to = to.over(from);
        match self.outcome {
            Outcome::Resized => format!("Resized {s} from {from} to {to}"),
            Outcome::DryRun => format!("Would resize {s} from {from} to {to} (dry run)"),
            Outcome::Started => format!("Resizing {s} from {from} to {to}"),
            Outcome::Failed => format!(
                "Failed to resize {s} from {from} to {to}: {}",
                self.error
                    .as_deref()
                    .and_then(|e| e.lines().next())
                    .unwrap_or("unknown error")
            ),
            _ => format!("Kept {s} at {from} ({}: {})", self.outcome, self.decision),
        }
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
    /// Open `path` for appending, creating it (not its directory) with mode 0600; never
    /// through a symlink, which someone could have planted to make us append elsewhere.
    pub fn open(path: &Path) -> Result<Self, LogError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(crate::state::FILE_MODE)
            .custom_flags(crate::state::OPEN_FLAGS)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

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
            resources: None,
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
