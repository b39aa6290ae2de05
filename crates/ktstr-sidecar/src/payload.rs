//! `metrics`: numbers reported by payloads (benchmarks and other binaries run in the guest).

use serde::{Deserialize, Serialize};

use crate::float::f64_or_nan;

/// One payload invocation's results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PayloadMetrics {
    /// Position of the invocation in the run (0, 1, ...).
    pub payload_index: u32,
    /// Payload name (`schbench`).
    pub payload: String,
    /// Metrics it reported, in the order found.
    pub metrics: Vec<Metric>,
    /// Its exit code (negative: killed by that signal).
    pub exit_code: i32,
}

impl PayloadMetrics {
    /// The metric called `name`.
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }
}

/// One named number.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Dotted path of the value in the payload's JSON output (`jobs.0.read.iops`).
    pub name: String,
    /// The value (NaN is written as null).
    #[serde(deserialize_with = "f64_or_nan")]
    pub value: f64,
    /// Which direction is better.
    pub polarity: Polarity,
    /// Unit ("us", "ops/s", "" when unitless).
    pub unit: String,
    /// Which output stream it was read from.
    pub stream: MetricStream,
}

/// Which direction of change is an improvement.
///
/// JSON: `"higher_better"`, `"lower_better"`, `{"target_value": 5.0}`, `"unknown"`,
/// `"informational"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Polarity {
    /// Bigger is better (throughput).
    HigherBetter,
    /// Smaller is better (latency).
    LowerBetter,
    /// Closer to the value is better.
    TargetValue(f64),
    /// Not declared; comparisons treat a rise as a regression.
    #[default]
    Unknown,
    /// Recorded, never gates.
    Informational,
}

/// Output stream of a payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricStream {
    #[default]
    Stdout,
    Stderr,
}
