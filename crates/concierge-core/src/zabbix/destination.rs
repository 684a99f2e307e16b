//! Where values go: the agent's `ServerActive` list semantics.
//!
//! `a:10051;b:10051,c` is two destinations: the HA cluster `a`/`b` (nodes tried in order until
//! one answers) and the independent server `c`. Every destination gets all the data.

use std::fmt;

use crate::outcome::{Classify, Failure};
use crate::text::shown;

/// The default Zabbix trapper port.
pub const DEFAULT_PORT: u16 = 10051;

/// One server or proxy address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One independent destination: a single server, or the nodes of one HA cluster in the order
/// they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub nodes: Vec<Endpoint>,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.nodes.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

/// A malformed destination list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationError {
    pub entry: String,
    pub reason: &'static str,
}

impl fmt::Display for DestinationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid Zabbix address {:?}: {}",
            shown(&self.entry),
            self.reason
        )
    }
}

impl std::error::Error for DestinationError {}

impl Classify for DestinationError {
    fn failure(&self) -> Failure {
        Failure::Usage
    }
}

/// Parse a `ServerActive`-style list. Entries are `host`, `host:port`, `[v6]`, `[v6]:port` or
/// a bare IPv6 address; `default_port` applies where no port is written.
pub fn parse_list(list: &str, default_port: u16) -> Result<Vec<Destination>, DestinationError> {
    let mut out = Vec::new();
    for dest in list.split(',') {
        let dest = dest.trim();
        if dest.is_empty() {
            return Err(DestinationError {
                entry: list.to_string(),
                reason: "empty entry",
            });
        }
        let nodes = dest
            .split(';')
            .map(|n| parse_endpoint(n.trim(), default_port))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Destination { nodes });
    }
    Ok(out)
}

/// Parse one `host[:port]` entry.
pub fn parse_endpoint(entry: &str, default_port: u16) -> Result<Endpoint, DestinationError> {
    let err = |reason| DestinationError {
        entry: entry.to_string(),
        reason,
    };
    if entry.is_empty() {
        return Err(err("empty entry"));
    }
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(err("missing ']'"))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or(err("junk after ']'"))?),
            ),
        }
    } else if entry.matches(':').count() > 1 {
        (entry, None) // a bare IPv6 address: no port possible without brackets
    } else if let Some((h, p)) = entry.split_once(':') {
        (h, Some(p))
    } else {
        (entry, None)
    };
    if host.is_empty() {
        return Err(err("empty host"));
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(err("host contains a space or '/'"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(err("port must be 1-65535")),
            Ok(p) => p,
        },
    };
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(h: &str, p: u16) -> Endpoint {
        Endpoint {
            host: h.into(),
            port: p,
        }
    }

    #[test]
    fn commas_split_destinations_semicolons_split_cluster_nodes() {
        let d = parse_list("a:10051;b:20051, c", 10051).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].nodes, vec![ep("a", 10051), ep("b", 20051)]);
        assert_eq!(d[1].nodes, vec![ep("c", 10051)]);
        assert_eq!(d[0].to_string(), "a:10051;b:20051");
    }

    #[test]
    fn ipv6_forms() {
        assert_eq!(parse_endpoint("[::1]:1234", 1).unwrap(), ep("::1", 1234));
        assert_eq!(parse_endpoint("[::1]", 7).unwrap(), ep("::1", 7));
        assert_eq!(parse_endpoint("::1", 7).unwrap(), ep("::1", 7));
        assert_eq!(ep("::1", 7).to_string(), "[::1]:7");
    }

    #[test]
    fn default_port_applies_only_where_none_is_written() {
        let d = parse_list("127.0.0.1,127.0.0.1:9", 30051).unwrap();
        assert_eq!(d[0].nodes[0].port, 30051);
        assert_eq!(d[1].nodes[0].port, 9);
    }

    #[test]
    fn rejects_malformed_entries() {
        for bad in [
            "", "a,,b", "a:", "a:0", "a:99999", "a:x", "[::1", "[::1]x", ":10051", "a b",
        ] {
            assert!(parse_list(bad, 10051).is_err(), "{bad:?} should be refused");
        }
    }
}
