//! The scenario ops and per-worker settings in real VMs, on EEVDF and on `scx_bpfland`,
//! checked against what the kernel did:
//!
//! - `ops_cgroups_and_workers` (and `_bpfland`): per-worker policy, nice, affinity,
//!   memory policy, thread name and uid/gid; mid-run nice and policy changes, the
//!   cpu/memory/io/pids knobs, a sysctl write, dropped caches, a worker stopped early,
//!   and a CPU taken offline and back (the monitor sees it leave `/proc/schedstat`;
//!   EEVDF only, see `ops_cgroups_and_workers_bpfland`);
//! - `ops_cgroup_changes` (and `_bpfland`): cgroups added, removed, frozen and thawed,
//!   cpusets set, cleared and swapped, affinity set, tasks moved, workers spawned, and
//!   payloads run, started, waited for and killed;
//! - `ops_scheduler_transitions`: `scx_bpfland` restarted, detached, attached again and
//!   replaced by `ktstr-stall`, each gap measured into the sidecar.
//!
//! Every op must succeed (no step reports an op error) and the run must pass.

use std::collections::BTreeSet;

use ktstr::prelude::*;
use ktstr_wire::msg::{StepPhase, WorkerReport};
use ktstr_wire::sched::SchedEvent;

/// Only the not-stuck gate: workers made progress (these tests check what the ops did).
fn progress_only() -> Assert {
    Assert {
        not_stuck: true,
        ..Assert::none()
    }
}

fn no_op_errors(out: &RunOutcome) -> Result<(), String> {
    let errors: Vec<&String> = out
        .collected
        .stimuli
        .iter()
        .flat_map(|s| &s.op_errors)
        .collect();
    if !errors.is_empty() {
        return Err(format!("op errors: {errors:#?}"));
    }
    if !out.sidecar.is_pass() {
        return Err(format!(
            "not a pass: {:#?}",
            out.sidecar.stats.verdict_details
        ));
    }
    Ok(())
}

fn reports<'a>(out: &'a RunOutcome, group: &str) -> Vec<&'a WorkerReport> {
    let mut v: Vec<_> = out
        .collected
        .workers
        .iter()
        .filter(|r| r.group == group)
        .collect();
    v.sort_by_key(|r| r.index);
    v
}

/// When step `index` started, in the scenario's clock.
fn step_start(out: &RunOutcome, index: u16) -> Option<u64> {
    out.collected
        .stimuli
        .iter()
        .find(|s| s.step_index == index && s.phase == StepPhase::Start)
        .map(|s| s.elapsed_ms)
}

/// `hotplug`: step 3 takes CPU 3 offline and step 4 brings it back (else both hold).
fn cgroups_scenario(hotplug: bool) -> Scenario {
    let fifth = Hold::Fraction(0.2);
    let offline = Step::new("cpu 3 offline", fifth);
    let offline = if hotplug {
        offline.op(Op::OfflineCpus {
            cpus: CpusetSpec::Cpus(vec![3]),
        })
    } else {
        offline
    };
    let back = Step::new("cpu 3 back, one worker stops", fifth);
    let back = if hotplug {
        back.op(Op::OnlineCpus {
            cpus: CpusetSpec::Cpus(vec![3]),
        })
    } else {
        back
    };
    Scenario::new()
        .cgroup(
            CgroupDef::new("pinned").workers(2).work(
                WorkSpec::new(WorkType::SpinWait)
                    .policy(SchedPolicy::Batch)
                    .affinity(CpusetSpec::Cpus(vec![1]))
                    .comm("kt-pinned")
                    .user(65534, 65534),
            ),
        )
        .cgroup(
            CgroupDef::new("tuned")
                .cpuset(CpusetSpec::Disjoint { index: 1, of: 2 })
                .workers(2)
                .work(WorkType::SpinWait),
        )
        .cgroup(CgroupDef::new("mem").workers(1).work(
            WorkSpec::new(WorkType::PageFault { kib: 1024 }).mem_policy(MemPolicy::Preferred(0)),
        ))
        .step(Step::new("baseline", fifth))
        .step(
            Step::new("knobs", fifth)
                .op(Op::SetNice {
                    cgroup: "tuned".into(),
                    nice: 10,
                })
                .op(Op::SetPolicy {
                    cgroup: "tuned".into(),
                    policy: SchedPolicy::Idle,
                })
                .op(Op::SetCpuWeight {
                    cgroup: "tuned".into(),
                    weight: 50,
                })
                .op(Op::SetCpuMax {
                    cgroup: "tuned".into(),
                    max: Some(CpuMax {
                        quota_us: 20_000,
                        period_us: 100_000,
                    }),
                })
                .op(Op::SetMemoryMax {
                    cgroup: "mem".into(),
                    bytes: Some(256 << 20),
                })
                .op(Op::SetIoWeight {
                    cgroup: "mem".into(),
                    weight: 50,
                })
                .op(Op::SetPidsMax {
                    cgroup: "mem".into(),
                    max: Some(64),
                })
                .op(Op::WriteSysctl {
                    key: "kernel.sched_rt_runtime_us".into(),
                    value: "900000".into(),
                })
                .op(Op::DropCaches),
        )
        .step(offline)
        .step(
            back.op(Op::StopWorkers {
                cgroup: "tuned".into(),
                count: 1,
            })
            .op(Op::SetCpuMax {
                cgroup: "tuned".into(),
                max: None,
            }),
        )
        .step(Step::new("end", fifth))
}

fn check_cgroups(out: &RunOutcome, hotplug: bool) -> Result<(), String> {
    no_op_errors(out)?;
    // Per-worker settings: batch policy, pinned to CPU 1, as uid nobody, no errors.
    let pinned = reports(out, "pinned");
    if pinned.len() != 2 {
        return Err(format!("pinned: {pinned:#?}"));
    }
    for r in &pinned {
        if r.policy.as_deref() != Some("batch") || r.cpus_used != [1] || !r.errors.is_empty() {
            return Err(format!("pinned worker settings not in force: {r:#?}"));
        }
    }
    let mem = reports(out, "mem");
    if mem.len() != 1 || mem[0].work_units == 0 || !mem[0].errors.is_empty() {
        return Err(format!("mem worker: {mem:#?}"));
    }
    // Mid-run changes reached every worker: nice 10 under SCHED_IDLE; the newest one
    // was stopped a step early.
    let tuned = reports(out, "tuned");
    if tuned.len() != 2 {
        return Err(format!("tuned: {tuned:#?}"));
    }
    for r in &tuned {
        if r.nice != 10 || r.policy.as_deref() != Some("idle") {
            return Err(format!("set_nice/set_policy not in force: {r:#?}"));
        }
        if r.cpus_used.iter().any(|c| *c < 2) {
            return Err(format!("tuned ran outside its disjoint half (2-3): {r:#?}"));
        }
    }
    let step5 = step_start(out, 5).ok_or("no step 5")?;
    if tuned[1].ended_at_ms > step5 || tuned[0].ended_at_ms < step5 {
        return Err(format!(
            "stop_workers: index 1 should end before step 5 ({step5} ms) and index 0 after: {tuned:#?}"
        ));
    }
    if !hotplug {
        return Ok(());
    }
    // Hotplug: CPU 3 left /proc/schedstat while offline and came back.
    let (off_at, on_at) = (
        step_start(out, 3).ok_or("no step 3")?,
        step_start(out, 4).ok_or("no step 4")?,
    );
    // CPU 3 as each monitor sample in (from, to) saw it: true = online.
    let cpu3_online = |from: u64, to: u64| -> Vec<bool> {
        out.collected
            .monitor_samples
            .iter()
            .filter(|s| s.elapsed_ms > from && s.elapsed_ms < to)
            .filter_map(|s| s.cpus.iter().find(|c| c.cpu == 3))
            .map(|c| c.schedstat.is_some())
            .collect()
    };
    let count = |v: &[bool]| {
        let online = v.iter().filter(|&&on| on).count();
        (online, v.len() - online)
    };
    let (before, during, after) = (
        cpu3_online(0, off_at),
        cpu3_online(off_at, on_at),
        cpu3_online(on_at, u64::MAX),
    );
    // Taking a CPU down or up takes a while after its step starts (longer under TCG), so
    // a window may open with samples of the old state; once the new state shows, it must
    // hold to the window's end.
    let settles = |v: &[bool], online: bool| {
        let first = v.iter().position(|&on| on == online);
        first.is_some_and(|i| v[i..].iter().all(|&on| on == online))
    };
    let (before_n, during_n, after_n) = (count(&before), count(&during), count(&after));
    eprintln!(
        "cpu 3 (online, offline) samples: before {before_n:?}, during {during_n:?}, after {after_n:?}"
    );
    if before_n.0 == 0 || !settles(&during, false) || !settles(&after, true) {
        let (before, during, after) = (before_n, during_n, after_n);
        return Err(format!(
            "CPU 3 hotplug not seen by the monitor: before {before:?}, during {during:?}, after {after:?}"
        ));
    }
    Ok(())
}

#[ktstr_test(llcs = 2, cores = 2, memory_mib = 1024, duration_s = 5)]
fn ops_cgroups_and_workers(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
        .scenario(cgroups_scenario(true))
        .assert(progress_only())
        .check(|out: &RunOutcome| check_cgroups(out, true))
}

#[ktstr_test(
    llcs = 2,
    cores = 2,
    memory_mib = 1024,
    duration_s = 5,
    scheduler = "scx_bpfland",
    kargs = ["sched_ext.slice_bypass_us=5000"]
)]
fn ops_cgroups_and_workers_bpfland(ctx: &TestCtx) -> TestSpec {
    // No hotplug here: scx_bpfland 1.1.4 exits on a CPU going offline and restarts
    // itself (the supervisor records that as a `hotplug_restart` transition), but on
    // this kernel under TCG its watchdog then ejected it for a stall 5 s later
    // (docs/reliability.md); hotplug under sched_ext is left to a test of its own.
    ctx.spec()
        .scenario(cgroups_scenario(false))
        .assert(progress_only())
        .check(|out: &RunOutcome| check_cgroups(out, false))
}

#[ktstr_test(
    llcs = 2,
    cores = 1,
    memory_mib = 1024,
    duration_s = 6,
    scheduler = "scx_bpfland",
    kargs = ["sched_ext.slice_bypass_us=5000"]
)]
fn ops_scheduler_transitions(ctx: &TestCtx) -> TestSpec {
    let hold = Hold::Fraction(0.2);
    let scenario = Scenario::new()
        .cgroup(CgroupDef::new("load").workers(2).work(WorkType::Mixed))
        .step(Step::new("baseline", hold))
        .step(Step::new("restart", hold).op(Op::RestartScheduler))
        .step(Step::new("detached", hold).op(Op::DetachScheduler))
        .step(Step::new("attached", hold).op(Op::AttachScheduler))
        .step(Step::new("replaced", hold).op(Op::ReplaceScheduler {
            scheduler: Some("ktstr-stall".into()),
            args: Vec::new(),
        }));
    ctx.spec()
        .scenario(scenario)
        .assert(progress_only())
        .check(|out: &RunOutcome| {
            no_op_errors(out)?;
            let transitions: Vec<(&str, Option<&str>, u64)> = out
                .collected
                .scheduler_events
                .iter()
                .filter_map(|e| match e {
                    SchedEvent::Transition {
                        op,
                        scheduler,
                        gap_ms,
                        ..
                    } => Some((op.as_str(), scheduler.as_deref(), *gap_ms)),
                    _ => None,
                })
                .collect();
            let ops: Vec<&str> = transitions.iter().map(|t| t.0).collect();
            if ops
                != [
                    "restart_scheduler",
                    "detach_scheduler",
                    "attach_scheduler",
                    "replace_scheduler",
                ]
            {
                return Err(format!("transitions: {transitions:?}"));
            }
            if transitions.last().and_then(|t| t.1) != Some("ktstr-stall") {
                return Err(format!(
                    "the replacement is not ktstr-stall: {transitions:?}"
                ));
            }
            // Four attaches: the first, the restart, the re-attach and the replacement.
            let attached: BTreeSet<String> = out
                .collected
                .scheduler_events
                .iter()
                .filter_map(|e| match e {
                    SchedEvent::Attached { ops, .. } => Some(ops.clone()),
                    _ => None,
                })
                .collect();
            let attaches = out
                .collected
                .scheduler_events
                .iter()
                .filter(|e| matches!(e, SchedEvent::Attached { .. }))
                .count();
            if attaches != 4 || !attached.contains("ktstr_stall") {
                return Err(format!("{attaches} attaches of {attached:?}"));
            }
            let ext = &out.sidecar.stats.ext_metrics;
            for op in ["restart_scheduler", "replace_scheduler", "attach_scheduler"] {
                let gap = ext
                    .get(&format!("scheduler_gap_ms.{op}"))
                    .copied()
                    .unwrap_or(0.0);
                if gap <= 0.0 {
                    return Err(format!("no gap measured for {op}: {ext:#?}"));
                }
                eprintln!("{op}: gap {gap} ms");
            }
            if ext.get("scheduler_transitions") != Some(&4.0) {
                return Err(format!("scheduler_transitions: {ext:#?}"));
            }
            Ok(())
        })
}

/// `/bin/sleep` as a payload (coreutils, on every host).
fn sleeper(name: &str, secs: &str) -> Payload {
    Payload::new(name, "/bin/sleep").args([secs])
}

fn cgroup_changes_scenario() -> Scenario {
    let hold = Hold::Fraction(0.15);
    Scenario::new()
        .cgroup(CgroupDef::new("a").workers(2).work(WorkType::SpinWait))
        .cgroup(
            CgroupDef::new("b")
                .cpuset(CpusetSpec::Llc(1))
                .workers(2)
                .work(WorkType::Mixed),
        )
        .step(Step::new("baseline", hold))
        .step(
            Step::new("add, pin, start", hold)
                .op(Op::AddCgroup(
                    CgroupDef::new("c")
                        .cpuset(CpusetSpec::Overlap {
                            index: 0,
                            of: 2,
                            percent: 50,
                        })
                        .workers(1)
                        .work(WorkType::YieldHeavy),
                ))
                .op(Op::SetCpuset {
                    cgroup: "a".into(),
                    cpuset: CpusetSpec::Llc(0),
                })
                .op(Op::SetAffinity {
                    cgroup: "b".into(),
                    cpus: CpusetSpec::Cpus(vec![3]),
                })
                .op(Op::StartPayload {
                    name: "long".into(),
                })
                .op(Op::StartPayload {
                    name: "short".into(),
                }),
        )
        .step(
            Step::new("swap, freeze, run", hold)
                .op(Op::SwapCpusets {
                    a: "a".into(),
                    b: "b".into(),
                })
                .op(Op::Freeze { cgroup: "c".into() })
                .op(Op::RunPayload {
                    name: "quick".into(),
                }),
        )
        .step(
            Step::new("thaw, move, spawn, wait", hold)
                .op(Op::Unfreeze { cgroup: "c".into() })
                .op(Op::MoveTasks {
                    from: "c".into(),
                    to: "a".into(),
                })
                .op(Op::SpawnWorkers {
                    cgroup: "b".into(),
                    count: 2,
                    work: WorkType::FutexPingPong.into(),
                })
                .op(Op::WaitPayload {
                    name: "short".into(),
                }),
        )
        .step(
            Step::new("clear, remove, kill", hold)
                .op(Op::ClearCpuset { cgroup: "a".into() })
                .op(Op::RemoveCgroup { cgroup: "c".into() })
                .op(Op::KillPayload {
                    name: "long".into(),
                }),
        )
        .step(Step::new("end", hold))
}

fn cgroup_changes(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
        .scenario(cgroup_changes_scenario())
        .payload(sleeper("long", "60").check(PayloadCheck::ExitCode(-9)))
        .payload(sleeper("short", "0.2"))
        .payload(sleeper("quick", "0.1"))
        .assert(progress_only())
        .check(|out: &RunOutcome| {
            no_op_errors(out)?;
            let w = &out.collected.workers;
            // 2 + 2 started, 1 added, 2 spawned; every one reported.
            if w.len() != 7 {
                return Err(format!("{} worker reports: {w:#?}", w.len()));
            }
            // The moved worker ended in `a`; the spawned pair ran in `b`.
            let moved = reports(out, "c");
            if moved.len() != 1 || moved[0].cgroup != "a" {
                return Err(format!("the worker moved from c to a: {moved:#?}"));
            }
            let spawned: Vec<_> = w
                .iter()
                .filter(|r| r.work_type == "FutexPingPong")
                .collect();
            if spawned.len() != 2 || spawned.iter().any(|r| r.wake_samples_total == 0) {
                return Err(format!("spawned pair: {spawned:#?}"));
            }
            // Every payload ran: quick and short to exit 0, long killed by its op.
            let results = &out.collected.payload_results;
            let by = |n: &str| results.iter().find(|r| r.name == n);
            for n in ["quick", "short"] {
                match by(n) {
                    Some(r) if r.exit_code == 0 => {}
                    other => return Err(format!("payload {n}: {other:#?}")),
                }
            }
            match by("long") {
                Some(r)
                    if r.exit_code == -9
                        && r.note.as_deref().is_some_and(|n| n.contains("KillPayload")) =>
                {
                    Ok(())
                }
                other => Err(format!(
                    "payload long was not killed by KillPayload: {other:#?}"
                )),
            }
        })
}

#[ktstr_test(llcs = 2, cores = 2, memory_mib = 1024, duration_s = 5)]
fn ops_cgroup_changes(ctx: &TestCtx) -> TestSpec {
    cgroup_changes(ctx)
}

#[ktstr_test(
    llcs = 2,
    cores = 2,
    memory_mib = 1024,
    duration_s = 5,
    scheduler = "scx_bpfland",
    kargs = ["sched_ext.slice_bypass_us=5000"]
)]
fn ops_cgroup_changes_bpfland(ctx: &TestCtx) -> TestSpec {
    cgroup_changes(ctx)
}
