//! The runner: boots one test and turns what the guest reported into a verdict and a
//! sidecar. Order of work: check the request, pack the initramfs, boot, drain the ring
//! while the guest runs, tear down with a timer, evaluate on the host, write the sidecar.

pub mod collect;
pub mod evaluate;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use ktstr_sidecar::{Outcome, SidecarResult};
use ktstr_vmm::Topology;
use ktstr_wire::spec::GuestSpec;
use ktstr_wire::{init_header, Reader, SharedMem, StopReason};

use crate::assert::{Assert, Checks};
use crate::engine::{self, BootSpec, EngineKind, EngineReport};
use crate::initramfs::{self, BaseParts};
use crate::kernel::ResolvedKernel;
use collect::{Collected, Collector, OutputMode};

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
    /// The thresholds the run is judged by ([`Assert::default`] for the documented
    /// defaults).
    pub assert: Assert,
    /// Print program output live (`cargo ktstr shell --exec`).
    pub stream_output: bool,
    /// Give the serial console to the terminal (interactive shell).
    pub console_on_terminal: bool,
    /// Write a sidecar (tests do; `shell` does not).
    pub write_sidecar: bool,
}

impl RunRequest {
    /// Wall-clock deadline of the whole run.
    pub fn deadline(&self) -> Duration {
        BOOT_BUDGET + Duration::from_millis(self.spec.duration_ms) + EXIT_GRACE
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    pub sidecar: SidecarResult,
    pub sidecar_path: Option<PathBuf>,
    /// Kept when the run did not pass (and always for shells).
    pub console_log: Option<PathBuf>,
    pub collected: Collected,
    pub engine: EngineReport,
    pub reasons: Vec<String>,
    /// Every check of the verdict, passes included.
    pub checks: Checks,
    pub boot_to_ready_ms: Option<u64>,
    pub wall_ms: u64,
}

/// The guest runtime binary: `KTSTR_GUEST`, else `ktstr-guest` beside this executable
/// (cargo puts test binaries in `target/<profile>/deps/`, binaries one level up).
pub fn guest_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("KTSTR_GUEST").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        anyhow::ensure!(p.is_file(), "KTSTR_GUEST={} is not a file", p.display());
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot find the current executable")?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    for _ in 0..3 {
        let Some(d) = dir else { break };
        let cand = d.join("ktstr-guest");
        if cand.is_file() {
            return Ok(cand);
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    anyhow::bail!(
        "the guest runtime `ktstr-guest` was not found beside {}: build it with `cargo build -p ktstr-guest` or set KTSTR_GUEST=/path/to/ktstr-guest",
        exe.display()
    )
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

/// Run one test end to end.
pub fn run(req: &RunRequest) -> anyhow::Result<RunOutcome> {
    let req = &RunRequest {
        spec: spec_with_payloads(req)?,
        ..req.clone()
    };
    let assert = &req.assert;
    let started = Instant::now();
    // An impossible spec never boots.
    crate::scenario::validate_spec(&req.spec, &req.topology).map_err(|e| {
        anyhow::anyhow!(
            "test `{}` has an invalid spec for topology {}: {e}",
            req.test_name,
            req.topology
        )
    })?;
    let mut sidecar = SidecarResult::new_run(
        req.test_name.clone(),
        req.topology.to_string(),
        req.scheduler.name(),
    );
    sidecar.vcpus = req.topology.vcpus();
    // Part of the variant: set before the file name is known.
    sidecar.payload = req.payloads.first().map(|p| p.name.clone());
    // The scheduler's sysctls and kargs are part of the variant: add them before the
    // sidecar's file name is known.
    sidecar.sysctls = [req.sysctls.clone(), req.scheduler.sysctl_strings()].concat();
    sidecar.kargs = [req.kargs.as_slice(), req.scheduler.kargs()].concat();
    let sched = req.scheduler.prepare();
    if let Ok(p) = &sched {
        sidecar.resolve_source = p.resolve_source;
    }
    sidecar.work_type = evaluate::work_type_name(&req.spec);
    sidecar.set_kernel(
        Some(req.kernel.release.clone()),
        req.kernel
            .source_tree
            .as_deref()
            .or(Some(req.kernel.image.as_path())),
    );
    if let Some(h) = sidecar.host.as_mut() {
        h.engine = Some(match req.engine {
            EngineKind::Kvm => ktstr_sidecar::host::Engine::Kvm,
            EngineKind::QemuTcg => ktstr_sidecar::host::Engine::QemuTcg,
        });
    }

    let out_dir = if req.write_sidecar {
        ktstr_sidecar::paths::run_dir_for(&sidecar)
    } else {
        std::env::temp_dir().join("ktstr-shell")
    };
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create run directory {}", out_dir.display()))?;
    let stem = sidecar
        .file_name()
        .trim_end_matches(".ktstr.json")
        .to_string();
    let console_log = out_dir.join(format!("{stem}.console.log"));
    let sched = match sched {
        Ok(p) => p,
        Err(missing) => {
            return crate::scheduler::run::missing_outcome(req, sidecar, &out_dir, missing, started)
        }
    };
    let work = tempfile::Builder::new()
        .prefix("ktstr-run-")
        .tempdir()
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
    let mut collector = Collector::new(mode, started);
    let mut engine_report = boot_and_drain(req.engine, &boot, &mut collector)?;
    // Multi-threaded TCG sometimes runs a stale translation of code the kernel has just
    // patched (an int3 Oops in early boot, seen once in ~40 boots of a 2-vCPU guest). A
    // guest kernel that died before our runtime started measured nothing: boot it once
    // more, and say so in the sidecar.
    let boot_note = retry_reason(
        req.engine,
        collector.data.ready.is_some(),
        evaluate::console_excerpt(&console_log).as_deref(),
    );
    if boot_note.is_some() {
        collector = Collector::new(mode, Instant::now());
        engine_report = boot_and_drain(req.engine, &boot, &mut collector)?;
    }
    let torn_down = Instant::now();
    let data = collector.data;

    sidecar.cpu_budget = engine_report.cpu_budget;
    sidecar.cleanup_duration_ms = data
        .done_at
        .map(|t| torn_down.saturating_duration_since(t).as_millis() as u64);
    if let Some(stats) = engine_report.kvm_stats.clone() {
        sidecar.kvm_stats = Some(ktstr_sidecar::KvmStatsTotals { per_vcpu: stats });
    }
    let measured = evaluate::measure(&req.spec, &req.topology, assert, &data);
    sidecar.stats = measured.stats.clone();
    sidecar.monitor = measured.monitor.as_ref().map(|(m, _)| m.clone());
    sidecar.stimulus_events = measured.stimulus_events.clone();
    sidecar.periodic_fired = measured.periodic_fired;
    sidecar.periodic_target = measured.periodic_target;

    let mut verdict =
        evaluate::evaluate(req, assert, &data, &measured, &engine_report, &console_log);
    crate::scheduler::run::add_checks(&sched, &data, &mut verdict);
    sidecar.metrics = add_payload_checks(req, &data, &mut verdict);
    crate::scheduler::run::record(&data, &mut sidecar, &out_dir, &stem);
    verdict.reasons.extend(boot_note);
    sidecar.stats.verdict_details = verdict.reasons.clone();
    let finalized = sidecar.finalize(verdict.outcome, req.expect_err);

    let sidecar_path = if req.write_sidecar {
        Some(
            sidecar
                .write_to_dir(&out_dir)
                .with_context(|| format!("cannot write the sidecar into {}", out_dir.display()))?,
        )
    } else {
        None
    };
    let keep_console = !req.write_sidecar || finalized.outcome != Outcome::Pass || req.expect_err;
    if !keep_console && !req.console_on_terminal {
        let _ = std::fs::remove_file(&console_log);
    }
    Ok(RunOutcome {
        boot_to_ready_ms: data.ready.as_ref().map(|r| r.host_ms),
        sidecar,
        sidecar_path,
        console_log: (keep_console && console_log.exists()).then_some(console_log),
        collected: data,
        engine: engine_report,
        reasons: verdict.reasons,
        checks: verdict.checks,
        wall_ms: started.elapsed().as_millis() as u64,
    })
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

/// Why a boot deserves one more try: under qemu-tcg, the guest kernel crashed before our
/// runtime reported ready (so nothing of the test ran). `None`: judge the run as it is.
fn retry_reason(engine: EngineKind, ready: bool, console: Option<&str>) -> Option<String> {
    if engine != EngineKind::QemuTcg || ready {
        return None;
    }
    let crash = console.filter(|c| c.contains("Oops") || c.contains("Kernel panic"))?;
    let first = crash.lines().next().unwrap_or_default().trim();
    Some(format!(
        "boot retried once: the first boot's kernel crashed before /init under qemu-tcg ({first})"
    ))
}

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
    Ok(guest.teardown())
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
    fn only_a_qemu_kernel_crash_before_ready_is_retried() {
        let oops = "[    1.28] Oops: int3: 0000 [#1] SMP NOPTI\n[    1.29] RIP: sched_clock_cpu";
        let why = retry_reason(EngineKind::QemuTcg, false, Some(oops)).unwrap();
        assert!(why.contains("Oops: int3"), "{why}");
        // Once our runtime is up, a crash is the test's business.
        assert_eq!(retry_reason(EngineKind::QemuTcg, true, Some(oops)), None);
        // Our own VMM has no such race.
        assert_eq!(retry_reason(EngineKind::Kvm, false, Some(oops)), None);
        // A guest that never got ready for another reason is judged as it is.
        assert_eq!(
            retry_reason(
                EngineKind::QemuTcg,
                false,
                Some("[ 2.0] Run /init as init process")
            ),
            None
        );
        assert_eq!(retry_reason(EngineKind::QemuTcg, false, None), None);
    }
}
