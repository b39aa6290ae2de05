//! The scheduler supervisor: writes the spec's sysctls, starts the sched_ext scheduler
//! with its output streamed to the host, waits until sched_ext reports it attached
//! (`root/ops` names it and `state` is `enabled`), watches it while the workload runs
//! (process death, ejection by the kernel), and detaches it at the end (SIGINT, exit,
//! `state` back to `disabled`). Everything it sees becomes a [`SchedEvent`]; after attach
//! it reports the verifier cost of every struct_ops program ([`struct_ops_progs`]).
//!
//! Scenario ops detach, attach, restart or replace the scheduler mid-run
//! ([`transition`]); each successful one is a [`SchedEvent::Transition`] with its
//! timings.
//!
//! One thread per scheduler owns the child process: it pumps the output pipes and polls
//! the process and `/sys/kernel/sched_ext` every [`POLL`]. It writes only to the ring,
//! never to the console, so a worker forked meanwhile cannot inherit a held stderr lock.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ktstr_wire::msg::GuestMsg;
use ktstr_wire::sched::{ProcExit, ProgInsns, SchedEvent, SchedulerSpec};
use ktstr_wire::spec::GuestSpec;
use ktstr_wire::OutputStream;

use crate::report::{self, log_error, log_info, log_warn};

/// How often the supervisor looks at the process and at sched_ext.
const POLL: Duration = Duration::from_millis(50);
/// After the state leaves `enabled`, how long to wait for the kernel's exit message.
const KERNEL_REASON_WAIT: Duration = Duration::from_secs(2);
/// After the process exits at the end, how long sched_ext gets to reach `disabled`.
const DISABLE_WAIT: Duration = Duration::from_secs(5);
/// Output kept for failure reports.
const TAIL_BYTES: usize = 4096;
const TAIL_LINES: usize = 15;
/// Longest kernel reason reported.
const MAX_REASON: usize = 2048;

const SCX_STATE: &str = "/sys/kernel/sched_ext/state";
const SCX_OPS: &str = "/sys/kernel/sched_ext/root/ops";
const PATH: &str = "/bin:/sbin:/usr/bin:/usr/sbin";

/// Where supervisor events go: the host, or a test's list.
type Sink = Arc<dyn Fn(SchedEvent) + Send + Sync>;

fn to_host() -> Sink {
    Arc::new(|e| report::send(&GuestMsg::Scheduler(e)))
}

/// The scheduler attached now, for [`check_alive`].
static CURRENT: Mutex<Option<Arc<Shared>>> = Mutex::new(None);

/// The run's schedulers: what the spec asked for and the process attached now.
static SLOT: Mutex<Option<Slot>> = Mutex::new(None);

struct Slot {
    /// The run's scheduler, as the spec gives it.
    spec: SchedulerSpec,
    /// Schedulers a `ReplaceScheduler` op may name.
    replacements: Vec<SchedulerSpec>,
    /// The process attached (or attaching) now; None after a detach.
    running: Option<Running>,
}

/// Between the supervisor thread and the runtime.
#[derive(Default)]
struct Shared {
    /// The runtime asks the thread to detach the scheduler.
    stop: AtomicBool,
    /// Why the scheduler is no longer running (set once, by the thread).
    gone: Mutex<Option<String>>,
    /// How the asked-for detach went: `Some(None)` clean, `Some(Some(why))` not.
    detach: Mutex<Option<Option<String>>>,
}

impl Shared {
    fn set_gone(&self, why: String) {
        let mut g = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(why);
        }
    }
}

/// Ok when the run has no scheduler or it is still attached; otherwise why it is gone.
/// For the scenario executor to call between steps.
pub fn check_alive() -> Result<(), String> {
    let shared = lock(&CURRENT).clone();
    let Some(shared) = shared else {
        return Ok(());
    };
    let gone = lock(&shared.gone).clone();
    match gone {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// The run's scheduler (or none: EEVDF); the process itself lives in the slot so that
/// scenario ops can replace it.
pub struct Supervisor {
    ready: bool,
}

struct Running {
    name: String,
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

/// Applies the spec's sysctls and starts its scheduler, waiting for attach. Failures are
/// reported to the host as events; [`Supervisor::ready`] says whether to run the
/// workload.
pub fn start(spec: &GuestSpec) -> Supervisor {
    let mut sysctls: Vec<&(String, String)> = spec.sysctls.iter().collect();
    if let Some(s) = &spec.scheduler {
        sysctls.extend(s.sysctls.iter());
    }
    for (key, value) in sysctls {
        let error = write_sysctl(key, value).err();
        match &error {
            Some(e) => log_error!("sysctl {key}={value}: {e}"),
            None => log_info!("sysctl {key}={value}"),
        }
        report::send(&GuestMsg::Scheduler(SchedEvent::Sysctl {
            key: key.clone(),
            value: value.clone(),
            error,
        }));
    }
    let Some(sched) = &spec.scheduler else {
        return Supervisor { ready: true };
    };
    let (running, ready) = spawn(sched, to_host());
    set_current(running.as_ref());
    *lock(&SLOT) = Some(Slot {
        spec: sched.clone(),
        replacements: spec.replacement_schedulers.clone(),
        running,
    });
    if ready {
        match struct_ops_progs() {
            Ok(progs) => {
                log_info!(
                    "{}: {} struct_ops programs, {} verified instructions",
                    sched.name,
                    progs.len(),
                    progs.iter().map(|p| p.verified_insns).sum::<u64>()
                );
                report::send(&GuestMsg::VerifierStats { progs });
            }
            Err(e) => log_warn!("listing BPF programs for verifier stats: {e}"),
        }
    }
    Supervisor { ready }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn set_current(running: Option<&Running>) {
    *lock(&CURRENT) = running.map(|r| r.shared.clone());
}

impl Supervisor {
    /// True when there is no scheduler, or it attached: the workload may run.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// Detaches the scheduler attached now, if any (SIGINT, wait, SIGKILL after its
    /// stop timeout) and waits for the supervisor thread's last report.
    pub fn stop(self) {
        let running = lock(&SLOT).as_mut().and_then(|s| s.running.take());
        set_current(None);
        if let Some(r) = running {
            let _ = stop_running(r);
        }
    }
}

/// Asks the supervisor thread to detach its scheduler and waits for it; `Err` says why
/// the detach was not clean.
fn stop_running(r: Running) -> Result<(), String> {
    r.shared.stop.store(true, Ordering::SeqCst);
    if r.thread.join().is_err() {
        log_error!("the supervisor thread of {} panicked", r.name);
        return Err(format!("the supervisor thread of {} panicked", r.name));
    }
    match lock(&r.shared.detach).clone() {
        Some(None) => Ok(()),
        Some(Some(why)) => Err(why),
        // The thread ended before it was asked: the scheduler had died or never attached.
        None => Err(lock(&r.shared.gone)
            .clone()
            .unwrap_or_else(|| format!("{} was not running", r.name))),
    }
}

/// What a scheduler op does: detach the attached scheduler, attach one, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    Detach,
    Attach,
    Restart,
    /// Another scheduler (by name, None: the run's own binary), with other arguments
    /// when given.
    Replace {
        scheduler: Option<&'a str>,
        args: &'a [String],
    },
}

/// Runs a scheduler op (`op` is its kind, for the event) and reports its timings as a
/// [`SchedEvent::Transition`]; `Err` says what went wrong (the kernel's reason when the
/// new scheduler did not attach is in its own events).
pub fn transition(op: &str, change: Change) -> Result<(), String> {
    let t0 = Instant::now();
    let mut guard = lock(&SLOT);
    let slot = guard
        .as_mut()
        .ok_or("this run has no sched_ext scheduler (it runs on EEVDF)")?;
    let next = match &change {
        Change::Detach => None,
        Change::Attach | Change::Restart => Some(slot.spec.clone()),
        Change::Replace { scheduler, args } => {
            let mut s = match scheduler {
                None => slot.spec.clone(),
                Some(name) => slot
                    .replacements
                    .iter()
                    .chain(std::iter::once(&slot.spec))
                    .find(|s| s.name == *name)
                    .cloned()
                    .ok_or_else(|| {
                        format!("scheduler `{name}` was not packed for this run (the host resolves the ones ReplaceScheduler names)")
                    })?,
            };
            if !args.is_empty() {
                s.args = args.to_vec();
            }
            Some(s)
        }
    };
    let mut detach_ms = None;
    if change != Change::Attach {
        let r = slot
            .running
            .take()
            .ok_or("no scheduler is attached (an earlier op detached it, or it never attached)")?;
        let gone = lock(&r.shared.gone).clone();
        if let Some(why) = gone {
            slot.running = Some(r);
            return Err(format!("the scheduler is already gone: {why}"));
        }
        set_current(None);
        let name = r.name.clone();
        stop_running(r).map_err(|why| format!("detaching {name}: {why}"))?;
        detach_ms = Some(t0.elapsed().as_millis() as u64);
    } else if slot.running.is_some() {
        return Err("a scheduler is attached already".into());
    }
    let mut attach_ms = None;
    let name = next.as_ref().map(|s| s.name.clone());
    if let Some(spec) = next {
        let t1 = Instant::now();
        let (running, ready) = spawn(&spec, to_host());
        set_current(running.as_ref());
        slot.running = running;
        if !ready {
            return Err(format!(
                "{} did not attach (its scheduler events say why)",
                spec.name
            ));
        }
        attach_ms = Some(t1.elapsed().as_millis() as u64);
    }
    let gap_ms = t0.elapsed().as_millis() as u64;
    log_info!(
        "{op}: {} in {gap_ms} ms",
        name.as_deref().unwrap_or("detached")
    );
    to_host()(SchedEvent::Transition {
        op: op.to_string(),
        scheduler: name,
        detach_ms,
        attach_ms,
        gap_ms,
        elapsed_ms: report::elapsed_ms(),
    });
    Ok(())
}

/// The op name of a [`SchedEvent::Transition`] the scheduler made by itself: sched_ext
/// exited it for a CPU hotplug and it attached again.
pub const HOTPLUG_RESTART: &str = "hotplug_restart";

/// Whether `text` (the kernel's reason and the scheduler's last output) names the
/// kernel's exit for CPU hotplug (`cpu 3 going offline, exiting scheduler`): the
/// scheduler is asked to restart, which scx schedulers do by themselves. Any other exit
/// (a stall, a BPF error) is an ejection even when the process attaches again.
pub fn is_hotplug_restart(kernel_reason: &str) -> bool {
    kernel_reason.contains("exiting scheduler")
        && (kernel_reason.contains("going offline") || kernel_reason.contains("going online"))
}

/// `/proc/sys/` path of a dotted sysctl key; None for keys that could escape it.
pub fn sysctl_path(key: &str) -> Option<String> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
        && !key.split(['.', '/']).any(|p| p.is_empty() || p == "..");
    ok.then(|| format!("/proc/sys/{}", key.replace('.', "/")))
}

pub fn write_sysctl(key: &str, value: &str) -> Result<(), String> {
    let path = sysctl_path(key).ok_or_else(|| format!("`{key}` is not a sysctl name"))?;
    std::fs::write(&path, value).map_err(|e| format!("writing {path}: {e}"))?;
    let back = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    // The kernel normalises some values (whitespace, tabs between numbers).
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    if norm(&back) != norm(value) {
        return Err(format!(
            "{path} reads `{}` after writing `{value}`",
            back.trim()
        ));
    }
    Ok(())
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The state file, or `unavailable` without sched_ext.
fn scx_state() -> String {
    match std::fs::read_to_string(SCX_STATE) {
        Ok(s) => s.trim().to_string(),
        Err(_) => "unavailable".into(),
    }
}

fn proc_exit(s: ExitStatus) -> ProcExit {
    ProcExit {
        code: s.code(),
        signal: s.signal(),
    }
}

/// Starts the process and its supervisor thread, and waits for the attach verdict.
fn spawn(spec: &SchedulerSpec, sink: Sink) -> (Option<Running>, bool) {
    let started = Instant::now();
    // scx schedulers put their stats socket under /var/run/scx.
    if !std::path::Path::new("/var/run").exists() {
        let _ = std::fs::create_dir_all("/var");
        if let Err(e) = std::os::unix::fs::symlink("/run", "/var/run") {
            log_warn!("creating /var/run -> /run: {e}");
        }
    }
    let before = scx_state();
    if before != "disabled" {
        log_warn!("sched_ext state is `{before}` before {} starts", spec.name);
    }
    let klog = KernelLog::open_at_end();
    let child = Command::new(&spec.binary_guest_path)
        .args(&spec.args)
        .env("PATH", PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let error = format!(
                "starting {} {:?}: {e} (is it in the initramfs with its libraries?)",
                spec.binary_guest_path, spec.args
            );
            log_error!("{error}");
            sink(SchedEvent::SpawnFailed {
                error,
                elapsed_ms: report::elapsed_ms(),
            });
            return (None, false);
        }
    };
    log_info!(
        "started {} (pid {}): {} {}",
        spec.name,
        child.id(),
        spec.binary_guest_path,
        spec.args.join(" ")
    );
    sink(SchedEvent::Started {
        pid: child.id() as i32,
        elapsed_ms: report::elapsed_ms(),
    });
    let output = Output::new(child.stdout.take(), child.stderr.take());
    let shared = Arc::new(Shared::default());
    let (tx, rx) = mpsc::channel();
    let mut watch = Watch {
        sink,
        spec: spec.clone(),
        shared: shared.clone(),
        output,
        klog,
        started,
        attach: Some(tx),
    };
    let thread = std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || watch.run(&mut child));
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            log_error!("cannot start the scheduler supervisor thread: {e}");
            return (None, false);
        }
    };
    let ready = rx.recv().unwrap_or(false);
    (
        Some(Running {
            name: spec.name.clone(),
            shared,
            thread,
        }),
        ready,
    )
}

/// The supervisor thread's state.
struct Watch {
    sink: Sink,
    spec: SchedulerSpec,
    shared: Arc<Shared>,
    output: Output,
    klog: Option<KernelLog>,
    started: Instant,
    /// Taken when the attach verdict is sent.
    attach: Option<mpsc::Sender<bool>>,
}

impl Watch {
    fn emit(&self, e: SchedEvent) {
        (self.sink)(e);
    }

    fn attach_verdict(&mut self, ok: bool) {
        if let Some(tx) = self.attach.take() {
            let _ = tx.send(ok);
        }
    }

    fn kernel_reason(&mut self) -> Option<String> {
        self.klog.as_mut().and_then(KernelLog::sched_ext_reason)
    }

    /// Waits (pumping output) until the state leaves `enabling`/`disabling` or `limit`
    /// passes, then returns the kernel's reason.
    fn settle_reason(&mut self, limit: Duration) -> (String, Option<String>) {
        let until = Instant::now() + limit;
        let mut state = scx_state();
        let mut reason = self.kernel_reason();
        while Instant::now() < until && (reason.is_none() || state.ends_with("ing")) {
            self.output.pump(POLL);
            state = scx_state();
            if let Some(more) = self.kernel_reason() {
                reason = Some(match reason {
                    Some(r) => format!("{r}; {more}"),
                    None => more,
                });
            }
        }
        (state, reason)
    }

    fn run(&mut self, child: &mut Child) {
        let name = self.spec.name.clone();
        let attach_timeout = Duration::from_millis(self.spec.attach_timeout_ms);
        let stop_timeout = Duration::from_millis(self.spec.stop_timeout_ms);
        let mut attached = false;
        let mut ejected = false;
        let mut sigint_at: Option<Instant> = None;
        let mut killed = false;
        loop {
            self.output.pump(POLL);
            let status = match child.try_wait() {
                Ok(s) => s,
                Err(e) => {
                    self.shared.set_gone(format!("cannot wait for {name}: {e}"));
                    self.attach_verdict(false);
                    return;
                }
            };
            if let Some(status) = status {
                self.output.drain();
                let exit = proc_exit(status);
                if !attached {
                    let (_, kernel_reason) = self.settle_reason(Duration::from_millis(200));
                    self.emit(SchedEvent::DiedBeforeAttach {
                        exit,
                        kernel_reason,
                        output_tail: self.output.tail(),
                        elapsed_ms: report::elapsed_ms(),
                    });
                    self.shared
                        .set_gone(format!("{name} exited before attaching ({exit})"));
                    self.attach_verdict(false);
                } else if sigint_at.is_none() {
                    let (_, kernel_reason) = self.settle_reason(KERNEL_REASON_WAIT);
                    self.emit(SchedEvent::Died {
                        exit,
                        kernel_reason,
                        output_tail: self.output.tail(),
                        elapsed_ms: report::elapsed_ms(),
                    });
                    self.shared
                        .set_gone(format!("{name} died during the run ({exit})"));
                } else {
                    self.detached(Some(exit), killed, ejected);
                }
                return;
            }
            if !attached {
                let state = scx_state();
                let ops = read_trim(SCX_OPS);
                if state == "enabled" && !ops.is_empty() {
                    attached = true;
                    let attach_ms = self.started.elapsed().as_millis() as u64;
                    self.emit(SchedEvent::Attached {
                        ops,
                        attach_ms,
                        elapsed_ms: report::elapsed_ms(),
                    });
                    self.attach_verdict(true);
                } else if self.started.elapsed() >= attach_timeout {
                    let _ = child.kill();
                    let _ = child.wait();
                    self.output.drain();
                    let kernel_reason = self.kernel_reason();
                    self.emit(SchedEvent::AttachTimeout {
                        waited_ms: attach_timeout.as_millis() as u64,
                        state,
                        ops,
                        kernel_reason,
                        output_tail: self.output.tail(),
                        elapsed_ms: report::elapsed_ms(),
                    });
                    self.shared.set_gone(format!(
                        "{name} did not attach within {} ms",
                        attach_timeout.as_millis()
                    ));
                    self.attach_verdict(false);
                    return;
                }
                continue;
            }
            if !ejected && sigint_at.is_none() {
                let state = scx_state();
                if state != "enabled" {
                    let left = Instant::now();
                    let (state, kernel_reason) = self.settle_reason(KERNEL_REASON_WAIT);
                    // A hotplug exit (kernel-initiated unregistration, the cause in the
                    // kernel's or the scheduler's own words) followed by a re-attach.
                    let kernel_unreg = kernel_reason
                        .as_deref()
                        .is_some_and(|r| r.contains("unregistered from the main kernel"));
                    if kernel_unreg
                        && self.reattached(child, attach_timeout)
                        && is_hotplug_restart(&format!(
                            "{} {}",
                            kernel_reason.as_deref().unwrap_or(""),
                            self.output.tail()
                        ))
                    {
                        let gap_ms = left.elapsed().as_millis() as u64;
                        log_info!("{name} restarted itself after CPU hotplug ({gap_ms} ms)");
                        self.emit(SchedEvent::Transition {
                            op: HOTPLUG_RESTART.into(),
                            scheduler: Some(name.clone()),
                            detach_ms: None,
                            attach_ms: None,
                            gap_ms,
                            elapsed_ms: report::elapsed_ms(),
                        });
                        continue;
                    }
                    ejected = true;
                    self.emit(SchedEvent::Ejected {
                        state: state.clone(),
                        kernel_reason: kernel_reason.clone(),
                        watchdog_timeout_ms: self.spec.watchdog_timeout_ms,
                        elapsed_ms: report::elapsed_ms(),
                    });
                    self.shared.set_gone(format!(
                        "sched_ext state is `{state}`: {}",
                        kernel_reason.as_deref().unwrap_or("no kernel message")
                    ));
                }
            }
            if self.shared.stop.load(Ordering::SeqCst) {
                match sigint_at {
                    None => {
                        // SAFETY: plain kill(2) on our own child's pid.
                        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
                        sigint_at = Some(Instant::now());
                    }
                    Some(t) if !killed && t.elapsed() >= stop_timeout => {
                        let _ = child.kill();
                        killed = true;
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// After a hotplug exit: waits (pumping output) until the process, still alive,
    /// has sched_ext enabled again.
    fn reattached(&mut self, child: &mut Child, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if !matches!(child.try_wait(), Ok(None)) {
                return false;
            }
            if scx_state() == "enabled" && !read_trim(SCX_OPS).is_empty() {
                return true;
            }
            self.output.pump(POLL);
        }
        false
    }

    /// The end of a run whose scheduler was asked to stop.
    fn detached(&mut self, exit: Option<ProcExit>, killed: bool, ejected: bool) {
        let until = Instant::now() + DISABLE_WAIT;
        let mut state = scx_state();
        while state != "disabled" && state != "unavailable" && Instant::now() < until {
            std::thread::sleep(POLL);
            state = scx_state();
        }
        let mut problems = Vec::new();
        if killed {
            problems.push(format!(
                "did not exit within {} ms of SIGINT and was killed",
                self.spec.stop_timeout_ms
            ));
        }
        if let Some(e) = exit.filter(|e| e.code.is_some_and(|c| c != 0)) {
            problems.push(format!("exited with {e} after SIGINT"));
        }
        if state != "disabled" {
            problems.push(format!(
                "sched_ext state is `{state}` {} ms after it exited",
                DISABLE_WAIT.as_millis()
            ));
        }
        if ejected {
            problems.push("it had already been ejected".into());
        }
        let clean = problems.is_empty();
        let detail = (!clean).then(|| problems.join("; "));
        *lock(&self.shared.detach) = Some(detail.clone());
        if !clean {
            let tail = self.output.tail();
            if !tail.is_empty() {
                log_warn!("{} output before detach:\n{tail}", self.spec.name);
            }
        }
        self.emit(SchedEvent::Detached {
            clean,
            exit,
            state_after: state,
            detail,
            elapsed_ms: report::elapsed_ms(),
        });
    }
}

/// The scheduler's stdout and stderr: streamed to the host as scheduler-log output, the
/// last bytes kept for failure reports.
struct Output {
    pipes: Vec<(File, bool)>,
    tail: Vec<u8>,
}

impl Output {
    fn new(stdout: Option<ChildStdout>, stderr: Option<ChildStderr>) -> Self {
        let mut pipes = Vec::new();
        let fds = [
            stdout.map(|p| File::from(std::os::fd::OwnedFd::from(p))),
            stderr.map(|p| File::from(std::os::fd::OwnedFd::from(p))),
        ];
        for f in fds.into_iter().flatten() {
            set_nonblocking(f.as_raw_fd());
            pipes.push((f, true));
        }
        Self {
            pipes,
            tail: Vec::new(),
        }
    }

    /// Waits up to `timeout` for output and forwards what is there.
    fn pump(&mut self, timeout: Duration) {
        let mut fds: Vec<libc::pollfd> = self
            .pipes
            .iter()
            .filter(|(_, open)| *open)
            .map(|(f, _)| libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if fds.is_empty() {
            std::thread::sleep(timeout);
            return;
        }
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                timeout.as_millis() as libc::c_int,
            )
        };
        if n > 0 {
            self.read_available();
        }
    }

    /// Forwards everything buffered (after the process exited).
    fn drain(&mut self) {
        self.read_available();
    }

    fn read_available(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        for i in 0..self.pipes.len() {
            loop {
                let (file, open) = &mut self.pipes[i];
                if !*open {
                    break;
                }
                match file.read(&mut buf) {
                    Ok(0) => {
                        *open = false;
                        break;
                    }
                    Ok(n) => {
                        report::send_output(OutputStream::SchedulerLog, &buf[..n]);
                        self.tail.extend_from_slice(&buf[..n]);
                        if self.tail.len() > TAIL_BYTES {
                            let cut = self.tail.len() - TAIL_BYTES;
                            self.tail.drain(..cut);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }

    /// The last lines of output.
    fn tail(&self) -> String {
        let text = String::from_utf8_lossy(&self.tail);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a pipe fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// `/dev/kmsg` from the moment the scheduler starts: the kernel's `sched_ext:` lines
/// explain why it disabled a scheduler.
struct KernelLog {
    file: File,
}

impl KernelLog {
    fn open_at_end() -> Option<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg");
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                log_warn!("/dev/kmsg: {e}; ejection reasons will lack the kernel's message");
                return None;
            }
        };
        // SAFETY: lseek on an fd we own; SEEK_END on /dev/kmsg skips to the newest record.
        unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
        Some(Self { file })
    }

    /// The `sched_ext:` records logged since the last call, joined with `; `.
    fn sched_ext_reason(&mut self) -> Option<String> {
        let mut lines = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(line) = parse_kmsg_record(&buf[..n]) {
                        lines.push(line);
                    }
                }
                // EPIPE: records were overwritten; the read position moved on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        sched_ext_reason(&lines)
    }
}

/// The message of one `/dev/kmsg` record (`prio,seq,ts,flags;message\n key=value...`).
pub fn parse_kmsg_record(rec: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(rec);
    let (_, rest) = text.split_once(';')?;
    let msg = rest.lines().next().unwrap_or("");
    Some(msg.to_string())
}

/// The kernel's account of a scheduler's end from its log lines: the `sched_ext:` lines,
/// without the `enabled` announcement.
pub fn sched_ext_reason(lines: &[String]) -> Option<String> {
    let picked: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter_map(|l| l.strip_prefix("sched_ext:"))
        .map(str::trim)
        .filter(|l| !(l.starts_with("BPF scheduler") && l.ends_with("enabled")))
        .collect();
    if picked.is_empty() {
        return None;
    }
    let mut s = picked.join("; ");
    if s.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" [truncated]");
    }
    Some(s)
}

/// Every loaded struct_ops program (sched_ext callbacks) with its verifier cost, through
/// the bpf syscall: `BPF_PROG_GET_NEXT_ID`, `BPF_PROG_GET_FD_BY_ID`,
/// `BPF_OBJ_GET_INFO_BY_FD`.
pub fn struct_ops_progs() -> std::io::Result<Vec<ProgInsns>> {
    Ok(bpf::all_progs()?
        .into_iter()
        .filter(|p| p.prog_type == ktstr_wire::sched::BPF_PROG_TYPE_STRUCT_OPS)
        .collect())
}

/// The few bpf(2) commands the verifier stats need, with `union bpf_attr` and
/// `struct bpf_prog_info` laid out as in `include/uapi/linux/bpf.h`.
mod bpf {
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};

    use ktstr_wire::sched::ProgInsns;

    const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

    /// `bpf_prog_info` up to and including `attach_btf_id` (232 bytes).
    pub const PROG_INFO_SIZE: usize = 232;
    pub const OFF_TYPE: usize = 0;
    pub const OFF_ID: usize = 4;
    pub const OFF_NAME: usize = 64;
    pub const NAME_LEN: usize = 16;
    pub const OFF_VERIFIED_INSNS: usize = 216;

    /// Most programs listed (a guard against a looping id walk).
    const MAX_PROGS: usize = 4096;

    #[repr(C)]
    struct IdAttr {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }

    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }

    #[repr(C, align(8))]
    struct InfoBuf([u8; PROG_INFO_SIZE]);

    fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
        // SAFETY: `attr` points to a properly sized, initialised bpf_attr prefix that the
        // kernel may read and write for the duration of the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut T as *mut libc::c_void,
                std::mem::size_of::<T>() as libc::c_uint,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    fn next_id(start: u32) -> io::Result<Option<u32>> {
        let mut a = IdAttr {
            id: start,
            next_id: 0,
            open_flags: 0,
        };
        match sys_bpf(BPF_PROG_GET_NEXT_ID, &mut a) {
            Ok(_) => Ok(Some(a.next_id)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn fd_by_id(id: u32) -> io::Result<OwnedFd> {
        let mut a = IdAttr {
            id,
            next_id: 0,
            open_flags: 0,
        };
        let fd = sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut a)?;
        // SAFETY: the kernel returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    fn info(fd: &OwnedFd) -> io::Result<(InfoBuf, usize)> {
        use std::os::fd::AsRawFd;
        let mut buf = InfoBuf([0; PROG_INFO_SIZE]);
        let mut a = InfoAttr {
            bpf_fd: fd.as_raw_fd() as u32,
            info_len: PROG_INFO_SIZE as u32,
            info: buf.0.as_mut_ptr() as u64,
        };
        sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
        Ok((buf, (a.info_len as usize).min(PROG_INFO_SIZE)))
    }

    /// A program's description from the first `len` bytes of its `bpf_prog_info`.
    pub fn parse_info(b: &[u8], len: usize) -> ProgInsns {
        let u32_at = |off: usize| {
            if off + 4 > len.min(b.len()) {
                return 0;
            }
            u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
        };
        let name = b
            .get(OFF_NAME..(OFF_NAME + NAME_LEN).min(len))
            .unwrap_or(&[]);
        let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
        ProgInsns {
            id: u32_at(OFF_ID),
            prog_type: u32_at(OFF_TYPE),
            name: String::from_utf8_lossy(&name[..end]).into_owned(),
            verified_insns: u64::from(u32_at(OFF_VERIFIED_INSNS)),
        }
    }

    /// Every program the kernel has loaded. A program that goes away during the walk is
    /// skipped.
    pub fn all_progs() -> io::Result<Vec<ProgInsns>> {
        let mut out = Vec::new();
        let mut id = 0;
        while let Some(next) = next_id(id)? {
            if next <= id || out.len() >= MAX_PROGS {
                break;
            }
            id = next;
            let fd = match fd_by_id(id) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e),
            };
            let (buf, len) = info(&fd)?;
            out.push(parse_info(&buf.0, len));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_hotplug_exit_is_a_restart() {
        assert!(is_hotplug_restart(
            "BPF scheduler \"bpfland\" disabled (unregistered from the main kernel); cpu 3 going offline, exiting scheduler"
        ));
        assert!(is_hotplug_restart("cpu 1 going online, exiting scheduler"));
        assert!(!is_hotplug_restart(
            "runnable task stall (kworker/0:1[12] failed to run for 5.2s)"
        ));
        assert!(!is_hotplug_restart("unregistered from user space"));
    }

    #[test]
    fn sysctl_paths() {
        assert_eq!(
            sysctl_path("kernel.sched_child_runs_first").as_deref(),
            Some("/proc/sys/kernel/sched_child_runs_first")
        );
        assert_eq!(
            sysctl_path("net/ipv4/ip_forward").as_deref(),
            Some("/proc/sys/net/ipv4/ip_forward")
        );
        for bad in [
            "",
            "kernel..x",
            "../etc/passwd",
            "kernel.a b",
            ".kernel",
            "a/../b",
        ] {
            assert_eq!(sysctl_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn kmsg_records_and_reasons() {
        let recs = [
            &b"6,812,5012345,-;sched_ext: BPF scheduler \"ktstr_stall\" enabled\n"[..],
            b"3,830,9012345,-;sched_ext: BPF scheduler \"ktstr_stall\" disabled (runnable task stall)\n",
            b"3,831,9012350,-;sched_ext: ktstr_stall: kworker/0:1[12] failed to run for 3.012s\n SUBSYSTEM=x\n",
            b"4,832,9012360,-;   scx_watchdog_workfn+0x15a/0x1d0\n",
            b"garbage without a separator",
        ];
        let lines: Vec<String> = recs.iter().filter_map(|r| parse_kmsg_record(r)).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            sched_ext_reason(&lines).as_deref(),
            Some(
                "BPF scheduler \"ktstr_stall\" disabled (runnable task stall); \
                 ktstr_stall: kworker/0:1[12] failed to run for 3.012s"
            )
        );
        assert_eq!(sched_ext_reason(&lines[..1]), None, "the enable line alone");
    }

    #[test]
    fn prog_info_is_read_at_the_uapi_offsets() {
        let mut b = [0u8; bpf::PROG_INFO_SIZE];
        b[bpf::OFF_TYPE..bpf::OFF_TYPE + 4].copy_from_slice(&27u32.to_ne_bytes());
        b[bpf::OFF_ID..bpf::OFF_ID + 4].copy_from_slice(&77u32.to_ne_bytes());
        b[bpf::OFF_NAME..bpf::OFF_NAME + 13].copy_from_slice(b"stall_enqueue");
        b[bpf::OFF_VERIFIED_INSNS..bpf::OFF_VERIFIED_INSNS + 4]
            .copy_from_slice(&1234u32.to_ne_bytes());
        let p = bpf::parse_info(&b, b.len());
        assert_eq!(
            p,
            ProgInsns {
                id: 77,
                prog_type: 27,
                name: "stall_enqueue".into(),
                verified_insns: 1234,
            }
        );
        // An old kernel that fills less than verified_insns reports 0, not garbage.
        assert_eq!(bpf::parse_info(&b, 200).verified_insns, 0);
    }

    #[test]
    fn output_tail_keeps_the_last_lines() {
        let mut o = Output::new(None, None);
        o.tail = (0..40)
            .map(|i| format!("line {i}\n"))
            .collect::<String>()
            .into_bytes();
        let t = o.tail();
        assert!(t.starts_with("line 25"), "{t}");
        assert!(t.ends_with("line 39"), "{t}");
    }

    /// Runs `script` under `/bin/sh` as the scheduler with a collecting sink.
    fn supervise(script: &str, attach_timeout_ms: u64) -> (bool, Vec<SchedEvent>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink: Sink = {
            let events = events.clone();
            Arc::new(move |e| events.lock().unwrap().push(e))
        };
        let mut spec = SchedulerSpec::new("fake", "/bin/sh");
        spec.args = vec!["-c".into(), script.into()];
        spec.attach_timeout_ms = attach_timeout_ms;
        let (running, ready) = spawn(&spec, sink);
        let running = running.expect("/bin/sh starts");
        running.shared.stop.store(true, Ordering::SeqCst);
        running.thread.join().unwrap();
        let got = events.lock().unwrap().clone();
        (ready, got)
    }

    #[test]
    fn death_before_attach_reports_exit_status_and_output() {
        // This host has no sched_ext, so nothing can attach: the process dies first.
        let (ready, ev) = supervise(
            "echo loading; echo 'failed to load BPF' >&2; exit 3",
            60_000,
        );
        assert!(!ready);
        assert!(matches!(ev[0], SchedEvent::Started { .. }), "{ev:?}");
        match &ev[1] {
            SchedEvent::DiedBeforeAttach {
                exit, output_tail, ..
            } => {
                assert_eq!(exit.code, Some(3));
                assert!(output_tail.contains("loading"), "{output_tail}");
                assert!(output_tail.contains("failed to load BPF"), "{output_tail}");
            }
            other => panic!("expected died_before_attach, got {other:?}"),
        }
        assert_eq!(ev.len(), 2, "{ev:?}");
    }

    #[test]
    fn a_scheduler_that_never_attaches_is_killed_at_the_attach_timeout() {
        let (ready, ev) = supervise("echo waiting; exec sleep 60", 300);
        assert!(!ready);
        match ev.last() {
            Some(SchedEvent::AttachTimeout {
                waited_ms,
                output_tail,
                ..
            }) => {
                assert_eq!(*waited_ms, 300);
                assert!(output_tail.contains("waiting"), "{output_tail}");
            }
            other => panic!("expected attach_timeout, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_binary_is_a_spawn_failure_not_a_panic() {
        let mut spec = GuestSpec::new("t", 10);
        spec.scheduler = Some(SchedulerSpec::new("nope", "/nonexistent/scx_nope"));
        let s = start(&spec);
        assert!(!s.ready());
        s.stop();
        assert_eq!(check_alive(), Ok(()));
    }
}
