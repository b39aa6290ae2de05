//! When a comparison fails the command ([`FailPolicy`], [`GateOutcome`]).

use serde::Serialize;

use super::{Comparison, Verdict};
use crate::metrics;

/// When a comparison fails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailPolicy {
    /// Fail when at least this many metrics regress; 0 = never by count.
    pub fail_threshold: usize,
    /// Fail when any metric matching one of these patterns (see
    /// [`metrics::name_matches`]) regresses.
    pub must_fail: Vec<String>,
}

/// The outcome of [`FailPolicy::check`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GateOutcome {
    pub failed: bool,
    pub regressions: usize,
    pub fail_threshold: usize,
    /// Regressed rows (`test metric`) named by `--must-fail`.
    pub must_fail_hits: Vec<String>,
    /// Why it failed, one line.
    pub reason: Option<String>,
}

impl FailPolicy {
    pub fn check(&self, cmp: &Comparison) -> GateOutcome {
        let regressions = cmp.counts.regressions;
        let must_fail_hits: Vec<String> = cmp
            .rows
            .iter()
            .filter(|r| r.verdict == Verdict::Regression)
            .filter(|r| {
                self.must_fail
                    .iter()
                    .any(|p| metrics::name_matches(p, &r.metric))
            })
            .map(|r| format!("{} {}", r.test_name, r.label()))
            .collect();
        let by_count = self.fail_threshold > 0 && regressions >= self.fail_threshold;
        let reason = if !must_fail_hits.is_empty() {
            Some(format!(
                "--must-fail metric regressed: {}",
                must_fail_hits.join(", ")
            ))
        } else if by_count {
            Some(format!(
                "{regressions} regression(s), at or above --fail-threshold {}",
                self.fail_threshold
            ))
        } else {
            None
        };
        GateOutcome {
            failed: reason.is_some(),
            regressions,
            fail_threshold: self.fail_threshold,
            must_fail_hits,
            reason,
        }
    }
}

impl GateOutcome {
    /// The verdict line under the text report: why it failed, or that it passed below
    /// a `--fail-threshold`; empty when there was no threshold and nothing failed.
    pub fn render_text(&self) -> String {
        match &self.reason {
            Some(r) => format!("FAILED: {r}\n"),
            None if self.fail_threshold > 0 => format!(
                "passed: {} regression(s), below --fail-threshold {}\n",
                self.regressions, self.fail_threshold
            ),
            None => String::new(),
        }
    }
}
