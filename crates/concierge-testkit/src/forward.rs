//! A TCP forwarder from a network the test created to a lab's port on 127.0.0.1: the labs
//! listen on loopback only, which containers on their own network (Docker-in-Docker nodes)
//! cannot reach. It listens on the host's side of that network and relays each connection to
//! the loopback port, so the lab sees 127.0.0.1 as the source (its Allowed hosts cover it).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Connections relayed at once; more are closed at once (a trapper exchange takes
/// milliseconds, so a handful of heartbeats never come near it).
const MAX_RELAYS: usize = 32;
/// A relay with no byte in either direction for this long is closed.
const IDLE: Duration = Duration::from_secs(30);
/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Listens on `listen` (an ephemeral port) and relays every connection to `target`, a port on
/// loopback, in threads of its own. Stops (listener closed, relays ended) when dropped.
pub struct Forwarder {
    addr: SocketAddr,
    target: SocketAddr,
    stop: Arc<AtomicBool>,
    relayed: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Forward `listen`:<ephemeral> to `target`. Only loopback targets: the forwarder must
    /// never open a way to anywhere else.
    pub fn start(listen: IpAddr, target: SocketAddr) -> anyhow::Result<Self> {
        if !target.ip().is_loopback() {
            bail!("the forwarder relays to loopback only, not {target}");
        }
        let listener =
            TcpListener::bind((listen, 0)).with_context(|| format!("binding {listen}:0"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let relayed = Arc::new(AtomicU64::new(0));
        let (flag, count) = (Arc::clone(&stop), Arc::clone(&relayed));
        let thread = std::thread::spawn(move || accept_loop(&listener, target, &flag, &count));
        Ok(Forwarder {
            addr,
            target,
            stop,
            relayed,
            thread: Some(thread),
        })
    }

    /// Where it listens, `ip:port`, as `-z` takes it.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Where it relays to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// How many connections it has relayed so far.
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, stop: &AtomicBool, relayed: &AtomicU64) {
    let stop_all = Arc::new(AtomicBool::new(false));
    let mut relays: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        relays.retain(|r| !r.is_finished());
        match listener.accept() {
            Ok((client, _)) if relays.len() < MAX_RELAYS => {
                relayed.fetch_add(1, Ordering::Relaxed);
                let flag = Arc::clone(&stop_all);
                relays.push(std::thread::spawn(move || relay(client, target, &flag)));
            }
            // Over the bound: dropped, so the client sees the connection closed.
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
    stop_all.store(true, Ordering::SeqCst);
    for r in relays {
        let _ = r.join();
    }
}

/// Relay one connection both ways until both sides have closed, it idles, or the stop.
fn relay(client: TcpStream, target: SocketAddr, stop: &AtomicBool) {
    let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        return;
    };
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    std::thread::scope(|s| {
        s.spawn(|| pump(&client, &upstream, stop));
        pump(&u2, &c2, stop);
    });
}

/// Copy `from` to `to` until EOF (then half-close `to`), an error, [`IDLE`] or the stop.
fn pump(mut from: &TcpStream, mut to: &TcpStream, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 16 * 1024];
    let mut last = Instant::now();
    while !stop.load(Ordering::SeqCst) && last.elapsed() < IDLE {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                last = Instant::now();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_relayed_both_ways_and_only_to_loopback() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got.reverse();
            s.write_all(&got).unwrap();
        });
        let fwd = Forwarder::start("127.0.0.1".parse().unwrap(), target).unwrap();
        let mut c = TcpStream::connect(fwd.address()).unwrap();
        c.write_all(b"ZBXD hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).unwrap();
        assert_eq!(back, "olleh DXBZ");
        server.join().unwrap();
        assert_eq!(fwd.relayed(), 1);
        drop(fwd);

        let e = Forwarder::start(
            "127.0.0.1".parse().unwrap(),
            "192.0.2.1:10051".parse().unwrap(),
        )
        .err()
        .expect("a non-loopback target is refused");
        assert!(e.to_string().contains("loopback only"), "{e}");
    }
}
