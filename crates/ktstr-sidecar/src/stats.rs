//! `stats`: what the workers measured, per cgroup, in total and per phase.
//!
//! An `Option` number here is `null` when the measurement did not happen (no worker of
//! that kind, the kernel did not publish it), never when it happened and came out zero.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::float::{f64_or_nan, map_f64_or_nan};

/// Sidecar key `stats`: the scenario's worker measurements as evaluated on the host.
///
/// A skipped run carries `ScenarioStats::default()` (no cgroups, zeros).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScenarioStats {
    /// One entry per cgroup of the scenario, in creation order (whole-run numbers).
    pub cgroups: Vec<CgroupStats>,
    /// Workers over all cgroups.
    pub total_workers: u32,
    /// Distinct guest CPUs any worker ran on.
    pub total_cpus: u32,
    /// Work units completed by all workers.
    pub total_iterations: u64,
    /// CPU migrations of all workers.
    pub total_migrations: u64,
    /// Largest `spread` (percentage points of off-CPU time) of any cgroup; null when no
    /// cgroup measured off-CPU time.
    pub worst_spread: Option<f64>,
    /// Longest gap between two work checkpoints of any worker, in milliseconds.
    pub worst_gap_ms: u64,
    /// Guest CPU on which `worst_gap_ms` happened; null when no gap was measured.
    pub worst_gap_cpu: Option<u32>,
    /// Largest `migration_ratio` (migrations per work unit) of any cgroup.
    #[serde(deserialize_with = "f64_or_nan")]
    pub worst_migration_ratio: f64,
    /// Largest p99 wake-up latency of any cgroup, microseconds; null when not measured.
    pub worst_p99_wake_latency_us: Option<f64>,
    /// Largest run-queue delay of any worker, microseconds; null when schedstats were off.
    pub worst_run_delay_us: Option<f64>,
    /// Further named measurements (`name -> value`) that have no field of their own.
    #[serde(deserialize_with = "map_f64_or_nan")]
    pub ext_metrics: BTreeMap<String, f64>,
    /// Per-phase numbers: phase 0 is the baseline (settle), phase `k` is step `k`.
    pub phases: Vec<PhaseStats>,
    /// Why the verdict is what it is: one line per check that failed, was inconclusive
    /// or skipped, in evaluation order. Empty for a clean pass.
    pub verdict_details: Vec<String>,
}

impl ScenarioStats {
    /// The whole-run stats of the cgroup called `name`.
    pub fn cgroup(&self, name: &str) -> Option<&CgroupStats> {
        self.cgroups.iter().find(|c| c.name == name)
    }

    /// The stats of phase `step_index` (0 = baseline).
    pub fn phase(&self, step_index: u16) -> Option<&PhaseStats> {
        self.phases.iter().find(|p| p.step_index == step_index)
    }
}

/// One cgroup's measurements, over the whole run or over one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupStats {
    /// Cgroup name as declared in the scenario (relative to the test's root cgroup).
    pub name: String,
    /// Workers in the cgroup.
    pub num_workers: u32,
    /// CPUs the cgroup was allowed to use (its effective cpuset).
    pub num_cpus: u32,
    /// Guest CPUs its workers actually ran on, ascending.
    pub cpus_used: Vec<u32>,
    /// Work units completed.
    pub total_iterations: u64,
    /// CPU time its workers received, nanoseconds.
    pub total_cpu_time_ns: u64,
    /// CPU migrations of its workers.
    pub total_migrations: u64,
    /// Migrations per work unit (NaN, written as null, when there were no work units).
    #[serde(deserialize_with = "f64_or_nan")]
    pub migration_ratio: f64,
    /// Mean share of wall time a worker spent off-CPU, percent.
    pub avg_off_cpu_pct: Option<f64>,
    /// Smallest off-CPU share of any worker, percent.
    pub min_off_cpu_pct: Option<f64>,
    /// Largest off-CPU share of any worker, percent.
    pub max_off_cpu_pct: Option<f64>,
    /// `max_off_cpu_pct - min_off_cpu_pct`: how unevenly the cgroup was served.
    pub spread: Option<f64>,
    /// Longest gap between two work checkpoints of one worker, milliseconds.
    pub max_gap_ms: u64,
    /// Guest CPU of that gap; null when no gap was measured.
    pub max_gap_cpu: Option<u32>,
    /// Median wake-up latency, microseconds (null: no worker sleeps and wakes).
    pub median_wake_latency_us: Option<f64>,
    /// 99th percentile wake-up latency, microseconds.
    pub p99_wake_latency_us: Option<f64>,
    /// Coefficient of variation of wake-up latency (stddev / mean).
    pub wake_latency_cv: Option<f64>,
    /// Median timer (sleep overshoot) latency, microseconds (null: no timer workers).
    pub median_timer_latency_us: Option<f64>,
    /// 99th percentile timer latency, microseconds.
    pub p99_timer_latency_us: Option<f64>,
    /// Largest timer latency, microseconds.
    pub worst_timer_latency_us: Option<f64>,
    /// Mean run-queue delay per scheduling, microseconds (null: schedstats off).
    pub mean_run_delay_us: Option<f64>,
    /// Largest run-queue delay of one worker, microseconds.
    pub worst_run_delay_us: Option<f64>,
    /// Fraction (0..=1) of the workers' pages on the NUMA nodes of their cpuset
    /// (null: one node, or not measured).
    pub page_locality: Option<f64>,
    /// Fraction of migrations that crossed NUMA nodes (null: one node).
    pub cross_node_migration_ratio: Option<f64>,
    /// Further named measurements of this cgroup.
    #[serde(deserialize_with = "map_f64_or_nan")]
    pub ext_metrics: BTreeMap<String, f64>,
}

/// Numbers of one phase: the baseline (step 0) or one scenario step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseStats {
    /// 0 = baseline (settle), `k` = step `k` (counted from 1).
    pub step_index: u16,
    /// Human label ("baseline", "step 2: shrink cpuset").
    pub label: String,
    /// Phase start, milliseconds since the scenario started.
    pub start_ms: u64,
    /// Phase end, milliseconds since the scenario started.
    pub end_ms: u64,
    /// Work units completed by all workers during the phase.
    pub total_iterations: u64,
    /// Per-cgroup numbers of the phase (same shape as the whole-run ones).
    pub cgroups: Vec<CgroupStats>,
    /// Further named phase-level measurements.
    #[serde(deserialize_with = "map_f64_or_nan")]
    pub metrics: BTreeMap<String, f64>,
}

impl PhaseStats {
    /// Length of the phase in milliseconds (0 if the stamps are inverted).
    pub fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }

    /// Work units per second of the phase; None for an empty phase.
    pub fn iterations_per_sec(&self) -> Option<f64> {
        let ms = self.duration_ms();
        (ms > 0).then(|| self.total_iterations as f64 * 1000.0 / ms as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_rate_and_lookup() {
        let p = PhaseStats {
            step_index: 1,
            start_ms: 1000,
            end_ms: 3000,
            total_iterations: 500,
            ..Default::default()
        };
        assert_eq!(p.duration_ms(), 2000);
        assert_eq!(p.iterations_per_sec(), Some(250.0));
        let empty = PhaseStats {
            start_ms: 5,
            end_ms: 5,
            ..Default::default()
        };
        assert_eq!(empty.iterations_per_sec(), None);

        let s = ScenarioStats {
            cgroups: vec![CgroupStats {
                name: "cg0".into(),
                ..Default::default()
            }],
            phases: vec![p],
            ..Default::default()
        };
        assert!(s.cgroup("cg0").is_some());
        assert!(s.cgroup("cg1").is_none());
        assert_eq!(s.phase(1).map(|p| p.total_iterations), Some(500));
        assert!(s.phase(0).is_none());
    }
}
