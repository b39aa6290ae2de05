//! `cargo ktstr perf-delta`: did a commit make things slower? Side A is the runs of
//! `--base`, side B the runs of `--head` (default: the working tree). Cached mode takes
//! the runs already in the pool (run directories are `{kernel}-{commit}`, so only
//! directories naming one of the two commits are read). `--noise-adjust N` runs the
//! suite N times per side first: the base checked out with gix into a temporary
//! directory, the head in place (or checked out too when `--head` is given), every run
//! into its own directory of the shared runs root; then only those runs are compared.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use ktstr_sidecar::{paths, provenance};
use ktstr_stats::compare::{self, FailPolicy, Filter};
use ktstr_stats::revs::{self, Rev};
use ktstr_stats::scan::{self, Source};

use super::stats::{self, FilterArgs, OutputArgs};

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

/// One side: which commit, and whether its runs are dirty-tree runs.
struct Side {
    rev: Rev,
    dirty: bool,
    /// Checked out with gix (true) or the working tree itself (false).
    exported: bool,
}

impl Side {
    fn label(&self) -> String {
        let spec = if self.rev.spec == self.rev.short {
            String::new()
        } else {
            format!("{} = ", self.rev.spec)
        };
        format!(
            "{spec}{}{}",
            self.rev.short,
            if self.dirty { "-dirty" } else { "" }
        )
    }

    /// The `--project-commit` pattern selecting this side's runs.
    fn commit_pattern(&self) -> String {
        if self.dirty {
            format!("{}-dirty", self.rev.full)
        } else {
            self.rev.full.clone()
        }
    }
}

pub fn run(args: PerfDeltaArgs) -> anyhow::Result<i32> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let repo_dir = args.repo.clone().unwrap_or(cwd);
    let repo_root = revs::repo_root(&repo_dir)?;
    let base_rev = revs::resolve(&repo_root, &args.base)?;
    let head = match &args.head {
        Some(h) => Side {
            rev: revs::resolve(&repo_root, h)?,
            dirty: false,
            exported: true,
        },
        None => {
            let rev = revs::resolve(&repo_root, "HEAD")?;
            let dirty =
                provenance::project_commit_at(&repo_root).is_some_and(|c| c.ends_with("-dirty"));
            Side {
                rev: Rev {
                    spec: "working tree".into(),
                    ..rev
                },
                dirty,
                exported: false,
            }
        }
    };
    let base = Side {
        rev: base_rev,
        dirty: false,
        exported: true,
    };
    if base.rev.full == head.rev.full && !head.dirty {
        anyhow::bail!(
            "--base {} and the head are the same commit ({}); pick an older base (e.g. --base HEAD~1) or commit your change first",
            args.base,
            base.rev.short
        );
    }
    let runs_root = absolute(&paths::runs_root())?;
    let shared = args.filters.filter();
    let policy = FailPolicy {
        fail_threshold: args.out.fail_threshold.unwrap_or(1),
        must_fail: args.out.must_fail.clone(),
    };

    match args.noise_adjust {
        None => cached(&args, &base, &head, &runs_root, shared, &policy),
        Some(n) if n < 2 => anyhow::bail!(
            "--noise-adjust {n}: at least 2 runs per side are needed to tell a change from noise"
        ),
        Some(n) => noise_adjusted(
            &args, n, &repo_root, &base, &head, &runs_root, shared, &policy,
        ),
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("reading the current directory")?
        .join(p))
}

fn cached(
    args: &PerfDeltaArgs,
    base: &Side,
    head: &Side,
    runs_root: &Path,
    shared: Filter,
    policy: &FailPolicy,
) -> anyhow::Result<i32> {
    let sides = side_filters(&shared, base, head);
    let explicit_dirs = !args.dirs.is_empty();
    let both = compare::SIDE_A | compare::SIDE_B;
    // The runs root holds one directory per kernel and commit: only the two commits'
    // are read. Explicit --dir pools are read whole.
    let mut sources: Vec<Source> = args
        .dirs
        .iter()
        .map(|d| Source {
            root: d.clone(),
            archive: true,
            mask: both,
            prune: false,
        })
        .collect();
    if runs_root.exists() {
        sources.push(Source {
            root: runs_root.to_path_buf(),
            archive: false,
            mask: both,
            prune: true,
        });
    }
    let wanted = |name: &str| base.rev.mentioned_by_dir(name) || head.rev.mentioned_by_dir(name);
    let listing = scan::list(&sources, Some(&wanted));
    let (code, [na, nb]) = stats::emit(
        &listing,
        sides,
        (
            format!("{} (cached runs)", base.label()),
            format!("{} (cached runs)", head.label()),
        ),
        &args.out,
        policy,
        "ktstr perf-delta",
    )?;
    if na == 0 {
        eprintln!(
            "notice: no runs of base {} under {}{}; run the suite at that commit, or use --noise-adjust N to run both sides now",
            base.label(),
            runs_root.display(),
            if explicit_dirs { " or --dir" } else { "" }
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

fn side_filters(shared: &Filter, base: &Side, head: &Side) -> [Filter; 2] {
    let with = |s: &Side| Filter {
        project_commit: vec![s.commit_pattern()],
        ..shared.clone()
    };
    [with(base), with(head)]
}

#[allow(clippy::too_many_arguments)]
fn noise_adjusted(
    args: &PerfDeltaArgs,
    n: usize,
    repo_root: &Path,
    base: &Side,
    head: &Side,
    runs_root: &Path,
    shared: Filter,
    policy: &FailPolicy,
) -> anyhow::Result<i32> {
    let session = provenance::now_timestamp().replace(['-', ':'], "");
    let scratch = tempfile::Builder::new()
        .prefix("ktstr-perf-delta-")
        .tempdir()
        .context("creating a temporary directory for the checkouts")?;
    // Both sides build in one target directory next to the project's, so the second
    // side and later sessions reuse what the first built.
    let shared_target = std::env::var_os(paths::CARGO_TARGET_DIR_ENV)
        .map(PathBuf::from)
        .or_else(|| paths::cargo_target_dir(repo_root))
        .map(|t| t.join("perf-delta"));
    let mut sources = Vec::new();
    for (tag, side, mask) in [
        ("base", base, compare::SIDE_A),
        ("head", head, compare::SIDE_B),
    ] {
        let tree = if side.exported {
            let dest = scratch.path().join(format!("{tag}-{}", side.rev.short));
            let t0 = Instant::now();
            let ex = revs::export_tree(repo_root, &side.rev, &dest)?;
            eprintln!(
                "[{tag} {}] checked out {} files ({} KiB) into {} in {:.1} s",
                side.rev.short,
                ex.files,
                ex.bytes / 1024,
                dest.display(),
                t0.elapsed().as_secs_f64()
            );
            dest
        } else {
            repo_root.to_path_buf()
        };
        for i in 0..n {
            let dir = runs_root.join(format!(
                "perf-delta-{}{}-{session}-{tag}{i}",
                side.rev.short,
                if side.dirty { "-dirty" } else { "" }
            ));
            run_suite(
                args,
                side,
                tag,
                &tree,
                &dir,
                runs_root,
                shared_target.as_deref(),
                i,
                n,
            )?;
            sources.push(Source {
                root: dir,
                archive: false,
                mask,
                prune: false,
            });
        }
    }
    if args.keep_worktrees {
        let kept = scratch.keep();
        eprintln!("kept the checkouts in {}", kept.display());
    }
    let listing = scan::list(&sources, None);
    let label = |s: &Side| format!("{} ({n} fresh runs)", s.label());
    // The directories decide the sides; only the shared filters apply.
    let (code, _) = stats::emit(
        &listing,
        [shared.clone(), shared],
        (label(base), label(head)),
        &args.out,
        policy,
        "ktstr perf-delta",
    )?;
    Ok(code)
}

#[allow(clippy::too_many_arguments)]
fn run_suite(
    args: &PerfDeltaArgs,
    side: &Side,
    tag: &str,
    tree: &Path,
    sidecar_dir: &Path,
    runs_root: &Path,
    shared_target: Option<&Path>,
    i: usize,
    n: usize,
) -> anyhow::Result<()> {
    let mut cmd = match &args.test_cmd {
        Some(c) => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(c);
            cmd
        }
        None => {
            let mut cmd = Command::new("cargo");
            cmd.args(["nextest", "run", "--no-fail-fast"])
                .args(&args.nextest_args);
            cmd
        }
    };
    cmd.current_dir(tree)
        .env(paths::RUNS_ROOT_ENV, runs_root)
        .env(paths::SIDECAR_DIR_ENV, sidecar_dir)
        .env("KTSTR_PERF_DELTA_RUN", i.to_string());
    if side.exported {
        // A checkout has no .git: the commit is named explicitly.
        cmd.env(provenance::PROJECT_COMMIT_ENV, &side.rev.short);
        if let Some(t) = shared_target {
            cmd.env(paths::CARGO_TARGET_DIR_ENV, t);
        }
    }
    let shown = match &args.test_cmd {
        Some(c) => c.clone(),
        None => format!(
            "cargo nextest run --no-fail-fast {}",
            args.nextest_args.join(" ")
        ),
    };
    eprintln!(
        "[{tag} {}] run {}/{n}: {}",
        side.rev.short,
        i + 1,
        shown.trim_end()
    );
    let t0 = Instant::now();
    let status = cmd.status().with_context(|| {
        format!(
            "starting `{}` in {}{}",
            shown.trim_end(),
            tree.display(),
            if args.test_cmd.is_none() {
                " (is cargo-nextest installed? `cargo install cargo-nextest`, or pass --test-cmd)"
            } else {
                ""
            }
        )
    })?;
    let secs = t0.elapsed().as_secs_f64();
    if status.success() {
        eprintln!(
            "[{tag} {}] run {}/{n}: ok in {secs:.1} s",
            side.rev.short,
            i + 1
        );
    } else {
        // Failing tests still leave sidecars (failed runs stay out of the numbers).
        eprintln!(
            "[{tag} {}] run {}/{n}: exited with {status} after {secs:.1} s; failed tests are left out of the comparison",
            side.rev.short,
            i + 1
        );
    }
    Ok(())
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
