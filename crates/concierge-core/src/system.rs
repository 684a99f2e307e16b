//! Facts about the machine the tools run on.

use std::fs;

/// The system host name (`/proc/sys/kernel/hostname`, then `$HOSTNAME`), the agent's
/// fallback when `Hostname` is not configured.
pub fn hostname() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
}

/// True when `name` is a valid Zabbix host technical name: 1-128 of `[0-9A-Za-z ._-]`.
pub fn is_valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert!(is_valid_host_name("concierge-lab"));
        assert!(is_valid_host_name("My host_1.x"));
        assert!(!is_valid_host_name(""));
        assert!(!is_valid_host_name("a/b"));
        assert!(!is_valid_host_name(&"a".repeat(129)));
        assert!(hostname().is_some());
    }
}
