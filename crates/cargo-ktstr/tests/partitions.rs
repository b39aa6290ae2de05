//! CI fan-out the nextest way: the suite split into partitions that run apart (as on
//! two CI runners), each writing its own sidecar pool, and the pools merged back by
//! `cargo ktstr stats list --dir A --dir B`. A crate outside this workspace declares
//! four host-only tests (no VM boots, so the split is what is tested); `cargo ktstr test
//! --partition count:1/2` and `count:2/2` run two each, into two runs roots.

use std::path::{Path, PathBuf};
use std::process::Command;

use ktstr_sidecar::load_pool;

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

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `cargo ktstr ARGS` in `dir` with a clean environment (nothing of this test's own
/// cargo/nextest context), the runs root `runs` and this workspace's target dir.
fn cargo_ktstr(dir: &Path, runs: &Path, args: &[&str]) -> (bool, String) {
    let ws = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cargo-ktstr"));
    cmd.args(args).current_dir(dir);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("NEXTEST")
            || k.starts_with("CARGO_")
            || (k.starts_with("KTSTR_") && k != "KTSTR_CACHE_DIR" && k != "KTSTR_TMPDIR")
        {
            cmd.env_remove(&*k);
        }
    }
    cmd.env("CARGO_TARGET_DIR", &target)
        .env("CARGO_NET_OFFLINE", "true")
        .env("KTSTR_RUNS_ROOT", runs);
    let out = cmd.output().unwrap();
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
    let ws = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("fanout");
    write(
        &krate.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"ktstr-fanout-demo\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
             [dev-dependencies]\nktstr = {{ path = {:?} }}\n\n[workspace]\n",
            ws.join("crates/ktstr")
        ),
    );
    write(&krate.join("src/lib.rs"), "");
    write(&krate.join("tests/host.rs"), TESTS);
    std::fs::copy(ws.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    std::fs::copy(
        ws.join("rust-toolchain.toml"),
        krate.join("rust-toolchain.toml"),
    )
    .unwrap();

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
