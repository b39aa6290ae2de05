//! Canned scenarios: ready-made [`Scenario`]s for common situations (steady load,
//! oversubscription, cpuset and affinity changes, cgroup churn, mixed and nested work).

use ktstr_topology::TopoSize;

use super::model::{CgroupDef, CpusetSpec, Hold, Op, Scenario, Step, WorkType};

/// Canned scenarios: each takes the topology's size; their holds are fractions of the
/// test's duration, so each fits any duration.
impl Scenario {
    /// Two cgroups, each with workers for half the CPUs, spinning for the whole run.
    pub fn steady(_topo: TopoSize) -> Self {
        Self::new()
            .cgroup(CgroupDef::new("cg0").workers_pct(50))
            .cgroup(CgroupDef::new("cg1").workers_pct(50))
            .step(Step::new("steady", Hold::Fraction(1.0)))
    }

    /// One cgroup per LLC, confined to it, one spinning worker per CPU.
    pub fn steady_llc(topo: TopoSize) -> Self {
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
    pub fn oversubscribed(_topo: TopoSize) -> Self {
        Self::new()
            .cgroup(CgroupDef::new("cg0").workers_pct(200))
            .cgroup(CgroupDef::new("cg1").workers_pct(200))
            .step(Step::new("oversubscribed", Hold::Fraction(1.0)))
    }

    /// Two cgroups get disjoint halves of the CPUs, swap them, then lose their cpusets.
    pub fn cpuset_change(topo: TopoSize) -> Self {
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
    pub fn cgroup_churn(_topo: TopoSize) -> Self {
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
    pub fn affinity_change(topo: TopoSize) -> Self {
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
    pub fn mixed_workloads(topo: TopoSize) -> Self {
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
    pub fn nested_steady(_topo: TopoSize) -> Self {
        Self::new()
            .cgroup(
                CgroupDef::new("outer")
                    .nest(CgroupDef::new("heavy").workers_pct(50).cpu_weight(200))
                    .nest(CgroupDef::new("light").workers_pct(50).cpu_weight(100)),
            )
            .step(Step::new("nested steady", Hold::Fraction(1.0)))
    }

    /// Every canned scenario by name, for tests that run them all.
    pub fn canned(topo: TopoSize) -> Vec<(&'static str, Scenario)> {
        vec![
            ("steady", Self::steady(topo)),
            ("steady_llc", Self::steady_llc(topo)),
            ("oversubscribed", Self::oversubscribed(topo)),
            ("cpuset_change", Self::cpuset_change(topo)),
            ("cgroup_churn", Self::cgroup_churn(topo)),
            ("affinity_change", Self::affinity_change(topo)),
            ("mixed_workloads", Self::mixed_workloads(topo)),
            ("nested_steady", Self::nested_steady(topo)),
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

    #[test]
    fn canned_scenarios_validate_on_several_topologies() {
        for topo in [
            TopoSize::new(1, 1, 1),
            TopoSize::new(2, 1, 1),
            TopoSize::new(4, 2, 1),
            TopoSize::new(8, 4, 2),
            TopoSize::new(7, 7, 1),
        ] {
            for (name, s) in Scenario::canned(topo) {
                s.validate(topo, 3000)
                    .unwrap_or_else(|e| panic!("{name} on {topo:?}: {e}"));
                assert!(s.planned_ms(3000) <= 3000, "{name}");
                assert!(s.primary_work_type().is_some(), "{name}");
            }
        }
    }
}
