//! The state directory: one lock file and one state file per service.
//!
//! `<key>.lock` is held (flock, exclusive) across read-count → scale → record, so concurrent
//! calls for one service take turns and each sees the count the previous one left. It is never
//! replaced, so every caller locks the same inode. `<key>.state` holds the last scaling (for
//! the cooldown), written to a temporary file and renamed over the old one, so a reader never
//! sees half a file. Before the engine scales, the state file records the intent (marked
//! `pending`), so a call killed mid-scaling still started the cooldown, and the next call
//! (which then holds the lock, so the killed one is gone) reconciles it with the engine.
//!
//! The directory is refused unless this user owns it and nobody else can write to it (another
//! user could otherwise plant symlinks there); every file is opened with `O_NOFOLLOW` and
//! created with mode 0600.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use concierge_core::text::shown;
use serde_json::{json, Value};

use crate::clock::{rfc3339_ms, unix_ms};
use crate::resources::Limits;

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

/// The last scaling of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastScaling {
    /// When it finished (or, while pending, when it started), in milliseconds since the epoch.
    pub at_ms: u64,
    pub from: u32,
    pub to: u32,
    /// The process id of a call that recorded its intent and has not recorded the result:
    /// it is running, or it was killed mid-scaling.
    pub pending: Option<u32>,
}

/// The last resize of one service, for the cooldown and for the containers compose creates
/// later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastResize {
    /// When it finished (or, while pending, when it started), in milliseconds since the epoch.
    pub at_ms: u64,
    /// The limits before, as the engine told them.
    pub from: Limits,
    /// The limits set (a `None` field was left alone).
    pub to: Limits,
    /// The pid of a call that recorded its intent and not the result.
    pub pending: Option<u32>,
}

impl LastResize {
    /// As [`LastScaling::cooldown_left`].
    pub fn cooldown_left(&self, cooldown: Duration, now: SystemTime) -> Option<Duration> {
        let as_scaling = LastScaling {
            at_ms: self.at_ms,
            from: 0,
            to: 0,
            pending: None,
        };
        as_scaling.cooldown_left(cooldown, now)
    }
}

/// Largest state file read: it holds one short JSON object.
const MAX_STATE_BYTES: u64 = 64 * 1024;

/// Open flags for every file of the state directory: never through a symlink, never as a
/// controlling terminal, not inherited by the engine.
pub const OPEN_FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_CLOEXEC;

/// Mode of every file concierge-scale creates.
pub const FILE_MODE: u32 = 0o600;

impl LastScaling {
    /// How much of `cooldown` is left at `now`, if any. A time in the future (the clock was
    /// set back) counts as "just now".
    pub fn cooldown_left(&self, cooldown: Duration, now: SystemTime) -> Option<Duration> {
        let now_ms = unix_ms(now);
        let since = Duration::from_millis(now_ms.saturating_sub(self.at_ms));
        let left = cooldown.saturating_sub(since);
        (!left.is_zero()).then_some(left)
    }
}

/// A held per-service lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct ServiceLock {
    file: File,
}

impl Drop for ServiceLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// What went wrong with the state directory.
#[derive(Debug)]
pub enum StateError {
    /// The directory, a lock or a state file could not be created, read or written.
    Io {
        path: PathBuf,
        doing: &'static str,
        error: io::Error,
    },
    /// Another call held the service's lock for longer than we may wait.
    LockTimeout { path: PathBuf, waited: Duration },
    /// A state file that is not ours (or was damaged): refusing rather than guessing.
    Corrupt { path: PathBuf, why: String },
    /// The directory is not safe to use: another user owns it or others can write to it.
    Unsafe { path: PathBuf, why: String },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Io { path, doing, error } => {
                write!(f, "cannot {doing} {}: {error}", path.display())
            }
            StateError::LockTimeout { path, waited } => write!(
                f,
                "another scaling of this service still holds {} after {waited:?}",
                path.display()
            ),
            StateError::Corrupt { path, why } => write!(
                f,
                "state file {} is damaged ({}): check it, then delete it",
                path.display(),
                shown(why)
            ),
            StateError::Unsafe { path, why } => {
                write!(f, "refusing the state directory {}: {why}", path.display())
            }
        }
    }
}

impl std::error::Error for StateError {}

fn io_err<'a>(path: &'a Path, doing: &'static str) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |error| StateError::Io {
        path: path.to_path_buf(),
        doing,
        error,
    }
}

fn remove(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path, "remove")(e)),
        _ => Ok(()),
    }
}

/// The file-name stem for a service: `family.scope.service`, each part with every byte
/// outside `[A-Za-z0-9_-]` written as `%XX`, so different services never share files.
pub fn key(family: &str, scope: Option<&str>, service: &str) -> String {
    let enc = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    format!(
        "{}.{}.{}",
        enc(family),
        scope.map_or_else(|| "%".to_string(), enc),
        enc(service)
    )
}

impl StateDir {
    /// The directory at `path`, not touched yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Create the directory if needed (mode 0700), then [`StateDir::check`] it.
    pub fn create(&self) -> Result<(), StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(io_err(&self.path, "create the state directory"))?;
        self.check()
    }

    /// Refuse a directory another user owns or others (group, world) can write to: they
    /// could replace its files with symlinks or plant state. A missing directory passes.
    pub fn check(&self) -> Result<(), StateError> {
        let meta = match fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&self.path, "inspect the state directory")(e)),
        };
        let unsafe_dir = |why: String| StateError::Unsafe {
            path: self.path.clone(),
            why,
        };
        if !meta.is_dir() {
            return Err(unsafe_dir("not a directory".into()));
        }
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(unsafe_dir(format!(
                "owned by uid {}, not by this user (uid {me})",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(unsafe_dir(format!(
                "others can write to it (mode {:04o}; chmod go-w it)",
                meta.mode() & 0o7777
            )));
        }
        Ok(())
    }

    fn file(&self, key: &str, ext: &str) -> PathBuf {
        self.path.join(format!("{key}.{ext}"))
    }

    /// Take the service's lock, waiting at most `wait` for another call to release it.
    pub fn lock(&self, key: &str, wait: Duration) -> Result<ServiceLock, StateError> {
        let path = self.file(key, "lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .custom_flags(OPEN_FLAGS)
            .open(&path)
            .map_err(io_err(&path, "open the lock file"))?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(ServiceLock { file }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(io_err(&path, "lock")(e)),
            }
            if started.elapsed() >= wait {
                return Err(StateError::LockTimeout {
                    path,
                    waited: started.elapsed(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Put back what the state file said before an intent was recorded (`None`: no file).
    pub fn restore(
        &self,
        key: &str,
        service: &str,
        before: Option<&LastScaling>,
    ) -> Result<(), StateError> {
        match before {
            Some(s) => self.record(key, service, s),
            None => remove(&self.file(key, "state")),
        }
    }

    /// The service's last scaling, if one was recorded.
    pub fn last_scaling(&self, key: &str) -> Result<Option<LastScaling>, StateError> {
        let path = self.file(key, "state");
        let Some(v) = self.read_json(&path)? else {
            return Ok(None);
        };
        let corrupt = |why: &str| StateError::Corrupt {
            path: path.clone(),
            why: why.to_string(),
        };
        let field = |name: &str| {
            v.get(name)
                .and_then(Value::as_u64)
                .ok_or_else(|| corrupt(&format!("no whole number {name:?}")))
        };
        let count = |name: &str| {
            field(name).and_then(|n| {
                u32::try_from(n).map_err(|_| corrupt(&format!("{name:?} is out of range")))
            })
        };
        let pending = match v.get("pending") {
            None | Some(Value::Null) => None,
            Some(_) => Some(count("pending")?),
        };
        Ok(Some(LastScaling {
            at_ms: field("last_scaled_ms")?,
            from: count("from")?,
            to: count("to")?,
            pending,
        }))
    }

    /// The service's last resize, if one was recorded (`<key>.resize`).
    pub fn last_resize(&self, key: &str) -> Result<Option<LastResize>, StateError> {
        let path = self.file(key, "resize");
        let Some(v) = self.read_json(&path)? else {
            return Ok(None);
        };
        let corrupt = |why: &str| StateError::Corrupt {
            path: path.clone(),
            why: why.to_string(),
        };
        let limits = |name: &str| -> Result<Limits, StateError> {
            let l = v
                .get(name)
                .filter(|l| l.is_object())
                .ok_or_else(|| corrupt(&format!("no object {name:?}")))?;
            let n = |f: &str| match l.get(f) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| corrupt(&format!("{name}.{f} is not a whole number"))),
            };
            Ok(Limits {
                nano_cpus: n("nano_cpus")?,
                memory: n("memory_bytes")?,
            })
        };
        let pending = match v.get("pending") {
            None | Some(Value::Null) => None,
            Some(p) => Some(
                p.as_u64()
                    .and_then(|p| u32::try_from(p).ok())
                    .ok_or_else(|| corrupt("\"pending\" is not a pid"))?,
            ),
        };
        Ok(Some(LastResize {
            at_ms: v
                .get("last_resized_ms")
                .and_then(Value::as_u64)
                .ok_or_else(|| corrupt("no whole number \"last_resized_ms\""))?,
            from: limits("from")?,
            to: limits("to")?,
            pending,
        }))
    }

    /// Record a resize, or with `r.pending` the intent of one (holding the service's lock).
    pub fn record_resize(
        &self,
        key: &str,
        service: &str,
        r: &LastResize,
    ) -> Result<(), StateError> {
        let body = json!({
            "service": service,
            "last_resized_ms": r.at_ms,
            "last_resized": rfc3339_ms(r.at_ms),
            "from": r.from.json(),
            "to": r.to.json(),
            "pending": r.pending,
        });
        self.write_json(key, "resize", &body)
    }

    /// Put back the resize record as it was before an intent (`None`: no file).
    pub fn restore_resize(
        &self,
        key: &str,
        service: &str,
        before: Option<&LastResize>,
    ) -> Result<(), StateError> {
        match before {
            Some(r) => self.record_resize(key, service, r),
            None => remove(&self.file(key, "resize")),
        }
    }

    /// A state file's JSON, `None` when there is none.
    fn read_json(&self, path: &Path) -> Result<Option<Value>, StateError> {
        let path = path.to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(OPEN_FLAGS | libc::O_NONBLOCK)
            .open(&path);
        let file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, "read")(e)),
        };
        let corrupt = |why: &str| StateError::Corrupt {
            path: path.clone(),
            why: why.to_string(),
        };
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(corrupt("not a regular file"));
        }
        let mut text = String::new();
        file.take(MAX_STATE_BYTES)
            .read_to_string(&mut text)
            .map_err(io_err(&path, "read"))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| corrupt(&e.to_string()))
    }

    /// Record a scaling, or with `s.pending` the intent of one (call it while holding the
    /// service's lock).
    pub fn record(&self, key: &str, service: &str, s: &LastScaling) -> Result<(), StateError> {
        let body = json!({
            "service": service,
            "last_scaled_ms": s.at_ms,
            "last_scaled": rfc3339_ms(s.at_ms),
            "from": s.from,
            "to": s.to,
            "pending": s.pending,
        });
        self.write_json(key, "state", &body)
    }

    /// Replace `<key>.<ext>` with `body`, through a temporary file renamed over it.
    fn write_json(&self, key: &str, ext: &str, body: &Value) -> Result<(), StateError> {
        let path = self.file(key, ext);
        let tmp = self.file(key, &format!("{ext}.tmp{}", std::process::id()));
        let write = || -> io::Result<()> {
            // A temporary file a killed call of the same pid left behind is ours to replace;
            // create_new (O_EXCL) then never writes through anything planted there.
            let _ = fs::remove_file(&tmp);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .custom_flags(OPEN_FLAGS)
                .open(&tmp)?;
            f.write_all(format!("{body}\n").as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            // The rename itself must survive a crash too.
            File::open(&self.path)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err(&path, "write")(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::UNIX_EPOCH;

    #[test]
    fn keys_are_file_names_and_never_collide() {
        assert_eq!(
            key("compose", Some("dockerlx"), "web"),
            "compose.dockerlx.web"
        );
        assert_eq!(key("compose", None, "web"), "compose.%.web");
        assert_eq!(
            key("kubectl", Some("shop"), "deployment/web.x"),
            "kubectl.shop.deployment%2Fweb%2Ex"
        );
        assert_ne!(key("c", Some("a.b"), "c"), key("c", Some("a"), "b.c"));
        assert!(!key("c", Some("../.."), "x").contains('/'));
    }

    #[test]
    fn record_then_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("state"));
        dir.create().unwrap();
        assert_eq!(dir.last_scaling("k").unwrap(), None);
        let mut s = LastScaling {
            at_ms: 1_700_000_000_123,
            from: 1,
            to: 3,
            pending: None,
        };
        dir.record("k", "web", &s).unwrap();
        assert_eq!(dir.last_scaling("k").unwrap(), Some(s));
        s.pending = Some(4242);
        dir.record("k", "web", &s).unwrap();
        assert_eq!(dir.last_scaling("k").unwrap(), Some(s));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("k.state"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        dir.restore("k", "web", None).unwrap();
        assert_eq!(dir.last_scaling("k").unwrap(), None);
        fs::write(dir.path().join("k.state"), "{\"from\":1}").unwrap();
        assert!(matches!(
            dir.last_scaling("k"),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn resize_record_then_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("state"));
        dir.create().unwrap();
        assert_eq!(dir.last_resize("k").unwrap(), None);
        let mut r = LastResize {
            at_ms: 1_700_000_000_123,
            from: Limits {
                nano_cpus: Some(0),
                memory: Some(0),
            },
            to: Limits {
                nano_cpus: Some(500_000_000),
                memory: None,
            },
            pending: Some(77),
        };
        dir.record_resize("k", "web", &r).unwrap();
        assert_eq!(dir.last_resize("k").unwrap(), Some(r));
        r.pending = None;
        dir.record_resize("k", "web", &r).unwrap();
        assert_eq!(dir.last_resize("k").unwrap(), Some(r));
        // The scaling's own record is another file.
        assert_eq!(dir.last_scaling("k").unwrap(), None);
        dir.restore_resize("k", "web", None).unwrap();
        assert_eq!(dir.last_resize("k").unwrap(), None);
        fs::write(
            dir.path().join("k.resize"),
            r#"{"last_resized_ms":1,"from":{},"to":{"nano_cpus":-1}}"#,
        )
        .unwrap();
        assert!(matches!(
            dir.last_resize("k"),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn unsafe_directories_and_symlinks_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("state"));
        dir.create().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        for m in [0o777, 0o770, 0o1777, 0o722] {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(m)).unwrap();
            let e = dir.create().unwrap_err();
            assert!(matches!(e, StateError::Unsafe { .. }), "{m:o}: {e}");
            assert!(e.to_string().contains("others can write to it"), "{e}");
        }
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o750)).unwrap();
        dir.create().unwrap();
        // A symlink planted for a lock or a state file is never followed.
        let victim = tmp.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("a.lock")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("a.state")).unwrap();
        assert!(dir.lock("a", Duration::from_millis(10)).is_err());
        assert!(dir.last_scaling("a").is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        let lock = dir.lock("b", Duration::from_millis(10)).unwrap();
        assert_eq!(mode(&dir.path().join("b.lock")), 0o600);
        drop(lock);
    }

    #[test]
    fn cooldown_arithmetic() {
        let s = LastScaling {
            at_ms: 100_000,
            from: 1,
            to: 2,
            pending: None,
        };
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let cd = Duration::from_secs(60);
        assert_eq!(s.cooldown_left(cd, at(100_000)), Some(cd));
        assert_eq!(
            s.cooldown_left(cd, at(130_000)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(s.cooldown_left(cd, at(160_000)), None);
        assert_eq!(s.cooldown_left(cd, at(50_000)), Some(cd));
    }

    #[test]
    fn the_lock_serialises_and_times_out() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Arc::new(StateDir::new(tmp.path().join("state")));
        dir.create().unwrap();
        let held = dir.lock("svc", Duration::from_secs(1)).unwrap();
        match dir.lock("svc", Duration::from_millis(100)) {
            Err(StateError::LockTimeout { .. }) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
        // Another service is not blocked.
        drop(dir.lock("other", Duration::from_millis(100)).unwrap());
        drop(held);
        // Read-modify-write under the lock from many threads loses no update.
        let counter = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let dir = Arc::clone(&dir);
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        let _l = dir.lock("svc", Duration::from_secs(30)).unwrap();
                        let v = counter.load(Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(1));
                        counter.store(v + 1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::SeqCst), 40);
    }
}
