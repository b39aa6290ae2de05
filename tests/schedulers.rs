//! Real sched_ext schedulers in the guest, on the default Debian kernel with the engine
//! `auto` picks:
//!
//! - `scx_bpfland` (found, or built statically into the scheduler cache) runs the canned
//!   `steady` and `mixed_workloads` scenarios and passes; the sidecar names it, says how
//!   it was found, and carries the verifier cost of every struct_ops program;
//! - `ktstr-stall` stops dispatching after 2 s, and the kernel's watchdog (3 s) ejects
//!   it: the run fails naming the stall, and passes as an expected failure with
//!   `expect_err`;
//! - a scheduler that exits before it attaches (a bad option) fails with its exit status
//!   and output;
//! - a scheduler that exists nowhere fails before boot with `resolve_source = not_found`
//!   and a message saying how to provide it (or skips, when asked to).
//!
//! VMs boot one at a time; each scheduler run takes 20-40 s under qemu TCG.

mod common;

use std::time::Duration;

use ktstr::runner::RunRequest;
use ktstr::scenario::{topo_size, Scenario};
use ktstr::scheduler::Scheduler;
use ktstr_sidecar::ResolveSource;
use ktstr_vmm::Topology;

const TOPO: &str = "1n2l1c1t";
const DURATION_MS: u64 = 3000;

fn canned(name: &str, duration_ms: u64) -> Scenario {
    let topo: Topology = TOPO.parse().unwrap();
    Scenario::canned(topo_size(&topo), duration_ms)
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| s)
        .expect("a canned scenario of that name")
}

fn request(test: &str, scenario: &str, duration_ms: u64, sched: Scheduler) -> Option<RunRequest> {
    let prereq = common::prerequisites()?;
    let mut req = common::request(
        test,
        TOPO,
        canned(scenario, duration_ms),
        duration_ms,
        prereq,
    );
    req.scheduler = sched;
    Some(req)
}

/// A passing bpfland run of `scenario` with everything the sidecar must say about it.
fn bpfland(scenario: &str) {
    let sched = Scheduler::named("scx_bpfland").sysctl("kernel.sched_autogroup_enabled", "0");
    let Some(mut req) = request(&format!("bpfland_{scenario}"), scenario, DURATION_MS, sched)
    else {
        return;
    };
    req.kargs.push("sched_ext.slice_bypass_us=5000".into());
    let r = common::run(&req);
    let s = &r.sidecar;
    assert!(s.is_pass(), "{}", common::explain(&r));
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
    let total: u64 = s.verifier_stats.iter().map(|p| p.verified_insns).sum();
    eprintln!(
        "{scenario}: {} programs, {total} verified instructions, source {}",
        s.verifier_stats.len(),
        source.as_str()
    );

    // The workload ran under it, and its output is kept beside the sidecar.
    assert!(s.stats.total_workers > 0 && s.stats.total_iterations > 0);
    let log = r.path.with_file_name(
        r.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".ktstr.json", ".scheduler.log"),
    );
    let text = std::fs::read_to_string(&log).expect("the scheduler log is kept");
    assert!(text.contains("scx_bpfland"), "{text}");
    let attached = r
        .out
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
}

#[test]
fn bpfland_runs_steady() {
    bpfland("steady");
}

#[test]
fn bpfland_runs_mixed_workloads() {
    bpfland("mixed_workloads");
}

/// ktstr-stall: attaches, stops dispatching 2 s after load, ejected by the watchdog 3 s
/// later, inside an 8 s workload.
fn stall(test: &str, expect_err: bool) -> Option<common::Ran> {
    let sched = Scheduler::named("ktstr-stall")
        .args(["--stall-after-s", "2"])
        .watchdog_timeout(Duration::from_millis(3000));
    let mut req = request(test, "steady", 8000, sched)?;
    req.expect_err = expect_err;
    Some(common::run(&req))
}

#[test]
fn a_stalling_scheduler_fails_naming_the_stall() {
    let Some(r) = stall("stall_fails", false) else {
        return;
    };
    let s = &r.sidecar;
    assert!(s.is_fail(), "{}", common::explain(&r));
    assert!(!s.expected_failure);
    assert_eq!(s.scheduler, "ktstr-stall");
    assert!(s
        .resolve_source
        .is_some_and(|x| x != ResolveSource::NotFound));
    let first = &r.out.reasons[0];
    for needle in [
        "scheduler ktstr-stall",
        "stalled",
        "watchdog",
        "timeout 3000 ms",
        "runnable task stall",
    ] {
        assert!(first.contains(needle), "{needle} in {first}");
    }
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
}

#[test]
fn a_stalling_scheduler_with_expect_err_is_an_expected_failure() {
    let Some(r) = stall("stall_expected", true) else {
        return;
    };
    let s = &r.sidecar;
    assert!(s.is_pass(), "{}", common::explain(&r));
    assert!(s.expected_failure, "{:#?}", s.stats.verdict_details);
    assert!(
        s.stats
            .verdict_details
            .iter()
            .any(|d| d.contains("runnable task stall")),
        "{:#?}",
        s.stats.verdict_details
    );
}

#[test]
fn a_scheduler_that_exits_before_attaching_fails_with_its_exit_status_and_output() {
    let sched = Scheduler::named("scx_bpfland").arg("--no-such-option");
    let Some(req) = request("bpfland_bad_arg", "steady", DURATION_MS, sched) else {
        return;
    };
    let r = common::run(&req);
    let s = &r.sidecar;
    assert!(s.is_fail(), "{}", common::explain(&r));
    assert!(s.verifier_stats.is_empty(), "it never loaded");
    let first = &r.out.reasons[0];
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
}

#[test]
fn a_missing_scheduler_fails_before_boot_saying_how_to_provide_it() {
    let Some(req) = request(
        "missing_scheduler",
        "steady",
        DURATION_MS,
        Scheduler::named("scx_does_not_exist"),
    ) else {
        return;
    };
    let r = common::run(&req);
    let s = &r.sidecar;
    assert!(s.is_fail(), "{}", common::explain(&r));
    assert_eq!(s.scheduler, "scx_does_not_exist");
    assert_eq!(s.resolve_source, Some(ResolveSource::NotFound));
    let why = &s.stats.verdict_details[0];
    for needle in ["not found", "KTSTR_SCHEDULER=scx_does_not_exist=", "$PATH"] {
        assert!(why.contains(needle), "{needle} in {why}");
    }
    assert!(r.out.boot_to_ready_ms.is_none(), "nothing booted");
}

#[test]
fn a_missing_scheduler_skips_when_asked_to() {
    let Some(req) = request(
        "missing_scheduler_skip",
        "steady",
        DURATION_MS,
        Scheduler::named("scx_does_not_exist").skip_if_missing(),
    ) else {
        return;
    };
    let r = common::run(&req);
    assert!(r.sidecar.is_skip(), "{}", common::explain(&r));
    assert_eq!(r.sidecar.resolve_source, Some(ResolveSource::NotFound));
}
