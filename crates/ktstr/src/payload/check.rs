//! Checks on payload results: exit codes and metric bounds, judged on the host with the
//! value in every failure reason.

use ktstr_sidecar::{Outcome, PayloadMetrics};
use serde::{Deserialize, Serialize};

use super::ExtractError;

/// A condition a payload's results must meet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Check {
    ExitCode(i32),
    Exists { metric: String },
    Min { metric: String, min: f64 },
    Max { metric: String, max: f64 },
    Range { metric: String, min: f64, max: f64 },
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub outcome: Outcome,
    pub reason: String,
}

/// Judge every check of one invocation; extraction errors fail the checks that needed
/// the metric (and an output promise with no metric check fails on its own). Reasons
/// do not repeat which invocation they are about: the caller names it (the verdict's
/// subject `payload hackbench #0`).
pub fn evaluate_checks(
    checks: &[Check],
    m: &PayloadMetrics,
    extract_errors: &[ExtractError],
) -> Vec<CheckResult> {
    let mut out: Vec<CheckResult> = checks
        .iter()
        .map(|c| {
            let value = |name: &str| m.metric(name).map(|x| x.value);
            let missing = |name: &str| {
                // The error about this metric (a line pattern that matched nothing), else
                // the one about the whole output (no JSON).
                let why = extract_errors
                    .iter()
                    .find(|e| matches!(e, ExtractError::NoMatch { metric, .. } if metric == name))
                    .or_else(|| {
                        extract_errors
                            .iter()
                            .find(|e| matches!(e, ExtractError::NoJson { .. }))
                    })
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "it was not in the output".into());
                fail(format!("metric `{name}` missing: {why}"))
            };
            match c {
                Check::ExitCode(want) if m.exit_code == *want => pass(format!("exit code {want}")),
                Check::ExitCode(want) => {
                    fail(format!("exit code {} (expected {want})", m.exit_code))
                }
                Check::Exists { metric } => match value(metric) {
                    Some(v) => pass(format!("`{metric}` = {v}")),
                    None => missing(metric),
                },
                Check::Min { metric, min } => match value(metric) {
                    Some(v) if v >= *min => pass(format!("`{metric}` = {v} >= {min}")),
                    Some(v) => fail(format!("`{metric}` = {v}, below the minimum {min}")),
                    None => missing(metric),
                },
                Check::Max { metric, max } => match value(metric) {
                    Some(v) if v <= *max => pass(format!("`{metric}` = {v} <= {max}")),
                    Some(v) => fail(format!("`{metric}` = {v}, above the maximum {max}")),
                    None => missing(metric),
                },
                Check::Range { metric, min, max } => match value(metric) {
                    Some(v) if v >= *min && v <= *max => {
                        pass(format!("`{metric}` = {v} in [{min}, {max}]"))
                    }
                    Some(v) => fail(format!("`{metric}` = {v}, outside [{min}, {max}]")),
                    None => missing(metric),
                },
            }
        })
        .collect();
    // Extraction errors no metric check reported fail on their own: the output did not
    // keep its promise.
    let reported = |e: &ExtractError| {
        checks.iter().any(|c| match (c, e) {
            (Check::ExitCode(_), _) => false,
            (_, ExtractError::NoJson { .. }) => true,
            (
                Check::Exists { metric: m }
                | Check::Min { metric: m, .. }
                | Check::Max { metric: m, .. }
                | Check::Range { metric: m, .. },
                ExtractError::NoMatch { metric, .. },
            ) => m == metric,
        })
    };
    for e in extract_errors.iter().filter(|e| !reported(e)) {
        out.push(fail(e.to_string()));
    }
    out
}

fn pass(reason: String) -> CheckResult {
    CheckResult {
        outcome: Outcome::Pass,
        reason,
    }
}

fn fail(reason: String) -> CheckResult {
    CheckResult {
        outcome: Outcome::Fail,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_sidecar::Metric;

    fn metrics(exit: i32, pairs: &[(&str, f64)]) -> PayloadMetrics {
        PayloadMetrics {
            payload_index: 0,
            payload: "bench".into(),
            metrics: pairs
                .iter()
                .map(|(n, v)| Metric {
                    name: n.to_string(),
                    value: *v,
                    ..Metric::default()
                })
                .collect(),
            exit_code: exit,
        }
    }

    #[test]
    fn bounds_pass_and_fail_with_the_value_in_the_reason() {
        let m = metrics(0, &[("ops", 950.0)]);
        let r = evaluate_checks(
            &[
                Check::Min {
                    metric: "ops".into(),
                    min: 1000.0,
                },
                Check::Max {
                    metric: "ops".into(),
                    max: 2000.0,
                },
                Check::Range {
                    metric: "ops".into(),
                    min: 900.0,
                    max: 1000.0,
                },
            ],
            &m,
            &[],
        );
        assert_eq!(r[0].outcome, Outcome::Fail);
        assert!(
            r[0].reason.contains("950") && r[0].reason.contains("minimum 1000"),
            "{}",
            r[0].reason
        );
        assert_eq!(r[1].outcome, Outcome::Pass);
        assert_eq!(r[2].outcome, Outcome::Pass);
    }

    #[test]
    fn exit_code_and_missing_metric() {
        let m = metrics(3, &[]);
        let r = evaluate_checks(
            &[
                Check::ExitCode(0),
                Check::Exists {
                    metric: "lat".into(),
                },
            ],
            &m,
            &[],
        );
        assert!(r.iter().all(|x| x.outcome == Outcome::Fail));
        assert!(r[0].reason.contains("exit code 3 (expected 0)"));
        assert!(r[1].reason.contains("`lat` missing"));
    }

    #[test]
    fn a_missing_metric_quotes_its_own_pattern_miss_and_unchecked_misses_fail_alone() {
        let m = metrics(0, &[("a", 1.0)]);
        let miss = |metric: &str| ExtractError::NoMatch {
            payload: "bench".into(),
            metric: metric.into(),
            head: "A: 1".into(),
        };
        let r = evaluate_checks(
            &[
                Check::Exists { metric: "a".into() },
                Check::Min {
                    metric: "b".into(),
                    min: 1.0,
                },
            ],
            &m,
            &[miss("c"), miss("b")],
        );
        assert_eq!(r.len(), 3, "{r:#?}");
        assert_eq!(r[0].outcome, Outcome::Pass);
        assert!(
            r[1].reason.starts_with("metric `b` missing") && r[1].reason.contains("for `b`"),
            "{}",
            r[1].reason
        );
        assert_eq!(r[2].outcome, Outcome::Fail);
        assert!(r[2].reason.contains("for `c`"), "{}", r[2].reason);
    }

    #[test]
    fn extraction_errors_fail_even_without_metric_checks() {
        let m = metrics(0, &[]);
        let err = ExtractError::NoJson {
            payload: "bench".into(),
            head: "plain text".into(),
        };
        let r = evaluate_checks(&[Check::ExitCode(0)], &m, &[err]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].outcome, Outcome::Fail);
        assert!(r[1].reason.contains("plain text"));
    }
}
