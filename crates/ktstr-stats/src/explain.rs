//! `cargo ktstr stats explain`: for one sidecar, every optional field as set or null,
//! and for each null whether that is expected for this run or something to fix (and
//! how); plus the variant hash and the file name the sidecar should have.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use ktstr_sidecar::host::Engine;
use ktstr_sidecar::sidecar::SidecarResult;
use ktstr_sidecar::stats::CGROUP_MEASURED;
use ktstr_sidecar::verdict::Outcome;

/// Top-level optional keys, in file order.
pub const TOP_OPTIONS: &[&str] = &[
    "scheduler_commit",
    "resolve_source",
    "project_commit",
    "payload",
    "monitor",
    "kvm_stats",
    "kernel_version",
    "kernel_commit",
    "host",
    "cleanup_duration_ms",
    "run_source",
];
/// Run-level measurements of `stats` kept as `ext_metrics` entries (absent when not
/// measured).
pub const STATS_EXT_OPTIONS: &[&str] = &[
    ktstr_sidecar::stats::WORST_P99_WAKE_LATENCY_US,
    ktstr_sidecar::stats::WORST_RUN_DELAY_US,
];
/// Optional keys of each `stats.cgroups[]` entry.
pub const CGROUP_OPTIONS: &[&str] = &[
    "avg_off_cpu_pct",
    "min_off_cpu_pct",
    "max_off_cpu_pct",
    "spread",
    "taobench_whole",
];
/// Optional keys of `monitor`.
pub const MONITOR_OPTIONS: &[&str] = &[
    "avg_irq_util",
    "max_avg_irq_util",
    "psi_irq_full_avg10",
    "total_irq_pressure_us",
    "event_deltas",
    "schedstat_deltas",
    "sched_domain_lb",
    "prog_stats_deltas",
    "bpf_map_fields",
    "psi_cpu_some_avg10",
];
/// Optional keys of `host` (`cpufreq_governor` counts as null when empty).
pub const HOST_OPTIONS: &[&str] = &[
    "cpu_model",
    "cpu_vendor",
    "total_memory_kib",
    "hugepages_total",
    "hugepages_free",
    "hugepages_size_kib",
    "thp_enabled",
    "thp_defrag",
    "sched_tunables",
    "online_cpus",
    "numa_nodes",
    "cpufreq_governor",
    "kernel_name",
    "kernel_release",
    "arch",
    "kernel_cmdline",
    "task_delayacct",
    "config_task_xacct",
    "heap_state",
    "kvm",
    "engine",
    "start",
];

/// The explanation of one sidecar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The file explained, when it came from one.
    pub file: Option<PathBuf>,
    pub test_name: String,
    pub outcome: Outcome,
    pub expected_failure: bool,
    /// 16 lower-case hex digits.
    pub variant_hash: String,
    /// The canonical bytes the hash is computed over.
    pub variant_key: String,
    /// `{test_name}-{variant_hash}.ktstr.json`.
    pub expected_file_name: String,
    /// False when the file's actual name differs from `expected_file_name` (renamed or
    /// edited by hand after writing: tools that find sidecars by name will miss it).
    pub file_name_matches: bool,
    /// Whether the file as written is read by the reference's own reader
    /// ([`ktstr_sidecar::conformance`]): None without a file, else its rejections (empty:
    /// accepted).
    pub reference_rejections: Option<Vec<String>>,
    /// Every optional field, in file order.
    pub fields: Vec<FieldReport>,
}

/// One optional field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldReport {
    /// Dotted path (`kernel_commit`, `host.cpu_model`, `stats.cgroups[cg0].spread`).
    pub field: String,
    /// The value as stored; null when unset or not measured (a `0.0` whose
    /// `*_measured` flag is false, an absent `ext_metrics` entry, an empty map).
    pub value: Value,
    /// For a null: whether that is expected here or something to fix.
    pub class: Option<NullClass>,
    /// For a null: why it is null, and how to get a value if one is wanted.
    pub reason: Option<String>,
}

impl FieldReport {
    pub fn is_set(&self) -> bool {
        !self.value.is_null()
    }
}

/// Whether a null is normal for the run or points at something to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NullClass {
    Expected,
    Actionable,
}

impl NullClass {
    pub fn as_str(self) -> &'static str {
        match self {
            NullClass::Expected => "expected",
            NullClass::Actionable => "actionable",
        }
    }
}

/// Explain `sidecar`; `file` is where it was read from (for the file-name check).
pub fn explain(sidecar: &SidecarResult, file: Option<&Path>) -> Explanation {
    let expected_file_name = sidecar.file_name();
    let file_name_matches = file
        .and_then(|f| f.file_name())
        .is_none_or(|n| n.to_string_lossy() == expected_file_name);
    // Serialising our own types cannot fail; an empty object only loses the field list.
    let value = serde_json::to_value(sidecar).unwrap_or(Value::Null);
    let empty = Map::new();
    let top = value.as_object().unwrap_or(&empty);

    let mut fields = Vec::new();
    for &key in TOP_OPTIONS {
        push(&mut fields, key.to_string(), top.get(key), || {
            top_reason(key, sidecar)
        });
        if key == "monitor" {
            nested(&mut fields, top, "monitor", MONITOR_OPTIONS, |k| {
                monitor_reason(k, sidecar)
            });
        }
        if key == "host" {
            nested(&mut fields, top, "host", HOST_OPTIONS, host_reason);
        }
    }
    let stats = top
        .get("stats")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let one_node = sidecar.topology.starts_with("1n");
    let ext = stats.get("ext_metrics").and_then(Value::as_object);
    for &key in STATS_EXT_OPTIONS {
        push(
            &mut fields,
            format!("stats.ext_metrics.{key}"),
            ext.and_then(|e| e.get(key)),
            || measurement_reason(key, one_node),
        );
    }
    let cgroups = stats.get("cgroups").and_then(Value::as_array);
    for cg in cgroups.into_iter().flatten().filter_map(Value::as_object) {
        let name = cg.get("cgroup_name").and_then(Value::as_str).unwrap_or("?");
        for &key in CGROUP_OPTIONS {
            push(
                &mut fields,
                format!("stats.cgroups[{name}].{key}"),
                cg.get(key),
                || measurement_reason(key, one_node),
            );
        }
        for &(flag, keys) in CGROUP_MEASURED {
            let measured = match cg.get(flag) {
                Some(Value::Bool(b)) => *b,
                Some(v) => v.as_f64().is_some_and(|x| x > 0.0),
                None => false,
            };
            for &key in keys {
                let value = cg.get(key).filter(|_| measured);
                push(
                    &mut fields,
                    format!("stats.cgroups[{name}].{key}"),
                    value,
                    || measurement_reason(key, one_node),
                );
            }
        }
    }
    let reference_rejections = file.map(|f| {
        match ktstr_sidecar::fsread::read_regular(f, ktstr_sidecar::fsread::MAX_SIDECAR_BYTES) {
            Ok(bytes) => {
                match ktstr_sidecar::conformance::check_text(&String::from_utf8_lossy(&bytes)) {
                    Ok(r) => r.rejections().map(ToString::to_string).collect(),
                    Err(e) => vec![format!("not JSON: {e}")],
                }
            }
            Err(e) => vec![format!("cannot read {}: {e}", f.display())],
        }
    });

    Explanation {
        file: file.map(Path::to_path_buf),
        test_name: sidecar.test_name.clone(),
        outcome: sidecar.outcome(),
        expected_failure: sidecar.expected_failure,
        variant_hash: sidecar.variant_hash_hex(),
        variant_key: sidecar.variant_key().canonical_json(),
        expected_file_name,
        file_name_matches,
        reference_rejections,
        fields,
    }
}

fn push(
    out: &mut Vec<FieldReport>,
    field: String,
    value: Option<&Value>,
    reason: impl FnOnce() -> (NullClass, String),
) {
    let value = value.cloned().unwrap_or(Value::Null);
    let (class, reason) = if value.is_null() {
        let (c, r) = reason();
        (Some(c), Some(r))
    } else {
        (None, None)
    };
    out.push(FieldReport {
        field,
        value,
        class,
        reason,
    });
}

/// Sub-fields of an optional object, only when the object itself is set.
fn nested(
    out: &mut Vec<FieldReport>,
    top: &Map<String, Value>,
    key: &str,
    options: &[&str],
    reason: impl Fn(&str) -> (NullClass, String),
) {
    let Some(obj) = top.get(key).and_then(Value::as_object) else {
        return;
    };
    for &sub in options {
        let value = obj
            .get(sub)
            .filter(|v| v.as_object().is_none_or(|m| !m.is_empty()));
        push(out, format!("{key}.{sub}"), value, || reason(sub));
    }
}

fn expected(s: impl Into<String>) -> (NullClass, String) {
    (NullClass::Expected, s.into())
}

fn actionable(s: impl Into<String>) -> (NullClass, String) {
    (NullClass::Actionable, s.into())
}

fn top_reason(key: &str, s: &SidecarResult) -> (NullClass, String) {
    let skipped = s.is_skip();
    let engine = s.host.as_ref().and_then(|h| h.engine);
    match key {
        "scheduler_commit" => expected("reserved: ktstr does not record the scheduler's commit yet"),
        "resolve_source" if s.scheduler == "eevdf" => {
            expected("EEVDF is built into the kernel: there is no scheduler binary to find")
        }
        "resolve_source" => actionable(
            "the runner did not record how the scheduler binary was found; re-run with a current ktstr",
        ),
        "project_commit" => actionable(
            "the test did not run inside a git repository (or git status failed); run it from your \
             checkout, or set KTSTR_PROJECT_COMMIT=<commit> when there is no .git (e.g. a source tarball)",
        ),
        "payload" => expected("the test runs no payload, only workers"),
        "monitor" if skipped => expected("the run was skipped: nothing was sampled"),
        "monitor" => actionable(
            "no system sample reached the host: the guest did not reach the scenario or ended before \
             the first 100 ms sample; read the console log beside the sidecar",
        ),
        "kvm_stats" if engine == Some(Engine::QemuTcg) => {
            expected("the qemu-tcg engine has no KVM counters")
        }
        "kvm_stats" if skipped => expected("the run was skipped: no VM was started"),
        "kvm_stats" => actionable(
            "the VMM did not collect KVM counters: the host kernel lacks KVM_GET_STATS_FD (before 5.14) \
             or the run stopped before collection",
        ),
        "kernel_version" if skipped => expected("the run was skipped before a kernel was resolved"),
        "kernel_version" => actionable(
            "the guest kernel's release was not known: set KTSTR_KERNEL to an image, source tree or \
             cache entry whose version ktstr can read",
        ),
        "kernel_commit" => expected(
            "the kernel is not a git source tree (a packaged or cached image); to record it, point \
             KTSTR_KERNEL at a kernel git checkout or an image built inside one",
        ),
        "host" => actionable(
            "the host context was not captured: the runner did not create the sidecar with \
             SidecarResult::new_run; re-run with a current ktstr",
        ),
        "cleanup_duration_ms" if skipped => expected("the run was skipped: there was no VM to tear down"),
        "cleanup_duration_ms" if !s.is_pass() => expected(
            "the run never reached collection (watchdog fired or the VM failed early); see \
             stats.verdict_details and the console log",
        ),
        "cleanup_duration_ms" => actionable(
            "a passing run always has a teardown time: the runner did not record it, please report this",
        ),
        "run_source" => actionable(
            "the runner did not record where it ran; re-run with a current ktstr (set KTSTR_CI=1 on CI)",
        ),
        _ => actionable("no explanation is known for this field"),
    }
}

fn monitor_reason(key: &str, s: &SidecarResult) -> (NullClass, String) {
    match key {
        "avg_irq_util" | "max_avg_irq_util" => expected(
            "ktstr's guest does not read the per-CPU PELT IRQ utilisation (written by tools that \
             read it from kernel memory)",
        ),
        "psi_cpu_some_avg10" | "psi_irq_full_avg10" | "total_irq_pressure_us" => expected(
            "the guest kernel publishes no such pressure file (CONFIG_PSI off, or no IRQ pressure \
             without CONFIG_IRQ_TIME_ACCOUNTING)",
        ),
        "event_deltas" if s.scheduler == "eevdf" => {
            expected("EEVDF has no sched_ext event counters")
        }
        "event_deltas" => expected(
            "the guest kernel does not publish sched_ext event counters (before 6.16), or the \
             scheduler was not attached when sampling started",
        ),
        "schedstat_deltas" => actionable(
            "schedstats were off in the guest: enable CONFIG_SCHEDSTATS (the sampler turns on \
             kernel.sched_schedstats when the option exists)",
        ),
        "sched_domain_lb" => {
            expected("ktstr does not read the sched-domain load-balancing counters")
        }
        "prog_stats_deltas" if s.scheduler == "eevdf" => {
            expected("EEVDF runs no BPF scheduler programs")
        }
        "prog_stats_deltas" => expected(
            "the run time of the scheduler's BPF programs was not collected (the kernel keeps it \
             only with kernel.bpf_stats_enabled=1)",
        ),
        "bpf_map_fields" => expected("ktstr does not watch fields of the scheduler's BPF maps"),
        _ => actionable("no explanation is known for this field"),
    }
}

fn host_reason(key: &str) -> (NullClass, String) {
    let source = match key {
        "cpu_model" | "cpu_vendor" => "/proc/cpuinfo",
        "total_memory_kib" | "hugepages_total" | "hugepages_free" | "hugepages_size_kib" => {
            "/proc/meminfo"
        }
        "thp_enabled" | "thp_defrag" => "/sys/kernel/mm/transparent_hugepage",
        "kernel_release" | "kernel_name" | "sched_tunables" | "task_delayacct" => {
            "/proc/sys/kernel"
        }
        "kernel_cmdline" => "/proc/cmdline",
        "online_cpus" => "/sys/devices/system/cpu/online",
        "numa_nodes" => "/sys/devices/system/node/online",
        "cpufreq_governor" => {
            return expected(
                "the host has no cpufreq governors (a virtual machine, or cpufreq not built)",
            )
        }
        "config_task_xacct" => {
            return expected("the host kernel's release was unknown, so its config was not read")
        }
        "heap_state" => {
            return expected(
                "ktstr runs on the system allocator, which publishes no heap statistics",
            )
        }
        "arch" | "kvm" => {
            return actionable(
                "always captured by the writer: the sidecar was written by another tool",
            )
        }
        "engine" => {
            return actionable(
                "the runner did not record which engine ran the guest; re-run with a current ktstr",
            )
        }
        "start" => {
            return expected(
                "the guest never started (the run ended before its boot), or ktstr predates warm starts",
            )
        }
        _ => return actionable("no explanation is known for this field"),
    };
    expected(format!(
        "{source} was not readable on the host that ran the test (container or restricted /proc, /sys)"
    ))
}

fn measurement_reason(key: &str, one_node: bool) -> (NullClass, String) {
    let why = match key {
        "avg_off_cpu_pct" | "min_off_cpu_pct" | "max_off_cpu_pct" => {
            "off-CPU time was not measured (no worker with wall time in this cgroup)"
        }
        "spread" => "fewer than two workers of this cgroup had wall time, so there is no spread",
        "taobench_whole" => "the cgroup ran no taobench",
        "worst_p99_wake_latency_us"
        | "median_wake_latency_us"
        | "p99_wake_latency_us"
        | "wake_latency_cv" => "no worker sleeps and wakes, so there is no wake-up latency",
        "median_timer_latency_us"
        | "p99_timer_latency_us"
        | "p999_timer_latency_us"
        | "worst_timer_latency_us" => "no worker sleeps on a timer",
        "worst_run_delay_us" | "mean_run_delay_us" => {
            "per-task schedstats were off in the guest (CONFIG_SCHEDSTATS / kernel.sched_schedstats)"
        }
        "page_locality" | "cross_node_migration_ratio" if one_node => {
            "the topology has one NUMA node, so locality is not measured"
        }
        "page_locality" | "cross_node_migration_ratio" => {
            "NUMA page locality was not collected for this cgroup (ktstr's workers do not read \
             numa_maps yet)"
        }
        _ => return actionable("no explanation is known for this field"),
    };
    expected(why)
}

impl Explanation {
    /// Human-readable report, as `cargo ktstr stats explain` prints it.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        if let Some(f) = &self.file {
            let _ = writeln!(out, "file:          {}", f.display());
        }
        let inverted = if self.expected_failure {
            " (expected failure)"
        } else {
            ""
        };
        let _ = writeln!(out, "test:          {}", self.test_name);
        let _ = writeln!(out, "verdict:       {}{inverted}", self.outcome);
        let _ = writeln!(out, "variant_hash:  {}", self.variant_hash);
        let _ = writeln!(out, "variant_key:   {}", self.variant_key);
        let _ = writeln!(out, "file name:     {}", self.expected_file_name);
        if !self.file_name_matches {
            let actual = self
                .file
                .as_deref()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "WARNING: the file is named {actual}, not {}: it was renamed, or its variant fields \
                 were edited after writing; tools that pair runs by file name will not find it",
                self.expected_file_name
            );
        }
        match &self.reference_rejections {
            Some(r) if r.is_empty() => {
                let _ = writeln!(
                    out,
                    "reference:     read by {}'s own reader",
                    ktstr_sidecar::conformance::REFERENCE_VERSION
                );
            }
            Some(r) => {
                let _ = writeln!(
                    out,
                    "reference:     REJECTED by {}'s reader ({} problems; written by an older ktstr?), first: {}",
                    ktstr_sidecar::conformance::REFERENCE_VERSION,
                    r.len(),
                    r[0]
                );
            }
            None => {}
        }
        let set = self.fields.iter().filter(|f| f.is_set()).count();
        let _ = writeln!(
            out,
            "\noptional fields: {set} set, {} null\n",
            self.fields.len() - set
        );
        let width = self.fields.iter().map(|f| f.field.len()).max().unwrap_or(0);
        for f in &self.fields {
            match (&f.class, &f.reason) {
                (Some(class), Some(reason)) => {
                    let _ = writeln!(
                        out,
                        "{:width$}  null  [{}] {reason}",
                        f.field,
                        class.as_str()
                    );
                }
                _ => {
                    let _ = writeln!(out, "{:width$}  set   {}", f.field, short_value(&f.value));
                }
            }
        }
        out
    }
}

/// One-line rendering of a value, cut to a readable length.
fn short_value(v: &Value) -> String {
    const MAX: usize = 72;
    let s = match v {
        Value::Object(m) => format!("{{{} keys}}", m.len()),
        Value::Array(a) => format!("[{} items]", a.len()),
        other => other.to_string(),
    };
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX - 3).collect();
        format!("{cut}...")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_sidecar::host::HostContext;
    use ktstr_sidecar::monitor::MonitorSummary;
    use ktstr_sidecar::stats::CgroupStats;

    /// The option lists must name exactly the keys that are null in a default value, so
    /// a new optional field cannot be forgotten by explain.
    #[test]
    fn option_lists_are_complete() {
        fn nulls(v: &Value) -> Vec<String> {
            v.as_object()
                .expect("object")
                .iter()
                .filter(|(_, v)| v.is_null())
                .map(|(k, _)| k.clone())
                .collect()
        }
        let sorted = |l: &[&str]| {
            let mut v: Vec<String> = l.iter().map(|s| s.to_string()).collect();
            v.sort();
            v
        };
        let mut top = nulls(&serde_json::to_value(SidecarResult::default()).expect("ser"));
        top.sort();
        assert_eq!(top, sorted(TOP_OPTIONS));
        let stats =
            nulls(&serde_json::to_value(ktstr_sidecar::ScenarioStats::default()).expect("ser"));
        assert!(stats.is_empty(), "{stats:?}");
        // Every number a measured flag guards is a key of the cgroup.
        let cg_keys = serde_json::to_value(CgroupStats::default()).expect("ser");
        for (flag, keys) in CGROUP_MEASURED {
            assert!(cg_keys.get(flag).is_some(), "{flag}");
            for k in *keys {
                assert!(cg_keys.get(k).is_some_and(Value::is_number), "{k}");
            }
        }
        let mut cg = nulls(&serde_json::to_value(CgroupStats::default()).expect("ser"));
        cg.sort();
        assert_eq!(cg, sorted(CGROUP_OPTIONS));
        let mut m = nulls(&serde_json::to_value(MonitorSummary::default()).expect("ser"));
        m.sort();
        assert_eq!(m, sorted(MONITOR_OPTIONS));
        let mut h = nulls(&serde_json::to_value(HostContext::default()).expect("ser"));
        h.push("cpufreq_governor".into());
        h.sort();
        assert_eq!(h, sorted(HOST_OPTIONS));
        // Every listed key has a specific explanation.
        let s = SidecarResult::default();
        for k in TOP_OPTIONS {
            assert!(!top_reason(k, &s).1.starts_with("no explanation"), "{k}");
        }
        for k in MONITOR_OPTIONS {
            assert!(
                !monitor_reason(k, &s).1.starts_with("no explanation"),
                "{k}"
            );
        }
        for k in HOST_OPTIONS {
            assert!(!host_reason(k).1.starts_with("no explanation"), "{k}");
        }
        let measured = CGROUP_MEASURED.iter().flat_map(|(_, k)| k.iter());
        for k in STATS_EXT_OPTIONS
            .iter()
            .chain(CGROUP_OPTIONS)
            .chain(measured)
        {
            for one_node in [true, false] {
                let why = measurement_reason(k, one_node).1;
                assert!(!why.starts_with("no explanation"), "{k}");
            }
        }
    }

    #[test]
    fn reasons_depend_on_the_run() {
        let mut s = SidecarResult::new("t", "1n1l2c1t", "eevdf");
        s.set_outcome(Outcome::Skip);
        let e = explain(&s, None);
        let class_of = |e: &Explanation, f: &str| {
            e.fields
                .iter()
                .find(|r| r.field == f)
                .and_then(|r| r.class)
                .expect("null field")
        };
        assert_eq!(class_of(&e, "resolve_source"), NullClass::Expected);
        assert_eq!(class_of(&e, "monitor"), NullClass::Expected);
        assert_eq!(class_of(&e, "cleanup_duration_ms"), NullClass::Expected);
        assert_eq!(class_of(&e, "project_commit"), NullClass::Actionable);

        s.scheduler = "scx_lavd".into();
        s.set_outcome(Outcome::Pass);
        let e = explain(&s, None);
        assert_eq!(class_of(&e, "resolve_source"), NullClass::Actionable);
        assert_eq!(class_of(&e, "monitor"), NullClass::Actionable);
        assert_eq!(class_of(&e, "cleanup_duration_ms"), NullClass::Actionable);
        assert_eq!(class_of(&e, "kvm_stats"), NullClass::Actionable);

        s.host = Some(HostContext {
            engine: Some(Engine::QemuTcg),
            ..HostContext::default()
        });
        let e = explain(&s, None);
        assert_eq!(class_of(&e, "kvm_stats"), NullClass::Expected);
        assert!(e.fields.iter().any(|f| f.field == "host.cpu_model"));
        assert!(e
            .fields
            .iter()
            .any(|f| f.field == "host.engine" && f.is_set()));
    }

    #[test]
    fn file_name_check() {
        let s = SidecarResult::new("t", "1n1l2c1t", "eevdf");
        let right = PathBuf::from("/x").join(s.file_name());
        assert!(explain(&s, Some(&right)).file_name_matches);
        let e = explain(&s, Some(Path::new("/x/renamed.ktstr.json")));
        assert!(!e.file_name_matches);
        assert!(e
            .render_text()
            .contains("WARNING: the file is named renamed.ktstr.json"));
        assert!(explain(&s, None).file_name_matches);
        assert_eq!(e.variant_hash, s.variant_hash_hex());
    }

    #[test]
    fn text_lists_every_field_once() {
        let mut s = SidecarResult::new("t", "1n1l2c1t", "eevdf");
        s.stats.cgroups.push(CgroupStats {
            cgroup_name: "cg0".into(),
            spread: Some(3.5),
            p99_wake_latency_us: 7.0,
            wake_measured: true,
            ..CgroupStats::default()
        });
        let e = explain(&s, None);
        let text = e.render_text();
        for f in &e.fields {
            assert_eq!(
                text.lines()
                    .filter(|l| l.starts_with(&format!("{} ", f.field)))
                    .count(),
                1,
                "{}",
                f.field
            );
        }
        assert!(text.contains("stats.cgroups[cg0].spread"));
        assert!(text
            .lines()
            .any(|l| l.starts_with("stats.cgroups[cg0].spread ") && l.contains("set   3.5")));
        // Measured wake-ups show their value; unmeasured timers show as null.
        assert!(text
            .lines()
            .any(|l| l.starts_with("stats.cgroups[cg0].p99_wake_latency_us ")
                && l.contains("set   7.0")));
        assert!(text.lines().any(
            |l| l.starts_with("stats.cgroups[cg0].p99_timer_latency_us ")
                && l.contains("null  [expected] no worker sleeps on a timer")
        ));
    }

    #[test]
    fn a_file_is_checked_against_the_reference_reader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.ktstr.json");
        std::fs::write(
            &good,
            include_str!("../../ktstr-sidecar/tests/data/reference-full.ktstr.json"),
        )
        .unwrap();
        let s = ktstr_sidecar::read_sidecar(&good).expect("reads");
        let e = explain(&s, Some(&good));
        assert_eq!(e.reference_rejections, Some(vec![]));
        assert!(e
            .render_text()
            .contains("read by ktstr 0.29.0's own reader"));
        let old = dir.path().join("old.ktstr.json");
        std::fs::write(
            &old,
            include_str!("../../ktstr-sidecar/tests/data/minimal.ktstr.json"),
        )
        .unwrap();
        let s = ktstr_sidecar::read_sidecar(&old).expect("old files read");
        let e = explain(&s, Some(&old));
        let r = e.reference_rejections.clone().expect("checked");
        assert!(r.iter().any(|x| x.contains("cgroup_name")), "{r:?}");
        assert!(e
            .render_text()
            .contains("REJECTED by ktstr 0.29.0's reader"));
        assert_eq!(explain(&s, None).reference_rejections, None);
    }
}
