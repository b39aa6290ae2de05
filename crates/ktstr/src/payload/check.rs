//! The checks a test declares on a payload's results: exit codes and metric bounds.
//! [`crate::assert::payload`] judges them on the host, with the value in every failure
//! reason.

use serde::{Deserialize, Serialize};

/// A condition a payload's results must meet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Check {
    ExitCode(i32),
    Exists { metric: String },
    Min { metric: String, min: f64 },
    Max { metric: String, max: f64 },
    Range { metric: String, min: f64, max: f64 },
}
