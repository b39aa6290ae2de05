//! `cargo ktstr stats`: list runs, show and explain sidecars. The logic lives in
//! `ktstr_sidecar` (`read`, `summary`, `explain`); this module parses and prints.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use ktstr_sidecar::{explain, load_pool, paths, read_sidecar, summary, Pool};

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
    /// One row per test of a sidecar file or a run directory: verdict and key numbers.
    Show {
        /// A `*.ktstr.json` file or a directory of them.
        #[arg(value_name = "FILE|RUN_DIR")]
        path: PathBuf,
        /// Print JSON instead of a table.
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
}

/// Run `stats`; the exit code is non-zero when any file could not be read.
pub fn run(args: StatsArgs) -> anyhow::Result<i32> {
    match args.command.unwrap_or(StatsCommand::List {
        dirs: Vec::new(),
        json: false,
    }) {
        StatsCommand::List { dirs, json } => list(dirs, json),
        StatsCommand::Show { path, json } => show(&path, json),
        StatsCommand::Explain { file, json } => explain_file(&file, json),
    }
}

fn list(dirs: Vec<PathBuf>, json: bool) -> anyhow::Result<i32> {
    let archive = !dirs.is_empty();
    let roots = if archive {
        dirs
    } else {
        let root = paths::runs_root();
        if !root.exists() {
            eprintln!(
                "no runs yet: {} does not exist (set KTSTR_RUNS_ROOT or pass --dir to read another pool)",
                root.display()
            );
            return Ok(0);
        }
        vec![root]
    };
    let pool = load_pool(&roots, archive);
    let rows = summary::summarize_runs(&pool);
    if json {
        let errors: Vec<String> = pool.errors.iter().map(ToString::to_string).collect();
        let doc = serde_json::json!({ "runs": rows, "errors": errors });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if rows.is_empty() {
        println!("no sidecars under {}", display_roots(&roots));
    } else {
        print!("{}", summary::render_runs(&rows));
    }
    Ok(report_errors(&pool))
}

fn show(path: &Path, json: bool) -> anyhow::Result<i32> {
    if !path.exists() {
        anyhow::bail!(
            "{} does not exist; pass a *.ktstr.json file or a run directory (see `cargo ktstr stats list`)",
            path.display()
        );
    }
    let pool = load_pool(&[path.to_path_buf()], false);
    let rows = summary::test_rows(&pool);
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("no readable sidecars under {}", path.display());
    } else {
        print!("{}", summary::render_tests(&rows));
    }
    if rows.is_empty() && pool.errors.is_empty() {
        return Ok(1);
    }
    Ok(report_errors(&pool))
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

/// One line per bad file on stderr; the exit code (1 when there was any).
fn report_errors(pool: &Pool) -> i32 {
    for e in &pool.errors {
        eprintln!("error: {e}");
    }
    i32::from(!pool.errors.is_empty())
}

fn display_roots(roots: &[PathBuf]) -> String {
    roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
