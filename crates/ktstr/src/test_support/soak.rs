//! Flake rates: `cargo ktstr test --repeat N` runs the suite N times and sums up, per
//! test, passes over runs and every distinct failure signature (a guest kernel oops by
//! its first line and RIP symbol, otherwise the first verdict reason with its numbers
//! masked), retries included, as text and as JSON.

use std::collections::BTreeMap;

use ktstr_sidecar::Outcome;
use serde::Serialize;

use super::suite::Summary;
use crate::runner::RETRY_NOTE;

/// Per-test tally over every round.
#[derive(Debug, Default, Clone, Serialize)]
pub struct TestTally {
    pub runs: u32,
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    pub inconclusive: u32,
    /// Runs that passed or failed only after a retry (known emulator artifact).
    pub retried: u32,
}

/// One distinct failure signature and where it was seen.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Signature {
    pub signature: String,
    /// `true` for the retried artifact (the run was retried, not failed, because of it).
    pub retried: bool,
    pub count: u32,
    /// `{test} (round K)` for every hit.
    pub seen: Vec<String>,
}

/// The whole soak.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Soak {
    pub rounds: u32,
    pub tests: BTreeMap<String, TestTally>,
    pub signatures: Vec<Signature>,
    /// Sidecars listed in a round's manifest that could not be read.
    pub unreadable: Vec<String>,
    /// Rounds whose nextest run exited non-zero.
    pub failed_rounds: Vec<u32>,
}

impl Soak {
    /// Add one round's sidecars (round numbers start at 1).
    pub fn add_round(&mut self, round: u32, summary: &Summary, nextest_ok: bool) {
        self.rounds = self.rounds.max(round);
        if !nextest_ok {
            self.failed_rounds.push(round);
        }
        self.unreadable.extend(summary.unreadable.iter().cloned());
        for r in &summary.ran {
            let s = &r.sidecar;
            let t = self.tests.entry(s.test_name.clone()).or_default();
            t.runs += 1;
            match s.outcome() {
                Outcome::Pass => t.passed += 1,
                Outcome::Fail => t.failed += 1,
                Outcome::Skip => t.skipped += 1,
                Outcome::Inconclusive => t.inconclusive += 1,
            }
            let details = &s.stats.verdict_details;
            let where_ = format!("{} (round {round})", s.test_name);
            if let Some(note) = details.iter().find(|d| d.starts_with(RETRY_NOTE)) {
                t.retried += 1;
                self.note(
                    signature_of(std::slice::from_ref(note)),
                    true,
                    where_.clone(),
                );
            }
            if matches!(s.outcome(), Outcome::Fail | Outcome::Inconclusive) {
                self.note(signature_of(details), false, where_);
            }
        }
    }

    fn note(&mut self, signature: String, retried: bool, seen: String) {
        match self
            .signatures
            .iter_mut()
            .find(|s| s.signature == signature && s.retried == retried)
        {
            Some(s) => {
                s.count += 1;
                s.seen.push(seen);
            }
            None => self.signatures.push(Signature {
                signature,
                retried,
                count: 1,
                seen: vec![seen],
            }),
        }
    }

    pub fn runs(&self) -> u32 {
        self.tests.values().map(|t| t.runs).sum()
    }

    fn sum(&self, f: impl Fn(&TestTally) -> u32) -> u32 {
        self.tests.values().map(f).sum()
    }

    /// Nothing failed, nothing was inconclusive, nothing unreadable, no retries.
    pub fn clean(&self) -> bool {
        self.sum(|t| t.failed + t.inconclusive + t.retried) == 0
            && self.unreadable.is_empty()
            && self.failed_rounds.is_empty()
    }

    /// The report: totals, per-test rates, signatures.
    pub fn render(&self) -> String {
        let mut out = format!(
            "ktstr soak: {} round(s), {} runs: {} passed, {} failed, {} inconclusive, {} skipped, {} retried\n",
            self.rounds,
            self.runs(),
            self.sum(|t| t.passed),
            self.sum(|t| t.failed),
            self.sum(|t| t.inconclusive),
            self.sum(|t| t.skipped),
            self.sum(|t| t.retried),
        );
        let width = self.tests.keys().map(String::len).max().unwrap_or(4);
        for (name, t) in &self.tests {
            let extra = match (t.retried, t.skipped) {
                (0, 0) => String::new(),
                (r, 0) => format!("  ({r} retried)"),
                (0, s) => format!("  ({s} skipped)"),
                (r, s) => format!("  ({r} retried, {s} skipped)"),
            };
            out.push_str(&format!(
                "  {name:<width$}  {}/{} passed{extra}\n",
                t.passed, t.runs
            ));
        }
        if !self.signatures.is_empty() {
            out.push_str("failure signatures:\n");
            let mut sigs = self.signatures.clone();
            sigs.sort_by(|a, b| b.count.cmp(&a.count).then(a.signature.cmp(&b.signature)));
            for s in &sigs {
                out.push_str(&format!(
                    "  {:>3}x {}{}\n        in {}\n",
                    s.count,
                    if s.retried { "[retried] " } else { "" },
                    s.signature,
                    s.seen.join(", ")
                ));
            }
        }
        for r in &self.failed_rounds {
            out.push_str(&format!("round {r}: nextest exited non-zero\n"));
        }
        for u in &self.unreadable {
            out.push_str(&format!("unreadable sidecar: {u}\n"));
        }
        out
    }
}

/// The signature of a failure from its verdict reasons: a guest kernel oops or panic
/// (found in the console excerpt a reason quotes) as its first line plus the RIP symbol,
/// else the first reason's first line with numbers masked, so runs that failed the same
/// way group together.
pub fn signature_of(details: &[String]) -> String {
    let lines = || details.iter().flat_map(|d| d.lines());
    let crash = lines().find_map(|l| {
        ["Oops:", "Kernel panic", "BUG:"]
            .iter()
            .find_map(|k| l.find(k))
            .map(|i| l[i..].trim_end_matches(')').trim())
    });
    if let Some(crash) = crash {
        let rip = lines()
            .find_map(|l| l.split_once("RIP: ").map(|(_, r)| r))
            .map(|r| {
                let r = r.split_once(':').map_or(r, |(_, sym)| sym);
                r.split('+').next().unwrap_or(r).trim().to_string()
            });
        return match rip {
            Some(sym) if !sym.is_empty() => format!("{crash} at {sym}"),
            _ => crash.to_string(),
        };
    }
    let first = details
        .iter()
        .find(|d| !d.starts_with(RETRY_NOTE))
        .or(details.first())
        .and_then(|d| d.lines().next())
        .unwrap_or("(no reason recorded)");
    mask_numbers(first)
}

/// Every run of digits (with its decimal point) becomes `N`.
fn mask_numbers(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_num = false;
    for c in s.chars() {
        let digit = c.is_ascii_digit() || (in_num && c == '.');
        if digit {
            if !in_num {
                out.push('N');
            }
        } else {
            out.push(c);
        }
        in_num = digit;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::suite::Ran;
    use ktstr_sidecar::SidecarResult;

    fn ran(name: &str, outcome: Outcome, details: &[&str]) -> Ran {
        let mut s = SidecarResult::new(name, "1n1l2c1t", "eevdf");
        s.stats.verdict_details = details.iter().map(|d| d.to_string()).collect();
        s.finalize(outcome, false);
        Ran {
            wall_ms: 1,
            path: format!("/r/{name}.ktstr.json").into(),
            sidecar: s,
        }
    }

    const OOPS: &str = "the guest did not finish its run; console (/r/x.console.log):\n[    2.590000] Oops: int3: 0000 [#1] SMP NOPTI\n[    2.591000] CPU: 1 UID: 0 PID: 1 Comm: init\n[    2.592000] RIP: 0010:try_to_wake_up+0x2e5/0x880";

    #[test]
    fn a_kernel_oops_is_known_by_its_first_line_and_rip_symbol() {
        assert_eq!(
            signature_of(&[OOPS.to_string()]),
            "Oops: int3: 0000 [#1] SMP NOPTI at try_to_wake_up"
        );
    }

    #[test]
    fn other_failures_group_by_reason_with_numbers_masked() {
        let a = signature_of(&["spread 73.4 pp over 25 pp in cgroup cg0".into()]);
        let b = signature_of(&["spread 61.0 pp over 25 pp in cgroup cg0".into()]);
        assert_eq!(a, b);
        assert_eq!(a, "spread N pp over N pp in cgroup cgN");
        assert_eq!(signature_of(&[]), "(no reason recorded)");
    }

    #[test]
    fn rounds_add_up_per_test_with_retries_and_signatures() {
        let mut soak = Soak::default();
        let r1 = Summary {
            ran: vec![
                ran("ktstr/a", Outcome::Pass, &["ok"]),
                ran("ktstr/b", Outcome::Fail, &[OOPS]),
            ],
            unreadable: vec![],
        };
        let retry = format!("{RETRY_NOTE}: the guest kernel died on a known multi-threaded TCG artifact (Oops: int3: 0000 [#1] SMP NOPTI)");
        let r2 = Summary {
            ran: vec![
                ran("ktstr/a", Outcome::Pass, &[&retry]),
                ran("ktstr/b", Outcome::Fail, &[OOPS]),
            ],
            unreadable: vec![],
        };
        soak.add_round(1, &r1, false);
        soak.add_round(2, &r2, false);
        assert_eq!(soak.rounds, 2);
        assert_eq!(soak.runs(), 4);
        let a = &soak.tests["ktstr/a"];
        assert_eq!((a.runs, a.passed, a.retried), (2, 2, 1));
        let b = &soak.tests["ktstr/b"];
        assert_eq!((b.runs, b.failed), (2, 2));
        assert!(!soak.clean());
        let failed: Vec<_> = soak.signatures.iter().filter(|s| !s.retried).collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].count, 2);
        assert_eq!(failed[0].seen, ["ktstr/b (round 1)", "ktstr/b (round 2)"]);
        let text = soak.render();
        assert!(
            text.contains("2 round(s), 4 runs: 2 passed, 2 failed"),
            "{text}"
        );
        assert!(text.contains("[retried] Oops: int3"), "{text}");
        let json = serde_json::to_value(&soak).unwrap();
        assert_eq!(json["tests"]["ktstr/b"]["failed"], 2);
    }

    #[test]
    fn an_all_pass_soak_is_clean() {
        let mut soak = Soak::default();
        let r = Summary {
            ran: vec![ran("ktstr/a", Outcome::Pass, &["ok"])],
            unreadable: vec![],
        };
        soak.add_round(1, &r, true);
        assert!(soak.clean());
        assert!(soak.signatures.is_empty());
    }
}
