//! A fully populated sidecar: every optional field set, every list non-empty, every
//! nested type present. Readers and tools test against it; it also shows what a rich
//! result looks like.

use std::collections::BTreeMap;

use crate::host::{DelayacctState, Engine, HostContext, HostHeapState, KvmBacking, XacctState};
use crate::kvm::KvmStatsTotals;
use crate::monitor::{
    BpfMapFieldValue, MonitorSummary, ProgStatsDelta, SchedDomainLbDelta, SchedstatDeltas,
    ScxEventDeltas,
};
use crate::payload::{Metric, MetricStream, PayloadMetrics, Polarity};
use crate::perf_delta::PerfDeltaAssertionRecord;
use crate::sidecar::{ResolveSource, RunSource, SidecarResult};
use crate::stats::{
    CgroupStats, PhaseBucket, PhaseCgroupStats, PlatStats, ScenarioStats, SchbenchPhaseStats,
    TaobenchPhaseStats, TaobenchStats, WORST_P99_WAKE_LATENCY_US, WORST_RUN_DELAY_US,
};
use crate::stimulus::StimulusEvent;
use crate::verifier::ProgVerifierStats;

fn map<V: Clone>(pairs: &[(&str, V)]) -> BTreeMap<String, V> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn cgroup(name: &str, cpus: &[usize], iterations: u64) -> CgroupStats {
    CgroupStats {
        cgroup_name: name.into(),
        num_workers: 4,
        cpus_used: cpus.iter().copied().collect(),
        num_cpus: cpus.len(),
        avg_off_cpu_pct: Some(12.5),
        min_off_cpu_pct: Some(10.25),
        max_off_cpu_pct: Some(14.75),
        spread: Some(4.5),
        max_gap_ms: 38,
        max_gap_cpu: cpus[0],
        total_migrations: 17,
        migration_ratio: 17.0 / iterations as f64,
        p99_wake_latency_us: 180.5,
        median_wake_latency_us: 21.0,
        wake_latency_cv: 0.62,
        wake_measured: true,
        median_timer_latency_us: 55.0,
        p99_timer_latency_us: 410.0,
        p999_timer_latency_us: 890.0,
        worst_timer_latency_us: 1210.0,
        timer_measured: true,
        total_iterations: iterations,
        total_cpu_time_ns: 3_950_000_000,
        mean_run_delay_us: 33.25,
        worst_run_delay_us: 2400.0,
        run_delay_measured: true,
        page_locality: 0.97,
        cross_node_migration_ratio: 0.01,
        taobench_whole: Some(taobench_counters()),
        ext_metrics: map(&[("yield_count", 3.0)]),
    }
}

fn taobench_counters() -> TaobenchStats {
    TaobenchStats {
        get_cmds: 1000,
        get_misses: 50,
        fast_ops: 900,
        slow_ops: 100,
        elapsed_ns: 2_000_000_000,
    }
}

fn histogram(at_us: usize, samples: u32) -> PlatStats {
    let mut h = PlatStats::default();
    h.plat[at_us] = samples;
    h.nr_samples = samples.into();
    h.max = at_us as u32;
    h.min = at_us as u32;
    h
}

fn phase_cgroup(iterations: u64) -> PhaseCgroupStats {
    PhaseCgroupStats {
        num_workers: 4,
        cpus_used: [0, 1].into(),
        wake_latencies_ns: vec![18_000, 21_000, 180_500],
        wake_sample_total: 3,
        timer_latencies_ns: vec![55_000, 410_000],
        timer_sample_total: 2,
        run_delays_ns: vec![31_000, 35_500],
        off_cpu_pcts: vec![10.25, 14.75],
        total_migrations: 9,
        total_iterations: iterations,
        total_cpu_time_ns: 1_975_000_000,
        numa_pages_local: 970,
        numa_pages_total: 1000,
        cross_node_migrated: 10,
        max_gap_ms: 38,
        max_gap_cpu: 1,
        stripped: false,
        metrics: map(&[("p99_wake_latency_us", 180.5)]),
        schbench: Some(SchbenchPhaseStats {
            wakeup: histogram(20, 8),
            request: histogram(150, 6),
            rps: histogram(400, 3),
            msg_run_delay_ns: 120_000,
            msg_pcount: 40,
            worker_run_delay_ns: 340_000,
            worker_pcount: 800,
            loop_count: 1200,
        }),
        taobench: Some(TaobenchPhaseStats {
            counters: taobench_counters(),
            serve_lat: histogram(60, 8),
        }),
    }
}

/// A sidecar with every field populated (a passing `scx_lavd` run on `2n2l2c2t`).
pub fn fully_populated() -> SidecarResult {
    let cg0 = cgroup("cg0", &[0, 1, 2, 3], 40_000);
    let cg1 = cgroup("cg1", &[4, 5, 6, 7], 38_500);
    let mut per_vcpu = Vec::new();
    for v in 0..8u64 {
        per_vcpu.push(map(&[
            ("exits", 120_000 + v),
            ("halt_exits", 4_000),
            ("halt_successful_poll", 100),
            ("halt_attempted_poll", 400),
            ("halt_wait_ns", 900_000_000),
            ("preemption_reported", 0),
            ("signal_exits", 2),
            ("hypercalls", 0),
        ]));
    }
    SidecarResult {
        test_name: "steady_two_cgroups".into(),
        topology: "2n2l2c2t".into(),
        scheduler: "scx_lavd".into(),
        scheduler_commit: Some("0123abc".into()),
        resolve_source: Some(ResolveSource::PathLookup),
        project_commit: Some("abc1234-dirty".into()),
        payload: Some("schbench".into()),
        metrics: vec![PayloadMetrics {
            payload_index: 0,
            metrics: vec![
                Metric {
                    name: "wakeup_latency.p99".into(),
                    value: 87.25,
                    polarity: Polarity::LowerBetter,
                    unit: "us".into(),
                    stream: MetricStream::Stderr,
                },
                Metric {
                    name: "rps".into(),
                    value: 10_234.5,
                    polarity: Polarity::HigherBetter,
                    unit: "req/s".into(),
                    stream: MetricStream::Stdout,
                },
                Metric {
                    name: "util_pct".into(),
                    value: 80.0,
                    polarity: Polarity::TargetValue(75.0),
                    unit: "%".into(),
                    stream: MetricStream::Stdout,
                },
            ],
            exit_code: 0,
            payload: "schbench".into(),
        }],
        passed: true,
        skipped: false,
        inconclusive: false,
        expected_failure: false,
        stats: ScenarioStats {
            total_workers: 8,
            total_cpus: 8,
            total_migrations: 34,
            worst_spread: 4.5,
            worst_gap_ms: 38,
            worst_gap_cpu: 4,
            worst_migration_ratio: cg1.migration_ratio,
            total_iterations: cg0.total_iterations + cg1.total_iterations,
            ext_metrics: map(&[
                ("throughput_cv", 0.031),
                (WORST_P99_WAKE_LATENCY_US, 180.5),
                (WORST_RUN_DELAY_US, 2400.0),
            ]),
            phases: vec![
                PhaseBucket {
                    step_index: 0,
                    label: PhaseBucket::label_for(0),
                    start_ms: 0,
                    end_ms: 1000,
                    sample_count: 10,
                    metrics: map(&[("iterations_per_sec", 7_000.0)]),
                    per_cgroup: map(&[("cg0", phase_cgroup(7_000))]),
                },
                PhaseBucket {
                    step_index: 1,
                    label: PhaseBucket::label_for(1),
                    start_ms: 1000,
                    end_ms: 11_000,
                    sample_count: 100,
                    metrics: map(&[("iterations_per_sec", 7_150.0)]),
                    per_cgroup: map(&[
                        ("cg0", phase_cgroup(33_000)),
                        ("cg1", phase_cgroup(38_500)),
                    ]),
                },
            ],
            cgroups: vec![cg0, cg1],
            verdict_details: vec![
                "monitor: imbalance 2.1 above 2.0 for 1 sample (report only)".into(),
            ],
        },
        monitor: Some(MonitorSummary {
            total_samples: 110,
            max_imbalance_ratio: 2.1,
            max_local_dsq_depth: 3,
            stuck_count: 0,
            avg_imbalance_ratio: 1.1,
            avg_nr_running: 1.02,
            avg_local_dsq_depth: 0.4,
            avg_irq_util: Some(3.5),
            max_avg_irq_util: Some(12.0),
            psi_irq_full_avg10: Some(0.0),
            total_irq_pressure_us: Some(1500.0),
            event_deltas: Some(ScxEventDeltas::from_counters(
                [
                    ("SCX_EV_SELECT_CPU_FALLBACK", 12),
                    ("SCX_EV_DISPATCH_KEEP_LAST", 0),
                ],
                11.0,
                5,
            )),
            schedstat_deltas: Some(SchedstatDeltas {
                total_run_delay: 52_000_000,
                total_pcount: 90_000,
                total_sched_count: 95_000,
                total_yld_count: 10,
                total_sched_goidle: 4_000,
                total_ttwu_count: 60_000,
                total_ttwu_local: 20_000,
                total_schedstat_wall_sec: 11.0,
            }),
            sched_domain_lb: Some(vec![SchedDomainLbDelta {
                level: "MC".into(),
                lb_count: 320,
                lb_failed: 12,
                lb_gained: 4,
                lb_imbalance_load: 2048,
                lb_imbalance_util: 512,
                lb_imbalance_task: 3,
                lb_imbalance_misfit: 0,
                alb_count: 1,
                alb_pushed: 1,
            }]),
            prog_stats_deltas: Some(vec![ProgStatsDelta::new(
                "lavd_enqueue",
                80_000,
                24_000_000,
            )]),
            bpf_map_fields: Some(vec![BpfMapFieldValue {
                key: "lavd_avg_lat_cri".into(),
                value: 12.5,
                is_counter: false,
            }]),
            psi_cpu_some_avg10: Some(1.5),
            violations: vec!["imbalance 2.1 > 2.0 at 4.2 s".into()],
        }),
        periodic_fired: 2,
        periodic_target: 2,
        vcpus: 8,
        cpu_budget: 2,
        stimulus_events: vec![
            StimulusEvent {
                elapsed_ms: 1000,
                label: "StepStart[0]".into(),
                op_kind: Some("ops=1".into()),
                detail: Some("steady: 1 ops [set_cpuset]; 2 cgroups, 8 workers".into()),
                total_iterations: Some(7_000),
                step_index: Some(1),
                is_terminal: false,
                is_step_end: false,
            },
            StimulusEvent {
                elapsed_ms: 11_000,
                label: "StepEnd[0]".into(),
                op_kind: Some("ops=1".into()),
                detail: Some("steady: 1 ops [set_cpuset]; 2 cgroups, 8 workers".into()),
                total_iterations: Some(78_500),
                step_index: Some(1),
                is_terminal: false,
                is_step_end: true,
            },
            StimulusEvent {
                elapsed_ms: 11_000,
                label: "ScenarioEnd".into(),
                op_kind: None,
                detail: None,
                total_iterations: Some(78_500),
                step_index: None,
                is_terminal: true,
                is_step_end: false,
            },
        ],
        work_type: "SpinWait".into(),
        verifier_stats: vec![
            ProgVerifierStats {
                name: "lavd_enqueue".into(),
                verified_insns: 41_234,
            },
            ProgVerifierStats {
                name: "lavd_dispatch".into(),
                verified_insns: 98_001,
            },
        ],
        kvm_stats: Some(KvmStatsTotals { per_vcpu }),
        sysctls: vec!["sysctl.kernel.sched_rr_timeslice_ms=50".into()],
        kargs: vec!["nosoftlockup".into(), "mitigations=off".into()],
        kernel_version: Some("7.2.13+deb14-cloud-amd64".into()),
        kernel_commit: Some("fedcba9".into()),
        timestamp: "2026-05-07T09:08:07Z".into(),
        run_id: "20260507T090800Z-3".into(),
        host: Some(HostContext {
            cpu_model: Some("AMD EPYC 9654".into()),
            cpu_vendor: Some("AuthenticAMD".into()),
            total_memory_kib: Some(24_576_000),
            hugepages_total: Some(0),
            hugepages_free: Some(0),
            hugepages_size_kib: Some(2048),
            thp_enabled: Some("madvise".into()),
            thp_defrag: Some("madvise".into()),
            sched_tunables: Some(map(&[("sched_rr_timeslice_ms", "100".to_string())])),
            online_cpus: Some(2),
            numa_nodes: Some(1),
            cpufreq_governor: [
                (0, "performance".to_string()),
                (1, "performance".to_string()),
            ]
            .into(),
            kernel_name: Some("Linux".into()),
            kernel_release: Some("6.18.44".into()),
            arch: Some("x86_64".into()),
            kernel_cmdline: Some("console=ttyS0".into()),
            task_delayacct: Some(DelayacctState::On),
            config_task_xacct: Some(XacctState::On),
            heap_state: Some(HostHeapState {
                active_bytes: Some(8_388_608),
                allocated_bytes: Some(6_291_456),
                resident_bytes: Some(12_582_912),
                mapped_bytes: Some(16_777_216),
                narenas: Some(4),
            }),
            kvm: Some(KvmBacking::Pvm),
            engine: Some(Engine::Kvm),
            start: Some(crate::GuestStart::Cold),
        }),
        cleanup_duration_ms: Some(41),
        run_source: Some(RunSource::Ci),
        perf_delta_assertions: vec![PerfDeltaAssertionRecord {
            metric: "wakeup_latency.p99".into(),
            direction: Some(Polarity::LowerBetter),
            max_regression_pct: Some(10.0),
            min_abs: Some(5.0),
            phase: Some(1),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::{parse_sidecar, read_sidecar};
    use serde_json::Value;
    use std::path::Path;

    /// No null and no empty list anywhere: the fixture exercises every type. (The
    /// terminal `ScenarioEnd` event has no step, op or detail by definition.)
    fn assert_fully_populated(v: &Value, at: &str) {
        if at.starts_with(".stimulus_events[2].") {
            return;
        }
        match v {
            Value::Null => panic!("null at {at}"),
            Value::Array(a) => {
                assert!(!a.is_empty(), "empty list at {at}");
                for (i, x) in a.iter().enumerate() {
                    assert_fully_populated(x, &format!("{at}[{i}]"));
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    assert_fully_populated(x, &format!("{at}.{k}"));
                }
            }
            _ => {}
        }
    }

    #[test]
    fn fixture_has_no_null_and_no_empty_list() {
        let v = serde_json::to_value(fully_populated()).expect("ser");
        assert_fully_populated(&v, "");
    }

    #[test]
    fn fixture_is_accepted_by_the_reference_schema() {
        let r = crate::conformance::check_text(&fully_populated().to_json_pretty().unwrap())
            .expect("json");
        assert!(r.unexpected().is_empty(), "{r}");
        // Every documented extra key is exercised, and nothing else differs.
        assert_eq!(
            r.findings.len(),
            crate::conformance::EXTRA_KEYS.len(),
            "{r}"
        );
    }

    #[test]
    fn fully_populated_round_trip() {
        let s = fully_populated();
        let json = s.to_json_pretty().expect("ser");
        let back = parse_sidecar(json.as_bytes(), Path::new("mem")).expect("parse");
        assert_eq!(back, s);
        // Through the file writer and reader too.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = s.write_to_dir(dir.path()).expect("write");
        assert_eq!(read_sidecar(&path).expect("read"), s);
        // And the bytes are stable: writing what was read gives the same text.
        assert_eq!(back.to_json_pretty().expect("ser"), json);
    }
}
