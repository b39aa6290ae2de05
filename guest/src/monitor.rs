//! The sampler thread: while the scenario runs it sends a [`MonitorSample`] every
//! `interval_ms` (per-CPU run queues and schedstat, sched_ext state, PSI) and the
//! periodic [`Snapshot`]s at evenly spread moments (cgroup counters, per-CPU schedstat,
//! scheduler state). Times are milliseconds since the scenario started.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ktstr_wire::msg::{GuestMsg, MonitorSample, Snapshot};
use ktstr_wire::spec::MonitorSpec;

use crate::cgroup::CgroupTree;
use crate::report;
use crate::sysstat;

const SCX_ROOT: &str = "/sys/kernel/sched_ext";

/// When the `n` snapshots of a scenario planned to last `planned_ms` fire: evenly
/// spread strictly inside the run, `planned * (i + 1) / (n + 1)`.
pub fn snapshot_plan(n: u32, planned_ms: u64) -> Vec<u64> {
    (0..u64::from(n))
        .map(|i| planned_ms.saturating_mul(i + 1) / (u64::from(n) + 1))
        .collect()
}

/// Names of the cgroups alive now, kept current by the scenario executor.
pub type LiveNames = Arc<Mutex<Vec<String>>>;

/// What the sampler needs.
pub struct Config {
    pub t0: Instant,
    pub monitor: MonitorSpec,
    /// Snapshot times, ms since `t0`, ascending.
    pub snapshots_at_ms: Vec<u64>,
    pub cpus: Vec<u32>,
    pub tree: CgroupTree,
    pub cgroups: LiveNames,
}

/// How much the sampler sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub samples: u64,
    pub snapshots: u32,
    /// CPU time the thread used, microseconds.
    pub cpu_us: u64,
}

/// A running sampler thread.
pub struct Sampler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<Sent>,
}

impl Sampler {
    pub fn start(cfg: Config) -> std::io::Result<Self> {
        let (stop, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ktstr-monitor".into())
            .spawn(move || run(cfg, rx))?;
        Ok(Self { stop, thread })
    }

    /// Stops the thread and says what it sent.
    pub fn stop(self) -> Sent {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or_else(|_| {
            report::log_error!("the monitor thread panicked");
            Sent::default()
        })
    }
}

/// Next due time of each stream, in ms since t0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    next_sample: Option<u64>,
    interval: u64,
    snapshots: Vec<u64>,
    next_snapshot: usize,
}

/// What is due at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub sample: bool,
    /// Index of the snapshot to take.
    pub snapshot: Option<usize>,
}

impl Schedule {
    pub fn new(monitor: MonitorSpec, snapshots: Vec<u64>) -> Self {
        Self {
            next_sample: monitor.enabled.then_some(0),
            interval: u64::from(monitor.interval_ms.max(1)),
            snapshots,
            next_snapshot: 0,
        }
    }

    /// The next moment something is due; None when nothing is left.
    pub fn next_at(&self) -> Option<u64> {
        let snap = self.snapshots.get(self.next_snapshot).copied();
        match (self.next_sample, snap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes what is due at `now_ms` and moves on. A sampler that fell behind skips
    /// the samples it missed (keeping the cadence) but never skips a snapshot.
    pub fn take_due(&mut self, now_ms: u64) -> Due {
        let mut due = Due {
            sample: false,
            snapshot: None,
        };
        if let Some(t) = self.next_sample {
            if t <= now_ms {
                due.sample = true;
                let behind = (now_ms - t) / self.interval;
                self.next_sample = Some(t + (behind + 1) * self.interval);
            }
        }
        if self
            .snapshots
            .get(self.next_snapshot)
            .is_some_and(|&t| t <= now_ms)
        {
            due.snapshot = Some(self.next_snapshot);
            self.next_snapshot += 1;
        }
        due
    }
}

fn elapsed_ms(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

fn run(cfg: Config, stop: mpsc::Receiver<()>) -> Sent {
    let mut sched = Schedule::new(cfg.monitor, cfg.snapshots_at_ms.clone());
    let target = cfg.snapshots_at_ms.len() as u32;
    let mut sent = Sent::default();
    loop {
        let now = elapsed_ms(cfg.t0);
        let wait = match sched.next_at() {
            Some(t) => Duration::from_millis(t.saturating_sub(now)),
            // Nothing left to do but wait for the end.
            None => Duration::from_secs(3600),
        };
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = elapsed_ms(cfg.t0);
        let due = sched.take_due(now);
        if due.sample {
            report::send(&GuestMsg::MonitorSample(sample(&cfg, now)));
            sent.samples += 1;
        }
        if let Some(i) = due.snapshot {
            report::send(&GuestMsg::Snapshot(snapshot(&cfg, i as u32, target)));
            sent.snapshots += 1;
        }
    }
    sent.cpu_us = thread_cpu_us();
    sent
}

/// CPU time of the calling thread, microseconds.
fn thread_cpu_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill; the clock always exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000) + ts.tv_nsec as u64 / 1000
}

fn sample(cfg: &Config, elapsed_ms: u64) -> MonitorSample {
    MonitorSample {
        elapsed_ms,
        cpus: sysstat::read_cpus(&cfg.cpus),
        scx: sysstat::read_scx(Path::new(SCX_ROOT)),
        psi_cpu: sysstat::read_psi(Path::new("/proc/pressure/cpu")),
        psi_irq: sysstat::read_psi(Path::new("/proc/pressure/irq")),
    }
}

fn snapshot(cfg: &Config, index: u32, target: u32) -> Snapshot {
    let names = cfg
        .cgroups
        .lock()
        .map(|g| g.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    Snapshot {
        index,
        target,
        elapsed_ms: elapsed_ms(cfg.t0),
        cgroups: names.iter().map(|n| cfg.tree.snapshot(n)).collect(),
        cpus: sysstat::read_cpus(&cfg.cpus),
        scx: sysstat::read_scx(Path::new(SCX_ROOT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_spread_evenly_inside_the_run() {
        assert_eq!(snapshot_plan(3, 4000), [1000, 2000, 3000]);
        assert_eq!(snapshot_plan(1, 3000), [1500]);
        assert!(snapshot_plan(0, 3000).is_empty());
        let p = snapshot_plan(64, 2000);
        assert_eq!(p.len(), 64);
        assert!(p.windows(2).all(|w| w[0] <= w[1]));
        assert!(*p.last().unwrap() < 2000);
    }

    fn spec(enabled: bool, interval_ms: u32) -> MonitorSpec {
        MonitorSpec {
            enabled,
            interval_ms,
        }
    }

    #[test]
    fn schedule_interleaves_samples_and_snapshots() {
        let mut s = Schedule::new(spec(true, 100), vec![150, 250]);
        assert_eq!(s.next_at(), Some(0));
        assert!(s.take_due(0).sample);
        assert_eq!(s.next_at(), Some(100));
        let d = s.take_due(100);
        assert!(d.sample && d.snapshot.is_none());
        assert_eq!(s.next_at(), Some(150));
        let d = s.take_due(150);
        assert_eq!(
            d,
            Due {
                sample: false,
                snapshot: Some(0)
            }
        );
        // Late by 2.5 intervals: one sample now, cadence kept, the snapshot not lost.
        let d = s.take_due(450);
        assert!(d.sample);
        assert_eq!(d.snapshot, Some(1));
        assert_eq!(s.next_at(), Some(500));
    }

    #[test]
    fn disabled_monitor_still_takes_snapshots() {
        let mut s = Schedule::new(spec(false, 100), vec![40]);
        assert_eq!(s.next_at(), Some(40));
        assert_eq!(s.take_due(39).snapshot, None);
        assert_eq!(s.take_due(40).snapshot, Some(0));
        assert_eq!(s.next_at(), None);
    }
}
