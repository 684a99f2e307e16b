//! Stop signals for long-running tools, without signal handlers.
//!
//! The signals are blocked in every thread and collected synchronously with `sigtimedwait`, which
//! doubles as the tool's sleep: a heartbeat waits for its next beat *or* a stop signal in one call,
//! and nothing runs in signal-handler context. As PID 1 in a container (where the kernel ignores
//! signals that have no handler) this still works, and SIGCHLD wakes the tool to reap orphans.

use std::io;
use std::mem::MaybeUninit;
use std::time::Duration;

use crate::outcome::SystemError;

/// A signal the tool was waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM, SIGINT or SIGHUP: stop now (the number is kept for the log).
    Stop(i32),
    /// SIGCHLD: a child (or, as PID 1, an orphan) exited and can be reaped.
    Child,
}

/// Owner of the blocked signal set. Create it first thing in `main`, before any thread starts,
/// so every thread inherits the mask and the signals queue up for [`Signals::wait`].
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Block SIGTERM, SIGINT, SIGHUP and SIGCHLD in the calling thread (and threads it spawns).
    pub fn block() -> Result<Self, SystemError> {
        Self::block_set().map_err(|error| SystemError {
            doing: "block the stop signals",
            error,
        })
    }

    fn block_set() -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set; sigaddset and pthread_sigmask only read and
        // write that set and the calling thread's mask.
        unsafe {
            if libc::sigemptyset(set.as_mut_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut set = set.assume_init();
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD] {
                if libc::sigaddset(&mut set, sig) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Self { set })
        }
    }

    /// Wait up to `timeout` for one of the blocked signals; `None` when the time ran out.
    pub fn wait(&self, timeout: Duration) -> Option<Signal> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: `self.set` is an initialised signal set; a null siginfo pointer is allowed.
        let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        // -1 is EAGAIN (time ran out) or EINTR (a signal outside the set); either way the
        // caller recomputes its schedule and waits again.
        if sig < 0 {
            None
        } else if sig == libc::SIGCHLD {
            Some(Signal::Child)
        } else {
            Some(Signal::Stop(sig))
        }
    }
}

/// Reap every exited child without blocking. As PID 1 these include orphans re-parented to us,
/// which would otherwise stay zombies.
pub fn reap_children() -> usize {
    let mut reaped = 0;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG only writes the status integer we pass.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return reaped;
        }
        reaped += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn waits_for_the_timeout_or_a_signal() {
        // Blocking applies to this test thread only (the mask is per thread).
        let s = Signals::block().unwrap();
        let t = Instant::now();
        assert_eq!(s.wait(Duration::from_millis(50)), None);
        assert!(t.elapsed() >= Duration::from_millis(45));
        // SAFETY: raising a blocked signal only marks it pending for this thread.
        unsafe {
            libc::pthread_kill(libc::pthread_self(), libc::SIGTERM);
        }
        assert_eq!(
            s.wait(Duration::from_secs(5)),
            Some(Signal::Stop(libc::SIGTERM))
        );
        assert_eq!(s.wait(Duration::ZERO), None);
    }

    #[test]
    fn exited_children_are_reaped() {
        // No other test in this crate starts processes, so waitpid(-1) only sees this one.
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        std::mem::forget(child);
        let t = Instant::now();
        let mut reaped = 0;
        while reaped == 0 && t.elapsed() < Duration::from_secs(5) {
            reaped = reap_children();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(reaped, 1);
        // SAFETY: kill with signal 0 only checks whether the pid still exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0;
        assert!(gone, "the zombie of {pid} is still there");
    }
}
