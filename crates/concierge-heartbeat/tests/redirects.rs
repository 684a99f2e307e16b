//! The coprocess remembers where a proxy group put its host, and learns it again after a reset:
//! fake trappers with a 7.0 proxy group's exact replies (the real group: tests/distributed_lab.rs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use concierge_testkit::{
    processed_reply, redirect_reply, reset_reply, wait_for, Coprocess, Scripted, ScriptedTrapper,
};

#[test]
fn beats_go_straight_to_the_proxy_a_redirect_named_until_it_resets() {
    let moved = Arc::new(AtomicBool::new(false));
    // c: where the host lives after the move.
    let c = ScriptedTrapper::taking();
    // b: holds the host until the move, then tells the client to forget it.
    let b = {
        let moved = moved.clone();
        ScriptedTrapper::new(move |r| {
            Scripted::Reply(if moved.load(Ordering::SeqCst) {
                reset_reply()
            } else {
                processed_reply(r)
            })
        })
    };
    // a: the configured node, a group member that holds no host: it names b, later c.
    let a = {
        let (moved, b, c) = (moved.clone(), b.address(), c.address());
        ScriptedTrapper::new(move |_| {
            Scripted::Reply(if moved.load(Ordering::SeqCst) {
                redirect_reply(2, &c)
            } else {
                redirect_reply(1, &b)
            })
        })
    };
    let mut hb = Coprocess::spawn(
        "concierge-heartbeat",
        &["up", "--every", "200ms", "-s", "web 1", "-z", &a.address()],
    );
    let count = |t: &ScriptedTrapper| t.requests().len();
    wait_for("three beats at b", Duration::from_secs(10), || {
        hb.assert_running("beating");
        Ok((count(&b) >= 3).then_some(()))
    });
    assert_eq!(count(&a), 1, "a is asked once, then remembered: {hb}");
    moved.store(true, Ordering::SeqCst);
    wait_for("three beats at c", Duration::from_secs(10), || {
        Ok((count(&c) >= 3).then_some(()))
    });
    assert_eq!(count(&a), 2, "asked again only after the reset: {hb}");
    let (code, _) = hb.terminate(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{hb}");
    // The goodbye went where the host lives.
    let last = c.requests().pop().unwrap();
    assert_eq!(last["data"][0]["value"], "0", "{last}");
    assert!(b.requests().iter().all(|r| r["data"][0]["value"] == "1"));
    let log = hb.stderr();
    for place in [b.address(), c.address()] {
        assert!(
            log.contains(&format!("redirected: host \"web 1\" is at {place}")),
            "{log}"
        );
    }
}
