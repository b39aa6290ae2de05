//! CI fan-out the nextest way: the suite split into partitions that run apart (as on
//! two CI runners), each writing its own sidecar pool, and the pools merged back by
//! `cargo ktstr stats list --dir A --dir B`. A crate outside this workspace declares
//! four host-only tests (no VM boots, so the split is what is tested); `cargo ktstr test
//! --partition count:1/2` and `count:2/2` run two each, into two runs roots.

use std::path::{Path, PathBuf};

use ktstr_sidecar::load_pool;

#[path = "common/outside.rs"]
mod outside;

const TESTS: &str = r#"
use ktstr::prelude::*;

#[ktstr_test(host_only)]
fn part_a(ctx: &TestCtx) -> TestSpec {
    ctx.spec().check(|_: &RunOutcome| Ok(()))
}

#[ktstr_test(host_only)]
fn part_b(ctx: &TestCtx) -> TestSpec {
    ctx.spec().check(|_: &RunOutcome| Ok(()))
}

#[ktstr_test(host_only)]
fn part_c(ctx: &TestCtx) -> TestSpec {
    ctx.spec().check(|_: &RunOutcome| Ok(()))
}

#[ktstr_test(host_only)]
fn part_d(ctx: &TestCtx) -> TestSpec {
    ctx.spec().check(|_: &RunOutcome| Ok(()))
}
"#;

/// `cargo ktstr ARGS` in `krate`, clean environment, runs root `runs`: (success,
/// stdout and stderr).
fn cargo_ktstr(krate: &Path, runs: &Path, args: &[&str]) -> (bool, String) {
    let out = outside::cargo_ktstr(krate, runs)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn two_partitions_run_apart_and_their_pools_merge() {
    let dir = tempfile::tempdir().unwrap();
    let krate = outside::write_crate(dir.path(), "ktstr-fanout-demo", "host.rs", TESTS);

    let pools: Vec<PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("runner-{i}")))
        .collect();
    let mut names_per_pool = Vec::new();
    for (i, runs) in pools.iter().enumerate() {
        let part = format!("count:{}/2", i + 1);
        let (ok, text) = cargo_ktstr(&krate, runs, &["ktstr", "test", "--partition", &part]);
        assert!(ok, "partition {part} failed:\n{}", tail(&text));
        assert!(
            text.contains("ktstr: 2 tests: 2 passed, 0 failed"),
            "partition {part} runs half of the suite:\n{}",
            tail(&text)
        );
        let pool = load_pool(std::slice::from_ref(runs), false);
        let names: Vec<String> = pool
            .sidecars()
            .map(|l| l.sidecar.test_name.clone())
            .collect();
        assert_eq!(names.len(), 2, "{pool:?}");
        names_per_pool.push(names);
    }
    // Disjoint halves that make up the whole suite.
    let mut all: Vec<String> = names_per_pool.concat();
    all.sort();
    assert_eq!(all, ["part_a", "part_b", "part_c", "part_d"]);

    // Merged back: one listing of both pools with all four results.
    let runs_a = pools[0].to_str().unwrap();
    let runs_b = pools[1].to_str().unwrap();
    let (ok, text) = cargo_ktstr(
        &krate,
        &pools[0],
        &[
            "ktstr", "stats", "list", "--dir", runs_a, "--dir", runs_b, "--json",
        ],
    );
    assert!(ok, "{}", tail(&text));
    let json_start = text.find('{').expect("JSON output");
    let v: serde_json::Value = serde_json::Deserializer::from_str(&text[json_start..])
        .into_iter()
        .next()
        .expect("a JSON value")
        .expect("valid JSON");
    let listed = v.to_string();
    for runs in [runs_a, runs_b] {
        assert!(listed.contains(runs), "{runs} not in {listed}");
    }
    let passed: u64 = v["runs"]
        .as_array()
        .expect("a list of run directories")
        .iter()
        .map(|r| r["pass"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(passed, 4, "{listed}");
}
