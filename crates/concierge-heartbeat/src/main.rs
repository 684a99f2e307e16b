//! concierge-heartbeat: parse the command line, run, report.

use std::process::ExitCode;
use std::time::Instant;

use concierge_core::outcome::{self, Contract};
use concierge_heartbeat::{run, Cli, TOOL};

fn main() -> ExitCode {
    let started = Instant::now();
    let value_line = Contract::ValueLine { started };
    let cli: Cli = match outcome::parse_args(TOOL, value_line) {
        Ok(cli) => cli,
        Err(exit) => return exit,
    };
    // The coprocess prints nothing on stdout: it tells its story on stderr.
    let contract = if cli.is_coprocess() {
        Contract::Document
    } else {
        value_line
    };
    outcome::finish(TOOL, contract, run(&cli, started))
}
