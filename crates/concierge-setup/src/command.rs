//! The command text of the global scripts "Concierge: scale up NAME" / "Concierge: scale down
//! NAME". Each service gets its own pair: the state directory, the concierge-scale path and the
//! Zabbix server are literals of the command, and one service's setup must not rewrite
//! another's.
//!
//! The Zabbix server runs it with `sh`, after substituting user macros, `{HOST.HOST}`,
//! `{TRIGGER.NAME}`, `{EVENT.ID}` and the expression macro `{?last(...)}` without any shell
//! escaping. Every macro is therefore inside double quotes, and every value that reaches the
//! text (literally or through a macro) is checked by [`crate::check`] to be free of quotes,
//! `$`, backticks, backslashes and newlines.

use concierge_core::outcome::UsageError;

use crate::check;

/// The trapper item concierge-scale pushes the new count to (template "Concierge service").
pub const TARGET_ITEM: &str = "service.scale.target";

/// Which way a script scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Add containers (the load is high).
    Up,
    /// Remove containers (the load is low).
    Down,
}

impl Direction {
    /// Both directions, up first.
    pub const BOTH: [Direction; 2] = [Direction::Up, Direction::Down];

    /// concierge-scale's action word.
    pub fn word(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }

    /// The name of service `service`'s global script for this direction (its action has the
    /// same name: actions and scripts are separate kinds of object).
    pub fn script_name(self, service: &str) -> String {
        format!("Concierge: scale {} {service}", self.word())
    }

    /// The service host's trigger that starts this direction (template "Concierge service").
    pub fn trigger_name(self) -> &'static str {
        match self {
            Direction::Up => "Service {HOST.NAME}::load::high::{ITEM.VALUE}",
            Direction::Down => "Service {HOST.NAME}::load::low::{ITEM.VALUE}",
        }
    }
}

/// The literal parts of the command text, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSettings {
    scale_command: String,
    state_dir: String,
    zabbix_server: String,
}

impl ScriptSettings {
    /// Check the three literals: `scale_command` is written unquoted (path characters only);
    /// `state_dir` and `zabbix_server` go inside double quotes (no quote, `$`, backtick,
    /// backslash, newline or brace).
    pub fn new(
        scale_command: &str,
        state_dir: &str,
        zabbix_server: &str,
    ) -> Result<Self, UsageError> {
        check::program("--scale-command", scale_command)?;
        check::literal("--state-dir", state_dir)?;
        check::literal("--zabbix-server", zabbix_server)?;
        let trimmed = state_dir.trim_end_matches('/');
        Ok(Self {
            scale_command: scale_command.to_string(),
            state_dir: if trimmed.is_empty() { "/" } else { trimmed }.to_string(),
            zabbix_server: zabbix_server.to_string(),
        })
    }

    /// The command text of the script for `direction`.
    pub fn command(&self, direction: Direction) -> String {
        let log = if self.state_dir == "/" {
            "/scale.log".to_string()
        } else {
            format!("{}/scale.log", self.state_dir)
        };
        format!(
            "{cmd} {dir} --reason \"Zabbix event {{EVENT.ID}}: {{TRIGGER.NAME}}\" \
             -f \"{{$COMPOSE_FILE}}\" -p \"{{$COMPOSE_PROJECT}}\" \
             --min \"{{$SCALE_MIN}}\" --max \"{{$SCALE_MAX}}\" --cooldown \"{{$SCALE_COOLDOWN}}\" \
             --state-dir \"{state}\" --human-log \"{log}\" \
             --zabbix-item {item} -z \"{server}\" -s \"{{HOST.HOST}}\" \
             -- \"{{$SERVICE_NAME}}\" \"{{?last(/{{HOST.HOST}}/service.containers.running)}}\" \"{{$SCALE_STEP}}\"",
            cmd = self.scale_command,
            dir = direction.word(),
            state = self.state_dir,
            server = self.zabbix_server,
            item = TARGET_ITEM,
        )
    }
}

/// The macros the command text quotes, as they appear in it (for tests and checks).
pub const QUOTED_MACROS: [&str; 10] = [
    "\"Zabbix event {EVENT.ID}: {TRIGGER.NAME}\"",
    "\"{$COMPOSE_FILE}\"",
    "\"{$COMPOSE_PROJECT}\"",
    "\"{$SCALE_MIN}\"",
    "\"{$SCALE_MAX}\"",
    "\"{$SCALE_COOLDOWN}\"",
    "-s \"{HOST.HOST}\"",
    "-- \"{$SERVICE_NAME}\"",
    "\"{?last(/{HOST.HOST}/service.containers.running)}\"",
    "\"{$SCALE_STEP}\"",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ScriptSettings {
        ScriptSettings::new(
            "/usr/local/bin/concierge-scale",
            "/var/lib/concierge/",
            "127.0.0.1",
        )
        .unwrap()
    }

    #[test]
    fn the_up_command_is_exactly_the_documented_one() {
        assert_eq!(
            settings().command(Direction::Up),
            "/usr/local/bin/concierge-scale up --reason \"Zabbix event {EVENT.ID}: {TRIGGER.NAME}\" \
             -f \"{$COMPOSE_FILE}\" -p \"{$COMPOSE_PROJECT}\" --min \"{$SCALE_MIN}\" \
             --max \"{$SCALE_MAX}\" --cooldown \"{$SCALE_COOLDOWN}\" --state-dir \"/var/lib/concierge\" \
             --human-log \"/var/lib/concierge/scale.log\" --zabbix-item service.scale.target \
             -z \"127.0.0.1\" -s \"{HOST.HOST}\" -- \"{$SERVICE_NAME}\" \
             \"{?last(/{HOST.HOST}/service.containers.running)}\" \"{$SCALE_STEP}\""
        );
    }

    #[test]
    fn down_differs_only_in_the_action_word() {
        let s = settings();
        assert_eq!(
            s.command(Direction::Down),
            s.command(Direction::Up)
                .replacen("concierge-scale up ", "concierge-scale down ", 1)
        );
    }

    #[test]
    fn every_macro_is_inside_double_quotes() {
        for d in Direction::BOTH {
            let text = settings().command(d);
            for m in QUOTED_MACROS {
                assert!(text.contains(m), "{m} missing from {text}");
            }
            // Outside the quoted words, no macro (or anything else) starts with '{'.
            let mut inside = false;
            for c in text.chars() {
                match c {
                    '"' => inside = !inside,
                    '{' | '$' => assert!(inside, "unquoted {c} in {text}"),
                    _ => {}
                }
            }
            assert!(!inside, "unbalanced quotes in {text}");
            assert_eq!(text.matches('"').count(), 26, "{text}");
        }
    }

    #[test]
    fn unsafe_literals_are_usage_errors() {
        for (cmd, dir, server) in [
            ("/bin/scale\"", "/var", "z"),
            ("/bin/sc ale", "/var", "z"),
            ("/bin/scale;rm", "/var", "z"),
            ("/bin/scale", "/var/$x", "z"),
            ("/bin/scale", "/var/`id`", "z"),
            ("/bin/scale", "/var\\x", "z"),
            ("/bin/scale", "/var\nx", "z"),
            ("/bin/scale", "/var/'x'", "z"),
            ("/bin/scale", "/var", "z\""),
            ("/bin/scale", "/var", "$(id)"),
            ("/bin/scale", "/var", "a\nb"),
            ("/bin/scale", "", "z"),
        ] {
            assert!(
                ScriptSettings::new(cmd, dir, server).is_err(),
                "{cmd:?} {dir:?} {server:?}"
            );
        }
    }

    #[test]
    fn the_root_state_dir_keeps_one_slash() {
        let s = ScriptSettings::new("scale", "/", "z").unwrap();
        assert!(s
            .command(Direction::Up)
            .contains("--state-dir \"/\" --human-log \"/scale.log\""));
    }
}
