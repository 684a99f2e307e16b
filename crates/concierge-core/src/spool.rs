//! A bounded on-disk spool: values that no Zabbix destination accepted, kept with their
//! collection clocks so that the next run that reaches Zabbix delivers them, oldest first.
//!
//! Layout: `<root>/<queue>/` per destination list (so values only ever go where they were
//! meant to go), holding one `*.batch` file per failed run, a `.lock` and a `dropped` counter.
//! A batch is written to a temporary file, fsynced, renamed into place and the directory
//! fsynced: a crash (kill -9, power loss) leaves either the whole batch or none of it.
//!
//! Delivery is at-least-once. A run claims the batches under an exclusive `flock` held until
//! the reply (another run meanwhile sends only its own values, so no two runs send one spooled
//! value); a reply of any kind (processed or refused) removes them, a reply that never came
//! keeps them. A value the server processed but whose reply was lost is sent again.
//! What the size cap evicts is counted in `dropped` and reported, never silent.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::deadline::Deadline;
use crate::outcome::{warn, Classify, Failure};
use crate::zabbix::route::Route;
use crate::zabbix::sender::{self, Delivery, SenderOptions, Timestamp, Value};
use crate::zabbix::transport::TransportError;

/// The default size cap of one queue.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// At most this much of the spool is replayed by one run, so a long outage's backlog drains
/// over several runs instead of blowing one run's deadline or the server's request limit.
pub const REPLAY_MAX_BYTES: u64 = 8 << 20;

/// The first line of every batch file.
const MAGIC: &str = "concierge-spool 1";

/// Temporary files older than this are a crashed writer's leftovers.
const STALE_TMP: Duration = Duration::from_secs(300);

/// Where spooled values are kept, and how much of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

/// What went wrong with the spool.
#[derive(Debug)]
pub struct SpoolError {
    pub path: PathBuf,
    pub doing: &'static str,
    pub error: io::Error,
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spool {}: cannot {}: {}",
            self.path.display(),
            self.doing,
            self.error
        )
    }
}

impl std::error::Error for SpoolError {}

impl Classify for SpoolError {
    fn failure(&self) -> Failure {
        // The directory named (or defaulted) cannot be used: a setting to fix.
        Failure::Usage
    }
}

fn err<'a>(path: &'a Path, doing: &'static str) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |error| SpoolError {
        path: path.to_path_buf(),
        doing,
        error,
    }
}

fn invalid(path: &Path, doing: &'static str, why: String) -> SpoolError {
    SpoolError {
        path: path.to_path_buf(),
        doing,
        error: io::Error::new(io::ErrorKind::InvalidData, why),
    }
}

/// One queue of the spool.
#[derive(Debug)]
pub struct Spool {
    queue: PathBuf,
    max_bytes: u64,
}

/// What [`Spool::store`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    /// Values written.
    pub values: usize,
    /// Values the size cap evicted just now (oldest first; the new batch too if it alone is
    /// over the cap).
    pub evicted: u64,
}

/// The spooled values one run sends, and the lock that keeps other runs off them.
#[derive(Debug)]
pub struct Claim<'a> {
    spool: &'a Spool,
    _lock: Lock,
    batches: Vec<PathBuf>,
    /// The claimed values, oldest batch first, with their clocks.
    pub values: Vec<Value>,
    /// Values evicted by the size cap since the last report.
    pub dropped: u64,
    /// Batches left for a later run (over [`REPLAY_MAX_BYTES`]).
    pub left: usize,
    /// Batches that could not be read (damaged outside this program), dropped and counted in
    /// `dropped`: what was wrong with each.
    pub damaged: Vec<String>,
}

/// An exclusive `flock`, released when dropped (or when the process dies).
#[derive(Debug)]
struct Lock(File);

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: flock on an fd we own; closing would release it anyway.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// A queue directory name for a destination list: readable, short, and unique per list.
pub fn queue_name(destinations: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in destinations.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let readable: String = destinations
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{readable}-{hash:016x}")
}

/// Create `dir` (0700) if missing, and check it is a real directory of ours that nobody else
/// can write: never a symlink, so the spool cannot be redirected.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), SpoolError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                if !parent.exists() {
                    return Err(err(dir, "use the directory")(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{} does not exist", parent.display()),
                    )));
                }
            }
            match fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(dir, "create the directory")(e)),
            }
        }
        Err(e) => return Err(err(dir, "use the directory")(e)),
        Ok(_) => {}
    }
    let meta = fs::symlink_metadata(dir).map_err(err(dir, "use the directory"))?;
    if meta.file_type().is_symlink() {
        return Err(invalid(
            dir,
            "use the directory",
            "it is a symbolic link".into(),
        ));
    }
    if !meta.is_dir() {
        return Err(invalid(
            dir,
            "use the directory",
            "it is not a directory".into(),
        ));
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(invalid(
            dir,
            "use the directory",
            format!("it belongs to uid {}, not to this user ({me})", meta.uid()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(invalid(
            dir,
            "use the directory",
            format!("others can write it (mode {:o})", meta.mode() & 0o777),
        ));
    }
    Ok(())
}

fn open_nofollow(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    tests::count(|c| c.syncs += 1);
    File::open(dir)?.sync_all()
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

impl Spool {
    /// Open (creating) the queue for `destinations` under `config.dir`.
    pub fn open(config: &SpoolConfig, destinations: &str) -> Result<Spool, SpoolError> {
        ensure_dir(&config.dir)?;
        let queue = config.dir.join(queue_name(destinations));
        ensure_dir(&queue)?;
        Ok(Spool {
            queue,
            max_bytes: config.max_bytes,
        })
    }

    /// The queue's directory.
    pub fn path(&self) -> &Path {
        &self.queue
    }

    /// The size cap.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn lock(&self, wait: bool) -> Result<Option<Lock>, SpoolError> {
        #[cfg(test)]
        tests::count(|c| c.locks += 1);
        let path = self.queue.join(".lock");
        let file = open_nofollow(&path, true).map_err(err(&path, "open the lock"))?;
        let op = if wait {
            libc::LOCK_EX
        } else {
            libc::LOCK_EX | libc::LOCK_NB
        };
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(Some(Lock(file)));
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(err(&path, "lock")(e))
        }
    }

    /// Keep `values`, a value without a clock getting `collected` (the clock is what makes a
    /// late value land where it belongs in history). Then, if no other run holds the queue,
    /// apply the size cap.
    pub fn store(&self, values: &[Value], collected: Timestamp) -> Result<Stored, SpoolError> {
        let written = self.write_batch(values, collected)?;
        let evicted = match self.lock(false)? {
            Some(_lock) => self.evict()?,
            // The holder applies the cap when it is done.
            None => 0,
        };
        Ok(Stored {
            values: written,
            evicted,
        })
    }

    /// Write one batch: temp file, fsync, rename, fsync the directory.
    fn write_batch(&self, values: &[Value], collected: Timestamp) -> Result<usize, SpoolError> {
        if values.is_empty() {
            return Ok(0);
        }
        let mut text = Vec::with_capacity(32 + values.len() * 100);
        text.extend_from_slice(MAGIC.as_bytes());
        let _ = writeln!(text, " {}", values.len());
        for v in values {
            let ts = v.clock.unwrap_or(collected);
            text.extend_from_slice(b"{\"h\":");
            json_string(&mut text, &v.host);
            text.extend_from_slice(b",\"k\":");
            json_string(&mut text, &v.key);
            text.extend_from_slice(b",\"v\":");
            json_string(&mut text, &v.value);
            let _ = write!(text, ",\"c\":{}", ts.clock);
            if let Some(ns) = ts.ns {
                let _ = write!(text, ",\"n\":{ns}");
            }
            text.extend_from_slice(b"}\n");
        }
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{:020}-{:010}-{seq:05}.batch",
            now_nanos(),
            std::process::id()
        );
        let tmp = self.queue.join(format!(".tmp-{name}"));
        let dest = self.queue.join(&name);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &dest)?;
            fsync_dir(&self.queue)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(err(&self.queue, "write a batch")(e));
        }
        Ok(values.len())
    }

    /// The batch files, oldest first, with their sizes; stale temporaries are removed.
    fn batches(&self) -> Result<Vec<(PathBuf, u64)>, SpoolError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.queue).map_err(err(&self.queue, "list the queue"))?;
        for entry in entries {
            let entry = entry.map_err(err(&self.queue, "list the queue"))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = entry.metadata() else { continue };
            if name.starts_with(".tmp-") {
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age > STALE_TMP);
                if old {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            if name.ends_with(".batch") && meta.file_type().is_file() {
                out.push((entry.path(), meta.len()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Apply the size cap (the caller holds the lock): the oldest batches go first, their
    /// values counted in `dropped` before they are removed.
    fn evict(&self) -> Result<u64, SpoolError> {
        let batches = self.batches()?;
        let mut total: u64 = batches.iter().map(|(_, len)| len).sum();
        let mut evicted = 0;
        for (path, len) in &batches {
            if total <= self.max_bytes {
                break;
            }
            let n = read_batch(path, self.max_bytes).map_or(0, |v| v.len() as u64);
            self.add_dropped(n)?;
            fs::remove_file(path).map_err(err(path, "remove an evicted batch"))?;
            evicted += n;
            total -= len;
        }
        if evicted > 0 {
            fsync_dir(&self.queue).map_err(err(&self.queue, "sync"))?;
        }
        Ok(evicted)
    }

    fn dropped(&self) -> Result<u64, SpoolError> {
        let path = self.queue.join("dropped");
        match open_nofollow(&path, false) {
            Ok(mut f) => {
                let mut s = String::new();
                Read::by_ref(&mut f)
                    .take(64)
                    .read_to_string(&mut s)
                    .map_err(err(&path, "read"))?;
                Ok(s.trim().parse().unwrap_or(0))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(err(&path, "read")(e)),
        }
    }

    fn set_dropped(&self, n: u64) -> Result<(), SpoolError> {
        let path = self.queue.join("dropped");
        if n == 0 {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(err(&path, "reset")(e)),
                _ => Ok(()),
            };
        }
        let tmp = self.queue.join(".tmp-dropped");
        let _ = fs::remove_file(&tmp);
        (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)?;
            writeln!(f, "{n}")?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fsync_dir(&self.queue)
        })()
        .map_err(err(&path, "write"))
    }

    fn add_dropped(&self, n: u64) -> Result<(), SpoolError> {
        if n == 0 {
            return Ok(());
        }
        self.set_dropped(self.dropped()?.saturating_add(n))
    }

    /// Values kept and batches, for reports and tests.
    pub fn pending(&self) -> Result<(usize, usize), SpoolError> {
        let batches = self.batches()?;
        let mut values = 0;
        for (path, _) in &batches {
            values += read_batch(path, self.max_bytes).map_or(0, |v| v.len());
        }
        Ok((values, batches.len()))
    }

    /// True when the queue may hold something for a run that reaches Zabbix: a batch, or an
    /// overflow count to report. One directory read, no lock: a run that finds nothing sends
    /// its own values without locking, listing or syncing anything (a batch another run writes
    /// meanwhile waits for the next run). A queue that cannot be read says true, so that
    /// [`Spool::claim`] reports why.
    pub fn has_backlog(&self) -> bool {
        let Ok(entries) = fs::read_dir(&self.queue) else {
            return true;
        };
        entries.into_iter().any(|e| {
            e.map_or(true, |e| {
                let name = e.file_name();
                let name = name.as_encoded_bytes();
                name == b"dropped" || (name.ends_with(b".batch") && !name.starts_with(b".tmp-"))
            })
        })
    }

    /// Claim the oldest batches (up to [`REPLAY_MAX_BYTES`]) for this run; `None` when another
    /// run holds the queue (it sends them; this run must not).
    pub fn claim(&self) -> Result<Option<Claim<'_>>, SpoolError> {
        let Some(lock) = self.lock(false)? else {
            return Ok(None);
        };
        let all = self.batches()?;
        let mut batches = Vec::new();
        let mut values = Vec::new();
        let mut bytes = 0u64;
        let mut left = 0;
        let mut damaged = Vec::new();
        for (path, len) in all {
            if !batches.is_empty() && bytes + len > REPLAY_MAX_BYTES {
                left += 1;
                continue;
            }
            match read_batch(&path, self.max_bytes) {
                Ok(v) => {
                    bytes += len;
                    values.extend(v);
                    batches.push(path);
                }
                Err(e) => {
                    // Only damage outside this program (the writes are atomic) gets here:
                    // count it as lost (its values are unknown: one), say so, move on.
                    damaged.push(e.to_string());
                    self.add_dropped(1)?;
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let dropped = self.dropped()?;
        Ok(Some(Claim {
            spool: self,
            _lock: lock,
            batches,
            values,
            dropped,
            left,
            damaged,
        }))
    }
}

impl Claim<'_> {
    /// A destination answered: the claimed values are done with, and the overflow that was
    /// reported with them is forgotten.
    pub fn delivered(self) -> Result<(), SpoolError> {
        for path in &self.batches {
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(err(path, "remove a delivered batch")(e))
                }
                _ => {}
            }
        }
        if !self.batches.is_empty() {
            fsync_dir(&self.spool.queue).map_err(err(&self.spool.queue, "sync"))?;
        }
        if self.dropped > 0 {
            // Evictions since the claim are counted on top.
            let now = self.spool.dropped()?;
            self.spool.set_dropped(now.saturating_sub(self.dropped))?;
        }
        self.spool.evict()?;
        Ok(())
    }

    /// No destination answered: keep the claimed values, add `values` (this run's), apply
    /// the cap. The lock is held throughout, so no other run sees half of it.
    pub fn keep(self, values: &[Value], collected: Timestamp) -> Result<Stored, SpoolError> {
        let written = self.spool.write_batch(values, collected)?;
        let evicted = self.spool.evict()?;
        Ok(Stored {
            values: written,
            evicted,
        })
    }
}

/// What one spooled send did, beyond the delivery itself.
#[derive(Debug)]
pub struct Sent {
    pub delivery: Delivery,
    /// This run's own values (as given).
    pub live: Vec<Value>,
    /// Spooled values sent ahead of them.
    pub replayed: usize,
    /// Values kept for a later run (no destination accepted them).
    pub kept: usize,
    /// Overflow to report now that Zabbix answered.
    pub loss: Option<SpoolLoss>,
}

impl Sent {
    /// Spooled values a destination accepted in this send.
    pub fn delivered_from_spool(&self) -> usize {
        if self.delivery.accepted() {
            self.replayed
        } else {
            0
        }
    }
}

/// Who tells what the spool did, on stderr.
#[derive(Debug, Clone, Copy)]
pub struct Tell<'a> {
    /// The tool's name, for `tool: message` lines.
    pub tool: &'a str,
    /// Say how many values were kept (a coprocess says it once per outage, not every beat).
    /// Evictions and damage are always told.
    pub kept: bool,
}

/// Send `live` along `routes`, the spool's oldest values (if this run can claim them) ahead
/// of them; if no destination accepted them, the spooled values stay and `live` joins them
/// stamped `collected` (unless that is `None`: the caller retries them itself). Spool
/// trouble is told on stderr as `tool: …` and never stops the delivery.
pub fn send(
    spool: Option<&Spool>,
    routes: &mut [Route],
    live: Vec<Value>,
    collected: Option<Timestamp>,
    deadline: &Deadline,
    opts: &SenderOptions,
    tell: Tell,
) -> Result<Sent, TransportError> {
    let tool = tell.tool;
    // The live path: with nothing spooled, no lock is taken and nothing is synced.
    let claim = spool
        .filter(|s| s.has_backlog())
        .and_then(|s| match s.claim() {
            Ok(c) => c,
            Err(e) => {
                warn(
                    tool,
                    format_args!("{e}: sending without the spooled values"),
                );
                None
            }
        });
    let Some(mut claim) = claim else {
        let delivery = sender::send_along(routes, &live, deadline, opts)?;
        let mut kept = 0;
        if !delivery.accepted() {
            if let (Some(s), Some(at)) = (spool, collected) {
                kept = report_kept(tell, s, s.store(&live, at), 0);
            }
        }
        return Ok(Sent {
            delivery,
            live,
            replayed: 0,
            kept,
            loss: None,
        });
    };
    for d in &claim.damaged {
        warn(tool, format_args!("{d}: batch dropped"));
    }
    let mut batch = std::mem::take(&mut claim.values);
    let replayed = batch.len();
    // The run's values are moved, not copied, when nothing spooled goes ahead of them.
    if batch.is_empty() {
        batch = live;
    } else {
        batch.extend(live);
    }
    let delivery = match sender::send_along(routes, &batch, deadline, opts) {
        Ok(d) => d,
        Err(e) => {
            let s = claim.spool;
            let live = if collected.is_some() {
                &batch[replayed..]
            } else {
                &[]
            };
            let at = collected.unwrap_or_else(Timestamp::now);
            report_kept(tell, s, claim.keep(live, at), replayed);
            return Err(e);
        }
    };
    let live = if replayed == 0 {
        batch
    } else {
        batch.split_off(replayed)
    };
    let (kept, loss) = if delivery.accepted() {
        let dropped = claim.dropped;
        let max_bytes = claim.spool.max_bytes;
        if claim.left > 0 {
            warn(
                tool,
                format_args!(
                    "{} spooled batch(es) left for the next runs (at most {REPLAY_MAX_BYTES} \
                     bytes are replayed per run)",
                    claim.left
                ),
            );
        }
        if let Err(e) = claim.delivered() {
            warn(tool, format_args!("{e}: the values may be sent again"));
        }
        let loss = (dropped > 0).then_some(SpoolLoss { dropped, max_bytes });
        (0, loss)
    } else {
        let s = claim.spool;
        let kept_live = if collected.is_some() { &live[..] } else { &[] };
        let at = collected.unwrap_or_else(Timestamp::now);
        (
            report_kept(tell, s, claim.keep(kept_live, at), replayed),
            None,
        )
    };
    Ok(Sent {
        delivery,
        live,
        replayed,
        kept,
        loss,
    })
}

/// Tell what keeping values did; the number of values the spool holds for this run's sake.
fn report_kept(
    tell: Tell,
    spool: &Spool,
    stored: Result<Stored, SpoolError>,
    already: usize,
) -> usize {
    let tool = tell.tool;
    match stored {
        Ok(st) => {
            if st.evicted > 0 {
                warn(
                    tool,
                    format_args!(
                        "spool full ({} bytes): dropped the {} oldest value(s)",
                        spool.max_bytes, st.evicted
                    ),
                );
            }
            if tell.kept {
                warn(
                    tool,
                    format_args!(
                        "kept {} value(s) in the spool {} for the next run that reaches Zabbix",
                        st.values + already,
                        spool.queue.display()
                    ),
                );
            }
            st.values + already
        }
        Err(e) => {
            warn(tool, format_args!("{e}: these values are lost"));
            already
        }
    }
}

/// Read one batch file, bounded by `max` bytes.
fn read_batch(path: &Path, max: u64) -> Result<Vec<Value>, SpoolError> {
    let mut f = open_nofollow(path, false).map_err(err(path, "open a batch"))?;
    let mut text = String::new();
    Read::by_ref(&mut f)
        .take(max.max(1 << 20) + 1)
        .read_to_string(&mut text)
        .map_err(err(path, "read a batch"))?;
    let bad = |why: &str| invalid(path, "read a batch", why.to_string());
    let mut lines = text.lines();
    let head = lines.next().ok_or_else(|| bad("empty"))?;
    let count: usize = head
        .strip_prefix(MAGIC)
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| bad("not a spool batch"))?;
    let mut values = Vec::with_capacity(count.min(1 << 20));
    let mut last_host: Option<Arc<str>> = None;
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|_| bad("a line is not JSON"))?;
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let clock = v
            .get("c")
            .and_then(serde_json::Value::as_u64)
            .and_then(|c| u32::try_from(c).ok())
            .ok_or_else(|| bad("a value has no clock"))?;
        let ns = v
            .get("n")
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok());
        values.push(Value {
            host: {
                let h = s("h").ok_or_else(|| bad("a value has no host"))?;
                // A batch's values mostly name one host: they share it.
                match &last_host {
                    Some(last) if **last == *h => Arc::clone(last),
                    _ => {
                        let h: Arc<str> = h.into();
                        last_host = Some(Arc::clone(&h));
                        h
                    }
                }
            },
            key: s("k").ok_or_else(|| bad("a value has no key"))?,
            value: s("v").ok_or_else(|| bad("a value has no value"))?,
            clock: Some(Timestamp { clock, ns }),
        });
    }
    if values.len() != count {
        return Err(bad("truncated"));
    }
    Ok(values)
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Values the size cap evicted while Zabbix was unreachable, reported by the run that
/// reaches it again: a partial delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolLoss {
    pub dropped: u64,
    pub max_bytes: u64,
}

impl fmt::Display for SpoolLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} spooled value(s) were dropped while Zabbix was unreachable: the spool is capped \
             at {} bytes (--spool-max)",
            self.dropped, self.max_bytes
        )
    }
}

impl std::error::Error for SpoolLoss {}

impl Classify for SpoolLoss {
    fn failure(&self) -> Failure {
        Failure::Partial
    }
}

/// Parse a size: bytes, or a number with k, M or G (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, scale) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid size {text:?} (examples: 64M, 512k, 1G)"))?;
    let bytes = n
        .checked_mul(scale)
        .ok_or_else(|| format!("size {text:?} is too large"))?;
    if bytes < 4096 {
        return Err(format!("size {text:?} is below the 4k minimum"));
    }
    Ok(bytes)
}

/// The spool directory under a state directory.
pub fn under_state_dir(state: &Path, tool: &str) -> PathBuf {
    state.join("spool").join(tool)
}

/// Set `dir`'s mode to 0700 (tests and repair).
pub fn restrict(dir: &Path) -> io::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// The spool's syscalls that cost on a busy disk, counted per thread.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub(super) struct Counts {
        pub locks: usize,
        pub syncs: usize,
    }

    thread_local! {
        static COUNTS: Cell<Counts> = const { Cell::new(Counts { locks: 0, syncs: 0 }) };
    }

    pub(super) fn count(f: impl FnOnce(&mut Counts)) {
        COUNTS.with(|c| {
            let mut n = c.get();
            f(&mut n);
            c.set(n);
        });
    }

    fn take_counts() -> Counts {
        COUNTS.with(|c| c.replace(Counts::default()))
    }

    /// A one-request trapper on loopback that answers `processed: N`; the number of values.
    fn trapper() -> (
        crate::zabbix::destination::Destination,
        std::thread::JoinHandle<usize>,
    ) {
        use crate::zabbix::destination::{Destination, Endpoint};
        use crate::zabbix::frame;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            let request = frame::read_frame(&mut tcp, 1 << 30).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&request).unwrap();
            let n = v["data"].as_array().unwrap().len();
            let info = format!(
                r#"{{"response":"success","info":"processed: {n}; failed: 0; total: {n}; seconds spent: 0.000001"}}"#
            );
            tcp.write_all(&frame::encode(info.as_bytes(), false).unwrap())
                .unwrap();
            n
        });
        let d = Destination {
            nodes: vec![Endpoint {
                host: "127.0.0.1".into(),
                port,
            }],
        };
        (d, handle)
    }

    fn send_to_trapper(s: &Spool, live: Vec<Value>) -> (Sent, usize) {
        let (d, server) = trapper();
        let mut routes = vec![Route::new(&d)];
        let sent = send(
            Some(s),
            &mut routes,
            live,
            Some(ts(1_700_000_000, 0)),
            &Deadline::after(Duration::from_secs(10)),
            &SenderOptions::default(),
            Tell {
                tool: "test",
                kept: false,
            },
        )
        .unwrap();
        (sent, server.join().unwrap())
    }

    #[test]
    fn the_live_path_with_an_empty_spool_takes_no_lock_and_syncs_nothing() {
        // Issue 15: every run locked the queue, listed it twice and fsynced its directory
        // after the reply (13.7 ms on this machine under load) although nothing was spooled.
        let tmp = tempfile::tempdir().unwrap();
        let s = Spool::open(&config(tmp.path(), 1 << 20), "127.0.0.1:10051").unwrap();
        assert!(!s.has_backlog());
        take_counts();
        let (sent, got) = send_to_trapper(&s, (0..5).map(|i| val(i, None)).collect());
        assert!(sent.delivery.accepted());
        assert_eq!((sent.live.len(), sent.replayed, got), (5, 0, 5));
        assert_eq!(
            take_counts(),
            Counts::default(),
            "the live path paid for the spool"
        );

        // With a backlog, the claim locks and the delivered batch's removal is synced.
        s.store(&[val(9, None)], ts(1_699_999_999, 0)).unwrap();
        assert!(s.has_backlog());
        take_counts();
        let (sent, got) = send_to_trapper(&s, (0..5).map(|i| val(i, None)).collect());
        assert_eq!((sent.live.len(), sent.replayed, got), (5, 1, 6));
        let c = take_counts();
        assert!(c.locks >= 1 && c.syncs >= 1, "{c:?}");
        assert!(!s.has_backlog());

        // An overflow count alone is a backlog too: it must be reported by the next run.
        s.set_dropped(3).unwrap();
        assert!(s.has_backlog());
        let (sent, _) = send_to_trapper(&s, vec![val(1, None)]);
        assert_eq!(sent.loss.map(|l| l.dropped), Some(3));
        assert!(!s.has_backlog());
    }

    fn val(i: usize, clock: Option<Timestamp>) -> Value {
        Value {
            host: "h \"x\"".into(),
            key: format!("timer[\"a,b{i}.p95\"]"),
            value: format!("{i}.5"),
            clock,
        }
    }

    fn ts(clock: u32, ns: u32) -> Timestamp {
        Timestamp {
            clock,
            ns: Some(ns),
        }
    }

    fn config(dir: &Path, max: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.join("spool"),
            max_bytes: max,
        }
    }

    #[test]
    fn values_come_back_with_their_clocks_oldest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Spool::open(&config(tmp.path(), 1 << 20), "127.0.0.1:10051").unwrap();
        let first: Vec<_> = (0..3).map(|i| val(i, None)).collect();
        assert_eq!(s.store(&first, ts(100, 7)).unwrap().values, 3);
        let second = vec![val(9, Some(ts(50, 1)))];
        s.store(&second, ts(200, 0)).unwrap();
        let claim = s.claim().unwrap().unwrap();
        assert_eq!(claim.values.len(), 4);
        assert_eq!(
            claim.values[0].clock,
            Some(ts(100, 7)),
            "the collection clock"
        );
        assert_eq!(&*claim.values[0].host, "h \"x\"");
        assert_eq!(claim.values[1].key, "timer[\"a,b1.p95\"]");
        assert_eq!(
            claim.values[3].clock,
            Some(ts(50, 1)),
            "a value's own clock"
        );
        // Another run cannot claim what this one holds.
        let other = Spool::open(&config(tmp.path(), 1 << 20), "127.0.0.1:10051").unwrap();
        assert!(other.claim().unwrap().is_none());
        claim.delivered().unwrap();
        assert_eq!(s.pending().unwrap(), (0, 0));
        assert!(other.claim().unwrap().unwrap().values.is_empty());
    }

    #[test]
    fn kept_values_stay_and_new_ones_join_them() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Spool::open(&config(tmp.path(), 1 << 20), "a").unwrap();
        s.store(&[val(1, None)], ts(1, 0)).unwrap();
        let claim = s.claim().unwrap().unwrap();
        claim.keep(&[val(2, None)], ts(2, 0)).unwrap();
        assert_eq!(s.pending().unwrap(), (2, 2));
        let c = s.claim().unwrap().unwrap();
        let clocks: Vec<_> = c.values.iter().map(|v| v.clock.unwrap().clock).collect();
        assert_eq!(clocks, [1, 2]);
    }

    #[test]
    fn queues_are_per_destination_list() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Spool::open(&config(tmp.path(), 1 << 20), "127.0.0.1:10051").unwrap();
        let b = Spool::open(&config(tmp.path(), 1 << 20), "127.0.0.1:10061").unwrap();
        a.store(&[val(1, None)], ts(1, 0)).unwrap();
        assert_eq!(b.pending().unwrap(), (0, 0));
        assert_ne!(queue_name("a;b"), queue_name("a_b"));
    }

    #[test]
    fn the_cap_evicts_the_oldest_and_counts_them() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Spool::open(&config(tmp.path(), 8192), "a").unwrap();
        let batch: Vec<_> = (0..40).map(|i| val(i, None)).collect(); // ~2.8 kB
        let mut evicted = 0;
        for i in 0..6 {
            evicted += s.store(&batch, ts(i, 0)).unwrap().evicted;
        }
        assert!(evicted >= 120, "{evicted}");
        let (left, _) = s.pending().unwrap();
        assert_eq!(left as u64 + evicted, 240, "every value is kept or counted");
        let c = s.claim().unwrap().unwrap();
        assert_eq!(c.dropped, evicted);
        assert_eq!(
            c.values.last().unwrap().clock.unwrap().clock,
            5,
            "newest kept"
        );
        c.delivered().unwrap();
        assert_eq!(s.claim().unwrap().unwrap().dropped, 0, "reported once");
    }

    #[test]
    fn files_are_private_and_symlinks_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Spool::open(&config(tmp.path(), 1 << 20), "a").unwrap();
        s.store(&[val(1, None)], ts(1, 0)).unwrap();
        for e in fs::read_dir(s.path()).unwrap() {
            let m = e.unwrap().metadata().unwrap();
            let mode = m.mode() & 0o777;
            assert_eq!(mode, if m.is_dir() { 0o700 } else { 0o600 }, "{mode:o}");
        }
        assert_eq!(
            fs::metadata(tmp.path().join("spool")).unwrap().mode() & 0o777,
            0o700
        );
        let target = tmp.path().join("elsewhere");
        fs::create_dir(&target).unwrap();
        restrict(&target).unwrap();
        std::os::unix::fs::symlink(&target, tmp.path().join("link")).unwrap();
        let e = Spool::open(
            &SpoolConfig {
                dir: tmp.path().join("link"),
                max_bytes: 1 << 20,
            },
            "a",
        )
        .unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = Spool::open(
            &SpoolConfig {
                dir: open,
                max_bytes: 1 << 20,
            },
            "a",
        )
        .unwrap_err();
        assert!(e.to_string().contains("others can write it"), "{e}");
    }

    #[test]
    fn damage_and_leftovers_are_never_replayed_silently() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Spool::open(&config(tmp.path(), 1 << 20), "a").unwrap();
        s.store(&[val(1, None)], ts(1, 0)).unwrap();
        // A crashed writer's temporary, and a batch damaged outside the program.
        fs::write(s.path().join(".tmp-00-x.batch"), "concierge-spool 1 5\n{").unwrap();
        fs::write(s.path().join("00000000000000000001-x.batch"), "garbage").unwrap();
        let c = s.claim().unwrap().unwrap();
        assert_eq!(c.values.len(), 1);
        assert_eq!(c.dropped, 1, "the damaged batch is counted");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("8192").unwrap(), 8192);
        for bad in ["", "x", "1", "-5M", "99999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
