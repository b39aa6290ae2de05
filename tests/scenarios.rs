//! Every canned scenario, booted on the default Debian kernel under EEVDF with the engine
//! `auto` picks: each run must pass the default gates and leave a sidecar with real
//! per-cgroup numbers, one start and one end event per step, monitor samples and every
//! periodic snapshot it asked for.
//!
//! Each scenario runs 2.4 s of workload on `1n2l1c1t` (two CPUs in two LLCs, so the LLC
//! and cpuset scenarios have something to split). VMs boot one at a time.

mod common;

use ktstr::scenario::{topo_size, Scenario};
use ktstr_sidecar::SidecarResult;
use ktstr_vmm::Topology;

const TOPO: &str = "1n2l1c1t";
const DURATION_MS: u64 = 2400;
const SNAPSHOTS: u32 = 2;

/// Run the canned scenario `name` and check its sidecar; returns it for more checks.
fn canned(name: &str) -> Option<SidecarResult> {
    let prereq = common::prerequisites()?;
    let topo: Topology = TOPO.parse().unwrap();
    let (_, scenario) = Scenario::canned(topo_size(&topo), DURATION_MS)
        .into_iter()
        .find(|(n, _)| *n == name)
        .expect("a canned scenario of that name");
    let steps = scenario.steps.len();
    let work_type = scenario
        .primary_work_type()
        .expect("canned scenarios have workers")
        .name();
    let mut req = common::request(
        &format!("canned_{name}"),
        TOPO,
        scenario,
        DURATION_MS,
        prereq,
    );
    req.spec.num_snapshots = SNAPSHOTS;
    let r = common::run(&req);
    let s = &r.sidecar;
    assert!(s.is_pass(), "{name} did not pass: {}", common::explain(&r));
    assert!(!s.expected_failure);
    assert_eq!(s.work_type, work_type);

    // Real numbers for every cgroup.
    assert!(!s.stats.cgroups.is_empty(), "{name}: no cgroup stats");
    for cg in &s.stats.cgroups {
        let what = format!("{name}/{}: {cg:#?}", cg.name);
        assert!(cg.num_workers > 0, "{what}");
        assert!(cg.total_iterations > 0, "{what}");
        assert!(cg.total_cpu_time_ns > 0, "{what}");
        assert!(!cg.cpus_used.is_empty(), "{what}");
        assert!(cg.num_cpus >= 1, "{what}");
        let off = cg.avg_off_cpu_pct.expect("off-CPU share measured");
        assert!((0.0..=100.0).contains(&off), "{what}");
    }
    assert_eq!(
        s.stats.total_workers,
        s.stats.cgroups.iter().map(|c| c.num_workers).sum::<u32>()
    );

    // One start and one end per step, in order, with counters that only grow.
    let labels: Vec<String> = s.stimulus_events.iter().map(|e| e.label.clone()).collect();
    let want: Vec<String> = (1..=steps)
        .flat_map(|k| [format!("StepStart[{k}]"), format!("StepEnd[{k}]")])
        .collect();
    assert_eq!(labels, want, "{name}");
    for w in s.stimulus_events.windows(2) {
        assert!(w[0].elapsed_ms <= w[1].elapsed_ms, "{name}: {w:#?}");
        assert!(
            w[0].total_iterations <= w[1].total_iterations,
            "{name}: {w:#?}"
        );
    }
    assert!(s.stimulus_events.last().is_some_and(|e| e.is_terminal));
    let step_phases: Vec<u16> = s
        .stats
        .phases
        .iter()
        .map(|p| p.step_index)
        .filter(|&k| k > 0)
        .collect();
    assert_eq!(
        step_phases,
        (1..=steps as u16).collect::<Vec<_>>(),
        "{name}"
    );
    assert!(
        s.stats
            .phases
            .iter()
            .map(|p| p.total_iterations)
            .sum::<u64>()
            > 0,
        "{name}: {:#?}",
        s.stats.phases
    );

    let m = s.monitor.as_ref().expect("a monitor summary");
    assert!(m.total_samples > 0, "{name}: {m:#?}");
    assert!(m.max_imbalance_ratio >= 1.0, "{name}: {m:#?}");
    assert_eq!(s.periodic_target, SNAPSHOTS);
    assert_eq!(s.periodic_fired, s.periodic_target, "{name}");
    eprintln!(
        "{name}: {} samples, max imbalance {:.1}, {} iterations, worst gap {} ms, worst spread {:?}",
        m.total_samples,
        m.max_imbalance_ratio,
        s.stats.total_iterations,
        s.stats.worst_gap_ms,
        s.stats.worst_spread
    );
    Some(r.sidecar)
}

#[test]
fn steady() {
    canned("steady");
}

#[test]
fn steady_llc() {
    let Some(s) = canned("steady_llc") else {
        return;
    };
    // One cgroup per LLC, each kept on its own CPU.
    for (i, cg) in s.stats.cgroups.iter().enumerate() {
        assert_eq!(cg.name, format!("llc{i}"));
        assert_eq!(cg.cpus_used, [i as u32], "{cg:#?}");
    }
}

#[test]
fn oversubscribed() {
    let Some(s) = canned("oversubscribed") else {
        return;
    };
    // Four spinners per CPU: every one of them waited for a CPU.
    for cg in &s.stats.cgroups {
        assert!(cg.min_off_cpu_pct.is_some_and(|p| p > 20.0), "{cg:#?}");
    }
}

#[test]
fn cpuset_change() {
    canned("cpuset_change");
}

#[test]
fn cgroup_churn() {
    let Some(s) = canned("cgroup_churn") else {
        return;
    };
    let names: Vec<&str> = s.stats.cgroups.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["cg0", "cg1", "cg2"]);
}

#[test]
fn affinity_change() {
    canned("affinity_change");
}

#[test]
fn mixed_workloads() {
    let Some(s) = canned("mixed_workloads") else {
        return;
    };
    // The latency work types measured what they claim.
    for name in ["pipe", "futex"] {
        let cg = s.stats.cgroup(name).expect(name);
        assert!(cg.p99_wake_latency_us.is_some_and(|x| x > 0.0), "{cg:#?}");
    }
    for name in ["timer", "bursty"] {
        let cg = s.stats.cgroup(name).expect(name);
        assert!(cg.p99_timer_latency_us.is_some(), "{cg:#?}");
    }
    assert!(s
        .stats
        .cgroup("spin")
        .is_some_and(|c| c.p99_wake_latency_us.is_none()));
}

#[test]
fn nested_steady() {
    let Some(s) = canned("nested_steady") else {
        return;
    };
    let names: Vec<&str> = s.stats.cgroups.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["outer/heavy", "outer/light"]);
}
