//! The "sender data" request: values for trapper items, delivered in one shot to every
//! destination, with the reply's processed / failed / total counts (zabbix-reference.md §2).

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufWriter, Write};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::destination::{Destination, Endpoint};
use super::frame::{self, MessageBuf, MAX_REQUEST};
use super::route::{self, RedirectError, Route, RouteError};
use super::transport::{ConnectOptions, Message, TransportError};
use crate::deadline::Deadline;
use crate::outcome::{Classify, Failure};
use crate::text::{self, shown};

/// One value for one trapper item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The host's technical name, shared by the values of one host (a run's values all name
    /// the same host: one allocation, not one per value).
    pub host: Arc<str>,
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
    /// The nodes sent the request on and on, or none holds the host.
    Redirect(RedirectError),
    /// The server does not allow this connection type for the host (`connection of type
    /// "unencrypted" is not allowed for host "x"`): it wants PSK or a certificate.
    ConnectionType { endpoint: String, info: String },
}

impl From<RouteError> for SendError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::Transport(e) => SendError::Transport(e),
            RouteError::Redirect(e) => SendError::Redirect(e),
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Transport(e) => e.fmt(f),
            SendError::Refused { endpoint, info } => {
                write!(
                    f,
                    "Zabbix at {endpoint} refused the request: {}",
                    shown(info)
                )
            }
            SendError::Redirect(e) => e.fmt(f),
            SendError::ConnectionType { endpoint, info } => {
                write!(
                    f,
                    "Zabbix at {endpoint} refused: {}",
                    connection_type_hint(info)
                )
            }
        }
    }
}

/// True when a server's `info` says the host does not allow this connection type.
pub fn is_connection_type_refusal(info: &str) -> bool {
    info.starts_with("connection of type ") && info.contains(" is not allowed for host")
}

/// The server's words, and what to do about them.
fn connection_type_hint(info: &str) -> String {
    if info.starts_with("connection of type \"unencrypted\"") {
        format!(
            "the server refused an unencrypted connection for this host ({}): connect with \
             --tls-connect psk or cert, as the host's encryption settings require",
            shown(info)
        )
    } else {
        format!(
            "{}: use the connection type the host's encryption settings accept",
            shown(info)
        )
    }
}

impl std::error::Error for SendError {}

impl Classify for SendError {
    fn failure(&self) -> Failure {
        match self {
            SendError::Transport(t) => t.failure(),
            SendError::Refused { .. } => Failure::ZabbixRefused,
            SendError::Redirect(e) => e.failure(),
            SendError::ConnectionType { .. } => Failure::ConnectionTypeRefused,
        }
    }
}

/// Write the "sender data" JSON for `values` into `out`.
pub fn write_request(out: &mut Vec<u8>, values: &[Value], now: Timestamp) {
    // Writing into a Vec cannot fail.
    let _ = write_values(out, values.iter(), now);
}

fn write_values<'a, W: Write + ?Sized>(
    out: &mut W,
    values: impl Iterator<Item = &'a Value>,
    now: Timestamp,
) -> io::Result<()> {
    out.write_all(br#"{"request":"sender data","data":["#)?;
    let mut last_host: Option<(&str, Vec<u8>)> = None;
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(br#"{"host":"#)?;
        // Every value of a request names the same host: escape it once.
        match &last_host {
            Some((h, esc)) if *h == &*v.host => out.write_all(esc)?,
            _ => {
                let mut esc = Vec::with_capacity(v.host.len() + 2);
                json_string(&mut esc, &v.host)?;
                out.write_all(&esc)?;
                last_host = Some((&v.host, esc));
            }
        }
        out.write_all(br#","key":"#)?;
        json_string(out, &v.key)?;
        out.write_all(br#","value":"#)?;
        json_string(out, &v.value)?;
        if let Some(ts) = v.clock {
            write!(out, r#","clock":{}"#, ts.clock)?;
            if let Some(ns) = ts.ns {
                write!(out, r#","ns":{ns}"#)?;
            }
        }
        out.write_all(b"}")?;
    }
    write!(
        out,
        r#"],"clock":{},"ns":{}}}"#,
        now.clock,
        now.ns.unwrap_or(0)
    )
}

/// `values` as requests of one host each, hosts in the order they first appear and values in
/// their order, each host's split into parts of at most `chunk`. A server or proxy decides
/// where a request belongs on its first value's host (and redirects all of it), so a request
/// never mixes hosts.
fn by_host(values: &[Value], chunk: usize) -> Vec<Vec<&Value>> {
    let chunk = chunk.max(1);
    let mut hosts: Vec<(&str, Vec<&Value>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    // Values mostly come in runs of one host: look a host up only when it changes.
    let mut last: Option<(&str, usize)> = None;
    for v in values {
        let i = match last {
            Some((host, i)) if host == &*v.host => i,
            _ => {
                let i = *index.entry(&v.host).or_insert_with(|| {
                    hosts.push((&v.host, Vec::new()));
                    hosts.len() - 1
                });
                last = Some((&v.host, i));
                i
            }
        };
        hosts[i].1.push(v);
    }
    let mut requests = Vec::new();
    for (_, values) in hosts {
        if values.len() <= chunk {
            requests.push(values);
        } else {
            requests.extend(values.chunks(chunk).map(<[&Value]>::to_vec));
        }
    }
    requests
}

/// The exact length of what [`write_values`] writes for `values`.
fn request_len<'a>(values: impl Iterator<Item = &'a Value>, now: Timestamp) -> usize {
    let digits = |n: u32| n.checked_ilog10().map_or(1, |d| d as usize + 1);
    let mut len = br#"{"request":"sender data","data":["#.len();
    let mut last_host: Option<(&str, usize)> = None;
    for (i, v) in values.enumerate() {
        len += usize::from(i > 0);
        let host = match last_host {
            Some((h, n)) if h == &*v.host => n,
            _ => {
                let n = json_string_len(&v.host);
                last_host = Some((&v.host, n));
                n
            }
        };
        len += br#"{"host":,"key":,"value":}"#.len()
            + host
            + json_string_len(&v.key)
            + json_string_len(&v.value);
        if let Some(ts) = v.clock {
            len += br#","clock":"#.len() + digits(ts.clock);
            if let Some(ns) = ts.ns {
                len += br#","ns":"#.len() + digits(ns);
            }
        }
    }
    len + br#"],"clock":,"ns":}"#.len() + digits(now.clock) + digits(now.ns.unwrap_or(0))
}

/// The length of `s` as a JSON string, quotes included, escaped as serde_json escapes it.
fn json_string_len(s: &str) -> usize {
    let b = s.as_bytes();
    if !b.iter().any(|&c| ESCAPED[usize::from(c)]) {
        return 2 + b.len();
    }
    2 + b.len()
        + b.iter()
            .map(|&c| match c {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
                0..=0x1f => 5,
                _ => 0,
            })
            .sum::<usize>()
}

/// The bytes JSON strings escape (control characters, `"` and `\\`), as a table: one load and
/// test per byte on the two passes every key and value takes (length, then writing).
static ESCAPED: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

fn json_string<W: Write + ?Sized>(out: &mut W, s: &str) -> io::Result<()> {
    // Keys and values rarely hold a byte JSON escapes: those are copied as they are (a tenth of
    // the instructions); serde_json's escaping, correct for every input, writes the others.
    if !s.bytes().any(|b| ESCAPED[usize::from(b)]) {
        out.write_all(b"\"")?;
        out.write_all(s.as_bytes())?;
        return out.write_all(b"\"");
    }
    serde_json::to_writer(out, s).map_err(io::Error::from)
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
        /// What the refused values mean for the admin, as far as is known (boxed: the error
        /// is returned often, the reason rarely filled in).
        why: Box<Refusal>,
    },
    /// No destination took anything: the first destination's error.
    Failed(SendError),
}

/// Why a server refused values. Its reply only counts them, so when every value was refused
/// the host is asked about (see `active::explain`); the answer says what the admin has to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not asked: nothing was refused, or the caller did not ask.
    Unexplained,
    /// Some values were taken, so the host is known: the others have no trapper item (yet).
    SomeItemsMissing,
    /// The server does not know the host, or a proxy monitors it.
    UnknownHost { host: String, server: String },
    /// The server knows the host, but it has none of the values' items.
    ItemsMissing { host: String },
    /// The server says a proxy monitors the host (`host "x" is monitored by a proxy`).
    Elsewhere {
        host: String,
        server: String,
        info: String,
    },
    /// The server answered something else about the host (`host [x] not monitored`).
    Host {
        host: String,
        server: String,
        info: String,
    },
    /// The host could not be asked about (values for several hosts, no time left, no answer).
    Unknown { why: String },
    /// The server does not allow this connection type for the host (plain to a PSK host...).
    ConnectionType {
        host: String,
        server: String,
        info: String,
    },
}

/// What to do about an unknown host, and about missing items.
const REGISTER_HINT: &str = "create the host in Zabbix, or have concierge-heartbeat --register \
    announce it to an autoregistration action";
const LLD_HINT: &str = "the LLD rules of the host's template create them from \
    concierge-discover (check that --key-template and --stats match the item prototypes)";

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unexplained => Ok(()),
            Refusal::SomeItemsMissing => write!(
                f,
                "the host is known, so the refused values' items are missing or are not \
                 trapper items: {LLD_HINT}"
            ),
            Refusal::UnknownHost { host, server } => write!(
                f,
                "Zabbix at {server} does not know host {:?} (or a proxy monitors it): \
                 {REGISTER_HINT}",
                shown(host)
            ),
            Refusal::ItemsMissing { host } => write!(
                f,
                "host {:?} is known, but has none of these trapper items: {LLD_HINT}",
                shown(host)
            ),
            Refusal::Elsewhere { host, server, info } => write!(
                f,
                "Zabbix at {server} says of host {:?}: {}: send to the proxy (or proxy group) \
                 that monitors it",
                shown(host),
                shown(info)
            ),
            Refusal::Host { host, server, info } => write!(
                f,
                "Zabbix at {server} says of host {:?}: {}",
                shown(host),
                shown(info)
            ),
            Refusal::ConnectionType { server, info, .. } => {
                write!(f, "Zabbix at {server} says: {}", connection_type_hint(info))
            }
            Refusal::Unknown { why } => write!(
                f,
                "either Zabbix does not know the host ({REGISTER_HINT}) or the host lacks \
                 these items ({LLD_HINT}); asking which failed: {why}"
            ),
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Partial {
                summary,
                failed_destinations,
                why,
            } => {
                write!(
                    f,
                    "Zabbix refused {} of {} values ({summary})",
                    summary.failed, summary.total
                )?;
                for (d, e) in failed_destinations {
                    write!(f, "; {d}: {e}")?;
                }
                match why.as_ref() {
                    Refusal::Unexplained if summary.failed > 0 => write!(
                        f,
                        ": the host is unknown ({REGISTER_HINT}) or lacks the items ({LLD_HINT})"
                    ),
                    Refusal::Unexplained => Ok(()),
                    why => write!(f, ": {why}"),
                }
            }
            DeliveryError::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DeliveryError {}

impl Classify for DeliveryError {
    fn failure(&self) -> Failure {
        match self {
            DeliveryError::Partial { why, .. }
                if matches!(why.as_ref(), Refusal::ConnectionType { .. }) =>
            {
                Failure::ConnectionTypeRefused
            }
            DeliveryError::Partial { .. } => Failure::Partial,
            DeliveryError::Failed(e) => e.failure(),
        }
    }
}

impl Delivery {
    /// The combined summary of every destination that answered.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for r in &self.reports {
            s.add(&r.summary);
        }
        s
    }

    /// True when some destination answered every request with its counts: the server has the
    /// values (processed, or refused for good), so a spooled copy can go. A refusal of the
    /// whole request (shutting down…) or a missing reply is no such answer.
    pub fn accepted(&self) -> bool {
        self.reports
            .iter()
            .any(|r| r.error.is_none() && r.requests_answered == r.requests)
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
            let why = if summary.failed > 0 && summary.processed > 0 {
                Refusal::SomeItemsMissing
            } else {
                Refusal::Unexplained
            };
            return Err(DeliveryError::Partial {
                summary,
                failed_destinations: failed,
                why: Box::new(why),
            });
        }
        Ok(summary)
    }
}

/// Deliver `values` to every destination, each destination in its own thread so a stalled
/// one cannot starve the others; all inside `deadline`. One request per host (and chunk) and
/// destination.
pub fn send(
    destinations: &[Destination],
    values: &[Value],
    deadline: &Deadline,
    opts: &SenderOptions,
) -> Result<Delivery, TransportError> {
    let mut routes: Vec<Route> = destinations.iter().map(Route::new).collect();
    send_along(&mut routes, values, deadline, opts)
}

/// As [`send`], along `routes` that remember, from earlier sends, where each destination's
/// nodes sent the host (a coprocess keeps them between beats).
pub fn send_along(
    routes: &mut [Route],
    values: &[Value],
    deadline: &Deadline,
    opts: &SenderOptions,
) -> Result<Delivery, TransportError> {
    let now = Timestamp::now();
    let chunk = opts.chunk_size.unwrap_or(usize::MAX);
    let mut messages = Vec::new();
    for part in by_host(values, chunk) {
        let host = &*part[0].host;
        // The exact size first: a request over the server's limit is refused before a byte of
        // it is built, and the buffer is allocated once, never grown (doubling would hold up
        // to three times the request while it copies).
        let len = request_len(part.iter().copied(), now);
        if len > MAX_REQUEST {
            return Err(TransportError::Request(format!(
                "the request for host {:?} would be {len} bytes ({} values), over the \
                 server's 1 GiB limit: split it with --chunk",
                shown(host),
                part.len()
            )));
        }
        let message = if opts.compress {
            let mut m = MessageBuf::with_capacity(len);
            let _ = write_values(m.payload_mut(), part.iter().copied(), now);
            debug_assert_eq!(m.payload().len(), len, "request_len must be exact");
            let sealed = m
                .seal(true)
                .map_err(|e| TransportError::Request(e.to_string()))?;
            Framed::Built(sealed)
        } else {
            // Written to the connection as it is produced: the request is never held whole.
            Framed::Streamed {
                header: frame::plain_header(len),
                values: part,
                now,
            }
        };
        messages.push(Request { host, message });
    }
    let reports = match routes {
        [route] => vec![deliver(route, &messages, deadline, opts)],
        _ => std::thread::scope(|s| {
            let handles: Vec<_> = routes
                .iter_mut()
                .map(|route| {
                    let destination = route.destination().clone();
                    let handle = s.spawn(|| deliver(route, &messages, deadline, opts));
                    (handle, destination)
                })
                .collect();
            handles
                .into_iter()
                .map(|(h, destination)| {
                    h.join().unwrap_or_else(|_| DestinationReport {
                        destination,
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
        }),
    };
    Ok(Delivery { reports })
}

/// One framed "sender data" request, all for `host`.
struct Request<'a> {
    host: &'a str,
    message: Framed<'a>,
}

/// A request's bytes: built (compressed), or produced from the values while they are written.
enum Framed<'a> {
    Built(Vec<u8>),
    Streamed {
        header: [u8; frame::HEADER_LEN],
        values: Vec<&'a Value>,
        now: Timestamp,
    },
}

impl Message for Framed<'_> {
    fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        match self {
            Framed::Built(bytes) => out.write_all(bytes),
            Framed::Streamed {
                header,
                values,
                now,
            } => {
                let mut w = BufWriter::with_capacity(64 * 1024, out);
                w.write_all(header)?;
                write_values(&mut w, values.iter().copied(), *now)?;
                w.flush()
            }
        }
    }
}

/// Send the requests in order along one destination's route; the first failure ends it, as
/// zabbix_sender drops a destination after a failed batch.
fn deliver(
    route: &mut Route,
    messages: &[Request],
    deadline: &Deadline,
    opts: &SenderOptions,
) -> DestinationReport {
    let mut report = DestinationReport {
        destination: route.destination().clone(),
        answered_by: None,
        summary: Summary::default(),
        requests_answered: 0,
        requests: messages.len(),
        error: None,
    };
    for Request { host, message } in messages {
        let outcome = route::exchange(route, host, message, deadline, &opts.connect)
            .map_err(SendError::from)
            .and_then(|answer| {
                interpret(&answer.endpoint, &answer.payload).map(|s| (s, answer.endpoint))
            });
        match outcome {
            Ok((summary, endpoint)) => {
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
            "not a Zabbix reply ({} bytes): {:?}",
            payload.len(),
            shown(&text::lossy(payload))
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
            shown(&reply.info)
        ))
    })
}

#[cfg(test)]
mod tests {

    /// The fast path copies exactly what serde_json would have written.
    #[test]
    fn json_strings_match_serde_json() {
        let texts = [
            "",
            "plain",
            "timer[a.b.p95]",
            "q\"",
            "b\\s",
            "nl\n",
            "\u{1}",
            "\u{7f}",
            "代码",
            "\u{1f}x",
        ];
        let every_char = (0u8..=0x7f).map(|b| format!("a{}b", char::from(b)));
        for text in texts.iter().map(|t| t.to_string()).chain(every_char) {
            let text = text.as_str();
            let mut ours = Vec::new();
            json_string(&mut ours, text).unwrap();
            assert_eq!(ours, serde_json::to_vec(text).unwrap(), "{text:?}");
            assert_eq!(json_string_len(text), ours.len(), "{text:?}");
        }
    }
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
    fn the_request_length_is_known_exactly_before_it_is_built() {
        let now = Timestamp {
            clock: 1_700_000_000,
            ns: Some(7),
        };
        let mut values = vec![
            v("h", "k", "1"),
            v("h", "k[\"a\\b\"]", "x\ny\u{1}\t\u{7f}é"),
        ];
        values[1].clock = Some(Timestamp { clock: 0, ns: None });
        values.push(v("other \"host\"", "k", ""));
        values[2].clock = Some(Timestamp {
            clock: 9,
            ns: Some(999_999_999),
        });
        for n in 0..=values.len() {
            let mut out = Vec::new();
            write_values(&mut out, values[..n].iter(), now).unwrap();
            assert_eq!(request_len(values[..n].iter(), now), out.len(), "{n}");
        }
        for s in ["", "plain", "\u{0}\u{1f}\u{20}\"\\/", "日本"] {
            let mut out = Vec::new();
            json_string(&mut out, s).unwrap();
            assert_eq!(json_string_len(s), out.len(), "{s:?}");
        }
    }

    #[test]
    fn a_request_over_1_gib_is_refused_before_it_is_built() {
        // 180 MiB of control characters escape to 1080 MiB (\u0001 each): refused from the
        // lengths alone, without building (or allocating) the request.
        let values = vec![v("h", "k", &"\u{1}".repeat(180 << 20))];
        let d = Destination {
            nodes: vec![Endpoint {
                host: "127.0.0.1".into(),
                port: 9,
            }],
        };
        let e = send(
            &[d],
            &values,
            &Deadline::after(std::time::Duration::from_secs(5)),
            &SenderOptions::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("over the server's 1 GiB limit"),
            "{e}"
        );
        assert_eq!(e.failure(), Failure::ZabbixRefused);
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
    fn refusals_say_what_to_do() {
        let partial = |why| DeliveryError::Partial {
            summary: Summary {
                processed: 0,
                failed: 2,
                total: 2,
                seconds_spent: 0.0,
            },
            failed_destinations: Vec::new(),
            why: Box::new(why),
        };
        let unknown = partial(Refusal::UnknownHost {
            host: "web-1".into(),
            server: "127.0.0.1:10051".into(),
        })
        .to_string();
        assert!(
            unknown.starts_with(
                "Zabbix refused 2 of 2 values (processed: 0; failed: 2; total: 2; \
                 seconds spent: 0.000000): Zabbix at 127.0.0.1:10051 does not know host \"web-1\""
            ),
            "{unknown}"
        );
        assert!(
            unknown.contains("concierge-heartbeat --register"),
            "{unknown}"
        );
        let missing = partial(Refusal::ItemsMissing {
            host: "web-1".into(),
        })
        .to_string();
        assert!(
            missing.contains(
                ": host \"web-1\" is known, but has none of these trapper items: \
                 the LLD rules"
            ),
            "{missing}"
        );
        let other = partial(Refusal::Host {
            host: "web-1".into(),
            server: "z:1".into(),
            info: "host [web-1] not monitored".into(),
        })
        .to_string();
        assert!(
            other.ends_with(": Zabbix at z:1 says of host \"web-1\": host [web-1] not monitored"),
            "{other}"
        );
        // Not asked (values for several hosts): both possibilities, each with its remedy.
        let unasked = partial(Refusal::Unexplained).to_string();
        assert!(
            unasked.contains("the host is unknown (create the host")
                && unasked.contains("or lacks the items (the LLD rules"),
            "{unasked}"
        );
        for s in [unknown, missing, other, unasked] {
            assert_eq!(s.lines().count(), 1, "{s}");
        }
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
