//! Real sched_ext schedulers in the guest, on the default Debian kernel with the engine
//! `auto` picks:
//!
//! - `scx_bpfland` (found, or built statically into the scheduler cache) runs the canned
//!   `steady` and `mixed_workloads` scenarios and passes; the sidecar names it, says how
//!   it was found, and carries the verifier cost of every struct_ops program;
//! - `ktstr-stall` stops dispatching after 2 s, and the kernel's watchdog (3 s) ejects
//!   it: the run fails naming the stall, which `expect_err` turns into an expected
//!   failure;
//! - a scheduler that exits before it attaches (a bad option) fails with its exit status
//!   and output;
//! - a scheduler that exists nowhere fails before boot with `resolve_source = not_found`
//!   and a message saying how to provide it (or skips, when asked to).
//!
//! The runs that must fail are `expect_err` tests whose host-side checks look at the raw
//! verdict (checks run on expected failures too). Each scheduler run takes 20-40 s under
//! qemu TCG; under `cargo test` the VMs boot one at a time.

use ktstr::prelude::*;
use ktstr::test_support::execute::run_variant;
use ktstr::test_support::{TestAttrs, TestEntry, TestId, VariantResult};
use ktstr_sidecar::ResolveSource;

/// The canned scenario `name` for this variant.
fn canned(ctx: &TestCtx, name: &str) -> Scenario {
    Scenario::canned(ctx.topo_size())
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| s)
        .expect("a canned scenario of that name")
}

/// The sidecar of a finished run as it is written, read back through the reader (the
/// test's checks run before the one write).
fn sidecar_of(out: &RunOutcome) -> SidecarResult {
    out.sidecar_as_written().expect("the sidecar reads back")
}

/// A passing bpfland run of `scenario` with everything the sidecar must say about it.
fn bpfland(ctx: &TestCtx, scenario: &'static str) -> TestSpec {
    ctx.spec()
        .with_scheduler(|s| s.sysctl("kernel.sched_autogroup_enabled", "0"))
        .scenario(canned(ctx, scenario))
        .check(move |out: &RunOutcome| {
            let s = sidecar_of(out);
            assert!(s.is_pass(), "{:#?}", s.stats.verdict_details);
            assert_eq!(s.scheduler, "scx_bpfland");
            let source = s.resolve_source.expect("resolve_source is set");
            assert_ne!(source, ResolveSource::NotFound);
            assert_eq!(
                s.sysctls,
                vec!["sysctl.kernel.sched_autogroup_enabled=0".to_string()]
            );
            assert_eq!(s.kargs, vec!["sched_ext.slice_bypass_us=5000".to_string()]);

            // bpfland's struct_ops programs, each with a real verifier cost.
            assert!(
                s.verifier_stats.len() >= 5,
                "too few struct_ops programs: {:#?}",
                s.verifier_stats
            );
            for p in &s.verifier_stats {
                assert!(!p.name.is_empty(), "{p:?}");
                assert!(p.verified_insns > 0, "{p:?}");
            }
            let total: u64 = s
                .verifier_stats
                .iter()
                .map(|p| u64::from(p.verified_insns))
                .sum();
            eprintln!(
                "{scenario}: {} programs, {total} verified instructions, source {}",
                s.verifier_stats.len(),
                source.as_str()
            );

            // The workload ran under it, and its output is kept beside the sidecar.
            assert!(s.stats.total_workers > 0 && s.stats.total_iterations > 0);
            let log = out
                .scheduler_log
                .as_ref()
                .expect("the scheduler log is kept");
            assert!(log
                .to_string_lossy()
                .ends_with(&s.file_name().replace(".ktstr.json", ".scheduler.log")));
            let text = std::fs::read_to_string(log).expect("the scheduler log is readable");
            assert!(text.contains("scx_bpfland"), "{text}");
            let attached = out
                .checks
                .list
                .iter()
                .find(|c| c.subject == "scheduler scx_bpfland")
                .expect("a scheduler check");
            assert!(
                attached.message.contains("attached as `bpfland"),
                "{attached:?}"
            );
            assert!(
                attached.message.contains("detached cleanly"),
                "{attached:?}"
            );
            Ok(())
        })
}

#[ktstr_test(
    llcs = 2,
    cores = 1,
    memory_mib = 1024,
    duration_s = 3,
    scheduler = "scx_bpfland",
    kargs = ["sched_ext.slice_bypass_us=5000"]
)]
fn bpfland_steady(ctx: &TestCtx) -> TestSpec {
    bpfland(ctx, "steady")
}

#[ktstr_test(
    llcs = 2,
    cores = 1,
    memory_mib = 1024,
    duration_s = 3,
    scheduler = "scx_bpfland",
    kargs = ["sched_ext.slice_bypass_us=5000"]
)]
fn bpfland_mixed_workloads(ctx: &TestCtx) -> TestSpec {
    bpfland(ctx, "mixed_workloads")
}

/// ktstr-stall attaches, stops dispatching 2 s after load and is ejected by the watchdog
/// 3 s later, inside an 8 s workload. The raw verdict fails naming the stall; with
/// `expect_err` the sidecar records an expected failure.
#[ktstr_test(
    llcs = 2,
    cores = 1,
    memory_mib = 1024,
    duration_s = 8,
    scheduler = "ktstr-stall",
    expect_err
)]
fn stall_expected(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
        .scheduler_args(["--stall-after-s", "2"])
        .watchdog_timeout(Duration::from_millis(3000))
        .scenario(canned(ctx, "steady"))
        .check(|out: &RunOutcome| {
            // The run itself failed, naming the stall first.
            assert_eq!(out.checks.outcome(), Outcome::Fail, "{:#?}", out.reasons());
            let first = out.reasons()[0].clone();
            for needle in [
                "scheduler ktstr-stall",
                "stalled",
                "watchdog",
                "timeout 3000 ms",
                "runnable task stall",
            ] {
                assert!(first.contains(needle), "{needle} in {first}");
            }
            let s = sidecar_of(out);
            assert_eq!(s.scheduler, "ktstr-stall");
            assert!(s
                .resolve_source
                .is_some_and(|x| x != ResolveSource::NotFound));
            // It attached first: its three callbacks were verified.
            let names: Vec<&str> = s.verifier_stats.iter().map(|p| p.name.as_str()).collect();
            for want in ["stall_select_cp", "stall_enqueue", "stall_exit"] {
                assert!(
                    names
                        .iter()
                        .any(|n| want.starts_with(n) || n.starts_with(want)),
                    "{want} in {names:?}"
                );
            }
            assert!(s.verifier_stats.iter().all(|p| p.verified_insns > 0));
            // expect_err turned it into an expected failure, and the sidecar says why.
            assert!(s.is_pass(), "{:#?}", s.stats.verdict_details);
            assert!(s.expected_failure, "{:#?}", s.stats.verdict_details);
            assert!(
                s.stats
                    .verdict_details
                    .iter()
                    .any(|d| d.contains("runnable task stall")),
                "{:#?}",
                s.stats.verdict_details
            );
            Ok(())
        })
}

/// scx_bpfland with an option it does not know exits before it attaches: the run fails
/// with its exit status and output (`expect_err`; the check looks at the raw verdict).
#[ktstr_test(
    llcs = 2,
    cores = 1,
    memory_mib = 1024,
    duration_s = 3,
    scheduler = "scx_bpfland",
    expect_err
)]
fn bpfland_bad_arg(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
        .scheduler_args(["--no-such-option"])
        .scenario(canned(ctx, "steady"))
        .check(|out: &RunOutcome| {
            assert_eq!(out.checks.outcome(), Outcome::Fail, "{:#?}", out.reasons());
            let s = sidecar_of(out);
            assert!(s.is_pass() && s.expected_failure, "{:#?}", s.stats);
            assert!(s.verifier_stats.is_empty(), "it never loaded");
            let first = out.reasons()[0].clone();
            for needle in [
                "scheduler scx_bpfland exited before it attached (exit code 2)",
                "--no-such-option",
            ] {
                assert!(first.contains(needle), "{needle} in {first}");
            }
            assert_eq!(
                s.stats.total_workers, 0,
                "no workload runs without the scheduler"
            );
            Ok(())
        })
}

// ---- a scheduler that exists nowhere ----------------------------------------------------
//
// Plain `#[test]`s: a scheduler that cannot be found fails (or skips) before anything
// boots, whatever `expect_err` says (it inverts what a scheduler did, and none ran), so a
// `#[ktstr_test]` of it could only fail or skip, and its checks would never run. These
// run the same path a `#[ktstr_test]` takes (`run_variant`: spec, engine, kernel, runner,
// sidecar) on entries written by hand, left out of the registry, and look at the result.

const MISSING: TestAttrs = TestAttrs {
    llcs: 2,
    cores: 1,
    memory_mib: Some(1024),
    duration_s: 3,
    scheduler: "scx_does_not_exist",
    ..TestAttrs::DEFAULT
};

static MISSING_SCHEDULER: TestEntry = TestEntry {
    name: "missing_scheduler",
    module_path: module_path!(),
    file: file!(),
    line: line!(),
    func: |ctx| Ok(ctx.spec().scenario(canned(ctx, "steady"))),
    attrs: MISSING,
};

static MISSING_SCHEDULER_SKIP: TestEntry = TestEntry {
    name: "missing_scheduler_skip",
    module_path: module_path!(),
    file: file!(),
    line: line!(),
    func: |ctx| {
        Ok(ctx
            .spec()
            .skip_if_scheduler_missing()
            .scenario(canned(ctx, "steady")))
    },
    attrs: MISSING,
};

/// Run `entry`'s base variant; None (after saying why) when this host has no kernel or
/// engine, which is a skip before the scheduler is looked for (a failure with
/// KTSTR_NO_SKIP, which the caller's assertions then report).
fn run_by_hand(entry: &'static TestEntry) -> Option<(VariantResult, SidecarResult)> {
    let id = TestId {
        name: entry.name.to_string(),
        preset: None,
        kernel: None,
    };
    let r = run_variant(entry, &id, None);
    println!("{}", r.render());
    let path = r.sidecar_path.as_ref().expect("a sidecar was written");
    let s = read_sidecar(path).expect("the sidecar reads back");
    if r.outcome == Outcome::Skip && s.resolve_source.is_none() {
        eprintln!("SKIP: {:?}", r.reasons);
        return None;
    }
    Some((r, s))
}

#[test]
fn a_missing_scheduler_fails_before_boot_saying_how_to_provide_it() {
    let Some((r, s)) = run_by_hand(&MISSING_SCHEDULER) else {
        return;
    };
    assert_eq!(r.outcome, Outcome::Fail, "{}", r.render());
    assert!(s.is_fail(), "{:#?}", s.stats.verdict_details);
    assert_eq!(s.scheduler, "scx_does_not_exist");
    assert_eq!(s.resolve_source, Some(ResolveSource::NotFound));
    let why = &s.stats.verdict_details[0];
    for needle in ["not found", "KTSTR_SCHEDULER=scx_does_not_exist=", "$PATH"] {
        assert!(why.contains(needle), "{needle} in {why}");
    }
    // Nothing booted: no console, no collection.
    assert!(r.console_log.is_none(), "{}", r.render());
    assert_eq!(s.cleanup_duration_ms, None);
}

#[test]
fn a_missing_scheduler_skips_when_asked_to() {
    let Some((r, s)) = run_by_hand(&MISSING_SCHEDULER_SKIP) else {
        return;
    };
    assert_eq!(r.outcome, Outcome::Skip, "{}", r.render());
    assert!(s.is_skip(), "{:#?}", s.stats.verdict_details);
    assert_eq!(s.resolve_source, Some(ResolveSource::NotFound));
}
