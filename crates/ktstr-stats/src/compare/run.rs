//! One whole comparison, as `cargo ktstr stats compare` and `cargo ktstr perf-delta` both
//! run it: read and pair a listing, judge every pair, apply the fail policy; plus the
//! JSON document both commands print.

use serde_json::{json, Value};

use super::{judge, pair_listing, Comparison, FailPolicy, Filter, GateOutcome, JudgeOptions};
use crate::scan::Listing;

/// A finished comparison.
#[derive(Debug)]
pub struct Compared {
    pub comparison: Comparison,
    pub gate: GateOutcome,
    /// Files read.
    pub files: usize,
    /// Sidecars selected by side A and side B.
    pub selected: [usize; 2],
    /// What could not be read, one message each: the listing's directories, then its
    /// files.
    pub unreadable: Vec<String>,
}

impl Compared {
    /// The exit code the fail policy asks for: 1 when it failed, else 0.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.gate.failed)
    }

    /// The document `--json` prints: both labels, how many files were read and
    /// selected, the comparison, the gate and the unreadable files.
    pub fn to_json(&self) -> Value {
        json!({
            "a": self.comparison.a_label,
            "b": self.comparison.b_label,
            "files_read": self.files,
            "selected": { "a": self.selected[0], "b": self.selected[1] },
            "comparison": self.comparison,
            "gate": self.gate,
            "errors": self.unreadable,
        })
    }
}

/// Pair the files of `listing` that `sides` select (read by `threads` threads, 0 = all
/// CPUs), judge them, label the sides and apply `policy`.
pub fn run(
    listing: &Listing,
    sides: [Filter; 2],
    labels: (String, String),
    threads: usize,
    opts: JudgeOptions,
    policy: &FailPolicy,
) -> Compared {
    let pairing = pair_listing(listing, &sides, threads, opts);
    let mut comparison = judge(&pairing, opts);
    comparison.a_label = labels.0;
    comparison.b_label = labels.1;
    let gate = policy.check(&comparison);
    let unreadable = listing
        .errors
        .iter()
        .chain(&pairing.errors)
        .map(ToString::to_string)
        .collect();
    Compared {
        comparison,
        gate,
        files: pairing.files,
        selected: pairing.selected,
        unreadable,
    }
}
