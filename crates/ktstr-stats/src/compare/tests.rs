//! Comparisons end to end: pairing synthetic runs and judging them.

use ktstr_sidecar::payload::Polarity;
use ktstr_sidecar::perf_delta::PerfDeltaAssertionRecord;
use ktstr_sidecar::sidecar::SidecarResult;
use ktstr_sidecar::verdict::Outcome;

use super::*;
use crate::noise::Summary;
use ktstr_sidecar::sidecar::RunSource;
use ktstr_sidecar::stats::CgroupStats;
use ktstr_sidecar::stimulus::StimulusEvent;

/// A passing run of `test` whose one cgroup did `units` work in 10 s, with a p99 wake
/// latency of `p99` us.
fn run(test: &str, commit: &str, units: u64, p99: f64) -> SidecarResult {
    let mut s = SidecarResult::new(test, "1n1l2c1t", "eevdf");
    s.work_type = "SpinWait".into();
    s.kernel_version = Some("7.2.13".into());
    s.project_commit = Some(commit.into());
    s.run_source = Some(RunSource::Local);
    s.run_id = format!("{commit}-{units}");
    s.set_outcome(Outcome::Pass);
    s.stats.total_iterations = units;
    s.stats.cgroups = vec![CgroupStats {
        cgroup_name: "cg0".into(),
        total_iterations: units,
        p99_wake_latency_us: p99,
        wake_measured: true,
        ..CgroupStats::default()
    }];
    s.stimulus_events = vec![StimulusEvent {
        elapsed_ms: 10_000,
        label: "StepEnd[0]".into(),
        step_index: Some(1),
        is_step_end: true,
        ..StimulusEvent::default()
    }];
    s
}

fn sides(a: &str, b: &str) -> [Filter; 2] {
    [
        Filter {
            project_commit: vec![a.into()],
            ..Filter::default()
        },
        Filter {
            project_commit: vec![b.into()],
            ..Filter::default()
        },
    ]
}

fn pairing(runs: &[SidecarResult], sides: &[Filter; 2]) -> Pairing {
    let c = Contrast::of(&sides[0], &sides[1]);
    let mut p = Pairing::default();
    for s in runs {
        p.add(s, SIDE_A | SIDE_B, sides, c);
    }
    p
}

fn row<'a>(c: &'a Comparison, test: &str, metric: &str) -> &'a MetricRow {
    c.rows
        .iter()
        .find(|r| r.test_name == test && r.metric == metric && r.phase.is_none())
        .unwrap_or_else(|| panic!("no row {test} {metric}: {:#?}", c.rows))
}

/// Five runs per side around `base` and `base * (1 - drop)` with relative jitter
/// `noise` (a fixed pattern, so the test is deterministic).
fn synthetic(base: f64, drop: f64, noise: f64) -> Vec<SidecarResult> {
    let jitter = [0.0, 1.0, -1.0, 0.5, -0.5];
    let mut v = Vec::new();
    for (i, j) in jitter.iter().enumerate() {
        let a = base * (1.0 + noise * j);
        let b = base * (1.0 - drop) * (1.0 + noise * jitter[(i + 2) % 5]);
        v.push(run("steady", "aaaaaaa", a as u64, 50.0));
        v.push(run("steady", "bbbbbbb", b as u64, 50.0));
    }
    v
}

#[test]
fn a_ten_percent_drop_with_low_noise_is_a_regression() {
    let s = sides("aaaaaaa", "bbbbbbb");
    let c = judge(
        &pairing(&synthetic(100_000.0, 0.10, 0.01), &s),
        JudgeOptions::default(),
    );
    let r = row(&c, "steady", "work_rate");
    assert_eq!(r.verdict, Verdict::Regression, "{r:#?}");
    let j = r.judgement.expect("judged");
    assert!(j.separation.is_separated());
    assert!((j.delta_pct.expect("pct") + 10.0).abs() < 0.5, "{j:?}");
    assert_eq!(
        row(&c, "steady", "cgroup[cg0].work_rate").verdict,
        Verdict::Regression
    );
    // Unchanged latency stays unchanged.
    assert_eq!(
        row(&c, "steady", "cgroup[cg0].p99_wake_latency_us").verdict,
        Verdict::Unchanged
    );
    assert_eq!(c.counts.regressions, 2);
    assert_eq!(c.counts.pairs_compared, 1);
    let gate = FailPolicy {
        fail_threshold: 1,
        must_fail: vec![],
    }
    .check(&c);
    assert!(gate.failed && gate.reason.is_some());
}

#[test]
fn the_same_drop_under_high_noise_is_not() {
    let s = sides("aaaaaaa", "bbbbbbb");
    // ±25 % jitter: means still differ by ~10 %, ranges overlap, p > 0.05.
    let c = judge(
        &pairing(&synthetic(100_000.0, 0.10, 0.25), &s),
        JudgeOptions::default(),
    );
    let r = row(&c, "steady", "work_rate");
    assert_eq!(r.verdict, Verdict::Unchanged, "{r:#?}");
    let j = r.judgement.expect("judged");
    assert!(j.material, "the delta alone would matter");
    assert!(j.separation.p().is_some_and(|p| p >= 0.05), "{j:?}");
    assert_eq!(c.counts.regressions, 0);
    assert!(
        !FailPolicy {
            fail_threshold: 1,
            must_fail: vec!["*".into()]
        }
        .check(&c)
        .failed
    );
}

#[test]
fn a_side_with_one_run_is_noisy_never_a_regression() {
    let s = sides("aaaaaaa", "bbbbbbb");
    let runs = vec![
        run("t", "aaaaaaa", 100_000, 50.0),
        run("t", "aaaaaaa", 100_100, 50.0),
        run("t", "bbbbbbb", 50_000, 50.0),
    ];
    let c = judge(&pairing(&runs, &s), JudgeOptions::default());
    let r = row(&c, "t", "work_rate");
    assert_eq!(r.verdict, Verdict::Noisy);
    assert!(r.judgement.expect("judged").material);
    assert_eq!(c.counts.regressions, 0);
    assert!(c.counts.noisy_material >= 1);
    assert!(c.notes.iter().any(|n| n.contains("fewer than 2 runs")));
}

#[test]
fn lower_is_better_metrics_regress_upwards() {
    let s = sides("aaaaaaa", "bbbbbbb");
    let mut runs = Vec::new();
    for (a, b) in [(50.0, 70.0), (51.0, 71.0), (49.0, 69.0)] {
        runs.push(run("lat", "aaaaaaa", 1000, a));
        runs.push(run("lat", "bbbbbbb", 1000, b));
    }
    // And the same latency improving.
    for (a, b) in [(70.0, 50.0), (71.0, 51.0), (69.0, 49.0)] {
        runs.push(run("lat2", "aaaaaaa", 1000, a));
        runs.push(run("lat2", "bbbbbbb", 1000, b));
    }
    let c = judge(&pairing(&runs, &s), JudgeOptions::default());
    let up = row(&c, "lat", "cgroup[cg0].p99_wake_latency_us");
    assert_eq!(up.verdict, Verdict::Regression);
    assert!(up.judgement.expect("j").worse_by > 0.0);
    let down = row(&c, "lat2", "cgroup[cg0].p99_wake_latency_us");
    assert_eq!(down.verdict, Verdict::Improvement);
    // A throughput rise is an improvement, not a regression.
    let mut runs = Vec::new();
    for i in 0..3 {
        runs.push(run("thr", "aaaaaaa", 1000 + i, 50.0));
        runs.push(run("thr", "bbbbbbb", 1500 + i, 50.0));
    }
    let c = judge(&pairing(&runs, &s), JudgeOptions::default());
    assert_eq!(row(&c, "thr", "work_rate").verdict, Verdict::Improvement);
}

#[test]
fn target_value_polarity_judges_the_distance() {
    let a = [80.0, 81.0, 79.0];
    let b = [76.0, 75.0, 74.0];
    let (sa, sb) = (Summary::of(&a).expect("a"), Summary::of(&b).expect("b"));
    let t = Threshold {
        polarity: Polarity::TargetValue(75.0),
        min_abs: 0.0,
        min_rel: 0.01,
        source: ThresholdSource::Payload,
    };
    // The value fell, but towards the target: better.
    let j = judge_series(&sa, &sb, &a, &b, &t);
    assert_eq!(j.verdict, Verdict::Improvement, "{j:?}");
    let j = judge_series(&sb, &sa, &b, &a, &t);
    assert_eq!(j.verdict, Verdict::Regression, "{j:?}");
}

#[test]
fn expected_failures_failures_and_skips_stay_out_of_the_numbers() {
    let s = sides("aaaaaaa", "bbbbbbb");
    let mut runs = synthetic(100_000.0, 0.0, 0.01);
    // Runs of B that would look like a huge regression, but must not count.
    let mut xfail = run("steady", "bbbbbbb", 10, 50.0);
    xfail.expected_failure = true;
    let mut fail = run("steady", "bbbbbbb", 10, 50.0);
    fail.set_outcome(Outcome::Fail);
    let mut skip = run("steady", "bbbbbbb", 10, 50.0);
    skip.set_outcome(Outcome::Skip);
    let mut inc = run("steady", "aaaaaaa", 10, 50.0);
    inc.set_outcome(Outcome::Inconclusive);
    runs.extend([xfail, fail, skip, inc]);
    let c = judge(&pairing(&runs, &s), JudgeOptions::default());
    let r = row(&c, "steady", "work_rate");
    assert_eq!(r.verdict, Verdict::Unchanged, "{r:#?}");
    assert_eq!(r.b_values.len(), 5);
    assert!(r.b_values.iter().all(|&v| v > 1000.0));
    assert_eq!(
        c.counts.excluded_b,
        Excluded {
            expected_failure: 1,
            fail: 1,
            skip: 1,
            inconclusive: 0
        }
    );
    assert_eq!(c.counts.excluded_a.inconclusive, 1);
    assert_eq!(
        c.pairs[0].b.excluded.describe(),
        "1 fail, 1 skip, 1 expected_failure"
    );

    // A test whose B runs all failed: no numbers, a status instead.
    let mut runs = vec![run("t", "aaaaaaa", 100, 1.0)];
    let mut f = run("t", "bbbbbbb", 100, 1.0);
    f.set_outcome(Outcome::Fail);
    runs.push(f);
    runs.push(run("only_a", "aaaaaaa", 100, 1.0));
    let c = judge(&pairing(&runs, &s), JudgeOptions::default());
    let st: Vec<(String, PairStatus)> = c
        .pairs
        .iter()
        .map(|p| (p.test_name.clone(), p.status))
        .collect();
    assert_eq!(
        st,
        [
            ("only_a".to_string(), PairStatus::OnlyA),
            ("t".to_string(), PairStatus::NoUsableB)
        ]
    );
    assert!(c.rows.is_empty());
}

#[test]
fn a_sidecar_assertion_overrides_the_registry() {
    let s = sides("aaaaaaa", "bbbbbbb");
    // A 3 % drop: below the registry's 5 % for work_rate.
    let base = synthetic(100_000.0, 0.03, 0.001);
    let c = judge(&pairing(&base, &s), JudgeOptions::default());
    let r = row(&c, "steady", "work_rate");
    assert_eq!(r.verdict, Verdict::Unchanged);
    assert_eq!(r.threshold.source, ThresholdSource::Registry);

    // The test says 2 % is too much.
    let mut strict = base.clone();
    for s in &mut strict {
        s.perf_delta_assertions = vec![PerfDeltaAssertionRecord {
            metric: "work_rate".into(),
            max_regression_pct: Some(2.0),
            ..PerfDeltaAssertionRecord::default()
        }];
    }
    let c = judge(&pairing(&strict, &s), JudgeOptions::default());
    let r = row(&c, "steady", "work_rate");
    assert_eq!(r.verdict, Verdict::Regression, "{r:#?}");
    assert_eq!(r.threshold.source, ThresholdSource::Assertion);
    assert_eq!(r.threshold.min_rel, 0.02);
    // Only the named metric is affected: the cgroup rate keeps the registry's gate.
    assert_eq!(
        row(&c, "steady", "cgroup[cg0].work_rate").threshold.source,
        ThresholdSource::Registry
    );

    // The test says the direction is the other way round: the drop is an improvement.
    let mut reversed = strict.clone();
    for s in &mut reversed {
        s.perf_delta_assertions[0].direction = Some(Polarity::LowerBetter);
    }
    let c = judge(&pairing(&reversed, &s), JudgeOptions::default());
    assert_eq!(row(&c, "steady", "work_rate").verdict, Verdict::Improvement);

    // An assertion on a phase brings that phase's row in, gated by it.
    let mut phased = base.clone();
    for s in &mut phased {
        s.stats.phases = vec![ktstr_sidecar::stats::PhaseBucket {
            step_index: 1,
            start_ms: 0,
            end_ms: 10_000,
            per_cgroup: [(
                "cg0".to_string(),
                ktstr_sidecar::stats::PhaseCgroupStats {
                    total_iterations: s.stats.total_iterations,
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        }];
        s.perf_delta_assertions = vec![PerfDeltaAssertionRecord {
            metric: "work_rate".into(),
            max_regression_pct: Some(1.0),
            phase: Some(1),
            ..PerfDeltaAssertionRecord::default()
        }];
    }
    let c = judge(&pairing(&phased, &s), JudgeOptions::default());
    let p1 = c
        .rows
        .iter()
        .find(|r| r.metric == "work_rate" && r.phase == Some(1))
        .expect("phase row");
    assert_eq!(p1.verdict, Verdict::Regression);
    assert_eq!(p1.label(), "work_rate@1");
    assert_eq!(row(&c, "steady", "work_rate").verdict, Verdict::Unchanged);
    assert!(!c
        .rows
        .iter()
        .any(|r| r.phase.is_some() && r.metric != "work_rate"));
}

#[test]
fn notable_only_keeps_the_counts_and_drops_quiet_rows() {
    let s = sides("aaaaaaa", "bbbbbbb");
    let p = pairing(&synthetic(100_000.0, 0.10, 0.01), &s);
    let all = judge(&p, JudgeOptions::default());
    let some = judge(
        &p,
        JudgeOptions {
            notable_only: true,
            ..JudgeOptions::default()
        },
    );
    assert_eq!(all.counts, some.counts);
    assert!(all.rows.len() > some.rows.len());
    assert_eq!(some.rows.len(), 2);
    assert!(some.rows.iter().all(|r| r.verdict == Verdict::Regression));
    assert_eq!(
        FailPolicy::default().check(&some),
        FailPolicy::default().check(&all)
    );
}

#[test]
fn runs_reporting_different_metric_sets_aggregate_by_name() {
    let s = sides("aaaaaaa", "bbbbbbb");
    let mut first = run("t", "aaaaaaa", 1000, 0.0);
    first.stats.cgroups[0].wake_measured = false;
    first.stats.cgroups[0].spread = Some(3.0);
    first.stats.worst_spread = 3.0;
    let runs = vec![
        first,
        run("t", "aaaaaaa", 1001, 50.0),
        run("t", "aaaaaaa", 1002, 52.0),
        run("t", "bbbbbbb", 1000, 51.0),
        run("t", "bbbbbbb", 1001, 51.0),
    ];
    let c = judge(&pairing(&runs, &s), JudgeOptions::default());
    assert_eq!(row(&c, "t", "work_rate").a_values, [100.0, 100.1, 100.2]);
    let p99 = row(&c, "t", "cgroup[cg0].p99_wake_latency_us");
    assert_eq!(p99.a_values, [50.0, 52.0]);
    assert_eq!(p99.b_values, [51.0, 51.0]);
    let spread = row(&c, "t", "worst_spread");
    assert_eq!(spread.verdict, Verdict::Missing);
    assert_eq!(spread.a_values, [3.0]);
}

#[test]
fn must_fail_names_metrics_that_always_gate() {
    let s = sides("aaaaaaa", "bbbbbbb");
    let c = judge(
        &pairing(&synthetic(100_000.0, 0.10, 0.01), &s),
        JudgeOptions::default(),
    );
    let off = FailPolicy {
        fail_threshold: 0,
        must_fail: vec![],
    };
    assert!(!off.check(&c).failed);
    let high = FailPolicy {
        fail_threshold: 5,
        must_fail: vec!["p99_wake_latency_us".into()],
    };
    assert!(!high.check(&c).failed);
    let named = FailPolicy {
        fail_threshold: 5,
        must_fail: vec!["cgroup[*].work_rate".into()],
    };
    let g = named.check(&c);
    assert!(g.failed);
    assert_eq!(g.must_fail_hits, ["steady cgroup[cg0].work_rate"]);
}

#[test]
fn filters_and_contrast_pairing() {
    let mut s = run("t", "abc1234-dirty", 1, 1.0);
    s.kernel_version = Some("7.2.13+deb14-cloud-amd64".into());
    let f = |k: &str| Filter {
        kernel: vec![k.into()],
        ..Filter::default()
    };
    assert!(f("7.2").matches(&s) && f("7.2.13").matches(&s) && !f("7.20").matches(&s));
    assert!(f("7.2.13+deb14-cloud-amd64").matches(&s) && f("7*amd64").matches(&s));
    assert!(commit_matches("abc1234", "abc1234") && commit_matches("abc12", "abc1234"));
    assert!(commit_matches("abc1234567890", "abc1234"));
    assert!(!commit_matches("abc1234", "abc1234-dirty"));
    assert!(
        commit_matches("abc1234-dirty", "abc1234-dirty")
            && commit_matches("abc1234*", "abc1234-dirty")
    );
    assert!(!commit_matches("abc", "abc1234"), "too short");
    let rs = Filter {
        run_source: vec!["local".into()],
        ..Filter::default()
    };
    assert!(rs.matches(&s));
    s.run_source = None;
    assert!(!rs.matches(&s));
    let unknown = Filter {
        run_source: vec!["unknown".into()],
        test: vec!["t*".into()],
        ..Filter::default()
    };
    assert!(unknown.matches(&s));

    let shared = Filter {
        kernel: vec!["7.2".into()],
        scheduler: vec!["eevdf".into()],
        ..Filter::default()
    };
    let side = Filter {
        scheduler: vec!["scx_lavd".into()],
        ..Filter::default()
    };
    let merged = shared.with_side(&side);
    assert_eq!(merged.kernel, ["7.2"]);
    assert_eq!(merged.scheduler, ["scx_lavd"]);
    assert_eq!(merged.describe(), "kernel=7.2 scheduler=scx_lavd");
    assert_eq!(Filter::default().describe(), "all runs");

    // Scheduler A vs B: the same test under two schedulers pairs up.
    let sides = [shared.clone(), merged];
    let mut x = run("t", "aaaaaaa", 100, 1.0);
    x.sysctls = vec!["sysctl.kernel.x=1".into()];
    let mut y = x.clone();
    y.scheduler = "scx_lavd".into();
    y.sysctls = vec!["sysctl.kernel.x=2".into()];
    assert_ne!(x.variant_hash(), y.variant_hash());
    let c = judge(
        &pairing(&[x.clone(), y.clone()], &sides),
        JudgeOptions::default(),
    );
    assert_eq!(c.pairs.len(), 1);
    assert_eq!(c.pairs[0].status, PairStatus::Compared);
    assert_eq!(c.pairs[0].b.schedulers, ["scx_lavd"]);
    // Without the contrast they are different variants.
    assert_ne!(
        PairKey::of(&x, Contrast::default()),
        PairKey::of(&y, Contrast::default())
    );
}
