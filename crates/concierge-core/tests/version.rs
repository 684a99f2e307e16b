//! The revision build.rs bakes into `--version`: git's HEAD in a checkout (and the files that
//! move with it, so a commit rebuilds), the packager's variable where it is set, and "unknown"
//! outside any checkout (a source tarball). Runs the real git on real repositories.

// build.rs reads OVERRIDE_VAR from the environment; here it is passed in.
#[allow(dead_code)]
#[path = "../build/revision.rs"]
mod revision;

use std::path::{Path, PathBuf};
use std::process::Command;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("concierge-rev-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CEILING_DIRECTORIES", dir.parent().expect("parent"))
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

#[test]
fn a_checkout_gives_heads_short_hash_and_the_files_that_move_with_it() {
    let repo = Dir::new("repo");
    git(&repo.0, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.0.join("a"), "1").unwrap();
    git(&repo.0, &["add", "a"]);
    git(&repo.0, &["commit", "-q", "-m", "one"]);
    let sub = repo.0.join("crates/x");
    std::fs::create_dir_all(&sub).unwrap();
    let first = git(&repo.0, &["rev-parse", "--short=12", "HEAD"]);
    assert_eq!(revision::revision(&sub, None), first);

    let files = revision::head_files(&sub);
    let branch_ref = repo.0.canonicalize().unwrap().join(".git/refs/heads/main");
    assert!(files.contains(&branch_ref), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with(".git/HEAD")), "{files:?}");
    let before = std::fs::read_to_string(&branch_ref).unwrap();
    git(&repo.0, &["commit", "-q", "--allow-empty", "-m", "two"]);
    assert_ne!(std::fs::read_to_string(&branch_ref).unwrap(), before);
    assert_ne!(revision::revision(&sub, None), first);
}

#[test]
fn the_packagers_variable_wins_and_nonsense_in_it_is_ignored() {
    let dir = Dir::new("given");
    assert_eq!(
        revision::revision(&dir.0, Some("v0.1.0-3-gabc")),
        "v0.1.0-3-gabc"
    );
    assert_eq!(revision::revision(&dir.0, Some("a\"b")), revision::UNKNOWN);
    assert_eq!(revision::revision(&dir.0, Some("")), revision::UNKNOWN);
}

#[test]
fn outside_a_checkout_the_revision_is_unknown_and_nothing_is_watched() {
    let dir = Dir::new("tarball");
    // A source tarball unpacked somewhere with no .git above it (the temp dir has none).
    assert!(
        git_dir_above(&dir.0).is_none(),
        "a .git above {}",
        dir.0.display()
    );
    assert_eq!(revision::revision(&dir.0, None), revision::UNKNOWN);
    assert!(revision::head_files(&dir.0).is_empty());
}

fn git_dir_above(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().map(|d| d.join(".git")).find(|g| g.exists())
}
