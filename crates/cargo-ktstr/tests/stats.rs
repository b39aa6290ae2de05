//! `cargo ktstr stats` end to end: the built binary on sidecars written by the library,
//! on the hand-written minimal example, and on pools with bad files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ktstr_sidecar::{example, Outcome, SidecarResult};

fn ktstr(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cargo-ktstr"));
    // As cargo runs it: `cargo ktstr stats ...` passes "ktstr" first.
    cmd.arg("ktstr").args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run cargo-ktstr")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn minimal_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ktstr-sidecar/tests/data/minimal.ktstr.json")
}

#[test]
fn explain_a_sidecar_written_by_the_library() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = example::fully_populated();
    let path = s.write_to_dir(dir.path()).expect("write");
    let path_str = path.to_str().expect("utf8 path");

    let out = ktstr(&["stats", "explain", path_str], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("variant_hash:  {}", s.variant_hash_hex())),
        "{text}"
    );
    assert!(text.contains(&format!("file name:     {}", s.file_name())));
    assert!(!text.contains("WARNING"), "name matches: {text}");
    assert!(text.contains("kernel_commit"));
    assert!(text.contains("0 null"), "everything is set: {text}");

    let out = ktstr(&["stats", "explain", path_str, "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    assert_eq!(v["variant_hash"], s.variant_hash_hex());
    assert_eq!(v["expected_file_name"], s.file_name());
    assert_eq!(v["file_name_matches"], true);
    assert_eq!(v["outcome"], "pass");
    let fields = v["fields"].as_array().expect("fields");
    let kc = fields
        .iter()
        .find(|f| f["field"] == "kernel_commit")
        .expect("kernel_commit listed");
    assert_eq!(kc["value"], "fedcba9");
}

#[test]
fn explain_the_hand_written_minimal_sidecar() {
    let file = minimal_example();
    let text = std::fs::read_to_string(&file).expect("example file");
    let s = ktstr_sidecar::parse_sidecar(text.as_bytes(), &file).expect("example parses");

    let out = ktstr(&["stats", "explain", file.to_str().expect("utf8")], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("verdict:       pass"), "{text}");
    assert!(text.contains(&s.variant_hash_hex()));
    // The example is called minimal.ktstr.json, not {test}-{hash}.ktstr.json: flagged.
    assert!(
        text.contains("WARNING: the file is named minimal.ktstr.json"),
        "{text}"
    );
    // Every left-out Option is explained, with its class.
    for line in [
        "scheduler_commit ",
        "resolve_source ",
        "project_commit ",
        "kernel_commit ",
        "host ",
        "run_source ",
    ] {
        let l = text
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("no line for {line}: {text}"));
        assert!(l.contains("null  ["), "{l}");
    }
    assert!(text.lines().any(|l| l.starts_with("resolve_source ")
        && l.contains("[expected]")
        && l.contains("EEVDF")));
    assert!(text.lines().any(|l| l.starts_with("project_commit ")
        && l.contains("[actionable]")
        && l.contains("KTSTR_PROJECT_COMMIT")));
}

#[test]
fn explain_bad_files_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("notjson.ktstr.json", "this is not json", "not valid JSON"),
        (
            "cut.ktstr.json",
            "{\"test_name\": \"t\", \"topo",
            "truncated",
        ),
        (
            "types.ktstr.json",
            "{\"test_name\": 5}",
            "wrong value at key `test_name`",
        ),
    ];
    for (name, body, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, body).expect("write");
        let out = ktstr(&["stats", "explain", p.to_str().expect("utf8")], &[]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
    }
}

fn write_pool(root: &Path) -> (PathBuf, PathBuf) {
    let run_a = root.join("7.2.13-abc1234");
    let run_b = root.join("7.2.13-def5678");
    let mut pass = SidecarResult::new("alpha", "1n1l2c1t", "eevdf");
    pass.set_outcome(Outcome::Pass);
    pass.timestamp = "2026-05-07T09:00:00Z".into();
    pass.kernel_version = Some("7.2.13".into());
    pass.project_commit = Some("abc1234".into());
    pass.stats.total_iterations = 4242;
    pass.cleanup_duration_ms = Some(17);
    pass.write_to_dir(&run_a).expect("write");
    let mut fail = SidecarResult::new("beta", "1n2l2c1t", "scx_lavd");
    fail.timestamp = "2026-05-07T09:01:00Z".into();
    fail.kernel_version = Some("7.2.13".into());
    fail.project_commit = Some("abc1234".into());
    fail.stats
        .verdict_details
        .push("cg0: worker made no progress".into());
    fail.write_to_dir(&run_a).expect("write");
    let mut skip = SidecarResult::new("gamma", "1n1l2c1t", "eevdf");
    skip.set_outcome(Outcome::Skip);
    skip.timestamp = "2026-05-08T10:00:00Z".into();
    skip.write_to_dir(&run_b).expect("write");
    std::fs::write(run_b.join("broken.ktstr.json"), "{").expect("write");
    (run_a, run_b)
}

#[test]
fn list_shows_good_runs_and_reports_bad_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (run_a, run_b) = write_pool(dir.path());
    let root = dir.path().to_str().expect("utf8");

    let out = ktstr(&["stats", "list", "--dir", root], &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a bad file makes the exit non-zero"
    );
    let text = stdout(&out);
    let row_a = text
        .lines()
        .find(|l| l.starts_with(run_a.to_str().expect("utf8")))
        .unwrap_or_else(|| panic!("run a listed: {text}"));
    let cells: Vec<&str> = row_a.split_whitespace().collect();
    // RUN TESTS DATE KERNEL COMMIT PASS FAIL SKIP INCONCL BAD
    assert_eq!(
        &cells[1..],
        [
            "2",
            "2026-05-07T09:00:00Z",
            "7.2.13",
            "abc1234",
            "1",
            "1",
            "0",
            "0",
            "0"
        ]
    );
    assert!(text.contains(run_b.to_str().expect("utf8")));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("broken.ktstr.json") && err.contains("truncated"),
        "{err}"
    );

    // JSON, and the default pool from KTSTR_RUNS_ROOT.
    let out = ktstr(
        &["stats", "list", "--json"],
        &[("KTSTR_RUNS_ROOT", dir.path())],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["skip"], 1);
    assert_eq!(runs[1]["bad_files"], 1);
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(1));

    // `cargo ktstr stats` alone is the list.
    let out = ktstr(&["stats"], &[("KTSTR_RUNS_ROOT", dir.path())]);
    assert!(stdout(&out).contains("7.2.13-abc1234"));
}

#[test]
fn show_a_run_dir_and_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (run_a, _) = write_pool(dir.path());
    let out = ktstr(&["stats", "show", run_a.to_str().expect("utf8")], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let alpha = text
        .lines()
        .find(|l| l.starts_with("alpha "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        alpha.contains("pass") && alpha.contains("4242") && alpha.contains("17"),
        "{alpha}"
    );
    assert!(text
        .lines()
        .any(|l| l.starts_with("beta ") && l.contains("fail")));
    assert!(text.contains("beta: cg0: worker made no progress"));

    let file = run_a.join(SidecarResult::new("alpha", "1n1l2c1t", "eevdf").file_name());
    let out = ktstr(
        &["stats", "show", file.to_str().expect("utf8"), "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(1));
    assert_eq!(v[0]["test_name"], "alpha");
    assert_eq!(v[0]["cleanup_duration_ms"], 17);
}

/// The per-run HTML report in a real headless browser (Debian's chromium): it loads
/// with no console error and renders a screenshot of the plots. Skips without
/// chromium (fails under KTSTR_NO_SKIP; `scripts/setup-host` installs it).
#[test]
fn html_report_renders_in_a_headless_browser() {
    use ktstr_sidecar::series::{MonitorSeries, SeriesPoint, SERIES_VERSION};
    let dir = tempfile::tempdir().expect("tempdir");
    let s = example::fully_populated();
    let path = s.write_to_dir(dir.path()).expect("write");
    let series = MonitorSeries {
        version: SERIES_VERSION,
        interval_ms: 100,
        points: (0..40)
            .map(|i| SeriesPoint {
                elapsed_ms: i * 100,
                cpus: 4,
                nr_running: Some(2 + (i % 5) as u32),
                run_delay_us: Some(50.0 + i as f64),
                psi_cpu_some: Some(i as f64 / 4.0),
                scx_state: Some("enabled".into()),
                scx_events: [("SCX_EV_DISPATCH_LOCAL_DSQ_OFFLINE".to_string(), i % 3)]
                    .into_iter()
                    .collect(),
            })
            .collect(),
    };
    series
        .write(&MonitorSeries::path_for(&path))
        .expect("series");
    let html = dir.path().join("report.html");
    let out = ktstr(
        &[
            "stats",
            "show",
            path.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let page = std::fs::read_to_string(&html).expect("the page");
    assert!(
        page.contains("Run-queue depth") && page.contains("<svg"),
        "{page}"
    );

    // A directory of runs gets one page each and an index.
    let pages = dir.path().join("pages");
    let out = ktstr(
        &[
            "stats",
            "show",
            dir.path().to_str().unwrap(),
            "--html",
            pages.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let index = std::fs::read_to_string(pages.join("index.html")).expect("index");
    assert!(index.contains(&s.test_name), "{index}");

    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        let skip_ok = std::env::var_os("KTSTR_NO_SKIP").is_none_or(|v| v.is_empty());
        assert!(skip_ok, "no chromium: run scripts/setup-host");
        eprintln!("SKIP: no chromium (scripts/setup-host installs it)");
        return;
    };
    let shot = dir.path().join("report.png");
    let profile = dir.path().join("profile");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1000,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium");
    let log = stderr(&out);
    assert!(out.status.success(), "chromium failed: {log}");
    // Page errors reach the log as console messages; the browser's own complaints
    // (no D-Bus in a container) are not the page's.
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console errors: {console:#?}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // A blank page compresses to a few KiB; plots and tables do not.
    assert!(png.len() > 40_000, "screenshot of {} bytes", png.len());
    // Kept for a person to look at, when asked.
    if let Some(keep) = std::env::var_os("KTSTR_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).expect("keep the screenshot");
    }
}
