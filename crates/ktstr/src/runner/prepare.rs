//! Step 1 of a run, prepare: everything before the boot. Check the request (its spec
//! against the topology, its payloads on the host), record its identity, find or build
//! the scheduler, make the run directory, and pack the initramfs (cached base + this
//! test's guest spec). A run whose scheduler is missing ends here, never booted.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use ktstr_sidecar::{Outcome, ResolveSource, SidecarResult};
use ktstr_wire::spec::GuestSpec;

use super::{finalize, guest_binary, RunOutcome, RunRequest, DEFAULT_SHM_SIZE};
use crate::assert::{Check, Checks, Gate};
use crate::engine::{BootSpec, WarmStart};
use crate::initramfs::{self, BaseParts};
use crate::scheduler::{self, parse_sysctl, Missing};
use crate::scratch::ScratchDir;

/// A run ready to boot.
#[derive(Debug)]
pub struct PreparedRun {
    /// The request, its spec's payloads filled from its payloads.
    pub req: RunRequest,
    /// When the run started (the first boot's clock).
    pub started: Instant,
    /// The run's identity (and where its scheduler came from), before any verdict.
    pub sidecar: SidecarResult,
    pub scheduler: scheduler::Prepared,
    /// Where the console log, the scheduler log and a discarded attempt go.
    pub out_dir: PathBuf,
    /// File stem of everything in `out_dir` (the sidecar's name without `.ktstr.json`).
    pub stem: String,
    pub console_log: PathBuf,
    /// Where [`finalize::finalize`] writes the sidecar; None: nowhere (a shell).
    pub sidecar_dir: Option<PathBuf>,
    pub boot: BootSpec,
    /// Holds the initramfs until the run is over.
    _work: ScratchDir,
}

/// Prepare `req` for its boot; `Err` holds the outcome of a run that ends before it
/// (its scheduler is missing), for [`finalize::finalize`] to write.
pub fn prepare(
    req: &RunRequest,
    started: Instant,
) -> anyhow::Result<Result<PreparedRun, Box<RunOutcome>>> {
    let req = RunRequest {
        spec: spec_with_payloads(req)?,
        ..req.clone()
    };
    // From here on an interrupt is recorded (the boot step stops the guest for it).
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
    tracing::debug!("prepare: identity after {:?}", started.elapsed());
    let sched = req.scheduler.prepare();
    tracing::debug!("prepare: scheduler after {:?}", started.elapsed());
    if let Ok(p) = &sched {
        sidecar.resolve_source = p.resolve_source;
    }
    let out_dir = run_dir(&req, &sidecar)?;
    let stem = sidecar
        .file_name()
        .trim_end_matches(".ktstr.json")
        .to_string();
    let console_log = out_dir.join(format!("{stem}.console.log"));
    let sidecar_dir = req.write_sidecar.then(|| out_dir.clone());
    // The run's scheduler and the ones its ReplaceScheduler ops name: one missing ends
    // the run here.
    let found = sched.and_then(|s| replacement_schedulers(&req).map(|r| (s, r)));
    let (sched, replacements) = match found {
        Ok(found) => found,
        Err(missing) => {
            return Ok(Err(Box::new(missing_outcome(
                sidecar,
                sidecar_dir,
                missing,
                started,
            ))))
        }
    };
    check_scheduler_ops(&req, &sched)?;
    let work = ScratchDir::create(&std::env::temp_dir(), "ktstr-run-")
        .context("cannot create a temporary directory for the run")?;
    let initrd = work.path().join("initramfs.cpio");
    tracing::debug!("prepare: run dir after {:?}", started.elapsed());
    let warm = pack_initramfs(&req, &sched, &replacements, &initrd)?;
    tracing::debug!("prepare: initramfs packed after {:?}", started.elapsed());
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
        warm,
    };
    Ok(Ok(PreparedRun {
        req,
        started,
        sidecar,
        scheduler: sched,
        out_dir,
        stem,
        console_log,
        sidecar_dir,
        boot,
        _work: work,
    }))
}

/// `req.spec` with its `payloads` filled from `req.payloads` (after checking the payloads
/// on the host: binaries that exist, are executable and have resolvable libraries) and
/// its scenario built ([`GuestSpec::materialize`]).
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
    // One form from here on: the scenario, built once (flat workers and payloads folded
    // in); the guest and every judge read that.
    spec.materialize();
    Ok(spec)
}

/// The directory the run's files go to: the sidecar's run directory for a test (checked
/// writable now), a private new one for a shell (whose console outlives it).
fn run_dir(req: &RunRequest, sidecar: &SidecarResult) -> anyhow::Result<PathBuf> {
    if req.write_sidecar {
        let d = ktstr_sidecar::paths::run_dir_for(sidecar);
        std::fs::create_dir_all(&d)
            .with_context(|| format!("cannot create run directory {}", d.display()))?;
        check_writable(&d)?;
        Ok(d)
    } else {
        // A shell's console outlives it (the user reads it): a private directory of its
        // own, never a shared, guessable path.
        Ok(ScratchDir::create(&std::env::temp_dir(), "ktstr-shell-")
            .context("cannot create a directory for the shell's console log")?
            .keep())
    }
}

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

/// Scheduler ops (detach, attach, restart, replace) need a sched_ext scheduler to act
/// on: on EEVDF they are a mistake in the test, said before anything boots.
fn check_scheduler_ops(req: &RunRequest, sched: &scheduler::Prepared) -> anyhow::Result<()> {
    let Some(op) = req
        .spec
        .scenario
        .iter()
        .flat_map(|s| s.ops())
        .find(|op| op.is_scheduler_op())
    else {
        return Ok(());
    };
    anyhow::ensure!(
        sched.guest.is_some(),
        "test `{}` runs op {} but its scheduler is EEVDF: scheduler ops act on a sched_ext scheduler (set `scheduler = \"scx_bpfland\"`, or drop the op)",
        req.test_name,
        op.kind()
    );
    Ok(())
}

/// The schedulers `ReplaceScheduler` ops name, found (or built) like the run's own and
/// named as the op names them (the guest looks them up by that name).
fn replacement_schedulers(req: &RunRequest) -> Result<Vec<scheduler::Prepared>, Missing> {
    let mut names: Vec<&str> = Vec::new();
    for op in req.spec.scenario.iter().flat_map(|s| s.ops()) {
        if let ktstr_wire::scenario::Op::ReplaceScheduler {
            scheduler: Some(name),
            ..
        } = op
        {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let mut p = scheduler::Scheduler::from(name).prepare()?;
            if let Some(g) = &mut p.guest {
                g.name = name.to_string();
            }
            Ok(p)
        })
        .collect()
}

/// Pack the initramfs into `initrd`: the cached base (guest runtime, kernel modules,
/// includes, the scheduler, its replacements and the payload binaries) and the guest
/// spec. When the run may start warm, also the same split in two: the runtime alone
/// (what a snapshot boots) and the rest as an archive for the restored guest.
fn pack_initramfs(
    req: &RunRequest,
    sched: &scheduler::Prepared,
    replacements: &[scheduler::Prepared],
    initrd: &Path,
) -> anyhow::Result<Option<WarmStart>> {
    let mut base = req.includes.iter().fold(
        BaseParts::new(guest_binary()?).kernel(&req.kernel),
        |b, inc| b.include(inc),
    );
    if let Some(bin) = &sched.binary {
        base = base.include(bin);
    }
    for r in replacements {
        if let Some(bin) = r
            .binary
            .as_ref()
            .filter(|b| Some(*b) != sched.binary.as_ref())
        {
            base = base.include(bin);
        }
    }
    let mut packed: Vec<&Path> = req.includes.iter().map(PathBuf::as_path).collect();
    for p in &req.payloads {
        if !packed.contains(&p.binary.as_path()) {
            packed.push(&p.binary);
            base = base.include(&p.binary);
        }
    }
    let mut guest_spec = guest_spec(&req.spec, &req.sysctls, sched)?;
    guest_spec.replacement_schedulers = replacements
        .iter()
        .filter_map(|r| r.guest.clone())
        .collect();
    let guest_spec = guest_spec.to_json();
    initramfs::build_initramfs(&base, &guest_spec, initrd).context("cannot build the initramfs")?;
    if !may_start_warm(req) {
        return Ok(None);
    }
    let cache = crate::kernel::KernelCache::from_env()
        .context("no cache directory for the warm start's initramfs")?;
    let runtime = base
        .runtime_only()
        .cached_in(&cache.initramfs_dir())
        .context("cannot build the warm start's initramfs")?;
    let mut archive = base
        .includes_builder()
        .context("cannot pack the warm start's delivery")?
        .to_bytes();
    archive.extend(initramfs::test_part(&guest_spec));
    Ok(Some(WarmStart {
        base_initrd: runtime.path,
        base_sha256: runtime.sha256,
        archive: std::sync::Arc::new(archive),
    }))
}

/// Warm starts exist on qemu-tcg, unless turned off (`KTSTR_SNAPSHOT=off`,
/// `--no-snapshot`) or the console is the user's terminal (an interactive shell).
fn may_start_warm(req: &RunRequest) -> bool {
    req.engine == crate::engine::EngineKind::QemuTcg
        && !req.console_on_terminal
        && crate::engine::snapshot::enabled()
}

/// The spec the guest gets: the test's, plus the scheduler to start and the test's own
/// sysctls (the scheduler's travel inside its spec).
pub fn guest_spec(
    spec: &GuestSpec,
    sysctls: &[String],
    prepared: &scheduler::Prepared,
) -> anyhow::Result<GuestSpec> {
    let mut g = spec.clone();
    g.scheduler = prepared.guest.clone();
    for s in sysctls {
        g.sysctls
            .push(parse_sysctl(s).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    Ok(g)
}

/// A run whose scheduler could not be found: nothing boots; the sidecar records
/// `resolve_source = not_found` and fails (or skips, when the test asked for that) with
/// the message that says how to provide it. Written by [`finalize::finalize`] like
/// every run.
pub fn missing_outcome(
    mut sidecar: SidecarResult,
    sidecar_dir: Option<PathBuf>,
    missing: Missing,
    started: Instant,
) -> RunOutcome {
    let outcome = if missing.skip {
        Outcome::Skip
    } else {
        Outcome::Fail
    };
    let mut checks = Checks::default();
    checks.push(Check::new(
        Gate::Run,
        format!("scheduler {}", missing.name),
        outcome,
        missing.message.clone(),
    ));
    sidecar.resolve_source = Some(ResolveSource::NotFound);
    finalize::not_booted(sidecar, outcome, Vec::new(), checks, sidecar_dir, started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Prepared;
    use ktstr_wire::sched::SchedulerSpec;

    fn prepared() -> Prepared {
        Prepared {
            name: "scx_bpfland".into(),
            resolve_source: Some(ResolveSource::AutoBuilt),
            binary: Some("/c/scx_bpfland".into()),
            guest: Some(SchedulerSpec::new("scx_bpfland", "/bin/scx_bpfland")),
            sysctls: vec![],
            kargs: vec![],
        }
    }

    #[test]
    fn the_guest_spec_carries_scheduler_and_sysctls() {
        let g = guest_spec(
            &GuestSpec::new("t", 1000),
            &["sysctl.kernel.sched_autogroup_enabled=0".into()],
            &prepared(),
        )
        .unwrap();
        assert_eq!(g.scheduler.unwrap().binary_guest_path, "/bin/scx_bpfland");
        assert_eq!(
            g.sysctls,
            vec![("kernel.sched_autogroup_enabled".into(), "0".into())]
        );
        assert!(guest_spec(&GuestSpec::new("t", 1), &["junk".into()], &prepared()).is_err());
    }

    #[test]
    fn a_missing_scheduler_is_written_once_by_finalize() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Missing {
            name: "scx_nope".into(),
            message: "scx_nope was not found; build it or set KTSTR_SCHEDULER".into(),
            skip: false,
        };
        let mut out = missing_outcome(
            SidecarResult::new_run("t", "1n1l2c1t", "scx_nope"),
            Some(dir.path().to_path_buf()),
            missing,
            Instant::now(),
        );
        assert_eq!(out.sidecar_path, None, "not written before finalize");
        crate::runner::finalize::finalize(&mut out, Vec::new()).unwrap();
        let path = out.sidecar_path.clone().unwrap();
        let back = ktstr_sidecar::read_sidecar(&path).unwrap();
        assert!(back.is_fail());
        assert_eq!(back.resolve_source, Some(ResolveSource::NotFound));
        assert!(back.stats.verdict_details[0].contains("scx_nope was not found"));
        let text = std::fs::read_to_string(&path).unwrap();
        let report = ktstr_sidecar::conformance::check_text(&text).unwrap();
        assert!(report.unexpected().is_empty(), "{report}");
    }
}
