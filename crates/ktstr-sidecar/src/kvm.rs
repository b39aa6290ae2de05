//! `kvm_stats`: the host kernel's per-vCPU KVM counters, read once after the guest exited.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Counters worth a look when judging a run; `stats show` prints these.
pub const KVM_INTERESTING_STATS: &[&str] = &[
    "exits",
    "halt_exits",
    "halt_successful_poll",
    "halt_attempted_poll",
    "halt_wait_ns",
    "preemption_reported",
    "signal_exits",
    "hypercalls",
];

/// Sidecar key `kvm_stats`: every single-value counter of `KVM_GET_STATS_FD`, per vCPU.
///
/// Null on the qemu-tcg engine and for runs that never started a VM. A counter absent
/// from a vCPU's map was not published by the host kernel; that is different from a
/// counter published as 0, and the helpers keep the difference (`None` vs `Some(0)`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmStatsTotals {
    /// Index = vCPU id; each map is `counter name -> value at the end of the run`.
    pub per_vcpu: Vec<BTreeMap<String, u64>>,
}

impl KvmStatsTotals {
    /// Number of vCPUs with a counter map.
    pub fn vcpus(&self) -> usize {
        self.per_vcpu.len()
    }

    /// Whether any vCPU published `name`.
    pub fn is_published(&self, name: &str) -> bool {
        self.per_vcpu.iter().any(|m| m.contains_key(name))
    }

    /// Sum of `name` over the vCPUs that published it; None when none did.
    pub fn sum(&self, name: &str) -> Option<u64> {
        self.per_vcpu
            .iter()
            .filter_map(|m| m.get(name).copied())
            .fold(None, |acc, v| Some(acc.unwrap_or(0u64).saturating_add(v)))
    }

    /// Mean of `name` over the vCPUs that published it; None when none did.
    pub fn avg(&self, name: &str) -> Option<f64> {
        let values: Vec<u64> = self
            .per_vcpu
            .iter()
            .filter_map(|m| m.get(name).copied())
            .collect();
        if values.is_empty() {
            return None;
        }
        let total: f64 = values.iter().map(|&v| v as f64).sum();
        Some(total / values.len() as f64)
    }

    /// Every counter name any vCPU published, sorted.
    pub fn names(&self) -> BTreeSet<&str> {
        self.per_vcpu
            .iter()
            .flat_map(|m| m.keys().map(String::as_str))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vcpu(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
    }

    #[test]
    fn sum_and_avg_tell_unpublished_from_zero() {
        let t = KvmStatsTotals {
            per_vcpu: vec![
                vcpu(&[("exits", 10), ("halt_exits", 0)]),
                vcpu(&[("exits", 30), ("halt_exits", 0)]),
            ],
        };
        assert_eq!(t.vcpus(), 2);
        assert_eq!(t.sum("exits"), Some(40));
        assert_eq!(t.avg("exits"), Some(20.0));
        // Published as zero: Some(0), not None.
        assert_eq!(t.sum("halt_exits"), Some(0));
        assert_eq!(t.avg("halt_exits"), Some(0.0));
        assert!(t.is_published("halt_exits"));
        // Never published.
        assert_eq!(t.sum("hypercalls"), None);
        assert_eq!(t.avg("hypercalls"), None);
        assert!(!t.is_published("hypercalls"));
        assert_eq!(
            t.names().into_iter().collect::<Vec<_>>(),
            ["exits", "halt_exits"]
        );
    }

    #[test]
    fn avg_counts_only_publishing_vcpus_and_sum_saturates() {
        let t = KvmStatsTotals {
            per_vcpu: vec![
                vcpu(&[("x", u64::MAX)]),
                vcpu(&[]),
                vcpu(&[("x", 2), ("y", 7)]),
            ],
        };
        assert_eq!(t.sum("x"), Some(u64::MAX));
        assert_eq!(t.avg("y"), Some(7.0));
        assert_eq!(KvmStatsTotals::default().sum("x"), None);
    }
}
