//! `cargo ktstr perf-delta`: did a commit make things slower? Side A is the runs of
//! `--base`, side B the runs of `--head` (default: the working tree): the runs already
//! in the pool, or with `--noise-adjust N` the suite run N times per side now. The logic
//! lives in `ktstr_stats::perf_delta`; this module parses and prints.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ktstr_stats::compare::{self, FailPolicy, Filter};
use ktstr_stats::perf_delta::{self, Sides, Suite};

use super::comparison::{self, FilterArgs, OutputArgs};

#[derive(Args, Debug)]
pub struct PerfDeltaArgs {
    /// Baseline revision (branch, tag, commit, `HEAD~3`).
    #[arg(long, value_name = "REV")]
    base: String,
    /// Candidate revision; default: the working tree (HEAD, `-dirty` when it has changes).
    #[arg(long, value_name = "REV")]
    head: Option<String>,
    /// The git repository (default: the one around the current directory).
    #[arg(long, value_name = "DIR")]
    repo: Option<PathBuf>,
    /// Extra pools to take runs from (repeatable; read as archive).
    #[arg(long = "dir", value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Run each side's suite N times (N >= 2) and compare those runs only.
    #[arg(long = "noise-adjust", value_name = "N")]
    noise_adjust: Option<usize>,
    /// With --noise-adjust: the command to run per side and run instead of
    /// `cargo nextest run --no-fail-fast [ARGS]` (run by `sh -c` in the side's tree).
    #[arg(long = "test-cmd", value_name = "CMD")]
    test_cmd: Option<String>,
    /// With --noise-adjust: keep the temporary checkouts (their paths are printed).
    #[arg(long = "keep-worktrees")]
    keep_worktrees: bool,
    #[command(flatten)]
    filters: FilterArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// Arguments for `cargo nextest run` (after `--`), e.g. `-- -E 'test(/perf/)'`.
    #[arg(last = true, value_name = "NEXTEST_ARGS")]
    nextest_args: Vec<String>,
}

pub fn run(args: PerfDeltaArgs) -> anyhow::Result<i32> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let repo_dir = args.repo.clone().unwrap_or(cwd);
    let sides = Sides::resolve(&repo_dir, &args.base, args.head.as_deref())?;
    let runs_root = perf_delta::absolute_runs_root()?;
    let shared = args.filters.filter();
    let policy = FailPolicy {
        fail_threshold: args.out.fail_threshold.unwrap_or(1),
        must_fail: args.out.must_fail.clone(),
    };
    match args.noise_adjust {
        None => cached(&args, &sides, &runs_root, &shared, &policy),
        Some(n) => fresh(&args, n, &sides, &runs_root, shared, &policy),
    }
}

/// Compare the runs already in the pool.
fn cached(
    args: &PerfDeltaArgs,
    sides: &Sides,
    runs_root: &std::path::Path,
    shared: &Filter,
    policy: &FailPolicy,
) -> anyhow::Result<i32> {
    let listing = perf_delta::cached_listing(sides, &args.dirs, runs_root);
    let (base, head) = (&sides.base, &sides.head);
    let compared = compare::run(
        &listing,
        perf_delta::side_filters(shared, sides),
        (
            format!("{} (cached runs)", base.label()),
            format!("{} (cached runs)", head.label()),
        ),
        args.out.threads,
        args.out.judge_options(),
        policy,
    );
    let code = comparison::print(&compared, &args.out, "ktstr perf-delta")?;
    let [na, nb] = compared.selected;
    if na == 0 {
        eprintln!(
            "notice: no runs of base {} under {}{}; run the suite at that commit, or use --noise-adjust N to run both sides now",
            base.label(),
            runs_root.display(),
            if args.dirs.is_empty() { "" } else { " or --dir" }
        );
    }
    if nb == 0 {
        eprintln!(
            "notice: no runs of head {}; run the suite first (cargo ktstr test / cargo nextest run)",
            head.label()
        );
    }
    Ok(code)
}

/// Run the suite `n` times per side, then compare those runs only.
fn fresh(
    args: &PerfDeltaArgs,
    n: usize,
    sides: &Sides,
    runs_root: &std::path::Path,
    shared: Filter,
    policy: &FailPolicy,
) -> anyhow::Result<i32> {
    let suite = Suite {
        test_cmd: args.test_cmd.clone(),
        nextest_args: args.nextest_args.clone(),
        keep_worktrees: args.keep_worktrees,
    };
    let listing =
        perf_delta::run_fresh(sides, n, &suite, runs_root, &mut |line| eprintln!("{line}"))?;
    let label = |s: &perf_delta::Side| format!("{} ({n} fresh runs)", s.label());
    // The directories decide the sides; only the shared filters apply.
    let compared = compare::run(
        &listing,
        [shared.clone(), shared],
        (label(&sides.base), label(&sides.head)),
        args.out.threads,
        args.out.judge_options(),
        policy,
    );
    comparison::print(&compared, &args.out, "ktstr perf-delta")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Command, FromArgMatches};

    #[test]
    fn arguments_parse() {
        let cmd = PerfDeltaArgs::augment_args(Command::new("perf-delta"));
        cmd.clone().debug_assert();
        let m = cmd
            .try_get_matches_from([
                "perf-delta",
                "--base",
                "main",
                "--noise-adjust",
                "3",
                "--fail-threshold",
                "2",
                "--",
                "-E",
                "test(/perf/)",
            ])
            .expect("parses");
        let a = PerfDeltaArgs::from_arg_matches(&m).expect("args");
        assert_eq!(a.base, "main");
        assert_eq!(a.head, None);
        assert_eq!(a.noise_adjust, Some(3));
        assert_eq!(a.out.fail_threshold, Some(2));
        assert_eq!(a.nextest_args, ["-E", "test(/perf/)"]);
    }
}
