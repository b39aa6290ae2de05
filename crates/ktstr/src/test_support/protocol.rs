//! The test binary's side of the nextest/libtest protocol, for binaries with
//! `#[ktstr_test]`s.
//!
//! **How it hooks in.** Every `#[ktstr_test]` expands to (1) a `static` in the
//! [`KTSTR_TESTS`](super::entry::KTSTR_TESTS) distributed slice, (2) a plain `#[test]`
//! wrapper that runs the base variant, and (3) an `.init_array` constructor calling
//! [`early_dispatch`]. The constructor runs before libtest's `main` and looks at the
//! arguments:
//!
//! - `--list` (any format but `json`): prints `ktstr/{name}: test` for every test and
//!   `gauntlet/{name}/{preset}: test` for every fitting preset (only the ignored ones with
//!   `--ignored`: gauntlet variants and tests marked `ignore`), then the binary's other
//!   libtest tests — obtained by running this binary again with the constructor switched
//!   off and dropping the `#[test]` wrappers — and exits. So `cargo nextest list` and
//!   `cargo test -- --list` show the same names.
//! - `--exact NAME` with a `ktstr/` or `gauntlet/` name: runs that variant and exits with
//!   its code (0 pass or skip, 1 fail, 2 inconclusive). nextest runs every test this way.
//!   A name this binary does not have runs nothing and exits 0, as a libtest filter that
//!   matches nothing would (`cargo test -- --exact NAME` reaches every test binary).
//! - anything else: returns, and libtest runs as usual; plain `cargo test` therefore runs
//!   the `#[test]` wrappers, i.e. the base variants (a failed or inconclusive run panics;
//!   a skip passes with its reason printed).
//!
//! This needs no `harness = false` and no `main`, works for `cargo test` and
//! `cargo nextest run` alike, and leaves ordinary `#[test]`s in the same file alone.

use std::ffi::OsString;
use std::io::Write;
use std::process::Command;
use std::sync::{Mutex, Once};

use ktstr_sidecar::Outcome;

use super::entry::{check_unique, registered, TestEntry};
use super::execute::{panic_text, record, run_variant};
use super::names::{kernel_list_from_env, KernelEntry, TestId};
use super::presets;

/// Set on the child that lists libtest's own tests: the constructor steps aside.
const PASSTHROUGH_ENV: &str = "KTSTR_LIBTEST_PASSTHROUGH";

/// What the constructor does with this process's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Not ours: let libtest run.
    Continue,
    List(ListArgs),
    /// Run these `ktstr/`/`gauntlet/` names and exit.
    Run(Vec<String>),
}

/// A `--list` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListArgs {
    /// `--ignored`: only ignored tests.
    pub ignored_only: bool,
    /// `--format terse` (nextest): no closing count line.
    pub terse: bool,
    pub exact: bool,
    pub filters: Vec<String>,
    pub skips: Vec<String>,
}

impl ListArgs {
    fn selects(&self, name: &str) -> bool {
        let hit = |pat: &String| {
            if self.exact {
                name == pat
            } else {
                name.contains(pat.as_str())
            }
        };
        (self.filters.is_empty() || self.filters.iter().any(hit)) && !self.skips.iter().any(hit)
    }
}

/// libtest options that take a value (so the value is not a filter).
const VALUE_OPTIONS: &[&str] = &[
    "--format",
    "--test-threads",
    "--skip",
    "--color",
    "--logfile",
    "-Z",
    "--shuffle-seed",
];

/// Decide from libtest-style arguments (without the program name).
pub fn decide(args: &[String]) -> Action {
    let mut list = ListArgs::default();
    let mut is_list = false;
    let mut format = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if a.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        match flag {
            "--list" => is_list = true,
            "--ignored" => list.ignored_only = true,
            "--exact" => list.exact = true,
            f if VALUE_OPTIONS.contains(&f) => {
                let value = inline.or_else(|| it.next().cloned());
                match f {
                    "--format" => format = value,
                    "--skip" => list.skips.extend(value),
                    _ => {}
                }
            }
            f if f.starts_with('-') => {}
            _ => list.filters.push(a.clone()),
        }
    }
    if is_list {
        if format.as_deref() == Some("json") {
            return Action::Continue;
        }
        list.terse = format.as_deref() == Some("terse");
        return Action::List(list);
    }
    if list.exact {
        let ours: Vec<String> = list
            .filters
            .into_iter()
            .filter(|f| TestId::is_ours(f))
            .collect();
        if !ours.is_empty() {
            return Action::Run(ours);
        }
    }
    Action::Continue
}

/// One line of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub ignored: bool,
}

/// Every variant of `entries`, base variants first, each with every kernel of `kernels`
/// when there are two or more.
pub fn list_variants(entries: &[&TestEntry], kernels: &[KernelEntry]) -> Vec<Listed> {
    let labels: Vec<Option<String>> = if kernels.len() >= 2 {
        kernels.iter().map(|k| Some(k.label.clone())).collect()
    } else {
        vec![None]
    };
    let mut out = Vec::new();
    for e in entries {
        for k in &labels {
            let id = TestId {
                name: e.name.to_string(),
                preset: None,
                kernel: k.clone(),
            };
            out.push(Listed {
                name: id.to_string(),
                ignored: e.attrs.ignore,
            });
        }
    }
    for e in entries.iter().filter(|e| e.attrs.gauntlet) {
        let base = e.attrs.topology().ok();
        for p in presets::fitting(&e.attrs.constraints, base.as_ref()) {
            for k in &labels {
                let id = TestId {
                    name: e.name.to_string(),
                    preset: Some(p),
                    kernel: k.clone(),
                };
                out.push(Listed {
                    name: id.to_string(),
                    ignored: true,
                });
            }
        }
    }
    out
}

/// Called by the constructor every `#[ktstr_test]` emits; acts once per process.
pub fn early_dispatch() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os(PASSTHROUGH_ENV).is_some() {
            return;
        }
        let args = process_args();
        let action = decide(args.get(1..).unwrap_or_default());
        if action == Action::Continue {
            return;
        }
        // From here on this process is ours (a `--list` or `--exact` run).
        crate::logging::init();
        let code = match std::panic::catch_unwind(|| match action {
            Action::List(l) => list(&args, &l),
            Action::Run(names) => run_names(&names),
            Action::Continue => unreachable!("handled above"),
        }) {
            Ok(code) => code,
            Err(panic) => {
                eprintln!("ktstr: internal error: {}", panic_text(&*panic));
                101
            }
        };
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    });
}

/// This process's arguments; `/proc/self/cmdline` if std has none (it fills them from
/// its own constructor, which runs before ours on glibc).
fn process_args() -> Vec<String> {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if !args.is_empty() {
        return args;
    }
    std::fs::read("/proc/self/cmdline")
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The registered tests (names checked unique) and the kernel list from the
/// environment; on error, says why on stderr and returns None.
fn entries_and_kernels() -> Option<(Vec<&'static TestEntry>, Vec<KernelEntry>)> {
    let entries = registered();
    let checked = check_unique(&entries)
        .map_err(|e| e.to_string())
        .and_then(|()| kernel_list_from_env().map_err(|e| e.to_string()));
    match checked {
        Ok(kernels) => Some((entries, kernels)),
        Err(e) => {
            eprintln!("ktstr: {e}");
            None
        }
    }
}

fn list(args: &[String], l: &ListArgs) -> i32 {
    let Some((entries, kernels)) = entries_and_kernels() else {
        return 1;
    };
    let ours: Vec<String> = list_variants(&entries, &kernels)
        .into_iter()
        .filter(|t| (!l.ignored_only || t.ignored) && l.selects(&t.name))
        .map(|t| format!("{}: test", t.name))
        .collect();
    let wrappers: Vec<String> = entries.iter().map(|e| e.libtest_name()).collect();
    let others = match libtest_list(args, &wrappers) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ktstr: {e}");
            return 1;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let mut write = || -> std::io::Result<()> {
        for line in ours.iter().chain(&others) {
            writeln!(stdout, "{line}")?;
        }
        if !l.terse {
            let benches = others.iter().filter(|l| l.ends_with(": bench")).count();
            let tests = ours.len() + others.len() - benches;
            writeln!(stdout, "\n{tests} tests, {benches} benchmarks")?;
        }
        stdout.flush()
    };
    match write() {
        Ok(()) => 0,
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("ktstr: cannot write the test list: {e}");
            1
        }
    }
}

/// libtest's own `name: test` lines for `args`, without the `#[test]` wrappers of
/// ktstr tests (they are listed under their `ktstr/` names).
fn libtest_list(args: &[String], wrappers: &[String]) -> Result<Vec<String>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this test binary: {e}"))?;
    let out = Command::new(&exe)
        .args(args.iter().skip(1).map(OsString::from))
        .env(PASSTHROUGH_ENV, "1")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {} to list its other tests: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "listing the other tests of {} failed ({})",
            exe.display(),
            out.status
        ));
    }
    Ok(filter_libtest_lines(
        &String::from_utf8_lossy(&out.stdout),
        wrappers,
    ))
}

fn filter_libtest_lines(stdout: &str, wrappers: &[String]) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| {
            let (name, kind) = line.rsplit_once(": ")?;
            let keep = matches!(kind, "test" | "bench") && !wrappers.iter().any(|w| w == name);
            keep.then(|| line.to_string())
        })
        .collect()
}

/// Run ktstr names (from `--exact`) one after another; the exit code of the worst.
fn run_names(names: &[String]) -> i32 {
    let Some((entries, kernels)) = entries_and_kernels() else {
        return 1;
    };
    let mut worst = Outcome::Skip;
    for name in names {
        match resolve_name(name, &entries, &kernels) {
            Ok((entry, id, kernel)) => {
                let r = record(run_variant(entry, &id, kernel.as_deref()));
                println!("{}", r.render());
                worst = worst.merge(r.outcome);
            }
            Err(problem) => {
                eprintln!("ktstr: {}", problem.text());
                // A name this binary lacks runs nothing, like a libtest filter that
                // matches nothing: `cargo test -- --exact NAME` reaches every binary.
                if let NameProblem::Bad(_) = problem {
                    worst = Outcome::Fail;
                }
            }
        }
    }
    worst.exit_code()
}

/// Why a name given to `--exact` does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NameProblem {
    /// This binary has no test of that name (another binary may): nothing runs.
    NotHere(String),
    /// The name is malformed or names a variant the test does not have: a failure.
    Bad(String),
}

impl NameProblem {
    fn text(&self) -> &str {
        match self {
            NameProblem::NotHere(s) | NameProblem::Bad(s) => s,
        }
    }
}

/// The entry, variant and kernel spec a listed name stands for.
fn resolve_name(
    name: &str,
    entries: &[&'static TestEntry],
    kernels: &[KernelEntry],
) -> Result<(&'static TestEntry, TestId, Option<String>), NameProblem> {
    let id = TestId::parse(name).map_err(|e| NameProblem::Bad(e.to_string()))?;
    let entry = entries
        .iter()
        .copied()
        .find(|e| e.name == id.name)
        .ok_or_else(|| {
            NameProblem::NotHere(format!(
                "no #[ktstr_test] named `{}` in this binary (it has: {}); nothing to run",
                id.name,
                entries
                    .iter()
                    .map(|e| e.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    if let Some(p) = id.preset {
        let base = entry.attrs.topology().ok();
        let fits = entry.attrs.gauntlet
            && presets::fitting(&entry.attrs.constraints, base.as_ref())
                .iter()
                .any(|f| f.label == p.label);
        if !fits {
            return Err(NameProblem::Bad(format!(
                "`{name}` is not a variant of `{}`: {}",
                entry.name,
                if entry.attrs.gauntlet {
                    "the preset does not fit its constraints (or is its own topology)"
                } else {
                    "it is not declared with `gauntlet`"
                }
            )));
        }
    }
    let kernel = match &id.kernel {
        None => None,
        Some(label) => Some(
            kernels
                .iter()
                .find(|k| &k.label == label)
                .map(|k| k.spec.clone())
                .ok_or_else(|| {
                    NameProblem::Bad(format!(
                        "`{name}` names kernel `{label}`, which is not in KTSTR_KERNEL_LIST (run it through `cargo ktstr test --kernel ...`)"
                    ))
                })?,
        ),
    };
    Ok((entry, id, kernel))
}

/// Body of the `#[test]` wrapper: run the base variant under libtest (`cargo test`).
/// Fail and inconclusive panic with the reasons; skip passes and says why. libtest runs
/// tests on parallel threads of one process; their VMs run one at a time, so each guest
/// gets the host CPUs its budget asks for (nextest runs every variant in its own process,
/// grouped by its own config).
pub fn run_libtest(entry: &'static TestEntry) {
    crate::logging::init();
    static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());
    if let Err(e) = check_unique(&registered()) {
        panic!("{e}");
    }
    let id = TestId {
        name: entry.name.to_string(),
        preset: None,
        kernel: None,
    };
    // run_variant turns panics into failures, so the lock is not poisoned in practice;
    // if it is, it still serialises.
    let guard = ONE_VM_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let r = record(run_variant(entry, &id, None));
    drop(guard);
    match r.outcome {
        Outcome::Pass | Outcome::Skip => println!("{}", r.render()),
        Outcome::Fail | Outcome::Inconclusive => panic!("{}", r.render()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::entry::{Constraints, TestAttrs};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn nextest_list_and_exact_are_ours() {
        assert_eq!(
            decide(&s(&["--list", "--format", "terse"])),
            Action::List(ListArgs {
                terse: true,
                ..ListArgs::default()
            })
        );
        assert_eq!(
            decide(&s(&["--list", "--format=terse", "--ignored"])),
            Action::List(ListArgs {
                terse: true,
                ignored_only: true,
                ..ListArgs::default()
            })
        );
        assert_eq!(
            decide(&s(&[
                "--exact",
                "gauntlet/steady/1n2l2c1t",
                "--nocapture",
                "--ignored"
            ])),
            Action::Run(s(&["gauntlet/steady/1n2l2c1t"]))
        );
    }

    #[test]
    fn everything_else_goes_to_libtest() {
        assert_eq!(decide(&s(&[])), Action::Continue);
        assert_eq!(decide(&s(&["steady", "--nocapture"])), Action::Continue);
        assert_eq!(decide(&s(&["--exact", "tests::plain"])), Action::Continue);
        assert_eq!(
            decide(&s(&[
                "--list",
                "--format",
                "json",
                "-Z",
                "unstable-options"
            ])),
            Action::Continue
        );
        // Without --exact a ktstr-looking filter is a libtest substring filter.
        assert_eq!(decide(&s(&["ktstr/steady"])), Action::Continue);
    }

    #[test]
    fn list_filters_skip_option_values() {
        let Action::List(l) = decide(&s(&[
            "--list",
            "--test-threads",
            "2",
            "--skip",
            "slow",
            "steady",
        ])) else {
            panic!("not a list");
        };
        assert_eq!(l.filters, ["steady"]);
        assert_eq!(l.skips, ["slow"]);
        assert!(!l.terse);
        assert!(l.selects("ktstr/steady"));
        assert!(!l.selects("ktstr/steady_slow"));
        assert!(!l.selects("ktstr/other"));
    }

    fn entry(name: &'static str, attrs: TestAttrs) -> TestEntry {
        TestEntry {
            name,
            module_path: "vm",
            file: "tests/vm.rs",
            line: 1,
            func: |ctx| Ok(ctx.spec()),
            attrs,
        }
    }

    #[test]
    fn variants_list_base_then_fitting_presets_as_ignored() {
        let plain = entry("plain", TestAttrs::DEFAULT);
        let sweep = entry(
            "sweep",
            TestAttrs {
                gauntlet: true,
                constraints: Constraints {
                    max_cpus: 4,
                    ..Constraints::ANY
                },
                ..TestAttrs::DEFAULT
            },
        );
        let off = entry(
            "off",
            TestAttrs {
                ignore: true,
                ..TestAttrs::DEFAULT
            },
        );
        let got = list_variants(&[&off, &plain, &sweep], &[]);
        let names: Vec<(&str, bool)> = got.iter().map(|l| (l.name.as_str(), l.ignored)).collect();
        assert_eq!(
            names,
            [
                ("ktstr/off", true),
                ("ktstr/plain", false),
                ("ktstr/sweep", false),
                // 1n1l2c1t is sweep's own topology: covered by the base variant.
                ("gauntlet/sweep/1n1l3c1t", true),
                ("gauntlet/sweep/1n1l4c1t", true),
                ("gauntlet/sweep/1n1l2c2t", true),
                ("gauntlet/sweep/1n2l2c1t", true),
                ("gauntlet/sweep/2n2l2c1t", true),
            ]
        );
    }

    #[test]
    fn two_kernels_multiply_every_variant() {
        let e = entry("steady", TestAttrs::DEFAULT);
        let k = |l: &str| KernelEntry {
            label: l.into(),
            spec: format!("/k/{l}"),
        };
        let got: Vec<String> = list_variants(&[&e], &[k("6.14"), k("7.2")])
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(got, ["ktstr/steady/6.14", "ktstr/steady/7.2"]);
        // One kernel does not change names.
        let got: Vec<String> = list_variants(&[&e], &[k("7.2")])
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(got, ["ktstr/steady"]);
    }

    #[test]
    fn names_resolve_to_entry_variant_and_kernel() {
        static SWEEP: TestEntry = TestEntry {
            name: "sweep",
            module_path: "vm",
            file: "tests/vm.rs",
            line: 1,
            func: |ctx| Ok(ctx.spec()),
            attrs: TestAttrs {
                gauntlet: true,
                ..TestAttrs::DEFAULT
            },
        };
        static PLAIN: TestEntry = TestEntry {
            name: "plain",
            module_path: "vm",
            file: "tests/vm.rs",
            line: 2,
            func: |ctx| Ok(ctx.spec()),
            attrs: TestAttrs::DEFAULT,
        };
        let entries = [&SWEEP, &PLAIN];
        let kernels = [KernelEntry {
            label: "7.2".into(),
            spec: "debian-7.2".into(),
        }];
        let (e, id, k) = resolve_name("gauntlet/sweep/2n2l2c1t/7.2", &entries, &kernels).unwrap();
        assert_eq!(e.name, "sweep");
        assert_eq!(id.preset.unwrap().label, "2n2l2c1t");
        assert_eq!(k.as_deref(), Some("debian-7.2"));

        let err = |n: &str| resolve_name(n, &entries, &kernels).unwrap_err();
        assert!(matches!(err("ktstr/nope"), NameProblem::NotHere(_)));
        assert!(err("ktstr/nope")
            .text()
            .contains("no #[ktstr_test] named `nope`"));
        for (name, why) in [
            ("gauntlet/plain/2n2l2c1t", "not declared with `gauntlet`"),
            ("gauntlet/sweep/1n1l2c1t", "own topology"),
            ("ktstr/plain/6.1", "not in KTSTR_KERNEL_LIST"),
            ("gauntlet/sweep/9n9l9c9t", "no topology preset"),
        ] {
            let e = err(name);
            assert!(matches!(e, NameProblem::Bad(_)), "{name}: {e:?}");
            assert!(e.text().contains(why), "{name}: {e:?}");
        }
    }

    #[test]
    fn libtest_lines_lose_the_wrappers_and_the_count() {
        let out = "steady: test\nunit::parses: test\nbench_x: bench\n\n3 tests, 1 benchmarks\n";
        assert_eq!(
            filter_libtest_lines(out, &s(&["steady"])),
            ["unit::parses: test", "bench_x: bench"]
        );
    }
}
