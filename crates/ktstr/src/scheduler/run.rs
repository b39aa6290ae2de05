//! The runner's side of the scheduler: the guest spec's scheduler and sysctls, the
//! scheduler checks of the verdict, what goes into the sidecar (`verifier_stats`, the
//! scheduler log beside it), and the run that never boots because the scheduler is
//! missing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ktstr_sidecar::{Outcome, ResolveSource, SidecarResult};
use ktstr_wire::sched::SchedEvent;
use ktstr_wire::spec::GuestSpec;

use super::{judge, parse_sysctl, verifier_stats, Missing, Prepared};
use crate::assert::{Check, Checks, Gate};
use crate::runner::collect::Collected;
use crate::runner::evaluate::Verdict;
use crate::runner::RunOutcome;

/// The spec the guest gets: the test's, plus the scheduler to start and the test's own
/// sysctls (the scheduler's travel inside its spec).
pub fn guest_spec(
    spec: &GuestSpec,
    sysctls: &[String],
    prepared: &Prepared,
) -> anyhow::Result<GuestSpec> {
    let mut g = spec.clone();
    g.scheduler = prepared.guest.clone();
    for s in sysctls {
        g.sysctls
            .push(parse_sysctl(s).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    Ok(g)
}

/// Subject of the scheduler's checks.
fn subject(prepared: &Prepared) -> String {
    format!("scheduler {}", prepared.name)
}

/// The scheduler's checks: a failure per problem ([`judge`]), or one pass saying it
/// attached and detached. Failures go first in the verdict: they usually explain the
/// rest (workers that never ran, a guest exit code).
pub fn add_checks(prepared: &Prepared, data: &Collected, verdict: &mut Verdict) {
    let reasons = judge(prepared, data);
    let mut mine: Vec<Check> = reasons
        .into_iter()
        .map(|r| Check::new(Gate::Run, subject(prepared), Outcome::Fail, r))
        .collect();
    if mine.is_empty() && prepared.guest.is_some() {
        let attach = data.scheduler_events.iter().find_map(|e| match e {
            SchedEvent::Attached { ops, attach_ms, .. } => Some((ops.clone(), *attach_ms)),
            _ => None,
        });
        let detached = data
            .scheduler_events
            .iter()
            .any(|e| matches!(e, SchedEvent::Detached { clean: true, .. }));
        if let Some((ops, ms)) = attach {
            mine.push(Check::new(
                Gate::Run,
                subject(prepared),
                Outcome::Pass,
                format!(
                    "attached as `{ops}` after {ms} ms{}",
                    if detached { ", detached cleanly" } else { "" }
                ),
            ));
        }
    }
    if mine.is_empty() {
        return;
    }
    let mut checks = Checks::default();
    checks.extend(mine);
    checks.extend(std::mem::take(&mut verdict.checks.list));
    verdict.outcome = checks.outcome();
    verdict.reasons = checks.details();
    verdict.checks = checks;
}

/// Fills the sidecar's `verifier_stats` and keeps the scheduler's output as
/// `<stem>.scheduler.log` in `out_dir`; returns that file when there was output.
pub fn record(
    data: &Collected,
    sidecar: &mut SidecarResult,
    out_dir: &Path,
    stem: &str,
) -> Option<PathBuf> {
    sidecar.verifier_stats = verifier_stats(&data.verifier_stats);
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

/// A run whose scheduler could not be found: nothing boots; the sidecar records
/// `resolve_source = not_found` and fails (or skips, when the test asked for that) with
/// the message that says how to provide it. Written by [`finalize`] like every run.
///
/// [`finalize`]: crate::runner::finalize::finalize
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
    let reasons = checks.details();
    crate::runner::finalize::not_booted(sidecar, outcome, reasons, checks, sidecar_dir, started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_wire::sched::{ProgInsns, SchedulerSpec, BPF_PROG_TYPE_STRUCT_OPS};

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

    fn verdict_with_a_pass() -> Verdict {
        let mut checks = Checks::default();
        checks.pass(Gate::Topology, "guest", "the guest sees 1n1l2c1t".into());
        Verdict {
            outcome: checks.outcome(),
            reasons: checks.details(),
            checks,
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
    fn an_ejection_fails_the_verdict_first() {
        let data = Collected {
            scheduler_events: vec![
                SchedEvent::Started {
                    pid: 5,
                    elapsed_ms: 1,
                },
                SchedEvent::Attached {
                    ops: "bpfland".into(),
                    attach_ms: 1000,
                    elapsed_ms: 2,
                },
                SchedEvent::Ejected {
                    state: "disabled".into(),
                    kernel_reason: Some("runnable task stall".into()),
                    watchdog_timeout_ms: None,
                    elapsed_ms: 5000,
                },
            ],
            ..Collected::default()
        };
        let mut v = verdict_with_a_pass();
        add_checks(&prepared(), &data, &mut v);
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(
            v.reasons[0].contains("scheduler scx_bpfland"),
            "{:?}",
            v.reasons
        );
        assert!(
            v.reasons[0].contains("runnable task stall"),
            "{:?}",
            v.reasons
        );
        assert_eq!(v.checks.list.len(), 2, "the earlier check is kept");
    }

    #[test]
    fn attach_and_detach_is_a_passing_check() {
        let data = Collected {
            done: Some(crate::runner::collect::Done {
                exit_code: 0,
                elapsed_ms: 9,
            }),
            scheduler_events: vec![
                SchedEvent::Started {
                    pid: 5,
                    elapsed_ms: 1,
                },
                SchedEvent::Attached {
                    ops: "bpfland_1.1.4".into(),
                    attach_ms: 1100,
                    elapsed_ms: 2,
                },
                SchedEvent::Detached {
                    clean: true,
                    exit: None,
                    state_after: "disabled".into(),
                    detail: None,
                    elapsed_ms: 9,
                },
            ],
            ..Collected::default()
        };
        let mut v = verdict_with_a_pass();
        add_checks(&prepared(), &data, &mut v);
        assert_eq!(v.outcome, Outcome::Pass);
        let first = &v.checks.list[0];
        assert_eq!(first.outcome, Outcome::Pass);
        assert!(first.message.contains("bpfland_1.1.4"), "{}", first.message);
        assert!(
            first.message.contains("detached cleanly"),
            "{}",
            first.message
        );
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

    #[test]
    fn record_fills_verifier_stats_and_keeps_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let data = Collected {
            verifier_stats: vec![ProgInsns {
                id: 3,
                prog_type: BPF_PROG_TYPE_STRUCT_OPS,
                name: "bpfland_enqueue".into(),
                verified_insns: 4321,
            }],
            scheduler_log: b"scx_bpfland 1.1.4\n".to_vec(),
            ..Collected::default()
        };
        let mut s = SidecarResult::new("t", "1n1l2c1t", "scx_bpfland");
        let log = record(&data, &mut s, dir.path(), "t-0123").unwrap();
        assert_eq!(s.verifier_stats[0].verified_insns, 4321);
        assert_eq!(log, dir.path().join("t-0123.scheduler.log"));
        assert_eq!(std::fs::read(&log).unwrap(), b"scx_bpfland 1.1.4\n");
    }
}
