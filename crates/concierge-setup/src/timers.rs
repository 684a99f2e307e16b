//! `--timer`: the timer names the service host aggregates, sent as LLD to its trapper rule
//! `service.timers.discovery`. A new host's rule only accepts values once the server's
//! configuration cache has it (about a second with CacheUpdateFrequency=1), so the send is
//! retried until every value is processed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use concierge_core::deadline::Deadline;
use concierge_core::outcome;
use concierge_core::tls;
use concierge_core::zabbix::api::Api;
use concierge_core::zabbix::destination::Destination;
use concierge_core::zabbix::key::{self, KeyError};
use concierge_core::zabbix::sender::{self, DeliveryError, SendError, SenderOptions, Value};
use concierge_core::zabbix::transport::TransportError;
use serde_json::json;

use crate::objects::text;
use crate::report::{Change, Reporter};
use crate::SetupError;

/// The trapper LLD rule of template "Concierge service".
pub const RULE_KEY: &str = "service.timers.discovery";

/// How long to keep trying: the server's config cache, then the LLD worker.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

const RETRY_EVERY: Duration = Duration::from_millis(500);
const ATTEMPT_BUDGET: Duration = Duration::from_secs(5);

/// The LLD value: `[{"{#TIMER}":"a"},…]`.
pub fn lld_value(timers: &[String]) -> String {
    serde_json::Value::Array(timers.iter().map(|t| json!({"{#TIMER}": t})).collect()).to_string()
}

/// The key of the aggregate item discovered for `timer`, quoted as the server quotes it.
pub fn item_key(timer: &str) -> Result<String, KeyError> {
    Ok(format!(
        "service.timer.p95[{}]",
        key::quote_param(timer, false)?
    ))
}

/// Make sure the host `host` (id `hostid`) has discovered every timer in `timers`: when
/// some are missing, send the list and wait for their items.
pub fn ensure(
    api: &Api,
    hostid: &str,
    host: &str,
    timers: &[String],
    destinations: &[Destination],
    tls: Option<Arc<tls::Client>>,
    out: &mut Reporter,
) -> outcome::Result<()> {
    if timers.is_empty() {
        return Ok(());
    }
    let keys = timers
        .iter()
        .map(|t| item_key(t))
        .collect::<Result<Vec<_>, _>>()?;
    let before = discovered(api, hostid, &keys)?;
    if keys.iter().all(|k| before.contains_key(k)) {
        for (t, k) in timers.iter().zip(&keys) {
            out.push(Change::Unchanged, "timer", t, &before[k]);
        }
        return Ok(());
    }
    let started = Instant::now();
    let mut options = SenderOptions::default();
    options.connect.tls = tls;
    send(host, &lld_value(timers), destinations, &options, started)?;
    let after = loop {
        let found = discovered(api, hostid, &keys)?;
        if keys.iter().all(|k| found.contains_key(k)) {
            break found;
        }
        if started.elapsed() >= GIVE_UP_AFTER {
            let missing: Vec<&String> = keys.iter().filter(|k| !found.contains_key(*k)).collect();
            return Err(SetupError(format!(
                "host {host}: the timer list was accepted, but no item {missing:?} was discovered within {}s",
                GIVE_UP_AFTER.as_secs()
            ))
            .into());
        }
        std::thread::sleep(RETRY_EVERY);
    };
    for (t, k) in timers.iter().zip(&keys) {
        let change = if before.contains_key(k) {
            Change::Unchanged
        } else {
            Change::Created
        };
        out.push(change, "timer", t, &after[k]);
    }
    Ok(())
}

/// The discovered items among `keys` on the host: key → itemid.
fn discovered(
    api: &Api,
    hostid: &str,
    keys: &[String],
) -> outcome::Result<BTreeMap<String, String>> {
    let found = api.call(
        "item.get",
        json!({"output": ["itemid", "key_"], "hostids": [hostid], "filter": {"key_": keys}}),
    )?;
    Ok(found
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| (text(&i["key_"]), text(&i["itemid"])))
        .collect())
}

/// Send the LLD value until every destination processed it, or fail after [`GIVE_UP_AFTER`].
/// An unreachable trapper fails at once; a refusal (the rule not in the cache yet) and a closed
/// PSK handshake (the host's key not in the cache yet) are retried.
fn send(
    host: &str,
    lld: &str,
    destinations: &[Destination],
    options: &SenderOptions,
    started: Instant,
) -> outcome::Result<()> {
    let values = [Value {
        host: host.into(),
        key: RULE_KEY.to_string(),
        value: lld.to_string(),
        clock: None,
    }];
    loop {
        let left = GIVE_UP_AFTER.saturating_sub(started.elapsed());
        let deadline = Deadline::after(left.clamp(Duration::from_millis(100), ATTEMPT_BUDGET));
        let delivery = sender::send(destinations, &values, &deadline, options)
            .map_err(|e| SetupError(format!("sending the timer list: {e}")))?;
        let last = match delivery.into_result() {
            Ok(s) if s.processed == s.total => return Ok(()),
            Ok(s) => s.to_string(),
            // A PSK handshake the server closed: a host setup has just made PSK-only is not in
            // its configuration cache yet, so it does not know the identity. Wait like a refusal.
            Err(DeliveryError::Failed(e)) if cache_may_lack_the_psk(&e) => e.to_string(),
            // Nothing answered: no point in waiting for the config cache.
            Err(DeliveryError::Failed(e)) => {
                return Err(SetupError(format!("sending the timer list to Zabbix: {e}")).into())
            }
            Err(e) => e.to_string(),
        };
        if started.elapsed() + RETRY_EVERY >= GIVE_UP_AFTER {
            return Err(SetupError(format!(
                "Zabbix did not accept the timer list for {host}:{RULE_KEY} within {}s ({last}); \
                 is the server's CacheUpdateFrequency long? (zabbix_server -R config_cache_reload)",
                GIVE_UP_AFTER.as_secs()
            ))
            .into());
        }
        std::thread::sleep(RETRY_EVERY);
    }
}

/// True for a failed PSK handshake: what a server answers for an identity its configuration
/// cache does not hold yet (it closes without an alert, as for a wrong key).
fn cache_may_lack_the_psk(e: &SendError) -> bool {
    matches!(
        e,
        SendError::Transport(TransportError::Tls(tls::TlsError::Handshake {
            mode: tls::Mode::Psk,
            ..
        }))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_psk_handshake_waits_for_the_cache() {
        let handshake = |mode| {
            SendError::Transport(TransportError::Tls(tls::TlsError::Handshake {
                endpoint: "127.0.0.1:10051".into(),
                mode,
                detail: "closed".into(),
            }))
        };
        assert!(cache_may_lack_the_psk(&handshake(tls::Mode::Psk)));
        assert!(!cache_may_lack_the_psk(&handshake(tls::Mode::Cert)));
        assert!(!cache_may_lack_the_psk(&SendError::Refused {
            endpoint: "z".into(),
            info: "failed".into()
        }));
    }

    #[test]
    fn the_lld_value_is_a_top_level_array() {
        let v = lld_value(&["a".into(), "say \"hi\"".into()]);
        assert_eq!(v, r#"[{"{#TIMER}":"a"},{"{#TIMER}":"say \"hi\""}]"#);
        let parsed: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert_eq!(parsed[1]["{#TIMER}"], "say \"hi\"");
    }

    #[test]
    fn item_keys_are_quoted_as_the_server_quotes_them() {
        assert_eq!(
            item_key("my.test-timer-0").unwrap(),
            "service.timer.p95[my.test-timer-0]"
        );
        assert_eq!(
            item_key("GET /a, b").unwrap(),
            "service.timer.p95[\"GET /a, b\"]"
        );
        assert!(item_key("\"a\\").is_err());
    }
}
