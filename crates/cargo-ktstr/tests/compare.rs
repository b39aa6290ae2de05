//! `cargo ktstr stats compare|show|metrics` and `cargo ktstr perf-delta` end to end: the
//! built binary on pools written by the library, a throwaway git repository, and a stub
//! test command standing in for `cargo nextest run`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ktstr_sidecar::stats::CgroupStats;
use ktstr_sidecar::stimulus::StimulusEvent;
use ktstr_sidecar::testutil::git;
use ktstr_sidecar::{example, KvmStatsTotals, Outcome, RunSource, SidecarResult};

fn ktstr(args: &[&str], cwd: Option<&Path>, envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cargo-ktstr"));
    cmd.arg("ktstr").args(args);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    cmd.env_remove("KTSTR_RUNS_ROOT")
        .env_remove("KTSTR_SIDECAR_DIR")
        .env_remove("KTSTR_PROJECT_COMMIT");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run cargo-ktstr")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A passing 10 s run of `test` at `commit` with `units` work units in one cgroup.
fn run(test: &str, commit: &str, units: u64) -> SidecarResult {
    let mut s = SidecarResult::new(test, "1n1l2c1t", "eevdf");
    s.work_type = "SpinWait".into();
    s.kernel_version = Some("7.2.13".into());
    s.project_commit = Some(commit.into());
    s.run_source = Some(RunSource::Local);
    s.timestamp = "2026-05-07T09:00:00Z".into();
    s.run_id = format!("{commit}-{units}");
    s.set_outcome(Outcome::Pass);
    s.stats.total_iterations = units;
    s.stats.cgroups = vec![CgroupStats {
        cgroup_name: "cg0".into(),
        total_iterations: units,
        p99_wake_latency_us: 40.0,
        wake_measured: true,
        ..CgroupStats::default()
    }];
    s.stimulus_events = vec![StimulusEvent {
        elapsed_ms: 10_000,
        label: "StepEnd[0]".into(),
        step_index: Some(1),
        is_step_end: true,
        ..StimulusEvent::default()
    }];
    s
}

/// Four runs per commit under `{root}/7.2.13-{commit}/run{i}`; `steady` is 10 % slower
/// at `b`, `other` is unchanged; one expected failure of B that would look terrible.
fn write_two_commits(root: &Path, a: &str, b: &str) {
    for i in 0..4u64 {
        for (commit, steady) in [(a, 100_000 + 50 * i), (b, 90_000 + 50 * i)] {
            let dir = root
                .join(format!("7.2.13-{commit}"))
                .join(format!("run{i}"));
            run("steady", commit, steady)
                .write_to_dir(&dir)
                .expect("write");
            run("other", commit, 50_000 + 10 * i)
                .write_to_dir(&dir)
                .expect("write");
        }
    }
    let mut xfail = run("other", b, 1);
    xfail.expected_failure = true;
    xfail
        .write_to_dir(&root.join(format!("7.2.13-{b}")).join("run9"))
        .expect("write");
}

#[test]
fn compare_finds_the_regression_and_gates_on_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_two_commits(dir.path(), "aaaaaaa", "bbbbbbb");
    let root = dir.path().to_str().expect("utf8");
    let html = dir.path().join("report.html");
    let out = ktstr(
        &[
            "stats",
            "compare",
            "--dir",
            root,
            "--a-project-commit",
            "aaaaaaa",
            "--b-project-commit",
            "bbbbbbb",
            "--fail-threshold",
            "1",
            "--html",
            html.to_str().expect("utf8"),
        ],
        None,
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(!stdout.contains('\x1b'), "no colour when not a terminal");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("steady") && l.contains(" work_rate "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("REGRESSION") && line.contains("-10.0%"),
        "{line}"
    );
    assert!(!stdout.lines().any(|l| l.starts_with("other ")), "{stdout}");
    assert!(
        stdout.contains("left out of B: 1 expected_failure"),
        "{stdout}"
    );
    assert!(stdout.contains("FAILED: 2 regression(s)"), "{stdout}");
    let report = std::fs::read_to_string(&html).expect("html written");
    assert_eq!(
        report.matches("<svg").count(),
        2,
        "work_rate and cgroup[cg0].work_rate"
    );
    assert_eq!(report.matches("<circle").count(), 16);

    // JSON of every row (--all), and no gate without --fail-threshold.
    let out = ktstr(
        &[
            "stats",
            "compare",
            "--dir",
            root,
            "--a-project-commit",
            "aaaaaaa",
            "--b-project-commit",
            "bbbbbbb",
            "--json",
            "--all",
        ],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["selected"]["a"], 8);
    assert_eq!(v["selected"]["b"], 9);
    let c = &v["comparison"];
    assert_eq!(c["counts"]["regressions"], 2);
    assert_eq!(c["counts"]["excluded_b"]["expected_failure"], 1);
    let rows = c["rows"].as_array().expect("rows");
    let wr = rows
        .iter()
        .find(|r| r["test_name"] == "steady" && r["metric"] == "work_rate")
        .expect("row");
    assert_eq!(wr["verdict"], "regression");
    assert_eq!(wr["a_values"].as_array().map(Vec::len), Some(4));
    let other = rows
        .iter()
        .find(|r| r["test_name"] == "other" && r["metric"] == "work_rate")
        .expect("row");
    assert_eq!(other["verdict"], "unchanged");
    assert_eq!(
        other["b_values"].as_array().map(Vec::len),
        Some(4),
        "xfail left out"
    );
    assert_eq!(v["gate"]["failed"], false);

    // Per-side pools instead of filters.
    let out = ktstr(
        &[
            "stats",
            "compare",
            "--a-dir",
            &format!("{root}/7.2.13-aaaaaaa"),
            "--b-dir",
            &format!("{root}/7.2.13-bbbbbbb"),
            "--must-fail",
            "cgroup[*].work_rate",
        ],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("--must-fail metric regressed: steady cgroup[cg0].work_rate")
    );

    // Sides that select the same runs are refused.
    let out = ktstr(&["stats", "compare", "--dir", root], None, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("select the same runs"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn show_a_run_by_name_and_a_file_in_depth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().join("7.2.13-abc1234");
    let mut s = example::fully_populated();
    s.kvm_stats = Some(KvmStatsTotals {
        per_vcpu: vec![
            [("exits".to_string(), 1000), ("halt_exits".to_string(), 70)].into(),
            [("exits".to_string(), 3000), ("halt_exits".to_string(), 90)].into(),
        ],
    });
    let file = s.write_to_dir(&run_dir).expect("write");
    let root = dir.path().to_str().expect("utf8");

    // RUN as `stats list` names it, found in the runs root.
    let out = ktstr(
        &["stats", "show", "7.2.13-abc1234"],
        None,
        &[("KTSTR_RUNS_ROOT", root)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(
        t.lines()
            .any(|l| l.starts_with("steady_two_cgroups ") && l.contains("pass")),
        "{t}"
    );

    let out = ktstr(&["stats", "show", file.to_str().expect("utf8")], None, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.contains("KVM counters per vCPU"), "{t}");
    let cells = |vcpu: &str| -> Vec<String> {
        t.lines()
            .find(|l| l.split_whitespace().next() == Some(vcpu))
            .unwrap_or_else(|| panic!("vCPU {vcpu}: {t}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    // VCPU EXITS EXITS/S HALT_EXITS ...
    assert_eq!(cells("1")[..4], ["1", "3000", "273", "90"]);
    assert_eq!(cells("all")[..4], ["all", "4000", "364", "160"]);
    assert!(t.contains("monitor:  110 samples"));
    assert!(t.contains("cleanup:  41 ms"));

    let out = ktstr(
        &["stats", "show", "--json", file.to_str().expect("utf8")],
        None,
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[0]["test_name"], "steady_two_cgroups");
    assert_eq!(v[0]["kvm_per_vcpu"][1]["halt_exits"], 90);
    assert_eq!(v[0]["cleanup_duration_ms"], 41);

    let out = ktstr(
        &["stats", "show", "nope"],
        None,
        &[("KTSTR_RUNS_ROOT", root)],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no run directory of that name"));
}

#[test]
fn metrics_lists_the_registry() {
    let out = ktstr(&["stats", "metrics", "--json"], None, &[]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let all = v.as_array().expect("array");
    let wr = all
        .iter()
        .find(|d| d["name"] == "work_rate")
        .expect("work_rate");
    assert_eq!(wr["polarity"], "HigherBetter", "spelled as in sidecars");
    assert_eq!(wr["min_rel"], 0.05);
    let out = ktstr(&["stats", "metrics"], None, &[]);
    assert!(text(&out.stdout)
        .lines()
        .any(|l| l.starts_with("cgroup[*].p99_wake_latency_us ") && l.contains("lower")));
}

/// A repository whose HEAD~1 has `speed.txt` = 100 and HEAD has 90.
fn two_commit_repo(dir: &Path) -> (String, String) {
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("speed.txt"), "100\n").expect("write");
    git(dir, &["add", "speed.txt"]);
    git(dir, &["commit", "-q", "-m", "fast"]);
    let base = git(dir, &["rev-parse", "--short=7", "HEAD"]);
    std::fs::write(dir.join("speed.txt"), "90\n").expect("write");
    git(dir, &["commit", "-q", "-am", "slow"]);
    let head = git(dir, &["rev-parse", "--short=7", "HEAD"]);
    (base, head)
}

#[test]
fn perf_delta_over_cached_runs_reads_only_the_two_commits() {
    let repo = tempfile::tempdir().expect("tempdir");
    let (base, head) = two_commit_repo(repo.path());
    let runs = tempfile::tempdir().expect("tempdir");
    write_two_commits(runs.path(), &base, &head);
    // A run directory of another commit: never read, so its garbage is never reported.
    let other = runs.path().join("7.2.13-0123456");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(other.join("broken.ktstr.json"), "{").expect("write");
    let root = runs.path().to_str().expect("utf8");

    let out = ktstr(
        &["perf-delta", "--base", "HEAD~1", "--json"],
        Some(repo.path()),
        &[("KTSTR_RUNS_ROOT", root)],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "regression fails by default: {}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("broken"),
        "{}",
        text(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["gate"]["failed"], true);
    assert_eq!(v["comparison"]["counts"]["regressions"], 2);
    assert!(
        v["a"].as_str().is_some_and(|a| a.contains(&base)),
        "{}",
        v["a"]
    );
    assert!(
        v["b"].as_str().is_some_and(|b| b.contains(&head)),
        "{}",
        v["b"]
    );

    // A threshold above the count passes; the same commit on both sides is refused.
    let out = ktstr(
        &[
            "perf-delta",
            "--base",
            "HEAD~1",
            "--head",
            "HEAD",
            "--fail-threshold",
            "3",
        ],
        Some(repo.path()),
        &[("KTSTR_RUNS_ROOT", root)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("passed: 2 regression(s), below --fail-threshold 3"));
    let out = ktstr(
        &["perf-delta", "--base", "HEAD"],
        Some(repo.path()),
        &[("KTSTR_RUNS_ROOT", root)],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("same commit"),
        "{}",
        text(&out.stderr)
    );

    // An explicit --dir pool is read whole, whatever its directories are called.
    let ci = tempfile::tempdir().expect("tempdir");
    for i in 0..3u64 {
        let shard = ci.path().join("shard-1");
        run("steady", &base, 100_000 + i)
            .write_to_dir(&shard.join(format!("a{i}")))
            .expect("write");
        run("steady", &head, 80_000 + i)
            .write_to_dir(&shard.join(format!("b{i}")))
            .expect("write");
    }
    let empty = tempfile::tempdir().expect("tempdir");
    let out = ktstr(
        &[
            "perf-delta",
            "--base",
            "HEAD~1",
            "--json",
            "--dir",
            ci.path().to_str().expect("utf8"),
        ],
        Some(repo.path()),
        &[("KTSTR_RUNS_ROOT", empty.path().to_str().expect("utf8"))],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["selected"],
        serde_json::json!({"a": 3, "b": 3}),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(v["comparison"]["counts"]["regressions"], 2);

    // No runs of the base: a notice, nothing to gate.
    let out = ktstr(
        &["perf-delta", "--base", "HEAD~1"],
        Some(repo.path()),
        &[("KTSTR_RUNS_ROOT", empty.path().to_str().expect("utf8"))],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("notice: no runs of base"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn perf_delta_noise_adjust_runs_both_sides_with_a_stub_suite() {
    let repo = tempfile::tempdir().expect("tempdir");
    let (base, head) = two_commit_repo(repo.path());
    let runs = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");

    // The stub "suite" writes one sidecar whose work units come from the checkout's
    // speed.txt (100 at the base, 90 at the head) plus the run index, and whose
    // project_commit is what the runner would record.
    let template = run("stub", "COMMITX", 987_654_321);
    let name = template.file_name();
    let tpl_path = work.path().join("template.json");
    std::fs::write(&tpl_path, template.to_json_pretty().expect("json")).expect("write");
    let log = work.path().join("log");
    let script = format!(
        "u=$(( $(cat speed.txt) * 100 + KTSTR_PERF_DELTA_RUN )); mkdir -p \"$KTSTR_SIDECAR_DIR\"; \
         c=${{KTSTR_PROJECT_COMMIT:-$(git rev-parse --short=7 HEAD)}}; \
         sed \"s/987654321/$u/g; s/COMMITX/$c/\" '{tpl}' > \"$KTSTR_SIDECAR_DIR/{name}\"; \
         echo \"$PWD ${{KTSTR_PROJECT_COMMIT:-none}} $KTSTR_RUNS_ROOT\" >> '{log}'",
        tpl = tpl_path.display(),
        log = log.display()
    );
    let out = ktstr(
        &[
            "perf-delta",
            "--base",
            "HEAD~1",
            "--noise-adjust",
            "3",
            "--test-cmd",
            &script,
            "--json",
        ],
        Some(repo.path()),
        &[("KTSTR_RUNS_ROOT", runs.path().to_str().expect("utf8"))],
    );
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stderr}\n{}",
        text(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = v["comparison"]["rows"].as_array().expect("rows");
    let wr = rows
        .iter()
        .find(|r| r["metric"] == "work_rate")
        .expect("work_rate row");
    assert_eq!(wr["verdict"], "regression");
    assert_eq!(wr["a_values"], serde_json::json!([1000.0, 1000.1, 1000.2]));
    assert_eq!(wr["b_values"], serde_json::json!([900.0, 900.1, 900.2]));
    assert!(
        stderr.contains(&format!("[base {base}] checked out")),
        "{stderr}"
    );

    // Three base runs in a checkout (commit named explicitly), three head runs in the
    // working tree itself; all into the shared runs root.
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    let repo_dir = repo.path().canonicalize().expect("canon");
    for l in &lines[..3] {
        assert!(
            l.contains(&format!(" {base} ")) && !l.starts_with(repo_dir.to_str().expect("utf8")),
            "{l}"
        );
    }
    for l in &lines[3..] {
        assert!(
            l.starts_with(repo_dir.to_str().expect("utf8")) && l.contains(" none "),
            "{l}"
        );
    }
    let dirs: Vec<PathBuf> = std::fs::read_dir(runs.path())
        .expect("runs root")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(dirs.len(), 6);
    assert_eq!(
        dirs.iter()
            .filter(|d| d.to_string_lossy().contains(&format!("perf-delta-{head}")))
            .count(),
        3
    );

    // Those runs now sit in the pool: the cached mode sees them too.
    let out = ktstr(
        &["perf-delta", "--base", "HEAD~1", "--json"],
        Some(repo.path()),
        &[("KTSTR_RUNS_ROOT", runs.path().to_str().expect("utf8"))],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["selected"],
        serde_json::json!({"a": 3, "b": 3}),
        "{}",
        text(&out.stderr)
    );

    let out = ktstr(
        &["perf-delta", "--base", "HEAD~1", "--noise-adjust", "1"],
        Some(repo.path()),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("at least 2 runs"));
}
