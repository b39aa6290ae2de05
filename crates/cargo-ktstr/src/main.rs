//! `cargo ktstr`: the command-line front end. It parses arguments and calls into the
//! `ktstr`, `ktstr-sidecar` and `ktstr-stats` libraries; logic lives there, not here.

mod cmd;

use clap::{Parser, Subcommand};

/// Works both as `cargo ktstr ...` (cargo passes "ktstr" as the first argument) and as
/// `cargo-ktstr ...`.
#[derive(Parser, Debug)]
#[command(name = "cargo-ktstr", bin_name = "cargo ktstr", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the project's ktstr tests under cargo nextest: resolve or fetch the kernel(s),
    /// build the guest runtime, keep VM tests from oversubscribing the host, summarise.
    Test(cmd::test::TestArgs),
    /// Boot ktstr-vmm's bare-metal self-test guest and check the topology it sees.
    SelftestVm(cmd::selftest::SelftestVmArgs),
    /// Read sidecars back: list runs, show and explain results, compare pools.
    Stats(cmd::stats::StatsArgs),
    /// Did a commit make things slower? Compare the runs of two commits, with noise
    /// adjustment; exits non-zero on regression.
    PerfDelta(Box<cmd::perf_delta::PerfDeltaArgs>),
    /// Boot a VM of a given topology and run a command in it.
    Shell(cmd::shell::ShellArgs),
    /// Fetch, list and locate the kernels tests boot.
    Kernel(cmd::kernel::KernelArgs),
    /// Run a command in an L1 guest with hardware-style KVM (nested SVM under qemu TCG),
    /// the host's files at the same paths: tests the kvm engine on hosts without
    /// hardware virtualisation.
    Nested(cmd::nested::NestedArgs),
    /// Install what this machine lacks for the suite (host packages, BPF toolchain and
    /// schedulers, cargo-nextest) and fetch the default kernel; `test` does it too.
    Setup(cmd::setup::SetupArgs),
    /// List what a test can use: work types, ops, topology presets, canned scenarios,
    /// gates and `#[ktstr_test]` attributes, each with its parameters.
    Describe(cmd::describe::DescribeArgs),
}

fn main() {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `cargo ktstr foo` runs `cargo-ktstr ktstr foo`.
    if args.get(1).is_some_and(|a| a == "ktstr") {
        args.remove(1);
    }
    let cli = Cli::parse_from(args);
    ktstr::logging::init();
    let result = match cli.command {
        Command::Test(a) => cmd::test::run(a),
        Command::SelftestVm(a) => cmd::selftest::run(a),
        Command::Stats(a) => cmd::stats::run(a),
        Command::PerfDelta(a) => cmd::perf_delta::run(*a),
        Command::Shell(a) => cmd::shell::run(a),
        Command::Kernel(a) => cmd::kernel::run(a),
        Command::Nested(a) => cmd::nested::run(a),
        Command::Describe(a) => cmd::describe::run(a),
        Command::Setup(a) => cmd::setup::run(a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
