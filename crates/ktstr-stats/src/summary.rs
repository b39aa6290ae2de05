//! Tables over a pool: one row per run directory (`stats list`) or per sidecar
//! (`stats show`), as values for `--json` and as aligned text.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use crate::format::table;
use ktstr_sidecar::read::{LoadedSidecar, Pool};
use ktstr_sidecar::verdict::Outcome;

/// One run directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub dir: PathBuf,
    /// Good sidecars.
    pub count: usize,
    /// Sidecar files that could not be read.
    pub bad_files: usize,
    /// Earliest `timestamp` of its sidecars.
    pub date: Option<String>,
    /// Distinct `kernel_version`s, comma-separated.
    pub kernel: Option<String>,
    /// Distinct `project_commit`s, comma-separated.
    pub project_commit: Option<String>,
    pub pass: usize,
    pub fail: usize,
    pub skip: usize,
    pub inconclusive: usize,
}

/// Summaries of every run of the pool, oldest first (runs without a date last).
pub fn summarize_runs(pool: &Pool) -> Vec<RunSummary> {
    let mut rows: Vec<RunSummary> = pool
        .runs
        .iter()
        .map(|run| {
            let sc = || run.sidecars.iter().map(|l| &l.sidecar);
            let count_of = |o: Outcome| sc().filter(|s| s.outcome() == o).count();
            RunSummary {
                dir: run.path.clone(),
                count: run.sidecars.len(),
                bad_files: run.bad_files,
                date: sc()
                    .map(|s| s.timestamp.clone())
                    .filter(|t| !t.is_empty())
                    .min(),
                kernel: distinct(sc().map(|s| s.kernel_version.clone())),
                project_commit: distinct(sc().map(|s| s.project_commit.clone())),
                pass: count_of(Outcome::Pass),
                fail: count_of(Outcome::Fail),
                skip: count_of(Outcome::Skip),
                inconclusive: count_of(Outcome::Inconclusive),
            }
        })
        .collect();
    sort_runs(&mut rows);
    rows
}

/// Oldest run first, runs without a date last; ties by directory.
pub(crate) fn sort_runs(rows: &mut [RunSummary]) {
    rows.sort_by(|a, b| match (&a.date, &b.date) {
        (Some(x), Some(y)) => x.cmp(y).then_with(|| a.dir.cmp(&b.dir)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.dir.cmp(&b.dir),
    });
}

fn distinct(values: impl Iterator<Item = Option<String>>) -> Option<String> {
    let set: BTreeSet<String> = values.flatten().collect();
    (!set.is_empty()).then(|| set.into_iter().collect::<Vec<_>>().join(","))
}

/// `stats list` as text.
pub fn render_runs(rows: &[RunSummary]) -> String {
    let header = [
        "RUN", "TESTS", "DATE", "KERNEL", "COMMIT", "PASS", "FAIL", "SKIP", "INCONCL", "BAD",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.dir.display().to_string(),
                r.count.to_string(),
                r.date.clone().unwrap_or_else(|| "-".into()),
                r.kernel.clone().unwrap_or_else(|| "-".into()),
                r.project_commit.clone().unwrap_or_else(|| "-".into()),
                r.pass.to_string(),
                r.fail.to_string(),
                r.skip.to_string(),
                r.inconclusive.to_string(),
                r.bad_files.to_string(),
            ]
        })
        .collect();
    table(&header, &body, &[])
}

/// One sidecar, condensed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestRow {
    pub file: PathBuf,
    pub test_name: String,
    pub outcome: Outcome,
    pub expected_failure: bool,
    pub topology: String,
    pub scheduler: String,
    pub work_type: String,
    pub vcpus: u32,
    pub cpu_budget: u32,
    /// Work units of all workers.
    pub iterations: u64,
    pub worst_gap_ms: u64,
    /// Percentage points.
    pub worst_spread: Option<f64>,
    pub migrations: u64,
    pub monitor_samples: Option<usize>,
    pub max_imbalance_ratio: Option<f64>,
    /// Stuck (CPU, sample interval) observations.
    pub stuck_samples: Option<usize>,
    /// Mean KVM exits per vCPU.
    pub kvm_exits_per_vcpu: Option<f64>,
    /// Times the host preempted a vCPU (timing is unreliable when > 0).
    pub kvm_preemptions: Option<u64>,
    pub cleanup_duration_ms: Option<u64>,
    /// First line of `stats.verdict_details`.
    pub detail: Option<String>,
}

impl TestRow {
    pub fn from_loaded(l: &LoadedSidecar) -> TestRow {
        let s = &l.sidecar;
        let kvm = s.kvm_stats.as_ref();
        TestRow {
            file: l.path.clone(),
            test_name: s.test_name.clone(),
            outcome: s.outcome(),
            expected_failure: s.expected_failure,
            topology: s.topology.clone(),
            scheduler: s.scheduler.clone(),
            work_type: s.work_type.clone(),
            vcpus: s.vcpus,
            cpu_budget: s.cpu_budget,
            iterations: s.stats.total_iterations,
            worst_gap_ms: s.stats.worst_gap_ms,
            worst_spread: s
                .stats
                .cgroups
                .iter()
                .any(|c| c.spread.is_some())
                .then_some(s.stats.worst_spread),
            migrations: s.stats.total_migrations,
            monitor_samples: s.monitor.as_ref().map(|m| m.total_samples),
            max_imbalance_ratio: s.monitor.as_ref().map(|m| m.max_imbalance_ratio),
            stuck_samples: s.monitor.as_ref().map(|m| m.stuck_count),
            kvm_exits_per_vcpu: kvm.and_then(|k| k.avg("exits")),
            kvm_preemptions: kvm.and_then(|k| k.sum("preemption_reported")),
            cleanup_duration_ms: s.cleanup_duration_ms,
            detail: s.stats.verdict_details.first().cloned(),
        }
    }
}

/// Rows of every sidecar of the pool, by run directory then file name.
pub fn test_rows(pool: &Pool) -> Vec<TestRow> {
    pool.sidecars().map(TestRow::from_loaded).collect()
}

/// `stats show` as text: the table, then the first verdict detail of every test that
/// has one.
pub fn render_tests(rows: &[TestRow]) -> String {
    let header = [
        "TEST",
        "VERDICT",
        "TOPOLOGY",
        "SCHEDULER",
        "VCPU/BUDGET",
        "ITERS",
        "GAP_MS",
        "SPREAD",
        "MIGR",
        "SAMPLES",
        "IMBAL",
        "STUCK",
        "EXITS/VCPU",
        "PREEMPT",
        "CLEANUP_MS",
    ];
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let verdict = if r.expected_failure {
                format!("{} (xfail)", r.outcome)
            } else {
                r.outcome.to_string()
            };
            vec![
                r.test_name.clone(),
                verdict,
                r.topology.clone(),
                r.scheduler.clone(),
                format!("{}/{}", r.vcpus, r.cpu_budget),
                r.iterations.to_string(),
                r.worst_gap_ms.to_string(),
                opt(r.worst_spread.map(|v| format!("{v:.1}"))),
                r.migrations.to_string(),
                opt(r.monitor_samples.map(|v| v.to_string())),
                opt(r.max_imbalance_ratio.map(|v| format!("{v:.2}"))),
                opt(r.stuck_samples.map(|v| v.to_string())),
                opt(r.kvm_exits_per_vcpu.map(|v| format!("{v:.0}"))),
                opt(r.kvm_preemptions.map(|v| v.to_string())),
                opt(r.cleanup_duration_ms.map(|v| v.to_string())),
            ]
        })
        .collect();
    let mut out = table(&header, &body, &[]);
    for r in rows {
        if let Some(d) = &r.detail {
            out.push_str(&format!("{}: {d}\n", r.test_name));
        }
    }
    if rows
        .iter()
        .any(|r| r.kvm_preemptions.is_some_and(|p| p > 0))
    {
        out.push_str(
            "note: the host preempted vCPUs (PREEMPT > 0): timing results may be unreliable\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_sidecar::kvm::KvmStatsTotals;
    use ktstr_sidecar::read::{LoadedSidecar, RunDir};
    use ktstr_sidecar::sidecar::SidecarResult;

    fn loaded(name: &str, o: Outcome, ts: &str, kernel: Option<&str>) -> LoadedSidecar {
        let mut s = SidecarResult::new(name, "1n1l2c1t", "eevdf");
        s.set_outcome(o);
        s.timestamp = ts.into();
        s.kernel_version = kernel.map(str::to_string);
        LoadedSidecar {
            path: PathBuf::from(format!("/r/{name}.ktstr.json")),
            sidecar: s,
        }
    }

    #[test]
    fn run_summary_counts_and_orders() {
        let pool = Pool {
            runs: vec![
                RunDir {
                    path: "/r/b".into(),
                    sidecars: vec![
                        loaded("a", Outcome::Pass, "2026-02-01T00:00:00Z", Some("7.2")),
                        loaded("b", Outcome::Fail, "2026-01-31T00:00:00Z", Some("7.1")),
                        loaded("c", Outcome::Skip, "2026-02-02T00:00:00Z", None),
                        loaded(
                            "d",
                            Outcome::Inconclusive,
                            "2026-02-03T00:00:00Z",
                            Some("7.2"),
                        ),
                    ],
                    bad_files: 1,
                },
                RunDir {
                    path: "/r/a".into(),
                    sidecars: vec![loaded("x", Outcome::Pass, "2026-01-01T00:00:00Z", None)],
                    bad_files: 0,
                },
                RunDir {
                    path: "/r/0".into(),
                    sidecars: vec![],
                    bad_files: 2,
                },
            ],
            errors: vec![],
        };
        let rows = summarize_runs(&pool);
        let dirs: Vec<_> = rows
            .iter()
            .map(|r| r.dir.to_string_lossy().into_owned())
            .collect();
        assert_eq!(dirs, ["/r/a", "/r/b", "/r/0"]);
        let b = &rows[1];
        assert_eq!((b.pass, b.fail, b.skip, b.inconclusive), (1, 1, 1, 1));
        assert_eq!((b.count, b.bad_files), (4, 1));
        assert_eq!(b.date.as_deref(), Some("2026-01-31T00:00:00Z"));
        assert_eq!(b.kernel.as_deref(), Some("7.1,7.2"));
        assert_eq!(rows[0].kernel, None);
        let text = render_runs(&rows);
        assert_eq!(text.lines().count(), 4);
        assert!(text
            .lines()
            .nth(2)
            .is_some_and(|l| l.starts_with("/r/b  4")));
        assert!(text.lines().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn test_rows_carry_key_numbers() {
        let mut l = loaded("t", Outcome::Fail, "2026-01-01T00:00:00Z", None);
        l.sidecar.stats.total_iterations = 77;
        l.sidecar
            .stats
            .verdict_details
            .push("cg0: worker stuck for 3000 ms".into());
        l.sidecar.kvm_stats = Some(KvmStatsTotals {
            per_vcpu: vec![
                [
                    ("exits".to_string(), 10),
                    ("preemption_reported".to_string(), 1),
                ]
                .into(),
                [("exits".to_string(), 30)].into(),
            ],
        });
        l.sidecar.cleanup_duration_ms = Some(42);
        let row = TestRow::from_loaded(&l);
        assert_eq!(row.iterations, 77);
        assert_eq!(row.kvm_exits_per_vcpu, Some(20.0));
        assert_eq!(row.kvm_preemptions, Some(1));
        assert_eq!(row.monitor_samples, None);
        let text = render_tests(&[row]);
        assert!(text.contains("t: cg0: worker stuck"));
        assert!(text.contains("timing results may be unreliable"));
        let data = text.lines().nth(1).expect("row");
        assert!(data.contains("fail") && data.contains("77") && data.contains("42"));
    }
}
