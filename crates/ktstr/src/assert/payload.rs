//! Payload checks (gate `payload`): a run's payload invocations judged on the host. Each
//! reported result becomes its `PayloadMetrics` (metrics extracted from its output, its
//! exit code) and the checks of its payload; an invocation the scenario started that
//! never reported fails.

use ktstr_sidecar::{Outcome, PayloadMetrics};
use ktstr_wire::msg::{PayloadResult, ScenarioEnd};
use ktstr_wire::spec::GuestSpec;

use super::{Check, Gate};
use crate::payload::{extract_metrics, Check as PayloadCheck, ExtractError, Payload};

/// Lines of stderr quoted when a payload exits with an unexpected code.
const STDERR_LINES: usize = 4;

/// What the payload results add to a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Judged {
    /// One entry per reported invocation, failed ones included, in invocation order
    /// (the sidecar's `metrics`).
    pub metrics: Vec<PayloadMetrics>,
    /// The payloads' checks, then problems with the results themselves.
    pub checks: Vec<Check>,
}

fn subject(name: &str, invocation: u32) -> String {
    format!("payload {name} #{invocation}")
}

/// The first lines of `text`, on one line.
fn first_lines(text: &str, n: usize) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// What a failed check of `r` adds to its message: the guest's note, stderr for a
/// wrong exit code, and whether the output was cut when a metric could not be read.
fn explain_failure(msg: &mut String, r: &PayloadResult, extract_failed: bool) {
    if let Some(note) = &r.note {
        msg.push_str(&format!(" ({note})"));
    }
    if msg.starts_with("exit code") {
        let err = first_lines(&r.stderr, STDERR_LINES);
        if !err.is_empty() {
            msg.push_str(&format!("; stderr: {err}"));
        }
    }
    if extract_failed && (r.stdout_truncated || r.stderr_truncated) {
        msg.push_str(&format!(
            "; its output was cut (stdout {} bytes, stderr {} bytes in all)",
            r.stdout_bytes, r.stderr_bytes
        ));
    }
}

/// The payload checks of a run from the `results` the guest reported, and the
/// sidecar's `metrics`. Invocations that never reported fail only when the scenario says
/// it ran to its end (`scenario_end`; otherwise its own failure explains them).
pub fn check_payloads(
    payloads: &[Payload],
    spec: &GuestSpec,
    results: &[PayloadResult],
    scenario_end: Option<&ScenarioEnd>,
) -> Judged {
    if payloads.is_empty() && results.is_empty() {
        return Judged::default();
    }
    let ran_to_end = scenario_end.is_some_and(|e| e.aborted.is_none());
    let scenario = spec.effective_scenario();
    let expected = match (&scenario, ran_to_end) {
        (Some(s), true) => s.payload_invocations(),
        _ => Vec::new(),
    };
    judge(payloads, &expected, results)
}

/// Judges the `results` the guest reported against the declared `payloads`;
/// `expected` lists the payload of every invocation the scenario starts, in order
/// (`Scenario::payload_invocations`).
pub fn judge(payloads: &[Payload], expected: &[&str], results: &[PayloadResult]) -> Judged {
    let mut out = Judged::default();
    let mut sorted: Vec<&PayloadResult> = results.iter().collect();
    sorted.sort_by_key(|r| r.invocation);
    let mut seen = std::collections::BTreeSet::new();
    for r in sorted {
        let who = subject(&r.name, r.invocation);
        let fail = |msg: String| Check::new(Gate::Payload, who.clone(), Outcome::Fail, msg);
        if !seen.insert(r.invocation) {
            out.checks.push(fail(format!(
                "the guest reported invocation {} twice",
                r.invocation
            )));
            continue;
        }
        let Some(p) = payloads.iter().find(|p| p.name == r.name) else {
            out.checks.push(fail(format!(
                "the guest reported a payload the test does not declare (declared: {})",
                payloads
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
            continue;
        };
        if let Some(want) = expected
            .get(r.invocation as usize)
            .filter(|w| **w != r.name)
        {
            out.checks.push(fail(format!(
                "invocation {} should be payload `{want}`, the guest reported `{}`",
                r.invocation, r.name
            )));
        }
        let (pm, errors) = extract_metrics(p, r.invocation, r.exit_code, &r.stdout, &r.stderr);
        for mut c in metric_checks(&who, &p.checks, &pm, &errors) {
            if c.outcome == Outcome::Fail {
                explain_failure(&mut c.message, r, !errors.is_empty());
            }
            out.checks.push(c);
        }
        if p.checks.is_empty() {
            out.checks.push(Check::new(
                Gate::Payload,
                who.clone(),
                Outcome::Skip,
                format!(
                    "no checks; exit code {}, {} metrics",
                    r.exit_code,
                    pm.metrics.len()
                ),
            ));
        }
        out.metrics.push(pm);
    }
    for (i, name) in expected.iter().enumerate() {
        let Ok(i) = u32::try_from(i) else { break };
        if !seen.contains(&i) {
            out.checks.push(Check::new(
                Gate::Payload,
                subject(name, i),
                Outcome::Fail,
                "never reported a result (the scenario ended before it ran, or the guest died)"
                    .into(),
            ));
        }
    }
    out
}

/// Judge every declared check of one invocation, `subject` (`payload hackbench #0`);
/// extraction errors fail the checks that needed the metric (and an output promise with
/// no metric check fails on its own).
pub fn metric_checks(
    subject: &str,
    checks: &[PayloadCheck],
    m: &PayloadMetrics,
    extract_errors: &[ExtractError],
) -> Vec<Check> {
    let pass = |msg: String| Check::new(Gate::Payload, subject, Outcome::Pass, msg);
    let fail = |msg: String| Check::new(Gate::Payload, subject, Outcome::Fail, msg);
    let mut out: Vec<Check> = checks
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
                PayloadCheck::ExitCode(want) if m.exit_code == *want => {
                    pass(format!("exit code {want}"))
                }
                PayloadCheck::ExitCode(want) => {
                    fail(format!("exit code {} (expected {want})", m.exit_code))
                }
                PayloadCheck::Exists { metric } => match value(metric) {
                    Some(v) => pass(format!("`{metric}` = {v}")),
                    None => missing(metric),
                },
                PayloadCheck::Min { metric, min } => match value(metric) {
                    Some(v) if v >= *min => pass(format!("`{metric}` = {v} >= {min}")),
                    Some(v) => fail(format!("`{metric}` = {v}, below the minimum {min}")),
                    None => missing(metric),
                },
                PayloadCheck::Max { metric, max } => match value(metric) {
                    Some(v) if v <= *max => pass(format!("`{metric}` = {v} <= {max}")),
                    Some(v) => fail(format!("`{metric}` = {v}, above the maximum {max}")),
                    None => missing(metric),
                },
                PayloadCheck::Range { metric, min, max } => match value(metric) {
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
            (PayloadCheck::ExitCode(_), _) => false,
            (_, ExtractError::NoJson { .. }) => true,
            (
                PayloadCheck::Exists { metric: m }
                | PayloadCheck::Min { metric: m, .. }
                | PayloadCheck::Max { metric: m, .. }
                | PayloadCheck::Range { metric: m, .. },
                ExtractError::NoMatch { metric, .. },
            ) => m == metric,
        })
    };
    for e in extract_errors.iter().filter(|e| !reported(e)) {
        out.push(fail(e.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_sidecar::Metric;
    use ktstr_sidecar::{MetricStream, Polarity};

    fn hackbench() -> Payload {
        Payload::new("hackbench", "/usr/bin/hackbench")
            .line("time_s", r"^Time:\s*([0-9.]+)")
            .hint("time_s", "s", Polarity::LowerBetter)
            .check(PayloadCheck::Max {
                metric: "time_s".into(),
                max: 5.0,
            })
    }

    fn cyclictest() -> Payload {
        Payload::new("cyclictest", "/usr/bin/cyclictest")
            .json()
            .check(PayloadCheck::Exists {
                metric: "thread.0.avg".into(),
            })
    }

    fn result(name: &str, invocation: u32, exit_code: i32, stdout: &str) -> PayloadResult {
        PayloadResult {
            name: name.into(),
            invocation,
            exit_code,
            stdout: stdout.into(),
            stdout_bytes: stdout.len() as u64,
            ..Default::default()
        }
    }

    fn lines(j: &Judged) -> Vec<String> {
        j.checks.iter().map(Check::line).collect()
    }

    #[test]
    fn results_become_metrics_in_invocation_order_and_checks_pass() {
        let cyc = r#"# /dev/cpu_dma_latency set to 0us
{"num_threads": 1, "thread": {"0": {"cycles": 1000, "min": 5, "max": 80, "avg": 12.5}}}"#;
        let j = judge(
            &[hackbench(), cyclictest()],
            &["hackbench", "cyclictest", "hackbench"],
            // Reported as they ended, not as they started.
            &[
                result("cyclictest", 1, 0, cyc),
                result("hackbench", 2, 0, "Running in process mode\nTime: 0.402\n"),
                result("hackbench", 0, 0, "Time: 0.731\n"),
            ],
        );
        let order: Vec<(usize, &str)> = j
            .metrics
            .iter()
            .map(|m| (m.payload_index, m.payload.as_str()))
            .collect();
        assert_eq!(
            order,
            [(0, "hackbench"), (1, "cyclictest"), (2, "hackbench")]
        );
        let t = j.metrics[0].metric("time_s").unwrap();
        assert_eq!((t.value, t.unit.as_str()), (0.731, "s"));
        assert_eq!(t.polarity, Polarity::LowerBetter);
        let avg = j.metrics[1].metric("thread.0.avg").unwrap();
        assert_eq!(avg.value, 12.5);
        assert_eq!(avg.stream, MetricStream::Stdout);
        assert_eq!(avg.polarity, Polarity::Unknown);
        assert!(
            j.checks.iter().all(|c| c.outcome == Outcome::Pass),
            "{:#?}",
            lines(&j)
        );
        assert!(
            lines(&j).contains(
                &"pass [payload] payload hackbench #0: `time_s` = 0.731 <= 5".to_string()
            ),
            "{:#?}",
            lines(&j)
        );
    }

    #[test]
    fn unmet_checks_fail_with_the_value_and_failed_runs_keep_their_exit_code() {
        let mut r = result("hackbench", 0, 1, "Time: 7.25\n");
        r.stderr = "hackbench: fork() failed\nmore\n".into();
        r.note = Some("killed by KillPayload".into());
        let j = judge(&[hackbench()], &["hackbench"], &[r]);
        assert_eq!(j.metrics.len(), 1);
        assert_eq!(j.metrics[0].exit_code, 1);
        let l = lines(&j);
        assert_eq!(
            l[0],
            "fail [payload] payload hackbench #0: exit code 1 (expected 0) (killed by KillPayload); stderr: hackbench: fork() failed | more"
        );
        assert_eq!(
            l[1],
            "fail [payload] payload hackbench #0: `time_s` = 7.25, above the maximum 5 (killed by KillPayload)"
        );
    }

    #[test]
    fn missing_json_quotes_the_output_and_says_it_was_cut() {
        let mut r = result("cyclictest", 0, 0, "T: 0 ( 1) P: 0 I:1000 C: 10 Min: 5\n");
        r.stdout_truncated = true;
        r.stdout_bytes = 900_000;
        let j = judge(&[cyclictest()], &["cyclictest"], &[r]);
        let l = lines(&j);
        assert_eq!(l.len(), 2, "{l:#?}");
        assert!(l[0].starts_with("pass [payload] payload cyclictest #0: exit code 0"));
        assert!(l[1].contains("metric `thread.0.avg` missing"), "{}", l[1]);
        assert!(l[1].contains("promised JSON but printed none"), "{}", l[1]);
        assert!(l[1].contains("T: 0 ( 1) P: 0"), "{}", l[1]);
        assert!(l[1].contains("stdout 900000 bytes"), "{}", l[1]);
    }

    #[test]
    fn missing_unknown_and_duplicate_invocations_fail() {
        let j = judge(
            &[hackbench()],
            &["hackbench", "hackbench"],
            &[
                result("hackbench", 0, 0, "Time: 1\n"),
                result("hackbench", 0, 0, "Time: 1\n"),
                result("intruder", 5, 0, ""),
            ],
        );
        let l = lines(&j);
        assert!(
            l.iter()
                .any(|x| x.contains("#0: the guest reported invocation 0 twice")),
            "{l:#?}"
        );
        assert!(l.iter().any(|x| x.contains("payload intruder #5: the guest reported a payload the test does not declare (declared: hackbench)")), "{l:#?}");
        assert!(
            l.iter()
                .any(|x| x.contains("payload hackbench #1: never reported a result")),
            "{l:#?}"
        );
        assert_eq!(j.metrics.len(), 1);

        let j = judge(
            &[hackbench()],
            &["cyclictest"],
            &[result("hackbench", 0, 0, "Time: 1\n")],
        );
        assert!(
            lines(&j)[0].contains("invocation 0 should be payload `cyclictest`"),
            "{:#?}",
            lines(&j)
        );
    }

    #[test]
    fn a_payload_without_checks_is_recorded_not_judged() {
        let mut p = Payload::new("quiet", "/bin/true");
        p.checks.clear();
        let j = judge(&[p], &["quiet"], &[result("quiet", 0, 3, "")]);
        assert_eq!(j.checks.len(), 1);
        assert_eq!(j.checks[0].outcome, Outcome::Skip);
        assert_eq!(j.metrics[0].exit_code, 3);
    }

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
        let r = metric_checks(
            "payload bench #0",
            &[
                PayloadCheck::Min {
                    metric: "ops".into(),
                    min: 1000.0,
                },
                PayloadCheck::Max {
                    metric: "ops".into(),
                    max: 2000.0,
                },
                PayloadCheck::Range {
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
            r[0].message.contains("950") && r[0].message.contains("minimum 1000"),
            "{}",
            r[0].message
        );
        assert_eq!(r[1].outcome, Outcome::Pass);
        assert_eq!(r[2].outcome, Outcome::Pass);
    }

    #[test]
    fn exit_code_and_missing_metric() {
        let m = metrics(3, &[]);
        let r = metric_checks(
            "payload bench #0",
            &[
                PayloadCheck::ExitCode(0),
                PayloadCheck::Exists {
                    metric: "lat".into(),
                },
            ],
            &m,
            &[],
        );
        assert!(r.iter().all(|x| x.outcome == Outcome::Fail));
        assert!(r[0].message.contains("exit code 3 (expected 0)"));
        assert!(r[1].message.contains("`lat` missing"));
    }

    #[test]
    fn a_missing_metric_quotes_its_own_pattern_miss_and_unchecked_misses_fail_alone() {
        let m = metrics(0, &[("a", 1.0)]);
        let miss = |metric: &str| ExtractError::NoMatch {
            payload: "bench".into(),
            metric: metric.into(),
            head: "A: 1".into(),
        };
        let r = metric_checks(
            "payload bench #0",
            &[
                PayloadCheck::Exists { metric: "a".into() },
                PayloadCheck::Min {
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
            r[1].message.starts_with("metric `b` missing") && r[1].message.contains("for `b`"),
            "{}",
            r[1].message
        );
        assert_eq!(r[2].outcome, Outcome::Fail);
        assert!(r[2].message.contains("for `c`"), "{}", r[2].message);
    }

    #[test]
    fn extraction_errors_fail_even_without_metric_checks() {
        let m = metrics(0, &[]);
        let err = ExtractError::NoJson {
            payload: "bench".into(),
            head: "plain text".into(),
        };
        let r = metric_checks("payload bench #0", &[PayloadCheck::ExitCode(0)], &m, &[err]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].outcome, Outcome::Fail);
        assert!(r[1].message.contains("plain text"));
    }
}
