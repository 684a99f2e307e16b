//! concierge-courier: parse the command line, run, report one value line.

use std::process::ExitCode;
use std::time::Instant;

use concierge_core::outcome::{self, Contract};
use concierge_courier::{run, Cli, TOOL};

fn main() -> ExitCode {
    let started = Instant::now();
    let value_line = Contract::ValueLine { started };
    let cli: Cli = match outcome::parse_args(TOOL, value_line) {
        Ok(cli) => cli,
        Err(exit) => return exit,
    };
    // A dry run's stdout carries the input lines instead of the value line.
    let contract = if cli.writes_lines() {
        Contract::Document
    } else {
        value_line
    };
    outcome::finish(TOOL, contract, run(&cli, started))
}
