//! concierge-setup: import the Concierge templates and wire a service into Zabbix.
//!
//! Prints one line per object (`created|updated|unchanged <kind> <name> (<id>)`); errors go
//! to stderr as one line, with exit status 1.

use std::process::ExitCode;

use concierge_core::outcome::{self, Contract};
use concierge_setup::{run, Cli, TOOL};

fn main() -> ExitCode {
    let cli: Cli = match outcome::parse_args(TOOL, Contract::Document) {
        Ok(cli) => cli,
        Err(exit) => return exit,
    };
    outcome::finish(TOOL, Contract::Document, run(&cli))
}
