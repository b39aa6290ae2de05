//! The scenario's data: cgroups with their workers, steps with their operations and
//! holds, and the CPU sets they name. Plain serde data that both sides read; the guest
//! resolves CPU sets on the topology it sees ([`CpusetSpec::resolve`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::msg::{SeenCpu, SeenTopology};

/// Everything a test runs in the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Scenario {
    /// Cgroups created (and their workers started) before the first step; they live for
    /// the whole run unless an op removes them.
    #[serde(default)]
    pub cgroups: Vec<CgroupDef>,
    /// Milliseconds the workers run before step 1 starts (the baseline phase, step 0).
    #[serde(default)]
    pub settle_ms: u64,
    /// Steps in order: each runs its ops, then holds.
    pub steps: Vec<Step>,
}

/// A cgroup and the workers it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CgroupDef {
    /// One path component: letters, digits, `_` and `-`.
    pub name: String,
    /// CPUs the cgroup may use (`cpuset.cpus`); None leaves the parent's.
    #[serde(default)]
    pub cpuset: Option<CpusetSpec>,
    /// `cpu.weight`, 1..=10000 (the kernel's default is 100).
    #[serde(default)]
    pub cpu_weight: Option<u32>,
    /// `cpu.max`: bandwidth limit.
    #[serde(default)]
    pub cpu_max: Option<CpuMax>,
    /// How many workers run in it. A cgroup with nested cgroups holds none (cgroup v2
    /// lets only leaves hold processes when controllers are enabled): `Count(0)`.
    pub workers: WorkerCount,
    /// What its workers do.
    pub work: WorkSpec,
    /// Cgroups inside this one, named `<this>/<child>`.
    #[serde(default)]
    pub nested: Vec<CgroupDef>,
}

/// `cpu.max`: at most `quota_us` of CPU time per `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuMax {
    pub quota_us: u64,
    pub period_us: u64,
}

/// A set of CPUs, described against the topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpusetSpec {
    /// The CPUs of the `i`-th LLC (LLCs numbered by their lowest CPU, from 0).
    Llc(u32),
    /// The CPUs of NUMA node `i`.
    Node(u32),
    /// CPUs `start..end` (end excluded).
    Range { start: u32, end: u32 },
    /// Exactly these CPUs.
    Cpus(Vec<u32>),
    /// Part `index` of the guest's CPUs cut into `of` contiguous, near-equal parts that
    /// share no CPU (`Disjoint { index: 1, of: 2 }` on 8 CPUs is 4-7).
    Disjoint { index: u32, of: u32 },
    /// Part `index` of `of` contiguous parts like [`CpusetSpec::Disjoint`], widened by
    /// `percent` of a part's size into each neighbour, so neighbouring parts share CPUs.
    Overlap { index: u32, of: u32, percent: u32 },
}

/// How many workers a cgroup gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerCount {
    /// Exactly this many.
    Count(u32),
    /// This percentage of the CPUs the cgroup may use (its cpuset, else all CPUs), rounded
    /// up, then up to a whole number of groups for grouped work types: `200` on 4 CPUs
    /// is 8 workers.
    PercentOfCpus(u32),
}

impl WorkerCount {
    /// The worker count for a cgroup that may use `cpus` CPUs and runs work in groups of
    /// `group`.
    pub fn resolve(self, cpus: u32, group: u32) -> u32 {
        match self {
            Self::Count(n) => n,
            Self::PercentOfCpus(p) => {
                let n = (u64::from(p) * u64::from(cpus)).div_ceil(100);
                let g = u64::from(group.max(1));
                let n = n.div_ceil(g) * g;
                u32::try_from(n).unwrap_or(u32::MAX)
            }
        }
    }
}

/// What a worker does, with its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkType {
    /// Burn CPU in fixed-size units.
    SpinWait,
    /// A short spin, then `sched_yield`: one unit per yield.
    YieldHeavy,
    /// Spin, yield and a 1 ms sleep in turn (timer latency of the sleeps).
    Mixed,
    /// Write 4 KiB to a file under /tmp and `fdatasync` it: one unit per write. The
    /// guest has no disk (/tmp is tmpfs), so the sync is a syscall, not a flush: this is
    /// short system-call-heavy work, not I/O waiting.
    IoSyncWrite,
    /// Spin for `burst_ms`, sleep `sleep_ms` (timer latency of the sleeps).
    Bursty { burst_ms: u32, sleep_ms: u32 },
    /// Pairs pass a timestamp back and forth through two pipes: wake latency of each hop.
    PipeIo,
    /// Pairs take turns through a shared futex word: wake latency of each hand-over.
    FutexPingPong,
    /// Read-modify-write a `kib` KiB buffer with a cache-line stride.
    CachePressure { kib: u32 },
    /// Fork a child that exits at once and reap it: one unit per child.
    ForkExit,
    /// Spin while stepping its own nice value through -5..=19 and back.
    NiceSweep,
    /// Spin while moving itself to another allowed CPU every unit.
    AffinityChurn,
    /// Sleep `interval_us` with `clock_nanosleep` over and over: timer latency (overshoot).
    TimerLatency { interval_us: u32 },
    /// `threads` threads of one worker contend on one futex-based lock and hold it for
    /// `hold_us` of spinning: one unit per critical section (any thread); wake latency
    /// from an unlock's wake call to the woken waiter running.
    LockConvoy { threads: u32, hold_us: u32 },
    /// Create a thread that exits at once and join it: one unit per thread.
    ThreadChurn,
    /// Fork a child that execs the runtime itself (which exits at once) and reap it:
    /// one unit per exec'd child.
    ForkExec,
    /// Map `kib` KiB of anonymous memory, write every page (one page fault each) and
    /// unmap it: one unit per map-touch-unmap round.
    PageFault { kib: u32 },
    /// Copy one `kib` KiB buffer into another (stream-like): one unit per full copy.
    MemBandwidth { kib: u32 },
    /// Read-modify-write a `kib` KiB buffer bound to another NUMA node than the one the
    /// worker starts on: one unit per pass. With one node the buffer is local (the
    /// worker logs that it fell back).
    NumaRemote { kib: u32 },
    /// rt-app-like periodic task: spin `run_us` every `period_us` (absolute periods).
    /// One unit per period; timer latency is how late each period's run started;
    /// a run that ends after its period's end counts as a deadline miss.
    PeriodicDuty { run_us: u32, period_us: u32 },
    /// `threads` threads each sleep `interval_us` over and over (many short timers):
    /// one unit per sleep (any thread); timer latency of the sleeps.
    TimerStorm { threads: u32, interval_us: u32 },
    /// Pairs pass a timestamp back and forth over a Unix stream socket pair: wake
    /// latency of each hop.
    UnixSocketPingPong,
    /// Pairs wake each other with `SIGUSR1` (`sigtimedwait`): wake latency of each hop.
    SignalPingPong,
    /// schbench-like: one epoll thread receives requests from `clients` client threads
    /// over Unix sockets and hands them to a pool of `pool` threads, which spin
    /// `work_us` and reply. One unit per request answered; wake latency is the
    /// request's round trip (send to reply read).
    EpollServer {
        clients: u32,
        pool: u32,
        work_us: u32,
    },
    /// Create a file on tmpfs, write `kib` KiB, `fsync`, close and unlink it: one unit
    /// per file.
    TmpfsFsync { kib: u32 },
    /// `threads` threads take a spin lock, holding it for a short spin; waiters call
    /// `sched_yield` while it is taken: one unit per acquisition (any thread).
    YieldSpinLock { threads: u32 },
    /// Spin under `SCHED_FIFO` at `priority` (1..=99; the kernel's RT throttling is left
    /// as it is): one unit per spin unit.
    FifoHog { priority: u32 },
    /// Spin under `SCHED_RR` at `priority` (1..=99): one unit per spin unit.
    RrHog { priority: u32 },
    /// Spin under `SCHED_IDLE`: one unit per spin unit.
    IdleBackground,
    /// Spin under `SCHED_BATCH`: one unit per spin unit.
    BatchBackground,
    /// Spin with a nice value chosen by the worker's index from -5, 0, 5, 10, 19 (so
    /// one cgroup holds several nice levels): one unit per spin unit.
    MixedNice,
    /// Every `gap_ms`, start a thread that spins `burst_us` and exits, and join it: one
    /// unit per burst thread; wake latency is from the spawn call to the thread running.
    ThreadBurst { burst_us: u32, gap_ms: u32 },
    /// Run `path` (an absolute path in the guest, such as a packed payload binary) with
    /// `args` over and over, waiting for each run: one unit per run that exited 0.
    Command { path: String, args: Vec<String> },
}

impl WorkType {
    /// Every work type with default parameters, in declaration order.
    pub fn all() -> Vec<WorkType> {
        vec![
            Self::SpinWait,
            Self::YieldHeavy,
            Self::Mixed,
            Self::IoSyncWrite,
            Self::Bursty {
                burst_ms: 10,
                sleep_ms: 10,
            },
            Self::PipeIo,
            Self::FutexPingPong,
            Self::CachePressure { kib: 1024 },
            Self::ForkExit,
            Self::NiceSweep,
            Self::AffinityChurn,
            Self::TimerLatency { interval_us: 1000 },
            Self::LockConvoy {
                threads: 4,
                hold_us: 20,
            },
            Self::ThreadChurn,
            Self::ForkExec,
            Self::PageFault { kib: 1024 },
            Self::MemBandwidth { kib: 8192 },
            Self::NumaRemote { kib: 4096 },
            Self::PeriodicDuty {
                run_us: 2000,
                period_us: 10_000,
            },
            Self::TimerStorm {
                threads: 8,
                interval_us: 100,
            },
            Self::UnixSocketPingPong,
            Self::SignalPingPong,
            Self::EpollServer {
                clients: 4,
                pool: 2,
                work_us: 50,
            },
            Self::TmpfsFsync { kib: 64 },
            Self::YieldSpinLock { threads: 4 },
            Self::FifoHog { priority: 1 },
            Self::RrHog { priority: 1 },
            Self::IdleBackground,
            Self::BatchBackground,
            Self::MixedNice,
            Self::ThreadBurst {
                burst_us: 500,
                gap_ms: 5,
            },
            Self::Command {
                path: "/init".into(),
                args: vec![EXIT_AT_ONCE_ARG.into()],
            },
        ]
    }

    /// The name the sidecar's `work_type` carries (`SpinWait`, `FutexPingPong`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::SpinWait => "SpinWait",
            Self::YieldHeavy => "YieldHeavy",
            Self::Mixed => "Mixed",
            Self::IoSyncWrite => "IoSyncWrite",
            Self::Bursty { .. } => "Bursty",
            Self::PipeIo => "PipeIo",
            Self::FutexPingPong => "FutexPingPong",
            Self::CachePressure { .. } => "CachePressure",
            Self::ForkExit => "ForkExit",
            Self::NiceSweep => "NiceSweep",
            Self::AffinityChurn => "AffinityChurn",
            Self::TimerLatency { .. } => "TimerLatency",
            Self::LockConvoy { .. } => "LockConvoy",
            Self::ThreadChurn => "ThreadChurn",
            Self::ForkExec => "ForkExec",
            Self::PageFault { .. } => "PageFault",
            Self::MemBandwidth { .. } => "MemBandwidth",
            Self::NumaRemote { .. } => "NumaRemote",
            Self::PeriodicDuty { .. } => "PeriodicDuty",
            Self::TimerStorm { .. } => "TimerStorm",
            Self::UnixSocketPingPong => "UnixSocketPingPong",
            Self::SignalPingPong => "SignalPingPong",
            Self::EpollServer { .. } => "EpollServer",
            Self::TmpfsFsync { .. } => "TmpfsFsync",
            Self::YieldSpinLock { .. } => "YieldSpinLock",
            Self::FifoHog { .. } => "FifoHog",
            Self::RrHog { .. } => "RrHog",
            Self::IdleBackground => "IdleBackground",
            Self::BatchBackground => "BatchBackground",
            Self::MixedNice => "MixedNice",
            Self::ThreadBurst { .. } => "ThreadBurst",
            Self::Command { .. } => "Command",
        }
    }

    /// Workers that work together: the count must be a multiple of this.
    pub fn group_size(&self) -> u32 {
        match self {
            Self::PipeIo
            | Self::FutexPingPong
            | Self::UnixSocketPingPong
            | Self::SignalPingPong => 2,
            _ => 1,
        }
    }

    /// Whether its workers record wake-up latency samples.
    pub fn measures_wake_latency(&self) -> bool {
        matches!(
            self,
            Self::PipeIo
                | Self::FutexPingPong
                | Self::LockConvoy { .. }
                | Self::UnixSocketPingPong
                | Self::SignalPingPong
                | Self::EpollServer { .. }
                | Self::ThreadBurst { .. }
        )
    }

    /// Whether its workers record timer (sleep overshoot) latency samples.
    pub fn measures_timer_latency(&self) -> bool {
        matches!(
            self,
            Self::Mixed
                | Self::Bursty { .. }
                | Self::TimerLatency { .. }
                | Self::PeriodicDuty { .. }
                | Self::TimerStorm { .. }
        )
    }
}

impl WorkType {
    /// One line on what its workers do, for `cargo ktstr describe` (the parameters are
    /// its fields, read from [`WorkType::all`]'s defaults).
    pub fn describe(&self) -> &'static str {
        match self {
            Self::SpinWait => "burn CPU in fixed-size units",
            Self::YieldHeavy => "a short spin, then sched_yield: one unit per yield",
            Self::Mixed => "spin, yield and a 1 ms sleep in turn (timer latency of the sleeps)",
            Self::IoSyncWrite => "write 4 KiB to a tmpfs file and fdatasync it: syscall-heavy work",
            Self::Bursty { .. } => {
                "spin for burst_ms, sleep sleep_ms (timer latency of the sleeps)"
            }
            Self::PipeIo => "pairs pass a timestamp through two pipes: wake latency of each hop",
            Self::FutexPingPong => {
                "pairs take turns through a futex word: wake latency of each hand-over"
            }
            Self::CachePressure { .. } => {
                "read-modify-write a kib KiB buffer with a cache-line stride"
            }
            Self::ForkExit => "fork a child that exits at once and reap it: one unit per child",
            Self::NiceSweep => "spin while stepping its own nice value through -5..=19 and back",
            Self::AffinityChurn => "spin while moving itself to another allowed CPU every unit",
            Self::TimerLatency { .. } => {
                "sleep interval_us with clock_nanosleep over and over: timer overshoot"
            }
            Self::LockConvoy { .. } => {
                "threads contend for one futex lock held hold_us at a time: wake latency of each hand-over"
            }
            Self::ThreadChurn => "create a thread and join it: one unit per thread",
            Self::ForkExec => "fork a child that execs the runtime (exits at once), reap it",
            Self::PageFault { .. } => "map kib KiB, touch every page, unmap: page-fault heavy",
            Self::MemBandwidth { .. } => "copy a kib KiB buffer end to end: memory bandwidth",
            Self::NumaRemote { .. } => {
                "pass over a kib KiB buffer bound to the next NUMA node (local with one node)"
            }
            Self::PeriodicDuty { .. } => {
                "run run_us every period_us (rt-app-like): start lateness and deadline misses"
            }
            Self::TimerStorm { .. } => "threads sleep interval_us over and over: timer overshoot",
            Self::UnixSocketPingPong => {
                "pairs hand a token over a unix socket pair: wake latency of each hop"
            }
            Self::SignalPingPong => "pairs hand over with SIGUSR1: wake latency of each hop",
            Self::EpollServer { .. } => {
                "clients send requests to an epoll server with a worker pool (schbench-like): request latency"
            }
            Self::TmpfsFsync { .. } => "create, write kib KiB, fsync and unlink a tmpfs file",
            Self::YieldSpinLock { .. } => {
                "threads take one spin lock, waiters calling sched_yield"
            }
            Self::FifoHog { .. } => "spin under SCHED_FIFO at priority (RT throttling left on)",
            Self::RrHog { .. } => "spin under SCHED_RR at priority (RT throttling left on)",
            Self::IdleBackground => "spin under SCHED_IDLE: background load",
            Self::BatchBackground => "spin under SCHED_BATCH: background load",
            Self::MixedNice => "spin at nice -5, 0, 5, 10 or 19 by worker index",
            Self::ThreadBurst { .. } => {
                "spawn a thread that spins burst_us, then wait gap_ms: wake latency of each spawn"
            }
            Self::Command { .. } => "run path with args to completion: one unit per exit 0",
        }
    }
}

/// The argument that makes the guest runtime exit 0 at once: what `ForkExec` execs,
/// and a `Command` that needs no packed binary.
pub const EXIT_AT_ONCE_ARG: &str = "--ktstr-exit-at-once";

/// A work type and how its workers are set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkSpec {
    pub work_type: WorkType,
    /// Nice value the workers start with (-20..=19); None leaves 0.
    #[serde(default)]
    pub nice: Option<i32>,
    /// Scheduling policy the workers start under; None leaves `SCHED_OTHER` (work
    /// types that pick their own class, `FifoHog` and the like, switch after this).
    #[serde(default)]
    pub policy: Option<SchedPolicy>,
    /// CPU affinity the workers start with (`sched_setaffinity`), within their cgroup's
    /// cpuset; None leaves every CPU of the cpuset.
    #[serde(default)]
    pub affinity: Option<CpusetSpec>,
    /// NUMA memory policy the workers start with (`set_mempolicy`); None leaves the
    /// kernel's default (local allocation).
    #[serde(default)]
    pub mem_policy: Option<MemPolicy>,
    /// Thread name (`comm`, at most 15 bytes) the workers take; None keeps the runtime's.
    #[serde(default)]
    pub comm: Option<String>,
    /// User and group ids the workers drop to after the settings above (which need
    /// root); None stays root.
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

/// A Linux scheduling policy with its priority where it takes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedPolicy {
    /// `SCHED_OTHER` (EEVDF, or the sched_ext scheduler when one is attached).
    Other,
    /// `SCHED_BATCH`: CPU-bound, never preempts on wake-up.
    Batch,
    /// `SCHED_IDLE`: runs only when nothing else wants the CPU.
    Idle,
    /// `SCHED_FIFO` at this priority (1..=99).
    Fifo(u32),
    /// `SCHED_RR` at this priority (1..=99).
    Rr(u32),
}

impl SchedPolicy {
    /// The policy number `sched_setscheduler` takes, and the priority.
    pub fn raw(self) -> (i32, u32) {
        match self {
            Self::Other => (0, 0),
            Self::Fifo(p) => (1, p),
            Self::Rr(p) => (2, p),
            Self::Batch => (3, 0),
            Self::Idle => (5, 0),
        }
    }

    /// How a worker report names it (`fifo:10`, `other`).
    pub fn label(self) -> String {
        match self {
            Self::Other => "other".into(),
            Self::Batch => "batch".into(),
            Self::Idle => "idle".into(),
            Self::Fifo(p) => format!("fifo:{p}"),
            Self::Rr(p) => format!("rr:{p}"),
        }
    }

    /// The policy `sched_getscheduler`/`sched_getparam` returned; None for one this
    /// model has no name for (`SCHED_DEADLINE`, `SCHED_EXT`).
    pub fn from_raw(policy: i32, priority: u32) -> Option<Self> {
        match policy {
            0 => Some(Self::Other),
            1 => Some(Self::Fifo(priority)),
            2 => Some(Self::Rr(priority)),
            3 => Some(Self::Batch),
            5 => Some(Self::Idle),
            _ => None,
        }
    }
}

/// A NUMA memory policy, on node numbers the guest sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemPolicy {
    /// `MPOL_BIND`: allocate only on these nodes.
    Bind(Vec<u32>),
    /// `MPOL_INTERLEAVE`: spread pages round-robin over these nodes.
    Interleave(Vec<u32>),
    /// `MPOL_PREFERRED`: this node first, others when it is full.
    Preferred(u32),
}

impl MemPolicy {
    /// The nodes it names.
    pub fn nodes(&self) -> Vec<u32> {
        match self {
            Self::Bind(n) | Self::Interleave(n) => n.clone(),
            Self::Preferred(n) => vec![*n],
        }
    }
}

impl WorkSpec {
    pub fn new(work_type: WorkType) -> Self {
        Self {
            work_type,
            nice: None,
            policy: None,
            affinity: None,
            mem_policy: None,
            comm: None,
            uid: None,
            gid: None,
        }
    }

    pub fn nice(mut self, nice: i32) -> Self {
        self.nice = Some(nice);
        self
    }

    pub fn policy(mut self, policy: SchedPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    pub fn affinity(mut self, cpus: CpusetSpec) -> Self {
        self.affinity = Some(cpus);
        self
    }

    pub fn mem_policy(mut self, policy: MemPolicy) -> Self {
        self.mem_policy = Some(policy);
        self
    }

    pub fn comm(mut self, name: impl Into<String>) -> Self {
        self.comm = Some(name.into());
        self
    }

    /// Run the workers as `uid`:`gid`.
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.uid = Some(uid);
        self.gid = Some(gid);
        self
    }

    /// The sidecar `work_type` name.
    pub fn name(&self) -> &'static str {
        self.work_type.name()
    }
}

impl From<WorkType> for WorkSpec {
    fn from(w: WorkType) -> Self {
        Self::new(w)
    }
}

/// One step: its ops run, then the scenario holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Short human label ("shrink cpuset").
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub ops: Vec<Op>,
    pub hold: Hold,
}

/// How long a step holds after its ops.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// This fraction (0 < f <= 1) of the test's duration.
    Fraction(f64),
    /// A fixed number of milliseconds.
    Millis(u64),
}

impl Hold {
    /// The hold in milliseconds for a test of `duration_ms` (fractions round to nearest).
    pub fn millis(self, duration_ms: u64) -> u64 {
        match self {
            Self::Millis(ms) => ms,
            Self::Fraction(f) if f.is_finite() && f > 0.0 => {
                (f * duration_ms as f64).round().min(u64::MAX as f64) as u64
            }
            Self::Fraction(_) => 0,
        }
    }
}

/// Something a step does to the running scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Create a cgroup (top-level, or nested when `name` has a parent path that exists)
    /// and start its workers.
    AddCgroup(CgroupDef),
    /// Stop the cgroup's workers (their reports are kept) and remove it, nested ones too.
    RemoveCgroup { cgroup: String },
    /// Write `cpuset.cpus`.
    SetCpuset { cgroup: String, cpuset: CpusetSpec },
    /// Empty `cpuset.cpus`: back to the parent's CPUs.
    ClearCpuset { cgroup: String },
    /// Exchange the cpusets of two cgroups.
    SwapCpusets { a: String, b: String },
    /// `sched_setaffinity` of every worker in the cgroup.
    SetAffinity { cgroup: String, cpus: CpusetSpec },
    /// Move every worker of `from` into `to`.
    MoveTasks { from: String, to: String },
    /// `cgroup.freeze = 1`.
    Freeze { cgroup: String },
    /// `cgroup.freeze = 0`.
    Unfreeze { cgroup: String },
    /// Start `count` more workers in the cgroup.
    SpawnWorkers {
        cgroup: String,
        count: u32,
        work: WorkSpec,
    },
    /// Run the payload named `name` (one of [`GuestSpec::payloads`]) and wait until it
    /// ends; its result is reported before the next op runs.
    ///
    /// [`GuestSpec::payloads`]: crate::spec::GuestSpec::payloads
    RunPayload { name: String },
    /// Start the payload in the background; a later `WaitPayload` or `KillPayload` ends
    /// it, else the end of the scenario kills it.
    StartPayload { name: String },
    /// Wait until the payload started in the background ends.
    WaitPayload { name: String },
    /// Kill the payload started in the background (its whole process group, SIGKILL)
    /// and report it.
    KillPayload { name: String },
    /// Stop the `count` newest workers of the cgroup (they report, like at the end).
    StopWorkers { cgroup: String, count: u32 },
    /// Take CPUs offline (`/sys/devices/system/cpu/cpuN/online`); the kernel's refusal
    /// fails the step with its reason. CPUs still offline at the end come back.
    OfflineCpus { cpus: CpusetSpec },
    /// Bring offline CPUs back online.
    OnlineCpus { cpus: CpusetSpec },
    /// Detach the run's sched_ext scheduler (SIGINT, wait for `disabled`): the
    /// workload goes on under EEVDF.
    DetachScheduler,
    /// Start the run's scheduler again after a `DetachScheduler` and wait for attach.
    AttachScheduler,
    /// Detach the run's scheduler and start it again; the gap is measured.
    RestartScheduler,
    /// Detach the run's scheduler and attach another one in its place: `scheduler`
    /// names it (None: the run's own binary), `args` replace its arguments when given.
    /// The gap is measured.
    ReplaceScheduler {
        #[serde(default)]
        scheduler: Option<String>,
        #[serde(default)]
        args: Vec<String>,
    },
    /// Set the nice value of every thread in the cgroup (and nested ones).
    SetNice { cgroup: String, nice: i32 },
    /// Set the scheduling policy of every thread in the cgroup (and nested ones).
    SetPolicy { cgroup: String, policy: SchedPolicy },
    /// Write `cpu.weight`.
    SetCpuWeight { cgroup: String, weight: u32 },
    /// Write `cpu.max` (None: `max`, no limit).
    SetCpuMax {
        cgroup: String,
        #[serde(default)]
        max: Option<CpuMax>,
    },
    /// Write `memory.max` in bytes (None: `max`).
    SetMemoryMax {
        cgroup: String,
        #[serde(default)]
        bytes: Option<u64>,
    },
    /// Write `io.weight` (`default <weight>`, 1..=10000).
    SetIoWeight { cgroup: String, weight: u32 },
    /// Write `pids.max` (None: `max`).
    SetPidsMax {
        cgroup: String,
        #[serde(default)]
        max: Option<u64>,
    },
    /// Write a sysctl (`kernel.sched_rt_runtime_us`) and read it back.
    WriteSysctl { key: String, value: String },
    /// `sync`, then drop the page cache, dentries and inodes (`vm.drop_caches = 3`).
    DropCaches,
}

impl Op {
    /// Short name of the op's kind (`set_cpuset`), as stimulus events list them.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AddCgroup(_) => "add_cgroup",
            Self::RemoveCgroup { .. } => "remove_cgroup",
            Self::SetCpuset { .. } => "set_cpuset",
            Self::ClearCpuset { .. } => "clear_cpuset",
            Self::SwapCpusets { .. } => "swap_cpusets",
            Self::SetAffinity { .. } => "set_affinity",
            Self::MoveTasks { .. } => "move_tasks",
            Self::Freeze { .. } => "freeze",
            Self::Unfreeze { .. } => "unfreeze",
            Self::SpawnWorkers { .. } => "spawn_workers",
            Self::RunPayload { .. } => "run_payload",
            Self::StartPayload { .. } => "start_payload",
            Self::WaitPayload { .. } => "wait_payload",
            Self::KillPayload { .. } => "kill_payload",
            Self::StopWorkers { .. } => "stop_workers",
            Self::OfflineCpus { .. } => "offline_cpus",
            Self::OnlineCpus { .. } => "online_cpus",
            Self::DetachScheduler => "detach_scheduler",
            Self::AttachScheduler => "attach_scheduler",
            Self::RestartScheduler => "restart_scheduler",
            Self::ReplaceScheduler { .. } => "replace_scheduler",
            Self::SetNice { .. } => "set_nice",
            Self::SetPolicy { .. } => "set_policy",
            Self::SetCpuWeight { .. } => "set_cpu_weight",
            Self::SetCpuMax { .. } => "set_cpu_max",
            Self::SetMemoryMax { .. } => "set_memory_max",
            Self::SetIoWeight { .. } => "set_io_weight",
            Self::SetPidsMax { .. } => "set_pids_max",
            Self::WriteSysctl { .. } => "write_sysctl",
            Self::DropCaches => "drop_caches",
        }
    }

    /// True for the ops that detach or attach the run's sched_ext scheduler.
    pub fn is_scheduler_op(&self) -> bool {
        matches!(
            self,
            Self::DetachScheduler
                | Self::AttachScheduler
                | Self::RestartScheduler
                | Self::ReplaceScheduler { .. }
        )
    }

    /// The payload the op starts (`RunPayload`, `StartPayload`), if it starts one.
    pub fn starts_payload(&self) -> Option<&str> {
        match self {
            Self::RunPayload { name } | Self::StartPayload { name } => Some(name),
            _ => None,
        }
    }
}

impl CpusetSpec {
    /// The CPUs of the set on the topology the guest sees. LLCs and nodes are numbered
    /// by their lowest CPU, from 0. Errors say what is missing.
    pub fn resolve(&self, topo: &SeenTopology) -> Result<Vec<u32>, String> {
        let nth_group = |key: fn(&SeenCpu) -> u32, i: u32, what: &str| {
            let mut groups: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            for c in &topo.cpus {
                groups.entry(key(c)).or_default().push(c.cpu);
            }
            let mut by_first: Vec<Vec<u32>> = groups.into_values().collect();
            for g in &mut by_first {
                g.sort_unstable();
            }
            by_first.sort_by_key(|g| g.first().copied());
            let n = by_first.len();
            by_first
                .into_iter()
                .nth(i as usize)
                .ok_or_else(|| format!("{what} {i} does not exist (the guest sees {n})"))
        };
        let online: BTreeSet<u32> = topo.cpus.iter().map(|c| c.cpu).collect();
        let set: Vec<u32> = match self {
            Self::Llc(i) => nth_group(|c| c.llc_id, *i, "LLC")?,
            Self::Node(i) => nth_group(|c| c.node, *i, "NUMA node")?,
            Self::Range { start, end } => (*start..*end).collect(),
            Self::Cpus(list) => list.clone(),
            Self::Disjoint { index, of } => {
                let all: Vec<u32> = online.iter().copied().collect();
                split_part(&all, *index, *of, 0)?
            }
            Self::Overlap { index, of, percent } => {
                let all: Vec<u32> = online.iter().copied().collect();
                split_part(&all, *index, *of, *percent)?
            }
        };
        let set: BTreeSet<u32> = set.into_iter().collect();
        if let Some(off) = set.iter().find(|c| !online.contains(c)) {
            return Err(format!("CPU {off} is not online in the guest"));
        }
        if set.is_empty() {
            return Err("the CPU set is empty".into());
        }
        Ok(set.into_iter().collect())
    }
}

/// Part `index` of `cpus` cut into `of` contiguous parts (sizes differ by one at most),
/// widened by `percent` of the part's size into each neighbour (rounded up).
pub fn split_part(cpus: &[u32], index: u32, of: u32, percent: u32) -> Result<Vec<u32>, String> {
    let n = cpus.len();
    let (i, of) = (index as usize, of as usize);
    if of == 0 || i >= of {
        return Err(format!(
            "part {index} of {of} does not exist (parts are numbered from 0)"
        ));
    }
    if of > n {
        return Err(format!("{n} CPUs cannot be cut into {of} non-empty parts"));
    }
    let start = i * n / of;
    let end = (i + 1) * n / of;
    let widen = ((end - start) * percent as usize).div_ceil(100);
    let lo = start.saturating_sub(widen);
    let hi = (end + widen).min(n);
    Ok(cpus[lo..hi].to_vec())
}

/// Renders CPUs as a kernel CPU list (`0-3,6`), as `cpuset.cpus` takes it.
pub fn render_cpulist(cpus: &[u32]) -> String {
    let set: BTreeSet<u32> = cpus.iter().copied().collect();
    let mut out = String::new();
    let mut it = set.into_iter().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
    }
    out
}

impl Scenario {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every op of every step, in order.
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.steps.iter().flat_map(|s| s.ops.iter())
    }

    /// Adds a cgroup created before the first step.
    pub fn cgroup(mut self, def: CgroupDef) -> Self {
        self.cgroups.push(def);
        self
    }

    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    pub fn settle_ms(mut self, ms: u64) -> Self {
        self.settle_ms = ms;
        self
    }

    /// Each step's hold in milliseconds for a test of `duration_ms`.
    pub fn hold_plan_ms(&self, duration_ms: u64) -> Vec<u64> {
        self.steps
            .iter()
            .map(|s| s.hold.millis(duration_ms))
            .collect()
    }

    /// Planned length of the run: settle plus every hold (ops take extra, unplanned time).
    pub fn planned_ms(&self, duration_ms: u64) -> u64 {
        self.hold_plan_ms(duration_ms)
            .into_iter()
            .fold(self.settle_ms, u64::saturating_add)
    }

    /// The primary work type: that of the first cgroup (depth first) that holds workers
    /// (an empty leaf, which only hosts payloads, has none).
    pub fn primary_work_type(&self) -> Option<&WorkType> {
        fn first(defs: &[CgroupDef]) -> Option<&WorkType> {
            defs.iter().find_map(|d| {
                if !d.nested.is_empty() {
                    first(&d.nested)
                } else if matches!(
                    d.workers,
                    WorkerCount::Count(0) | WorkerCount::PercentOfCpus(0)
                ) {
                    None
                } else {
                    Some(&d.work.work_type)
                }
            })
        }
        first(&self.cgroups).or_else(|| {
            self.steps
                .iter()
                .flat_map(|s| &s.ops)
                .find_map(|op| match op {
                    Op::AddCgroup(d) => first(std::slice::from_ref(d)),
                    Op::SpawnWorkers { work, .. } => Some(&work.work_type),
                    _ => None,
                })
        })
    }

    /// Payloads in the order the scenario starts them (`RunPayload` and `StartPayload`
    /// ops, step by step): the `n`-th entry is invocation `n`.
    pub fn payload_invocations(&self) -> Vec<&str> {
        self.steps
            .iter()
            .flat_map(|s| &s.ops)
            .filter_map(Op::starts_payload)
            .collect()
    }
}

impl CgroupDef {
    /// A cgroup with one `SpinWait` worker and no limits; adjust with the setters.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            cpuset: None,
            cpu_weight: None,
            cpu_max: None,
            workers: WorkerCount::Count(1),
            work: WorkSpec::new(WorkType::SpinWait),
            nested: Vec::new(),
        }
    }

    pub fn cpuset(mut self, c: CpusetSpec) -> Self {
        self.cpuset = Some(c);
        self
    }

    pub fn workers(mut self, n: u32) -> Self {
        self.workers = WorkerCount::Count(n);
        self
    }

    pub fn workers_pct(mut self, pct: u32) -> Self {
        self.workers = WorkerCount::PercentOfCpus(pct);
        self
    }

    pub fn work(mut self, w: impl Into<WorkSpec>) -> Self {
        self.work = w.into();
        self
    }

    pub fn cpu_weight(mut self, w: u32) -> Self {
        self.cpu_weight = Some(w);
        self
    }

    pub fn cpu_max(mut self, quota_us: u64, period_us: u64) -> Self {
        self.cpu_max = Some(CpuMax {
            quota_us,
            period_us,
        });
        self
    }

    /// Adds a nested cgroup; this one then holds no workers itself.
    pub fn nest(mut self, child: CgroupDef) -> Self {
        self.nested.push(child);
        self.workers = WorkerCount::Count(0);
        self
    }
}

impl Step {
    pub fn new(label: impl Into<String>, hold: Hold) -> Self {
        Self {
            label: label.into(),
            ops: Vec::new(),
            hold,
        }
    }

    pub fn op(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use ktstr_topology::TopoSize;

    use super::*;

    const T: TopoSize = TopoSize {
        vcpus: 4,
        llcs: 2,
        nodes: 1,
    };

    #[test]
    fn work_type_names_are_the_sidecar_names() {
        let names: Vec<_> = WorkType::all().iter().map(WorkType::name).collect();
        assert_eq!(names.len(), 32);
        assert!(names.contains(&"FutexPingPong"));
        let unique: BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        for w in WorkType::all() {
            let j = serde_json::to_value(&w).unwrap();
            assert!(j["type"].is_string(), "{j}");
            assert_eq!(serde_json::from_value::<WorkType>(j).unwrap(), w);
        }
    }

    #[test]
    fn json_shape_is_readable() {
        let s = Scenario::cpuset_change(T);
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["steps"][0]["ops"][0]["op"], "set_cpuset");
        assert_eq!(j["steps"][0]["ops"][0]["cpuset"]["range"]["end"], 2);
        assert_eq!(j["cgroups"][0]["workers"]["percent_of_cpus"], 50);
        assert_eq!(j["cgroups"][0]["work"]["work_type"]["type"], "spin_wait");
        let back: Scenario = serde_json::from_value(j).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn hold_plan() {
        let s = Scenario::cgroup_churn(T);
        assert_eq!(s.hold_plan_ms(3000), [1000, 1000, 1000]);
        assert_eq!(Hold::Fraction(0.25).millis(1000), 250);
        assert_eq!(Hold::Millis(7).millis(1000), 7);
        assert_eq!(Hold::Fraction(f64::INFINITY).millis(1000), 0);
    }

    #[test]
    fn cpulists_render_as_ranges() {
        assert_eq!(render_cpulist(&[0, 1, 2, 3]), "0-3");
        assert_eq!(render_cpulist(&[5, 0, 2, 1]), "0-2,5");
        assert_eq!(render_cpulist(&[7]), "7");
        assert_eq!(render_cpulist(&[]), "");
        assert_eq!(render_cpulist(&[1, 1, 3, 4, 6]), "1,3-4,6");
    }

    fn seen(cpus: &[(u32, u32, u32)]) -> SeenTopology {
        SeenTopology::derive(
            String::new(),
            cpus.iter()
                .map(|&(cpu, llc_id, node)| SeenCpu {
                    cpu,
                    core_id: cpu,
                    package_id: node,
                    llc_id,
                    node,
                })
                .collect(),
        )
    }

    #[test]
    fn cpusets_resolve_on_the_seen_topology() {
        // LLC ids are first CPUs (0 and 4), numbered 0 and 1 by the spec.
        let t = seen(&[(0, 0, 0), (1, 0, 0), (4, 4, 1), (5, 4, 1)]);
        assert_eq!(CpusetSpec::Llc(1).resolve(&t).unwrap(), [4, 5]);
        assert_eq!(CpusetSpec::Node(0).resolve(&t).unwrap(), [0, 1]);
        assert_eq!(CpusetSpec::Cpus(vec![5, 0, 5]).resolve(&t).unwrap(), [0, 5]);
        assert!(CpusetSpec::Llc(2)
            .resolve(&t)
            .unwrap_err()
            .contains("sees 2"));
        assert!(CpusetSpec::Range { start: 0, end: 3 }
            .resolve(&t)
            .unwrap_err()
            .contains("CPU 2"));
    }
}
