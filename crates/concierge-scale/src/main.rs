//! concierge-scale: parse the command line, decide and scale, print the new count.
//!
//! A Zabbix action calls it with the talk's arguments (action, service, current scale,
//! increment); see `--help` for the options, the files it keeps and the exit statuses.

use std::process::ExitCode;

use concierge_core::outcome::{self, Contract};
use concierge_scale::{run, Cli, TOOL};

fn main() -> ExitCode {
    let cli: Cli = match outcome::parse_args(TOOL, Contract::Document) {
        Ok(cli) => cli,
        Err(exit) => return exit,
    };
    outcome::finish(TOOL, Contract::Document, run(&cli))
}
