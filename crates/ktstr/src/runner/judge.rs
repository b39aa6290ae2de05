//! Step 5 of a run, judge: every check of [`crate::assert`] on one attempt — the
//! scheduler's first (they usually explain the rest), then the run's, then the
//! payloads' — and the sidecar settled from them. The verdict is what the checks say
//! ([`Checks::outcome`], [`Checks::details`]); nothing else decides it.

use ktstr_sidecar::SidecarResult;

use super::boot::Attempt;
use super::measure::Measured;
use super::prepare::PreparedRun;
use crate::assert::run::{check_run, Evidence};
use crate::assert::{payload, scheduler, Checks};

/// One attempt judged: its sidecar filled and settled (after `expect_err`), and every
/// check of its verdict, passes included.
#[derive(Debug)]
pub struct Judged {
    pub sidecar: SidecarResult,
    pub checks: Checks,
}

/// Judge `attempt` as `measured`; its sidecar is the run's identity with what was
/// measured and the verdict.
pub fn judge(run: &PreparedRun, attempt: &Attempt, measured: &Measured) -> Judged {
    let req = &run.req;
    let data = &attempt.data;
    let mut sidecar = run.sidecar.clone();
    measured.record(&mut sidecar, attempt);

    let mut checks = Checks::default();
    checks.extend(scheduler::check_scheduler(
        &run.scheduler,
        &data.scheduler_events,
        data.done.is_some(),
    ));
    checks.extend(
        check_run(&Evidence {
            spec: &req.spec,
            topology: req.topology,
            assert: &req.assert,
            data,
            measured,
            engine: &attempt.engine,
            console_log: &run.console_log,
        })
        .list,
    );
    let payloads = payload::check_payloads(
        &req.payloads,
        &req.spec,
        &data.payload_results,
        data.scenario_end.as_ref(),
    );
    checks.extend(payloads.checks);

    sidecar.metrics = payloads.metrics;
    sidecar.verifier_stats = crate::scheduler::verifier_stats(&data.verifier_stats);
    sidecar.stats.verdict_details = checks.details();
    sidecar.finalize(checks.outcome(), req.expect_err);
    Judged { sidecar, checks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use ktstr_sidecar::Outcome;
    use ktstr_wire::msg::{MonitorSample, StepPhase, Stimulus};
    use ktstr_wire::spec::GuestSpec;

    use crate::assert::workers::tests::report;
    use crate::assert::{Assert, Gate};
    use crate::engine::EngineKind;
    use crate::engine::{EngineReport, GuestExit};
    use crate::kernel::ResolvedKernel;
    use crate::runner::collect::Collected;
    use crate::runner::collect::{Done, Ready};
    use crate::runner::measure::measure;
    use crate::runner::RunRequest;
    use crate::scenario::{CgroupDef, CpusetSpec, Hold, Scenario, Step};
    use ktstr_wire::msg::{CpuSample, ScenarioEnd, SeenCpu, SeenTopology, Snapshot};

    const TOPO: &str = "1n2l1c1t";

    fn scenario() -> Scenario {
        Scenario::new()
            .settle_ms(200)
            .cgroup(
                CgroupDef::new("packed")
                    .cpuset(CpusetSpec::Cpus(vec![1]))
                    .workers(2),
            )
            .cgroup(CgroupDef::new("free").workers(1))
            .step(Step::new("first", Hold::Millis(1000)))
            .step(Step::new("second", Hold::Millis(1000)))
    }

    fn request(s: Scenario, snapshots: u32) -> RunRequest {
        let mut spec = GuestSpec::new("t", 2400);
        spec.scenario = Some(s);
        spec.num_snapshots = snapshots;
        RunRequest {
            test_name: "t".into(),
            topology: TOPO.parse().unwrap(),
            memory_mib: 512,
            cpu_budget: None,
            kernel: ResolvedKernel::unbootable("7.2.13"),
            engine: EngineKind::QemuTcg,
            spec,
            scheduler: "eevdf".into(),
            sysctls: vec![],
            kargs: vec![],
            includes: vec![],
            payloads: vec![],
            expect_err: false,
            perf_delta_assertions: vec![],
            assert: Assert::default(),
            stream_output: false,
            console_on_terminal: false,
            write_sidecar: false,
            deadline_override: None,
        }
    }

    fn stim(k: u16, phase: StepPhase, at: u64, iters: u64, packed: u64) -> Stimulus {
        Stimulus {
            elapsed_ms: at,
            step_index: k,
            phase,
            label: format!("s{k}"),
            op_count: 0,
            op_kinds: vec![],
            cgroups: 2,
            workers: 3,
            iterations_so_far: iters,
            cgroup_iterations: [
                ("packed".to_string(), packed),
                ("free".to_string(), iters - packed),
            ]
            .into(),
            op_errors: vec![],
        }
    }

    fn sample(at: u64, nr: [u32; 2]) -> MonitorSample {
        MonitorSample {
            elapsed_ms: at,
            cpus: (0..2)
                .map(|c| CpuSample {
                    cpu: c,
                    nr_running: Some(nr[c as usize]),
                    rq_clock_ns: Some(at * 1_000_000 + 5),
                    schedstat: None,
                })
                .collect(),
            scx: None,
            psi_cpu: None,
            psi_irq: None,
        }
    }

    /// A clean run of [`scenario`]: the guest saw the topology, both steps ran, packed's
    /// two workers shared CPU 1 and free's one had CPU 0.
    fn clean_run() -> Collected {
        let cpus = (0..2)
            .map(|c| SeenCpu {
                cpu: c,
                core_id: 0,
                package_id: c,
                llc_id: c,
                node: 0,
            })
            .collect();
        let mut p0 = report("packed", 0, 500, 1100, 2200);
        p0.cpus_used = vec![1];
        let mut p1 = report("packed", 1, 480, 1050, 2200);
        p1.cpus_used = vec![1];
        let mut f0 = report("free", 0, 1000, 2200, 2200);
        f0.cpus_used = vec![0];
        Collected {
            ready: Some(Ready {
                kernel_release: "7.2.13".into(),
                uptime_ms: 3000,
                topology: SeenTopology::derive("0-1".into(), cpus),
                host_ms: 8000,
            }),
            workers: vec![p0, p1, f0],
            stimuli: vec![
                stim(1, StepPhase::Start, 200, 100, 50),
                stim(1, StepPhase::End, 1200, 900, 450),
                stim(2, StepPhase::Start, 1201, 900, 450),
                stim(2, StepPhase::End, 2201, 1980, 980),
            ],
            monitor_samples: (0..22).map(|i| sample(i * 100, [1, 2])).collect(),
            snapshots: (0..2)
                .map(|i| Snapshot {
                    index: i,
                    target: 2,
                    elapsed_ms: 800 + 800 * u64::from(i),
                    cgroups: vec![],
                    cpus: vec![],
                    scx: None,
                })
                .collect(),
            scenario_end: Some(ScenarioEnd {
                elapsed_ms: 2300,
                steps_completed: 2,
                workers_started: 3,
                workers_reported: 3,
                monitor_samples: 22,
                snapshots_taken: 2,
                monitor_cpu_us: 0,
                aborted: None,
            }),
            done: Some(Done {
                exit_code: 0,
                elapsed_ms: 2400,
            }),
            ..Collected::default()
        }
    }

    fn engine_ok() -> EngineReport {
        EngineReport {
            exit: GuestExit::Reset,
            vcpus: 2,
            cpu_budget: 2,
            host_cpus: vec![0, 1],
            kvm_stats: None,
            start: crate::engine::GuestStart::Cold,
            snapshot: None,
        }
    }

    /// Measure and run the run checks (no scheduler, no payloads).
    fn judge(req: &RunRequest, data: &Collected) -> (Measured, Checks) {
        judge_with(req, data, &engine_ok())
    }

    fn judge_with(req: &RunRequest, data: &Collected, engine: &EngineReport) -> (Measured, Checks) {
        let m = measure(&req.spec, &req.topology, &req.assert, data);
        let v = check_run(&Evidence {
            spec: &req.spec,
            topology: req.topology,
            assert: &req.assert,
            data,
            measured: &m,
            engine,
            console_log: Path::new("/nonexistent"),
        });
        (m, v)
    }

    #[test]
    fn clean_run_passes_and_fills_every_sidecar_field() {
        let req = request(scenario(), 2);
        let (m, v) = judge(&req, &clean_run());
        assert_eq!(v.outcome(), Outcome::Pass, "{:#?}", v.details());
        assert!(v.details().is_empty(), "{:?}", v.details());
        for gate in [
            Gate::Topology,
            Gate::NotStuck,
            Gate::MaxGap,
            Gate::Isolation,
            Gate::Snapshots,
        ] {
            assert_eq!(v.gate_outcome(gate), Outcome::Pass, "{gate}");
        }

        // Stats: plan order, real numbers, off-CPU spread in percentage points.
        let s = &m.stats;
        assert_eq!(s.total_workers, 3);
        assert_eq!(s.total_iterations, 1980);
        assert_eq!(s.total_cpus, 2);
        let packed = s.cgroup("packed").unwrap();
        assert_eq!(packed.num_workers, 2);
        assert_eq!(packed.num_cpus, 1, "the CPUs it used");
        assert_eq!(packed.cpus_used, [1].into());
        assert_eq!(packed.total_iterations, 980);
        assert_eq!(packed.total_cpu_time_ns, 2_150_000_000);
        let spread = packed.spread.unwrap();
        assert!((spread - 50.0 / 22.0).abs() < 1e-9, "{spread}");
        assert!((packed.ext_metrics["work_rate"] - 980.0 / 2.15).abs() < 1e-9);
        let free = s.cgroup("free").unwrap();
        assert_eq!(free.num_cpus, 1);
        assert_eq!(free.spread, None, "one worker");
        assert_eq!(s.cgroups[0].cgroup_name, "packed", "plan order");
        // Schedstat was read (each worker ran): run delays measured; no sleeper, so no
        // wake-up or timer latency, and the run-level worst values say so by absence.
        assert!(packed.run_delay_measured && !packed.wake_measured && !packed.timer_measured);
        assert_eq!(packed.p99_wake_latency_us, 0.0);
        assert_eq!(s.worst_run_delay_us(), Some(0.0));
        assert_eq!(s.worst_p99_wake_latency_us(), None);
        assert_eq!((s.worst_gap_ms, s.worst_gap_cpu), (5, 0));

        // Phases: the settle baseline, then one per step, from the stimulus counters.
        let ph: Vec<(u16, &str, u64, u64, Option<u64>)> = s
            .phases
            .iter()
            .map(|p| {
                (
                    p.step_index,
                    p.label.as_str(),
                    p.start_ms,
                    p.end_ms,
                    p.total_iterations(),
                )
            })
            .collect();
        assert_eq!(
            ph,
            [
                (0, "BASELINE", 0, 200, Some(100)),
                (1, "Step[0]", 200, 1200, Some(800)),
                (2, "Step[1]", 1201, 2201, Some(1080))
            ]
        );
        let p1 = s.phase(1).unwrap();
        let pc: Vec<(&str, u64, usize)> = p1
            .per_cgroup
            .iter()
            .map(|(n, c)| (n.as_str(), c.total_iterations, c.num_workers))
            .collect();
        assert_eq!(pc, [("free", 400, 1), ("packed", 400, 2)]);
        assert_eq!(p1.sample_count, 10);
        assert_eq!(p1.metrics["avg_imbalance_ratio"], 2.0);

        // Timeline: the reference's labels (0-based step ordinal), then ScenarioEnd.
        let ev: Vec<(&str, Option<u16>, bool, bool)> = m
            .stimulus_events
            .iter()
            .map(|e| (e.label.as_str(), e.step_index, e.is_step_end, e.is_terminal))
            .collect();
        assert_eq!(
            ev,
            [
                ("StepStart[0]", Some(1), false, false),
                ("StepEnd[0]", Some(1), true, false),
                ("StepStart[1]", Some(2), false, false),
                ("StepEnd[1]", Some(2), true, false),
                ("ScenarioEnd", None, false, true),
            ]
        );
        assert_eq!(m.stimulus_events[1].total_iterations, Some(900));
        assert_eq!(m.stimulus_events[0].op_kind.as_deref(), Some("ops=0"));
        let end = &m.stimulus_events[4];
        assert_eq!((end.elapsed_ms, end.total_iterations), (2300, Some(1980)));
        assert_eq!(
            (end.op_kind.as_deref(), end.detail.as_deref()),
            (None, None)
        );
        assert!(m.stimulus_events[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("2 cgroups, 3 workers"));
        let (mon, _) = m.monitor.as_ref().unwrap();
        assert_eq!(mon.total_samples, 22);
        assert_eq!(mon.max_imbalance_ratio, 2.0);
        assert_eq!((m.periodic_fired, m.periodic_target), (2, 2));
    }

    #[test]
    fn a_worker_off_its_cpuset_fails_isolation() {
        let req = request(scenario(), 0);
        let mut data = clean_run();
        data.workers[1].cpus_used = vec![0, 1];
        let (_, v) = judge(&req, &data);
        assert_eq!(v.outcome(), Outcome::Fail);
        assert_eq!(v.gate_outcome(Gate::Isolation), Outcome::Fail);
        assert!(
            v.details()
                .iter()
                .any(|r| r.contains("packed[1] pid 101 ran on CPU 0")),
            "{:?}",
            v.details()
        );
    }

    #[test]
    fn a_broken_scenario_run_fails_with_reasons() {
        let req = request(scenario(), 2);
        let mut data = clean_run();
        data.stimuli.pop();
        data.stimuli[0].op_errors = vec!["set_cpuset packed: EINVAL".into()];
        data.snapshots.pop();
        if let Some(e) = data.scenario_end.as_mut() {
            e.steps_completed = 1;
        }
        let (m, v) = judge(&req, &data);
        assert_eq!(v.outcome(), Outcome::Fail);
        let text = v.details().join("\n");
        assert!(text.contains("1 of 2 steps completed"), "{text}");
        assert!(
            text.contains("[run] step 2: no step-end event arrived"),
            "{text}"
        );
        assert!(
            text.contains("ops failed: set_cpuset packed: EINVAL"),
            "{text}"
        );
        assert!(
            text.contains("inconclusive [snapshots] guest: 1 of 2"),
            "{text}"
        );
        assert_eq!(m.periodic_fired, 1);
        assert!(m.stimulus_events[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("failed: set_cpuset"));
    }

    #[test]
    fn snapshot_indexes_are_counted_once_and_within_the_target() {
        let req = request(scenario(), 2);
        let mut data = clean_run();
        let dup = data.snapshots[0].clone();
        let mut stray = dup.clone();
        stray.index = 7;
        data.snapshots = vec![dup.clone(), dup, stray];
        let (m, v) = judge(&req, &data);
        assert_eq!(m.periodic_fired, 1);
        assert_eq!(v.gate_outcome(Gate::Snapshots), Outcome::Inconclusive);
    }

    #[test]
    fn zero_work_everywhere_fails_not_stuck_and_ratios_are_zero() {
        let req = request(scenario(), 0);
        let mut data = clean_run();
        for w in &mut data.workers {
            w.work_units = 0;
        }
        let (m, v) = judge(&req, &data);
        assert_eq!(v.outcome(), Outcome::Fail);
        assert_eq!(v.of(Gate::NotStuck).count(), 3);
        // No work units: no ratio, written as the reference's 0.0 (never null).
        assert_eq!(m.stats.cgroups[0].migration_ratio, 0.0);
        assert_eq!(m.stats.worst_migration_ratio, 0.0);
    }

    #[test]
    fn a_guest_that_never_got_ready_fails_without_judging_workers() {
        let req = request(scenario(), 0);
        let data = Collected::default();
        let (m, v) = judge(&req, &data);
        assert_eq!(v.outcome(), Outcome::Fail);
        assert_eq!(v.list.len(), 1, "{v:#?}");
        assert!(v.details()[0].contains("never reported ready"));
        // How the VM ended, so a guest that died before ready says how.
        assert!(
            v.details()[0].contains("(the VM ended by the guest reset itself"),
            "{:?}",
            v.details()
        );
        assert!(m.monitor.is_none());
        assert_eq!(
            m.stats.cgroups.len(),
            2,
            "declared cgroups are listed, empty"
        );
    }

    #[test]
    fn a_triple_fault_fails_the_run_only_before_the_guest_reported_done() {
        let req = request(scenario(), 2);
        let fault = EngineReport {
            exit: GuestExit::TripleFault(
                "vCPU 1: KVM_EXIT_SHUTDOWN (triple fault) at RIP 0xffffffff81000000".into(),
            ),
            ..engine_ok()
        };
        let (_, v) = judge_with(&req, &clean_run(), &fault);
        assert_eq!(v.outcome(), Outcome::Pass, "a reboot after done: {v:#?}");
        let mut died = clean_run();
        died.done = None;
        let (_, v) = judge_with(&req, &died, &fault);
        assert_eq!(v.outcome(), Outcome::Fail);
        assert!(
            v.details().iter().any(|d| d.contains(
                "triple-faulted before its run ended: vCPU 1: KVM_EXIT_SHUTDOWN (triple fault) at RIP 0xffffffff81000000"
            )),
            "{:#?}",
            v.details()
        );
    }

    #[test]
    fn a_failed_guest_runtime_is_quoted() {
        let req = request(scenario(), 0);
        let mut data = clean_run();
        data.done = Some(Done {
            exit_code: 1,
            elapsed_ms: 10,
        });
        data.logs.push((
            ktstr_wire::msg::LogLevel::Error,
            "starting `cat` (is it in the initramfs?): No such file or directory".into(),
        ));
        let (_, v) = judge(&req, &data);
        assert!(
            v.details().iter().any(|r| r
                .contains("exit code 1: starting `cat` (is it in the initramfs?): No such file")),
            "{:#?}",
            v.details()
        );
    }

    #[test]
    fn topology_mismatch_fails() {
        let mut req = request(scenario(), 0);
        req.topology = "1n1l2c1t".parse().unwrap();
        let (_, v) = judge(&req, &clean_run());
        assert_eq!(v.gate_outcome(Gate::Topology), Outcome::Fail);
    }

    #[test]
    fn sched_ext_event_rates_are_per_delivered_cpu_second() {
        let req = request(scenario(), 0);
        let mut data = clean_run();
        for (i, smp) in data.monitor_samples.iter_mut().enumerate() {
            let i = i as u64;
            for c in &mut smp.cpus {
                c.schedstat = Some(ktstr_wire::msg::CpuSchedstat {
                    rq_cpu_time_ns: i * 50_000_000,
                    ..Default::default()
                });
            }
            smp.scx = Some(ktstr_wire::msg::ScxSample {
                state: "enabled".into(),
                ops: Some("s".into()),
                events: [("SCX_EV_DISPATCH_KEEP_LAST".to_string(), i * 3)].into(),
            });
        }
        let (m, _) = judge(&req, &data);
        // 22 samples, 21 intervals: 2 CPUs x 50 ms each = 2.1 s delivered, 63 events.
        let ext = &m.stats.ext_metrics;
        assert!((ext["delivered_cpu_s"] - 2.1).abs() < 1e-9, "{ext:?}");
        assert!((ext["scx_rate_per_cpu_s.SCX_EV_DISPATCH_KEEP_LAST"] - 30.0).abs() < 1e-9);
        let (mon, _) = m.monitor.as_ref().unwrap();
        let ev = mon.event_deltas.as_ref().unwrap();
        assert_eq!(ev.total_dispatch_keep_last, 63);
        // Events were sampled from 0 to 2100 ms.
        assert!((ev.keep_last_rate - 30.0).abs() < 1e-9, "{ev:?}");
    }

    /// What the runner puts into a sidecar from a measured run — stats with phases,
    /// monitor with sched_ext and schedstat deltas, the timeline — is read by the
    /// reference's reader.
    #[test]
    fn measured_sidecars_are_read_by_the_reference() {
        let req = request(scenario(), 2);
        let mut data = clean_run();
        for (i, smp) in data.monitor_samples.iter_mut().enumerate() {
            let i = i as u64;
            for c in &mut smp.cpus {
                c.schedstat = Some(ktstr_wire::msg::CpuSchedstat {
                    rq_cpu_time_ns: i * 50_000_000,
                    run_delay_ns: i * 1000,
                    pcount: i,
                    ..Default::default()
                });
            }
            smp.scx = Some(ktstr_wire::msg::ScxSample {
                state: "enabled".into(),
                ops: Some("s".into()),
                events: [("SCX_EV_SELECT_CPU_FALLBACK".to_string(), i)].into(),
            });
        }
        data.workers[2].wake_latency_ns = vec![10_000, 20_000, 30_000];
        data.workers[2].wake_samples_total = 3;
        let (m, v) = judge(&req, &data);
        let mut s = ktstr_sidecar::SidecarResult::new_run("t", TOPO, "eevdf");
        s.stats = m.stats.clone();
        s.monitor = m.monitor.as_ref().map(|(x, _)| x.clone());
        s.stimulus_events = m.stimulus_events.clone();
        s.stats.verdict_details = v.details();
        s.finalize(v.outcome(), false);
        let mon = s.monitor.as_ref().unwrap();
        assert!(mon.event_deltas.is_some() && mon.schedstat_deltas.is_some());
        assert!(s.stats.cgroup("free").unwrap().wake_measured);
        assert_eq!(s.stats.worst_p99_wake_latency_us(), Some(30.0));
        let report = ktstr_sidecar::conformance::check_value(&s);
        assert!(report.accepted(), "{report}");
        assert!(report.unexpected().is_empty(), "{report}");
    }

    #[test]
    fn worker_errors_are_noted_without_failing() {
        let req = request(scenario(), 0);
        let mut data = clean_run();
        data.workers[2].errors = vec!["sched_setaffinity: EINVAL".into()];
        let (_, v) = judge(&req, &data);
        assert_eq!(v.outcome(), Outcome::Pass, "{:?}", v.details());
        assert!(
            v.details()[0].contains("note: sched_setaffinity: EINVAL"),
            "{:?}",
            v.details()
        );
    }
}
