//! Worker processes seen from the runtime: start a batch with a two-phase start (fork,
//! place every child in its cgroup, then release them all), ask them to stop through
//! their arena slots, reap them (killing each process group that outstays its grace) and
//! read their reports from the pipes. The work itself is in [`crate::work`].

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ktstr_wire::msg::WorkerReport;
use ktstr_wire::scenario::{WorkSpec, WorkType};
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe2, setpgid, ForkResult, Pid};

use crate::arena::{Arena, WorkerSlot};
use crate::cgroup::CgroupTree;
use crate::report;
use crate::work::{self, Partner, WorkerCtx, GO};

/// Largest report a worker may send; more is a bug, not a report. Reports stay below
/// the 64 KiB pipe buffer, so a worker never blocks writing one.
const MAX_REPORT_BYTES: u64 = 64 * 1024;
/// How often the runtime polls for exited workers.
const REAP_POLL: Duration = Duration::from_millis(10);

/// A running worker, seen from the runtime.
#[derive(Debug)]
pub struct Worker {
    /// Cgroup it was started in.
    pub group: String,
    pub index: u32,
    pub pid: Pid,
    pub slot: &'static WorkerSlot,
    report: File,
    status: Option<WaitStatus>,
}

/// What one batch of workers is.
pub struct Batch<'a> {
    pub group: &'a str,
    pub first_index: u32,
    pub count: u32,
    pub work: &'a WorkSpec,
    /// CPUs of the spec's `affinity`, resolved on the guest's topology.
    pub affinity: Option<Vec<u32>>,
    /// Scenario start and the workers' backstop deadline.
    pub t0: Instant,
    pub deadline: Instant,
}

/// Pipe ends of one `PipeIo` pair: a->b read, a->b write, b->a read, b->a write.
type PairPipes = [Option<OwnedFd>; 4];

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    pipe2(OFlag::O_CLOEXEC).context("creating a pipe")
}

/// Starts a batch: every worker is forked, placed in `batch.group` and only then
/// released. On any failure the started workers are released with EOF (they exit at
/// once without working), reaped, and the error is returned.
pub fn spawn_batch(arena: &mut Arena, tree: &CgroupTree, batch: &Batch) -> Result<Vec<Worker>> {
    let (go_r, go_w) = pipe().context("creating the start pipe")?;
    let mut started: Vec<Worker> = Vec::new();
    let r = fork_all(arena, batch, &go_r, &go_w, &mut started).and_then(|()| {
        for w in &started {
            // The child does the same; whichever runs first wins, the other may fail.
            let _ = setpgid(w.pid, w.pid);
            tree.add_proc(batch.group, w.pid).with_context(|| {
                format!(
                    "placing worker {}/{} (pid {}) in its cgroup",
                    w.group, w.index, w.pid
                )
            })?;
        }
        Ok(())
    });
    drop(go_r);
    if let Err(e) = r {
        drop(go_w);
        for w in &started {
            let _ = kill(w.pid, Signal::SIGKILL);
            let _ = waitpid(w.pid, None);
        }
        return Err(e);
    }
    let release = vec![GO; started.len()];
    File::from(go_w)
        .write_all(&release)
        .context("releasing the workers")?;
    Ok(started)
}

fn fork_all(
    arena: &mut Arena,
    batch: &Batch,
    go_r: &OwnedFd,
    go_w: &OwnedFd,
    started: &mut Vec<Worker>,
) -> Result<()> {
    let wt = &batch.work.work_type;
    let mut pipes: PairPipes = Default::default();
    let mut futex_slot = None;
    for i in 0..batch.count {
        let first_of_pair = i % 2 == 0;
        match wt {
            WorkType::PipeIo if first_of_pair => {
                let (a, b) = pipe()?;
                let (c, d) = pipe()?;
                pipes = [Some(a), Some(b), Some(c), Some(d)];
            }
            WorkType::FutexPingPong | WorkType::SignalPingPong if first_of_pair => {
                futex_slot = Some(arena.pair()?)
            }
            WorkType::UnixSocketPingPong if first_of_pair => {
                let (a, b) = work::socket_pair().context("creating a socket pair")?;
                let (a2, b2) = (
                    a.try_clone().context("duplicating a socket")?,
                    b.try_clone().context("duplicating a socket")?,
                );
                // Same layout as a pipe pair: the first reads [2] and writes [1].
                pipes = [Some(b2), Some(a), Some(a2), Some(b)];
            }
            _ => {}
        }
        let (_, slot) = arena.worker()?;
        let (rd, wr) = pipe().context("creating a worker report pipe")?;
        // SAFETY: the child is a copy of the runtime that may have had other threads; it
        // only runs `work::worker_main`, which takes no lock those threads may have held
        // and ends with `_exit`.
        match unsafe { fork() }.context("forking a worker")? {
            ForkResult::Child => {
                report::enter_worker();
                drop(rd);
                let partner = match wt {
                    WorkType::PipeIo | WorkType::UnixSocketPingPong => {
                        // First: reads b->a, writes a->b; second: the other way round.
                        // The ends it does not use are closed so EOF works.
                        let (rx, tx) = if first_of_pair { (2, 1) } else { (0, 3) };
                        let rx = pipes[rx].take();
                        let tx = pipes[tx].take();
                        drop(std::mem::take(&mut pipes));
                        match (rx, tx) {
                            (Some(rx), Some(tx)) => Some(Partner::Pipe {
                                first: first_of_pair,
                                rx,
                                tx,
                            }),
                            _ => None,
                        }
                    }
                    WorkType::FutexPingPong => futex_slot.map(|slot| Partner::Futex {
                        first: first_of_pair,
                        slot,
                    }),
                    WorkType::SignalPingPong => futex_slot.map(|slot| Partner::Signal {
                        first: first_of_pair,
                        slot,
                    }),
                    _ => None,
                };
                let ctx = WorkerCtx {
                    group: batch.group.to_string(),
                    index: batch.first_index + i,
                    work: batch.work.clone(),
                    affinity: batch.affinity.clone(),
                    slot,
                    partner,
                    t0: batch.t0,
                    deadline: batch.deadline,
                };
                // Only the parent may hold the release end, or EOF could never come.
                let go = go_r.try_clone();
                // SAFETY: closes this child's copy of the release end; the OwnedFd in the
                // parent's frame is never dropped here because the child never returns.
                unsafe { libc::close(std::os::fd::AsRawFd::as_raw_fd(go_w)) };
                match go {
                    Ok(go) => work::worker_main(ctx, go, wr),
                    // SAFETY: ends the child at once.
                    Err(_) => unsafe { libc::_exit(4) },
                }
            }
            ForkResult::Parent { child } => {
                started.push(Worker {
                    group: batch.group.to_string(),
                    index: batch.first_index + i,
                    pid: child,
                    slot,
                    report: File::from(rd),
                    status: None,
                });
                drop(wr);
                if !first_of_pair {
                    pipes = Default::default();
                }
            }
        }
    }
    Ok(())
}

/// How a worker ended, seen by the runtime.
pub type Collected = (Worker, Result<WorkerReport>);

/// Asks the workers to stop, waits for them until `give_up`, kills the process groups
/// still running, then reads each report. Returns the workers in order with their report
/// or what went wrong.
pub fn stop_and_collect(mut workers: Vec<Worker>, give_up: Instant) -> Vec<Collected> {
    for w in &workers {
        w.slot.request_stop();
    }
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
                    "worker {}/{} (pid {}) did not stop in time: killing its process group",
                    w.group,
                    w.index,
                    w.pid
                );
                let _ = kill(Pid::from_raw(-w.pid.as_raw()), Signal::SIGKILL);
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
            // Whatever the worker forked (ForkExit children) goes with it.
            let _ = kill(Pid::from_raw(-w.pid.as_raw()), Signal::SIGKILL);
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
    let mut r: WorkerReport = serde_json::from_slice(&buf).context("decoding the report")?;
    if let Some(how) = how {
        bail!("worker {how} after writing its report");
    }
    // The runtime's record names the worker.
    r.group.clone_from(&w.group);
    r.index = w.index;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::Arena;

    /// A cgroup tree over a plain directory: `cgroup.procs` writes land in a file.
    fn fake_tree(groups: &[&str]) -> (tempfile::TempDir, CgroupTree) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.procs"), "").unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), "").unwrap();
        std::fs::write(d.path().join("cgroup.subtree_control"), "").unwrap();
        let t = CgroupTree::setup(d.path()).unwrap();
        for g in groups {
            let dir = t.dir(g).unwrap();
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        }
        (d, t)
    }

    fn batch<'a>(group: &'a str, count: u32, work: &'a WorkSpec) -> Batch<'a> {
        let t0 = Instant::now();
        Batch {
            group,
            first_index: 0,
            count,
            work,
            affinity: None,
            t0,
            deadline: t0 + Duration::from_secs(60),
        }
    }

    #[test]
    fn a_batch_runs_until_asked_to_stop_and_reports() {
        let (_d, tree) = fake_tree(&["cg0"]);
        let mut arena = Arena::create().unwrap();
        let work = WorkSpec::new(WorkType::SpinWait);
        let ws = spawn_batch(&mut arena, &tree, &batch("cg0", 2, &work)).unwrap();
        assert_eq!(ws.len(), 2);
        // Progress shows in the arena before anyone stops.
        while arena.total_units() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let out = stop_and_collect(ws, Instant::now() + Duration::from_secs(30));
        for (w, r) in out {
            let r = r.unwrap();
            assert_eq!(r.group, "cg0");
            assert_eq!(r.index, w.index);
            assert_eq!(r.pid, w.pid.as_raw());
            assert!(r.work_units > 0);
            assert_eq!(r.work_type, "SpinWait");
        }
    }

    #[test]
    fn pairs_start_together_and_measure_wake_latency() {
        let (_d, tree) = fake_tree(&["p"]);
        let mut arena = Arena::create().unwrap();
        for wt in [
            WorkType::PipeIo,
            WorkType::FutexPingPong,
            WorkType::UnixSocketPingPong,
            WorkType::SignalPingPong,
        ] {
            let work = WorkSpec::new(wt.clone());
            let ws = spawn_batch(&mut arena, &tree, &batch("p", 4, &work)).unwrap();
            while ws.iter().any(|w| w.slot.units() < 3) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let out = stop_and_collect(ws, Instant::now() + Duration::from_secs(30));
            for (_, r) in out {
                let r = r.unwrap();
                assert!(r.wake_samples_total > 0, "{}: {r:?}", wt.name());
                assert!(r.errors.is_empty(), "{:?}", r.errors);
            }
        }
    }

    #[test]
    fn a_failed_placement_calls_the_start_off() {
        let (_d, tree) = fake_tree(&[]);
        let mut arena = Arena::create().unwrap();
        let work = WorkSpec::new(WorkType::SpinWait);
        let e = spawn_batch(&mut arena, &tree, &batch("missing", 2, &work)).unwrap_err();
        assert!(
            format!("{e:#}").contains("placing worker missing/0"),
            "{e:#}"
        );
        // The forked children were released with EOF and reaped: none did any work.
        assert_eq!(arena.total_units(), 0);
    }
}
