//! `stimulus_events`: the moments the scenario changed something, so numbers over time
//! can be lined up with what caused them.

use serde::{Deserialize, Serialize};

/// One scenario step boundary, as the guest reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StimulusEvent {
    /// Milliseconds since the scenario started.
    pub elapsed_ms: u64,
    /// Step this event belongs to (counted from 1; 0 is the baseline).
    pub step_index: u16,
    /// Whether the step starts or ends here.
    pub kind: StimulusKind,
    /// Short label (`StepStart[2]`).
    pub label: String,
    /// What the step did ("set cpuset of cg0 to 0-3; 2 cgroups, 8 workers").
    pub detail: String,
    /// Work units completed by all workers up to this moment; step throughput is the
    /// difference between a step's end and start.
    pub total_iterations: u64,
    /// True on the last event of the scenario.
    pub is_terminal: bool,
}

/// Kind of a step boundary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StimulusKind {
    /// The step's operations are about to run.
    #[default]
    StepStart,
    /// The step's hold time is over.
    StepEnd,
}
