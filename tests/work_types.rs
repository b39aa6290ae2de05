//! Every work type, run on the default Debian kernel: one cgroup per work
//! type, grouped into three VMs by what they do to the machine, so no group blurs
//! another's numbers:
//!
//! - `work_type_wakers`: the types that sleep and wake (pairs, timers, locks, servers,
//!   periodic tasks); each must record the wake or timer latencies it claims.
//! - `work_type_busy`: CPU, memory, file and process churn, on two NUMA nodes so
//!   `NumaRemote` really binds its buffer to the other node.
//! - `work_type_classes`: the scheduling classes and nice levels, each RT hog and the
//!   idle spinner on a CPU of its own (an RT hog starves whatever shares its CPU, by
//!   design), the rest sharing CPU 0.
//!
//! Each runs twice: under EEVDF and under `scx_bpfland` (`*_bpfland`), the same checks.
//!
//! Each VM runs 2.4 s of workload. Only the not-stuck gate is on: these tests check
//! that every worker measured real, plausible data, not how fair the mix was.

use std::collections::BTreeSet;

use ktstr::prelude::*;

const DURATION: Duration = Duration::from_millis(2400);

/// One cgroup per work type, with a whole group of workers (two for the pairs).
fn one_cgroup_each(types: &[WorkType]) -> Scenario {
    types
        .iter()
        .fold(Scenario::new(), |s, w| {
            s.cgroup(
                CgroupDef::new(cgroup_name(w))
                    .workers(w.group_size())
                    .work(w.clone()),
            )
        })
        .step(Step::new("run", Hold::Fraction(1.0)))
}

fn cgroup_name(w: &WorkType) -> String {
    w.name().to_lowercase()
}

/// Only the not-stuck gate: every worker made progress.
fn progress_only() -> Assert {
    Assert {
        not_stuck: true,
        ..Assert::none()
    }
}

/// Every work type of `types` left reports with units, no errors (unless allowed) and
/// the latency samples it claims to measure; its cgroup is in the sidecar with real
/// numbers.
fn check_types(out: &RunOutcome, types: &[WorkType]) -> Result<(), String> {
    let s = &out.sidecar;
    if !s.is_pass() {
        return Err(format!("not a pass: {:#?}", s.stats.verdict_details));
    }
    for w in types {
        let name = w.name();
        let rs: Vec<_> = out
            .collected
            .workers
            .iter()
            .filter(|r| r.work_type == name)
            .collect();
        if rs.len() != w.group_size() as usize {
            return Err(format!("{name}: {} reports", rs.len()));
        }
        for r in &rs {
            let what = format!("{name}[{}]: {r:?}", r.index);
            if r.work_units == 0 || r.cpu_time_ns == 0 || r.wall_time_ns == 0 {
                return Err(format!("no work measured: {what}"));
            }
            if !r.errors.is_empty() {
                return Err(format!("errors: {what}"));
            }
            if w.measures_wake_latency()
                && (r.wake_samples_total == 0 || r.wake_latency_ns.is_empty())
            {
                return Err(format!("no wake latency samples: {what}"));
            }
            if w.measures_timer_latency() && r.timer_samples_total == 0 {
                return Err(format!("no timer latency samples: {what}"));
            }
            // A latency beyond the run itself is not a measurement.
            let run_ns = r.wall_time_ns.max(1);
            if let Some(bad) = r
                .wake_latency_ns
                .iter()
                .chain(&r.timer_latency_ns)
                .find(|&&v| v > run_ns)
            {
                return Err(format!("latency {bad} ns beyond the run: {what}"));
            }
        }
        let cg = s
            .stats
            .cgroup(&cgroup_name(w))
            .ok_or_else(|| format!("{name}: no cgroup stats in the sidecar"))?;
        if cg.total_iterations == 0 || cg.num_workers == 0 {
            return Err(format!("{name}: empty cgroup stats {cg:#?}"));
        }
        if w.measures_wake_latency() && !cg.wake_measured {
            return Err(format!("{name}: wake latency not summarised {cg:#?}"));
        }
        if w.measures_timer_latency() && !cg.timer_measured {
            return Err(format!("{name}: timer latency not summarised {cg:#?}"));
        }
        let units: u64 = rs.iter().map(|r| r.work_units).sum();
        eprintln!(
            "{name}: {units} units, p99 wake {:.0} us, p99 timer {:.0} us",
            cg.p99_wake_latency_us, cg.p99_timer_latency_us
        );
    }
    Ok(())
}

fn wakers() -> Vec<WorkType> {
    vec![
        WorkType::Mixed,
        WorkType::Bursty {
            burst_ms: 5,
            sleep_ms: 5,
        },
        WorkType::PipeIo,
        WorkType::FutexPingPong,
        WorkType::TimerLatency { interval_us: 1000 },
        WorkType::LockConvoy {
            threads: 4,
            hold_us: 20,
        },
        WorkType::PeriodicDuty {
            run_us: 2000,
            period_us: 10_000,
        },
        WorkType::TimerStorm {
            threads: 8,
            interval_us: 100,
        },
        WorkType::UnixSocketPingPong,
        WorkType::SignalPingPong,
        WorkType::EpollServer {
            clients: 4,
            pool: 2,
            work_us: 50,
        },
        WorkType::ThreadBurst {
            burst_us: 500,
            gap_ms: 5,
        },
    ]
}

fn busy() -> Vec<WorkType> {
    vec![
        WorkType::SpinWait,
        WorkType::YieldHeavy,
        WorkType::IoSyncWrite,
        WorkType::CachePressure { kib: 1024 },
        WorkType::ForkExit,
        WorkType::NiceSweep,
        WorkType::AffinityChurn,
        WorkType::ThreadChurn,
        WorkType::ForkExec,
        WorkType::PageFault { kib: 1024 },
        WorkType::MemBandwidth { kib: 4096 },
        WorkType::NumaRemote { kib: 2048 },
        WorkType::TmpfsFsync { kib: 64 },
        WorkType::YieldSpinLock { threads: 4 },
        // The runtime itself, which exits at once with this argument.
        WorkType::Command {
            path: "/init".into(),
            args: vec![EXIT_AT_ONCE_ARG.into()],
        },
    ]
}

fn classes() -> Vec<WorkType> {
    vec![
        WorkType::FifoHog { priority: 1 },
        WorkType::RrHog { priority: 1 },
        WorkType::IdleBackground,
        WorkType::BatchBackground,
        WorkType::MixedNice,
    ]
}

#[ktstr_test(
    llcs = 2,
    cores = 2,
    memory_mib = 1024,
    scheduler = "scx_bpfland",
    kargs = ["sched_ext.slice_bypass_us=5000"]
)]
fn work_type_wakers_bpfland(ctx: &TestCtx) -> TestSpec {
    wakers_spec(ctx)
}

#[ktstr_test(
    numa_nodes = 2,
    llcs = 2,
    cores = 2,
    memory_mib = 1024,
    scheduler = "scx_bpfland",
    kargs = ["sched_ext.slice_bypass_us=5000"]
)]
fn work_type_busy_bpfland(ctx: &TestCtx) -> TestSpec {
    busy_spec(ctx)
}

#[ktstr_test(
    llcs = 2,
    cores = 2,
    memory_mib = 1024,
    scheduler = "scx_bpfland",
    kargs = ["sched_ext.slice_bypass_us=5000"]
)]
fn work_type_classes_bpfland(ctx: &TestCtx) -> TestSpec {
    classes_spec(ctx)
}

#[ktstr_test(llcs = 2, cores = 2, memory_mib = 1024)]
fn work_type_wakers(ctx: &TestCtx) -> TestSpec {
    wakers_spec(ctx)
}

fn wakers_spec(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
        .scenario(one_cgroup_each(&wakers()))
        .assert(progress_only())
        .duration(DURATION)
        .check(|out: &RunOutcome| check_types(out, &wakers()))
}

#[ktstr_test(numa_nodes = 2, llcs = 2, cores = 2, memory_mib = 1024)]
fn work_type_busy(ctx: &TestCtx) -> TestSpec {
    busy_spec(ctx)
}

fn busy_spec(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
        .scenario(one_cgroup_each(&busy()))
        .assert(progress_only())
        .duration(DURATION)
        .check(|out: &RunOutcome| check_types(out, &busy()))
}

#[ktstr_test(llcs = 2, cores = 2, memory_mib = 1024)]
fn work_type_classes(ctx: &TestCtx) -> TestSpec {
    classes_spec(ctx)
}

fn classes_spec(ctx: &TestCtx) -> TestSpec {
    // CPU 3: the FIFO hog; CPU 2: the RR hog; CPU 1: the idle spinner; CPU 0: batch
    // and five workers at five nice levels.
    let on = |cpu: u32| CpusetSpec::Cpus(vec![cpu]);
    let scenario = Scenario::new()
        .cgroup(
            CgroupDef::new("fifohog")
                .cpuset(on(3))
                .work(WorkType::FifoHog { priority: 1 }),
        )
        .cgroup(
            CgroupDef::new("rrhog")
                .cpuset(on(2))
                .work(WorkType::RrHog { priority: 1 }),
        )
        .cgroup(
            CgroupDef::new("idlebackground")
                .cpuset(on(1))
                .work(WorkType::IdleBackground),
        )
        .cgroup(
            CgroupDef::new("batchbackground")
                .cpuset(on(0))
                .work(WorkType::BatchBackground),
        )
        .cgroup(
            CgroupDef::new("mixednice")
                .cpuset(on(0))
                .workers(5)
                .work(WorkType::MixedNice),
        )
        .step(Step::new("run", Hold::Fraction(1.0)));
    ctx.spec()
        .scenario(scenario)
        .assert(progress_only())
        .duration(DURATION)
        .check(|out: &RunOutcome| {
            let single: Vec<WorkType> = classes()
                .into_iter()
                .filter(|w| *w != WorkType::MixedNice)
                .collect();
            check_types(out, &single)?;
            // Five nice levels in one cgroup, and the lowest nice got the most work.
            let mut mixed: Vec<_> = out
                .collected
                .workers
                .iter()
                .filter(|r| r.work_type == "MixedNice")
                .collect();
            let nices: BTreeSet<i32> = mixed.iter().map(|r| r.nice).collect();
            if nices != BTreeSet::from([-5, 0, 5, 10, 19])
                || mixed.iter().any(|r| r.work_units == 0)
            {
                return Err(format!("MixedNice: {mixed:#?}"));
            }
            mixed.sort_by_key(|r| r.nice);
            if mixed[0].work_units <= mixed[4].work_units {
                return Err(format!("nice -5 did no more than nice 19: {mixed:#?}"));
            }
            Ok(())
        })
}
