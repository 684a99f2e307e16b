//! concierge-discover and concierge-courier on Prometheus expositions from real peers, value
//! for value against oracles that are not our parser: prometheus_client's own parsers, and a
//! Prometheus 2.42 server scraping the same static documents (read through its HTTP API and
//! promtool). No Zabbix needed: the courier runs with --dry-run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use concierge_testkit::prometheus::*;
use concierge_testkit::*;

const LIMIT: Duration = Duration::from_secs(60);

/// The courier's key → (value, clock) for a document.
fn courier(source: &str, extra: &[&str]) -> BTreeMap<String, (f64, u64)> {
    let mut args = vec![
        "prometheus",
        source,
        "--dry-run",
        "-T",
        "-s",
        "peer-host",
        "-t",
        "20s",
    ];
    args.extend_from_slice(extra);
    let run = run_tool("concierge-courier", &args, None, LIMIT).ok();
    dry_run_values(&run.stdout)
}

/// Asserts the courier delivered exactly `want`, value for value (bit-exact: both sides
/// print shortest round-trip decimals).
fn assert_same(what: &str, got: &BTreeMap<String, (f64, u64)>, want: &BTreeMap<String, f64>) {
    let g: BTreeSet<String> = got.keys().cloned().collect();
    let w: BTreeSet<String> = want.keys().cloned().collect();
    assert!(g == w, "{what}: keys differ: {}", key_diff(&w, &g));
    for (k, v) in want {
        assert_eq!(
            got[k].0.to_bits(),
            v.to_bits(),
            "{what}: {k}: courier {} vs oracle {v}",
            got[k].0
        );
    }
    note(&format!("{what}: {} values match", want.len()));
}

#[test]
fn courier_matches_prometheus_clients_own_parser() {
    if !peers_installed() {
        return;
    }
    let node = TempFile::new("node.txt", node_exporter_snapshot());
    let cases = [
        ("text", fixture("prometheus_every_type.txt")),
        ("openmetrics", fixture("prometheus_every_type.om.txt")),
        ("openmetrics", fixture("prometheus_every_type.utf8.om.txt")),
        ("text", node.0.clone()),
    ];
    for (format, file) in cases {
        let file_s = file.to_str().unwrap();
        let oracle = client_parse(format, &file);
        let expected = expected_values(&oracle);
        let got = courier(file_s, &[]);
        let want: BTreeMap<String, f64> =
            expected.iter().map(|(k, (v, _))| (k.clone(), *v)).collect();
        assert_same(&format!("{format} {}", file.display()), &got, &want);
        // A sample's own timestamp is its clock.
        for (k, (_, ts)) in &expected {
            if let Some(ts) = ts {
                assert_eq!(got[k].1, ts.floor() as u64, "{k}");
            }
        }
        assert!(
            expected.values().any(|(_, ts)| ts.is_some()) || format == "text",
            "a timestamped sample is covered"
        );
    }
}

#[test]
fn courier_matches_a_prometheus_server_scraping_the_same_documents() {
    if !peers_installed() {
        return;
    }
    let text = std::fs::read(fixture("prometheus_every_type.txt")).unwrap();
    let om = std::fs::read(fixture("prometheus_every_type.om.txt")).unwrap();
    let node = node_exporter_snapshot().to_vec();
    let _server = StaticServer::start(
        STATIC_PORT,
        vec![
            (
                "text".into(),
                "text/plain; version=0.0.4; charset=utf-8".into(),
                text,
            ),
            (
                "om".into(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8".into(),
                om,
            ),
            (
                "node".into(),
                "text/plain; version=0.0.4; charset=utf-8".into(),
                node,
            ),
        ],
    );
    let prometheus = Prometheus::start(&[("text", "text"), ("om", "om"), ("node", "node")]);
    let quantiles = [0.5, 0.95, 0.99];
    for job in ["text", "om", "node"] {
        let url = format!("http://127.0.0.1:{STATIC_PORT}/{job}");
        // What Prometheus stored, less its creation-time series, non-finite values, and the
        // sample with its own (old) timestamp, which a TSDB refuses as out of bounds.
        let stored: BTreeMap<String, f64> = prometheus
            .samples(job)
            .into_iter()
            .filter(|s| {
                s.value.is_finite()
                    && !s.name.ends_with("_created")
                    && s.name != "up"
                    && !s.name.starts_with("scrape_")
            })
            .map(|s| {
                (
                    series_part(&item_key("any", &s.name, &s.labels)).to_string(),
                    s.value,
                )
            })
            .collect();
        // Prometheus' API has no types per sample: compare the keys' series parts.
        let mut got: BTreeMap<String, (f64, u64)> = courier(&url, &[])
            .into_iter()
            .map(|(k, v)| (series_part(&k).to_string(), v))
            .collect();
        got.retain(|k, _| !k.starts_with("[last_seen_temperature_celsius,"));
        assert_same(&format!("Prometheus job {job}"), &got, &stored);

        // Quantiles at the edge against histogram_quantile over the same buckets.
        let q_arg = quantiles.map(|q| q.to_string()).join(",");
        let with_q = courier(&url, &["--quantiles", &q_arg]);
        let families: BTreeSet<String> = prometheus
            .query(&format!(
                "{{job=\"{job}\",__name__=~\".+_bucket\",le=\"+Inf\"}}"
            ))
            .unwrap()
            .into_iter()
            .map(|(l, _)| l["__name__"].trim_end_matches("_bucket").to_string())
            .collect();
        let mut checked = 0;
        for family in &families {
            for q in quantiles {
                let rows = prometheus_quantile(&prometheus, q, family, job);
                for (mut labels, value) in rows {
                    labels.insert("quantile".into(), q.to_string());
                    let key = item_key("histogram", family, &labels);
                    if value.is_nan() {
                        assert!(!with_q.contains_key(&key), "NaN quantile delivered: {key}");
                        continue;
                    }
                    let ours = with_q
                        .get(&key)
                        .unwrap_or_else(|| panic!("no computed quantile {key}"))
                        .0;
                    assert_eq!(
                        ours.to_bits(),
                        value.to_bits(),
                        "{key}: ours {ours} vs Prometheus {value}"
                    );
                    checked += 1;
                }
            }
        }
        note(&format!(
            "job {job}: {checked} quantiles match histogram_quantile"
        ));
        if job != "node" {
            assert!(checked >= 6, "{checked}");
        }
    }
}

/// `histogram_quantile(q, family_bucket{job})`, through promtool; labels without job/instance.
fn prometheus_quantile(
    p: &Prometheus,
    q: f64,
    family: &str,
    job: &str,
) -> Vec<(BTreeMap<String, String>, f64)> {
    let expr = format!("histogram_quantile({q}, {family}_bucket{{job=\"{job}\"}})");
    let v = p
        .promtool_query(&expr)
        .unwrap_or_else(|e| panic!("{expr}: {e:#}"));
    v.as_array()
        .unwrap_or_else(|| panic!("promtool gave {v}"))
        .iter()
        .map(|r| {
            let mut labels = metric_labels(r);
            labels.remove("job");
            labels.remove("instance");
            (
                labels,
                parse_prom_value(r["value"][1].as_str().unwrap_or("")),
            )
        })
        .collect()
}

#[test]
fn discovery_rows_expand_to_exactly_the_delivered_keys() {
    if !peers_installed() {
        return;
    }
    let node = TempFile::new("node-lld.txt", node_exporter_snapshot());
    for file in [
        fixture("prometheus_every_type.utf8.om.txt")
            .to_str()
            .unwrap()
            .to_string(),
        node.path().to_string(),
    ] {
        let run = run_tool(
            "concierge-discover",
            &["prometheus", &file, "--quantiles", "0.5,0.99"],
            None,
            LIMIT,
        )
        .ok();
        let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("LLD JSON");
        let rows = doc["data"].as_array().expect("data");
        let mut discovered = BTreeSet::new();
        for row in rows {
            let m = row.as_object().unwrap();
            for k in m.keys() {
                assert!(is_macro(k), "{k} is not a valid LLD macro");
            }
            let metric = m["{#METRIC}"].as_str().unwrap();
            let labels = m["{#LABELS}"].as_str().unwrap();
            // The server's expansion of prometheus.<rule>[{#METRIC},{#LABELS}].
            let rule = rule_of(m["{#TYPE}"].as_str().unwrap());
            discovered.insert(format!(
                "prometheus.{rule}[{},{}]",
                zabbix_quote(metric),
                zabbix_quote(labels)
            ));
        }
        assert_eq!(discovered.len(), rows.len(), "one row per series");
        let delivered: BTreeSet<String> = courier(&file, &["--quantiles", "0.5,0.99"])
            .into_keys()
            .collect();
        // Every delivered value has its item; the rest are series that are NaN or ±Inf now.
        assert!(
            delivered.is_subset(&discovered),
            "{}",
            key_diff(&discovered, &delivered)
        );
        let undelivered = discovered.len() - delivered.len();
        assert!(
            undelivered <= 12,
            "{undelivered} discovered series get no value"
        );
        note(&format!(
            "{file}: {} rows, {} delivered",
            rows.len(),
            delivered.len()
        ));
    }
}

fn is_macro(m: &str) -> bool {
    m.strip_prefix("{#")
        .and_then(|r| r.strip_suffix('}'))
        .is_some_and(|i| {
            !i.is_empty()
                && i.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
        })
}

#[test]
fn http_source_negotiates_openmetrics_with_the_client_library() {
    if !peers_installed() {
        return;
    }
    let _peer = Daemon::spawn(
        "prometheus_client peer",
        std::process::Command::new("python3")
            .arg(repo_root().join("scripts/prometheus_peer.py"))
            .args(["serve", &PEER_PORT.to_string()]),
    );
    let url = format!("http://127.0.0.1:{PEER_PORT}/metrics");
    // The library answers OpenMetrics only when asked for it: the body then ends with # EOF.
    let om = wait_for(
        "the prometheus_client peer",
        Duration::from_secs(30),
        || http_get(&url, concierge_accept()).map(Some),
    );
    assert!(String::from_utf8_lossy(&om).trim_end().ends_with("# EOF"));
    let file = TempFile::new("peer.om", &om);
    let expected = expected_values(&client_parse("openmetrics", &file.0));
    let want: BTreeMap<String, f64> = expected.iter().map(|(k, (v, _))| (k.clone(), *v)).collect();
    // Read as the Content-Type says: in OpenMetrics a timestamp is in seconds (text: ms).
    let got = courier(&url, &[]);
    assert_same("prometheus_client over HTTP", &got, &want);
    let stamped: Vec<_> = expected
        .iter()
        .filter_map(|(k, (_, ts))| ts.map(|t| (k, t)))
        .collect();
    assert!(!stamped.is_empty());
    // The live peer stamps its sample a minute before each scrape, so the courier's scrape
    // and ours may be a second apart; read as milliseconds it would be 1970.
    for (k, ts) in stamped {
        assert!(
            got[k].1.abs_diff(ts.floor() as u64) <= 5,
            "{k}: {} vs {ts}",
            got[k].1
        );
    }
}

/// The Accept header a Prometheus server sends (OpenMetrics first).
fn concierge_accept() -> &'static str {
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
}
