//! `perf_delta_assertions`: per-test regression gates that travel with the run, so
//! `cargo ktstr perf-delta` can honour them without the test's source.

use serde::{Deserialize, Serialize};

use crate::payload::Polarity;

/// A regression gate on one metric. Unset fields fall back to perf-delta's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PerfDeltaAssertionRecord {
    /// Metric name (a stats field like `worst_gap_ms`, or a payload metric).
    pub metric: String,
    /// Which direction is better; null = the metric's registered polarity.
    pub direction: Option<Polarity>,
    /// Largest tolerated worsening, percent of the baseline.
    pub max_regression_pct: Option<f64>,
    /// Smallest absolute change that can count as a regression (noise floor).
    pub min_abs: Option<f64>,
    /// Restrict the gate to one phase (0 = baseline, k = step k); null = whole run.
    pub phase: Option<u16>,
}
