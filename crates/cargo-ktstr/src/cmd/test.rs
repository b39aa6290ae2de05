//! `cargo ktstr test`: run the project's ktstr tests under `cargo nextest run` with the
//! kernel(s) resolved (or fetched), the guest runtime built, VM tests kept from
//! oversubscribing the host, and a one-screen summary read from the run's sidecars.
//! The work is in `ktstr::test_support::suite`; this module parses and sequences.

use std::process::Command;

use anyhow::Context;
use clap::Args;
use ktstr::engine;
use ktstr::kernel::Progress;
use ktstr::test_support::names::{format_kernel_list, KERNEL_LIST_ENV};
use ktstr::test_support::soak::Soak;
use ktstr::test_support::suite::{self, Project};
use ktstr::test_support::{MANIFEST_ENV, NO_SKIP_ENV};

/// What `cargo ktstr test` runs without nextest arguments: the registered ktstr tests.
const KTSTR_TESTS_FILTER: &str = r"test(/^(ktstr|gauntlet)\//)";

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Kernel to boot: a bzImage path, a source tree, a version or cache key, or
    /// `debian[:VERSION|:latest]` (fetched when missing). Repeat it to run the suite against
    /// several kernels; the kernel then becomes the last segment of every test name.
    /// Default: KTSTR_KERNEL, else the newest cached kernel (the pinned Debian kernel is
    /// fetched into an empty cache).
    #[arg(long = "kernel", value_name = "ID")]
    kernels: Vec<String>,
    /// Engine: auto, kvm or qemu-tcg (default: KTSTR_ENGINE, else auto).
    #[arg(long)]
    engine: Option<String>,
    /// Use at most N host CPUs: nextest and every VM it starts are confined to the first
    /// N CPUs, and VM tests run N/2 at a time.
    #[arg(long, value_name = "N")]
    cpu_cap: Option<usize>,
    /// Run only a part of the suite, e.g. `hash:1/3` (passed to nextest).
    #[arg(long, value_name = "hash:M/N")]
    partition: Option<String>,
    /// A test that cannot run here (no kernel, no engine, too big) fails instead of
    /// skipping (sets KTSTR_NO_SKIP).
    #[arg(long)]
    no_skip: bool,
    /// Skip the set-up check (host packages, BPF toolchain and schedulers,
    /// cargo-nextest); also KTSTR_NO_SETUP=1.
    #[arg(long)]
    no_setup: bool,
    /// Boot every test cold instead of restoring a snapshot of a booted guest (sets
    /// KTSTR_SNAPSHOT=off).
    #[arg(long)]
    no_snapshot: bool,
    /// Run the suite N times and report, per test, passes over runs and every distinct
    /// failure signature (the flake rate); each round's sidecars go to their own
    /// directory under `target/ktstr/soak-*`, with `soak.json` beside them.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Arguments for `cargo nextest run`, after `--` (e.g. `-- -E 'test(/ktstr/)'
    /// --no-fail-fast --run-ignored all`).
    #[arg(last = true, value_name = "NEXTEST ARGS")]
    nextest_args: Vec<String>,
}

pub fn run(args: TestArgs) -> anyhow::Result<i32> {
    let progress = Progress::auto();
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    // A fresh machine gets what it lacks first; one that has it all says so in a line.
    if !args.no_setup && !ktstr::setup::disabled() {
        ktstr::setup::run(&ktstr::setup::plan())?;
    }
    suite::nextest_version()?;

    // Engine: only checked here; tests choose again (and skip with the reason).
    let engine_name = match engine::choose(args.engine.as_deref()) {
        Ok(e) => Some(e.name()),
        Err(e) => {
            eprintln!("ktstr: warning: {e}; VM tests will skip (or fail with --no-skip)");
            None
        }
    };

    let kernels = suite::prepare_kernels(&args.kernels, &progress)?;
    for k in &kernels {
        eprintln!(
            "ktstr: kernel {} ({}){}",
            k.kernel.release,
            k.kernel.image.display(),
            if kernels.len() > 1 {
                format!(" as `.../{}`", k.label)
            } else {
                String::new()
            }
        );
    }

    let Project {
        target_dir,
        guest_manifest,
    } = suite::project(&cwd)?;
    let guest = match std::env::var_os("KTSTR_GUEST").filter(|v| !v.is_empty()) {
        Some(g) => std::path::PathBuf::from(g),
        None => {
            let manifest = guest_manifest.map_err(suite::SuiteError::NoGuestSource)?;
            eprintln!(
                "ktstr: building the guest runtime from {}",
                manifest.display()
            );
            suite::build_guest(&manifest, &target_dir)?
        }
    };

    let cpus = match args.cpu_cap {
        Some(cap) => suite::restrict_cpus(cap)?.len(),
        None => engine::available_host_cpus().len(),
    };
    let slots = suite::vm_slots(cpus);
    let (tool_config, manifest) = suite::run_files(&target_dir);
    suite::write_file(
        &tool_config,
        &suite::nextest_tool_config(slots, ktstr::nested::inside()),
    )?;
    suite::write_file(&manifest, "")?;

    let cargo = suite::cargo_bin();
    // Ctrl-C reaches nextest and the VM tests (same process group): they tear down and
    // write their sidecars; this process outlives them to print the summary.
    ktstr::interrupt::catch();
    let nextest = |runs_root: Option<&std::path::Path>| -> anyhow::Result<i32> {
        suite::write_file(&manifest, "")?;
        let mut cmd = Command::new(&cargo);
        cmd.args(["nextest", "run", "--tool-config-file"])
            .arg(format!("ktstr:{}", tool_config.display()));
        if let Some(p) = &args.partition {
            cmd.args(["--partition", p]);
        }
        if args.nextest_args.is_empty() {
            // The main job is the ktstr tests (their sidecars make the summary); other
            // tests run with an explicit filter, or under plain `cargo nextest run`.
            cmd.args(["-E", KTSTR_TESTS_FILTER]);
        }
        cmd.args(&args.nextest_args);
        cmd.env("KTSTR_KERNEL", &kernels[0].spec)
            .env("KTSTR_GUEST", &guest)
            .env(MANIFEST_ENV, &manifest);
        if let Some(root) = runs_root {
            cmd.env("KTSTR_RUNS_ROOT", root);
        }
        if kernels.len() > 1 {
            cmd.env(
                KERNEL_LIST_ENV,
                format_kernel_list(&suite::kernel_entries(&kernels)),
            );
        } else {
            cmd.env_remove(KERNEL_LIST_ENV);
        }
        if let Some(e) = engine_name {
            cmd.env("KTSTR_ENGINE", e);
        }
        // One commit for the whole run, probed once: every test process would otherwise
        // run its own git status (seconds each inside `nested`), and an edit during the
        // run would split its sidecars between `abc1234` and `abc1234-dirty`.
        if let Some(c) = ktstr_sidecar::provenance::project_commit() {
            cmd.env(ktstr_sidecar::provenance::PROJECT_COMMIT_ENV, c);
        }
        if args.no_skip {
            cmd.env(NO_SKIP_ENV, "1");
        }
        if args.no_snapshot {
            cmd.env(engine::snapshot::ENV, "off");
        }
        let status = cmd
            .status()
            .with_context(|| format!("cannot run `{cargo} nextest run`; is cargo-nextest installed (`cargo install cargo-nextest`)?"))?;
        Ok(status.code().unwrap_or(1))
    };
    eprintln!(
        "ktstr: {} VM test(s) at a time on {cpus} CPU(s); nextest tool config {}",
        slots,
        tool_config.display()
    );
    if args.repeat > 1 {
        return soak(args.repeat, &target_dir, &manifest, nextest);
    }
    let code = nextest(None)?;

    let summary = suite::read_manifest(&manifest);
    eprintln!();
    eprint!("{}", summary.render());
    Ok(code)
}

/// `--repeat N`: N rounds, each in its own runs root, summed up into a flake report.
fn soak(
    rounds: u32,
    target_dir: &std::path::Path,
    manifest: &std::path::Path,
    mut nextest: impl FnMut(Option<&std::path::Path>) -> anyhow::Result<i32>,
) -> anyhow::Result<i32> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = target_dir.join("ktstr").join(format!("soak-{stamp}"));
    let mut tally = Soak::default();
    for round in 1..=rounds {
        let root = dir.join(format!("round-{round}"));
        eprintln!(
            "ktstr: soak round {round}/{rounds} (sidecars under {})",
            root.display()
        );
        let started = std::time::Instant::now();
        let code = nextest(Some(&root))?;
        let summary = suite::read_manifest(manifest);
        tally.add_round(round, &summary, code == 0);
        if let Some(sig) = ktstr::interrupt::received() {
            eprintln!(
                "ktstr: soak stopped by {} after round {round}",
                ktstr::interrupt::name(sig)
            );
            break;
        }
        eprintln!(
            "ktstr: round {round}/{rounds} took {:.0} s: {}",
            started.elapsed().as_secs_f64(),
            summary.render().lines().next().unwrap_or_default()
        );
    }
    let json = dir.join("soak.json");
    let text = serde_json::to_string_pretty(&tally).context("cannot encode the soak report")?;
    suite::write_file(&json, &(text + "\n"))?;
    eprintln!();
    eprint!("{}", tally.render());
    eprintln!("soak report: {}", json.display());
    Ok(if tally.clean() { 0 } else { 1 })
}
