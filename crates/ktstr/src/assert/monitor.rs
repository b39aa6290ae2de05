//! The monitor: turns the guest's 100 ms system samples into the sidecar's
//! [`MonitorSummary`] and judges them against [`MonitorThresholds`].
//!
//! A threshold is violated only when it holds for `sustained_samples` samples in a row,
//! so a single spike (a tick landing mid-migration, a vCPU the host preempted) is not a
//! finding. Violations are always listed in the summary; they fail the test only when
//! the thresholds are enforced.
//!
//! Stuck CPU: between two consecutive samples a CPU had runnable tasks in both and its
//! run-queue clock did not advance. A running task keeps the tick, and with it the clock,
//! going; an idle CPU may legitimately stop it (NOHZ), which is why idle CPUs are excused.

use std::collections::BTreeMap;

use ktstr_sidecar::monitor::{MonitorSummary, SchedstatDeltas, ScxEventDeltas};
use ktstr_sidecar::Outcome;
use ktstr_wire::msg::{CpuSchedstat, MonitorSample};

use super::check::{Check, Gate};
use super::{DEFAULT_MAX_IMBALANCE_RATIO, DEFAULT_MAX_LOCAL_DSQ_DEPTH, DEFAULT_SUSTAINED_SAMPLES};

/// Limits on the system samples (defaults in the table of [`super`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorThresholds {
    /// Largest `max nr_running / max(1, min nr_running)` over CPUs (default 4.0: one
    /// CPU with four times the queue of the emptiest is past what load balancing should
    /// leave standing for half a second).
    pub max_imbalance_ratio: Option<f64>,
    /// Deepest sched_ext local DSQ (default 50). The guest cannot see DSQ depths today,
    /// so this only judges samples that carry them (none yet).
    pub max_local_dsq_depth: Option<u32>,
    /// A CPU with runnable tasks whose run-queue clock stands still is a violation.
    pub fail_on_stuck: bool,
    /// Consecutive violating samples that make a violation (default 5 = 500 ms).
    pub sustained_samples: u32,
    /// Violations fail the test (default false: report-only). Imbalance depends on the
    /// scenario (a cgroup confined to one CPU is imbalanced by design), so only tests that
    /// know their load is balanceable should enforce.
    pub enforce: bool,
}

impl Default for MonitorThresholds {
    fn default() -> Self {
        Self {
            max_imbalance_ratio: Some(DEFAULT_MAX_IMBALANCE_RATIO),
            max_local_dsq_depth: Some(DEFAULT_MAX_LOCAL_DSQ_DEPTH),
            fail_on_stuck: true,
            sustained_samples: DEFAULT_SUSTAINED_SAMPLES,
            enforce: false,
        }
    }
}

/// What [`summarize`] found beyond the summary itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MonitorFindings {
    /// Samples with a run-queue clock on at least one CPU (stuck detection possible).
    pub clock_samples: u64,
    /// Samples with `nr_running` on at least one CPU (imbalance measurable).
    pub nr_running_samples: u64,
    /// CPU-time the run queues delivered over the run, from schedstat, nanoseconds; the
    /// denominator of per-CPU-second rates.
    pub delivered_cpu_ns: Option<u64>,
    /// sched_ext events per CPU-second delivered (`SCX_EV_*` name -> rate).
    pub scx_event_rates: BTreeMap<String, f64>,
}

/// A counter's increase between two readings: a decrease means the counter was reset
/// (a scheduler re-attached), so the new value is all increase.
fn increase(prev: u64, now: u64) -> u64 {
    if now >= prev {
        now - prev
    } else {
        now
    }
}

fn add_schedstat(acc: &mut SchedstatDeltas, a: &CpuSchedstat, b: &CpuSchedstat) {
    acc.total_run_delay += increase(a.run_delay_ns, b.run_delay_ns);
    acc.total_pcount += increase(a.pcount, b.pcount);
    acc.total_sched_count += increase(a.sched_count, b.sched_count);
    acc.total_yld_count += increase(a.yld_count, b.yld_count);
    acc.total_sched_goidle += increase(a.sched_goidle, b.sched_goidle);
    acc.total_ttwu_count += increase(a.ttwu_count, b.ttwu_count);
    acc.total_ttwu_local += increase(a.ttwu_local, b.ttwu_local);
}

/// Seconds between the first and the last of `samples` that `has` data.
fn span_secs(samples: &[&MonitorSample], has: impl Fn(&MonitorSample) -> bool) -> Option<f64> {
    let first = samples.iter().find(|s| has(s))?;
    let last = samples.iter().rev().find(|s| has(s))?;
    Some(last.elapsed_ms.saturating_sub(first.elapsed_ms) as f64 / 1000.0)
}

/// Counts runs of consecutive `true`s; reports each run of at least `need`.
struct Sustained {
    need: u32,
    run: u32,
    start_ms: u64,
    peak: f64,
}

impl Sustained {
    fn new(need: u32) -> Self {
        Self {
            need: need.max(1),
            run: 0,
            start_ms: 0,
            peak: 0.0,
        }
    }

    /// Feed one sample; returns `(start_ms, samples, peak)` when a qualifying run ends.
    fn feed(&mut self, violating: bool, at_ms: u64, value: f64) -> Option<(u64, u32, f64)> {
        if violating {
            if self.run == 0 {
                self.start_ms = at_ms;
                self.peak = value;
            }
            self.run += 1;
            self.peak = self.peak.max(value);
            None
        } else {
            self.finish()
        }
    }

    fn finish(&mut self) -> Option<(u64, u32, f64)> {
        let r = (self.run >= self.need).then_some((self.start_ms, self.run, self.peak));
        self.run = 0;
        r
    }
}

/// Builds the summary of `samples` (any order; sorted here by time) and lists every
/// sustained violation of `th` in `summary.violations`. None when there is no sample.
pub fn summarize(
    samples: &[MonitorSample],
    th: &MonitorThresholds,
) -> Option<(MonitorSummary, MonitorFindings)> {
    if samples.is_empty() {
        return None;
    }
    let mut order: Vec<&MonitorSample> = samples.iter().collect();
    order.sort_by_key(|s| s.elapsed_ms);

    let mut sum = MonitorSummary {
        total_samples: order.len(),
        ..MonitorSummary::default()
    };
    let mut found = MonitorFindings::default();

    let mut ratios = Vec::new();
    let mut nr_sum = 0.0;
    let mut nr_cpus = 0u64;
    let mut imbalance = Sustained::new(th.sustained_samples);
    // Per CPU: its run of stuck intervals.
    let mut stuck_runs: BTreeMap<u32, Sustained> = BTreeMap::new();
    let mut stuck_found: Vec<(u32, u64, u32)> = Vec::new();
    let mut schedstat: Option<SchedstatDeltas> = None;
    let mut delivered: u64 = 0;
    let mut scx: BTreeMap<String, u64> = BTreeMap::new();
    let mut scx_seen = false;
    let mut fallback_burst: u64 = 0;
    let mut imbalance_found = Vec::new();

    for (i, s) in order.iter().enumerate() {
        // Imbalance over the CPUs that show nr_running.
        let nrs: Vec<u32> = s.cpus.iter().filter_map(|c| c.nr_running).collect();
        if let (Some(&max), Some(&min)) = (nrs.iter().max(), nrs.iter().min()) {
            found.nr_running_samples += 1;
            let ratio = f64::from(max) / f64::from(min.max(1));
            ratios.push(ratio);
            nr_sum += nrs.iter().map(|&n| f64::from(n)).sum::<f64>();
            nr_cpus += nrs.len() as u64;
            if let Some(limit) = th.max_imbalance_ratio {
                if let Some(v) = imbalance.feed(ratio > limit, s.elapsed_ms, ratio) {
                    imbalance_found.push(v);
                }
            }
        }
        if s.cpus.iter().any(|c| c.rq_clock_ns.is_some()) {
            found.clock_samples += 1;
        }
        if s.scx.as_ref().is_some_and(|x| !x.events.is_empty()) {
            scx_seen = true;
        }
        let Some(prev) = i.checked_sub(1).map(|j| order[j]) else {
            continue;
        };
        let before: BTreeMap<u32, _> = prev.cpus.iter().map(|c| (c.cpu, c)).collect();
        for c in &s.cpus {
            let Some(p) = before.get(&c.cpu) else {
                continue;
            };
            // Stuck: runnable in both samples, clock did not move.
            let stuck = match (p.rq_clock_ns, c.rq_clock_ns, p.nr_running, c.nr_running) {
                (Some(a), Some(b), Some(na), Some(nb)) => na > 0 && nb > 0 && b <= a,
                _ => false,
            };
            sum.stuck_count += usize::from(stuck);
            let run = stuck_runs
                .entry(c.cpu)
                .or_insert_with(|| Sustained::new(th.sustained_samples));
            if let Some((at, n, _)) = run.feed(stuck, s.elapsed_ms, 0.0) {
                stuck_found.push((c.cpu, at, n));
            }
            if let (Some(a), Some(b)) = (&p.schedstat, &c.schedstat) {
                add_schedstat(schedstat.get_or_insert_with(Default::default), a, b);
                delivered += increase(a.rq_cpu_time_ns, b.rq_cpu_time_ns);
            }
        }
        if let (Some(a), Some(b)) = (&prev.scx, &s.scx) {
            for (k, &v) in &b.events {
                let inc = a.events.get(k).map_or(0, |&u| increase(u, v));
                *scx.entry(k.clone()).or_default() += inc;
                if k == "SCX_EV_SELECT_CPU_FALLBACK" {
                    fallback_burst = fallback_burst.max(inc);
                }
            }
        }
    }
    if let Some(v) = imbalance.finish() {
        imbalance_found.push(v);
    }
    for (cpu, run) in &mut stuck_runs {
        if let Some((at, n, _)) = run.finish() {
            stuck_found.push((*cpu, at, n));
        }
    }

    // Not measured (no sample showed nr_running): 0.0, the reference's sentinel.
    sum.max_imbalance_ratio = ratios.iter().copied().reduce(f64::max).unwrap_or(0.0);
    sum.avg_imbalance_ratio = super::sample::mean(&ratios).unwrap_or(0.0);
    sum.avg_nr_running = if nr_cpus > 0 {
        nr_sum / nr_cpus as f64
    } else {
        0.0
    };
    // The guest does not see local DSQ depths (yet): zero, as under EEVDF.
    sum.max_local_dsq_depth = 0;
    sum.avg_local_dsq_depth = 0.0;
    if let Some(last) = order.last() {
        sum.psi_cpu_some_avg10 = last.psi_cpu.map(|p| p.some.avg10);
    }
    // IRQ pressure: the mean avg10 and the stall time over the samples that had it.
    let irq: Vec<_> = order
        .iter()
        .filter_map(|s| s.psi_irq.and_then(|p| p.full))
        .collect();
    sum.psi_irq_full_avg10 = super::sample::mean(&irq.iter().map(|f| f.avg10).collect::<Vec<_>>());
    sum.total_irq_pressure_us = irq
        .first()
        .zip(irq.last())
        .map(|(a, b)| b.total_us.saturating_sub(a.total_us) as f64);
    if let Some(mut ss) = schedstat {
        ss.total_schedstat_wall_sec =
            span_secs(&order, |s| s.cpus.iter().any(|c| c.schedstat.is_some())).unwrap_or(0.0);
        sum.schedstat_deltas = Some(ss);
        found.delivered_cpu_ns = Some(delivered);
    }
    if scx_seen {
        if delivered > 0 {
            let secs = delivered as f64 / 1e9;
            found.scx_event_rates = scx
                .iter()
                .map(|(k, &v)| (k.clone(), v as f64 / secs))
                .collect();
        }
        let window = span_secs(&order, |s| {
            s.scx.as_ref().is_some_and(|x| !x.events.is_empty())
        })
        .unwrap_or(0.0);
        sum.event_deltas = Some(ScxEventDeltas::from_counters(
            scx.iter().map(|(k, &v)| (k.as_str(), v)),
            window,
            fallback_burst,
        ));
    }

    let interval = sample_interval_ms(&order);
    if let Some(limit) = th.max_imbalance_ratio {
        for (at, n, peak) in imbalance_found {
            sum.violations.push(format!(
                "imbalance ratio above {limit} for {n} samples in a row (~{} ms) from {at} ms, peak {peak:.1}",
                u64::from(n) * interval
            ));
        }
    }
    if th.fail_on_stuck {
        stuck_found.sort_by_key(|&(cpu, at, _)| (at, cpu));
        for (cpu, at, n) in stuck_found {
            sum.violations.push(format!(
                "CPU {cpu} had runnable tasks but its run-queue clock stood still for {n} sample intervals in a row (~{} ms) from {at} ms",
                u64::from(n) * interval
            ));
        }
    }
    Some((sum, found))
}

/// Median spacing of the samples, for messages (100 ms when unknown).
fn sample_interval_ms(order: &[&MonitorSample]) -> u64 {
    let mut d: Vec<u64> = order
        .windows(2)
        .map(|w| w[1].elapsed_ms.saturating_sub(w[0].elapsed_ms))
        .collect();
    d.sort_unstable();
    d.get(d.len() / 2)
        .copied()
        .filter(|&x| x > 0)
        .unwrap_or(100)
}

/// Judge the monitor. Report-only (the default) turns every finding into a Skip line
/// that still shows in the verdict details; enforced, violations fail.
pub fn check_monitor(
    th: &MonitorThresholds,
    result: Option<&(MonitorSummary, MonitorFindings)>,
) -> Vec<Check> {
    let mode = if th.enforce { "" } else { "report-only: " };
    // Enforced, a finding has its own outcome; report-only, every finding is a Skip.
    let finding = |outcome: Outcome, what: &dyn std::fmt::Display| {
        let outcome = if th.enforce { outcome } else { Outcome::Skip };
        Check::new(Gate::Monitor, "system", outcome, format!("{mode}{what}"))
    };
    let Some((sum, found)) = result else {
        return vec![finding(Outcome::Inconclusive, &"no monitor sample arrived")];
    };
    let mut out = Vec::new();
    if th.max_imbalance_ratio.is_some() && found.nr_running_samples == 0 {
        out.push(finding(
            Outcome::Inconclusive,
            &"no sample showed per-CPU nr_running (sched debugfs missing?)",
        ));
    }
    if th.fail_on_stuck && found.clock_samples < 2 {
        out.push(finding(
            Outcome::Inconclusive,
            &"fewer than two samples showed run-queue clocks (sched debugfs missing?)",
        ));
    }
    for v in &sum.violations {
        out.push(finding(Outcome::Fail, v));
    }
    if th.enforce && out.is_empty() {
        out.push(Check::new(
            Gate::Monitor,
            "system",
            Outcome::Pass,
            format!(
                "{} samples: max imbalance {:.1}, {} stuck intervals, none sustained",
                sum.total_samples, sum.max_imbalance_ratio, sum.stuck_count
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_wire::msg::{CpuSample, Psi, PsiLine, ScxSample};

    fn cpu(cpu: u32, nr: u32, clock: u64) -> CpuSample {
        CpuSample {
            cpu,
            nr_running: Some(nr),
            rq_clock_ns: Some(clock),
            schedstat: None,
        }
    }

    /// Samples 100 ms apart; `nr[i]` are the CPUs' nr_running at sample i; every clock
    /// advances unless listed in `frozen` as (sample, cpu).
    fn series(nr: &[&[u32]], frozen: &[(usize, u32)]) -> Vec<MonitorSample> {
        let mut clocks: BTreeMap<u32, u64> = BTreeMap::new();
        nr.iter()
            .enumerate()
            .map(|(i, row)| MonitorSample {
                elapsed_ms: 100 * i as u64,
                cpus: row
                    .iter()
                    .enumerate()
                    .map(|(c, &n)| {
                        let c = c as u32;
                        let clk = clocks.entry(c).or_insert(1_000);
                        if !frozen.contains(&(i, c)) {
                            *clk += 100_000_000;
                        }
                        cpu(c, n, *clk)
                    })
                    .collect(),
                scx: None,
                psi_cpu: None,
                psi_irq: None,
            })
            .collect()
    }

    #[test]
    fn balanced_run_summary() {
        let s = series(&[&[1, 1], &[2, 1], &[1, 1]], &[]);
        let (sum, found) = summarize(&s, &MonitorThresholds::default()).unwrap();
        assert_eq!(sum.total_samples, 3);
        assert_eq!(sum.max_imbalance_ratio, 2.0);
        assert!((sum.avg_imbalance_ratio - 4.0 / 3.0).abs() < 1e-9);
        assert!((sum.avg_nr_running - 7.0 / 6.0).abs() < 1e-9);
        assert_eq!(sum.stuck_count, 0);
        assert!(sum.violations.is_empty());
        assert_eq!(sum.schedstat_deltas, None, "no schedstat in the samples");
        assert_eq!(sum.event_deltas, None, "EEVDF: no sched_ext events");
        assert_eq!(
            (sum.psi_irq_full_avg10, sum.total_irq_pressure_us),
            (None, None)
        );
        assert_eq!(found.clock_samples, 3);
        let th = MonitorThresholds {
            enforce: true,
            ..Default::default()
        };
        let c = check_monitor(&th, Some(&(sum, found)));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].outcome, Outcome::Pass, "{}", c[0].message);
    }

    #[test]
    fn imbalance_counts_only_when_sustained() {
        // Ratio 5 (5 vs 1) for 3 samples, then balanced, then 5 for 5 samples.
        let mut rows: Vec<&[u32]> = vec![&[5, 1]; 3];
        rows.push(&[1, 1]);
        rows.extend(vec![&[6, 1][..]; 5]);
        let s = series(&rows, &[]);
        let (sum, _) = summarize(&s, &MonitorThresholds::default()).unwrap();
        assert_eq!(sum.max_imbalance_ratio, 6.0);
        assert_eq!(sum.violations.len(), 1, "{:?}", sum.violations);
        assert!(
            sum.violations[0].contains("5 samples in a row (~500 ms) from 400 ms, peak 6.0"),
            "{}",
            sum.violations[0]
        );
    }

    #[test]
    fn idle_cpus_are_no_ratio_blowup() {
        // min nr_running 0 counts as 1.
        let s = series(&[&[3, 0]], &[]);
        let (sum, _) = summarize(&s, &MonitorThresholds::default()).unwrap();
        assert_eq!(sum.max_imbalance_ratio, 3.0);
    }

    #[test]
    fn stuck_cpu_needs_runnable_tasks_and_a_sustained_still_clock() {
        // CPU 1's clock stands still in samples 1..=5 while it has a task: 5 intervals.
        let rows: Vec<&[u32]> = vec![&[1, 1]; 7];
        let frozen: Vec<(usize, u32)> = (1..=5).map(|i| (i, 1)).collect();
        let s = series(&rows, &frozen);
        let (sum, found) = summarize(&s, &MonitorThresholds::default()).unwrap();
        assert_eq!(sum.stuck_count, 5);
        assert_eq!(sum.violations.len(), 1, "{:?}", sum.violations);
        assert!(
            sum.violations[0].starts_with("CPU 1 "),
            "{}",
            sum.violations[0]
        );

        // Report-only by default: a Skip line, not a failure.
        let c = check_monitor(
            &MonitorThresholds::default(),
            Some(&(sum.clone(), found.clone())),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].outcome, Outcome::Skip);
        assert!(
            c[0].message.starts_with("report-only: CPU 1"),
            "{}",
            c[0].message
        );
        let enforced = MonitorThresholds {
            enforce: true,
            ..Default::default()
        };
        let c = check_monitor(&enforced, Some(&(sum, found)));
        assert_eq!(c[0].outcome, Outcome::Fail);

        // The same still clock on an idle CPU is NOHZ, not a stall.
        let idle_rows: Vec<&[u32]> = vec![&[1, 0]; 7];
        let s = series(&idle_rows, &frozen);
        let (sum, _) = summarize(&s, &MonitorThresholds::default()).unwrap();
        assert_eq!(sum.stuck_count, 0);
        assert!(sum.violations.is_empty());

        // A short stall (2 intervals) is a spike, counted but not a violation.
        let s = series(&rows, &[(2, 0), (3, 0)]);
        let (sum, _) = summarize(&s, &MonitorThresholds::default()).unwrap();
        assert_eq!(sum.stuck_count, 2);
        assert!(sum.violations.is_empty());
    }

    #[test]
    fn no_samples_is_inconclusive_only_when_enforced() {
        assert!(summarize(&[], &MonitorThresholds::default()).is_none());
        let c = check_monitor(&MonitorThresholds::default(), None);
        assert_eq!(c[0].outcome, Outcome::Skip);
        let enforced = MonitorThresholds {
            enforce: true,
            ..Default::default()
        };
        let c = check_monitor(&enforced, None);
        assert_eq!(c[0].outcome, Outcome::Inconclusive);
    }

    #[test]
    fn missing_debugfs_is_inconclusive_when_enforced() {
        let s: Vec<MonitorSample> = (0..3)
            .map(|i| MonitorSample {
                elapsed_ms: i * 100,
                cpus: vec![CpuSample {
                    cpu: 0,
                    nr_running: None,
                    rq_clock_ns: None,
                    schedstat: None,
                }],
                scx: None,
                psi_cpu: None,
                psi_irq: None,
            })
            .collect();
        let th = MonitorThresholds {
            enforce: true,
            ..Default::default()
        };
        let r = summarize(&s, &th).unwrap();
        assert_eq!(
            r.0.max_imbalance_ratio, 0.0,
            "not measured: the reference's 0.0"
        );
        assert_eq!(r.0.avg_nr_running, 0.0);
        let c = check_monitor(&th, Some(&r));
        assert_eq!(c.len(), 2, "{c:#?}");
        assert!(c.iter().all(|x| x.outcome == Outcome::Inconclusive));
    }

    #[test]
    fn counter_deltas_survive_resets_and_give_rates_per_cpu_second() {
        let st = |run_delay: u64, cpu_time: u64, pcount: u64| CpuSchedstat {
            run_delay_ns: run_delay,
            rq_cpu_time_ns: cpu_time,
            pcount,
            ..Default::default()
        };
        let scx = |n: u64| ScxSample {
            state: "enabled".into(),
            ops: Some("mysched".into()),
            events: [("SCX_EV_SELECT_CPU_FALLBACK".to_string(), n)].into(),
        };
        let mk = |t: u64, s: CpuSchedstat, ev: u64| MonitorSample {
            elapsed_ms: t,
            cpus: vec![CpuSample {
                cpu: 0,
                nr_running: Some(1),
                rq_clock_ns: Some(t * 1_000_000 + 1),
                schedstat: Some(s),
            }],
            scx: Some(scx(ev)),
            psi_cpu: Some(Psi {
                some: PsiLine {
                    avg10: t as f64 / 100.0,
                    ..Default::default()
                },
                full: None,
            }),
            psi_irq: Some(Psi {
                some: PsiLine::default(),
                full: Some(PsiLine {
                    avg10: t as f64 / 200.0,
                    total_us: 1000 + t * 3,
                    ..Default::default()
                }),
            }),
        };
        // Given out of order: the summary sorts by time.
        let s = vec![
            mk(200, st(50, 1_500_000_000, 9), 4), // reset: 4 events since
            mk(0, st(10, 0, 1), 0),
            mk(100, st(30, 1_000_000_000, 5), 10),
        ];
        let (sum, found) = summarize(&s, &MonitorThresholds::default()).unwrap();
        let d = sum.schedstat_deltas.unwrap();
        assert_eq!(d.total_run_delay, 40);
        assert_eq!(d.total_pcount, 8);
        assert_eq!(d.total_schedstat_wall_sec, 0.2);
        assert_eq!(found.delivered_cpu_ns, Some(1_500_000_000));
        let ev = sum.event_deltas.unwrap();
        assert_eq!(ev.total_fallback, 14);
        assert_eq!(ev.max_fallback_burst, 10, "the first interval");
        assert_eq!(
            ev.fallback_rate,
            14.0 / 0.2,
            "per second of the sampled window"
        );
        assert!((found.scx_event_rates["SCX_EV_SELECT_CPU_FALLBACK"] - 14.0 / 1.5).abs() < 1e-9);
        assert_eq!(sum.psi_cpu_some_avg10, Some(2.0), "last sample's PSI");
        assert_eq!(sum.psi_irq_full_avg10, Some(0.5), "mean of 0, 0.5 and 1");
        assert_eq!(sum.total_irq_pressure_us, Some(600.0));
    }
}
