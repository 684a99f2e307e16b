//! concierge-discover: parse the command line, run, print the LLD document.

use std::process::ExitCode;
use std::time::Instant;

use concierge_core::outcome::{self, Contract};
use concierge_discover::{run, Cli, TOOL};

fn main() -> ExitCode {
    let started = Instant::now();
    let cli: Cli = outcome::parse_args(TOOL, Contract::Document);
    outcome::finish(
        TOOL,
        Contract::Document,
        || started.elapsed(),
        run(&cli, started),
    )
}
