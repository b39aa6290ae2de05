//! `cargo ktstr setup`: install what this machine lacks for the suite (host packages,
//! the BPF toolchain and schedulers, cargo-nextest) and fetch the default kernel.
//! `cargo ktstr test` runs the same first, so a fresh machine needs no other command.

use clap::Args;

#[derive(Args, Debug)]
pub struct SetupArgs {
    /// Only say what is missing; install nothing.
    #[arg(long)]
    check: bool,
}

pub fn run(args: SetupArgs) -> anyhow::Result<i32> {
    let plan = ktstr::setup::plan();
    if args.check {
        let mut missing = 0;
        for step in &plan {
            if step.missing.is_empty() {
                println!("{}: present", step.what);
            } else {
                missing += 1;
                println!("{}: missing {}", step.what, step.missing.join(", "));
            }
        }
        return Ok(i32::from(missing > 0));
    }
    ktstr::setup::run(&plan)?;
    let kernels =
        ktstr::test_support::suite::prepare_kernels(&[], &ktstr::kernel::Progress::auto())?;
    for k in kernels {
        eprintln!("ktstr: set-up: kernel {} present", k.kernel.release);
    }
    Ok(0)
}
