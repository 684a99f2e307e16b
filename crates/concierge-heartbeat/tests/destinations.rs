//! Several destinations (`-z a,b`) each get the registration request, not only those before
//! the first that fails: a lab that is down must not keep the host out of the other.

use std::process::Command;

use concierge_testkit::{bin, closed_port, processed_reply, Scripted, ScriptedTrapper};
use serde_json::json;

#[test]
fn a_dead_destination_does_not_keep_the_announce_from_the_next() {
    let live = ScriptedTrapper::new(|r| {
        Scripted::Reply(if r["request"] == "active checks" {
            json!({"response": "success", "data": []})
        } else {
            processed_reply(r)
        })
    });
    let dead = format!("127.0.0.1:{}", closed_port());
    let out = Command::new(bin("concierge-heartbeat"))
        .args([
            "up",
            "--register",
            "-s",
            "web-1",
            "--no-spool",
            "-t",
            "5",
            "-z",
        ])
        .arg(format!("{dead},{}", live.address()))
        .output()
        .expect("run concierge-heartbeat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let requests = live.requests();
    assert!(
        requests
            .iter()
            .any(|r| r["request"] == "active checks" && r["host"] == "web-1"),
        "the live destination was never asked to register the host: {requests:?}; {stderr}"
    );
    assert!(
        requests.iter().any(|r| r["request"] == "sender data"),
        "the live destination got no beat: {requests:?}; {stderr}"
    );
    // The dead one is still a failure of the run, said on stderr.
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&dead), "{stderr}");
}
