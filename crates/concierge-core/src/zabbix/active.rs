//! The active-checks request: how an agent announces itself, and what makes the server run its
//! autoregistration actions for a host it does not know (zabbix-reference.md §9). The tools use
//! it to register a container without running an agent, and to tell why values were refused.

use std::fmt;

use super::destination::Destination;
use super::frame;
use super::route::{self, RedirectError, Route};
use super::sender::{self, DeliveryError, Refusal, SendError};
use super::transport::{ConnectOptions, TransportError};
use crate::deadline::Deadline;
use crate::text;

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

/// Announce `who` along one destination's route (HA nodes in order, a proxy group's redirect
/// followed) inside the deadline.
pub fn announce(
    route: &mut Route,
    who: &Announcement,
    deadline: &Deadline,
    opts: &ConnectOptions,
) -> Result<Registration, SendError> {
    let message = frame::encode(&who.request(), false)
        .map_err(|e| SendError::Transport(TransportError::Request(e.to_string())))?;
    let answer = route::exchange(route, &who.host, &message, deadline, opts)?;
    interpret(&answer.endpoint.to_string(), &answer.payload, &who.host)
}

/// Say why Zabbix refused every value of a delivery for `host`. The sender reply only counts
/// values, so this asks the first destination that answered an active-checks request for the
/// host: `host [X] not found` means an unknown host (or one a proxy monitors), success means
/// the host is known and its items are missing. One try, inside `deadline`; an error other
/// than such a partial delivery, or one where some values were taken, is returned as it is.
///
/// For an unknown host the server also records an autoregistration event, as for any agent
/// that asks: an action without conditions would create the host.
pub fn explain(
    error: DeliveryError,
    host: &str,
    destinations: &[Destination],
    deadline: &Deadline,
    opts: &ConnectOptions,
) -> DeliveryError {
    match error {
        DeliveryError::Partial {
            summary,
            failed_destinations,
            why,
        } if *why == Refusal::Unexplained && summary.failed > 0 && summary.processed == 0 => {
            let why = ask_about(host, destinations, &failed_destinations, deadline, opts);
            DeliveryError::Partial {
                summary,
                failed_destinations,
                why: Box::new(why),
            }
        }
        other => other,
    }
}

fn ask_about(
    host: &str,
    destinations: &[Destination],
    failed: &[(String, SendError)],
    deadline: &Deadline,
    opts: &ConnectOptions,
) -> Refusal {
    let Some(server) = destinations
        .iter()
        .find(|d| !failed.iter().any(|(name, _)| *name == d.to_string()))
    else {
        return Refusal::Unexplained;
    };
    if deadline.expired() {
        return Refusal::Unknown {
            why: "the deadline has passed".into(),
        };
    }
    let question = Announcement {
        host: host.to_string(),
        metadata: None,
        interface: None,
    };
    let once = ConnectOptions {
        max_rounds: Some(1),
        ..opts.clone()
    };
    match announce(&mut Route::new(server), &question, deadline, &once) {
        Ok(Registration::Known) => Refusal::ItemsMissing {
            host: host.to_string(),
        },
        Ok(Registration::Requested) => Refusal::UnknownHost {
            host: host.to_string(),
            server: server.to_string(),
        },
        Err(SendError::ConnectionType { info, .. }) => Refusal::ConnectionType {
            host: host.to_string(),
            server: server.to_string(),
            info,
        },
        Err(SendError::Refused { info, .. }) => Refusal::Host {
            host: host.to_string(),
            server: server.to_string(),
            info,
        },
        Err(SendError::Redirect(RedirectError::NotHere { info, .. })) => Refusal::Elsewhere {
            host: host.to_string(),
            server: server.to_string(),
            info,
        },
        Err(e) => Refusal::Unknown { why: e.to_string() },
    }
}

fn interpret(endpoint: &str, payload: &[u8], host: &str) -> Result<Registration, SendError> {
    let v: serde_json::Value = serde_json::from_slice(payload).map_err(|_| {
        SendError::Transport(TransportError::Protocol {
            endpoint: endpoint.to_string(),
            detail: format!(
                "not a Zabbix reply ({} bytes): {:?}",
                payload.len(),
                text::shown(&text::lossy(payload))
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
        "failed" if sender::is_connection_type_refusal(info) => Err(SendError::ConnectionType {
            endpoint: endpoint.to_string(),
            info: info.to_string(),
        }),
        _ => Err(SendError::Refused {
            endpoint: endpoint.to_string(),
            info: if info.is_empty() {
                format!("unexpected reply {}", text::shown(&v.to_string()))
            } else {
                info.to_string()
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Classify;

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
        let plain = interpret(
            "e",
            br#"{"response":"failed","info":"connection of type \"unencrypted\" is not allowed for host \"h\""}"#,
            "h",
        )
        .unwrap_err();
        assert_eq!(
            plain.failure(),
            crate::outcome::Failure::ConnectionTypeRefused
        );
        assert!(
            plain
                .to_string()
                .contains("the server refused an unencrypted connection for this host"),
            "{plain}"
        );
    }
}
