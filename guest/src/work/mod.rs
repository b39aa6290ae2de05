//! Inside a worker process: wait for the go signal, do the work type until told to stop,
//! measure it honestly and write the report up the pipe.
//!
//! What is measured: every work unit is a checkpoint (its count is also published live
//! in the worker's arena slot); the gap between checkpoints excludes time the worker
//! chose to sleep or wait for its partner (those are measured as timer and wake
//! latencies instead); wake latency is the time from the partner's wake call (a CLOCK_MONOTONIC stamp
//! passed through the pipe or the shared pair slot) to this worker running again; timer
//! latency is how much later than the requested absolute time a sleep returned.
//!
//! The work types that run threads, touch memory, run programs or change their
//! scheduling class live in the submodules; the simple ones and the pairs are here.
//!
//! A worker is a forked copy of the runtime that may have had other threads: it never
//! takes a lock the runtime might have held (no std stdio, no ring), it logs with raw
//! `write(2)` and ends with `_exit`.

use std::collections::BTreeSet;
use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ktstr_wire::msg::{WorkerReport, MAX_LATENCY_SAMPLES};
use ktstr_wire::scenario::{WorkSpec, WorkType};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

mod memory;
mod policy;
mod process;
mod settings;
mod threaded;

pub use threaded::socket_pair;

use crate::arena::{PairSlot, WorkerSlot};
use crate::procfs::parse_schedstat;
use crate::report;

/// Iterations of the spin loop per work unit: short enough that a worker checks its
/// stop flag every few ms even in a debug build under qemu TCG (measured: 20,000
/// iterations took ~10 ms there).
pub const SPIN_ITERS: u32 = 4096;
/// A short spin between two hand-overs of the pair work types, and before a yield.
pub(crate) const SHORT_SPIN: u32 = SPIN_ITERS / 16;
/// Longest a worker blocks before it looks at its stop flag again.
pub(crate) const WAIT_SLICE: Duration = Duration::from_millis(50);
/// Most error lines a worker keeps.
const MAX_ERRORS: usize = 8;
/// `CachePressure` touches this many cache lines per work unit.
const LINES_PER_UNIT: usize = 1024;
pub(crate) const CACHE_LINE: usize = 64;
/// `IoSyncWrite` writes this much per unit, cycling over this many blocks.
const IO_BLOCK: usize = 4096;
const IO_BLOCKS: u64 = 256;
/// `NiceSweep` changes its nice value every this many units, through -5..=19 and back.
const NICE_EVERY: u64 = 4;
const NICE_LOW: i32 = -5;
const NICE_HIGH: i32 = 19;

/// CLOCK_MONOTONIC in nanoseconds: the clock `Instant` uses, comparable across the
/// runtime and its workers.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

pub(crate) fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A line on the console from inside a worker, without std's stderr lock.
pub fn worker_log(msg: &str) {
    let line = format!("ktstr-guest: worker {}: {msg}\n", std::process::id());
    // SAFETY: writes an owned buffer to fd 2; a short or failed write only loses a log.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// A uniform sample of at most `cap` values from a stream of unknown length
/// (Vitter's algorithm R), with the stream's length.
#[derive(Debug, Clone)]
pub struct Reservoir {
    cap: usize,
    samples: Vec<u64>,
    total: u64,
    rng: u64,
}

impl Reservoir {
    pub fn new(cap: usize, seed: u64) -> Self {
        Self {
            cap,
            samples: Vec::new(),
            total: 0,
            rng: seed | 1,
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: plenty for choosing sample slots.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn push(&mut self, v: u64) {
        self.total += 1;
        if self.samples.len() < self.cap {
            self.samples.push(v);
            return;
        }
        let j = self.next_rand() % self.total;
        if let Ok(j) = usize::try_from(j) {
            if j < self.cap {
                self.samples[j] = v;
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn into_samples(self) -> Vec<u64> {
        self.samples
    }
}

/// What a worker measures of itself while working.
#[derive(Debug)]
pub struct Meter {
    slot: Option<&'static WorkerSlot>,
    /// Scenario start, for the `*_at_ms` stamps.
    t0: Instant,
    start: Instant,
    deadline: Instant,
    last: Instant,
    /// Time rested (slept, waited for the partner) since the last checkpoint.
    rest: Duration,
    pub units: u64,
    max_gap: Duration,
    max_gap_cpu: Option<u32>,
    max_gap_at: Duration,
    cpus: BTreeSet<u32>,
    last_cpu: Option<u32>,
    migrations: u64,
    wake: Reservoir,
    timer: Reservoir,
    deadline_misses: u64,
    errors: Vec<String>,
}

fn current_cpu() -> Option<u32> {
    nix::sched::sched_getcpu().ok().map(|c| c as u32)
}

impl Meter {
    pub fn new(slot: Option<&'static WorkerSlot>, t0: Instant, deadline: Instant) -> Self {
        let now = Instant::now();
        let seed = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ mono_ns();
        let mut m = Self {
            slot,
            t0,
            start: now,
            deadline,
            last: now,
            rest: Duration::ZERO,
            units: 0,
            max_gap: Duration::ZERO,
            max_gap_cpu: None,
            max_gap_at: Duration::ZERO,
            cpus: BTreeSet::new(),
            last_cpu: None,
            migrations: 0,
            wake: Reservoir::new(MAX_LATENCY_SAMPLES, seed),
            timer: Reservoir::new(MAX_LATENCY_SAMPLES, seed.rotate_left(17)),
            deadline_misses: 0,
            errors: Vec::new(),
        };
        m.see_cpu(current_cpu());
        m
    }

    fn see_cpu(&mut self, cpu: Option<u32>) {
        if let Some(cpu) = cpu {
            if self.last_cpu.is_some_and(|last| last != cpu) {
                self.migrations += 1;
            }
            self.last_cpu = Some(cpu);
            self.cpus.insert(cpu);
        }
    }

    /// One work unit done.
    pub fn checkpoint(&mut self) {
        self.checkpoint_at(Instant::now(), current_cpu());
    }

    fn checkpoint_at(&mut self, now: Instant, cpu: Option<u32>) {
        let gap = now
            .saturating_duration_since(self.last)
            .saturating_sub(self.rest);
        self.rest = Duration::ZERO;
        self.last = now;
        self.units += 1;
        if let Some(s) = self.slot {
            s.units.store(self.units, Ordering::Relaxed);
        }
        self.see_cpu(cpu);
        if gap > self.max_gap {
            self.max_gap = gap;
            self.max_gap_cpu = cpu;
            self.max_gap_at = now.saturating_duration_since(self.t0);
        }
    }

    /// Units other threads of this worker completed (added to the count at the end).
    pub fn add_units(&mut self, n: u64) {
        self.units += n;
        if let Some(s) = self.slot {
            s.units.store(self.units, Ordering::Relaxed);
        }
    }

    pub fn deadline_missed(&mut self, n: u64) {
        self.deadline_misses += n;
    }

    /// Time the worker chose not to run (a sleep, a wait for its partner): not a gap.
    pub fn rested(&mut self, d: Duration) {
        self.rest += d;
    }

    pub fn wake_latency(&mut self, ns: u64) {
        self.wake.push(ns);
    }

    pub fn timer_latency(&mut self, ns: u64) {
        self.timer.push(ns);
    }

    /// Keeps the first few problems for the report (and logs them).
    pub fn error(&mut self, e: String) {
        if self.errors.len() < MAX_ERRORS {
            worker_log(&e);
            self.errors.push(e);
        }
    }

    pub fn should_stop(&self) -> bool {
        self.slot.is_some_and(|s| s.stop_requested())
            || Instant::now() >= self.deadline
            || report::stop_requested()
    }

    /// Ends the measurement and reads what the kernel counted for this process.
    pub fn into_report(self, group: &str, index: u32, work_type: &str) -> WorkerReport {
        let wall = self.start.elapsed();
        let ended = self.t0.elapsed();
        let sched = std::fs::read_to_string("/proc/self/schedstat")
            .map_err(anyhow::Error::from)
            .and_then(|s| parse_schedstat(&s));
        let mut errors = self.errors;
        let sched = sched.unwrap_or_else(|e| {
            errors.push(format!(
                "/proc/self/schedstat: {e:#} (run delay reported as 0)"
            ));
            Default::default()
        });
        let cpu_time_ns = cpu_time_ns();
        let cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|s| crate::cgroup::relative_to_test_root(&s))
            .unwrap_or_default();
        WorkerReport {
            group: group.to_string(),
            index,
            pid: std::process::id() as i32,
            cgroup,
            work_type: work_type.to_string(),
            work_units: self.units,
            cpu_time_ns,
            wall_time_ns: ns(wall),
            off_cpu_ns: ns(wall).saturating_sub(cpu_time_ns),
            run_delay_ns: sched.run_delay_ns,
            run_count: sched.run_count,
            schedstat_cpu_ns: sched.exec_runtime_ns,
            migrations: self.migrations,
            cpus_used: self.cpus.into_iter().collect(),
            allowed_cpus: allowed_cpus().unwrap_or_default(),
            max_gap_ns: ns(self.max_gap),
            max_gap_cpu: self.max_gap_cpu,
            max_gap_at_ms: self.max_gap_at.as_millis() as u64,
            nice: current_nice(),
            started_at_ms: self.start.saturating_duration_since(self.t0).as_millis() as u64,
            ended_at_ms: ended.as_millis() as u64,
            wake_samples_total: self.wake.total(),
            wake_latency_ns: self.wake.into_samples(),
            timer_samples_total: self.timer.total(),
            timer_latency_ns: self.timer.into_samples(),
            deadline_misses: self.deadline_misses,
            policy: None,
            errors,
        }
    }
}

fn cpu_time_ns() -> u64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| {
                (tv.tv_sec() as u64).saturating_mul(1_000_000_000) + (tv.tv_usec() as u64) * 1000
            };
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0)
}

/// CPUs in a CPU set, ascending.
fn cpus_of(set: &CpuSet) -> Vec<u32> {
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .map(|c| c as u32)
        .collect()
}

fn allowed_cpus() -> Option<Vec<u32>> {
    sched_getaffinity(Pid::from_raw(0))
        .ok()
        .map(|s| cpus_of(&s))
}

fn current_nice() -> i32 {
    // SAFETY: plain syscalls on this process. getpriority can legitimately return -1, so
    // errno is cleared first and checked after.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, 0);
        if n == -1 && *libc::__errno_location() != 0 {
            0
        } else {
            n
        }
    }
}

fn set_nice(n: i32) -> std::io::Result<()> {
    // SAFETY: sets this process's own priority.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One unit of CPU work the optimiser cannot remove.
pub fn spin(mut x: u64, iters: u32) -> u64 {
    for _ in 0..iters {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = black_box(x);
    }
    x
}

/// Sleeps until `dur` from now on CLOCK_MONOTONIC, in slices so a stop request is seen.
/// Records the overshoot past the requested time as a timer latency; returns false
/// (no sample) when it stopped early.
pub(crate) fn timed_sleep(m: &mut Meter, dur: Duration) -> bool {
    sleep_until_ns(m, mono_ns().saturating_add(ns(dur)))
}

/// One absolute `clock_nanosleep` on CLOCK_MONOTONIC until `target` (ns); may end early
/// on a signal.
pub(crate) fn sleep_until_mono_ns(target: u64) {
    let ts = libc::timespec {
        tv_sec: (target / 1_000_000_000) as libc::time_t,
        tv_nsec: (target % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: an absolute sleep on CLOCK_MONOTONIC with a valid timespec; no remainder is
    // needed for TIMER_ABSTIME.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// Sleeps until CLOCK_MONOTONIC reaches `target` ns, like [`timed_sleep`].
pub(crate) fn sleep_until_ns(m: &mut Meter, target: u64) -> bool {
    let began = Instant::now();
    loop {
        let now = mono_ns();
        if now >= target {
            break;
        }
        let wake_at = target.min(now.saturating_add(ns(WAIT_SLICE)));
        // EINTR just loops.
        sleep_until_mono_ns(wake_at);
        if wake_at < target && m.should_stop() {
            m.rested(began.elapsed());
            return false;
        }
    }
    let late = mono_ns().saturating_sub(target);
    m.timer_latency(late);
    m.rested(began.elapsed());
    true
}

/// The other half of a pair work type.
pub enum Partner {
    /// `PipeIo`: read stamps from `rx`, write them to `tx`.
    Pipe {
        first: bool,
        rx: OwnedFd,
        tx: OwnedFd,
    },
    /// `FutexPingPong`: take turns on the shared slot.
    Futex {
        first: bool,
        slot: &'static PairSlot,
    },
    /// `SignalPingPong`: the shared slot carries both pids and the hand-over stamp.
    Signal {
        first: bool,
        slot: &'static PairSlot,
    },
}

/// Does `work` until told to stop.
pub fn run(work: &WorkType, partner: Option<Partner>, m: &mut Meter) {
    let mut x = u64::from(std::process::id()) | 1;
    match (work, partner) {
        (WorkType::SpinWait, _) => loop {
            x = spin(x, SPIN_ITERS);
            m.checkpoint();
            if m.should_stop() {
                break;
            }
        },
        (WorkType::YieldHeavy, _) => loop {
            x = spin(x, SHORT_SPIN);
            nix::sched::sched_yield().ok();
            m.checkpoint();
            if m.should_stop() {
                break;
            }
        },
        (WorkType::Mixed, _) => {
            for i in 0u64.. {
                x = spin(x, SPIN_ITERS);
                if i % 4 == 1 {
                    nix::sched::sched_yield().ok();
                }
                if i % 8 == 7 && !timed_sleep(m, Duration::from_millis(1)) {
                    break;
                }
                m.checkpoint();
                if m.should_stop() {
                    break;
                }
            }
        }
        (WorkType::IoSyncWrite, _) => io_sync_write(m),
        (WorkType::Bursty { burst_ms, sleep_ms }, _) => 'run: loop {
            let until = Instant::now() + Duration::from_millis(u64::from(*burst_ms));
            while Instant::now() < until {
                x = spin(x, SPIN_ITERS);
                m.checkpoint();
                if m.should_stop() {
                    break 'run;
                }
            }
            if !timed_sleep(m, Duration::from_millis(u64::from(*sleep_ms))) {
                break;
            }
        },
        (WorkType::PipeIo, Some(Partner::Pipe { first, rx, tx })) => pipe_io(m, first, rx, tx),
        (WorkType::FutexPingPong, Some(Partner::Futex { first, slot })) => {
            futex_ping_pong(m, first, slot)
        }
        (WorkType::UnixSocketPingPong, Some(Partner::Pipe { first, rx, tx })) => {
            pipe_io(m, first, rx, tx)
        }
        (WorkType::SignalPingPong, Some(Partner::Signal { first, slot })) => {
            signal_ping_pong(m, first, slot)
        }
        (
            WorkType::PipeIo
            | WorkType::FutexPingPong
            | WorkType::UnixSocketPingPong
            | WorkType::SignalPingPong,
            _,
        ) => {
            m.error(format!(
                "{} worker started without its partner",
                work.name()
            ));
        }
        (WorkType::CachePressure { kib }, _) => cache_pressure(m, *kib),
        (WorkType::ForkExit, _) => fork_exit(m),
        (WorkType::NiceSweep, _) => {
            let span = (NICE_HIGH - NICE_LOW) as u64;
            loop {
                if m.units.is_multiple_of(NICE_EVERY) {
                    // A triangle wave over NICE_LOW..=NICE_HIGH.
                    let k = (m.units / NICE_EVERY) % (2 * span);
                    let off = if k <= span { k } else { 2 * span - k };
                    let n = NICE_LOW + off as i32;
                    if let Err(e) = set_nice(n) {
                        m.error(format!("setpriority({n}): {e}"));
                    }
                }
                x = spin(x, SPIN_ITERS);
                m.checkpoint();
                if m.should_stop() {
                    break;
                }
            }
        }
        (WorkType::AffinityChurn, _) => affinity_churn(m),
        (WorkType::TimerLatency { interval_us }, _) => loop {
            if !timed_sleep(m, Duration::from_micros(u64::from(*interval_us))) {
                break;
            }
            m.checkpoint();
            if m.should_stop() {
                break;
            }
        },
        (WorkType::LockConvoy { threads, hold_us }, _) => {
            threaded::lock_convoy(m, *threads, *hold_us)
        }
        (WorkType::ThreadChurn, _) => threaded::thread_churn(m),
        (WorkType::ForkExec, _) => process::fork_exec(m),
        (WorkType::PageFault { kib }, _) => memory::page_fault(m, *kib),
        (WorkType::MemBandwidth { kib }, _) => memory::mem_bandwidth(m, *kib),
        (WorkType::NumaRemote { kib }, _) => memory::numa_remote(m, *kib),
        (WorkType::PeriodicDuty { run_us, period_us }, _) => {
            policy::periodic_duty(m, *run_us, *period_us)
        }
        (
            WorkType::TimerStorm {
                threads,
                interval_us,
            },
            _,
        ) => threaded::timer_storm(m, *threads, *interval_us),
        (
            WorkType::EpollServer {
                clients,
                pool,
                work_us,
            },
            _,
        ) => threaded::epoll_server(m, *clients, *pool, *work_us),
        (WorkType::TmpfsFsync { kib }, _) => process::tmpfs_fsync(m, *kib),
        (WorkType::YieldSpinLock { threads }, _) => threaded::yield_spin_lock(m, *threads),
        (WorkType::FifoHog { priority }, _) => {
            policy::policy_hog(m, "FifoHog", libc::SCHED_FIFO, *priority)
        }
        (WorkType::RrHog { priority }, _) => {
            policy::policy_hog(m, "RrHog", libc::SCHED_RR, *priority)
        }
        (WorkType::IdleBackground, _) => {
            policy::policy_hog(m, "IdleBackground", libc::SCHED_IDLE, 0)
        }
        (WorkType::BatchBackground, _) => {
            policy::policy_hog(m, "BatchBackground", libc::SCHED_BATCH, 0)
        }
        // The nice value was set from the worker's index before the work began.
        (WorkType::MixedNice, _) => loop {
            x = spin(x, SPIN_ITERS);
            m.checkpoint();
            if m.should_stop() {
                break;
            }
        },
        (WorkType::ThreadBurst { burst_us, gap_ms }, _) => {
            threaded::thread_burst(m, *burst_us, *gap_ms)
        }
        (WorkType::Command { path, args }, _) => process::command(m, path, args),
    }
    black_box(x);
}

fn io_sync_write(m: &mut Meter) {
    let path = format!("/tmp/ktstr-io-{}", std::process::id());
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => {
            m.error(format!("IoSyncWrite: creating {path}: {e}"));
            return;
        }
    };
    let mut block = vec![0u8; IO_BLOCK];
    let mut i = 0u64;
    loop {
        block[0] = i as u8;
        let off = (i % IO_BLOCKS) * IO_BLOCK as u64;
        let r = nix::sys::uio::pwrite(file.as_fd(), &block, off as i64)
            .map_err(std::io::Error::from)
            .and_then(|_| file.sync_data());
        if let Err(e) = r {
            m.error(format!("IoSyncWrite: {path}: {e}"));
            break;
        }
        i += 1;
        m.checkpoint();
        if m.should_stop() {
            break;
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Waits until `fd` is readable, in slices; false when the worker should stop first.
fn wait_readable(m: &Meter, fd: &OwnedFd) -> bool {
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let slice =
            PollTimeout::try_from(WAIT_SLICE.as_millis() as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, slice) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            // Readable, or the partner hung up (the read then sees EOF).
            Ok(_) => return true,
            Err(_) => return false,
        }
        if m.should_stop() {
            return false;
        }
    }
}

/// Reads one 8-byte stamp; None on EOF or error (the partner is gone).
pub(crate) fn read_stamp(fd: &OwnedFd) -> Option<u64> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
    Some(u64::from_le_bytes(buf))
}

/// Writes one stamp (8 bytes, below PIPE_BUF, so in one piece); false when the
/// partner is gone.
pub(crate) fn write_stamp(fd: &OwnedFd, stamp: u64) -> bool {
    loop {
        match nix::unistd::write(fd, &stamp.to_le_bytes()) {
            Ok(8) => return true,
            Err(nix::errno::Errno::EINTR) => {}
            _ => return false,
        }
    }
}

fn pipe_io(m: &mut Meter, first: bool, rx: OwnedFd, tx: OwnedFd) {
    let mut x = u64::from(std::process::id()) | 1;
    if first && !write_stamp(&tx, mono_ns()) {
        m.error("PipeIo: the partner's pipe is closed".into());
        return;
    }
    // The second worker's first stamp was written before it even started: that wait
    // measures its start-up, not a wake-up.
    let mut startup = !first;
    loop {
        let began = Instant::now();
        if !wait_readable(m, &rx) {
            break;
        }
        let Some(stamp) = read_stamp(&rx) else {
            break;
        };
        if !std::mem::take(&mut startup) {
            m.wake_latency(mono_ns().saturating_sub(stamp));
        }
        m.rested(began.elapsed());
        x = spin(x, SHORT_SPIN);
        m.checkpoint();
        if m.should_stop() {
            break;
        }
        if !write_stamp(&tx, mono_ns()) {
            break;
        }
    }
    black_box(x);
}

fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT on a live, aligned u32 in shared memory with a relative timeout;
    // it returns at once if the word no longer holds `expected`. Errors (EAGAIN, EINTR,
    // ETIMEDOUT) all mean "look again".
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        )
    };
}

pub(crate) fn futex_wake(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: FUTEX_WAKE of at most one waiter on a live, aligned u32 in shared memory.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

fn futex_ping_pong(m: &mut Meter, first: bool, slot: &'static PairSlot) {
    let me: u32 = if first { 0 } else { 1 };
    let other = 1 - me;
    let mut x = u64::from(std::process::id()) | 1;
    'run: loop {
        let began = Instant::now();
        while slot.turn.load(Ordering::Acquire) != me {
            if m.should_stop() {
                break 'run;
            }
            futex_wait(&slot.turn, other, WAIT_SLICE);
        }
        let handed = slot.handed_at_ns.load(Ordering::Relaxed);
        if handed != 0 {
            m.wake_latency(mono_ns().saturating_sub(handed));
        }
        m.rested(began.elapsed());
        x = spin(x, SHORT_SPIN);
        m.checkpoint();
        let stopping = m.should_stop();
        // Hand over even when stopping, so the partner is not left waiting.
        slot.handed_at_ns.store(mono_ns(), Ordering::Relaxed);
        slot.turn.store(other, Ordering::Release);
        futex_wake(&slot.turn);
        if stopping {
            break;
        }
    }
    black_box(x);
}

/// Blocks `SIGUSR1` (so it is only taken by `sigtimedwait`) and returns the set.
fn block_sigusr1() -> libc::sigset_t {
    // SAFETY: builds a signal set on the stack and blocks it for this thread, which is
    // the whole (single-threaded) worker.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits up to [`WAIT_SLICE`] for `SIGUSR1`; true when it came.
fn wait_sigusr1(set: &libc::sigset_t) -> bool {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: WAIT_SLICE.as_nanos() as libc::c_long,
    };
    // SAFETY: waits for a blocked signal of `set` with a valid timeout; the info
    // argument may be null.
    unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) == libc::SIGUSR1 }
}

fn signal_ping_pong(m: &mut Meter, first: bool, slot: &'static PairSlot) {
    let set = block_sigusr1();
    let me = usize::from(!first);
    let other = 1 - me;
    slot.pids[me].store(std::process::id(), Ordering::Release);
    // The partner's pid, once it has blocked the signal and published itself.
    let partner = loop {
        let p = slot.pids[other].load(Ordering::Acquire);
        if p != 0 {
            break Pid::from_raw(p as i32);
        }
        if m.should_stop() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let send = |m: &mut Meter| {
        slot.handed_at_ns.store(mono_ns(), Ordering::Release);
        if let Err(e) = nix::sys::signal::kill(partner, nix::sys::signal::Signal::SIGUSR1) {
            m.error(format!("SignalPingPong: kill({partner}): {e}"));
            return false;
        }
        true
    };
    if first && !send(m) {
        return;
    }
    let mut x = u64::from(std::process::id()) | 1;
    loop {
        let began = Instant::now();
        if !wait_sigusr1(&set) {
            m.rested(began.elapsed());
            if m.should_stop() {
                break;
            }
            continue;
        }
        m.wake_latency(mono_ns().saturating_sub(slot.handed_at_ns.load(Ordering::Acquire)));
        m.rested(began.elapsed());
        x = spin(x, SHORT_SPIN);
        m.checkpoint();
        if m.should_stop() || !send(m) {
            break;
        }
    }
    black_box(x);
}

fn cache_pressure(m: &mut Meter, kib: u32) {
    let len = kib as usize * 1024;
    let mut buf: Vec<u8> = Vec::new();
    if let Err(e) = buf.try_reserve_exact(len) {
        m.error(format!("CachePressure: allocating {kib} KiB: {e}"));
        return;
    }
    buf.resize(len, 0);
    let mut pos = 0usize;
    loop {
        for _ in 0..LINES_PER_UNIT {
            buf[pos] = black_box(buf[pos].wrapping_add(1));
            pos += CACHE_LINE;
            if pos >= len {
                pos = 0;
            }
        }
        m.checkpoint();
        if m.should_stop() {
            break;
        }
    }
}

fn fork_exit(m: &mut Meter) {
    use nix::sys::wait::waitpid;
    use nix::unistd::{fork, ForkResult};
    loop {
        // SAFETY: the worker is single-threaded; the child only calls `_exit`.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // SAFETY: ends the child at once, running nothing of the parent's.
                unsafe { libc::_exit(0) }
            }
            Ok(ForkResult::Parent { child }) => {
                if let Err(e) = waitpid(child, None) {
                    m.error(format!("ForkExit: waitpid: {e}"));
                    break;
                }
            }
            Err(e) => {
                m.error(format!("ForkExit: fork: {e}"));
                break;
            }
        }
        m.checkpoint();
        if m.should_stop() {
            break;
        }
    }
}

/// Every CPU this process may be given (the kernel narrows a request to the cpuset).
fn all_cpus() -> CpuSet {
    let mut s = CpuSet::new();
    for c in 0..CpuSet::count() {
        let _ = s.set(c);
    }
    s
}

fn affinity_churn(m: &mut Meter) {
    let mut x = u64::from(std::process::id()) | 1;
    let mut pool = allowed_cpus().unwrap_or_default();
    let mut next = 0usize;
    loop {
        x = spin(x, SPIN_ITERS);
        if !pool.is_empty() {
            let cpu = pool[next % pool.len()] as usize;
            next += 1;
            let mut one = CpuSet::new();
            let moved = one
                .set(cpu)
                .and_then(|_| sched_setaffinity(Pid::from_raw(0), &one));
            if moved.is_err() {
                // The cpuset changed under us: take whatever it allows now.
                let _ = sched_setaffinity(Pid::from_raw(0), &all_cpus());
                pool = allowed_cpus().unwrap_or_default();
            }
        }
        m.checkpoint();
        if m.should_stop() {
            break;
        }
    }
    // Report the cpuset's CPUs, not the last single-CPU pin.
    let _ = sched_setaffinity(Pid::from_raw(0), &all_cpus());
    black_box(x);
}

/// The byte that releases one worker.
pub const GO: u8 = b'g';

/// Everything a forked worker needs.
pub struct WorkerCtx {
    pub group: String,
    pub index: u32,
    pub work: WorkSpec,
    /// CPUs of the spec's `affinity`, resolved on the guest's topology.
    pub affinity: Option<Vec<u32>>,
    pub slot: &'static WorkerSlot,
    pub partner: Option<Partner>,
    /// Scenario start.
    pub t0: Instant,
    /// Backstop: stop here even if the runtime never asks.
    pub deadline: Instant,
}

/// The body of a forked worker: waits for `go` (one byte from the runtime once it has
/// placed this process in its cgroup; EOF means the start was called off), works,
/// reports on `out`, exits.
pub fn worker_main(ctx: WorkerCtx, go: OwnedFd, out: OwnedFd) -> ! {
    // Own process group, so teardown can kill the worker with whatever it forked.
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    // A partner that is gone must not kill us mid-write.
    // SAFETY: sets SIGPIPE's disposition in this single-threaded process.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let mut byte = [0u8; 1];
    let released = loop {
        match nix::unistd::read(&go, &mut byte) {
            Ok(1) => break byte[0] == GO,
            Err(nix::errno::Errno::EINTR) => {}
            _ => break false,
        }
    };
    drop(go);
    if !released {
        exit(3);
    }
    let setting_errors = settings::apply(&ctx.work, ctx.affinity.as_deref());
    let mut m = Meter::new(Some(ctx.slot), ctx.t0, ctx.deadline);
    for e in setting_errors {
        m.error(e);
    }
    if ctx.work.work_type == WorkType::MixedNice {
        let n = policy::MIXED_NICE[ctx.index as usize % policy::MIXED_NICE.len()];
        if let Err(e) = set_nice(n) {
            m.error(format!("MixedNice: setpriority({n}): {e}"));
        }
    }
    run(&ctx.work.work_type, ctx.partner, &mut m);
    let mut report = m.into_report(&ctx.group, ctx.index, ctx.work.name());
    report.policy = Some(settings::current_policy());
    let code = match serde_json::to_vec(&report) {
        Ok(json) => match File::from(out).write_all(&json) {
            Ok(()) => 0,
            Err(e) => {
                worker_log(&format!("writing the report: {e}"));
                1
            }
        },
        Err(e) => {
            worker_log(&format!("encoding the report: {e}"));
            1
        }
    };
    exit(code)
}

fn exit(code: i32) -> ! {
    // SAFETY: `_exit` ends the forked child without running the parent's exit handlers.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter() -> Meter {
        let now = Instant::now();
        Meter::new(None, now, now + Duration::from_secs(3600))
    }

    #[test]
    fn reservoir_keeps_everything_until_full_then_a_uniform_sample() {
        let mut r = Reservoir::new(4, 7);
        for v in 0..3 {
            r.push(v);
        }
        assert_eq!(r.clone().into_samples(), [0, 1, 2]);
        let mut r = Reservoir::new(100, 42);
        for v in 0..100_000u64 {
            r.push(v);
        }
        assert_eq!(r.total(), 100_000);
        let s = r.into_samples();
        assert_eq!(s.len(), 100);
        // A uniform sample of 0..100000 has its mean near 50000; a reservoir stuck on
        // the first or last values would sit near 50 or 99950.
        let mean = s.iter().sum::<u64>() as f64 / s.len() as f64;
        assert!((25_000.0..75_000.0).contains(&mean), "mean {mean}");
        assert!(
            s.iter().any(|&v| v >= 100),
            "later values replaced early ones"
        );
    }

    #[test]
    fn gaps_exclude_rest_and_migrations_count_cpu_changes() {
        let mut m = meter();
        let t = m.last;
        m.checkpoint_at(t + Duration::from_millis(5), Some(1));
        m.rested(Duration::from_millis(90));
        m.checkpoint_at(t + Duration::from_millis(105), Some(1));
        m.checkpoint_at(t + Duration::from_millis(125), Some(2));
        assert_eq!(m.units, 3);
        // 100 ms between the first two checkpoints, 90 of them rested: a 10 ms gap; the
        // 20 ms gap after it is the largest.
        assert_eq!(m.max_gap, Duration::from_millis(20));
        assert_eq!(m.max_gap_cpu, Some(2));
        assert!(m.migrations >= 1);
        assert!(m.cpus.contains(&1) && m.cpus.contains(&2));
    }

    #[test]
    fn a_sleep_records_its_overshoot_not_a_gap() {
        let mut m = meter();
        let began = m.last;
        assert!(timed_sleep(&mut m, Duration::from_millis(2)));
        assert_eq!(m.timer.total(), 1);
        m.checkpoint();
        // The 2 ms asleep were rest: the gap is what is left of the elapsed time.
        assert!(m.max_gap + Duration::from_millis(2) <= m.last - began);
    }

    #[test]
    fn spin_depends_on_its_input() {
        assert_ne!(spin(1, 64), spin(2, 64));
    }

    #[test]
    fn report_carries_the_measurements() {
        let mut m = meter();
        for _ in 0..3 {
            m.checkpoint();
        }
        m.wake_latency(1500);
        m.timer_latency(700);
        m.error("boom".into());
        let r = m.into_report("cg0", 2, "SpinWait");
        assert_eq!((r.group.as_str(), r.index), ("cg0", 2));
        assert_eq!(r.work_units, 3);
        assert_eq!(r.wake_latency_ns, [1500]);
        assert_eq!(r.timer_samples_total, 1);
        assert_eq!(r.errors, ["boom"]);
        assert_eq!(r.work_type, "SpinWait");
        assert!(!r.allowed_cpus.is_empty());
        assert!(r.wall_time_ns >= r.off_cpu_ns);
    }

    /// Runs a work type in this process (no fork) for a few units with a stop flag the
    /// test sets, and returns what it measured.
    fn run_briefly(work: WorkType) -> WorkerReport {
        let now = Instant::now();
        let mut m = Meter::new(None, now, now + Duration::from_millis(30));
        run(&work, None, &mut m);
        m.into_report("t", 0, work.name())
    }

    #[test]
    fn solo_work_types_make_progress_and_stop() {
        for w in [
            WorkType::SpinWait,
            WorkType::YieldHeavy,
            WorkType::Mixed,
            WorkType::IoSyncWrite,
            WorkType::Bursty {
                burst_ms: 2,
                sleep_ms: 2,
            },
            WorkType::CachePressure { kib: 64 },
            WorkType::ForkExit,
            WorkType::AffinityChurn,
            WorkType::TimerLatency { interval_us: 500 },
        ] {
            let r = run_briefly(w.clone());
            assert!(r.work_units > 0, "{}: {r:?}", w.name());
            assert!(r.errors.is_empty(), "{}: {:?}", w.name(), r.errors);
            if w.measures_timer_latency() && !matches!(w, WorkType::Mixed) {
                assert!(r.timer_samples_total > 0, "{}", w.name());
            }
        }
    }

    #[test]
    fn pipe_pairs_measure_wake_latency() {
        let (a_r, a_w) = nix::unistd::pipe().unwrap();
        let (b_r, b_w) = nix::unistd::pipe().unwrap();
        let h = std::thread::spawn(move || {
            let now = Instant::now();
            let mut m = Meter::new(None, now, now + Duration::from_millis(50));
            pipe_io(&mut m, false, a_r, b_w);
            m.into_report("p", 1, "PipeIo")
        });
        let now = Instant::now();
        let mut m = Meter::new(None, now, now + Duration::from_millis(50));
        pipe_io(&mut m, true, b_r, a_w);
        let first = m.into_report("p", 0, "PipeIo");
        let second = h.join().unwrap();
        assert!(first.wake_samples_total > 0 && second.wake_samples_total > 0);
        assert!(first.work_units > 0 && second.work_units > 0);
        assert!(first.wake_latency_ns.len() <= MAX_LATENCY_SAMPLES);
    }

    #[test]
    fn futex_pairs_measure_wake_latency() {
        let slot: &'static PairSlot = Box::leak(Box::default());
        let h = std::thread::spawn(move || {
            let now = Instant::now();
            let mut m = Meter::new(None, now, now + Duration::from_millis(50));
            futex_ping_pong(&mut m, false, slot);
            m.into_report("f", 1, "FutexPingPong")
        });
        let now = Instant::now();
        let mut m = Meter::new(None, now, now + Duration::from_millis(50));
        futex_ping_pong(&mut m, true, slot);
        let a = m.into_report("f", 0, "FutexPingPong");
        let b = h.join().unwrap();
        assert!(a.work_units > 0 && b.work_units > 0);
        assert!(b.wake_samples_total > 0, "{b:?}");
    }
}
