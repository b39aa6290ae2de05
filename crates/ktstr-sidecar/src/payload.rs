//! `metrics`: numbers reported by payloads (benchmarks and other binaries run in the guest).
//! Shapes, enum spellings and key order are the reference's `PayloadMetrics`, `Metric`,
//! `Polarity` and `MetricStream`.

use serde::{Deserialize, Serialize};

use crate::float::finite;

/// One payload invocation's results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PayloadMetrics {
    /// Position of the invocation in the run (0, 1, ...).
    pub payload_index: usize,
    /// Metrics it reported, in the order found.
    pub metrics: Vec<Metric>,
    /// Its exit code (negative: killed by that signal).
    pub exit_code: i32,
    /// Extra key (ktstr): the payload's name (`schbench`); empty in files written by
    /// tools that do not record it (then the sidecar's `payload` names the primary one).
    #[serde(default)]
    pub payload: String,
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
    /// The value (always finite: a non-finite value is never recorded).
    #[serde(serialize_with = "finite")]
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
/// JSON: `"HigherBetter"`, `"LowerBetter"`, `{"TargetValue": 5.0}`, `"Unknown"`,
/// `"Informational"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
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

/// Output stream of a payload. JSON: `"Stdout"`, `"Stderr"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricStream {
    #[default]
    Stdout,
    Stderr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_spellings_are_the_reference_ones() {
        let json = |p: Polarity| serde_json::to_string(&p).unwrap();
        assert_eq!(json(Polarity::HigherBetter), r#""HigherBetter""#);
        assert_eq!(json(Polarity::LowerBetter), r#""LowerBetter""#);
        assert_eq!(json(Polarity::TargetValue(50.0)), r#"{"TargetValue":50.0}"#);
        assert_eq!(json(Polarity::Unknown), r#""Unknown""#);
        assert_eq!(json(Polarity::Informational), r#""Informational""#);
        assert_eq!(
            serde_json::to_string(&MetricStream::Stderr).unwrap(),
            r#""Stderr""#
        );
        let back: Polarity = serde_json::from_str(r#"{"TargetValue": 2}"#).unwrap();
        assert_eq!(back, Polarity::TargetValue(2.0));
        assert!(serde_json::from_str::<Polarity>(r#""higher_better""#).is_err());
    }
}
