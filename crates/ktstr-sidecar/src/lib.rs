//! The ktstr sidecar: the JSON file every test run leaves behind, and everything needed
//! to write, find, read and judge it. The types of this crate *are* the documentation
//! of the format; each field's doc says what the key holds.
//!
//! # Files and directories
//!
//! ```text
//! {runs_root}/                             KTSTR_RUNS_ROOT, else {cargo target dir}/ktstr
//!   {kernel_version}-{project_commit}/     "unknown" stands in for a missing piece;
//!                                          KTSTR_SIDECAR_DIR replaces this whole path
//!     {test_name}-{variant_hash:016x}.ktstr.json
//! ```
//!
//! Files are written atomically ([`write::write_atomic`]): a reader sees a complete old
//! or new file, never a torn one. See [`paths`].
//!
//! # The document
//!
//! One JSON object, [`SidecarResult`], with exactly these 32 keys in this order
//! ([`SidecarResult::KEYS`]). The nested types are the reference project's (the
//! published crate ktstr 0.29.0; 0.23.0-0.33.0 share them): names, types, required or
//! optional, enum spellings and key order, so the reference's own reader reads every
//! sidecar written here and ours reads the reference's ([`conformance`] checks the
//! first against a checked-in table of its schema). Our few measurements without a
//! reference field are extra keys after the reference's, listed in
//! [`conformance::EXTRA_KEYS`].
//!
//! | key | type | |
//! |---|---|---|
//! | `test_name` | string | registered test name |
//! | `topology` | string | `1n2l4c1t`: NUMA nodes, LLCs, cores per LLC, threads per core |
//! | `scheduler` | string | scheduler name or `eevdf` |
//! | `scheduler_commit` | string or null | reserved, null |
//! | `resolve_source` | [`ResolveSource`] or null | how the scheduler binary was found |
//! | `project_commit` | string or null | `abc1234` or `abc1234-dirty` |
//! | `payload` | string or null | primary payload |
//! | `metrics` | [[`PayloadMetrics`]] | per payload invocation |
//! | `passed`, `skipped`, `inconclusive` | bool | the verdict, see [`verdict`] |
//! | `expected_failure` | bool | failed as `expect_err` demanded |
//! | `stats` | [`ScenarioStats`] | worker measurements, per cgroup and per phase |
//! | `monitor` | [`MonitorSummary`] or null | system samples |
//! | `periodic_fired`, `periodic_target` | u32 | periodic snapshots taken / asked |
//! | `vcpus`, `cpu_budget` | u32 | guest vCPUs / host CPUs they ran on |
//! | `stimulus_events` | [[`StimulusEvent`]] | step boundaries and the scenario's end |
//! | `work_type` | string | worker work type |
//! | `verifier_stats` | [[`ProgVerifierStats`]] | BPF verifier cost |
//! | `kvm_stats` | [`KvmStatsTotals`] or null | host KVM counters per vCPU |
//! | `sysctls`, `kargs` | list of strings | `sysctl.k=v`; kernel args |
//! | `kernel_version`, `kernel_commit` | string or null | guest kernel release; source tree commit |
//! | `timestamp` | string | `2026-05-07T09:08:07Z` |
//! | `run_id` | string | `20260507T090800Z-0` |
//! | `host` | [`HostContext`] or null | the host machine |
//! | `cleanup_duration_ms` | u64 or null | teardown time |
//! | `run_source` | [`RunSource`] or null | `local`, `ci`, `archive` |
//! | `perf_delta_assertions` | [[`PerfDeltaAssertionRecord`]] | regression gates |
//!
//! **Writer**: every key is always present, nested ones included; `null` for an
//! absent optional value, `[]` for an empty list. A plain number is never `null`
//! (the reference cannot read that): a number that was not measured is `0.0` with its
//! `*_measured` flag false, and a non-finite value is written as `0.0` or left out of
//! its map.
//!
//! **Reader** ([`read_sidecar`], [`parse_sidecar`]): a missing optional key reads as
//! null, a missing required key is an error naming the key and the file, unknown keys
//! are ignored (newer writers may add keys). Contradicting verdict bits are an error.
//! Sidecars ktstr wrote before its nested types followed the reference are recognised
//! by their shapes and upgraded while reading ([`legacy`]).
//!
//! A sidecar the reference wrote reads, and so does a hand-written one in ktstr's old
//! shapes (every optional key left out):
//!
//! ```
//! let text = include_str!("../tests/data/reference-minimal.ktstr.json");
//! let s = ktstr_sidecar::parse_sidecar(text.as_bytes(), "reference.ktstr.json".as_ref())?;
//! assert!(s.is_skip());
//! let text = include_str!("../tests/data/minimal.ktstr.json");
//! let s = ktstr_sidecar::parse_sidecar(text.as_bytes(), "minimal.ktstr.json".as_ref())?;
//! assert!(s.is_pass());
//! assert_eq!(s.kernel_version, None);
//! assert_eq!(s.stats.cgroup("cg0").map(|c| c.total_iterations), Some(1200));
//! # Ok::<(), ktstr_sidecar::SidecarError>(())
//! ```
//!
//! # Writing one
//!
//! `SidecarResult::new_run` stamps a run with its provenance (time, run id, project
//! commit, run source, host); it and `SidecarResult::set_kernel` need the
//! `provenance` feature, which brings `gix` to find commits. Readers do without it.
//!
//! ```no_run
//! # #[cfg(feature = "provenance")]
//! # fn main() -> Result<(), ktstr_sidecar::SidecarError> {
//! use ktstr_sidecar::{Outcome, SidecarResult};
//! let mut s = SidecarResult::new_run("steady", "1n2l4c1t", "scx_lavd");
//! s.set_kernel(Some("7.2.13".into()), Some("/src/linux".as_ref()));
//! s.work_type = "SpinWait".into();
//! s.vcpus = 8;
//! s.cpu_budget = 2;
//! let raw = Outcome::merge_all([Outcome::Pass, Outcome::Pass]);
//! let fin = s.finalize(raw, /* expect_err */ false);
//! let path = s.write()?; // {runs_root}/7.2.13-{commit}/steady-{hash}.ktstr.json
//! std::process::exit(fin.outcome.exit_code());
//! # }
//! # #[cfg(not(feature = "provenance"))]
//! # fn main() {}
//! ```
//!
//! # Variant hash
//!
//! Runs of the same configuration share [`SidecarResult::variant_hash`], computed over
//! topology, scheduler, payload, work type, sysctls and kargs only; see [`hash`].

pub mod conformance;
pub mod error;
pub mod example;
mod float;
pub mod fsread;
pub mod hash;
pub mod host;
pub mod kvm;
pub mod legacy;
pub mod monitor;
pub mod paths;
pub mod payload;
pub mod perf_delta;
#[cfg(feature = "provenance")]
pub mod provenance;
pub mod read;
pub mod series;
pub mod sidecar;
pub mod stats;
pub mod stimulus;
#[doc(hidden)]
pub mod testutil;
pub mod verdict;
pub mod verifier;
pub mod write;

pub use error::{Result, SidecarError};
pub use hash::VariantKey;
pub use host::{
    DelayacctState, Engine, GuestStart, HostContext, HostHeapState, KvmBacking, XacctState,
};
pub use kvm::KvmStatsTotals;
pub use monitor::{
    BpfMapFieldValue, MonitorSummary, ProgStatsDelta, SchedDomainLbDelta, SchedstatDeltas,
    ScxEventDeltas,
};
pub use payload::{Metric, MetricStream, PayloadMetrics, Polarity};
pub use perf_delta::PerfDeltaAssertionRecord;
pub use read::{load_pool, parse_sidecar, read_sidecar, LoadedSidecar, Pool, RunDir};
pub use sidecar::{ResolveSource, RunSource, SidecarResult};
pub use stats::{
    CgroupStats, PhaseBucket, PhaseCgroupStats, PlatStats, ScenarioStats, SchbenchPhaseStats,
    TaobenchPhaseStats, TaobenchStats,
};
pub use stimulus::StimulusEvent;
pub use verdict::{Finalized, Outcome, VerdictBits};
pub use verifier::ProgVerifierStats;
