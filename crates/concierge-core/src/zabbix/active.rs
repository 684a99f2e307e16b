//! The active-checks request: how an agent announces itself, and what makes the server run its
//! autoregistration actions for a host it does not know (zabbix-reference.md §9). The tools use
//! it to register a container without running an agent.

use std::fmt;

use super::destination::Destination;
use super::frame;
use super::sender::SendError;
use super::transport::{self, ConnectOptions, TransportError};
use crate::deadline::Deadline;

/// What an agent sends to ask for its active checks; the server matches autoregistration
/// actions on `host` and `host_metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The host's technical name.
    pub host: String,
    /// Free text an autoregistration action matches (at most 255 characters).
    pub metadata: Option<String>,
    /// IP or DNS name for the host's agent interface; the server uses the peer address without.
    pub interface: Option<String>,
}

/// The most characters of host metadata Zabbix accepts.
pub const MAX_METADATA_CHARS: usize = 255;

impl Announcement {
    /// The JSON request body.
    pub fn request(&self) -> Vec<u8> {
        let mut m = serde_json::Map::new();
        m.insert("request".into(), "active checks".into());
        m.insert("host".into(), self.host.clone().into());
        if let Some(md) = &self.metadata {
            m.insert("host_metadata".into(), md.clone().into());
        }
        if let Some(i) = &self.interface {
            m.insert("interface".into(), i.clone().into());
        }
        serde_json::Value::Object(m).to_string().into_bytes()
    }
}

/// How a server answered an announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// The server knows the host (it may have re-registered it if its metadata changed).
    Known,
    /// The server does not know the host yet: it has recorded an autoregistration event, and
    /// its actions will create the host within a few seconds if they match.
    Requested,
}

impl fmt::Display for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Registration::Known => "host known",
            Registration::Requested => "registration requested",
        })
    }
}

/// Announce `who` to one destination (HA nodes in order) inside the deadline.
pub fn announce(
    destination: &Destination,
    who: &Announcement,
    deadline: &Deadline,
    opts: &ConnectOptions,
) -> Result<Registration, SendError> {
    let message = frame::encode(&who.request(), false)
        .map_err(|e| SendError::Transport(TransportError::Request(e.to_string())))?;
    let mut node = 0;
    let payload =
        transport::exchange_with_cluster(destination, &mut node, &message, deadline, opts)
            .map_err(SendError::Transport)?;
    let endpoint = destination.nodes[node].to_string();
    interpret(&endpoint, &payload, &who.host)
}

fn interpret(endpoint: &str, payload: &[u8], host: &str) -> Result<Registration, SendError> {
    let v: serde_json::Value = serde_json::from_slice(payload).map_err(|_| {
        SendError::Transport(TransportError::Protocol {
            endpoint: endpoint.to_string(),
            detail: format!(
                "not a Zabbix reply: {:?}",
                String::from_utf8_lossy(&payload[..payload.len().min(80)])
            ),
        })
    })?;
    let response = v.get("response").and_then(|r| r.as_str()).unwrap_or("");
    let info = v.get("info").and_then(|r| r.as_str()).unwrap_or("");
    match response {
        "success" => Ok(Registration::Known),
        "failed" if info.contains("not found") && info.contains(host) => {
            Ok(Registration::Requested)
        }
        _ => Err(SendError::Refused {
            endpoint: endpoint.to_string(),
            info: if info.is_empty() {
                format!("unexpected reply {v}")
            } else {
                info.to_string()
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_only_what_is_set() {
        let a = Announcement {
            host: "web-1".into(),
            metadata: Some("concierge app=shop".into()),
            interface: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&a.request()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"request":"active checks","host":"web-1","host_metadata":"concierge app=shop"})
        );
    }

    #[test]
    fn replies() {
        assert_eq!(
            interpret("e", br#"{"response":"success","data":[]}"#, "h").unwrap(),
            Registration::Known
        );
        assert_eq!(
            interpret(
                "e",
                br#"{"response":"failed","info":"host [h] not found"}"#,
                "h"
            )
            .unwrap(),
            Registration::Requested
        );
        assert!(matches!(
            interpret(
                "e",
                br#"{"response":"failed","info":"host [h] not monitored"}"#,
                "h"
            ),
            Err(SendError::Refused { .. })
        ));
        assert!(interpret("e", b"garbage", "h").is_err());
    }
}
