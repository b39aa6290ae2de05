//! `SidecarResult`: the top-level object of a `*.ktstr.json` file, one per test run.

#[cfg(feature = "provenance")]
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::hash::{format_hash, VariantKey};
use crate::host::HostContext;
use crate::kvm::KvmStatsTotals;
use crate::monitor::MonitorSummary;
use crate::payload::PayloadMetrics;
use crate::perf_delta::PerfDeltaAssertionRecord;
#[cfg(feature = "provenance")]
use crate::provenance;
use crate::stats::ScenarioStats;
use crate::stimulus::StimulusEvent;
use crate::verdict::{finalize, Finalized, Outcome, VerdictBits};
use crate::verifier::ProgVerifierStats;

/// One test run. Serialises to exactly the 32 keys of [`SidecarResult::KEYS`], in that
/// order; an absent `Option` is written as `null` and an empty list as `[]`.
///
/// Reading: a missing `Option` key reads as None, a missing non-`Option` key is an error
/// naming the key and the file, unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SidecarResult {
    /// Registered test name (no prefix), e.g. `steady_two_cgroups`.
    pub test_name: String,
    /// Topology label `{numa}n{llcs}l{cores per llc}c{threads per core}t`, e.g. `1n2l4c1t`.
    pub topology: String,
    /// Scheduler name (`scx_lavd`), or `eevdf` for the kernel's own scheduler.
    pub scheduler: String,
    /// Reserved for the scheduler's source commit; always null for now.
    pub scheduler_commit: Option<String>,
    /// How the scheduler binary was found; null for `eevdf`.
    pub resolve_source: Option<ResolveSource>,
    /// Short HEAD of the project's git repository, `-dirty` when it had uncommitted
    /// changes; null outside a repository.
    pub project_commit: Option<String>,
    /// Name of the primary payload; null when the test runs none.
    pub payload: Option<String>,
    /// One entry per payload invocation, in order.
    pub metrics: Vec<PayloadMetrics>,
    /// Final verdict: passed. At most one of `passed`/`skipped`/`inconclusive` is true;
    /// all three false means the run failed.
    pub passed: bool,
    /// Final verdict: skipped (the host cannot run it, or nothing was judged).
    pub skipped: bool,
    /// Final verdict: inconclusive (a check could not decide).
    pub inconclusive: bool,
    /// The raw run failed and `expect_err` inverted the final verdict to a pass.
    pub expected_failure: bool,
    /// Worker measurements, per cgroup, totals, per phase.
    pub stats: ScenarioStats,
    /// Summary of the periodic system samples; null when none was taken.
    pub monitor: Option<MonitorSummary>,
    /// Periodic snapshots that were taken.
    pub periodic_fired: u32,
    /// Periodic snapshots requested (`num_snapshots`).
    pub periodic_target: u32,
    /// Guest vCPUs.
    pub vcpus: u32,
    /// Host CPUs the vCPU threads were pinned to; less than `vcpus` means overcommit.
    pub cpu_budget: u32,
    /// Scenario step boundaries, in time order.
    pub stimulus_events: Vec<StimulusEvent>,
    /// Name of the workers' work type (`SpinWait`).
    pub work_type: String,
    /// BPF verifier cost per scheduler program; empty under EEVDF.
    pub verifier_stats: Vec<ProgVerifierStats>,
    /// Host KVM counters per vCPU; null on the qemu-tcg engine or without a VM.
    pub kvm_stats: Option<KvmStatsTotals>,
    /// Sysctls the scheduler asked for, as `sysctl.<key>=<value>`.
    pub sysctls: Vec<String>,
    /// Extra kernel command-line arguments of the scheduler or test.
    pub kargs: Vec<String>,
    /// Release of the guest kernel (`7.2.13+deb14-cloud-amd64`); null when unknown.
    pub kernel_version: Option<String>,
    /// Short HEAD (7 hex, `-dirty`) of the kernel source tree; null for images without a
    /// git source tree.
    pub kernel_commit: Option<String>,
    /// Start of the run, ISO 8601 UTC (`2026-05-07T09:08:07Z`).
    pub timestamp: String,
    /// `{YYYYMMDDTHHMMSSZ}-{n}`: the test process's start time plus a per-process counter.
    pub run_id: String,
    /// The machine that ran the VM.
    pub host: Option<HostContext>,
    /// Milliseconds from the guest's exit to the end of teardown; null when the run
    /// never reached collection (watchdog, early error, skip).
    pub cleanup_duration_ms: Option<u64>,
    /// Where the run happened: `local`, `ci`; readers of an explicit `--dir` rewrite it
    /// to `archive`.
    pub run_source: Option<RunSource>,
    /// Regression gates of this test for `cargo ktstr perf-delta`.
    pub perf_delta_assertions: Vec<PerfDeltaAssertionRecord>,
}

/// How the scheduler binary was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveSource {
    /// An explicit path in the test or on the command line.
    Path,
    /// An environment variable naming the binary.
    EnvVar,
    /// Found on `$PATH`.
    PathLookup,
    /// Next to the test binary.
    SiblingDir,
    /// In `target/debug`.
    TargetDebug,
    /// In `target/release`.
    TargetRelease,
    /// Built by ktstr for this run.
    AutoBuilt,
    /// Not found (the run was skipped or failed because of it).
    NotFound,
}

impl ResolveSource {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolveSource::Path => "path",
            ResolveSource::EnvVar => "env_var",
            ResolveSource::PathLookup => "path_lookup",
            ResolveSource::SiblingDir => "sibling_dir",
            ResolveSource::TargetDebug => "target_debug",
            ResolveSource::TargetRelease => "target_release",
            ResolveSource::AutoBuilt => "auto_built",
            ResolveSource::NotFound => "not_found",
        }
    }
}

/// Where a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunSource {
    /// A developer machine.
    Local,
    /// A CI runner (`KTSTR_CI` or `KTSTR_CI_ENV` set).
    Ci,
    /// Loaded from an explicit `--dir` by a reader; never written by a test.
    Archive,
}

impl RunSource {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunSource::Local => "local",
            RunSource::Ci => "ci",
            RunSource::Archive => "archive",
        }
    }
}

impl SidecarResult {
    /// The 32 keys of a sidecar, in the order they are written.
    pub const KEYS: [&'static str; 32] = [
        "test_name",
        "topology",
        "scheduler",
        "scheduler_commit",
        "resolve_source",
        "project_commit",
        "payload",
        "metrics",
        "passed",
        "skipped",
        "inconclusive",
        "expected_failure",
        "stats",
        "monitor",
        "periodic_fired",
        "periodic_target",
        "vcpus",
        "cpu_budget",
        "stimulus_events",
        "work_type",
        "verifier_stats",
        "kvm_stats",
        "sysctls",
        "kargs",
        "kernel_version",
        "kernel_commit",
        "timestamp",
        "run_id",
        "host",
        "cleanup_duration_ms",
        "run_source",
        "perf_delta_assertions",
    ];

    /// A sidecar with the identity of a run and nothing else: no provenance, empty
    /// stats, verdict Fail (all bits false) until one is set.
    pub fn new(
        test_name: impl Into<String>,
        topology: impl Into<String>,
        scheduler: impl Into<String>,
    ) -> SidecarResult {
        SidecarResult {
            test_name: test_name.into(),
            topology: topology.into(),
            scheduler: scheduler.into(),
            ..SidecarResult::default()
        }
    }

    /// A sidecar for a run starting now in this process: [`new`](Self::new) plus
    /// `timestamp`, `run_id`, `project_commit`, `run_source` and `host`. Kernel fields
    /// are set with [`set_kernel`](Self::set_kernel); the rest by the runner.
    #[cfg(feature = "provenance")]
    pub fn new_run(
        test_name: impl Into<String>,
        topology: impl Into<String>,
        scheduler: impl Into<String>,
    ) -> SidecarResult {
        SidecarResult {
            timestamp: provenance::now_timestamp(),
            run_id: provenance::next_run_id(),
            project_commit: provenance::project_commit(),
            run_source: Some(provenance::run_source()),
            host: Some(HostContext::capture()),
            ..SidecarResult::new(test_name, topology, scheduler)
        }
    }

    /// Record the guest kernel: its release, and the commit of its source tree when
    /// `kernel` is a git source tree or an image built inside one.
    #[cfg(feature = "provenance")]
    pub fn set_kernel(&mut self, version: Option<String>, kernel: Option<&Path>) {
        self.kernel_version = version;
        self.kernel_commit = kernel
            .and_then(provenance::kernel_source_tree)
            .and_then(|tree| provenance::kernel_commit(&tree));
    }

    /// The verdict bits.
    pub fn bits(&self) -> VerdictBits {
        VerdictBits {
            passed: self.passed,
            skipped: self.skipped,
            inconclusive: self.inconclusive,
        }
    }

    /// The final outcome. Files read through this crate always have valid bits; for an
    /// in-memory value with conflicting bits the strongest set bit wins
    /// (inconclusive, then passed, then skipped).
    pub fn outcome(&self) -> Outcome {
        if self.inconclusive {
            Outcome::Inconclusive
        } else if self.passed {
            Outcome::Pass
        } else if self.skipped {
            Outcome::Skip
        } else {
            Outcome::Fail
        }
    }

    /// Set the verdict bits to `outcome` (does not touch `expected_failure`).
    pub fn set_outcome(&mut self, outcome: Outcome) {
        let b = outcome.bits();
        self.passed = b.passed;
        self.skipped = b.skipped;
        self.inconclusive = b.inconclusive;
    }

    pub fn is_pass(&self) -> bool {
        self.outcome() == Outcome::Pass
    }

    pub fn is_fail(&self) -> bool {
        self.outcome() == Outcome::Fail
    }

    pub fn is_skip(&self) -> bool {
        self.outcome() == Outcome::Skip
    }

    pub fn is_inconclusive(&self) -> bool {
        self.outcome() == Outcome::Inconclusive
    }

    /// Process exit code of this run: 0 pass or skip, 1 fail, 2 inconclusive.
    pub fn exit_code(&self) -> i32 {
        self.outcome().exit_code()
    }

    /// Store the final verdict of a run whose raw outcome is `raw`: applies
    /// `expect_err` (see [`crate::verdict::finalize`]), sets the bits and
    /// `expected_failure`, and appends the inversion note to `stats.verdict_details`.
    pub fn finalize(&mut self, raw: Outcome, expect_err: bool) -> Finalized {
        let f = finalize(raw, expect_err);
        self.set_outcome(f.outcome);
        self.expected_failure = f.expected_failure;
        if let Some(note) = f.note {
            self.stats.verdict_details.push(note.to_string());
        }
        f
    }

    /// The fields that define this run's variant.
    pub fn variant_key(&self) -> VariantKey<'_> {
        VariantKey {
            topology: &self.topology,
            scheduler: &self.scheduler,
            payload: self.payload.as_deref(),
            work_type: &self.work_type,
            sysctls: &self.sysctls,
            kargs: &self.kargs,
        }
    }

    /// The variant hash (see [`crate::hash`]).
    pub fn variant_hash(&self) -> u64 {
        self.variant_key().hash()
    }

    /// The variant hash as 16 lower-case hex digits.
    pub fn variant_hash_hex(&self) -> String {
        format_hash(self.variant_hash())
    }

    /// The file name this sidecar is written under:
    /// `{test_name}-{variant_hash:016x}.ktstr.json` (a `/` in the test name becomes `_`).
    pub fn file_name(&self) -> String {
        crate::paths::sidecar_file_name(&self.test_name, self.variant_hash())
    }

    /// Pretty JSON with every key, as written to disk (without a trailing newline).
    pub fn to_json_pretty(&self) -> crate::Result<String> {
        serde_json::to_string_pretty(self).map_err(|source| crate::SidecarError::Serialize {
            test_name: self.test_name.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_emits_exactly_the_32_keys_in_order() {
        let s = SidecarResult::new("t", "1n1l1c1t", "eevdf");
        let json = s.to_json_pretty().expect("serialise");
        // Top-level keys are the lines indented by exactly two spaces.
        let keys: Vec<&str> = json
            .lines()
            .filter_map(|l| l.strip_prefix("  \""))
            .filter_map(|l| l.split_once('"').map(|(k, _)| k))
            .collect();
        assert_eq!(keys, SidecarResult::KEYS);
        // Absent options are null, empty lists [].
        assert!(json.contains("\"monitor\": null"));
        assert!(json.contains("\"metrics\": []"));
        assert!(json.contains("\"perf_delta_assertions\": []"));
    }

    #[test]
    fn is_helpers_follow_bits() {
        let mut s = SidecarResult::new("t", "1n1l1c1t", "eevdf");
        assert!(s.is_fail(), "all bits false is Fail");
        assert_eq!(s.exit_code(), 1);
        for o in [
            Outcome::Pass,
            Outcome::Skip,
            Outcome::Inconclusive,
            Outcome::Fail,
        ] {
            s.set_outcome(o);
            assert_eq!(s.outcome(), o);
            assert_eq!(s.bits().outcome(), Some(o));
            let flags = [s.is_pass(), s.is_skip(), s.is_inconclusive(), s.is_fail()];
            assert_eq!(flags.iter().filter(|&&f| f).count(), 1, "{o}");
            assert_eq!(s.exit_code(), o.exit_code());
        }
    }

    #[test]
    fn finalize_sets_bits_expected_failure_and_note() {
        let mut s = SidecarResult::new("t", "1n1l1c1t", "eevdf");
        let f = s.finalize(Outcome::Fail, true);
        assert_eq!(f.outcome, Outcome::Pass);
        assert!(s.is_pass() && s.expected_failure);
        assert_eq!(s.stats.verdict_details.len(), 1);

        let mut s = SidecarResult::new("t", "1n1l1c1t", "eevdf");
        s.finalize(Outcome::Pass, true);
        assert!(s.is_fail() && !s.expected_failure);
        assert!(s.stats.verdict_details[0].contains("expects an error"));

        let mut s = SidecarResult::new("t", "1n1l1c1t", "eevdf");
        s.finalize(Outcome::Inconclusive, false);
        assert!(s.is_inconclusive() && !s.expected_failure);
        assert!(s.stats.verdict_details.is_empty());
        assert_eq!(s.exit_code(), 2);
    }

    #[test]
    fn file_name_uses_the_variant_hash() {
        let mut s = SidecarResult::new("steady", "1n2l4c1t", "scx_lavd");
        s.work_type = "SpinWait".into();
        let name = s.file_name();
        assert_eq!(name, format!("steady-{}.ktstr.json", s.variant_hash_hex()));
        assert_eq!(s.variant_hash_hex().len(), 16);
        // Provenance does not change the name.
        s.project_commit = Some("abcdef0".into());
        s.run_source = Some(RunSource::Ci);
        s.host = Some(HostContext::default());
        s.vcpus = 8;
        s.cpu_budget = 2;
        s.resolve_source = Some(ResolveSource::AutoBuilt);
        s.kernel_commit = Some("1234567-dirty".into());
        s.timestamp = "2026-01-01T00:00:00Z".into();
        assert_eq!(s.file_name(), name);
    }

    #[test]
    fn enum_spellings_match_serde() {
        let all = [
            ResolveSource::Path,
            ResolveSource::EnvVar,
            ResolveSource::PathLookup,
            ResolveSource::SiblingDir,
            ResolveSource::TargetDebug,
            ResolveSource::TargetRelease,
            ResolveSource::AutoBuilt,
            ResolveSource::NotFound,
        ];
        for r in all {
            assert_eq!(
                serde_json::to_string(&r).expect("ser"),
                format!("\"{}\"", r.as_str())
            );
        }
        for r in [RunSource::Local, RunSource::Ci, RunSource::Archive] {
            assert_eq!(
                serde_json::to_string(&r).expect("ser"),
                format!("\"{}\"", r.as_str())
            );
        }
    }

    #[cfg(feature = "provenance")]
    #[test]
    fn set_kernel_finds_the_commit_of_the_tree_an_image_was_built_in() {
        let tree = tempfile::tempdir().expect("tempdir");
        let git = |args: &[&str]| {
            crate::testutil::git(tree.path(), args);
        };
        git(&["init", "-q"]);
        std::fs::write(tree.path().join("Makefile"), "all:\n").expect("write");
        git(&["add", "Makefile"]);
        git(&["commit", "-q", "-m", "v7"]);
        // The built image is untracked, so the tree stays clean.
        let image = tree.path().join("arch/x86/boot/bzImage");
        std::fs::create_dir_all(image.parent().expect("parent")).expect("mkdir");
        std::fs::write(&image, b"MZ").expect("write");

        let mut s = SidecarResult::new("t", "1n1l1c1t", "eevdf");
        s.set_kernel(Some("7.2.13".into()), Some(&image));
        assert_eq!(s.kernel_version.as_deref(), Some("7.2.13"));
        let commit = s.kernel_commit.clone().expect("commit of the tree");
        assert_eq!(commit.len(), 7, "{commit}");
        assert!(commit.chars().all(|c| c.is_ascii_hexdigit()));

        s.set_kernel(None, Some(Path::new("/nonexistent/bzImage")));
        assert_eq!((s.kernel_version, s.kernel_commit), (None, None));
    }

    #[cfg(feature = "provenance")]
    #[test]
    fn new_run_fills_provenance() {
        let s = SidecarResult::new_run("t", "1n1l1c1t", "eevdf");
        assert_eq!(s.timestamp.len(), "2026-05-07T09:08:07Z".len());
        assert!(s.run_id.contains('-'));
        assert!(s.run_source.is_some());
        assert!(s.host.as_ref().is_some_and(|h| h.arch.is_some()));
        // Inside a git checkout (this crate's own tests normally are) the commit is found.
        let cwd = std::env::current_dir().expect("cwd");
        let overridden = std::env::var_os(provenance::PROJECT_COMMIT_ENV).is_some();
        if let (false, Some(here)) = (overridden, provenance::project_commit_at(&cwd)) {
            let got = s
                .project_commit
                .expect("project_commit inside a repository");
            assert_eq!(got[..7], here[..7]);
        }
    }
}
