//! Step 4 of a run, measure: the guest is measured, not trusted. [`measure`] turns the
//! raw reports into the sidecar's numbers (per-cgroup and per-phase stats, the monitor
//! summary, the stimulus timeline, snapshots fired); [`Measured::record`] writes them,
//! with what the engine measured, into the sidecar. Judging them is
//! [`crate::assert`]'s.

use std::collections::{BTreeMap, BTreeSet};

use ktstr_sidecar::monitor::MonitorSummary;
use ktstr_sidecar::series::{MonitorSeries, SeriesPoint, SERIES_VERSION};
use ktstr_sidecar::stats::{WORST_P99_WAKE_LATENCY_US, WORST_RUN_DELAY_US};
use ktstr_sidecar::stimulus::StimulusEvent;
use ktstr_sidecar::{CgroupStats, PhaseBucket, PhaseCgroupStats, ScenarioStats, SidecarResult};
use ktstr_topology::Topology;
use ktstr_wire::msg::{MonitorSample, ScenarioEnd, StepPhase, Stimulus, WorkerReport};
use ktstr_wire::sched::SchedEvent;
use ktstr_wire::spec::GuestSpec;

use super::boot::Attempt;
use super::collect::Collected;
use super::RunRequest;
use crate::assert::monitor::{self, MonitorFindings};
use crate::assert::workers::{self as gates, group_reports, off_cpu_pct, work_rate};
use crate::assert::{sample, Assert, CgroupPlan};

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

impl Measured {
    /// Writes what the attempt measured into `sidecar`: the engine's numbers (CPU
    /// budget, KVM stats), the teardown time, and the numbers derived here.
    pub fn record(&self, sidecar: &mut SidecarResult, attempt: &Attempt) {
        sidecar.cpu_budget = attempt.engine.cpu_budget;
        sidecar.cleanup_duration_ms = attempt
            .data
            .done_at
            .map(|t| attempt.torn_down.saturating_duration_since(t).as_millis() as u64);
        if let Some(stats) = attempt.engine.kvm_stats.clone() {
            sidecar.kvm_stats = Some(ktstr_sidecar::KvmStatsTotals { per_vcpu: stats });
        }
        sidecar.stats = self.stats.clone();
        sidecar.monitor = self.monitor.as_ref().map(|(m, _)| m.clone());
        sidecar.stimulus_events = self.stimulus_events.clone();
        sidecar.periodic_fired = self.periodic_fired;
        sidecar.periodic_target = self.periodic_target;
    }
}

/// [`measure`] what one attempt of `req` collected.
pub fn measure_attempt(req: &RunRequest, data: &Collected) -> Measured {
    measure(&req.spec, &req.topology, &req.assert, data)
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
    record_transitions(&mut stats.ext_metrics, &data.scheduler_events);
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

/// Scheduler ops' timings as run-level `ext_metrics`: the longest gap, detach and
/// attach per op kind (`scheduler_gap_ms.restart_scheduler`), and how many ran.
pub fn record_transitions(ext: &mut BTreeMap<String, f64>, events: &[SchedEvent]) {
    let mut count = 0u32;
    for e in events {
        let SchedEvent::Transition {
            op,
            detach_ms,
            attach_ms,
            gap_ms,
            ..
        } = e
        else {
            continue;
        };
        count += 1;
        for (what, ms) in [
            ("gap", Some(*gap_ms)),
            ("detach", *detach_ms),
            ("attach", *attach_ms),
        ] {
            if let Some(ms) = ms {
                let v = ext
                    .entry(format!("scheduler_{what}_ms.{op}"))
                    .or_insert(0.0);
                *v = v.max(ms as f64);
            }
        }
    }
    if count > 0 {
        ext.insert("scheduler_transitions".into(), f64::from(count));
    }
}

/// The monitor's samples as a time series for reports (`{stem}.monitor.json`):
/// counters become per-interval differences; a CPU missing from either sample of a pair
/// (hotplug) adds nothing to that interval.
pub fn monitor_series(samples: &[MonitorSample], interval_ms: u64) -> MonitorSeries {
    let samples = sorted_samples(samples);
    let mut points = Vec::with_capacity(samples.len());
    let mut prev: Option<&MonitorSample> = None;
    for s in samples {
        let nr: Vec<u32> = s.cpus.iter().filter_map(|c| c.nr_running).collect();
        let run_delay_us = prev.and_then(|p| {
            let mut total = 0u64;
            let mut any = false;
            for c in &s.cpus {
                let before = p.cpus.iter().find(|b| b.cpu == c.cpu);
                if let (Some(now), Some(then)) = (c.schedstat, before.and_then(|b| b.schedstat)) {
                    total =
                        total.saturating_add(now.run_delay_ns.saturating_sub(then.run_delay_ns));
                    any = true;
                }
            }
            any.then_some(total as f64 / 1e3)
        });
        let scx_events = match (prev.and_then(|p| p.scx.as_ref()), s.scx.as_ref()) {
            (Some(then), Some(now)) => now
                .events
                .iter()
                .filter_map(|(k, v)| {
                    let d = v.saturating_sub(then.events.get(k).copied().unwrap_or(0));
                    (d > 0).then(|| (k.clone(), d))
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        points.push(SeriesPoint {
            elapsed_ms: s.elapsed_ms,
            // An offline CPU is listed with nothing read (hotplug).
            cpus: s
                .cpus
                .iter()
                .filter(|c| c.schedstat.is_some() || c.nr_running.is_some())
                .count() as u32,
            nr_running: (!nr.is_empty()).then(|| nr.iter().sum()),
            run_delay_us,
            psi_cpu_some: s.psi_cpu.map(|p| p.some.avg10),
            scx_state: s.scx.as_ref().map(|x| x.state.clone()),
            scx_events,
        });
        prev = Some(s);
    }
    MonitorSeries {
        version: SERIES_VERSION,
        interval_ms,
        points,
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
    // Deadline misses of all cgroups that have deadlines (a sum, not a worst).
    let mut misses: Option<f64> = None;
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
        if let Some(m) = cg.ext_metrics.get("deadline_misses") {
            *misses.get_or_insert(0.0) += m;
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
    if let Some(m) = misses {
        stats.ext_metrics.insert("deadline_misses".into(), m);
    }
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
    // Deadlines exist for the periodic work types only; elsewhere the key is absent.
    let misses: u64 = rs
        .iter()
        .map(|r| r.deadline_misses)
        .fold(0, u64::saturating_add);
    if misses > 0 || rs.iter().any(|r| r.work_type == "PeriodicDuty") {
        ext.insert("deadline_misses".into(), misses as f64);
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

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_wire::msg::{CpuSample, CpuSchedstat, ScxSample};

    fn cpu(cpu: u32, online: bool, run_delay_ns: u64) -> CpuSample {
        CpuSample {
            cpu,
            nr_running: online.then_some(2),
            rq_clock_ns: None,
            schedstat: online.then_some(CpuSchedstat {
                run_delay_ns,
                ..Default::default()
            }),
        }
    }

    fn sample(at: u64, cpus: Vec<CpuSample>, dispatched: u64) -> MonitorSample {
        MonitorSample {
            elapsed_ms: at,
            cpus,
            scx: Some(ScxSample {
                state: "enabled".into(),
                ops: Some("x".into()),
                events: BTreeMap::from([("SCX_EV_X".into(), dispatched)]),
            }),
            psi_cpu: None,
            psi_irq: None,
        }
    }

    #[test]
    fn the_series_takes_per_interval_differences_and_counts_online_cpus() {
        let samples = [
            // Out of order on purpose: the series sorts by time.
            sample(200, vec![cpu(0, true, 5_000), cpu(1, false, 0)], 10),
            sample(100, vec![cpu(0, true, 1_000), cpu(1, true, 1_000)], 4),
        ];
        let s = monitor_series(&samples, 100);
        assert_eq!(s.interval_ms, 100);
        let [a, b] = s.points.as_slice() else {
            panic!("{s:?}")
        };
        assert_eq!((a.elapsed_ms, b.elapsed_ms), (100, 200));
        // The first sample has nothing to differ from.
        assert_eq!((a.run_delay_us, a.scx_events.len()), (None, 0));
        assert_eq!((a.cpus, a.nr_running), (2, Some(4)));
        // CPU 1 went offline: only CPU 0's wait counts, and one CPU is online.
        assert_eq!(b.run_delay_us, Some(4.0));
        assert_eq!((b.cpus, b.nr_running), (1, Some(2)));
        assert_eq!(b.scx_events["SCX_EV_X"], 6);
    }
}
