//! The Zabbix side: wire protocol, item keys, low-level discovery and sender input files.

pub mod active;
pub mod api;
pub mod destination;
pub mod frame;
pub mod input;
pub mod key;
pub mod lld;
pub mod route;
pub mod sender;
pub mod transport;
