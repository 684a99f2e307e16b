//! The container image of `make image` is what the README's compose example and the
//! ContainerPilot example use: `concierge:latest`, FROM scratch, the heartbeat as entrypoint,
//! and every `/usr/bin/concierge-*` the ContainerPilot jobs exec is in it and runs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use concierge_testkit::docker;
use concierge_testkit::*;

/// The image make image tags, and the one the README's compose example names.
const IMAGE: &str = "concierge:latest";

fn make_image() {
    let started = Instant::now();
    let out = Command::new("make")
        .args(["--no-print-directory", "image"])
        .current_dir(repo_root())
        .env("CARGO_TARGET_DIR", docker::target_dir())
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdin(Stdio::null())
        .output()
        .expect("start make");
    assert!(
        out.status.success(),
        "make image: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    note(&format!("make image: {IMAGE} in {:.1?}", started.elapsed()));
}

#[test]
fn the_image_serves_the_compose_and_containerpilot_examples() {
    if !docker::available(&current_test()) {
        return;
    }
    make_image();
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README");
    assert!(
        readme.contains(&format!("image: {IMAGE}")),
        "the README's compose example does not use {IMAGE}"
    );
    // The entrypoint is the heartbeat, as the compose example's command assumes.
    let version = docker::docker(&["run", "--rm", IMAGE, "--version"]).expect("docker run");
    assert!(version.starts_with("concierge-heartbeat "), "{version}");

    let pilot = std::fs::read_to_string(repo_root().join("zabbix-templates/containerpilot.json5"))
        .expect("ContainerPilot example");
    assert!(pilot.contains(&format!("COPY --from={IMAGE} /usr/bin/concierge-* ")));
    let mut execs: Vec<&str> = pilot
        .split('"')
        .filter(|w| w.starts_with("/usr/bin/concierge-"))
        .collect();
    execs.sort();
    execs.dedup();
    assert_eq!(
        execs,
        [
            "/usr/bin/concierge-discover",
            "/usr/bin/concierge-heartbeat"
        ]
    );
    for tool in execs {
        let run = run_command(
            Command::new("docker").args(["run", "--rm", "--entrypoint", tool, IMAGE, "--version"]),
            Duration::from_secs(60),
        )
        .ok();
        assert!(run.stdout.starts_with(&tool["/usr/bin/".len()..]), "{run}");
    }
}
