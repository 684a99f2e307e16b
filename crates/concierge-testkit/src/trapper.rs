//! The trapper protocol written out by hand (no code under test): a ZBXD frame, and one
//! "sender data" value sent to a lab's server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::facts::split_addr;
use crate::lab::Lab;
use crate::wait::wait_for;

/// Frame `payload` as Zabbix does: `ZBXD`, flags 0x01, u32le length, u32le 0.
pub fn zbxd_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + payload.len());
    out.extend_from_slice(b"ZBXD\x01");
    out.extend_from_slice(&u32::try_from(payload.len()).expect("< 4 GiB").to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Send one ZBXD-framed JSON request to `server` (`host:port`) and return the JSON reply.
pub fn trapper_request(server: &str, request: &Value) -> anyhow::Result<Value> {
    let (host, port) = split_addr(server);
    let mut s = TcpStream::connect((host.as_str(), port))
        .with_context(|| format!("connecting to the trapper {server}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&zbxd_frame(request.to_string().as_bytes()))?;
    let mut header = [0u8; 13];
    s.read_exact(&mut header)
        .context("reading the reply header")?;
    if &header[..5] != b"ZBXD\x01" {
        bail!("unexpected reply header {header:?}");
    }
    let len = u32::from_le_bytes(header[5..9].try_into()?) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).context("reading the reply")?;
    serde_json::from_slice(&body).context("reply is not JSON")
}

impl Lab {
    /// Send one value with a hand-written "sender data" request; the server's
    /// `(processed, failed)`.
    pub fn trapper_send(&self, host: &str, key: &str, value: &str) -> anyhow::Result<(u64, u64)> {
        let request = json!({"request": "sender data",
                             "data": [{"host": host, "key": key, "value": value}]});
        let reply = trapper_request(self.server(), &request)?;
        let info = reply["info"].as_str().unwrap_or_default();
        let field = |name: &str| -> anyhow::Result<u64> {
            info.split(';')
                .filter_map(|part| part.trim().split_once(": "))
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.parse().ok())
                .ok_or_else(|| anyhow!("no {name} in reply {reply}"))
        };
        Ok((field("processed")?, field("failed")?))
    }

    /// Send `value` to `host`'s `key` until the server accepts it (its configuration cache
    /// knows the item); returns how long that took.
    pub fn wait_until_accepted(&self, host: &str, key: &str, value: &str) -> Duration {
        let start = Instant::now();
        wait_for(
            &format!("the {} server to accept {key} on {host}", self.version()),
            Duration::from_secs(30),
            || match self.trapper_send(host, key, value)? {
                (1, 0) => Ok(Some(())),
                other => Err(anyhow!("processed/failed = {other:?}")),
            },
        );
        start.elapsed()
    }

    /// An "active checks" request for `host` with `metadata`, as an agent announces itself
    /// (the autoregistration trigger); the server's reply.
    pub fn announce(&self, host: &str, metadata: &str) -> anyhow::Result<Value> {
        trapper_request(
            self.server(),
            &json!({"request": "active checks", "host": host, "host_metadata": metadata}),
        )
    }
}
