//! A fully populated sidecar: every optional field set, every list non-empty, every
//! nested type present. Readers and tools test against it; it also shows what a rich
//! result looks like.

use std::collections::BTreeMap;

use crate::host::{Engine, HostContext, KvmBacking};
use crate::kvm::KvmStatsTotals;
use crate::monitor::{MonitorSummary, ProgStatsDelta, SchedstatDeltas};
use crate::payload::{Metric, MetricStream, PayloadMetrics, Polarity};
use crate::perf_delta::PerfDeltaAssertionRecord;
use crate::sidecar::{ResolveSource, RunSource, SidecarResult};
use crate::stats::{CgroupStats, PhaseStats, ScenarioStats};
use crate::stimulus::{StimulusEvent, StimulusKind};
use crate::verifier::ProgVerifierStats;

fn map<V: Clone>(pairs: &[(&str, V)]) -> BTreeMap<String, V> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn cgroup(name: &str, cpus: &[u32], iterations: u64) -> CgroupStats {
    CgroupStats {
        name: name.into(),
        num_workers: 4,
        num_cpus: cpus.len() as u32,
        cpus_used: cpus.to_vec(),
        total_iterations: iterations,
        total_cpu_time_ns: 3_950_000_000,
        total_migrations: 17,
        migration_ratio: 17.0 / iterations as f64,
        avg_off_cpu_pct: Some(12.5),
        min_off_cpu_pct: Some(10.25),
        max_off_cpu_pct: Some(14.75),
        spread: Some(4.5),
        max_gap_ms: 38,
        max_gap_cpu: Some(cpus[0]),
        median_wake_latency_us: Some(21.0),
        p99_wake_latency_us: Some(180.5),
        wake_latency_cv: Some(0.62),
        median_timer_latency_us: Some(55.0),
        p99_timer_latency_us: Some(410.0),
        worst_timer_latency_us: Some(1210.0),
        mean_run_delay_us: Some(33.3),
        worst_run_delay_us: Some(2400.0),
        page_locality: Some(0.97),
        cross_node_migration_ratio: Some(0.01),
        ext_metrics: map(&[("yield_count", 3.0)]),
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
            payload: "schbench".into(),
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
        }],
        passed: true,
        skipped: false,
        inconclusive: false,
        expected_failure: false,
        stats: ScenarioStats {
            total_workers: 8,
            total_cpus: 8,
            total_iterations: cg0.total_iterations + cg1.total_iterations,
            total_migrations: 34,
            worst_spread: Some(4.5),
            worst_gap_ms: 38,
            worst_gap_cpu: Some(4),
            worst_migration_ratio: cg1.migration_ratio,
            worst_p99_wake_latency_us: Some(180.5),
            worst_run_delay_us: Some(2400.0),
            ext_metrics: map(&[("throughput_cv", 0.031)]),
            phases: vec![
                PhaseStats {
                    step_index: 0,
                    label: "baseline".into(),
                    start_ms: 0,
                    end_ms: 1000,
                    total_iterations: 7_000,
                    cgroups: vec![cg0.clone()],
                    metrics: map(&[("iterations_per_sec", 7_000.0)]),
                },
                PhaseStats {
                    step_index: 1,
                    label: "step 1: steady".into(),
                    start_ms: 1000,
                    end_ms: 11_000,
                    total_iterations: 71_500,
                    cgroups: vec![cg0.clone(), cg1.clone()],
                    metrics: map(&[("iterations_per_sec", 7_150.0)]),
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
            avg_imbalance_ratio: 1.1,
            avg_nr_running: 1.02,
            max_local_dsq_depth: 3,
            avg_local_dsq_depth: 0.4,
            stuck_count: 0,
            psi_cpu_some_avg10: Some(1.5),
            psi_irq_full_avg10: Some(0.0),
            scx_events: Some(map(&[
                ("SCX_EV_SELECT_CPU_FALLBACK", 12u64),
                ("SCX_EV_DISPATCH_KEEP_LAST", 0),
            ])),
            schedstat: Some(SchedstatDeltas {
                run_delay_ns: 52_000_000,
                pcount: 90_000,
                sched_count: 95_000,
                yld_count: 10,
                sched_goidle: 4_000,
                ttwu_count: 60_000,
                ttwu_local: 20_000,
            }),
            prog_stats: vec![ProgStatsDelta {
                name: "lavd_enqueue".into(),
                cnt: 80_000,
                nsecs: 24_000_000,
            }],
            violations: vec!["imbalance 2.1 > 2.0 at 4.2 s".into()],
        }),
        periodic_fired: 2,
        periodic_target: 2,
        vcpus: 8,
        cpu_budget: 2,
        stimulus_events: vec![
            StimulusEvent {
                elapsed_ms: 1000,
                step_index: 1,
                kind: StimulusKind::StepStart,
                label: "StepStart[1]".into(),
                detail: "2 cgroups, 8 workers".into(),
                total_iterations: 7_000,
                is_terminal: false,
            },
            StimulusEvent {
                elapsed_ms: 11_000,
                step_index: 1,
                kind: StimulusKind::StepEnd,
                label: "StepEnd[1]".into(),
                detail: String::new(),
                total_iterations: 78_500,
                is_terminal: true,
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
            kernel_release: Some("6.18.44".into()),
            arch: Some("x86_64".into()),
            kernel_cmdline: Some("console=ttyS0".into()),
            sched_tunables: Some(map(&[("sched_rr_timeslice_ms", "100".to_string())])),
            online_cpus: Some(2),
            numa_nodes: Some(1),
            kvm: Some(KvmBacking::Pvm),
            engine: Some(Engine::Kvm),
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

    /// No null and no empty list anywhere: the fixture exercises every type.
    fn assert_fully_populated(v: &Value, at: &str) {
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
