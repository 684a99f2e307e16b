//! The Prometheus path end to end on the real lab: a real zabbix_agentd runs the shipped
//! UserParameters for a host linked to "Concierge Prometheus app", whose five LLD rules
//! discover every series of a prometheus_client exposition served from 127.0.0.1; the courier
//! item delivers every sample, and history holds each one value for value as
//! prometheus_client's own parser reads the same document (NaN and ±Inf get items but no
//! values; counters' rate items read 0 for a static document). On both lab versions (the
//! host's 6.0 agent serves the 7.0 server too: fleets mix them).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use concierge_testkit::prometheus::*;
use concierge_testkit::*;
use serde_json::json;

const TEMPLATE: &str = "Concierge Prometheus app";
const QUANTILES: &str = "0.5,0.95,0.99";

/// Every item key the template's prototypes must create for the document, from the peer's
/// own parse: one per series (finite or not; `_created` are not series we keep), one per
/// computed quantile of each histogram label set, and a rate per counter series.
fn expected_keys(samples: &[PeerSample]) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for s in samples.iter().filter(|s| !s.name.ends_with("_created")) {
        let kind = s.kind.as_deref().expect("type");
        keys.insert(item_key(rule_of(kind), &s.name, &s.labels));
        if kind == "counter" {
            keys.insert(item_key("counter", &s.name, &s.labels).replacen(
                "prometheus.counter[",
                "prometheus.rate[",
                1,
            ));
        }
        if matches!(kind, "histogram" | "gaugehistogram") && s.name.ends_with("_bucket") {
            let family = s.name.trim_end_matches("_bucket");
            let mut labels = s.labels.clone();
            labels.remove("le");
            for q in QUANTILES.split(',') {
                labels.insert("quantile".into(), q.into());
                keys.insert(item_key("histogram", family, &labels));
            }
        }
    }
    keys
}

lab_test!(
    fn the_agent_discovers_and_delivers_every_prometheus_sample(lab: &Lab) {
        if !peers_installed() {
            return;
        }
        // Written now: its timestamped sample must be younger than the items' history period,
        // or Zabbix takes the value and stores nothing.
        let doc = TempFile::new(&format!("prom-e2e-{}.om", lab.version()), b"");
        client_write("openmetrics", true, &doc.0);
        let body = std::fs::read(&doc.0).expect("exposition");
        let oracle = client_parse("openmetrics", &doc.0);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let _server = StaticServer::start(
            port,
            vec![(
                "metrics".into(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8".into(),
                body,
            )],
        );
        let url = format!("http://127.0.0.1:{port}/metrics");

        lab.import_template_file("concierge_prometheus.yaml")
            .expect("import the template");
        let template = lab.template_id(TEMPLATE).expect("template");
        let name = unique_host("prom-e2e");
        let macros: Vec<serde_json::Value> = [
            ("{$PROM.URL}", url.as_str()),
            ("{$PROM.QUANTILES}", QUANTILES),
            ("{$PROM.COURIER.INTERVAL}", "5s"),
            ("{$PROM.DISCOVERY.INTERVAL}", "10s"),
        ]
        .iter()
        .map(|(m, v)| json!({"macro": m, "value": v}))
        .collect();
        let linked = json!({"templates": [{"templateid": template}], "macros": macros});
        let host = lab.create_host_with(&name, linked);
        host.create_trapper_item("concierge.test.ready", FLOAT);
        let started = Instant::now();
        // The agent asks for its checks at start, then every 60 s: start it once the server knows
        // the host.
        lab.wait_until_accepted(&name, "concierge.test.ready", "1");
        let agent = ShippedAgent::start(&name, lab.server());
        note(&format!("agent files: {}", agent.dir.display()));

        let want_keys = expected_keys(&oracle);
        let items = wait_for("every series' item", Duration::from_secs(180), || {
            let items = host.items()?;
            let discovered: BTreeSet<String> = items
                .iter()
                .filter(|i| i.flags == 4)
                .map(|i| i.key.clone())
                .collect();
            if discovered == want_keys {
                return Ok(Some(items));
            }
            let rules = lab.call(
                "discoveryrule.get",
                json!({"hostids": [host.hostid], "output": ["key_", "error"]}),
            )?;
            anyhow::bail!("{}; rules: {rules:?}", key_diff(&want_keys, &discovered))
        });
        let discovered_after = started.elapsed();
        let ids: BTreeMap<String, String> = items
            .iter()
            .map(|i| (i.key.clone(), i.itemid.clone()))
            .collect();

        // Every finite sample, value for value, at its own clock when it has one.
        let want = expected_values(&oracle);
        let want_ids: Vec<String> = want.keys().map(|k| ids[k].clone()).collect();
        let by_item = wait_for(
            "a value in every sample's item",
            Duration::from_secs(120),
            || {
                let rows = lab.history(&want_ids, FLOAT)?;
                let mut last: BTreeMap<String, HistoryRow> = BTreeMap::new();
                for r in rows {
                    last.insert(r.itemid.clone(), r);
                }
                if last.len() == want_ids.len() {
                    Ok(Some(last))
                } else {
                    anyhow::bail!("{} of {} items have values", last.len(), want_ids.len())
                }
            },
        );
        for (key, (value, ts)) in &want {
            let row = &by_item[&ids[key]];
            let got: f64 = row.value.parse().expect("numeric history");
            assert_eq!(
                got.to_bits(),
                value.to_bits(),
                "{key}: history {got}, prometheus_client {value}"
            );
            if let Some(ts) = ts {
                assert_eq!(
                    row.clock as f64,
                    ts.floor(),
                    "{key}: the sample's own timestamp"
                );
            }
        }
        // Computed quantiles have values; NaN/±Inf series have items and no value.
        let quantile_ids: Vec<String> = ids
            .iter()
            .filter(|(k, _)| k.contains("quantile="))
            .map(|(_, id)| id.clone())
            .collect();
        assert!(quantile_ids.len() >= 9, "{quantile_ids:?}");
        let non_finite: Vec<&PeerSample> = oracle.iter().filter(|s| !s.value.is_finite()).collect();
        assert!(!non_finite.is_empty());
        for s in &non_finite {
            let key = item_key(rule_of(s.kind.as_deref().unwrap()), &s.name, &s.labels);
            let rows = lab
                .history(std::slice::from_ref(&ids[&key]), FLOAT)
                .expect("history");
            assert!(rows.is_empty(), "{key} got {rows:?}");
        }
        // Counter rates: change per second of a static document is 0.
        let rate_ids: Vec<String> = ids
            .iter()
            .filter(|(k, _)| k.starts_with("prometheus.rate["))
            .map(|(_, id)| id.clone())
            .collect();
        wait_for("every counter's rate", Duration::from_secs(120), || {
            let rows = lab.history(&rate_ids, FLOAT)?;
            let with: BTreeSet<&str> = rows.iter().map(|r| r.itemid.as_str()).collect();
            assert!(
                rows.iter().all(|r| r.value.parse::<f64>() == Ok(0.0)),
                "{rows:?}"
            );
            if with.len() == rate_ids.len() {
                Ok(Some(()))
            } else {
                anyhow::bail!("{} of {} rates", with.len(), rate_ids.len())
            }
        });
        note(&format!(
        "prometheus e2e: {} items discovered after {discovered_after:.1?}, {} values checked, total {:.1?}",
        want_keys.len(),
        want.len(),
        started.elapsed()
    ));
        drop(agent);
    }
);
