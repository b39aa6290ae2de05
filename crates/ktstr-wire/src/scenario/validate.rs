//! Checking a scenario before any VM boots: every cgroup, worker count, CPU set, hold
//! and op against the topology's size, the test's duration and the declared payloads.
//! The first problem found comes back as a [`SpecError`] naming the offending field.

use std::collections::{BTreeMap, BTreeSet};

use ktstr_topology::TopoSize;

use super::model::{
    CgroupDef, CpuMax, CpusetSpec, Hold, Op, Scenario, SchedPolicy, WorkSpec, WorkType,
};

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

/// Most threads one worker of a threaded work type runs (`LockConvoy`, `TimerStorm`,
/// `EpollServer`, `YieldSpinLock`).
pub const MAX_WORKER_THREADS: u32 = 64;
/// Largest buffer of the memory work types (`PageFault`, `MemBandwidth`, `NumaRemote`,
/// `TmpfsFsync`), KiB.
pub const MAX_BUFFER_KIB: u32 = 1 << 20;
/// Longest spin or period of the timed work types, microseconds (10 s).
pub const MAX_WORK_US: u32 = 10_000_000;
/// Most arguments of a `Command` work type.
pub const MAX_COMMAND_ARGS: usize = 64;

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
    /// A scheduler op out of order: attaching an attached scheduler, detaching or
    /// restarting a detached one.
    SchedulerState,
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
            Self::Disjoint { index, of } | Self::Overlap { index, of, .. } if *of == 0 => {
                outside(format!("part {index} of 0 parts"))
            }
            Self::Disjoint { index, of } | Self::Overlap { index, of, .. } if index >= of => {
                outside(format!(
                    "part {index} of {of} does not exist (parts are numbered from 0)"
                ))
            }
            Self::Disjoint { of, .. } | Self::Overlap { of, .. } if *of > topo.vcpus => {
                outside(format!(
                    "{} CPUs cannot be cut into {of} non-empty parts",
                    topo.vcpus
                ))
            }
            Self::Overlap { percent, .. } if !(1..=100).contains(percent) => Err(SpecError::new(
                field,
                SpecErrorKind::OutOfRange,
                format!("overlap percent {percent} is outside 1..=100"),
            )),
            Self::Disjoint { index, of } | Self::Overlap { index, of, .. } => {
                let all: Vec<u32> = (0..topo.vcpus).collect();
                let percent = match self {
                    Self::Overlap { percent, .. } => *percent,
                    _ => 0,
                };
                let part = super::model::split_part(&all, *index, *of, percent)
                    .map_err(|p| SpecError::new(field, SpecErrorKind::CpusetOutsideTopology, p))?;
                Ok(part.len() as u32)
            }
        }
    }
}

/// Checks a cgroup's `cpu.max`.
fn check_cpu_max(field: &str, m: CpuMax) -> Result<(), SpecError> {
    if !(1_000..=1_000_000).contains(&m.period_us) || m.quota_us < 1_000 {
        return Err(SpecError::new(
            field,
            SpecErrorKind::OutOfRange,
            format!(
                "cpu.max needs period_us in 1000..=1000000 and quota_us >= 1000 (got {} {})",
                m.quota_us, m.period_us
            ),
        ));
    }
    Ok(())
}

/// Checks a weight (`cpu.weight`, `io.weight`): 1..=10000.
fn check_weight(field: &str, what: &str, w: u32) -> Result<(), SpecError> {
    if !(1..=10_000).contains(&w) {
        return Err(SpecError::new(
            field,
            SpecErrorKind::OutOfRange,
            format!("{what} {w} is outside 1..=10000"),
        ));
    }
    Ok(())
}

/// Checks a nice value: -20..=19.
fn check_nice(field: &str, n: i32) -> Result<(), SpecError> {
    if !(-20..=19).contains(&n) {
        return Err(SpecError::new(
            field,
            SpecErrorKind::OutOfRange,
            format!("nice {n} is outside -20..=19"),
        ));
    }
    Ok(())
}

/// Checks a policy's priority: 1..=99 for the real-time classes.
fn check_policy(field: &str, p: SchedPolicy) -> Result<(), SpecError> {
    match p {
        SchedPolicy::Fifo(prio) | SchedPolicy::Rr(prio) if !(1..=99).contains(&prio) => {
            Err(SpecError::new(
                field,
                SpecErrorKind::OutOfRange,
                format!("real-time priority {prio} is outside 1..=99"),
            ))
        }
        _ => Ok(()),
    }
}

impl WorkType {
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
            Self::LockConvoy { threads, hold_us } => {
                in_range("LockConvoy threads", threads, 2, MAX_WORKER_THREADS)?;
                in_range("LockConvoy hold_us", hold_us, 1, MAX_WORK_US)
            }
            Self::PageFault { kib } => in_range("PageFault kib", kib, 4, MAX_BUFFER_KIB),
            Self::MemBandwidth { kib } => in_range("MemBandwidth kib", kib, 4, MAX_BUFFER_KIB),
            Self::NumaRemote { kib } => in_range("NumaRemote kib", kib, 4, MAX_BUFFER_KIB),
            Self::TmpfsFsync { kib } => in_range("TmpfsFsync kib", kib, 1, MAX_BUFFER_KIB),
            Self::PeriodicDuty { run_us, period_us } => {
                in_range("PeriodicDuty period_us", period_us, 100, MAX_WORK_US)?;
                if run_us == 0 || run_us >= period_us {
                    return Err(format!(
                        "PeriodicDuty needs 0 < run_us < period_us (got run_us {run_us}, \
                         period_us {period_us})"
                    ));
                }
                Ok(())
            }
            Self::TimerStorm {
                threads,
                interval_us,
            } => {
                in_range("TimerStorm threads", threads, 1, MAX_WORKER_THREADS)?;
                in_range("TimerStorm interval_us", interval_us, 1, MAX_WORK_US)
            }
            Self::EpollServer {
                clients,
                pool,
                work_us,
            } => {
                in_range("EpollServer clients", clients, 1, MAX_WORKER_THREADS)?;
                in_range("EpollServer pool", pool, 1, MAX_WORKER_THREADS)?;
                in_range("EpollServer work_us", work_us, 0, MAX_WORK_US)
            }
            Self::YieldSpinLock { threads } => {
                in_range("YieldSpinLock threads", threads, 2, MAX_WORKER_THREADS)
            }
            Self::FifoHog { priority } => in_range("FifoHog priority", priority, 1, 99),
            Self::RrHog { priority } => in_range("RrHog priority", priority, 1, 99),
            Self::ThreadBurst { burst_us, gap_ms } => {
                in_range("ThreadBurst burst_us", burst_us, 1, MAX_WORK_US)?;
                in_range("ThreadBurst gap_ms", gap_ms, 1, 60_000)
            }
            Self::Command { ref path, ref args } => {
                if !path.starts_with('/') || path.contains('\0') {
                    return Err(format!(
                        "Command path `{}` is not an absolute path in the guest",
                        path.escape_debug()
                    ));
                }
                if args.len() > MAX_COMMAND_ARGS {
                    return Err(format!(
                        "Command takes at most {MAX_COMMAND_ARGS} arguments (got {})",
                        args.len()
                    ));
                }
                if let Some(a) = args.iter().find(|a| a.contains('\0')) {
                    return Err(format!(
                        "Command argument `{}` holds a NUL byte",
                        a.escape_debug()
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// `Err` naming `what` unless `lo <= v <= hi`.
fn in_range(what: &str, v: u32, lo: u32, hi: u32) -> Result<(), String> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!("{what} must be {lo}..={hi} (got {v})"))
    }
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
    /// A `DetachScheduler` ran and no attach since.
    sched_detached: bool,
    /// CPUs an op took offline and no op brought back.
    offline: BTreeSet<u32>,
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
            check_nice(&format!("{field}.work.nice"), n)?;
        }
        if let Some(p) = work.policy {
            check_policy(&format!("{field}.work.policy"), p)?;
        }
        if let Some(a) = &work.affinity {
            a.check(self.topo, &format!("{field}.work.affinity"))?;
        }
        if let Some(m) = &work.mem_policy {
            let nodes = m.nodes();
            let f = format!("{field}.work.mem_policy");
            if nodes.is_empty() {
                return Err(SpecError::new(
                    f,
                    SpecErrorKind::OutOfRange,
                    "the memory policy names no node",
                ));
            }
            if let Some(n) = nodes.iter().find(|&&n| n >= self.topo.nodes) {
                return Err(SpecError::new(
                    f,
                    SpecErrorKind::CpusetOutsideTopology,
                    format!(
                        "NUMA node {n} is outside the topology ({} nodes, numbered from 0)",
                        self.topo.nodes
                    ),
                ));
            }
        }
        if let Some(c) = &work.comm {
            if c.is_empty() || c.len() > 15 || c.contains('\0') {
                return Err(SpecError::new(
                    format!("{field}.work.comm"),
                    SpecErrorKind::BadName,
                    format!(
                        "thread name `{}` must be 1..=15 bytes without NUL",
                        c.escape_debug()
                    ),
                ));
            }
        }
        if work.uid.is_some() != work.gid.is_some() {
            return Err(SpecError::new(
                format!("{field}.work.uid"),
                SpecErrorKind::Conflict,
                "give uid and gid together (a worker that changes one keeps root's other)",
            ));
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
            check_weight(&format!("{field}.cpu_weight"), "cpu.weight", w)?;
        }
        if let Some(m) = def.cpu_max {
            check_cpu_max(&format!("{field}.cpu_max"), m)?;
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
            Op::StopWorkers { cgroup, count } => {
                self.leaf(&format!("{field}.cgroup"), cgroup)?;
                if *count == 0 {
                    return Err(SpecError::new(
                        format!("{field}.count"),
                        SpecErrorKind::ZeroWorkers,
                        "stopping zero workers",
                    ));
                }
                Ok(())
            }
            Op::OfflineCpus { cpus } | Op::OnlineCpus { cpus } => {
                let f = format!("{field}.cpus");
                cpus.check(self.topo, &f)?;
                // What the set resolves to on the declared topology (the guest's CPU
                // numbers are the same: they are validated against it at boot).
                let all: Vec<u32> = (0..self.topo.vcpus).collect();
                let listed: Vec<u32> = match cpus {
                    CpusetSpec::Cpus(l) => l.clone(),
                    CpusetSpec::Range { start, end } => (*start..*end).collect(),
                    CpusetSpec::Disjoint { index, of } => {
                        super::model::split_part(&all, *index, *of, 0).unwrap_or_default()
                    }
                    CpusetSpec::Overlap { index, of, percent } => {
                        super::model::split_part(&all, *index, *of, *percent).unwrap_or_default()
                    }
                    // LLC and node CPUs depend on the guest's numbering: checked there.
                    CpusetSpec::Llc(_) | CpusetSpec::Node(_) => Vec::new(),
                };
                if matches!(op, Op::OfflineCpus { .. }) {
                    if listed.contains(&0) {
                        return Err(SpecError::new(
                            f,
                            SpecErrorKind::OutOfRange,
                            "CPU 0 cannot go offline on x86 (the kernel keeps the boot CPU)",
                        ));
                    }
                    self.offline.extend(listed);
                    if self.offline.len() as u32 >= self.topo.vcpus {
                        return Err(SpecError::new(
                            f,
                            SpecErrorKind::OutOfRange,
                            "this would take every CPU offline",
                        ));
                    }
                } else {
                    for c in listed {
                        self.offline.remove(&c);
                    }
                }
                Ok(())
            }
            Op::DetachScheduler => {
                self.sched_attached(field, "detach")?;
                self.sched_detached = true;
                Ok(())
            }
            Op::AttachScheduler => {
                if !self.sched_detached {
                    return Err(SpecError::new(
                        field,
                        SpecErrorKind::SchedulerState,
                        "the scheduler is attached at this point; AttachScheduler follows a DetachScheduler",
                    ));
                }
                self.sched_detached = false;
                Ok(())
            }
            Op::RestartScheduler => self.sched_attached(field, "restart"),
            Op::ReplaceScheduler { scheduler, args } => {
                self.sched_attached(field, "replace")?;
                if scheduler.as_deref().is_some_and(str::is_empty) {
                    return Err(SpecError::new(
                        format!("{field}.scheduler"),
                        SpecErrorKind::BadName,
                        "the replacement scheduler's name is empty",
                    ));
                }
                if let Some(a) = args.iter().find(|a| a.contains('\0')) {
                    return Err(SpecError::new(
                        format!("{field}.args"),
                        SpecErrorKind::BadName,
                        format!("argument `{}` holds a NUL byte", a.escape_debug()),
                    ));
                }
                Ok(())
            }
            Op::SetNice { cgroup, nice } => {
                self.known(&format!("{field}.cgroup"), cgroup)?;
                check_nice(&format!("{field}.nice"), *nice)
            }
            Op::SetPolicy { cgroup, policy } => {
                self.known(&format!("{field}.cgroup"), cgroup)?;
                check_policy(&format!("{field}.policy"), *policy)
            }
            Op::SetCpuWeight { cgroup, weight } => {
                self.known(&format!("{field}.cgroup"), cgroup)?;
                check_weight(&format!("{field}.weight"), "cpu.weight", *weight)
            }
            Op::SetIoWeight { cgroup, weight } => {
                self.known(&format!("{field}.cgroup"), cgroup)?;
                check_weight(&format!("{field}.weight"), "io.weight", *weight)
            }
            Op::SetCpuMax { cgroup, max } => {
                self.known(&format!("{field}.cgroup"), cgroup)?;
                match max {
                    Some(m) => check_cpu_max(&format!("{field}.max"), *m),
                    None => Ok(()),
                }
            }
            Op::SetMemoryMax { cgroup, bytes } => {
                self.known(&format!("{field}.cgroup"), cgroup)?;
                match bytes {
                    // Below a few pages the kernel OOM-kills at once: surely a unit slip.
                    Some(b) if *b < 1 << 20 => Err(SpecError::new(
                        format!("{field}.bytes"),
                        SpecErrorKind::OutOfRange,
                        format!("memory.max {b} bytes is below 1 MiB (the value is in bytes)"),
                    )),
                    _ => Ok(()),
                }
            }
            Op::SetPidsMax { cgroup, max } => {
                self.known(&format!("{field}.cgroup"), cgroup)?;
                match max {
                    Some(0) => Err(SpecError::new(
                        format!("{field}.max"),
                        SpecErrorKind::OutOfRange,
                        "pids.max 0 would stop every fork in the cgroup; use at least 1",
                    )),
                    _ => Ok(()),
                }
            }
            Op::WriteSysctl { key, value } => {
                let ok = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
                    && !key.split(['.', '/']).any(|p| p.is_empty() || p == "..");
                if !ok {
                    return Err(SpecError::new(
                        format!("{field}.key"),
                        SpecErrorKind::BadName,
                        format!(
                            "`{}` is not a sysctl name (`kernel.sched_rt_runtime_us`)",
                            key.escape_debug()
                        ),
                    ));
                }
                if value.contains('\0') {
                    return Err(SpecError::new(
                        format!("{field}.value"),
                        SpecErrorKind::BadName,
                        "the sysctl value holds a NUL byte",
                    ));
                }
                Ok(())
            }
            Op::DropCaches => Ok(()),
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

    /// The scheduler must be attached for `what` at this point.
    fn sched_attached(&self, field: &str, what: &str) -> Result<(), SpecError> {
        if self.sched_detached {
            return Err(SpecError::new(
                field,
                SpecErrorKind::SchedulerState,
                format!("cannot {what} the scheduler: an earlier DetachScheduler left none attached (AttachScheduler first)"),
            ));
        }
        Ok(())
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
            sched_detached: false,
            offline: BTreeSet::new(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Step, WorkerCount};

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
        let s = Scenario::nested_steady(T);
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
        // Every default is valid; each bad parameter is named in the message.
        for w in WorkType::all() {
            let g = w.group_size();
            let s = one_step(CgroupDef::new("cg0").workers(g).work(w.clone()));
            assert!(s.validate(T, 1000).is_ok(), "{}", w.name());
        }
        for (w, says) in [
            (
                WorkType::LockConvoy {
                    threads: 1,
                    hold_us: 10,
                },
                "LockConvoy threads must be 2..=64 (got 1)",
            ),
            (
                WorkType::LockConvoy {
                    threads: 4,
                    hold_us: 0,
                },
                "LockConvoy hold_us",
            ),
            (WorkType::PageFault { kib: 0 }, "PageFault kib"),
            (
                WorkType::MemBandwidth {
                    kib: MAX_BUFFER_KIB + 1,
                },
                "MemBandwidth kib",
            ),
            (WorkType::NumaRemote { kib: 1 }, "NumaRemote kib"),
            (WorkType::TmpfsFsync { kib: 0 }, "TmpfsFsync kib"),
            (
                WorkType::PeriodicDuty {
                    run_us: 10_000,
                    period_us: 10_000,
                },
                "0 < run_us < period_us",
            ),
            (
                WorkType::PeriodicDuty {
                    run_us: 1,
                    period_us: 10,
                },
                "PeriodicDuty period_us",
            ),
            (
                WorkType::TimerStorm {
                    threads: 65,
                    interval_us: 100,
                },
                "TimerStorm threads",
            ),
            (
                WorkType::EpollServer {
                    clients: 1,
                    pool: 0,
                    work_us: 10,
                },
                "EpollServer pool",
            ),
            (WorkType::YieldSpinLock { threads: 0 }, "YieldSpinLock"),
            (
                WorkType::FifoHog { priority: 0 },
                "FifoHog priority must be 1..=99",
            ),
            (WorkType::RrHog { priority: 100 }, "RrHog priority"),
            (
                WorkType::ThreadBurst {
                    burst_us: 0,
                    gap_ms: 1,
                },
                "ThreadBurst burst_us",
            ),
            (
                WorkType::Command {
                    path: "bin/x".into(),
                    args: vec![],
                },
                "not an absolute path",
            ),
            (
                WorkType::Command {
                    path: "/bin/x".into(),
                    args: vec!["a\0b".into()],
                },
                "NUL byte",
            ),
        ] {
            let e = err(&one_step(CgroupDef::new("cg0").work(w.clone())));
            assert_eq!(e.kind, SpecErrorKind::OutOfRange, "{}", w.name());
            assert!(e.problem.contains(says), "{}: {}", w.name(), e.problem);
        }
        // Pairs come in twos.
        let e = err(&one_step(
            CgroupDef::new("cg0")
                .workers(3)
                .work(WorkType::SignalPingPong),
        ));
        assert_eq!(e.kind, SpecErrorKind::IndivisibleGroup);
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

    fn with_ops(ops: Vec<Op>) -> Scenario {
        Scenario::new()
            .cgroup(CgroupDef::new("cg0").workers(2))
            .step(
                ops.into_iter()
                    .fold(Step::new("s", Hold::Fraction(1.0)), Step::op),
            )
    }

    #[test]
    fn disjoint_and_overlapping_parts_cover_the_cpus() {
        let all: Vec<u32> = (0..8).collect();
        let parts: Vec<Vec<u32>> = (0..3)
            .map(|i| crate::scenario::split_part(&all, i, 3, 0).unwrap())
            .collect();
        // Disjoint parts cover every CPU once, sizes within one of each other.
        assert_eq!(parts.concat(), all);
        assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), [2, 3, 3]);
        // 50 % of a 4-CPU part is 2 CPUs into each neighbour (clipped at the ends).
        let p = crate::scenario::split_part(&all, 0, 2, 50).unwrap();
        assert_eq!(p, [0, 1, 2, 3, 4, 5]);
        let p = crate::scenario::split_part(&all, 1, 2, 50).unwrap();
        assert_eq!(p, [2, 3, 4, 5, 6, 7]);
        // Checked against the topology before boot.
        let cg = |c| one_step(CgroupDef::new("cg0").cpuset(c));
        assert!(cg(CpusetSpec::Disjoint { index: 1, of: 2 })
            .validate(T, 1000)
            .is_ok());
        let e = err(&cg(CpusetSpec::Disjoint { index: 2, of: 2 }));
        assert_eq!(e.kind, SpecErrorKind::CpusetOutsideTopology);
        assert!(e.problem.contains("part 2 of 2"), "{e}");
        let e = err(&cg(CpusetSpec::Disjoint { index: 0, of: 5 }));
        assert!(e.problem.contains("4 CPUs cannot be cut into 5"), "{e}");
        let e = err(&cg(CpusetSpec::Overlap {
            index: 0,
            of: 2,
            percent: 0,
        }));
        assert_eq!(e.kind, SpecErrorKind::OutOfRange);
    }

    #[test]
    fn scheduler_ops_must_come_in_order() {
        let ok = with_ops(vec![
            Op::RestartScheduler,
            Op::DetachScheduler,
            Op::AttachScheduler,
            Op::ReplaceScheduler {
                scheduler: Some("ktstr-stall".into()),
                args: vec![],
            },
        ]);
        ok.validate(T, 1000).unwrap();
        for ops in [
            vec![Op::AttachScheduler],
            vec![Op::DetachScheduler, Op::DetachScheduler],
            vec![Op::DetachScheduler, Op::RestartScheduler],
        ] {
            let e = err(&with_ops(ops.clone()));
            assert_eq!(e.kind, SpecErrorKind::SchedulerState, "{ops:?}: {e}");
            assert!(e.field.starts_with("scenario.steps[0].ops["), "{e}");
        }
    }

    #[test]
    fn hotplug_keeps_the_boot_cpu_and_one_cpu_online() {
        let off = |cpus| Op::OfflineCpus {
            cpus: CpusetSpec::Cpus(cpus),
        };
        with_ops(vec![
            off(vec![3]),
            Op::OnlineCpus {
                cpus: CpusetSpec::Cpus(vec![3]),
            },
        ])
        .validate(T, 1000)
        .unwrap();
        let e = err(&with_ops(vec![off(vec![0])]));
        assert!(e.problem.contains("CPU 0 cannot go offline"), "{e}");
        let e = err(&with_ops(vec![off(vec![4])]));
        assert_eq!(e.kind, SpecErrorKind::CpusetOutsideTopology);
    }

    #[test]
    fn knob_and_setting_ops_are_range_checked() {
        let cg = || "cg0".to_string();
        for (op, field) in [
            (
                Op::SetNice {
                    cgroup: cg(),
                    nice: 20,
                },
                "nice",
            ),
            (
                Op::SetPolicy {
                    cgroup: cg(),
                    policy: SchedPolicy::Fifo(0),
                },
                "policy",
            ),
            (
                Op::SetIoWeight {
                    cgroup: cg(),
                    weight: 0,
                },
                "weight",
            ),
            (
                Op::SetCpuWeight {
                    cgroup: cg(),
                    weight: 10_001,
                },
                "weight",
            ),
            (
                Op::SetMemoryMax {
                    cgroup: cg(),
                    bytes: Some(4096),
                },
                "bytes",
            ),
            (
                Op::SetPidsMax {
                    cgroup: cg(),
                    max: Some(0),
                },
                "max",
            ),
            (
                Op::WriteSysctl {
                    key: "../etc/passwd".into(),
                    value: "x".into(),
                },
                "key",
            ),
            (
                Op::StopWorkers {
                    cgroup: cg(),
                    count: 0,
                },
                "count",
            ),
        ] {
            let e = err(&with_ops(vec![op.clone()]));
            assert_eq!(
                e.field,
                format!("scenario.steps[0].ops[0].{field}"),
                "{op:?}: {e}"
            );
        }
        let e = err(&with_ops(vec![Op::SetNice {
            cgroup: "nope".into(),
            nice: 1,
        }]));
        assert_eq!(e.kind, SpecErrorKind::UnknownCgroup);
        // Per-worker settings.
        let w = |ws: WorkSpec| err(&one_step(CgroupDef::new("cg0").work(ws)));
        let base = || WorkSpec::new(WorkType::SpinWait);
        assert_eq!(
            w(base().mem_policy(super::super::model::MemPolicy::Bind(vec![1]))).kind,
            SpecErrorKind::CpusetOutsideTopology
        );
        assert_eq!(
            w(base().comm("a-name-longer-than-15")).kind,
            SpecErrorKind::BadName
        );
        assert_eq!(
            w(base().affinity(CpusetSpec::Cpus(vec![9]))).field,
            "scenario.cgroups[0].work.affinity"
        );
        let mut half = base();
        half.uid = Some(1000);
        assert_eq!(w(half).kind, SpecErrorKind::Conflict);
    }
}
