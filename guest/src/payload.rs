//! Payloads in the guest: real programs the scenario's ops run (`RunPayload`,
//! `StartPayload`, `WaitPayload`, `KillPayload`). Each invocation runs in its own
//! process group, in the payload's cgroup (else the root cgroup), with stdout and stderr
//! captured up to a bound (head and tail kept); when it ends, a `PayloadResult` with its
//! exit code and output goes to the host, which extracts the metrics and judges them.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ktstr_wire::msg::{
    GuestMsg, PayloadResult, MAX_MSG_BYTES, MAX_PAYLOAD_STDERR, MAX_PAYLOAD_STDOUT,
};
use ktstr_wire::spec::PayloadRun;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::cgroup::CgroupTree;
use crate::report::{self, log_info, log_warn};

const POLL: Duration = Duration::from_millis(10);
const READ_CHUNK: usize = 16 * 1024;
/// How long the output threads get to finish once the payload's group is gone.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
const PATH: &str = "/bin:/sbin:/usr/bin:/usr/sbin";
/// Exit code of an invocation that could not start (as shells report it).
pub const NOT_STARTED: i32 = 127;

/// Output kept from one stream: the first quarter of the bound and the last three
/// quarters, with the total count.
#[derive(Debug)]
pub struct Bounded {
    head_max: usize,
    tail_max: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl Bounded {
    pub fn new(max: usize) -> Self {
        let head_max = max / 4;
        Self {
            head_max,
            tail_max: max - head_max,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.head_max - self.head.len();
        if room > 0 {
            let n = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        if bytes.len() >= self.tail_max {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_max..]);
            return;
        }
        let excess = (self.tail.len() + bytes.len()).saturating_sub(self.tail_max);
        self.tail.drain(..excess);
        self.tail.extend(bytes);
    }

    /// The text (invalid UTF-8 replaced), all bytes written, and whether some were cut.
    pub fn finish(self) -> (String, u64, bool) {
        let kept = (self.head.len() + self.tail.len()) as u64;
        let cut = self.total - kept;
        let mut bytes = self.head;
        if cut > 0 {
            bytes.extend_from_slice(format!("\n[ktstr: {cut} bytes cut]\n").as_bytes());
        }
        bytes.extend(self.tail);
        (
            String::from_utf8_lossy(&bytes).into_owned(),
            self.total,
            cut > 0,
        )
    }
}

/// A payload invocation that has started and not been reported.
struct Running {
    invocation: u32,
    child: Child,
    pgid: Pid,
    started: Instant,
    stdout: Receiver<Bounded>,
    stderr: Receiver<Bounded>,
}

/// The spec's payloads and the invocations running now.
pub struct Payloads {
    specs: BTreeMap<String, PayloadRun>,
    running: BTreeMap<String, Running>,
    next_invocation: u32,
    /// Invocations still running then are killed, so their results reach the host
    /// before its watchdog ends the VM.
    deadline: Instant,
    /// What was reported, in the order the invocations ended.
    pub reported: Vec<Reported>,
}

/// A reported invocation, in short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub name: String,
    pub invocation: u32,
    pub exit_code: i32,
    pub note: Option<String>,
}

/// Exit code of a payload: its code, or minus the signal that killed it.
pub fn exit_code(s: ExitStatus) -> i32 {
    match (s.code(), s.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => -sig,
        (None, None) => NOT_STARTED,
    }
}

fn pump(mut pipe: impl Read + Send + 'static, max: usize) -> Receiver<Bounded> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Bounded::new(max);
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(out);
    });
    rx
}

impl Payloads {
    pub fn new(specs: &[PayloadRun], deadline: Instant) -> Self {
        Self {
            specs: specs.iter().map(|p| (p.name.clone(), p.clone())).collect(),
            running: BTreeMap::new(),
            next_invocation: 0,
            deadline,
            reported: Vec::new(),
        }
    }

    /// Starts an invocation of `name` in the background. One that cannot start is
    /// reported at once (exit code 127, the reason in its note and stderr) and is an
    /// error.
    pub fn start(&mut self, name: &str, tree: &CgroupTree) -> Result<()> {
        let spec = self
            .specs
            .get(name)
            .ok_or_else(|| anyhow!("no payload `{name}` in the spec"))?
            .clone();
        if self.running.contains_key(name) {
            bail!("payload `{name}` is already running");
        }
        let invocation = self.next_invocation;
        self.next_invocation += 1;
        let started = Instant::now();
        match spawn(&spec, tree) {
            Ok(mut child) => {
                let pgid = Pid::from_raw(child.id() as i32);
                let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
                    let _ = killpg(pgid, Signal::SIGKILL);
                    let _ = child.wait();
                    bail!("payload `{name}`: its output pipes are missing");
                };
                log_info!(
                    "payload `{name}` #{invocation} started (pid {pgid}){}",
                    spec.cgroup
                        .as_deref()
                        .map_or(String::new(), |c| format!(" in cgroup {c}"))
                );
                self.running.insert(
                    name.to_string(),
                    Running {
                        invocation,
                        child,
                        pgid,
                        started,
                        stdout: pump(out, MAX_PAYLOAD_STDOUT),
                        stderr: pump(err, MAX_PAYLOAD_STDERR),
                    },
                );
                Ok(())
            }
            Err(e) => {
                let why = format!("cannot start {}: {e:#}", spec.guest_path);
                self.send(PayloadResult {
                    name: name.to_string(),
                    invocation,
                    exit_code: NOT_STARTED,
                    stderr: format!("ktstr-guest: {why}\n"),
                    wall_ms: started.elapsed().as_millis() as u64,
                    note: Some(why.clone()),
                    ..Default::default()
                });
                bail!("payload `{name}`: {why}")
            }
        }
    }

    /// Waits until the invocation of `name` ends and reports it. It is killed if the
    /// host asks the guest to stop or the payload deadline passes.
    pub fn wait(&mut self, name: &str) -> Result<()> {
        let r = self.take(name)?;
        self.end(name, r, None);
        Ok(())
    }

    /// Kills the invocation of `name` (its whole process group) and reports it.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let r = self.take(name)?;
        self.end(name, r, Some("killed by KillPayload"));
        Ok(())
    }

    /// Kills and reports every invocation still running (the scenario is over).
    pub fn finish(&mut self) {
        let mut left: Vec<(String, Running)> =
            std::mem::take(&mut self.running).into_iter().collect();
        left.sort_by_key(|(_, r)| r.invocation);
        for (name, r) in left {
            log_warn!(
                "payload `{name}` #{} still runs at the end of the scenario: killing it",
                r.invocation
            );
            self.end(&name, r, Some("killed at the end of the scenario"));
        }
    }

    fn take(&mut self, name: &str) -> Result<Running> {
        self.running
            .remove(name)
            .ok_or_else(|| anyhow!("payload `{name}` is not running"))
    }

    /// Ends one invocation: kills its group first when `kill` says why, else waits for
    /// it (killing it on a stop request or past the deadline); then reports it.
    fn end(&mut self, name: &str, mut r: Running, kill: Option<&str>) {
        let mut note = None;
        if let Some(why) = kill {
            let _ = killpg(r.pgid, Signal::SIGKILL);
            note = Some(why.to_string());
        }
        let status = loop {
            match r.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) => {}
                Err(e) => {
                    note = Some(format!("waiting for it failed: {e}"));
                    break None;
                }
            }
            if note.is_none() {
                if report::stop_requested() {
                    note = Some("killed: the host asked the guest to stop".into());
                } else if Instant::now() >= self.deadline {
                    note = Some(
                        "killed: still running well after the test's duration (raise duration_s)"
                            .into(),
                    );
                }
                if note.is_some() {
                    let _ = killpg(r.pgid, Signal::SIGKILL);
                }
            }
            std::thread::sleep(POLL);
        };
        // Whatever the payload left behind in its group goes too (it would hold the
        // output pipes open).
        let _ = killpg(r.pgid, Signal::SIGKILL);
        let wall_ms = r.started.elapsed().as_millis() as u64;
        let until = Instant::now() + OUTPUT_GRACE;
        let mut collect = |rx: &Receiver<Bounded>| match rx
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            Ok(b) => b.finish(),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                note.get_or_insert_with(|| {
                    "its output was lost: a process outside its group kept the pipe open".into()
                });
                (String::new(), 0, true)
            }
        };
        let (stdout, stdout_bytes, stdout_truncated) = collect(&r.stdout);
        let (stderr, stderr_bytes, stderr_truncated) = collect(&r.stderr);
        self.send(PayloadResult {
            name: name.to_string(),
            invocation: r.invocation,
            exit_code: status.map_or(NOT_STARTED, exit_code),
            stdout,
            stdout_bytes,
            stdout_truncated,
            stderr,
            stderr_bytes,
            stderr_truncated,
            wall_ms,
            note,
        });
    }

    fn send(&mut self, mut r: PayloadResult) {
        log_info!(
            "payload `{}` #{}: exit code {} after {} ms, {} bytes of stdout, {} of stderr{}",
            r.name,
            r.invocation,
            r.exit_code,
            r.wall_ms,
            r.stdout_bytes,
            r.stderr_bytes,
            r.note
                .as_deref()
                .map_or(String::new(), |n| format!(" ({n})"))
        );
        self.reported.push(Reported {
            name: r.name.clone(),
            invocation: r.invocation,
            exit_code: r.exit_code,
            note: r.note.clone(),
        });
        r.fit(report::max_msg_bytes().min(MAX_MSG_BYTES));
        report::send(&GuestMsg::PayloadResult(r));
    }
}

/// Starts the program in a process group of its own, moved into its cgroup before it
/// executes.
fn spawn(spec: &PayloadRun, tree: &CgroupTree) -> Result<Child> {
    let procs: Option<CString> = match &spec.cgroup {
        Some(c) => match tree.dir(c) {
            Some(dir) => {
                let path: PathBuf = dir.join("cgroup.procs");
                Some(
                    CString::new(path.as_os_str().as_bytes())
                        .with_context(|| format!("cgroup path {}", path.display()))?,
                )
            }
            None => None,
        },
        None => None,
    };
    let mut cmd = Command::new(&spec.guest_path);
    cmd.args(&spec.args)
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // async-signal-safe functions (setpgid, open, write, close) on data prepared above.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(p) = &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" moves the writing process.
                let n = libc::write(fd, b"0\n".as_ptr().cast(), 2);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n != 2 {
                    return Err(err);
                }
            }
            Ok(())
        });
    }
    cmd.spawn().with_context(|| {
        format!(
            "spawning {} (is it in the initramfs, with its libraries?)",
            spec.guest_path
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_keeps_everything_that_fits() {
        let mut b = Bounded::new(100);
        b.push(b"hello ");
        b.push(b"world\n");
        assert_eq!(b.finish(), ("hello world\n".to_string(), 12, false));
    }

    #[test]
    fn bounded_keeps_head_and_tail_of_long_output() {
        let mut b = Bounded::new(100);
        for i in 0..1000 {
            b.push(format!("{i:04}\n").as_bytes());
        }
        let (text, total, cut) = b.finish();
        assert_eq!(total, 5000);
        assert!(cut);
        assert!(text.starts_with("0000\n0001\n"), "{text}");
        assert!(text.ends_with("0998\n0999\n"), "{text}");
        assert!(text.contains("[ktstr: 4900 bytes cut]"), "{text}");
        // One big write lands in the tail as its last bytes.
        let mut b = Bounded::new(8);
        b.push(b"abcdefghijklmnop");
        let (text, total, cut) = b.finish();
        assert_eq!(total, 16);
        assert!(cut);
        assert_eq!(text, "ab\n[ktstr: 8 bytes cut]\nklmnop");
    }

    fn run(name: &str, argv: &[&str]) -> PayloadRun {
        PayloadRun {
            name: name.into(),
            guest_path: argv[0].into(),
            args: argv[1..].iter().map(|s| s.to_string()).collect(),
            cgroup: None,
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn exit_codes_and_signals() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), -9);
    }

    fn summary(p: &Payloads) -> Vec<(String, u32, i32, Option<String>)> {
        p.reported
            .iter()
            .map(|r| (r.name.clone(), r.invocation, r.exit_code, r.note.clone()))
            .collect()
    }

    fn s(
        name: &str,
        invocation: u32,
        code: i32,
        note: Option<&str>,
    ) -> (String, u32, i32, Option<String>) {
        (name.into(), invocation, code, note.map(Into::into))
    }

    // Outside a VM there is no ring: results go to the console, and `reported` says
    // what was sent.
    #[test]
    fn run_wait_kill_and_finish_on_real_processes() {
        let tree = CgroupTree::detached();
        let mut p = Payloads::new(
            &[
                run("echo", &["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]),
                run("sleeper", &["/bin/sleep", "1000"]),
                run("missing", &["/nonexistent/bench"]),
            ],
            far(),
        );
        p.start("echo", &tree).unwrap();
        p.wait("echo").unwrap();
        assert!(p.wait("echo").is_err(), "not running any more");

        p.start("sleeper", &tree).unwrap();
        assert!(p.start("sleeper", &tree).is_err(), "already running");
        p.kill("sleeper").unwrap();

        let e = p.start("missing", &tree).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/bench"), "{e:#}");

        p.start("sleeper", &tree).unwrap();
        p.finish();
        assert!(p.running.is_empty());
        let missing_note = p.reported[2].note.clone().unwrap_or_default();
        assert!(
            missing_note.contains("cannot start /nonexistent/bench"),
            "{missing_note}"
        );
        assert_eq!(
            summary(&p),
            [
                s("echo", 0, 3, None),
                s("sleeper", 1, -9, Some("killed by KillPayload")),
                s("missing", 2, NOT_STARTED, Some(&missing_note)),
                s("sleeper", 3, -9, Some("killed at the end of the scenario")),
            ]
        );
    }

    #[test]
    fn output_is_captured_with_the_exit_code() {
        let tree = CgroupTree::detached();
        let spec = run(
            "both",
            &[
                "/bin/sh",
                "-c",
                "echo '{\"a\": 1}'; echo warn >&2; kill -TERM $$",
            ],
        );
        let mut child = spawn(&spec, &tree).unwrap();
        let out = pump(child.stdout.take().unwrap(), 1024);
        let err = pump(child.stderr.take().unwrap(), 1024);
        let status = child.wait().unwrap();
        assert_eq!(exit_code(status), -15);
        assert_eq!(out.recv().unwrap().finish().0, "{\"a\": 1}\n");
        assert_eq!(err.recv().unwrap().finish().0, "warn\n");
    }

    #[test]
    fn the_deadline_kills_a_payload_that_runs_too_long() {
        let tree = CgroupTree::detached();
        let mut p = Payloads::new(&[run("sleeper", &["/bin/sleep", "1000"])], Instant::now());
        p.start("sleeper", &tree).unwrap();
        p.wait("sleeper").unwrap();
        assert_eq!(p.reported[0].exit_code, -9);
        let note = p.reported[0].note.clone().unwrap_or_default();
        assert!(note.contains("after the test's duration"), "{note}");
    }
}
