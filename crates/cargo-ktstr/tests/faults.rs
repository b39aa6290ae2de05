//! Fault injection with real VMs (`cargo ktstr shell` on the default engine): a run
//! interrupted by SIGTERM or SIGINT tears its VM down, says so, and leaves no guest RAM or
//! scratch directory behind; a run killed with SIGKILL leaves them, and the next run sweeps
//! them; a planted symlink where a run writes is never followed.
//!
//! Boots VMs; needs a kernel and an engine (skips without, fails under KTSTR_NO_SKIP).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;
use common::can_boot;

/// The cases watch the same scratch roots: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Scratch entries of ktstr runs under the roots a run uses.
fn scratch() -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for (root, prefix) in [
        (ktstr::scratch::ram_root(), "ktstr-ram-"),
        (std::env::temp_dir(), "ktstr-run-"),
    ] {
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                out.insert(e.path());
            }
        }
    }
    out
}

/// `cargo ktstr shell` running `sleep 60` in a 2-vCPU guest.
fn long_shell() -> Child {
    Command::new(env!("CARGO_BIN_EXE_cargo-ktstr"))
        .args([
            "shell",
            "--topology",
            "1,1,2,1",
            "--include",
            "/bin/sleep",
            "--exec",
            "sleep 60",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cargo-ktstr starts")
}

/// Wait until the guest is up: the guest's RAM directory exists (qemu-tcg) or, at the
/// latest, a few seconds after start (kvm keeps RAM anonymous).
fn wait_running(before: &BTreeSet<PathBuf>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if scratch()
            .difference(before)
            .any(|p| p.to_string_lossy().contains("ktstr-ram-"))
        {
            // Give the guest time to boot into the command.
            std::thread::sleep(Duration::from_secs(8));
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the shell's guest did not start within 60 s");
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(e) = child.stderr.take() {
        for line in BufReader::new(e).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn interrupted_run_tears_down_and_leaves_nothing(sig: i32, name: &str) {
    let before = scratch();
    let mut shell = long_shell();
    wait_running(&before);
    let started = Instant::now();
    signal(&shell, sig);
    let err = stderr_of(&mut shell);
    let status = shell.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "teardown after {name} took {:?}",
        started.elapsed()
    );
    assert!(
        !status.success(),
        "an interrupted run is not a success: {err}"
    );
    assert!(err.contains(&format!("interrupted by {name}")), "{err}");
    let left: Vec<_> = scratch().difference(&before).cloned().collect();
    assert!(left.is_empty(), "left behind after {name}: {left:?}");
}

#[test]
fn sigterm_and_sigint_tear_the_vm_down_and_leave_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_boot() {
        return;
    }
    interrupted_run_tears_down_and_leaves_nothing(libc::SIGTERM, "SIGTERM");
    interrupted_run_tears_down_and_leaves_nothing(libc::SIGINT, "SIGINT");
}

#[test]
fn a_killed_runs_leftovers_are_swept_by_the_next_run() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_boot() {
        return;
    }
    let before = scratch();
    let mut shell = long_shell();
    wait_running(&before);
    signal(&shell, libc::SIGKILL);
    shell.wait().unwrap();
    let leftovers: Vec<PathBuf> = scratch().difference(&before).cloned().collect();
    // kill -9 runs no handler: whatever the run had open stays until someone sweeps it.
    assert!(
        !leftovers.is_empty(),
        "kill -9 should have left the run's scratch behind"
    );
    // qemu dies with its parent (PDEATHSIG), releasing the RAM files.
    std::thread::sleep(Duration::from_secs(2));
    let out = Command::new(env!("CARGO_BIN_EXE_cargo-ktstr"))
        .args([
            "shell",
            "--topology",
            "1,1,1,1",
            "--include",
            "/bin/true",
            "--exec",
            "true",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in &leftovers {
        assert!(!p.exists(), "{} was not swept by the next run", p.display());
    }
}

#[test]
fn a_planted_symlink_at_a_console_log_is_not_followed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_boot() {
        return;
    }
    // Run one test with its sidecar directory pointed at a directory where every
    // console log name is a symlink to a victim file.
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let runs = dir.path().join("runs");
    std::fs::create_dir(&runs).unwrap();
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap();
    let boot_smoke = || {
        Command::new(env!("CARGO"))
            .current_dir(ws)
            .args(["nextest", "run", "-p", "ktstr", "--test", "boot_smoke"])
            .env("KTSTR_SIDECAR_DIR", &runs)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("cargo nextest runs")
    };
    // The first run names the files; then each console log name becomes a link to the
    // victim, and the test runs again.
    assert!(boot_smoke().success());
    let logs: Vec<PathBuf> = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".ktstr.json"))
        .map(|p| PathBuf::from(p.to_string_lossy().replace(".ktstr.json", ".console.log")))
        .collect();
    assert!(!logs.is_empty(), "the first run wrote no sidecar");
    for l in &logs {
        let _ = std::fs::remove_file(l);
        std::os::unix::fs::symlink(&victim, l).unwrap();
    }
    assert!(boot_smoke().success());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}
