//! Real Prometheus peers for the tests, none of them ours: PyPI's prometheus_client (a
//! registry of every type, its HTTP handler and its own parsers, via scripts/prometheus_peer.py),
//! Debian's prometheus-node-exporter, and a Prometheus 2.42 server scraping static copies of
//! the same documents, read back through its HTTP API (and promtool). Expected item keys are
//! built here from the peers' own (name, labels), by the template's prototype
//! `prometheus[{#METRIC},{#LABELS}]` and Zabbix's quoting rule, never by the code under test.
//!
//! Ports (127.0.0.1): Prometheus 9190, the static documents 9191, node exporter 9192, the
//! prometheus_client HTTP peer 9193.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::{bin, current_test, repo_root, wait_for, zabbix_quote, Daemon};

pub const PROMETHEUS_PORT: u16 = 9190;
pub const STATIC_PORT: u16 = 9191;
pub const NODE_EXPORTER_PORT: u16 = 9192;
pub const PEER_PORT: u16 = 9193;

/// A sample as a peer reports it: name, labels, value text.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// Seconds since the epoch, when the sample has its own timestamp.
    pub timestamp: Option<f64>,
    /// The family's type, when the peer says (prometheus_client's parsers do).
    pub kind: Option<String>,
}

/// True when the peers are installed; otherwise a visible SKIPPED line (a failure when
/// CONCIERGE_REQUIRE_LAB=1, as in `make test`, whose prerequisite installs them).
pub fn peers_installed() -> bool {
    let missing: Vec<&str> = [
        "/usr/bin/prometheus",
        "/usr/bin/promtool",
        "/usr/bin/prometheus-node-exporter",
    ]
    .into_iter()
    .filter(|p| !Path::new(p).is_file())
    .collect();
    let client = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if missing.is_empty() && client {
        return true;
    }
    let why = format!(
        "missing {missing:?}{} (run scripts/install-prometheus-peers.sh)",
        if client {
            ""
        } else {
            " and python3's prometheus_client"
        }
    );
    if std::env::var("CONCIERGE_REQUIRE_LAB").as_deref() == Ok("1") {
        panic!("Prometheus peers not installed: {why}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {}: {why}", current_test());
    false
}

fn peer_script() -> PathBuf {
    repo_root().join("scripts").join("prometheus_peer.py")
}

/// A fixture of the core crate's tests (written by prometheus_peer.py).
pub fn fixture(name: &str) -> PathBuf {
    repo_root()
        .join("crates/concierge-core/tests/fixtures")
        .join(name)
}

/// Every sample prometheus_client's own parser reads from `file` (`text` or `openmetrics`).
pub fn client_parse(format: &str, file: &Path) -> Vec<PeerSample> {
    let out = Command::new("python3")
        .arg(peer_script())
        .args(["parse", format])
        .arg(file)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "prometheus_client parse failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("JSON line");
            let value: f64 = v[2]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("value text");
            PeerSample {
                name: v[0].as_str().expect("name").to_string(),
                labels: v[1]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().expect("label value").to_string()))
                    .collect(),
                value,
                timestamp: v[3].as_str().map(|t| t.parse().expect("timestamp text")),
                kind: v[4].as_str().map(str::to_string),
            }
        })
        .collect()
}

/// Writes prometheus_client's exposition of the test registry (`text` or `openmetrics`).
pub fn client_write(format: &str, utf8: bool, file: &Path) {
    let mut cmd = Command::new("python3");
    cmd.arg(peer_script()).args(["write", format]);
    if utf8 {
        cmd.arg("--utf8");
    }
    let status = cmd.arg(file).status().expect("python3");
    assert!(status.success());
}

/// The canonical label set of the template's `{#LABELS}`, written from the exposition
/// rules: sorted by name, values with `\`, `"` and newline escaped, names that are not
/// `[a-zA-Z_][a-zA-Z0-9_]*` quoted.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    labels
        .iter()
        .map(|(k, v)| {
            let legacy = k.chars().next().is_some_and(|c| !c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let name = if legacy {
                k.clone()
            } else {
                format!("\"{}\"", esc(k))
            };
            format!("{name}=\"{}\"", esc(v))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The template's discovery rule for a metric type (its prototypes' key is
/// `prometheus.<rule>[{#METRIC},{#LABELS}]`).
pub fn rule_of(kind: &str) -> &'static str {
    match kind {
        "counter" => "counter",
        "gauge" | "unknown" | "untyped" => "gauge",
        "histogram" | "gaugehistogram" => "histogram",
        "summary" => "summary",
        "info" | "stateset" => "state",
        other => panic!("metric type {other:?}"),
    }
}

/// The item key the server makes from `prometheus.<rule>[{#METRIC},{#LABELS}]` for a
/// sample. Labels with empty values are left out: the Prometheus data model (and
/// OpenMetrics) say they are the same as no label, and a Prometheus server drops them.
pub fn item_key(rule: &str, name: &str, labels: &BTreeMap<String, String>) -> String {
    let mut labels = labels.clone();
    labels.retain(|_, v| !v.is_empty());
    format!(
        "prometheus.{rule}[{},{}]",
        zabbix_quote(name),
        zabbix_quote(&labels_text(&labels))
    )
}

/// The series part of a key (`[name,labels]`), for oracles that do not know types.
pub fn series_part(key: &str) -> &str {
    &key[key.find('[').expect("key with parameters")..]
}

/// The expected key → value of the samples the courier delivers: every finite sample but
/// `_created` ones (creation timestamps), keyed by [`item_key`].
pub fn expected_values(samples: &[PeerSample]) -> BTreeMap<String, (f64, Option<f64>)> {
    samples
        .iter()
        .filter(|s| s.value.is_finite() && !s.name.ends_with("_created"))
        .map(|s| {
            let rule = rule_of(s.kind.as_deref().expect("the peer's type"));
            (item_key(rule, &s.name, &s.labels), (s.value, s.timestamp))
        })
        .collect()
}

/// Unquotes one field of a zabbix_sender input line (`"…"` with `\\`, `\"`, `\n`).
fn unquote(field: &str) -> String {
    let inner = field
        .strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .unwrap_or(field);
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits a zabbix_sender input line into fields (quoted ones may hold blanks).
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == ' ' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        if b[i] == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else {
            while i < b.len() && b[i] != ' ' {
                i += 1;
            }
        }
        out.push(unquote(
            &b[start..i.min(b.len())].iter().collect::<String>(),
        ));
    }
    out
}

/// key → (value, clock) of a `--dry-run -T` run's stdout (`host key clock value`).
pub fn dry_run_values(stdout: &str) -> BTreeMap<String, (f64, u64)> {
    let mut out = BTreeMap::new();
    for line in stdout.lines() {
        let f = fields(line);
        assert_eq!(f.len(), 4, "dry-run line {line:?}");
        let value: f64 = f[3].parse().unwrap_or_else(|_| panic!("value in {line:?}"));
        let clock: u64 = f[2].parse().expect("clock");
        assert!(
            out.insert(f[1].clone(), (value, clock)).is_none(),
            "key twice: {}",
            f[1]
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Static documents over HTTP, node exporter, the prometheus_client HTTP peer
// ---------------------------------------------------------------------------------------------

/// An HTTP server on 127.0.0.1:`port` that answers GET /<name> with a fixed body and
/// Content-Type; it stops when dropped.
pub struct StaticServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StaticServer {
    pub fn start(port: u16, docs: Vec<(String, String, Vec<u8>)>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let docs = Arc::new(docs);
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let docs = Arc::clone(&docs);
                        std::thread::spawn(move || serve_one(stream, &docs));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        StaticServer {
            stop,
            thread: Some(thread),
        }
    }
}

fn serve_one(mut stream: TcpStream, docs: &[(String, String, Vec<u8>)]) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = std::io::BufReader::new(&stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match std::io::BufRead::read_line(&mut reader, &mut line) {
            Ok(n) if n > 0 && line != "\r\n" => head.push_str(&line),
            Ok(n) if n > 0 => break,
            _ => return,
        }
    }
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let found = docs
        .iter()
        .find(|(p, _, _)| path.trim_start_matches('/') == p);
    let (status, ctype, body): (&str, &str, &[u8]) = match found {
        Some((_, c, b)) => ("200 OK", c, b),
        None => ("404 Not Found", "text/plain", b"not found"),
    };
    let _ = stream.write_all(
        format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
            .as_bytes(),
    );
    let _ = stream.write_all(body);
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().map(JoinHandle::join);
    }
}

/// GET `url` (up to 64 MiB); the body.
pub fn http_get(url: &str, accept: &str) -> anyhow::Result<Vec<u8>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut resp = agent
        .get(url)
        .header("Accept", accept)
        .call()
        .with_context(|| format!("GET {url}"))?;
    Ok(resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()?)
}

/// One exposition of Debian's node exporter (text 0.0.4), fetched once per test process
/// and kept: node exporter's values move, so every comparison reads this same copy.
pub fn node_exporter_snapshot() -> &'static [u8] {
    static SNAPSHOT: OnceLock<Vec<u8>> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let _d = Daemon::spawn(
            "prometheus-node-exporter",
            Command::new("/usr/bin/prometheus-node-exporter").arg(format!(
                "--web.listen-address=127.0.0.1:{NODE_EXPORTER_PORT}"
            )),
        );
        let url = format!("http://127.0.0.1:{NODE_EXPORTER_PORT}/metrics");
        wait_for("node exporter to answer", Duration::from_secs(30), || {
            http_get(&url, "text/plain").map(Some)
        })
    })
}

// ---------------------------------------------------------------------------------------------
// A Prometheus server
// ---------------------------------------------------------------------------------------------

/// Prometheus 2.42 on 127.0.0.1:9190, scraping `jobs` (job name → path on
/// 127.0.0.1:9191) every second, with its TSDB in a temporary directory.
pub struct Prometheus {
    _daemon: Daemon,
    dir: PathBuf,
}

impl Prometheus {
    pub fn start(jobs: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("concierge-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (job, path) in jobs {
            config.push_str(&format!(
                "  - job_name: {job}\n    metrics_path: /{path}\n    static_configs:\n      - targets: ['127.0.0.1:{STATIC_PORT}']\n"
            ));
        }
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let daemon = Daemon::spawn(
            "prometheus",
            Command::new("/usr/bin/prometheus")
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}")),
        );
        let p = Prometheus {
            _daemon: daemon,
            dir,
        };
        for (job, _) in jobs {
            wait_for(
                &format!("Prometheus to scrape job {job}"),
                Duration::from_secs(90),
                || {
                    let up = p.query(&format!("up{{job=\"{job}\"}}"))?;
                    let n = p.query(&format!("count({{job=\"{job}\"}})"))?;
                    match (up.first(), n.first()) {
                        (Some((_, u)), Some(_)) if u == "1" => Ok(Some(())),
                        _ => Err(anyhow!("up: {up:?}")),
                    }
                },
            );
        }
        p
    }

    /// An instant query through the HTTP API: (labels with __name__, value text) per series.
    pub fn query(&self, expr: &str) -> anyhow::Result<Vec<(BTreeMap<String, String>, String)>> {
        let url = format!("http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut resp = agent
            .get(&url)
            .query("query", expr)
            .call()
            .with_context(|| format!("query {expr}"))?;
        let v: Value = serde_json::from_slice(
            &resp
                .body_mut()
                .with_config()
                .limit(256 << 20)
                .read_to_vec()?,
        )?;
        if v["status"] != "success" {
            bail!("query {expr}: {v}");
        }
        Ok(v["data"]["result"]
            .as_array()
            .ok_or_else(|| anyhow!("no result in {v}"))?
            .iter()
            .map(|r| {
                let labels = metric_labels(r);
                (labels, r["value"][1].as_str().unwrap_or("").to_string())
            })
            .collect())
    }

    /// The same query through promtool (the peer's own client), as JSON.
    pub fn promtool_query(&self, expr: &str) -> anyhow::Result<Value> {
        let out = Command::new("/usr/bin/promtool")
            .args([
                "query",
                "instant",
                "-o",
                "json",
                &format!("http://127.0.0.1:{PROMETHEUS_PORT}"),
                expr,
            ])
            .output()?;
        if !out.status.success() {
            bail!("promtool: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Every sample of `job` at the last scrape, without the target labels Prometheus adds.
    pub fn samples(&self, job: &str) -> Vec<PeerSample> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self.query(&format!("{{job=\"{job}\"}}")).expect("query");
            if !rows.is_empty() || Instant::now() > deadline {
                return rows
                    .into_iter()
                    .map(|(mut labels, value)| {
                        let name = labels.remove("__name__").unwrap_or_default();
                        labels.remove("job");
                        labels.remove("instance");
                        PeerSample {
                            name,
                            labels,
                            value: parse_prom_value(&value),
                            timestamp: None,
                            kind: None,
                        }
                    })
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The labels of one result of a Prometheus query (the API's or promtool's JSON).
pub fn metric_labels(result: &Value) -> BTreeMap<String, String> {
    let Some(m) = result["metric"].as_object() else {
        return BTreeMap::new();
    };
    m.iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect()
}

/// A value as the Prometheus API writes it (`"1027"`, `"NaN"`, `"+Inf"`).
pub fn parse_prom_value(v: &str) -> f64 {
    match v {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().unwrap_or_else(|_| panic!("value {other:?}")),
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A temporary file holding `body`, removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, body: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("concierge-{}-{name}", std::process::id()));
        std::fs::write(&path, body).expect("temp file");
        TempFile(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// A Zabbix agent running the shipped UserParameters
// ---------------------------------------------------------------------------------------------

/// A zabbix_agentd of the test's own (active checks only), with the shipped UserParameter
/// file pointed at this checkout's binaries; stopped when dropped.
pub struct ShippedAgent {
    _daemon: Daemon,
    pub dir: PathBuf,
}

impl ShippedAgent {
    /// Starts the agent for `host`, sending to the trapper at `server` (`host:port`).
    pub fn start(host: &str, server: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("concierge-prom-agent-{host}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("agent dir");
        let conf = dir.join("zabbix_agentd.conf");
        let shipped = std::fs::read_to_string(
            repo_root().join("zabbix-templates/userparameter_concierge.conf"),
        )
        .expect("shipped UserParameter file");
        let bin_dir = bin("concierge-courier")
            .parent()
            .expect("target dir")
            .to_path_buf();
        let replacements = [
            ("/usr/local/bin/", format!("{}/", bin_dir.display())),
            ("/etc/zabbix/zabbix_agentd.conf", conf.display().to_string()),
            (
                "/var/log/zabbix-agent/concierge.log",
                dir.join("tools.log").display().to_string(),
            ),
        ];
        let userparameters = replacements.iter().fold(shipped, |text, (from, to)| {
            assert!(
                text.contains(from),
                "the shipped UserParameter file lost {from}"
            );
            text.replace(from, to)
        });
        let include = dir.join("userparameters.conf");
        std::fs::write(&include, userparameters).expect("UserParameters");
        let settings = [
            format!("Hostname={host}"),
            format!("ServerActive={server}"),
            "Server=127.0.0.1".into(),
            "StartAgents=0".into(),
            "AllowRoot=1".into(),
            "Timeout=6".into(),
            "RefreshActiveChecks=60".into(),
            "BufferSend=1".into(),
            "LogType=file".into(),
            format!("LogFile={}", dir.join("agent.log").display()),
            format!("PidFile={}", dir.join("agent.pid").display()),
            format!("Include={}", include.display()),
        ];
        std::fs::write(&conf, settings.join("\n") + "\n").expect("agent conf");
        let daemon = Daemon::spawn(
            "zabbix_agentd",
            Command::new("/usr/sbin/zabbix_agentd")
                .arg("-f")
                .arg("-c")
                .arg(&conf),
        );
        ShippedAgent {
            _daemon: daemon,
            dir,
        }
    }
}

impl Drop for ShippedAgent {
    fn drop(&mut self) {
        if std::env::var("CONCIERGE_KEEP_HOSTS").as_deref() != Ok("1") {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
