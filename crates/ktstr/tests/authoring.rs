//! The test-binary protocol of `#[ktstr_test]`, checked by running this very binary the
//! way nextest and libtest do: `--list --format terse [--ignored]`, `--exact NAME`, and
//! the `#[test]` wrappers. None of this boots a VM: the fixtures below fail or skip
//! before boot on purpose.
//!
//! The fixtures are `ignore`d so a normal run never executes them; they are not meant to
//! pass (`--run-ignored all` will show them failing).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ktstr::prelude::*;

// ---- fixtures -------------------------------------------------------------------------

/// Gauntlet with a constraint: presets of at most 4 vCPUs, except its own 1n2l2c1t.
#[ktstr_test(llcs = 2, cores = 2, duration_s = 2, gauntlet, max_cpus = 4, ignore)]
fn fixture_gauntlet(ctx: &TestCtx) -> TestSpec {
    ctx.spec().workers("spin", ctx.vcpus(), WorkKind::Spin)
}

/// 256 vCPUs: more APIC ids than qemu-tcg can present.
#[ktstr_test(llcs = 16, cores = 16, memory_mib = 512)]
#[ignore]
fn fixture_too_big_for_tcg(ctx: &TestCtx) -> TestSpec {
    ctx.spec().workers("spin", 1, WorkKind::Spin)
}

#[ktstr_test(ignore, sysctls = ["kernel.sched_autogroup_enabled=0"], perf_delta_assertions = [(metric = "worst_gap_ms", max_regression_pct = 25.0)])]
fn fixture_plain(ctx: &TestCtx) -> TestSpec {
    ctx.spec().workers("spin", 2, WorkKind::Spin)
}

#[ktstr_test(ignore)]
fn fixture_spec_error(_ctx: &TestCtx) -> anyhow::Result<TestSpec> {
    anyhow::bail!("deliberate spec error")
}

#[ktstr_test(ignore)]
fn fixture_spec_panics(_ctx: &TestCtx) -> TestSpec {
    panic!("deliberate panic in the spec")
}

// ---- drivers --------------------------------------------------------------------------

/// This test binary, run with a clean ktstr environment plus `env`.
fn run_self(args: &[&str], env: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(args);
    for var in [
        "KTSTR_NO_SKIP",
        "KTSTR_KERNEL",
        "KTSTR_KERNEL_LIST",
        "KTSTR_ENGINE",
        "KTSTR_SIDECAR_DIR",
        "KTSTR_RUN_MANIFEST",
        "KTSTR_CI",
        "KTSTR_CI_ENV",
        "NEXTEST",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn describe(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn only_sidecar(dir: &Path) -> (PathBuf, SidecarResult) {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".ktstr.json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let s = read_sidecar(&files[0]).unwrap();
    // Refused, panicked, skipped: every sidecar is read by the reference's reader too.
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let report = ktstr_sidecar::conformance::check_text(&text).unwrap();
    assert!(report.unexpected().is_empty(), "{report}");
    (files[0].clone(), s)
}

#[test]
fn terse_list_shows_base_and_gauntlet_variants_and_plain_tests() {
    let o = run_self(&["--list", "--format", "terse"], &[]);
    assert!(o.status.success(), "{}", describe(&o));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    let ours: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("ktstr/") || l.starts_with("gauntlet/"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        ours,
        [
            "ktstr/fixture_gauntlet: test",
            "ktstr/fixture_plain: test",
            "ktstr/fixture_spec_error: test",
            "ktstr/fixture_spec_panics: test",
            "ktstr/fixture_too_big_for_tcg: test",
            "gauntlet/fixture_gauntlet/1n1l2c1t: test",
            "gauntlet/fixture_gauntlet/1n1l3c1t: test",
            "gauntlet/fixture_gauntlet/1n1l4c1t: test",
            "gauntlet/fixture_gauntlet/1n1l2c2t: test",
            "gauntlet/fixture_gauntlet/2n2l2c1t: test",
        ]
    );
    // The plain #[test]s of this file are listed by libtest, the wrappers are not.
    assert!(
        lines.contains(&"terse_list_shows_base_and_gauntlet_variants_and_plain_tests: test".into())
    );
    assert!(
        !lines.iter().any(|l| l == "fixture_plain: test"),
        "{lines:?}"
    );
    // Terse: no "N tests, M benchmarks" line.
    assert!(lines.iter().all(|l| l.ends_with(": test")), "{lines:?}");
}

#[test]
fn ignored_list_has_gauntlet_variants_and_ignored_tests_only() {
    let o = run_self(&["--list", "--format", "terse", "--ignored"], &[]);
    assert!(o.status.success(), "{}", describe(&o));
    let out = stdout(&o);
    assert!(out.contains("gauntlet/fixture_gauntlet/2n2l2c1t: test\n"));
    assert!(out.contains("ktstr/fixture_too_big_for_tcg: test\n"));
    assert!(
        !out.contains("terse_list_shows"),
        "plain tests are not ignored:\n{out}"
    );
}

#[test]
fn pretty_list_counts_and_filters() {
    let o = run_self(&["--list", "fixture_gauntlet"], &[]);
    assert!(o.status.success(), "{}", describe(&o));
    let out = stdout(&o);
    assert!(out.starts_with("ktstr/fixture_gauntlet: test\n"), "{out}");
    assert!(out.ends_with("\n6 tests, 0 benchmarks\n"), "{out}");
}

#[test]
fn two_kernels_put_the_kernel_in_every_name() {
    let list = "6.14.0=/k/a\n7.2.13=/k/b";
    let o = run_self(
        &["--list", "--format", "terse", "fixture_plain"],
        &[("KTSTR_KERNEL_LIST", list)],
    );
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(
        stdout(&o),
        "ktstr/fixture_plain/6.14.0: test\nktstr/fixture_plain/7.2.13: test\n"
    );
}

#[test]
fn spec_error_fails_with_exit_1_and_a_fail_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.tsv");
    let o = run_self(
        &["--exact", "ktstr/fixture_spec_error", "--nocapture"],
        &[
            ("KTSTR_SIDECAR_DIR", dir.path().to_str().unwrap()),
            ("KTSTR_RUN_MANIFEST", manifest.to_str().unwrap()),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        stdout(&o).contains("ktstr: ktstr/fixture_spec_error [1n1l2c1t]: FAIL"),
        "{}",
        describe(&o)
    );
    let (path, s) = only_sidecar(dir.path());
    assert!(s.is_fail());
    assert!(!s.expected_failure);
    assert_eq!(s.test_name, "fixture_spec_error");
    assert!(
        s.stats.verdict_details[0].contains("deliberate spec error"),
        "{:?}",
        s.stats.verdict_details
    );
    // The run manifest names the sidecar, for `cargo ktstr test`'s summary.
    let m = std::fs::read_to_string(&manifest).unwrap();
    let (ms, p) = m.trim_end().split_once('\t').unwrap();
    assert!(ms.parse::<u64>().is_ok(), "{m}");
    assert_eq!(Path::new(p), path);
}

#[test]
fn a_panicking_spec_fails() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_self(
        &["--exact", "ktstr/fixture_spec_panics"],
        &[("KTSTR_SIDECAR_DIR", dir.path().to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let (_, s) = only_sidecar(dir.path());
    assert!(s.stats.verdict_details[0].contains("panicked: deliberate panic in the spec"));
}

#[test]
fn too_big_for_the_engine_skips_or_fails_with_no_skip() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("KTSTR_SIDECAR_DIR", dir.path().to_str().unwrap()),
        ("KTSTR_ENGINE", "qemu-tcg"),
        ("KTSTR_CI", "1"),
    ];
    let o = run_self(&["--exact", "ktstr/fixture_too_big_for_tcg"], &env);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(stdout(&o).contains(": SKIP in"), "{}", describe(&o));
    let (_, s) = only_sidecar(dir.path());
    assert!(s.is_skip());
    assert_eq!(s.topology, "1n16l16c1t");
    assert_eq!(s.vcpus, 256);
    assert_eq!(s.run_source, Some(ktstr_sidecar::RunSource::Ci));
    // Without qemu the reason is the missing engine; with it, the topology.
    let reason = &s.stats.verdict_details[0];
    assert!(reason.contains("qemu"), "{reason}");
    assert_eq!(reason.lines().count(), 1, "one-line reason: {reason}");

    let mut env = env.to_vec();
    env.push(("KTSTR_NO_SKIP", "1"));
    let o = run_self(&["--exact", "ktstr/fixture_too_big_for_tcg"], &env);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let (_, s) = only_sidecar(dir.path());
    assert!(s.is_fail());
    assert!(s.stats.verdict_details[0].contains("KTSTR_NO_SKIP is set"));
}

#[test]
fn a_missing_kernel_is_a_skip_with_an_identity_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_self(
        &["--exact", "ktstr/fixture_plain"],
        &[
            ("KTSTR_SIDECAR_DIR", dir.path().to_str().unwrap()),
            // `kvm` is accepted without probing, so the kernel is what is missing.
            ("KTSTR_ENGINE", "kvm"),
            ("KTSTR_KERNEL", "/nonexistent/ktstr/bzImage"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let (path, s) = only_sidecar(dir.path());
    assert!(s.is_skip());
    assert!(s.stats.verdict_details[0].starts_with("kernel unavailable:"));
    // The skip lands where a real run of this variant would: same identity, same file.
    assert_eq!(s.sysctls, ["sysctl.kernel.sched_autogroup_enabled=0"]);
    assert_eq!(s.work_type, "SpinWait");
    assert_eq!(s.perf_delta_assertions[0].metric, "worst_gap_ms");
    assert_eq!(s.perf_delta_assertions[0].max_regression_pct, Some(25.0));
    assert_eq!(path.file_name().unwrap().to_string_lossy(), s.file_name());
}

#[test]
fn unknown_names_run_nothing_and_foreign_presets_exit_1() {
    // Like libtest with a filter that matches nothing: `cargo test -- --exact NAME` hands
    // NAME to every binary of the package.
    let o = run_self(&["--exact", "ktstr/no_such_test"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no #[ktstr_test] named `no_such_test`"));
    let o = run_self(&["--exact", "gauntlet/fixture_plain/1n1l2c1t"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not declared with `gauntlet`"));
}

#[test]
fn libtest_runs_the_wrapper_failures_panic_skips_pass() {
    let dir = tempfile::tempdir().unwrap();
    let sidecars = dir.path().to_str().unwrap();
    // `cargo test fixture_spec_error -- --ignored`: the #[test] wrapper panics.
    let o = run_self(
        &["fixture_spec_error", "--ignored", "--exact"],
        &[("KTSTR_SIDECAR_DIR", sidecars)],
    );
    assert_eq!(o.status.code(), Some(101), "{}", describe(&o));
    assert!(
        stdout(&o).contains("test fixture_spec_error ... FAILED"),
        "{}",
        describe(&o)
    );
    // A skip is a pass under libtest.
    let o = run_self(
        &["fixture_too_big_for_tcg", "--ignored", "--exact"],
        &[
            ("KTSTR_SIDECAR_DIR", sidecars),
            ("KTSTR_ENGINE", "qemu-tcg"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(
        stdout(&o).contains("test fixture_too_big_for_tcg ... ok"),
        "{}",
        describe(&o)
    );
}
