//! Comparing two sides of a pool, A (the baseline) and B (the candidate): which runs
//! belong to which side ([`Filter`]), which runs are the same test variant on both sides
//! ([`PairKey`]), several runs per side aggregated, and a verdict per metric
//! ([`judge`]): a regression needs the difference to be real (see [`crate::noise`]) and
//! material (the registry's thresholds, or the test's own `perf_delta_assertions`).
//!
//! Only clean passes enter the numbers: runs that failed, were skipped or
//! inconclusive, and runs whose pass is an `expected_failure`, are counted per side and
//! left out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Result, SidecarError};
use crate::hash::{format_hash, VariantKey};
use crate::metrics::{self, MetricSpec};
use crate::noise::{Separation, Summary};
use crate::payload::Polarity;
use crate::perf_delta::PerfDeltaAssertionRecord;
use crate::scan::{self, Listing, SidecarFile};
use crate::sidecar::SidecarResult;
use crate::verdict::Outcome;

/// Mask bit of side A in [`crate::scan::Source::mask`].
pub const SIDE_A: u8 = 1;
/// Mask bit of side B.
pub const SIDE_B: u8 = 2;

/// Which sidecars a side takes. Every dimension holds alternatives (empty = any); a
/// sidecar must match one alternative of every non-empty dimension.
///
/// Matching: `kernel` equals the kernel release or is a prefix of it ending at a
/// `.`, `-`, `+` or `~` (`7.2` takes `7.2.13+deb14-cloud-amd64`, not `7.20`); commits
/// match by hex prefix in either direction, `-dirty` only when asked for
/// (`abc1234-dirty`), and a `*` pattern globs the whole label; `test` globs the test
/// name; the rest compare exactly. `unknown` matches a sidecar without the value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filter {
    pub test: Vec<String>,
    pub kernel: Vec<String>,
    pub scheduler: Vec<String>,
    pub topology: Vec<String>,
    pub work_type: Vec<String>,
    pub project_commit: Vec<String>,
    pub kernel_commit: Vec<String>,
    pub run_source: Vec<String>,
}

impl Filter {
    /// Whether `s` is selected.
    pub fn matches(&self, s: &SidecarResult) -> bool {
        let any = |alts: &[String], m: &dyn Fn(&str) -> bool| {
            alts.is_empty() || alts.iter().any(|a| m(a))
        };
        let opt = |v: Option<&str>, a: &str, m: &dyn Fn(&str, &str) -> bool| match v {
            Some(v) => m(a, v),
            None => a == crate::paths::UNKNOWN,
        };
        any(&self.test, &|a| metrics::glob(a, &s.test_name))
            && any(&self.kernel, &|a| {
                opt(s.kernel_version.as_deref(), a, &kernel_matches)
            })
            && any(&self.scheduler, &|a| a == s.scheduler)
            && any(&self.topology, &|a| a == s.topology)
            && any(&self.work_type, &|a| a == s.work_type)
            && any(&self.project_commit, &|a| {
                opt(s.project_commit.as_deref(), a, &commit_matches)
            })
            && any(&self.kernel_commit, &|a| {
                opt(s.kernel_commit.as_deref(), a, &commit_matches)
            })
            && any(&self.run_source, &|a| {
                opt(s.run_source.map(|r| r.as_str()), a, &|a, v| a == v)
            })
    }

    /// This filter refined by a side's own: every dimension the side sets replaces
    /// this one's.
    pub fn with_side(&self, side: &Filter) -> Filter {
        let pick = |shared: &Vec<String>, own: &Vec<String>| {
            if own.is_empty() {
                shared.clone()
            } else {
                own.clone()
            }
        };
        Filter {
            test: pick(&self.test, &side.test),
            kernel: pick(&self.kernel, &side.kernel),
            scheduler: pick(&self.scheduler, &side.scheduler),
            topology: pick(&self.topology, &side.topology),
            work_type: pick(&self.work_type, &side.work_type),
            project_commit: pick(&self.project_commit, &side.project_commit),
            kernel_commit: pick(&self.kernel_commit, &side.kernel_commit),
            run_source: pick(&self.run_source, &side.run_source),
        }
    }

    fn dims(&self) -> [(&'static str, &Vec<String>); 8] {
        [
            ("test", &self.test),
            ("kernel", &self.kernel),
            ("scheduler", &self.scheduler),
            ("topology", &self.topology),
            ("work_type", &self.work_type),
            ("project_commit", &self.project_commit),
            ("kernel_commit", &self.kernel_commit),
            ("run_source", &self.run_source),
        ]
    }

    /// `kernel=7.2 project_commit=abc1234`, or `all runs`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .dims()
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", v.join("|")))
            .collect();
        if parts.is_empty() {
            "all runs".into()
        } else {
            parts.join(" ")
        }
    }
}

/// `7.2` matches `7.2`, `7.2.13`, `7.2-rc1`, `7.2+deb`, not `7.20`.
pub fn kernel_matches(pattern: &str, release: &str) -> bool {
    if pattern.contains('*') {
        return metrics::glob(pattern, release);
    }
    match release.strip_prefix(pattern) {
        Some("") => true,
        Some(rest) => rest.starts_with(['.', '-', '+', '~']),
        None => false,
    }
}

/// Commit labels (`abc1234`, `abc1234-dirty`): hex prefix in either direction (at least
/// 4 digits), `-dirty` must agree; a pattern with `*` globs the label.
pub fn commit_matches(pattern: &str, label: &str) -> bool {
    if pattern.contains('*') {
        return metrics::glob(pattern, label);
    }
    let split = |s: &str| match s.strip_suffix("-dirty") {
        Some(h) => (h.to_ascii_lowercase(), true),
        None => (s.to_ascii_lowercase(), false),
    };
    let (ph, pd) = split(pattern);
    let (lh, ld) = split(label);
    pd == ld && ph.len().min(lh.len()) >= 4 && (ph.starts_with(&lh) || lh.starts_with(&ph))
}

/// Which variant dimensions the two sides were chosen to differ in. Those are left out
/// of the pairing key, so `--a-scheduler x --b-scheduler y` pairs each test's run under
/// x with its run under y. A contrasted scheduler takes its sysctls and kargs along.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Contrast {
    pub scheduler: bool,
    pub topology: bool,
    pub work_type: bool,
}

impl Contrast {
    pub fn of(a: &Filter, b: &Filter) -> Contrast {
        Contrast {
            scheduler: a.scheduler != b.scheduler,
            topology: a.topology != b.topology,
            work_type: a.work_type != b.work_type,
        }
    }
}

/// What pairs runs across the sides: the test and its variant hash (with contrasted
/// dimensions left out, see [`Contrast`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PairKey {
    pub test_name: String,
    pub variant: u64,
}

impl PairKey {
    pub fn of(s: &SidecarResult, c: Contrast) -> PairKey {
        let none: &[String] = &[];
        let key = VariantKey {
            topology: if c.topology { "*" } else { &s.topology },
            scheduler: if c.scheduler { "*" } else { &s.scheduler },
            payload: s.payload.as_deref(),
            work_type: if c.work_type { "*" } else { &s.work_type },
            sysctls: if c.scheduler { none } else { &s.sysctls },
            kargs: if c.scheduler { none } else { &s.kargs },
        };
        PairKey {
            test_name: s.test_name.clone(),
            variant: key.hash(),
        }
    }
}

/// Runs a side left out of the numbers, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Excluded {
    /// Passed only because `expect_err` inverted a failure.
    pub expected_failure: usize,
    pub fail: usize,
    pub skip: usize,
    pub inconclusive: usize,
}

impl Excluded {
    pub fn total(&self) -> usize {
        self.expected_failure + self.fail + self.skip + self.inconclusive
    }

    fn add(&mut self, o: &Excluded) {
        self.expected_failure += o.expected_failure;
        self.fail += o.fail;
        self.skip += o.skip;
        self.inconclusive += o.inconclusive;
    }

    /// `2 fail, 1 expected_failure`, empty when nothing was excluded.
    pub fn describe(&self) -> String {
        [
            (self.fail, "fail"),
            (self.inconclusive, "inconclusive"),
            (self.skip, "skip"),
            (self.expected_failure, "expected_failure"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// (phase, metric name) of a series; whole-run values have phase None. Names are
/// shared copies (see [`metrics::intern`]).
pub type SeriesKey = (Option<u16>, Arc<str>);

/// One side's values of every metric, grouped by metric ([`SideAcc::columns`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    values: Vec<f64>,
    /// Metric `i` has `values[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<usize>,
}

impl Columns {
    /// The values of the metric at position `i` of [`SideAcc::metrics`], in run order.
    pub fn get(&self, i: usize) -> &[f64] {
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.values[a..b],
            _ => &[],
        }
    }
}

/// Everything one side holds of one pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SideAcc {
    /// Runs that entered the numbers.
    pub runs: usize,
    /// Their run ids, one per line (one buffer, not one allocation per run).
    pub run_ids: String,
    pub excluded: Excluded,
    pub kernels: BTreeSet<String>,
    pub commits: BTreeSet<String>,
    pub schedulers: BTreeSet<String>,
    pub topologies: BTreeSet<String>,
    /// Real variant hashes (hex) of the runs.
    pub variant_hashes: BTreeSet<String>,
    /// Every metric seen, keyed by (phase, metric name) (whole-run values have phase
    /// None), in the order first seen.
    pub metrics: Vec<(SeriesKey, MetricSpec)>,
    /// Position in `metrics` of each key.
    index: HashMap<SeriesKey, usize>,
    /// Every value of every run, as (position in `metrics`, value), in run order: one
    /// buffer per side rather than one per metric keeps a big comparison's heap small.
    samples: Vec<(u32, f64)>,
    /// The tests' own gates, deduplicated.
    pub assertions: Vec<PerfDeltaAssertionRecord>,
}

/// Why a run stays out of the numbers; None = it enters them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exclusion {
    ExpectedFailure,
    Fail,
    Skip,
    Inconclusive,
}

/// What a side keeps of one selected sidecar: taken out of the parsed sidecar on the
/// worker thread, so the merge only files it away.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    pub key: PairKey,
    /// Which sides take it.
    take: [bool; 2],
    work_type: String,
    payload: Option<String>,
    kernel: Option<String>,
    commit: Option<String>,
    scheduler: String,
    topology: String,
    variant_hash: String,
    assertions: Vec<PerfDeltaAssertionRecord>,
    exclusion: Option<Exclusion>,
    run_id: String,
    values: Vec<metrics::MetricValue>,
}

impl Selected {
    /// Select `s` (offered to the sides in `mask`): None when no side
    /// takes it. Metrics are extracted only for runs that enter the numbers, per phase
    /// only with `phases` or when the test's assertions name a phase.
    pub fn of(
        s: SidecarResult,
        mask: u8,
        sides: &[Filter; 2],
        contrast: Contrast,
        phases: bool,
    ) -> Option<Selected> {
        let take = [
            mask & SIDE_A != 0 && sides[0].matches(&s),
            mask & SIDE_B != 0 && sides[1].matches(&s),
        ];
        if !take.iter().any(|&t| t) {
            return None;
        }
        let exclusion = if s.expected_failure {
            Some(Exclusion::ExpectedFailure)
        } else {
            match s.outcome() {
                Outcome::Pass => None,
                Outcome::Fail => Some(Exclusion::Fail),
                Outcome::Skip => Some(Exclusion::Skip),
                Outcome::Inconclusive => Some(Exclusion::Inconclusive),
            }
        };
        let with_phases = phases || s.perf_delta_assertions.iter().any(|a| a.phase.is_some());
        let values = if exclusion.is_none() {
            metrics::extract_with(&s, with_phases)
        } else {
            Vec::new()
        };
        Some(Selected {
            key: PairKey::of(&s, contrast),
            take,
            variant_hash: s.variant_hash_hex(),
            work_type: s.work_type,
            payload: s.payload,
            kernel: s.kernel_version,
            commit: s.project_commit,
            scheduler: s.scheduler,
            topology: s.topology,
            assertions: s.perf_delta_assertions,
            exclusion,
            run_id: s.run_id,
            values,
        })
    }
}

impl SideAcc {
    fn add(&mut self, sel: &Selected, values: Vec<metrics::MetricValue>) {
        if let Some(k) = &sel.kernel {
            if !self.kernels.contains(k) {
                self.kernels.insert(k.clone());
            }
        }
        if let Some(c) = &sel.commit {
            if !self.commits.contains(c) {
                self.commits.insert(c.clone());
            }
        }
        if !self.schedulers.contains(&sel.scheduler) {
            self.schedulers.insert(sel.scheduler.clone());
        }
        if !self.topologies.contains(&sel.topology) {
            self.topologies.insert(sel.topology.clone());
        }
        if !self.variant_hashes.contains(&sel.variant_hash) {
            self.variant_hashes.insert(sel.variant_hash.clone());
        }
        for a in &sel.assertions {
            if !self.assertions.contains(a) {
                self.assertions.push(a.clone());
            }
        }
        let excluded = &mut self.excluded;
        match sel.exclusion {
            Some(Exclusion::ExpectedFailure) => return excluded.expected_failure += 1,
            Some(Exclusion::Fail) => return excluded.fail += 1,
            Some(Exclusion::Skip) => return excluded.skip += 1,
            Some(Exclusion::Inconclusive) => return excluded.inconclusive += 1,
            None => {}
        }
        self.runs += 1;
        self.run_ids.push_str(&sel.run_id);
        self.run_ids.push('\n');
        if self.metrics.is_empty() {
            // Sized by the first run, in one allocation each.
            self.metrics.reserve_exact(values.len());
            self.index.reserve(values.len());
        }
        self.samples.reserve(values.len());
        // Runs of one variant report the same metrics in the same order: the i-th value
        // most likely belongs to the i-th metric, which saves the lookup.
        for (i, v) in values.into_iter().enumerate() {
            if let Some((k, _)) = self.metrics.get(i) {
                if k.0 == v.phase && (Arc::ptr_eq(&k.1, &v.name) || *k.1 == *v.name) {
                    self.samples.push((i as u32, v.value));
                    continue;
                }
            }
            let key = (v.phase, v.name);
            let at = match self.index.get(&key) {
                Some(&at) => at,
                None => {
                    self.index.insert(key.clone(), self.metrics.len());
                    self.metrics.push((key, v.spec));
                    self.metrics.len() - 1
                }
            };
            self.samples.push((at as u32, v.value));
        }
    }

    /// Position in [`SideAcc::metrics`] of a metric.
    pub fn position(&self, key: &SeriesKey) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// Every metric key, in the order first seen.
    pub fn series_keys(&self) -> impl Iterator<Item = &SeriesKey> {
        self.metrics.iter().map(|(k, _)| k)
    }

    /// The values grouped by metric (a counting sort of the samples; run order kept).
    pub fn columns(&self) -> Columns {
        let mut offsets = vec![0usize; self.metrics.len() + 1];
        for &(i, _) in &self.samples {
            offsets[i as usize + 1] += 1;
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let mut next = offsets.clone();
        let mut values = vec![0.0; self.samples.len()];
        for &(i, v) in &self.samples {
            values[next[i as usize]] = v;
            next[i as usize] += 1;
        }
        Columns { values, offsets }
    }

    /// Whether any run of this side was seen (usable or not).
    pub fn seen(&self) -> bool {
        self.runs > 0 || self.excluded.total() > 0
    }
}

/// Both sides of one pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairAcc {
    pub work_type: String,
    pub payload: Option<String>,
    pub sides: [SideAcc; 2],
}

/// Every pair of a comparison, with the files that could not be read.
#[derive(Debug, Default)]
pub struct Pairing {
    pub pairs: BTreeMap<PairKey, PairAcc>,
    pub errors: Vec<SidecarError>,
    /// Files read.
    pub files: usize,
    /// Sidecars selected by side A and side B.
    pub selected: [usize; 2],
    /// Keep per-phase values of every run (otherwise only of runs whose assertions
    /// name a phase).
    pub keep_phases: bool,
}

impl Pairing {
    /// File a selected sidecar under its pair.
    pub fn insert(&mut self, mut sel: Selected) {
        let values = std::mem::take(&mut sel.values);
        let pair = match self.pairs.get_mut(&sel.key) {
            Some(p) => p,
            None => self
                .pairs
                .entry(sel.key.clone())
                .or_insert_with(|| PairAcc {
                    work_type: sel.work_type.clone(),
                    payload: sel.payload.clone(),
                    ..PairAcc::default()
                }),
        };
        match sel.take {
            [true, true] => {
                pair.sides[0].add(&sel, values.clone());
                pair.sides[1].add(&sel, values);
            }
            [true, false] => pair.sides[0].add(&sel, values),
            [false, true] => pair.sides[1].add(&sel, values),
            [false, false] => return,
        }
        for (i, t) in sel.take.iter().enumerate() {
            self.selected[i] += usize::from(*t);
        }
    }

    /// Add one sidecar; `mask` says which sides may take it.
    pub fn add(&mut self, s: &SidecarResult, mask: u8, sides: &[Filter; 2], contrast: Contrast) {
        if let Some(sel) = Selected::of(s.clone(), mask, sides, contrast, self.keep_phases) {
            self.insert(sel);
        }
    }
}

/// Read every file of `listing` (in parallel, see [`scan::fold_merge`]) and pair the
/// ones the sides select (with per-phase values when `opts.phases`). A file is offered
/// to side A when its mask has [`SIDE_A`], to B when it has [`SIDE_B`]. `errors` holds
/// the files that could not be read; directories that could not be listed are in
/// `listing.errors`.
pub fn pair_listing(
    listing: &Listing,
    sides: &[Filter; 2],
    threads: usize,
    opts: JudgeOptions,
) -> Pairing {
    let contrast = Contrast::of(&sides[0], &sides[1]);
    let mut all = Pairing {
        keep_phases: opts.phases,
        ..Pairing::default()
    };
    #[derive(Default)]
    struct Chunk {
        selected: Vec<Selected>,
        errors: Vec<SidecarError>,
        files: usize,
    }
    // Every run of one variant in a row: its accumulator stays in the cache while its
    // runs are filed (in directory order, the pool's pairs would be visited round-robin
    // and a big pool would miss the cache on every file).
    let files = listing.files_by_name();
    scan::fold_merge_files(
        listing,
        &files,
        threads,
        Chunk::default,
        |acc: &mut Chunk, f: &SidecarFile, _: &Path, r: Result<SidecarResult>| {
            acc.files += 1;
            match r {
                Ok(s) => acc
                    .selected
                    .extend(Selected::of(s, f.mask, sides, contrast, opts.phases)),
                Err(e) => acc.errors.push(e),
            }
        },
        |chunk| {
            all.files += chunk.files;
            all.errors.extend(chunk.errors);
            for sel in chunk.selected {
                all.insert(sel);
            }
        },
    );
    all
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::RunSource;
    use crate::stats::CgroupStats;
    use crate::stimulus::StimulusEvent;

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
            s.stats.phases = vec![crate::stats::PhaseBucket {
                step_index: 1,
                start_ms: 0,
                end_ms: 10_000,
                per_cgroup: [(
                    "cg0".to_string(),
                    crate::stats::PhaseCgroupStats {
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
}
