//! Fault injection with real VMs (`cargo ktstr shell` on the default engine, or one VM
//! test through nextest): a run interrupted by SIGTERM or SIGINT tears its VM down, says
//! so, and leaves no guest RAM or scratch directory behind; a run killed with SIGKILL
//! (mid-boot or mid-run) leaves them, qemu dies with it, and the next run sweeps them; a
//! killed qemu, a guest kernel panic and a guest that hangs past its timeout each end the
//! run with the reason and leave nothing; two runs at once keep their own output; a
//! read-only or full run directory fails the test with the reason, not silently; a planted
//! symlink where a run writes is never followed.
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

/// `cargo ktstr shell` on a 2-vCPU guest running `cmd` (its program packed from the
/// host's /bin), with extra arguments.
fn shell(cmd: &str, extra: &[&str]) -> Command {
    let prog = cmd.split_whitespace().next().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_cargo-ktstr"));
    c.args(["shell", "--topology", "1,1,2,1", "--include"])
        .arg(format!("/bin/{prog}"))
        .args(["--exec", cmd])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// `cargo ktstr shell` running `sleep 60` in a 2-vCPU guest.
fn long_shell() -> Child {
    shell("sleep 60", &[]).spawn().expect("cargo-ktstr starts")
}

/// Wait until the guest is up: the guest's RAM directory exists (qemu-tcg) or, at the
/// latest, a few seconds after start (kvm keeps RAM anonymous).
fn wait_running(before: &BTreeSet<PathBuf>) {
    wait_started(before);
    // Give the guest time to boot into the command.
    std::thread::sleep(Duration::from_secs(8));
}

/// Wait until the engine has started (the guest's RAM directory exists): mid-boot.
fn wait_started(before: &BTreeSet<PathBuf>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if scratch()
            .difference(before)
            .any(|p| p.to_string_lossy().contains("ktstr-ram-"))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the shell's guest did not start within 60 s");
}

/// Pids of live children of `parent` whose command name starts with `comm`.
fn children_named(parent: u32, comm: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let (state, ppid) = (rest.next(), rest.next().and_then(|p| p.parse::<u32>().ok()));
        if ppid == Some(parent) && state != Some("Z") && stat[open + 1..close].starts_with(comm) {
            out.push(pid);
        }
    }
    out
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// Wait for `child` at most `limit`; kill it and fail past that. Returns its status and
/// its stderr.
fn wait_at_most(
    mut child: Child,
    limit: Duration,
    what: &str,
) -> (std::process::ExitStatus, String) {
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(e) = stderr {
            for line in BufReader::new(e).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        text
    });
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, reader.join().unwrap());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: still running after {limit:?}:\n{}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_nothing_left(before: &BTreeSet<PathBuf>, what: &str) {
    let left: Vec<_> = scratch().difference(before).cloned().collect();
    assert!(left.is_empty(), "left behind after {what}: {left:?}");
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
fn a_planted_symlink_at_a_console_log_or_sidecar_is_not_followed() {
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
    // The sidecars' own names too: the writer renames a new file over the link.
    let sidecars: Vec<PathBuf> = logs
        .iter()
        .map(|l| PathBuf::from(l.to_string_lossy().replace(".console.log", ".ktstr.json")))
        .collect();
    for l in logs.iter().chain(&sidecars) {
        let _ = std::fs::remove_file(l);
        std::os::unix::fs::symlink(&victim, l).unwrap();
    }
    assert!(boot_smoke().success());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    for s in &sidecars {
        let meta = std::fs::symlink_metadata(s).unwrap();
        assert!(
            meta.is_file(),
            "{} is not a fresh regular file",
            s.display()
        );
    }
}

#[test]
fn a_run_killed_mid_boot_takes_qemu_with_it_and_is_swept_by_the_next_run() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_boot() {
        return;
    }
    let before = scratch();
    let mut shell = long_shell();
    // The engine has just started: the guest kernel is booting.
    wait_started(&before);
    let qemu = children_named(shell.id(), "qemu-system");
    signal(&shell, libc::SIGKILL);
    shell.wait().unwrap();
    // qemu has PDEATHSIG set: it must not outlive a killed ktstr and keep its RAM.
    let deadline = Instant::now() + Duration::from_secs(10);
    while qemu.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        qemu.iter().all(|&p| !alive(p)),
        "qemu {qemu:?} outlived its killed parent"
    );
    let leftovers: Vec<PathBuf> = scratch().difference(&before).cloned().collect();
    let next = shell_run_ok("true");
    assert!(
        next.status.success(),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    for p in &leftovers {
        assert!(!p.exists(), "{} was not swept by the next run", p.display());
    }
}

/// A quick run of `cmd` in a 1-vCPU guest, waited for.
fn shell_run_ok(cmd: &str) -> std::process::Output {
    let prog = cmd.split_whitespace().next().unwrap();
    Command::new(env!("CARGO_BIN_EXE_cargo-ktstr"))
        .args(["shell", "--topology", "1,1,1,1", "--include"])
        .arg(format!("/bin/{prog}"))
        .args(["--exec", cmd])
        .output()
        .unwrap()
}

#[test]
fn a_killed_qemu_ends_the_run_with_the_reason_and_leaves_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_boot() {
        return;
    }
    let before = scratch();
    let shell = long_shell();
    wait_running(&before);
    let qemu = children_named(shell.id(), "qemu-system");
    if qemu.is_empty() {
        // The kvm engine runs the guest in-process: there is no qemu to kill.
        eprintln!("SKIP: the engine here is not qemu");
        drop(shell);
        return;
    }
    for &p in &qemu {
        // SAFETY: kill(2) on a child of our child, found a moment ago.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    let (status, err) = wait_at_most(shell, Duration::from_secs(30), "shell after qemu died");
    assert!(
        !status.success(),
        "a run whose qemu was killed passed: {err}"
    );
    assert!(
        err.contains("qemu") && (err.contains("signal 9") || err.contains("SIGKILL")),
        "the reason does not say qemu was killed:\n{err}"
    );
    assert_nothing_left(&before, "qemu was killed");
}

#[test]
fn a_guest_kernel_panic_fails_the_run_with_the_kernel_line() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_boot() {
        return;
    }
    let before = scratch();
    let child = shell("sh -c 'echo c > /proc/sysrq-trigger; sleep 30'", &[])
        .spawn()
        .unwrap();
    let (status, err) = wait_at_most(child, Duration::from_secs(120), "panicking guest");
    assert!(!status.success(), "a guest kernel panic passed: {err}");
    assert!(
        err.contains("Kernel panic") && err.contains("sysrq"),
        "the reason does not quote the kernel's panic line:\n{err}"
    );
    assert_nothing_left(&before, "a guest kernel panic");
}

#[test]
fn a_guest_hung_past_its_timeout_is_killed_with_the_reason() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_boot() {
        return;
    }
    let before = scratch();
    let started = Instant::now();
    let child = shell("sleep 600", &["--timeout-s", "20"]).spawn().unwrap();
    let (status, err) = wait_at_most(child, Duration::from_secs(90), "hung guest");
    assert!(!status.success(), "a guest past its timeout passed: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "--timeout-s 20 ended the run only after {:?}",
        started.elapsed()
    );
    assert!(
        err.contains("20 s") || err.contains("timeout"),
        "the reason does not name the timeout:\n{err}"
    );
    assert_nothing_left(&before, "a timeout");
}

#[test]
fn two_runs_at_once_keep_their_own_output_and_console() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_boot() {
        return;
    }
    let before = scratch();
    let run = |topology: &str| {
        Command::new(env!("CARGO_BIN_EXE_cargo-ktstr"))
            .args(["shell", "--topology", topology, "--include", "/bin/cat"])
            .args(["--exec", "cat /sys/devices/system/cpu/online"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (run("1,1,1,1"), run("1,1,2,1"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for (out, want) in [(&a, "0\n"), (&b, "0-1\n")] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }
    assert_nothing_left(&before, "two runs at once");
}

/// Mounts a tmpfs at `dir` with `opts` until dropped (needs root).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, opts: &str) -> Option<Self> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: mounting a tmpfs needs root");
            return None;
        }
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                opts,
                "ktstr-fault",
                &dir.to_string_lossy(),
            ])
            .status()
            .expect("mount runs");
        assert!(
            st.success(),
            "mount -t tmpfs -o {opts} {} failed",
            dir.display()
        );
        Some(Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Runs the `boot_smoke` VM test with its sidecar directory at `dir`: its exit status
/// and its stdout and stderr together.
fn boot_smoke_into(dir: &Path) -> (std::process::ExitStatus, String) {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap();
    let out = Command::new(env!("CARGO"))
        .current_dir(ws)
        .args(["nextest", "run", "-p", "ktstr", "--test", "boot_smoke"])
        .args(["--no-fail-fast", "--success-output", "never"])
        .env("KTSTR_SIDECAR_DIR", dir)
        .output()
        .expect("cargo nextest runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

#[test]
fn a_read_only_run_directory_fails_before_boot_with_the_reason() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_boot() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(_ro) = Tmpfs::mount(dir.path(), "ro,size=1m") else {
        return;
    };
    let (status, text) = boot_smoke_into(dir.path());
    assert!(
        !status.success(),
        "a run that cannot keep its result passed:\n{text}"
    );
    assert!(
        text.contains("cannot write into the run directory") && text.contains("KTSTR_RUNS_ROOT"),
        "the failure does not say why or what to do:\n{text}"
    );
}

#[test]
fn a_full_run_directory_fails_the_test_and_leaves_no_partial_sidecar() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_boot() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(_full) = Tmpfs::mount(dir.path(), "size=256k") else {
        return;
    };
    // Fill every block (a new empty file still fits: tmpfs counts inodes apart).
    let mut filler = std::fs::File::create(dir.path().join("filler")).unwrap();
    let block = vec![0u8; 4096];
    while std::io::Write::write_all(&mut filler, &block).is_ok() {}
    drop(filler);
    let (status, text) = boot_smoke_into(dir.path());
    assert!(
        !status.success(),
        "a run whose sidecar was lost passed:\n{text}"
    );
    assert!(
        text.contains("sidecar could not be written") && text.contains("No space left"),
        "the failure does not say the result was lost and why:\n{text}"
    );
    let partial: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".ktstr.json"))
        .collect();
    assert!(
        partial.is_empty(),
        "partial sidecar files left: {partial:?}"
    );
}

#[test]
fn a_guest_ram_file_system_without_room_is_refused_before_boot() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_boot() {
        return;
    }
    if !matches!(
        ktstr::engine::choose(None),
        Ok(ktstr::engine::EngineKind::QemuTcg)
    ) {
        eprintln!("SKIP: only qemu-tcg keeps guest RAM in files");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(_small) = Tmpfs::mount(dir.path(), "size=64m") else {
        return;
    };
    let out = shell("true", &["--memory-mib", "1024"])
        .env("KTSTR_TMPDIR", dir.path())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a guest without room for its RAM ran: {err}"
    );
    assert!(
        err.contains("KTSTR_TMPDIR") && err.contains(&dir.path().display().to_string()),
        "the refusal does not name the file system and the variable to set:\n{err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "left in the guest-RAM file system: {left:?}"
    );
}
