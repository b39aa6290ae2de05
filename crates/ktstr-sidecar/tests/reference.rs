//! Conformance with the reference project's sidecar (ktstr 0.29.0's `SidecarResult`,
//! nested types included), in both directions:
//!
//! - golden files in the reference's exact serialization (`tests/data/reference-*`,
//!   written by hand from its schema) read with our reader, and what our writer makes
//!   of them holds every reference key in the reference's order with the same value;
//!   the only keys it adds are our documented extras;
//! - everything our writer produces — fully populated, minimal, skipped, refused,
//!   upgraded from an old file, full of non-finite numbers — is read by the
//!   reference's reader (checked against the reference's schema,
//!   `reference/ktstr-0.29.0-sidecar-schema.json`).

use std::path::Path;

use ktstr_sidecar::conformance::{self, Difference, Json, EXTRA_KEYS};
use ktstr_sidecar::{example, parse_sidecar, read_sidecar, Outcome, SidecarResult};

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// `stats.cgroups[3].x` -> `stats.cgroups[].x`.
fn pattern(path: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// Every key of `golden` is in `written` at the same place, in the same relative order,
/// with an equal value (integers stay integers, floats floats). Keys `written` adds are
/// collected in `added` as (path, value).
fn compare(golden: &Json, written: &Json, path: &str, added: &mut Vec<(String, Json)>) {
    match (golden, written) {
        (Json::Object(g), Json::Object(w)) => {
            let g_keys: Vec<&str> = g.iter().map(|(k, _)| k.as_str()).collect();
            let w_order: Vec<&str> = w
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| g_keys.contains(k))
                .collect();
            assert_eq!(w_order, g_keys, "keys missing or out of order at {path}");
            for (k, gv) in g {
                let wv = written.get(k).expect("checked above");
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                compare(gv, wv, &sub, added);
            }
            for (k, wv) in w.iter().filter(|(k, _)| !g_keys.contains(&k.as_str())) {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                added.push((sub, wv.clone()));
            }
        }
        (Json::Array(g), Json::Array(w)) => {
            assert_eq!(g.len(), w.len(), "list length at {path}");
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                compare(gv, wv, &format!("{path}[{i}]"), added);
            }
        }
        (g, w) => assert_eq!(g, w, "value at {path}"),
    }
}

/// Read a golden file, write it back, compare key by key; returns what was added.
fn round_trip(name: &str) -> Vec<(String, Json)> {
    let path = data(name);
    let text = std::fs::read_to_string(&path).expect("golden file");
    let sidecar = read_sidecar(&path).expect("our reader reads the reference's file");
    let written = sidecar.to_json_pretty().expect("write");
    let (g, w) = (
        Json::parse(&text).expect("json"),
        Json::parse(&written).expect("json"),
    );
    let mut added = Vec::new();
    compare(&g, &w, "", &mut added);
    added
}

#[test]
fn a_fully_populated_reference_sidecar_survives_our_reader_and_writer() {
    let added = round_trip("reference-full.ktstr.json");
    // Only our documented extra keys are added, each with its empty value: the
    // reference's file had none of them.
    let mut paths: Vec<String> = added.iter().map(|(p, _)| pattern(p)).collect();
    paths.sort();
    let mut want: Vec<String> = EXTRA_KEYS.iter().map(|x| x.path.to_string()).collect();
    want.sort();
    assert_eq!(paths, want);
    for (p, v) in &added {
        let empty =
            matches!(v, Json::Null) || *v == Json::Array(vec![]) || *v == Json::Str(String::new());
        assert!(empty, "{p} = {v:?}");
    }
}

#[test]
fn a_minimal_reference_sidecar_survives_our_reader_and_writer() {
    let added = round_trip("reference-minimal.ktstr.json");
    let paths: Vec<String> = added.iter().map(|(p, _)| p.clone()).collect();
    // host and monitor are null, no payload ran: only the stats extra shows.
    assert_eq!(paths, ["stats.verdict_details"]);
}

#[test]
fn the_comparison_can_fail() {
    let g = Json::parse(r#"{"a": 1, "b": {"c": 2.0, "d": [1]}}"#).unwrap();
    let fails = |w: &str| {
        let w = Json::parse(w).unwrap();
        std::panic::catch_unwind(|| compare(&g, &w, "", &mut Vec::new())).is_err()
    };
    assert!(!fails(r#"{"a": 1, "x": 0, "b": {"c": 2.0, "d": [1]}}"#));
    assert!(fails(r#"{"b": {"c": 2.0, "d": [1]}, "a": 1}"#), "order");
    assert!(
        fails(r#"{"a": 1, "b": {"c": 2, "d": [1]}}"#),
        "float became int"
    );
    assert!(fails(r#"{"a": 1, "b": {"c": 2.0, "d": []}}"#), "list");
    assert!(fails(r#"{"a": 1, "b": {"d": [1]}}"#), "missing key");
}

/// Every difference from the reference's own bytes is one ktstr's writer may have:
/// a documented extra key, or an optional key written as null or {} (DESIGN section 5:
/// the writer always emits every key).
fn assert_conforms(what: &str, s: &SidecarResult) {
    let text = s.to_json_pretty().expect("write");
    let report = conformance::check_text(&text).expect("json");
    assert!(
        report.accepted(),
        "{what}: the reference rejects it:\n{report}"
    );
    let unexpected = report.unexpected();
    assert!(
        unexpected.is_empty(),
        "{what}: unexpected differences:\n{unexpected:#?}"
    );
    // And it reads back through our reader to the same value.
    let back = parse_sidecar(text.as_bytes(), Path::new(what)).expect("reads back");
    assert_eq!(back.to_json_pretty().unwrap(), text, "{what}");
}

#[test]
fn everything_our_writer_produces_is_read_by_the_reference() {
    assert_conforms("fully populated", &example::fully_populated());
    assert_conforms("minimal", &SidecarResult::new("t", "1n1l1c1t", "eevdf"));

    #[cfg(feature = "provenance")]
    {
        let mut skipped = SidecarResult::new_run("t", "1n1l2c1t", "eevdf");
        skipped.set_outcome(Outcome::Skip);
        skipped
            .stats
            .verdict_details
            .push("kernel unavailable".into());
        assert_conforms("skipped", &skipped);
    }

    let mut inverted = example::fully_populated();
    inverted.finalize(Outcome::Fail, true);
    assert_conforms("expected failure", &inverted);

    // Non-finite numbers everywhere a producer could compute one.
    let mut nan = example::fully_populated();
    nan.stats.worst_spread = f64::NAN;
    nan.stats.worst_migration_ratio = f64::INFINITY;
    nan.stats.ext_metrics.insert("x".into(), f64::NAN);
    let cg = &mut nan.stats.cgroups[0];
    cg.migration_ratio = f64::NAN;
    cg.wake_latency_cv = f64::NAN;
    cg.spread = Some(f64::NAN);
    nan.metrics[0].metrics[0].value = f64::NAN;
    if let Some(m) = nan.monitor.as_mut() {
        m.avg_nr_running = f64::NAN;
        m.psi_cpu_some_avg10 = Some(f64::INFINITY);
    }
    nan.stats.phases[0]
        .per_cgroup
        .values_mut()
        .for_each(|c| c.off_cpu_pcts.push(f64::NAN));
    let report = conformance::check_value(&nan);
    assert!(report.accepted(), "{report}");
    assert!(report.unexpected().is_empty(), "{report}");

    // Old sidecars, once read, are written in the reference's shape.
    for old in ["minimal.ktstr.json", "legacy-full.ktstr.json"] {
        let s = read_sidecar(&data(old)).expect("old file");
        assert_conforms(old, &s);
    }
}

#[test]
fn old_files_as_written_are_what_the_reference_rejects() {
    // The reason for the change: before it, the reference could not read our files.
    for old in ["minimal.ktstr.json", "legacy-full.ktstr.json"] {
        let text = std::fs::read_to_string(data(old)).unwrap();
        let report = conformance::check_text(&text).unwrap();
        assert!(!report.accepted(), "{old}");
    }
    // ... and a null where the reference omits a key is a difference we may have.
    let mut s = example::fully_populated();
    if let Some(h) = s.host.as_mut() {
        h.kernel_name = None;
    }
    let report = conformance::check_value(&s);
    assert!(report
        .findings
        .iter()
        .any(|f| f.difference == Difference::NullNotOmitted && f.is_allowed_difference()));
}

#[test]
fn the_readme_lists_every_extra_key() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md");
    assert!(readme.contains("ktstr **0.29.0**"));
    for x in EXTRA_KEYS {
        assert!(
            readme.contains(&format!("| `{}` |", x.path)),
            "README's sidecar section lacks the extra key {}",
            x.path
        );
    }
}
