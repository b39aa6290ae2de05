//! `cargo ktstr stats`: list runs, show and explain sidecars, list the metric registry,
//! and compare two sides of a pool. The logic lives in `ktstr_sidecar` (`scan`,
//! `summary`, `detail`, `explain`, `metrics`, `compare`, `report`); this module parses
//! and prints.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use ktstr_sidecar::{load_pool, paths, read_sidecar, SidecarError};
use ktstr_stats::compare::{self, Comparison, FailPolicy, Filter, GateOutcome, JudgeOptions};
use ktstr_stats::detail::SidecarDetail;
use ktstr_stats::report::{self, RenderOptions};
use ktstr_stats::scan::{self, Listing, Source};
use ktstr_stats::{explain, metrics, summary};

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

/// Filters shared by both sides.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Test name (glob with `*`; repeatable: any of them).
    #[arg(long = "test", value_name = "GLOB")]
    pub test: Vec<String>,
    /// Kernel release, or a prefix of it (`7.2` takes `7.2.13+deb14-cloud-amd64`).
    #[arg(long, value_name = "RELEASE")]
    pub kernel: Vec<String>,
    #[arg(long, value_name = "NAME")]
    pub scheduler: Vec<String>,
    /// Topology label (`1n2l4c1t`).
    #[arg(long, value_name = "LABEL")]
    pub topology: Vec<String>,
    #[arg(long = "work-type", value_name = "NAME")]
    pub work_type: Vec<String>,
    /// Project commit (hex prefix; `abc1234-dirty` for dirty runs; `*` globs).
    #[arg(long = "project-commit", value_name = "COMMIT")]
    pub project_commit: Vec<String>,
    /// Kernel source commit (as --project-commit).
    #[arg(long = "kernel-commit", value_name = "COMMIT")]
    pub kernel_commit: Vec<String>,
    /// `local`, `ci` or `archive`.
    #[arg(long = "run-source", value_name = "SOURCE")]
    pub run_source: Vec<String>,
}

/// Side A's own filters: each replaces the shared one of the same dimension.
#[derive(Args, Debug, Clone, Default)]
pub struct SideAArgs {
    /// Pool of side A only (repeatable; read as archive).
    #[arg(long = "a-dir", id = "a_dir", value_name = "DIR")]
    pub dir: Vec<PathBuf>,
    #[arg(long = "a-test", id = "a_test", value_name = "GLOB")]
    pub test: Vec<String>,
    #[arg(long = "a-kernel", id = "a_kernel", value_name = "RELEASE")]
    pub kernel: Vec<String>,
    #[arg(long = "a-scheduler", id = "a_scheduler", value_name = "NAME")]
    pub scheduler: Vec<String>,
    #[arg(long = "a-topology", id = "a_topology", value_name = "LABEL")]
    pub topology: Vec<String>,
    #[arg(long = "a-work-type", id = "a_work_type", value_name = "NAME")]
    pub work_type: Vec<String>,
    #[arg(
        long = "a-project-commit",
        id = "a_project_commit",
        value_name = "COMMIT"
    )]
    pub project_commit: Vec<String>,
    #[arg(
        long = "a-kernel-commit",
        id = "a_kernel_commit",
        value_name = "COMMIT"
    )]
    pub kernel_commit: Vec<String>,
    #[arg(long = "a-run-source", id = "a_run_source", value_name = "SOURCE")]
    pub run_source: Vec<String>,
}

/// Side B's own filters: each replaces the shared one of the same dimension.
#[derive(Args, Debug, Clone, Default)]
pub struct SideBArgs {
    /// Pool of side B only (repeatable; read as archive).
    #[arg(long = "b-dir", id = "b_dir", value_name = "DIR")]
    pub dir: Vec<PathBuf>,
    #[arg(long = "b-test", id = "b_test", value_name = "GLOB")]
    pub test: Vec<String>,
    #[arg(long = "b-kernel", id = "b_kernel", value_name = "RELEASE")]
    pub kernel: Vec<String>,
    #[arg(long = "b-scheduler", id = "b_scheduler", value_name = "NAME")]
    pub scheduler: Vec<String>,
    #[arg(long = "b-topology", id = "b_topology", value_name = "LABEL")]
    pub topology: Vec<String>,
    #[arg(long = "b-work-type", id = "b_work_type", value_name = "NAME")]
    pub work_type: Vec<String>,
    #[arg(
        long = "b-project-commit",
        id = "b_project_commit",
        value_name = "COMMIT"
    )]
    pub project_commit: Vec<String>,
    #[arg(
        long = "b-kernel-commit",
        id = "b_kernel_commit",
        value_name = "COMMIT"
    )]
    pub kernel_commit: Vec<String>,
    #[arg(long = "b-run-source", id = "b_run_source", value_name = "SOURCE")]
    pub run_source: Vec<String>,
}

/// `filter()` for the shared and the two per-side argument structs. The side structs
/// repeat the shared fields under `--a-*`/`--b-*` names because clap's derive cannot
/// flatten one struct twice with a prefix (clap-rs/clap#3117).
macro_rules! impl_filter {
    ($t:ty) => {
        impl $t {
            pub fn filter(&self) -> Filter {
                Filter {
                    test: self.test.clone(),
                    kernel: self.kernel.clone(),
                    scheduler: self.scheduler.clone(),
                    topology: self.topology.clone(),
                    work_type: self.work_type.clone(),
                    project_commit: self.project_commit.clone(),
                    kernel_commit: self.kernel_commit.clone(),
                    run_source: self.run_source.clone(),
                }
            }
        }
    };
}
impl_filter!(FilterArgs);
impl_filter!(SideAArgs);
impl_filter!(SideBArgs);

/// When to colour the table.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ColorChoice {
    /// When stdout is a terminal and NO_COLOR is unset.
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    pub fn enabled(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

/// How a comparison is printed and gated (shared by `stats compare` and `perf-delta`).
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Judge per-phase values too (phases named by a test's assertions always are).
    #[arg(long)]
    pub phases: bool,
    /// Show every metric (JSON too), not only regressions, improvements and material
    /// noisy ones.
    #[arg(long)]
    pub all: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write an HTML report with a plot of both sides' runs per regressed metric.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Fail when at least this many metrics regress; 0 = never by count.
    #[arg(long = "fail-threshold", value_name = "N")]
    pub fail_threshold: Option<usize>,
    /// Fail when any of these metrics regresses (comma-separated names or globs, e.g.
    /// `work_rate,cgroup[*].p99_wake_latency_us`; repeatable).
    #[arg(long = "must-fail", value_name = "METRICS", value_delimiter = ',')]
    pub must_fail: Vec<String>,
    /// Threads parsing sidecars (default: all CPUs).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Pool feeding both sides (repeatable; read as archive); default: the runs root.
    #[arg(long = "dir", value_name = "DIR")]
    dirs: Vec<PathBuf>,
    #[command(flatten)]
    shared: FilterArgs,
    #[command(flatten)]
    a: SideAArgs,
    #[command(flatten)]
    b: SideBArgs,
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
        } => show(&path, &dirs, detail, json),
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
    let (code, _) = emit(
        &listing,
        [fa, fb],
        (a_label, b_label),
        &args.out,
        &policy,
        "ktstr stats compare",
    )?;
    Ok(code)
}

/// Pair, judge, print (text or JSON), write the HTML report, report unreadable files;
/// return the exit code of the fail policy and how many sidecars each side selected.
pub fn emit(
    listing: &Listing,
    sides: [Filter; 2],
    labels: (String, String),
    out: &OutputArgs,
    policy: &FailPolicy,
    title: &str,
) -> anyhow::Result<(i32, [usize; 2])> {
    let opts = JudgeOptions {
        phases: out.phases,
        // Output (JSON too) holds the notable rows; the counts cover all of them.
        notable_only: !out.all,
    };
    let pairing = compare::pair_listing(listing, &sides, out.threads, opts);
    let mut cmp: Comparison = compare::judge(&pairing, opts);
    cmp.a_label = labels.0;
    cmp.b_label = labels.1;
    let gate = policy.check(&cmp);

    let mut errors: Vec<&SidecarError> = listing.errors.iter().collect();
    errors.extend(pairing.errors.iter());
    if out.json {
        let errs: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let doc = serde_json::json!({
            "a": cmp.a_label,
            "b": cmp.b_label,
            "files_read": pairing.files,
            "selected": { "a": pairing.selected[0], "b": pairing.selected[1] },
            "comparison": cmp,
            "gate": gate,
            "errors": errs,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        let opts = RenderOptions {
            all: out.all,
            color: out.color.enabled(),
        };
        print!("{}", report::render_text(&cmp, opts));
        print_gate(&gate);
    }
    if let Some(path) = &out.html {
        let html = report::render_html(
            &cmp,
            RenderOptions {
                all: out.all,
                color: false,
            },
            title,
        );
        std::fs::write(path, html)
            .with_context(|| format!("writing the HTML report {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if pairing.selected == [0, 0] {
        eprintln!(
            "no sidecar matched either side ({} file(s) read); check the filters with `cargo ktstr stats list`",
            pairing.files
        );
    }
    report_unreadable(&errors);
    Ok((i32::from(gate.failed), pairing.selected))
}

fn print_gate(gate: &GateOutcome) {
    match &gate.reason {
        Some(r) => println!("FAILED: {r}"),
        None if gate.fail_threshold > 0 => println!(
            "passed: {} regression(s), below --fail-threshold {}",
            gate.regressions, gate.fail_threshold
        ),
        None => {}
    }
}

/// Unreadable files on stderr: the first ten, then a count.
fn report_unreadable(errors: &[&SidecarError]) {
    const SHOWN: usize = 10;
    for e in errors.iter().take(SHOWN) {
        eprintln!("warning: skipped: {e}");
    }
    if errors.len() > SHOWN {
        eprintln!("warning: {} more unreadable file(s)", errors.len() - SHOWN);
    }
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
    }
}
