//! What every tool's `--version` says: the release, the git revision it was built from, and
//! the Zabbix versions whose protocols the tests run against (the lab's 6.0 and 7.0).

/// The Zabbix versions the end-to-end tests run the tools against.
pub const TESTED_ZABBIX: [&str; 2] = ["6.0", "7.0"];

macro_rules! short {
    () => {
        concat!(
            env!("CARGO_PKG_VERSION"),
            " (git ",
            env!("CONCIERGE_GIT_REVISION"),
            ")"
        )
    };
}

/// `-V`: `0.1.0 (git 9f31b17a2c4d)`; `git unknown` when built outside a checkout without
/// CONCIERGE_GIT_REVISION.
pub const SHORT: &str = short!();

/// `--version`: [`SHORT`] and the Zabbix versions tested.
pub const LONG: &str = concat!(
    short!(),
    "\nZabbix protocols tested: 6.0 and 7.0 (sender/trapper, active checks, JSON-RPC API)"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_every_tested_version() {
        assert!(LONG.starts_with(SHORT));
        for v in TESTED_ZABBIX {
            assert!(LONG.contains(v), "{v}");
        }
        assert!(SHORT.starts_with(env!("CARGO_PKG_VERSION")));
    }
}
