//! The git revision a build comes from, for `--version`. Shared by build.rs (which bakes it
//! into the tools) and by tests/version.rs; plain std, since build scripts get no crate deps.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Names the revision where git cannot (a source tarball, a packager's build); it wins.
pub const OVERRIDE_VAR: &str = "CONCIERGE_GIT_REVISION";

/// What `--version` says when neither the variable nor git knows the revision.
pub const UNKNOWN: &str = "unknown";

/// The revision of the checkout around `dir`: `given` (the variable) if it is a plausible
/// revision, else git's 12-digit short hash of HEAD, else [`UNKNOWN`].
pub fn revision(dir: &Path, given: Option<&str>) -> String {
    if let Some(rev) = given.map(str::trim).filter(|r| is_plausible(r)) {
        return rev.to_string();
    }
    git(dir, &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| UNKNOWN.to_string())
}

/// The files that change when HEAD moves (HEAD itself, the branch's ref, packed-refs), those
/// that exist: cargo reruns the build script when one changes. Empty outside a checkout.
pub fn head_files(dir: &Path) -> Vec<PathBuf> {
    let mut names = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        names.push(branch);
    }
    names
        .iter()
        .filter_map(|name| git(dir, &["rev-parse", "--git-path", name]))
        .filter_map(|p| dir.join(p).canonicalize().ok())
        .filter(|p| p.is_file())
        .collect()
}

/// At most 64 characters of `0-9 A-Z a-z . _ + -`: anything else is not a revision.
fn is_plausible(rev: &str) -> bool {
    !rev.is_empty()
        && rev.len() <= 64
        && rev
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

/// `git args` run in `dir`: its trimmed stdout, or None if git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}
