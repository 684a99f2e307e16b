//! The command text of the global scripts "Concierge: scale up NAME" / "Concierge: scale down
//! NAME" (and "Concierge: escalate NAME", "Concierge: heal NAME"). Each service gets its own set: the state directory, the concierge-scale path and the
//! Zabbix server are literals of the command, and one service's setup must not rewrite
//! another's.
//!
//! The Zabbix server runs it with `sh`, after substituting user macros, `{HOST.HOST}`,
//! `{TRIGGER.NAME}`, `{EVENT.ID}` and the expression macro `{?last(...)}` without any shell
//! escaping. Every macro is therefore inside double quotes, and every value that reaches the
//! text (literally or through a macro) is checked by [`crate::check`] to be free of quotes,
//! `$`, backticks, backslashes and newlines.

use concierge_core::outcome::UsageError;
use concierge_core::scaling::{ENGINE_TIMEOUT_SECS, TARGET_ITEM};

use crate::check;

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
            Direction::Up => "Service {HOST.NAME}: load high",
            Direction::Down => "Service {HOST.NAME}: load low",
        }
    }
}

/// The literal parts of the command text, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSettings {
    scale_command: String,
    state_dir: String,
    zabbix_server: String,
    /// The PSK identity and file concierge-scale pushes the count with (the service host
    /// accepts only PSK when setup runs with --autoreg-psk-*).
    psk: Option<(String, String)>,
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
            psk: None,
        })
    }

    /// Push the count over TLS-PSK with `identity` and the key in `file` (as the scripts'
    /// runner sees it); both go inside double quotes.
    pub fn with_psk(mut self, identity: &str, file: &str) -> Result<Self, UsageError> {
        check::literal("--autoreg-psk-identity", identity)?;
        check::literal("--scale-psk-file", file)?;
        self.psk = Some((identity.to_string(), file.to_string()));
        Ok(self)
    }

    /// The command text of the script for `direction`.
    pub fn command(&self, direction: Direction) -> String {
        self.text(
            direction.word(),
            "--reason \"Zabbix event {EVENT.ID}: {TRIGGER.NAME}\"",
            "--cooldown \"{$SCALE_COOLDOWN}\" ",
            "{HOST.HOST}",
            "\"{$SERVICE_NAME}\" \"{?last(/{HOST.HOST}/service.containers.running)}\" \"{$SCALE_STEP}\"",
        )
    }

    /// The command text of the escalated scale-up: `times` x {$SCALE_STEP}.
    pub fn escalated_command(&self, times: u32) -> String {
        self.command(Direction::Up).replacen(
            " up --reason ",
            &format!(" up --step-times {times} --reason "),
            1,
        )
    }

    /// The command text of the heal script: back up to the count the last scaling decided.
    /// Its action runs it on the service host `service_host` (a checked host name) for a
    /// problem of one of the containers. There user macros are the service host's, but
    /// {HOST.HOST} is the trigger's, the container's: the reason names it with the problem, and
    /// the count goes to the service host by its literal name.
    pub fn heal_command(&self, service_host: &str) -> String {
        self.text(
            "heal",
            "--reason \"heal: Zabbix event {EVENT.ID}: {EVENT.NAME} on {HOST.HOST}\"",
            "",
            service_host,
            "\"{$SERVICE_NAME}\"",
        )
    }

    fn text(
        &self,
        word: &str,
        reason: &str,
        cooldown: &str,
        push_host: &str,
        positionals: &str,
    ) -> String {
        let log = if self.state_dir == "/" {
            "/scale.log".to_string()
        } else {
            format!("{}/scale.log", self.state_dir)
        };
        let tls = match &self.psk {
            Some((identity, file)) => format!(
                "--tls-connect psk --tls-psk-identity \"{identity}\" --tls-psk-file \"{file}\" "
            ),
            None => String::new(),
        };
        format!(
            "{cmd} {word} {reason} \
             -f \"{{$COMPOSE_FILE}}\" -p \"{{$COMPOSE_PROJECT}}\" \
             --min \"{{$SCALE_MIN}}\" --max \"{{$SCALE_MAX}}\" {cooldown}\
             --engine-timeout {timeout}s --state-dir \"{state}\" --human-log \"{log}\" \
             --zabbix-item {item} -z \"{server}\" -s \"{push_host}\" {tls}\
             -- {positionals}",
            cmd = self.scale_command,
            state = self.state_dir,
            server = self.zabbix_server,
            item = TARGET_ITEM,
            timeout = ENGINE_TIMEOUT_SECS,
        )
    }
}

/// The command text of the script "Concierge: retire NAME": `concierge-setup retire` for the
/// trigger that fired, limited to the service's container group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetireSettings {
    command: String,
    api: String,
    token_file: String,
    group: String,
}

impl RetireSettings {
    /// Check the literals: `command` unquoted (path characters only); the others inside
    /// double quotes.
    pub fn new(
        command: &str,
        api: &str,
        token_file: &str,
        group: &str,
    ) -> Result<Self, UsageError> {
        check::program("--retire-command", command)?;
        check::literal("--retire-api", api)?;
        check::literal("--retire-token-file", token_file)?;
        check::literal("--group", group)?;
        Ok(Self {
            command: command.to_string(),
            api: api.to_string(),
            token_file: token_file.to_string(),
            group: group.to_string(),
        })
    }

    /// The command text.
    pub fn command(&self) -> String {
        format!(
            "{} --api \"{}\" --token-file \"{}\" retire --trigger \"{{TRIGGER.ID}}\" --group \"{}\"",
            self.command, self.api, self.token_file, self.group
        )
    }
}

/// The name of service `service`'s retire script and action.
pub fn retire_name(service: &str) -> String {
    format!("Concierge: retire {service}")
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
             --max \"{$SCALE_MAX}\" --cooldown \"{$SCALE_COOLDOWN}\" --engine-timeout 25s \
             --state-dir \"/var/lib/concierge\" \
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
    fn escalation_and_heal_are_variants_of_the_same_command() {
        let s = settings();
        assert_eq!(
            s.escalated_command(2),
            s.command(Direction::Up)
                .replacen(" up --reason ", " up --step-times 2 --reason ", 1)
        );
        let heal = s.heal_command("web-service");
        assert_eq!(
            heal,
            "/usr/local/bin/concierge-scale heal --reason \"heal: Zabbix event {EVENT.ID}: \
             {EVENT.NAME} on {HOST.HOST}\" -f \"{$COMPOSE_FILE}\" -p \"{$COMPOSE_PROJECT}\" \
             --min \"{$SCALE_MIN}\" --max \"{$SCALE_MAX}\" --engine-timeout 25s \
             --state-dir \"/var/lib/concierge\" --human-log \"/var/lib/concierge/scale.log\" \
             --zabbix-item service.scale.target -z \"127.0.0.1\" -s \"web-service\" \
             -- \"{$SERVICE_NAME}\""
        );
        let mut inside = false;
        for c in heal.chars() {
            match c {
                '"' => inside = !inside,
                '{' | '$' => assert!(inside, "unquoted {c} in {heal}"),
                _ => {}
            }
        }
        assert!(!inside);
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
    fn with_a_psk_the_count_goes_over_psk() {
        let s = settings()
            .with_psk("fleet", "/etc/concierge/fleet.psk")
            .unwrap();
        let text = s.command(Direction::Up);
        assert!(
            text.contains(
                " -s \"{HOST.HOST}\" --tls-connect psk --tls-psk-identity \"fleet\" \
                 --tls-psk-file \"/etc/concierge/fleet.psk\" -- \"{$SERVICE_NAME}\""
            ),
            "{text}"
        );
        assert!(settings().with_psk("a\"b", "/f").is_err());
        assert!(settings().with_psk("a", "/f/$(id)").is_err());
    }

    #[test]
    fn the_retire_command_quotes_everything_but_the_program() {
        let r = RetireSettings::new(
            "/usr/bin/concierge-setup",
            "http://z/api_jsonrpc.php",
            "/etc/concierge/api.token",
            "Concierge/web",
        )
        .unwrap();
        assert_eq!(
            r.command(),
            "/usr/bin/concierge-setup --api \"http://z/api_jsonrpc.php\" --token-file \
             \"/etc/concierge/api.token\" retire --trigger \"{TRIGGER.ID}\" --group \"Concierge/web\""
        );
        assert!(RetireSettings::new("/bin/x", "http://z", "/t$x", "g").is_err());
        assert!(RetireSettings::new("/bin/x", "http://z", "/t", "g\"; id").is_err());
    }

    #[test]
    fn the_root_state_dir_keeps_one_slash() {
        let s = ScriptSettings::new("scale", "/", "z").unwrap();
        assert!(s
            .command(Direction::Up)
            .contains("--state-dir \"/\" --human-log \"/scale.log\""));
    }
}
