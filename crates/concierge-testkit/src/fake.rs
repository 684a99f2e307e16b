//! Fake and broken servers on 127.0.0.1, for faults a real one cannot produce: a metrics
//! endpoint (slow, stalled, failing), a port where nothing listens, a listener that never
//! answers, a trapper that records what it receives, and one whose answers a script decides
//! (a proxy group's redirects and resets, refusals, silence).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::trapper::zbxd_frame;

#[derive(Clone)]
enum Mode {
    Answer { status: u16, delay: Duration },
    Stalled,
}

struct ServerState {
    body: Mutex<Vec<u8>>,
    mode: Mutex<Mode>,
    stop: AtomicBool,
    requests: AtomicU64,
}

/// An HTTP/1.1 endpoint on 127.0.0.1 that serves one JSON body on any path, in its own
/// thread; it stops when dropped.
pub struct MetricsServer {
    port: u16,
    state: Arc<ServerState>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serve `body` (200, application/json).
    pub fn serve(body: Vec<u8>) -> Self {
        Self::start(
            body,
            Mode::Answer {
                status: 200,
                delay: Duration::ZERO,
            },
        )
    }

    /// Accept connections, read the request, and never answer.
    pub fn stalled() -> Self {
        Self::start(Vec::new(), Mode::Stalled)
    }

    /// Serve `body`, but only after `delay`.
    pub fn slow(body: Vec<u8>, delay: Duration) -> Self {
        Self::start(body, Mode::Answer { status: 200, delay })
    }

    /// Answer every request with HTTP `status` and `body`.
    pub fn with_status(status: u16, body: Vec<u8>) -> Self {
        Self::start(
            body,
            Mode::Answer {
                status,
                delay: Duration::ZERO,
            },
        )
    }

    fn start(body: Vec<u8>, mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local_addr").port();
        let state = Arc::new(ServerState {
            body: Mutex::new(body),
            mode: Mutex::new(mode),
            stop: AtomicBool::new(false),
            requests: AtomicU64::new(0),
        });
        let st = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let mut handlers = Vec::new();
            while !st.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let st = Arc::clone(&st);
                        handlers.push(std::thread::spawn(move || handle_http(stream, &st)));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for h in handlers {
                let _ = h.join();
            }
        });
        MetricsServer {
            port,
            state,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>/metrics`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serve `body` from the next request on.
    pub fn set_body(&self, body: Vec<u8>) {
        *self.state.body.lock().unwrap_or_else(|e| e.into_inner()) = body;
    }

    /// Answer from the next request on only after `delay` (zero: at once).
    pub fn set_delay(&self, delay: Duration) {
        let mut mode = self.state.mode.lock().unwrap_or_else(|e| e.into_inner());
        let status = match *mode {
            Mode::Answer { status, .. } => status,
            Mode::Stalled => 200,
        };
        *mode = Mode::Answer { status, delay };
    }

    /// How many requests were read so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Read an HTTP request head (up to the blank line); false if the peer went away first.
fn read_head(stream: &mut TcpStream, stop: &AtomicBool) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                head.extend_from_slice(&buf[..n]);
                if head.windows(4).any(|w| w == b"\r\n\r\n") {
                    return true;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Sleep `d` in small steps, giving up early when the server stops.
fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn handle_http(mut stream: TcpStream, st: &ServerState) {
    let _ = stream.set_nonblocking(false);
    if !read_head(&mut stream, &st.stop) {
        return;
    }
    st.requests.fetch_add(1, Ordering::SeqCst);
    let mode = st.mode.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match mode {
        Mode::Stalled => {
            // Hold the connection open, silent, until the server stops.
            while sleep_unless(&st.stop, Duration::from_millis(50)) {}
        }
        Mode::Answer { status, delay } => {
            if !sleep_unless(&st.stop, delay) {
                return;
            }
            let body = st.body.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let reason = if status == 200 { "OK" } else { "Error" };
            let head = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
            let _ = stream.shutdown(Shutdown::Write);
            // Drain what the client still sends so closing does not reset the connection.
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        }
    }
}

/// A port where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A listener that accepts connections and holds them open without ever writing.
pub struct StalledListener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A [`StalledListener`] and its port.
pub fn stalled_listener() -> (StalledListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("local_addr").port();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        let mut held = Vec::new();
        let mut sink = [0u8; 65536];
        while !flag.load(Ordering::SeqCst) {
            if let Ok((s, _)) = listener.accept() {
                let _ = s.set_nonblocking(true);
                held.push(s);
            }
            // Read (and discard) what arrives so the sender is never blocked on a full window.
            for s in &mut held {
                let _ = s.read(&mut sink);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    (
        StalledListener {
            stop,
            thread: Some(thread),
        },
        port,
    )
}

impl Drop for StalledListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A fake Zabbix trapper on 127.0.0.1: it reads one ZBXD-framed "sender data" request per
/// connection, records it, and answers that every value was processed (as 6.0 does).
pub struct FakeTrapper(ScriptedTrapper);

impl FakeTrapper {
    pub fn start() -> Self {
        FakeTrapper(ScriptedTrapper::taking())
    }

    /// `127.0.0.1:<port>`, for `-z`.
    pub fn address(&self) -> String {
        self.0.address()
    }

    /// The JSON of every request received so far, one per connection.
    pub fn requests(&self) -> Vec<Value> {
        self.0.requests()
    }
}

/// Read one uncompressed ZBXD-framed JSON request.
fn read_request(s: &mut TcpStream) -> anyhow::Result<Value> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut header = [0u8; 13];
    s.read_exact(&mut header).context("reading the header")?;
    if &header[..4] != b"ZBXD" || header[4] != 0x01 {
        bail!("unexpected header {header:?} (only uncompressed 0x01 is expected)");
    }
    let len = u32::from_le_bytes(header[5..9].try_into()?) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).context("reading the payload")?;
    serde_json::from_slice(&payload).context("payload is not JSON")
}

/// The reply of a trapper that took every value of `request` (6.0 and 7.0 alike).
pub fn processed_reply(request: &Value) -> Value {
    let n = request["data"].as_array().map_or(0, Vec::len);
    let info = format!("processed: {n}; failed: 0; total: {n}; seconds spent: 0.000100");
    json!({"response": "success", "info": info})
}

/// A 7.0 proxy group's redirect, the redirect block first as the server writes it
/// (zabbix7-lab.md).
pub fn redirect_reply(revision: u64, address: &str) -> Value {
    json!({"redirect": {"revision": revision, "address": address}, "response": "failed"})
}

/// A 7.0 proxy's "forget the redirect" (its contact with the server was lost too long).
pub fn reset_reply() -> Value {
    json!({"redirect": {"reset": true}, "response": "failed"})
}

/// What a [`ScriptedTrapper`] does with one request.
pub enum Scripted {
    Reply(Value),
    /// Read the request and never answer.
    Stall,
}

/// A script that answers every request with `reply`.
pub fn always(reply: Value) -> impl Fn(&Value) -> Scripted + Send + Sync + 'static {
    move |_| Scripted::Reply(reply.clone())
}

/// A script that takes every value.
pub fn take(request: &Value) -> Scripted {
    Scripted::Reply(processed_reply(request))
}

type Script = dyn Fn(&Value) -> Scripted + Send + Sync;

/// A fake trapper on 127.0.0.1 whose answer to each request a script decides (redirects,
/// resets, refusals, silence); it records every request it reads.
pub struct ScriptedTrapper {
    port: u16,
    seen: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ScriptedTrapper {
    /// Answer every request with `script(request)`.
    pub fn new(script: impl Fn(&Value) -> Scripted + Send + Sync + 'static) -> Self {
        Self::serving(usize::MAX, script)
    }

    /// As [`ScriptedTrapper::new`], but the port closes after `connections` connections (a
    /// proxy that went away).
    pub fn serving(
        connections: usize,
        script: impl Fn(&Value) -> Scripted + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local_addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (log, flag) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut served = 0;
            while served < connections && !flag.load(Ordering::SeqCst) {
                let Ok((s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                served += 1;
                let (script, log, flag) =
                    (Arc::clone(&script), Arc::clone(&log), Arc::clone(&flag));
                std::thread::spawn(move || answer_scripted(s, &*script, &log, &flag));
            }
        });
        ScriptedTrapper {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Answers the first request with `first`, every later one with `then` (a group that
    /// moved a host, a proxy that lost the server).
    pub fn changing(
        first: impl Fn(&Value) -> Scripted + Send + Sync + 'static,
        then: impl Fn(&Value) -> Scripted + Send + Sync + 'static,
    ) -> Self {
        let done = AtomicBool::new(false);
        Self::new(move |r| {
            if done.swap(true, Ordering::SeqCst) {
                then(r)
            } else {
                first(r)
            }
        })
    }

    /// Takes every value, as a trapper does for the hosts it holds.
    pub fn taking() -> Self {
        Self::new(take)
    }

    /// Redirects every request to `address` with `revision`.
    pub fn redirecting(revision: u64, address: &str) -> Self {
        Self::new(always(redirect_reply(revision, address)))
    }

    /// `127.0.0.1:<port>`, for `-z`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request read so far.
    pub fn requests(&self) -> Vec<Value> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The hosts of each request read so far: the values' hosts, or the host an
    /// active-checks request names.
    pub fn hosts(&self) -> Vec<Vec<String>> {
        let host = |v: &Value| v["host"].as_str().unwrap_or("?").to_string();
        self.requests()
            .iter()
            .map(|r| match r["data"].as_array() {
                Some(values) => values.iter().map(host).collect(),
                None => vec![host(r)],
            })
            .collect()
    }
}

fn answer_scripted(mut s: TcpStream, script: &Script, log: &Mutex<Vec<Value>>, stop: &AtomicBool) {
    let request = match read_request(&mut s) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "scripted trapper: {e:#}");
            return;
        }
    };
    let reply = script(&request);
    log.lock().unwrap_or_else(|e| e.into_inner()).push(request);
    match reply {
        Scripted::Reply(v) => {
            let _ = s.write_all(&zbxd_frame(v.to_string().as_bytes()));
        }
        Scripted::Stall => while sleep_unless(stop, Duration::from_millis(50)) {},
    }
}

impl Drop for ScriptedTrapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
