//! concierge-discover: parse the command line, run, print the LLD document.

use std::process::ExitCode;
use std::time::Instant;

use concierge_core::outcome::{self, Contract};
use concierge_discover::{run, Cli, TOOL};

fn main() -> ExitCode {
    let started = Instant::now();
    let cli: Cli = match outcome::parse_args(TOOL, Contract::Document) {
        Ok(cli) => cli,
        Err(exit) => return exit,
    };
    outcome::finish(TOOL, Contract::Document, run(&cli, started))
}
