//! `cargo ktstr stats`: list runs, show and explain sidecars, list the metric registry,
//! and compare two sides of a pool. The logic lives in `ktstr_stats` (`scan`,
//! `summary`, `detail`, `explain`, `metrics`, `compare`, `report`); this module parses
//! and prints.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use ktstr_sidecar::{load_pool, paths, read_sidecar, SidecarError};
use ktstr_stats::compare::{self, FailPolicy, Filter};
use ktstr_stats::detail::SidecarDetail;
use ktstr_stats::scan::{self, Source};
use ktstr_stats::{explain, metrics, summary};

use super::comparison::{self, FilterArgs, OutputArgs, Shared, SideA, SideB};

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(subcommand)]
    command: Option<StatsCommand>,
}

#[derive(Subcommand, Debug)]
enum StatsCommand {
    /// List run directories: tests, date, kernel, commit, verdict counts (the default).
    List {
        /// Pool to read (repeatable); default: the runs root (KTSTR_RUNS_ROOT, else
        /// {cargo target dir}/ktstr). Sidecars read from --dir count as run_source=archive.
        #[arg(long = "dir", value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Per-test table of a run directory, or everything about one sidecar file:
    /// verdict, metrics, monitor, KVM counters per vCPU, cleanup time.
    Show {
        /// A `*.ktstr.json` file, a run directory, or the name of a run directory in the
        /// runs root or a --dir pool (as `stats list` prints it).
        #[arg(value_name = "RUN|FILE")]
        path: PathBuf,
        /// Pools to look RUN up in (repeatable); default: the runs root.
        #[arg(long = "dir", value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Show every sidecar of a run directory in full, not as one table row each.
        #[arg(long)]
        detail: bool,
        /// Print JSON instead of text (always the full detail).
        #[arg(long)]
        json: bool,
        /// Write a self-contained HTML report instead: for one sidecar the page itself
        /// (verdict, stimulus timeline with the monitor's samples, cgroups, phases);
        /// for a run directory a directory of pages with an index.html.
        #[arg(long, value_name = "OUT", conflicts_with = "json")]
        html: Option<PathBuf>,
    },
    /// Every optional field of a sidecar as set or null, why a null is expected or how to
    /// fix it, the variant hash and the file name the sidecar should have.
    Explain {
        /// A `*.ktstr.json` file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The metric registry: every metric compare and perf-delta derive from sidecars,
    /// with unit, direction and materiality thresholds.
    Metrics {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Compare side A (baseline) with side B (candidate): runs of the same test variant
    /// are paired, several runs per side aggregated, and each metric judged (Welch's
    /// t-test or disjoint ranges, plus the registry's materiality thresholds).
    Compare(Box<CompareArgs>),
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Pool feeding both sides (repeatable; read as archive); default: the runs root.
    #[arg(long = "dir", value_name = "DIR")]
    dirs: Vec<PathBuf>,
    #[command(flatten)]
    shared: FilterArgs<Shared>,
    #[command(flatten)]
    a: FilterArgs<SideA>,
    #[command(flatten)]
    b: FilterArgs<SideB>,
    #[command(flatten)]
    out: OutputArgs,
}

/// Run `stats`.
pub fn run(args: StatsArgs) -> anyhow::Result<i32> {
    match args.command.unwrap_or(StatsCommand::List {
        dirs: Vec::new(),
        json: false,
    }) {
        StatsCommand::List { dirs, json } => list(dirs, json),
        StatsCommand::Show {
            path,
            dirs,
            detail,
            json,
            html,
        } => match html {
            Some(out) => show_html(&path, &dirs, &out),
            None => show(&path, &dirs, detail, json),
        },
        StatsCommand::Explain { file, json } => explain_file(&file, json),
        StatsCommand::Metrics { json } => list_metrics(json),
        StatsCommand::Compare(a) => compare_cmd(*a),
    }
}

/// `--dir` pools as archive sources, or the runs root (None when it does not exist).
fn pool_sources(dirs: &[PathBuf], mask: u8) -> Option<Vec<Source>> {
    if !dirs.is_empty() {
        return Some(
            dirs.iter()
                .map(|d| Source {
                    root: d.clone(),
                    archive: true,
                    mask,
                    prune: false,
                })
                .collect(),
        );
    }
    let root = paths::runs_root();
    root.exists().then(|| {
        vec![Source {
            root,
            archive: false,
            mask,
            prune: false,
        }]
    })
}

fn no_runs_yet() -> i32 {
    eprintln!(
        "no runs yet: {} does not exist (set KTSTR_RUNS_ROOT or pass --dir to read another pool)",
        paths::runs_root().display()
    );
    0
}

/// The exit code of `stats list`: non-zero when any file could not be read.
fn list(dirs: Vec<PathBuf>, json: bool) -> anyhow::Result<i32> {
    let Some(sources) = pool_sources(&dirs, compare::SIDE_A) else {
        return Ok(no_runs_yet());
    };
    let listing = scan::list(&sources, None);
    let (rows, mut errors) = scan::summarize_runs(&listing, 0);
    errors.extend(listing.errors);
    if json {
        let errs: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let doc = serde_json::json!({ "runs": rows, "errors": errs });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if rows.is_empty() {
        let roots: Vec<String> = sources
            .iter()
            .map(|s| s.root.display().to_string())
            .collect();
        println!("no sidecars under {}", roots.join(", "));
    } else {
        print!("{}", summary::render_runs(&rows));
    }
    Ok(report_errors(&errors))
}

/// FILE or RUN as given, else RUN looked up in the pools.
/// Returns the path and whether it was found in a --dir pool (an archive).
fn resolve_show_path(path: &Path, dirs: &[PathBuf]) -> anyhow::Result<(PathBuf, bool)> {
    if path.exists() {
        return Ok((path.to_path_buf(), false));
    }
    let roots = if dirs.is_empty() {
        vec![paths::runs_root()]
    } else {
        dirs.to_vec()
    };
    for root in &roots {
        let candidate = root.join(path);
        if candidate.exists() {
            return Ok((candidate, !dirs.is_empty()));
        }
    }
    anyhow::bail!(
        "{} does not exist, and no run directory of that name is in {}; pass a *.ktstr.json file or a run directory (see `cargo ktstr stats list`)",
        path.display(),
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn show(path: &Path, dirs: &[PathBuf], detail: bool, json: bool) -> anyhow::Result<i32> {
    let (path, archive) = resolve_show_path(path, dirs)?;
    let pool = load_pool(std::slice::from_ref(&path), archive);
    let single = path.is_file();
    if json {
        let details: Vec<SidecarDetail> = pool.sidecars().map(SidecarDetail::of).collect();
        println!("{}", serde_json::to_string_pretty(&details)?);
    } else if pool.sidecars().next().is_none() {
        println!("no readable sidecars under {}", path.display());
    } else if single || detail {
        let texts: Vec<String> = pool
            .sidecars()
            .map(|l| SidecarDetail::of(l).render_text())
            .collect();
        print!("{}", texts.join("\n"));
    } else {
        print!("{}", summary::render_tests(&summary::test_rows(&pool)));
    }
    if pool.sidecars().next().is_none() && pool.errors.is_empty() {
        return Ok(1);
    }
    Ok(report_errors(&pool.errors))
}

fn show_html(path: &Path, dirs: &[PathBuf], out: &Path) -> anyhow::Result<i32> {
    let (path, archive) = resolve_show_path(path, dirs)?;
    let pool = load_pool(std::slice::from_ref(&path), archive);
    let runs: Vec<_> = pool.sidecars().collect();
    if runs.is_empty() {
        println!("no readable sidecars under {}", path.display());
        return Ok(report_errors(&pool.errors).max(1));
    }
    let written = ktstr_stats::run_report::write_pages(&runs, out, path.is_dir())
        .with_context(|| format!("cannot write the HTML report to {}", out.display()))?;
    match written.as_slice() {
        [one] if !path.is_dir() => println!("wrote {}", one.display()),
        many => println!(
            "wrote {} pages into {} (open index.html)",
            many.len() - 1,
            out.display()
        ),
    }
    Ok(report_errors(&pool.errors))
}

fn explain_file(file: &Path, json: bool) -> anyhow::Result<i32> {
    let sidecar = match read_sidecar(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    let report = explain::explain(&sidecar, Some(file));
    if json {
        let text = serde_json::to_string_pretty(&report)
            .with_context(|| format!("rendering the explanation of {}", file.display()))?;
        println!("{text}");
    } else {
        print!("{}", report.render_text());
    }
    Ok(0)
}

fn list_metrics(json: bool) -> anyhow::Result<i32> {
    if json {
        println!("{}", serde_json::to_string_pretty(metrics::REGISTRY)?);
        return Ok(0);
    }
    print!("{}", metrics::render_registry());
    Ok(0)
}

fn compare_cmd(args: CompareArgs) -> anyhow::Result<i32> {
    let shared = args.shared.filter();
    let fa = shared.with_side(&args.a.filter());
    let fb = shared.with_side(&args.b.filter());
    let own_dirs = !args.a.dir.is_empty() || !args.b.dir.is_empty();
    if fa == fb && !own_dirs {
        anyhow::bail!(
            "sides A and B select the same runs ({}); tell them apart with --a-*/--b-* filters (e.g. --a-project-commit abc1234 --b-project-commit def5678) or --a-dir/--b-dir",
            fa.describe()
        );
    }
    let mut sources = Vec::new();
    let both = compare::SIDE_A | compare::SIDE_B;
    let shared_mask = match (args.a.dir.is_empty(), args.b.dir.is_empty()) {
        (true, true) => both,
        (true, false) => compare::SIDE_A,
        (false, true) => compare::SIDE_B,
        (false, false) => 0,
    };
    if shared_mask != 0 {
        match pool_sources(&args.dirs, shared_mask) {
            Some(s) => sources.extend(s),
            None => return Ok(no_runs_yet()),
        }
    }
    for (dirs, mask) in [
        (&args.a.dir, compare::SIDE_A),
        (&args.b.dir, compare::SIDE_B),
    ] {
        sources.extend(dirs.iter().map(|d| Source {
            root: d.clone(),
            archive: true,
            mask,
            prune: false,
        }));
    }
    let listing = scan::list(&sources, None);
    let label = |f: &Filter, dirs: &[PathBuf]| {
        if dirs.is_empty() {
            f.describe()
        } else {
            let d: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            format!("{} in {}", f.describe(), d.join(", "))
        }
    };
    let (a_label, b_label) = (label(&fa, &args.a.dir), label(&fb, &args.b.dir));
    let policy = FailPolicy {
        fail_threshold: args.out.fail_threshold.unwrap_or(0),
        must_fail: args.out.must_fail.clone(),
    };
    let compared = compare::run(
        &listing,
        [fa, fb],
        (a_label, b_label),
        args.out.threads,
        args.out.judge_options(),
        &policy,
    );
    comparison::print(&compared, &args.out, "ktstr stats compare")
}

/// One line per bad file on stderr; the exit code (1 when there was any).
fn report_errors(errors: &[SidecarError]) -> i32 {
    for e in errors {
        eprintln!("error: {e}");
    }
    i32::from(!errors.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Command;

    #[test]
    fn argument_definitions_are_consistent() {
        StatsArgs::augment_args(Command::new("stats")).debug_assert();
    }

    #[test]
    fn side_flags_replace_shared_ones() {
        let cmd = StatsArgs::augment_args(Command::new("stats"));
        let m = cmd
            .try_get_matches_from([
                "stats",
                "compare",
                "--kernel",
                "7.2",
                "--scheduler",
                "eevdf",
                "--a-project-commit",
                "aaaaaaa",
                "--b-project-commit",
                "bbbbbbb",
                "--b-scheduler",
                "scx_lavd",
                "--must-fail",
                "work_rate,cgroup[*].spread",
            ])
            .expect("parses");
        let args = <StatsArgs as clap::FromArgMatches>::from_arg_matches(&m).expect("args");
        let Some(StatsCommand::Compare(c)) = args.command else {
            panic!("compare expected");
        };
        let shared = c.shared.filter();
        let (a, b) = (
            shared.with_side(&c.a.filter()),
            shared.with_side(&c.b.filter()),
        );
        assert_eq!(
            a.describe(),
            "kernel=7.2 scheduler=eevdf project_commit=aaaaaaa"
        );
        assert_eq!(
            b.describe(),
            "kernel=7.2 scheduler=scx_lavd project_commit=bbbbbbb"
        );
        assert_eq!(c.out.must_fail, ["work_rate", "cgroup[*].spread"]);
        assert_eq!(c.out.fail_threshold, None);
        assert!(c.shared.dir.is_empty() && c.a.dir.is_empty() && c.b.dir.is_empty());
    }

    #[test]
    fn each_side_has_its_own_pools_and_every_filter_flag() {
        let cmd = StatsArgs::augment_args(Command::new("stats"));
        let mut argv = vec![
            "stats", "compare", "--a-dir", "/a1", "--a-dir", "/a2", "--b-dir", "/b",
        ];
        let flags = [
            "test",
            "kernel",
            "scheduler",
            "topology",
            "work-type",
            "project-commit",
            "kernel-commit",
            "run-source",
        ];
        let longs: Vec<String> = ["", "a-", "b-"]
            .iter()
            .flat_map(|p| flags.iter().map(move |f| format!("--{p}{f}")))
            .collect();
        for l in &longs {
            argv.extend([l.as_str(), &l[2..]]);
        }
        let m = cmd.try_get_matches_from(argv).expect("parses");
        let args = <StatsArgs as clap::FromArgMatches>::from_arg_matches(&m).expect("args");
        let Some(StatsCommand::Compare(c)) = args.command else {
            panic!("compare expected");
        };
        assert_eq!(c.a.dir, [PathBuf::from("/a1"), PathBuf::from("/a2")]);
        assert_eq!(c.b.dir, [PathBuf::from("/b")]);
        let v = |s: &str| vec![s.to_string()];
        let expect = |p: &str| Filter {
            test: v(&format!("{p}test")),
            kernel: v(&format!("{p}kernel")),
            scheduler: v(&format!("{p}scheduler")),
            topology: v(&format!("{p}topology")),
            work_type: v(&format!("{p}work-type")),
            project_commit: v(&format!("{p}project-commit")),
            kernel_commit: v(&format!("{p}kernel-commit")),
            run_source: v(&format!("{p}run-source")),
        };
        assert_eq!(c.shared.filter(), expect(""));
        assert_eq!(c.a.filter(), expect("a-"));
        assert_eq!(c.b.filter(), expect("b-"));
    }
}
