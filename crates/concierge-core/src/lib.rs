//! Concierge core: everything the Concierge tools share.
//!
//! The tools (`concierge-discover`, `concierge-courier`, `concierge-heartbeat`,
//! `concierge-scale`, `concierge-setup`) are thin: they parse arguments and call into this
//! crate, which owns the Zabbix protocol, item keys, low-level discovery, the agent
//! configuration, metric sources and the single mapping from errors to exit statuses and
//! failure codes ([`outcome`]).

pub mod agent_config;
pub mod cli;
pub mod deadline;
pub mod metrics;
pub mod outcome;
pub mod scaling;
pub mod signals;
pub mod source;
pub mod spool;
pub mod system;
pub mod text;
pub mod tls;
pub mod version;
pub mod zabbix;
