//! The Zabbix version the API reports (`apiinfo.version`), and the differences between 6.0 and
//! 7.0 that setup follows.

use crate::SetupError;

/// `major.minor` of the server's frontend/API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ZabbixVersion {
    /// 6 or 7.
    pub major: u32,
    /// 0, 2, 4.
    pub minor: u32,
}

impl ZabbixVersion {
    /// 6.0.
    pub const V6_0: ZabbixVersion = ZabbixVersion { major: 6, minor: 0 };
    /// 7.0.
    pub const V7_0: ZabbixVersion = ZabbixVersion { major: 7, minor: 0 };

    /// Parse `7.0.22` (or `7.0`).
    pub fn parse(text: &str) -> Result<Self, SetupError> {
        let mut parts = text.trim().split('.');
        let mut number = || parts.next().and_then(|p| p.parse::<u32>().ok());
        match (number(), number()) {
            (Some(major), Some(minor)) => Ok(ZabbixVersion { major, minor }),
            _ => Err(SetupError(format!(
                "apiinfo.version returned {text:?}, not a Zabbix version"
            ))),
        }
    }

    /// 6.2 split host groups from template groups: the import rules `host_groups` and
    /// `template_groups` replace `groups`, and host.get's `selectHostGroups` replaces
    /// `selectGroups`.
    pub fn splits_groups(self) -> bool {
        self >= ZabbixVersion { major: 6, minor: 2 }
    }

    /// 7.0 gave agent items a timeout of their own (1-600 s), which its export format carries:
    /// the app template has a 7.0 file for it.
    pub fn has_item_timeouts(self) -> bool {
        self >= Self::V7_0
    }
}

impl std::fmt::Display for ZabbixVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(ZabbixVersion::parse("7.0.22").unwrap(), ZabbixVersion::V7_0);
        assert_eq!(ZabbixVersion::parse("6.0.14").unwrap(), ZabbixVersion::V6_0);
        assert_eq!(ZabbixVersion::parse("6.4").unwrap().to_string(), "6.4");
        assert!(ZabbixVersion::parse("junk").is_err());
        assert!(ZabbixVersion::parse("7").is_err());
        assert!(!ZabbixVersion::V6_0.splits_groups());
        assert!(ZabbixVersion::parse("6.2.0").unwrap().splits_groups());
        assert!(ZabbixVersion::V7_0.splits_groups());
        assert!(!ZabbixVersion::parse("6.4.9").unwrap().has_item_timeouts());
        assert!(ZabbixVersion::V7_0.has_item_timeouts());
        assert!(ZabbixVersion::parse("7.4.1").unwrap().has_item_timeouts());
    }
}
