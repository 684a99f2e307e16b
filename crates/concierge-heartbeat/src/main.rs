//! concierge-heartbeat: parse the command line, run, report.

use std::process::ExitCode;
use std::time::Instant;

use concierge_core::outcome::{self, Contract};
use concierge_heartbeat::{run, Cli, TOOL};

fn main() -> ExitCode {
    let started = Instant::now();
    let cli: Cli = outcome::parse_args(TOOL, Contract::ValueLine);
    let contract = if cli.is_coprocess() {
        Contract::Document
    } else {
        Contract::ValueLine
    };
    outcome::finish(TOOL, contract, || started.elapsed(), run(&cli, started))
}
