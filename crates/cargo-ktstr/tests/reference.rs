//! `cargo ktstr stats` on sidecars the reference project writes (ktstr 0.29.0's
//! `SidecarResult`; the golden files of `ktstr-sidecar/tests/data` are in its exact
//! serialization): explain, list, show and compare read them like our own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ktstr_sidecar::read_sidecar;

fn ktstr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cargo-ktstr"))
        .arg("ktstr")
        .args(args)
        .output()
        .expect("run cargo-ktstr")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ktstr-sidecar/tests/data")
        .join(name)
}

/// Copy a golden file into `dir` under the name its variant gives it, with `edit`
/// applied to its text (the reference's bytes otherwise).
fn place(name: &str, dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = edit(std::fs::read_to_string(golden(name)).expect("golden file"));
    std::fs::create_dir_all(dir).expect("mkdir");
    let tmp = dir.join("incoming.json");
    std::fs::write(&tmp, &text).expect("write");
    let s = read_sidecar(&tmp).expect("the golden file reads");
    let path = dir.join(s.file_name());
    std::fs::rename(&tmp, &path).expect("rename");
    path
}

fn utf8(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

#[test]
fn explain_reads_reference_sidecars() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = place("reference-full.ktstr.json", dir.path(), |t| t);
    let out = ktstr(&["stats", "explain", utf8(&full)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("verdict:       pass"), "{text}");
    assert!(
        text.contains("reference:     read by ktstr 0.29.0's own reader"),
        "{text}"
    );
    assert!(!text.contains("WARNING"), "named by its variant: {text}");

    let out = ktstr(&["stats", "explain", utf8(&full), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["reference_rejections"], serde_json::json!([]));
    let field = |name: &str| {
        v["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .find(|f| f["field"] == name)
            .unwrap_or_else(|| panic!("{name} listed"))
            .clone()
    };
    assert_eq!(
        field("stats.cgroups[cg0].p99_wake_latency_us")["value"],
        180.5
    );
    assert_eq!(field("monitor.event_deltas")["value"]["total_fallback"], 12);
    assert_eq!(field("host.task_delayacct")["value"], "on");

    let minimal = place("reference-minimal.ktstr.json", dir.path(), |t| t);
    let out = ktstr(&["stats", "explain", utf8(&minimal)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("verdict:       skip"), "{text}");
    assert!(text
        .lines()
        .any(|l| l.starts_with("monitor ") && l.contains("[expected] the run was skipped")));
}

#[test]
fn explain_flags_an_old_sidecar_the_reference_cannot_read() {
    let old = golden("legacy-full.ktstr.json");
    let out = ktstr(&["stats", "explain", utf8(&old)]);
    assert!(
        out.status.success(),
        "old files still read: {}",
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(
        text.contains("reference:     REJECTED by ktstr 0.29.0's reader"),
        "{text}"
    );
}

#[test]
fn list_and_show_read_reference_sidecars() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("6.14.2-abc1234-dirty");
    let full = place("reference-full.ktstr.json", &run, |t| t);
    place("reference-minimal.ktstr.json", &run, |t| t);

    let out = ktstr(&["stats", "list", "--dir", utf8(dir.path())]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.starts_with(utf8(&run)))
        .unwrap_or_else(|| panic!("the run is listed: {text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    // RUN TESTS DATE KERNEL COMMIT PASS FAIL SKIP INCONCL BAD
    assert_eq!(
        &cells[1..],
        [
            "2",
            "2026-05-07T09:08:07Z",
            "6.14.2",
            "abc1234-dirty",
            "1",
            "0",
            "1",
            "0",
            "0"
        ]
    );

    let out = ktstr(&["stats", "show", utf8(&full)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for metric in [
        "cgroup[cg0].p99_wake_latency_us",
        "cgroup[cg0].p999_timer_latency_us",
        "worst_p99_wake_latency_us",
        "monitor.scx_event[SCX_EV_SELECT_CPU_FALLBACK]",
        "prog[lavd_enqueue].ns_per_call",
        // The reference names no payload per invocation: the primary one stands in.
        "payload[schbench].rps",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(metric)),
            "{metric} in:\n{text}"
        );
    }
}

#[test]
fn compare_pairs_reference_sidecars() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    place("reference-full.ktstr.json", &a.join("run"), |t| t);
    // The same variant at another commit, with half the throughput.
    place("reference-full.ktstr.json", &b.join("run"), |t| {
        t.replace("\"abc1234-dirty\"", "\"bcd2345\"")
            .replace("\"value\": 2400.5,", "\"value\": 1200.0,")
    });
    let out = ktstr(&[
        "stats",
        "compare",
        "--a-dir",
        utf8(&a),
        "--b-dir",
        utf8(&b),
        "--json",
        "--all",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["selected"], serde_json::json!({"a": 1, "b": 1}));
    let rows = v["comparison"]["rows"].as_array().expect("rows");
    let row = |metric: &str| {
        rows.iter()
            .find(|r| r["metric"] == metric)
            .unwrap_or_else(|| panic!("{metric} compared"))
    };
    let rps = row("payload[schbench].rps");
    assert_eq!(rps["test_name"], "steady_cpuset_shrink");
    assert_eq!(rps["a_values"], serde_json::json!([2400.5]));
    assert_eq!(rps["b_values"], serde_json::json!([1200.0]));
    assert_eq!(rps["threshold"]["polarity"], "HigherBetter");
    assert_eq!(
        row("cgroup[cg0].p99_wake_latency_us")["a_values"],
        serde_json::json!([180.5])
    );
    // The text report reads them too.
    let out = ktstr(&["stats", "compare", "--a-dir", utf8(&a), "--b-dir", utf8(&b)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 pair(s) compared"),
        "{}",
        stdout(&out)
    );
}
