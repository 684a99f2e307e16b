//! A logged-in handle on one lab version's JSON-RPC API, from its [`Facts`]. A test that wants
//! the lab and finds none prints `SKIPPED <test>: no Zabbix <version> lab ...` and returns,
//! unless `CONCIERGE_REQUIRE_LAB=1` (then it fails).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::facts::{Facts, VERSIONS};
use crate::{current_test, note};

/// One version's lab, logged in. Cheap to clone; the session lives as long as the process.
#[derive(Clone)]
pub struct Lab(Arc<Session>);

struct Session {
    facts: &'static Facts,
    /// `apiinfo.version`, e.g. `7.0.22`.
    api_version: String,
    token: String,
    /// 6.4 and later take the token as `Authorization: Bearer`; 6.0 only as `auth` in the body.
    bearer: bool,
    /// Caches of ids that every test of the process shares.
    pub(crate) cache: Mutex<Vec<(String, String)>>,
}

static SESSIONS: [OnceLock<Result<Lab, String>>; VERSIONS.len()] =
    [OnceLock::new(), OnceLock::new()];

fn api_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build(),
    )
}

/// One JSON-RPC call; errors carry the method, the API's message and data.
fn rpc(
    agent: &ureq::Agent,
    url: &str,
    method: &str,
    params: Value,
    auth: Option<(&str, bool)>,
) -> anyhow::Result<Value> {
    let mut body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    let mut req = agent
        .post(url)
        .header("Content-Type", "application/json-rpc");
    match auth {
        Some((token, true)) => req = req.header("Authorization", &format!("Bearer {token}")),
        Some((token, false)) => body["auth"] = Value::String(token.to_string()),
        None => {}
    }
    let mut resp = req
        .send(serde_json::to_vec(&body)?)
        .with_context(|| format!("{method}: POST {url}"))?;
    let status = resp.status();
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(512 * 1024 * 1024)
        .read_to_vec()
        .with_context(|| format!("{method}: reading the reply"))?;
    let reply: Value = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{method}: HTTP {status}, not JSON: {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        )
    })?;
    if let Some(err) = reply.get("error") {
        bail!(
            "{method} failed: {} {} (code {})",
            err["message"].as_str().unwrap_or("?"),
            err["data"].as_str().unwrap_or(""),
            err["code"]
        );
    }
    reply
        .get("result")
        .cloned()
        .ok_or_else(|| anyhow!("{method}: reply has neither result nor error: {reply}"))
}

/// `major.minor` of a version string (`7.0.22` → (7, 0)).
fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

impl Lab {
    /// The lab of `version`, logged in, or `None` after a visible SKIPPED line when it does not
    /// answer. With `CONCIERGE_REQUIRE_LAB=1` a missing lab is a failure instead.
    pub fn get(version: &str) -> Option<Lab> {
        match Self::connect(version) {
            Ok(lab) => Some(lab),
            Err(why) => {
                if std::env::var("CONCIERGE_REQUIRE_LAB").as_deref() == Ok("1") {
                    panic!("no Zabbix {version} lab: {why} (run `make lab`)");
                }
                note(&format!(
                    "SKIPPED {}: no Zabbix {version} lab ({why}); run make lab, or make test",
                    current_test()
                ));
                None
            }
        }
    }

    /// The lab of `version`, logged in (once per process), or why not.
    pub fn connect(version: &str) -> Result<Lab, String> {
        let facts = Facts::of(version)?;
        let i = VERSIONS
            .iter()
            .position(|v| *v == version)
            .expect("Facts::of knows the version");
        SESSIONS[i]
            .get_or_init(|| Self::login(facts).map_err(|e| format!("{e:#}")))
            .clone()
    }

    fn login(facts: &'static Facts) -> anyhow::Result<Lab> {
        let url = facts.api_url();
        let probe = api_agent(Duration::from_secs(2));
        let version = rpc(&probe, url, "apiinfo.version", json!({}), None)?;
        let version = version
            .as_str()
            .ok_or_else(|| anyhow!("apiinfo.version returned {version}"))?
            .to_string();
        if !version.starts_with(&format!("{}.", facts.version())) {
            bail!("{url} answers as Zabbix {version}, not {}", facts.version());
        }
        let (user, password) = facts.credentials();
        let agent = api_agent(Duration::from_secs(10));
        let token = rpc(
            &agent,
            url,
            "user.login",
            json!({"username": user, "password": password}),
            None,
        )
        .with_context(|| format!("API {version} at {url} answers, but logging in failed"))?;
        let token = token
            .as_str()
            .ok_or_else(|| anyhow!("user.login returned {token}"))?
            .to_string();
        Ok(Lab(Arc::new(Session {
            facts,
            bearer: major_minor(&version) >= (6, 4),
            api_version: version,
            token,
            cache: Mutex::new(Vec::new()),
        })))
    }

    /// Call an API method with the session's token; errors carry the API's data.
    pub fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
        let agent = AGENT.get_or_init(|| api_agent(Duration::from_secs(180)));
        rpc(
            agent,
            self.0.facts.api_url(),
            method,
            params,
            Some((&self.0.token, self.0.bearer)),
        )
    }

    /// Call an API method without the session's token (`user.login` for a second session).
    pub fn call_anonymous(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let agent = api_agent(Duration::from_secs(30));
        rpc(&agent, self.0.facts.api_url(), method, params, None)
    }

    /// The lab's facts (zabbix-lab.sh env).
    pub fn facts(&self) -> &'static Facts {
        self.0.facts
    }

    /// `6.0` or `7.0`.
    pub fn version(&self) -> &str {
        self.0.facts.version()
    }

    /// What `apiinfo.version` said, e.g. `7.0.22`.
    pub fn api_version(&self) -> &str {
        &self.0.api_version
    }

    /// True from Zabbix `major.minor` on.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        major_minor(&self.0.api_version) >= (major, minor)
    }

    /// The API endpoint.
    pub fn api_url(&self) -> &str {
        self.0.facts.api_url()
    }

    /// The trapper, `host:port`, as `-z` takes it.
    pub fn server(&self) -> &str {
        self.0.facts.server()
    }

    /// A value cached for the whole process under `key` (group ids, imported templates),
    /// computed by `make` the first time.
    pub fn cached(
        &self,
        key: &str,
        make: impl FnOnce() -> anyhow::Result<String>,
    ) -> anyhow::Result<String> {
        let mut cache = self.0.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, v)) = cache.iter().find(|(k, _)| k == key) {
            return Ok(v.clone());
        }
        let v = make()?;
        cache.push((key.to_string(), v.clone()));
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert_eq!(major_minor("7.0.22"), (7, 0));
        assert_eq!(major_minor("6.0.14"), (6, 0));
        assert!(major_minor("6.0.14") < (6, 4));
        assert!(major_minor("7.0.22") >= (6, 4));
        assert_eq!(major_minor("junk"), (0, 0));
    }
}
