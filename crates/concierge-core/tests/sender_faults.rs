//! Fault injection for the sender: replies a real Zabbix server never gives (garbage,
//! truncation, oversize, silence) and connection failures, each bounded by the deadline.
//! Correct behaviour against the real server is tested in the workspace's tests/ (lab).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use concierge_core::deadline::Deadline;
use concierge_core::outcome::{Classify, Failure};
use concierge_core::zabbix::active;
use concierge_core::zabbix::destination::{parse_list, Destination};
use concierge_core::zabbix::frame;
use concierge_core::zabbix::sender::{self, DeliveryError, Refusal, SenderOptions, Value};

/// What the fake peer does after reading a request.
#[derive(Clone)]
enum Behaviour {
    Reply(Vec<u8>),
    Raw(Vec<u8>),
    Stall,
    Close,
}

struct Fake {
    port: u16,
    requests: Arc<AtomicUsize>,
    last_request: Arc<std::sync::Mutex<Vec<u8>>>,
}

fn fake(behaviour: Behaviour) -> Fake {
    fake_each(vec![behaviour])
}

/// A fake whose n-th connection gets the n-th behaviour (the last one from then on).
fn fake_each(behaviours: Vec<Behaviour>) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let last_request = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (r, l) = (requests.clone(), last_request.clone());
    thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut s) = stream else { return };
            let behaviour = behaviours[n.min(behaviours.len() - 1)].clone();
            let (r, l) = (r.clone(), l.clone());
            thread::spawn(move || {
                let req = frame::read_frame(&mut s, 1 << 30).unwrap_or_default();
                r.fetch_add(1, Ordering::SeqCst);
                *l.lock().unwrap() = req;
                match behaviour {
                    Behaviour::Reply(payload) => {
                        let _ = s.write_all(&frame::encode(&payload, false).unwrap());
                    }
                    Behaviour::Raw(bytes) => {
                        let _ = s.write_all(&bytes);
                    }
                    Behaviour::Stall => thread::sleep(Duration::from_secs(30)),
                    Behaviour::Close => {}
                }
            });
        }
    });
    Fake {
        port,
        requests,
        last_request,
    }
}

fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn values(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| Value {
            host: "h".into(),
            key: format!("k[{i}]"),
            value: i.to_string(),
            clock: None,
        })
        .collect()
}

fn dest(list: &str) -> Vec<Destination> {
    parse_list(list, 10051).unwrap()
}

fn deliver(list: &str, budget: Duration) -> (Result<sender::Summary, DeliveryError>, Duration) {
    let start = Instant::now();
    let d = Deadline::after(budget);
    let r = sender::send(&dest(list), &values(3), &d, &SenderOptions::default())
        .unwrap()
        .into_result();
    (r, start.elapsed())
}

fn failure_of(r: Result<sender::Summary, DeliveryError>) -> Failure {
    r.unwrap_err().failure()
}

const OK: &[u8] =
    br#"{"response":"success","info":"processed: 3; failed: 0; total: 3; seconds spent: 0.000100"}"#;

#[test]
fn a_good_reply_is_counted() {
    let f = fake(Behaviour::Reply(OK.to_vec()));
    let (r, _) = deliver(&format!("127.0.0.1:{}", f.port), Duration::from_secs(3));
    assert_eq!(r.unwrap().processed, 3);
    let req: serde_json::Value = serde_json::from_slice(&f.last_request.lock().unwrap()).unwrap();
    assert_eq!(req["request"], "sender data");
    assert_eq!(req["data"].as_array().unwrap().len(), 3);
}

#[test]
fn a_compressed_reply_is_understood() {
    let mut raw = frame::encode(OK, true).unwrap();
    assert_eq!(raw[4], 0x03);
    let f = fake(Behaviour::Raw(std::mem::take(&mut raw)));
    let (r, _) = deliver(&format!("127.0.0.1:{}", f.port), Duration::from_secs(3));
    assert_eq!(r.unwrap().total, 3);
}

#[test]
fn garbage_truncated_and_oversized_replies_are_clear_errors() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()),
        ("truncated", {
            let mut f = frame::encode(OK, false).unwrap();
            f.truncate(40);
            f
        }),
        (
            "oversized",
            b"ZBXD\x01\xff\xff\xff\x7f\x00\x00\x00\x00".to_vec(),
        ),
        ("not json", frame::encode(b"hello", false).unwrap()),
        (
            "no counts",
            frame::encode(br#"{"response":"success"}"#, false).unwrap(),
        ),
    ];
    for (what, bytes) in cases {
        let f = fake(Behaviour::Raw(bytes));
        let (r, took) = deliver(&format!("127.0.0.1:{}", f.port), Duration::from_secs(3));
        assert!(took < Duration::from_secs(2), "{what}: took {took:?}");
        let msg = r.as_ref().unwrap_err().to_string();
        assert!(msg.contains("invalid reply"), "{what}: {msg}");
        assert_eq!(failure_of(r), Failure::ZabbixRefused, "{what}");
        // The request reached the server: it must not be sent again.
        assert_eq!(f.requests.load(Ordering::SeqCst), 1, "{what}");
    }
}

#[test]
fn a_failed_response_is_a_refusal() {
    let f = fake(Behaviour::Reply(
        br#"{"response":"failed","info":"cannot parse as a valid JSON object"}"#.to_vec(),
    ));
    let (r, _) = deliver(&format!("127.0.0.1:{}", f.port), Duration::from_secs(3));
    let msg = r.as_ref().unwrap_err().to_string();
    assert!(msg.contains("cannot parse as a valid JSON object"), "{msg}");
    assert_eq!(failure_of(r), Failure::ZabbixRefused);
}

#[test]
fn closing_without_a_reply_is_not_resent() {
    let f = fake(Behaviour::Close);
    let (r, _) = deliver(&format!("127.0.0.1:{}", f.port), Duration::from_secs(2));
    assert!(r
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("without a reply"));
    assert_eq!(failure_of(r), Failure::ZabbixRefused);
    assert_eq!(f.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn a_stalled_server_cannot_outlast_the_deadline() {
    let f = fake(Behaviour::Stall);
    let (r, took) = deliver(&format!("127.0.0.1:{}", f.port), Duration::from_millis(700));
    assert!(took >= Duration::from_millis(650), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(failure_of(r), Failure::DeadlineExceeded);
}

#[test]
fn a_closed_port_is_retried_with_backoff_until_the_deadline() {
    let (r, took) = deliver(
        &format!("127.0.0.1:{}", closed_port()),
        Duration::from_millis(800),
    );
    assert!(took < Duration::from_millis(1300), "{took:?}");
    // Backoff waits between rounds rather than giving up at once.
    assert!(took > Duration::from_millis(300), "{took:?}");
    let msg = r.as_ref().unwrap_err().to_string();
    assert!(msg.contains("cannot reach Zabbix"), "{msg}");
    assert_eq!(failure_of(r), Failure::ZabbixUnreachable);
}

#[test]
fn ha_nodes_are_tried_in_order_until_one_answers() {
    let f = fake(Behaviour::Reply(OK.to_vec()));
    let list = format!("127.0.0.1:{};127.0.0.1:{}", closed_port(), f.port);
    let (r, took) = deliver(&list, Duration::from_secs(3));
    assert_eq!(r.unwrap().processed, 3);
    assert!(
        took < Duration::from_millis(500),
        "failover should be immediate: {took:?}"
    );
}

#[test]
fn every_destination_gets_the_data_and_one_failure_is_partial() {
    let a = fake(Behaviour::Reply(OK.to_vec()));
    let b = fake(Behaviour::Reply(OK.to_vec()));
    let (r, _) = deliver(
        &format!("127.0.0.1:{},127.0.0.1:{}", a.port, b.port),
        Duration::from_secs(3),
    );
    assert_eq!(r.unwrap().processed, 6);
    assert_eq!(a.requests.load(Ordering::SeqCst), 1);
    assert_eq!(b.requests.load(Ordering::SeqCst), 1);

    let stalled = fake(Behaviour::Stall);
    let (r, took) = deliver(
        &format!("127.0.0.1:{},127.0.0.1:{}", a.port, stalled.port),
        Duration::from_millis(600),
    );
    assert!(took < Duration::from_millis(1200), "{took:?}");
    assert_eq!(failure_of(r), Failure::Partial);
}

#[test]
fn chunks_are_separate_requests() {
    let f = fake(Behaviour::Reply(
        br#"{"response":"success","info":"processed: 2; failed: 0; total: 2; seconds spent: 0.0001"}"#
            .to_vec(),
    ));
    let opts = SenderOptions {
        chunk_size: Some(2),
        ..Default::default()
    };
    let d = Deadline::after(Duration::from_secs(3));
    let r = sender::send(
        &dest(&format!("127.0.0.1:{}", f.port)),
        &values(5),
        &d,
        &opts,
    )
    .unwrap();
    assert_eq!(r.reports[0].requests, 3);
    assert_eq!(r.reports[0].requests_answered, 3);
    assert_eq!(f.requests.load(Ordering::SeqCst), 3);
}

#[test]
fn a_trickling_peer_cannot_stretch_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _ = frame::read_frame(&mut s, 1 << 20);
        let reply = frame::encode(OK, false).unwrap();
        for b in reply {
            if s.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let (r, took) = deliver(&format!("127.0.0.1:{port}"), Duration::from_millis(800));
    assert!(took < Duration::from_millis(1300), "{took:?}");
    assert_eq!(failure_of(r), Failure::DeadlineExceeded);
    let _ = TcpStream::connect(("127.0.0.1", port));
}

#[test]
fn the_source_address_is_bound_before_connecting() {
    // The whole of 127.0.0.0/8 is loopback on Linux: connect from 127.0.0.2 and look at the
    // peer address the listener sees (the agent's SourceIP).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer = thread::spawn(move || {
        let (mut s, addr) = listener.accept().unwrap();
        let _ = frame::read_frame(&mut s, 1 << 20);
        let _ = s.write_all(&frame::encode(OK, false).unwrap());
        addr.ip()
    });
    let mut opts = SenderOptions::default();
    opts.connect.source_ip = Some("127.0.0.2".parse().unwrap());
    let d = Deadline::after(Duration::from_secs(3));
    let r = sender::send(&dest(&format!("127.0.0.1:{port}")), &values(3), &d, &opts)
        .unwrap()
        .into_result();
    assert_eq!(r.unwrap().processed, 3);
    assert_eq!(peer.join().unwrap().to_string(), "127.0.0.2");
}

#[test]
fn a_source_address_that_cannot_be_bound_is_a_usage_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut opts = SenderOptions::default();
    // TEST-NET-1 (RFC 5737): never an address of this machine.
    opts.connect.source_ip = Some("192.0.2.1".parse().unwrap());
    let d = Deadline::after(Duration::from_secs(3));
    let start = Instant::now();
    let r = sender::send(&dest(&format!("127.0.0.1:{port}")), &values(3), &d, &opts)
        .unwrap()
        .into_result();
    // Not retried until the deadline: nothing a retry could change.
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let e = r.unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot connect from source address 192.0.2.1: "),
        "{e}"
    );
    assert_eq!(e.failure(), Failure::Usage);
}

#[test]
fn a_servers_words_are_escaped_and_cut_in_the_message() {
    let info = format!("\u{1b}[31mboom\n{}", "x".repeat(300_000));
    let reply = serde_json::json!({"response": "failed", "info": info}).to_string();
    let f = fake(Behaviour::Reply(reply.into_bytes()));
    let (r, _) = deliver(&format!("127.0.0.1:{}", f.port), Duration::from_secs(3));
    let msg = r.unwrap_err().to_string();
    assert!(msg.len() < 1000, "{} bytes", msg.len());
    assert!(
        msg.contains(r"refused the request: \u{1b}[31mboom\nxxx"),
        "{msg}"
    );
    assert!(msg.ends_with("…(300010 bytes)"), "{msg}");
    // Garbage instead of a reply: shown as far as it is shown.
    let f = fake(Behaviour::Raw([b'\x1b'; 100_000].to_vec()));
    let (r, _) = deliver(&format!("127.0.0.1:{}", f.port), Duration::from_secs(3));
    let msg = r.unwrap_err().to_string();
    assert!(msg.len() < 1000, "{msg}");
    assert!(msg.contains(r"\u{1b}\u{1b}"), "{msg}");
}

#[test]
fn asking_why_everything_was_refused_stays_inside_the_deadline() {
    // The trapper refuses all three values, then never answers the active-checks question.
    let refused = br#"{"response":"success","info":"processed: 0; failed: 3; total: 3; seconds spent: 0.000100"}"#;
    let f = fake_each(vec![Behaviour::Reply(refused.to_vec()), Behaviour::Stall]);
    let start = Instant::now();
    let d = Deadline::after(Duration::from_millis(800));
    let dests = dest(&format!("127.0.0.1:{}", f.port));
    let opts = SenderOptions::default();
    let e = sender::send(&dests, &values(3), &d, &opts)
        .unwrap()
        .into_result()
        .unwrap_err();
    let e = active::explain(e, "h", &dests, &d, &opts.connect);
    let took = start.elapsed();
    assert!(took < Duration::from_millis(1300), "{took:?}");
    assert_eq!(
        f.requests.load(Ordering::SeqCst),
        2,
        "one question, not retried"
    );
    let msg = e.to_string();
    assert!(
        matches!(&e, DeliveryError::Partial { why, .. } if matches!(**why, Refusal::Unknown { .. })),
        "{msg}"
    );
    assert_eq!(
        e.failure(),
        Failure::Partial,
        "still -4: the values were refused"
    );
    assert!(msg.starts_with("Zabbix refused 3 of 3 values"), "{msg}");
    assert!(msg.contains("--register") && msg.contains("LLD"), "{msg}");
}
