//! Worker processes: forked from the runtime, each does its [`WorkKind`] until the shared
//! deadline or the host's stop request, measures itself (work units, CPU time, run delay,
//! CPUs visited, largest gap between checkpoints) and sends the report up a pipe. The
//! runtime reaps them and forwards the reports; workers never touch the ring.

use std::collections::BTreeSet;
use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ktstr_wire::msg::WorkerReport;
use ktstr_wire::spec::{WorkKind, WorkerSpec};
use nix::fcntl::OFlag;
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use crate::procfs::parse_schedstat;
use crate::report;

/// Iterations of the spin loop per work unit: short enough that a worker checks its
/// deadline and the stop flag every few ms even in a debug build under qemu TCG (measured:
/// 20,000 iterations took ~10 ms there).
const SPIN_ITERS: u32 = 4096;
/// Largest report a worker may send; more is a bug, not a report.
const MAX_REPORT_BYTES: u64 = 64 * 1024;
/// How often the runtime polls for exited workers.
const REAP_POLL: Duration = Duration::from_millis(10);

/// A running worker, seen from the runtime.
#[derive(Debug)]
pub struct Worker {
    pub group: String,
    pub index: u32,
    pub pid: Pid,
    report: File,
    status: Option<WaitStatus>,
}

/// Forks `count` workers for every spec, all stopping at `deadline`. On a fork failure the
/// workers already started are returned with the error so they can be reaped.
pub fn spawn_all(specs: &[WorkerSpec], deadline: Instant) -> (Vec<Worker>, Result<()>) {
    let mut workers = Vec::new();
    for spec in specs {
        for index in 0..spec.count {
            match spawn(spec, index, deadline) {
                Ok(w) => workers.push(w),
                Err(e) => return (workers, Err(e)),
            }
        }
    }
    (workers, Ok(()))
}

fn spawn(spec: &WorkerSpec, index: u32, deadline: Instant) -> Result<Worker> {
    let (rd, wr) = pipe2(OFlag::O_CLOEXEC).context("creating a worker report pipe")?;
    // SAFETY: the runtime forks workers before it starts any thread, so the child is a
    // faithful single-threaded copy; it ends with `_exit`, never returning into main.
    match unsafe { fork() }.context("forking a worker")? {
        ForkResult::Child => {
            report::enter_worker();
            drop(rd);
            worker_main(spec, index, deadline, wr)
        }
        ForkResult::Parent { child } => Ok(Worker {
            group: spec.group.clone(),
            index,
            pid: child,
            report: File::from(rd),
            status: None,
        }),
    }
}

fn worker_main(spec: &WorkerSpec, index: u32, deadline: Instant, out: OwnedFd) -> ! {
    let m = match spec.work {
        WorkKind::Spin => spin(deadline),
    };
    let report = m.into_report(spec.group.clone(), index);
    let code = match serde_json::to_vec(&report) {
        Ok(json) => match File::from(out).write_all(&json) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!(
                    "ktstr-guest: worker {}/{index}: writing the report: {e}",
                    spec.group
                );
                1
            }
        },
        Err(e) => {
            eprintln!(
                "ktstr-guest: worker {}/{index}: encoding the report: {e}",
                spec.group
            );
            1
        }
    };
    // SAFETY: `_exit` ends the forked child without running the parent's exit handlers.
    unsafe { libc::_exit(code) }
}

/// What a worker measured of itself while working.
#[derive(Debug, Default)]
struct Progress {
    work_units: u64,
    wall: Duration,
    max_gap: Duration,
    cpus: BTreeSet<u32>,
    migrations: u64,
    last_cpu: Option<u32>,
}

impl Progress {
    /// Records the CPU the worker starts on (not a work unit).
    fn checkpoint_start(&mut self, cpu: Option<u32>) {
        if let Some(cpu) = cpu {
            self.last_cpu = Some(cpu);
            self.cpus.insert(cpu);
        }
    }

    /// One checkpoint: called after every work unit.
    fn checkpoint(&mut self, gap: Duration, cpu: Option<u32>) {
        self.work_units += 1;
        self.max_gap = self.max_gap.max(gap);
        if let Some(cpu) = cpu {
            if self.last_cpu.is_some_and(|last| last != cpu) {
                self.migrations += 1;
            }
            self.last_cpu = Some(cpu);
            self.cpus.insert(cpu);
        }
    }

    fn into_report(self, group: String, index: u32) -> WorkerReport {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let sched = std::fs::read_to_string("/proc/self/schedstat")
            .map_err(anyhow::Error::from)
            .and_then(|s| parse_schedstat(&s))
            .unwrap_or_else(|e| {
                eprintln!("ktstr-guest: worker {group}/{index}: /proc/self/schedstat: {e:#} (run delay reported as 0)");
                Default::default()
            });
        let cpu_time_ns = getrusage(UsageWho::RUSAGE_SELF)
            .map(|u| {
                let t = |tv: nix::sys::time::TimeVal| {
                    (tv.tv_sec() as u64).saturating_mul(1_000_000_000)
                        + (tv.tv_usec() as u64) * 1000
                };
                t(u.user_time()) + t(u.system_time())
            })
            .unwrap_or(0);
        WorkerReport {
            group,
            index,
            pid: std::process::id() as i32,
            work_units: self.work_units,
            cpu_time_ns,
            wall_time_ns: ns(self.wall),
            run_delay_ns: sched.run_delay_ns,
            run_count: sched.run_count,
            migrations: self.migrations,
            cpus_used: self.cpus.into_iter().collect(),
            max_gap_ns: ns(self.max_gap),
            ..Default::default()
        }
    }
}

fn current_cpu() -> Option<u32> {
    nix::sched::sched_getcpu().ok().map(|c| c as u32)
}

/// One unit of CPU work the optimiser cannot remove.
fn spin_unit(mut x: u64) -> u64 {
    for _ in 0..SPIN_ITERS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = black_box(x);
    }
    x
}

fn spin(deadline: Instant) -> Progress {
    let start = Instant::now();
    let mut p = Progress::default();
    p.checkpoint_start(current_cpu());
    let mut last = start;
    let mut x = u64::from(std::process::id()) | 1;
    loop {
        x = spin_unit(x);
        let now = Instant::now();
        p.checkpoint(now - last, current_cpu());
        last = now;
        if now >= deadline || report::stop_requested() {
            break;
        }
    }
    black_box(x);
    p.wall = start.elapsed();
    p
}

/// How a worker ended, seen by the runtime.
pub type Collected = (Worker, Result<WorkerReport>);

/// Waits for every worker until `give_up`, kills the ones still running, then reads each
/// report. Returns the workers in spawn order with their report or what went wrong.
pub fn collect(mut workers: Vec<Worker>, give_up: Instant) -> Vec<Collected> {
    loop {
        let mut running = 0;
        for w in workers.iter_mut().filter(|w| w.status.is_none()) {
            match waitpid(w.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => running += 1,
                Ok(s) => w.status = Some(s),
                Err(e) => {
                    report::log_error!(
                        "waiting for worker {}/{} (pid {}): {e}",
                        w.group,
                        w.index,
                        w.pid
                    );
                    w.status = Some(WaitStatus::StillAlive);
                }
            }
        }
        if running == 0 {
            break;
        }
        if Instant::now() >= give_up {
            for w in workers.iter_mut().filter(|w| w.status.is_none()) {
                report::log_error!(
                    "worker {}/{} (pid {}) still running past the deadline: killing it",
                    w.group,
                    w.index,
                    w.pid
                );
                let _ = kill(w.pid, Signal::SIGKILL);
                w.status = waitpid(w.pid, None).ok();
            }
            break;
        }
        std::thread::sleep(REAP_POLL);
    }
    workers
        .into_iter()
        .map(|mut w| {
            let r = read_report(&mut w);
            (w, r)
        })
        .collect()
}

fn read_report(w: &mut Worker) -> Result<WorkerReport> {
    let mut buf = Vec::new();
    (&mut w.report)
        .take(MAX_REPORT_BYTES + 1)
        .read_to_end(&mut buf)
        .context("reading the report pipe")?;
    let how = match w.status {
        Some(WaitStatus::Exited(_, 0)) => None,
        Some(WaitStatus::Exited(_, c)) => Some(format!("exited with status {c}")),
        Some(WaitStatus::Signaled(_, sig, _)) => Some(format!("killed by {sig}")),
        other => Some(format!("ended in state {other:?}")),
    };
    if buf.is_empty() {
        bail!(
            "no report ({})",
            how.as_deref()
                .unwrap_or("exited cleanly without writing one")
        );
    }
    if buf.len() as u64 > MAX_REPORT_BYTES {
        bail!("report larger than {MAX_REPORT_BYTES} bytes");
    }
    let r: WorkerReport = serde_json::from_slice(&buf).context("decoding the report")?;
    if let Some(how) = how {
        bail!("worker {how} after writing its report");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_count_cpu_changes() {
        let mut p = Progress::default();
        p.checkpoint_start(Some(1));
        for cpu in [1, 1, 2, 2, 1, 3] {
            p.checkpoint(Duration::from_micros(10), Some(cpu));
        }
        assert_eq!(p.migrations, 3);
        assert_eq!(p.work_units, 6);
        assert_eq!(p.cpus.iter().copied().collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn max_gap_is_the_largest_checkpoint_gap() {
        let mut p = Progress::default();
        for us in [5, 900, 7] {
            p.checkpoint(Duration::from_micros(us), None);
        }
        assert_eq!(p.max_gap, Duration::from_micros(900));
        assert!(p.cpus.is_empty());
    }

    #[test]
    fn spin_units_depend_on_the_input() {
        assert_ne!(spin_unit(1), spin_unit(2));
    }
}
