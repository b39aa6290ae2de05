//! The runner: boots one test and turns what the guest reported into a verdict and a
//! sidecar, in six steps, one file each:
//!
//! 1. [`prepare`]: check the request, find the scheduler, make the run directory, pack
//!    the initramfs;
//! 2. [`boot`]: start the guest, drain its ring while it runs, tear it down (retried
//!    once for a known emulator artifact);
//! 3. [`collect`]: turn the guest's frames into a record of the run, [`Collected`];
//! 4. [`measure`]: derive the sidecar's numbers from that record;
//! 5. [`judge`]: run every check of [`crate::assert`]; the verdict is what they say;
//! 6. [`finalize`]: settle the verdict with the test's own checks and write the sidecar,
//!    once.
//!
//! [`run`] reads as those steps; this file keeps the types they share.

pub mod boot;
pub mod collect;
pub mod finalize;
pub mod guest;
pub mod judge;
pub mod measure;
pub mod prepare;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ktstr_sidecar::{PerfDeltaAssertionRecord, SidecarResult};
use ktstr_topology::Topology;
use ktstr_wire::spec::GuestSpec;

use crate::assert::{Assert, Checks};
use crate::engine::{EngineKind, EngineReport};
use crate::kernel::ResolvedKernel;
pub use boot::RETRY_NOTE;
use collect::Collected;
pub use guest::guest_binary;
pub use prepare::spec_with_payloads;

/// Default size of the shared-memory region.
pub const DEFAULT_SHM_SIZE: u64 = 8 << 20;
/// Time a guest gets to boot before its workload starts counting against the deadline.
pub const BOOT_BUDGET: Duration = Duration::from_secs(60);
/// Grace after the workload for collection, sync and reboot.
pub const EXIT_GRACE: Duration = Duration::from_secs(30);
/// Extra time a run gets per scheduler op (a detach and an attach, unplanned).
pub const SCHEDULER_OP_BUDGET: Duration = Duration::from_secs(20);

/// One run to perform.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub test_name: String,
    pub topology: Topology,
    pub memory_mib: u64,
    pub cpu_budget: Option<u32>,
    pub kernel: ResolvedKernel,
    pub engine: EngineKind,
    pub spec: GuestSpec,
    /// The scheduler to run under (`"eevdf".into()`, `"scx_bpfland".into()`, or a
    /// configured [`crate::scheduler::Scheduler`]); found or built before the boot.
    pub scheduler: crate::scheduler::Scheduler,
    pub sysctls: Vec<String>,
    pub kargs: Vec<String>,
    /// Host binaries packed into the guest (with their libraries) under `/bin/<name>`.
    pub includes: Vec<PathBuf>,
    /// Programs the scenario's payload ops run (without a scenario: each once, in
    /// order). Checked before boot, packed like `includes`, sent to the guest as
    /// `spec.payloads`; their results become the sidecar's `metrics` and their checks
    /// join the verdict. The first one is the sidecar's `payload`.
    pub payloads: Vec<crate::payload::Payload>,
    pub expect_err: bool,
    /// Regression gates that travel with the run for `cargo ktstr perf-delta`.
    pub perf_delta_assertions: Vec<PerfDeltaAssertionRecord>,
    /// The thresholds the run is judged by ([`Assert::default`] for the documented
    /// defaults).
    pub assert: Assert,
    /// Print program output live (`cargo ktstr shell --exec`).
    pub stream_output: bool,
    /// Give the serial console to the terminal (interactive shell).
    pub console_on_terminal: bool,
    /// Write a sidecar (tests do; `shell` does not).
    pub write_sidecar: bool,
    /// Bound on the whole run, boot included (`shell --timeout-s`); `None`: boot budget
    /// + the spec's duration + grace.
    pub deadline_override: Option<Duration>,
}

impl RunRequest {
    /// Wall-clock deadline of the whole run.
    pub fn deadline(&self) -> Duration {
        self.deadline_override.unwrap_or_else(|| {
            // A scheduler op waits for a detach and an attach outside the planned holds.
            let sched_ops = self
                .spec
                .scenario
                .iter()
                .flat_map(|s| s.ops())
                .filter(|op| op.is_scheduler_op())
                .count() as u32;
            BOOT_BUDGET
                + Duration::from_millis(self.spec.duration_ms)
                + SCHEDULER_OP_BUDGET * sched_ops
                + EXIT_GRACE
        })
    }

    /// What defines this run (see [`finalize::identity`]).
    pub fn identity(&self) -> finalize::Identity<'_> {
        finalize::Identity {
            test_name: &self.test_name,
            topology: self.topology,
            scheduler: &self.scheduler,
            sysctls: &self.sysctls,
            kargs: &self.kargs,
            payloads: &self.payloads,
            guest: &self.spec,
            perf_delta_assertions: &self.perf_delta_assertions,
            kernel: Some(&self.kernel),
            engine: Some(self.engine),
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// The sidecar: final once [`finalize::finalize`] ran.
    pub sidecar: SidecarResult,
    /// Where [`finalize::finalize`] writes the sidecar; None: nowhere (a shell).
    pub sidecar_dir: Option<PathBuf>,
    /// The file, once written.
    pub sidecar_path: Option<PathBuf>,
    /// The serial console log; after [`finalize::finalize`], kept only when the run
    /// did not pass cleanly (and always for shells).
    pub console_log: Option<PathBuf>,
    /// The scheduler's output, kept beside the sidecar.
    pub scheduler_log: Option<PathBuf>,
    pub collected: Collected,
    pub engine: EngineReport,
    /// Every check of the verdict, passes included.
    pub checks: Checks,
    /// What the verdict says beyond its checks, after their lines: why a run ended
    /// before boot, a retry, the test's own host-side check failures.
    pub notes: Vec<String>,
    pub boot_to_ready_ms: Option<u64>,
    pub wall_ms: u64,
}

impl RunOutcome {
    /// Why the run did not simply pass: a line per check that did not pass, then the
    /// notes (the sidecar's `verdict_details`).
    pub fn reasons(&self) -> Vec<String> {
        let mut reasons = self.checks.details();
        reasons.extend(self.notes.iter().cloned());
        reasons
    }

    /// The sidecar as [`finalize::finalize`] writes it, read back through the reader:
    /// what a test's host-side checks should look at (they run before the write). An
    /// error also when the reference's reader would reject it (every sidecar must read
    /// there too; see `ktstr_sidecar::conformance`), naming the first rejected key.
    pub fn sidecar_as_written(&self) -> ktstr_sidecar::Result<SidecarResult> {
        let text = self.sidecar.to_json_pretty()?;
        let name = self.sidecar.file_name();
        let back = ktstr_sidecar::parse_sidecar(text.as_bytes(), Path::new(&name))?;
        let report = ktstr_sidecar::conformance::check_text(&text).map_err(|e| {
            ktstr_sidecar::SidecarError::NotJson {
                path: name.clone().into(),
                detail: e.to_string(),
            }
        })?;
        if let Some(f) = report.rejections().next() {
            return Err(ktstr_sidecar::SidecarError::WrongType {
                path: name.into(),
                key: f.path.clone(),
                detail: format!(
                    "{}'s reader rejects it: {}",
                    ktstr_sidecar::conformance::REFERENCE_VERSION,
                    f.detail
                ),
            });
        }
        Ok(back)
    }
}

/// Run one test end to end and write its sidecar ([`run_to_verdict`], then
/// [`finalize::finalize`] with no host-side check of a test's own).
pub fn run(req: &RunRequest) -> anyhow::Result<RunOutcome> {
    let mut out = run_to_verdict(req)?;
    finalize::finalize(&mut out, Vec::new())?;
    Ok(out)
}

/// Run one test up to its verdict: everything but the sidecar's write, which is
/// [`finalize::finalize`]'s (after the caller's own checks, if any).
pub fn run_to_verdict(req: &RunRequest) -> anyhow::Result<RunOutcome> {
    let started = Instant::now();
    let run = match prepare::prepare(req, started)? {
        Ok(run) => run,
        Err(not_booted) => return Ok(*not_booted),
    };
    let (mut attempt, mut judged) = boot_and_judge(&run, started)?;
    let mut notes = Vec::new();
    if let Some(why) = boot::should_retry(&run, &attempt) {
        let kept = boot::keep_discarded_attempt(&judged.sidecar, &run);
        (attempt, judged) = boot_and_judge(&run, Instant::now())?;
        notes.push(format!("{why}; the discarded attempt: {kept}"));
    }
    Ok(finalize::booted(run, attempt, judged, notes))
}

/// One attempt: boot (collecting what the guest reports), measure, judge.
fn boot_and_judge(
    run: &prepare::PreparedRun,
    clock: Instant,
) -> anyhow::Result<(boot::Attempt, judge::Judged)> {
    let attempt = boot::boot(run, clock)?;
    let measured = measure::measure_attempt(&run.req, &attempt.data);
    let judged = judge::judge(run, &attempt, &measured);
    Ok((attempt, judged))
}
