//! A small client for the Zabbix 6.0 JSON-RPC API (`api_jsonrpc.php`): what the setup tool
//! and the end-to-end tests need to configure Zabbix and read back what it stored.
//!
//! 6.0 authenticates with the `auth` field in the body (a session id from `user.login` or an API
//! token); the `Authorization: Bearer` header only arrived in 6.4.

use std::fmt;
use std::time::Duration;

use serde_json::{json, Value};

/// Largest API reply accepted (history of tens of thousands of values fits easily).
const MAX_REPLY: u64 = 512 * 1024 * 1024;

/// Why an API call failed.
#[derive(Debug)]
pub enum ApiError {
    /// The HTTP request failed (connection, timeout, reading the body).
    Http { method: String, detail: String },
    /// The reply is not a JSON-RPC reply.
    BadReply { method: String, detail: String },
    /// The API answered with an error object.
    Api {
        method: String,
        code: i64,
        message: String,
        data: String,
    },
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Http { method, detail } => write!(f, "Zabbix API {method}: {detail}"),
            ApiError::BadReply { method, detail } => {
                write!(f, "Zabbix API {method}: unexpected reply: {detail}")
            }
            ApiError::Api {
                method,
                code,
                message,
                data,
            } => write!(
                f,
                "Zabbix API {method} failed: {message} {data} (code {code})"
            ),
        }
    }
}

impl std::error::Error for ApiError {}

/// A logged-in API session.
#[derive(Clone)]
pub struct Api {
    agent: ureq::Agent,
    url: String,
    token: Option<String>,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// A client for `url` (…/api_jsonrpc.php) whose calls each time out after `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(false)
                .build(),
        );
        Self {
            agent,
            url: url.to_string(),
            token: None,
        }
    }

    /// Use an API token (or an existing session id) for every call.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// Log in with a user name and password (6.0: `username`, not the deprecated `user`).
    pub fn login(mut self, user: &str, password: &str) -> Result<Self, ApiError> {
        let token = self.call(
            "user.login",
            json!({"username": user, "password": password}),
        )?;
        let token = token.as_str().ok_or_else(|| ApiError::BadReply {
            method: "user.login".into(),
            detail: format!("token is not a string: {token}"),
        })?;
        self.token = Some(token.to_string());
        Ok(self)
    }

    /// The server's version, e.g. "6.0.14" (needs no login).
    pub fn version(&self) -> Result<String, ApiError> {
        let v = self.call("apiinfo.version", json!({}))?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Call `method` with `params` and return its `result`.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, ApiError> {
        let mut body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
        // apiinfo.version and user.login refuse an auth field.
        if let (Some(token), false) = (
            &self.token,
            matches!(method, "apiinfo.version" | "user.login"),
        ) {
            body["auth"] = Value::String(token.clone());
        }
        let http = |detail: String| ApiError::Http {
            method: method.to_string(),
            detail,
        };
        let bad = |detail: String| ApiError::BadReply {
            method: method.to_string(),
            detail,
        };
        let payload = serde_json::to_vec(&body).map_err(|e| bad(e.to_string()))?;
        let mut resp = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json-rpc")
            .send(&payload[..])
            .map_err(|e| http(format!("POST {}: {e}", self.url)))?;
        let status = resp.status();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_REPLY)
            .read_to_vec()
            .map_err(|e| http(format!("reading the reply: {e}")))?;
        let reply: Value = serde_json::from_slice(&bytes).map_err(|_| {
            bad(format!(
                "HTTP {status}, not JSON: {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        if let Some(err) = reply.get("error") {
            return Err(ApiError::Api {
                method: method.to_string(),
                code: err["code"].as_i64().unwrap_or(0),
                message: err["message"].as_str().unwrap_or("?").to_string(),
                data: err["data"].as_str().unwrap_or("").to_string(),
            });
        }
        reply
            .get("result")
            .cloned()
            .ok_or_else(|| bad(format!("neither result nor error: {reply}")))
    }

    /// The id of the first object `method` (a `*.get`) finds with `filter`, if any.
    pub fn find_id(
        &self,
        method: &str,
        id_field: &str,
        filter: Value,
    ) -> Result<Option<String>, ApiError> {
        let found = self.call(method, json!({"output": [id_field], "filter": filter}))?;
        Ok(found
            .get(0)
            .and_then(|o| o.get(id_field))
            .and_then(Value::as_str)
            .map(str::to_string))
    }
}
