//! `cargo ktstr nested -- CMD`: run CMD in an L1 guest with hardware-style KVM (nested
//! SVM under qemu TCG), the host's files at the same paths. The work is in
//! `ktstr::nested`.

use clap::Args;
use ktstr::kernel::Progress;
use ktstr::nested::{self, NestedOptions, DEFAULT_MEMORY_MIB};

#[derive(Args, Debug)]
pub struct NestedArgs {
    /// L1 vCPUs (default: the host CPUs available, at least 2).
    #[arg(long)]
    vcpus: Option<u32>,
    /// L1 memory in MiB (qemu backs only what L1 touches).
    #[arg(long, default_value_t = DEFAULT_MEMORY_MIB)]
    memory_mib: u64,
    /// L1 kernel: a kernel cache key or version (default: the default cached kernel);
    /// its KVM modules are fetched beside it when missing.
    #[arg(long)]
    kernel: Option<String>,
    /// Another host directory to share writable (repeatable). The working directory,
    /// CARGO_TARGET_DIR, cargo's and rustup's homes, ktstr's caches and run roots always are.
    #[arg(long, value_name = "DIR")]
    share: Vec<std::path::PathBuf>,
    /// L1's qemu CPU model, optionally with +feature/-feature after commas: `max`, or an
    /// AMD model with SVM such as `EPYC-Milan` (its family and model decide how Linux and
    /// the kvm engine number LLCs; EPYC and EPYC-Rome crash L1 under qemu 7.2). AVX, PKU
    /// and MPX are taken away whatever the model.
    #[arg(long, value_name = "MODEL[,+FEAT,-FEAT]", default_value = nested::DEFAULT_L1_CPU_MODEL)]
    cpu: String,
    /// The qemu that runs L1 (also KTSTR_NESTED_QEMU). Default: the host's when it is
    /// 11.0 or newer, else a private copy of Debian sid's, fetched once into the cache
    /// (qemu 7.2's nested SVM crashes L1 in about half of the boots).
    #[arg(long, value_name = "PATH")]
    qemu: Option<std::path::PathBuf>,
    /// Fetch what L1 needs (the kernel's KVM modules, the qemu), say what will be used,
    /// and boot nothing.
    #[arg(long)]
    prepare: bool,
    /// Show L1's kernel console too, not only the command's output.
    #[arg(long, short)]
    verbose: bool,
    /// The command to run in L1, after `--` (e.g. `-- cargo ktstr test --engine kvm`).
    #[arg(last = true, required_unless_present = "prepare", value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(args: NestedArgs) -> anyhow::Result<i32> {
    let opts = NestedOptions {
        argv: args.command,
        vcpus: args.vcpus,
        memory_mib: args.memory_mib,
        kernel: args.kernel,
        share: args.share,
        verbose: args.verbose,
        cpu_model: Some(args.cpu),
        qemu: args.qemu,
    };
    if args.prepare {
        let p = nested::prepare(&opts, &Progress::auto())?;
        println!(
            "L1 kernel: {} ({})",
            p.kernel.release,
            p.kernel.image.display()
        );
        println!("L1 KVM modules: {}", p.modules.len());
        println!("L1 qemu: {}", p.qemu.describe());
        return Ok(0);
    }
    nested::run(&opts, &Progress::auto())
}
