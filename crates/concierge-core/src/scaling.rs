//! The contract between concierge-setup, which writes the scripts a Zabbix action runs, and
//! concierge-scale, which those scripts run: values both must agree on, kept in one place.

/// Largest count, step or bound either tool accepts: anything bigger is a typo, not a plan.
pub const MAX_COUNT: u32 = 1_000_000;

/// Where concierge-scale keeps its locks, cooldown state and logs unless told otherwise.
pub const STATE_DIR: &str = "/var/lib/concierge";

/// The environment variable that moves the state directory.
pub const STATE_DIR_ENV: &str = "CONCIERGE_STATE_DIR";

/// The trapper item of template "Concierge service" that gets the count after a scaling.
pub const TARGET_ITEM: &str = "service.scale.target";

/// concierge-scale's default `--engine-timeout`, in seconds: one budget for all the engine
/// commands of a call and the lock wait. With the Zabbix push (its own 2.5 s) a call ends
/// within 28 s, inside a server `Timeout` of 30 (6.0's largest) and 7.0's default script
/// timeout of 30 s, so the server never kills a call mid-scaling.
pub const ENGINE_TIMEOUT_SECS: u64 = 25;
