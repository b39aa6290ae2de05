//! What `stats compare` and `perf-delta` share: the flags choosing each side's runs, the
//! flags shaping the output, and printing a finished comparison.

use std::io::IsTerminal;
use std::marker::PhantomData;
use std::path::PathBuf;

use anyhow::Context;
use clap::{value_parser, Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches, ValueEnum};
use ktstr_stats::compare::{Compared, Filter, JudgeOptions};
use ktstr_stats::report::{self, RenderOptions};

/// Which runs a side takes, as flags. One type serves the filters both sides share
/// (`--test`, `--kernel`, ...: [`Shared`]) and each side's own, which replace the shared
/// one of the same dimension (`--a-test`, ... and `--a-dir`: [`SideA`], [`SideB`]).
/// clap's derive cannot flatten one struct twice under a prefix (clap-rs/clap#3117), so
/// the flags are built here from one list of dimensions.
#[derive(Debug, Clone)]
pub struct FilterArgs<S = Shared> {
    /// The side's own pools (`--a-dir`, `--b-dir`; read as archive). Always empty for
    /// [`Shared`].
    pub dir: Vec<PathBuf>,
    pub filter: Filter,
    flags: PhantomData<S>,
}

/// One filter dimension: the flag without its side prefix, its value name, the help of
/// the shared flag, and the [`Filter`] field it fills.
struct Dimension {
    value_name: &'static str,
    help: Option<&'static str>,
    field: fn(&mut Filter) -> &mut Vec<String>,
}

/// In flag order; [`FlagSet::LONG`] names them with the side's prefix.
const DIMENSIONS: [Dimension; 8] = [
    Dimension {
        value_name: "GLOB",
        help: Some("Test name (glob with `*`; repeatable: any of them)"),
        field: |f| &mut f.test,
    },
    Dimension {
        value_name: "RELEASE",
        help: Some("Kernel release, or a prefix of it (`7.2` takes `7.2.13+deb14-cloud-amd64`)"),
        field: |f| &mut f.kernel,
    },
    Dimension {
        value_name: "NAME",
        help: None,
        field: |f| &mut f.scheduler,
    },
    Dimension {
        value_name: "LABEL",
        help: Some("Topology label (`1n2l4c1t`)"),
        field: |f| &mut f.topology,
    },
    Dimension {
        value_name: "NAME",
        help: None,
        field: |f| &mut f.work_type,
    },
    Dimension {
        value_name: "COMMIT",
        help: Some("Project commit (hex prefix; `abc1234-dirty` for dirty runs; `*` globs)"),
        field: |f| &mut f.project_commit,
    },
    Dimension {
        value_name: "COMMIT",
        help: Some("Kernel source commit (as --project-commit)"),
        field: |f| &mut f.kernel_commit,
    },
    Dimension {
        value_name: "SOURCE",
        help: Some("`local`, `ci` or `archive`"),
        field: |f| &mut f.run_source,
    },
];

/// The flags of one side (the long names double as clap ids).
pub trait FlagSet {
    /// `--{prefix}dir` and its help; None: no pool flag of its own.
    const DIR: Option<(&'static str, &'static str)>;
    /// The flag of each of [`DIMENSIONS`].
    const LONG: [&'static str; 8];
    /// Whether the dimension flags carry the shared help.
    const HELP: bool;
}

/// `concat!` needs literals, so the side flag names are spelled out by a macro.
macro_rules! flag_set {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, dir: $dir:expr, help: $help:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;

        impl FlagSet for $name {
            const DIR: Option<(&'static str, &'static str)> = $dir;
            const LONG: [&'static str; 8] = [
                concat!($prefix, "test"),
                concat!($prefix, "kernel"),
                concat!($prefix, "scheduler"),
                concat!($prefix, "topology"),
                concat!($prefix, "work-type"),
                concat!($prefix, "project-commit"),
                concat!($prefix, "kernel-commit"),
                concat!($prefix, "run-source"),
            ];
            const HELP: bool = $help;
        }
    };
}

flag_set!(
    /// The filters both sides share: `--test`, `--kernel`, ...
    Shared, "", dir: None, help: true
);
flag_set!(
    /// Side A's own filters: `--a-dir`, `--a-test`, ...
    SideA, "a-", dir: Some(("a-dir", "Pool of side A only (repeatable; read as archive)")), help: false
);
flag_set!(
    /// Side B's own filters: `--b-dir`, `--b-test`, ...
    SideB, "b-", dir: Some(("b-dir", "Pool of side B only (repeatable; read as archive)")), help: false
);

impl<S> Default for FilterArgs<S> {
    fn default() -> Self {
        FilterArgs {
            dir: Vec::new(),
            filter: Filter::default(),
            flags: PhantomData,
        }
    }
}

impl<S> FilterArgs<S> {
    /// The runs these flags select.
    pub fn filter(&self) -> Filter {
        self.filter.clone()
    }
}

impl<S: FlagSet> FromArgMatches for FilterArgs<S> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = FilterArgs::default();
        args.update_from_arg_matches(m)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        if let Some((id, _)) = S::DIR {
            if let Some(v) = m.get_many::<PathBuf>(id) {
                self.dir = v.cloned().collect();
            }
        }
        for (d, id) in DIMENSIONS.iter().zip(S::LONG) {
            if let Some(v) = m.get_many::<String>(id) {
                *(d.field)(&mut self.filter) = v.cloned().collect();
            }
        }
        Ok(())
    }
}

impl<S: FlagSet> Args for FilterArgs<S> {
    fn augment_args(mut cmd: Command) -> Command {
        if let Some((long, help)) = S::DIR {
            cmd = cmd.arg(
                Arg::new(long)
                    .long(long)
                    .value_name("DIR")
                    .value_parser(value_parser!(PathBuf))
                    .action(ArgAction::Append)
                    .help(help),
            );
        }
        for (d, long) in DIMENSIONS.iter().zip(S::LONG) {
            let help = if S::HELP { d.help } else { None };
            cmd = cmd.arg(
                Arg::new(long)
                    .long(long)
                    .value_name(d.value_name)
                    .value_parser(value_parser!(String))
                    .action(ArgAction::Append)
                    .help(help),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

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

/// How a comparison is printed and gated.
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

impl OutputArgs {
    /// What the judge keeps: per-phase values with `--phases`; all rows with `--all`
    /// (output, JSON too, holds the notable rows otherwise; the counts cover all).
    pub fn judge_options(&self) -> JudgeOptions {
        JudgeOptions {
            phases: self.phases,
            notable_only: !self.all,
        }
    }
}

/// Print the comparison (text or JSON), write the HTML report, and report unreadable
/// files on stderr; returns the exit code of the fail policy.
pub fn print(compared: &Compared, out: &OutputArgs, title: &str) -> anyhow::Result<i32> {
    let cmp = &compared.comparison;
    if out.json {
        println!("{}", serde_json::to_string_pretty(&compared.to_json())?);
    } else {
        let opts = RenderOptions {
            all: out.all,
            color: out.color.enabled(),
        };
        print!("{}", report::render_text(cmp, opts));
        print!("{}", compared.gate.render_text());
    }
    if let Some(path) = &out.html {
        let opts = RenderOptions {
            all: out.all,
            color: false,
        };
        std::fs::write(path, report::render_html(cmp, opts, title))
            .with_context(|| format!("writing the HTML report {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if compared.selected == [0, 0] {
        eprintln!(
            "no sidecar matched either side ({} file(s) read); check the filters with `cargo ktstr stats list`",
            compared.files
        );
    }
    report_unreadable(&compared.unreadable);
    Ok(compared.exit_code())
}

/// Unreadable files on stderr: the first ten, then a count.
fn report_unreadable(errors: &[String]) {
    const SHOWN: usize = 10;
    for e in errors.iter().take(SHOWN) {
        eprintln!("warning: skipped: {e}");
    }
    if errors.len() > SHOWN {
        eprintln!("warning: {} more unreadable file(s)", errors.len() - SHOWN);
    }
}
