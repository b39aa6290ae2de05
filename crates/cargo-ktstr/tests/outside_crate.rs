//! `cargo ktstr test` on a crate outside this workspace, as a scheduler developer would
//! use it: a fresh crate in a temp dir depends on `ktstr` by path and declares two
//! `#[ktstr_test]`s, one of which fails on purpose (it expects an error that never
//! comes). The run must write exactly two sidecars (with `run_source = ci`), nextest must
//! report the failure, the exit code must be non-zero, and the summary must say so.
//!
//! Boots two VMs. Needs a kernel and an engine; without them it skips, or fails with
//! KTSTR_NO_SKIP (CI). The crate builds into this workspace's target dir (sharing the
//! compiled dependencies) with this workspace's Cargo.lock, offline.

use ktstr_sidecar::{load_pool, RunSource};

mod common;
#[path = "common/outside.rs"]
mod outside;
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

#[test]
fn two_tests_two_sidecars_and_a_reported_failure() {
    if !can_boot() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let krate = outside::write_crate(dir.path(), "ktstr-outside-demo", "vm.rs", TESTS);
    let runs = dir.path().join("runs");
    let mut cmd = outside::cargo_ktstr(&krate, &runs);
    cmd.args(["test", "--no-skip", "--", "--no-fail-fast"])
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
