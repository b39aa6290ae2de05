//! Host-side judgement of a run: the guest is measured, not trusted. [`measure`] turns
//! the raw reports into the sidecar's numbers (per-cgroup and per-phase stats, the
//! monitor summary, the stimulus timeline, snapshots fired); [`evaluate`] judges the run
//! with the gates of [`crate::assert`], each failure with a reason a person can act on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ktstr_sidecar::monitor::MonitorSummary;
use ktstr_sidecar::stats::{WORST_P99_WAKE_LATENCY_US, WORST_RUN_DELAY_US};
use ktstr_sidecar::stimulus::StimulusEvent;
use ktstr_sidecar::{CgroupStats, Outcome, PhaseBucket, PhaseCgroupStats, ScenarioStats};
use ktstr_topology::Topology;
use ktstr_wire::msg::{MonitorSample, ScenarioEnd, StepPhase, Stimulus, WorkerReport};
use ktstr_wire::spec::GuestSpec;

use super::collect::Collected;
use super::RunRequest;
use crate::assert::monitor::{self, MonitorFindings};
use crate::assert::workers::{self as gates, group_reports, off_cpu_pct, work_rate};
use crate::assert::{sample, Assert, CgroupPlan, Checks, Gate};
use crate::engine::{EngineReport, GuestExit};

/// The verdict before expect_err inversion, with its reasons.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub outcome: Outcome,
    /// One line per check that did not pass (the sidecar's `verdict_details`).
    pub reasons: Vec<String>,
    /// Every check, passes included.
    pub checks: Checks,
}

/// What the host derived from the raw reports.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// What the scenario declared per cgroup (from the spec, not the guest).
    pub plans: Vec<CgroupPlan>,
    pub stats: ScenarioStats,
    pub monitor: Option<(MonitorSummary, MonitorFindings)>,
    pub stimulus_events: Vec<StimulusEvent>,
    /// Distinct snapshot indexes below the target that arrived.
    pub periodic_fired: u32,
    pub periodic_target: u32,
}

/// Derive every number of the sidecar from the collected reports.
pub fn measure(spec: &GuestSpec, topology: &Topology, a: &Assert, data: &Collected) -> Measured {
    let plans = crate::scenario::cgroup_plans(spec, topology);
    let samples = sorted_samples(&data.monitor_samples);
    let mut stats = scenario_stats(&plans, &data.workers);
    stats.phases = phases(spec, &data.stimuli, &samples, &data.workers);
    let periodic_target = spec.num_snapshots;
    let fired: BTreeSet<u32> = data
        .snapshots
        .iter()
        .map(|s| s.index)
        .filter(|&i| i < periodic_target)
        .collect();
    let monitor = monitor::summarize(&data.monitor_samples, &a.monitor);
    if let Some((_, found)) = &monitor {
        // Rates per CPU-second the run queues delivered, so overcommitted runs compare.
        if let Some(ns) = found.delivered_cpu_ns {
            stats
                .ext_metrics
                .insert("delivered_cpu_s".into(), ns as f64 / 1e9);
        }
        for (event, rate) in &found.scx_event_rates {
            stats
                .ext_metrics
                .insert(format!("scx_rate_per_cpu_s.{event}"), *rate);
        }
    }
    let events = stimulus_events(
        &data.stimuli,
        data.scenario_end.as_ref(),
        stats.total_iterations,
    );
    Measured {
        plans,
        stats,
        monitor,
        stimulus_events: events,
        periodic_fired: fired.len() as u32,
        periodic_target,
    }
}

fn sorted_samples(samples: &[MonitorSample]) -> Vec<&MonitorSample> {
    let mut v: Vec<&MonitorSample> = samples.iter().collect();
    v.sort_by_key(|s| s.elapsed_ms);
    v
}

/// Per-cgroup statistics from worker reports, grouped by the cgroup each worker was
/// started in, in the plan's order; run-level "worst" values as the reference folds them
/// (largest over the cgroups that measured them; `0` when none did).
pub fn scenario_stats(plans: &[CgroupPlan], reports: &[WorkerReport]) -> ScenarioStats {
    let mut stats = ScenarioStats::default();
    let mut worst = BTreeMap::<&'static str, f64>::new();
    let mut fold = |key: &'static str, v: f64| {
        let e = worst.entry(key).or_insert(v);
        *e = e.max(v);
    };
    let mut gap_seen = false;
    for (name, rs) in group_reports(plans, reports) {
        let cg = cgroup_stats(&name, &rs);
        stats.total_workers += cg.num_workers;
        stats.total_cpus += cg.num_cpus;
        stats.total_iterations += cg.total_iterations;
        stats.total_migrations += cg.total_migrations;
        if cg.num_workers > 0 && (!gap_seen || cg.max_gap_ms > stats.worst_gap_ms) {
            gap_seen = true;
            stats.worst_gap_ms = cg.max_gap_ms;
            stats.worst_gap_cpu = cg.max_gap_cpu;
        }
        if let Some(spread) = cg.spread {
            stats.worst_spread = stats.worst_spread.max(spread);
        }
        stats.worst_migration_ratio = stats.worst_migration_ratio.max(cg.migration_ratio);
        if cg.wake_measured {
            fold(WORST_P99_WAKE_LATENCY_US, cg.p99_wake_latency_us);
            fold("worst_median_wake_latency_us", cg.median_wake_latency_us);
            fold("worst_wake_latency_cv", cg.wake_latency_cv);
        }
        if cg.timer_measured {
            fold("worst_median_timer_latency_us", cg.median_timer_latency_us);
            fold("worst_p99_timer_latency_us", cg.p99_timer_latency_us);
            fold("worst_p999_timer_latency_us", cg.p999_timer_latency_us);
        }
        if cg.run_delay_measured {
            fold(WORST_RUN_DELAY_US, cg.worst_run_delay_us);
            fold("worst_mean_run_delay_us", cg.mean_run_delay_us);
        }
        stats.cgroups.push(cg);
    }
    stats
        .ext_metrics
        .extend(worst.into_iter().map(|(k, v)| (k.to_string(), v)));
    stats
}

fn cgroup_stats(name: &str, rs: &[&WorkerReport]) -> CgroupStats {
    let cpus: BTreeSet<usize> = rs
        .iter()
        .flat_map(|r| r.cpus_used.iter().map(|&c| c as usize))
        .collect();
    let units: u64 = rs.iter().map(|r| r.work_units).sum();
    let cpu_ns: u64 = rs
        .iter()
        .map(|r| r.cpu_time_ns)
        .fold(0, u64::saturating_add);
    let migrations: u64 = rs.iter().map(|r| r.migrations).fold(0, u64::saturating_add);
    let off: Vec<f64> = rs.iter().filter_map(|r| off_cpu_pct(r)).collect();
    let min_off = off.iter().copied().reduce(f64::min);
    let max_off = off.iter().copied().reduce(f64::max);
    let gap = rs.iter().max_by_key(|r| r.max_gap_ns);
    // Run delay: each worker's total over the run (schedstat), for workers whose
    // schedstat was read (it ran at least once).
    let delays_us: Vec<f64> = rs
        .iter()
        .filter(|r| r.run_count > 0)
        .map(|r| r.run_delay_ns as f64 / 1e3)
        .collect();
    let runs: u64 = rs.iter().map(|r| r.run_count).fold(0, u64::saturating_add);
    let delay_ns: u64 = rs
        .iter()
        .map(|r| r.run_delay_ns)
        .fold(0, u64::saturating_add);
    let wake = gates::wake_summary(rs);
    let timer = gates::timer_summary(rs);
    let rates: Vec<f64> = rs.iter().filter_map(|r| work_rate(r)).collect();

    let mut ext = BTreeMap::new();
    if cpu_ns > 0 {
        ext.insert("work_rate".into(), units as f64 / (cpu_ns as f64 / 1e9));
    }
    if let Some(slowest) = rates.iter().copied().reduce(f64::min) {
        ext.insert("min_work_rate".into(), slowest);
    }
    if let Some(cv) = sample::cv(&rates).filter(|_| rates.len() >= 2) {
        ext.insert("work_rate_cv".into(), cv);
    }
    if runs > 0 {
        ext.insert(
            "run_delay_per_sched_us".into(),
            delay_ns as f64 / runs as f64 / 1e3,
        );
    }
    let wake_total: u64 = rs
        .iter()
        .map(|r| r.wake_samples_total)
        .fold(0, u64::saturating_add);
    if wake.is_some() {
        ext.insert("wake_samples_total".into(), wake_total as f64);
    }
    let timer_total: u64 = rs
        .iter()
        .map(|r| r.timer_samples_total)
        .fold(0, u64::saturating_add);
    if timer.is_some() {
        ext.insert("timer_samples_total".into(), timer_total as f64);
    }

    CgroupStats {
        cgroup_name: name.to_string(),
        num_workers: rs.len(),
        num_cpus: cpus.len(),
        cpus_used: cpus,
        avg_off_cpu_pct: sample::mean(&off),
        min_off_cpu_pct: min_off,
        max_off_cpu_pct: max_off,
        spread: (off.len() >= 2).then(|| max_off.unwrap_or(0.0) - min_off.unwrap_or(0.0)),
        max_gap_ms: gap.map_or(0, |r| r.max_gap_ns / 1_000_000),
        max_gap_cpu: gap
            .and_then(|r| r.max_gap_cpu.or_else(|| r.cpus_used.last().copied()))
            .map_or(0, |c| c as usize),
        total_migrations: migrations,
        migration_ratio: if units > 0 {
            migrations as f64 / units as f64
        } else {
            0.0
        },
        p99_wake_latency_us: wake.map_or(0.0, |s| s.p99_us),
        median_wake_latency_us: wake.map_or(0.0, |s| s.median_us),
        wake_latency_cv: wake.and_then(|s| s.cv).unwrap_or(0.0),
        wake_measured: wake.is_some(),
        median_timer_latency_us: timer.map_or(0.0, |s| s.median_us),
        p99_timer_latency_us: timer.map_or(0.0, |s| s.p99_us),
        p999_timer_latency_us: timer.map_or(0.0, |s| s.p999_us),
        worst_timer_latency_us: timer.map_or(0.0, |s| s.worst_us),
        timer_measured: timer.is_some(),
        total_iterations: units,
        total_cpu_time_ns: cpu_ns,
        mean_run_delay_us: sample::mean(&delays_us).unwrap_or(0.0),
        worst_run_delay_us: delays_us.iter().copied().reduce(f64::max).unwrap_or(0.0),
        run_delay_measured: !delays_us.is_empty(),
        // The guest does not read numa_maps (yet): the reference's "no NUMA data".
        page_locality: 0.0,
        cross_node_migration_ratio: 0.0,
        taobench_whole: None,
        ext_metrics: ext,
    }
}

/// Step boundaries in time order, then the scenario's end (when the guest reported
/// it), as the reference's timeline events: `StepStart[i]`/`StepEnd[i]` with `i` the
/// step's 0-based ordinal, and one terminal `ScenarioEnd` carrying the workers' total.
pub fn stimulus_events(
    stimuli: &[Stimulus],
    end: Option<&ScenarioEnd>,
    total_iterations: u64,
) -> Vec<StimulusEvent> {
    let mut order: Vec<&Stimulus> = stimuli.iter().collect();
    order.sort_by_key(|s| (s.elapsed_ms, s.step_index, s.phase == StepPhase::End));
    let mut out: Vec<StimulusEvent> = order
        .into_iter()
        .map(|s| {
            let tag = match s.phase {
                StepPhase::Start => "StepStart",
                StepPhase::End => "StepEnd",
            };
            let mut detail = format!(
                "{}: {} ops{}; {} cgroups, {} workers",
                s.label,
                s.op_count,
                if s.op_kinds.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", s.op_kinds.join(", "))
                },
                s.cgroups,
                s.workers
            );
            if !s.op_errors.is_empty() {
                detail.push_str(&format!("; failed: {}", s.op_errors.join("; ")));
            }
            StimulusEvent {
                elapsed_ms: s.elapsed_ms,
                label: format!("{tag}[{}]", s.step_index.saturating_sub(1)),
                op_kind: Some(format!("ops={}", s.op_count)),
                detail: Some(detail),
                total_iterations: Some(s.iterations_so_far),
                step_index: Some(s.step_index),
                is_terminal: false,
                is_step_end: s.phase == StepPhase::End,
            }
        })
        .collect();
    if let Some(end) = end {
        out.push(StimulusEvent {
            elapsed_ms: end.elapsed_ms,
            label: "ScenarioEnd".into(),
            total_iterations: Some(total_iterations),
            is_terminal: true,
            ..StimulusEvent::default()
        });
    }
    out
}

/// Per-phase numbers: the baseline (when the scenario settles first) and every step with
/// both boundaries, from the stimulus counters, the workers alive in the window and the
/// monitor samples in it.
fn phases(
    spec: &GuestSpec,
    stimuli: &[Stimulus],
    samples: &[&MonitorSample],
    workers: &[WorkerReport],
) -> Vec<PhaseBucket> {
    let Some(scenario) = spec.effective_scenario() else {
        return Vec::new();
    };
    let find = |k: u16, ph: StepPhase| stimuli.iter().find(|s| s.step_index == k && s.phase == ph);
    let mut out = Vec::new();
    if scenario.settle_ms > 0 {
        if let Some(first) = find(1, StepPhase::Start) {
            let mut p = phase(0, None, first, samples, workers);
            p.metrics.insert("workers".into(), f64::from(first.workers));
            out.push(p);
        }
    }
    for i in 0..scenario.steps.len() {
        let Ok(k) = u16::try_from(i + 1) else { break };
        let (Some(start), Some(end)) = (find(k, StepPhase::Start), find(k, StepPhase::End)) else {
            continue;
        };
        let mut p = phase(k, Some(start), end, samples, workers);
        p.metrics.insert("ops".into(), f64::from(start.op_count));
        p.metrics.insert("workers".into(), f64::from(start.workers));
        p.metrics.insert("cgroups".into(), f64::from(start.cgroups));
        out.push(p);
    }
    out
}

/// One phase from `start` (None: the scenario's start) to `end`.
fn phase(
    step_index: u16,
    start: Option<&Stimulus>,
    end: &Stimulus,
    samples: &[&MonitorSample],
    workers: &[WorkerReport],
) -> PhaseBucket {
    let start_ms = start.map_or(0, |s| s.elapsed_ms);
    let before = |name: &str| {
        start
            .and_then(|s| s.cgroup_iterations.get(name).copied())
            .unwrap_or(0)
    };
    // A worker ran in the window when it started before its end and had not stopped
    // before its start (0 = still running when it reported).
    let alive = |name: &str| {
        workers
            .iter()
            .filter(|w| w.group == name)
            .filter(|w| w.started_at_ms < end.elapsed_ms)
            .filter(|w| w.ended_at_ms == 0 || w.ended_at_ms > start_ms)
            .count()
    };
    let per_cgroup = end
        .cgroup_iterations
        .iter()
        .map(|(name, &n)| {
            let c = PhaseCgroupStats {
                num_workers: alive(name),
                total_iterations: n.saturating_sub(before(name)),
                ..PhaseCgroupStats::default()
            };
            (name.clone(), c)
        })
        .collect();
    let mut metrics = BTreeMap::new();
    let window: Vec<MonitorSample> = samples
        .iter()
        .filter(|s| s.elapsed_ms >= start_ms && s.elapsed_ms < end.elapsed_ms)
        .map(|s| (*s).clone())
        .collect();
    let th = crate::assert::MonitorThresholds::default();
    if let Some((m, found)) = monitor::summarize(&window, &th) {
        if found.nr_running_samples > 0 {
            metrics.insert("avg_imbalance_ratio".into(), m.avg_imbalance_ratio);
            metrics.insert("max_imbalance_ratio".into(), m.max_imbalance_ratio);
            metrics.insert("avg_nr_running".into(), m.avg_nr_running);
        }
    }
    PhaseBucket {
        step_index,
        label: PhaseBucket::label_for(step_index),
        start_ms,
        end_ms: end.elapsed_ms,
        sample_count: window.len(),
        metrics,
        per_cgroup,
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

/// The last lines of the console log that explain a dead guest (panic, oops).
pub fn console_excerpt(console_log: &Path) -> Option<String> {
    let text = std::fs::read(console_log).ok()?;
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return None;
    }
    let panic_at = lines
        .iter()
        .position(|l| l.contains("Kernel panic") || l.contains("BUG:") || l.contains("Oops"));
    let from = match panic_at {
        Some(i) => i,
        None => lines.len().saturating_sub(6),
    };
    Some(lines[from..lines.len().min(from + 12)].join("\n"))
}

/// Judge the run: the run itself (exit, ring, ready, done), the topology, the scenario's
/// execution, every worker gate of `assert`, the monitor and the snapshots.
pub fn evaluate(
    req: &RunRequest,
    assert: &Assert,
    data: &Collected,
    measured: &Measured,
    engine: &EngineReport,
    console_log: &Path,
) -> Verdict {
    let mut c = Checks::default();
    let console_hint = || match console_excerpt(console_log) {
        Some(ex) => format!("; console ({}):\n{ex}", console_log.display()),
        None => String::new(),
    };

    match &engine.exit {
        GuestExit::Reset => {}
        GuestExit::Killed(why) | GuestExit::EngineFailed(why) => {
            c.fail(Gate::Run, "vm", why.clone())
        }
    }
    for e in &data.protocol_errors {
        c.fail(Gate::Run, "ring", e.clone());
    }
    for e in data.budget.overruns() {
        c.fail(Gate::Run, "ring", e);
    }
    if let Some(p) = &data.panic {
        c.fail(
            Gate::Run,
            "guest",
            format!("the guest runtime panicked: {p}"),
        );
    }
    let Some(ready) = &data.ready else {
        c.fail(
            Gate::Run,
            "guest",
            format!("the guest never reported ready{}", console_hint()),
        );
        return finish(c);
    };

    // Topology: re-derive from the per-CPU table instead of trusting guest counts.
    let seen = ktstr_wire::msg::SeenTopology::derive(
        ready.topology.online.clone(),
        ready.topology.cpus.clone(),
    );
    let declared = req.topology.to_string();
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

    match data.done {
        None => c.fail(
            Gate::Run,
            "guest",
            format!("the guest did not finish its run{}", console_hint()),
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
    if let (Some(status), Some(_)) = (data.exec_status, &req.spec.exec) {
        if status != 0 {
            c.fail(
                Gate::Run,
                "exec",
                format!("the guest command exited with status {status}"),
            );
        }
    }

    if let Some(scenario) = req.spec.effective_scenario() {
        scenario_ran(&mut c, scenario.steps.len(), data);
        for r in data.workers.iter().filter(|r| !r.errors.is_empty()) {
            c.skip(
                Gate::Run,
                format!("worker {}[{}] pid {}", r.group, r.index, r.pid),
                format!("note: {}", r.errors.join("; ")),
            );
        }
        c.extend(gates::check_workers(assert, &measured.plans, &data.workers));
        c.extend(monitor::check_monitor(
            &assert.monitor,
            measured.monitor.as_ref(),
        ));
    }
    if measured.periodic_target > 0 {
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
    finish(c)
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

fn finish(checks: Checks) -> Verdict {
    Verdict {
        outcome: checks.outcome(),
        reasons: checks.details(),
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assert::workers::tests::report;
    use crate::engine::EngineKind;
    use crate::kernel::ResolvedKernel;
    use crate::runner::collect::{Done, Ready};
    use crate::scenario::{CgroupDef, CpusetSpec, Hold, Scenario, Step};
    use ktstr_wire::msg::{CpuSample, ScenarioEnd, SeenCpu, SeenTopology, Snapshot};

    const TOPO: &str = "1n2l1c1t";

    fn scenario() -> Scenario {
        Scenario::new()
            .settle_ms(200)
            .cgroup(
                CgroupDef::new("packed")
                    .cpuset(CpusetSpec::Cpus(vec![1]))
                    .workers(2),
            )
            .cgroup(CgroupDef::new("free").workers(1))
            .step(Step::new("first", Hold::Millis(1000)))
            .step(Step::new("second", Hold::Millis(1000)))
    }

    fn request(s: Scenario, snapshots: u32) -> RunRequest {
        let mut spec = GuestSpec::new("t", 2400);
        spec.scenario = Some(s);
        spec.num_snapshots = snapshots;
        RunRequest {
            test_name: "t".into(),
            topology: TOPO.parse().unwrap(),
            memory_mib: 512,
            cpu_budget: None,
            kernel: ResolvedKernel::unbootable("7.2.13"),
            engine: EngineKind::QemuTcg,
            spec,
            scheduler: "eevdf".into(),
            sysctls: vec![],
            kargs: vec![],
            includes: vec![],
            payloads: vec![],
            expect_err: false,
            perf_delta_assertions: vec![],
            assert: Assert::default(),
            stream_output: false,
            console_on_terminal: false,
            write_sidecar: false,
            deadline_override: None,
        }
    }

    fn stim(k: u16, phase: StepPhase, at: u64, iters: u64, packed: u64) -> Stimulus {
        Stimulus {
            elapsed_ms: at,
            step_index: k,
            phase,
            label: format!("s{k}"),
            op_count: 0,
            op_kinds: vec![],
            cgroups: 2,
            workers: 3,
            iterations_so_far: iters,
            cgroup_iterations: [
                ("packed".to_string(), packed),
                ("free".to_string(), iters - packed),
            ]
            .into(),
            op_errors: vec![],
        }
    }

    fn sample(at: u64, nr: [u32; 2]) -> MonitorSample {
        MonitorSample {
            elapsed_ms: at,
            cpus: (0..2)
                .map(|c| CpuSample {
                    cpu: c,
                    nr_running: Some(nr[c as usize]),
                    rq_clock_ns: Some(at * 1_000_000 + 5),
                    schedstat: None,
                })
                .collect(),
            scx: None,
            psi_cpu: None,
            psi_irq: None,
        }
    }

    /// A clean run of [`scenario`]: the guest saw the topology, both steps ran, packed's
    /// two workers shared CPU 1 and free's one had CPU 0.
    fn clean_run() -> Collected {
        let cpus = (0..2)
            .map(|c| SeenCpu {
                cpu: c,
                core_id: 0,
                package_id: c,
                llc_id: c,
                node: 0,
            })
            .collect();
        let mut p0 = report("packed", 0, 500, 1100, 2200);
        p0.cpus_used = vec![1];
        let mut p1 = report("packed", 1, 480, 1050, 2200);
        p1.cpus_used = vec![1];
        let mut f0 = report("free", 0, 1000, 2200, 2200);
        f0.cpus_used = vec![0];
        Collected {
            ready: Some(Ready {
                kernel_release: "7.2.13".into(),
                uptime_ms: 3000,
                topology: SeenTopology::derive("0-1".into(), cpus),
                host_ms: 8000,
            }),
            workers: vec![p0, p1, f0],
            stimuli: vec![
                stim(1, StepPhase::Start, 200, 100, 50),
                stim(1, StepPhase::End, 1200, 900, 450),
                stim(2, StepPhase::Start, 1201, 900, 450),
                stim(2, StepPhase::End, 2201, 1980, 980),
            ],
            monitor_samples: (0..22).map(|i| sample(i * 100, [1, 2])).collect(),
            snapshots: (0..2)
                .map(|i| Snapshot {
                    index: i,
                    target: 2,
                    elapsed_ms: 800 + 800 * u64::from(i),
                    cgroups: vec![],
                    cpus: vec![],
                    scx: None,
                })
                .collect(),
            scenario_end: Some(ScenarioEnd {
                elapsed_ms: 2300,
                steps_completed: 2,
                workers_started: 3,
                workers_reported: 3,
                monitor_samples: 22,
                snapshots_taken: 2,
                monitor_cpu_us: 0,
                aborted: None,
            }),
            done: Some(Done {
                exit_code: 0,
                elapsed_ms: 2400,
            }),
            ..Collected::default()
        }
    }

    fn engine_ok() -> EngineReport {
        EngineReport {
            exit: GuestExit::Reset,
            vcpus: 2,
            cpu_budget: 2,
            host_cpus: vec![0, 1],
            kvm_stats: None,
        }
    }

    fn judge(req: &RunRequest, data: &Collected) -> (Measured, Verdict) {
        let m = measure(&req.spec, &req.topology, &req.assert, data);
        let v = evaluate(
            req,
            &req.assert,
            data,
            &m,
            &engine_ok(),
            Path::new("/nonexistent"),
        );
        (m, v)
    }

    #[test]
    fn clean_run_passes_and_fills_every_sidecar_field() {
        let req = request(scenario(), 2);
        let (m, v) = judge(&req, &clean_run());
        assert_eq!(v.outcome, Outcome::Pass, "{:#?}", v.reasons);
        assert!(v.reasons.is_empty(), "{:?}", v.reasons);
        for gate in [
            Gate::Topology,
            Gate::NotStuck,
            Gate::MaxGap,
            Gate::Isolation,
            Gate::Snapshots,
        ] {
            assert_eq!(v.checks.gate_outcome(gate), Outcome::Pass, "{gate}");
        }

        // Stats: plan order, real numbers, off-CPU spread in percentage points.
        let s = &m.stats;
        assert_eq!(s.total_workers, 3);
        assert_eq!(s.total_iterations, 1980);
        assert_eq!(s.total_cpus, 2);
        let packed = s.cgroup("packed").unwrap();
        assert_eq!(packed.num_workers, 2);
        assert_eq!(packed.num_cpus, 1, "the CPUs it used");
        assert_eq!(packed.cpus_used, [1].into());
        assert_eq!(packed.total_iterations, 980);
        assert_eq!(packed.total_cpu_time_ns, 2_150_000_000);
        let spread = packed.spread.unwrap();
        assert!((spread - 50.0 / 22.0).abs() < 1e-9, "{spread}");
        assert!((packed.ext_metrics["work_rate"] - 980.0 / 2.15).abs() < 1e-9);
        let free = s.cgroup("free").unwrap();
        assert_eq!(free.num_cpus, 1);
        assert_eq!(free.spread, None, "one worker");
        assert_eq!(s.cgroups[0].cgroup_name, "packed", "plan order");
        // Schedstat was read (each worker ran): run delays measured; no sleeper, so no
        // wake-up or timer latency, and the run-level worst values say so by absence.
        assert!(packed.run_delay_measured && !packed.wake_measured && !packed.timer_measured);
        assert_eq!(packed.p99_wake_latency_us, 0.0);
        assert_eq!(s.worst_run_delay_us(), Some(0.0));
        assert_eq!(s.worst_p99_wake_latency_us(), None);
        assert_eq!((s.worst_gap_ms, s.worst_gap_cpu), (5, 0));

        // Phases: the settle baseline, then one per step, from the stimulus counters.
        let ph: Vec<(u16, &str, u64, u64, Option<u64>)> = s
            .phases
            .iter()
            .map(|p| {
                (
                    p.step_index,
                    p.label.as_str(),
                    p.start_ms,
                    p.end_ms,
                    p.total_iterations(),
                )
            })
            .collect();
        assert_eq!(
            ph,
            [
                (0, "BASELINE", 0, 200, Some(100)),
                (1, "Step[0]", 200, 1200, Some(800)),
                (2, "Step[1]", 1201, 2201, Some(1080))
            ]
        );
        let p1 = s.phase(1).unwrap();
        let pc: Vec<(&str, u64, usize)> = p1
            .per_cgroup
            .iter()
            .map(|(n, c)| (n.as_str(), c.total_iterations, c.num_workers))
            .collect();
        assert_eq!(pc, [("free", 400, 1), ("packed", 400, 2)]);
        assert_eq!(p1.sample_count, 10);
        assert_eq!(p1.metrics["avg_imbalance_ratio"], 2.0);

        // Timeline: the reference's labels (0-based step ordinal), then ScenarioEnd.
        let ev: Vec<(&str, Option<u16>, bool, bool)> = m
            .stimulus_events
            .iter()
            .map(|e| (e.label.as_str(), e.step_index, e.is_step_end, e.is_terminal))
            .collect();
        assert_eq!(
            ev,
            [
                ("StepStart[0]", Some(1), false, false),
                ("StepEnd[0]", Some(1), true, false),
                ("StepStart[1]", Some(2), false, false),
                ("StepEnd[1]", Some(2), true, false),
                ("ScenarioEnd", None, false, true),
            ]
        );
        assert_eq!(m.stimulus_events[1].total_iterations, Some(900));
        assert_eq!(m.stimulus_events[0].op_kind.as_deref(), Some("ops=0"));
        let end = &m.stimulus_events[4];
        assert_eq!((end.elapsed_ms, end.total_iterations), (2300, Some(1980)));
        assert_eq!(
            (end.op_kind.as_deref(), end.detail.as_deref()),
            (None, None)
        );
        assert!(m.stimulus_events[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("2 cgroups, 3 workers"));
        let (mon, _) = m.monitor.as_ref().unwrap();
        assert_eq!(mon.total_samples, 22);
        assert_eq!(mon.max_imbalance_ratio, 2.0);
        assert_eq!((m.periodic_fired, m.periodic_target), (2, 2));
    }

    #[test]
    fn a_worker_off_its_cpuset_fails_isolation() {
        let req = request(scenario(), 0);
        let mut data = clean_run();
        data.workers[1].cpus_used = vec![0, 1];
        let (_, v) = judge(&req, &data);
        assert_eq!(v.outcome, Outcome::Fail);
        assert_eq!(v.checks.gate_outcome(Gate::Isolation), Outcome::Fail);
        assert!(
            v.reasons
                .iter()
                .any(|r| r.contains("packed[1] pid 101 ran on CPU 0")),
            "{:?}",
            v.reasons
        );
    }

    #[test]
    fn a_broken_scenario_run_fails_with_reasons() {
        let req = request(scenario(), 2);
        let mut data = clean_run();
        data.stimuli.pop();
        data.stimuli[0].op_errors = vec!["set_cpuset packed: EINVAL".into()];
        data.snapshots.pop();
        if let Some(e) = data.scenario_end.as_mut() {
            e.steps_completed = 1;
        }
        let (m, v) = judge(&req, &data);
        assert_eq!(v.outcome, Outcome::Fail);
        let text = v.reasons.join("\n");
        assert!(text.contains("1 of 2 steps completed"), "{text}");
        assert!(
            text.contains("[run] step 2: no step-end event arrived"),
            "{text}"
        );
        assert!(
            text.contains("ops failed: set_cpuset packed: EINVAL"),
            "{text}"
        );
        assert!(
            text.contains("inconclusive [snapshots] guest: 1 of 2"),
            "{text}"
        );
        assert_eq!(m.periodic_fired, 1);
        assert!(m.stimulus_events[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("failed: set_cpuset"));
    }

    #[test]
    fn snapshot_indexes_are_counted_once_and_within_the_target() {
        let req = request(scenario(), 2);
        let mut data = clean_run();
        let dup = data.snapshots[0].clone();
        let mut stray = dup.clone();
        stray.index = 7;
        data.snapshots = vec![dup.clone(), dup, stray];
        let (m, v) = judge(&req, &data);
        assert_eq!(m.periodic_fired, 1);
        assert_eq!(
            v.checks.gate_outcome(Gate::Snapshots),
            Outcome::Inconclusive
        );
    }

    #[test]
    fn zero_work_everywhere_fails_not_stuck_and_ratios_are_zero() {
        let req = request(scenario(), 0);
        let mut data = clean_run();
        for w in &mut data.workers {
            w.work_units = 0;
        }
        let (m, v) = judge(&req, &data);
        assert_eq!(v.outcome, Outcome::Fail);
        assert_eq!(v.checks.of(Gate::NotStuck).count(), 3);
        // No work units: no ratio, written as the reference's 0.0 (never null).
        assert_eq!(m.stats.cgroups[0].migration_ratio, 0.0);
        assert_eq!(m.stats.worst_migration_ratio, 0.0);
    }

    #[test]
    fn a_guest_that_never_got_ready_fails_without_judging_workers() {
        let req = request(scenario(), 0);
        let data = Collected::default();
        let (m, v) = judge(&req, &data);
        assert_eq!(v.outcome, Outcome::Fail);
        assert_eq!(v.checks.list.len(), 1, "{:#?}", v.checks);
        assert!(v.reasons[0].contains("never reported ready"));
        assert!(m.monitor.is_none());
        assert_eq!(
            m.stats.cgroups.len(),
            2,
            "declared cgroups are listed, empty"
        );
    }

    #[test]
    fn a_failed_guest_runtime_is_quoted() {
        let req = request(scenario(), 0);
        let mut data = clean_run();
        data.done = Some(Done {
            exit_code: 1,
            elapsed_ms: 10,
        });
        data.logs.push((
            ktstr_wire::msg::LogLevel::Error,
            "starting `cat` (is it in the initramfs?): No such file or directory".into(),
        ));
        let (_, v) = judge(&req, &data);
        assert!(
            v.reasons.iter().any(|r| r
                .contains("exit code 1: starting `cat` (is it in the initramfs?): No such file")),
            "{:#?}",
            v.reasons
        );
    }

    #[test]
    fn topology_mismatch_fails() {
        let mut req = request(scenario(), 0);
        req.topology = "1n1l2c1t".parse().unwrap();
        let (_, v) = judge(&req, &clean_run());
        assert_eq!(v.checks.gate_outcome(Gate::Topology), Outcome::Fail);
    }

    #[test]
    fn sched_ext_event_rates_are_per_delivered_cpu_second() {
        let req = request(scenario(), 0);
        let mut data = clean_run();
        for (i, smp) in data.monitor_samples.iter_mut().enumerate() {
            let i = i as u64;
            for c in &mut smp.cpus {
                c.schedstat = Some(ktstr_wire::msg::CpuSchedstat {
                    rq_cpu_time_ns: i * 50_000_000,
                    ..Default::default()
                });
            }
            smp.scx = Some(ktstr_wire::msg::ScxSample {
                state: "enabled".into(),
                ops: Some("s".into()),
                events: [("SCX_EV_DISPATCH_KEEP_LAST".to_string(), i * 3)].into(),
            });
        }
        let (m, _) = judge(&req, &data);
        // 22 samples, 21 intervals: 2 CPUs x 50 ms each = 2.1 s delivered, 63 events.
        let ext = &m.stats.ext_metrics;
        assert!((ext["delivered_cpu_s"] - 2.1).abs() < 1e-9, "{ext:?}");
        assert!((ext["scx_rate_per_cpu_s.SCX_EV_DISPATCH_KEEP_LAST"] - 30.0).abs() < 1e-9);
        let (mon, _) = m.monitor.as_ref().unwrap();
        let ev = mon.event_deltas.as_ref().unwrap();
        assert_eq!(ev.total_dispatch_keep_last, 63);
        // Events were sampled from 0 to 2100 ms.
        assert!((ev.keep_last_rate - 30.0).abs() < 1e-9, "{ev:?}");
    }

    /// What the runner puts into a sidecar from a measured run — stats with phases,
    /// monitor with sched_ext and schedstat deltas, the timeline — is read by the
    /// reference's reader.
    #[test]
    fn measured_sidecars_are_read_by_the_reference() {
        let req = request(scenario(), 2);
        let mut data = clean_run();
        for (i, smp) in data.monitor_samples.iter_mut().enumerate() {
            let i = i as u64;
            for c in &mut smp.cpus {
                c.schedstat = Some(ktstr_wire::msg::CpuSchedstat {
                    rq_cpu_time_ns: i * 50_000_000,
                    run_delay_ns: i * 1000,
                    pcount: i,
                    ..Default::default()
                });
            }
            smp.scx = Some(ktstr_wire::msg::ScxSample {
                state: "enabled".into(),
                ops: Some("s".into()),
                events: [("SCX_EV_SELECT_CPU_FALLBACK".to_string(), i)].into(),
            });
        }
        data.workers[2].wake_latency_ns = vec![10_000, 20_000, 30_000];
        data.workers[2].wake_samples_total = 3;
        let (m, v) = judge(&req, &data);
        let mut s = ktstr_sidecar::SidecarResult::new_run("t", TOPO, "eevdf");
        s.stats = m.stats.clone();
        s.monitor = m.monitor.as_ref().map(|(x, _)| x.clone());
        s.stimulus_events = m.stimulus_events.clone();
        s.stats.verdict_details = v.reasons.clone();
        s.finalize(v.outcome, false);
        let mon = s.monitor.as_ref().unwrap();
        assert!(mon.event_deltas.is_some() && mon.schedstat_deltas.is_some());
        assert!(s.stats.cgroup("free").unwrap().wake_measured);
        assert_eq!(s.stats.worst_p99_wake_latency_us(), Some(30.0));
        let report = ktstr_sidecar::conformance::check_value(&s);
        assert!(report.accepted(), "{report}");
        assert!(report.unexpected().is_empty(), "{report}");
    }

    #[test]
    fn worker_errors_are_noted_without_failing() {
        let req = request(scenario(), 0);
        let mut data = clean_run();
        data.workers[2].errors = vec!["sched_setaffinity: EINVAL".into()];
        let (_, v) = judge(&req, &data);
        assert_eq!(v.outcome, Outcome::Pass, "{:?}", v.reasons);
        assert!(
            v.reasons[0].contains("note: sched_setaffinity: EINVAL"),
            "{:?}",
            v.reasons
        );
    }
}
