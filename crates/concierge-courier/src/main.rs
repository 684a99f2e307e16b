//! concierge-courier: parse the command line, run, report one value line.

use std::process::ExitCode;
use std::time::Instant;

use concierge_core::outcome::{self, Contract};
use concierge_courier::{run, Cli, TOOL};

fn main() -> ExitCode {
    let started = Instant::now();
    let cli: Cli = outcome::parse_args(TOOL, Contract::ValueLine);
    let contract = if cli.writes_lines() {
        Contract::Document
    } else {
        Contract::ValueLine
    };
    outcome::finish(TOOL, contract, || started.elapsed(), run(&cli, started))
}
