//! Canned scenarios: ready-made [`Scenario`]s, each named for the kind of scheduler bug
//! it hunts (steady load, oversubscription, cpuset and affinity changes, cgroup churn,
//! weights, freezes, migrations). [`CANNED`] lists them with what they hunt.

use ktstr_topology::TopoSize;

use super::model::{CgroupDef, CpusetSpec, Hold, Op, Scenario, Step, WorkType};

/// One canned scenario: its name, the bug class it hunts, and how to build it.
#[derive(Debug, Clone, Copy)]
pub struct Canned {
    pub name: &'static str,
    /// What it hunts, in one line (`cargo ktstr describe`).
    pub hunts: &'static str,
    pub build: fn(TopoSize) -> Scenario,
}

/// Every canned scenario, in the order [`Scenario::canned`] returns them.
pub const CANNED: &[Canned] = &[
    Canned {
        name: "steady",
        hunts: "the baseline: two cgroups spinning on half the CPUs each, nothing changes",
        build: Scenario::steady,
    },
    Canned {
        name: "steady_llc",
        hunts: "placement across LLCs: one cgroup confined to each LLC, one spinner per CPU",
        build: Scenario::steady_llc,
    },
    Canned {
        name: "oversubscribed",
        hunts: "unfairness under overload: four runnable spinners per CPU in two cgroups",
        build: Scenario::oversubscribed,
    },
    Canned {
        name: "cpuset_change",
        hunts: "stale CPU masks: disjoint cpusets, swapped, then cleared under load",
        build: Scenario::cpuset_change,
    },
    Canned {
        name: "cgroup_churn",
        hunts: "cgroup create/destroy races: cgroups come and go beside a steady one",
        build: Scenario::cgroup_churn,
    },
    Canned {
        name: "affinity_change",
        hunts: "affinity handling: every worker pinned to half the CPUs, then unpinned",
        build: Scenario::affinity_change,
    },
    Canned {
        name: "mixed_workloads",
        hunts: "latency-sensitive work starved by CPU hogs: pipes, futexes, timers, bursts beside spinners",
        build: Scenario::mixed_workloads,
    },
    Canned {
        name: "nested_steady",
        hunts: "hierarchical weights: two nested cgroups of different weights in one parent",
        build: Scenario::nested_steady,
    },
    Canned {
        name: "weight_inversion",
        hunts: "cgroup weight inversion: a weight-400 and a weight-25 cgroup, equally loaded",
        build: Scenario::weight_inversion,
    },
    Canned {
        name: "low_weight_starvation",
        hunts: "starvation of a low-weight cgroup: one weight-10 spinner beside weight-1000 hogs",
        build: Scenario::low_weight_starvation,
    },
    Canned {
        name: "cpuset_shrink",
        hunts: "cpuset shrink under load: an oversubscribed cgroup squeezed onto fewer CPUs, then freed",
        build: Scenario::cpuset_shrink,
    },
    Canned {
        name: "freeze_storm",
        hunts: "freeze/thaw storm: a cgroup frozen and thawed three times beside a steady one",
        build: Scenario::freeze_storm,
    },
    Canned {
        name: "affinity_storm",
        hunts: "migration storm: affinity flipped between CPU halves beside self-migrating workers",
        build: Scenario::affinity_storm,
    },
    Canned {
        name: "nested_oversubscribed",
        hunts: "oversubscribed nested cgroups: ten spinners per two CPUs, three levels deep",
        build: Scenario::nested_oversubscribed,
    },
    Canned {
        name: "fork_storm",
        hunts: "fork/exit storm: a child forked and reaped per unit on every CPU beside spinners",
        build: Scenario::fork_storm,
    },
];

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

    /// Two equally loaded cgroups of very different `cpu.weight` (400 and 25): the heavy
    /// one must get the larger share, never the smaller.
    pub fn weight_inversion(_topo: TopoSize) -> Self {
        Self::new()
            .cgroup(CgroupDef::new("heavy").workers_pct(100).cpu_weight(400))
            .cgroup(CgroupDef::new("light").workers_pct(100).cpu_weight(25))
            .step(Step::new("weighted", Hold::Fraction(1.0)))
    }

    /// Hogs of weight 1000 on every CPU, twice over, beside one spinner of weight 10:
    /// the spinner's share is small but it must keep running (`not_stuck`, `max_gap`).
    pub fn low_weight_starvation(_topo: TopoSize) -> Self {
        Self::new()
            .cgroup(CgroupDef::new("hogs").workers_pct(200).cpu_weight(1000))
            .cgroup(CgroupDef::new("meek").workers(1).cpu_weight(10))
            .step(Step::new("starve", Hold::Fraction(1.0)))
    }

    /// Two spinners per CPU, their cpuset shrunk to the lower half, then to CPU 0, then
    /// cleared.
    pub fn cpuset_shrink(topo: TopoSize) -> Self {
        let (lo, _) = halves(topo);
        let third = Hold::Fraction(1.0 / 3.0);
        Self::new()
            .cgroup(CgroupDef::new("cg0").workers_pct(200))
            .step(Step::new("shrink to half", third).op(Op::SetCpuset {
                cgroup: "cg0".into(),
                cpuset: lo,
            }))
            .step(Step::new("shrink to one CPU", third).op(Op::SetCpuset {
                cgroup: "cg0".into(),
                cpuset: CpusetSpec::Cpus(vec![0]),
            }))
            .step(Step::new("restore", third).op(Op::ClearCpuset {
                cgroup: "cg0".into(),
            }))
    }

    /// A cgroup frozen and thawed three times while another keeps spinning.
    pub fn freeze_storm(_topo: TopoSize) -> Self {
        let sixth = Hold::Fraction(1.0 / 6.0);
        let mut s = Self::new()
            .cgroup(CgroupDef::new("victim").workers_pct(50))
            .cgroup(CgroupDef::new("bystander").workers_pct(50));
        for _ in 0..3 {
            s = s
                .step(Step::new("freeze", sixth).op(Op::Freeze {
                    cgroup: "victim".into(),
                }))
                .step(Step::new("thaw", sixth).op(Op::Unfreeze {
                    cgroup: "victim".into(),
                }));
        }
        s
    }

    /// Spinners for every CPU whose affinity flips between the CPU halves, beside
    /// workers that move themselves to another CPU every unit.
    pub fn affinity_storm(topo: TopoSize) -> Self {
        let (lo, hi) = halves(topo);
        let fifth = Hold::Fraction(1.0 / 5.0);
        let flip = |label: &str, cpus: &CpusetSpec| {
            Step::new(label, fifth).op(Op::SetAffinity {
                cgroup: "flip".into(),
                cpus: cpus.clone(),
            })
        };
        Self::new()
            .cgroup(CgroupDef::new("flip").workers_pct(100))
            .cgroup(
                CgroupDef::new("churn")
                    .workers_pct(50)
                    .work(WorkType::AffinityChurn),
            )
            .step(flip("to lower half", &lo))
            .step(flip("to upper half", &hi))
            .step(flip("to lower half", &lo))
            .step(flip("to upper half", &hi))
            .step(flip(
                "unpin",
                &CpusetSpec::Range {
                    start: 0,
                    end: topo.vcpus.max(1),
                },
            ))
    }

    /// Five spinners per CPU spread over cgroups three levels deep.
    pub fn nested_oversubscribed(_topo: TopoSize) -> Self {
        Self::new()
            .cgroup(
                CgroupDef::new("outer")
                    .nest(CgroupDef::new("a").workers_pct(200))
                    .nest(
                        CgroupDef::new("mid")
                            .nest(CgroupDef::new("b").workers_pct(200).cpu_weight(200))
                            .nest(CgroupDef::new("c").workers_pct(100).cpu_weight(50)),
                    ),
            )
            .step(Step::new("nested oversubscribed", Hold::Fraction(1.0)))
    }

    /// A fork-and-reap worker per CPU beside a spinner per CPU.
    pub fn fork_storm(_topo: TopoSize) -> Self {
        Self::new()
            .cgroup(CgroupDef::new("spin").workers_pct(100))
            .cgroup(
                CgroupDef::new("fork")
                    .workers_pct(100)
                    .work(WorkType::ForkExit),
            )
            .step(Step::new("fork storm", Hold::Fraction(1.0)))
    }

    /// Every canned scenario by name ([`CANNED`]), for tests that run them all.
    pub fn canned(topo: TopoSize) -> Vec<(&'static str, Scenario)> {
        CANNED.iter().map(|c| (c.name, (c.build)(topo))).collect()
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

    #[test]
    fn canned_names_are_unique_and_described() {
        let names: std::collections::BTreeSet<_> = CANNED.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), CANNED.len());
        assert!(CANNED.len() >= 14);
        assert!(CANNED.iter().all(|c| !c.hunts.is_empty()));
    }
}
