//! `stimulus_events`: the moments the scenario changed something, so numbers over time
//! can be lined up with what caused them. Shape and key order are the reference's
//! `StimulusEvent`.

use serde::{Deserialize, Serialize};

/// One scenario step boundary, or the end of the scenario.
///
/// A step `k` (counted from 1) starts with `StepStart[k-1]` and ends with
/// `StepEnd[k-1]` (`is_step_end`); the scenario's end is one `ScenarioEnd` event with
/// `is_terminal`, no `op_kind`, `detail` or `step_index`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StimulusEvent {
    /// Milliseconds since the scenario started.
    pub elapsed_ms: u64,
    /// `StepStart[i]`, `StepEnd[i]` (i = 0-based step ordinal) or `ScenarioEnd`.
    pub label: String,
    /// `ops=N`: how many operations the step ran; null on the terminal event.
    pub op_kind: Option<String>,
    /// What the step did ("shrink: 1 ops [set_cpuset]; 2 cgroups, 8 workers").
    pub detail: Option<String>,
    /// Work units completed by all workers up to this moment; step throughput is the
    /// difference between a step's end and start.
    pub total_iterations: Option<u64>,
    /// Step this event belongs to (counted from 1); null on the terminal event.
    pub step_index: Option<u16>,
    /// True only on the `ScenarioEnd` event.
    pub is_terminal: bool,
    /// True on a step's end, false on its start.
    pub is_step_end: bool,
}
