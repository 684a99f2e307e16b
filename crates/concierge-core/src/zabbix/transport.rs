//! One request, one reply, one TCP connection, inside the run's deadline.
//!
//! The trapper reads one message, answers and closes, so every exchange opens its own
//! connection. Connection failures (refused, unreachable, reset before the request was fully
//! written) are retried over the cluster's nodes with jittered backoff; once a request has been
//! written it is never sent again, because the server may already have processed it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::destination::{Destination, Endpoint};
use super::frame::{self, FrameError};
use crate::deadline::{Backoff, Deadline};

/// How connections are made.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Local address to bind before connecting (the agent's `SourceIP`).
    pub source_ip: Option<IpAddr>,
    /// Cap on a reply's size.
    pub max_reply: u64,
    /// First retry delay after a connection failure; doubles up to `backoff_max`.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Give up on a destination after this many rounds over its nodes (`None`: until the
    /// deadline).
    pub max_rounds: Option<u32>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            source_ip: None,
            max_reply: frame::DEFAULT_MAX_REPLY,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            max_rounds: None,
        }
    }
}

/// Why an exchange with a Zabbix server or proxy failed.
#[derive(Debug)]
pub enum TransportError {
    /// No connection could be made, or it broke before the request was written: the server
    /// has not seen the request, so retrying is safe.
    Unreachable { endpoint: String, detail: String },
    /// The deadline passed while connecting, writing or waiting for the reply.
    Timeout {
        endpoint: String,
        phase: &'static str,
    },
    /// The peer answered with something that is not a valid Zabbix reply (garbage, truncated,
    /// oversized, or the connection closed without a reply).
    Protocol { endpoint: String, detail: String },
    /// The request could not be built (too large, say).
    Request(String),
}

impl TransportError {
    /// True when the request never reached the server, so trying again cannot duplicate it.
    pub fn is_retryable(&self) -> bool {
        matches!(self, TransportError::Unreachable { .. })
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Unreachable { endpoint, detail } => {
                write!(f, "cannot reach Zabbix at {endpoint}: {detail}")
            }
            TransportError::Timeout { endpoint, phase } => {
                write!(f, "deadline exceeded while {phase} {endpoint}")
            }
            TransportError::Protocol { endpoint, detail } => {
                write!(f, "invalid reply from Zabbix at {endpoint}: {detail}")
            }
            TransportError::Request(detail) => write!(f, "cannot build the request: {detail}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// Send `message` (already framed) to one endpoint and return the reply's payload.
pub fn exchange(
    endpoint: &Endpoint,
    message: &[u8],
    deadline: &Deadline,
    opts: &ConnectOptions,
) -> Result<Vec<u8>, TransportError> {
    let name = endpoint.to_string();
    let unreachable = |detail: String| TransportError::Unreachable {
        endpoint: name.clone(),
        detail,
    };
    let timeout = |phase| TransportError::Timeout {
        endpoint: name.clone(),
        phase,
    };
    let addrs = resolve(endpoint, deadline).map_err(|e| {
        if frame::is_timeout(&e) {
            timeout("resolving")
        } else {
            unreachable(e.to_string())
        }
    })?;
    let mut last = None;
    let mut stream = None;
    for addr in addrs {
        let Some(left) = deadline.socket_timeout() else {
            return Err(timeout("connecting to"));
        };
        match connect(addr, opts.source_ip, left) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = match stream {
        Some(s) => s,
        None => {
            let e = last.unwrap_or_else(|| io::Error::other("no address"));
            return Err(if frame::is_timeout(&e) || deadline.expired() {
                unreachable(format!("connect timed out ({e})"))
            } else {
                unreachable(e.to_string())
            });
        }
    };
    let _ = stream.set_nodelay(true);
    let mut guarded = DeadlineStream {
        inner: &mut stream,
        deadline,
    };
    if let Err(e) = guarded.write_all(message).and_then(|()| guarded.flush()) {
        return Err(if frame::is_timeout(&e) {
            timeout("sending to")
        } else {
            unreachable(format!("connection lost while sending: {e}"))
        });
    }
    match frame::read_frame(&mut guarded, opts.max_reply) {
        Ok(reply) => Ok(reply),
        Err(e) if e.is_timeout() => Err(timeout("waiting for the reply of")),
        Err(FrameError::Io(e)) => Err(TransportError::Protocol {
            endpoint: name,
            detail: format!("reading the reply failed: {e}"),
        }),
        Err(e) => Err(TransportError::Protocol {
            endpoint: name,
            detail: e.to_string(),
        }),
    }
}

/// Send `message` to one destination: nodes of an HA cluster are tried in order, starting with
/// `*preferred` (the node that answered last time), and whole rounds are retried with backoff
/// while only connection failures happen and the deadline allows. On success `*preferred` is
/// the node that answered.
pub fn exchange_with_cluster(
    destination: &Destination,
    preferred: &mut usize,
    message: &[u8],
    deadline: &Deadline,
    opts: &ConnectOptions,
) -> Result<Vec<u8>, TransportError> {
    let n = destination.nodes.len();
    let mut backoff = Backoff::new(opts.backoff_base, opts.backoff_max);
    let mut rounds = 0u32;
    loop {
        let mut last = None;
        for i in 0..n {
            let idx = (*preferred + i) % n;
            match exchange(&destination.nodes[idx], message, deadline, opts) {
                Ok(reply) => {
                    *preferred = idx;
                    return Ok(reply);
                }
                Err(e) if e.is_retryable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        rounds += 1;
        let last = last.unwrap_or_else(|| TransportError::Request("empty destination".into()));
        if opts.max_rounds.is_some_and(|max| rounds >= max) {
            return Err(last);
        }
        let delay = backoff.next_delay();
        if delay >= deadline.remaining() {
            return Err(last);
        }
        std::thread::sleep(delay);
    }
}

fn connect(addr: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect_timeout(&addr, timeout);
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket
        .bind(&SockAddr::from(SocketAddr::new(source, 0)))
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot bind source address {source}: {e}"),
            )
        })?;
    socket.connect_timeout(&SockAddr::from(addr), timeout)?;
    Ok(socket.into())
}

/// Resolve a host name inside the deadline: literal addresses need no lookup, and a lookup
/// that hangs (a dead DNS server) is abandoned when the deadline passes.
fn resolve(endpoint: &Endpoint, deadline: &Deadline) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = endpoint.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, endpoint.port)]);
    }
    let target = (endpoint.host.clone(), endpoint.port);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(target.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
    });
    match rx.recv_timeout(deadline.remaining()) {
        Ok(Ok(addrs)) if addrs.is_empty() => Err(io::Error::other("host name has no address")),
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(io::Error::new(
            e.kind(),
            format!("cannot resolve {}: {e}", endpoint.host),
        )),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "name lookup timed out",
        )),
    }
}

/// A stream whose every read and write is bounded by what is left of the deadline, so a peer
/// that trickles bytes cannot stretch the run past it.
struct DeadlineStream<'a> {
    inner: &'a mut TcpStream,
    deadline: &'a Deadline,
}

impl DeadlineStream<'_> {
    fn arm(&self, read: bool) -> io::Result<()> {
        let left = self
            .deadline
            .socket_timeout()
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "deadline exceeded"))?;
        if read {
            self.inner.set_read_timeout(Some(left))
        } else {
            self.inner.set_write_timeout(Some(left))
        }
    }
}

impl Read for DeadlineStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm(true)?;
        self.inner.read(buf)
    }
}

impl Write for DeadlineStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm(false)?;
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
