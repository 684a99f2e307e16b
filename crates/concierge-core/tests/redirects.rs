//! Redirects, resets and "not here" refusals, with fake trappers that give the exact replies
//! of a Zabbix 7.0 proxy group (zabbix7-lab.md: `{"redirect":{"revision":1,"address":...},
//! "response":"failed"}`) and the faults a real one cannot be made to give on demand (a
//! second redirect in a row, a stale revision, a redirect to a dead or stalled proxy). The real
//! proxy group is tested in the workspace's tests/ (lab).

use std::thread;
use std::time::{Duration, Instant};

use concierge_core::deadline::Deadline;
use concierge_core::outcome::{Classify, Failure};
use concierge_core::zabbix::active::{self, Announcement, Registration};
use concierge_core::zabbix::destination::parse_list;
use concierge_core::zabbix::route::Route;
use concierge_core::zabbix::sender::{self, DeliveryError, SenderOptions, Summary, Value};
use concierge_testkit::{
    always, closed_port, processed_reply, redirect_reply, reset_reply, take, Scripted,
    ScriptedTrapper,
};
use serde_json::json;

fn values(hosts: &[&str]) -> Vec<Value> {
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| Value {
            host: (*h).into(),
            key: format!("k[{i}]"),
            value: i.to_string(),
            clock: None,
        })
        .collect()
}

fn routes(list: &str) -> Vec<Route> {
    parse_list(list, 10051)
        .unwrap()
        .iter()
        .map(Route::new)
        .collect()
}

fn send(
    routes: &mut [Route],
    values: &[Value],
    budget: Duration,
) -> Result<Summary, DeliveryError> {
    let d = Deadline::after(budget);
    sender::send_along(routes, values, &d, &SenderOptions::default())
        .unwrap()
        .into_result()
}

/// Two sends for one host through a configured node that redirects the first to `b`, the
/// second (the group moved the host) to `c`, `pause` apart: the second lands at `c`, asking the
/// configured node again, and `c` is where the host's requests go next.
fn moves_from_b_to_c(b: &ScriptedTrapper, c: &ScriptedTrapper, pause: Duration) {
    let a = ScriptedTrapper::changing(
        always(redirect_reply(1, &b.address())),
        always(redirect_reply(2, &c.address())),
    );
    let mut r = routes(&a.address());
    send(&mut r, &values(&["h"]), 3 * SECOND).unwrap();
    thread::sleep(pause);
    let got = send(&mut r, &values(&["h"]), 3 * SECOND).unwrap();
    assert_eq!(got.processed, 1);
    assert_eq!((a.requests().len(), c.requests().len()), (2, 1));
    assert_eq!(r[0].redirected("h").unwrap().to_string(), c.address());
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_redirect_is_followed_and_the_values_land_once() {
    let holder = ScriptedTrapper::taking();
    let wrong = ScriptedTrapper::redirecting(1, &holder.address());
    let mut r = routes(&wrong.address());
    let got = send(&mut r, &values(&["h", "h"]), 3 * SECOND).unwrap();
    assert_eq!(got.processed, 2);
    assert_eq!(wrong.requests().len(), 1);
    assert_eq!(holder.hosts(), [["h", "h"]]);
    // The address went to the head of the list: the next request goes straight there.
    assert_eq!(r[0].redirected("h").unwrap().to_string(), holder.address());
    send(&mut r, &values(&["h"]), 3 * SECOND).unwrap();
    assert_eq!(wrong.requests().len(), 1, "remembered, not asked again");
    assert_eq!(holder.requests().len(), 2);
}

#[test]
fn a_second_redirect_in_a_row_is_an_error_of_its_own() {
    let never = ScriptedTrapper::taking();
    let second = ScriptedTrapper::redirecting(2, &never.address());
    let first = ScriptedTrapper::redirecting(1, &second.address());
    let start = Instant::now();
    let e = send(&mut routes(&first.address()), &values(&["h"]), 3 * SECOND).unwrap_err();
    assert!(
        start.elapsed() < SECOND,
        "no retries: {:?}",
        start.elapsed()
    );
    let msg = e.to_string();
    assert_eq!(e.failure(), Failure::ZabbixRefused);
    assert!(
        msg.contains(&format!(
            "Zabbix at {} redirected the request to {} right after {} had redirected it",
            second.address(),
            never.address(),
            first.address()
        )),
        "{msg}"
    );
    assert!(
        never.requests().is_empty(),
        "the second redirect is not followed"
    );
}

#[test]
fn a_newer_redirect_replaces_the_one_held() {
    let c = ScriptedTrapper::taking();
    // Holds the host once, then hands it over to c with a newer revision.
    let b = ScriptedTrapper::changing(take, always(redirect_reply(2, &c.address())));
    let a = ScriptedTrapper::redirecting(1, &b.address());
    let mut r = routes(&a.address());
    send(&mut r, &values(&["h"]), 3 * SECOND).unwrap();
    send(&mut r, &values(&["h"]), 3 * SECOND).unwrap();
    assert_eq!(
        (a.requests().len(), b.requests().len(), c.requests().len()),
        (1, 2, 1)
    );
    let order: Vec<String> = r[0].order("h").iter().map(ToString::to_string).collect();
    assert_eq!(
        order,
        [c.address(), a.address()],
        "b's entry was replaced by c"
    );
}

#[test]
fn a_reset_sends_the_request_back_to_the_configured_nodes() {
    // a (configured) redirects first to b, later (the group moved the host) to c; b holds the
    // host once, then its proxy has been offline too long and it resets the client.
    let c = ScriptedTrapper::taking();
    let b = ScriptedTrapper::changing(take, always(reset_reply()));
    // The reset does not count as a redirect: a's redirect to c is followed in the same request.
    moves_from_b_to_c(&b, &c, Duration::ZERO);
    assert_eq!(b.requests().len(), 2);
}

#[test]
fn a_reset_from_a_configured_node_fails_over_like_not_here() {
    let a = ScriptedTrapper::new(|_| Scripted::Reply(reset_reply()));
    let e = send(&mut routes(&a.address()), &values(&["h"]), 3 * SECOND).unwrap_err();
    assert_eq!(e.failure(), Failure::ZabbixRefused);
    assert!(
        e.to_string()
            .contains("the redirect was reset, but none was followed"),
        "{e}"
    );
    let b = ScriptedTrapper::taking();
    let list = format!("{};{}", a.address(), b.address());
    assert_eq!(
        send(&mut routes(&list), &values(&["h"]), 3 * SECOND)
            .unwrap()
            .processed,
        1
    );
}

#[test]
fn not_here_fails_over_in_a_cluster_but_commas_stay_independent() {
    let elsewhere = || {
        ScriptedTrapper::new(|r| {
            let host = r["host"].as_str().unwrap_or("h");
            Scripted::Reply(json!({"response": "failed",
                               "info": format!("host \"{host}\" is monitored by a proxy")}))
        })
    };
    let (a, b) = (elsewhere(), ScriptedTrapper::taking());
    let who = Announcement {
        host: "web 1".into(),
        metadata: None,
        interface: None,
    };
    let d = Deadline::after(3 * SECOND);
    let mut r = routes(&format!("{};{}", a.address(), b.address()));
    let got = active::announce(&mut r[0], &who, &d, &Default::default()).unwrap();
    assert_eq!(got, Registration::Known);
    assert_eq!((a.requests().len(), b.requests().len()), (1, 1));
    assert_eq!(
        r[0].order("web 1")[0].to_string(),
        b.address(),
        "b first next time"
    );
    assert_eq!(
        r[0].order("other")[0].to_string(),
        b.address(),
        "for every host"
    );

    // Alone, the refusal is the error, and it says where to send instead.
    let mut alone = routes(&a.address());
    let e = active::announce(&mut alone[0], &who, &d, &Default::default()).unwrap_err();
    assert_eq!(e.failure(), Failure::ZabbixRefused);
    let msg = e.to_string();
    assert!(
        msg.contains(r#"does not hold the host: host "web 1" is monitored by a proxy"#),
        "{msg}"
    );
    assert!(msg.contains("send to the proxy"), "{msg}");

    // ',' destinations each get everything; one refusing makes the delivery partial.
    let c = ScriptedTrapper::new(|_| {
        Scripted::Reply(json!({"response": "failed", "info": "host \"h\" is monitored by a proxy"}))
    });
    let d2 = ScriptedTrapper::taking();
    let mut two = routes(&format!("{},{}", c.address(), d2.address()));
    let e = send(&mut two, &values(&["h"]), 3 * SECOND).unwrap_err();
    assert_eq!(e.failure(), Failure::Partial);
    assert_eq!((c.requests().len(), d2.requests().len()), (1, 1));
}

#[test]
fn other_refusals_do_not_fail_over() {
    let a = ScriptedTrapper::new(|_| {
        Scripted::Reply(json!({"response": "failed", "info": "cannot parse"}))
    });
    let b = ScriptedTrapper::taking();
    let list = format!("{};{}", a.address(), b.address());
    let e = send(&mut routes(&list), &values(&["h"]), 3 * SECOND).unwrap_err();
    assert!(
        e.to_string().contains("refused the request: cannot parse"),
        "{e}"
    );
    assert!(b.requests().is_empty());
}

#[test]
fn values_for_several_hosts_go_out_one_request_per_host() {
    // a holds h1 and h3 and redirects h2 to b, judging by the first value's host as Zabbix
    // does; h2's redirect does not send h3 to b.
    let b = ScriptedTrapper::taking();
    let to_b = b.address();
    let a = ScriptedTrapper::new(move |r| {
        Scripted::Reply(match r["data"][0]["host"].as_str() {
            Some("h2") => redirect_reply(1, &to_b),
            _ => processed_reply(r),
        })
    });
    let vals = values(&["h1", "h2", "h1", "h2", "h3"]);
    let mut r = routes(&a.address());
    let got = send(&mut r, &vals, 3 * SECOND).unwrap();
    assert_eq!((got.processed, got.total), (5, 5));
    assert_eq!(a.hosts(), [vec!["h1", "h1"], vec!["h2", "h2"], vec!["h3"]]);
    assert_eq!(b.hosts(), [vec!["h2", "h2"]]);
    // Values keep their order inside each host's request.
    let first = a.requests().remove(0);
    let keys: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["k[0]", "k[2]"]);
    // Chunks split each host's values, never mix hosts.
    let c = ScriptedTrapper::taking();
    let opts = SenderOptions {
        chunk_size: Some(2),
        ..Default::default()
    };
    let d = Deadline::after(3 * SECOND);
    sender::send(
        &parse_list(&c.address(), 1).unwrap(),
        &values(&["x", "y", "x", "x"]),
        &d,
        &opts,
    )
    .unwrap()
    .into_result()
    .unwrap();
    assert_eq!(c.hosts(), [vec!["x", "x"], vec!["x"], vec!["y"]]);
}

#[test]
fn what_a_reply_counted_is_never_sent_again() {
    // h1 is taken; h2 is redirected to a proxy that is down, and the configured node keeps
    // redirecting there: h2 fails, h1 is not resent, and the counts say what was taken.
    let dead = format!("127.0.0.1:{}", closed_port());
    let a = ScriptedTrapper::new(move |r| {
        Scripted::Reply(match r["data"][0]["host"].as_str() {
            Some("h2") => redirect_reply(1, &dead),
            _ => processed_reply(r),
        })
    });
    let e = send(
        &mut routes(&a.address()),
        &values(&["h1", "h2"]),
        3 * SECOND,
    )
    .unwrap_err();
    let hosts = a.hosts();
    assert_eq!(
        hosts.iter().filter(|h| h[0] == "h1").count(),
        1,
        "{hosts:?}"
    );
    assert!(
        matches!(&e, DeliveryError::Partial { summary, .. } if summary.processed == 1),
        "{e}"
    );
    assert!(e.to_string().contains("right after"), "{e}");
}

#[test]
fn a_redirect_to_a_stalled_proxy_ends_at_the_deadline_without_a_resend() {
    let stalled = ScriptedTrapper::new(|_| Scripted::Stall);
    let a = ScriptedTrapper::redirecting(1, &stalled.address());
    let start = Instant::now();
    let e = send(
        &mut routes(&a.address()),
        &values(&["h"]),
        Duration::from_millis(700),
    )
    .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_millis(1200),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(e.failure(), Failure::DeadlineExceeded);
    thread::sleep(Duration::from_millis(100));
    assert_eq!((a.requests().len(), stalled.requests().len()), (1, 1));
}

#[test]
fn the_host_is_relearnt_when_its_proxy_goes_away() {
    // b holds the host for one request and goes away; the configured node a then names c.
    let c = ScriptedTrapper::taking();
    let b = ScriptedTrapper::serving(1, take);
    // (Time for b's listener to close.)
    moves_from_b_to_c(&b, &c, Duration::from_millis(50));
    assert_eq!(b.requests().len(), 1);
}

#[test]
fn announcements_follow_redirects_too() {
    let holder =
        ScriptedTrapper::new(|_| Scripted::Reply(json!({"response": "success", "data": []})));
    let wrong = ScriptedTrapper::redirecting(1, &holder.address());
    let who = Announcement {
        host: "h".into(),
        metadata: Some("m".into()),
        interface: None,
    };
    let d = Deadline::after(3 * SECOND);
    let mut r = routes(&wrong.address());
    assert_eq!(
        active::announce(&mut r[0], &who, &d, &Default::default()).unwrap(),
        Registration::Known
    );
    assert_eq!(holder.requests()[0]["request"], "active checks");
    assert_eq!(holder.requests()[0]["host_metadata"], "m");
}

#[test]
fn refused_values_of_a_host_on_a_proxy_say_where_to_send() {
    // A 7.0 server counts values for a proxy's host as failed, and says why to an active-checks
    // request (active.c: `host "h" is monitored by a proxy`).
    let server = ScriptedTrapper::new(|r| {
        Scripted::Reply(if r["request"] == "active checks" {
            json!({"response": "failed", "info": "host \"h\" is monitored by a proxy"})
        } else {
            json!({"response": "success",
                   "info": "processed: 0; failed: 1; total: 1; seconds spent: 0.000030"})
        })
    });
    let dests = parse_list(&server.address(), 1).unwrap();
    let d = Deadline::after(3 * SECOND);
    let opts = SenderOptions::default();
    let e = sender::send(&dests, &values(&["h"]), &d, &opts)
        .unwrap()
        .into_result()
        .unwrap_err();
    let e = active::explain(e, "h", &dests, &d, &opts.connect);
    assert_eq!(e.failure(), Failure::Partial);
    let msg = e.to_string();
    assert!(
        msg.ends_with(&format!(
            "Zabbix at {} says of host \"h\": host \"h\" is monitored by a proxy: send to the \
             proxy (or proxy group) that monitors it",
            server.address()
        )),
        "{msg}"
    );
}
