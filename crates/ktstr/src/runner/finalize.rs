//! Step 6 of a run, finalize, and the two ends of every run's sidecar, each in one
//! place: [`identity`] builds the variant a run records (whatever happens to it later);
//! [`booted`] and [`not_booted`] make a run's [`RunOutcome`]; and [`finalize`] settles
//! the verdict with everything known after the runner judged the run — the test's own
//! host-side checks — and writes the sidecar once, atomically. A booted run, a run
//! refused before boot, a missing scheduler and a skip all end in [`finalize`], so a
//! sidecar on disk is always the final word on its run and was never rewritten.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use ktstr_sidecar::{Outcome, PerfDeltaAssertionRecord, SidecarResult};
use ktstr_topology::Topology;
use ktstr_wire::spec::GuestSpec;

use super::boot::Attempt;
use super::collect::Collected;
use super::judge::Judged;
use super::prepare::PreparedRun;
use super::RunOutcome;
use crate::assert::Checks;
use crate::engine::{EngineKind, EngineReport, GuestExit};
use crate::kernel::ResolvedKernel;
use crate::payload::Payload;
use crate::scheduler::Scheduler;

/// What defines a run before it runs: the variant (topology, scheduler with its sysctls
/// and kargs, payload, work type) and what travels with it (snapshots asked, perf-delta
/// gates, the kernel and engine when known).
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub test_name: &'a str,
    pub topology: Topology,
    pub scheduler: &'a Scheduler,
    /// The test's own sysctls (`sysctl.<key>=<value>`); the scheduler's follow them.
    pub sysctls: &'a [String],
    /// The test's own kernel arguments; the scheduler's follow them.
    pub kargs: &'a [String],
    /// The first is the sidecar's `payload`.
    pub payloads: &'a [Payload],
    pub guest: &'a GuestSpec,
    pub perf_delta_assertions: &'a [PerfDeltaAssertionRecord],
    /// None when the run ended before a kernel was resolved.
    pub kernel: Option<&'a ResolvedKernel>,
    /// None when the run ended before an engine was chosen.
    pub engine: Option<EngineKind>,
}

/// The sidecar of a run starting now: its variant and provenance, verdict Fail (all
/// bits false) until [`finalize`]. The only place a run's identity is built, so a run
/// that never boots lands in the same file as a run of the same variant that does.
pub fn identity(v: &Identity<'_>) -> SidecarResult {
    let mut s = SidecarResult::new_run(v.test_name, v.topology.to_string(), v.scheduler.name());
    s.vcpus = v.topology.vcpus();
    s.payload = v.payloads.first().map(|p| p.name.clone());
    // Part of the variant: the test's, then the scheduler's.
    s.sysctls = [v.sysctls, v.scheduler.sysctl_strings().as_slice()].concat();
    s.kargs = [v.kargs, v.scheduler.kargs()].concat();
    s.work_type = v.guest.work_type_name();
    s.periodic_target = v.guest.num_snapshots;
    s.perf_delta_assertions = v.perf_delta_assertions.to_vec();
    if let Some(k) = v.kernel {
        s.set_kernel(
            Some(k.release.clone()),
            k.source_tree.as_deref().or(Some(k.image.as_path())),
        );
        // A source-built cache entry knows the commit it was built from; the tree may
        // have moved on since.
        if let Some(c) = k
            .metadata
            .as_ref()
            .and_then(|m| m.build.as_ref()?.commit.clone())
        {
            s.kernel_commit = Some(c);
        }
    }
    if let (Some(h), Some(engine)) = (s.host.as_mut(), v.engine) {
        h.engine = Some(match engine {
            EngineKind::Kvm => ktstr_sidecar::Engine::Kvm,
            EngineKind::QemuTcg => ktstr_sidecar::Engine::QemuTcg,
        });
    }
    s
}

/// A booted run judged: `judged` (the last attempt's verdict) with `notes` after its
/// checks' lines (a retry), the scheduler's log kept beside the sidecar, ready for
/// [`finalize`].
pub fn booted(
    run: PreparedRun,
    attempt: Attempt,
    judged: Judged,
    notes: Vec<String>,
) -> RunOutcome {
    let Judged {
        mut sidecar,
        checks,
    } = judged;
    sidecar.stats.verdict_details.extend(notes.iter().cloned());
    if let Some(h) = sidecar.host.as_mut() {
        h.start = Some(attempt.engine.start);
    }
    let scheduler_log = keep_scheduler_log(&attempt.data, &run.out_dir, &run.stem);
    if run.sidecar_dir.is_some() {
        keep_monitor_series(&run, &attempt.data);
    }
    let console_log = run.console_log.exists().then_some(run.console_log);
    RunOutcome {
        boot_to_ready_ms: attempt.data.ready.as_ref().map(|r| r.host_ms),
        sidecar,
        sidecar_dir: run.sidecar_dir,
        sidecar_path: None,
        console_log,
        scheduler_log,
        collected: attempt.data,
        engine: attempt.engine,
        checks,
        notes,
        wall_ms: run.started.elapsed().as_millis() as u64,
    }
}

/// Keeps the monitor's samples as `<stem>.monitor.json` beside the sidecar (for
/// `stats show --html`); a run without samples leaves none.
fn keep_monitor_series(run: &PreparedRun, data: &Collected) {
    if data.monitor_samples.is_empty() {
        return;
    }
    let series = super::measure::monitor_series(
        &data.monitor_samples,
        u64::from(run.req.spec.monitor.interval_ms),
    );
    let path = run.out_dir.join(format!("{}.monitor.json", run.stem));
    if let Err(e) = series.write(&path) {
        tracing::warn!("cannot keep the monitor series {}: {e}", path.display());
    }
}

/// Keeps the scheduler's output as `<stem>.scheduler.log` in `out_dir`; returns that
/// file when there was output.
fn keep_scheduler_log(data: &Collected, out_dir: &Path, stem: &str) -> Option<PathBuf> {
    if data.scheduler_log.is_empty() {
        return None;
    }
    let path = out_dir.join(format!("{stem}.scheduler.log"));
    match std::fs::write(&path, &data.scheduler_log) {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!("cannot keep the scheduler log {}: {e}", path.display());
            None
        }
    }
}

/// A run that ended before its guest booted (refused, skipped, its scheduler missing):
/// `sidecar` with `outcome` as its verdict, explained by `checks` and then `notes` —
/// not inverted by `expect_err`, which is about the scheduler's behaviour, and nothing
/// ran — ready for [`finalize`] to write into `sidecar_dir`.
pub fn not_booted(
    mut sidecar: SidecarResult,
    outcome: Outcome,
    notes: Vec<String>,
    checks: Checks,
    sidecar_dir: Option<PathBuf>,
    started: Instant,
) -> RunOutcome {
    sidecar.set_outcome(outcome);
    sidecar.expected_failure = false;
    let reasons: Vec<String> = checks.details().into_iter().chain(notes.clone()).collect();
    sidecar
        .stats
        .verdict_details
        .extend(reasons.iter().cloned());
    let vcpus = sidecar.vcpus;
    let why = reasons.first().cloned().unwrap_or_default();
    RunOutcome {
        sidecar,
        sidecar_dir,
        sidecar_path: None,
        console_log: None,
        scheduler_log: None,
        collected: Collected::default(),
        engine: EngineReport {
            exit: GuestExit::EngineFailed(format!("not booted: {why}")),
            vcpus,
            cpu_budget: 0,
            host_cpus: Vec::new(),
            kvm_stats: None,
            start: crate::engine::GuestStart::Cold,
            snapshot: None,
        },
        checks,
        notes,
        boot_to_ready_ms: None,
        wall_ms: started.elapsed().as_millis() as u64,
    }
}

/// Settle `out`'s verdict and write its sidecar, once.
///
/// `check_failures` are the failed host-side checks of the test (run on the judged
/// outcome): any one fails the run, an expected failure included (it failed for the
/// wrong reason). Then the sidecar goes to `out.sidecar_dir` atomically (none: a shell,
/// nothing is written) and `out.sidecar_path` says where; the console log is kept only
/// when the run did not pass cleanly, nothing is written, or the write failed. On a
/// write error the verdict stays as settled and the error says where it failed.
pub fn finalize(out: &mut RunOutcome, check_failures: Vec<String>) -> anyhow::Result<()> {
    if !check_failures.is_empty() {
        out.sidecar.set_outcome(Outcome::Fail);
        out.sidecar.expected_failure = false;
        out.sidecar
            .stats
            .verdict_details
            .extend(check_failures.iter().cloned());
        out.notes.extend(check_failures);
    }
    if let Some(dir) = &out.sidecar_dir {
        // On a write error the console log stays: it is then all that is left of the run.
        let path = out.sidecar.write_to_dir(dir).with_context(|| {
            format!(
                "the run's verdict was {} but its sidecar could not be written into {} (free space there, or point {} / {} at a writable directory); the console log is kept",
                out.sidecar.outcome().as_str(),
                dir.display(),
                ktstr_sidecar::paths::RUNS_ROOT_ENV,
                ktstr_sidecar::paths::SIDECAR_DIR_ENV,
            )
        })?;
        out.sidecar_path = Some(path);
    }
    let keep_console =
        out.sidecar_dir.is_none() || !out.sidecar.is_pass() || out.sidecar.expected_failure;
    if !keep_console {
        if let Some(console) = out.console_log.take() {
            let _ = std::fs::remove_file(console);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_sidecar::conformance;

    fn kernel() -> ResolvedKernel {
        ResolvedKernel::unbootable("7.2.13")
    }

    fn gates() -> Vec<PerfDeltaAssertionRecord> {
        vec![PerfDeltaAssertionRecord {
            metric: "worst_gap_ms".into(),
            ..Default::default()
        }]
    }

    #[test]
    fn identity_records_the_variant_and_what_travels_with_it() {
        let scheduler: Scheduler = "eevdf".into();
        let mut guest = GuestSpec::new("t", 1000);
        guest.num_snapshots = 3;
        let gates = gates();
        let k = kernel();
        let v = Identity {
            test_name: "t",
            topology: "1n1l2c1t".parse().unwrap(),
            scheduler: &scheduler,
            sysctls: &["sysctl.vm.swappiness=0".into()],
            kargs: &["quiet".into()],
            payloads: &[],
            guest: &guest,
            perf_delta_assertions: &gates,
            kernel: Some(&k),
            engine: Some(EngineKind::QemuTcg),
        };
        let s = identity(&v);
        assert_eq!(
            (
                s.test_name.as_str(),
                s.topology.as_str(),
                s.scheduler.as_str()
            ),
            ("t", "1n1l2c1t", "eevdf")
        );
        assert_eq!((s.vcpus, s.periodic_target), (2, 3));
        assert_eq!(s.sysctls, ["sysctl.vm.swappiness=0"]);
        assert_eq!(s.kargs, ["quiet"]);
        assert_eq!(s.perf_delta_assertions, gates);
        assert_eq!(s.kernel_version.as_deref(), Some("7.2.13"));
        assert_eq!(
            s.host.as_ref().and_then(|h| h.engine),
            Some(ktstr_sidecar::Engine::QemuTcg)
        );
        assert!(s.is_fail(), "no verdict before finalize");
        // Without kernel and engine (a run refused early): the same variant, same file.
        let early = identity(&Identity {
            kernel: None,
            engine: None,
            ..v
        });
        assert_eq!(early.file_name(), s.file_name());
        assert_eq!(early.kernel_version, None);
    }

    #[test]
    fn a_refused_run_is_written_once_and_the_reference_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SidecarResult::new_run("t", "1n1l2c1t", "eevdf");
        s.perf_delta_assertions = gates();
        let mut out = not_booted(
            s,
            Outcome::Skip,
            vec!["kernel unavailable: none cached".into()],
            Checks::default(),
            Some(dir.path().to_path_buf()),
            Instant::now(),
        );
        assert!(
            out.sidecar_path.is_none(),
            "nothing written before finalize"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        finalize(&mut out, Vec::new()).unwrap();
        let path = out.sidecar_path.clone().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let back = ktstr_sidecar::read_sidecar(&path).unwrap();
        assert!(back.is_skip() && !back.expected_failure);
        assert_eq!(
            back.stats.verdict_details,
            ["kernel unavailable: none cached"]
        );
        assert_eq!(back.perf_delta_assertions, gates());
        let report = conformance::check_text(&text).unwrap();
        assert!(report.unexpected().is_empty(), "{report}");
    }

    #[test]
    fn failed_checks_fail_the_run_even_an_expected_failure_and_keep_the_console() {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("t.console.log");
        std::fs::write(&console, "boot\n").unwrap();
        let mut s = SidecarResult::new_run("t", "1n1l2c1t", "eevdf");
        s.finalize(Outcome::Fail, true);
        assert!(s.is_pass() && s.expected_failure);
        let mut out = not_booted(
            s.clone(),
            Outcome::Pass,
            vec![],
            Checks::default(),
            Some(dir.path().to_path_buf()),
            Instant::now(),
        );
        out.sidecar = s;
        out.console_log = Some(console.clone());
        finalize(&mut out, vec!["check 1 failed: wrong reason".into()]).unwrap();
        let back = ktstr_sidecar::read_sidecar(out.sidecar_path.as_ref().unwrap()).unwrap();
        assert!(back.is_fail() && !back.expected_failure);
        assert_eq!(
            back.stats.verdict_details.last().map(String::as_str),
            Some("check 1 failed: wrong reason")
        );
        assert_eq!(out.reasons(), ["check 1 failed: wrong reason"]);
        assert_eq!(out.console_log.as_deref(), Some(console.as_path()));
        assert!(console.exists());
    }

    #[test]
    fn a_clean_pass_drops_the_console_and_a_shell_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("t.console.log");
        std::fs::write(&console, "boot\n").unwrap();
        let mut out = not_booted(
            SidecarResult::new_run("t", "1n1l2c1t", "eevdf"),
            Outcome::Pass,
            vec![],
            Checks::default(),
            Some(dir.path().join("run")),
            Instant::now(),
        );
        out.console_log = Some(console.clone());
        finalize(&mut out, Vec::new()).unwrap();
        assert!(out.sidecar_path.is_some() && out.console_log.is_none());
        assert!(!console.exists());

        std::fs::write(&console, "boot\n").unwrap();
        let mut shell = not_booted(
            SidecarResult::new_run("t", "1n1l2c1t", "eevdf"),
            Outcome::Pass,
            vec![],
            Checks::default(),
            None,
            Instant::now(),
        );
        shell.console_log = Some(console.clone());
        finalize(&mut shell, Vec::new()).unwrap();
        assert_eq!(shell.sidecar_path, None);
        assert!(console.exists(), "a shell's console is the user's to read");
    }

    #[test]
    fn checks_see_the_sidecar_as_written_and_only_a_readable_one() {
        let mut out = not_booted(
            SidecarResult::new_run("t", "1n1l2c1t", "eevdf"),
            Outcome::Pass,
            vec![],
            Checks::default(),
            None,
            Instant::now(),
        );
        assert_eq!(out.sidecar_as_written().unwrap(), out.sidecar);
        // A histogram the reference cannot hold (it needs all 4864 buckets).
        let mut phase = ktstr_sidecar::PhaseBucket::default();
        let bad = ktstr_sidecar::PlatStats {
            plat: vec![1, 2, 3],
            ..Default::default()
        };
        phase.per_cgroup.insert(
            "cg0".into(),
            ktstr_sidecar::PhaseCgroupStats {
                schbench: Some(ktstr_sidecar::SchbenchPhaseStats {
                    wakeup: bad,
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        out.sidecar.stats.phases.push(phase);
        let err = out.sidecar_as_written().unwrap_err().to_string();
        assert!(
            err.contains("stats.phases[0].per_cgroup.cg0.schbench.wakeup.plat"),
            "{err}"
        );
    }

    #[test]
    fn a_write_error_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").unwrap();
        let mut out = not_booted(
            SidecarResult::new_run("t", "1n1l2c1t", "eevdf"),
            Outcome::Fail,
            vec!["why".into()],
            Checks::default(),
            Some(blocker.join("sub")),
            Instant::now(),
        );
        let err = format!("{:#}", finalize(&mut out, Vec::new()).unwrap_err());
        let sub = blocker.join("sub");
        assert!(
            err.contains("verdict was fail but its sidecar could not be written into")
                && err.contains(&sub.display().to_string())
                && err.contains("KTSTR_RUNS_ROOT"),
            "{err}"
        );
        assert_eq!(out.sidecar_path, None);
    }

    #[test]
    fn the_scheduler_log_is_kept_beside_the_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let data = Collected {
            scheduler_log: b"scx_bpfland 1.1.4\n".to_vec(),
            ..Collected::default()
        };
        let log = keep_scheduler_log(&data, dir.path(), "t-0123").unwrap();
        assert_eq!(log, dir.path().join("t-0123.scheduler.log"));
        assert_eq!(std::fs::read(&log).unwrap(), b"scx_bpfland 1.1.4\n");
        assert_eq!(
            keep_scheduler_log(&Collected::default(), dir.path(), "t-0124"),
            None
        );
    }
}
