//! The state directory: one lock file and one state file per service.
//!
//! `<key>.lock` is held (flock, exclusive) across read-count → scale → record, so concurrent
//! calls for one service take turns and each sees the count the previous one left. It is never
//! replaced, so every caller locks the same inode. `<key>.state` holds the last scaling (for
//! the cooldown), written to a temporary file and renamed over the old one, so a reader never
//! sees half a file.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Where the state lives unless `--state-dir` or `$CONCIERGE_STATE_DIR` says otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/concierge";

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

/// The last scaling of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastScaling {
    /// When it finished, in milliseconds since the epoch.
    pub at_ms: u64,
    pub from: u32,
    pub to: u32,
}

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

/// Milliseconds since the epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
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
                "state file {} is damaged ({why}): check it, then delete it",
                path.display()
            ),
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

    /// Create the directory if needed.
    pub fn create(&self) -> Result<(), StateError> {
        fs::create_dir_all(&self.path).map_err(io_err(&self.path, "create the state directory"))
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

    /// The service's last scaling, if one was recorded.
    pub fn last_scaling(&self, key: &str) -> Result<Option<LastScaling>, StateError> {
        let path = self.file(key, "state");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, "read")(e)),
        };
        let corrupt = |why: &str| StateError::Corrupt {
            path: path.clone(),
            why: why.to_string(),
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| corrupt(&e.to_string()))?;
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
        Ok(Some(LastScaling {
            at_ms: field("last_scaled_ms")?,
            from: count("from")?,
            to: count("to")?,
        }))
    }

    /// Record a scaling (call it while holding the service's lock).
    pub fn record(&self, key: &str, service: &str, s: &LastScaling) -> Result<(), StateError> {
        let path = self.file(key, "state");
        let tmp = self.file(key, &format!("state.tmp{}", std::process::id()));
        let body = json!({
            "service": service,
            "last_scaled_ms": s.at_ms,
            "last_scaled": crate::event::rfc3339_ms(s.at_ms),
            "from": s.from,
            "to": s.to,
        });
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(format!("{body}\n").as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
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

    fn temp_dir(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "concierge-scale-state-{tag}-{}-{}",
            std::process::id(),
            unix_ms(SystemTime::now())
        ));
        let _ = fs::remove_dir_all(&p);
        p
    }

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
        let dir = StateDir::new(temp_dir("rw"));
        dir.create().unwrap();
        assert_eq!(dir.last_scaling("k").unwrap(), None);
        let s = LastScaling {
            at_ms: 1_700_000_000_123,
            from: 1,
            to: 3,
        };
        dir.record("k", "web", &s).unwrap();
        assert_eq!(dir.last_scaling("k").unwrap(), Some(s));
        fs::write(dir.path().join("k.state"), "{\"from\":1}").unwrap();
        assert!(matches!(
            dir.last_scaling("k"),
            Err(StateError::Corrupt { .. })
        ));
        let _ = fs::remove_dir_all(dir.path());
    }

    #[test]
    fn cooldown_arithmetic() {
        let s = LastScaling {
            at_ms: 100_000,
            from: 1,
            to: 2,
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
        let dir = Arc::new(StateDir::new(temp_dir("lock")));
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
        let _ = fs::remove_dir_all(dir.path());
    }
}
