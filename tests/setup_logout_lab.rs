//! Issue #12: concierge-setup logs out of the API, on each lab version (6.0 and 7.0). Setup
//! talks to the lab's API through a recording proxy in this test, so the test learns the
//! session id that user.login gave it; once setup has exited, the server refuses that session
//! (user.checkAuthentication), while a session nobody logged out of is still good.
//! Without the lab this prints SKIPPED, unless CONCIERGE_REQUIRE_LAB=1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concierge_testkit::*;
use serde_json::{json, Value};

/// Every (request, reply) the proxy passed on, as JSON.
type Exchanges = Arc<Mutex<Vec<(Value, Value)>>>;

/// An HTTP proxy on 127.0.0.1 for JSON-RPC POSTs to `api`, recording each exchange.
fn recording_proxy(api: String) -> (String, Exchanges) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/api_jsonrpc.php",
        listener.local_addr().expect("addr")
    );
    let log: Exchanges = Arc::default();
    let kept = Arc::clone(&log);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (api, log) = (api.clone(), Arc::clone(&kept));
            std::thread::spawn(move || serve(conn, &api, &log));
        }
    });
    (url, log)
}

/// Pass each request on `conn` to `api` until the client closes it.
fn serve(conn: TcpStream, api: &str, log: &Exchanges) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut out = conn;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let reply = ureq::post(api)
            .header("Content-Type", "application/json-rpc")
            .send(&body[..])
            .ok()
            .and_then(|mut r| {
                r.body_mut()
                    .with_config()
                    .limit(256 << 20)
                    .read_to_string()
                    .ok()
            })
            .unwrap_or_else(|| r#"{"jsonrpc":"2.0","error":{"message":"proxy"},"id":1}"#.into());
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let answer: Value = serde_json::from_str(&reply).unwrap_or(Value::Null);
        log.lock().expect("log").push((request, answer));
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            reply.len()
        );
        if out
            .write_all(head.as_bytes())
            .and_then(|()| out.write_all(reply.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

/// The server's answer to user.checkAuthentication for `session`: Ok(user) or the error.
fn check_session(lab: &Lab, session: &str) -> anyhow::Result<Value> {
    lab.call_anonymous(
        "user.checkAuthentication",
        json!({"sessionid": session, "extend": false}),
    )
}

lab_test!(
    fn setup_logs_out_so_its_session_is_refused_once_it_has_exited(lab: &Lab) {
        let (url, log) = recording_proxy(lab.api_url().to_string());
        let (user, password) = lab.facts().credentials();
        let imports = template_imports_lock();
        let setup = run_command(
            std::process::Command::new(bin("concierge-setup"))
                .args(["--api", &url, "--user", user])
                .env("ZABBIX_PASSWORD", password),
            Duration::from_secs(120),
        );
        drop(imports);
        assert_eq!(setup.code, Some(0), "setup:\n{setup}");
        let exchanges = log.lock().expect("log").clone();
        let methods: Vec<&str> = exchanges
            .iter()
            .filter_map(|(q, _)| q["method"].as_str())
            .collect();
        let session = exchanges
            .iter()
            .find(|(q, _)| q["method"] == "user.login")
            .and_then(|(_, a)| a["result"].as_str())
            .unwrap_or_else(|| panic!("setup logged in through the proxy: {methods:?}"))
            .to_string();
        assert_eq!(
            methods.last(),
            Some(&"user.logout"),
            "setup's last call: {methods:?}"
        );
        assert!(
            password.is_empty() || !setup.stdout.contains(password),
            "no password in the output"
        );

        // The session is gone on the server.
        let refused = check_session(lab, &session);
        assert!(
            refused.is_err(),
            "the session of setup is still accepted: {refused:?}"
        );
        let words = format!("{:#}", refused.unwrap_err());
        assert!(
            words.contains("Session terminated") || words.contains("re-login"),
            "refused as a closed session: {words}"
        );

        // The control: a session nobody logged out of is accepted (then closed here).
        let own = lab
            .call_anonymous(
                "user.login",
                json!({if lab.at_least(5, 4) { "username" } else { "user" }: user,
                       "password": password}),
            )
            .expect("user.login");
        let own = own.as_str().expect("session id").to_string();
        check_session(lab, &own).expect("an open session is accepted");
        let logout = ureq::post(lab.api_url())
            .header("Content-Type", "application/json-rpc")
            .send(
                &json!({"jsonrpc": "2.0", "method": "user.logout", "params": [],
                        "auth": own, "id": 1})
                .to_string(),
            );
        assert!(logout.is_ok(), "logging out the control session");
        assert!(check_session(lab, &own).is_err());
    }
);
