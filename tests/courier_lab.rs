//! concierge-discover and concierge-courier against each real Zabbix lab (6.0 and 7.0):
//! discovery creates the items, the courier fills them, and history.get shows every value. Each
//! test has its own host (deleted at the end). Without a lab its tests print SKIPPED and return,
//! unless CONCIERGE_REQUIRE_LAB=1.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::anyhow;
use concierge_testkit::*;

const COURIER: &str = "concierge-courier";
const DISCOVER: &str = "concierge-discover";
const LLD_KEY: &str = "concierge.discover.timers";
const KILL_AFTER: Duration = Duration::from_secs(60);

/// The 11 item prototypes `timer[{#TIMER}.STAT]`.
fn prototype_keys() -> Vec<String> {
    default_timer_stats()
        .map(|s| format!("timer[{{#TIMER}}.{s}]"))
        .collect()
}

/// A host with the trapper LLD rule and the 11 float prototypes.
fn host_with_timer_discovery(lab: &Lab, prefix: &str) -> Host {
    let host = lab.create_host(&unique_host(prefix));
    let rule = host.create_trapper_lld_rule(LLD_KEY);
    let protos = host.create_trapper_prototypes(&rule, &prototype_keys(), FLOAT);
    assert_eq!(protos.len(), 11);
    host
}

/// Run concierge-discover on `url` and return its document (checked to list exactly `names`).
fn discover(url: &str, names: &[&str]) -> String {
    let run = run_tool(DISCOVER, &["timers", url, "-t", "10s"], None, KILL_AFTER);
    assert_eq!(run.code, Some(0), "{run}");
    let doc = run.stdout.trim_end_matches('\n');
    let parsed: serde_json::Value =
        serde_json::from_str(doc).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"));
    let listed: BTreeSet<&str> = parsed["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|row| row["{#TIMER}"].as_str().expect("{#TIMER} string"))
        .collect();
    assert_eq!(listed, names.iter().copied().collect(), "discovered names");
    doc.to_string()
}

/// Deliver the LLD document with the courier's zabbix_sender mode (`-i -`), retrying until
/// the server's configuration cache knows the new rule.
fn send_lld(host: &Host, document: &str) {
    let line = format!("- {LLD_KEY} {}\n", input_quote(document));
    let args = [
        "-z",
        host.lab.server(),
        "-s",
        host.name.as_str(),
        "-t",
        "10s",
        "-i",
        "-",
    ];
    wait_for(
        "the LLD rule to accept the document",
        Duration::from_secs(30),
        || {
            let run = run_tool(COURIER, &args, Some(line.as_bytes()), KILL_AFTER);
            match run.code {
                Some(0) => {
                    run.assert_success();
                    Ok(Some(()))
                }
                Some(2) if run.stdout == "-4\n" => {
                    Err(anyhow!("still refused: {}", run.stderr.trim()))
                }
                _ => panic!("sending the LLD document failed:\n{run}"),
            }
        },
    );
}

/// Wait until the host has `n` items, then return them all.
fn wait_for_items(host: &Host, n: usize, limit: Duration) -> Vec<ItemRow> {
    wait_for(
        &format!("{n} discovered items on {}", host.name),
        limit,
        || {
            let count = host.item_count()?;
            if count >= n {
                Ok(Some(()))
            } else {
                Err(anyhow!("{count} items so far"))
            }
        },
    );
    host.items().expect("item.get")
}

/// The items' keys must be exactly the keys Zabbix's quoting rule gives, all discovered floats.
fn assert_items_match(items: &[ItemRow], want: &BTreeMap<String, f64>) {
    let got: BTreeSet<String> = items.iter().map(|i| i.key.clone()).collect();
    let want_keys: BTreeSet<String> = want.keys().cloned().collect();
    assert!(
        got == want_keys,
        "LLD item keys: {}",
        key_diff(&want_keys, &got)
    );
    assert_eq!(items.len(), want.len(), "no duplicate keys");
    for i in items {
        assert_eq!(
            (i.flags, i.value_type),
            (4, FLOAT),
            "discovered float item: {i:?}"
        );
    }
}

/// Run the courier until Zabbix takes every value (a partial -4 is expected while the
/// configuration cache catches up); returns the successful run.
fn deliver_until_accepted(
    host: &Host,
    url: &str,
    timeout: &str,
    extra: &[&str],
    limit: Duration,
) -> Run {
    let mut args = vec![
        "timers",
        url,
        "-z",
        host.lab.server(),
        "-s",
        host.name.as_str(),
        "-t",
        timeout,
    ];
    args.extend_from_slice(extra);
    wait_for(
        "the courier's delivery to be fully processed",
        limit,
        || {
            let run = run_tool(COURIER, &args, None, KILL_AFTER);
            match run.code {
                Some(0) => Ok(Some(run)),
                Some(2) if run.stdout == "-4\n" => Err(anyhow!("partial: {}", run.stderr.trim())),
                _ => panic!("the courier failed:\n{run}"),
            }
        },
    )
}

/// Wait until every item has history, then check every stored value against the document.
fn assert_history(lab: &Lab, items: &[ItemRow], want: &BTreeMap<String, f64>, limit: Duration) {
    let ids: Vec<String> = items.iter().map(|i| i.itemid.clone()).collect();
    let key_of: BTreeMap<&str, &str> = items
        .iter()
        .map(|i| (i.itemid.as_str(), i.key.as_str()))
        .collect();
    let rows = wait_for(
        &format!("history of all {} items", ids.len()),
        limit,
        || {
            let rows = lab.history(&ids, FLOAT)?;
            let with_values: BTreeSet<&str> = rows.iter().map(|r| r.itemid.as_str()).collect();
            if with_values.len() == ids.len() {
                Ok(Some(rows))
            } else {
                Err(anyhow!(
                    "{} of {} items have history",
                    with_values.len(),
                    ids.len()
                ))
            }
        },
    );
    // Earlier partial deliveries may have stored the same values already: every row must match.
    for r in &rows {
        let key = key_of[r.itemid.as_str()];
        let v: f64 = r.value.parse().expect("float history value");
        assert!(
            close(v, want[key]),
            "{key}: stored {}, document says {}",
            r.value,
            want[key]
        );
    }
}

/// A served document of timers `names`, a host with timer discovery, and the items discovery
/// made (checked against the keys Zabbix's quoting gives, within `limit`), with the expected
/// value of each key.
fn discovered(
    lab: &Lab,
    prefix: &str,
    names: &[&str],
    limit: Duration,
) -> (MetricsServer, Host, Vec<ItemRow>, BTreeMap<String, f64>) {
    let (doc, expected) = dropwizard_timers(names);
    let want = expected_by_key(&expected);
    let source = MetricsServer::serve(doc);
    let host = host_with_timer_discovery(lab, prefix);
    let document = discover(&source.url(), names);
    send_lld(&host, &document);
    let items = wait_for_items(&host, want.len(), limit);
    assert_items_match(&items, &want);
    (source, host, items, want)
}

/// Items must still be supported after their values were processed (processed ≠ stored).
fn assert_supported(host: &Host) {
    for i in host.items().expect("item.get") {
        assert_eq!(i.state, 0, "item turned unsupported: {i:?}");
    }
}

lab_test!(
    fn discovery_then_delivery_fills_every_item_with_the_right_value(lab: &Lab) {
        let names = [
            "GET /api/v1/users,list",
            "weird]name",
            " leading space",
            "\"quoted\"",
            "plain.name-1",
            "ünïcødé.計時-ß",
        ];
        let (source, host, items, want) =
            discovered(lab, "courier-lld", &names, Duration::from_secs(60));
        assert_eq!(want.len(), 66);

        let run = deliver_until_accepted(&host, &source.url(), "5s", &[], Duration::from_secs(60));
        run.assert_success();
        assert!(
            run.stderr.is_empty(),
            "a clean run prints nothing on stderr:\n{run}"
        );
        assert_history(lab, &items, &want, Duration::from_secs(30));
        assert_supported(&host);
    }
);

lab_test!(
    fn thousand_timers_deliver_eleven_thousand_values_in_one_request(lab: &Lab) {
        let names: Vec<String> = (0..1000)
            .map(|i| match i % 10 {
                0 => format!("GET /api/items-{i},page"),
                _ => format!("svc.request-{i}"),
            })
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (source, host, items, want) =
            discovered(lab, "courier-11k", &refs, Duration::from_secs(180));
        assert_eq!(want.len(), 11_000);

        let run =
            deliver_until_accepted(&host, &source.url(), "5s", &["-v"], Duration::from_secs(90));
        run.assert_success();
        let counts: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.contains("processed:"))
            .collect();
        assert_eq!(counts.len(), 1, "one destination, one counts line:\n{run}");
        assert!(
            counts[0].starts_with(&format!(
                "concierge-courier: {}: 1/1 request(s) answered; \
             processed: 11000; failed: 0; total: 11000; seconds spent: ",
                lab.server()
            )),
            "one request with every value processed:\n{run}"
        );
        assert_history(lab, &items, &want, Duration::from_secs(60));
        assert_supported(&host);
    }
);

lab_test!(
    fn unknown_keys_are_a_partial_failure_with_the_exact_count(lab: &Lab) {
        let (doc, _) = dropwizard_timers(&["app.one", "app.two"]);
        let source = MetricsServer::serve(doc);
        let host = lab.create_host(&unique_host("courier-nokeys"));
        let run = run_tool(
            COURIER,
            &[
                "timers",
                &source.url(),
                "-z",
                lab.server(),
                "-s",
                &host.name,
                "-t",
                "5s",
            ],
            None,
            KILL_AFTER,
        );
        run.assert_code(2, "-4");
        assert!(run.stderr.contains("refused 22 of 22"), "{run}");
        assert_eq!(run.stderr.lines().count(), 1, "{run}");
    }
);

lab_test!(
    fn some_known_keys_give_the_exact_partial_count(lab: &Lab) {
        let (doc, expected) = dropwizard_timers(&["app.one", "app.two"]);
        let source = MetricsServer::serve(doc);
        let host = lab.create_host(&unique_host("courier-partial"));
        let key = timer_key("app.one", "p99");
        let itemid = host.create_trapper_item(&key, FLOAT);
        let url = source.url();
        let args = [
            "timers",
            url.as_str(),
            "-z",
            lab.server(),
            "-s",
            host.name.as_str(),
            "-t",
            "5s",
        ];
        // Until the cache sees the item all 22 are refused; then exactly 21.
        let run = wait_for(
            "the new item to be accepted",
            Duration::from_secs(30),
            || {
                let run = run_tool(COURIER, &args, None, KILL_AFTER);
                run.assert_code(2, "-4");
                if run.stderr.contains("refused 21 of 22") {
                    Ok(Some(run))
                } else if run.stderr.contains("refused 22 of 22") {
                    Err(anyhow!("not yet: {}", run.stderr.trim()))
                } else {
                    panic!("unexpected counts:\n{run}")
                }
            },
        );
        let want = expected[&("app.one".to_string(), "p99".to_string())];
        let rows = wait_for(
            "the accepted value in history",
            Duration::from_secs(30),
            || {
                let rows = lab.history(std::slice::from_ref(&itemid), FLOAT)?;
                Ok((!rows.is_empty()).then_some(rows))
            },
        );
        for r in rows {
            let v: f64 = r.value.parse().expect("float");
            assert!(
                close(v, want),
                "{key}: stored {}, expected {want}\n{run}",
                r.value
            );
        }
    }
);

/// The last value of item `key` on `host` through the API (item.get lastvalue), once it has one.
fn last_value(host: &Host, key: &str) -> anyhow::Result<Option<String>> {
    let found = host.lab.call(
        "item.get",
        serde_json::json!({"output": ["lastvalue", "lastclock", "units"], "hostids": [host.hostid],
                           "filter": {"key_": [key]}}),
    )?;
    let item = &found[0];
    if item["lastclock"].as_str().unwrap_or("0") == "0" {
        return Ok(None);
    }
    Ok(item["lastvalue"].as_str().map(str::to_string))
}

lab_test!(
    fn a_millisecond_timer_shows_its_p95_in_seconds(lab: &Lab) {
        // A Dropwizard app whose timers are in milliseconds: p95 199 ms must reach Zabbix as
        // 0.199 (s), and its rates in calls/minute as calls per second.
        let doc = br#"{"version":"4.0.0","timers":{"app.ms":{"count":12,"p95":199,
            "mean":49.5,"mean_rate":90,"duration_units":"milliseconds","rate_units":"calls/minute"}}}"#;
        let source = MetricsServer::serve(doc.to_vec());
        let host = lab.create_host(&unique_host("courier-ms"));
        for (stat, units) in [("p95", "s"), ("mean", "s"), ("count", "")] {
            let key = format!("timer[app.ms.{stat}]");
            let id = host.create_trapper_item(&key, FLOAT);
            lab.call(
                "item.update",
                serde_json::json!({"itemid": id, "units": units}),
            )
            .expect("item.update units");
        }
        let id = host.create_trapper_item("timer[app.ms.mean_rate]", FLOAT);
        lab.call(
            "item.update",
            serde_json::json!({"itemid": id, "units": "rps"}),
        )
        .expect("item.update units");

        // --dry-run prints what a delivery sends: the same conversion.
        let url = source.url();
        let dry = run_tool(
            COURIER,
            &[
                "timers",
                &url,
                "--dry-run",
                "-s",
                &host.name,
                "--stats",
                "p95,mean,count",
            ],
            None,
            KILL_AFTER,
        );
        assert_eq!(dry.code, Some(0), "{dry}");
        let p95_line = format!("\"{}\" \"timer[app.ms.p95]\" \"0.199\"", host.name);
        assert!(dry.stdout.lines().any(|l| l == p95_line), "dry run:\n{dry}");
        let url = source.url();
        wait_for(
            "the millisecond timer's values",
            Duration::from_secs(60),
            || {
                let run = run_tool(
                    COURIER,
                    &[
                        "timers",
                        &url,
                        "-z",
                        lab.server(),
                        "-s",
                        &host.name,
                        "-t",
                        "5s",
                        "--stats",
                        "p95,mean,count,mean_rate",
                    ],
                    None,
                    KILL_AFTER,
                );
                match run.code {
                    Some(0) | Some(2) => {}
                    _ => panic!("the courier failed:\n{run}"),
                }
                let p95 = last_value(&host, "timer[app.ms.p95]")?;
                let rate = last_value(&host, "timer[app.ms.mean_rate]")?;
                match (p95, rate) {
                    (Some(p95), Some(rate)) => Ok(Some((p95, rate))),
                    other => Err(anyhow!("not yet: {other:?} ({})", run.stderr.trim())),
                }
            },
        );
        let p95 = last_value(&host, "timer[app.ms.p95]").unwrap().unwrap();
        let mean = last_value(&host, "timer[app.ms.mean]")
            .unwrap()
            .unwrap_or_default();
        let count = last_value(&host, "timer[app.ms.count]")
            .unwrap()
            .unwrap_or_default();
        let rate = last_value(&host, "timer[app.ms.mean_rate]")
            .unwrap()
            .unwrap();
        assert!(
            close(p95.parse().unwrap(), 0.199),
            "{}: p95 lastvalue {p95}",
            lab.version()
        );
        assert!(
            close(mean.parse().unwrap(), 0.0495),
            "mean lastvalue {mean}"
        );
        assert!(
            close(count.parse().unwrap(), 12.0),
            "count lastvalue {count}"
        );
        assert!(
            close(rate.parse().unwrap(), 1.5),
            "90 calls/minute: lastvalue {rate}"
        );
        note(&format!(
            "{}: a p95 of 199 ms shows as lastvalue {p95} (s), mean 49.5 ms as {mean}",
            lab.version()
        ));
    }
);
