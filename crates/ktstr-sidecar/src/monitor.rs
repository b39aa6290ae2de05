//! `monitor`: the summary of the 100 ms system samples taken while the scenario ran.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::float::f64_or_nan;

/// Sidecar key `monitor`: what the periodic sampler saw over the whole run.
///
/// Null when no sample was taken (the run was skipped or never reached the scenario).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitorSummary {
    /// Samples taken (one per 100 ms of scenario time when all goes well).
    pub total_samples: u64,
    /// Largest per-sample `max nr_running / max(1, min nr_running)` over CPUs.
    #[serde(deserialize_with = "f64_or_nan")]
    pub max_imbalance_ratio: f64,
    /// Mean of the per-sample imbalance ratio.
    #[serde(deserialize_with = "f64_or_nan")]
    pub avg_imbalance_ratio: f64,
    /// Mean runnable tasks per CPU.
    #[serde(deserialize_with = "f64_or_nan")]
    pub avg_nr_running: f64,
    /// Deepest local dispatch queue seen on any CPU (0 under EEVDF).
    pub max_local_dsq_depth: u32,
    /// Mean local dispatch queue depth.
    #[serde(deserialize_with = "f64_or_nan")]
    pub avg_local_dsq_depth: f64,
    /// Samples in which a CPU with runnable tasks made no progress (its run-queue clock
    /// stood still): a stall candidate.
    pub stuck_count: u32,
    /// `/proc/pressure/cpu` "some" avg10 at the end of the run (null: PSI off).
    pub psi_cpu_some_avg10: Option<f64>,
    /// `/proc/pressure/irq` "full" avg10 at the end of the run (null: no IRQ PSI).
    pub psi_irq_full_avg10: Option<f64>,
    /// sched_ext event counters (`SCX_EV_*` names) as deltas over the run; null under
    /// EEVDF or when the kernel does not publish them.
    pub scx_events: Option<BTreeMap<String, u64>>,
    /// `/proc/schedstat` deltas summed over CPUs; null when schedstats are off.
    pub schedstat: Option<SchedstatDeltas>,
    /// Runtime of the scheduler's BPF programs over the run (needs
    /// `kernel.bpf_stats_enabled`); empty when not collected.
    pub prog_stats: Vec<ProgStatsDelta>,
    /// Threshold violations the monitor saw, whether or not they failed the test.
    pub violations: Vec<String>,
}

/// Run-queue schedstat counters summed over all CPUs, as deltas over the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedstatDeltas {
    /// Time tasks spent runnable but waiting for a CPU, nanoseconds.
    pub run_delay_ns: u64,
    /// Times a task was run on a CPU.
    pub pcount: u64,
    /// Calls to `schedule()`.
    pub sched_count: u64,
    /// Calls to `sched_yield()`.
    pub yld_count: u64,
    /// Times `schedule()` left the CPU idle.
    pub sched_goidle: u64,
    /// Wake-ups.
    pub ttwu_count: u64,
    /// Wake-ups on the waking CPU.
    pub ttwu_local: u64,
}

/// Runtime of one BPF program of the scheduler over the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgStatsDelta {
    /// Program name (`mysched_enqueue`).
    pub name: String,
    /// Invocations.
    pub cnt: u64,
    /// Total run time, nanoseconds.
    pub nsecs: u64,
}

impl ProgStatsDelta {
    /// Mean nanoseconds per invocation; None when the program never ran.
    pub fn nsecs_per_call(&self) -> Option<f64> {
        (self.cnt > 0).then(|| self.nsecs as f64 / self.cnt as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsecs_per_call_tells_never_ran_from_fast() {
        let never = ProgStatsDelta {
            name: "p".into(),
            cnt: 0,
            nsecs: 0,
        };
        assert_eq!(never.nsecs_per_call(), None);
        let ran = ProgStatsDelta {
            name: "p".into(),
            cnt: 4,
            nsecs: 1000,
        };
        assert_eq!(ran.nsecs_per_call(), Some(250.0));
    }
}
