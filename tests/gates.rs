//! The fairness and isolation gates on a real kernel. Cgroup `packed` is confined to CPU
//! 1 with four spinners; cgroup `free` has CPU 0 to its one spinner. Inside each cgroup
//! every worker is served alike and none leaves its cpuset, so the per-cgroup gates pass.
//! Across the scenario, `packed`'s workers get a quarter of a CPU each while `free`'s
//! gets a whole one: a scenario-wide fairness limit must catch that, and the test that
//! sets one expects the failure (`expect_err`), which the sidecar records as
//! `expected_failure`.
//!
//! Also: an impossible spec is refused before any VM boots.

mod common;

use ktstr::assert::{Assert, Gate};
use ktstr::scenario::{CgroupDef, CpusetSpec, Hold, Scenario, Step};
use ktstr_sidecar::Outcome;

const TOPO: &str = "1n2l1c1t";
const DURATION_MS: u64 = 2400;

fn confined() -> Scenario {
    Scenario::new()
        .cgroup(
            CgroupDef::new("packed")
                .cpuset(CpusetSpec::Cpus(vec![1]))
                .workers(4),
        )
        .cgroup(
            CgroupDef::new("free")
                .cpuset(CpusetSpec::Cpus(vec![0]))
                .workers(1),
        )
        .step(Step::new("confined", Hold::Fraction(1.0)))
}

#[test]
fn confined_cgroup_passes_per_cgroup_fairness_and_isolation() {
    let Some(prereq) = common::prerequisites() else {
        return;
    };
    let req = common::request("gates_confined_fair", TOPO, confined(), DURATION_MS, prereq);
    let r = common::run(&req);
    assert!(r.sidecar.is_pass(), "{}", common::explain(&r));
    let checks = &r.out.checks;
    assert_eq!(checks.gate_outcome(Gate::Isolation), Outcome::Pass);
    assert_eq!(
        checks.of(Gate::Isolation).count(),
        2,
        "both cgroups have a cpuset"
    );
    // `free` has one worker, so only `packed` has a spread to judge.
    assert_eq!(checks.gate_outcome(Gate::Spread), Outcome::Pass);
    assert_eq!(checks.of(Gate::Spread).count(), 1);

    let s = &r.sidecar.stats;
    let packed = s.cgroup("packed").expect("packed stats");
    let free = s.cgroup("free").expect("free stats");
    assert_eq!(packed.cpus_used, [1]);
    assert_eq!(free.cpus_used, [0]);
    assert_eq!((packed.num_cpus, free.num_cpus), (1, 1));
    // Four spinners on one CPU: each waits about three quarters of the time.
    let off = packed.avg_off_cpu_pct.expect("measured");
    assert!(off > 50.0, "{packed:#?}");
    assert!(free.avg_off_cpu_pct.expect("measured") < 25.0, "{free:#?}");
    // Rates per CPU-second stay comparable although packed got a quarter of the CPU.
    let (rp, rf) = (
        packed.ext_metrics["work_rate"],
        free.ext_metrics["work_rate"],
    );
    assert!(rp > 0.5 * rf && rp < 2.0 * rf, "work rates {rp} vs {rf}");
    eprintln!(
        "packed: off-CPU {off:.1} %, spread {:?}; free: off-CPU {:?}; rates {rp:.0} / {rf:.0} units per CPU-s",
        packed.spread, free.avg_off_cpu_pct
    );
}

#[test]
fn scenario_wide_fairness_catches_the_starved_cgroup() {
    let Some(prereq) = common::prerequisites() else {
        return;
    };
    let mut req = common::request(
        "gates_confined_unfair",
        TOPO,
        confined(),
        DURATION_MS,
        prereq,
    );
    req.assert = Assert::default().max_scenario_spread_pct(25.0);
    req.expect_err = true;
    let r = common::run(&req);
    // The raw verdict failed, for the right reason only, and expect_err inverted it.
    let checks = &r.out.checks;
    assert_eq!(checks.outcome(), Outcome::Fail, "{}", common::explain(&r));
    let failed: Vec<Gate> = checks
        .list
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .map(|c| c.gate)
        .collect();
    assert_eq!(failed, [Gate::ScenarioSpread], "{}", common::explain(&r));
    assert_eq!(checks.gate_outcome(Gate::Isolation), Outcome::Pass);
    assert_eq!(checks.gate_outcome(Gate::Spread), Outcome::Pass);
    assert!(r.sidecar.is_pass());
    assert!(r.sidecar.expected_failure);
    let details = r.sidecar.stats.verdict_details.join("\n");
    assert!(
        details.contains("fail [scenario_spread] scenario"),
        "{details}"
    );
    assert!(details.contains("expect_err"), "{details}");
}

#[test]
fn impossible_spec_is_refused_before_boot() {
    // No kernel or engine needed: validation comes first.
    let kernel = ktstr::kernel::ResolvedKernel {
        image: "/nonexistent/bzImage".into(),
        release: "none".into(),
        config: None,
        system_map: None,
        source_tree: None,
        cache_key: None,
        metadata: None,
        origin: ktstr::kernel::KernelOrigin::Explicit,
    };
    let outside = Scenario::new()
        .cgroup(CgroupDef::new("a").cpuset(CpusetSpec::Cpus(vec![7])))
        .step(Step::new("s", Hold::Fraction(1.0)));
    let req = common::request(
        "gates_impossible",
        TOPO,
        outside,
        DURATION_MS,
        (kernel, ktstr::engine::EngineKind::QemuTcg),
    );
    let e = ktstr::runner::run(&req).expect_err("an impossible spec is refused");
    let msg = format!("{e:#}");
    assert!(msg.contains("scenario.cgroups[0].cpuset"), "{msg}");
    assert!(msg.contains("CPU 7 is outside the topology"), "{msg}");
}
