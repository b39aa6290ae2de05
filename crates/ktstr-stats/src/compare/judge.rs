//! Judging: per pair and metric, whether B differs from A for real (see
//! [`crate::noise`]) and materially ([`Threshold`]), summed up in a [`Comparison`].

use std::collections::BTreeSet;

use ktstr_sidecar::hash::format_hash;
use ktstr_sidecar::payload::Polarity;
use ktstr_sidecar::perf_delta::PerfDeltaAssertionRecord;
use serde::Serialize;

use super::{Excluded, Pairing, SeriesKey, SideAcc};
use crate::metrics::{self, MetricSpec};
use crate::noise::{Separation, Summary};

/// Where a row's direction and thresholds came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdSource {
    Registry,
    /// A payload's declared polarity with the registry's payload thresholds.
    Payload,
    /// The test's `perf_delta_assertions`.
    Assertion,
}

/// How one metric is judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Threshold {
    pub polarity: Polarity,
    /// The worsening must exceed this, in the metric's unit.
    pub min_abs: f64,
    /// ...and exceed this share of the baseline mean (0.1 = 10 %).
    pub min_rel: f64,
    pub source: ThresholdSource,
}

impl Threshold {
    /// The registry's (or payload's) threshold of `spec`, unless an assertion of the test
    /// names this metric (and phase): then its direction and limits win.
    pub fn resolve(
        spec: &MetricSpec,
        name: &str,
        phase: Option<u16>,
        assertions: &[PerfDeltaAssertionRecord],
    ) -> Threshold {
        let mut t = Threshold {
            polarity: spec.polarity(),
            min_abs: spec.def.min_abs,
            min_rel: spec.def.min_rel,
            source: if spec.declared.is_some() {
                ThresholdSource::Payload
            } else {
                ThresholdSource::Registry
            },
        };
        if let Some(a) = assertions
            .iter()
            .find(|a| a.phase == phase && metrics::name_matches(&a.metric, name))
        {
            if let Some(d) = a.direction {
                t.polarity = d;
            }
            if let Some(pct) = a.max_regression_pct {
                t.min_rel = pct / 100.0;
            }
            if let Some(abs) = a.min_abs {
                t.min_abs = abs;
            }
            t.source = ThresholdSource::Assertion;
        }
        t
    }
}

/// The verdict on one metric of one pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// B is worse, beyond noise and beyond the thresholds.
    Regression,
    /// B is better, beyond noise and beyond the thresholds.
    Improvement,
    /// A side has fewer than two runs: the difference cannot be judged.
    Noisy,
    /// Within noise or below the thresholds.
    Unchanged,
    /// The metric never gates.
    Informational,
    /// Only one side has the metric.
    Missing,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Regression => "REGRESSION",
            Verdict::Improvement => "improvement",
            Verdict::Noisy => "noisy",
            Verdict::Unchanged => "unchanged",
            Verdict::Informational => "info",
            Verdict::Missing => "missing",
        }
    }
}

/// The judgement of two series of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Judgement {
    /// `mean_b - mean_a`.
    pub delta: f64,
    /// `delta` as percent of `|mean_a|` (None when `mean_a` is 0).
    pub delta_pct: Option<f64>,
    /// How much worse B is, in the metric's unit (negative: better). For a target
    /// value, the growth of the distance to the target.
    pub worse_by: f64,
    pub separation: Separation,
    /// The worsening (or improvement) passes both thresholds.
    pub material: bool,
    pub verdict: Verdict,
}

/// Judge B against A: real (separated) and material, in the direction `t` says.
pub fn judge_series(
    a: &Summary,
    b: &Summary,
    a_values: &[f64],
    b_values: &[f64],
    t: &Threshold,
) -> Judgement {
    let delta = b.mean - a.mean;
    let delta_pct = (a.mean != 0.0).then(|| delta * 100.0 / a.mean.abs());
    let (worse_by, separation) = match t.polarity {
        Polarity::HigherBetter => (-delta, Separation::of(a, b)),
        Polarity::LowerBetter | Polarity::Unknown | Polarity::Informational => {
            (delta, Separation::of(a, b))
        }
        Polarity::TargetValue(target) => {
            let dist = |v: &[f64]| v.iter().map(|x| (x - target).abs()).collect::<Vec<f64>>();
            let (da, db) = (dist(a_values), dist(b_values));
            match (Summary::of(&da), Summary::of(&db)) {
                (Some(sa), Some(sb)) => (sb.mean - sa.mean, Separation::of(&sa, &sb)),
                _ => (0.0, Separation::Noisy),
            }
        }
    };
    let size = worse_by.abs();
    let rel = if a.mean == 0.0 {
        if size > 0.0 {
            f64::INFINITY
        } else {
            0.0
        }
    } else {
        size / a.mean.abs()
    };
    let material = size > t.min_abs && rel > t.min_rel;
    let verdict = if t.polarity == Polarity::Informational {
        Verdict::Informational
    } else if separation == Separation::Noisy {
        Verdict::Noisy
    } else if separation.is_separated() && material {
        if worse_by > 0.0 {
            Verdict::Regression
        } else {
            Verdict::Improvement
        }
    } else {
        Verdict::Unchanged
    };
    Judgement {
        delta,
        delta_pct,
        worse_by,
        separation,
        material,
        verdict,
    }
}

/// One metric of one pair, judged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricRow {
    pub test_name: String,
    /// Pairing variant (hex).
    pub variant: String,
    pub metric: String,
    pub phase: Option<u16>,
    pub unit: String,
    pub threshold: Threshold,
    pub a: Option<Summary>,
    pub b: Option<Summary>,
    pub a_values: Vec<f64>,
    pub b_values: Vec<f64>,
    /// None when a side lacks the metric.
    pub judgement: Option<Judgement>,
    pub verdict: Verdict,
}

impl MetricRow {
    /// `metric` with `@phase` appended for a phase value.
    pub fn label(&self) -> String {
        match self.phase {
            Some(p) => format!("{}@{p}", self.metric),
            None => self.metric.clone(),
        }
    }
}

/// How one pair fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PairStatus {
    /// Both sides have usable runs: metrics were judged.
    Compared,
    /// Only A ran this variant.
    OnlyA,
    /// Only B ran this variant.
    OnlyB,
    /// A ran it, but no run of A is usable (see its exclusions).
    NoUsableA,
    /// B ran it, but no run of B is usable: a functional change, not a perf one.
    NoUsableB,
    /// Both ran it, neither has a usable run.
    NoUsable,
}

/// One side of one pair, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideInfo {
    pub runs: usize,
    pub excluded: Excluded,
    pub kernels: Vec<String>,
    pub commits: Vec<String>,
    pub schedulers: Vec<String>,
    pub topologies: Vec<String>,
    pub variant_hashes: Vec<String>,
    pub run_ids: Vec<String>,
}

impl SideInfo {
    fn of(s: &SideAcc) -> SideInfo {
        SideInfo {
            runs: s.runs,
            excluded: s.excluded,
            kernels: s.kernels.iter().cloned().collect(),
            commits: s.commits.iter().cloned().collect(),
            schedulers: s.schedulers.iter().cloned().collect(),
            topologies: s.topologies.iter().cloned().collect(),
            variant_hashes: s.variant_hashes.iter().cloned().collect(),
            run_ids: s.run_ids.lines().map(str::to_string).collect(),
        }
    }
}

/// One pair, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairReport {
    pub test_name: String,
    pub variant: String,
    pub work_type: String,
    pub payload: Option<String>,
    pub status: PairStatus,
    pub a: SideInfo,
    pub b: SideInfo,
}

/// Verdict counts of a comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub regressions: usize,
    pub improvements: usize,
    pub noisy: usize,
    /// Noisy rows whose difference would pass the thresholds.
    pub noisy_material: usize,
    pub unchanged: usize,
    pub informational: usize,
    pub missing: usize,
    /// Pairs compared / with one side only / without usable runs on a side.
    pub pairs_compared: usize,
    pub pairs_one_sided: usize,
    pub pairs_unusable: usize,
    /// Runs left out per side.
    pub excluded_a: Excluded,
    pub excluded_b: Excluded,
}

/// A judged comparison.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Comparison {
    /// What side A and B are (filters, commits).
    pub a_label: String,
    pub b_label: String,
    pub pairs: Vec<PairReport>,
    /// Every judged metric, by test, variant, phase, name.
    pub rows: Vec<MetricRow>,
    pub counts: Counts,
    /// Things a reader should know (mixed kernels within a side, ...).
    pub notes: Vec<String>,
}

/// Options of [`judge`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JudgeOptions {
    /// Judge per-phase values too (otherwise only phases an assertion names).
    pub phases: bool,
    /// Keep only the notable rows ([`is_notable`]) in [`Comparison::rows`]; the counts
    /// still cover every row.
    pub notable_only: bool,
}

/// Whether a verdict is worth showing without asking for everything: regressions,
/// improvements, and noisy differences that would matter.
pub fn is_notable(verdict: Verdict, judgement: Option<&Judgement>) -> bool {
    match verdict {
        Verdict::Regression | Verdict::Improvement => true,
        Verdict::Noisy => judgement.is_some_and(|j| j.material),
        _ => false,
    }
}

/// Judge every pair.
pub fn judge(pairing: &Pairing, opts: JudgeOptions) -> Comparison {
    let mut cmp = Comparison::default();
    let mut mixed_kernels = BTreeSet::new();
    for (key, pair) in &pairing.pairs {
        let [a, b] = &pair.sides;
        let variant = format_hash(key.variant);
        let status = match (a.seen(), b.seen()) {
            (true, false) => PairStatus::OnlyA,
            (false, _) => PairStatus::OnlyB,
            _ if a.runs == 0 && b.runs == 0 => PairStatus::NoUsable,
            _ if a.runs == 0 => PairStatus::NoUsableA,
            _ if b.runs == 0 => PairStatus::NoUsableB,
            _ => PairStatus::Compared,
        };
        let c = &mut cmp.counts;
        c.excluded_a.add(&a.excluded);
        c.excluded_b.add(&b.excluded);
        match status {
            PairStatus::Compared => c.pairs_compared += 1,
            PairStatus::OnlyA | PairStatus::OnlyB => c.pairs_one_sided += 1,
            PairStatus::NoUsableA | PairStatus::NoUsableB | PairStatus::NoUsable => {
                c.pairs_unusable += 1
            }
        }
        for (side, s) in [("A", a), ("B", b)] {
            if s.kernels.len() > 1 {
                mixed_kernels.insert(format!(
                    "{side} ({})",
                    s.kernels.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        cmp.pairs.push(PairReport {
            test_name: key.test_name.clone(),
            variant: variant.clone(),
            work_type: pair.work_type.clone(),
            payload: pair.payload.clone(),
            status,
            a: SideInfo::of(a),
            b: SideInfo::of(b),
        });
        if status != PairStatus::Compared {
            continue;
        }
        // The candidate's gates win; the baseline's apply when the candidate has none.
        let assertions = if b.assertions.is_empty() {
            &a.assertions
        } else {
            &b.assertions
        };
        let keys: BTreeSet<&SeriesKey> = a.series_keys().chain(b.series_keys()).collect();
        let (cols_a, cols_b) = (a.columns(), b.columns());
        for k in keys {
            let (phase, name) = (k.0, &*k.1);
            let (pa, pb) = (a.position(k), b.position(k));
            let spec = match (pa, pb) {
                (_, Some(i)) => &b.metrics[i].1,
                (Some(i), None) => &a.metrics[i].1,
                (None, None) => continue,
            };
            let asserted = assertions
                .iter()
                .any(|x| x.phase == phase && metrics::name_matches(&x.metric, name));
            if phase.is_some() && !opts.phases && !asserted {
                continue;
            }
            let threshold = Threshold::resolve(spec, name, phase, assertions);
            let av = pa.map_or(&[][..], |i| cols_a.get(i));
            let bv = pb.map_or(&[][..], |i| cols_b.get(i));
            let (sum_a, sum_b) = (Summary::of(av), Summary::of(bv));
            let judgement = match (&sum_a, &sum_b) {
                (Some(x), Some(y)) => Some(judge_series(x, y, av, bv, &threshold)),
                _ => None,
            };
            let verdict = judgement.map_or(Verdict::Missing, |j| j.verdict);
            let c = &mut cmp.counts;
            match verdict {
                Verdict::Regression => c.regressions += 1,
                Verdict::Improvement => c.improvements += 1,
                Verdict::Noisy => {
                    c.noisy += 1;
                    if judgement.is_some_and(|j| j.material) {
                        c.noisy_material += 1;
                    }
                }
                Verdict::Unchanged => c.unchanged += 1,
                Verdict::Informational => c.informational += 1,
                Verdict::Missing => c.missing += 1,
            }
            if opts.notable_only && !is_notable(verdict, judgement.as_ref()) {
                continue;
            }
            cmp.rows.push(MetricRow {
                test_name: key.test_name.clone(),
                variant: variant.clone(),
                metric: name.to_string(),
                phase,
                unit: spec.unit().to_string(),
                threshold,
                a: sum_a,
                b: sum_b,
                a_values: av.to_vec(),
                b_values: bv.to_vec(),
                judgement,
                verdict,
            });
        }
    }
    if !mixed_kernels.is_empty() {
        cmp.notes.push(format!(
            "runs of more than one kernel were aggregated within a side: {}; narrow with --kernel or --a-kernel/--b-kernel",
            mixed_kernels.into_iter().collect::<Vec<_>>().join("; ")
        ));
    }
    if cmp.counts.noisy_material > 0 {
        cmp.notes.push(format!(
            "{} material difference(s) could not be judged because a side has fewer than 2 runs; run more (perf-delta --noise-adjust N)",
            cmp.counts.noisy_material
        ));
    }
    cmp
}
