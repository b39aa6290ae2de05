//! Gates over the workers' raw reports: not-stuck, max gap, fairness spread (per cgroup
//! and across the scenario), isolation, migration ratio, work rate and wake latency.
//!
//! Reports are grouped by the cgroup each worker was started in (`WorkerReport::group`)
//! and judged against a [`CgroupPlan`]: what the scenario declared for that cgroup. The
//! plan comes from the spec (host side), never from the guest.

use std::collections::{BTreeMap, BTreeSet};

use ktstr_sidecar::Outcome;
use ktstr_wire::msg::WorkerReport;

use super::check::{Check, Gate};
use super::sample;
use super::Assert;

/// What the scenario declared for one cgroup (by the path its workers were started in).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupPlan {
    /// Path relative to the test's cgroup (`cg0`, `outer/heavy`).
    pub name: String,
    /// Workers started in it over the whole run (spawned ones included).
    pub workers: u32,
    /// Every CPU a worker of this cgroup was allowed on at some point of the run by
    /// cpusets (its own, its parents', those of cgroups its workers were moved to).
    /// None: some cpuset in force at some point was "all CPUs", so isolation has nothing
    /// to judge.
    pub allowed_cpus: Option<BTreeSet<u32>>,
    /// The scenario stops its workers on purpose for a while (freeze), so a long gap
    /// between checkpoints is by design.
    pub paused: bool,
}

/// `cg0[2] pid 41`
fn who(r: &WorkerReport) -> String {
    format!("{}[{}] pid {}", r.group, r.index, r.pid)
}

/// Off-CPU share of wall time, percent, re-derived from CPU and wall time (a worker that
/// claims more CPU than wall time counts as 0 % off-CPU). None without wall time.
pub fn off_cpu_pct(r: &WorkerReport) -> Option<f64> {
    (r.wall_time_ns > 0).then(|| {
        let on = r.cpu_time_ns.min(r.wall_time_ns) as f64;
        100.0 * (1.0 - on / r.wall_time_ns as f64)
    })
}

/// Work units per CPU-second received; None without CPU time.
pub fn work_rate(r: &WorkerReport) -> Option<f64> {
    (r.cpu_time_ns > 0).then(|| r.work_units as f64 / (r.cpu_time_ns as f64 / 1e9))
}

/// Group reports by the cgroup they were started in, in plan order, then any cgroup the
/// plan does not know (those are reported by [`check_workers`] as a run failure).
pub fn group_reports<'a>(
    plans: &[CgroupPlan],
    reports: &'a [WorkerReport],
) -> Vec<(String, Vec<&'a WorkerReport>)> {
    let mut order: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();
    let mut by: BTreeMap<&str, Vec<&WorkerReport>> = BTreeMap::new();
    for r in reports {
        if !order.iter().any(|n| n == &r.group) {
            order.push(r.group.clone());
        }
        by.entry(r.group.as_str()).or_default().push(r);
    }
    order
        .into_iter()
        .map(|n| {
            let rs = by.get(n.as_str()).cloned().unwrap_or_default();
            (n, rs)
        })
        .collect()
}

/// Apply every enabled worker gate. The checks come out grouped by gate, in the order of
/// the gate table in [`super`].
pub fn check_workers(a: &Assert, plans: &[CgroupPlan], reports: &[WorkerReport]) -> Vec<Check> {
    let groups = group_reports(plans, reports);
    let plan_of = |name: &str| plans.iter().find(|p| p.name == name);
    let mut out = Vec::new();
    out.extend(reports_complete(plans, &groups));
    if a.not_stuck {
        out.extend(not_stuck(&groups));
    }
    if let Some(limit) = a.max_gap_ms {
        for (name, rs) in &groups {
            out.extend(max_gap(name, rs, plan_of(name), limit));
        }
    }
    if let Some(limit) = a.max_spread_pct {
        for (name, rs) in &groups {
            out.extend(spread(Gate::Spread, &format!("cgroup {name}"), rs, limit));
        }
    }
    if let Some(limit) = a.max_scenario_spread_pct {
        let all: Vec<&WorkerReport> = reports.iter().collect();
        out.extend(spread(Gate::ScenarioSpread, "scenario", &all, limit));
    }
    if a.isolation {
        for (name, rs) in &groups {
            if let Some(c) = isolation(name, rs, plan_of(name)) {
                out.push(c);
            }
        }
    }
    if let Some(limit) = a.max_migration_ratio {
        for (name, rs) in &groups {
            out.push(migration_ratio(name, rs, limit));
        }
    }
    if let Some(limit) = a.min_work_rate {
        for (name, rs) in &groups {
            out.push(min_work_rate(name, rs, limit));
        }
    }
    if let Some(limit) = a.max_p99_wake_latency_us {
        out.extend(wake_latency(&groups, limit));
    }
    out
}

/// Every declared worker reported exactly once, and no report names an unknown cgroup.
/// Always on: a lost report is a broken run whatever the test asserts.
fn reports_complete(plans: &[CgroupPlan], groups: &[(String, Vec<&WorkerReport>)]) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, rs) in groups {
        let subject = format!("cgroup {name}");
        let Some(plan) = plans.iter().find(|p| &p.name == name) else {
            out.push(Check::new(
                Gate::Run,
                subject,
                Outcome::Fail,
                format!(
                    "{} worker report(s) name a cgroup the scenario does not have",
                    rs.len()
                ),
            ));
            continue;
        };
        let mut seen = BTreeSet::new();
        let dups: Vec<u32> = rs
            .iter()
            .filter(|r| !seen.insert(r.index))
            .map(|r| r.index)
            .collect();
        if !dups.is_empty() {
            out.push(Check::new(
                Gate::Run,
                subject.clone(),
                Outcome::Fail,
                format!("workers {dups:?} reported more than once"),
            ));
        }
        let n = seen.len() as u32;
        if n < plan.workers {
            out.push(Check::new(
                Gate::Run,
                subject,
                Outcome::Fail,
                format!(
                    "{} of {} workers never reported (died, or their report was lost)",
                    plan.workers - n,
                    plan.workers
                ),
            ));
        } else if n > plan.workers {
            out.push(Check::new(
                Gate::Run,
                subject,
                Outcome::Fail,
                format!("{n} workers reported, the scenario starts {}", plan.workers),
            ));
        }
    }
    out
}

/// Every worker completed at least one work unit.
fn not_stuck(groups: &[(String, Vec<&WorkerReport>)]) -> Vec<Check> {
    let mut out = Vec::new();
    let mut total = 0usize;
    let mut least: Option<&WorkerReport> = None;
    for (_, rs) in groups {
        for r in rs {
            total += 1;
            if r.work_units == 0 {
                out.push(Check::new(
                    Gate::NotStuck,
                    format!("worker {}", who(r)),
                    Outcome::Fail,
                    format!(
                        "completed no work unit in {} ms of wall time ({} ms on CPU)",
                        r.wall_time_ns / 1_000_000,
                        r.cpu_time_ns / 1_000_000
                    ),
                ));
            } else if least.is_none_or(|l| r.work_units < l.work_units) {
                least = Some(r);
            }
        }
    }
    if total == 0 {
        out.push(Check::new(
            Gate::NotStuck,
            "scenario",
            Outcome::Skip,
            "no worker reported".into(),
        ));
    } else if out.is_empty() {
        if let Some(l) = least {
            out.push(Check::new(
                Gate::NotStuck,
                "scenario",
                Outcome::Pass,
                format!(
                    "all {total} workers progressed (fewest: {} units, {})",
                    l.work_units,
                    who(l)
                ),
            ));
        }
    }
    out
}

/// The longest checkpoint gap of any worker of the cgroup stays under the limit. None
/// for a cgroup without reports (nothing to judge; lost reports fail elsewhere).
fn max_gap(
    name: &str,
    rs: &[&WorkerReport],
    plan: Option<&CgroupPlan>,
    limit_ms: u64,
) -> Option<Check> {
    let subject = format!("cgroup {name}");
    let worst = rs.iter().max_by_key(|r| r.max_gap_ns)?;
    if plan.is_some_and(|p| p.paused) {
        return Some(Check::new(
            Gate::MaxGap,
            subject,
            Outcome::Skip,
            "the scenario freezes this cgroup, so gaps are by design".into(),
        ));
    }
    let gap_ms = worst.max_gap_ns as f64 / 1e6;
    let cpu = worst
        .max_gap_cpu
        .map(|c| format!(" on CPU {c}"))
        .unwrap_or_default();
    let msg = format!(
        "longest gap {gap_ms:.1} ms ({}{cpu}, at {} ms), limit {limit_ms} ms",
        who(worst),
        worst.max_gap_at_ms
    );
    let outcome = if gap_ms > limit_ms as f64 {
        Outcome::Fail
    } else {
        Outcome::Pass
    };
    Some(Check::new(Gate::MaxGap, subject, outcome, msg))
}

/// Share of its life a worker must have spent beside the longest-lived one to be compared
/// with it: a worker stopped or started mid-run met other conditions (a cpu.max window,
/// an offline CPU), so its off-CPU share says nothing about fairness between the two.
const SPREAD_MIN_SHARED_LIFE: f64 = 0.9;

/// Milliseconds both workers were alive at once.
fn shared_life_ms(a: &WorkerReport, b: &WorkerReport) -> u64 {
    a.ended_at_ms
        .min(b.ended_at_ms)
        .saturating_sub(a.started_at_ms.max(b.started_at_ms))
}

/// The workers that lived through (nearly) the same window as the longest-lived one,
/// and how many were left out.
fn same_window<'a>(rs: &[&'a WorkerReport]) -> (Vec<&'a WorkerReport>, usize) {
    let life = |r: &WorkerReport| r.ended_at_ms.saturating_sub(r.started_at_ms);
    let Some(longest) = rs.iter().copied().max_by_key(|r| life(r)) else {
        return (Vec::new(), 0);
    };
    let kept: Vec<&WorkerReport> = rs
        .iter()
        .copied()
        .filter(|r| {
            let span = life(r).max(life(longest));
            span == 0 || shared_life_ms(r, longest) as f64 >= SPREAD_MIN_SHARED_LIFE * span as f64
        })
        .collect();
    let left_out = rs.len() - kept.len();
    (kept, left_out)
}

/// max − min off-CPU share of the workers that shared the same window (see
/// [`same_window`]) stays under the limit (percentage points). None with fewer than two
/// such workers: nothing to compare.
fn spread(gate: Gate, subject: &str, rs: &[&WorkerReport], limit_pct: f64) -> Option<Check> {
    let (rs, left_out) = same_window(rs);
    let shares: Vec<(f64, &WorkerReport)> = rs
        .iter()
        .filter_map(|r| off_cpu_pct(r).map(|p| (p, *r)))
        .collect();
    if shares.len() < 2 {
        return None;
    }
    let (min, min_r) = shares
        .iter()
        .copied()
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or(shares[0]);
    let (max, max_r) = shares
        .iter()
        .copied()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or(shares[0]);
    let d = max - min;
    let mut msg = format!(
        "off-CPU spread {d:.1} pp ({} {max:.1} %, {} {min:.1} %), limit {limit_pct} pp",
        who(max_r),
        who(min_r)
    );
    if left_out > 0 {
        msg.push_str(&format!(
            "; {left_out} worker(s) with a different lifetime not compared"
        ));
    }
    let outcome = if d > limit_pct {
        Outcome::Fail
    } else {
        Outcome::Pass
    };
    Some(Check::new(gate, subject, outcome, msg))
}

/// No worker of a cgroup with a cpuset ran on a CPU outside every cpuset it had. None
/// when the cgroup has no cpuset to judge.
fn isolation(name: &str, rs: &[&WorkerReport], plan: Option<&CgroupPlan>) -> Option<Check> {
    let allowed = plan?.allowed_cpus.as_ref()?;
    let subject = format!("cgroup {name}");
    if rs.is_empty() {
        return None;
    }
    let recorded = rs.iter().filter(|r| !r.cpus_used.is_empty()).count();
    if recorded == 0 {
        return Some(Check::new(
            Gate::Isolation,
            subject,
            Outcome::Inconclusive,
            "no worker recorded a CPU it ran on".into(),
        ));
    }
    let allowed_list = render(allowed.iter().copied());
    let bad: Vec<String> = rs
        .iter()
        .filter_map(|r| {
            let outside: Vec<u32> = r
                .cpus_used
                .iter()
                .copied()
                .filter(|c| !allowed.contains(c))
                .collect();
            (!outside.is_empty())
                .then(|| format!("{} ran on CPU {}", who(r), render(outside.into_iter())))
        })
        .collect();
    Some(if bad.is_empty() {
        let used: BTreeSet<u32> = rs
            .iter()
            .flat_map(|r| r.cpus_used.iter().copied())
            .collect();
        Check::new(
            Gate::Isolation,
            subject,
            Outcome::Pass,
            format!(
                "workers ran on CPUs {} within cpuset {allowed_list}",
                render(used.into_iter())
            ),
        )
    } else {
        Check::new(
            Gate::Isolation,
            subject,
            Outcome::Fail,
            format!("outside cpuset {allowed_list}: {}", bad.join("; ")),
        )
    })
}

/// Migrations per work unit of the cgroup stay under the limit.
fn migration_ratio(name: &str, rs: &[&WorkerReport], limit: f64) -> Check {
    let subject = format!("cgroup {name}");
    let units: u64 = rs.iter().map(|r| r.work_units).sum();
    let migrations: u64 = rs.iter().map(|r| r.migrations).sum();
    if units == 0 {
        return Check::new(
            Gate::MigrationRatio,
            subject,
            Outcome::Inconclusive,
            format!("{migrations} migrations over zero work units: no ratio"),
        );
    }
    let ratio = migrations as f64 / units as f64;
    let outcome = if ratio > limit {
        Outcome::Fail
    } else {
        Outcome::Pass
    };
    Check::new(
        Gate::MigrationRatio,
        subject,
        outcome,
        format!("{migrations} migrations / {units} units = {ratio:.4}, limit {limit}"),
    )
}

/// The slowest worker of the cgroup still does `limit` work units per CPU-second.
fn min_work_rate(name: &str, rs: &[&WorkerReport], limit: f64) -> Check {
    let subject = format!("cgroup {name}");
    let rates: Vec<(f64, &WorkerReport)> = rs
        .iter()
        .filter_map(|r| work_rate(r).map(|x| (x, *r)))
        .collect();
    let Some((slowest, r)) = rates.iter().copied().min_by(|a, b| a.0.total_cmp(&b.0)) else {
        return Check::new(
            Gate::WorkRate,
            subject,
            Outcome::Inconclusive,
            format!("none of {} workers received CPU time: no rate", rs.len()),
        );
    };
    let outcome = if slowest < limit {
        Outcome::Fail
    } else {
        Outcome::Pass
    };
    Check::new(
        Gate::WorkRate,
        subject,
        outcome,
        format!(
            "slowest worker {} did {slowest:.1} units per CPU-second, limit {limit}",
            who(r)
        ),
    )
}

/// p99 wake-up latency of each cgroup that measured wake-ups stays under the limit.
/// Cgroups whose workers never wake are not judged; a scenario where none did is
/// inconclusive (the gate was asked for and nothing measured it).
fn wake_latency(groups: &[(String, Vec<&WorkerReport>)], limit_us: f64) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, rs) in groups {
        let subject = format!("cgroup {name}");
        let Some(s) = wake_summary(rs) else {
            continue;
        };
        let outcome = if s.p99_us > limit_us {
            Outcome::Fail
        } else {
            Outcome::Pass
        };
        out.push(Check::new(
            Gate::WakeLatency,
            subject,
            outcome,
            format!(
                "p99 wake latency {:.1} us (median {:.1} us, {} samples), limit {limit_us} us",
                s.p99_us, s.median_us, s.samples
            ),
        ));
    }
    if out.is_empty() {
        out.push(Check::new(
            Gate::WakeLatency,
            "scenario",
            Outcome::Inconclusive,
            "a wake-latency limit is set but no worker measured a wake-up".into(),
        ));
    }
    out
}

/// Pooled wake-up latency of some workers; None when none measured a wake-up.
pub fn wake_summary(rs: &[&WorkerReport]) -> Option<sample::LatencySummary> {
    let res: Vec<(&[u64], u64)> = rs
        .iter()
        .map(|r| (r.wake_latency_ns.as_slice(), r.wake_samples_total))
        .collect();
    sample::pooled_latency(&res)
}

/// Pooled timer latency of some workers; None when none measured a timer.
pub fn timer_summary(rs: &[&WorkerReport]) -> Option<sample::LatencySummary> {
    let res: Vec<(&[u64], u64)> = rs
        .iter()
        .map(|r| (r.timer_latency_ns.as_slice(), r.timer_samples_total))
        .collect();
    sample::pooled_latency(&res)
}

/// `0-3,6`
fn render(cpus: impl Iterator<Item = u32>) -> String {
    let v: Vec<u32> = cpus.collect();
    ktstr_wire::scenario::render_cpulist(&v)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A spinner of `group` that ran `wall_ms` with `cpu_ms` on CPU.
    pub(crate) fn report(
        group: &str,
        index: u32,
        units: u64,
        cpu_ms: u64,
        wall_ms: u64,
    ) -> WorkerReport {
        WorkerReport {
            group: group.into(),
            index,
            pid: 100 + index as i32,
            cgroup: group.into(),
            work_type: "SpinWait".into(),
            work_units: units,
            cpu_time_ns: cpu_ms * 1_000_000,
            wall_time_ns: wall_ms * 1_000_000,
            off_cpu_ns: wall_ms.saturating_sub(cpu_ms) * 1_000_000,
            run_delay_ns: 0,
            run_count: 10,
            schedstat_cpu_ns: cpu_ms * 1_000_000,
            migrations: 0,
            cpus_used: vec![0],
            allowed_cpus: vec![0, 1],
            max_gap_ns: 5_000_000,
            max_gap_cpu: Some(0),
            max_gap_at_ms: 100,
            nice: 0,
            started_at_ms: 0,
            ended_at_ms: wall_ms,
            wake_latency_ns: vec![],
            wake_samples_total: 0,
            timer_latency_ns: vec![],
            timer_samples_total: 0,
            deadline_misses: 0,
            policy: None,
            errors: vec![],
        }
    }

    pub(crate) fn plan(name: &str, workers: u32) -> CgroupPlan {
        CgroupPlan {
            name: name.into(),
            workers,
            allowed_cpus: None,
            paused: false,
        }
    }

    fn only(checks: &[Check], gate: Gate) -> Vec<&Check> {
        checks.iter().filter(|c| c.gate == gate).collect()
    }

    fn merged(checks: &[Check], gate: Gate) -> Outcome {
        Outcome::merge_all(only(checks, gate).iter().map(|c| c.outcome))
    }

    #[test]
    fn healthy_run_passes_the_default_gates() {
        let plans = [plan("a", 2), plan("b", 1)];
        let rs = [
            report("a", 0, 100, 900, 1000),
            report("a", 1, 110, 950, 1000),
            report("b", 0, 200, 1000, 1000),
        ];
        let c = check_workers(&Assert::default(), &plans, &rs);
        assert_eq!(merged(&c, Gate::Run), Outcome::Skip, "{c:#?}");
        assert_eq!(merged(&c, Gate::NotStuck), Outcome::Pass);
        assert_eq!(merged(&c, Gate::MaxGap), Outcome::Pass);
        // a: spread 5 pp; b: one worker, nothing to compare.
        let sp = only(&c, Gate::Spread);
        assert_eq!(sp.len(), 1);
        assert_eq!(sp[0].outcome, Outcome::Pass, "{}", sp[0].message);
        assert!(sp[0].message.contains("5.0 pp"), "{}", sp[0].message);
        // No cpuset declared: isolation has nothing to judge.
        assert!(only(&c, Gate::Isolation).is_empty());
        assert_eq!(
            Outcome::merge_all(c.iter().map(|x| x.outcome)),
            Outcome::Pass
        );
    }

    #[test]
    fn missing_duplicate_and_unknown_reports_fail_the_run() {
        let plans = [plan("a", 3)];
        let rs = [
            report("a", 0, 1, 10, 10),
            report("a", 0, 1, 10, 10),
            report("zz", 0, 1, 10, 10),
        ];
        let c = check_workers(&Assert::none(), &plans, &rs);
        let run = only(&c, Gate::Run);
        assert_eq!(run.len(), 3, "{run:#?}");
        assert!(run.iter().all(|x| x.outcome == Outcome::Fail));
        assert!(run[0].message.contains("more than once"));
        assert!(run[1].message.contains("2 of 3 workers never reported"));
        assert!(run[2].subject.contains("zz"));
    }

    #[test]
    fn not_stuck_fails_on_a_worker_without_progress() {
        let plans = [plan("a", 2)];
        let rs = [report("a", 0, 50, 500, 1000), report("a", 1, 0, 0, 1000)];
        let c = check_workers(&Assert::none().not_stuck(true), &plans, &rs);
        let ns = only(&c, Gate::NotStuck);
        assert_eq!(ns.len(), 1);
        assert_eq!(ns[0].outcome, Outcome::Fail);
        assert_eq!(ns[0].subject, "worker a[1] pid 101");
        assert!(ns[0].message.contains("1000 ms"), "{}", ns[0].message);
    }

    #[test]
    fn not_stuck_without_workers_is_skip() {
        let c = check_workers(&Assert::default(), &[], &[]);
        assert_eq!(
            Outcome::merge_all(c.iter().map(|x| x.outcome)),
            Outcome::Skip,
            "{c:#?}"
        );
    }

    #[test]
    fn max_gap_fails_over_the_limit_and_skips_frozen_cgroups() {
        let mut slow = report("a", 0, 10, 100, 3000);
        slow.max_gap_ns = 2_500_000_000;
        slow.max_gap_cpu = Some(1);
        let plans = [plan("a", 1)];
        let c = check_workers(&Assert::none().max_gap_ms(2000), &plans, &[slow.clone()]);
        let g = only(&c, Gate::MaxGap);
        assert_eq!(g[0].outcome, Outcome::Fail);
        assert!(g[0].message.contains("2500.0 ms"), "{}", g[0].message);
        assert!(g[0].message.contains("on CPU 1"), "{}", g[0].message);

        let c = check_workers(&Assert::none().max_gap_ms(3000), &plans, &[slow.clone()]);
        assert_eq!(merged(&c, Gate::MaxGap), Outcome::Pass);

        let frozen = [CgroupPlan {
            paused: true,
            ..plan("a", 1)
        }];
        let c = check_workers(&Assert::none().max_gap_ms(2000), &frozen, &[slow]);
        assert_eq!(merged(&c, Gate::MaxGap), Outcome::Skip);
    }

    #[test]
    fn spread_fails_when_one_worker_is_starved() {
        let plans = [plan("a", 3)];
        let rs = [
            report("a", 0, 100, 1000, 1000),
            report("a", 1, 100, 1000, 1000),
            report("a", 2, 25, 250, 1000),
        ];
        let c = check_workers(&Assert::none().max_spread_pct(25.0), &plans, &rs);
        let s = only(&c, Gate::Spread);
        assert_eq!(s[0].outcome, Outcome::Fail);
        assert!(s[0].message.contains("75.0 pp"), "{}", s[0].message);
        assert!(s[0].message.contains("a[2]"), "{}", s[0].message);
    }

    #[test]
    fn spread_compares_only_workers_that_shared_the_window() {
        let plans = [plan("a", 3)];
        // a[2] was stopped at 400 ms while throttled: its 75 % off-CPU is not unfairness.
        let mut stopped = report("a", 2, 10, 100, 400);
        stopped.started_at_ms = 0;
        let rs = [
            report("a", 0, 100, 900, 1000),
            report("a", 1, 100, 800, 1000),
            stopped,
        ];
        let c = check_workers(&Assert::none().max_spread_pct(25.0), &plans, &rs);
        let s = only(&c, Gate::Spread);
        assert_eq!(s[0].outcome, Outcome::Pass, "{}", s[0].message);
        assert!(s[0].message.contains("10.0 pp"), "{}", s[0].message);
        assert!(s[0].message.contains("1 worker(s)"), "{}", s[0].message);

        // A worker started 50 ms late still shares 95 % of the window and is compared.
        let mut late = report("a", 2, 25, 238, 950);
        late.started_at_ms = 50;
        late.ended_at_ms = 1000;
        let rs = [rs[0].clone(), rs[1].clone(), late];
        let c = check_workers(&Assert::none().max_spread_pct(25.0), &plans, &rs);
        let s = only(&c, Gate::Spread);
        assert_eq!(s[0].outcome, Outcome::Fail, "{}", s[0].message);
        assert!(s[0].message.contains("a[2]"), "{}", s[0].message);
    }

    #[test]
    fn spread_ignores_cpu_time_claims_beyond_wall_time() {
        let plans = [plan("a", 2)];
        // A worker that claims 5 s of CPU in 1 s of wall time counts as 0 % off-CPU.
        let rs = [report("a", 0, 1, 5000, 1000), report("a", 1, 1, 1000, 1000)];
        let c = check_workers(&Assert::none().max_spread_pct(1.0), &plans, &rs);
        assert_eq!(merged(&c, Gate::Spread), Outcome::Pass);
    }

    #[test]
    fn spread_within_cgroups_passes_where_scenario_spread_fails() {
        // "packed": 4 workers on one CPU, 25 % each; "free": one worker on its own CPU.
        let plans = [plan("packed", 4), plan("free", 1)];
        let mut rs: Vec<WorkerReport> =
            (0..4).map(|i| report("packed", i, 25, 250, 1000)).collect();
        rs.push(report("free", 0, 100, 1000, 1000));
        let a = Assert::none()
            .max_spread_pct(10.0)
            .max_scenario_spread_pct(10.0);
        let c = check_workers(&a, &plans, &rs);
        assert_eq!(merged(&c, Gate::Spread), Outcome::Pass);
        let s = only(&c, Gate::ScenarioSpread);
        assert_eq!(s[0].outcome, Outcome::Fail);
        assert!(s[0].message.contains("75.0 pp"), "{}", s[0].message);
    }

    #[test]
    fn isolation_judges_declared_cpusets_only() {
        let mut p = plan("a", 2);
        p.allowed_cpus = Some([1].into());
        let plans = [p, plan("b", 1)];
        let mut a0 = report("a", 0, 1, 10, 10);
        a0.cpus_used = vec![1];
        let mut a1 = report("a", 1, 1, 10, 10);
        a1.cpus_used = vec![0, 1, 3];
        let mut b0 = report("b", 0, 1, 10, 10);
        b0.cpus_used = vec![0, 1, 2, 3];
        let c = check_workers(
            &Assert::none().isolation(true),
            &plans,
            &[a0.clone(), a1, b0],
        );
        let iso = only(&c, Gate::Isolation);
        assert_eq!(iso.len(), 1, "b has no cpuset: {iso:#?}");
        assert_eq!(iso[0].outcome, Outcome::Fail);
        assert!(
            iso[0].message.contains("a[1] pid 101 ran on CPU 0,3"),
            "{}",
            iso[0].message
        );

        let mut a1 = report("a", 1, 1, 10, 10);
        a1.cpus_used = vec![1];
        let c = check_workers(&Assert::none().isolation(true), &plans[..1], &[a0, a1]);
        assert_eq!(merged(&c, Gate::Isolation), Outcome::Pass);
    }

    #[test]
    fn isolation_without_recorded_cpus_is_inconclusive() {
        let mut p = plan("a", 1);
        p.allowed_cpus = Some([0].into());
        let mut r = report("a", 0, 1, 10, 10);
        r.cpus_used.clear();
        let c = check_workers(&Assert::none().isolation(true), &[p], &[r]);
        assert_eq!(merged(&c, Gate::Isolation), Outcome::Inconclusive);
    }

    #[test]
    fn migration_ratio_gate_and_zero_iterations() {
        let plans = [plan("a", 2)];
        let mut r0 = report("a", 0, 100, 10, 10);
        r0.migrations = 30;
        let mut r1 = report("a", 1, 100, 10, 10);
        r1.migrations = 30;
        let c = check_workers(
            &Assert::none().max_migration_ratio(0.1),
            &plans,
            &[r0.clone(), r1.clone()],
        );
        let m = only(&c, Gate::MigrationRatio);
        assert_eq!(m[0].outcome, Outcome::Fail);
        assert!(m[0].message.contains("0.3000"), "{}", m[0].message);
        let c = check_workers(&Assert::none().max_migration_ratio(0.5), &plans, &[r0, r1]);
        assert_eq!(merged(&c, Gate::MigrationRatio), Outcome::Pass);

        let idle = [report("a", 0, 0, 10, 10), report("a", 1, 0, 10, 10)];
        let c = check_workers(&Assert::none().max_migration_ratio(0.5), &plans, &idle);
        assert_eq!(merged(&c, Gate::MigrationRatio), Outcome::Inconclusive);
    }

    #[test]
    fn work_rate_is_per_cpu_second_received() {
        let plans = [plan("a", 2)];
        // 100 units in 250 ms of CPU = 400/s, even though wall time was 4 s (overcommit).
        let rs = [
            report("a", 0, 100, 250, 4000),
            report("a", 1, 400, 1000, 4000),
        ];
        let c = check_workers(&Assert::none().min_work_rate(350.0), &plans, &rs);
        assert_eq!(merged(&c, Gate::WorkRate), Outcome::Pass, "{c:#?}");
        let c = check_workers(&Assert::none().min_work_rate(450.0), &plans, &rs);
        let w = only(&c, Gate::WorkRate);
        assert_eq!(w[0].outcome, Outcome::Fail);
        assert!(w[0].message.contains("400.0 units"), "{}", w[0].message);

        let no_cpu = [report("a", 0, 0, 0, 4000), report("a", 1, 0, 0, 4000)];
        let c = check_workers(&Assert::none().min_work_rate(1.0), &plans, &no_cpu);
        assert_eq!(merged(&c, Gate::WorkRate), Outcome::Inconclusive);
    }

    #[test]
    fn wake_latency_gate_skips_spinners_and_needs_some_samples() {
        let plans = [plan("pipe", 2), plan("spin", 1)];
        let mut p0 = report("pipe", 0, 10, 10, 10);
        p0.wake_latency_ns = vec![20_000; 98];
        p0.wake_latency_ns.extend([900_000, 900_000]);
        let p1 = report("pipe", 1, 10, 10, 10);
        let s0 = report("spin", 0, 10, 10, 10);
        let rs = [p0, p1, s0.clone()];
        let c = check_workers(&Assert::none().max_p99_wake_latency_us(500.0), &plans, &rs);
        let w = only(&c, Gate::WakeLatency);
        assert_eq!(w[0].outcome, Outcome::Fail, "{}", w[0].message);
        assert!(w[0].message.contains("900.0 us"), "{}", w[0].message);
        assert_eq!(w.len(), 1, "spinners measure no wake-up and are not judged");
        let c = check_workers(&Assert::none().max_p99_wake_latency_us(1000.0), &plans, &rs);
        assert_eq!(merged(&c, Gate::WakeLatency), Outcome::Pass);

        let c = check_workers(
            &Assert::none().max_p99_wake_latency_us(1000.0),
            &plans[1..],
            &[s0],
        );
        assert_eq!(merged(&c, Gate::WakeLatency), Outcome::Inconclusive);
    }

    #[test]
    fn a_gate_that_is_off_records_nothing() {
        let plans = [plan("a", 1)];
        let c = check_workers(&Assert::none(), &plans, &[report("a", 0, 0, 0, 10)]);
        assert!(c.is_empty(), "{c:#?}");
    }
}
