//! Comparing two sides of a pool, A (the baseline) and B (the candidate): which runs
//! belong to which side ([`Filter`]), which runs are the same test variant on both sides
//! ([`PairKey`]), several runs per side aggregated, and a verdict per metric
//! ([`judge`]): a regression needs the difference to be real (see [`crate::noise`]) and
//! material (the registry's thresholds, or the test's own `perf_delta_assertions`).
//!
//! Only clean passes enter the numbers: runs that failed, were skipped or
//! inconclusive, and runs whose pass is an `expected_failure`, are counted per side and
//! left out.

mod filter;
mod gate;
mod judge;
mod pairing;
mod run;
#[cfg(test)]
mod tests;

pub use filter::{commit_matches, kernel_matches, Contrast, Filter};
pub use gate::{FailPolicy, GateOutcome};
pub use judge::{
    is_notable, judge, judge_series, Comparison, Counts, JudgeOptions, Judgement, MetricRow,
    PairReport, PairStatus, SideInfo, Threshold, ThresholdSource, Verdict,
};
pub use pairing::{
    pair_listing, Columns, Excluded, PairAcc, PairKey, Pairing, Selected, SeriesKey, SideAcc,
};
pub use run::{run, Compared};

/// Mask bit of side A in [`crate::scan::Source::mask`].
pub const SIDE_A: u8 = 1;
/// Mask bit of side B.
pub const SIDE_B: u8 = 2;
