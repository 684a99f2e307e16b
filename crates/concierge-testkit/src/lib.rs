//! What Concierge's end-to-end tests share, by concern: the Zabbix labs ([`facts`] from
//! `scripts/zabbix-lab.sh env VERSION`, the API in [`lab`], the objects a test makes in
//! [`objects`], raw trapper sends in [`trapper`]), polling ([`wait`]), the workspace binaries and
//! other processes ([`process`]), the HA nodes and proxies ([`distributed`]), fake and broken
//! servers ([`fake`]), documents and keys written from Zabbix's own rules ([`documents`]), and
//! Docker images and compose projects ([`docker`]), a relay from a test's own network to a lab
//! port on loopback ([`forward`]), and a whole service wired by concierge-setup ([`service`]).
//!
//! Nothing here calls into the code under test: expected item keys, documents, the trapper
//! protocol and the API calls are written out independently.
//!
//! A lab test is written once and runs against every lab version, each as its own test named
//! for the version (`courier_delivers::zabbix_6_0`, `courier_delivers::zabbix_7_0`):
//!
//! ```ignore
//! lab_test!(fn courier_delivers(lab: &Lab) {
//!     let host = lab.create_host(&unique_host("courier"));
//!     // ...
//! });
//! ```

pub mod agent;
pub mod browser;
pub mod distributed;
pub mod docker;
pub mod documents;
pub mod facts;
pub mod fake;
pub mod forward;
pub mod lab;
pub mod objects;
pub mod process;
pub mod prometheus;
pub mod service;
pub mod trapper;
pub mod wait;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

pub use agent::Agent;
pub use distributed::{HaFailover, ServerOutage, Stopped};
pub use documents::*;
pub use facts::{Facts, VERSIONS};
pub use fake::*;
pub use forward::Forwarder;
pub use lab::Lab;
pub use objects::*;
pub use process::*;
pub use tempfile::TempDir;
pub use trapper::*;
pub use wait::wait_for;

/// The repository root (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).map(PathBuf::from).unwrap_or(here)
}

/// A new empty directory under the system's temp dir (shared with the labs' roots), readable
/// by every user (the Zabbix server or agent runs commands as zabbix), removed when dropped.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("concierge-e2e-{tag}-"))
        .tempdir()
        .expect("create a temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the temporary directory");
    dir
}

/// The name of the running test (its thread's name), e.g. `courier_delivers::zabbix_7_0`.
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

/// Write straight to fd 2 (libtest captures `eprintln!`): timings and skips must be seen.
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// The lab version a per-version test function stands for: `zabbix_7_0` → `7.0`.
pub fn version_of_test_fn(name: &str) -> String {
    name.trim_start_matches("zabbix_").replace('_', ".")
}

/// One lab test, once per lab version: `fn name(lab: &Lab) { ... }` becomes a module `name`
/// with a `#[test]` per version (`zabbix_6_0`, `zabbix_7_0`), each of which gets that version's
/// lab (or prints SKIPPED without it, unless `CONCIERGE_REQUIRE_LAB=1`). A leading
/// `[zabbix_7_0]` limits a test to the versions listed. The body sees the test file's items.
#[macro_export]
macro_rules! lab_test {
    ($(#[$meta:meta])* fn $name:ident($lab:ident: &Lab) $body:block) => {
        $crate::lab_test!([zabbix_6_0, zabbix_7_0] $(#[$meta])* fn $name($lab: &Lab) $body);
    };
    ([$($version:ident),+] $(#[$meta:meta])* fn $name:ident($lab:ident: &Lab) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($lab: &$crate::Lab) $body

            $(
                #[test]
                fn $version() {
                    let version = $crate::version_of_test_fn(stringify!($version));
                    if let Some(lab) = $crate::Lab::get(&version) {
                        body(&lab);
                    }
                }
            )+
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fn_names_map_to_versions() {
        assert_eq!(version_of_test_fn("zabbix_6_0"), "6.0");
        assert_eq!(version_of_test_fn("zabbix_7_0"), "7.0");
    }

    #[test]
    fn the_repository_root_holds_the_lab_script() {
        assert!(repo_root().join("scripts/zabbix-lab.sh").is_file());
    }
}
