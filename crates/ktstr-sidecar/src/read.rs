//! Reading sidecars: one file with the reader contract, or a whole pool of run
//! directories, where a bad file costs one error line and never the rest.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::error::Category;

use crate::error::{Result, SidecarError};
use crate::paths::is_sidecar_file_name;
use crate::sidecar::{RunSource, SidecarResult};

/// How deep below a pool root run directories are looked for: the root itself (a run
/// directory), its children (a runs root), their children (sub-directories of a run).
const MAX_DEPTH: usize = 2;

/// Read one sidecar file.
pub fn read_sidecar(path: &Path) -> Result<SidecarResult> {
    let bytes = crate::fsread::read_regular(path, crate::fsread::MAX_SIDECAR_BYTES)
        .map_err(|e| SidecarError::io("read", path, e))?;
    parse_sidecar(&bytes, path)
}

/// Parse sidecar JSON; `path` is only used in error messages.
///
/// Missing `Option` keys read as None, unknown keys are ignored; a missing required key,
/// a value of the wrong type, text that is not JSON, a truncated document, or
/// contradicting verdict bits are errors that name the file and the key. Sidecars in
/// ktstr's old nested shapes are upgraded first ([`crate::legacy`]).
pub fn parse_sidecar(bytes: &[u8], path: &Path) -> Result<SidecarResult> {
    let mut doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| classify(path, ".", e, bytes.is_empty()))?;
    crate::legacy::upgrade(&mut doc);
    let sidecar: SidecarResult = serde_path_to_error::deserialize(doc).map_err(|e| {
        let key = e.path().to_string();
        classify(path, &key, e.into_inner(), false)
    })?;
    if sidecar.bits().outcome().is_none() {
        return Err(SidecarError::BadVerdict {
            path: path.to_path_buf(),
            detail: format!("{} are all true", sidecar.bits().set_names().join(" and ")),
        });
    }
    Ok(sidecar)
}

fn classify(path: &Path, key: &str, e: serde_json::Error, empty: bool) -> SidecarError {
    let path = path.to_path_buf();
    match e.classify() {
        Category::Eof if empty => SidecarError::Truncated {
            path,
            detail: "the file is empty".into(),
        },
        Category::Eof => SidecarError::Truncated {
            path,
            detail: e.to_string(),
        },
        Category::Syntax | Category::Io => SidecarError::NotJson {
            path,
            detail: e.to_string(),
        },
        Category::Data => {
            let msg = e.to_string();
            let within = if key == "." {
                String::new()
            } else {
                key.to_string()
            };
            if let Some(field) = missing_field_name(&msg) {
                return SidecarError::MissingKey {
                    path,
                    key: field.to_string(),
                    within,
                };
            }
            SidecarError::WrongType {
                path,
                key: if within.is_empty() {
                    "(top level)".into()
                } else {
                    within
                },
                detail: msg,
            }
        }
    }
}

/// `missing field `x` at line 3 column 1` -> `x`.
fn missing_field_name(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(name, _)| name)
}

/// A sidecar loaded from disk, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedSidecar {
    pub path: PathBuf,
    pub sidecar: SidecarResult,
}

/// One directory holding sidecar files.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDir {
    pub path: PathBuf,
    /// Good sidecars, sorted by file name.
    pub sidecars: Vec<LoadedSidecar>,
    /// Files of this directory that failed to read.
    pub bad_files: usize,
}

/// Everything found under some roots.
#[derive(Debug, Default)]
pub struct Pool {
    /// Directories with at least one sidecar file (good or bad), sorted by path.
    pub runs: Vec<RunDir>,
    /// One error per unreadable file or directory.
    pub errors: Vec<SidecarError>,
}

impl Pool {
    /// All good sidecars of all runs.
    pub fn sidecars(&self) -> impl Iterator<Item = &LoadedSidecar> {
        self.runs.iter().flat_map(|r| r.sidecars.iter())
    }
}

/// Load every sidecar under `roots`. A root may be a sidecar file, a run directory or a
/// runs root. With `archive`, every loaded sidecar's `run_source` becomes `archive` (the
/// pool was named explicitly, e.g. by `--dir`).
pub fn load_pool(roots: &[PathBuf], archive: bool) -> Pool {
    let mut pool = Pool::default();
    let mut visited = crate::fsread::Visited::default();
    let mut seen: Vec<&PathBuf> = Vec::new();
    for root in roots {
        if seen.contains(&root) {
            continue;
        }
        seen.push(root);
        if root.is_file() {
            let dir = root.parent().unwrap_or(Path::new(".")).to_path_buf();
            let mut run = RunDir {
                path: dir,
                sidecars: Vec::new(),
                bad_files: 0,
            };
            load_file(root, &mut run, &mut pool.errors);
            pool.runs.push(run);
        } else {
            walk(root, 0, &mut pool, &mut visited);
        }
    }
    pool.runs.sort_by(|a, b| a.path.cmp(&b.path));
    if archive {
        for run in &mut pool.runs {
            for s in &mut run.sidecars {
                s.sidecar.run_source = Some(RunSource::Archive);
            }
        }
    }
    pool
}

fn walk(dir: &Path, depth: usize, pool: &mut Pool, visited: &mut crate::fsread::Visited) {
    if !visited.first_visit(dir) {
        return;
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            pool.errors.push(SidecarError::io("list directory", dir, e));
            return;
        }
    };
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() {
            if !name.starts_with('.') {
                subdirs.push(path);
            }
        } else if is_sidecar_file_name(&name) {
            files.push(path);
        }
    }
    if !files.is_empty() {
        files.sort();
        let mut run = RunDir {
            path: dir.to_path_buf(),
            sidecars: Vec::new(),
            bad_files: 0,
        };
        for f in &files {
            load_file(f, &mut run, &mut pool.errors);
        }
        pool.runs.push(run);
    }
    if depth < MAX_DEPTH {
        subdirs.sort();
        for d in subdirs {
            walk(&d, depth + 1, pool, visited);
        }
    }
}

fn load_file(path: &Path, run: &mut RunDir, errors: &mut Vec<SidecarError>) {
    match read_sidecar(path) {
        Ok(sidecar) => run.sidecars.push(LoadedSidecar {
            path: path.to_path_buf(),
            sidecar,
        }),
        Err(e) => {
            run.bad_files += 1;
            errors.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn minimal_value() -> Value {
        serde_json::to_value(SidecarResult::new("t", "1n1l1c1t", "eevdf")).expect("to value")
    }

    fn parse(v: &Value) -> Result<SidecarResult> {
        parse_sidecar(
            serde_json::to_string(v).expect("ser").as_bytes(),
            Path::new("/runs/x/t.ktstr.json"),
        )
    }

    #[test]
    fn missing_option_key_reads_as_none() {
        let mut v = minimal_value();
        let obj = v.as_object_mut().expect("object");
        for key in [
            "monitor",
            "kvm_stats",
            "host",
            "run_source",
            "project_commit",
        ] {
            obj.remove(key);
        }
        obj.insert("kernel_version".into(), json!("7.2.13"));
        let stats = obj["stats"].as_object_mut().expect("stats object");
        // Defaulted keys: `phases` (the reference's), `verdict_details` (ours).
        stats.remove("phases");
        stats.remove("verdict_details");
        let s = parse(&v).expect("missing Options are fine");
        assert_eq!(s.monitor, None);
        assert_eq!(s.host, None);
        assert_eq!(s.kernel_version.as_deref(), Some("7.2.13"));
        assert!(s.stats.phases.is_empty() && s.stats.verdict_details.is_empty());

        // A plain number the reference requires stays required.
        let mut v = minimal_value();
        v["stats"]
            .as_object_mut()
            .expect("stats")
            .remove("worst_spread");
        assert!(
            matches!(parse(&v), Err(SidecarError::MissingKey { key, within, .. }) if key == "worst_spread" && within == "stats")
        );
    }

    #[test]
    fn missing_required_key_names_key_and_file() {
        let mut v = minimal_value();
        v.as_object_mut().expect("object").remove("passed");
        let err = parse(&v).expect_err("passed is required");
        assert!(
            matches!(&err, SidecarError::MissingKey { key, within, .. } if key == "passed" && within.is_empty()),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("`passed`") && text.contains("/runs/x/t.ktstr.json"),
            "{text}"
        );

        // Nested: a required key of a cgroup.
        let mut v = minimal_value();
        v["stats"]["cgroups"] = json!([{"cgroup_name": "cg0"}]);
        let err = parse(&v).expect_err("cgroup fields are required");
        match &err {
            SidecarError::MissingKey { key, within, .. } => {
                assert_eq!(within, "stats.cgroups[0]");
                assert!(!key.is_empty());
            }
            other => panic!("expected MissingKey, got {other:?}"),
        }
        // A required list is required too.
        let mut v = minimal_value();
        v.as_object_mut().expect("object").remove("kargs");
        assert!(matches!(parse(&v), Err(SidecarError::MissingKey { key, .. }) if key == "kargs"));
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let mut v = minimal_value();
        let obj = v.as_object_mut().expect("object");
        obj.insert("from_the_future".into(), json!({"x": [1, 2]}));
        v["stats"]
            .as_object_mut()
            .expect("stats")
            .insert("new_stat".into(), json!(3));
        let s = parse(&v).expect("unknown keys ignored");
        assert_eq!(s, SidecarResult::new("t", "1n1l1c1t", "eevdf"));
    }

    #[test]
    fn bad_files_get_clear_errors() {
        let p = Path::new("bad.ktstr.json");
        let not_json = parse_sidecar(b"hello", p).expect_err("not json");
        assert!(
            matches!(not_json, SidecarError::NotJson { .. }),
            "{not_json:?}"
        );
        assert!(not_json.to_string().contains("bad.ktstr.json"));

        let full = serde_json::to_string_pretty(&minimal_value()).expect("ser");
        let cut = &full.as_bytes()[..full.len() / 2];
        let trunc = parse_sidecar(cut, p).expect_err("truncated");
        assert!(matches!(trunc, SidecarError::Truncated { .. }), "{trunc:?}");
        assert!(matches!(
            parse_sidecar(b"", p),
            Err(SidecarError::Truncated { .. })
        ));

        let mut v = minimal_value();
        v["vcpus"] = json!("four");
        let wrong = parse(&v).expect_err("wrong type");
        match &wrong {
            SidecarError::WrongType { key, detail, .. } => {
                assert_eq!(key, "vcpus");
                assert!(detail.contains("four"), "{detail}");
            }
            other => panic!("expected WrongType, got {other:?}"),
        }
        let mut v = minimal_value();
        v["run_source"] = json!("moon");
        assert!(
            matches!(parse(&v), Err(SidecarError::WrongType { key, .. }) if key == "run_source")
        );

        assert!(matches!(
            parse_sidecar(b"[1, 2]", p),
            Err(SidecarError::WrongType { .. })
        ));
        let trailing = format!("{full} x");
        assert!(matches!(
            parse_sidecar(trailing.as_bytes(), p),
            Err(SidecarError::NotJson { .. })
        ));

        let mut v = minimal_value();
        v["passed"] = json!(true);
        v["skipped"] = json!(true);
        let bad = parse(&v).expect_err("two verdict bits");
        assert!(bad.to_string().contains("passed and skipped"), "{bad}");
    }

    #[test]
    fn non_finite_numbers_are_written_as_zero_and_null_is_rejected() {
        let mut s = SidecarResult::new("t", "1n1l1c1t", "eevdf");
        s.stats.worst_migration_ratio = f64::NAN;
        s.stats.ext_metrics.insert("ratio".into(), f64::INFINITY);
        s.stats.ext_metrics.insert("fine".into(), 2.5);
        let json = s.to_json_pretty().expect("ser");
        assert!(json.contains("\"worst_migration_ratio\": 0.0"), "{json}");
        assert!(!json.contains("null,\n    \"total_iterations\""));
        let back = parse_sidecar(json.as_bytes(), Path::new("x")).expect("reads");
        assert_eq!(back.stats.worst_migration_ratio, 0.0);
        assert_eq!(
            back.stats.ext_metrics.keys().collect::<Vec<_>>(),
            ["fine"],
            "a non-finite entry is left out"
        );
        // null in a plain number of a current-shape file is what the reference
        // rejects too (old-shape files are upgraded, see `reads_old_sidecars`).
        let mut v = minimal_value();
        v["monitor"] = serde_json::to_value(crate::MonitorSummary::default()).unwrap();
        v["monitor"]["total_samples"] = Value::Null;
        assert!(
            matches!(parse(&v), Err(SidecarError::WrongType { key, .. }) if key == "monitor.total_samples")
        );
    }

    fn data(name: &str) -> (PathBuf, SidecarResult) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name);
        let s = read_sidecar(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        (path, s)
    }

    /// Sidecars the reference writes read with every value in place.
    #[test]
    fn reads_reference_sidecars() {
        let (_, full) = data("reference-full.ktstr.json");
        assert!(full.is_pass());
        assert_eq!(full.scheduler, "scx_lavd");
        assert_eq!(full.resolve_source, Some(crate::ResolveSource::AutoBuilt));
        let pm = &full.metrics[0];
        assert_eq!(
            pm.payload, "",
            "the reference names no payload per invocation"
        );
        let pol: Vec<crate::Polarity> = pm.metrics.iter().map(|m| m.polarity).collect();
        use crate::Polarity::*;
        assert_eq!(
            pol,
            [
                LowerBetter,
                HigherBetter,
                TargetValue(50.0),
                Unknown,
                Informational
            ]
        );
        assert_eq!(pm.metrics[3].stream, crate::MetricStream::Stderr);
        let cg = full.stats.cgroup("cg0").expect("cg0");
        assert!(cg.wake_measured && cg.timer_measured && cg.run_delay_measured);
        assert_eq!(cg.p999_timer_latency_us, 890.0);
        assert_eq!(cg.cpus_used.iter().copied().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(cg.taobench_whole.as_ref().map(|t| t.get_cmds), Some(1000));
        assert_eq!(full.stats.worst_p99_wake_latency_us(), Some(180.5));
        let phase = full.stats.phase(1).expect("phase 1");
        assert_eq!((phase.label.as_str(), phase.sample_count), ("Step[0]", 2));
        let pc = &phase.per_cgroup["cg0"];
        assert_eq!(pc.wake_latencies_ns, [18_000, 21_000, 180_500]);
        let sb = pc.schbench.as_ref().expect("schbench");
        assert_eq!(sb.wakeup.plat.len(), crate::stats::PLAT_BUCKETS);
        let m = full.monitor.as_ref().expect("monitor");
        assert_eq!(m.event_deltas.as_ref().map(|d| d.total_fallback), Some(12));
        assert_eq!(
            m.schedstat_deltas
                .as_ref()
                .map(|d| d.total_schedstat_wall_sec),
            Some(3.0)
        );
        assert_eq!(
            m.prog_stats_deltas.as_ref().map(|p| p[0].nsecs_per_call),
            Some(500.0)
        );
        assert!(m.violations.is_empty() && m.psi_cpu_some_avg10.is_none());
        let last = full.stimulus_events.last().expect("events");
        assert!(last.is_step_end && last.step_index == Some(1));
        let host = full.host.as_ref().expect("host");
        assert_eq!(host.cpufreq_governor[&0], "performance");
        assert_eq!(host.task_delayacct, Some(crate::DelayacctState::On));
        assert_eq!(host.heap_state.as_ref().and_then(|h| h.narenas), Some(4));
        assert_eq!(host.engine, None);
        assert_eq!(
            full.perf_delta_assertions[0].direction,
            Some(crate::Polarity::LowerBetter)
        );

        let (_, min) = data("reference-minimal.ktstr.json");
        assert!(min.is_skip());
        assert_eq!(min.stats, crate::ScenarioStats::default());
        assert_eq!((min.monitor, min.host), (None, None));
    }

    /// The reference leaves out a None of the monitor's deltas and of every host field
    /// (and an empty cpufreq map); those read as None / empty.
    #[test]
    fn keys_the_reference_omits_read_as_none() {
        let text = include_str!("../tests/data/reference-full.ktstr.json");
        let mut v: Value = serde_json::from_str(text).unwrap();
        let m = v["monitor"].as_object_mut().unwrap();
        for k in [
            "event_deltas",
            "schedstat_deltas",
            "sched_domain_lb",
            "prog_stats_deltas",
            "bpf_map_fields",
        ] {
            m.remove(k);
        }
        v["host"] = json!({"arch": "x86_64"});
        let s = parse(&v).expect("reads");
        let m = s.monitor.expect("monitor");
        assert_eq!((m.event_deltas, m.schedstat_deltas), (None, None));
        assert_eq!(
            (m.sched_domain_lb, m.prog_stats_deltas, m.bpf_map_fields),
            (None, None, None)
        );
        let h = s.host.expect("host");
        assert_eq!(h.arch.as_deref(), Some("x86_64"));
        assert!(h.cpufreq_governor.is_empty() && h.cpu_model.is_none() && h.heap_state.is_none());
    }

    /// Sidecars ktstr wrote before its nested types followed the reference still read:
    /// the hand-written minimal one and one the old writer produced.
    #[test]
    fn reads_old_sidecars() {
        let (_, min) = data("minimal.ktstr.json");
        let cg = min
            .stats
            .cgroup("cg0")
            .expect("`name` reads as cgroup_name");
        assert_eq!(cg.total_iterations, 1200);
        assert!(!cg.wake_measured && !cg.timer_measured && !cg.run_delay_measured);
        assert_eq!(cg.num_cpus, 2);

        let (_, old) = data("legacy-full.ktstr.json");
        let pm = &old.metrics[0];
        assert_eq!(pm.payload, "schbench");
        assert_eq!(pm.metrics[0].polarity, crate::Polarity::LowerBetter);
        assert_eq!(pm.metrics[2].polarity, crate::Polarity::TargetValue(75.0));
        assert_eq!(pm.metrics[0].stream, crate::MetricStream::Stderr);
        let st = &old.stats;
        assert_eq!(st.worst_p99_wake_latency_us(), Some(180.5));
        assert_eq!(st.worst_run_delay_us(), Some(2400.0));
        assert_eq!(st.total_cpus, 8);
        let cg0 = st.cgroup("cg0").expect("cg0");
        assert!(cg0.wake_measured && cg0.timer_measured && cg0.run_delay_measured);
        assert_eq!(cg0.p999_timer_latency_us, 890.0);
        assert!(!cg0.ext_metrics.contains_key("p999_timer_latency_us"));
        let cg1 = st.cgroup("cg1").expect("cg1");
        assert!(!cg1.timer_measured, "its timer numbers were null");
        assert_eq!(cg1.migration_ratio, 0.0, "NaN was written as null");
        assert_eq!(cg1.max_gap_cpu, 0);
        let p1 = st.phase(1).expect("phase 1");
        assert_eq!(p1.label, "Step[0]");
        assert_eq!(p1.total_iterations(), Some(78_500));
        assert_eq!(p1.per_cgroup["cg1"].total_iterations, 38_500);
        let m = old.monitor.as_ref().expect("monitor");
        let ev = m.event_deltas.as_ref().expect("scx_events -> event_deltas");
        assert_eq!(ev.total_fallback, 12);
        let ss = m
            .schedstat_deltas
            .as_ref()
            .expect("schedstat -> schedstat_deltas");
        assert_eq!((ss.total_run_delay, ss.total_pcount), (52_000_000, 90_000));
        let progs = m.prog_stats_deltas.as_ref().expect("prog_stats");
        assert_eq!(progs[0].nsecs_per_call, 300.0);
        assert_eq!(m.violations.len(), 1);
        let ev: Vec<(&str, bool, bool)> = old
            .stimulus_events
            .iter()
            .map(|e| (e.label.as_str(), e.is_step_end, e.is_terminal))
            .collect();
        assert_eq!(
            ev,
            [("StepStart[0]", false, false), ("StepEnd[0]", true, false)]
        );
        assert_eq!(
            old.host.as_ref().and_then(|h| h.engine),
            Some(crate::Engine::Kvm)
        );
        // What the upgraded file writes is accepted by the reference.
        let r = crate::conformance::check_text(&old.to_json_pretty().unwrap()).unwrap();
        assert!(r.unexpected().is_empty(), "{r}");
    }

    #[test]
    fn pool_keeps_good_files_and_reports_each_bad_one() {
        let root = tempfile::tempdir().expect("tempdir");
        let run_a = root.path().join("7.2.13-abc1234");
        let run_b = root.path().join("unknown-unknown");
        let mut s = SidecarResult::new("one", "1n1l1c1t", "eevdf");
        s.set_outcome(crate::Outcome::Pass);
        s.run_source = Some(RunSource::Local);
        s.write_to_dir(&run_a).expect("write");
        SidecarResult::new("two", "1n1l1c1t", "eevdf")
            .write_to_dir(&run_a)
            .expect("write");
        SidecarResult::new("three", "1n1l1c1t", "eevdf")
            .write_to_dir(&run_b.join("sub"))
            .expect("write");
        fs::write(run_a.join("garbage.ktstr.json"), "not json").expect("write");
        fs::write(run_b.join("cut.ktstr.json"), "{\"test_name\": \"x\"").expect("write");
        fs::write(run_a.join("notes.txt"), "ignored").expect("write");
        fs::write(run_a.join("one.ktstr.json.tmp.1.0"), "ignored").expect("write");

        let pool = load_pool(&[root.path().to_path_buf()], false);
        let dirs: Vec<_> = pool.runs.iter().map(|r| r.path.clone()).collect();
        assert_eq!(dirs, [run_a.clone(), run_b.clone(), run_b.join("sub")]);
        assert_eq!(pool.runs[0].sidecars.len(), 2);
        assert_eq!(pool.runs[0].bad_files, 1);
        assert_eq!(pool.runs[1].sidecars.len(), 0);
        assert_eq!(pool.runs[1].bad_files, 1);
        assert_eq!(pool.sidecars().count(), 3);
        assert_eq!(pool.errors.len(), 2);
        let msgs: Vec<String> = pool.errors.iter().map(|e| e.to_string()).collect();
        assert!(msgs
            .iter()
            .any(|m| m.contains("garbage.ktstr.json") && m.contains("not valid JSON")));
        assert!(msgs
            .iter()
            .any(|m| m.contains("cut.ktstr.json") && m.contains("truncated")));
        assert!(pool
            .sidecars()
            .all(|l| l.sidecar.run_source != Some(RunSource::Archive)));

        // Naming the pool explicitly marks it as an archive; a file root works too.
        let archived = load_pool(std::slice::from_ref(&run_a), true);
        assert_eq!(archived.sidecars().count(), 2);
        assert!(archived
            .sidecars()
            .all(|l| l.sidecar.run_source == Some(RunSource::Archive)));
        let one = load_pool(&[run_a.join(s.file_name())], false);
        assert_eq!(one.sidecars().count(), 1);
        assert!(one.errors.is_empty());

        let missing = load_pool(&[root.path().join("nope")], false);
        assert_eq!(missing.errors.len(), 1);
        assert!(missing.runs.is_empty());
    }

    #[test]
    fn hostile_pools_are_read_once_without_hanging_or_growing() {
        let root = tempfile::tempdir().expect("tempdir");
        let run = crate::testutil::plant_hostile_pool(root.path());
        SidecarResult::new("one", "1n1l1c1t", "eevdf")
            .write_to_dir(&run)
            .expect("write");

        let pool = load_pool(&[root.path().to_path_buf()], false);
        assert_eq!(pool.sidecars().count(), 1);
        assert_eq!(pool.errors.len(), 2, "{:?}", pool.errors);
    }
}
