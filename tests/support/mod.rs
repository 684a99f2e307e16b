//! Shared support for the end-to-end tests: the Zabbix lab's JSON-RPC API, per-test hosts,
//! polling, the workspace binaries, a fake metrics endpoint, fake or broken Zabbix trappers,
//! and Dropwizard documents with their expected values.
//!
//! Every test file does `mod support;` and uses only part of this, hence the `dead_code` allow.
//! Nothing here calls into the code under test: expected item keys, documents and the
//! trapper protocol are written out independently, from Zabbix's own rules.

#![allow(dead_code)]

pub mod docker;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// The lab and its API
// ---------------------------------------------------------------------------------------------

/// The lab's API endpoint.
pub const API_URL: &str = "http://127.0.0.1:8088/api_jsonrpc.php";
/// The lab's trapper, as `-z` takes it.
pub const TRAPPER: &str = "127.0.0.1";
/// Host group every test host goes into.
pub const GROUP: &str = "Concierge";
/// Item value types (`items.value_type`).
pub const FLOAT: u8 = 0;
pub const UNSIGNED: u8 = 3;

/// `Ok(token)` once the lab answered and logged us in, `Err(why)` when it did not.
static SESSION: OnceLock<Result<String, String>> = OnceLock::new();
static GROUP_ID: Mutex<Option<String>> = Mutex::new(None);

/// A logged-in handle on the Zabbix lab. Cheap to copy; the session is per process.
#[derive(Clone)]
pub struct Lab {
    token: String,
}

fn api_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build(),
    )
}

fn rpc(
    agent: &ureq::Agent,
    method: &str,
    params: Value,
    auth: Option<&str>,
) -> anyhow::Result<Value> {
    let mut body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    if let Some(token) = auth {
        body["auth"] = Value::String(token.to_string());
    }
    let mut resp = agent
        .post(API_URL)
        .header("Content-Type", "application/json-rpc")
        .send(serde_json::to_vec(&body)?)
        .with_context(|| format!("{method}: POST {API_URL}"))?;
    let status = resp.status();
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(512 * 1024 * 1024)
        .read_to_vec()
        .with_context(|| format!("{method}: reading the reply"))?;
    let reply: Value = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{method}: HTTP {status}, not JSON: {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        )
    })?;
    if let Some(err) = reply.get("error") {
        bail!(
            "{method} failed: {} {} (code {})",
            err["message"].as_str().unwrap_or("?"),
            err["data"].as_str().unwrap_or(""),
            err["code"]
        );
    }
    reply
        .get("result")
        .cloned()
        .ok_or_else(|| anyhow!("{method}: reply has neither result nor error: {reply}"))
}

/// The name of the running test (its thread's name).
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

impl Lab {
    /// The lab, logged in, or `None` (after a visible SKIPPED line) when it is not running.
    /// With `CONCIERGE_REQUIRE_LAB=1` a missing lab is a failure instead.
    pub fn get() -> Option<Lab> {
        let session = SESSION.get_or_init(|| {
            let probe = api_agent(Duration::from_secs(2));
            let version =
                rpc(&probe, "apiinfo.version", json!({}), None).map_err(|e| format!("{e:#}"))?;
            let agent = api_agent(Duration::from_secs(10));
            let token = rpc(
                &agent,
                "user.login",
                json!({"username": "Admin", "password": "zabbix"}),
                None,
            )
            .map_err(|e| format!("API {version} answers, but logging in failed: {e:#}"))?;
            token
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("user.login returned {token}"))
        });
        match session {
            Ok(token) => Some(Lab {
                token: token.clone(),
            }),
            Err(why) => {
                if std::env::var("CONCIERGE_REQUIRE_LAB").as_deref() == Ok("1") {
                    panic!("Zabbix lab not reachable at {API_URL}: {why} (run `make lab`)");
                }
                // Straight to fd 2: libtest captures eprintln!, and a skip must be seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {}: no Zabbix lab at 127.0.0.1:8088 (run make lab, or make test)",
                    current_test()
                );
                None
            }
        }
    }

    /// Call an API method with the session's `auth` (6.0 style); errors carry the API's data.
    pub fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
        let agent = AGENT.get_or_init(|| api_agent(Duration::from_secs(180)));
        rpc(agent, method, params, Some(&self.token))
    }

    /// The id of the host group every test host goes into (created when missing).
    pub fn group_id(&self) -> anyhow::Result<String> {
        let mut cached = GROUP_ID.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = cached.as_ref() {
            return Ok(id.clone());
        }
        let found = self.call(
            "hostgroup.get",
            json!({"output": ["groupid"], "filter": {"name": [GROUP]}}),
        )?;
        let id = match found[0]["groupid"].as_str() {
            Some(id) => id.to_string(),
            None => {
                let made = self.call("hostgroup.create", json!({"name": GROUP}))?;
                str_at(&made, "/groupids/0")?
            }
        };
        *cached = Some(id.clone());
        Ok(id)
    }

    /// A new host named `name` in group Concierge, deleted again when the guard drops
    /// (unless `CONCIERGE_KEEP_HOSTS=1`). Trapper items need no interface.
    pub fn create_host(&self, name: &str) -> Host {
        let group = self.group_id().expect("host group Concierge");
        let made = self
            .call(
                "host.create",
                json!({"host": name, "groups": [{"groupid": group}]}),
            )
            .unwrap_or_else(|e| panic!("creating host {name}: {e:#}"));
        Host {
            lab: self.clone(),
            name: name.to_string(),
            hostid: str_at(&made, "/hostids/0").expect("host.create hostids"),
        }
    }
}

fn str_at(v: &Value, pointer: &str) -> anyhow::Result<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no string at {pointer} in {v}"))
}

fn num_at<T: std::str::FromStr>(v: &Value, field: &str) -> anyhow::Result<T> {
    let s = v[field]
        .as_str()
        .ok_or_else(|| anyhow!("no {field} in {v}"))?;
    s.parse()
        .map_err(|_| anyhow!("{field} {s:?} is not a number in {v}"))
}

/// A host that exists for one test. Dropping it deletes it, with everything on it.
pub struct Host {
    pub lab: Lab,
    pub name: String,
    pub hostid: String,
}

/// One item as `item.get` shows it (plain or discovered).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    pub key: String,
    pub itemid: String,
    pub value_type: u8,
    /// 0 = normal, 1 = not supported.
    pub state: u8,
    pub error: String,
    /// 0 = plain item, 4 = discovered by LLD.
    pub flags: u8,
}

/// One history row.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub itemid: String,
    pub clock: i64,
    pub ns: i64,
    pub value: String,
}

impl Host {
    /// A trapper LLD rule with key `key`; returns its item id.
    pub fn create_trapper_lld_rule(&self, key: &str) -> String {
        let made = self
            .lab
            .call(
                "discoveryrule.create",
                json!({"hostid": self.hostid, "name": key, "key_": key, "type": 2, "lifetime": "1h"}),
            )
            .unwrap_or_else(|e| panic!("creating LLD rule {key} on {}: {e:#}", self.name));
        str_at(&made, "/itemids/0").expect("discoveryrule.create itemids")
    }

    /// Trapper item prototypes on rule `ruleid`, one per key; returns their ids.
    pub fn create_trapper_prototypes(
        &self,
        ruleid: &str,
        keys: &[String],
        value_type: u8,
    ) -> Vec<String> {
        let params: Vec<Value> = keys
            .iter()
            .map(|k| {
                json!({"hostid": self.hostid, "ruleid": ruleid, "name": k, "key_": k,
                       "type": 2, "value_type": value_type})
            })
            .collect();
        let made = self
            .lab
            .call("itemprototype.create", Value::Array(params))
            .unwrap_or_else(|e| panic!("creating item prototypes on {}: {e:#}", self.name));
        ids(&made["itemids"])
    }

    /// One trapper item prototype on rule `ruleid`.
    pub fn create_trapper_prototype(&self, ruleid: &str, key: &str, value_type: u8) -> String {
        self.create_trapper_prototypes(ruleid, &[key.to_string()], value_type)
            .remove(0)
    }

    /// A plain trapper item; returns its id.
    pub fn create_trapper_item(&self, key: &str, value_type: u8) -> String {
        let made = self
            .lab
            .call(
                "item.create",
                json!({"hostid": self.hostid, "name": key, "key_": key, "type": 2, "value_type": value_type}),
            )
            .unwrap_or_else(|e| panic!("creating item {key} on {}: {e:#}", self.name));
        str_at(&made, "/itemids/0").expect("item.create itemids")
    }

    /// Every item on the host, plain and discovered (item.get returns both; prototypes and
    /// LLD rules are not items here).
    pub fn items(&self) -> anyhow::Result<Vec<ItemRow>> {
        let rows = self.lab.call(
            "item.get",
            json!({"output": ["itemid", "key_", "value_type", "state", "error", "flags"],
                   "hostids": [self.hostid]}),
        )?;
        rows.as_array()
            .ok_or_else(|| anyhow!("item.get returned {rows}"))?
            .iter()
            .map(|r| {
                Ok(ItemRow {
                    key: str_at(r, "/key_")?,
                    itemid: str_at(r, "/itemid")?,
                    value_type: num_at(r, "value_type")?,
                    state: num_at(r, "state")?,
                    error: str_at(r, "/error")?,
                    flags: num_at(r, "flags")?,
                })
            })
            .collect()
    }

    /// How many items the host has (cheap enough to poll with 11,000 items).
    pub fn item_count(&self) -> anyhow::Result<usize> {
        let n = self.lab.call(
            "item.get",
            json!({"countOutput": true, "hostids": [self.hostid]}),
        )?;
        n.as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("item.get countOutput returned {n}"))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::env::var("CONCIERGE_KEEP_HOSTS").as_deref() == Ok("1") {
            let _ = writeln!(
                std::io::stderr(),
                "kept host {} ({})",
                self.name,
                self.hostid
            );
            return;
        }
        if let Err(e) = self.lab.call("host.delete", json!([self.hostid])) {
            let _ = writeln!(
                std::io::stderr(),
                "could not delete host {}: {e:#}",
                self.name
            );
        }
    }
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every item of `items` on the lab's host (items_on_host in the brief).
pub fn items_on_host(host: &Host) -> anyhow::Result<Vec<ItemRow>> {
    host.items()
}

/// The history of `itemids` (all of one `value_type`), oldest first.
pub fn history(lab: &Lab, itemids: &[String], value_type: u8) -> anyhow::Result<Vec<HistoryRow>> {
    let rows = lab.call(
        "history.get",
        json!({"output": "extend", "history": value_type, "itemids": itemids,
               "sortfield": "clock", "sortorder": "ASC", "limit": 1_000_000}),
    )?;
    rows.as_array()
        .ok_or_else(|| anyhow!("history.get returned {rows}"))?
        .iter()
        .map(|r| {
            Ok(HistoryRow {
                itemid: str_at(r, "/itemid")?,
                clock: num_at(r, "clock")?,
                ns: num_at(r, "ns")?,
                value: str_at(r, "/value")?,
            })
        })
        .collect()
}

/// A host name no other test (or earlier run) uses: prefix, pid, time and a counter, in the
/// characters Zabbix allows, at most 64 long.
pub fn unique_host(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let suffix = format!(
        "-{}-{}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64 - suffix.len())
        .collect();
    format!("{clean}{suffix}")
}

// ---------------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------------

/// Poll `f` every 200 ms until it returns `Ok(Some(v))`, and return `v`. `Ok(None)` means
/// "not yet"; `Err(e)` also means "not yet" and is kept as the last observation. Panics after
/// `limit`, naming `what` and the last observation.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> T {
    let start = Instant::now();
    let mut last = String::from("(nothing observed yet)");
    let mut polls = 0u32;
    loop {
        polls += 1;
        match f() {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() >= limit {
            panic!(
                "timed out after {:.1?} ({polls} polls) waiting for {what}; last observation: {last}",
                start.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------
// The workspace binaries
// ---------------------------------------------------------------------------------------------

/// The workspace binary `name`, next to the test executable's directory (`target/<profile>/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: build it with cargo build --workspace",
        path.display()
    );
    // `cargo test` builds a member's binary only when that member has integration tests of
    // its own, so an old binary could be tested silently: refuse one older than any source
    // file cargo's dep-info (`<name>.d`) says it was built from.
    if let Some(newer) = newer_dependency(&path) {
        panic!(
            "{} is older than {}: build it with cargo build --workspace",
            path.display(),
            newer.display()
        );
    }
    path
}

/// A file listed in the binary's dep-info that was modified after the binary, if any.
fn newer_dependency(binary: &std::path::Path) -> Option<PathBuf> {
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let mut dep_info = binary.as_os_str().to_owned();
    dep_info.push(".d");
    let text = std::fs::read_to_string(PathBuf::from(dep_info)).ok()?;
    // "<binary>: dep dep ...": spaces inside paths are escaped as "\ ".
    let deps = text
        .lines()
        .next()?
        .split_once(": ")?
        .1
        .replace("\\ ", "\u{0}");
    deps.split_whitespace()
        .map(|d| PathBuf::from(d.replace('\u{0}', " ")))
        .find(|d| {
            std::fs::metadata(d)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m > built)
        })
}

/// What one run of a tool did.
pub struct Run {
    pub command: String,
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` → exit {:?} after {:.3?}\n--- stdout:\n{}--- stderr:\n{}---",
            self.command, self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// The single stdout line of a value-line tool; panics unless there is exactly one.
    pub fn value_line(&self) -> &str {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert!(
            lines.len() == 1 && self.stdout.ends_with('\n'),
            "expected exactly one stdout line:\n{self}"
        );
        lines[0]
    }

    /// Asserts exit status `code` and the value line `line`.
    pub fn assert_code(&self, code: i32, line: &str) {
        assert_eq!(self.code, Some(code), "exit status:\n{self}");
        assert_eq!(self.value_line(), line, "value line:\n{self}");
    }

    /// Asserts a successful value-line run and returns the elapsed seconds it printed.
    pub fn assert_success(&self) -> f64 {
        assert_eq!(self.code, Some(0), "exit status:\n{self}");
        let secs: f64 = self
            .value_line()
            .parse()
            .unwrap_or_else(|_| panic!("value line is not a number:\n{self}"));
        assert!(
            secs > 0.0 && secs.is_finite(),
            "elapsed must be > 0:\n{self}"
        );
        secs
    }
}

impl Run {
    /// Asserts exit status 0; the run, for its output.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "{self}");
        self
    }
}

/// A program started with its output piped (and collected as it comes); [`Started::finish`]
/// waits for it.
pub struct Started {
    command: String,
    started: Instant,
    child: std::process::Child,
    feeder: Option<JoinHandle<()>>,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

impl Started {
    /// Start `cmd`, named `command` in messages, feeding it `stdin` (else stdin is closed).
    fn spawn(cmd: &mut Command, command: String, stdin: Option<&[u8]>) -> Self {
        let started = Instant::now();
        let mut child = cmd
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
        let feeder = stdin.map(|bytes| {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            let bytes = bytes.to_vec();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            })
        });
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("stdout pipe")));
        let stderr = drain(Box::new(child.stderr.take().expect("stderr pipe")));
        Started {
            command,
            started,
            child,
            feeder,
            stdout,
            stderr,
        }
    }

    /// Wait for it to exit and collect what it did; kills it (and panics) after `limit`.
    pub fn finish(mut self, limit: Duration) -> Run {
        let command = self.command;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("`{command}` still running after {limit:?}: killed");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        if let Some(f) = self.feeder {
            let _ = f.join();
        }
        let text = |h: JoinHandle<Vec<u8>>| {
            String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
        };
        Run {
            command,
            code: status.code(),
            stdout: text(self.stdout),
            stderr: text(self.stderr),
            elapsed,
        }
    }
}

/// Start any program (`cmd`, stdin closed); [`Started::finish`] collects its [`Run`].
pub fn start_command(cmd: &mut Command) -> Started {
    let command = format!("{cmd:?}");
    Started::spawn(cmd, command, None)
}

/// Run any program (`cmd`, stdin closed), killing it after `limit`.
pub fn run_command(cmd: &mut Command, limit: Duration) -> Run {
    start_command(cmd).finish(limit)
}

/// Run workspace binary `name` with `args`, feeding `stdin`, killing it after `limit`.
pub fn run_tool(name: &str, args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Run {
    let path = bin(name);
    let command = std::iter::once(name.to_string())
        .chain(args.iter().map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"') {
                format!("{a:?}")
            } else {
                a.to_string()
            }
        }))
        .collect::<Vec<_>>()
        .join(" ");
    Started::spawn(Command::new(&path).args(args), command, stdin).finish(limit)
}

// ---------------------------------------------------------------------------------------------
// A metrics endpoint
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Broken and fake Zabbix trappers
// ---------------------------------------------------------------------------------------------

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
pub struct FakeTrapper {
    port: u16,
    requests: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeTrapper {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local_addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, flag) = (Arc::clone(&requests), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        if let Err(e) = serve_trapper(s, &reqs) {
                            let _ = writeln!(std::io::stderr(), "fake trapper: {e:#}");
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeTrapper {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:<port>`, for `-z`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The JSON of every request received so far, one per connection.
    pub fn requests(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for FakeTrapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Frame `payload` as Zabbix does: `ZBXD`, flags 0x01, u32le length, u32le 0.
pub fn zbxd_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + payload.len());
    out.extend_from_slice(b"ZBXD\x01");
    out.extend_from_slice(&u32::try_from(payload.len()).expect("< 4 GiB").to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn serve_trapper(mut s: TcpStream, requests: &Mutex<Vec<Value>>) -> anyhow::Result<()> {
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
    let request: Value = serde_json::from_slice(&payload).context("payload is not JSON")?;
    let n = request["data"].as_array().map_or(0, Vec::len);
    requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request);
    let info = format!("processed: {n}; failed: 0; total: {n}; seconds spent: 0.000100");
    let reply = json!({"response": "success", "info": info}).to_string();
    s.write_all(&zbxd_frame(reply.as_bytes()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Documents, keys and the input format, written from Zabbix's rules (not the code under test)
// ---------------------------------------------------------------------------------------------

/// The 11 statistics the courier delivers for a timer by default.
pub const DEFAULT_TIMER_STATS: [&str; 11] = [
    "count",
    "max",
    "mean",
    "mean_rate",
    "min",
    "p75",
    "p95",
    "p98",
    "p99",
    "p999",
    "stddev",
];

/// Every numeric field of a Dropwizard 4.x timer, with a rank that orders them plausibly
/// (min < p50 < mean < p75 < … < max) and makes every value distinct.
const TIMER_FIELDS: [(&str, u32); 15] = [
    ("min", 1),
    ("p50", 2),
    ("mean", 3),
    ("p75", 4),
    ("p95", 5),
    ("p98", 6),
    ("p99", 7),
    ("p999", 8),
    ("max", 9),
    ("stddev", 10),
    ("m15_rate", 11),
    ("m1_rate", 12),
    ("m5_rate", 13),
    ("mean_rate", 14),
    ("count", 0),
];

/// The value of field `rank` of the `i`-th timer: unique for every (i < 10,000, field).
fn timer_value(i: usize, rank: u32) -> f64 {
    if rank == 0 {
        // count: an integer, as Dropwizard writes it.
        return (1_000_000 + i * 17) as f64;
    }
    (f64::from(rank) * 10_000.0 + i as f64) / 1000.0 + 0.000_123_4
}

/// A Dropwizard 4.x document whose `timers` hold `names` (all 17 timer fields each; the other
/// sections empty), and the expected value of each `(name, stat)` for the 11 default stats.
pub fn dropwizard_timers(names: &[&str]) -> (Vec<u8>, BTreeMap<(String, String), f64>) {
    let mut timers = serde_json::Map::new();
    let mut expected = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let mut t = serde_json::Map::new();
        for (field, rank) in TIMER_FIELDS {
            let v = timer_value(i, rank);
            let jv = if rank == 0 { json!(v as u64) } else { json!(v) };
            t.insert(field.to_string(), jv);
            if DEFAULT_TIMER_STATS.contains(&field) {
                expected.insert((name.to_string(), field.to_string()), v);
            }
        }
        t.insert("duration_units".into(), json!("milliseconds"));
        t.insert("rate_units".into(), json!("calls/second"));
        let previous = timers.insert(name.to_string(), Value::Object(t));
        assert!(previous.is_none(), "duplicate timer name {name:?}");
    }
    let doc = json!({
        "version": "4.0.0",
        "gauges": {},
        "counters": {},
        "histograms": {},
        "meters": {},
        "timers": timers,
    });
    (
        serde_json::to_vec_pretty(&doc).expect("serialize"),
        expected,
    )
}

/// Zabbix's `quote_key_param(param, forced = 0)`: quote when the parameter starts with `"`, a
/// space or `[`, or contains `,` or `]`; quoting wraps it in `"` and escapes `"` as `\"`.
pub fn zabbix_quote(param: &str) -> String {
    let needs = param.starts_with(['"', ' ', '[']) || param.contains(',') || param.contains(']');
    assert!(
        !(needs && param.ends_with('\\')),
        "{param:?} needs quoting but ends with a backslash: Zabbix cannot encode it"
    );
    if needs {
        format!("\"{}\"", param.replace('"', "\\\""))
    } else {
        param.to_string()
    }
}

/// The key the server gives the item of prototype `timer[{#TIMER}.STAT]` for timer `name`.
pub fn timer_key(name: &str, stat: &str) -> String {
    format!("timer[{}]", zabbix_quote(&format!("{name}.{stat}")))
}

/// The expected key → value map of a timers document's expectation.
pub fn expected_by_key(expected: &BTreeMap<(String, String), f64>) -> BTreeMap<String, f64> {
    expected
        .iter()
        .map(|((name, stat), v)| (timer_key(name, stat), *v))
        .collect()
}

/// A quoted field of a zabbix_sender input line: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub fn input_quote(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

/// The LLD document `{"data":[{"<macro>":"name"},…]}` for `names`, in order.
pub fn lld_json(lld_macro: &str, names: &[&str]) -> String {
    let rows: Vec<Value> = names.iter().map(|n| json!({ lld_macro: n })).collect();
    json!({ "data": rows }).to_string()
}

/// True when `got` equals `want` within a relative 1e-9 (Zabbix stores doubles).
pub fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1e-300)
}

/// The keys in `a` and not in `b`, and in `b` and not in `a`, for assertion messages.
pub fn key_diff(a: &BTreeSet<String>, b: &BTreeSet<String>) -> String {
    let only_a: Vec<_> = a.difference(b).take(10).collect();
    let only_b: Vec<_> = b.difference(a).take(10).collect();
    format!("expected but missing: {only_a:?}; present but unexpected: {only_b:?}")
}

// ---------------------------------------------------------------------------------------------
// Heartbeat tests: templates, actions, problems, a raw trapper send, and long-running tools
// ---------------------------------------------------------------------------------------------

/// The repository root (the root package's manifest directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The name of the heartbeat template in zabbix-templates/concierge_heartbeat.yaml.
pub const HEARTBEAT_TEMPLATE: &str = "Concierge heartbeat";

/// Write straight to fd 2 (libtest captures `eprintln!`): timings and skips must be seen.
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Nanoseconds since the epoch, as history's `clock`/`ns` count them.
pub fn epoch_ns(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_default()
}

impl HistoryRow {
    /// `clock` and `ns` as one nanosecond count.
    pub fn at_ns(&self) -> i128 {
        i128::from(self.clock) * 1_000_000_000 + i128::from(self.ns)
    }
}

impl Lab {
    /// Import `zabbix-templates/<file>` with configuration.import (groups, templates, items and
    /// triggers: create missing, update existing). Importing again is a no-op.
    pub fn import_template_file(&self, file: &str) -> anyhow::Result<()> {
        let path = repo_root().join("zabbix-templates").join(file);
        let yaml = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let both = json!({"createMissing": true, "updateExisting": true});
        let all = json!({"createMissing": true, "updateExisting": true, "deleteMissing": true});
        let rules = json!({"groups": both, "templates": both, "items": all, "triggers": all,
                           "discoveryRules": all, "templateLinkage": {"createMissing": true}});
        self.call(
            "configuration.import",
            json!({"format": "yaml", "source": yaml, "rules": rules}),
        )
        .with_context(|| format!("importing {}", path.display()))?;
        Ok(())
    }

    /// The id of the template whose technical name is `name`.
    pub fn template_id(&self, name: &str) -> anyhow::Result<String> {
        let found = self.call(
            "template.get",
            json!({"output": ["templateid"], "filter": {"host": [name]}}),
        )?;
        str_at(&found, "/0/templateid").with_context(|| format!("template {name:?}"))
    }

    /// The heartbeat template, imported once per test process; returns its id.
    pub fn heartbeat_template(&self) -> String {
        static IMPORTED: Mutex<Option<String>> = Mutex::new(None);
        let mut id = IMPORTED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = id.as_ref() {
            return id.clone();
        }
        // Another process may import the same file at the same moment: retry a few times.
        let mut tries = 0;
        let imported = loop {
            tries += 1;
            match self.import_template_file("concierge_heartbeat.yaml") {
                Ok(()) => break self.template_id(HEARTBEAT_TEMPLATE),
                Err(e) if tries < 5 => {
                    note(&format!("template import failed (retrying): {e:#}"));
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => break Err(e),
            }
        };
        let imported = imported.unwrap_or_else(|e| panic!("heartbeat template: {e:#}"));
        *id = Some(imported.clone());
        imported
    }

    /// Like [`Lab::create_host`], with more `host.create` parameters (`templates`, `macros`…).
    pub fn create_host_with(&self, name: &str, extra: Value) -> Host {
        let group = self.group_id().expect("host group Concierge");
        let mut params = json!({"host": name, "groups": [{"groupid": group}]});
        if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        let made = self
            .call("host.create", params)
            .unwrap_or_else(|e| panic!("creating host {name}: {e:#}"));
        Host {
            lab: self.clone(),
            name: name.to_string(),
            hostid: str_at(&made, "/hostids/0").expect("host.create hostids"),
        }
    }

    /// A new action (`action.create` with `params`), deleted again when the guard drops.
    pub fn create_action(&self, params: Value) -> Action {
        let name = params["name"].as_str().unwrap_or("?").to_string();
        let made = self
            .call("action.create", params)
            .unwrap_or_else(|e| panic!("creating action {name:?}: {e:#}"));
        Action {
            lab: self.clone(),
            name,
            actionid: str_at(&made, "/actionids/0").expect("action.create actionids"),
        }
    }

    /// The host named `name` with its parent templates and groups, if it exists.
    pub fn host_by_name(&self, name: &str) -> anyhow::Result<Option<Value>> {
        let found = self.call(
            "host.get",
            json!({"output": ["hostid", "host"], "filter": {"host": [name]},
                   "selectParentTemplates": ["templateid", "host"],
                   "selectGroups": ["groupid", "name"]}),
        )?;
        Ok(found.as_array().and_then(|a| a.first()).cloned())
    }

    /// The open problems of host `hostid` (problem.get, output extend).
    pub fn problems(&self, hostid: &str) -> anyhow::Result<Vec<Value>> {
        let found = self.call(
            "problem.get",
            json!({"output": "extend", "hostids": [hostid]}),
        )?;
        found
            .as_array()
            .cloned()
            .ok_or_else(|| anyhow!("problem.get returned {found}"))
    }
}

/// An action that exists for one test. Dropping it deletes it.
pub struct Action {
    pub lab: Lab,
    pub name: String,
    pub actionid: String,
}

impl Drop for Action {
    fn drop(&mut self) {
        if let Err(e) = self.lab.call("action.delete", json!([self.actionid])) {
            note(&format!("could not delete action {:?}: {e:#}", self.name));
        }
    }
}

/// Deletes the host named `name`, if it exists by then, when dropped: for hosts that the
/// server creates (autoregistration) rather than the test.
pub struct HostNamed {
    pub lab: Lab,
    pub name: String,
}

impl Drop for HostNamed {
    fn drop(&mut self) {
        if std::env::var("CONCIERGE_KEEP_HOSTS").as_deref() == Ok("1") {
            return;
        }
        let ids = self.lab.call(
            "host.get",
            json!({"output": ["hostid"], "filter": {"host": [self.name]}}),
        );
        let ids: Vec<Value> = match ids {
            Ok(v) => v
                .as_array()
                .map(|a| a.iter().map(|h| h["hostid"].clone()).collect())
                .unwrap_or_default(),
            Err(e) => {
                note(&format!("could not look up host {}: {e:#}", self.name));
                return;
            }
        };
        if !ids.is_empty() {
            if let Err(e) = self.lab.call("host.delete", Value::Array(ids)) {
                note(&format!("could not delete host {}: {e:#}", self.name));
            }
        }
    }
}

impl Host {
    /// The id of the item with key `key` on this host (plain or from a template).
    pub fn item_id(&self, key: &str) -> anyhow::Result<String> {
        self.items()?
            .into_iter()
            .find(|i| i.key == key)
            .map(|i| i.itemid)
            .ok_or_else(|| anyhow!("no item {key} on {}", self.name))
    }
}

/// Send one value to the lab's trapper with a hand-written "sender data" request (no code
/// under test); returns the server's `(processed, failed)`.
pub fn trapper_send(host: &str, key: &str, value: &str) -> anyhow::Result<(u64, u64)> {
    let request = json!({"request": "sender data",
                         "data": [{"host": host, "key": key, "value": value}]});
    let mut s = TcpStream::connect((TRAPPER, 10051)).context("connecting to the trapper")?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&zbxd_frame(request.to_string().as_bytes()))?;
    let mut header = [0u8; 13];
    s.read_exact(&mut header)
        .context("reading the reply header")?;
    if &header[..5] != b"ZBXD\x01" {
        bail!("unexpected reply header {header:?}");
    }
    let len = u32::from_le_bytes(header[5..9].try_into()?) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).context("reading the reply")?;
    let reply: Value = serde_json::from_slice(&body).context("reply is not JSON")?;
    let info = reply["info"].as_str().unwrap_or_default();
    let field = |name: &str| -> anyhow::Result<u64> {
        info.split(';')
            .filter_map(|part| part.trim().split_once(": "))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| anyhow!("no {name} in reply {reply}"))
    };
    Ok((field("processed")?, field("failed")?))
}

/// Send `value` to `host`'s `key` until the server accepts it (its configuration cache knows
/// the item); returns how long that took.
pub fn wait_until_accepted(host: &str, key: &str, value: &str) -> Duration {
    let start = Instant::now();
    wait_for(
        &format!("the server to accept {key} on {host}"),
        Duration::from_secs(30),
        || match trapper_send(host, key, value)? {
            (1, 0) => Ok(Some(())),
            other => Err(anyhow!("processed/failed = {other:?}")),
        },
    );
    start.elapsed()
}

/// A workspace binary running in the background, its stdout and stderr collected as they
/// come. Dropping it SIGKILLs the process if it still runs (and reaps it).
pub struct Coprocess {
    pub command: String,
    child: std::process::Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<std::process::ExitStatus>,
    /// When it was started.
    pub started: Instant,
    /// The wall-clock time it was started, for comparing with history clocks.
    pub started_at: SystemTime,
}

impl Coprocess {
    /// Start workspace binary `name` with `args` (stdin closed).
    pub fn spawn(name: &str, args: &[&str]) -> Self {
        let path = bin(name);
        let command = std::iter::once(name)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let started_at = SystemTime::now();
        let started = Instant::now();
        let mut child = Command::new(&path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let collect = |mut r: Box<dyn Read + Send>, into: Arc<Mutex<Vec<u8>>>| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    into.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
            })
        };
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(
                Box::new(child.stdout.take().expect("stdout pipe")),
                Arc::clone(&stdout),
            ),
            collect(
                Box::new(child.stderr.take().expect("stderr pipe")),
                Arc::clone(&stderr),
            ),
        ];
        Coprocess {
            command,
            child,
            stdout,
            stderr,
            readers,
            status: None,
            started,
            started_at,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Its exit status, if it has exited (`try_wait`).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Panics (with its output) unless it is still running.
    pub fn assert_running(&mut self, while_doing: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited ({status}) while {while_doing}\n{self}",
                self.command
            );
        }
    }

    /// Send signal `sig` (`TERM`, `INT`…) with kill(1), an argument vector.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(
            status.success(),
            "kill -{sig} {} failed: {status}",
            self.pid()
        );
    }

    /// SIGKILL it (`Child::kill`).
    pub fn kill(&mut self) {
        self.child.kill().expect("Child::kill");
    }

    /// Wait up to `limit` for it to exit; returns the status and how long the wait took.
    /// Panics (after a SIGKILL) if it is still running then.
    pub fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                let waited = start.elapsed();
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return (status, waited);
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} still running {limit:?} later: killed\n{self}",
                    self.command
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then wait up to `limit`; returns the exit code and how long the stop took.
    pub fn terminate(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        self.signal("TERM");
        let (status, _) = self.wait_exit(limit);
        (status.code(), start.elapsed())
    }
}

impl fmt::Display for Coprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` (pid {}, started {:.1?} ago)\n--- stdout:\n{}--- stderr:\n{}---",
            self.command,
            self.child.id(),
            self.started.elapsed(),
            self.stdout(),
            self.stderr()
        )
    }
}

impl Drop for Coprocess {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
