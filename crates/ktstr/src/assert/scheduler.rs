//! Scheduler checks (gate `run`, subject `scheduler <name>`): the guest supervisor's
//! events, turned into failure reasons a person can act on. A scheduler that never
//! attached, died, or was ejected by the kernel (watchdog stall, BPF error) fails the
//! run, and the reason names what the kernel said.

use ktstr_sidecar::Outcome;
use ktstr_wire::sched::{ProcExit, SchedEvent};

use super::{Check, Gate};
use crate::scheduler::Prepared;

/// The scheduler's checks from the guest's scheduler `events`: a failure per problem
/// ([`failures`]), or one pass saying it attached and detached. `finished`: the guest
/// reported done, so a missing event means it never happened (not that the guest died
/// first). The runner puts them first in the verdict: they usually explain the rest
/// (workers that never ran, a guest exit code).
pub fn check_scheduler(prepared: &Prepared, events: &[SchedEvent], finished: bool) -> Vec<Check> {
    let subject = format!("scheduler {}", prepared.name);
    let mut checks: Vec<Check> = failures(prepared, events, finished)
        .into_iter()
        .map(|r| Check::new(Gate::Run, subject.clone(), Outcome::Fail, r))
        .collect();
    if checks.is_empty() && prepared.guest.is_some() {
        let attach = events.iter().find_map(|e| match e {
            SchedEvent::Attached { ops, attach_ms, .. } => Some((ops.clone(), *attach_ms)),
            _ => None,
        });
        let detached = events
            .iter()
            .any(|e| matches!(e, SchedEvent::Detached { clean: true, .. }));
        if let Some((ops, ms)) = attach {
            let transitions: Vec<String> = events.iter().filter_map(transition_line).collect();
            checks.push(Check::new(
                Gate::Run,
                subject,
                Outcome::Pass,
                format!(
                    "attached as `{ops}` after {ms} ms{}{}",
                    if transitions.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", transitions.join("; "))
                    },
                    if detached { ", detached cleanly" } else { "" }
                ),
            ));
        }
    }
    checks
}

/// Failure reasons from the scheduler `events` of a run (see [`check_scheduler`]);
/// empty when the scheduler did its job (or there was none and every sysctl applied).
pub fn failures(prepared: &Prepared, events: &[SchedEvent], finished: bool) -> Vec<String> {
    let name = &prepared.name;
    let mut reasons = Vec::new();
    let mut attached = false;
    let mut started = false;
    for e in events {
        match e {
            SchedEvent::Sysctl {
                key,
                value,
                error: Some(err),
            } => reasons.push(format!(
                "sysctl {key}={value} could not be applied in the guest: {err}"
            )),
            SchedEvent::Sysctl { .. } => {}
            SchedEvent::Started { .. } => started = true,
            SchedEvent::SpawnFailed { error, .. } => {
                started = true;
                reasons.push(format!(
                    "scheduler {name} could not be started in the guest: {error}"
                ))
            }
            SchedEvent::Attached { .. } => attached = true,
            SchedEvent::DiedBeforeAttach {
                exit,
                kernel_reason,
                output_tail,
                ..
            } => reasons.push(format!(
                "scheduler {name} exited before it attached ({exit}){}{}",
                kernel_part(kernel_reason),
                output_part(output_tail)
            )),
            SchedEvent::AttachTimeout {
                waited_ms,
                state,
                ops,
                kernel_reason,
                output_tail,
                ..
            } => reasons.push(format!(
                "scheduler {name} did not attach within {waited_ms} ms (sched_ext state `{state}`, \
                 root/ops `{ops}`){}{}",
                kernel_part(kernel_reason),
                output_part(output_tail)
            )),
            SchedEvent::Ejected {
                state,
                kernel_reason,
                watchdog_timeout_ms,
                elapsed_ms,
            } => {
                let what = match kernel_reason.as_deref() {
                    Some(r) if r.contains("stall") => {
                        "stalled and the kernel's sched_ext watchdog ejected it"
                    }
                    Some(_) => "was ejected by the kernel",
                    None => "stopped being the active scheduler",
                };
                let timeout = watchdog_timeout_ms
                    .map(|t| format!(", watchdog timeout {t} ms"))
                    .unwrap_or_default();
                reasons.push(format!(
                    "scheduler {name} {what} during the run, {:.1} s after the guest started \
                     (sched_ext state `{state}`{timeout}){}",
                    *elapsed_ms as f64 / 1000.0,
                    kernel_part(kernel_reason)
                ));
            }
            SchedEvent::Died {
                exit,
                kernel_reason,
                output_tail,
                elapsed_ms,
            } => reasons.push(format!(
                "scheduler {name} died during the run, {:.1} s after the guest started ({}){}{}",
                *elapsed_ms as f64 / 1000.0,
                describe_exit(exit),
                kernel_part(kernel_reason),
                output_part(output_tail)
            )),
            SchedEvent::Detached {
                clean: false,
                detail,
                state_after,
                ..
            } => {
                // An earlier death or ejection is the real story; this only repeats it.
                let already = reasons.iter().any(|r| r.contains(name.as_str()));
                if !already {
                    reasons.push(format!(
                        "scheduler {name} did not detach cleanly (sched_ext state \
                         `{state_after}`): {}",
                        detail.as_deref().unwrap_or("no detail")
                    ));
                }
            }
            SchedEvent::Detached { .. } => {}
            // A transition that failed is the op's error (the step fails with it).
            SchedEvent::Transition { .. } => {}
        }
    }
    if prepared.guest.is_some() && finished {
        if !started {
            reasons.push(format!(
                "the guest never reported starting scheduler {name} (a guest runtime without \
                 scheduler support?)"
            ));
        } else if !attached && reasons.is_empty() {
            reasons.push(format!(
                "scheduler {name} never attached and the guest gave no reason"
            ));
        }
    }
    reasons
}

/// `restart_scheduler: gap 812 ms (detach 301 ms, attach 511 ms)`.
fn transition_line(e: &SchedEvent) -> Option<String> {
    let SchedEvent::Transition {
        op,
        detach_ms,
        attach_ms,
        gap_ms,
        ..
    } = e
    else {
        return None;
    };
    let parts: Vec<String> = [("detach", detach_ms), ("attach", attach_ms)]
        .into_iter()
        .filter_map(|(what, ms)| ms.map(|ms| format!("{what} {ms} ms")))
        .collect();
    Some(format!("{op}: gap {gap_ms} ms ({})", parts.join(", ")))
}

fn describe_exit(exit: &ProcExit) -> String {
    exit.to_string()
}

fn kernel_part(reason: &Option<String>) -> String {
    match reason {
        Some(r) => format!("; kernel: {r}"),
        None => String::new(),
    }
}

fn output_part(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("; its last output:\n{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_wire::sched::SchedulerSpec;

    #[test]
    fn an_ejection_is_a_failed_check_naming_the_scheduler() {
        let events = [
            started(),
            attached(),
            SchedEvent::Ejected {
                state: "disabled".into(),
                kernel_reason: Some("runnable task stall".into()),
                watchdog_timeout_ms: None,
                elapsed_ms: 5000,
            },
        ];
        let checks = check_scheduler(&prepared(), &events, true);
        assert_eq!(checks.len(), 1, "{checks:#?}");
        let line = checks[0].line();
        assert!(
            line.starts_with("fail [run] scheduler ktstr-stall"),
            "{line}"
        );
        assert!(line.contains("runnable task stall"), "{line}");
    }

    #[test]
    fn a_restart_shows_its_gap_in_the_passing_check() {
        let events = [
            started(),
            attached(),
            SchedEvent::Transition {
                op: "restart_scheduler".into(),
                scheduler: Some("ktstr-stall".into()),
                detach_ms: Some(301),
                attach_ms: Some(511),
                gap_ms: 812,
                elapsed_ms: 6000,
            },
            clean_detach(),
        ];
        let checks = check_scheduler(&prepared(), &events, true);
        assert_eq!(checks.len(), 1, "{checks:#?}");
        assert_eq!(checks[0].outcome, Outcome::Pass);
        let msg = &checks[0].message;
        assert!(
            msg.contains("restart_scheduler: gap 812 ms (detach 301 ms, attach 511 ms)"),
            "{msg}"
        );
    }

    #[test]
    fn attach_and_detach_is_a_passing_check() {
        let events = [started(), attached(), clean_detach()];
        let checks = check_scheduler(&prepared(), &events, true);
        assert_eq!(checks.len(), 1, "{checks:#?}");
        assert_eq!(checks[0].outcome, Outcome::Pass);
        let msg = &checks[0].message;
        assert!(msg.contains("`ktstr_stall` after 900 ms"), "{msg}");
        assert!(msg.contains("detached cleanly"), "{msg}");
    }

    fn prepared() -> Prepared {
        Prepared {
            name: "ktstr-stall".into(),
            resolve_source: Some(ktstr_sidecar::ResolveSource::AutoBuilt),
            binary: Some("/x/ktstr-stall".into()),
            guest: Some(SchedulerSpec::new("ktstr-stall", "/bin/ktstr-stall")),
            sysctls: vec![],
            kargs: vec![],
        }
    }

    fn started() -> SchedEvent {
        SchedEvent::Started {
            pid: 40,
            elapsed_ms: 10,
        }
    }

    fn attached() -> SchedEvent {
        SchedEvent::Attached {
            ops: "ktstr_stall".into(),
            attach_ms: 900,
            elapsed_ms: 1000,
        }
    }

    fn clean_detach() -> SchedEvent {
        SchedEvent::Detached {
            clean: true,
            exit: Some(ProcExit {
                code: Some(0),
                signal: None,
            }),
            state_after: "disabled".into(),
            detail: None,
            elapsed_ms: 9000,
        }
    }

    #[test]
    fn attach_and_clean_detach_pass() {
        let r = failures(&prepared(), &[started(), attached(), clean_detach()], true);
        assert!(r.is_empty(), "{r:?}");
    }

    #[test]
    fn a_stall_names_the_watchdog_and_the_kernel_reason() {
        let ev = SchedEvent::Ejected {
            state: "disabled".into(),
            kernel_reason: Some(
                "BPF scheduler \"ktstr_stall\" disabled (runnable task stall); ktstr_stall: \
                 kworker/0:1[12] failed to run for 3.012s"
                    .into(),
            ),
            watchdog_timeout_ms: Some(3000),
            elapsed_ms: 7400,
        };
        let r = failures(&prepared(), &[started(), attached(), ev], true);
        assert_eq!(r.len(), 1, "{r:?}");
        for needle in [
            "stalled",
            "watchdog ejected it",
            "7.4 s",
            "watchdog timeout 3000 ms",
            "runnable task stall",
            "failed to run for 3.012s",
        ] {
            assert!(r[0].contains(needle), "{needle} in {}", r[0]);
        }
    }

    #[test]
    fn death_before_attach_carries_exit_status_and_output() {
        let ev = SchedEvent::DiedBeforeAttach {
            exit: ProcExit {
                code: Some(1),
                signal: None,
            },
            kernel_reason: None,
            output_tail: "Error: failed to load BPF program: Invalid argument".into(),
            elapsed_ms: 3000,
        };
        let r = failures(&prepared(), &[started(), ev], true);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(
            r[0].contains("exited before it attached (exit code 1)"),
            "{}",
            r[0]
        );
        assert!(r[0].contains("Invalid argument"), "{}", r[0]);
    }

    #[test]
    fn death_during_the_run_and_unclean_detach() {
        let died = SchedEvent::Died {
            exit: ProcExit {
                code: None,
                signal: Some(11),
            },
            kernel_reason: Some(
                "BPF scheduler \"x\" disabled (unregistered from user space)".into(),
            ),
            output_tail: String::new(),
            elapsed_ms: 5000,
        };
        let r = failures(&prepared(), &[started(), attached(), died], true);
        assert_eq!(r.len(), 1);
        assert!(r[0].contains("died during the run"), "{}", r[0]);
        assert!(r[0].contains("killed by signal 11"), "{}", r[0]);

        let unclean = SchedEvent::Detached {
            clean: false,
            exit: None,
            state_after: "enabled".into(),
            detail: Some("did not exit within 10000 ms of SIGINT and was killed".into()),
            elapsed_ms: 9000,
        };
        let r = failures(&prepared(), &[started(), attached(), unclean], true);
        assert_eq!(r.len(), 1);
        assert!(r[0].contains("did not detach cleanly"), "{}", r[0]);
    }

    #[test]
    fn missing_events_fail_only_when_the_guest_finished() {
        assert_eq!(failures(&prepared(), &[], true).len(), 1);
        assert!(failures(&prepared(), &[], false).is_empty());
        let r = failures(&prepared(), &[started()], true);
        assert!(r[0].contains("never attached"), "{r:?}");
    }

    #[test]
    fn sysctl_failures_fail_even_under_eevdf() {
        let mut p = prepared();
        p.guest = None;
        let r = failures(
            &p,
            &[SchedEvent::Sysctl {
                key: "kernel.nope".into(),
                value: "1".into(),
                error: Some("writing /proc/sys/kernel/nope: No such file".into()),
            }],
            true,
        );
        assert_eq!(r.len(), 1);
        assert!(r[0].contains("sysctl kernel.nope=1"), "{}", r[0]);
    }
}
