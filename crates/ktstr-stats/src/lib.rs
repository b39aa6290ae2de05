//! Reading ktstr results at scale. [`ktstr_sidecar`] is the contract (one sidecar, its
//! types, reader and writer); this crate is what reads many of them: list a pool fast
//! ([`scan`]), derive every metric a sidecar holds ([`metrics`]), pair two sides of a
//! pool and judge each metric against noise ([`compare`], [`noise`]), run the suite at
//! two commits and compare them ([`perf_delta`], with [`revs`] for the commits), and show
//! the result to a person ([`report`], [`summary`], [`detail`], [`explain`]).
//!
//! `cargo ktstr stats` and `cargo ktstr perf-delta` parse arguments and print; the logic
//! lives here.

pub mod compare;
pub mod detail;
pub mod explain;
pub mod format;
pub mod metrics;
pub mod noise;
pub mod perf_delta;
pub mod report;
pub mod revs;
pub mod run_report;
pub mod scan;
pub mod summary;
