//! Runs a [`Scenario`] in the guest: creates its cgroups and starts their workers, then
//! for every step sends a stimulus, applies the ops, holds, and sends the closing
//! stimulus; the sampler thread reports the system meanwhile. At the end every worker
//! is stopped and its report forwarded, the cgroups are removed and a `ScenarioEnd`
//! says what was sent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ktstr_wire::msg::{GuestMsg, ScenarioEnd, SeenTopology, StepPhase, Stimulus};
use ktstr_wire::scenario::{CgroupDef, CpusetSpec, Op, Scenario, SchedPolicy, WorkSpec};
use ktstr_wire::spec::GuestSpec;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::arena::{Arena, WorkerSlot};
use crate::cgroup::CgroupTree;
use crate::monitor::{self, LiveNames, Sampler};
use crate::payload::Payloads;
use crate::report::{self, log_error, log_info, log_warn};
use crate::scheduler::{self, Change};
use crate::workers::{self, Batch, Worker};

/// Time workers get to stop and report once asked.
const WORKER_GRACE: Duration = Duration::from_secs(10);
/// Workers stop by themselves this long after the planned end, should the runtime
/// never ask them.
const BACKSTOP: Duration = Duration::from_secs(20);
/// Extra backstop per scheduler op (the host's budget per op is 20 s).
const SCHEDULER_OP_BACKSTOP: Duration = Duration::from_secs(15);
/// How often a hold looks at the host's stop request.
const HOLD_SLICE: Duration = Duration::from_millis(20);
/// Payloads still running this long after the test's duration are killed, so their
/// results reach the host well before its watchdog (boot budget + duration + grace).
const PAYLOAD_BACKSTOP: Duration = Duration::from_secs(20);

/// A cgroup the scenario created and has not removed.
#[derive(Debug, Clone)]
struct LiveCgroup {
    /// Its own cpuset (None: the parent's).
    cpus: Option<Vec<u32>>,
    /// CPUs it may use: its cpuset, else its parent's, else all.
    effective: Vec<u32>,
    frozen: bool,
}

struct Executor<'a> {
    topo: &'a SeenTopology,
    tree: CgroupTree,
    arena: Arena,
    t0: Instant,
    deadline: Instant,
    cgroups: BTreeMap<String, LiveCgroup>,
    /// Creation order, shared with the sampler for snapshots.
    names: LiveNames,
    running: Vec<Worker>,
    /// Every worker ever started: its cgroup and live counter.
    slots: Vec<(String, &'static WorkerSlot)>,
    next_index: BTreeMap<String, u32>,
    reported: u32,
    failed_reports: u32,
    payloads: Payloads,
    /// CPUs an op took offline (brought back at the end).
    offline: BTreeSet<u32>,
}

/// Reports a scenario that stopped before anything ran; returns exit code 1.
fn end_before_start(reason: String) -> i32 {
    end(ScenarioEnd {
        elapsed_ms: 0,
        steps_completed: 0,
        workers_started: 0,
        workers_reported: 0,
        monitor_samples: 0,
        snapshots_taken: 0,
        monitor_cpu_us: 0,
        aborted: Some(reason),
    });
    1
}

/// Runs the scenario; returns the exit code (1 when setup, an op or a worker failed).
pub fn run(spec: &GuestSpec, scenario: &Scenario, topo: &SeenTopology) -> i32 {
    if let Err(e) = spec.validate(topo.size()) {
        log_error!(
            "the scenario does not fit the topology the guest sees ({}): {e}",
            topo.label()
        );
        return end_before_start(format!("invalid scenario: {e}"));
    }
    let t0 = Instant::now();
    let planned = Duration::from_millis(scenario.planned_ms(spec.duration_ms));
    let payload_deadline =
        t0 + planned.max(Duration::from_millis(spec.duration_ms)) + PAYLOAD_BACKSTOP;
    let payloads = Payloads::new(&spec.payloads, payload_deadline);
    // Scheduler ops wait for a detach and an attach outside the planned holds.
    let sched_ops = scenario.ops().filter(|op| op.is_scheduler_op()).count() as u32;
    let backstop = BACKSTOP + SCHEDULER_OP_BACKSTOP * sched_ops;
    let mut ex = match Executor::new(topo, t0, t0 + planned + backstop, payloads) {
        Ok(ex) => ex,
        Err(e) => {
            log_error!("setting up the scenario: {e:#}");
            return end_before_start(format!("setup: {e:#}"));
        }
    };
    let mut code = 0;
    let mut aborted = None;
    for (i, def) in scenario.cgroups.iter().enumerate() {
        if let Err(e) = ex.add_cgroup(def, None) {
            log_error!("creating scenario.cgroups[{i}] `{}`: {e:#}", def.name);
            aborted = Some(format!("setup of cgroup `{}`: {e:#}", def.name));
            code = 1;
            break;
        }
    }
    let sampler = if aborted.is_none() {
        // Snapshots spread over the workload, which starts once the cgroups are set up.
        let setup_ms = t0.elapsed().as_millis() as u64;
        let cfg = monitor::Config {
            t0,
            monitor: spec.monitor,
            snapshots_at_ms: monitor::snapshot_plan(
                spec.num_snapshots,
                scenario.planned_ms(spec.duration_ms),
            )
            .into_iter()
            .map(|t| t + setup_ms)
            .collect(),
            cpus: topo.cpus.iter().map(|c| c.cpu).collect(),
            tree: ex.tree.clone(),
            cgroups: ex.names.clone(),
        };
        match Sampler::start(cfg) {
            Ok(s) => Some(s),
            Err(e) => {
                log_error!("starting the monitor thread: {e}");
                code = 1;
                None
            }
        }
    } else {
        None
    };
    let mut steps_completed = 0;
    if aborted.is_none() && !hold(Duration::from_millis(scenario.settle_ms)) {
        aborted = Some("the host asked to stop during the settle phase".into());
    }
    if aborted.is_none() {
        for (i, step) in scenario.steps.iter().enumerate() {
            let step_index = u16::try_from(i + 1).unwrap_or(u16::MAX);
            let kinds: Vec<String> = step.ops.iter().map(|o| o.kind().to_string()).collect();
            ex.stimulus(
                step_index,
                StepPhase::Start,
                &step.label,
                &kinds,
                Vec::new(),
            );
            let mut op_errors = Vec::new();
            for (j, op) in step.ops.iter().enumerate() {
                if let Err(e) = ex.apply(op) {
                    let msg = format!("steps[{i}].ops[{j}] {}: {e:#}", op.kind());
                    log_error!("{msg}");
                    op_errors.push(msg);
                    code = 1;
                }
            }
            let held = hold(Duration::from_millis(step.hold.millis(spec.duration_ms)));
            ex.stimulus(step_index, StepPhase::End, &step.label, &kinds, op_errors);
            if !held {
                aborted = Some(format!("the host asked to stop during step {step_index}"));
                break;
            }
            steps_completed += 1;
            let n = scenario.steps.len();
            // With steps left, a dead scheduler ends the scenario here (the host fails
            // the run from the scheduler's own events).
            if let (true, Err(why)) = (i + 1 < n, crate::scheduler::check_alive()) {
                aborted = Some(format!(
                    "after step {step_index} of {n} the scheduler is gone: {why}"
                ));
                break;
            }
        }
    }
    let sent = sampler.map(Sampler::stop).unwrap_or_default();
    crate::phase("collect");
    let workers_started = ex.slots.len() as u32;
    if ex.finish() {
        code = code.max(1);
    }
    if let Some(why) = &aborted {
        log_warn!("scenario ended early: {why}");
    }
    end(ScenarioEnd {
        elapsed_ms: t0.elapsed().as_millis() as u64,
        steps_completed,
        workers_started,
        workers_reported: ex.reported,
        monitor_samples: sent.samples,
        snapshots_taken: sent.snapshots,
        monitor_cpu_us: sent.cpu_us,
        aborted,
    });
    code
}

fn end(e: ScenarioEnd) {
    report::send(&GuestMsg::ScenarioEnd(e));
}

/// Waits `d`, looking at the host's stop request; false when asked to stop.
fn hold(d: Duration) -> bool {
    let until = Instant::now() + d;
    loop {
        if report::stop_requested() {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep(HOLD_SLICE.min(until - now));
    }
}

fn cpuset_of(cpus: &[u32]) -> Result<CpuSet> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c as usize)
            .with_context(|| format!("CPU {c} does not fit a CPU set"))?;
    }
    Ok(set)
}

impl<'a> Executor<'a> {
    fn new(
        topo: &'a SeenTopology,
        t0: Instant,
        deadline: Instant,
        payloads: Payloads,
    ) -> Result<Self> {
        let tree = match CgroupTree::setup(Path::new("/sys/fs/cgroup")) {
            Ok(t) => t,
            Err(e) if !crate::is_pid1() => {
                log_warn!("{e:#}: outside a VM, so the workers run without cgroups");
                CgroupTree::detached()
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            topo,
            tree,
            arena: Arena::create()?,
            t0,
            deadline,
            cgroups: BTreeMap::new(),
            names: Arc::new(Mutex::new(Vec::new())),
            running: Vec::new(),
            slots: Vec::new(),
            next_index: BTreeMap::new(),
            reported: 0,
            failed_reports: 0,
            payloads,
            offline: BTreeSet::new(),
        })
    }

    fn all_cpus(&self) -> Vec<u32> {
        self.topo.cpus.iter().map(|c| c.cpu).collect()
    }

    fn live(&self, name: &str) -> Result<&LiveCgroup> {
        self.cgroups
            .get(name)
            .ok_or_else(|| anyhow!("no cgroup `{name}` is alive"))
    }

    fn publish_names(&self) {
        let mut names: Vec<String> = self.cgroups.keys().cloned().collect();
        names.sort_by_key(|n| n.matches('/').count());
        match self.names.lock() {
            Ok(mut g) => *g = names,
            Err(p) => *p.into_inner() = names,
        }
    }

    /// Creates the cgroup (and the ones nested in it) and starts its workers.
    fn add_cgroup(&mut self, def: &CgroupDef, parent: Option<&str>) -> Result<()> {
        let path = match parent {
            Some(p) => format!("{p}/{}", def.name),
            None => def.name.clone(),
        };
        if self.cgroups.contains_key(&path) {
            bail!("cgroup `{path}` already exists");
        }
        self.tree.create(&path, !def.nested.is_empty())?;
        let inherited = match parent {
            Some(p) => self.live(p)?.effective.clone(),
            None => self.all_cpus(),
        };
        let cpus = match &def.cpuset {
            Some(c) => {
                let cpus = c.resolve(self.topo).map_err(|e| anyhow!("cpuset: {e}"))?;
                self.tree.set_cpus(&path, Some(&cpus))?;
                Some(cpus)
            }
            None => None,
        };
        if let Some(w) = def.cpu_weight {
            self.tree.set_weight(&path, w)?;
        }
        if let Some(m) = def.cpu_max {
            self.tree.set_max(&path, m)?;
        }
        let effective = cpus.clone().unwrap_or(inherited);
        let n_cpus = effective.len() as u32;
        self.cgroups.insert(
            path.clone(),
            LiveCgroup {
                cpus,
                effective,
                frozen: false,
            },
        );
        self.publish_names();
        for child in &def.nested {
            self.add_cgroup(child, Some(&path))?;
        }
        let count = def.workers.resolve(n_cpus, def.work.work_type.group_size());
        if def.nested.is_empty() && count > 0 {
            self.spawn(&path, count, &def.work)?;
        }
        Ok(())
    }

    fn spawn(&mut self, cgroup: &str, count: u32, work: &WorkSpec) -> Result<()> {
        let first_index = self.next_index.get(cgroup).copied().unwrap_or(0);
        let affinity = match &work.affinity {
            Some(a) => Some(a.resolve(self.topo).map_err(|e| anyhow!("affinity: {e}"))?),
            None => None,
        };
        let batch = Batch {
            group: cgroup,
            first_index,
            count,
            work,
            affinity,
            t0: self.t0,
            deadline: self.deadline,
        };
        let started = workers::spawn_batch(&mut self.arena, &self.tree, &batch)?;
        self.next_index
            .insert(cgroup.to_string(), first_index + count);
        for w in &started {
            self.slots.push((cgroup.to_string(), w.slot));
        }
        self.running.extend(started);
        Ok(())
    }

    /// The cgroup and every live cgroup nested in it, deepest first.
    fn subtree(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}/");
        let mut v: Vec<String> = self
            .cgroups
            .keys()
            .filter(|k| *k == name || k.starts_with(&prefix))
            .cloned()
            .collect();
        v.sort_by_key(|n| std::cmp::Reverse(n.matches('/').count()));
        v
    }

    /// Processes in the cgroup and its descendants.
    fn subtree_pids(&self, name: &str) -> Result<Vec<Pid>> {
        let mut pids = Vec::new();
        for n in self.subtree(name) {
            pids.extend(self.tree.procs(&n)?);
        }
        Ok(pids)
    }

    fn apply(&mut self, op: &Op) -> Result<()> {
        match op {
            Op::AddCgroup(def) => match def.name.rsplit_once('/') {
                Some((parent, leaf)) => {
                    let mut d = def.clone();
                    d.name = leaf.to_string();
                    self.add_cgroup(&d, Some(parent))
                }
                None => self.add_cgroup(def, None),
            },
            Op::RemoveCgroup { cgroup } => self.remove(cgroup),
            Op::SetCpuset { cgroup, cpuset } => {
                self.live(cgroup)?;
                let cpus = cpuset
                    .resolve(self.topo)
                    .map_err(|e| anyhow!("cpuset: {e}"))?;
                self.set_cpus(cgroup, Some(cpus))
            }
            Op::ClearCpuset { cgroup } => {
                self.live(cgroup)?;
                self.set_cpus(cgroup, None)
            }
            Op::SwapCpusets { a, b } => {
                let ca = self.live(a)?.cpus.clone();
                let cb = self.live(b)?.cpus.clone();
                self.set_cpus(a, cb)?;
                self.set_cpus(b, ca)
            }
            Op::SetAffinity { cgroup, cpus } => {
                let cpus = cpus.resolve(self.topo).map_err(|e| anyhow!("cpus: {e}"))?;
                let set = cpuset_of(&cpus)?;
                let mut failures = Vec::new();
                for pid in self.subtree_pids(cgroup)? {
                    if let Err(e) = sched_setaffinity(pid, &set) {
                        failures.push(format!("pid {pid}: {e}"));
                    }
                }
                if !failures.is_empty() {
                    bail!("sched_setaffinity failed for {}", failures.join(", "));
                }
                Ok(())
            }
            Op::MoveTasks { from, to } => {
                self.live(to)?;
                for pid in self.subtree_pids(from)? {
                    self.tree.add_proc(to, pid)?;
                }
                Ok(())
            }
            Op::Freeze { cgroup } => self.set_frozen(cgroup, true),
            Op::Unfreeze { cgroup } => self.set_frozen(cgroup, false),
            Op::SpawnWorkers {
                cgroup,
                count,
                work,
            } => {
                self.live(cgroup)?;
                self.spawn(cgroup, *count, work)
            }
            Op::RunPayload { name } => {
                self.payloads.start(name, &self.tree)?;
                self.payloads.wait(name)
            }
            Op::StartPayload { name } => self.payloads.start(name, &self.tree),
            Op::WaitPayload { name } => self.payloads.wait(name),
            Op::KillPayload { name } => self.payloads.kill(name),
            Op::StopWorkers { cgroup, count } => self.stop_workers(cgroup, *count),
            Op::OfflineCpus { cpus } => self.hotplug(cpus, false),
            Op::OnlineCpus { cpus } => self.hotplug(cpus, true),
            Op::DetachScheduler => sched_op(op, Change::Detach),
            Op::AttachScheduler => sched_op(op, Change::Attach),
            Op::RestartScheduler => sched_op(op, Change::Restart),
            Op::ReplaceScheduler { scheduler, args } => sched_op(
                op,
                Change::Replace {
                    scheduler: scheduler.as_deref(),
                    args,
                },
            ),
            Op::SetNice { cgroup, nice } => self.each_thread(cgroup, "setpriority", |tid| {
                // SAFETY: setpriority on a thread id; no memory is passed.
                let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, *nice) };
                errno_result(r)
            }),
            Op::SetPolicy { cgroup, policy } => self.each_thread(
                cgroup,
                &format!("sched_setscheduler({})", policy.label()),
                |tid| set_thread_policy(tid, *policy),
            ),
            Op::SetCpuWeight { cgroup, weight } => {
                self.live(cgroup)?;
                self.tree.set_weight(cgroup, *weight)
            }
            Op::SetCpuMax { cgroup, max } => {
                self.live(cgroup)?;
                self.tree.set_max_opt(cgroup, *max)
            }
            Op::SetMemoryMax { cgroup, bytes } => {
                self.live(cgroup)?;
                self.tree.knob(cgroup, "memory.max", &max_or(*bytes))
            }
            Op::SetIoWeight { cgroup, weight } => {
                self.live(cgroup)?;
                self.tree
                    .knob(cgroup, "io.weight", &format!("default {weight}"))
            }
            Op::SetPidsMax { cgroup, max } => {
                self.live(cgroup)?;
                self.tree.knob(cgroup, "pids.max", &max_or(*max))
            }
            Op::WriteSysctl { key, value } => {
                scheduler::write_sysctl(key, value).map_err(|e| anyhow!(e))?;
                log_info!("sysctl {key}={value}");
                Ok(())
            }
            Op::DropCaches => {
                // SAFETY: sync(2) takes no arguments.
                unsafe { libc::sync() };
                std::fs::write("/proc/sys/vm/drop_caches", "3")
                    .context("writing 3 to /proc/sys/vm/drop_caches")
            }
        }
    }

    /// Stops the `count` newest running workers of the cgroup and forwards their reports.
    fn stop_workers(&mut self, cgroup: &str, count: u32) -> Result<()> {
        self.live(cgroup)?;
        let mut theirs: Vec<usize> = self
            .running
            .iter()
            .enumerate()
            .filter(|(_, w)| w.group == cgroup)
            .map(|(i, _)| i)
            .collect();
        if theirs.is_empty() {
            bail!("cgroup `{cgroup}` has no running worker to stop");
        }
        theirs.sort_by_key(|&i| std::cmp::Reverse(self.running[i].index));
        let chosen: BTreeSet<usize> = theirs.into_iter().take(count as usize).collect();
        let mut leaving = Vec::new();
        let mut staying = Vec::new();
        for (i, w) in std::mem::take(&mut self.running).into_iter().enumerate() {
            if chosen.contains(&i) {
                leaving.push(w);
            } else {
                staying.push(w);
            }
        }
        self.running = staying;
        let n = leaving.len();
        self.forward(workers::stop_and_collect(
            leaving,
            Instant::now() + WORKER_GRACE,
        ));
        if n < count as usize {
            log_warn!("stop_workers: `{cgroup}` had only {n} running workers of the {count} asked");
        }
        Ok(())
    }

    /// Takes CPUs offline or brings them back; the kernel's refusal is the error.
    fn hotplug(&mut self, cpus: &CpusetSpec, online: bool) -> Result<()> {
        let cpus = cpus.resolve(self.topo).map_err(|e| anyhow!("cpus: {e}"))?;
        for cpu in cpus {
            set_cpu_online(cpu, online)?;
            if online {
                self.offline.remove(&cpu);
            } else {
                self.offline.insert(cpu);
            }
        }
        Ok(())
    }

    /// Applies `f` to every thread of every process in the cgroup's subtree; the error
    /// lists the threads it failed for.
    fn each_thread(
        &self,
        cgroup: &str,
        what: &str,
        f: impl Fn(i32) -> std::io::Result<()>,
    ) -> Result<()> {
        self.live(cgroup)?;
        let mut failures = Vec::new();
        let mut done = 0;
        for pid in self.subtree_pids(cgroup)? {
            for tid in threads_of(pid) {
                match f(tid) {
                    Ok(()) => done += 1,
                    // A thread that ended meanwhile is not a failure.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => failures.push(format!("tid {tid}: {what}: {e}")),
                }
            }
        }
        if !failures.is_empty() {
            bail!(
                "{} of {} threads: {}",
                failures.len(),
                failures.len() + done,
                failures.join(", ")
            );
        }
        Ok(())
    }

    /// Sets or clears (None) a cgroup's cpuset and recomputes what its subtree may use.
    fn set_cpus(&mut self, name: &str, cpus: Option<Vec<u32>>) -> Result<()> {
        self.tree.set_cpus(name, cpus.as_deref())?;
        let all = self.all_cpus();
        if let Some(c) = self.cgroups.get_mut(name) {
            c.cpus = cpus;
        }
        // Parents come before children when sorted by depth.
        let mut names = self.subtree(name);
        names.reverse();
        for n in names {
            let inherited = match n.rsplit_once('/') {
                Some((p, _)) => self
                    .cgroups
                    .get(p)
                    .map(|c| c.effective.clone())
                    .unwrap_or_else(|| all.clone()),
                None => all.clone(),
            };
            if let Some(c) = self.cgroups.get_mut(&n) {
                c.effective = c.cpus.clone().unwrap_or(inherited);
            }
        }
        Ok(())
    }

    fn set_frozen(&mut self, name: &str, frozen: bool) -> Result<()> {
        self.live(name)?;
        self.tree.set_frozen(name, frozen)?;
        if let Some(c) = self.cgroups.get_mut(name) {
            c.frozen = frozen;
        }
        Ok(())
    }

    /// Stops the workers in the cgroup's subtree (forwarding their reports) and removes
    /// the cgroups, deepest first.
    fn remove(&mut self, name: &str) -> Result<()> {
        self.live(name)?;
        let names = self.subtree(name);
        for n in &names {
            if self.cgroups.get(n).is_some_and(|c| c.frozen) {
                self.set_frozen(n, false)?;
            }
        }
        let pids = self.subtree_pids(name)?;
        let (leaving, staying): (Vec<Worker>, Vec<Worker>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|w| pids.contains(&w.pid));
        self.running = staying;
        self.forward(workers::stop_and_collect(
            leaving,
            Instant::now() + WORKER_GRACE,
        ));
        // Anything else still in there (a worker's own children) goes too.
        for pid in self.subtree_pids(name)? {
            let _ = kill(pid, Signal::SIGKILL);
        }
        for n in &names {
            remove_dir_retrying(&self.tree, n)?;
            self.cgroups.remove(n);
        }
        self.publish_names();
        Ok(())
    }

    fn forward(&mut self, collected: Vec<workers::Collected>) {
        for (w, r) in collected {
            match r {
                Ok(report) => {
                    report::send(&GuestMsg::WorkerReport(report));
                    self.reported += 1;
                }
                Err(e) => {
                    log_error!("worker {}/{} (pid {}): {e:#}", w.group, w.index, w.pid);
                    self.failed_reports += 1;
                }
            }
        }
    }

    fn stimulus(
        &self,
        step_index: u16,
        phase: StepPhase,
        label: &str,
        kinds: &[String],
        op_errors: Vec<String>,
    ) {
        let mut per_cgroup: BTreeMap<String, u64> = BTreeMap::new();
        for (g, slot) in &self.slots {
            *per_cgroup.entry(g.clone()).or_default() += slot.units();
        }
        report::send(&GuestMsg::Stimulus(Stimulus {
            elapsed_ms: self.t0.elapsed().as_millis() as u64,
            step_index,
            phase,
            label: label.to_string(),
            op_count: kinds.len() as u32,
            op_kinds: kinds.to_vec(),
            cgroups: self.cgroups.len() as u32,
            workers: self.running.len() as u32,
            iterations_so_far: per_cgroup.values().sum(),
            cgroup_iterations: per_cgroup,
            op_errors,
        }));
    }

    /// Thaws, stops and collects every worker, then removes the cgroups. True when a
    /// worker failed to report or a cgroup could not be removed cleanly.
    fn finish(&mut self) -> bool {
        // Background payloads nobody waited for end first, while the scenario's load
        // is still what they ran under.
        self.payloads.finish();
        for cpu in std::mem::take(&mut self.offline) {
            if let Err(e) = set_cpu_online(cpu, true) {
                log_warn!("bringing CPU {cpu} back online for teardown: {e:#}");
            }
        }
        let frozen: Vec<String> = self
            .cgroups
            .iter()
            .filter(|(_, c)| c.frozen)
            .map(|(n, _)| n.clone())
            .collect();
        for n in frozen {
            if let Err(e) = self.set_frozen(&n, false) {
                log_warn!("thawing `{n}` for teardown: {e:#}");
            }
        }
        let running = std::mem::take(&mut self.running);
        self.forward(workers::stop_and_collect(
            running,
            Instant::now() + WORKER_GRACE,
        ));
        let mut names: Vec<String> = self.cgroups.keys().cloned().collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.matches('/').count()));
        for n in &names {
            for pid in self.tree.procs(n).unwrap_or_default() {
                let _ = kill(pid, Signal::SIGKILL);
            }
            if let Err(e) = remove_dir_retrying(&self.tree, n) {
                log_warn!("{e:#}");
            }
        }
        self.cgroups.clear();
        self.publish_names();
        log_info!(
            "scenario: {} workers reported, {} did not",
            self.reported,
            self.failed_reports
        );
        self.failed_reports > 0
    }
}

/// A scheduler op through the supervisor.
fn sched_op(op: &Op, change: Change) -> Result<()> {
    scheduler::transition(op.kind(), change).map_err(|e| anyhow!(e))
}

/// `max` for None, else the number.
fn max_or(v: Option<u64>) -> String {
    v.map_or_else(|| "max".to_string(), |n| n.to_string())
}

fn errno_result(r: libc::c_int) -> std::io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets a thread's scheduling policy and priority.
fn set_thread_policy(tid: i32, policy: SchedPolicy) -> std::io::Result<()> {
    let (raw, prio) = policy.raw();
    let p = libc::sched_param {
        sched_priority: prio as i32,
    };
    // SAFETY: sched_setscheduler on a thread id with a valid sched_param.
    let r = unsafe { libc::sched_setscheduler(tid, raw, &p) };
    errno_result(r)
}

/// Thread ids of a process (just the process when its task list cannot be read).
fn threads_of(pid: Pid) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![pid.as_raw()];
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Writes a CPU's `online` file; the kernel's refusal (`EBUSY`, `EINVAL`) is the error,
/// with the errno's words.
pub fn set_cpu_online(cpu: u32, online: bool) -> Result<()> {
    let path = format!("/sys/devices/system/cpu/cpu{cpu}/online");
    if !Path::new(&path).exists() {
        bail!("{path} does not exist: CPU {cpu} cannot be hotplugged (the boot CPU, or a kernel without CONFIG_HOTPLUG_CPU)");
    }
    let v = if online { "1" } else { "0" };
    std::fs::write(&path, v).map_err(|e| {
        anyhow!(
            "the kernel refused to take CPU {cpu} {}: writing {v} to {path}: {e}",
            if online { "online" } else { "offline" }
        )
    })
}

/// A cgroup whose last process just died may stay busy for a moment.
fn remove_dir_retrying(tree: &CgroupTree, name: &str) -> Result<()> {
    let mut last = None;
    for _ in 0..50 {
        match tree.remove(name) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(last.unwrap_or_else(|| anyhow!("removing cgroup `{name}`")))
}
