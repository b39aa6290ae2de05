//! The runner: boots one test and turns what the guest reported into a verdict and a
//! sidecar. Order of work: check the request, pack the initramfs, boot, drain the ring
//! while the guest runs, tear down with a timer, evaluate on the host, and
//! [`finalize`](finalize::finalize): settle the verdict and write the sidecar, once.

pub mod collect;
pub mod evaluate;
pub mod finalize;
pub mod guest;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use ktstr_sidecar::{PerfDeltaAssertionRecord, SidecarResult};
use ktstr_topology::Topology;
use ktstr_wire::spec::GuestSpec;
use ktstr_wire::{init_header, Reader, SharedMem, StopReason};

use crate::assert::{Assert, Checks};
use crate::engine::{self, BootSpec, EngineKind, EngineReport};
use crate::initramfs::{self, BaseParts};
use crate::kernel::ResolvedKernel;
use crate::scratch::ScratchDir;
use collect::{Collected, Collector, OutputMode};
pub use guest::guest_binary;

/// Default size of the shared-memory region.
pub const DEFAULT_SHM_SIZE: u64 = 8 << 20;
/// Time a guest gets to boot before its workload starts counting against the deadline.
pub const BOOT_BUDGET: Duration = Duration::from_secs(60);
/// Grace after the workload for collection, sync and reboot.
pub const EXIT_GRACE: Duration = Duration::from_secs(30);

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
            BOOT_BUDGET + Duration::from_millis(self.spec.duration_ms) + EXIT_GRACE
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
    pub reasons: Vec<String>,
    /// Every check of the verdict, passes included.
    pub checks: Checks,
    pub boot_to_ready_ms: Option<u64>,
    pub wall_ms: u64,
}

/// `req.spec` with its `payloads` filled from `req.payloads`, after checking the payloads
/// on the host: binaries that exist, are executable and have resolvable libraries.
pub fn spec_with_payloads(req: &RunRequest) -> anyhow::Result<GuestSpec> {
    crate::payload::validate_all(&req.payloads)
        .map_err(|e| anyhow::anyhow!("test `{}`: {e}", req.test_name))?;
    let runs: Vec<_> = req
        .payloads
        .iter()
        .map(crate::payload::Payload::to_run)
        .collect();
    anyhow::ensure!(
        req.spec.payloads.is_empty() || req.spec.payloads == runs,
        "test `{}`: spec.payloads is filled from RunRequest.payloads (the host needs their output kinds and checks); declare the payloads there",
        req.test_name
    );
    let mut spec = req.spec.clone();
    spec.payloads = runs;
    Ok(spec)
}

impl RunOutcome {
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
    let req = &RunRequest {
        spec: spec_with_payloads(req)?,
        ..req.clone()
    };
    let started = Instant::now();
    crate::interrupt::catch();
    // An impossible spec never boots.
    crate::scenario::validate_spec(&req.spec, &req.topology).map_err(|e| {
        anyhow::anyhow!(
            "test `{}` has an invalid spec for topology {}: {e}",
            req.test_name,
            req.topology
        )
    })?;
    let mut sidecar = finalize::identity(&req.identity());
    let sched = req.scheduler.prepare();
    if let Ok(p) = &sched {
        sidecar.resolve_source = p.resolve_source;
    }

    let out_dir = if req.write_sidecar {
        let d = ktstr_sidecar::paths::run_dir_for(&sidecar);
        std::fs::create_dir_all(&d)
            .with_context(|| format!("cannot create run directory {}", d.display()))?;
        check_writable(&d)?;
        d
    } else {
        // A shell's console outlives it (the user reads it): a private directory of its
        // own, never a shared, guessable path.
        ScratchDir::create(&std::env::temp_dir(), "ktstr-shell-")
            .context("cannot create a directory for the shell's console log")?
            .keep()
    };
    let stem = sidecar
        .file_name()
        .trim_end_matches(".ktstr.json")
        .to_string();
    let console_log = out_dir.join(format!("{stem}.console.log"));
    let sidecar_dir = req.write_sidecar.then(|| out_dir.clone());
    let sched = match sched {
        Ok(p) => p,
        Err(missing) => {
            return Ok(crate::scheduler::run::missing_outcome(
                sidecar,
                sidecar_dir,
                missing,
                started,
            ))
        }
    };
    let work = ScratchDir::create(&std::env::temp_dir(), "ktstr-run-")
        .context("cannot create a temporary directory for the run")?;

    // Initramfs: cached base + this test's spec.
    let base = req.includes.iter().fold(
        BaseParts::new(guest_binary()?).kernel(&req.kernel),
        |b, inc| b.include(inc),
    );
    let base = match &sched.binary {
        Some(bin) => base.include(bin),
        None => base,
    };
    let mut packed: Vec<&Path> = req.includes.iter().map(PathBuf::as_path).collect();
    let mut base = base;
    for p in &req.payloads {
        if !packed.contains(&p.binary.as_path()) {
            packed.push(&p.binary);
            base = base.include(&p.binary);
        }
    }
    let guest_spec = crate::scheduler::run::guest_spec(&req.spec, &req.sysctls, &sched)?;
    let initrd = work.path().join("initramfs.cpio");
    initramfs::build_initramfs(&base, &guest_spec.to_json(), &initrd)
        .context("cannot build the initramfs")?;

    let boot = BootSpec {
        topology: req.topology,
        memory_mib: req.memory_mib,
        cpu_budget: req.cpu_budget,
        kernel: req.kernel.image.clone(),
        initrd,
        kargs: sidecar.kargs.clone(),
        shm_size: DEFAULT_SHM_SIZE,
        serial_log: (!req.console_on_terminal).then(|| console_log.clone()),
        deadline: req.deadline(),
    };

    let mode = if req.stream_output {
        OutputMode::Stream
    } else {
        OutputMode::Capture
    };
    let threading = match req.engine {
        EngineKind::QemuTcg => Some(engine::qemu::tcg_threading()),
        // Our VMM inside `cargo ktstr nested`: the "hardware" is qemu's multi-threaded TCG
        // one level down, with the same stale-translation artifact.
        EngineKind::Kvm => crate::nested::outer_tcg_threading(),
    };
    let mut attempt = 1;
    let mut retried: Option<String> = None;
    let (mut sidecar, verdict, data, engine_report) = loop {
        let clock = if attempt == 1 {
            started
        } else {
            Instant::now()
        };
        let mut collector = Collector::new(mode, clock);
        let engine_report = boot_and_drain(req.engine, &boot, &mut collector)?;
        let torn_down = Instant::now();
        let data = collector.data;
        let console = evaluate::console_excerpt(&console_log);
        let retry = (attempt == 1)
            .then(|| retry_reason(threading, console.as_deref()))
            .flatten();
        let judged = Judged::new(
            req,
            sidecar.clone(),
            &sched,
            &data,
            &engine_report,
            &console_log,
            torn_down,
        );
        let Some(why) = retry else {
            break (judged.sidecar, judged.verdict, data, engine_report);
        };
        // Keep the discarded attempt beside the run (not as a `*.ktstr.json`, so pools
        // never count it): its sidecar and its console.
        let kept = keep_discarded_attempt(&judged.sidecar, &out_dir, &stem, &console_log);
        retried = Some(format!("{why}; the discarded attempt: {kept}"));
        attempt += 1;
    };
    let scheduler_log = crate::scheduler::run::record(&data, &mut sidecar, &out_dir, &stem);
    let mut verdict = verdict;
    if let Some(note) = retried {
        verdict.reasons.push(note.clone());
        sidecar.stats.verdict_details.push(note);
    }
    Ok(RunOutcome {
        boot_to_ready_ms: data.ready.as_ref().map(|r| r.host_ms),
        sidecar,
        sidecar_dir,
        sidecar_path: None,
        console_log: console_log.exists().then_some(console_log),
        scheduler_log,
        collected: data,
        engine: engine_report,
        reasons: verdict.reasons,
        checks: verdict.checks,
        wall_ms: started.elapsed().as_millis() as u64,
    })
}

/// One attempt judged on the host: the sidecar filled from what the guest measured, with
/// the verdict after `expect_err`, and the raw verdict with its checks.
struct Judged {
    sidecar: SidecarResult,
    verdict: evaluate::Verdict,
}

impl Judged {
    fn new(
        req: &RunRequest,
        mut sidecar: SidecarResult,
        sched: &crate::scheduler::Prepared,
        data: &Collected,
        engine_report: &EngineReport,
        console_log: &Path,
        torn_down: Instant,
    ) -> Self {
        let assert = &req.assert;
        sidecar.cpu_budget = engine_report.cpu_budget;
        sidecar.cleanup_duration_ms = data
            .done_at
            .map(|t| torn_down.saturating_duration_since(t).as_millis() as u64);
        if let Some(stats) = engine_report.kvm_stats.clone() {
            sidecar.kvm_stats = Some(ktstr_sidecar::KvmStatsTotals { per_vcpu: stats });
        }
        let measured = evaluate::measure(&req.spec, &req.topology, assert, data);
        sidecar.stats = measured.stats.clone();
        sidecar.monitor = measured.monitor.as_ref().map(|(m, _)| m.clone());
        sidecar.stimulus_events = measured.stimulus_events.clone();
        sidecar.periodic_fired = measured.periodic_fired;
        sidecar.periodic_target = measured.periodic_target;

        let mut verdict =
            evaluate::evaluate(req, assert, data, &measured, engine_report, console_log);
        crate::scheduler::run::add_checks(sched, data, &mut verdict);
        sidecar.metrics = add_payload_checks(req, data, &mut verdict);
        sidecar.verifier_stats = crate::scheduler::verifier_stats(&data.verifier_stats);
        sidecar.stats.verdict_details = verdict.reasons.clone();
        sidecar.finalize(verdict.outcome, req.expect_err);
        Self { sidecar, verdict }
    }
}

/// Write a discarded attempt's sidecar as `{stem}.attempt1.json` and move its console
/// log to `{stem}.attempt1.console.log`; say where they are (or why not).
/// Fails before boot when the run directory takes no new file (a read-only mount, no
/// free inode, not writable by us): an error now beats a result lost after a whole run.
fn check_writable(dir: &Path) -> anyhow::Result<()> {
    match tempfile::Builder::new()
        .prefix(".ktstr-write-check.")
        .tempfile_in(dir)
    {
        Ok(_removed_on_drop) => Ok(()),
        Err(e) => anyhow::bail!(
            "cannot write into the run directory {}: {e}; make it writable, or point {} (the runs root) or {} (this run's directory) at a writable directory",
            dir.display(),
            ktstr_sidecar::paths::RUNS_ROOT_ENV,
            ktstr_sidecar::paths::SIDECAR_DIR_ENV,
        ),
    }
}

fn keep_discarded_attempt(
    sidecar: &SidecarResult,
    out_dir: &Path,
    stem: &str,
    console_log: &Path,
) -> String {
    let json = out_dir.join(format!("{stem}.attempt1.json"));
    let console = out_dir.join(format!("{stem}.attempt1.console.log"));
    let mut notes = Vec::new();
    let written = sidecar
        .to_json_pretty()
        .and_then(|text| ktstr_sidecar::write::write_atomic(&json, text.as_bytes()));
    match written {
        Ok(()) => notes.push(json.display().to_string()),
        Err(e) => notes.push(format!("sidecar not kept ({e})")),
    }
    match std::fs::rename(console_log, &console) {
        Ok(()) => notes.push(console.display().to_string()),
        Err(e) => notes.push(format!("console not kept ({e})")),
    }
    notes.join(", ")
}

/// Judges the payload results (metrics extracted on the host, each payload's checks)
/// into the verdict; returns the sidecar's `metrics`. Invocations that never reported
/// fail only when the scenario says it ran to its end (otherwise its own failure
/// explains them).
fn add_payload_checks(
    req: &RunRequest,
    data: &Collected,
    verdict: &mut evaluate::Verdict,
) -> Vec<ktstr_sidecar::PayloadMetrics> {
    if req.payloads.is_empty() && data.payload_results.is_empty() {
        return Vec::new();
    }
    let scenario = req.spec.effective_scenario();
    let ran_to_end = data
        .scenario_end
        .as_ref()
        .is_some_and(|e| e.aborted.is_none());
    let expected = match (&scenario, ran_to_end) {
        (Some(s), true) => s.payload_invocations(),
        _ => Vec::new(),
    };
    let judged = crate::payload::judge(&req.payloads, &expected, &data.payload_results);
    verdict.checks.extend(judged.checks);
    verdict.outcome = verdict.checks.outcome();
    verdict.reasons = verdict.checks.details();
    judged.metrics
}

/// The one failure a run is retried for: a guest kernel `Oops: int3` under
/// multi-threaded TCG, the emulator running a stale translation of kernel text another
/// vCPU has just patched. Nothing else — a scheduler error, a stall, a failed gate, any
/// other oops, any engine but multi-threaded qemu-tcg — is retried. `None`: judge the run
/// as it is.
fn retry_reason(
    threading: Option<engine::qemu::TcgThreading>,
    console: Option<&str>,
) -> Option<String> {
    if threading != Some(engine::qemu::TcgThreading::Multi) {
        return None;
    }
    let oops = console?.lines().find(|l| l.contains("Oops: int3"))?;
    let oops = oops.split_once("] ").map_or(oops, |(_, rest)| rest).trim();
    Some(format!(
        "{RETRY_NOTE}: the guest kernel died on a known multi-threaded TCG artifact ({oops})"
    ))
}

/// How a retried run says so in `stats.verdict_details` (the soak counts these).
pub const RETRY_NOTE: &str = "retried once";

/// Boot on `engine` and drain the ring until the guest is gone.
fn boot_and_drain(
    engine: EngineKind,
    boot: &BootSpec,
    collector: &mut Collector,
) -> anyhow::Result<EngineReport> {
    let mut layout = None;
    let mut guest = engine::start(engine, boot, |ptr, len| {
        // SAFETY: the region stays mapped as long as the guest object, which outlives
        // every use of this view.
        let mem = unsafe { SharedMem::from_raw(ptr, len) }
            .context("cannot use the shared-memory mapping")?;
        layout = Some(init_header(&mem).context("cannot initialise the shared-memory header")?);
        Ok(())
    })?;
    let layout = layout.context("shared-memory header was not initialised")?;
    let (ptr, len) = guest.shm();
    // SAFETY: as above; `guest` owns the mapping until teardown, after the last read.
    let mem =
        unsafe { SharedMem::from_raw(ptr, len) }.context("cannot use the shared-memory mapping")?;
    let mut reader = Reader::new(&mem, layout);
    let deadline = Instant::now() + boot.deadline;
    let mut ring_ok = true;
    loop {
        let mut progressed = false;
        if let Some(sig) = crate::interrupt::received() {
            reader.request_stop(StopReason::Watchdog);
            guest.kill(crate::interrupt::reason(sig));
            break;
        }
        if ring_ok {
            match drain(&mut reader, collector) {
                Ok(n) => progressed = n > 0,
                Err(()) => {
                    ring_ok = false;
                    guest.kill("the guest wrote garbage into the shared-memory ring".into());
                }
            }
        }
        if guest.has_exited()? {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            reader.request_stop(StopReason::Watchdog);
            guest.kill(format!(
                "watchdog: the run exceeded its {} s deadline",
                boot.deadline.as_secs()
            ));
            break;
        }
        if let Some(done_at) = collector.data.done_at {
            if now.duration_since(done_at) > EXIT_GRACE {
                guest.kill("the guest reported done but did not reboot".into());
                break;
            }
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Whatever the guest committed before it went away is still in memory.
    if ring_ok {
        // A protocol error is recorded in the collector; nothing more to read then.
        let _ = drain(&mut reader, collector);
    }
    let mut report = guest.teardown();
    // The signal may have reached the engine first (qemu shares our process group and
    // exits cleanly on SIGINT): the run was still interrupted, not finished.
    if let Some(sig) = crate::interrupt::received() {
        report.exit = engine::GuestExit::Killed(crate::interrupt::reason(sig));
    }
    Ok(report)
}

/// Read every committed frame into the collector. A protocol error is recorded there
/// and ends reading for good (the stream cannot resynchronise).
fn drain(reader: &mut Reader, collector: &mut Collector) -> Result<usize, ()> {
    let mut n = 0;
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) => {
                collector.frame(frame);
                n += 1;
            }
            Ok(None) => return Ok(n),
            Err(e) => {
                collector.protocol_error(format!("guest corrupted the shared-memory ring: {e}"));
                return Err(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_int3_oops_under_multi_threaded_tcg_is_retried() {
        use engine::qemu::TcgThreading::{Multi, Single};
        let oops = "[    2.59] Oops: int3: 0000 [#1] SMP NOPTI\n[    2.60] RIP: 0010:try_to_wake_up+0x2e5/0x880";
        let why = retry_reason(Some(Multi), Some(oops)).unwrap();
        assert!(why.starts_with(RETRY_NOTE), "{why}");
        assert!(why.contains("(Oops: int3: 0000 [#1] SMP NOPTI)"), "{why}");
        // One TCG thread cannot race a text patch; our own VMM has no such race either.
        assert_eq!(retry_reason(Some(Single), Some(oops)), None);
        assert_eq!(retry_reason(None, Some(oops)), None);
        // Any other crash is the kernel's or the scheduler's business.
        for other in [
            "[ 3.1] Oops: general protection fault, probably for non-canonical address",
            "[ 3.1] Kernel panic - not syncing: Attempted to kill init!",
            "[ 3.1] BUG: kernel NULL pointer dereference, address: 0000000000000008",
            "[ 5.0] sched_ext: BPF scheduler \"bpfland\" disabled (runnable task stall)",
        ] {
            assert_eq!(retry_reason(Some(Multi), Some(other)), None, "{other}");
        }
        assert_eq!(retry_reason(Some(Multi), None), None);
    }
}
