//! The "sender data" request: values for trapper items, delivered in one shot to every
//! destination, with the reply's processed / failed / total counts (zabbix-reference.md §2).

use std::fmt;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use super::destination::{Destination, Endpoint};
use super::frame::MessageBuf;
use super::transport::{self, ConnectOptions, TransportError};
use crate::deadline::Deadline;

/// One value for one trapper item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The host's technical name.
    pub host: String,
    /// The item key, byte-exact.
    pub key: String,
    /// The value as text; numbers formatted as Zabbix stores them.
    pub value: String,
    /// When the value was collected; `None` lets the server stamp it on receipt.
    pub clock: Option<Timestamp>,
}

/// Seconds and nanoseconds since the epoch, as the protocol carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub clock: u32,
    /// `None`: the server adds a growing offset so values in one request stay unique.
    pub ns: Option<u32>,
}

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            clock: d.as_secs().min(u64::from(u32::MAX >> 1)) as u32,
            ns: Some(d.subsec_nanos()),
        }
    }
}

/// The counts a server reports for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub processed: u64,
    pub failed: u64,
    pub total: u64,
    /// The server's own processing time, the floor of any delivery.
    pub seconds_spent: f64,
}

impl Summary {
    fn add(&mut self, other: &Summary) {
        self.processed += other.processed;
        self.failed += other.failed;
        self.total += other.total;
        self.seconds_spent += other.seconds_spent;
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "processed: {}; failed: {}; total: {}; seconds spent: {:.6}",
            self.processed, self.failed, self.total, self.seconds_spent
        )
    }
}

/// What went wrong delivering to one destination.
#[derive(Debug)]
pub enum SendError {
    /// The connection or the reply failed.
    Transport(TransportError),
    /// The server answered `"response":"failed"` (bad JSON, shutting down…).
    Refused { endpoint: String, info: String },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Transport(e) => e.fmt(f),
            SendError::Refused { endpoint, info } => {
                write!(f, "Zabbix at {endpoint} refused the request: {info}")
            }
        }
    }
}

impl std::error::Error for SendError {}

/// Write the "sender data" JSON for `values` into `out`.
pub fn write_request(out: &mut Vec<u8>, values: &[Value], now: Timestamp) {
    out.extend_from_slice(br#"{"request":"sender data","data":["#);
    let mut last_host: Option<(&str, Vec<u8>)> = None;
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"host":"#);
        // Every value of a run usually names the same host: escape it once.
        match &last_host {
            Some((h, esc)) if *h == v.host => out.extend_from_slice(esc),
            _ => {
                let mut esc = Vec::with_capacity(v.host.len() + 2);
                json_string(&mut esc, &v.host);
                out.extend_from_slice(&esc);
                last_host = Some((&v.host, esc));
            }
        }
        out.extend_from_slice(br#","key":"#);
        json_string(out, &v.key);
        out.extend_from_slice(br#","value":"#);
        json_string(out, &v.value);
        if let Some(ts) = v.clock {
            let _ = write!(out, r#","clock":{}"#, ts.clock);
            if let Some(ns) = ts.ns {
                let _ = write!(out, r#","ns":{ns}"#);
            }
        }
        out.push(b'}');
    }
    let _ = write!(
        out,
        r#"],"clock":{},"ns":{}}}"#,
        now.clock,
        now.ns.unwrap_or(0)
    );
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping is correct for every input; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The parsed reply to a "sender data" (or "agent data") request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// `"success"` or `"failed"`.
    pub response: String,
    /// The free text, e.g. `processed: 1; failed: 0; total: 1; seconds spent: 0.000055`.
    pub info: String,
}

impl Reply {
    /// Parse a reply payload; `None` when it is not the JSON object a server sends.
    pub fn parse(payload: &[u8]) -> Option<Reply> {
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let response = v.get("response")?.as_str()?.to_string();
        let info = v
            .get("info")
            .and_then(|i| i.as_str())
            .unwrap_or_default()
            .to_string();
        Some(Reply { response, info })
    }

    /// The counts in `info`, read tolerantly (field order and spacing may vary).
    pub fn summary(&self) -> Option<Summary> {
        Some(Summary {
            processed: info_field(&self.info, "processed")?.parse().ok()?,
            failed: info_field(&self.info, "failed")?.parse().ok()?,
            total: info_field(&self.info, "total")?.parse().ok()?,
            seconds_spent: info_field(&self.info, "seconds spent")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.0),
        })
    }
}

fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.split(';').find_map(|part| {
        let (k, v) = part.split_once(':')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim())
    })
}

/// How a batch of values is sent.
#[derive(Debug, Clone, Default)]
pub struct SenderOptions {
    pub connect: ConnectOptions,
    /// zlib-compress requests (the server answers in kind).
    pub compress: bool,
    /// Values per request; `None` sends everything in one request ("no windowing").
    pub chunk_size: Option<usize>,
}

/// The result of delivering to one destination.
#[derive(Debug)]
pub struct DestinationReport {
    pub destination: Destination,
    /// The node that answered last.
    pub answered_by: Option<Endpoint>,
    /// The counts added up over the requests that were answered.
    pub summary: Summary,
    /// Requests answered out of requests to send.
    pub requests_answered: usize,
    pub requests: usize,
    /// Why delivery stopped early, if it did; later chunks are not sent after a failure.
    pub error: Option<SendError>,
}

/// The result of delivering one batch to every destination.
#[derive(Debug)]
pub struct Delivery {
    pub reports: Vec<DestinationReport>,
}

/// How a delivery ended, from the caller's point of view.
#[derive(Debug)]
pub enum DeliveryError {
    /// Every destination answered, but the server refused some values (unknown host or key,
    /// not a trapper item…), or some destinations failed while others took the data.
    Partial {
        summary: Summary,
        failed_destinations: Vec<(String, SendError)>,
    },
    /// No destination took anything: the first destination's error.
    Failed(SendError),
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Partial {
                summary,
                failed_destinations,
            } => {
                write!(
                    f,
                    "Zabbix refused {} of {} values ({summary})",
                    summary.failed, summary.total
                )?;
                for (d, e) in failed_destinations {
                    write!(f, "; {d}: {e}")?;
                }
                Ok(())
            }
            DeliveryError::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DeliveryError {}

impl Delivery {
    /// The combined summary of every destination that answered.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for r in &self.reports {
            s.add(&r.summary);
        }
        s
    }

    /// `Ok` when every value reached every destination and was processed.
    pub fn into_result(self) -> Result<Summary, DeliveryError> {
        let summary = self.summary();
        let answered = self.reports.iter().any(|r| r.requests_answered > 0);
        let mut failed = Vec::new();
        for r in self.reports {
            if let Some(e) = r.error {
                failed.push((r.destination.to_string(), e));
            }
        }
        if !answered && !failed.is_empty() {
            let (_, first) = failed.swap_remove(0);
            return Err(DeliveryError::Failed(first));
        }
        if summary.failed > 0 || !failed.is_empty() {
            return Err(DeliveryError::Partial {
                summary,
                failed_destinations: failed,
            });
        }
        Ok(summary)
    }
}

/// Deliver `values` to every destination, each destination in its own thread so a stalled
/// one cannot starve the others; all inside `deadline`.
pub fn send(
    destinations: &[Destination],
    values: &[Value],
    deadline: &Deadline,
    opts: &SenderOptions,
) -> Result<Delivery, TransportError> {
    let now = Timestamp::now();
    let chunk = opts.chunk_size.unwrap_or(usize::MAX).max(1);
    let mut messages = Vec::new();
    for part in values.chunks(chunk) {
        // ~85 bytes per value for the JSON of a typical timer statistic.
        let mut m = MessageBuf::with_capacity(64 + part.len() * 96);
        write_request(m.payload_mut(), part, now);
        messages.push(
            m.seal(opts.compress)
                .map_err(|e| TransportError::Request(e.to_string()))?,
        );
    }
    let reports = if destinations.len() == 1 {
        vec![deliver(&destinations[0], &messages, deadline, opts)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = destinations
                .iter()
                .map(|d| s.spawn(|| deliver(d, &messages, deadline, opts)))
                .collect();
            handles
                .into_iter()
                .zip(destinations)
                .map(|(h, d)| {
                    h.join().unwrap_or_else(|_| DestinationReport {
                        destination: d.clone(),
                        answered_by: None,
                        summary: Summary::default(),
                        requests_answered: 0,
                        requests: messages.len(),
                        error: Some(SendError::Transport(TransportError::Request(
                            "sender thread failed".into(),
                        ))),
                    })
                })
                .collect()
        })
    };
    Ok(Delivery { reports })
}

fn deliver(
    destination: &Destination,
    messages: &[Vec<u8>],
    deadline: &Deadline,
    opts: &SenderOptions,
) -> DestinationReport {
    let mut report = DestinationReport {
        destination: destination.clone(),
        answered_by: None,
        summary: Summary::default(),
        requests_answered: 0,
        requests: messages.len(),
        error: None,
    };
    let mut preferred = 0;
    for message in messages {
        let result = transport::exchange_with_cluster(
            destination,
            &mut preferred,
            message,
            deadline,
            &opts.connect,
        );
        let endpoint = destination.nodes[preferred].clone();
        let outcome = result
            .map_err(SendError::Transport)
            .and_then(|payload| interpret(&endpoint, &payload));
        match outcome {
            Ok(summary) => {
                report.summary.add(&summary);
                report.requests_answered += 1;
                report.answered_by = Some(endpoint);
            }
            Err(e) => {
                report.error = Some(e);
                break;
            }
        }
    }
    report
}

fn interpret(endpoint: &Endpoint, payload: &[u8]) -> Result<Summary, SendError> {
    let protocol = |detail: String| {
        SendError::Transport(TransportError::Protocol {
            endpoint: endpoint.to_string(),
            detail,
        })
    };
    let reply = Reply::parse(payload).ok_or_else(|| {
        protocol(format!(
            "not a Zabbix reply: {:?}",
            String::from_utf8_lossy(&payload[..payload.len().min(80)])
        ))
    })?;
    if reply.response != "success" {
        return Err(SendError::Refused {
            endpoint: endpoint.to_string(),
            info: if reply.info.is_empty() {
                reply.response
            } else {
                reply.info
            },
        });
    }
    reply.summary().ok_or_else(|| {
        protocol(format!(
            "reply lacks the processed/failed counts: {:?}",
            reply.info
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(host: &str, key: &str, value: &str) -> Value {
        Value {
            host: host.into(),
            key: key.into(),
            value: value.into(),
            clock: None,
        }
    }

    #[test]
    fn request_matches_zabbix_sender_shape() {
        let mut out = Vec::new();
        let now = Timestamp {
            clock: 1795529729,
            ns: Some(715184407),
        };
        let mut vals = vec![v("concierge-lab", "container.state", "1")];
        vals.push(Value {
            clock: Some(Timestamp {
                clock: 1795530000,
                ns: Some(5),
            }),
            ..v("concierge-lab", r#"timer["a,b.p95"]"#, "0.5")
        });
        write_request(&mut out, &vals, now);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"request":"sender data","data":[{"host":"concierge-lab","key":"container.state","value":"1"},{"host":"concierge-lab","key":"timer[\"a,b.p95\"]","value":"0.5","clock":1795530000,"ns":5}],"clock":1795529729,"ns":715184407}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["data"][1]["key"], r#"timer["a,b.p95"]"#);
    }

    #[test]
    fn host_escaping_is_cached_but_correct_when_hosts_change() {
        let mut out = Vec::new();
        let vals = [v("a\"x", "k", "1"), v("a\"x", "k", "2"), v("b", "k", "3")];
        write_request(&mut out, &vals, Timestamp::now());
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let hosts: Vec<_> = parsed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["host"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(hosts, ["a\"x", "a\"x", "b"]);
    }

    #[test]
    fn parses_replies_tolerantly() {
        let r = Reply::parse(
            br#"{"response":"success","info":"processed: 22; failed: 228; total: 250; seconds spent: 0.001154"}"#,
        )
        .unwrap();
        assert_eq!(
            r.summary().unwrap(),
            Summary {
                processed: 22,
                failed: 228,
                total: 250,
                seconds_spent: 0.001154
            }
        );
        let odd = Reply {
            response: "success".into(),
            info: "total:3 ;processed:2;failed: 1".into(),
        };
        assert_eq!(odd.summary().unwrap().failed, 1);
        assert!(Reply::parse(b"not json").is_none());
        assert!(Reply::parse(br#"{"info":"x"}"#).is_none());
        assert!(Reply {
            response: "success".into(),
            info: "ok".into()
        }
        .summary()
        .is_none());
    }

    #[test]
    fn delivery_verdicts() {
        let dest = super::super::destination::parse_list("127.0.0.1", 1).unwrap();
        let report = |failed, err: Option<SendError>, answered| DestinationReport {
            destination: dest[0].clone(),
            answered_by: None,
            summary: Summary {
                processed: 3 - failed,
                failed,
                total: if answered > 0 { 3 } else { 0 },
                seconds_spent: 0.0,
            },
            requests_answered: answered,
            requests: 1,
            error: err,
        };
        let ok = Delivery {
            reports: vec![report(0, None, 1)],
        };
        assert!(ok.into_result().is_ok());
        let partial = Delivery {
            reports: vec![report(2, None, 1)],
        };
        assert!(matches!(
            partial.into_result(),
            Err(DeliveryError::Partial { summary, .. }) if summary.failed == 2
        ));
        let refused = || SendError::Refused {
            endpoint: "x".into(),
            info: "bad".into(),
        };
        let failed = Delivery {
            reports: vec![DestinationReport {
                summary: Summary::default(),
                ..report(0, Some(refused()), 0)
            }],
        };
        assert!(matches!(
            failed.into_result(),
            Err(DeliveryError::Failed(_))
        ));
        let one_of_two = Delivery {
            reports: vec![
                report(0, None, 1),
                DestinationReport {
                    summary: Summary::default(),
                    ..report(0, Some(refused()), 0)
                },
            ],
        };
        assert!(matches!(
            one_of_two.into_result(),
            Err(DeliveryError::Partial { failed_destinations, .. }) if failed_destinations.len() == 1
        ));
    }
}
