//! `stats show` of one sidecar in depth: the condensed row, every derived metric with
//! its unit and direction, the monitor summary, the host's KVM counters per vCPU and
//! the cleanup time.

use std::fmt::Write as _;

use serde::Serialize;

use crate::format::num;
use crate::format::table;
use crate::metrics::{self, MetricValue};
use crate::summary::TestRow;
use ktstr_sidecar::kvm::KvmStatsTotals;
use ktstr_sidecar::monitor::MonitorSummary;
use ktstr_sidecar::payload::Polarity;
use ktstr_sidecar::read::LoadedSidecar;

/// One derived metric of the sidecar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricLine {
    pub name: String,
    pub phase: Option<u16>,
    pub value: f64,
    pub unit: String,
    pub polarity: Polarity,
}

/// The KVM counters of one vCPU (None: not published by the host kernel).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VcpuKvm {
    /// vCPU id; None for the line summing all vCPUs.
    pub vcpu: Option<usize>,
    pub exits: Option<u64>,
    pub halt_exits: Option<u64>,
    pub halt_wait_ms: Option<f64>,
    /// `halt_successful_poll / halt_attempted_poll`, percent.
    pub halt_poll_success_pct: Option<f64>,
    pub preemption_reported: Option<u64>,
    pub signal_exits: Option<u64>,
    pub hypercalls: Option<u64>,
    /// Exits per second of scenario time (when its length is known).
    pub exits_per_sec: Option<f64>,
}

/// One payload invocation: which, how it ended, how many metrics it gave.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PayloadRunLine {
    pub index: usize,
    pub payload: String,
    /// Negative: killed by that signal.
    pub exit_code: i32,
    pub metrics: usize,
}

/// Everything `stats show` says about one sidecar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SidecarDetail {
    #[serde(flatten)]
    pub row: TestRow,
    pub kernel_version: Option<String>,
    pub kernel_commit: Option<String>,
    pub project_commit: Option<String>,
    pub run_id: String,
    pub timestamp: String,
    pub run_source: Option<String>,
    pub variant_hash: String,
    /// Scenario length in seconds, when the sidecar says.
    pub scenario_secs: Option<f64>,
    pub verdict_details: Vec<String>,
    /// The primary payload (the sidecar's `payload`).
    pub payload: Option<String>,
    /// Every payload invocation, failed ones too.
    pub payload_runs: Vec<PayloadRunLine>,
    pub metrics: Vec<MetricLine>,
    pub monitor: Option<MonitorSummary>,
    /// One entry per vCPU, then the sum over all vCPUs; empty without KVM counters.
    pub kvm_per_vcpu: Vec<VcpuKvm>,
}

impl SidecarDetail {
    pub fn of(l: &LoadedSidecar) -> SidecarDetail {
        let s = &l.sidecar;
        let secs = metrics::scenario_secs(s);
        SidecarDetail {
            row: TestRow::from_loaded(l),
            kernel_version: s.kernel_version.clone(),
            kernel_commit: s.kernel_commit.clone(),
            project_commit: s.project_commit.clone(),
            run_id: s.run_id.clone(),
            timestamp: s.timestamp.clone(),
            run_source: s.run_source.map(|r| r.as_str().to_string()),
            variant_hash: s.variant_hash_hex(),
            scenario_secs: secs,
            verdict_details: s.stats.verdict_details.clone(),
            payload: s.payload.clone(),
            payload_runs: s
                .metrics
                .iter()
                .map(|m| PayloadRunLine {
                    index: m.payload_index,
                    payload: metrics::payload_name(s, m).to_string(),
                    exit_code: m.exit_code,
                    metrics: m.metrics.len(),
                })
                .collect(),
            metrics: metrics::extract(s).iter().map(line).collect(),
            monitor: s.monitor.clone(),
            kvm_per_vcpu: s
                .kvm_stats
                .as_ref()
                .map_or_else(Vec::new, |k| kvm_lines(k, secs)),
        }
    }

    /// The detail as text.
    pub fn render_text(&self) -> String {
        let r = &self.row;
        let mut o = String::new();
        let verdict = if r.expected_failure {
            format!("{} (expected failure)", r.outcome)
        } else {
            r.outcome.to_string()
        };
        let _ = writeln!(
            o,
            "{}  {verdict}  {}  {}  {}  {} vCPUs on {} host CPUs",
            r.test_name, r.topology, r.scheduler, r.work_type, r.vcpus, r.cpu_budget
        );
        let _ = writeln!(o, "file:     {}", r.file.display());
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "kernel:   {} (commit {})   project: {}",
            opt(&self.kernel_version),
            opt(&self.kernel_commit),
            opt(&self.project_commit)
        );
        let _ = writeln!(
            o,
            "run:      {} at {} ({})   variant {}",
            self.run_id,
            self.timestamp,
            opt(&self.run_source),
            self.variant_hash
        );
        let _ = writeln!(
            o,
            "cleanup:  {}",
            r.cleanup_duration_ms
                .map_or("-".into(), |ms| format!("{ms} ms"))
        );
        if !self.payload_runs.is_empty() || self.payload.is_some() {
            let _ = writeln!(
                o,
                "\npayloads: {} invocations (primary: {})",
                self.payload_runs.len(),
                self.payload.as_deref().unwrap_or("-")
            );
            let rows: Vec<Vec<String>> = self
                .payload_runs
                .iter()
                .map(|p| {
                    vec![
                        format!("#{}", p.index),
                        p.payload.clone(),
                        p.exit_code.to_string(),
                        p.metrics.to_string(),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                o.push_str(&indent(&table(
                    &["RUN", "PAYLOAD", "EXIT", "METRICS"],
                    &rows,
                    &[],
                )));
            }
        }
        if !self.verdict_details.is_empty() {
            o.push_str("\nverdict details:\n");
            for d in &self.verdict_details {
                let _ = writeln!(o, "  {d}");
            }
        }
        let whole: Vec<&MetricLine> = self.metrics.iter().filter(|m| m.phase.is_none()).collect();
        if !whole.is_empty() {
            o.push_str("\nmetrics (whole run):\n");
            let rows: Vec<Vec<String>> = whole
                .iter()
                .map(|m| {
                    vec![
                        m.name.clone(),
                        num(m.value),
                        m.unit.clone(),
                        better(m.polarity),
                    ]
                })
                .collect();
            o.push_str(&indent(&table(
                &["METRIC", "VALUE", "UNIT", "BETTER"],
                &rows,
                &[],
            )));
        }
        let phases = self.metrics.iter().filter(|m| m.phase.is_some()).count();
        if phases > 0 {
            let _ = writeln!(o, "  (+{phases} per-phase values in --json)");
        }
        if let Some(m) = &self.monitor {
            let _ = writeln!(
                o,
                "\nmonitor:  {} samples, imbalance max {} avg {}, local DSQ max {} avg {}, stuck {}, nr_running avg {}{}",
                m.total_samples,
                num(m.max_imbalance_ratio),
                num(m.avg_imbalance_ratio),
                m.max_local_dsq_depth,
                num(m.avg_local_dsq_depth),
                m.stuck_count,
                num(m.avg_nr_running),
                m.psi_cpu_some_avg10
                    .map_or(String::new(), |p| format!(", PSI cpu some {}", num(p)))
            );
            for v in &m.violations {
                let _ = writeln!(o, "  violation: {v}");
            }
        } else {
            o.push_str("\nmonitor:  none\n");
        }
        if self.kvm_per_vcpu.is_empty() {
            o.push_str("KVM:      no counters (qemu-tcg engine, or no VM ran)\n");
        } else {
            o.push_str("\nKVM counters per vCPU:\n");
            let u = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
            let f = |v: Option<f64>| v.map_or("-".into(), num);
            let rows: Vec<Vec<String>> = self
                .kvm_per_vcpu
                .iter()
                .map(|k| {
                    vec![
                        k.vcpu.map_or("all".into(), |v| v.to_string()),
                        u(k.exits),
                        f(k.exits_per_sec),
                        u(k.halt_exits),
                        f(k.halt_wait_ms),
                        f(k.halt_poll_success_pct),
                        u(k.preemption_reported),
                        u(k.signal_exits),
                        u(k.hypercalls),
                    ]
                })
                .collect();
            o.push_str(&indent(&table(
                &[
                    "VCPU",
                    "EXITS",
                    "EXITS/S",
                    "HALT_EXITS",
                    "HALT_WAIT_MS",
                    "POLL_OK%",
                    "PREEMPTED",
                    "SIGNAL",
                    "HYPERCALLS",
                ],
                &rows,
                &[],
            )));
            if self
                .kvm_per_vcpu
                .iter()
                .any(|k| k.vcpu.is_none() && k.preemption_reported.is_some_and(|p| p > 0))
            {
                o.push_str("  note: the host preempted vCPUs: timing results may be unreliable\n");
            }
        }
        o
    }
}

fn line(v: &MetricValue) -> MetricLine {
    MetricLine {
        name: v.name.to_string(),
        phase: v.phase,
        value: v.value,
        unit: v.spec.unit().to_string(),
        polarity: v.spec.polarity(),
    }
}

fn better(p: Polarity) -> String {
    match p {
        Polarity::HigherBetter => "higher".into(),
        Polarity::LowerBetter => "lower".into(),
        Polarity::TargetValue(t) => format!("near {}", num(t)),
        Polarity::Unknown => "lower?".into(),
        Polarity::Informational => "info".into(),
    }
}

fn kvm_lines(k: &KvmStatsTotals, secs: Option<f64>) -> Vec<VcpuKvm> {
    let one = |vcpu: Option<usize>, get: &dyn Fn(&str) -> Option<u64>| {
        let exits = get("exits");
        let attempted = get("halt_attempted_poll");
        VcpuKvm {
            vcpu,
            exits,
            halt_exits: get("halt_exits"),
            halt_wait_ms: get("halt_wait_ns").map(|ns| ns as f64 / 1e6),
            halt_poll_success_pct: match (get("halt_successful_poll"), attempted) {
                (Some(ok), Some(att)) if att > 0 => Some(ok as f64 * 100.0 / att as f64),
                _ => None,
            },
            preemption_reported: get("preemption_reported"),
            signal_exits: get("signal_exits"),
            hypercalls: get("hypercalls"),
            exits_per_sec: exits.zip(secs).map(|(e, s)| e as f64 / s),
        }
    };
    let mut out: Vec<VcpuKvm> = k
        .per_vcpu
        .iter()
        .enumerate()
        .map(|(i, m)| one(Some(i), &|n| m.get(n).copied()))
        .collect();
    out.push(one(None, &|n| k.sum(n)));
    out
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_sidecar::example::fully_populated;

    #[test]
    fn detail_of_a_full_sidecar() {
        let l = LoadedSidecar {
            path: "/r/x.ktstr.json".into(),
            sidecar: fully_populated(),
        };
        let d = SidecarDetail::of(&l);
        assert_eq!(d.scenario_secs, Some(11.0));
        assert_eq!(d.kvm_per_vcpu.len(), 9, "8 vCPUs and the sum");
        let v3 = &d.kvm_per_vcpu[3];
        assert_eq!(
            (v3.vcpu, v3.exits, v3.halt_exits),
            (Some(3), Some(120_003), Some(4000))
        );
        assert_eq!(v3.halt_wait_ms, Some(900.0));
        assert_eq!(v3.halt_poll_success_pct, Some(25.0));
        let all = d.kvm_per_vcpu.last().expect("sum");
        assert_eq!(all.vcpu, None);
        assert_eq!(all.exits, Some((0..8).map(|v| 120_000 + v).sum()));
        assert_eq!(all.halt_exits, Some(32_000));

        let text = d.render_text();
        assert!(
            text.starts_with("steady_two_cgroups  pass  2n2l2c2t  scx_lavd"),
            "{text}"
        );
        assert!(text.contains("cleanup:  "));
        assert!(text.contains("monitor:  110 samples, imbalance max 2.10"));
        assert!(text.contains("violation: imbalance 2.1 > 2.0"));
        let kvm_row = text
            .lines()
            .find(|l| l.split_whitespace().take(2).eq(["3", "120003"]))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            kvm_row.contains("4000") && kvm_row.contains("900"),
            "{kvm_row}"
        );
        assert!(text.contains("cgroup[cg1].p99_wake_latency_us"));
        assert!(text.contains("payload[schbench].rps"));
        let runs: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("payloads: "))
            .take(3)
            .collect();
        assert_eq!(runs.len(), 3, "{text}");
        assert!(runs[0].contains("(primary: schbench)"), "{text}");
        assert!(
            runs[2].split_whitespace().eq([
                "#0",
                "schbench",
                "0",
                &d.payload_runs[0].metrics.to_string()
            ]),
            "{text}"
        );
        assert!(text.contains("per-phase values"));
        assert!(text.lines().all(|l| !l.ends_with(' ')));

        // JSON flattens the row, so `test_name` stays at the top.
        let v = serde_json::to_value(&d).expect("json");
        assert_eq!(v["test_name"], "steady_two_cgroups");
        assert_eq!(v["kvm_per_vcpu"][0]["exits"], 120_000);
        assert!(v["metrics"].as_array().is_some_and(|m| m.len() > 30));
    }

    #[test]
    fn no_kvm_no_monitor() {
        let text = include_str!("../../ktstr-sidecar/tests/data/minimal.ktstr.json");
        let s = ktstr_sidecar::parse_sidecar(text.as_bytes(), "m".as_ref()).expect("parses");
        let d = SidecarDetail::of(&LoadedSidecar {
            path: "m".into(),
            sidecar: s,
        });
        assert!(d.kvm_per_vcpu.is_empty());
        let t = d.render_text();
        assert!(
            t.contains("monitor:  none") && t.contains("KVM:      no counters"),
            "{t}"
        );
        assert!(t.contains("work_units"));
    }
}
