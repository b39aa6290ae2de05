//! Host-side judgement of a run: the guest is measured, not trusted. Every check here
//! works on raw reports, and each failure carries a reason a person can act on.

use std::collections::BTreeMap;
use std::path::Path;

use ktstr_sidecar::{CgroupStats, Outcome, ScenarioStats};
use ktstr_wire::msg::WorkerReport;
use ktstr_wire::spec::{GuestSpec, WorkKind};

use super::collect::Collected;
use super::RunRequest;
use crate::engine::{EngineReport, GuestExit};

/// The verdict before expect_err inversion, with its reasons.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub outcome: Outcome,
    pub reasons: Vec<String>,
}

/// The sidecar's `work_type`: the first worker group's work, or `none`.
pub fn work_type_name(spec: &GuestSpec) -> String {
    match spec.workers.first().map(|w| &w.work) {
        Some(WorkKind::Spin) => "SpinWait".to_string(),
        None if spec.exec.is_some() => "Exec".to_string(),
        None => "none".to_string(),
    }
}

/// Per-group statistics from worker reports.
pub fn scenario_stats(spec: &GuestSpec, data: &Collected) -> ScenarioStats {
    let mut groups: BTreeMap<&str, Vec<&WorkerReport>> = BTreeMap::new();
    for w in &spec.workers {
        groups.entry(w.group.as_str()).or_default();
    }
    for r in &data.workers {
        groups.entry(r.group.as_str()).or_default().push(r);
    }
    let mut stats = ScenarioStats::default();
    let mut all_cpus = std::collections::BTreeSet::new();
    for (name, reports) in groups {
        let cg = cgroup_stats(name, &reports);
        all_cpus.extend(cg.cpus_used.iter().copied());
        stats.total_workers += cg.num_workers;
        stats.total_iterations += cg.total_iterations;
        stats.total_migrations += cg.total_migrations;
        if cg.max_gap_ms >= stats.worst_gap_ms {
            stats.worst_gap_ms = cg.max_gap_ms;
            stats.worst_gap_cpu = cg.max_gap_cpu;
        }
        stats.worst_spread = max_opt(stats.worst_spread, cg.spread);
        stats.worst_migration_ratio = stats.worst_migration_ratio.max(cg.migration_ratio);
        stats.worst_run_delay_us = max_opt(stats.worst_run_delay_us, cg.worst_run_delay_us);
        stats.cgroups.push(cg);
    }
    stats.total_cpus = all_cpus.len() as u32;
    stats
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn cgroup_stats(name: &str, reports: &[&WorkerReport]) -> CgroupStats {
    let mut cpus: Vec<u32> = reports
        .iter()
        .flat_map(|r| r.cpus_used.iter().copied())
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    let iterations: u64 = reports.iter().map(|r| r.work_units).sum();
    let migrations: u64 = reports.iter().map(|r| r.migrations).sum();
    // Off-CPU share of wall time, per worker.
    let off_cpu: Vec<f64> = reports
        .iter()
        .filter(|r| r.wall_time_ns > 0)
        .map(|r| {
            let on = r.cpu_time_ns.min(r.wall_time_ns) as f64;
            100.0 * (1.0 - on / r.wall_time_ns as f64)
        })
        .collect();
    // Work per CPU-second received, so overcommitted runs stay comparable.
    let rates: Vec<f64> = reports
        .iter()
        .filter(|r| r.cpu_time_ns > 0)
        .map(|r| r.work_units as f64 / (r.cpu_time_ns as f64 / 1e9))
        .collect();
    let spread = if rates.len() >= 2 {
        let max = rates.iter().cloned().fold(f64::MIN, f64::max);
        let min = rates.iter().cloned().fold(f64::MAX, f64::min);
        (max > 0.0).then(|| 100.0 * (max - min) / max)
    } else {
        None
    };
    let gap = reports.iter().max_by_key(|r| r.max_gap_ns);
    let delays: Vec<f64> = reports
        .iter()
        .filter(|r| r.run_count > 0)
        .map(|r| r.run_delay_ns as f64 / r.run_count as f64 / 1e3)
        .collect();
    CgroupStats {
        name: name.to_string(),
        num_workers: reports.len() as u32,
        num_cpus: cpus.len() as u32,
        cpus_used: cpus,
        total_iterations: iterations,
        total_cpu_time_ns: reports.iter().map(|r| r.cpu_time_ns).sum(),
        total_migrations: migrations,
        migration_ratio: if iterations > 0 {
            migrations as f64 / iterations as f64
        } else {
            0.0
        },
        avg_off_cpu_pct: mean(&off_cpu),
        min_off_cpu_pct: off_cpu.iter().cloned().reduce(f64::min),
        max_off_cpu_pct: off_cpu.iter().cloned().reduce(f64::max),
        spread,
        max_gap_ms: gap.map(|r| r.max_gap_ns / 1_000_000).unwrap_or(0),
        max_gap_cpu: gap.and_then(|r| r.cpus_used.last().copied()),
        mean_run_delay_us: mean(&delays),
        worst_run_delay_us: delays.iter().cloned().reduce(f64::max),
        ..CgroupStats::default()
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
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

/// Judge the run.
pub fn evaluate(
    req: &RunRequest,
    data: &Collected,
    engine: &EngineReport,
    console_log: &Path,
) -> Verdict {
    let mut v = Verdict {
        outcome: Outcome::Pass,
        reasons: Vec::new(),
    };
    let console_hint = || match console_excerpt(console_log) {
        Some(ex) => format!("; console ({}):\n{ex}", console_log.display()),
        None => String::new(),
    };

    match &engine.exit {
        GuestExit::Reset => {}
        GuestExit::Killed(why) => v.fail(why.clone()),
        GuestExit::EngineFailed(why) => v.fail(why.clone()),
    }
    for e in &data.protocol_errors {
        v.fail(e.clone());
    }
    if let Some(p) = &data.panic {
        v.fail(format!("the guest runtime panicked: {p}"));
    }
    let Some(ready) = &data.ready else {
        v.fail(format!("the guest never reported ready{}", console_hint()));
        return v;
    };

    // Topology: re-derive from the per-CPU table instead of trusting guest counts.
    let seen = ktstr_wire::msg::SeenTopology::derive(
        ready.topology.online.clone(),
        ready.topology.cpus.clone(),
    );
    let declared = req.topology.to_string();
    if seen.label() != declared || !seen.uniform {
        v.fail(format!(
            "topology mismatch: declared {declared}, the guest sees {} (online {})",
            seen.label(),
            seen.online
        ));
    }

    match data.done {
        None => v.fail(format!(
            "the guest did not finish its run{}",
            console_hint()
        )),
        Some(d) if d.exit_code != 0 => v.fail(format!(
            "the guest runtime ended with exit code {}",
            d.exit_code
        )),
        Some(_) => {}
    }

    // Workers: every one declared must report, and every one must have progressed.
    let expected: u32 = req.spec.workers.iter().map(|w| w.count).sum();
    let reported = data.workers.len() as u32;
    if expected > 0 {
        if reported < expected {
            v.fail(format!(
                "{} of {expected} workers never reported",
                expected - reported
            ));
        }
        let total: u64 = data.workers.iter().map(|w| w.work_units).sum();
        if reported > 0 && total == 0 {
            v.inconclusive("no worker completed a single work unit: nothing to judge".into());
        } else {
            for w in data.workers.iter().filter(|w| w.work_units == 0) {
                v.fail(format!(
                    "worker {}[{}] (pid {}) made no progress in {} ms",
                    w.group,
                    w.index,
                    w.pid,
                    w.wall_time_ns / 1_000_000
                ));
            }
        }
    }
    if let (Some(status), Some(_)) = (data.exec_status, &req.spec.exec) {
        if status != 0 {
            v.fail(format!("the guest command exited with status {status}"));
        }
    }
    v
}

impl Verdict {
    fn fail(&mut self, why: String) {
        self.outcome = Outcome::Fail;
        self.reasons.push(why);
    }

    fn inconclusive(&mut self, why: String) {
        self.outcome = self.outcome.merge(Outcome::Inconclusive);
        self.reasons.push(why);
    }
}
