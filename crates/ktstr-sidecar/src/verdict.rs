//! Verdicts: the four outcomes, how they merge, how they are stored in a sidecar's
//! bits, how `expect_err` inverts them, and the process exit code they project to.
//!
//! | outcome      | `passed` | `skipped` | `inconclusive` | exit code |
//! |--------------|----------|-----------|----------------|-----------|
//! | Pass         | true     | false     | false          | 0         |
//! | Skip         | false    | true      | false          | 0         |
//! | Fail         | false    | false     | false          | 1         |
//! | Inconclusive | false    | false     | true           | 2         |

use std::fmt;

use serde::{Deserialize, Serialize};

/// The verdict of one check or of a whole run.
///
/// Variants are declared in merge order, weakest first, so `Ord` is the merge lattice:
/// Fail > Inconclusive > Pass > Skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing was judged (host cannot run it, or every check skipped).
    Skip,
    /// At least one real check ran and every check passed.
    Pass,
    /// A check could not decide (e.g. zero samples under a ratio gate).
    Inconclusive,
    /// A check failed.
    Fail,
}

impl Outcome {
    /// Combine two outcomes: the stronger one wins (Fail > Inconclusive > Pass > Skip).
    pub fn merge(self, other: Outcome) -> Outcome {
        self.max(other)
    }

    /// Merge many outcomes. Skip is the identity, so an empty list is Skip: a Pass needs
    /// at least one real check, and an all-skip run is Skip.
    pub fn merge_all<I: IntoIterator<Item = Outcome>>(outcomes: I) -> Outcome {
        outcomes.into_iter().fold(Outcome::Skip, Outcome::merge)
    }

    /// The sidecar bits of this outcome.
    pub fn bits(self) -> VerdictBits {
        VerdictBits {
            passed: self == Outcome::Pass,
            skipped: self == Outcome::Skip,
            inconclusive: self == Outcome::Inconclusive,
        }
    }

    /// Process exit code: 0 pass or skip, 1 fail, 2 inconclusive.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Pass | Outcome::Skip => 0,
            Outcome::Fail => 1,
            Outcome::Inconclusive => 2,
        }
    }

    /// Lower-case name, as printed by `cargo ktstr stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Skip => "skip",
            Outcome::Pass => "pass",
            Outcome::Inconclusive => "inconclusive",
            Outcome::Fail => "fail",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three verdict keys of a sidecar. At most one is true; all false means Fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerdictBits {
    pub passed: bool,
    pub skipped: bool,
    pub inconclusive: bool,
}

impl VerdictBits {
    /// The outcome these bits encode; None when more than one bit is set.
    pub fn outcome(self) -> Option<Outcome> {
        match (self.passed, self.skipped, self.inconclusive) {
            (false, false, false) => Some(Outcome::Fail),
            (true, false, false) => Some(Outcome::Pass),
            (false, true, false) => Some(Outcome::Skip),
            (false, false, true) => Some(Outcome::Inconclusive),
            _ => None,
        }
    }

    /// Names of the bits that are set (for error messages).
    pub fn set_names(self) -> Vec<&'static str> {
        [
            (self.passed, "passed"),
            (self.skipped, "skipped"),
            (self.inconclusive, "inconclusive"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// The final verdict of a run after `expect_err` was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finalized {
    /// What the run reports (sidecar bits and exit code).
    pub outcome: Outcome,
    /// The raw run failed and `expect_err` turned that into a pass. perf-delta leaves
    /// such runs out of its comparisons.
    pub expected_failure: bool,
    /// Why the verdict was inverted, when it was.
    pub note: Option<&'static str>,
}

/// Apply `expect_err` to the raw outcome of a run.
///
/// With `expect_err`: Fail becomes Pass (and `expected_failure`), Pass and Inconclusive
/// become Fail (the expected error did not happen), Skip stays Skip (nothing ran).
pub fn finalize(raw: Outcome, expect_err: bool) -> Finalized {
    if !expect_err {
        return Finalized {
            outcome: raw,
            expected_failure: false,
            note: None,
        };
    }
    match raw {
        Outcome::Fail => Finalized {
            outcome: Outcome::Pass,
            expected_failure: true,
            note: Some("expect_err: the run failed as the test expects; verdict inverted to pass"),
        },
        Outcome::Pass => Finalized {
            outcome: Outcome::Fail,
            expected_failure: false,
            note: Some("expect_err: the test expects an error, but the run passed"),
        },
        Outcome::Inconclusive => Finalized {
            outcome: Outcome::Fail,
            expected_failure: false,
            note: Some("expect_err: the test expects an error, but the run was inconclusive"),
        },
        Outcome::Skip => Finalized {
            outcome: Outcome::Skip,
            expected_failure: false,
            note: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    const ALL: [Outcome; 4] = [Skip, Pass, Inconclusive, Fail];

    #[test]
    fn merge_table_every_cell() {
        // Row = left operand, column = right operand, in the order of ALL.
        let table = [
            [Skip, Pass, Inconclusive, Fail],
            [Pass, Pass, Inconclusive, Fail],
            [Inconclusive, Inconclusive, Inconclusive, Fail],
            [Fail, Fail, Fail, Fail],
        ];
        for (i, &a) in ALL.iter().enumerate() {
            for (j, &b) in ALL.iter().enumerate() {
                assert_eq!(a.merge(b), table[i][j], "{a} merge {b}");
            }
        }
    }

    #[test]
    fn merge_all_identity_is_skip() {
        assert_eq!(Outcome::merge_all([]), Skip);
        assert_eq!(Outcome::merge_all([Skip, Skip]), Skip);
        assert_eq!(Outcome::merge_all([Skip, Pass, Skip]), Pass);
        assert_eq!(Outcome::merge_all([Pass, Inconclusive, Pass]), Inconclusive);
        assert_eq!(Outcome::merge_all([Inconclusive, Fail, Skip]), Fail);
    }

    #[test]
    fn bits_round_trip_and_exit_codes() {
        for o in ALL {
            let b = o.bits();
            let set = [b.passed, b.skipped, b.inconclusive]
                .iter()
                .filter(|&&x| x)
                .count();
            assert!(set <= 1, "{o}: at most one bit");
            assert_eq!(b.outcome(), Some(o));
        }
        assert_eq!(Fail.bits(), VerdictBits::default());
        assert_eq!(
            [Pass, Skip, Fail, Inconclusive].map(Outcome::exit_code),
            [0, 0, 1, 2]
        );
    }

    #[test]
    fn conflicting_bits_have_no_outcome() {
        let b = VerdictBits {
            passed: true,
            skipped: true,
            inconclusive: false,
        };
        assert_eq!(b.outcome(), None);
        assert_eq!(b.set_names(), ["passed", "skipped"]);
        let all = VerdictBits {
            passed: true,
            skipped: true,
            inconclusive: true,
        };
        assert_eq!(all.outcome(), None);
    }

    #[test]
    fn finalize_without_expect_err_is_identity() {
        for o in ALL {
            let f = finalize(o, false);
            assert_eq!(f.outcome, o);
            assert!(!f.expected_failure);
            assert_eq!(f.note, None);
        }
    }

    #[test]
    fn finalize_with_expect_err_inverts() {
        let f = finalize(Fail, true);
        assert_eq!((f.outcome, f.expected_failure), (Pass, true));
        assert!(f.note.is_some());

        let f = finalize(Pass, true);
        assert_eq!((f.outcome, f.expected_failure), (Fail, false));
        assert!(f.note.is_some_and(|n| n.contains("passed")));

        let f = finalize(Inconclusive, true);
        assert_eq!((f.outcome, f.expected_failure), (Fail, false));
        assert!(f.note.is_some_and(|n| n.contains("inconclusive")));

        let f = finalize(Skip, true);
        assert_eq!((f.outcome, f.expected_failure), (Skip, false));
        assert_eq!(f.note, None);
    }
}
