//! What every tool says about itself: `--version` names the release, the git revision it was
//! built from and the Zabbix versions tested; `--help` ends with examples of the tool itself
//! (crates/xtask's tests parse each example with the tool's own command line).

use std::process::Command;
use std::time::Duration;

use concierge_testkit::*;

const TOOLS: [&str; 5] = [
    "concierge-discover",
    "concierge-courier",
    "concierge-heartbeat",
    "concierge-scale",
    "concierge-setup",
];

/// The revision the build script should have baked in: the packager's variable, else HEAD's.
fn expected_revision() -> String {
    if let Ok(rev) = std::env::var("CONCIERGE_GIT_REVISION") {
        if !rev.trim().is_empty() {
            return rev.trim().to_string();
        }
    }
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo_root())
        .output()
        .expect("run git");
    if !out.status.success() {
        return "unknown".into();
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn version_names_the_release_the_git_revision_and_the_zabbix_versions_tested() {
    let rev = expected_revision();
    for tool in TOOLS {
        let run = run_tool(tool, &["--version"], None, Duration::from_secs(10)).ok();
        let mut lines = run.stdout.lines();
        let first = format!("{tool} {} (git {rev})", env!("CARGO_PKG_VERSION"));
        assert_eq!(lines.next(), Some(first.as_str()), "{run}");
        let tested = lines.next().unwrap_or_default();
        assert!(
            tested.starts_with("Zabbix protocols tested: 6.0 and 7.0"),
            "{run}"
        );
        let short = run_tool(tool, &["-V"], None, Duration::from_secs(10)).ok();
        assert_eq!(short.stdout, format!("{first}\n"), "{short}");
    }
}

#[test]
fn help_ends_with_two_or_three_examples_of_the_tool() {
    for tool in TOOLS {
        let run = run_tool(tool, &["--help"], None, Duration::from_secs(10)).ok();
        let (_, tail) = run
            .stdout
            .rsplit_once("\n\nExamples:\n")
            .unwrap_or_else(|| panic!("no Examples at the end:\n{run}"));
        let lines: Vec<&str> = tail.lines().map(str::trim).collect();
        let commands: Vec<&&str> = lines.iter().filter(|l| !l.starts_with("# ")).collect();
        assert!((2..=3).contains(&commands.len()), "{run}");
        assert_eq!(
            lines.len(),
            2 * commands.len(),
            "one # line per example:\n{run}"
        );
        for c in commands {
            assert!(c.starts_with(&format!("{tool} ")), "{c:?}\n{run}");
        }
    }
}
