//! One judged check and the list of them that makes a run's verdict. Each check names its
//! gate and its subject (a cgroup, a worker, the scenario) and says what it measured, so a
//! failure line can be acted on without opening the sidecar.

use std::fmt;

use ktstr_sidecar::Outcome;

/// What a check judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gate {
    /// The run itself: the guest booted, reported, finished, the ring stayed sound.
    Run,
    /// The guest sees the declared topology.
    Topology,
    /// Every worker completed at least one work unit.
    NotStuck,
    /// Longest gap between two progress checkpoints of one worker.
    MaxGap,
    /// Off-CPU share spread between the workers of one cgroup.
    Spread,
    /// Off-CPU share spread between all workers of the scenario.
    ScenarioSpread,
    /// Workers ran only on CPUs their cgroup's cpuset allowed.
    Isolation,
    /// Migrations per work unit.
    MigrationRatio,
    /// Work units per CPU-second received.
    WorkRate,
    /// p99 wake-up latency.
    WakeLatency,
    /// The 100 ms system samples (imbalance, stuck CPUs, DSQ depth).
    Monitor,
    /// Periodic snapshots: as many fired as were asked for.
    Snapshots,
    /// A payload's checks: its exit code and the metrics read from its output.
    Payload,
}

/// Every gate with its name and a one-line description, in one table: `as_str`, `about`
/// and `ALL` are generated from it, and `as_str` is an exhaustive match, so a gate added
/// to the enum but not here does not compile.
macro_rules! gate_table {
    ($($gate:ident => $name:literal, $about:literal;)*) => {
        impl Gate {
            /// Every gate, in declaration order.
            pub const ALL: &'static [Gate] = &[$(Gate::$gate),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Gate::$gate => $name,)*
                }
            }

            /// What the gate judges, in one line (`cargo ktstr describe`).
            pub fn about(self) -> &'static str {
                match self {
                    $(Gate::$gate => $about,)*
                }
            }
        }
    };
}

gate_table! {
    Run => "run", "the guest booted, reported, finished cleanly; every step and op ran; the ring stayed sound";
    Topology => "topology", "the guest sees exactly the declared topology";
    NotStuck => "not_stuck", "every worker completed at least one work unit";
    MaxGap => "max_gap", "longest wall gap between two progress checkpoints of one worker";
    Spread => "spread", "off-CPU share spread (max - min) between the workers of one cgroup";
    ScenarioSpread => "scenario_spread", "off-CPU share spread between all workers of the scenario";
    Isolation => "isolation", "workers ran only on CPUs their cgroup's cpuset allowed";
    MigrationRatio => "migration_ratio", "migrations per work unit of one cgroup";
    WorkRate => "work_rate", "work units per CPU-second a worker received";
    WakeLatency => "wake_latency", "p99 wake-up latency of one cgroup";
    Monitor => "monitor", "the 100 ms system samples: run-queue imbalance, stuck CPUs, DSQ depth";
    Snapshots => "snapshots", "as many periodic snapshots arrived as were asked for";
    Payload => "payload", "a payload's exit code and the checks on the metrics read from its output";
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One judged check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub gate: Gate,
    /// What was judged: `cgroup cg0`, `worker cg0[2]`, `scenario`.
    pub subject: String,
    pub outcome: Outcome,
    /// What was measured against what limit (for a pass too).
    pub message: String,
}

impl Check {
    pub fn new(gate: Gate, subject: impl Into<String>, outcome: Outcome, message: String) -> Self {
        Self {
            gate,
            subject: subject.into(),
            outcome,
            message,
        }
    }

    /// `fail [spread] cgroup cg0: ...`
    pub fn line(&self) -> String {
        format!(
            "{} [{}] {}: {}",
            self.outcome, self.gate, self.subject, self.message
        )
    }
}

/// The checks of one run, in evaluation order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checks {
    pub list: Vec<Check>,
}

impl Checks {
    pub fn push(&mut self, c: Check) {
        self.list.push(c);
    }

    pub fn extend(&mut self, cs: impl IntoIterator<Item = Check>) {
        self.list.extend(cs);
    }

    pub fn pass(&mut self, gate: Gate, subject: impl Into<String>, message: String) {
        self.push(Check::new(gate, subject, Outcome::Pass, message));
    }

    pub fn fail(&mut self, gate: Gate, subject: impl Into<String>, message: String) {
        self.push(Check::new(gate, subject, Outcome::Fail, message));
    }

    pub fn inconclusive(&mut self, gate: Gate, subject: impl Into<String>, message: String) {
        self.push(Check::new(gate, subject, Outcome::Inconclusive, message));
    }

    pub fn skip(&mut self, gate: Gate, subject: impl Into<String>, message: String) {
        self.push(Check::new(gate, subject, Outcome::Skip, message));
    }

    /// The merged verdict (Fail > Inconclusive > Pass > Skip). No checks, or only
    /// skipped ones, is Skip: a Pass needs at least one real assertion.
    pub fn outcome(&self) -> Outcome {
        Outcome::merge_all(self.list.iter().map(|c| c.outcome))
    }

    /// One line per check that did not pass (the sidecar's `verdict_details`).
    pub fn details(&self) -> Vec<String> {
        self.list
            .iter()
            .filter(|c| c.outcome != Outcome::Pass)
            .map(Check::line)
            .collect()
    }

    /// The checks of one gate.
    pub fn of(&self, gate: Gate) -> impl Iterator<Item = &Check> {
        self.list.iter().filter(move |c| c.gate == gate)
    }

    /// Merged outcome of one gate (Skip when it never ran).
    pub fn gate_outcome(&self, gate: Gate) -> Outcome {
        Outcome::merge_all(self.of(gate).map(|c| c.outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_outcome_and_details() {
        let mut c = Checks::default();
        assert_eq!(c.outcome(), Outcome::Skip, "no checks is Skip");
        c.skip(Gate::Spread, "cgroup a", "one worker".into());
        assert_eq!(c.outcome(), Outcome::Skip, "only skips is Skip");
        c.pass(Gate::NotStuck, "scenario", "4 workers progressed".into());
        assert_eq!(c.outcome(), Outcome::Pass);
        c.inconclusive(Gate::MigrationRatio, "cgroup a", "no work units".into());
        assert_eq!(c.outcome(), Outcome::Inconclusive);
        c.fail(Gate::MaxGap, "worker a[0]", "gap 3000 ms > 2000 ms".into());
        assert_eq!(c.outcome(), Outcome::Fail);
        let d = c.details();
        assert_eq!(d.len(), 3, "passes leave no detail line: {d:?}");
        assert_eq!(d[2], "fail [max_gap] worker a[0]: gap 3000 ms > 2000 ms");
        assert_eq!(c.gate_outcome(Gate::NotStuck), Outcome::Pass);
        assert_eq!(c.gate_outcome(Gate::Isolation), Outcome::Skip);
    }
}
