//! The scenario model: what the guest runs in a test. Cgroups with their workers, then
//! steps (operations, then a hold) over the run. Plain serde data: the host builds it,
//! checks it with [`Scenario::validate`] before any VM boots, and packs it in the
//! [`GuestSpec`](crate::spec::GuestSpec); the guest runtime executes it.
//!
//! Cgroup names are paths relative to the test's cgroup: a top-level cgroup is `cg0`, a
//! cgroup nested in it is `cg0/inner`. Operations name cgroups by that path.
//!
//! ```
//! use ktstr_wire::scenario::{Scenario, TopoSize};
//!
//! let topo = TopoSize::new(4, 2, 1);
//! let s = Scenario::cpuset_change(topo, 3000);
//! s.validate(topo, 3000).unwrap();
//! assert_eq!(s.steps.len(), 3);
//! assert_eq!(s.hold_plan_ms(3000), [1000, 1000, 1000]);
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::msg::{SeenCpu, SeenTopology};

/// Most workers one scenario may start over its whole run (spawned ones included).
pub const MAX_WORKERS: u32 = 1024;
/// Most cgroups alive at once, nested ones included.
pub const MAX_CGROUPS: usize = 256;
/// Most steps in a scenario.
pub const MAX_STEPS: usize = 1024;
/// Longest cgroup name component.
pub const MAX_NAME_LEN: usize = 64;
/// Deepest nesting of cgroups (`a/b/c` is depth 3).
pub const MAX_DEPTH: usize = 4;
/// Largest `CachePressure` buffer, KiB.
pub const MAX_CACHE_KIB: u32 = 1 << 18;

/// The size of a topology, as numbers: enough to check a scenario without booting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopoSize {
    /// Online CPUs (vCPUs).
    pub vcpus: u32,
    /// Last-level caches.
    pub llcs: u32,
    /// NUMA nodes.
    pub nodes: u32,
}

impl TopoSize {
    pub fn new(vcpus: u32, llcs: u32, nodes: u32) -> Self {
        Self { vcpus, llcs, nodes }
    }

    /// CPUs in one LLC, assuming LLCs of equal size (what `ktstr` topologies declare).
    pub fn cpus_per_llc(&self) -> u32 {
        self.vcpus / self.llcs.max(1)
    }

    /// CPUs in one NUMA node, assuming nodes of equal size.
    pub fn cpus_per_node(&self) -> u32 {
        self.vcpus / self.nodes.max(1)
    }
}

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
        }
    }

    /// Workers that work together: the count must be a multiple of this.
    pub fn group_size(&self) -> u32 {
        match self {
            Self::PipeIo | Self::FutexPingPong => 2,
            _ => 1,
        }
    }

    /// Whether its workers record wake-up latency samples.
    pub fn measures_wake_latency(&self) -> bool {
        matches!(self, Self::PipeIo | Self::FutexPingPong)
    }

    /// Whether its workers record timer (sleep overshoot) latency samples.
    pub fn measures_timer_latency(&self) -> bool {
        matches!(
            self,
            Self::Mixed | Self::Bursty { .. } | Self::TimerLatency { .. }
        )
    }

    /// Checks the parameters; `Err` says what is wrong.
    fn check_params(&self) -> Result<(), String> {
        match *self {
            Self::Bursty { burst_ms, sleep_ms } if burst_ms == 0 || sleep_ms == 0 => Err(format!(
                "Bursty needs burst_ms > 0 and sleep_ms > 0 (got {burst_ms} and {sleep_ms})"
            )),
            Self::Bursty { burst_ms, sleep_ms } if burst_ms > 60_000 || sleep_ms > 60_000 => {
                Err(format!(
                    "Bursty burst_ms and sleep_ms are at most 60000 (got {burst_ms} and {sleep_ms})"
                ))
            }
            Self::CachePressure { kib } if kib == 0 || kib > MAX_CACHE_KIB => Err(format!(
                "CachePressure kib must be 1..={MAX_CACHE_KIB} (got {kib})"
            )),
            Self::TimerLatency { interval_us } if interval_us == 0 || interval_us > 10_000_000 => {
                Err(format!(
                    "TimerLatency interval_us must be 1..=10000000 (got {interval_us})"
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A work type and how its workers are set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkSpec {
    pub work_type: WorkType,
    /// Nice value the workers start with (-20..=19); None leaves 0.
    #[serde(default)]
    pub nice: Option<i32>,
}

impl WorkSpec {
    pub fn new(work_type: WorkType) -> Self {
        Self {
            work_type,
            nice: None,
        }
    }

    pub fn nice(mut self, nice: i32) -> Self {
        self.nice = Some(nice);
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
        }
    }

    /// The payload the op starts (`RunPayload`, `StartPayload`), if it starts one.
    pub fn starts_payload(&self) -> Option<&str> {
        match self {
            Self::RunPayload { name } | Self::StartPayload { name } => Some(name),
            _ => None,
        }
    }
}

/// What is wrong with a spec, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SpecError {
    /// Path of the offending field: `scenario.cgroups[1].cpuset`.
    pub field: String,
    pub kind: SpecErrorKind,
    /// What is wrong, in words.
    pub problem: String,
}

/// Class of a [`SpecError`], for callers (and tests) that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecErrorKind {
    /// A cpuset or CPU list names CPUs, LLCs or nodes the topology does not have.
    CpusetOutsideTopology,
    /// A leaf cgroup, or a spawn, with no workers.
    ZeroWorkers,
    /// A grouped work type with a count that is not a multiple of its group size.
    IndivisibleGroup,
    /// A step whose hold is zero, negative or not a number.
    NoHold,
    /// An op names a cgroup that does not exist at that point.
    UnknownCgroup,
    /// Two cgroups with the same name.
    DuplicateCgroup,
    /// A name that is not a valid path component.
    BadName,
    /// A number out of its range (weights, quotas, parameters, nice, intervals).
    OutOfRange,
    /// More workers, cgroups, steps or time than allowed.
    TooBig,
    /// Workers in a cgroup that has nested cgroups, or a move into one.
    NotALeaf,
    /// The spec has nothing to run, or two ways to run the same thing.
    Conflict,
    /// An op names a payload the spec does not declare.
    UnknownPayload,
    /// A payload started twice at once, waited for or killed while not running, or
    /// declared and never run.
    PayloadState,
}

impl SpecError {
    pub fn new(field: impl Into<String>, kind: SpecErrorKind, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind,
            problem: problem.into(),
        }
    }
}

impl CpusetSpec {
    /// Checks the set against the topology size; returns how many CPUs it holds.
    pub fn check(&self, topo: TopoSize, field: &str) -> Result<u32, SpecError> {
        let outside = |problem: String| {
            Err(SpecError::new(
                field,
                SpecErrorKind::CpusetOutsideTopology,
                problem,
            ))
        };
        match self {
            Self::Llc(i) if *i >= topo.llcs => outside(format!(
                "LLC {i} is outside the topology ({} LLCs, numbered from 0)",
                topo.llcs
            )),
            Self::Llc(_) => Ok(topo.cpus_per_llc().max(1)),
            Self::Node(i) if *i >= topo.nodes => outside(format!(
                "NUMA node {i} is outside the topology ({} nodes, numbered from 0)",
                topo.nodes
            )),
            Self::Node(_) => Ok(topo.cpus_per_node().max(1)),
            Self::Range { start, end } if start >= end => {
                outside(format!("range {start}..{end} is empty (end is excluded)"))
            }
            Self::Range { start, end } if *end > topo.vcpus => outside(format!(
                "range {start}..{end} reaches past the last CPU ({} CPUs, numbered from 0)",
                topo.vcpus
            )),
            Self::Range { start, end } => Ok(end - start),
            Self::Cpus(list) if list.is_empty() => outside("the CPU list is empty".into()),
            Self::Cpus(list) => {
                if let Some(bad) = list.iter().find(|&&c| c >= topo.vcpus) {
                    return outside(format!(
                        "CPU {bad} is outside the topology ({} CPUs, numbered from 0)",
                        topo.vcpus
                    ));
                }
                Ok(list.iter().collect::<BTreeSet<_>>().len() as u32)
            }
        }
    }

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

/// What validation tracks about a live cgroup.
#[derive(Debug, Clone)]
struct LiveCgroup {
    /// CPUs its cpuset holds (all CPUs without one).
    cpus: u32,
    has_children: bool,
}

struct Checker<'p> {
    topo: TopoSize,
    live: BTreeMap<String, LiveCgroup>,
    workers: u64,
    /// The spec's payloads, by name: their index in `payloads` and cgroup.
    payloads: BTreeMap<&'p str, (usize, Option<&'p str>)>,
    /// Payloads started in the background and not yet waited for or killed.
    running: BTreeSet<String>,
    /// Payloads some op starts.
    started: BTreeSet<String>,
}

impl<'p> Checker<'p> {
    fn name_ok(field: &str, name: &str) -> Result<(), SpecError> {
        let bad = |p: String| Err(SpecError::new(field, SpecErrorKind::BadName, p));
        if name.is_empty() {
            return bad("the cgroup name is empty".into());
        }
        if name.len() > MAX_NAME_LEN {
            return bad(format!(
                "cgroup name `{name}` is longer than {MAX_NAME_LEN} bytes"
            ));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return bad(format!(
                "cgroup name `{name}` may hold only letters, digits, `_` and `-`"
            ));
        }
        Ok(())
    }

    fn work(&mut self, field: &str, work: &WorkSpec, count: u32) -> Result<(), SpecError> {
        work.work_type.check_params().map_err(|p| {
            SpecError::new(
                format!("{field}.work.work_type"),
                SpecErrorKind::OutOfRange,
                p,
            )
        })?;
        if let Some(n) = work.nice {
            if !(-20..=19).contains(&n) {
                return Err(SpecError::new(
                    format!("{field}.work.nice"),
                    SpecErrorKind::OutOfRange,
                    format!("nice {n} is outside -20..=19"),
                ));
            }
        }
        let g = work.work_type.group_size();
        if !count.is_multiple_of(g) {
            return Err(SpecError::new(
                format!("{field}.workers"),
                SpecErrorKind::IndivisibleGroup,
                format!(
                    "{} works in groups of {g}, but the count is {count}",
                    work.name()
                ),
            ));
        }
        self.workers += u64::from(count);
        if self.workers > u64::from(MAX_WORKERS) {
            return Err(SpecError::new(
                format!("{field}.workers"),
                SpecErrorKind::TooBig,
                format!(
                    "the scenario starts {} workers, more than {MAX_WORKERS}",
                    self.workers
                ),
            ));
        }
        Ok(())
    }

    /// Adds a cgroup def (and its nested ones) under `parent` (None = top level).
    fn add(&mut self, field: &str, def: &CgroupDef, parent: Option<&str>) -> Result<(), SpecError> {
        Self::name_ok(&format!("{field}.name"), &def.name)?;
        let path = match parent {
            Some(p) => format!("{p}/{}", def.name),
            None => def.name.clone(),
        };
        if path.split('/').count() > MAX_DEPTH {
            return Err(SpecError::new(
                format!("{field}.nested"),
                SpecErrorKind::TooBig,
                format!("cgroup `{path}` is nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        if self.live.contains_key(&path) {
            return Err(SpecError::new(
                format!("{field}.name"),
                SpecErrorKind::DuplicateCgroup,
                format!("cgroup `{path}` already exists"),
            ));
        }
        if self.live.len() >= MAX_CGROUPS {
            return Err(SpecError::new(
                field,
                SpecErrorKind::TooBig,
                format!("more than {MAX_CGROUPS} cgroups alive at once"),
            ));
        }
        let parent_cpus = match parent {
            Some(p) => {
                let pc = self.live.get_mut(p).ok_or_else(|| {
                    SpecError::new(
                        format!("{field}.name"),
                        SpecErrorKind::UnknownCgroup,
                        format!("parent cgroup `{p}` does not exist"),
                    )
                })?;
                pc.has_children = true;
                pc.cpus
            }
            None => self.topo.vcpus,
        };
        let cpus = match &def.cpuset {
            Some(c) => c.check(self.topo, &format!("{field}.cpuset"))?,
            None => parent_cpus,
        };
        if let Some(w) = def.cpu_weight {
            if !(1..=10_000).contains(&w) {
                return Err(SpecError::new(
                    format!("{field}.cpu_weight"),
                    SpecErrorKind::OutOfRange,
                    format!("cpu.weight {w} is outside 1..=10000"),
                ));
            }
        }
        if let Some(m) = def.cpu_max {
            if !(1_000..=1_000_000).contains(&m.period_us) || m.quota_us < 1_000 {
                return Err(SpecError::new(
                    format!("{field}.cpu_max"),
                    SpecErrorKind::OutOfRange,
                    format!(
                        "cpu.max needs period_us in 1000..=1000000 and quota_us >= 1000 (got {} {})",
                        m.quota_us, m.period_us
                    ),
                ));
            }
        }
        let count = def.workers.resolve(cpus, def.work.work_type.group_size());
        let has_children = !def.nested.is_empty();
        if has_children && count != 0 {
            return Err(SpecError::new(
                format!("{field}.workers"),
                SpecErrorKind::NotALeaf,
                format!(
                    "cgroup `{path}` has nested cgroups, so it cannot hold workers itself (cgroup v2: only leaves hold processes); use Count(0)"
                ),
            ));
        }
        // An empty leaf is fine when a payload runs in it.
        let hosts_payload = self
            .payloads
            .values()
            .any(|(_, c)| *c == Some(path.as_str()));
        if !has_children && count == 0 && !hosts_payload {
            return Err(SpecError::new(
                format!("{field}.workers"),
                SpecErrorKind::ZeroWorkers,
                format!("cgroup `{path}` has no workers"),
            ));
        }
        self.work(field, &def.work, count)?;
        self.live.insert(
            path.clone(),
            LiveCgroup {
                cpus,
                has_children: false,
            },
        );
        for (i, child) in def.nested.iter().enumerate() {
            self.add(&format!("{field}.nested[{i}]"), child, Some(&path))?;
        }
        Ok(())
    }

    fn known(&self, field: &str, name: &str) -> Result<&LiveCgroup, SpecError> {
        self.live.get(name).ok_or_else(|| {
            SpecError::new(
                field,
                SpecErrorKind::UnknownCgroup,
                format!(
                    "no cgroup `{name}` exists at this step (known: {})",
                    self.live.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    fn leaf(&self, field: &str, name: &str) -> Result<(), SpecError> {
        if self.known(field, name)?.has_children {
            return Err(SpecError::new(
                field,
                SpecErrorKind::NotALeaf,
                format!("cgroup `{name}` has nested cgroups and cannot hold workers"),
            ));
        }
        Ok(())
    }

    fn op(&mut self, field: &str, op: &Op) -> Result<(), SpecError> {
        match op {
            Op::AddCgroup(def) => {
                // `a/b` nests under an existing `a`.
                let (parent, leaf) = match def.name.rsplit_once('/') {
                    Some((p, l)) => (Some(p), l),
                    None => (None, def.name.as_str()),
                };
                if let Some(p) = parent {
                    // A parent with workers cannot take children; one whose nested
                    // cgroups all went away holds no workers either, but we cannot tell
                    // it from a leaf here, so only current parents accept new children.
                    if !self.known(&format!("{field}.name"), p)?.has_children {
                        return Err(SpecError::new(
                            format!("{field}.name"),
                            SpecErrorKind::NotALeaf,
                            format!("cgroup `{p}` holds workers, so no cgroup can be nested in it"),
                        ));
                    }
                }
                let mut d = def.clone();
                d.name = leaf.to_string();
                self.add(field, &d, parent)
            }
            Op::RemoveCgroup { cgroup } => {
                self.known(&format!("{field}.cgroup"), cgroup)?;
                let prefix = format!("{cgroup}/");
                if let Some(p) = self.running.iter().find(|p| {
                    self.payloads
                        .get(p.as_str())
                        .and_then(|(_, c)| *c)
                        .is_some_and(|c| c == cgroup || c.starts_with(&prefix))
                }) {
                    return Err(SpecError::new(
                        format!("{field}.cgroup"),
                        SpecErrorKind::PayloadState,
                        format!(
                            "payload `{p}` still runs in cgroup `{cgroup}`: wait for it or kill it first"
                        ),
                    ));
                }
                self.live
                    .retain(|k, _| k != cgroup && !k.starts_with(&prefix));
                Ok(())
            }
            Op::SetCpuset { cgroup, cpuset } => {
                self.known(&format!("{field}.cgroup"), cgroup)?;
                let n = cpuset.check(self.topo, &format!("{field}.cpuset"))?;
                if let Some(c) = self.live.get_mut(cgroup) {
                    c.cpus = n;
                }
                Ok(())
            }
            Op::ClearCpuset { cgroup } => {
                self.known(&format!("{field}.cgroup"), cgroup)?;
                Ok(())
            }
            Op::SwapCpusets { a, b } => {
                self.known(&format!("{field}.a"), a)?;
                self.known(&format!("{field}.b"), b)?;
                if a == b {
                    return Err(SpecError::new(
                        format!("{field}.b"),
                        SpecErrorKind::Conflict,
                        format!("swapping the cpuset of `{a}` with itself"),
                    ));
                }
                Ok(())
            }
            Op::SetAffinity { cgroup, cpus } => {
                self.known(&format!("{field}.cgroup"), cgroup)?;
                cpus.check(self.topo, &format!("{field}.cpus"))?;
                Ok(())
            }
            Op::MoveTasks { from, to } => {
                self.known(&format!("{field}.from"), from)?;
                self.leaf(&format!("{field}.to"), to)?;
                if from == to {
                    return Err(SpecError::new(
                        format!("{field}.to"),
                        SpecErrorKind::Conflict,
                        format!("moving the tasks of `{from}` into itself"),
                    ));
                }
                Ok(())
            }
            Op::Freeze { cgroup } | Op::Unfreeze { cgroup } => {
                self.known(&format!("{field}.cgroup"), cgroup)?;
                Ok(())
            }
            Op::SpawnWorkers {
                cgroup,
                count,
                work,
            } => {
                self.leaf(&format!("{field}.cgroup"), cgroup)?;
                if *count == 0 {
                    return Err(SpecError::new(
                        format!("{field}.count"),
                        SpecErrorKind::ZeroWorkers,
                        "spawning zero workers",
                    ));
                }
                self.work(field, work, *count)
            }
            Op::RunPayload { name } | Op::StartPayload { name } => {
                let cgroup = self.payload(field, name)?;
                if self.running.contains(name) {
                    return Err(SpecError::new(
                        format!("{field}.name"),
                        SpecErrorKind::PayloadState,
                        format!(
                            "payload `{name}` is already running in the background: wait for it or kill it first"
                        ),
                    ));
                }
                if let Some((i, c)) = cgroup {
                    let cfield = format!("payloads[{i}].cgroup");
                    self.leaf(&cfield, c).map_err(|mut e| {
                        e.problem = format!("{} (when {field} starts payload `{name}`)", e.problem);
                        e
                    })?;
                }
                self.started.insert(name.clone());
                if matches!(op, Op::StartPayload { .. }) {
                    self.running.insert(name.clone());
                }
                Ok(())
            }
            Op::WaitPayload { name } | Op::KillPayload { name } => {
                self.payload(field, name)?;
                if !self.running.remove(name) {
                    return Err(SpecError::new(
                        format!("{field}.name"),
                        SpecErrorKind::PayloadState,
                        format!(
                            "payload `{name}` is not running in the background at this point (start it with StartPayload)"
                        ),
                    ));
                }
                Ok(())
            }
        }
    }

    /// A declared payload: its index and cgroup (None: the root cgroup).
    fn payload(&self, field: &str, name: &str) -> Result<Option<(usize, &'p str)>, SpecError> {
        match self.payloads.get(name) {
            Some((i, cgroup)) => Ok(cgroup.map(|c| (*i, c))),
            None => Err(SpecError::new(
                format!("{field}.name"),
                SpecErrorKind::UnknownPayload,
                format!(
                    "no payload `{name}` is declared (known: {})",
                    if self.payloads.is_empty() {
                        "none".to_string()
                    } else {
                        self.payloads.keys().copied().collect::<Vec<_>>().join(", ")
                    }
                ),
            )),
        }
    }
}

impl Scenario {
    pub fn new() -> Self {
        Self::default()
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

    /// Checks the scenario against a topology's size and the test's duration, before any
    /// VM boots. The error names the first offending field (`scenario.steps[2].hold`).
    /// A scenario that runs payloads is checked with [`Scenario::validate_with_payloads`].
    pub fn validate(&self, topo: TopoSize, duration_ms: u64) -> Result<(), SpecError> {
        self.validate_with_payloads(topo, duration_ms, &[])
    }

    /// [`Scenario::validate`] with the payloads its ops may name: ops must name declared
    /// payloads, start each at most once at a time, wait for or kill only running ones,
    /// and run every declared payload at least once; a payload's cgroup must be alive
    /// (and a leaf) when it starts.
    pub fn validate_with_payloads(
        &self,
        topo: TopoSize,
        duration_ms: u64,
        payloads: &[crate::spec::PayloadRun],
    ) -> Result<(), SpecError> {
        if topo.vcpus == 0 || topo.llcs == 0 || topo.nodes == 0 {
            return Err(SpecError::new(
                "topology",
                SpecErrorKind::OutOfRange,
                format!(
                    "{} CPUs, {} LLCs, {} nodes: every count must be at least 1",
                    topo.vcpus, topo.llcs, topo.nodes
                ),
            ));
        }
        if self.steps.is_empty() {
            return Err(SpecError::new(
                "scenario.steps",
                SpecErrorKind::NoHold,
                "the scenario has no steps, so it would end at once (add a step holding Fraction(1.0))",
            ));
        }
        if self.steps.len() > MAX_STEPS {
            return Err(SpecError::new(
                "scenario.steps",
                SpecErrorKind::TooBig,
                format!("{} steps, more than {MAX_STEPS}", self.steps.len()),
            ));
        }
        let mut c = Checker {
            topo,
            live: BTreeMap::new(),
            workers: 0,
            payloads: payloads
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.as_str(), (i, p.cgroup.as_deref())))
                .collect(),
            running: BTreeSet::new(),
            started: BTreeSet::new(),
        };
        for (i, def) in self.cgroups.iter().enumerate() {
            c.add(&format!("scenario.cgroups[{i}]"), def, None)?;
        }
        let mut fractions = 0.0;
        for (i, step) in self.steps.iter().enumerate() {
            let field = format!("scenario.steps[{i}]");
            match step.hold {
                Hold::Fraction(f) if !(f.is_finite() && f > 0.0 && f <= 1.0) => {
                    return Err(SpecError::new(
                        format!("{field}.hold"),
                        SpecErrorKind::NoHold,
                        format!("hold fraction {f} is not in (0, 1]"),
                    ));
                }
                Hold::Fraction(f) => fractions += f,
                Hold::Millis(0) => {
                    return Err(SpecError::new(
                        format!("{field}.hold"),
                        SpecErrorKind::NoHold,
                        "the step holds 0 ms",
                    ));
                }
                Hold::Millis(_) => {}
            }
            if step.hold.millis(duration_ms) == 0 {
                return Err(SpecError::new(
                    format!("{field}.hold"),
                    SpecErrorKind::NoHold,
                    format!("the hold rounds to 0 ms of a {duration_ms} ms test"),
                ));
            }
            for (j, op) in step.ops.iter().enumerate() {
                c.op(&format!("{field}.ops[{j}]"), op)?;
            }
        }
        if fractions > 1.0 + 1e-9 {
            return Err(SpecError::new(
                "scenario.steps",
                SpecErrorKind::TooBig,
                format!(
                    "the hold fractions add up to {fractions:.3}, more than the whole duration"
                ),
            ));
        }
        let planned = self.planned_ms(duration_ms);
        if planned > duration_ms {
            return Err(SpecError::new(
                "scenario.steps",
                SpecErrorKind::TooBig,
                format!(
                    "settle and holds need {planned} ms, more than the test's duration of {duration_ms} ms"
                ),
            ));
        }
        for (i, p) in payloads.iter().enumerate() {
            if !c.started.contains(&p.name) {
                return Err(SpecError::new(
                    format!("payloads[{i}]"),
                    SpecErrorKind::PayloadState,
                    format!(
                        "payload `{}` is never run: add an Op::RunPayload or Op::StartPayload naming it",
                        p.name
                    ),
                ));
            }
        }
        if c.workers == 0 && c.started.is_empty() {
            return Err(SpecError::new(
                "scenario.cgroups",
                SpecErrorKind::ZeroWorkers,
                "the scenario never starts a worker or a payload",
            ));
        }
        Ok(())
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

/// Canned scenarios: each takes the topology's size and the test's duration and fits in
/// that duration.
impl Scenario {
    /// Two cgroups, each with workers for half the CPUs, spinning for the whole run.
    pub fn steady(_topo: TopoSize, _duration_ms: u64) -> Self {
        Self::new()
            .cgroup(CgroupDef::new("cg0").workers_pct(50))
            .cgroup(CgroupDef::new("cg1").workers_pct(50))
            .step(Step::new("steady", Hold::Fraction(1.0)))
    }

    /// One cgroup per LLC, confined to it, one spinning worker per CPU.
    pub fn steady_llc(topo: TopoSize, _duration_ms: u64) -> Self {
        let mut s = Self::new();
        for i in 0..topo.llcs.max(1) {
            s = s.cgroup(
                CgroupDef::new(format!("llc{i}"))
                    .cpuset(CpusetSpec::Llc(i))
                    .workers_pct(100),
            );
        }
        s.step(Step::new("steady per LLC", Hold::Fraction(1.0)))
    }

    /// Two cgroups with two spinning workers per CPU each: four times more runnable
    /// workers than CPUs.
    pub fn oversubscribed(_topo: TopoSize, _duration_ms: u64) -> Self {
        Self::new()
            .cgroup(CgroupDef::new("cg0").workers_pct(200))
            .cgroup(CgroupDef::new("cg1").workers_pct(200))
            .step(Step::new("oversubscribed", Hold::Fraction(1.0)))
    }

    /// Two cgroups get disjoint halves of the CPUs, swap them, then lose their cpusets.
    pub fn cpuset_change(topo: TopoSize, _duration_ms: u64) -> Self {
        let (lo, hi) = halves(topo);
        let third = Hold::Fraction(1.0 / 3.0);
        Self::new()
            .cgroup(CgroupDef::new("cg0").workers_pct(50))
            .cgroup(CgroupDef::new("cg1").workers_pct(50))
            .step(
                Step::new("split cpusets", third)
                    .op(Op::SetCpuset {
                        cgroup: "cg0".into(),
                        cpuset: lo,
                    })
                    .op(Op::SetCpuset {
                        cgroup: "cg1".into(),
                        cpuset: hi,
                    }),
            )
            .step(Step::new("swap cpusets", third).op(Op::SwapCpusets {
                a: "cg0".into(),
                b: "cg1".into(),
            }))
            .step(
                Step::new("clear cpusets", third)
                    .op(Op::ClearCpuset {
                        cgroup: "cg0".into(),
                    })
                    .op(Op::ClearCpuset {
                        cgroup: "cg1".into(),
                    }),
            )
    }

    /// A steady cgroup while others come and go.
    pub fn cgroup_churn(_topo: TopoSize, _duration_ms: u64) -> Self {
        let third = Hold::Fraction(1.0 / 3.0);
        Self::new()
            .cgroup(CgroupDef::new("cg0").workers_pct(50))
            .step(
                Step::new("add cg1", third)
                    .op(Op::AddCgroup(CgroupDef::new("cg1").workers_pct(50))),
            )
            .step(
                Step::new("replace cg1 by cg2", third)
                    .op(Op::RemoveCgroup {
                        cgroup: "cg1".into(),
                    })
                    .op(Op::AddCgroup(
                        CgroupDef::new("cg2")
                            .workers_pct(50)
                            .work(WorkType::YieldHeavy),
                    )),
            )
            .step(Step::new("remove cg2", third).op(Op::RemoveCgroup {
                cgroup: "cg2".into(),
            }))
    }

    /// Workers for every CPU, pinned to the lower half of the CPUs, then let go.
    pub fn affinity_change(topo: TopoSize, _duration_ms: u64) -> Self {
        let (lo, _) = halves(topo);
        let third = Hold::Fraction(1.0 / 3.0);
        Self::new()
            .cgroup(CgroupDef::new("cg0").workers_pct(100))
            .step(Step::new("free", third))
            .step(Step::new("pin to lower half", third).op(Op::SetAffinity {
                cgroup: "cg0".into(),
                cpus: lo,
            }))
            .step(Step::new("unpin", third).op(Op::SetAffinity {
                cgroup: "cg0".into(),
                cpus: CpusetSpec::Range {
                    start: 0,
                    end: topo.vcpus.max(1),
                },
            }))
    }

    /// Several work types side by side: CPU hogs next to latency-sensitive pairs and
    /// timers.
    pub fn mixed_workloads(topo: TopoSize, _duration_ms: u64) -> Self {
        Self::new()
            .cgroup(CgroupDef::new("spin").workers(topo.vcpus.div_ceil(2).max(1)))
            .cgroup(CgroupDef::new("pipe").workers(2).work(WorkType::PipeIo))
            .cgroup(
                CgroupDef::new("futex")
                    .workers(2)
                    .work(WorkType::FutexPingPong),
            )
            .cgroup(
                CgroupDef::new("timer")
                    .workers(1)
                    .work(WorkType::TimerLatency { interval_us: 1000 }),
            )
            .cgroup(CgroupDef::new("bursty").workers(1).work(WorkType::Bursty {
                burst_ms: 5,
                sleep_ms: 5,
            }))
            .step(Step::new("mixed", Hold::Fraction(1.0)))
    }

    /// One parent cgroup with two nested ones of different weights.
    pub fn nested_steady(_topo: TopoSize, _duration_ms: u64) -> Self {
        Self::new()
            .cgroup(
                CgroupDef::new("outer")
                    .nest(CgroupDef::new("heavy").workers_pct(50).cpu_weight(200))
                    .nest(CgroupDef::new("light").workers_pct(50).cpu_weight(100)),
            )
            .step(Step::new("nested steady", Hold::Fraction(1.0)))
    }

    /// Every canned scenario by name, for tests that run them all.
    pub fn canned(topo: TopoSize, duration_ms: u64) -> Vec<(&'static str, Scenario)> {
        vec![
            ("steady", Self::steady(topo, duration_ms)),
            ("steady_llc", Self::steady_llc(topo, duration_ms)),
            ("oversubscribed", Self::oversubscribed(topo, duration_ms)),
            ("cpuset_change", Self::cpuset_change(topo, duration_ms)),
            ("cgroup_churn", Self::cgroup_churn(topo, duration_ms)),
            ("affinity_change", Self::affinity_change(topo, duration_ms)),
            ("mixed_workloads", Self::mixed_workloads(topo, duration_ms)),
            ("nested_steady", Self::nested_steady(topo, duration_ms)),
        ]
    }
}

/// The lower and upper half of the CPUs (both the one CPU on a one-CPU topology).
fn halves(topo: TopoSize) -> (CpusetSpec, CpusetSpec) {
    let n = topo.vcpus.max(1);
    if n == 1 {
        let all = CpusetSpec::Range { start: 0, end: 1 };
        return (all.clone(), all);
    }
    let mid = n / 2;
    (
        CpusetSpec::Range { start: 0, end: mid },
        CpusetSpec::Range { start: mid, end: n },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TopoSize = TopoSize {
        vcpus: 4,
        llcs: 2,
        nodes: 1,
    };

    fn one_step(def: CgroupDef) -> Scenario {
        Scenario::new()
            .cgroup(def)
            .step(Step::new("s", Hold::Fraction(1.0)))
    }

    fn err(s: &Scenario) -> SpecError {
        s.validate(T, 1000).unwrap_err()
    }

    #[test]
    fn canned_scenarios_validate_on_several_topologies() {
        for topo in [
            TopoSize::new(1, 1, 1),
            TopoSize::new(2, 1, 1),
            TopoSize::new(4, 2, 1),
            TopoSize::new(8, 4, 2),
            TopoSize::new(7, 7, 1),
        ] {
            for (name, s) in Scenario::canned(topo, 3000) {
                s.validate(topo, 3000)
                    .unwrap_or_else(|e| panic!("{name} on {topo:?}: {e}"));
                assert!(s.planned_ms(3000) <= 3000, "{name}");
                assert!(s.primary_work_type().is_some(), "{name}");
            }
        }
    }

    #[test]
    fn cpuset_outside_the_topology_names_the_field() {
        for (c, needle) in [
            (CpusetSpec::Llc(2), "LLC 2"),
            (CpusetSpec::Node(1), "NUMA node 1"),
            (CpusetSpec::Range { start: 2, end: 5 }, "past the last CPU"),
            (CpusetSpec::Range { start: 2, end: 2 }, "empty"),
            (CpusetSpec::Cpus(vec![0, 4]), "CPU 4"),
            (CpusetSpec::Cpus(vec![]), "empty"),
        ] {
            let e = err(&one_step(CgroupDef::new("cg0").cpuset(c.clone())));
            assert_eq!(e.kind, SpecErrorKind::CpusetOutsideTopology, "{c:?}");
            assert_eq!(e.field, "scenario.cgroups[0].cpuset");
            assert!(e.to_string().contains(needle), "{e}");
        }
        // The same checks apply to ops.
        let s = one_step(CgroupDef::new("cg0")).step(Step::new("pin", Hold::Millis(1)).op(
            Op::SetAffinity {
                cgroup: "cg0".into(),
                cpus: CpusetSpec::Cpus(vec![9]),
            },
        ));
        let s = Scenario {
            steps: vec![Step::new("a", Hold::Fraction(0.5)), s.steps[1].clone()],
            ..s
        };
        let e = err(&s);
        assert_eq!(e.field, "scenario.steps[1].ops[0].cpus");
    }

    #[test]
    fn zero_workers_and_indivisible_groups() {
        let e = err(&one_step(CgroupDef::new("cg0").workers(0)));
        assert_eq!(e.kind, SpecErrorKind::ZeroWorkers);
        assert_eq!(e.field, "scenario.cgroups[0].workers");

        let e = err(&one_step(
            CgroupDef::new("p").workers(3).work(WorkType::FutexPingPong),
        ));
        assert_eq!(e.kind, SpecErrorKind::IndivisibleGroup);
        assert!(e.to_string().contains("groups of 2"), "{e}");

        // A percentage rounds up to whole pairs: 50% of 3 CPUs is 2 workers.
        let pct = CgroupDef::new("p")
            .cpuset(CpusetSpec::Range { start: 0, end: 3 })
            .workers_pct(50)
            .work(WorkType::PipeIo);
        one_step(pct).validate(T, 1000).unwrap();
        assert_eq!(WorkerCount::PercentOfCpus(50).resolve(3, 2), 2);
        assert_eq!(WorkerCount::PercentOfCpus(30).resolve(3, 1), 1);
        assert_eq!(WorkerCount::PercentOfCpus(200).resolve(4, 1), 8);
        assert_eq!(WorkerCount::PercentOfCpus(0).resolve(4, 1), 0);

        let s = one_step(CgroupDef::new("cg0")).step(Step::new("more", Hold::Millis(5)).op(
            Op::SpawnWorkers {
                cgroup: "cg0".into(),
                count: 0,
                work: WorkType::SpinWait.into(),
            },
        ));
        let s = Scenario {
            steps: vec![Step::new("a", Hold::Fraction(0.5)), s.steps[1].clone()],
            ..s
        };
        assert_eq!(err(&s).field, "scenario.steps[1].ops[0].count");
    }

    #[test]
    fn steps_without_a_hold_are_rejected() {
        for hold in [
            Hold::Fraction(0.0),
            Hold::Fraction(-0.5),
            Hold::Fraction(f64::NAN),
            Hold::Fraction(1.5),
            Hold::Millis(0),
            Hold::Fraction(0.0001),
        ] {
            let s = Scenario::new()
                .cgroup(CgroupDef::new("cg0"))
                .step(Step::new("x", hold));
            let e = err(&s);
            assert_eq!(e.kind, SpecErrorKind::NoHold, "{hold:?}");
            assert_eq!(e.field, "scenario.steps[0].hold");
        }
        let e = err(&Scenario::new().cgroup(CgroupDef::new("cg0")));
        assert_eq!(e.field, "scenario.steps");
    }

    #[test]
    fn holds_must_fit_the_duration() {
        let s = Scenario::new()
            .cgroup(CgroupDef::new("cg0"))
            .step(Step::new("a", Hold::Fraction(0.75)))
            .step(Step::new("b", Hold::Fraction(0.5)));
        assert_eq!(err(&s).kind, SpecErrorKind::TooBig);
        let s = Scenario::new()
            .cgroup(CgroupDef::new("cg0"))
            .settle_ms(200)
            .step(Step::new("a", Hold::Millis(900)));
        let e = err(&s);
        assert!(e.to_string().contains("1100 ms"), "{e}");
        assert_eq!(s.planned_ms(2000), 1100);
    }

    #[test]
    fn ops_must_name_live_cgroups() {
        let base = || Scenario::new().cgroup(CgroupDef::new("cg0"));
        let cases = [
            (
                Op::SetCpuset {
                    cgroup: "nope".into(),
                    cpuset: CpusetSpec::Llc(0),
                },
                "scenario.steps[0].ops[0].cgroup",
            ),
            (
                Op::SwapCpusets {
                    a: "cg0".into(),
                    b: "cg9".into(),
                },
                "scenario.steps[0].ops[0].b",
            ),
            (
                Op::MoveTasks {
                    from: "cg9".into(),
                    to: "cg0".into(),
                },
                "scenario.steps[0].ops[0].from",
            ),
            (
                Op::Freeze {
                    cgroup: "cg1".into(),
                },
                "scenario.steps[0].ops[0].cgroup",
            ),
        ];
        for (op, field) in cases {
            let s = base().step(Step::new("x", Hold::Fraction(1.0)).op(op.clone()));
            let e = err(&s);
            assert_eq!(e.kind, SpecErrorKind::UnknownCgroup, "{op:?}");
            assert_eq!(e.field, field);
            assert!(e.to_string().contains("known: cg0"), "{e}");
        }
        // A removed cgroup is unknown in later steps; an added one is known.
        let s = base()
            .step(
                Step::new("add", Hold::Fraction(0.3))
                    .op(Op::AddCgroup(CgroupDef::new("cg1")))
                    .op(Op::Freeze {
                        cgroup: "cg1".into(),
                    }),
            )
            .step(Step::new("rm", Hold::Fraction(0.3)).op(Op::RemoveCgroup {
                cgroup: "cg1".into(),
            }))
            .step(Step::new("late", Hold::Fraction(0.3)).op(Op::Unfreeze {
                cgroup: "cg1".into(),
            }));
        let e = err(&s);
        assert_eq!(e.field, "scenario.steps[2].ops[0].cgroup");
        let e = err(&base()
            .step(Step::new("dup", Hold::Fraction(1.0)).op(Op::AddCgroup(CgroupDef::new("cg0")))));
        assert_eq!(e.kind, SpecErrorKind::DuplicateCgroup);
    }

    #[test]
    fn nesting_rules() {
        let s = Scenario::nested_steady(T, 1000);
        s.validate(T, 1000).unwrap();
        // Ops use the path; a parent cannot take workers.
        let s2 = s
            .clone()
            .step(Step::new("x", Hold::Millis(1)).op(Op::MoveTasks {
                from: "outer/heavy".into(),
                to: "outer".into(),
            }));
        let s2 = Scenario {
            steps: vec![Step::new("a", Hold::Fraction(0.5)), s2.steps[1].clone()],
            ..s2
        };
        assert_eq!(err(&s2).kind, SpecErrorKind::NotALeaf);
        let mut bad = CgroupDef::new("p").nest(CgroupDef::new("c"));
        bad.workers = WorkerCount::Count(1);
        assert_eq!(err(&one_step(bad)).kind, SpecErrorKind::NotALeaf);
        // Nested add under an existing parent works; under a leaf it does not.
        let add = |name: &str| {
            s.clone()
                .step(Step::new("add", Hold::Millis(1)).op(Op::AddCgroup(CgroupDef::new(name))))
        };
        let ok = add("outer/third");
        let ok = Scenario {
            steps: vec![Step::new("a", Hold::Fraction(0.5)), ok.steps[1].clone()],
            ..ok
        };
        ok.validate(T, 1000).unwrap();
        let no = add("outer/heavy/deeper");
        let no = Scenario {
            steps: vec![Step::new("a", Hold::Fraction(0.5)), no.steps[1].clone()],
            ..no
        };
        assert_eq!(err(&no).kind, SpecErrorKind::NotALeaf);
    }

    #[test]
    fn names_and_parameters() {
        for bad in ["", "a/b", "a b", "..", &"x".repeat(65)] {
            let e = err(&one_step(CgroupDef::new(bad)));
            assert_eq!(e.kind, SpecErrorKind::BadName, "{bad:?}");
        }
        for w in [
            WorkType::Bursty {
                burst_ms: 0,
                sleep_ms: 1,
            },
            WorkType::CachePressure { kib: 0 },
            WorkType::TimerLatency { interval_us: 0 },
        ] {
            let e = err(&one_step(CgroupDef::new("cg0").work(w)));
            assert_eq!(e.field, "scenario.cgroups[0].work.work_type");
        }
        let e = err(&one_step(CgroupDef::new("cg0").cpu_weight(0)));
        assert_eq!(e.field, "scenario.cgroups[0].cpu_weight");
        let e = err(&one_step(CgroupDef::new("cg0").cpu_max(10, 100_000)));
        assert_eq!(e.field, "scenario.cgroups[0].cpu_max");
        let e = err(&one_step(
            CgroupDef::new("cg0").work(WorkSpec::new(WorkType::SpinWait).nice(20)),
        ));
        assert_eq!(e.field, "scenario.cgroups[0].work.nice");
        let e = err(&one_step(CgroupDef::new("cg0").workers(MAX_WORKERS + 1)));
        assert_eq!(e.kind, SpecErrorKind::TooBig);
    }

    #[test]
    fn work_type_names_are_the_sidecar_names() {
        let names: Vec<_> = WorkType::all().iter().map(WorkType::name).collect();
        assert_eq!(names.len(), 12);
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
        let s = Scenario::cpuset_change(T, 3000);
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
        let s = Scenario::cgroup_churn(T, 3000);
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
