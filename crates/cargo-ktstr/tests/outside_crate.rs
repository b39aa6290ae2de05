//! `cargo ktstr test` on a crate outside this workspace, as a scheduler developer would
//! use it: a fresh crate in a temp dir depends on `ktstr` by path and declares two
//! `#[ktstr_test]`s, one of which fails on purpose (it expects an error that never
//! comes). The run must write exactly two sidecars (with `run_source = ci`), nextest must
//! report the failure, the exit code must be non-zero, and the summary must say so.
//!
//! Boots two VMs. Needs a kernel and an engine; without them it skips, or fails with
//! KTSTR_NO_SKIP (CI). The crate builds into this workspace's target dir (sharing the
//! compiled dependencies) with this workspace's Cargo.lock, offline.

use std::path::{Path, PathBuf};
use std::process::Command;

use ktstr_sidecar::{load_pool, RunSource};

mod common;
use common::can_boot;

const TESTS: &str = r#"
use ktstr::prelude::*;

#[ktstr_test(llcs = 1, cores = 2, duration_s = 2)]
fn spins(ctx: &TestCtx) -> TestSpec {
    ctx.spec().workers("spin", 2, WorkKind::Spin)
}

/// Deliberately failing: expects the run to fail, and it does not.
#[ktstr_test(llcs = 1, cores = 2, duration_s = 1, expect_err)]
fn expects_a_failure(ctx: &TestCtx) -> TestSpec {
    ctx.spec().workers("spin", 1, WorkKind::Spin)
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

#[test]
fn two_tests_two_sidecars_and_a_reported_failure() {
    if !can_boot() {
        return;
    }
    let ws = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("demo");
    write(
        &krate.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"ktstr-outside-demo\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
             [dev-dependencies]\nktstr = {{ path = {:?} }}\n\n[workspace]\n",
            ws.join("crates/ktstr")
        ),
    );
    write(&krate.join("src/lib.rs"), "");
    write(&krate.join("tests/vm.rs"), TESTS);
    std::fs::copy(ws.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    std::fs::copy(
        ws.join("rust-toolchain.toml"),
        krate.join("rust-toolchain.toml"),
    )
    .unwrap();
    let runs = dir.path().join("runs");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"));

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cargo-ktstr"));
    cmd.args(["test", "--no-skip", "--", "--no-fail-fast"])
        .current_dir(&krate);
    // A clean environment: nothing of this test process's cargo/nextest context.
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
        .env("KTSTR_RUNS_ROOT", &runs)
        .env("KTSTR_CI", "1");
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}\n{stderr}");
    let tail: String = all
        .lines()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");

    assert_ne!(
        out.status.code(),
        Some(0),
        "the failing test must fail the run:\n{tail}"
    );
    assert!(
        all.contains("FAIL") && all.contains("ktstr/expects_a_failure"),
        "nextest reports the failure:\n{tail}"
    );
    assert!(
        all.contains("PASS") && all.contains("ktstr/spins"),
        "{tail}"
    );
    assert!(
        all.contains("ktstr: 2 tests: 1 passed, 1 failed, 0 skipped, 0 inconclusive"),
        "summary:\n{tail}"
    );

    let pool = load_pool(std::slice::from_ref(&runs), false);
    let sidecars: Vec<_> = pool.sidecars().collect();
    assert_eq!(sidecars.len(), 2, "{pool:?}");
    let by_name = |n: &str| {
        &sidecars
            .iter()
            .find(|s| s.sidecar.test_name == n)
            .unwrap_or_else(|| panic!("no sidecar for {n}: {pool:?}"))
            .sidecar
    };
    let spins = by_name("spins");
    assert!(spins.is_pass(), "{:?}", spins.stats.verdict_details);
    assert_eq!(spins.stats.total_workers, 2);
    assert!(spins.stats.total_iterations > 0);
    let failing = by_name("expects_a_failure");
    assert!(failing.is_fail());
    assert!(
        failing
            .stats
            .verdict_details
            .iter()
            .any(|d| d.contains("expect_err")),
        "{:?}",
        failing.stats.verdict_details
    );
    for s in [spins, failing] {
        assert_eq!(s.run_source, Some(RunSource::Ci));
        // Outside a git repository the project commit is unknown.
        assert_eq!(s.project_commit, None);
    }
    assert!(
        all.contains(&format!("sidecars:\n  {}", runs.display())),
        "{tail}"
    );
}
