//! Pairing: runs of the same test variant on both sides ([`PairKey`]), each side's runs
//! of a pair accumulated ([`SideAcc`]), and a whole listing read and paired
//! ([`pair_listing`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use ktstr_sidecar::error::{Result, SidecarError};
use ktstr_sidecar::hash::VariantKey;
use ktstr_sidecar::perf_delta::PerfDeltaAssertionRecord;
use ktstr_sidecar::sidecar::SidecarResult;
use ktstr_sidecar::verdict::Outcome;
use serde::Serialize;

use crate::metrics::{self, MetricSpec};
use crate::scan::{self, Listing, SidecarFile};

use super::{Contrast, Filter, JudgeOptions, SIDE_A, SIDE_B};

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

    pub(super) fn add(&mut self, o: &Excluded) {
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
