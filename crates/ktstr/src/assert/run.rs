//! Run checks (gates `run`, `topology`, `snapshots`, and the worker and monitor gates of
//! the test's [`Assert`]): was the run itself sound — the VM ended by itself, the ring
//! stayed intact, the guest got ready, saw the declared topology, finished cleanly and
//! ran every step of its scenario — and did the workers and the system samples meet the
//! thresholds. Each check is one function below, in the order the verdict lists them.

use std::path::Path;

use ktstr_topology::Topology;
use ktstr_wire::msg::{SeenTopology, StepPhase};
use ktstr_wire::spec::GuestSpec;

use super::{monitor, workers, Assert, Checks, Gate};
use crate::engine::{EngineReport, GuestExit};
use crate::runner::collect::{console_excerpt, Collected, Ready};
use crate::runner::measure::Measured;

/// Everything the run checks look at.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    pub spec: &'a GuestSpec,
    /// The declared topology.
    pub topology: Topology,
    pub assert: &'a Assert,
    pub data: &'a Collected,
    pub measured: &'a Measured,
    pub engine: &'a EngineReport,
    /// The serial console, quoted when the guest died.
    pub console_log: &'a Path,
}

/// The run checks, in order. A guest that never got ready is judged on that alone.
pub fn check_run(e: &Evidence<'_>) -> Checks {
    let mut c = Checks::default();
    vm_exit(&mut c, e.engine, e.data);
    ring(&mut c, e.data);
    guest_panic(&mut c, e.data);
    let Some(ready) = &e.data.ready else {
        c.fail(
            Gate::Run,
            "guest",
            format!(
                "the guest never reported ready (the VM ended by {}){}",
                e.engine.exit,
                console_hint(e.console_log)
            ),
        );
        return c;
    };
    topology(&mut c, ready, e.topology);
    guest_finished(&mut c, e.data, e.console_log);
    exec_status(&mut c, e.spec, e.data);
    if let Some(scenario) = e.spec.effective_scenario() {
        scenario_ran(&mut c, scenario.steps.len(), e.data);
        worker_notes(&mut c, e.data);
        c.extend(workers::check_workers(
            e.assert,
            &e.measured.plans,
            &e.data.workers,
        ));
        c.extend(monitor::check_monitor(
            &e.assert.monitor,
            e.measured.monitor.as_ref(),
        ));
    }
    snapshots(&mut c, e.measured);
    c
}

/// The VM ended by itself (the guest rebooted), not killed or lost by the engine. A triple
/// fault before the guest reported done is a guest kernel that died without a word.
fn vm_exit(c: &mut Checks, engine: &EngineReport, data: &Collected) {
    match &engine.exit {
        GuestExit::Reset => {}
        GuestExit::TripleFault(_) if data.done.is_some() => {}
        GuestExit::TripleFault(how) => c.fail(
            Gate::Run,
            "vm",
            format!("the guest kernel triple-faulted before its run ended: {how}"),
        ),
        GuestExit::Killed(why) | GuestExit::EngineFailed(why) => {
            c.fail(Gate::Run, "vm", why.clone())
        }
    }
}

/// The shared-memory ring stayed sound and within its byte budgets.
fn ring(c: &mut Checks, data: &Collected) {
    for e in &data.protocol_errors {
        c.fail(Gate::Run, "ring", e.clone());
    }
    for e in data.budget.overruns() {
        c.fail(Gate::Run, "ring", e);
    }
}

/// The guest runtime did not panic.
fn guest_panic(c: &mut Checks, data: &Collected) {
    if let Some(p) = &data.panic {
        c.fail(
            Gate::Run,
            "guest",
            format!("the guest runtime panicked: {p}"),
        );
    }
}

/// The guest sees the declared topology, re-derived from its per-CPU table instead of
/// trusting its counts.
fn topology(c: &mut Checks, ready: &Ready, declared: Topology) {
    let seen = SeenTopology::derive(ready.topology.online.clone(), ready.topology.cpus.clone());
    let declared = declared.to_string();
    if seen.label() != declared || !seen.uniform {
        c.fail(
            Gate::Topology,
            "guest",
            format!(
                "declared {declared}, the guest sees {} (online {})",
                seen.label(),
                seen.online
            ),
        );
    } else {
        c.pass(
            Gate::Topology,
            "guest",
            format!("the guest sees {declared} (online {})", seen.online),
        );
    }
}

/// The guest reported done, with exit code 0.
fn guest_finished(c: &mut Checks, data: &Collected, console_log: &Path) {
    match data.done {
        None => c.fail(
            Gate::Run,
            "guest",
            format!(
                "the guest did not finish its run{}",
                console_hint(console_log)
            ),
        ),
        Some(d) if d.exit_code != 0 => c.fail(
            Gate::Run,
            "guest",
            format!(
                "the guest runtime ended with exit code {}{}",
                d.exit_code,
                last_guest_error(data)
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        ),
        Some(_) => {}
    }
}

/// The guest command of an `exec` run exited 0.
fn exec_status(c: &mut Checks, spec: &GuestSpec, data: &Collected) {
    if let (Some(status), Some(_)) = (data.exec_status, &spec.exec) {
        if status != 0 {
            c.fail(
                Gate::Run,
                "exec",
                format!("the guest command exited with status {status}"),
            );
        }
    }
}

/// The scenario ran to its end: every step started and ended, every op succeeded.
fn scenario_ran(c: &mut Checks, steps: usize, data: &Collected) {
    match &data.scenario_end {
        None if data.done.is_some() => c.fail(
            Gate::Run,
            "scenario",
            "the guest finished without reporting the end of the scenario".into(),
        ),
        None => {}
        Some(end) => {
            if let Some(why) = &end.aborted {
                c.fail(Gate::Run, "scenario", format!("ended early: {why}"));
            } else if (end.steps_completed as usize) < steps {
                c.fail(
                    Gate::Run,
                    "scenario",
                    format!("{} of {steps} steps completed", end.steps_completed),
                );
            }
        }
    }
    if data.scenario_end.is_none() {
        return;
    }
    for k in 1..=steps {
        let Ok(k) = u16::try_from(k) else { break };
        for ph in [StepPhase::Start, StepPhase::End] {
            if !data
                .stimuli
                .iter()
                .any(|s| s.step_index == k && s.phase == ph)
            {
                c.fail(
                    Gate::Run,
                    format!("step {k}"),
                    format!(
                        "no step-{} event arrived",
                        match ph {
                            StepPhase::Start => "start",
                            StepPhase::End => "end",
                        }
                    ),
                );
            }
        }
    }
    for s in data.stimuli.iter().filter(|s| !s.op_errors.is_empty()) {
        c.fail(
            Gate::Run,
            format!("step {}", s.step_index),
            format!("ops failed: {}", s.op_errors.join("; ")),
        );
    }
}

/// Errors a worker reported about itself: noted (skipped checks), never failing.
fn worker_notes(c: &mut Checks, data: &Collected) {
    for r in data.workers.iter().filter(|r| !r.errors.is_empty()) {
        c.skip(
            Gate::Run,
            format!("worker {}[{}] pid {}", r.group, r.index, r.pid),
            format!("note: {}", r.errors.join("; ")),
        );
    }
}

/// As many periodic snapshots arrived as were asked for (else inconclusive).
fn snapshots(c: &mut Checks, measured: &Measured) {
    if measured.periodic_target == 0 {
        return;
    }
    let msg = format!(
        "{} of {} periodic snapshots arrived",
        measured.periodic_fired, measured.periodic_target
    );
    if measured.periodic_fired == measured.periodic_target {
        c.pass(Gate::Snapshots, "guest", msg);
    } else {
        c.inconclusive(Gate::Snapshots, "guest", msg);
    }
}

/// `; console (<path>):\n<excerpt>` when the console explains a dead guest.
fn console_hint(console_log: &Path) -> String {
    match console_excerpt(console_log) {
        Some(ex) => format!("; console ({}):\n{ex}", console_log.display()),
        None => String::new(),
    }
}

/// The guest runtime's own last error line (it logs why it gives up before it exits).
fn last_guest_error(data: &Collected) -> Option<&str> {
    data.logs
        .iter()
        .rev()
        .find(|(level, _)| *level == ktstr_wire::msg::LogLevel::Error)
        .map(|(_, text)| text.lines().next().unwrap_or(text).trim())
        .filter(|t| !t.is_empty())
}
