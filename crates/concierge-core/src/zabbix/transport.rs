//! One request, one reply, one TCP connection, inside the run's deadline.
//!
//! The trapper reads one message, answers and closes, so every exchange opens its own
//! connection. A connection failure (refused, unreachable, reset before the request was fully
//! written) is retryable ([`TransportError::is_retryable`]): `route` tries the next node. Once
//! a request has been written it is never sent again, because the server may already have
//! processed it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::destination::Endpoint;
use super::frame::{self, FrameError};
use crate::deadline::Deadline;
use crate::outcome::{Classify, Failure};
use crate::tls;

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
    /// TLS (PSK or certificates) for every connection; `None`: unencrypted.
    pub tls: Option<Arc<tls::Client>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            source_ip: None,
            max_reply: frame::DEFAULT_MAX_REPLY,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            max_rounds: None,
            tls: None,
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
    /// The local address to connect from cannot be bound (not an address of this machine, or
    /// of the other IP family than the server's): a setting to fix, not a peer to retry.
    SourceAddress { source: IpAddr, detail: String },
    /// The TLS handshake failed or the server's certificate was refused. Never retried: every
    /// node of a destination shares the keys, so another round would only burn the deadline.
    Tls(tls::TlsError),
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
            TransportError::SourceAddress { source, detail } => {
                write!(f, "cannot connect from source address {source}: {detail}")
            }
            TransportError::Tls(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TransportError {}

impl Classify for TransportError {
    fn failure(&self) -> Failure {
        match self {
            TransportError::Unreachable { .. } => Failure::ZabbixUnreachable,
            TransportError::Timeout { .. } => Failure::DeadlineExceeded,
            TransportError::Protocol { .. } | TransportError::Request(_) => Failure::ZabbixRefused,
            TransportError::SourceAddress { .. } => Failure::Usage,
            TransportError::Tls(e) => e.failure(),
        }
    }
}

/// A framed request as it goes on the wire. Built bytes are written as they are; a large
/// request can instead produce its bytes while they are written ([`Message::write_to`] may be
/// called once per attempt), so it is never held in memory whole.
pub trait Message: Sync {
    /// Write the whole framed message to `out`.
    fn write_to(&self, out: &mut dyn Write) -> io::Result<()>;
}

impl Message for [u8] {
    fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(self)
    }
}

impl Message for Vec<u8> {
    fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(self)
    }
}

/// Send `message` (already framed) to one endpoint and return the reply's payload.
pub fn exchange<M: Message + ?Sized>(
    endpoint: &Endpoint,
    message: &M,
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
            Err(Connect::Bind(source, e)) => {
                return Err(TransportError::SourceAddress {
                    source,
                    detail: e.to_string(),
                })
            }
            Err(Connect::Failed(e)) => last = Some(e),
        }
    }
    let stream = match stream {
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
    let guarded = DeadlineStream {
        inner: stream,
        deadline: *deadline,
    };
    match &opts.tls {
        None => talk(guarded, message, opts, &name, None),
        Some(client) => match client.connect(guarded, &name) {
            Ok(Ok(mut tls)) => {
                let reply = talk(&mut tls, message, opts, &name, Some(client.mode()));
                // Our close_notify, as zabbix_sender sends it; the reply is already in.
                let _ = tls.shutdown();
                reply
            }
            Ok(Err(_)) => Err(timeout("in the TLS handshake with")),
            Err(e) => Err(TransportError::Tls(e)),
        },
    }
}

/// Write the request and read the reply on a connected (and, with TLS, handshaken) stream.
fn talk<S: Read + Write, M: Message + ?Sized>(
    mut stream: S,
    message: &M,
    opts: &ConnectOptions,
    name: &str,
    tls: Option<tls::Mode>,
) -> Result<Vec<u8>, TransportError> {
    if let Err(e) = message.write_to(&mut stream).and_then(|()| stream.flush()) {
        return Err(if frame::is_timeout(&e) {
            TransportError::Timeout {
                endpoint: name.to_string(),
                phase: "sending to",
            }
        } else if tls.is_some() {
            // After a handshake the server has accepted us: a broken write may still have
            // delivered the request, so it is not sent again.
            TransportError::Protocol {
                endpoint: name.to_string(),
                detail: format!("connection lost while sending: {e}"),
            }
        } else {
            TransportError::Unreachable {
                endpoint: name.to_string(),
                detail: format!("connection lost while sending: {e}"),
            }
        });
    }
    match frame::read_frame(&mut stream, opts.max_reply) {
        Ok(reply) => Ok(reply),
        Err(e) if e.is_timeout() => Err(TransportError::Timeout {
            endpoint: name.to_string(),
            phase: "waiting for the reply of",
        }),
        Err(FrameError::Io(e)) => Err(TransportError::Protocol {
            endpoint: name.to_string(),
            detail: format!("reading the reply failed: {e}"),
        }),
        // A Zabbix server checks a client certificate after the handshake, and on refusal
        // closes without a word: say so rather than "no reply".
        Err(FrameError::Closed) if tls.is_some() => {
            Err(TransportError::Tls(tls::TlsError::Handshake {
                endpoint: name.to_string(),
                mode: tls.unwrap_or_default(),
                detail: match tls {
                    Some(tls::Mode::Cert) => "the server closed the connection after the \
                        handshake: it does not trust our certificate (--tls-cert-file: is it \
                        issued by a CA in the server's TLSCAFile?)"
                        .into(),
                    _ => "the server closed the connection after the handshake".into(),
                },
            }))
        }
        Err(e) => Err(TransportError::Protocol {
            endpoint: name.to_string(),
            detail: e.to_string(),
        }),
    }
}

/// Why a connection was not made: the source address, or the connection itself.
enum Connect {
    Bind(IpAddr, io::Error),
    Failed(io::Error),
}

fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, Connect> {
    let Some(source) = source else {
        return TcpStream::connect_timeout(&addr, timeout).map_err(Connect::Failed);
    };
    let socket = bind(addr, source).map_err(|e| Connect::Bind(source, e))?;
    socket
        .connect_timeout(&SockAddr::from(addr), timeout)
        .map_err(Connect::Failed)?;
    Ok(socket.into())
}

/// A TCP socket for connecting to `to`, bound to `source` (any port).
fn bind(to: SocketAddr, source: IpAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    Ok(socket)
}

/// Check that connections can be made from `source`: it must be an address of this machine.
/// Found when the options are read, so a wrong `-I` or `SourceIP` is a usage error, never
/// "Zabbix unreachable".
pub fn check_source_address(source: IpAddr) -> io::Result<()> {
    bind(SocketAddr::new(source, 0), source).map(drop)
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
/// that trickles bytes (or stalls in the middle of a TLS handshake) cannot stretch the run past
/// it.
struct DeadlineStream {
    inner: TcpStream,
    deadline: Deadline,
}

impl DeadlineStream {
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

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm(true)?;
        self.inner.read(buf)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm(false)?;
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    use openssl::ssl::{Ssl, SslContext, SslMethod};

    const KEY: [u8; 16] = [7; 16];

    /// A one-connection TLS-PSK trapper on loopback that knows identity "id" with [`KEY`]
    /// (TLS 1.2, as a GnuTLS-built Zabbix), and answers one request with `processed: 1`.
    fn psk_trapper() -> (Endpoint, std::thread::JoinHandle<Option<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut b = SslContext::builder(SslMethod::tls_server()).unwrap();
        b.set_max_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))
            .unwrap();
        b.set_cipher_list("PSK").unwrap();
        b.set_psk_server_callback(|_, identity, key| {
            if identity != Some(b"id") {
                return Ok(0);
            }
            key[..KEY.len()].copy_from_slice(&KEY);
            Ok(KEY.len())
        });
        let ctx = b.build();
        let handle = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().ok()?;
            tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let mut tls = Ssl::new(&ctx).ok()?.accept(tcp).ok()?;
            let request = frame::read_frame(&mut tls, 1 << 20).ok()?;
            let reply =
                frame::encode(br#"{"response":"success","info":"processed: 1"}"#, false).ok()?;
            tls.write_all(&reply).ok()?;
            let _ = tls.shutdown();
            Some(tls.ssl().current_cipher()?.name().to_string() + " " + &text_of(&request))
        });
        let ep = Endpoint {
            host: "127.0.0.1".into(),
            port,
        };
        (ep, handle)
    }

    fn text_of(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    fn psk_options(dir: &std::path::Path, key: &[u8]) -> ConnectOptions {
        let file = dir.join("psk");
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&file, hex).unwrap();
        let client = tls::Client::new(&tls::Settings {
            connect: tls::Mode::Psk,
            psk_identity: Some("id".into()),
            psk_file: Some(file),
            ..tls::Settings::default()
        })
        .unwrap();
        ConnectOptions {
            tls: client.map(Arc::new),
            ..ConnectOptions::default()
        }
    }

    #[test]
    fn a_request_goes_over_tls_psk_with_a_forward_secret_suite() {
        let dir = tempfile::tempdir().unwrap();
        let (ep, server) = psk_trapper();
        let message = frame::encode(br#"{"request":"sender data","data":[]}"#, false).unwrap();
        let deadline = Deadline::after(Duration::from_secs(5));
        let reply = exchange(&ep, &message, &deadline, &psk_options(dir.path(), &KEY)).unwrap();
        assert_eq!(
            text_of(&reply),
            r#"{"response":"success","info":"processed: 1"}"#
        );
        let seen = server.join().unwrap().expect("the server got the request");
        assert!(
            seen.starts_with("ECDHE-PSK-"),
            "ECDHE first, for forward secrecy: {seen}"
        );
        assert!(
            seen.ends_with(r#"{"request":"sender data","data":[]}"#),
            "{seen}"
        );
    }

    #[test]
    fn a_wrong_key_is_a_handshake_failure_that_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (ep, server) = psk_trapper();
        let message = frame::encode(b"{}", false).unwrap();
        let deadline = Deadline::after(Duration::from_secs(5));
        let e = exchange(&ep, &message, &deadline, &psk_options(dir.path(), &[8; 16])).unwrap_err();
        assert_eq!(e.failure(), Failure::TlsHandshake, "{e}");
        assert!(!e.is_retryable());
        assert!(
            e.to_string().starts_with("TLS handshake with 127.0.0.1:"),
            "{e}"
        );
        assert_eq!(server.join().unwrap(), None);
    }

    #[test]
    fn a_peer_that_stalls_in_the_handshake_ends_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = Endpoint {
            host: "127.0.0.1".into(),
            port: listener.local_addr().unwrap().port(),
        };
        let holder = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            let mut hello = [0u8; 2048];
            let _ = tcp.read(&mut hello);
            let _ = tcp.write_all(&[0x16, 0x03, 0x03]); // a record header, cut short
            std::thread::sleep(Duration::from_secs(2));
        });
        let message = frame::encode(b"{}", false).unwrap();
        let started = Instant::now();
        let deadline = Deadline::after(Duration::from_millis(400));
        let e = exchange(&ep, &message, &deadline, &psk_options(dir.path(), &KEY)).unwrap_err();
        let took = started.elapsed();
        assert_eq!(e.failure(), Failure::DeadlineExceeded, "{e}");
        assert!(e.to_string().contains("in the TLS handshake with"), "{e}");
        assert!(took < Duration::from_millis(900), "took {took:?}");
        holder.join().unwrap();
    }
}
