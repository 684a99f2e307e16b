//! A small client for the Zabbix 6.0 JSON-RPC API (`api_jsonrpc.php`): what the setup tool
//! and the end-to-end tests need to configure Zabbix and read back what it stored.
//!
//! 6.0 authenticates with the `auth` field in the body (a session id from `user.login` or an API
//! token); the `Authorization: Bearer` header only arrived in 6.4.

use std::fmt;
use std::time::Duration;

use serde_json::{json, Value};

use crate::outcome::{Classify, Failure};
use crate::text::{self, shown};

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
    /// The API refused the credentials: the token (`credentials` says which kind) or the
    /// user name and password. `detail` is the API's own words.
    Rejected {
        method: String,
        credentials: Credentials,
        detail: String,
    },
}

/// How a client authenticates, for the message when that is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// An API token (Users > API tokens), given by the caller.
    Token,
    /// A session from `user.login`.
    Session,
    /// The user name and password of `user.login`.
    Password,
}

/// The `data` of the API's error when it refuses a token or a session (CUser.php in 6.0).
const AUTH_FAILURES: [&str; 3] = [
    "Not authorized.",
    "API token expired.",
    "Session terminated, re-login, please.",
];

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
                "Zabbix API {method} failed: {} {} (code {code})",
                shown(message),
                shown(data)
            ),
            ApiError::Rejected {
                method,
                credentials,
                detail,
            } => {
                let (what, remedy) = match credentials {
                    Credentials::Token => (
                        "the API token",
                        "check it under Users > API tokens (enabled, not expired, of this \
                         server) or give a user and password instead",
                    ),
                    Credentials::Session => ("the session", "log in again"),
                    Credentials::Password => (
                        "the user name or password",
                        "check them, or wait if the account is temporarily blocked",
                    ),
                };
                write!(
                    f,
                    "Zabbix API {method}: {what} was rejected ({}): {remedy}",
                    shown(detail)
                )
            }
        }
    }
}

impl std::error::Error for ApiError {}

impl Classify for ApiError {
    fn failure(&self) -> Failure {
        match self {
            ApiError::Http { .. } => Failure::ZabbixUnreachable,
            ApiError::BadReply { .. } | ApiError::Api { .. } => Failure::ZabbixRefused,
            ApiError::Rejected { .. } => Failure::Usage,
        }
    }
}

/// A logged-in API session.
#[derive(Clone)]
pub struct Api {
    agent: ureq::Agent,
    url: String,
    token: Option<(String, Credentials)>,
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
        self.token = Some((token.to_string(), Credentials::Token));
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
            detail: format!("token is not a string: {}", shown(&token.to_string())),
        })?;
        self.token = Some((token.to_string(), Credentials::Session));
        Ok(self)
    }

    /// End the session `login` opened (nothing to do for an API token).
    pub fn logout(&self) -> Result<(), ApiError> {
        match &self.token {
            Some((_, Credentials::Session)) => self.call("user.logout", json!([])).map(drop),
            _ => Ok(()),
        }
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
        if let (Some((token, _)), false) = (
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
                "HTTP {status}, not JSON ({} bytes): {:?}",
                bytes.len(),
                shown(&text::lossy(&bytes))
            ))
        })?;
        if let Some(err) = reply.get("error") {
            return Err(self.error(method, err));
        }
        reply.get("result").cloned().ok_or_else(|| {
            bad(format!(
                "neither result nor error: {}",
                shown(&reply.to_string())
            ))
        })
    }

    /// The error object of a reply as an [`ApiError`]: refused credentials said as such.
    fn error(&self, method: &str, err: &Value) -> ApiError {
        let code = err["code"].as_i64().unwrap_or(0);
        let data = err["data"].as_str().unwrap_or("").to_string();
        let credentials = match (&self.token, method) {
            (_, "user.login") if data.starts_with("Incorrect user name or password") => {
                Some(Credentials::Password)
            }
            (Some((_, kind)), _) if AUTH_FAILURES.contains(&data.as_str()) => Some(*kind),
            _ => None,
        };
        match credentials {
            Some(credentials) => ApiError::Rejected {
                method: method.to_string(),
                credentials,
                detail: data,
            },
            None => ApiError::Api {
                method: method.to_string(),
                code,
                message: err["message"].as_str().unwrap_or("?").to_string(),
                data,
            },
        }
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
