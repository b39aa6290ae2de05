//! Boots a VM (default kernel, engine `auto`, EEVDF) with a scenario that uses every
//! work type and every op, and checks the raw guest reports: each worker measured what
//! its work type claims, each op took effect in the kernel (a frozen cgroup's worker
//! shows the freeze as a gap, a moved worker ends in its new cgroup, cpusets and
//! affinities are what the worker finds at its end, `cpu.max` throttles), and the
//! monitor and snapshots carried real numbers.
//!
//! Skips without a kernel or engine (fails instead when KTSTR_NO_SKIP is set).

use std::collections::BTreeMap;

use ktstr::engine;
use ktstr::runner::{self, RunRequest};
use ktstr_wire::msg::{StepPhase, WorkerReport};
use ktstr_wire::scenario::{CgroupDef, CpusetSpec, Hold, Op, Scenario, Step, WorkType};
use ktstr_wire::spec::GuestSpec;

const DURATION_MS: u64 = 3000;

fn scenario() -> Scenario {
    let q = Hold::Fraction(0.25);
    Scenario::new()
        .cgroup(CgroupDef::new("capped").cpu_max(20_000, 100_000))
        .cgroup(CgroupDef::new("churn").work(WorkType::AffinityChurn))
        .cgroup(CgroupDef::new("nice").work(WorkType::NiceSweep))
        .cgroup(CgroupDef::new("io").work(WorkType::IoSyncWrite))
        .cgroup(CgroupDef::new("cache").work(WorkType::CachePressure { kib: 256 }))
        .cgroup(CgroupDef::new("fork").work(WorkType::ForkExit))
        .cgroup(CgroupDef::new("mixed").work(WorkType::Mixed))
        .cgroup(CgroupDef::new("dst").work(WorkType::YieldHeavy))
        .step(Step::new("baseline", q))
        .step(Step::new("freeze", q).op(Op::Freeze {
            cgroup: "capped".into(),
        }))
        .step(
            Step::new("thaw, move, spawn", q)
                .op(Op::Unfreeze {
                    cgroup: "capped".into(),
                })
                .op(Op::MoveTasks {
                    from: "mixed".into(),
                    to: "dst".into(),
                })
                .op(Op::SpawnWorkers {
                    cgroup: "dst".into(),
                    count: 2,
                    work: WorkType::FutexPingPong.into(),
                }),
        )
        .step(
            Step::new("pin", q)
                .op(Op::SetAffinity {
                    cgroup: "dst".into(),
                    cpus: CpusetSpec::Cpus(vec![0]),
                })
                .op(Op::SetCpuset {
                    cgroup: "churn".into(),
                    cpuset: CpusetSpec::Cpus(vec![1]),
                }),
        )
}

#[test]
fn every_work_type_and_op_in_a_vm() {
    let skip_ok = std::env::var_os("KTSTR_NO_SKIP").is_none_or(|v| v.is_empty());
    let (kernel, engine) = match (ktstr::kernel::resolve(None), engine::choose(None)) {
        (Ok(k), Ok(e)) => (k, e),
        (k, e) => {
            let why = format!("kernel: {:?}; engine: {:?}", k.err(), e.err());
            assert!(skip_ok, "cannot boot: {why}");
            eprintln!("SKIP: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: this test binary runs one test; nothing else reads the environment.
    unsafe {
        std::env::set_var("KTSTR_SIDECAR_DIR", dir.path());
        std::env::set_var("KTSTR_GUEST", env!("CARGO_BIN_EXE_ktstr-guest"));
    }
    let mut spec = GuestSpec::new("guest_vm_ops", DURATION_MS);
    spec.scenario = Some(scenario());
    spec.num_snapshots = 5;
    let req = RunRequest {
        test_name: "guest_vm_ops".into(),
        topology: "1n2l1c1t".parse().unwrap(),
        memory_mib: 1024,
        cpu_budget: None,
        kernel,
        engine,
        spec,
        scheduler: "eevdf".into(),
        sysctls: Vec::new(),
        kargs: Vec::new(),
        includes: Vec::new(),
        payloads: Vec::new(),
        expect_err: false,
        perf_delta_assertions: Vec::new(),
        assert: Default::default(),
        stream_output: false,
        console_on_terminal: false,
        write_sidecar: true,
        deadline_override: None,
    };
    let out = runner::run(&req).expect("the run");
    let c = &out.collected;
    let why = format!(
        "reasons {:#?}\nlogs {:#?}\nconsole {:?}",
        out.reasons(),
        c.logs,
        out.console_log
    );

    // Every step opened and closed, no op failed.
    let shape: Vec<(u16, StepPhase)> = c.stimuli.iter().map(|s| (s.step_index, s.phase)).collect();
    let want: Vec<(u16, StepPhase)> = (1..=4)
        .flat_map(|k| [(k, StepPhase::Start), (k, StepPhase::End)])
        .collect();
    assert_eq!(shape, want, "{why}");
    for s in &c.stimuli {
        assert!(s.op_errors.is_empty(), "{:?}\n{why}", s.op_errors);
    }
    assert_eq!(
        c.stimuli[4].op_kinds,
        ["unfreeze", "move_tasks", "spawn_workers"]
    );
    assert_eq!(c.stimuli[7].workers, 10);

    // Every worker reported, with work done and nothing gone wrong inside it.
    let end = c.scenario_end.as_ref().expect("ScenarioEnd");
    assert_eq!(
        (end.workers_started, end.workers_reported),
        (10, 10),
        "{why}"
    );
    assert!(end.aborted.is_none(), "{end:?}");
    let by: BTreeMap<(String, u32), &WorkerReport> = c
        .workers
        .iter()
        .map(|w| ((w.group.clone(), w.index), w))
        .collect();
    for w in by.values() {
        assert!(w.work_units > 0, "{w:#?}");
        assert!(w.errors.is_empty(), "{w:#?}");
        assert!(
            w.cpu_time_ns > 0 && w.wall_time_ns >= w.cpu_time_ns,
            "{w:#?}"
        );
        assert_eq!(w.off_cpu_ns, w.wall_time_ns - w.cpu_time_ns);
        assert!(w.run_count > 0, "{w:#?}");
    }
    let w = |g: &str, i: u32| by[&(g.to_string(), i)];

    // Freeze: the capped worker could not run for the frozen quarter (750 ms).
    let capped = w("capped", 0);
    assert!(capped.max_gap_ns >= 600_000_000, "{capped:#?}");
    // MoveTasks: the Mixed worker ended in `dst`, and was pinned with it.
    let mixed = w("mixed", 0);
    assert_eq!(mixed.cgroup, "dst", "{mixed:#?}");
    assert_eq!(mixed.allowed_cpus, [0], "{mixed:#?}");
    assert!(mixed.timer_samples_total > 0, "{mixed:#?}");
    // SpawnWorkers: a futex pair in `dst` (indices continue after its first worker).
    for i in [1, 2] {
        let f = w("dst", i);
        assert_eq!(f.work_type, "FutexPingPong");
        assert!(f.wake_samples_total > 0, "{f:#?}");
        assert!(f.started_at_ms >= c.stimuli[4].elapsed_ms, "{f:#?}");
        assert_eq!(f.allowed_cpus, [0], "{f:#?}");
    }
    // SetCpuset on an AffinityChurn worker: it ends allowed on the cpuset only, after
    // visiting both CPUs.
    let churn = w("churn", 0);
    assert_eq!(churn.allowed_cpus, [1], "{churn:#?}");
    assert!(
        churn.migrations > 0 && churn.cpus_used.len() == 2,
        "{churn:#?}"
    );
    assert!((-5..=19).contains(&w("nice", 0).nice));
    for (g, name) in [
        ("io", "IoSyncWrite"),
        ("cache", "CachePressure"),
        ("fork", "ForkExit"),
        ("dst", "YieldHeavy"),
    ] {
        assert_eq!(w(g, 0).work_type, name);
    }

    // Monitor: run-queue length, clock and schedstat for both CPUs in every sample.
    assert!(!c.monitor_samples.is_empty());
    for s in &c.monitor_samples {
        assert_eq!(s.cpus.len(), 2);
        for cpu in &s.cpus {
            assert!(
                cpu.nr_running.is_some() && cpu.rq_clock_ns.is_some(),
                "{cpu:?}"
            );
            assert!(cpu.schedstat.is_some(), "{cpu:?}");
        }
        assert!(s.psi_cpu.is_some());
    }
    let first = &c.monitor_samples[0].cpus[0];
    let last = &c.monitor_samples[c.monitor_samples.len() - 1].cpus[0];
    assert!(last.rq_clock_ns > first.rq_clock_ns);
    assert!(
        last.schedstat.map(|s| s.pcount) > first.schedstat.map(|s| s.pcount),
        "{first:?} {last:?}"
    );

    // Snapshots: all of them, and cpu.max throttled the capped cgroup.
    assert_eq!(c.snapshots.len(), 5);
    let find = |snap: &ktstr_wire::msg::Snapshot, name: &str| {
        snap.cgroups
            .iter()
            .find(|g| g.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {snap:#?}"))
    };
    let cg = find(&c.snapshots[4], "capped");
    assert!(cg.nr_throttled.is_some_and(|n| n > 0), "{cg:#?}");
    assert!(cg.usage_usec.is_some_and(|u| u > 0), "{cg:#?}");
    assert_eq!(cg.populated, Some(true));
    // The cpuset change shows in the snapshots taken after step 4 started (the plan
    // spreads them over the planned time; ops push steps later, so there may be none).
    let pinned_at = c.stimuli[6].elapsed_ms;
    let after: Vec<_> = c
        .snapshots
        .iter()
        .filter(|s| s.elapsed_ms > pinned_at + 50)
        .collect();
    for s in after {
        assert_eq!(find(s, "churn").cpus_effective.as_deref(), Some("1"));
    }
    eprintln!(
        "{} samples, monitor cost {} us; first futex wake sample {:?} ns; capped gap {} ms",
        c.monitor_samples.len(),
        end.monitor_cpu_us,
        w("dst", 1).wake_latency_ns.first(),
        capped.max_gap_ns / 1_000_000
    );
}
