//! The courier's spool against fake trappers (no lab): what live requests carry, the
//! at-least-once duplicate rate when replies are lost, two couriers sharing a spool, and
//! kill -9 during spool writes. The outage against real Zabbix is tests/spool_outage.rs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use concierge_core::spool::{Spool, SpoolConfig};
use concierge_testkit::*;
use serde_json::{json, Value};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/metrics.json"
);

fn courier(args: &[&str]) -> Command {
    let mut c = Command::cargo_bin("concierge-courier").unwrap();
    c.env("CONCIERGE_STATE_DIR", NO_STATE_DIR).args(args);
    c
}

/// Run the courier to completion: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = courier(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// zabbix_sender input lines: `n` values of run `tag`, keys k0… (host "-").
fn input(dir: &Path, tag: usize, n: usize) -> String {
    let mut text = String::with_capacity(n * 16);
    for j in 0..n {
        text.push_str(&format!("- k{j} {tag}\n"));
    }
    let path = dir.join(format!("input-{tag}"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Every (key, value) in `requests`, counted.
fn counted(requests: &[Value]) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for r in requests {
        for v in r["data"].as_array().into_iter().flatten() {
            let k = (
                v["key"].as_str().unwrap_or_default().to_string(),
                v["value"].as_str().unwrap_or_default().to_string(),
            );
            *out.entry(k).or_default() += 1;
        }
    }
    out
}

fn refused() -> Value {
    json!({"response": "failed", "info": "Zabbix server is shutting down"})
}

#[test]
fn live_values_carry_no_clock_unless_spooled_or_asked_for() {
    let dir = temp_dir("spool-clocks");
    let spool = dir.path().join("spool");
    let spool = spool.to_str().unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&up);
    let trapper = ScriptedTrapper::new(move |r| {
        if flag.load(Ordering::SeqCst) {
            take(r)
        } else {
            Scripted::Reply(refused())
        }
    });
    let addr = trapper.address();
    let base = ["timers", SAMPLE, "-z", &addr, "-s", "h", "-t", "5s"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    // Refused: the values are spooled with their collection clock.
    let args = with(&["--spool", spool]);
    let (code, out, err) = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!((code, out.trim()), (Some(1), "-5"), "{err}");
    assert!(err.contains("value(s) in the spool"), "{err}");
    up.store(true, Ordering::SeqCst);
    // Live without a spool backlog: no clock per value, the request's own clock only.
    let args = with(&["--no-spool"]);
    let (code, _, err) = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{err}");
    // -T asks for them.
    let args = with(&["--no-spool", "-T"]);
    let (code, _, err) = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{err}");
    // The backlog goes first, with its clocks, then the live values without.
    let args = with(&["--spool", spool]);
    let (code, _, err) = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{err}");
    let requests = trapper.requests();
    assert_eq!(requests.len(), 4);
    let has_clock = |r: &Value| -> Vec<bool> {
        r["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.get("clock").is_some() && v.get("ns").is_some())
            .collect()
    };
    assert!(
        has_clock(&requests[0]).iter().all(|c| !c),
        "refused live run: no clocks (the spool stamps them)"
    );
    assert!(
        has_clock(&requests[1]).iter().all(|c| !c),
        "live: no clocks"
    );
    assert!(requests[1].get("clock").is_some(), "the request's clock");
    assert!(has_clock(&requests[2]).iter().all(|c| *c), "-T: clocks");
    let n = has_clock(&requests[1]).len();
    assert!(err.is_empty() || !err.contains("kept"), "{err}");
    let replay = has_clock(&requests[3]);
    assert_eq!(replay.len(), 2 * n);
    assert!(replay[..n].iter().all(|c| *c) && replay[n..].iter().all(|c| !c));
    let spooled_at = requests[3]["data"][0]["clock"].as_u64().unwrap();
    let sent_at = requests[0]["clock"].as_u64().unwrap();
    assert!(
        spooled_at.abs_diff(sent_at) <= 1,
        "the spooled value keeps its collection clock: {spooled_at} vs {sent_at}"
    );
}

#[test]
fn lost_replies_are_the_only_duplicates_at_least_once() {
    let dir = temp_dir("spool-dups");
    let spool = dir.path().join("spool");
    let n = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&n);
    // Every third request is read (so the server "has" it) and never answered.
    let trapper = ScriptedTrapper::new(move |r| {
        if counter.fetch_add(1, Ordering::SeqCst) % 3 == 1 {
            Scripted::Stall
        } else {
            take(r)
        }
    });
    let addr = trapper.address();
    const RUNS: usize = 31;
    const VALUES: usize = 5;
    let mut lost_replies = 0;
    for tag in 0..RUNS {
        let file = input(dir.path(), tag, VALUES);
        let (code, out, err) = run(&[
            "-i",
            &file,
            "-z",
            &addr,
            "-s",
            "h",
            "-t",
            "0.6s",
            "--spool",
            spool.to_str().unwrap(),
        ]);
        if code != Some(0) {
            lost_replies += 1;
            assert!(
                out.trim().starts_with('-'),
                "a lost reply is a failure: {out} {err}"
            );
        }
    }
    let seen = counted(&trapper.requests());
    let unique = seen.len();
    assert_eq!(unique, RUNS * VALUES, "no value lost");
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    assert_eq!(
        duplicates,
        lost_replies * VALUES,
        "only the values whose reply was lost come twice"
    );
    assert!(seen.values().all(|c| *c <= 2));
    note(&format!(
        "DUPLICATES at-least-once: {lost_replies} of {RUNS} replies lost (every 3rd request): \
         {duplicates} duplicate(s) of {unique} values = {:.1} % (= the values whose reply was \
         lost; none from the spool itself)",
        100.0 * duplicates as f64 / unique as f64
    ));
}

#[test]
fn two_couriers_sharing_a_spool_never_send_a_spooled_value_twice() {
    let dir = temp_dir("spool-two");
    let spool = dir.path().join("spool");
    let spool = spool.to_str().unwrap().to_string();
    let up = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&up);
    let trapper = ScriptedTrapper::new(move |r| {
        if flag.load(Ordering::SeqCst) {
            // Slow enough that the two couriers overlap.
            std::thread::sleep(Duration::from_millis(150));
            take(r)
        } else {
            Scripted::Reply(refused())
        }
    });
    let addr = trapper.address();
    const SPOOLED_RUNS: usize = 6;
    const VALUES: usize = 50;
    for tag in 0..SPOOLED_RUNS {
        let file = input(dir.path(), tag, VALUES);
        let (code, _, err) = run(&["-i", &file, "-z", &addr, "-s", "h", "--spool", &spool]);
        assert_eq!(code, Some(1), "{err}");
    }
    up.store(true, Ordering::SeqCst);
    let before = trapper.requests().len();
    let mut replays = 0;
    for round in 0..8 {
        let files: Vec<String> = (0..2)
            .map(|i| input(dir.path(), 100 + round * 2 + i, VALUES))
            .collect();
        let runs: Vec<(Option<i32>, String, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = files
                .iter()
                .map(|f| {
                    let (addr, spool) = (&addr, &spool);
                    s.spawn(move || run(&["-i", f, "-z", addr, "-s", "h", "--spool", spool, "-v"]))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (code, _, err) in &runs {
            assert_eq!(*code, Some(0), "{err}");
            replays += err.matches("spooled value(s) ahead").count();
        }
    }
    assert_eq!(replays, 1, "the backlog is sent by one run only");
    let seen = counted(&trapper.requests()[before..]);
    for tag in 0..SPOOLED_RUNS {
        for j in 0..VALUES {
            let k = (format!("k{j}"), tag.to_string());
            assert_eq!(seen.get(&k), Some(&1), "{k:?} exactly once from the spool");
        }
    }
    for tag in 100..116 {
        assert_eq!(seen.get(&("k0".into(), tag.to_string())), Some(&1));
    }
}

#[test]
fn kill_9_during_spool_writes_loses_nothing_acknowledged() {
    let dir = temp_dir("spool-kill");
    let spool = dir.path().join("spool");
    let spool_s = spool.to_str().unwrap().to_string();
    // Nothing listens: every run fails after its short deadline and writes its batch.
    let addr = format!("127.0.0.1:{}", closed_port());
    const VALUES: usize = 20_000;
    const RUNS: usize = 24;
    let args = |file: &str, spool: &str| -> Vec<String> {
        [
            "-i",
            file,
            "-z",
            &addr,
            "-s",
            "h",
            "-t",
            "0.3s",
            "--spool",
            spool,
            "--spool-max",
            "1G",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // How long one run takes, spool write included, to kill inside it.
    let probe = input(dir.path(), 999, VALUES);
    let probe_spool = dir.path().join("probe");
    let t = Instant::now();
    let a = args(&probe, probe_spool.to_str().unwrap());
    let (code, _, err) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(1), "{err}");
    let typical = t.elapsed();
    let mut acknowledged = Vec::new();
    let mut killed = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for tag in 0..RUNS {
        let file = input(dir.path(), tag, VALUES);
        let mut child = courier(
            &args(&file, &spool_s)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let frac = (seed >> 33) as f64 / (1u64 << 31) as f64;
        std::thread::sleep(typical.mul_f64(0.6 + 0.6 * frac));
        let _ = child.kill(); // SIGKILL
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("kept") {
            acknowledged.push(tag);
        }
        if out.status.code().is_none() {
            killed += 1;
        }
    }
    assert!(killed > 0, "some runs were killed mid-way");
    // Read the whole spool back: only whole batches, every acknowledged one among them.
    let config = SpoolConfig {
        dir: spool.clone(),
        max_bytes: 1 << 30,
    };
    let queue = Spool::open(&config, &addr).unwrap();
    let mut per_tag: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let claim = queue
            .claim()
            .unwrap()
            .expect("no other run holds the spool");
        assert!(claim.damaged.is_empty(), "{:?}", claim.damaged);
        if claim.values.is_empty() {
            break;
        }
        for v in &claim.values {
            *per_tag.entry(v.value.clone()).or_default() += 1;
        }
        claim.delivered().unwrap();
    }
    for (tag, n) in &per_tag {
        // A killed run's backlog is never duplicated: it was only kept, not written again.
        assert_eq!(*n, VALUES, "batch of run {tag} is whole and stored once");
    }
    for tag in &acknowledged {
        assert!(
            per_tag.contains_key(&tag.to_string()),
            "acknowledged run {tag} is in the spool"
        );
    }
    let names: Vec<String> = std::fs::read_dir(queue.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // A write cut short leaves only its temporary, which is never read (and is removed once
    // stale).
    let torn = names.iter().filter(|n| n.starts_with(".tmp-")).count();
    let left: Vec<_> = names
        .iter()
        .filter(|n| !n.starts_with(".tmp-") && n.ends_with(".batch"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    note(&format!(
        "KILL -9: {RUNS} runs of {VALUES} values killed at 0.6-1.2x of a run ({typical:.0?}): \
         {killed} killed, {} acknowledged; {} whole batches in the spool, none partial, none \
         acknowledged lost; {torn} write(s) cut mid-way (temporary left, never read)",
        acknowledged.len(),
        per_tag.len()
    ));
}

#[test]
fn the_default_spool_lives_under_the_state_directory_and_can_be_turned_off() {
    let dir = temp_dir("spool-default");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let addr = format!("127.0.0.1:{}", closed_port());
    let file = input(dir.path(), 1, 3);
    let base = ["-i", file.as_str(), "-z", &addr, "-s", "h", "-t", "0.3s"];
    let out = |extra: &[&str]| {
        Command::cargo_bin("concierge-courier")
            .unwrap()
            .env("CONCIERGE_STATE_DIR", &state)
            .args(base)
            .args(extra)
            .output()
            .unwrap()
    };
    let off = out(&["--no-spool"]);
    assert_eq!(String::from_utf8_lossy(&off.stdout).trim(), "-3");
    assert!(!state.join("spool").exists(), "--no-spool writes nothing");
    let on = out(&[]);
    let err = String::from_utf8_lossy(&on.stderr);
    assert_eq!(String::from_utf8_lossy(&on.stdout).trim(), "-3", "{err}");
    assert!(err.contains("kept 3 value(s) in the spool"), "{err}");
    let queue = state.join("spool").join("concierge-courier");
    assert_eq!(std::fs::read_dir(&queue).unwrap().count(), 1, "one queue");
    // No state directory: no spool, and nothing said about it.
    let none = Command::cargo_bin("concierge-courier")
        .unwrap()
        .env("CONCIERGE_STATE_DIR", dir.path().join("missing"))
        .args(base)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&none.stderr).contains("spool"));
    // A --spool that is a symlink is refused: a usage error, nothing sent.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&state, &link).unwrap();
    let bad = out(&["--spool", link.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(String::from_utf8_lossy(&bad.stdout).trim(), "-7", "{err}");
    assert!(err.contains("symbolic link"), "{err}");
}
