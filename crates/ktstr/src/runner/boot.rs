//! Step 2 of a run, boot: start the guest on its engine, drain the shared-memory ring
//! into the [`Collector`] while it runs (step 3, collect), and tear it down when it is
//! gone, killed by the watchdog or an interrupt. Known emulator artifacts are worth a
//! second boot ([`should_retry`]); the discarded attempt is kept beside the run.

use std::time::{Duration, Instant};

use anyhow::Context;
use ktstr_sidecar::SidecarResult;
use ktstr_wire::{init_header, Reader, SharedMem, StopReason};

use super::collect::{excerpt_of, is_kernel_failure, Collected, Collector, OutputMode};
use super::prepare::PreparedRun;
use super::EXIT_GRACE;
use crate::engine::{self, BootSpec, EngineKind, EngineReport, RunningGuest};

/// What one boot left: the guest's reports, the engine's, and when teardown ended.
#[derive(Debug)]
pub struct Attempt {
    pub data: Collected,
    pub engine: EngineReport,
    /// When the guest was torn down (`cleanup_duration_ms` runs from its done message).
    pub torn_down: Instant,
}

/// Boot `run` once and collect everything the guest reports; `clock` is the time origin
/// of the collector's host timestamps.
pub fn boot(run: &PreparedRun, clock: Instant) -> anyhow::Result<Attempt> {
    let mode = if run.req.stream_output {
        OutputMode::Stream
    } else {
        OutputMode::Capture
    };
    let mut collector = Collector::new(mode, clock);
    let engine = boot_and_drain(run.req.engine, &run.boot, &mut collector)?;
    Ok(Attempt {
        torn_down: Instant::now(),
        data: collector.data,
        engine,
    })
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
    let ring_ok = drain_while_running(guest.as_mut(), &mut reader, collector, boot.deadline)?;
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

/// Drain the ring while the guest runs; stop it on an interrupt, a corrupt ring, the
/// `deadline`, or a guest that reported done but does not reboot. Returns whether the
/// ring is still sound.
fn drain_while_running(
    guest: &mut dyn RunningGuest,
    reader: &mut Reader,
    collector: &mut Collector,
    deadline: Duration,
) -> anyhow::Result<bool> {
    let until = Instant::now() + deadline;
    let mut ring_ok = true;
    loop {
        let mut progressed = false;
        if let Some(sig) = crate::interrupt::received() {
            reader.request_stop(StopReason::Watchdog);
            guest.kill(crate::interrupt::reason(sig));
            break;
        }
        if ring_ok {
            match drain(reader, collector) {
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
        if now >= until {
            reader.request_stop(StopReason::Watchdog);
            guest.kill(format!(
                "watchdog: the run exceeded its {} s deadline",
                deadline.as_secs()
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
    Ok(ring_ok)
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

/// How a retried run says so in `stats.verdict_details` (the soak counts these).
pub const RETRY_NOTE: &str = "retried once";

/// Why the first boot of `run` is to be retried, read from its console; `None`: judge
/// it as it is. The one failure retried is a guest kernel `Oops: int3` under
/// multi-threaded TCG (see `retry_reason`).
pub fn should_retry(run: &PreparedRun, attempt: &Attempt) -> Option<String> {
    let threading = match run.req.engine {
        EngineKind::QemuTcg => Some(engine::qemu::tcg_threading()),
        // Our VMM inside `cargo ktstr nested`: the "hardware" is qemu's multi-threaded TCG
        // one level down, with the same stale-translation artifact.
        EngineKind::Kvm => crate::nested::outer_tcg_threading(),
    };
    // Read once: the int3 retry looks at its excerpt, the silent-death one at all of it
    // (a sched_ext error or a WARNING may lie well before its end).
    let console = std::fs::read(&run.console_log).ok();
    let console = console.as_deref().map(String::from_utf8_lossy);
    let excerpt = console.as_deref().and_then(excerpt_of);
    retry_reason(threading, excerpt.as_deref()).or_else(|| {
        if run.req.engine != EngineKind::Kvm || !crate::nested::inside() {
            return None;
        }
        silent_death(
            &attempt.engine.exit,
            attempt.data.done.is_some(),
            console.as_deref(),
        )
    })
}

/// Inside `cargo ktstr nested` (our VMM on KVM in an L1 guest whose SVM qemu's TCG
/// emulates): a guest that triple-faulted or reset before its runtime reported done,
/// with no kernel failure on its console. A kernel that dies of its own bug, or of the
/// scheduler's, says so on the console first (an oops, a panic, a BUG, a sched_ext
/// error): those are never retried. On hardware KVM nothing is retried.
fn silent_death(exit: &engine::GuestExit, done: bool, console: Option<&str>) -> Option<String> {
    let how = match exit {
        // The fault says where, when the host traced the shutdown (ktstr_vmm::exit_trace).
        engine::GuestExit::TripleFault(fault) => format!("triple-faulted ({fault})"),
        engine::GuestExit::Reset if !done => "reset before it reported done".to_string(),
        _ => return None,
    };
    let said = console.unwrap_or("").lines().any(|l| {
        is_kernel_failure(l)
            || ["general protection", "sched_ext:", "WARNING:"]
                .iter()
                .any(|m| l.contains(m))
    });
    if said {
        return None;
    }
    Some(format!(
        "{RETRY_NOTE}: the guest {how} without a word on its console, inside `cargo ktstr nested` (emulated SVM, docs/reliability.md)"
    ))
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

/// Write a discarded attempt's sidecar as `{stem}.attempt1.json` and move its console
/// log to `{stem}.attempt1.console.log` (not as a `*.ktstr.json`, so pools never count
/// it); say where they are (or why not).
pub fn keep_discarded_attempt(sidecar: &SidecarResult, run: &PreparedRun) -> String {
    let json = run.out_dir.join(format!("{}.attempt1.json", run.stem));
    let console = run
        .out_dir
        .join(format!("{}.attempt1.console.log", run.stem));
    let mut notes = Vec::new();
    let written = sidecar
        .to_json_pretty()
        .and_then(|text| ktstr_sidecar::write::write_atomic(&json, text.as_bytes()));
    match written {
        Ok(()) => notes.push(json.display().to_string()),
        Err(e) => notes.push(format!("sidecar not kept ({e})")),
    }
    match std::fs::rename(&run.console_log, &console) {
        Ok(()) => notes.push(console.display().to_string()),
        Err(e) => notes.push(format!("console not kept ({e})")),
    }
    notes.join(", ")
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

    #[test]
    fn a_silent_triple_fault_or_early_reset_in_nested_is_retried_a_reported_death_is_not() {
        use engine::GuestExit;
        let quiet = "[    1.30] PCI: Fatal: No config space access function found";
        let tf = GuestExit::TripleFault("vCPU 1 shutdown".into());
        let why = silent_death(&tf, false, Some(quiet)).unwrap();
        assert!(
            why.starts_with(RETRY_NOTE) && why.contains("triple-faulted (vCPU 1 shutdown)"),
            "{why}"
        );
        assert!(silent_death(&GuestExit::Reset, false, None).is_some());
        // A reset after done is how every run ends.
        assert_eq!(silent_death(&GuestExit::Reset, true, Some(quiet)), None);
        // The kernel said why: the run is judged as it is.
        for said in [
            "[ 3.1] Kernel panic - not syncing: Attempted to kill init!",
            "[ 3.1] Oops: general protection fault",
            "[ 3.1] BUG: kernel NULL pointer dereference, address: 0000000000000008",
            "[ 5.0] sched_ext: BPF scheduler \"bpfland\" disabled (runnable task stall)",
        ] {
            assert_eq!(silent_death(&tf, false, Some(said)), None, "{said}");
            assert_eq!(
                silent_death(&GuestExit::Reset, false, Some(said)),
                None,
                "{said}"
            );
        }
        // A kill, a watchdog or an engine failure is not a silent death.
        assert_eq!(
            silent_death(&GuestExit::Killed("watchdog".into()), false, None),
            None
        );
        assert_eq!(
            silent_death(&GuestExit::EngineFailed("x".into()), false, None),
            None
        );
    }
}
