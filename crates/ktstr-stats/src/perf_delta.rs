//! `cargo ktstr perf-delta`: did a commit make things slower? Side A is the runs of the
//! base commit, side B the runs of the head (default: the working tree).
//!
//! - Cached runs ([`cached_listing`]): the runs already in the pool. Run directories are
//!   `{kernel}-{commit}`, so only directories naming one of the two commits are read,
//!   and each side takes the runs of its commit ([`side_filters`]).
//! - Fresh runs ([`run_fresh`]): the suite N times per side first, the base checked out
//!   with gix into a temporary directory, the head in place (or checked out too when it
//!   is a named revision), every run into its own directory of the shared runs root;
//!   then only those runs are compared, the directories deciding the sides.
//!
//! Either listing then goes through [`crate::compare::run`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ktstr_sidecar::{paths, provenance};

use crate::compare::{Filter, SIDE_A, SIDE_B};
use crate::revs::{self, GitError, Rev};
use crate::scan::{self, Listing, Source};

/// Why perf-delta could not compare.
#[derive(Debug, thiserror::Error)]
pub enum PerfDeltaError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("--base {base} and the head are the same commit ({short}); pick an older base (e.g. --base HEAD~1) or commit your change first")]
    SameCommit { base: String, short: String },
    #[error("--noise-adjust {0}: at least 2 runs per side are needed to tell a change from noise")]
    TooFewRuns(usize),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// One side: which commit, and whether its runs are dirty-tree runs.
#[derive(Debug, Clone)]
pub struct Side {
    pub rev: Rev,
    pub dirty: bool,
    /// Checked out with gix (true) or the working tree itself (false).
    pub exported: bool,
}

impl Side {
    /// `main = abc1234`, `working tree = abc1234-dirty`, or just `abc1234`.
    pub fn label(&self) -> String {
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
    pub fn commit_pattern(&self) -> String {
        if self.dirty {
            format!("{}-dirty", self.rev.full)
        } else {
            self.rev.full.clone()
        }
    }
}

/// The repository and the two commits compared.
#[derive(Debug, Clone)]
pub struct Sides {
    pub repo_root: PathBuf,
    pub base: Side,
    pub head: Side,
}

impl Sides {
    /// Resolve `base` and `head` (None: the working tree, dirty when it has changes) in
    /// the repository around `repo_dir`. The two must differ.
    pub fn resolve(
        repo_dir: &Path,
        base: &str,
        head: Option<&str>,
    ) -> Result<Sides, PerfDeltaError> {
        let repo_root = revs::repo_root(repo_dir)?;
        let base_rev = revs::resolve(&repo_root, base)?;
        let head_side = match head {
            Some(h) => Side {
                rev: revs::resolve(&repo_root, h)?,
                dirty: false,
                exported: true,
            },
            None => {
                let rev = revs::resolve(&repo_root, "HEAD")?;
                let dirty = provenance::project_commit_at(&repo_root)
                    .is_some_and(|c| c.ends_with("-dirty"));
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
        let base_side = Side {
            rev: base_rev,
            dirty: false,
            exported: true,
        };
        if base_side.rev.full == head_side.rev.full && !head_side.dirty {
            return Err(PerfDeltaError::SameCommit {
                base: base.to_string(),
                short: base_side.rev.short.clone(),
            });
        }
        Ok(Sides {
            repo_root,
            base: base_side,
            head: head_side,
        })
    }
}

/// The runs root ([`paths::runs_root`]) as an absolute path: fresh runs are started in
/// other directories.
pub fn absolute_runs_root() -> Result<PathBuf, PerfDeltaError> {
    let root = paths::runs_root();
    if root.is_absolute() {
        return Ok(root);
    }
    let cwd = std::env::current_dir().map_err(|source| PerfDeltaError::Io {
        what: "reading the current directory".into(),
        source,
    })?;
    Ok(cwd.join(root))
}

/// Cached runs: every file of the extra pools `dirs` (read as archive), and of the runs
/// root only the directories naming one of the two commits.
pub fn cached_listing(sides: &Sides, dirs: &[PathBuf], runs_root: &Path) -> Listing {
    let both = SIDE_A | SIDE_B;
    let mut sources: Vec<Source> = dirs
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
    let wanted =
        |name: &str| sides.base.rev.mentioned_by_dir(name) || sides.head.rev.mentioned_by_dir(name);
    scan::list(&sources, Some(&wanted))
}

/// Cached runs: `shared` with each side's commit, base first.
pub fn side_filters(shared: &Filter, sides: &Sides) -> [Filter; 2] {
    let with = |s: &Side| Filter {
        project_commit: vec![s.commit_pattern()],
        ..shared.clone()
    };
    [with(&sides.base), with(&sides.head)]
}

/// What fresh runs run in each side's tree.
#[derive(Debug, Clone, Default)]
pub struct Suite {
    /// Run by `sh -c` instead of `cargo nextest run --no-fail-fast NEXTEST_ARGS`.
    pub test_cmd: Option<String>,
    pub nextest_args: Vec<String>,
    /// Keep the temporary checkouts.
    pub keep_worktrees: bool,
}

impl Suite {
    /// The command as shown to a person.
    fn shown(&self) -> String {
        match &self.test_cmd {
            Some(c) => c.clone(),
            None => format!(
                "cargo nextest run --no-fail-fast {}",
                self.nextest_args.join(" ")
            ),
        }
    }
}

/// Fresh runs: the suite `n` times per side (base first), each run into its own
/// directory under `runs_root`; returns the listing of exactly those runs, side A the
/// base's. Progress (checkouts, each run's start and end) goes to `progress`, one line
/// a call. A failing suite run is not an error: its failed tests stay out of the numbers.
pub fn run_fresh(
    sides: &Sides,
    n: usize,
    suite: &Suite,
    runs_root: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Listing, PerfDeltaError> {
    if n < 2 {
        return Err(PerfDeltaError::TooFewRuns(n));
    }
    let session = provenance::now_timestamp().replace(['-', ':'], "");
    let scratch = tempfile::Builder::new()
        .prefix("ktstr-perf-delta-")
        .tempdir()
        .map_err(|source| PerfDeltaError::Io {
            what: "creating a temporary directory for the checkouts".into(),
            source,
        })?;
    // Both sides build in one target directory next to the project's, so the second
    // side and later sessions reuse what the first built.
    let shared_target = std::env::var_os(paths::CARGO_TARGET_DIR_ENV)
        .map(PathBuf::from)
        .or_else(|| paths::cargo_target_dir(&sides.repo_root))
        .map(|t| t.join("perf-delta"));
    let mut sources = Vec::new();
    for (tag, side, mask) in [("base", &sides.base, SIDE_A), ("head", &sides.head, SIDE_B)] {
        let tree = if side.exported {
            let dest = scratch.path().join(format!("{tag}-{}", side.rev.short));
            let t0 = Instant::now();
            let ex = revs::export_tree(&sides.repo_root, &side.rev, &dest)?;
            progress(&format!(
                "[{tag} {}] checked out {} files ({} KiB) into {} in {:.1} s",
                side.rev.short,
                ex.files,
                ex.bytes / 1024,
                dest.display(),
                t0.elapsed().as_secs_f64()
            ));
            dest
        } else {
            sides.repo_root.clone()
        };
        for i in 0..n {
            let dir = runs_root.join(format!(
                "perf-delta-{}{}-{session}-{tag}{i}",
                side.rev.short,
                if side.dirty { "-dirty" } else { "" }
            ));
            let run = SuiteRun {
                suite,
                side,
                tag,
                tree: &tree,
                sidecar_dir: &dir,
                runs_root,
                shared_target: shared_target.as_deref(),
            };
            run.run(i, n, progress)?;
            sources.push(Source {
                root: dir,
                archive: false,
                mask,
                prune: false,
            });
        }
    }
    if suite.keep_worktrees {
        let kept = scratch.keep();
        progress(&format!("kept the checkouts in {}", kept.display()));
    }
    Ok(scan::list(&sources, None))
}

/// One side's suite, run once.
struct SuiteRun<'a> {
    suite: &'a Suite,
    side: &'a Side,
    tag: &'a str,
    tree: &'a Path,
    sidecar_dir: &'a Path,
    runs_root: &'a Path,
    shared_target: Option<&'a Path>,
}

impl SuiteRun<'_> {
    /// Run `i` of `n`.
    fn run(
        &self,
        i: usize,
        n: usize,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), PerfDeltaError> {
        let mut cmd = match &self.suite.test_cmd {
            Some(c) => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c").arg(c);
                cmd
            }
            None => {
                let mut cmd = Command::new("cargo");
                cmd.args(["nextest", "run", "--no-fail-fast"])
                    .args(&self.suite.nextest_args);
                cmd
            }
        };
        cmd.current_dir(self.tree)
            .env(paths::RUNS_ROOT_ENV, self.runs_root)
            .env(paths::SIDECAR_DIR_ENV, self.sidecar_dir)
            .env("KTSTR_PERF_DELTA_RUN", i.to_string());
        if self.side.exported {
            // A checkout has no .git: the commit is named explicitly.
            cmd.env(provenance::PROJECT_COMMIT_ENV, &self.side.rev.short);
            if let Some(t) = self.shared_target {
                cmd.env(paths::CARGO_TARGET_DIR_ENV, t);
            }
        }
        let shown = self.suite.shown();
        let (tag, short) = (self.tag, &self.side.rev.short);
        progress(&format!(
            "[{tag} {short}] run {}/{n}: {}",
            i + 1,
            shown.trim_end()
        ));
        let t0 = Instant::now();
        let status = cmd.status().map_err(|source| PerfDeltaError::Io {
            what: format!(
                "starting `{}` in {}{}",
                shown.trim_end(),
                self.tree.display(),
                if self.suite.test_cmd.is_none() {
                    " (is cargo-nextest installed? `cargo install cargo-nextest`, or pass --test-cmd)"
                } else {
                    ""
                }
            ),
            source,
        })?;
        let secs = t0.elapsed().as_secs_f64();
        if status.success() {
            progress(&format!(
                "[{tag} {short}] run {}/{n}: ok in {secs:.1} s",
                i + 1
            ));
        } else {
            // Failing tests still leave sidecars (failed runs stay out of the numbers).
            progress(&format!(
                "[{tag} {short}] run {}/{n}: exited with {status} after {secs:.1} s; failed tests are left out of the comparison",
                i + 1
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(spec: &str, dirty: bool) -> Side {
        Side {
            rev: Rev {
                spec: spec.into(),
                full: "0123456789abcdef0123456789abcdef01234567".into(),
                short: "0123456".into(),
            },
            dirty,
            exported: false,
        }
    }

    #[test]
    fn labels_and_commit_patterns() {
        assert_eq!(side("0123456", false).label(), "0123456");
        assert_eq!(side("main", false).label(), "main = 0123456");
        let wt = side("working tree", true);
        assert_eq!(wt.label(), "working tree = 0123456-dirty");
        assert_eq!(
            wt.commit_pattern(),
            "0123456789abcdef0123456789abcdef01234567-dirty"
        );
    }

    #[test]
    fn fewer_than_two_fresh_runs_are_refused() {
        let sides = Sides {
            repo_root: PathBuf::from("/nonexistent"),
            base: side("main", false),
            head: side("working tree", true),
        };
        let mut lines = Vec::new();
        let err = run_fresh(
            &sides,
            1,
            &Suite::default(),
            Path::new("/nonexistent"),
            &mut |l| lines.push(l.to_string()),
        )
        .expect_err("one run per side");
        assert!(err.to_string().starts_with("--noise-adjust 1: "), "{err}");
        assert!(lines.is_empty());
    }
}
