//! The metric registry: every number `stats compare` and `perf-delta` derive from a
//! sidecar, with its unit, which direction is better, and how big a change must be to
//! matter (absolute and relative materiality). [`extract`] turns one sidecar into its
//! named values.
//!
//! Names: scenario-wide metrics are plain (`worst_gap_ms`, the sidecar's own field
//! names); per-instance ones carry the instance in brackets (`cgroup[cg0].work_rate`,
//! `payload[schbench].wakeup_latency.p99`, `prog[lavd_enqueue].ns_per_call`). The
//! registry lists the templates with `*` for the instance. Phase values (phase 0 =
//! baseline, k = step k) have the same names plus a phase number.
//!
//! Rates are per second of scenario time when the sidecar says how long the scenario
//! ran (its phases or step events); otherwise the plain count is used
//! (`work_units` instead of `work_rate`, `kvm.exits_per_vcpu` instead of
//! `kvm.exits_per_vcpu_sec`), which compares fairly between runs of one test.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use ktstr_sidecar::payload::{PayloadMetrics, Polarity};
use ktstr_sidecar::sidecar::SidecarResult;
use ktstr_sidecar::stats::{
    CgroupStats, PhaseCgroupStats, WORST_P99_WAKE_LATENCY_US, WORST_RUN_DELAY_US,
};

/// One registered metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MetricDef {
    /// Name, with `*` standing for a cgroup, payload, program or counter name.
    pub name: &'static str,
    /// Unit ("us", "units/s", "" when unitless).
    pub unit: &'static str,
    /// Which direction is better. `informational` never gates.
    pub polarity: Polarity,
    /// Smallest absolute change, in `unit`, that can matter.
    pub min_abs: f64,
    /// Smallest change relative to the baseline mean that can matter (0.1 = 10 %).
    pub min_rel: f64,
    /// What it measures.
    pub description: &'static str,
}

const fn def(
    name: &'static str,
    unit: &'static str,
    polarity: Polarity,
    min_abs: f64,
    min_rel: f64,
    description: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        unit,
        polarity,
        min_abs,
        min_rel,
        description,
    }
}

use Polarity::{HigherBetter as HI, Informational as INFO, LowerBetter as LO};

/// Every metric derived from sidecars. Payload metrics (`payload[*].*`) take unit and
/// polarity from the payload's own declaration and the thresholds of the
/// `payload[*].*` entry.
#[rustfmt::skip]
pub static REGISTRY: &[MetricDef] = &[
    // Scenario-wide worker numbers.
    def("work_rate", "units/s", HI, 0.0, 0.05, "work units of all workers per second of scenario time"),
    def("work_units", "units", HI, 0.0, 0.05, "work units of all workers (when the scenario length is unknown)"),
    def("worst_spread", "pp", LO, 2.0, 0.20, "largest off-CPU spread of any cgroup (max - min worker off-CPU %)"),
    def("worst_gap_ms", "ms", LO, 5.0, 0.25, "longest gap between two work checkpoints of any worker"),
    def("total_migrations", "", LO, 20.0, 0.20, "CPU migrations of all workers"),
    def("worst_migration_ratio", "1/unit", LO, 0.001, 0.20, "largest migrations per work unit of any cgroup"),
    def("worst_p99_wake_latency_us", "us", LO, 10.0, 0.10, "largest p99 wake-up latency of any cgroup"),
    def("worst_run_delay_us", "us", LO, 100.0, 0.25, "largest total run-queue delay of one worker"),
    def("ext.*", "", INFO, 0.0, 0.05, "further scenario measurements (informational unless an assertion gives a direction)"),
    // Per cgroup.
    def("cgroup[*].work_rate", "units/s", HI, 0.0, 0.05, "work units of the cgroup per second of scenario time"),
    def("cgroup[*].work_units", "units", HI, 0.0, 0.05, "work units of the cgroup (when the scenario length is unknown)"),
    def("cgroup[*].spread", "pp", LO, 2.0, 0.20, "max - min off-CPU share of the cgroup's workers"),
    def("cgroup[*].avg_off_cpu_pct", "%", LO, 1.0, 0.10, "mean share of time a worker waited off-CPU"),
    def("cgroup[*].max_gap_ms", "ms", LO, 5.0, 0.25, "longest gap between two work checkpoints of one worker"),
    def("cgroup[*].migrations", "", LO, 20.0, 0.20, "CPU migrations of the cgroup's workers"),
    def("cgroup[*].migration_ratio", "1/unit", LO, 0.001, 0.20, "migrations per work unit"),
    def("cgroup[*].median_wake_latency_us", "us", LO, 5.0, 0.10, "median wake-up latency"),
    def("cgroup[*].p99_wake_latency_us", "us", LO, 10.0, 0.10, "99th percentile wake-up latency"),
    def("cgroup[*].wake_latency_cv", "", LO, 0.05, 0.10, "coefficient of variation of wake-up latency"),
    def("cgroup[*].median_timer_latency_us", "us", LO, 5.0, 0.10, "median timer overshoot"),
    def("cgroup[*].p99_timer_latency_us", "us", LO, 10.0, 0.10, "99th percentile timer overshoot"),
    def("cgroup[*].p999_timer_latency_us", "us", LO, 50.0, 0.20, "99.9th percentile timer overshoot"),
    def("cgroup[*].worst_timer_latency_us", "us", LO, 100.0, 0.25, "largest timer overshoot"),
    def("cgroup[*].mean_run_delay_us", "us", LO, 100.0, 0.10, "mean over workers of each worker's total run-queue delay"),
    def("cgroup[*].worst_run_delay_us", "us", LO, 100.0, 0.25, "largest total run-queue delay of one worker"),
    def("cgroup[*].page_locality", "fraction", HI, 0.02, 0.02, "share of pages on the NUMA nodes of the cpuset"),
    def("cgroup[*].cross_node_migration_ratio", "fraction", LO, 0.01, 0.10, "share of pages that migrated across NUMA nodes"),
    def("cgroup[*].ext.*", "", INFO, 0.0, 0.05, "further cgroup measurements (informational unless an assertion gives a direction)"),
    // Phases only.
    def("phase.*", "", INFO, 0.0, 0.05, "further phase measurements (informational unless an assertion gives a direction)"),
    // Monitor.
    def("monitor.max_imbalance_ratio", "", LO, 0.5, 0.20, "largest max/min nr_running over CPUs in one sample"),
    def("monitor.avg_imbalance_ratio", "", LO, 0.1, 0.10, "mean imbalance ratio over samples"),
    def("monitor.avg_nr_running", "tasks", INFO, 0.0, 0.10, "mean runnable tasks per CPU"),
    def("monitor.max_local_dsq_depth", "tasks", LO, 2.0, 0.25, "deepest local dispatch queue"),
    def("monitor.avg_local_dsq_depth", "tasks", LO, 0.5, 0.25, "mean local dispatch queue depth"),
    def("monitor.stuck_count", "samples", LO, 0.0, 0.0, "samples in which a busy CPU made no progress"),
    def("monitor.psi_cpu_some_avg10", "%", LO, 1.0, 0.20, "CPU pressure (some, avg10) at the end of the run"),
    def("monitor.run_delay_per_sched_us", "us", LO, 5.0, 0.10, "schedstat run delay per task scheduling, all CPUs"),
    def("monitor.scx_event[*]", "events", LO, 10.0, 0.25, "sched_ext event counter delta (SCX_EV_*)"),
    def("prog[*].ns_per_call", "ns", LO, 20.0, 0.10, "mean run time of a scheduler BPF program per call"),
    def("verifier[*].verified_insns", "insns", LO, 1000.0, 0.05, "instructions the BPF verifier processed"),
    // Host KVM counters.
    def("kvm.exits_per_vcpu_sec", "1/s", LO, 100.0, 0.10, "KVM exits per vCPU per second of scenario time"),
    def("kvm.exits_per_vcpu", "", LO, 1000.0, 0.10, "KVM exits per vCPU (when the scenario length is unknown)"),
    def("kvm.halt_exits_per_vcpu_sec", "1/s", LO, 20.0, 0.20, "halt exits per vCPU per second of scenario time"),
    def("kvm.halt_exits_per_vcpu", "", LO, 200.0, 0.20, "halt exits per vCPU (when the scenario length is unknown)"),
    def("kvm.preemptions", "", INFO, 0.0, 0.0, "times the host preempted a vCPU (timing less reliable when > 0)"),
    // Teardown.
    def("cleanup_duration_ms", "ms", LO, 50.0, 0.25, "time from guest exit to the end of teardown"),
    // Payloads: polarity and unit come from the payload.
    def("payload[*].*", "", Polarity::Unknown, 0.0, 0.05, "a payload metric, with the payload's own polarity and unit"),
];

/// The registry entry called `template` (e.g. `cgroup[*].work_rate`).
pub fn lookup(template: &str) -> Option<&'static MetricDef> {
    REGISTRY.iter().find(|d| d.name == template)
}

/// `stats metrics` as text: one row per registry entry.
pub fn render_registry() -> String {
    let rows: Vec<Vec<String>> = REGISTRY
        .iter()
        .map(|d| {
            vec![
                d.name.to_string(),
                d.unit.to_string(),
                match d.polarity {
                    Polarity::HigherBetter => "higher".into(),
                    Polarity::LowerBetter => "lower".into(),
                    Polarity::Informational => "info".into(),
                    Polarity::Unknown => "payload".into(),
                    Polarity::TargetValue(t) => format!("near {t}"),
                },
                crate::format::num(d.min_abs),
                format!("{}%", crate::format::num(d.min_rel * 100.0)),
                d.description.to_string(),
            ]
        })
        .collect();
    let header = ["METRIC", "UNIT", "BETTER", "MIN_ABS", "MIN_REL", "WHAT"];
    crate::format::table(&header, &rows, &[])
}

fn reg(template: &str) -> &'static MetricDef {
    static INDEX: OnceLock<HashMap<&'static str, &'static MetricDef>> = OnceLock::new();
    let index = INDEX.get_or_init(|| REGISTRY.iter().map(|d| (d.name, d)).collect());
    // Every template used by `extract` is in REGISTRY; the registry test checks it.
    index
        .get(template)
        .copied()
        .unwrap_or(&REGISTRY[REGISTRY.len() - 1])
}

/// How a value is judged: the registry entry, or a payload's declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    pub def: &'static MetricDef,
    /// Overrides of a payload metric: its declared unit and polarity.
    pub declared: Option<Arc<(String, Polarity)>>,
}

impl MetricSpec {
    fn registered(template: &str) -> MetricSpec {
        MetricSpec {
            def: reg(template),
            declared: None,
        }
    }

    pub fn unit(&self) -> &str {
        self.declared
            .as_ref()
            .map_or(self.def.unit, |d| d.0.as_str())
    }

    pub fn polarity(&self) -> Polarity {
        self.declared.as_ref().map_or(self.def.polarity, |d| d.1)
    }
}

/// One number derived from one sidecar.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    /// Concrete name (`cgroup[cg0].p99_wake_latency_us`).
    /// Shared between values of the same name (see [`intern`]).
    pub name: Arc<str>,
    /// Phase (0 = baseline, k = step k); None for the whole run.
    pub phase: Option<u16>,
    pub value: f64,
    pub spec: MetricSpec,
}

impl MetricValue {
    /// The part of the name after the instance: `p99_wake_latency_us` for
    /// `cgroup[cg0].p99_wake_latency_us`, `wakeup_latency.p99` for a payload metric;
    /// the whole name for scenario-wide metrics.
    pub fn leaf(&self) -> &str {
        leaf(&self.name)
    }
}

/// See [`MetricValue::leaf`].
pub fn leaf(name: &str) -> &str {
    match name.find("].") {
        Some(i) if name.contains('[') => &name[i + 2..],
        _ => name,
    }
}

/// How long the scenario ran, in seconds: the end of its last phase or step event.
/// None when the sidecar does not say.
pub fn scenario_secs(s: &SidecarResult) -> Option<f64> {
    let phase_end = s.stats.phases.iter().map(|p| p.end_ms).max();
    let event_end = s.stimulus_events.iter().map(|e| e.elapsed_ms).max();
    let ms = phase_end.max(event_end)?;
    (ms > 0).then(|| ms as f64 / 1000.0)
}

/// Every metric of a sidecar, whole-run values first, then per phase. Values that were
/// not measured (null in the sidecar) are left out; NaN values too.
pub fn extract(s: &SidecarResult) -> Vec<MetricValue> {
    extract_with(s, true)
}

/// [`extract`], with the per-phase values only when `phases`.
pub fn extract_with(s: &SidecarResult, phases: bool) -> Vec<MetricValue> {
    let mut out = Out::default();
    let secs = scenario_secs(s);
    let st = &s.stats;

    match secs {
        Some(secs) => out.stat("work_rate", st.total_iterations as f64 / secs),
        None => out.stat("work_units", st.total_iterations as f64),
    }
    if st.cgroups.iter().any(|c| c.spread.is_some()) {
        out.stat("worst_spread", st.worst_spread);
    }
    if !st.cgroups.is_empty() {
        out.stat("worst_gap_ms", st.worst_gap_ms as f64);
        out.stat("total_migrations", st.total_migrations as f64);
        out.stat("worst_migration_ratio", st.worst_migration_ratio);
    }
    out.stat_opt("worst_p99_wake_latency_us", st.worst_p99_wake_latency_us());
    out.stat_opt("worst_run_delay_us", st.worst_run_delay_us());
    for (k, v) in &st.ext_metrics {
        if k != WORST_P99_WAKE_LATENCY_US && k != WORST_RUN_DELAY_US {
            out.push("ext.*", intern(format_args!("ext.{k}")), *v);
        }
    }
    for cg in &st.cgroups {
        cgroup_metrics(&mut out, cg, secs);
    }

    if let Some(m) = &s.monitor {
        out.stat("monitor.max_imbalance_ratio", m.max_imbalance_ratio);
        out.stat("monitor.avg_imbalance_ratio", m.avg_imbalance_ratio);
        out.stat("monitor.avg_nr_running", m.avg_nr_running);
        out.stat("monitor.max_local_dsq_depth", m.max_local_dsq_depth as f64);
        out.stat("monitor.avg_local_dsq_depth", m.avg_local_dsq_depth);
        out.stat("monitor.stuck_count", m.stuck_count as f64);
        out.stat_opt("monitor.psi_cpu_some_avg10", m.psi_cpu_some_avg10);
        if let Some(ss) = m.schedstat_deltas.as_ref().filter(|ss| ss.total_pcount > 0) {
            out.stat(
                "monitor.run_delay_per_sched_us",
                ss.total_run_delay as f64 / 1000.0 / ss.total_pcount as f64,
            );
        }
        for (k, v) in m.event_deltas.iter().flat_map(|d| d.counters()) {
            out.push(
                "monitor.scx_event[*]",
                intern(format_args!("monitor.scx_event[{k}]")),
                v as f64,
            );
        }
        for p in m.prog_stats_deltas.iter().flatten() {
            if let Some(ns) = p.per_call() {
                out.push(
                    "prog[*].ns_per_call",
                    intern(format_args!("prog[{}].ns_per_call", p.name)),
                    ns,
                );
            }
        }
    }
    for v in &s.verifier_stats {
        out.push(
            "verifier[*].verified_insns",
            intern(format_args!("verifier[{}].verified_insns", v.name)),
            v.verified_insns as f64,
        );
    }

    if let Some(k) = &s.kvm_stats {
        let vcpus = k.per_vcpu.iter().filter(|m| !m.is_empty()).count();
        if vcpus > 0 {
            for (counter, rate_name, count_name) in [
                ("exits", "kvm.exits_per_vcpu_sec", "kvm.exits_per_vcpu"),
                (
                    "halt_exits",
                    "kvm.halt_exits_per_vcpu_sec",
                    "kvm.halt_exits_per_vcpu",
                ),
            ] {
                if let Some(avg) = k.avg(counter) {
                    match secs {
                        Some(secs) => out.stat(rate_name, avg / secs),
                        None => out.stat(count_name, avg),
                    }
                }
            }
            if let Some(p) = k.sum("preemption_reported") {
                out.stat("kvm.preemptions", p as f64);
            }
        }
    }
    if let Some(ms) = s.cleanup_duration_ms {
        out.stat("cleanup_duration_ms", ms as f64);
    }

    payload_metrics(&mut out, s);

    if !phases {
        return out.values;
    }
    // Per phase.
    for p in &st.phases {
        out.phase = Some(p.step_index);
        let secs = (p.duration_ms() > 0).then(|| p.duration_ms() as f64 / 1000.0);
        if let Some(n) = p.total_iterations() {
            match secs {
                Some(secs) => out.stat("work_rate", n as f64 / secs),
                None => out.stat("work_units", n as f64),
            }
        }
        for (name, cg) in &p.per_cgroup {
            phase_cgroup_metrics(&mut out, name, cg, secs);
        }
        for (k, v) in &p.metrics {
            out.push("phase.*", intern(format_args!("phase.{k}")), *v);
        }
    }
    out.values
}

/// A cgroup's work per second when the duration is known, else its work units.
fn work_rate_or_units(
    out: &mut Out,
    n: &dyn Fn(&str) -> Arc<str>,
    total_iterations: u64,
    secs: Option<f64>,
) {
    match secs {
        Some(secs) => out.push(
            "cgroup[*].work_rate",
            n("work_rate"),
            total_iterations as f64 / secs,
        ),
        None => out.push(
            "cgroup[*].work_units",
            n("work_units"),
            total_iterations as f64,
        ),
    }
}

/// A phase's per-cgroup numbers: its rate, and its derived metrics under the cgroup
/// template of the same leaf (`cgroup[*].ext.*` for a leaf without one).
fn phase_cgroup_metrics(out: &mut Out, name: &str, cg: &PhaseCgroupStats, secs: Option<f64>) {
    let n = |leaf: &str| intern(format_args!("cgroup[{name}].{leaf}"));
    work_rate_or_units(out, &n, cg.total_iterations, secs);
    for (k, v) in &cg.metrics {
        let template = format!("cgroup[*].{k}");
        match lookup(&template) {
            Some(d) if !d.name.contains(".ext.") && k != "work_rate" && k != "work_units" => {
                out.push(d.name, n(k), *v)
            }
            _ => out.push(
                "cgroup[*].ext.*",
                intern(format_args!("cgroup[{name}].ext.{k}")),
                *v,
            ),
        }
    }
}

fn cgroup_metrics(out: &mut Out, cg: &CgroupStats, secs: Option<f64>) {
    let n = |leaf: &str| intern(format_args!("cgroup[{}].{leaf}", cg.cgroup_name));
    work_rate_or_units(out, &n, cg.total_iterations, secs);
    out.opt("cgroup[*].spread", n("spread"), cg.spread);
    out.opt(
        "cgroup[*].avg_off_cpu_pct",
        n("avg_off_cpu_pct"),
        cg.avg_off_cpu_pct,
    );
    out.push(
        "cgroup[*].max_gap_ms",
        n("max_gap_ms"),
        cg.max_gap_ms as f64,
    );
    out.push(
        "cgroup[*].migrations",
        n("migrations"),
        cg.total_migrations as f64,
    );
    out.push(
        "cgroup[*].migration_ratio",
        n("migration_ratio"),
        cg.migration_ratio,
    );
    // A group that was not measured is 0.0 in the file: not a value.
    let numa = cg.page_locality > 0.0;
    for (measured, leaf, v) in [
        (
            cg.wake_measured,
            "median_wake_latency_us",
            cg.median_wake_latency_us,
        ),
        (
            cg.wake_measured,
            "p99_wake_latency_us",
            cg.p99_wake_latency_us,
        ),
        (cg.wake_measured, "wake_latency_cv", cg.wake_latency_cv),
        (
            cg.timer_measured,
            "median_timer_latency_us",
            cg.median_timer_latency_us,
        ),
        (
            cg.timer_measured,
            "p99_timer_latency_us",
            cg.p99_timer_latency_us,
        ),
        (
            cg.timer_measured,
            "p999_timer_latency_us",
            cg.p999_timer_latency_us,
        ),
        (
            cg.timer_measured,
            "worst_timer_latency_us",
            cg.worst_timer_latency_us,
        ),
        (
            cg.run_delay_measured,
            "mean_run_delay_us",
            cg.mean_run_delay_us,
        ),
        (
            cg.run_delay_measured,
            "worst_run_delay_us",
            cg.worst_run_delay_us,
        ),
        (numa, "page_locality", cg.page_locality),
        (
            numa,
            "cross_node_migration_ratio",
            cg.cross_node_migration_ratio,
        ),
    ] {
        if measured {
            out.push(reg_cgroup(leaf), n(leaf), v);
        }
    }
    for (k, v) in &cg.ext_metrics {
        out.push(
            "cgroup[*].ext.*",
            intern(format_args!("cgroup[{}].ext.{k}", cg.cgroup_name)),
            *v,
        );
    }
}

/// The registry template `cgroup[*].{leaf}` (every leaf passed here is registered).
fn reg_cgroup(leaf: &str) -> &'static str {
    reg(&format!("cgroup[*].{leaf}")).name
}

/// The name a payload invocation's metrics are filed under: its own name, else (a file
/// whose writer does not record it) the sidecar's primary payload, else `payload`.
pub fn payload_name<'a>(s: &'a SidecarResult, pm: &'a PayloadMetrics) -> &'a str {
    if !pm.payload.is_empty() {
        &pm.payload
    } else {
        s.payload.as_deref().unwrap_or("payload")
    }
}

fn payload_metrics(out: &mut Out, s: &SidecarResult) {
    for pm in &s.metrics {
        let name = payload_name(s, pm);
        let repeated = s
            .metrics
            .iter()
            .filter(|o| payload_name(s, o) == name)
            .count()
            > 1;
        let instance = if repeated {
            format!("{name}#{}", pm.payload_index)
        } else {
            name.to_string()
        };
        for m in &pm.metrics {
            if !m.value.is_finite() {
                continue;
            }
            out.values.push(MetricValue {
                name: intern(format_args!("payload[{instance}].{}", m.name)),
                phase: out.phase,
                value: m.value,
                spec: MetricSpec {
                    def: reg("payload[*].*"),
                    declared: Some(Arc::new((m.unit.clone(), m.polarity))),
                },
            });
        }
    }
}

#[derive(Default)]
struct Out {
    values: Vec<MetricValue>,
    phase: Option<u16>,
}

impl Out {
    fn push(&mut self, template: &str, name: Arc<str>, value: f64) {
        if value.is_finite() {
            if self.values.capacity() == 0 {
                self.values.reserve(64);
            }
            self.values.push(MetricValue {
                name,
                phase: self.phase,
                value,
                spec: MetricSpec::registered(template),
            });
        }
    }

    fn opt(&mut self, template: &str, name: Arc<str>, value: Option<f64>) {
        if let Some(v) = value {
            self.push(template, name, v);
        }
    }

    /// A scenario-wide metric: its name is its template.
    fn stat(&mut self, name: &'static str, value: f64) {
        if value.is_finite() {
            self.push(name, intern(format_args!("{name}")), value);
        }
    }

    fn stat_opt(&mut self, name: &'static str, value: Option<f64>) {
        if let Some(v) = value {
            self.stat(name, v);
        }
    }
}

thread_local! {
    static NAMES: RefCell<Names> = RefCell::new(Names::default());
}

#[derive(Default)]
struct Names {
    buf: String,
    set: HashSet<Arc<str>>,
}

/// The shared copy of a metric name: formatted into a reused buffer and looked up, so
/// extracting the same metrics from thousands of sidecars allocates each name once
/// per thread instead of once per value. The set keeps every distinct name the
/// thread has seen (a few per metric and cgroup: small).
pub fn intern(args: fmt::Arguments<'_>) -> Arc<str> {
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        let Names { buf, set } = &mut *names;
        buf.clear();
        let _ = buf.write_fmt(args);
        if let Some(name) = set.get(buf.as_str()) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(buf.as_str());
        set.insert(name.clone());
        name
    })
}

/// Whether `pattern` (with `*` matching any run of characters) matches a metric: its
/// full name, or for a payload metric also the payload's own name for it (so `rps`
/// names `payload[schbench].rps`, as a test's `perf_delta_assertions` spell it).
/// Per-instance metrics are named in full: `cgroup[*].p99_wake_latency_us`, and
/// `work_rate` is the scenario-wide rate only.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    glob(pattern, name) || (name.starts_with("payload[") && glob(pattern, leaf(name)))
}

/// `*` matches any run of characters (including none); everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    // Bytes, not chars: UTF-8 is self-synchronising, so a literal can only match at a
    // character boundary and the result is the same.
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_sidecar::example::fully_populated;

    #[test]
    fn registry_is_well_formed() {
        let mut names: Vec<&str> = REGISTRY.iter().map(|d| d.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate registry names");
        for d in REGISTRY {
            assert!(d.min_abs >= 0.0 && d.min_rel >= 0.0, "{}", d.name);
            assert!(!d.description.is_empty(), "{}", d.name);
        }
        assert_eq!(REGISTRY[REGISTRY.len() - 1].name, "payload[*].*");
    }

    #[test]
    fn every_extracted_value_has_its_own_registry_entry() {
        let s = fully_populated();
        let values = extract(&s);
        for v in &values {
            let template = v.spec.def.name;
            let matches = glob(template, &v.name);
            assert!(matches, "{} is not an instance of {template}", v.name);
        }
        let names: Vec<String> = values
            .iter()
            .filter(|v| v.phase.is_none())
            .map(|v| v.name.to_string())
            .collect();
        for want in [
            "work_rate",
            "worst_spread",
            "worst_gap_ms",
            "total_migrations",
            "worst_p99_wake_latency_us",
            "worst_run_delay_us",
            "ext.throughput_cv",
            "cgroup[cg0].work_rate",
            "cgroup[cg1].p99_wake_latency_us",
            "cgroup[cg0].mean_run_delay_us",
            "cgroup[cg0].migrations",
            "cgroup[cg0].ext.yield_count",
            "monitor.max_imbalance_ratio",
            "monitor.stuck_count",
            "monitor.run_delay_per_sched_us",
            "monitor.scx_event[SCX_EV_SELECT_CPU_FALLBACK]",
            "prog[lavd_enqueue].ns_per_call",
            "kvm.exits_per_vcpu_sec",
            "kvm.halt_exits_per_vcpu_sec",
            "kvm.preemptions",
            "cleanup_duration_ms",
            "payload[schbench].wakeup_latency.p99",
            "payload[schbench].rps",
        ] {
            assert!(names.iter().any(|n| n == want), "missing {want}: {names:?}");
        }
        // No name twice within one phase.
        let mut keys: Vec<(Option<u16>, &str)> =
            values.iter().map(|v| (v.phase, v.name.as_ref())).collect();
        keys.sort_unstable();
        let n = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), n);
    }

    #[test]
    fn values_and_units_are_derived_correctly() {
        let s = fully_populated();
        let values = extract(&s);
        let get = |name: &str, phase: Option<u16>| {
            values
                .iter()
                .find(|v| &*v.name == name && v.phase == phase)
                .unwrap_or_else(|| panic!("{name} {phase:?}"))
        };
        // The scenario ran 11 s (last step ended at 11 000 ms).
        assert_eq!(scenario_secs(&s), Some(11.0));
        assert_eq!(get("work_rate", None).value, 78_500.0 / 11.0);
        assert_eq!(get("cgroup[cg0].work_rate", None).value, 40_000.0 / 11.0);
        // 8 vCPUs with 120 000..120 007 exits: mean 120 003.5 per vCPU, over 11 s.
        assert_eq!(get("kvm.exits_per_vcpu_sec", None).value, 120_003.5 / 11.0);
        assert_eq!(
            get("kvm.halt_exits_per_vcpu_sec", None).value,
            4000.0 / 11.0
        );
        assert_eq!(get("prog[lavd_enqueue].ns_per_call", None).value, 300.0);
        assert_eq!(
            get("monitor.run_delay_per_sched_us", None).value,
            52_000.0 / 90_000.0
        );
        let p99 = get("payload[schbench].wakeup_latency.p99", None);
        assert_eq!(
            (p99.spec.unit(), p99.spec.polarity()),
            ("us", Polarity::LowerBetter)
        );
        let util = get("payload[schbench].util_pct", None);
        assert_eq!(util.spec.polarity(), Polarity::TargetValue(75.0));
        assert_eq!(
            get("worst_gap_ms", None).spec.polarity(),
            Polarity::LowerBetter
        );
        assert_eq!(get("work_rate", None).spec.unit(), "units/s");
        // Phases: step 1 ran 10 s with 71 500 units.
        assert_eq!(get("work_rate", Some(1)).value, 7150.0);
        assert_eq!(get("cgroup[cg1].work_rate", Some(1)).value, 3850.0);
        assert_eq!(get("phase.iterations_per_sec", Some(0)).value, 7000.0);
        assert!(values
            .iter()
            .all(|v| v.phase.is_none() || !v.name.starts_with("kvm.")));
    }

    #[test]
    fn unknown_length_falls_back_to_counts_and_nulls_are_left_out() {
        let text = include_str!("../../ktstr-sidecar/tests/data/minimal.ktstr.json");
        let s = ktstr_sidecar::parse_sidecar(text.as_bytes(), "m".as_ref()).expect("parses");
        let values = extract(&s);
        let names: Vec<&str> = values.iter().map(|v| v.name.as_ref()).collect();
        assert!(names.contains(&"work_units"), "{names:?}");
        assert!(names.contains(&"cgroup[cg0].work_units"));
        assert!(!names.iter().any(|n| n.contains("work_rate")));
        assert!(
            !names.contains(&"worst_spread"),
            "null spread is not a value"
        );
        assert!(!names
            .iter()
            .any(|n| n.starts_with("kvm.") || n.starts_with("monitor.")));
        assert!(!names.contains(&"cleanup_duration_ms"));
        let mut s2 = s.clone();
        s2.kvm_stats = Some(ktstr_sidecar::KvmStatsTotals {
            per_vcpu: vec![[("exits".to_string(), 500)].into()],
        });
        let v2 = extract(&s2);
        let e = v2
            .iter()
            .find(|v| &*v.name == "kvm.exits_per_vcpu")
            .expect("count fallback");
        assert_eq!(e.value, 500.0);
    }

    #[test]
    fn payload_run_twice_gets_an_index() {
        let mut s = fully_populated();
        let mut second = s.metrics[0].clone();
        second.payload_index = 1;
        s.metrics.push(second);
        let names: Vec<String> = extract(&s)
            .into_iter()
            .map(|v| v.name.to_string())
            .collect();
        assert!(names.iter().any(|n| n == "payload[schbench#0].rps"));
        assert!(names.iter().any(|n| n == "payload[schbench#1].rps"));
    }

    #[test]
    fn names_and_globs() {
        assert_eq!(
            leaf("cgroup[cg0].p99_wake_latency_us"),
            "p99_wake_latency_us"
        );
        assert_eq!(leaf("payload[fio].jobs.0.read.iops"), "jobs.0.read.iops");
        assert_eq!(leaf("worst_gap_ms"), "worst_gap_ms");
        assert_eq!(leaf("monitor.scx_event[X]"), "monitor.scx_event[X]");
        assert!(!name_matches(
            "p99_wake_latency_us",
            "cgroup[cg0].p99_wake_latency_us"
        ));
        assert!(!name_matches("work_rate", "cgroup[cg0].work_rate"));
        assert!(name_matches("jobs.*.iops", "payload[fio].jobs.0.read.iops"));
        assert!(name_matches("cgroup[*].work_rate", "cgroup[cg1].work_rate"));
        assert!(name_matches("*wake*", "cgroup[cg1].median_wake_latency_us"));
        assert!(name_matches("rps", "payload[schbench].rps"));
        assert!(!name_matches("work_rate", "work_units"));
        assert!(glob("a*b*c", "abbbc") && glob("*", "") && !glob("a*d", "abc"));
        assert!(glob("cgroup[ü*].x", "cgroup[üñ].x") && !glob("*ñ", "cgroup[ü]"));
        assert!(lookup("cgroup[*].spread").is_some() && lookup("nope").is_none());
    }
}
