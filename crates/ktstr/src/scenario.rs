//! Scenarios on the host: the model (re-exported from `ktstr_wire::scenario`, whose
//! builders `Scenario::new().cgroup(..).step(..)` and canned constructors test authors
//! use), checked against the declared topology before any VM boots, and turned into
//! what the verdict needs to know per cgroup: how many workers it starts and which CPUs
//! its cpusets allowed over the run ([`cgroup_plans`]).
//!
//! ```
//! use ktstr::scenario::{cgroup_plans, CgroupDef, CpusetSpec, Hold, Scenario, Step};
//! use ktstr_wire::spec::GuestSpec;
//!
//! let topo = "1n2l1c1t".parse().unwrap();
//! let mut spec = GuestSpec::new("confined", 2000);
//! spec.scenario = Some(
//!     Scenario::new()
//!         .cgroup(CgroupDef::new("packed").cpuset(CpusetSpec::Cpus(vec![1])).workers(4))
//!         .step(Step::new("hold", Hold::Fraction(1.0))),
//! );
//! ktstr::scenario::validate_spec(&spec, &topo).unwrap();
//! let plans = cgroup_plans(&spec, &topo);
//! assert_eq!(plans[0].workers, 4);
//! assert_eq!(plans[0].allowed_cpus, Some([1].into()));
//! ```

use std::collections::{BTreeMap, BTreeSet};

use ktstr_topology::Topology;
use ktstr_wire::msg::{SeenCpu, SeenTopology};
use ktstr_wire::spec::GuestSpec;

pub use ktstr_wire::scenario::*;

use crate::assert::CgroupPlan;

/// The CPU table a guest booted with `t` should show, for resolving cpusets on the host.
pub fn declared_cpus(t: &Topology) -> SeenTopology {
    let cpus = (0..t.vcpus())
        .map(|cpu| {
            let p = t.place(cpu);
            SeenCpu {
                cpu,
                core_id: p.core,
                package_id: p.llc,
                llc_id: p.llc,
                node: p.node,
            }
        })
        .collect();
    let online = render_cpulist(&(0..t.vcpus()).collect::<Vec<_>>());
    SeenTopology::derive(online, cpus)
}

/// Checks a guest spec against the topology before boot. The error names the field
/// (`scenario.cgroups[1].cpuset: CPU 9 is outside the topology (4 CPUs, ...)`).
pub fn validate_spec(spec: &GuestSpec, topology: &Topology) -> Result<(), SpecError> {
    spec.validate(topology.size())
}

/// What the scenario of `spec` declares per cgroup that holds workers, in creation
/// order: the worker count over the run and the CPUs its cpusets allowed at any point.
/// Assumes a spec that passed [`validate_spec`]; anything it cannot resolve is treated
/// as unrestricted rather than guessed.
pub fn cgroup_plans(spec: &GuestSpec, topology: &Topology) -> Vec<CgroupPlan> {
    let Some(scenario) = spec.effective_scenario() else {
        return Vec::new();
    };
    let mut sim = Sim::new(topology);
    for def in &scenario.cgroups {
        sim.add(def, None);
    }
    sim.observe();
    for step in &scenario.steps {
        for op in &step.ops {
            sim.op(op);
            sim.observe();
        }
    }
    sim.plans
        .into_iter()
        // A cgroup that only hosts payloads has no workers to judge.
        .filter(|p| p.workers > 0)
        .map(|p| CgroupPlan {
            name: p.name,
            workers: p.workers,
            allowed_cpus: (!p.unrestricted).then_some(p.allowed),
            paused: p.paused,
        })
        .collect()
}

#[derive(Debug, Default)]
struct PlanAcc {
    name: String,
    workers: u32,
    allowed: BTreeSet<u32>,
    unrestricted: bool,
    paused: bool,
}

/// Walks the scenario's ops over the declared topology, tracking cpusets and where each
/// cgroup's workers are.
struct Sim {
    seen: SeenTopology,
    all: BTreeSet<u32>,
    /// Live cgroups and their own cpuset (None: inherits the parent's).
    own: BTreeMap<String, Option<BTreeSet<u32>>>,
    /// Origin cgroup -> cgroups its workers are in now.
    hosts: BTreeMap<String, BTreeSet<String>>,
    plans: Vec<PlanAcc>,
}

impl Sim {
    fn new(t: &Topology) -> Self {
        Self {
            seen: declared_cpus(t),
            all: (0..t.vcpus()).collect(),
            own: BTreeMap::new(),
            hosts: BTreeMap::new(),
            plans: Vec::new(),
        }
    }

    fn resolve(&self, c: &CpusetSpec) -> Option<BTreeSet<u32>> {
        c.resolve(&self.seen).ok().map(|v| v.into_iter().collect())
    }

    fn plan(&mut self, name: &str) -> &mut PlanAcc {
        let i = match self.plans.iter().position(|p| p.name == name) {
            Some(i) => i,
            None => {
                self.plans.push(PlanAcc {
                    name: name.to_string(),
                    ..PlanAcc::default()
                });
                self.plans.len() - 1
            }
        };
        &mut self.plans[i]
    }

    /// `a/b/c` -> [`a`, `a/b`, `a/b/c`]
    fn ancestry(path: &str) -> Vec<&str> {
        path.match_indices('/')
            .map(|(i, _)| &path[..i])
            .chain(std::iter::once(path))
            .collect()
    }

    /// The CPUs a cgroup may run on: its cpuset intersected with its ancestors'; a
    /// cpuset that does not overlap its parent's falls back to the parent's (cgroup v2).
    fn effective(&self, path: &str) -> BTreeSet<u32> {
        let mut eff = self.all.clone();
        for p in Self::ancestry(path) {
            if let Some(Some(set)) = self.own.get(p) {
                let i: BTreeSet<u32> = eff.intersection(set).copied().collect();
                if !i.is_empty() {
                    eff = i;
                }
            }
        }
        eff
    }

    /// The CPU count a `PercentOfCpus` worker count is taken of: the nearest cpuset on
    /// the way up, else every CPU (as the model's validation counts it).
    fn count_base(&self, path: &str) -> u32 {
        Self::ancestry(path)
            .into_iter()
            .rev()
            .find_map(|p| self.own.get(p).and_then(|o| o.as_ref()))
            .map_or(self.all.len(), BTreeSet::len) as u32
    }

    fn add(&mut self, def: &CgroupDef, parent: Option<&str>) {
        let path = match parent {
            Some(p) => format!("{p}/{}", def.name),
            None => def.name.clone(),
        };
        let own = def.cpuset.as_ref().and_then(|c| self.resolve(c));
        self.own.insert(path.clone(), own);
        if def.nested.is_empty() {
            let n = def
                .workers
                .resolve(self.count_base(&path), def.work.work_type.group_size());
            self.plan(&path).workers += n;
            self.hosts
                .entry(path.clone())
                .or_default()
                .insert(path.clone());
        }
        for child in &def.nested {
            self.add(child, Some(&path));
        }
    }

    fn is_within(path: &str, root: &str) -> bool {
        path == root || path.strip_prefix(root).is_some_and(|r| r.starts_with('/'))
    }

    fn op(&mut self, op: &Op) {
        match op {
            Op::AddCgroup(def) => match def.name.rsplit_once('/') {
                Some((parent, leaf)) => {
                    let mut d = def.clone();
                    d.name = leaf.to_string();
                    self.add(&d, Some(parent));
                }
                None => self.add(def, None),
            },
            Op::RemoveCgroup { cgroup } => {
                self.own.retain(|k, _| !Self::is_within(k, cgroup));
                for hs in self.hosts.values_mut() {
                    hs.retain(|h| !Self::is_within(h, cgroup));
                }
            }
            Op::SetCpuset { cgroup, cpuset } => {
                let set = self.resolve(cpuset);
                if let Some(o) = self.own.get_mut(cgroup) {
                    *o = set;
                }
            }
            Op::ClearCpuset { cgroup } => {
                if let Some(o) = self.own.get_mut(cgroup) {
                    *o = None;
                }
            }
            Op::SwapCpusets { a, b } => {
                let sa = self.own.get(a).cloned().flatten();
                let sb = self.own.get(b).cloned().flatten();
                if let Some(o) = self.own.get_mut(a) {
                    *o = sb;
                }
                if let Some(o) = self.own.get_mut(b) {
                    *o = sa;
                }
            }
            Op::MoveTasks { from, to } => {
                for hs in self.hosts.values_mut() {
                    if hs.remove(from) {
                        hs.insert(to.clone());
                    }
                }
            }
            Op::Freeze { cgroup } => {
                let frozen: Vec<String> = self
                    .hosts
                    .iter()
                    .filter(|(_, hs)| hs.iter().any(|h| Self::is_within(h, cgroup)))
                    .map(|(o, _)| o.clone())
                    .collect();
                for o in frozen {
                    self.plan(&o).paused = true;
                }
            }
            Op::SpawnWorkers { cgroup, count, .. } => {
                self.plan(cgroup).workers += count;
                self.hosts
                    .entry(cgroup.clone())
                    .or_default()
                    .insert(cgroup.clone());
            }
            // Affinity narrows within the cpuset; it never widens what isolation allows.
            // Payloads are judged by their own checks, not as workers.
            Op::SetAffinity { .. }
            | Op::Unfreeze { .. }
            | Op::RunPayload { .. }
            | Op::StartPayload { .. }
            | Op::WaitPayload { .. }
            | Op::KillPayload { .. } => {}
            // Stopped workers keep their reports; hotplug, priorities, knobs, sysctls
            // and scheduler changes never widen where a worker may run.
            Op::StopWorkers { .. }
            | Op::OfflineCpus { .. }
            | Op::OnlineCpus { .. }
            | Op::DetachScheduler
            | Op::AttachScheduler
            | Op::RestartScheduler
            | Op::ReplaceScheduler { .. }
            | Op::SetNice { .. }
            | Op::SetPolicy { .. }
            | Op::SetCpuWeight { .. }
            | Op::SetCpuMax { .. }
            | Op::SetMemoryMax { .. }
            | Op::SetIoWeight { .. }
            | Op::SetPidsMax { .. }
            | Op::WriteSysctl { .. }
            | Op::DropCaches => {}
        }
    }

    /// Adds the cpusets in force now to the allowed CPUs of every origin cgroup.
    fn observe(&mut self) {
        let now: Vec<(String, Vec<BTreeSet<u32>>)> = self
            .hosts
            .iter()
            .map(|(origin, hs)| {
                let sets = hs
                    .iter()
                    .filter(|h| self.own.contains_key(*h))
                    .map(|h| self.effective(h))
                    .collect();
                (origin.clone(), sets)
            })
            .collect();
        let all = self.all.clone();
        for (origin, sets) in now {
            let p = self.plan(&origin);
            for s in sets {
                if s == all {
                    p.unrestricted = true;
                }
                p.allowed.extend(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(s: &str) -> Topology {
        s.parse().unwrap()
    }

    fn spec_of(s: Scenario) -> GuestSpec {
        let mut g = GuestSpec::new("t", 3000);
        g.scenario = Some(s);
        g
    }

    fn plan<'a>(plans: &'a [CgroupPlan], name: &str) -> &'a CgroupPlan {
        plans.iter().find(|p| p.name == name).unwrap()
    }

    #[test]
    fn declared_cpus_resolve_llcs_and_nodes() {
        let t = declared_cpus(&topo("2n4l2c1t"));
        assert_eq!(t.label(), "2n4l2c1t");
        assert_eq!(CpusetSpec::Llc(1).resolve(&t).unwrap(), [2, 3]);
        assert_eq!(CpusetSpec::Node(1).resolve(&t).unwrap(), [4, 5, 6, 7]);
    }

    #[test]
    fn impossible_specs_are_rejected_naming_the_field() {
        let t = topo("1n1l2c1t");
        let bad = spec_of(
            Scenario::new()
                .cgroup(CgroupDef::new("a").cpuset(CpusetSpec::Cpus(vec![5])))
                .step(Step::new("s", Hold::Fraction(1.0))),
        );
        let e = validate_spec(&bad, &t).unwrap_err();
        assert_eq!(e.field, "scenario.cgroups[0].cpuset");
        assert_eq!(e.kind, SpecErrorKind::CpusetOutsideTopology);

        let zero = spec_of(
            Scenario::new()
                .cgroup(CgroupDef::new("a").workers(0))
                .step(Step::new("s", Hold::Fraction(1.0))),
        );
        let e = validate_spec(&zero, &t).unwrap_err();
        assert_eq!(e.kind, SpecErrorKind::ZeroWorkers, "{e}");
        assert!(
            e.to_string().starts_with("scenario.cgroups[0].workers"),
            "{e}"
        );

        let pairs = spec_of(
            Scenario::new()
                .cgroup(CgroupDef::new("a").workers(3).work(WorkType::PipeIo))
                .step(Step::new("s", Hold::Fraction(1.0))),
        );
        assert_eq!(
            validate_spec(&pairs, &t).unwrap_err().kind,
            SpecErrorKind::IndivisibleGroup
        );

        let no_hold = spec_of(
            Scenario::new()
                .cgroup(CgroupDef::new("a"))
                .step(Step::new("s", Hold::Millis(0))),
        );
        let e = validate_spec(&no_hold, &t).unwrap_err();
        assert_eq!(e.field, "scenario.steps[0].hold");
    }

    #[test]
    fn canned_scenarios_validate_and_plan_on_small_topologies() {
        for label in ["1n1l2c1t", "1n2l1c1t", "1n2l2c1t", "2n4l1c1t"] {
            let t = topo(label);
            for (name, s) in Scenario::canned(t.size()) {
                let spec = spec_of(s);
                validate_spec(&spec, &t).unwrap_or_else(|e| panic!("{label} {name}: {e}"));
                let plans = cgroup_plans(&spec, &t);
                assert!(!plans.is_empty(), "{label} {name}");
                assert!(
                    plans.iter().all(|p| p.workers > 0),
                    "{label} {name}: {plans:?}"
                );
            }
        }
    }

    #[test]
    fn percent_counts_follow_the_cpuset() {
        let t = topo("1n2l2c1t");
        let plans = cgroup_plans(&spec_of(Scenario::oversubscribed(t.size())), &t);
        assert_eq!(plans[0].workers, 8, "200 % of 4 CPUs");
        let plans = cgroup_plans(&spec_of(Scenario::steady_llc(t.size())), &t);
        assert_eq!(plans.len(), 2);
        assert_eq!(plan(&plans, "llc1").workers, 2);
        assert_eq!(plan(&plans, "llc1").allowed_cpus, Some([2, 3].into()));
    }

    #[test]
    fn cpuset_changes_widen_what_isolation_allows() {
        let t = topo("1n2l2c1t");
        let plans = cgroup_plans(&spec_of(Scenario::cpuset_change(t.size())), &t);
        // Starts without a cpuset, so all CPUs were allowed at some point.
        assert_eq!(plan(&plans, "cg0").allowed_cpus, None);

        let s = Scenario::new()
            .cgroup(CgroupDef::new("a").cpuset(CpusetSpec::Cpus(vec![0])))
            .cgroup(CgroupDef::new("b").cpuset(CpusetSpec::Cpus(vec![3])))
            .step(Step::new("swap", Hold::Fraction(0.5)).op(Op::SwapCpusets {
                a: "a".into(),
                b: "b".into(),
            }))
            .step(Step::new("narrow", Hold::Fraction(0.5)).op(Op::SetCpuset {
                cgroup: "a".into(),
                cpuset: CpusetSpec::Range { start: 1, end: 3 },
            }));
        let plans = cgroup_plans(&spec_of(s), &t);
        assert_eq!(plan(&plans, "a").allowed_cpus, Some([0, 1, 2, 3].into()));
        assert_eq!(plan(&plans, "b").allowed_cpus, Some([0, 3].into()));
    }

    #[test]
    fn nested_moves_spawns_and_freezes() {
        let t = topo("1n1l4c1t");
        let s = Scenario::new()
            .cgroup(
                CgroupDef::new("outer")
                    .cpuset(CpusetSpec::Range { start: 0, end: 2 })
                    .nest(CgroupDef::new("in").workers(2)),
            )
            .cgroup(
                CgroupDef::new("side")
                    .cpuset(CpusetSpec::Cpus(vec![3]))
                    .workers(1),
            )
            .step(
                Step::new("move", Hold::Fraction(0.5))
                    .op(Op::MoveTasks {
                        from: "side".into(),
                        to: "outer/in".into(),
                    })
                    .op(Op::SpawnWorkers {
                        cgroup: "side".into(),
                        count: 2,
                        work: WorkSpec::new(WorkType::SpinWait),
                    }),
            )
            .step(Step::new("freeze", Hold::Fraction(0.5)).op(Op::Freeze {
                cgroup: "outer".into(),
            }));
        let spec = spec_of(s);
        validate_spec(&spec, &t).unwrap();
        let plans = cgroup_plans(&spec, &t);
        assert_eq!(plans.len(), 2, "`outer` holds no workers: {plans:?}");
        let inner = plan(&plans, "outer/in");
        assert_eq!(inner.workers, 2);
        assert_eq!(inner.allowed_cpus, Some([0, 1].into()));
        assert!(inner.paused);
        let side = plan(&plans, "side");
        assert_eq!(side.workers, 3, "1 + 2 spawned");
        // Its first worker moved into outer/in, so CPUs 0-1 were allowed too.
        assert_eq!(side.allowed_cpus, Some([0, 1, 3].into()));
        assert!(side.paused, "its moved worker sits in the frozen cgroup");
    }

    #[test]
    fn flat_workers_become_one_unrestricted_cgroup_each() {
        let t = topo("1n1l2c1t");
        let mut g = GuestSpec::new("t", 1000);
        g.workers.push(ktstr_wire::spec::WorkerSpec {
            group: "spin".into(),
            count: 2,
            work: ktstr_wire::spec::WorkKind::Spin,
        });
        let plans = cgroup_plans(&g, &t);
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].workers, 2);
        assert_eq!(plans[0].allowed_cpus, None);
        assert!(cgroup_plans(&GuestSpec::new("t", 1000), &t).is_empty());
    }
}
