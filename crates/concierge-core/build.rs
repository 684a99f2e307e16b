//! Bakes the git revision into `concierge_core::version` (see build/revision.rs).

#[path = "build/revision.rs"]
mod revision;

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let given = std::env::var(revision::OVERRIDE_VAR).ok();
    println!("cargo:rerun-if-env-changed={}", revision::OVERRIDE_VAR);
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/revision.rs");
    for file in revision::head_files(&dir) {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!(
        "cargo:rustc-env={}={}",
        revision::OVERRIDE_VAR,
        revision::revision(&dir, given.as_deref())
    );
}
