//! concierge-scale: parse the command line, decide and scale, print the new count.
//!
//! A Zabbix action calls it with the talk's arguments (action, service, current scale,
//! increment); see `--help` for the options, the files it keeps and the exit statuses.

use std::process::ExitCode;

use concierge_core::outcome::{self, Contract};
use concierge_scale::{finish, run, Cli, TOOL};

fn main() -> ExitCode {
    // Usage errors print one line and exit 1 (never clap's 2, which means "partial" here).
    let cli: Cli = outcome::parse_args(TOOL, Contract::Document);
    finish(run(&cli))
}
