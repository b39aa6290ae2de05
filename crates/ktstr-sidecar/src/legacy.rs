//! Reading sidecars ktstr wrote before its nested types followed the reference's
//! (the top level was the same 32 keys; the nested shapes were ktstr's own).
//!
//! There is no version key: the reference writes none, so a file's shape is what tells
//! the formats apart. [`upgrade`] runs on every document before the typed read and
//! rewrites, in place, only shapes the reference never writes — a cgroup keyed `name`,
//! `null` in a number the reference types as a plain `f64`, a phase with a `cgroups`
//! list, a stimulus event with `kind`, `scx_events`/`schedstat`/`prog_stats` in the
//! monitor, snake_case polarities. A reference file or a current one passes through
//! untouched, so the rules cannot change what such a file means.
//!
//! What an old file cannot tell is filled with the reference's "not measured" values:
//! `*_measured` flags come from whether the old optional number was set; rates and the
//! schedstat window that old files did not record are `0.0`; the old run-delay numbers
//! (a mean per scheduling) keep their values under the reference's names.

use serde_json::{json, Map, Value};

use crate::stats::PhaseBucket;

/// Rewrite an old-format document into the current shape (see the module docs).
/// Returns whether anything changed.
pub fn upgrade(doc: &mut Value) -> bool {
    let before = doc.clone();
    let Some(top) = doc.as_object_mut() else {
        return false;
    };
    for pm in array_mut(top, "metrics") {
        let Some(pm) = pm.as_object_mut() else {
            continue;
        };
        if let Some(Value::Array(ms)) = pm.get_mut("metrics") {
            // A NaN value was written as null: no number to keep.
            ms.retain(|m| !m.get("value").is_some_and(Value::is_null));
            for m in ms.iter_mut().filter_map(Value::as_object_mut) {
                if let Some(p) = m.get_mut("polarity") {
                    polarity(p);
                }
                if let Some(Value::String(s)) = m.get_mut("stream") {
                    match s.as_str() {
                        "stdout" => *s = "Stdout".into(),
                        "stderr" => *s = "Stderr".into(),
                        _ => {}
                    }
                }
            }
        }
    }
    for a in array_mut(top, "perf_delta_assertions") {
        if let Some(d) = a.get_mut("direction") {
            polarity(d);
        }
    }
    if let Some(stats) = top.get_mut("stats").and_then(Value::as_object_mut) {
        upgrade_stats(stats);
    }
    for e in array_mut(top, "stimulus_events") {
        if let Some(e) = e.as_object_mut() {
            upgrade_stimulus(e);
        }
    }
    if let Some(m) = top.get_mut("monitor").and_then(Value::as_object_mut) {
        upgrade_monitor(m);
    }
    *doc != before
}

fn array_mut<'a>(
    obj: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Value> {
    obj.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// `"higher_better"` -> `"HigherBetter"`, `{"target_value": x}` -> `{"TargetValue": x}`.
fn polarity(p: &mut Value) {
    let pascal = |s: &str| -> Option<&'static str> {
        Some(match s {
            "higher_better" => "HigherBetter",
            "lower_better" => "LowerBetter",
            "unknown" => "Unknown",
            "informational" => "Informational",
            "target_value" => "TargetValue",
            _ => return None,
        })
    };
    match p {
        Value::String(s) => {
            if let Some(new) = pascal(s) {
                *s = new.into();
            }
        }
        Value::Object(o) if o.len() == 1 => {
            if let Some(new) = o.keys().next().and_then(|k| pascal(k)) {
                let v = o.values().next().cloned().unwrap_or(Value::Null);
                *p = Value::Object(Map::from_iter([(new.to_string(), v)]));
            }
        }
        _ => {}
    }
}

/// A missing key or `null` becomes `zero`.
fn zero_if_null(o: &mut Map<String, Value>, key: &str, zero: Value) {
    if o.get(key).is_none_or(Value::is_null) {
        o.insert(key.into(), zero);
    }
}

/// `null` entries of a number map are dropped (the reference: missing = no sample).
fn drop_null_entries(o: &mut Map<String, Value>, key: &str) {
    if let Some(Value::Object(m)) = o.get_mut(key) {
        m.retain(|_, v| !v.is_null());
    }
}

fn is_number(o: &Map<String, Value>, key: &str) -> bool {
    o.get(key).is_some_and(Value::is_number)
}

fn upgrade_stats(stats: &mut Map<String, Value>) {
    // Old files wrote these as optional numbers (null, or left out by hand).
    let old_shape = stats.contains_key(crate::stats::WORST_P99_WAKE_LATENCY_US)
        || stats.contains_key(crate::stats::WORST_RUN_DELAY_US)
        || stats
            .get("cgroups")
            .and_then(Value::as_array)
            .is_some_and(|cgs| {
                cgs.iter()
                    .any(|c| c.get("name").is_some() && c.get("cgroup_name").is_none())
            })
        || stats
            .get("phases")
            .and_then(Value::as_array)
            .is_some_and(|ps| ps.iter().any(|p| p.get("cgroups").is_some()));
    for (key, zero) in [
        ("worst_spread", json!(0.0)),
        ("worst_migration_ratio", json!(0.0)),
        ("worst_gap_cpu", json!(0)),
    ] {
        let absent = !stats.contains_key(key);
        if stats.get(key).is_some_and(Value::is_null) || (absent && old_shape) {
            stats.insert(key.into(), zero);
        }
    }
    drop_null_entries(stats, "ext_metrics");
    // Old typed keys whose reference equivalent is an ext_metrics entry.
    for key in [
        crate::stats::WORST_P99_WAKE_LATENCY_US,
        crate::stats::WORST_RUN_DELAY_US,
    ] {
        if let Some(v) = stats.remove(key).filter(Value::is_number) {
            if let Some(Value::Object(ext)) = stats.get_mut("ext_metrics") {
                ext.entry(key).or_insert(v);
            }
        }
    }
    let mut legacy_cgroups = false;
    for cg in array_mut(stats, "cgroups") {
        if let Some(cg) = cg.as_object_mut() {
            legacy_cgroups |= upgrade_cgroup(cg);
        }
    }
    if legacy_cgroups {
        // The reference's total_cpus is the sum of the cgroups' num_cpus.
        let total: u64 = stats
            .get("cgroups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("num_cpus").and_then(Value::as_u64))
            .sum();
        stats.insert("total_cpus".into(), json!(total));
    }
    for p in array_mut(stats, "phases") {
        if let Some(p) = p.as_object_mut() {
            upgrade_phase(p);
        }
    }
}

/// Returns whether the cgroup was in the old shape (keyed `name`).
fn upgrade_cgroup(cg: &mut Map<String, Value>) -> bool {
    let legacy = !cg.contains_key("cgroup_name") && cg.contains_key("name");
    if legacy {
        if let Some(name) = cg.remove("name") {
            cg.insert("cgroup_name".into(), name);
        }
        // Old: the size of the cgroup's cpuset. Reference: the CPUs it used.
        let used = cg
            .get("cpus_used")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        cg.insert("num_cpus".into(), json!(used));
    }
    drop_null_entries(cg, "ext_metrics");
    // The reference's `*_measured` flags and the numbers each one covers (the NUMA pair
    // has no flag of its own).
    let groups = crate::stats::CGROUP_MEASURED
        .iter()
        .filter(|(flag, _)| flag.ends_with("_measured"));
    for &(flag, keys) in groups {
        if !cg.contains_key(flag) {
            let measured = keys.iter().any(|k| is_number(cg, k));
            cg.insert(flag.into(), json!(measured));
        }
    }
    if !cg.contains_key("p999_timer_latency_us") {
        let p999 = match cg.get_mut("ext_metrics") {
            Some(Value::Object(ext)) => ext.remove("p999_timer_latency_us"),
            _ => None,
        };
        cg.insert(
            "p999_timer_latency_us".into(),
            p999.filter(Value::is_number).unwrap_or(json!(0.0)),
        );
    }
    for key in [
        "migration_ratio",
        "median_wake_latency_us",
        "p99_wake_latency_us",
        "wake_latency_cv",
        "median_timer_latency_us",
        "p99_timer_latency_us",
        "worst_timer_latency_us",
        "mean_run_delay_us",
        "worst_run_delay_us",
        "page_locality",
        "cross_node_migration_ratio",
    ] {
        zero_if_null(cg, key, json!(0.0));
    }
    zero_if_null(cg, "max_gap_cpu", json!(0));
    legacy
}

fn upgrade_phase(p: &mut Map<String, Value>) {
    drop_null_entries(p, "metrics");
    if p.contains_key("per_cgroup") {
        return;
    }
    let step = p.get("step_index").and_then(Value::as_u64).unwrap_or(0);
    if let Ok(step) = u16::try_from(step) {
        p.insert("label".into(), json!(PhaseBucket::label_for(step)));
    }
    if !p.contains_key("sample_count") {
        let n = p
            .get("metrics")
            .and_then(|m| m.get("monitor_samples"))
            .and_then(Value::as_f64)
            .filter(|n| n.is_finite() && *n >= 0.0)
            .map_or(0, |n| n as u64);
        p.insert("sample_count".into(), json!(n));
    }
    // Old: the phase's total and a list of per-cgroup whole-shape stats (only the
    // iterations were per phase). Reference: raw components keyed by cgroup.
    p.remove("total_iterations");
    let mut per_cgroup = Map::new();
    if let Some(Value::Array(cgs)) = p.remove("cgroups") {
        for cg in cgs {
            let Some(name) = cg.get("name").and_then(Value::as_str) else {
                continue;
            };
            let u = |k: &str| cg.get(k).and_then(Value::as_u64).unwrap_or(0);
            per_cgroup.insert(
                name.to_string(),
                json!({
                    "num_workers": u("num_workers"),
                    "cpus_used": cg.get("cpus_used").cloned().unwrap_or(json!([])),
                    "wake_latencies_ns": [],
                    "wake_sample_total": 0,
                    "timer_latencies_ns": [],
                    "timer_sample_total": 0,
                    "run_delays_ns": [],
                    "off_cpu_pcts": [],
                    "total_migrations": u("total_migrations"),
                    "total_iterations": u("total_iterations"),
                    "total_cpu_time_ns": u("total_cpu_time_ns"),
                    "numa_pages_local": 0,
                    "numa_pages_total": 0,
                    "cross_node_migrated": 0,
                    "max_gap_ms": u("max_gap_ms"),
                    "max_gap_cpu": u("max_gap_cpu"),
                    "stripped": false,
                    "metrics": {},
                    "schbench": null,
                    "taobench": null,
                }),
            );
        }
    }
    p.insert("per_cgroup".into(), Value::Object(per_cgroup));
}

fn upgrade_stimulus(e: &mut Map<String, Value>) {
    let Some(kind) = e.remove("kind") else {
        return;
    };
    let end = kind.as_str() == Some("step_end");
    e.insert("is_step_end".into(), json!(end));
    // Old events were all step boundaries; the old `is_terminal` marked the last one.
    e.insert("is_terminal".into(), json!(false));
    if let Some(k) = e
        .get("step_index")
        .and_then(Value::as_u64)
        .filter(|&k| k > 0)
    {
        let tag = if end { "StepEnd" } else { "StepStart" };
        e.insert("label".into(), json!(format!("{tag}[{}]", k - 1)));
    }
}

fn upgrade_monitor(m: &mut Map<String, Value>) {
    for key in [
        "max_imbalance_ratio",
        "avg_imbalance_ratio",
        "avg_nr_running",
        "avg_local_dsq_depth",
    ] {
        if m.get(key).is_some_and(Value::is_null) {
            m.insert(key.into(), json!(0.0));
        }
    }
    if let Some(events) = m.remove("scx_events") {
        if !m.contains_key("event_deltas") {
            let deltas = events.as_object().map(|ev| {
                crate::monitor::ScxEventDeltas::from_counters(
                    ev.iter()
                        .filter_map(|(k, v)| Some((k.as_str(), v.as_u64()?))),
                    0.0,
                    0,
                )
            });
            m.insert("event_deltas".into(), json!(deltas));
        }
    }
    if let Some(ss) = m.remove("schedstat") {
        if !m.contains_key("schedstat_deltas") {
            let deltas = ss.as_object().map(|ss| {
                let u = |k: &str| ss.get(k).and_then(Value::as_u64).unwrap_or(0);
                json!({
                    "total_run_delay": u("run_delay_ns"),
                    "total_pcount": u("pcount"),
                    "total_sched_count": u("sched_count"),
                    "total_yld_count": u("yld_count"),
                    "total_sched_goidle": u("sched_goidle"),
                    "total_ttwu_count": u("ttwu_count"),
                    "total_ttwu_local": u("ttwu_local"),
                    "total_schedstat_wall_sec": 0.0,
                })
            });
            m.insert("schedstat_deltas".into(), deltas.unwrap_or(Value::Null));
        }
    }
    if let Some(Value::Array(progs)) = m.remove("prog_stats") {
        if !m.contains_key("prog_stats_deltas") {
            let list: Vec<_> = progs
                .iter()
                .filter_map(|p| {
                    let name = p.get("name")?.as_str()?;
                    let cnt = p.get("cnt").and_then(Value::as_u64).unwrap_or(0);
                    let nsecs = p.get("nsecs").and_then(Value::as_u64).unwrap_or(0);
                    Some(crate::monitor::ProgStatsDelta::new(name, cnt, nsecs))
                })
                .collect();
            let v = if list.is_empty() {
                Value::Null
            } else {
                json!(list)
            };
            m.insert("prog_stats_deltas".into(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polarities_and_streams_take_the_reference_spelling() {
        for (old, new) in [
            (json!("higher_better"), json!("HigherBetter")),
            (json!("informational"), json!("Informational")),
            (json!({"target_value": 5.0}), json!({"TargetValue": 5.0})),
            (json!("LowerBetter"), json!("LowerBetter")),
        ] {
            let mut p = old;
            polarity(&mut p);
            assert_eq!(p, new);
        }
    }

    #[test]
    fn a_reference_file_is_left_alone() {
        for text in [
            include_str!("../tests/data/reference-full.ktstr.json"),
            include_str!("../tests/data/reference-minimal.ktstr.json"),
        ] {
            let mut v: Value = serde_json::from_str(text).unwrap();
            let before = v.clone();
            assert!(!upgrade(&mut v));
            assert_eq!(v, before);
        }
    }

    #[test]
    fn an_old_cgroup_gets_its_flags_from_its_optional_numbers() {
        let mut cg = json!({
            "name": "cg0", "num_workers": 2, "num_cpus": 8, "cpus_used": [0, 1],
            "max_gap_cpu": null, "migration_ratio": null,
            "median_wake_latency_us": 3.0, "p99_wake_latency_us": 9.0, "wake_latency_cv": null,
            "median_timer_latency_us": null,
            "mean_run_delay_us": null, "worst_run_delay_us": null,
            "ext_metrics": {"p999_timer_latency_us": 40.0, "gone": null, "kept": 1.0}
        });
        assert!(upgrade_cgroup(cg.as_object_mut().unwrap()));
        assert_eq!(cg["cgroup_name"], "cg0");
        assert!(cg.get("name").is_none());
        assert_eq!(cg["num_cpus"], 2, "the CPUs it used, not its cpuset");
        assert_eq!(cg["wake_measured"], true);
        assert_eq!(cg["wake_latency_cv"], 0.0);
        assert_eq!(cg["timer_measured"], false);
        assert_eq!(cg["p999_timer_latency_us"], 40.0);
        assert_eq!(cg["run_delay_measured"], false);
        assert_eq!(cg["mean_run_delay_us"], 0.0);
        assert_eq!(cg["max_gap_cpu"], 0);
        assert_eq!(cg["migration_ratio"], 0.0);
        assert_eq!(cg["ext_metrics"], json!({"kept": 1.0}));
    }
}
