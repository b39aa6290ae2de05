//! Every canned scenario, booted on the default Debian kernel under EEVDF with the engine
//! `auto` picks: each run must pass the default gates and leave a sidecar with real
//! per-cgroup numbers, one start and one end event per step, monitor samples and every
//! periodic snapshot it asked for.
//!
//! Each scenario runs 2.4 s of workload (set by [`canned`]: `duration_s` counts whole
//! seconds) on `1n2l1c1t` (two CPUs in two LLCs, so the LLC and cpuset scenarios have
//! something to split). nextest lists them as `ktstr/canned_{scenario}`; under
//! `cargo test` their VMs boot one at a time.

use ktstr::prelude::*;

const DURATION_MS: u64 = 2400;
/// `num_snapshots` of every test below.
const SNAPSHOTS: u32 = 2;

/// The canned scenario `name` on this variant's topology, with a host-side check of its
/// sidecar (read back from disk) that ends with `more`, the scenario's own checks.
fn canned(ctx: &TestCtx, name: &'static str, more: fn(&SidecarResult)) -> TestSpec {
    let (_, scenario) = Scenario::canned(ctx.topo_size())
        .into_iter()
        .find(|(n, _)| *n == name)
        .expect("a canned scenario of that name");
    let steps = scenario.steps.len();
    let work_type = scenario
        .primary_work_type()
        .expect("canned scenarios have workers")
        .name();
    ctx.spec()
        .scenario(scenario)
        .duration(Duration::from_millis(DURATION_MS))
        .check(move |out: &RunOutcome| {
            let s = out.sidecar_as_written().expect("the sidecar reads back");
            check_sidecar(name, &s, steps, work_type);
            more(&s);
            Ok(())
        })
}

/// What every canned scenario's sidecar must hold.
fn check_sidecar(name: &str, s: &SidecarResult, steps: usize, work_type: &str) {
    assert!(s.is_pass(), "{name}: {:#?}", s.stats.verdict_details);
    assert!(!s.expected_failure);
    assert_eq!(s.work_type, work_type);

    // Real numbers for every cgroup.
    assert!(!s.stats.cgroups.is_empty(), "{name}: no cgroup stats");
    for cg in &s.stats.cgroups {
        let what = format!("{name}/{}: {cg:#?}", cg.cgroup_name);
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
        s.stats.cgroups.iter().map(|c| c.num_workers).sum::<usize>()
    );

    // One start and one end per step, in order, with counters that only grow, then the
    // scenario's end.
    let labels: Vec<String> = s.stimulus_events.iter().map(|e| e.label.clone()).collect();
    let want: Vec<String> = (0..steps)
        .flat_map(|k| [format!("StepStart[{k}]"), format!("StepEnd[{k}]")])
        .chain(["ScenarioEnd".to_string()])
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
            .filter_map(|p| p.total_iterations())
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
}

#[ktstr_test(llcs = 2, cores = 1, memory_mib = 1024, num_snapshots = 2)]
fn canned_steady(ctx: &TestCtx) -> TestSpec {
    canned(ctx, "steady", |_| {})
}

#[ktstr_test(llcs = 2, cores = 1, memory_mib = 1024, num_snapshots = 2)]
fn canned_steady_llc(ctx: &TestCtx) -> TestSpec {
    canned(ctx, "steady_llc", |s| {
        // One cgroup per LLC, each kept on its own CPU.
        for (i, cg) in s.stats.cgroups.iter().enumerate() {
            assert_eq!(cg.cgroup_name, format!("llc{i}"));
            assert_eq!(cg.cpus_used, [i].into(), "{cg:#?}");
        }
    })
}

#[ktstr_test(llcs = 2, cores = 1, memory_mib = 1024, num_snapshots = 2)]
fn canned_oversubscribed(ctx: &TestCtx) -> TestSpec {
    canned(ctx, "oversubscribed", |s| {
        // Four spinners per CPU: every one of them waited for a CPU.
        for cg in &s.stats.cgroups {
            assert!(cg.min_off_cpu_pct.is_some_and(|p| p > 20.0), "{cg:#?}");
        }
    })
}

#[ktstr_test(llcs = 2, cores = 1, memory_mib = 1024, num_snapshots = 2)]
fn canned_cpuset_change(ctx: &TestCtx) -> TestSpec {
    canned(ctx, "cpuset_change", |_| {})
}

#[ktstr_test(llcs = 2, cores = 1, memory_mib = 1024, num_snapshots = 2)]
fn canned_cgroup_churn(ctx: &TestCtx) -> TestSpec {
    canned(ctx, "cgroup_churn", |s| {
        let names: Vec<&str> = s
            .stats
            .cgroups
            .iter()
            .map(|c| c.cgroup_name.as_str())
            .collect();
        assert_eq!(names, ["cg0", "cg1", "cg2"]);
    })
}

#[ktstr_test(llcs = 2, cores = 1, memory_mib = 1024, num_snapshots = 2)]
fn canned_affinity_change(ctx: &TestCtx) -> TestSpec {
    canned(ctx, "affinity_change", |_| {})
}

#[ktstr_test(llcs = 2, cores = 1, memory_mib = 1024, num_snapshots = 2)]
fn canned_mixed_workloads(ctx: &TestCtx) -> TestSpec {
    canned(ctx, "mixed_workloads", |s| {
        // The latency work types measured what they claim.
        for name in ["pipe", "futex"] {
            let cg = s.stats.cgroup(name).expect(name);
            assert!(cg.wake_measured && cg.p99_wake_latency_us > 0.0, "{cg:#?}");
        }
        for name in ["timer", "bursty"] {
            let cg = s.stats.cgroup(name).expect(name);
            assert!(cg.timer_measured, "{cg:#?}");
        }
        assert!(s.stats.cgroup("spin").is_some_and(|c| !c.wake_measured));
    })
}

#[ktstr_test(llcs = 2, cores = 1, memory_mib = 1024, num_snapshots = 2)]
fn canned_nested_steady(ctx: &TestCtx) -> TestSpec {
    canned(ctx, "nested_steady", |s| {
        let names: Vec<&str> = s
            .stats
            .cgroups
            .iter()
            .map(|c| c.cgroup_name.as_str())
            .collect();
        assert_eq!(names, ["outer/heavy", "outer/light"]);
    })
}

/// CPU time a cgroup received over the run.
fn cpu_ns(s: &SidecarResult, cgroup: &str) -> u64 {
    s.stats.cgroup(cgroup).expect(cgroup).total_cpu_time_ns
}

#[ktstr_test(llcs = 2, cores = 1, memory_mib = 1024, num_snapshots = 2)]
fn canned_weight_inversion(ctx: &TestCtx) -> TestSpec {
    canned(ctx, "weight_inversion", |s| {
        // Equal load, weights 400 and 25: the heavy cgroup gets the larger share.
        let (heavy, light) = (cpu_ns(s, "heavy"), cpu_ns(s, "light"));
        assert!(heavy > 2 * light, "heavy {heavy} ns, light {light} ns");
    })
}

#[ktstr_test(llcs = 2, cores = 1, memory_mib = 1024, num_snapshots = 2)]
fn canned_low_weight_starvation(ctx: &TestCtx) -> TestSpec {
    canned(ctx, "low_weight_starvation", |s| {
        // The weight-10 spinner got little but kept running (the default gates passed:
        // not stuck, no gap over 2 s).
        let (hogs, meek) = (cpu_ns(s, "hogs"), cpu_ns(s, "meek"));
        assert!(meek > 0 && hogs > meek, "hogs {hogs} ns, meek {meek} ns");
    })
}

#[ktstr_test(llcs = 2, cores = 1, memory_mib = 1024, num_snapshots = 2)]
fn canned_cpuset_shrink(ctx: &TestCtx) -> TestSpec {
    canned(ctx, "cpuset_shrink", |s| {
        let cg = s.stats.cgroup("cg0").expect("cg0");
        assert!(cg.cpus_used.contains(&0), "{cg:#?}");
    })
}

#[ktstr_test(llcs = 2, cores = 1, memory_mib = 1024, num_snapshots = 2)]
fn canned_freeze_storm(ctx: &TestCtx) -> TestSpec {
    canned(ctx, "freeze_storm", |s| {
        // Frozen for half the run, the victim got less CPU than the bystander.
        let (victim, bystander) = (cpu_ns(s, "victim"), cpu_ns(s, "bystander"));
        assert!(
            victim < bystander,
            "victim {victim} ns, bystander {bystander} ns"
        );
    })
}

#[ktstr_test(llcs = 2, cores = 1, memory_mib = 1024, num_snapshots = 2)]
fn canned_affinity_storm(ctx: &TestCtx) -> TestSpec {
    canned(ctx, "affinity_storm", |s| {
        // The flipped workers ran on both halves over the run.
        let flip = s.stats.cgroup("flip").expect("flip");
        assert_eq!(flip.cpus_used.len(), 2, "{flip:#?}");
        assert!(s.stats.cgroup("churn").is_some());
    })
}

#[ktstr_test(llcs = 2, cores = 1, memory_mib = 1024, num_snapshots = 2)]
fn canned_nested_oversubscribed(ctx: &TestCtx) -> TestSpec {
    canned(ctx, "nested_oversubscribed", |s| {
        let names: Vec<&str> = s
            .stats
            .cgroups
            .iter()
            .map(|c| c.cgroup_name.as_str())
            .collect();
        assert_eq!(names, ["outer/a", "outer/mid/b", "outer/mid/c"]);
    })
}

#[ktstr_test(llcs = 2, cores = 1, memory_mib = 1024, num_snapshots = 2)]
fn canned_fork_storm(ctx: &TestCtx) -> TestSpec {
    // The spinners share their CPUs with forked children, and where the children land
    // follows where the two mostly-sleeping fork workers sit: one spinner can lose far
    // more CPU than the other with no scheduler at fault (EEVDF: 2.3 to 28.7 pp over eleven
    // 2.4 s runs, four of them above 15). The scenario hunts stalls, which the gap and
    // not-stuck gates judge; the spread gate only catches a spinner all but starved.
    let spread_pp = 50.0;
    canned(ctx, "fork_storm", |s| {
        // Forking and reaping did not stop the spinners, and the forks completed.
        assert!(cpu_ns(s, "spin") > 0);
        assert!(s
            .stats
            .cgroup("fork")
            .is_some_and(|c| c.total_iterations > 0));
    })
    .assert(Assert::default().max_spread_pct(spread_pp))
}
