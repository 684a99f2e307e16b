//! Where a metrics document comes from (an HTTP(S) URL, a file or stdin), and reading it within
//! the run's [`Deadline`] and a size cap.

use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::mpsc;
use std::thread;

use crate::deadline::Deadline;
use crate::outcome::{Classify, Failure};
use crate::text::shown;

/// The metrics endpoint of a Dropwizard application with the admin servlet on its default port.
pub const DEFAULT_URL: &str = "http://localhost:8080/metrics";

/// The largest document read by default (64 MiB): far above any real registry, low enough
/// that a runaway endpoint cannot exhaust memory.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// A place to read a metrics document from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An `http://` or `https://` URL, fetched with GET.
    Url(String),
    /// A file (or FIFO) on disk.
    File(PathBuf),
    /// Standard input, written `-`.
    Stdin,
}

/// The error for an empty source argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptySource;

impl fmt::Display for EmptySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("empty metrics source: give a URL, a file path, or - for stdin")
    }
}

impl std::error::Error for EmptySource {}

impl Classify for EmptySource {
    fn failure(&self) -> Failure {
        Failure::Usage
    }
}

/// True when `s` starts with `prefix`, ignoring ASCII case.
fn has_prefix_ignore_case(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

fn is_url(s: &str) -> bool {
    has_prefix_ignore_case(s, "http://") || has_prefix_ignore_case(s, "https://")
}

impl FromStr for Source {
    type Err = EmptySource;

    /// `http://…` / `https://…` (any case) is a URL, `-` is stdin, anything else a file path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            Err(EmptySource)
        } else if s == "-" {
            Ok(Source::Stdin)
        } else if is_url(s) {
            Ok(Source::Url(s.to_string()))
        } else {
            Ok(Source::File(PathBuf::from(s)))
        }
    }
}

impl fmt::Display for Source {
    /// The URL as given, the path, or `stdin`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Url(url) => f.write_str(url),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Stdin => f.write_str("stdin"),
        }
    }
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// Connection refused, DNS failure, missing file, permission denied or another I/O error.
    Unreachable { source: String, detail: String },
    /// The server answered with a status outside 2xx.
    HttpStatus { url: String, status: u16 },
    /// The document is larger than the byte limit.
    TooLarge { source: String, limit: u64 },
    /// The deadline passed before the document was read.
    Timeout { source: String },
}

impl SourceError {
    /// True for [`SourceError::Timeout`], which callers report differently (the agent's
    /// `Timeout` is close).
    pub fn is_timeout(&self) -> bool {
        matches!(self, SourceError::Timeout { .. })
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::Unreachable { source, detail } if is_url(source) => {
                write!(f, "cannot reach {source}: {}", shown(detail))
            }
            SourceError::Unreachable { source, detail } => {
                write!(f, "cannot read {source}: {}", shown(detail))
            }
            SourceError::HttpStatus { url, status } => {
                write!(f, "{url} answered HTTP status {status} (expected 2xx)")
            }
            SourceError::TooLarge { source, limit } => {
                write!(f, "{source} is larger than the limit of {limit} bytes")
            }
            SourceError::Timeout { source } => {
                write!(f, "timed out reading {source} (deadline reached)")
            }
        }
    }
}

impl std::error::Error for SourceError {}

impl Classify for SourceError {
    fn failure(&self) -> Failure {
        match self {
            SourceError::Timeout { .. } => Failure::DeadlineExceeded,
            SourceError::Unreachable { .. }
            | SourceError::HttpStatus { .. }
            | SourceError::TooLarge { .. } => Failure::SourceUnreachable,
        }
    }
}

/// A document as read, with the media type the server named (URLs only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub body: Vec<u8>,
    /// The `Content-Type` header of an HTTP answer; `None` for files and stdin.
    pub content_type: Option<String>,
}

impl Source {
    /// Reads the whole document, giving up at `deadline` and when it exceeds `max_bytes`.
    /// URLs: non-2xx is an error, redirects are followed, gzip is decoded (the limit applies
    /// to the decoded body), proxies come from the usual environment variables. Files and
    /// stdin are read on a helper thread that is abandoned at the deadline, so a FIFO or an
    /// idle stdin cannot hold the run past it. URLs are asked for JSON.
    pub fn fetch(&self, deadline: &Deadline, max_bytes: u64) -> Result<Vec<u8>, SourceError> {
        self.fetch_document(deadline, max_bytes, "application/json")
            .map(|d| d.body)
    }

    /// As [`Source::fetch`], asking a URL with this `Accept` header, and keeping the answer's
    /// Content-Type.
    pub fn fetch_document(
        &self,
        deadline: &Deadline,
        max_bytes: u64,
        accept: &str,
    ) -> Result<Document, SourceError> {
        let body = match self {
            Source::Url(url) => return fetch_url(url, deadline, max_bytes, accept),
            Source::File(path) => {
                let path = path.clone();
                read_on_thread(self.to_string(), deadline, max_bytes, move || {
                    std::fs::File::open(&path)
                })
            }
            Source::Stdin => {
                read_on_thread(self.to_string(), deadline, max_bytes, || Ok(io::stdin()))
            }
        }?;
        Ok(Document {
            body,
            content_type: None,
        })
    }
}

fn fetch_url(
    url: &str,
    deadline: &Deadline,
    max_bytes: u64,
    accept: &str,
) -> Result<Document, SourceError> {
    let timeout = || SourceError::Timeout {
        source: url.to_string(),
    };
    let Some(remaining) = deadline.socket_timeout() else {
        return Err(timeout());
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(remaining))
        .http_status_as_error(false)
        .user_agent(concat!("concierge/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let map = |e: ureq::Error| map_ureq_error(e, url, max_bytes);
    let mut response = agent
        .get(url)
        .header("Accept", accept)
        .call()
        .map_err(map)?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(SourceError::HttpStatus {
            url: url.to_string(),
            status,
        });
    }
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .body_mut()
        .with_config()
        .limit(max_bytes)
        .read_to_vec()
        .map_err(map)?;
    Ok(Document { body, content_type })
}

fn map_ureq_error(e: ureq::Error, url: &str, limit: u64) -> SourceError {
    let source = url.to_string();
    let detail = match e {
        ureq::Error::Timeout(_) => return SourceError::Timeout { source },
        ureq::Error::BodyExceedsLimit(_) => return SourceError::TooLarge { source, limit },
        ureq::Error::Io(io) if io.kind() == io::ErrorKind::TimedOut => {
            return SourceError::Timeout { source }
        }
        ureq::Error::Io(io) => io_detail(&io),
        ureq::Error::HostNotFound => "host not found".to_string(),
        ureq::Error::StatusCode(status) => {
            return SourceError::HttpStatus {
                url: source,
                status,
            }
        }
        other => other.to_string(),
    };
    SourceError::Unreachable { source, detail }
}

/// A short lower-case description of an I/O error, without the "(os error N)" noise for the
/// common kinds.
fn io_detail(e: &io::Error) -> String {
    use io::ErrorKind as K;
    match e.kind() {
        K::NotFound => "no such file or directory".to_string(),
        K::PermissionDenied => "permission denied".to_string(),
        K::ConnectionRefused => "connection refused".to_string(),
        K::ConnectionReset => "connection reset".to_string(),
        K::ConnectionAborted => "connection aborted".to_string(),
        K::UnexpectedEof => "connection closed before the response was complete".to_string(),
        K::IsADirectory => "is a directory".to_string(),
        _ => e.to_string(),
    }
}

/// Opens and reads (at most `max_bytes + 1` bytes) on a helper thread, waiting for it only
/// until the deadline.
fn read_on_thread<R, F>(
    source: String,
    deadline: &Deadline,
    max_bytes: u64,
    open: F,
) -> Result<Vec<u8>, SourceError>
where
    R: Read,
    F: FnOnce() -> io::Result<R> + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let spawned = thread::Builder::new()
        .name("concierge-read".to_string())
        .spawn(move || {
            let result = open().and_then(|reader| {
                let mut buf = Vec::new();
                reader
                    .take(max_bytes.saturating_add(1))
                    .read_to_end(&mut buf)?;
                Ok(buf)
            });
            // The receiver is gone when the deadline passed first; nothing left to do then.
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(SourceError::Unreachable {
            source,
            detail: format!("cannot start a reader thread: {e}"),
        });
    }
    match rx.recv_timeout(deadline.remaining()) {
        Ok(Ok(buf)) if buf.len() as u64 > max_bytes => Err(SourceError::TooLarge {
            source,
            limit: max_bytes,
        }),
        Ok(Ok(buf)) => Ok(buf),
        Ok(Err(e)) if e.kind() == io::ErrorKind::TimedOut => Err(SourceError::Timeout { source }),
        Ok(Err(e)) => Err(SourceError::Unreachable {
            source,
            detail: io_detail(&e),
        }),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(SourceError::Timeout { source }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(SourceError::Unreachable {
            source,
            detail: "the reader thread ended without a result".to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    fn deadline(ms: u64) -> Deadline {
        Deadline::after(Duration::from_millis(ms))
    }

    /// A one-connection HTTP server on 127.0.0.1 that reads the request head and answers
    /// with `response`; returns the URL to fetch.
    fn serve_once(response: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let _ = read_request_head(&mut stream);
                let _ = stream.write_all(&response);
            }
        });
        format!("http://{addr}/metrics")
    }

    /// Reads the request head; returns it (lossy UTF-8).
    fn read_request_head(stream: &mut TcpStream) -> String {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    fn http(status: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn parses_sources() {
        assert_eq!("-".parse(), Ok(Source::Stdin));
        assert_eq!(
            "HTTPS://Example.com/m".parse(),
            Ok(Source::Url("HTTPS://Example.com/m".into()))
        );
        assert_eq!(
            DEFAULT_URL.parse(),
            Ok(Source::Url(DEFAULT_URL.to_string()))
        );
        assert_eq!(
            "metrics.json".parse(),
            Ok(Source::File(PathBuf::from("metrics.json")))
        );
        assert_eq!(
            "http:/oops".parse(),
            Ok(Source::File(PathBuf::from("http:/oops")))
        );
        assert_eq!("".parse::<Source>(), Err(EmptySource));
        assert_eq!(Source::Stdin.to_string(), "stdin");
        assert_eq!(Source::File("/a/b".into()).to_string(), "/a/b");
        assert_eq!(Source::Url(DEFAULT_URL.into()).to_string(), DEFAULT_URL);
    }

    #[test]
    fn reads_a_file_and_caps_its_size() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"{\"timers\":{}}").unwrap();
        let path = file.path().to_path_buf();
        let src = Source::File(path.clone());
        assert_eq!(src.fetch(&deadline(5000), 13).unwrap(), b"{\"timers\":{}}");
        let err = src.fetch(&deadline(5000), 12).unwrap_err();
        assert_eq!(
            err,
            SourceError::TooLarge {
                source: path.display().to_string(),
                limit: 12
            }
        );
    }

    #[test]
    fn missing_file_is_unreachable() {
        let err = Source::File("/nonexistent/concierge/metrics.json".into())
            .fetch(&deadline(5000), DEFAULT_MAX_BYTES)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read /nonexistent/concierge/metrics.json: no such file or directory"
        );
        assert!(!err.is_timeout());
    }

    #[test]
    fn a_blocked_reader_is_abandoned_at_the_deadline() {
        let (_hold, rx) = mpsc::channel::<()>();
        let start = Instant::now();
        let source = "blocked".to_string();
        let err = read_on_thread(source, &deadline(200), 10, move || {
            let _ = rx.recv();
            Ok(io::empty())
        })
        .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(
            err.to_string(),
            "timed out reading blocked (deadline reached)"
        );
    }

    #[test]
    fn fetches_a_url() {
        let body = br#"{"version":"4.0.0","timers":{}}"#;
        let url = serve_once(http("200 OK", body));
        let got = Source::Url(url).fetch(&deadline(5000), DEFAULT_MAX_BYTES);
        assert_eq!(got.unwrap(), body);
    }

    #[test]
    fn sends_accept_and_keeps_the_content_type() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let _ = tx.send(read_request_head(&mut stream));
                let body = b"up 1\n# EOF\n";
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; \
                         charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                let _ = stream.write_all(body);
            }
        });
        let doc = Source::Url(url)
            .fetch_document(
                &deadline(5000),
                100,
                "application/openmetrics-text;version=1.0.0",
            )
            .unwrap();
        assert_eq!(doc.body, b"up 1\n# EOF\n");
        assert_eq!(
            doc.content_type.as_deref(),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        let head = rx.recv().unwrap().to_ascii_lowercase();
        assert!(
            head.contains("\r\naccept: application/openmetrics-text;version=1.0.0\r\n"),
            "{head}"
        );
    }

    #[test]
    fn upper_case_scheme_works() {
        let url = serve_once(http("200 OK", b"{}"));
        let upper = url.replacen("http://", "HTTP://", 1);
        let src: Source = upper.parse().unwrap();
        assert_eq!(src.fetch(&deadline(5000), 100).unwrap(), b"{}");
    }

    #[test]
    fn non_2xx_is_an_http_status_error() {
        let url = serve_once(http("404 Not Found", b"no such servlet"));
        let err = Source::Url(url.clone())
            .fetch(&deadline(5000), DEFAULT_MAX_BYTES)
            .unwrap_err();
        assert_eq!(
            err,
            SourceError::HttpStatus {
                url: url.clone(),
                status: 404
            }
        );
        assert_eq!(
            err.to_string(),
            format!("{url} answered HTTP status 404 (expected 2xx)")
        );
    }

    #[test]
    fn oversized_body_is_too_large() {
        let url = serve_once(http("200 OK", &[b' '; 4096]));
        let err = Source::Url(url).fetch(&deadline(5000), 1000).unwrap_err();
        assert!(
            matches!(err, SourceError::TooLarge { limit: 1000, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn silent_server_times_out_within_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let server = thread::spawn(move || {
            // Accept, then hold the connection open without answering until the test ends.
            let conn = listener.accept();
            let _ = done_rx.recv_timeout(Duration::from_secs(10));
            drop(conn);
        });
        let start = Instant::now();
        let err = Source::Url(url.clone())
            .fetch(&deadline(300), DEFAULT_MAX_BYTES)
            .unwrap_err();
        let took = start.elapsed();
        let _ = done_tx.send(());
        server.join().unwrap();
        assert_eq!(err, SourceError::Timeout { source: url });
        assert!(err.is_timeout());
        assert!(took < Duration::from_millis(1300), "took {took:?}");
    }

    #[test]
    fn closed_port_is_unreachable() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/metrics");
        let err = Source::Url(url.clone())
            .fetch(&deadline(5000), DEFAULT_MAX_BYTES)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot reach {url}: connection refused")
        );
    }

    #[test]
    fn expired_deadline_times_out_at_once() {
        let d = deadline(0);
        let err = Source::Url("http://127.0.0.1:9/metrics".into())
            .fetch(&d, 10)
            .unwrap_err();
        assert!(err.is_timeout());
    }
}
