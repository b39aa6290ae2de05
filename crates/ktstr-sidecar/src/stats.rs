//! `stats`: what the workers measured, per cgroup, for the whole run and per phase.
//!
//! The shapes are the reference's (ktstr 0.29.0 `ScenarioStats`, `CgroupStats`,
//! `PhaseBucket`, `PhaseCgroupStats` and the benchmark carriers), key for key and in
//! the same order. A number that was not measured is `0.0` (or `0`) with the
//! matching `*_measured` flag false, never `null`: the reference reads plain numbers
//! only. Run-level "worst" values without a field of their own live in `ext_metrics`
//! under their registry names ([`WORST_P99_WAKE_LATENCY_US`], ...), absent when no
//! cgroup measured them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize};

use crate::float::{finite, finite_map, finite_opt, finite_vec};

/// `ext_metrics` key: largest `p99_wake_latency_us` of a cgroup that measured wake-ups.
pub const WORST_P99_WAKE_LATENCY_US: &str = "worst_p99_wake_latency_us";
/// `ext_metrics` key: largest `worst_run_delay_us` of a cgroup (one worker's run delay).
pub const WORST_RUN_DELAY_US: &str = "worst_run_delay_us";

/// Numbers of each `stats.cgroups[]` entry that are `0.0` when not measured, with the
/// flag that says whether they were (`page_locality > 0` for the NUMA pair).
pub const CGROUP_MEASURED: &[(&str, &[&str])] = &[
    (
        "wake_measured",
        &[
            "median_wake_latency_us",
            "p99_wake_latency_us",
            "wake_latency_cv",
        ],
    ),
    (
        "timer_measured",
        &[
            "median_timer_latency_us",
            "p99_timer_latency_us",
            "p999_timer_latency_us",
            "worst_timer_latency_us",
        ],
    ),
    (
        "run_delay_measured",
        &["mean_run_delay_us", "worst_run_delay_us"],
    ),
    (
        "page_locality",
        &["page_locality", "cross_node_migration_ratio"],
    ),
];
/// Sidecar key `stats`: the scenario's worker measurements as evaluated on the host.
///
/// A skipped run carries `ScenarioStats::default()` (no cgroups, zeros).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScenarioStats {
    /// One entry per cgroup of the scenario, in creation order (whole-run numbers).
    pub cgroups: Vec<CgroupStats>,
    /// Workers over all cgroups.
    pub total_workers: usize,
    /// Sum of the cgroups' `num_cpus` (a CPU used by two cgroups counts twice).
    pub total_cpus: usize,
    /// CPU migrations of all workers.
    pub total_migrations: u64,
    /// Largest `spread` (percentage points of off-CPU time) of any cgroup; `0.0` when
    /// no cgroup measured one.
    #[serde(serialize_with = "finite")]
    pub worst_spread: f64,
    /// Longest gap between two work checkpoints of any worker, in milliseconds.
    pub worst_gap_ms: u64,
    /// Guest CPU of `worst_gap_ms` (`0` when no gap was measured).
    pub worst_gap_cpu: usize,
    /// Largest `migration_ratio` (migrations per work unit) of any cgroup.
    #[serde(serialize_with = "finite")]
    pub worst_migration_ratio: f64,
    /// Work units completed by all workers.
    pub total_iterations: u64,
    /// Further named run-level measurements (`name -> value`); a measurement that did
    /// not happen is a missing key.
    #[serde(serialize_with = "finite_map")]
    pub ext_metrics: BTreeMap<String, f64>,
    /// Per-phase numbers: phase 0 is the baseline (settle), phase `k` is step `k`.
    #[serde(default)]
    pub phases: Vec<PhaseBucket>,
    /// Extra key (ktstr): why the verdict is what it is, one line per check that
    /// failed, was inconclusive or skipped, in evaluation order. Empty for a clean pass.
    #[serde(default)]
    pub verdict_details: Vec<String>,
}

impl ScenarioStats {
    /// The whole-run stats of the cgroup called `name`.
    pub fn cgroup(&self, name: &str) -> Option<&CgroupStats> {
        self.cgroups.iter().find(|c| c.cgroup_name == name)
    }

    /// The stats of phase `step_index` (0 = baseline).
    pub fn phase(&self, step_index: u16) -> Option<&PhaseBucket> {
        self.phases.iter().find(|p| p.step_index == step_index)
    }

    /// Largest p99 wake-up latency of any cgroup, microseconds; None when no cgroup
    /// measured wake-ups.
    pub fn worst_p99_wake_latency_us(&self) -> Option<f64> {
        self.ext_metrics.get(WORST_P99_WAKE_LATENCY_US).copied()
    }

    /// Largest run delay of one worker, microseconds; None when not measured.
    pub fn worst_run_delay_us(&self) -> Option<f64> {
        self.ext_metrics.get(WORST_RUN_DELAY_US).copied()
    }
}

/// One cgroup's measurements over the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupStats {
    /// Cgroup name as declared in the scenario (relative to the test's root cgroup).
    pub cgroup_name: String,
    /// Workers in the cgroup.
    pub num_workers: usize,
    /// Guest CPUs its workers ran on, ascending.
    pub cpus_used: BTreeSet<usize>,
    /// `cpus_used.len()`.
    pub num_cpus: usize,
    /// Mean share of wall time a worker spent off-CPU, percent; null when no worker
    /// had wall time.
    #[serde(serialize_with = "finite_opt")]
    pub avg_off_cpu_pct: Option<f64>,
    /// Smallest off-CPU share of any worker, percent.
    #[serde(serialize_with = "finite_opt")]
    pub min_off_cpu_pct: Option<f64>,
    /// Largest off-CPU share of any worker, percent.
    #[serde(serialize_with = "finite_opt")]
    pub max_off_cpu_pct: Option<f64>,
    /// `max_off_cpu_pct - min_off_cpu_pct`: how unevenly the cgroup was served; null
    /// with fewer than two measured workers.
    #[serde(serialize_with = "finite_opt")]
    pub spread: Option<f64>,
    /// Longest gap between two work checkpoints of one worker, milliseconds.
    pub max_gap_ms: u64,
    /// Guest CPU of that gap (`0` when none was measured).
    pub max_gap_cpu: usize,
    /// CPU migrations of its workers.
    pub total_migrations: u64,
    /// Migrations per work unit (`0.0` when there were no work units).
    #[serde(serialize_with = "finite")]
    pub migration_ratio: f64,
    /// 99th percentile wake-up latency, microseconds (`0.0` unless `wake_measured`).
    #[serde(serialize_with = "finite")]
    pub p99_wake_latency_us: f64,
    /// Median wake-up latency, microseconds (`0.0` unless `wake_measured`).
    #[serde(serialize_with = "finite")]
    pub median_wake_latency_us: f64,
    /// Coefficient of variation of wake-up latency (stddev / mean; `0.0` unless
    /// `wake_measured`, and when the mean is 0).
    #[serde(serialize_with = "finite")]
    pub wake_latency_cv: f64,
    /// A worker of the cgroup recorded wake-up latencies.
    pub wake_measured: bool,
    /// Median timer (sleep overshoot) latency, microseconds (`0.0` unless
    /// `timer_measured`).
    #[serde(serialize_with = "finite")]
    pub median_timer_latency_us: f64,
    /// 99th percentile timer latency, microseconds.
    #[serde(serialize_with = "finite")]
    pub p99_timer_latency_us: f64,
    /// 99.9th percentile timer latency, microseconds.
    #[serde(serialize_with = "finite")]
    pub p999_timer_latency_us: f64,
    /// Largest timer latency, microseconds.
    #[serde(serialize_with = "finite")]
    pub worst_timer_latency_us: f64,
    /// A worker of the cgroup recorded timer latencies.
    pub timer_measured: bool,
    /// Work units completed.
    pub total_iterations: u64,
    /// CPU time its workers received, nanoseconds.
    pub total_cpu_time_ns: u64,
    /// Mean over its workers of each worker's total run-queue delay (schedstat
    /// `run_delay` over the run), microseconds.
    #[serde(serialize_with = "finite")]
    pub mean_run_delay_us: f64,
    /// Largest total run-queue delay of one worker, microseconds.
    #[serde(serialize_with = "finite")]
    pub worst_run_delay_us: f64,
    /// The cgroup had a worker whose run delay was read.
    pub run_delay_measured: bool,
    /// Fraction (0..=1) of the workers' pages on the NUMA nodes of their cpuset (`0.0`
    /// when no NUMA page data was collected).
    #[serde(serialize_with = "finite")]
    pub page_locality: f64,
    /// Fraction of pages that migrated across NUMA nodes (`0.0` without NUMA data).
    #[serde(serialize_with = "finite")]
    pub cross_node_migration_ratio: f64,
    /// Whole-run taobench counters; null for a cgroup that ran no taobench.
    pub taobench_whole: Option<TaobenchStats>,
    /// Further named measurements of this cgroup.
    #[serde(serialize_with = "finite_map")]
    pub ext_metrics: BTreeMap<String, f64>,
}

/// Numbers of one phase: the baseline (step 0) or one scenario step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseBucket {
    /// 0 = baseline (settle), `k` = step `k` (counted from 1; step `k` is the
    /// scenario's `k-1`-th step).
    pub step_index: u16,
    /// `BASELINE` for phase 0, `Step[k-1]` for phase `k`.
    pub label: String,
    /// Phase start, milliseconds since the scenario started.
    pub start_ms: u64,
    /// Phase end, milliseconds since the scenario started.
    pub end_ms: u64,
    /// Monitor samples taken inside the phase.
    pub sample_count: usize,
    /// Phase-level measurements by name; a missing key means no finite sample.
    #[serde(serialize_with = "finite_map")]
    pub metrics: BTreeMap<String, f64>,
    /// Per-cgroup raw components of the phase, by cgroup name (`{}` when none were
    /// captured).
    pub per_cgroup: BTreeMap<String, PhaseCgroupStats>,
}

impl PhaseBucket {
    /// The label of phase `step_index`: `BASELINE`, or `Step[k-1]` for step `k`.
    pub fn label_for(step_index: u16) -> String {
        match step_index {
            0 => "BASELINE".to_string(),
            k => format!("Step[{}]", k - 1),
        }
    }

    /// Length of the phase in milliseconds (0 if the stamps are inverted).
    pub fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }

    /// Work units completed in the phase by all cgroups; None when the phase carries
    /// no per-cgroup components.
    pub fn total_iterations(&self) -> Option<u64> {
        (!self.per_cgroup.is_empty()).then(|| {
            self.per_cgroup
                .values()
                .map(|c| c.total_iterations)
                .fold(0, u64::saturating_add)
        })
    }

    /// Work units per second of the phase; None for an empty phase or one without
    /// per-cgroup components.
    pub fn iterations_per_sec(&self) -> Option<f64> {
        let ms = self.duration_ms();
        let n = self.total_iterations()?;
        (ms > 0).then(|| n as f64 * 1000.0 / ms as f64)
    }
}

/// One cgroup's raw components over one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseCgroupStats {
    /// Workers of the cgroup that ran during the phase.
    pub num_workers: usize,
    /// Guest CPUs they ran on during the phase (empty when not captured per phase).
    pub cpus_used: BTreeSet<usize>,
    /// Wake-up latency samples of the phase, nanoseconds.
    pub wake_latencies_ns: Vec<u64>,
    /// Wake-ups counted in the phase (may exceed the samples kept).
    pub wake_sample_total: u64,
    /// Timer latency samples of the phase, nanoseconds.
    pub timer_latencies_ns: Vec<u64>,
    /// Timer wake-ups counted in the phase.
    pub timer_sample_total: u64,
    /// Run-queue delay per worker over the phase, nanoseconds.
    pub run_delays_ns: Vec<u64>,
    /// Off-CPU share per worker with wall time in the phase, percent.
    #[serde(serialize_with = "finite_vec")]
    pub off_cpu_pcts: Vec<f64>,
    /// CPU migrations in the phase.
    pub total_migrations: u64,
    /// Work units completed in the phase.
    pub total_iterations: u64,
    /// CPU time received in the phase, nanoseconds.
    pub total_cpu_time_ns: u64,
    /// Pages on the expected NUMA nodes.
    pub numa_pages_local: u64,
    /// Pages in total (denominator of locality and cross-node ratio).
    pub numa_pages_total: u64,
    /// Pages migrated across NUMA nodes.
    pub cross_node_migrated: u64,
    /// Longest gap between two work checkpoints in the phase, milliseconds.
    pub max_gap_ms: u64,
    /// Guest CPU of that gap.
    pub max_gap_cpu: usize,
    /// The raw sample lists were dropped (to bound the size) although samples existed.
    pub stripped: bool,
    /// Derived per-cgroup measurements of the phase, by name.
    #[serde(serialize_with = "finite_map")]
    pub metrics: BTreeMap<String, f64>,
    /// schbench's per-phase statistics; null unless the cgroup ran schbench.
    pub schbench: Option<SchbenchPhaseStats>,
    /// taobench's per-phase statistics; null unless the cgroup ran taobench.
    pub taobench: Option<TaobenchPhaseStats>,
}

/// taobench counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaobenchStats {
    pub get_cmds: u64,
    pub get_misses: u64,
    pub fast_ops: u64,
    pub slow_ops: u64,
    pub elapsed_ns: u64,
}

/// taobench over one phase: its counters and its serve-latency histogram.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaobenchPhaseStats {
    pub counters: TaobenchStats,
    pub serve_lat: PlatStats,
}

/// schbench over one phase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchbenchPhaseStats {
    /// Wake-up latency histogram.
    pub wakeup: PlatStats,
    /// Request latency histogram.
    pub request: PlatStats,
    /// Requests-per-second histogram.
    pub rps: PlatStats,
    pub msg_run_delay_ns: u64,
    pub msg_pcount: u64,
    pub worker_run_delay_ns: u64,
    pub worker_pcount: u64,
    pub loop_count: u64,
}

/// Buckets of a schbench-style latency histogram ([`PlatStats::plat`]).
pub const PLAT_BUCKETS: usize = 4864;

/// A schbench-style latency histogram: [`PLAT_BUCKETS`] counters (19 groups of 256;
/// a bucket below 512 is the value itself in microseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatStats {
    /// Exactly [`PLAT_BUCKETS`] counters; any other length is a read error.
    #[serde(deserialize_with = "plat_buckets")]
    pub plat: Vec<u32>,
    pub nr_samples: u64,
    pub max: u32,
    /// `0` = unset.
    pub min: u32,
}

impl Default for PlatStats {
    fn default() -> Self {
        PlatStats {
            plat: vec![0; PLAT_BUCKETS],
            nr_samples: 0,
            max: 0,
            min: 0,
        }
    }
}

fn plat_buckets<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<u32>, D::Error> {
    let v = Vec::<u32>::deserialize(de)?;
    if v.len() != PLAT_BUCKETS {
        return Err(serde::de::Error::invalid_length(
            v.len(),
            &"a histogram of exactly 4864 buckets",
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_rate_and_lookup() {
        let p = PhaseBucket {
            step_index: 1,
            label: PhaseBucket::label_for(1),
            start_ms: 1000,
            end_ms: 3000,
            per_cgroup: [
                (
                    "a".to_string(),
                    PhaseCgroupStats {
                        total_iterations: 300,
                        ..Default::default()
                    },
                ),
                (
                    "b".to_string(),
                    PhaseCgroupStats {
                        total_iterations: 200,
                        ..Default::default()
                    },
                ),
            ]
            .into(),
            ..Default::default()
        };
        assert_eq!(p.label, "Step[0]");
        assert_eq!(PhaseBucket::label_for(0), "BASELINE");
        assert_eq!(p.duration_ms(), 2000);
        assert_eq!(p.total_iterations(), Some(500));
        assert_eq!(p.iterations_per_sec(), Some(250.0));
        let empty = PhaseBucket {
            start_ms: 5,
            end_ms: 5,
            ..Default::default()
        };
        assert_eq!(empty.total_iterations(), None);
        assert_eq!(empty.iterations_per_sec(), None);

        let mut s = ScenarioStats {
            cgroups: vec![CgroupStats {
                cgroup_name: "cg0".into(),
                ..Default::default()
            }],
            phases: vec![p],
            ..Default::default()
        };
        assert!(s.cgroup("cg0").is_some());
        assert!(s.cgroup("cg1").is_none());
        assert_eq!(
            s.phase(1).and_then(PhaseBucket::total_iterations),
            Some(500)
        );
        assert!(s.phase(0).is_none());
        assert_eq!(s.worst_p99_wake_latency_us(), None);
        s.ext_metrics.insert(WORST_P99_WAKE_LATENCY_US.into(), 80.0);
        assert_eq!(s.worst_p99_wake_latency_us(), Some(80.0));
    }

    #[test]
    fn a_histogram_must_have_every_bucket() {
        let good = serde_json::to_string(&PlatStats::default()).unwrap();
        let back: PlatStats = serde_json::from_str(&good).unwrap();
        assert_eq!(back.plat.len(), PLAT_BUCKETS);
        let short = r#"{"plat":[1,2,3],"nr_samples":3,"max":3,"min":1}"#;
        let err = serde_json::from_str::<PlatStats>(short).unwrap_err();
        assert!(err.to_string().contains("4864"), "{err}");
    }

    #[test]
    fn unmeasured_numbers_are_written_as_zero_never_null() {
        let cg = CgroupStats {
            migration_ratio: f64::NAN,
            p99_wake_latency_us: f64::INFINITY,
            spread: Some(f64::NAN),
            ..Default::default()
        };
        let v = serde_json::to_value(&cg).unwrap();
        assert_eq!(v["migration_ratio"], 0.0);
        assert_eq!(v["p99_wake_latency_us"], 0.0);
        assert!(v["spread"].is_null(), "an Option reads null as None");
    }
}
