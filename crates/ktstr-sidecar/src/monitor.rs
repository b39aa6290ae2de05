//! `monitor`: the summary of the 100 ms system samples taken while the scenario ran.
//! Shapes and key order are the reference's `MonitorSummary` and its nested types; the
//! two keys after `bpf_map_fields` are ktstr's own (documented extra keys).

use serde::{Deserialize, Serialize};

use crate::float::{finite, finite_opt};

/// Sidecar key `monitor`: what the periodic sampler saw over the whole run.
///
/// Null when no sample was taken (the run was skipped or never reached the scenario).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitorSummary {
    /// Samples taken (one per 100 ms of scenario time when all goes well).
    pub total_samples: usize,
    /// Largest per-sample `max nr_running / max(1, min nr_running)` over CPUs (`0.0`
    /// when no sample showed `nr_running`).
    #[serde(serialize_with = "finite")]
    pub max_imbalance_ratio: f64,
    /// Deepest local dispatch queue seen on any CPU (0 under EEVDF).
    pub max_local_dsq_depth: u32,
    /// (CPU, consecutive sample pair) observations in which a CPU with runnable tasks
    /// made no progress (its run-queue clock stood still): stall candidates.
    pub stuck_count: usize,
    /// Mean of the per-sample imbalance ratio.
    #[serde(serialize_with = "finite")]
    pub avg_imbalance_ratio: f64,
    /// Mean runnable tasks per CPU.
    #[serde(serialize_with = "finite")]
    pub avg_nr_running: f64,
    /// Mean local dispatch queue depth.
    #[serde(serialize_with = "finite")]
    pub avg_local_dsq_depth: f64,
    /// Mean PELT IRQ utilisation over the CPUs that report it; null when none does
    /// (ktstr's guest does not read it).
    #[serde(serialize_with = "finite_opt")]
    pub avg_irq_util: Option<f64>,
    /// Largest PELT IRQ utilisation of one CPU; null when not read.
    #[serde(serialize_with = "finite_opt")]
    pub max_avg_irq_util: Option<f64>,
    /// `/proc/pressure/irq` "full" avg10, mean over the samples that had it (null: no
    /// IRQ PSI).
    #[serde(serialize_with = "finite_opt")]
    pub psi_irq_full_avg10: Option<f64>,
    /// IRQ "full" stall time between the first and the last sample that had it,
    /// microseconds (null: no IRQ PSI).
    #[serde(serialize_with = "finite_opt")]
    pub total_irq_pressure_us: Option<f64>,
    /// sched_ext event counter deltas; null under EEVDF or when the kernel does not
    /// publish them.
    pub event_deltas: Option<ScxEventDeltas>,
    /// `/proc/schedstat` run-queue deltas summed over CPUs; null when schedstats are off.
    pub schedstat_deltas: Option<SchedstatDeltas>,
    /// Load-balancing counters per sched-domain level; null (not read by ktstr).
    pub sched_domain_lb: Option<Vec<SchedDomainLbDelta>>,
    /// Run time of the scheduler's BPF programs over the run; null when not collected.
    pub prog_stats_deltas: Option<Vec<ProgStatsDelta>>,
    /// Watched BPF map fields; null (not read by ktstr).
    pub bpf_map_fields: Option<Vec<BpfMapFieldValue>>,
    /// Extra key (ktstr): `/proc/pressure/cpu` "some" avg10 at the end of the run
    /// (null: PSI off).
    #[serde(default, serialize_with = "finite_opt")]
    pub psi_cpu_some_avg10: Option<f64>,
    /// Extra key (ktstr): threshold violations the monitor saw, whether or not they
    /// failed the test.
    #[serde(default)]
    pub violations: Vec<String>,
}

/// sched_ext event counters as deltas between the first and the last sample that
/// carried them, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScxEventDeltas {
    /// `SCX_EV_SELECT_CPU_FALLBACK`.
    pub total_fallback: i64,
    /// `total_fallback` per second between the first and the last such sample (`0.0`
    /// when they are at the same time).
    #[serde(serialize_with = "finite")]
    pub fallback_rate: f64,
    /// Largest fallback increase between two consecutive samples.
    pub max_fallback_burst: i64,
    /// `SCX_EV_DISPATCH_LOCAL_DSQ_OFFLINE`.
    pub total_dispatch_offline: i64,
    /// `SCX_EV_DISPATCH_KEEP_LAST`.
    pub total_dispatch_keep_last: i64,
    /// `total_dispatch_keep_last` per second.
    #[serde(serialize_with = "finite")]
    pub keep_last_rate: f64,
    /// `SCX_EV_ENQ_SKIP_EXITING`.
    pub total_enq_skip_exiting: i64,
    /// `SCX_EV_ENQ_SKIP_MIGRATION_DISABLED`.
    pub total_enq_skip_migration_disabled: i64,
    /// `SCX_EV_REENQ_IMMED`.
    pub total_reenq_immed: i64,
    /// `SCX_EV_REENQ_LOCAL_REPEAT`.
    pub total_reenq_local_repeat: i64,
    /// `SCX_EV_REFILL_SLICE_DFL`.
    pub total_refill_slice_dfl: i64,
    /// `SCX_EV_BYPASS_DURATION`, nanoseconds.
    pub total_bypass_duration: i64,
    /// `SCX_EV_BYPASS_DISPATCH`.
    pub total_bypass_dispatch: i64,
    /// `SCX_EV_BYPASS_ACTIVATE`.
    pub total_bypass_activate: i64,
    /// `SCX_EV_INSERT_NOT_OWNED`.
    pub total_insert_not_owned: i64,
    /// `SCX_EV_SUB_BYPASS_DISPATCH`.
    pub total_sub_bypass_dispatch: i64,
}

impl ScxEventDeltas {
    /// The kernel's counter name (`SCX_EV_*`) behind each `total_*` field, in field
    /// order.
    pub const COUNTERS: [&'static str; 13] = [
        "SCX_EV_SELECT_CPU_FALLBACK",
        "SCX_EV_DISPATCH_LOCAL_DSQ_OFFLINE",
        "SCX_EV_DISPATCH_KEEP_LAST",
        "SCX_EV_ENQ_SKIP_EXITING",
        "SCX_EV_ENQ_SKIP_MIGRATION_DISABLED",
        "SCX_EV_REENQ_IMMED",
        "SCX_EV_REENQ_LOCAL_REPEAT",
        "SCX_EV_REFILL_SLICE_DFL",
        "SCX_EV_BYPASS_DURATION",
        "SCX_EV_BYPASS_DISPATCH",
        "SCX_EV_BYPASS_ACTIVATE",
        "SCX_EV_INSERT_NOT_OWNED",
        "SCX_EV_SUB_BYPASS_DISPATCH",
    ];

    fn slot(&mut self, counter: &str) -> Option<&mut i64> {
        Some(match counter {
            "SCX_EV_SELECT_CPU_FALLBACK" => &mut self.total_fallback,
            "SCX_EV_DISPATCH_LOCAL_DSQ_OFFLINE" => &mut self.total_dispatch_offline,
            "SCX_EV_DISPATCH_KEEP_LAST" => &mut self.total_dispatch_keep_last,
            "SCX_EV_ENQ_SKIP_EXITING" => &mut self.total_enq_skip_exiting,
            "SCX_EV_ENQ_SKIP_MIGRATION_DISABLED" => &mut self.total_enq_skip_migration_disabled,
            "SCX_EV_REENQ_IMMED" => &mut self.total_reenq_immed,
            "SCX_EV_REENQ_LOCAL_REPEAT" => &mut self.total_reenq_local_repeat,
            "SCX_EV_REFILL_SLICE_DFL" => &mut self.total_refill_slice_dfl,
            "SCX_EV_BYPASS_DURATION" => &mut self.total_bypass_duration,
            "SCX_EV_BYPASS_DISPATCH" => &mut self.total_bypass_dispatch,
            "SCX_EV_BYPASS_ACTIVATE" => &mut self.total_bypass_activate,
            "SCX_EV_INSERT_NOT_OWNED" => &mut self.total_insert_not_owned,
            "SCX_EV_SUB_BYPASS_DISPATCH" => &mut self.total_sub_bypass_dispatch,
            _ => return None,
        })
    }

    /// Deltas from `SCX_EV_* -> delta` counters over a window of `secs` seconds
    /// (rates are `0.0` for a zero window). Counters without a field are left out;
    /// deltas beyond `i64::MAX` saturate.
    pub fn from_counters<'a>(
        deltas: impl IntoIterator<Item = (&'a str, u64)>,
        secs: f64,
        max_fallback_burst: u64,
    ) -> ScxEventDeltas {
        let mut d = ScxEventDeltas {
            max_fallback_burst: i64::try_from(max_fallback_burst).unwrap_or(i64::MAX),
            ..ScxEventDeltas::default()
        };
        for (name, v) in deltas {
            if let Some(slot) = d.slot(name) {
                *slot = i64::try_from(v).unwrap_or(i64::MAX);
            }
        }
        if secs > 0.0 {
            d.fallback_rate = d.total_fallback as f64 / secs;
            d.keep_last_rate = d.total_dispatch_keep_last as f64 / secs;
        }
        d
    }

    /// `(SCX_EV_* name, delta)` for every counter, in field order.
    pub fn counters(&self) -> [(&'static str, i64); 13] {
        let values = [
            self.total_fallback,
            self.total_dispatch_offline,
            self.total_dispatch_keep_last,
            self.total_enq_skip_exiting,
            self.total_enq_skip_migration_disabled,
            self.total_reenq_immed,
            self.total_reenq_local_repeat,
            self.total_refill_slice_dfl,
            self.total_bypass_duration,
            self.total_bypass_dispatch,
            self.total_bypass_activate,
            self.total_insert_not_owned,
            self.total_sub_bypass_dispatch,
        ];
        std::array::from_fn(|i| (Self::COUNTERS[i], values[i]))
    }
}

/// Run-queue schedstat counters summed over all CPUs, as deltas between the first and
/// the last sample that carried them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SchedstatDeltas {
    /// Time tasks spent runnable but waiting for a CPU, nanoseconds.
    pub total_run_delay: u64,
    /// Times a task was run on a CPU.
    pub total_pcount: u64,
    /// Calls to `schedule()`.
    pub total_sched_count: u64,
    /// Calls to `sched_yield()`.
    pub total_yld_count: u64,
    /// Times `schedule()` left the CPU idle.
    pub total_sched_goidle: u64,
    /// Wake-ups.
    pub total_ttwu_count: u64,
    /// Wake-ups on the waking CPU.
    pub total_ttwu_local: u64,
    /// Seconds between the first and the last sample the deltas span.
    #[serde(serialize_with = "finite")]
    pub total_schedstat_wall_sec: f64,
}

/// Load-balancing counters of one sched-domain level, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedDomainLbDelta {
    /// `SMT`, `CLS`, `MC`, `PKG`, `NUMA`.
    pub level: String,
    pub lb_count: u64,
    pub lb_failed: u64,
    pub lb_gained: u64,
    pub lb_imbalance_load: u64,
    pub lb_imbalance_util: u64,
    pub lb_imbalance_task: u64,
    pub lb_imbalance_misfit: u64,
    pub alb_count: u64,
    pub alb_pushed: u64,
}

/// Runtime of one BPF program of the scheduler over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgStatsDelta {
    /// Program name (`mysched_enqueue`).
    pub name: String,
    /// Invocations.
    pub cnt: u64,
    /// Total run time, nanoseconds.
    pub nsecs: u64,
    /// `nsecs / cnt` (`0.0` when the program never ran).
    #[serde(serialize_with = "finite")]
    pub nsecs_per_call: f64,
}

impl ProgStatsDelta {
    /// A program's delta with its `nsecs_per_call` derived.
    pub fn new(name: impl Into<String>, cnt: u64, nsecs: u64) -> ProgStatsDelta {
        ProgStatsDelta {
            name: name.into(),
            cnt,
            nsecs,
            nsecs_per_call: if cnt > 0 {
                nsecs as f64 / cnt as f64
            } else {
                0.0
            },
        }
    }

    /// Mean nanoseconds per invocation; None when the program never ran.
    pub fn per_call(&self) -> Option<f64> {
        (self.cnt > 0).then_some(self.nsecs_per_call)
    }
}

/// One watched BPF map field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BpfMapFieldValue {
    pub key: String,
    #[serde(serialize_with = "finite")]
    pub value: f64,
    /// The field is a counter (its value is a delta), not a gauge.
    #[serde(default)]
    pub is_counter: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_call_tells_never_ran_from_fast() {
        let never = ProgStatsDelta::new("p", 0, 0);
        assert_eq!(never.nsecs_per_call, 0.0);
        assert_eq!(never.per_call(), None);
        let ran = ProgStatsDelta::new("p", 4, 1000);
        assert_eq!(ran.per_call(), Some(250.0));
    }

    #[test]
    fn event_deltas_map_kernel_names_and_rates() {
        let d = ScxEventDeltas::from_counters(
            [
                ("SCX_EV_SELECT_CPU_FALLBACK", 12),
                ("SCX_EV_DISPATCH_KEEP_LAST", 30),
                ("SCX_EV_BYPASS_DURATION", u64::MAX),
                ("SCX_EV_FROM_THE_FUTURE", 5),
            ],
            3.0,
            5,
        );
        assert_eq!(d.total_fallback, 12);
        assert_eq!(d.fallback_rate, 4.0);
        assert_eq!(d.keep_last_rate, 10.0);
        assert_eq!(d.max_fallback_burst, 5);
        assert_eq!(d.total_bypass_duration, i64::MAX);
        let c = d.counters();
        assert_eq!(c[0], ("SCX_EV_SELECT_CPU_FALLBACK", 12));
        assert_eq!(c[2], ("SCX_EV_DISPATCH_KEEP_LAST", 30));
        assert_eq!(c.iter().map(|(_, v)| *v).filter(|v| *v != 0).count(), 3);
        let zero_window =
            ScxEventDeltas::from_counters([("SCX_EV_SELECT_CPU_FALLBACK", 1)], 0.0, 0);
        assert_eq!(zero_window.fallback_rate, 0.0);
    }
}
