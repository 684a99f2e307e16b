//! Issue #12: the templates' trapper items take their Allowed hosts from the macro
//! {$CONCIERGE.ALLOWED_HOSTS}, on both lab versions. Every trapper item, item prototype and
//! LLD rule of the shipped templates carries it once imported; with the default a sender on
//! 127.0.0.1 delivers, and with the macro set to 127.0.0.2 on the host the same courier run
//! from 127.0.0.1 gets 'failed' for each value, which never reaches the history.
//!
//! The templates are private copies (own names, own UUIDs), deleted at the end: other
//! worktrees import their own copies of the shipped ones into the shared lab at any time.

use std::time::Duration;

use anyhow::bail;
use concierge_testkit::*;
use serde_json::{json, Value};

const MACRO: &str = "{$CONCIERGE.ALLOWED_HOSTS}";
const DEFAULT: &str = "127.0.0.1,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7";
const FILES: [(&str, &str); 4] = [
    ("concierge_heartbeat.yaml", "Concierge heartbeat"),
    ("concierge_app.yaml", "Concierge app"),
    ("concierge_service.yaml", "Concierge service"),
    ("concierge_prometheus.yaml", "Concierge Prometheus app"),
];
const KILL_AFTER: Duration = Duration::from_secs(20);

/// (key, trapper_hosts) of every trapper (type 2) object `method` returns for `templateid`.
fn trappers(lab: &Lab, method: &str, templateid: &str) -> Vec<(String, String)> {
    let found = lab
        .call(
            method,
            json!({"output": ["key_", "type", "trapper_hosts"], "templateids": [templateid]}),
        )
        .unwrap_or_else(|e| panic!("{method}: {e:#}"));
    found
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["type"] == "2")
        .map(|o| {
            let s = |f: &str| o[f].as_str().unwrap_or_default().to_string();
            (s("key_"), s("trapper_hosts"))
        })
        .collect()
}

/// The template macro {$CONCIERGE.ALLOWED_HOSTS}'s value, if the template has it.
fn macro_value(lab: &Lab, templateid: &str) -> Option<String> {
    let found = lab
        .call(
            "usermacro.get",
            json!({"output": ["macro", "value"], "hostids": [templateid]}),
        )
        .expect("usermacro.get");
    found
        .as_array()?
        .iter()
        .find(|m| m["macro"] == MACRO)
        .and_then(|m| m["value"].as_str().map(str::to_string))
}

fn courier(host: &Host, lines: &str) -> Run {
    run_tool(
        "concierge-courier",
        &[
            "-z",
            host.lab.server(),
            "-s",
            &host.name,
            "-t",
            "5s",
            "-i",
            "-",
        ],
        Some(lines.as_bytes()),
        KILL_AFTER,
    )
}

lab_test!(
    fn trapper_items_refuse_senders_outside_the_allowed_hosts_macro(lab: &Lab) {
        let suffix = unique_host("allowed");
        let private = lab.import_private_copies(&FILES, &suffix);

        // Every trapper object of every template takes its senders from the macro.
        for (_, shipped) in FILES {
            let id = private.id(shipped);
            let mut all = Vec::new();
            for method in ["item.get", "itemprototype.get", "discoveryrule.get"] {
                all.extend(trappers(lab, method, id));
            }
            assert!(!all.is_empty(), "{shipped} has trapper objects");
            for (key, hosts) in &all {
                assert_eq!(hosts, MACRO, "{shipped}: {key}'s Allowed hosts");
            }
            let defined = macro_value(lab, id);
            if shipped == "Concierge app" {
                assert_eq!(defined, None, "app inherits the macro from heartbeat");
            } else {
                assert_eq!(defined.as_deref(), Some(DEFAULT), "{shipped}'s default");
            }
        }

        // A container host (app, which links heartbeat), sending from 127.0.0.1.
        let name = unique_host("allowed-host");
        let host = lab.create_host_with(
            &name,
            json!({"templates": [{"templateid": private.id("Concierge app")}],
                   "macros": [{"macro": MACRO, "value": "127.0.0.2"}]}),
        );
        let lines = "- concierge.load 5\n- container.state 1\n";
        // Outside the list: every value is 'failed' (the server's cache may still hold the
        // host without its macro for a moment, so wait for the refusal first).
        let refused = wait_for(
            "the trapper items to refuse 127.0.0.1",
            Duration::from_secs(60),
            || {
                let run = courier(&host, lines);
                if run.stderr.contains("processed: 0; failed: 2") {
                    return Ok(Some(run));
                }
                bail!("not yet refused: {run}")
            },
        );
        assert_ne!(refused.code, Some(0), "a refusal is no success:\n{refused}");
        // The refusal holds.
        for _ in 0..3 {
            let run = courier(&host, lines);
            assert!(
                run.stderr.contains("processed: 0; failed: 2"),
                "still refused:\n{run}"
            );
        }
        let load = host.item_id("concierge.load").expect("concierge.load");
        let state = host.item_id("container.state").expect("container.state");
        assert!(
            lab.history(std::slice::from_ref(&load), FLOAT)
                .unwrap()
                .is_empty(),
            "no refused load was stored"
        );
        assert!(
            lab.history(std::slice::from_ref(&state), UNSIGNED)
                .unwrap()
                .is_empty(),
            "no refused state was stored"
        );

        // The template's default lets the same sender in.
        let hostmacro = lab
            .call(
                "usermacro.get",
                json!({"output": ["hostmacroid"], "hostids": [host.hostid], "filter": {"macro": MACRO}}),
            )
            .unwrap();
        let id: Value = hostmacro[0]["hostmacroid"].clone();
        lab.call("usermacro.delete", json!([id])).unwrap();
        wait_for(
            "the default to let 127.0.0.1 in",
            Duration::from_secs(60),
            || {
                let run = courier(&host, lines);
                if run.code == Some(0) && run.stderr.is_empty() {
                    return Ok(Some(()));
                }
                bail!("not yet accepted: {run}")
            },
        );
        wait_for("the accepted load", Duration::from_secs(30), || {
            let rows = lab.history(std::slice::from_ref(&load), FLOAT)?;
            Ok((!rows.is_empty()).then_some(()))
        });
    }
);
