//! `verifier_stats`: how hard the BPF verifier worked on each scheduler program.

use serde::{Deserialize, Serialize};

/// The kernel's limit on verified instructions per program (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const VERIFIER_INSN_LIMIT: u32 = 1_000_000;

/// One loaded struct_ops program of the scheduler.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgVerifierStats {
    /// Program name (`mysched_dispatch`).
    pub name: String,
    /// Instructions the verifier processed (`verified_insns` of `bpf_prog_info`).
    /// It grows with the topology when the scheduler bakes `nr_cpus` into `.rodata`.
    pub verified_insns: u32,
}

impl ProgVerifierStats {
    /// Share of the kernel's verifier limit used, in percent.
    pub fn pct_of_limit(&self) -> f64 {
        f64::from(self.verified_insns) * 100.0 / f64::from(VERIFIER_INSN_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pct_of_limit() {
        let p = ProgVerifierStats {
            name: "x".into(),
            verified_insns: 750_000,
        };
        assert_eq!(p.pct_of_limit(), 75.0);
    }
}
